//! The probe server: `/health` and `/ready` for kubelet, `/metrics`, `/status` and the status
//! page, on its own OS threads so a stuck async runtime cannot take the probes down with it
//! (that is exactly what `/health` must detect). A second instance, with only the admin routes
//! (`POST /rotate[/<secret>]`), is the admin listener; docs/admin.md has its security model.
//!
//! Routing is a pure function from a [`Request`] (method, URL, peer address, the two headers
//! that matter) to a [`Reply`], testable without sockets; the transport below only moves
//! bytes. Add a route to [`PROBE_ROUTES`] or [`ADMIN_ROUTES`] to serve more.
//!
//! The transport is a deliberately small HTTP/1.x server on std, not tiny_http: tiny_http
//! 0.12 has no per-connection timeouts, and its thread pool can queue a new connection behind
//! workers blocked forever on idle ones, so a handful of idle connections could leave a probe
//! unanswered. Here every connection gets its own short-lived thread, read and write timeouts,
//! a deadline for the whole request head, a size cap on it, and `Connection: close`
//! (kubelet does not keep probe connections alive). At [`Limits::max_connections`], the
//! oldest connection still waiting for its request is closed to make room, so memory stays
//! bounded and idle clients cannot lock a probe out.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::state::State;
use crate::status::StatusOptions;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop cannot spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Stack of a connection thread: routing needs little, and small stacks keep the worst case
/// (every connection slot busy) to a few MiB.
const CONNECTION_STACK: usize = 256 * 1024;
/// Bytes read and discarded after replying, so closing does not reset the connection
/// (and discard the reply) while the client is still sending.
const MAX_DRAIN: u64 = 1024 * 1024;

/// Bounds on what one client can make the server hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for one read or write on a connection.
    pub io_timeout: Duration,
    /// Longest time from accept to a complete request head, against clients trickling bytes.
    pub request_deadline: Duration,
    /// Largest request line plus headers; larger gets 431.
    pub max_head_bytes: usize,
    /// Connections served at once; more are closed immediately.
    pub max_connections: usize,
}

impl Default for Limits {
    /// Kubelet sends its whole request at once and gives up after 1s by default, so these
    /// only ever bite misbehaving clients.
    fn default() -> Self {
        Limits {
            io_timeout: Duration::from_secs(5),
            request_deadline: Duration::from_secs(10),
            max_head_bytes: 16 * 1024,
            max_connections: 128,
        }
    }
}

/// Errors starting the probe server; each names what failed and the OS error.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: SocketAddr, error: io::Error },

    #[error("cannot start the {what} server thread: {error}")]
    Thread {
        what: &'static str,
        error: io::Error,
    },
}

/// A running probe (or admin) server; [`ProbeServer::shutdown`] stops it.
pub struct ProbeServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl ProbeServer {
    /// Listens on `listen` (port 0 picks a free port; see [`ProbeServer::local_addr`]) and
    /// serves on new threads.
    pub fn start(listen: SocketAddr, state: Arc<State>) -> Result<ProbeServer, HttpError> {
        Self::start_with(listen, state, Limits::default())
    }

    pub fn start_with(
        listen: SocketAddr,
        state: Arc<State>,
        limits: Limits,
    ) -> Result<ProbeServer, HttpError> {
        Self::serve(listen, Router::new(state), limits)
    }

