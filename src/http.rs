//! The probe server: `/health` and `/ready` for kubelet, on its own OS thread so a stuck
//! async runtime cannot take the probes down with it (that is exactly what `/health` must
//! detect).
//!
//! Routing is a pure function from method and URL to a [`Reply`], testable without sockets;
//! the tiny_http glue only moves bytes. Add a route to [`ROUTES`] to serve more
//! (`/metrics`, `/status`, an admin `POST /rotate`).
//!
//! Robustness: tiny_http parses each connection on its own thread, so idle or garbage
//! connections never delay other probes, and a malformed request only gets its own connection
//! a 400. tiny_http stops accepting for good after one `accept` error (e.g. EMFILE when out
//! of file descriptors), so the server listens again on the same address when that happens.
//!
//! Known limits of tiny_http 0.12, none fixable from outside it without unsafe code:
//! connections have no read timeout (an idle connection holds a thread until the client
//! closes it), the number of connection threads is unbounded, and a request line or header
//! has no length limit. Read timeouts cannot be inherited from the listening socket either:
//! Linux applies `SO_RCVTIMEO` to `accept` too, which would kill tiny_http's accept thread.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::state::State;

/// Pause between attempts to listen again after the accept thread died.
const REBIND_PAUSE: Duration = Duration::from_secs(1);

/// Errors starting the probe server; each names the address and the OS error.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: SocketAddr, error: io::Error },

    #[error("cannot start the probe server on {addr}: {reason}")]
    Start { addr: SocketAddr, reason: String },

    #[error("cannot start the probe server thread: {error}")]
    Thread { error: io::Error },
}

/// A running probe server; [`ProbeServer::shutdown`] stops it.
pub struct ProbeServer {
    local_addr: SocketAddr,
    /// The server currently accepting; replaced on re-bind, so shutdown unblocks the right one.
    current: Arc<Mutex<Arc<tiny_http::Server>>>,
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl ProbeServer {
    /// Listens on `listen` (port 0 picks a free port; see [`ProbeServer::local_addr`]) and
    /// serves on a new thread.
    pub fn start(listen: SocketAddr, state: Arc<State>) -> Result<ProbeServer, HttpError> {
        let (server, local_addr) = listen_on(listen)?;
        let current = Arc::new(Mutex::new(Arc::new(server)));
        let (stop, stop_rx) = mpsc::channel();
        let serving = Serving {
            router: Router::new(state),
            current: current.clone(),
            stop: stop_rx,
            addr: local_addr,
        };
        let thread = std::thread::Builder::new()
            .name("probe-http".into())
            .spawn(move || serving.run())
            .map_err(|error| HttpError::Thread { error })?;
        Ok(ProbeServer {
            local_addr,
            current,
            stop,
            thread,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and waits for the server thread to end. Connections still open are
    /// served by tiny_http's own threads until their clients close them.
    pub fn shutdown(self) {
        // The thread may already be gone; then there is nothing to stop.
        let _ = self.stop.send(());
        current_server(&self.current).unblock();
        if self.thread.join().is_err() {
            tracing::error!("the probe server thread panicked");
        }
    }
}

fn current_server(current: &Mutex<Arc<tiny_http::Server>>) -> Arc<tiny_http::Server> {
    current
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Binds with std rather than `Server::http`, so a failure keeps its `io::Error`.
fn listen_on(addr: SocketAddr) -> Result<(tiny_http::Server, SocketAddr), HttpError> {
    let listener = TcpListener::bind(addr).map_err(|error| HttpError::Bind { addr, error })?;
    let local_addr = listener
        .local_addr()
        .map_err(|error| HttpError::Bind { addr, error })?;
    let server =
        tiny_http::Server::from_listener(listener, None).map_err(|e| HttpError::Start {
            addr,
            reason: e.to_string(),
        })?;
    Ok((server, local_addr))
}

/// The server thread's state.
struct Serving {
    router: Router,
    current: Arc<Mutex<Arc<tiny_http::Server>>>,
    stop: Receiver<()>,
    addr: SocketAddr,
}

impl Serving {
    fn run(self) {
        loop {
            let server = current_server(&self.current);
            match server.recv() {
                Ok(request) => self.respond(request),
                Err(_) if self.stopping() => return,
                Err(error) => {
                    tracing::error!(addr = %self.addr, %error, "probe server stopped accepting connections; listening again");
                    drop(server);
                    if !self.rebind() {
                        return;
                    }
                }
            }
        }
    }

    fn respond(&self, request: tiny_http::Request) {
        let reply = self.router.route(request.method().as_str(), request.url());
        if let Err(error) = request.respond(reply.into_response()) {
            tracing::debug!(%error, "probe client went away before the reply");
        }
    }

    fn stopping(&self) -> bool {
        !matches!(self.stop.try_recv(), Err(TryRecvError::Empty))
    }

    /// Retries until it listens again or is told to stop; returns whether it listens.
    fn rebind(&self) -> bool {
        loop {
            // The dead accept thread dropped the old listener, so the address is free again.
            match listen_on(self.addr) {
                Ok((server, _)) => {
                    *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(server);
                    tracing::info!(addr = %self.addr, "probe server listening again");
                    return true;
                }
                Err(error) => tracing::error!(%error, "probe server cannot listen again; retrying"),
            }
            match self.stop.recv_timeout(REBIND_PAUSE) {
                Err(RecvTimeoutError::Timeout) => continue,
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
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

    fn into_response(self) -> tiny_http::Response<io::Cursor<Vec<u8>>> {
        let mut response = tiny_http::Response::from_data(self.body).with_status_code(self.status);
        for (name, value) in self.headers {
            match tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                Ok(header) => response.add_header(header),
                Err(()) => tracing::warn!(header = name, "invalid response header dropped"),
            }
        }
        response
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
