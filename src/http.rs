//! The probe server: `/health` and `/ready` for kubelet, on its own OS threads so a stuck
//! async runtime cannot take the probes down with it (that is exactly what `/health` must
//! detect).
//!
//! Routing is a pure function from method and URL to a [`Reply`], testable without sockets;
//! the transport below only moves bytes. Add a route to [`ROUTES`] to serve more
//! (`/metrics`, `/status`, an admin `POST /rotate`).
//!
//! The transport is a deliberately small HTTP/1.x server on std, not tiny_http: tiny_http
//! 0.12 has no per-connection timeouts, and its thread pool can queue a new connection behind
//! workers blocked forever on idle ones, so a handful of idle connections could leave a probe
//! unanswered. Here every connection gets its own short-lived thread, read and write timeouts,
//! a deadline for the whole request head, a size cap on it, and `Connection: close`
//! (kubelet does not keep probe connections alive). Connections beyond
//! [`Limits::max_connections`] are closed at once, so memory stays bounded.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::state::State;

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

    #[error("cannot start the probe server thread: {error}")]
    Thread { error: io::Error },
}

/// A running probe server; [`ProbeServer::shutdown`] stops it.
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
        let bind_error = |error| HttpError::Bind {
            addr: listen,
            error,
        };
        let listener = TcpListener::bind(listen).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = Acceptor {
            listener,
            router: Router::new(state),
            limits,
            stop: stop.clone(),
            active: Arc::new(AtomicUsize::new(0)),
        };
        let thread = std::thread::Builder::new()
            .name("probe-accept".into())
            .spawn(move || acceptor.run())
            .map_err(|error| HttpError::Thread { error })?;
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
}

impl Acceptor {
    fn run(self) {
        loop {
            let accepted = self.listener.accept();
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            match accepted {
                Ok((stream, _)) => self.dispatch(stream),
                Err(error) => {
                    tracing::warn!(%error, "probe server cannot accept a connection");
                    std::thread::sleep(ACCEPT_ERROR_PAUSE);
                }
            }
        }
    }

    /// Serves the connection on its own thread, or closes it when every slot is taken.
    fn dispatch(&self, stream: TcpStream) {
        let Some(slot) = Slot::take(&self.active, self.limits.max_connections) else {
            tracing::debug!("probe server at its connection limit; closing a new connection");
            return;
        };
        let (router, limits) = (self.router.clone(), self.limits);
        let spawned = std::thread::Builder::new()
            .name("probe-conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                let _slot = slot;
                serve_connection(stream, &router, &limits);
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
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads one request head, replies, and closes. I/O errors end the connection quietly: the
/// client went away or stalled, and there is no one left to tell.
fn serve_connection(mut stream: TcpStream, router: &Router, limits: &Limits) {
    let timeouts = stream
        .set_read_timeout(Some(limits.io_timeout))
        .and_then(|()| stream.set_write_timeout(Some(limits.io_timeout)));
    if let Err(error) = timeouts {
        tracing::debug!(%error, "cannot set timeouts on a probe connection");
        return;
    }
    let reply = match read_head(&mut stream, limits) {
        Ok(head) => match parse_request_line(&head) {
            Some((method, target)) => router.route(method, target),
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
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
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
        Reply {
            status,
            headers: vec![
                ("Content-Type", "application/json".into()),
                ("Cache-Control", "no-store".into()),
            ],
            body: bytes,
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

/// One path the server answers, the methods it accepts, and what computes the reply.
struct Route {
    path: &'static str,
    methods: &'static [&'static str],
    handler: fn(&State) -> Reply,
}

const ROUTES: &[Route] = &[
    Route {
        path: "/health",
        methods: &["GET", "HEAD"],
        handler: health,
    },
    Route {
        path: "/ready",
        methods: &["GET", "HEAD"],
        handler: ready,
    },
];

/// Maps a request to a reply; no sockets involved.
#[derive(Clone)]
pub struct Router {
    state: Arc<State>,
}

impl Router {
    pub fn new(state: Arc<State>) -> Router {
        Router { state }
    }

    /// Routes by exact path (the query string is ignored). Unknown paths get 404, known paths
    /// with another method 405 with `Allow`, and HEAD the same reply without a body.
    pub fn route(&self, method: &str, url: &str) -> Reply {
        let path = url.split_once('?').map_or(url, |(path, _)| path);
        let mut reply = self.dispatch(method, path);
        if method == "HEAD" {
            reply.body.clear();
        }
        reply
    }

    fn dispatch(&self, method: &str, path: &str) -> Reply {
        let Some(route) = ROUTES.iter().find(|r| r.path == path) else {
            return Reply::json(404, serde_json::json!({ "status": "not found" }));
        };
        if !route.methods.contains(&method) {
            let mut reply = Reply::json(405, serde_json::json!({ "status": "method not allowed" }));
            reply.headers.push(("Allow", route.methods.join(", ")));
            return reply;
        }
        (route.handler)(&self.state)
    }
}

/// Liveness never asks Vault: restarting the agent cannot fix Vault, and restart storms hurt.
fn health(state: &State) -> Reply {
    match state.alive() {
        Ok(()) => Reply::json(200, serde_json::json!({ "status": "ok" })),
        Err(reason) => Reply::json(
            503,
            serde_json::json!({ "status": "unhealthy", "reason": reason }),
        ),
    }
}

fn ready(state: &State) -> Reply {
    match state.ready(SystemTime::now()) {
        Ok(()) => Reply::json(200, serde_json::json!({ "status": "ready" })),
        Err(reason) => Reply::json(
            503,
            serde_json::json!({ "status": "not ready", "reason": reason }),
        ),
    }
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
        assert_eq!(router.route("GET", "/").status, 404);
        assert_eq!(router.route("GET", "/health/").status, 404);
        assert!(router.route("HEAD", "/nope").body.is_empty());
        let reply = router.route("POST", "/health");
        assert_eq!(reply.status, 405);
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
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