    /// Serves `router` on `listen`: the probe routes or the admin routes, as the router was
    /// made.
    pub fn serve(
        listen: SocketAddr,
        router: Router,
        limits: Limits,
    ) -> Result<ProbeServer, HttpError> {
        let what = router.what();
        let bind_error = |error| HttpError::Bind {
            addr: listen,
            error,
        };
        let listener = TcpListener::bind(listen).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = Acceptor {
            listener,
            router,
            limits,
            stop: stop.clone(),
            active: Arc::new(AtomicUsize::new(0)),
            waiting: Arc::new(Waiting::default()),
        };
        let thread = std::thread::Builder::new()
            .name(format!("{what}-accept"))
            .spawn(move || acceptor.run())
            .map_err(|error| HttpError::Thread { what, error })?;
        Ok(ProbeServer {
            local_addr,
            stop,
            thread,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes the listening socket and waits for the accept thread.
    /// Connections already accepted finish on their own, within their deadlines.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::Release);
        // A blocking accept only returns for a connection, so make one.
        match TcpStream::connect_timeout(&wake_addr(self.local_addr), Duration::from_secs(1)) {
            Ok(_) => {
                if self.thread.join().is_err() {
                    tracing::error!("the probe server's accept thread panicked");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot wake the probe server's accept thread; leaving it")
            }
        }
    }
}

/// Where to connect to reach our own listener: a wildcard address is not connectable.
fn wake_addr(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// The accept thread's state.
struct Acceptor {
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: Arc<AtomicBool>,
    /// Connections being served now, against [`Limits::max_connections`].
    active: Arc<AtomicUsize>,
    /// Connections that have not sent a complete request yet, oldest first.
    waiting: Arc<Waiting>,
}

/// Connections still waiting for their request head. When every slot is taken, the oldest of
/// them is closed to make room: idle or trickling clients then cannot lock kubelet out, since
/// a probe sends its whole request at once and is never the oldest one waiting for long.
#[derive(Default)]
struct Waiting {
    conns: std::sync::Mutex<std::collections::VecDeque<(u64, TcpStream)>>,
    next_id: AtomicUsize,
}

impl Waiting {
    fn add(&self, stream: &TcpStream) -> Option<u64> {
        let clone = stream.try_clone().ok()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as u64;
        self.lock().push_back((id, clone));
        Some(id)
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|(i, _)| *i != id);
    }

    /// Closes the oldest waiting connection; false when none is waiting.
    fn evict_oldest(&self) -> bool {
        let oldest = self.lock().pop_front();
        match oldest {
            Some((_, stream)) => {
                let _ = stream.shutdown(Shutdown::Both);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, TcpStream)>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Acceptor {
    fn run(self) {
        loop {
            let accepted = self.listener.accept();
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            match accepted {
                Ok((stream, peer)) => self.dispatch(stream, peer),
                Err(error) => {
                    tracing::warn!(%error, "probe server cannot accept a connection");
                    std::thread::sleep(ACCEPT_ERROR_PAUSE);
                }
            }
        }
    }

    /// Serves the connection on its own thread, or closes it when every slot is taken.
    fn dispatch(&self, stream: TcpStream, peer: SocketAddr) {
        let slot = match Slot::take(&self.active, self.limits.max_connections) {
            Some(slot) => slot,
            // The evicted connection's thread ends at once and gives its slot back; until
            // then the count is one over, which is bounded by the evictions themselves.
            None if self.waiting.evict_oldest() => Slot::force(&self.active),
            None => {
                tracing::debug!("probe server at its connection limit; closing a new connection");
                return;
            }
        };
        let (router, limits) = (self.router.clone(), self.limits);
        let waiting = self.waiting.clone();
        let id = waiting.add(&stream);
        let spawned = std::thread::Builder::new()
            .name("probe-conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                let _slot = slot;
                let head_read = || {
                    if let Some(id) = id {
                        waiting.remove(id);
                    }
                };
                serve_connection(stream, peer, &router, &limits, &head_read);
                head_read();
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a thread for a probe connection; closing it");
        }
    }
}

/// One counted connection; frees its slot when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(active.clone()))
    }

    /// A slot beyond the limit, for a connection admitted by evicting another.
    fn force(active: &Arc<AtomicUsize>) -> Slot {
        active.fetch_add(1, Ordering::AcqRel);
        Slot(active.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads one request head, replies, and closes. I/O errors end the connection quietly: the
/// client went away or stalled, and there is no one left to tell.
fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    router: &Router,
    limits: &Limits,
    head_read: &dyn Fn(),
) {
    let timeouts = stream
        .set_read_timeout(Some(limits.io_timeout))
        .and_then(|()| stream.set_write_timeout(Some(limits.io_timeout)));
    if let Err(error) = timeouts {
        tracing::debug!(%error, "cannot set timeouts on a probe connection");
        return;
    }
    let head = read_head(&mut stream, limits);
    head_read();
    let reply = match head {
        Ok(head) => match parse_request_line(&head) {
            Some((method, target)) => router.handle(&Request {
                method,
                target,
                peer: Some(peer),
                authorization: header_value(&head, "authorization"),
                origin: header_value(&head, "origin"),
            }),
            None => Reply::json(400, serde_json::json!({ "status": "bad request" })),
        },
        Err(HeadError::TooLarge) => Reply::json(
            431,
            serde_json::json!({ "status": "request header too large" }),
        ),
        Err(HeadError::Io(error)) => {
            tracing::debug!(%error, "probe connection ended before a complete request");
            return;
        }
    };
    if let Err(error) = write_reply(&mut stream, &reply) {
        tracing::debug!(%error, "probe client went away before the reply");
        return;
    }
    linger(stream);
}

enum HeadError {
    TooLarge,
    Io(io::Error),
}

/// Reads until the blank line that ends the head (bodies are never needed), within the size
/// cap and the deadline.
fn read_head(stream: &mut TcpStream, limits: &Limits) -> Result<Vec<u8>, HeadError> {
    let deadline = Instant::now() + limits.request_deadline;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > limits.max_head_bytes {
            return Err(HeadError::TooLarge);
        }
        if Instant::now() >= deadline {
            return Err(HeadError::Io(io::ErrorKind::TimedOut.into()));
        }
    }
}

/// Where the blank line that ends the head starts: CRLF CRLF, or bare LF LF from lenient
/// clients.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    crlf.into_iter().chain(lf).min()
}

/// `METHOD SP origin-form-target SP HTTP/1.x`; anything else is a bad request.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none()
        && !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && target.starts_with('/')
        && matches!(version, "HTTP/1.0" | "HTTP/1.1");
    valid.then_some((method, target))
}

/// The value of the first header called `name` (ASCII case-insensitive), trimmed; `None` when
/// absent or not UTF-8.
fn header_value<'h>(head: &'h [u8], name: &str) -> Option<&'h str> {
    let text = std::str::from_utf8(head).ok()?;
    text.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn write_reply(stream: &mut TcpStream, reply: &Reply) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&reply.body);
    stream.write_all(&bytes)?;
    stream.flush()
}

/// Half-closes, then reads what the client still sends (bounded) before the socket closes:
/// closing with unread input makes the kernel send RST, which can destroy the reply in flight.
fn linger(mut stream: TcpStream) {
    if stream.shutdown(Shutdown::Write).is_ok() {
        let _ = io::copy(&mut (&mut stream).take(MAX_DRAIN), &mut io::sink());
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A response, independent of the HTTP library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// A short JSON reply that no cache may keep: probe answers are only true right now.
    fn json(status: u16, body: serde_json::Value) -> Reply {
        let mut bytes = body.to_string().into_bytes();
        bytes.push(b'\n');
        Reply::with_type(status, "application/json", bytes)
    }

    fn with_type(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: vec![
                ("Content-Type", content_type.into()),
                ("Cache-Control", "no-store".into()),
            ],
            body,
        }
    }

    /// The header's value, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the router sees of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The origin-form target: path and query.
    pub target: &'a str,
    /// The TCP peer; `None` when unknown, which admin routes treat as remote.
    pub peer: Option<SocketAddr>,
    /// The `Authorization` header, for the admin token.
    pub authorization: Option<&'a str>,
    /// The `Origin` header: browsers send it on cross-site POSTs, tools like curl do not.
    pub origin: Option<&'a str>,
}

/// Who may use the admin routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminAccess {
    /// Holds the bearer token; re-read on every request, so a rotated Kubernetes Secret
    /// applies at once. `None`: no token needed (loopback peers only, then).
    pub token_file: Option<PathBuf>,
    /// Accept non-loopback peers.
    pub allow_remote: bool,
}

/// Which routes a router serves.
#[derive(Debug, Clone)]
enum Listener {
    Probe(StatusOptions),
    Admin(AdminAccess),
}

/// One path the server answers, the methods it accepts, and what computes the reply.
struct Route {
    path: &'static str,
    /// Match every path that starts with `path` (which then ends in `/`), e.g. `/rotate/<name>`.
    prefix: bool,
    methods: &'static [&'static str],
    handler: fn(&Router, &Request, &str) -> Reply,
}

impl Route {
    const fn exact(
        path: &'static str,
        methods: &'static [&'static str],
        handler: fn(&Router, &Request, &str) -> Reply,
    ) -> Route {
        Route {
            path,
            prefix: false,
            methods,
            handler,
        }
    }

    fn matches(&self, path: &str) -> bool {
        if self.prefix {
            path.len() > self.path.len() && path.starts_with(self.path)
        } else {
            path == self.path
        }
    }
}

const GET: &[&str] = &["GET", "HEAD"];

const PROBE_ROUTES: &[Route] = &[
    Route::exact("/health", GET, health),
    Route::exact("/ready", GET, ready),
    Route::exact("/metrics", GET, metrics),
    Route::exact("/status", GET, status_json),
    Route::exact("/", GET, status_page),
    Route::exact("/status.html", GET, status_page),
];

const ADMIN_ROUTES: &[Route] = &[
    Route::exact("/rotate", &["POST"], rotate),
    Route {
        path: "/rotate/",
        prefix: true,
        methods: &["POST"],
        handler: rotate,
    },
];

/// Maps a request to a reply; no sockets involved.
#[derive(Clone)]
pub struct Router {
    state: Arc<State>,
    listener: Listener,
}

impl Router {
    /// The probe routes, showing usernames on `/status`.
    pub fn new(state: Arc<State>) -> Router {
        Router::probes(state, StatusOptions::default())
    }

    /// The probe routes: `/health`, `/ready`, `/metrics`, `/status`, `/`, `/status.html`.
    pub fn probes(state: Arc<State>, status: StatusOptions) -> Router {
        Router {
            state,
            listener: Listener::Probe(status),
        }
    }

    /// The admin routes only: `POST /rotate` and `POST /rotate/<secret>`.
    pub fn admin(state: Arc<State>, access: AdminAccess) -> Router {
        Router {
            state,
            listener: Listener::Admin(access),
        }
    }

    /// Names the server in thread names and errors.
    fn what(&self) -> &'static str {
        match self.listener {
            Listener::Probe(_) => "probe",
            Listener::Admin(_) => "admin",
        }
    }

    /// [`Router::handle`] for a request with no known peer and no headers.
    pub fn route(&self, method: &str, url: &str) -> Reply {
        self.handle(&Request {
            method,
            target: url,
            ..Request::default()
        })
    }

    /// Routes by path (the query string is ignored). Unknown paths get 404, known paths with
    /// another method 405 with `Allow`, and HEAD the same reply without a body. On the admin
    /// listener every request must first pass [`Router::admit`], so a refused client learns
    /// nothing, not even which paths exist.
    pub fn handle(&self, req: &Request) -> Reply {
        let path = req
            .target
            .split_once('?')
            .map_or(req.target, |(path, _)| path);
        let mut reply = match &self.listener {
            Listener::Probe(_) => self.dispatch(PROBE_ROUTES, req, path),
            Listener::Admin(access) => match admit(access, req) {
                Ok(()) => self.dispatch(ADMIN_ROUTES, req, path),
                Err(refusal) => refusal,
            },
        };
        if req.method == "HEAD" {
            reply.body.clear();
        }
        reply
    }

    fn dispatch(&self, routes: &[Route], req: &Request, path: &str) -> Reply {
        let Some(route) = routes.iter().find(|r| r.matches(path)) else {
            return Reply::json(404, serde_json::json!({ "status": "not found" }));
        };
        if !route.methods.contains(&req.method) {
            let mut reply = Reply::json(405, serde_json::json!({ "status": "method not allowed" }));
            reply.headers.push(("Allow", route.methods.join(", ")));
            return reply;
        }
        (route.handler)(self, req, path)
    }

    fn status_options(&self) -> StatusOptions {
        match &self.listener {
            Listener::Probe(opts) => *opts,
            Listener::Admin(_) => StatusOptions::default(),
        }
    }
}

/// Liveness never asks Vault: restarting the agent cannot fix Vault, and restart storms hurt.
fn health(router: &Router, _: &Request, _: &str) -> Reply {
    match router.state.alive() {
        Ok(()) => Reply::json(200, serde_json::json!({ "status": "ok" })),
        Err(reason) => Reply::json(
            503,
            serde_json::json!({ "status": "unhealthy", "reason": reason }),
        ),
    }
}

fn ready(router: &Router, _: &Request, _: &str) -> Reply {
    match router.state.ready(SystemTime::now()) {
        Ok(()) => Reply::json(200, serde_json::json!({ "status": "ready" })),
        Err(reason) => Reply::json(
            503,
            serde_json::json!({ "status": "not ready", "reason": reason }),
        ),
    }
}

fn metrics(router: &Router, _: &Request, _: &str) -> Reply {
    match crate::metrics::encode(&router.state, SystemTime::now()) {
        Ok(text) => Reply::with_type(200, crate::metrics::CONTENT_TYPE, text.into_bytes()),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            Reply::json(
                500,
                serde_json::json!({ "status": "cannot encode metrics" }),
            )
        }
    }
}

fn status_json(router: &Router, _: &Request, _: &str) -> Reply {
    let report = crate::status::report(&router.state, SystemTime::now(), router.status_options());
    match serde_json::to_value(&report) {
        Ok(body) => Reply::json(200, body),
        Err(error) => {
            tracing::error!(%error, "cannot encode /status");
            Reply::json(500, serde_json::json!({ "status": "cannot encode status" }))
        }
    }
}

fn status_page(router: &Router, _: &Request, _: &str) -> Reply {
    let report = crate::status::report(&router.state, SystemTime::now(), router.status_options());
    let html = crate::status::page(&report);
    let mut reply = Reply::with_type(200, "text/html; charset=utf-8", html.into_bytes());
    // The page needs nothing but its own inline style: forbid everything else, framing too.
    reply.headers.extend([
        (
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'".into(),
        ),
        ("X-Content-Type-Options", "nosniff".into()),
        ("Referrer-Policy", "no-referrer".into()),
    ]);
    reply
}

/// `POST /rotate` (every secret) or `POST /rotate/<secret>`: wakes the workers, as SIGUSR1
/// does, and answers before the rotation is done (202): it can take a while, and its outcome
/// shows on `/status` and in the file.
fn rotate(router: &Router, req: &Request, path: &str) -> Reply {
    let name = path.strip_prefix("/rotate/");
    match router.state.request_rotation(name) {
        Some(names) => {
            tracing::info!(peer = ?req.peer, secrets = ?names, "admin: rotation requested");
            Reply::json(202, serde_json::json!({ "rotating": names }))
        }
        None => Reply::json(
            404,
            serde_json::json!({ "status": "unknown secret", "secret": name }),
        ),
    }
}

/// The admin listener's gate, in this order: the peer must be loopback (unless remote peers
/// are allowed), the request must not come from a browser page, and it must carry the token
/// when one is configured. Refusals are logged with the peer, never with what was sent.
fn admit(access: &AdminAccess, req: &Request) -> Result<(), Reply> {
    let loopback = req
        .peer
        .is_some_and(|p| p.ip().to_canonical().is_loopback());
    if !loopback && !access.allow_remote {
        tracing::warn!(peer = ?req.peer, "admin: refused a request from a non-loopback peer");
        return Err(Reply::json(
            403,
            serde_json::json!({ "status": "forbidden", "reason": "admin requests are accepted from loopback only (see --admin-allow-remote)" }),
        ));
    }
    if req.origin.is_some() {
        tracing::warn!(peer = ?req.peer, "admin: refused a request sent by a browser page (Origin header)");
        return Err(Reply::json(
            403,
            serde_json::json!({ "status": "forbidden", "reason": "requests from browser pages are refused" }),
        ));
    }
    let Some(path) = &access.token_file else {
        return Ok(());
    };
    let expected = match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => text,
        Ok(_) => return Err(token_unavailable(path, "the file is empty")),
        Err(error) => return Err(token_unavailable(path, &error.to_string())),
    };
    let given = req
        .authorization
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.trim().as_bytes()) => Ok(()),
        _ => {
            tracing::warn!(peer = ?req.peer, "admin: refused a request without the right bearer token");
            let mut reply = Reply::json(401, serde_json::json!({ "status": "unauthorized" }));
            reply.headers.push(("WWW-Authenticate", "Bearer".into()));
            Err(reply)
        }
    }
}

/// Fails closed: without a readable token nobody gets in.
fn token_unavailable(path: &std::path::Path, why: &str) -> Reply {
    tracing::error!(file = %path.display(), reason = why, "admin: cannot read the admin token; refusing admin requests");
    Reply::json(
        500,
        serde_json::json!({ "status": "admin token unavailable" }),
    )
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right. Only the length can leak, and a random token's length is no secret worth having.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::SecretKind;
    use crate::state::{EventKind, SecretInfo};

    fn router() -> (Router, Arc<State>) {
        let state = State::new(vec![SecretInfo {
            name: "db".into(),
            path: "database/creds/app".into(),
            kind: SecretKind::Dynamic,
        }]);
        (Router::new(state.clone()), state)
    }

    fn body(reply: &Reply) -> serde_json::Value {
        serde_json::from_slice(&reply.body).unwrap()
    }

    #[test]
    fn ready_follows_state() {
        let (router, state) = router();
        let reply = router.route("GET", "/ready");
        assert_eq!(reply.status, 503);
        assert_eq!(
            body(&reply)["reason"],
            "secret \"db\": no credential written yet"
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));

        state.record("db", EventKind::Written, "");
        state.update("db", |s| {
            s.expires_at = Some(SystemTime::now() + Duration::from_secs(3600))
        });
        let reply = router.route("GET", "/ready?verbose=1");
        assert_eq!(
            (reply.status, body(&reply)),
            (200, serde_json::json!({ "status": "ready" }))
        );

        state.update("db", |s| {
            s.expires_at = Some(SystemTime::now() - Duration::from_secs(1))
        });
        let reply = router.route("GET", "/ready");
        assert_eq!(reply.status, 503);
        assert_eq!(body(&reply)["status"], "not ready");
        assert!(body(&reply)["reason"]
            .as_str()
            .unwrap()
            .contains("expired at"));
    }

    #[test]
    fn health_follows_task_liveness() {
        let (router, state) = router();
        assert_eq!(router.route("GET", "/health").status, 200);
        assert_eq!(
            body(&router.route("GET", "/health")),
            serde_json::json!({ "status": "ok" })
        );
        state.mark_task_alive("db", true);
        state.mark_task_alive("db", false);
        let reply = router.route("GET", "/health");
        assert_eq!(reply.status, 503);
        assert_eq!(
            body(&reply)["reason"],
            "secret \"db\": its task has stopped"
        );
    }

    #[test]
    fn head_has_no_body_but_same_status_and_headers() {
        let (router, _) = router();
        let get = router.route("GET", "/ready");
        let head = router.route("HEAD", "/ready");
        assert_eq!((head.status, &head.headers), (get.status, &get.headers));
        assert!(head.body.is_empty());
    }

    #[test]
    fn unknown_path_is_404_and_wrong_method_405_with_allow() {
        let (router, _) = router();
        assert_eq!(router.route("GET", "/nope").status, 404);
        assert_eq!(router.route("GET", "/health/").status, 404);
        assert_eq!(
            router.route("POST", "/rotate").status,
            404,
            "admin routes only on the admin listener"
        );
        assert!(router.route("HEAD", "/nope").body.is_empty());
        let reply = router.route("POST", "/health");
        assert_eq!(reply.status, 405);
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let (router, state) = router();
        state.record("db", EventKind::Renewed, "");
        let reply = router.route("GET", "/metrics");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = String::from_utf8(reply.body).unwrap();
        assert!(
            text.contains("vault_rotator_secret_renewals_total{secret=\"db\"} 1\n"),
            "{text}"
        );
    }

    fn credential(state: &State) -> SystemTime {
        let expires = SystemTime::now() + Duration::from_secs(600);
        state.update("db", |s| {
            s.username = Some("v-app-Abc".into());
            s.lease_id = Some("database/creds/app/LEASE-ID".into());
            s.expires_at = Some(expires);
        });
        state.record_credential(
            "db",
            EventKind::Issued,
            Some("v-app-Abc".into()),
            Some("database/creds/app/LEASE-ID".into()),
            "first credential",
        );
        state.record_revoked("db", "database/creds/app/LEASE-ID");
        state.record_failure("db", "fetch", "fetch: <b>HTTP 500</b> & more");
        expires
    }

    #[test]
    fn status_reports_each_secret_without_lease_ids() {
        let (router, state) = router();
        let expires = credential(&state);
        let reply = router.route("GET", "/status");
        assert_eq!(reply.status, 200);
        let json = body(&reply);
        let db = &json["secrets"][0];
        assert_eq!(db["name"], "db");
        assert_eq!(db["username"], "v-app-Abc");
        assert_eq!(db["leased"], true);
        assert_eq!(
            db["expires_at"],
            crate::render::rfc3339(expires).unwrap().as_str()
        );
        let left = db["seconds_left"].as_i64().unwrap();
        assert!((598..=600).contains(&left), "{left}");
        assert_eq!(db["failures_by_stage"]["fetch"], 1);
        let kinds: Vec<&str> = db["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["issued", "revoked", "failed"]);
        assert_eq!(
            db["history"][1]["username"], "v-app-Abc",
            "revocation names the user"
        );
        assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(json["ready"], false);
        let text = json.to_string();
        assert!(!text.contains("LEASE-ID"), "{text}");
    }

    #[test]
    fn hidden_usernames_leave_status_and_page_entirely() {
        let state = router().1;
        credential(&state);
        let router = Router::probes(
            state,
            StatusOptions {
                hide_usernames: true,
            },
        );
        for path in ["/status", "/", "/status.html"] {
            let reply = router.route("GET", path);
            let text = String::from_utf8(reply.body).unwrap();
            assert!(!text.contains("v-app-Abc"), "{path}: {text}");
            assert!(!text.contains("LEASE-ID"), "{path}: {text}");
        }
        assert_eq!(
            body(&router.route("GET", "/status"))["usernames_hidden"],
            true
        );
    }

    #[test]
    fn page_is_self_contained_escaped_html_with_a_lifetime_bar() {
        let (router, state) = router();
        credential(&state);
        let reply = router.route("GET", "/");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(reply
            .header("content-security-policy")
            .is_some_and(|c| c.starts_with("default-src 'none'")));
        let html = String::from_utf8(reply.body).unwrap();
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(html.contains("v-app-Abc"));
        assert!(
            html.contains("&lt;b&gt;HTTP 500&lt;/b&gt; &amp; more"),
            "{html}"
        );
        assert!(!html.contains("<b>HTTP"));
        assert!(
            !html.contains("<script") && !html.contains("src="),
            "no script, no assets"
        );
        // 600 s left of a 600 s lifetime: a full bar.
        assert!(html.contains("style=\"width:100.0%\""), "{html}");
        assert_eq!(router.route("GET", "/status.html").body, html.into_bytes());
    }

    fn admin(
        token: Option<&str>,
        allow_remote: bool,
    ) -> (Router, Arc<tokio::sync::Notify>, tempfile::TempDir) {
        let (_, state) = router();
        let dir = tempfile::tempdir().unwrap();
        let token_file = token.map(|t| {
            let path = dir.path().join("admin-token");
            std::fs::write(&path, format!("{t}\n")).unwrap();
            path
        });
        let notify = Arc::new(tokio::sync::Notify::new());
        state.set_rotate_handle("db", notify.clone());
        let access = AdminAccess {
            token_file,
            allow_remote,
        };
        (Router::admin(state, access), notify, dir)
    }

    fn post<'a>(path: &'a str, peer: &str, authorization: Option<&'a str>) -> Request<'a> {
        Request {
            method: "POST",
            target: path,
            peer: Some(peer.parse().unwrap()),
            authorization,
            origin: None,
        }
    }

    /// Whether the worker's rotation handle holds a wake-up.
    fn woken(notify: &tokio::sync::Notify) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(1), notify.notified())
                .await
                .is_ok()
        })
    }

    #[test]
    fn admin_rotate_wakes_the_worker() {
        let (router, notify, _dir) = admin(None, false);
        let reply = router.handle(&post("/rotate/db", "127.0.0.1:5000", None));
        assert_eq!(
            (reply.status, body(&reply)),
            (202, serde_json::json!({ "rotating": ["db"] }))
        );
        assert!(woken(&notify));
        let reply = router.handle(&post("/rotate", "[::1]:5000", None));
        assert_eq!(body(&reply)["rotating"], serde_json::json!(["db"]));
        assert!(woken(&notify));
        let reply = router.handle(&post("/rotate/nope", "127.0.0.1:5000", None));
        assert_eq!(reply.status, 404);
        assert_eq!(body(&reply)["status"], "unknown secret");
        assert!(!woken(&notify));
        let mut get = post("/rotate", "127.0.0.1:5000", None);
        get.method = "GET";
        let reply = router.handle(&get);
        assert_eq!((reply.status, reply.header("allow")), (405, Some("POST")));
        assert_eq!(
            router.handle(&post("/health", "127.0.0.1:1", None)).status,
            404
        );
    }

    #[test]
    fn admin_refuses_non_loopback_peers_unless_allowed() {
        // Fabricated peer addresses: the router never touches a socket.
        let (router, notify, _dir) = admin(None, false);
        for peer in ["10.1.2.3:4000", "[fd00::2]:4000", "192.0.2.2:1"] {
            let reply = router.handle(&post("/rotate", peer, None));
            assert_eq!(reply.status, 403, "{peer}");
        }
        let unknown = Request {
            peer: None,
            ..post("/rotate", "127.0.0.1:1", None)
        };
        assert_eq!(
            router.handle(&unknown).status,
            403,
            "unknown peer is remote"
        );
        assert!(!woken(&notify));
        // An IPv4 client of a dual-stack listener shows up as ::ffff:127.0.0.1.
        let mapped = router.handle(&post("/rotate", "[::ffff:127.0.0.1]:4000", None));
        assert_eq!(mapped.status, 202);

        let (router, notify, _dir) = admin(Some("tok-3n"), true);
        let reply = router.handle(&post("/rotate", "10.1.2.3:4000", Some("Bearer tok-3n")));
        assert_eq!(reply.status, 202);
        assert!(woken(&notify));
        let reply = router.handle(&post("/rotate", "10.1.2.3:4000", None));
        assert_eq!(reply.status, 401);
    }

    #[test]
    fn admin_token_is_required_and_compared_exactly() {
        let (router, notify, dir) = admin(Some("tok-3n"), false);
        for auth in [
            None,
            Some("Bearer "),
            Some("Bearer tok-3"),
            Some("Bearer tok-3n-and-more"),
            Some("Basic tok-3n"),
            Some("tok-3n"),
        ] {
            let reply = router.handle(&post("/rotate", "127.0.0.1:1", auth));
            assert_eq!(reply.status, 401, "{auth:?}");
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
            assert!(!String::from_utf8_lossy(&reply.body).contains("tok-3n"));
        }
        assert!(!woken(&notify));
        let ok = router.handle(&post("/rotate", "127.0.0.1:1", Some("Bearer tok-3n")));
        assert_eq!(ok.status, 202);
        // Refused before routing: a client without the token learns no paths.
        let unknown = router.handle(&post("/nope", "127.0.0.1:1", None));
        assert_eq!(unknown.status, 401);
        // Browsers' cross-site POSTs carry Origin: refused even with the token.
        let browser = Request {
            origin: Some("http://evil.example"),
            ..post("/rotate", "127.0.0.1:1", Some("Bearer tok-3n"))
        };
        assert_eq!(router.handle(&browser).status, 403);
        // The token file is re-read per request: a rotated token applies at once, and a
        // missing file fails closed.
        std::fs::write(dir.path().join("admin-token"), "new-tok").unwrap();
        let old = router.handle(&post("/rotate", "127.0.0.1:1", Some("Bearer tok-3n")));
        assert_eq!(old.status, 401);
        let new = router.handle(&post("/rotate", "127.0.0.1:1", Some("Bearer new-tok")));
        assert_eq!(new.status, 202);
        std::fs::remove_file(dir.path().join("admin-token")).unwrap();
        let gone = router.handle(&post("/rotate", "127.0.0.1:1", Some("Bearer new-tok")));
        assert_eq!(gone.status, 500);
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn headers_are_found_case_insensitively() {
        let head = b"POST /rotate HTTP/1.1\r\nHost: x\r\nauthorization:  Bearer t \r\nOrigin: http://a\r\n";
        assert_eq!(header_value(head, "Authorization"), Some("Bearer t"));
        assert_eq!(header_value(head, "origin"), Some("http://a"));
        assert_eq!(header_value(head, "cookie"), None);
        // The request line is not a header, even when it has a colon.
        assert_eq!(header_value(b"GET /a:b HTTP/1.1\r\n", "get /a"), None);
    }

    #[test]
    fn request_line_must_be_origin_form_http1() {
        let ok = parse_request_line;
        assert_eq!(
            ok(b"GET /ready?x=1 HTTP/1.1\r\nHost: a"),
            Some(("GET", "/ready?x=1"))
        );
        assert_eq!(ok(b"HEAD /health HTTP/1.0"), Some(("HEAD", "/health")));
        for bad in [
            &b"GET /health"[..],
            b"GET /health HTTP/2.0",
            b"GET  /health HTTP/1.1",
            b"get /health HTTP/1.1",
            b"GET http://host/health HTTP/1.1",
            b"GET /health HTTP/1.1 extra",
            b"\xff\xfe /health HTTP/1.1",
        ] {
            assert_eq!(ok(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(20));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn connection_slots_are_bounded_and_freed() {
        let active = Arc::new(AtomicUsize::new(0));
        let first = Slot::take(&active, 2).unwrap();
        let _second = Slot::take(&active, 2).unwrap();
        assert!(Slot::take(&active, 2).is_none());
        drop(first);
        assert!(Slot::take(&active, 2).is_some());
    }

    #[test]
    fn wake_address_is_connectable() {
        let wake = |s: &str| wake_addr(s.parse().unwrap()).to_string();
        assert_eq!(wake("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(wake("[::]:8080"), "[::1]:8080");
        assert_eq!(wake("10.1.2.3:8080"), "10.1.2.3:8080");
    }

    #[test]
    fn start_reports_address_in_use() {
        let (_, state) = router();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = ProbeServer::start(addr, state).err().unwrap();
        let shown = err.to_string();
        assert!(
            shown.contains(&addr.to_string()) && shown.contains("in use"),
            "{shown}"
        );
    }
}
