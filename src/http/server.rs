//! The transport: hyper's HTTP/1 server, served the way linkerd2-proxy serves its admin
//! endpoint. It runs on its own OS thread with a current-thread runtime, so a stuck or
//! starved agent runtime cannot take the probes down with it.
//!
//! What one client can make the server hold is bounded ([`Limits`]): the request head must
//! arrive within `header_timeout` and fit the read buffer (else 431); each connection answers
//! one request (`keep_alive(false)`, as kubelet does not reuse probe connections) and is
//! closed at `connection_deadline` whatever it is doing, lingering included; and at
//! `max_connections` the oldest connection is closed to make room for the new one.
//!
//! The router runs on the runtime's blocking pool: `/health` waits for the agent's event
//! loop to answer a ping, and the admin gate reads the token file, and neither may stall the
//! other connections.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, ORIGIN};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::router::{Reply, Request, Router};
use super::slots::Slots;
use crate::state::State;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop cannot spin;
/// the loop itself never stops on an error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// hyper's smallest allowed read buffer.
const MIN_BUF: usize = 8 * 1024;
/// After the reply, how long and how much of what the client still sends is read and
/// discarded before closing: closing with unread input makes the kernel send RST, which can
/// destroy the reply in flight. Only a courtesy to clients that send a body, so it is short.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 1024 * 1024;
/// Threads for the router. A `/health` call waits for the agent's event loop (at most
/// [`crate::state::LIVENESS_TIMEOUT`]) only while the liveness channel has room for its ping
/// (the agent makes it hold 8); beyond that it fails at once. Twice that many threads leave
/// room for `/ready` even while the agent is stuck.
const ROUTER_THREADS: usize = 16;
/// How long [`ProbeServer::shutdown`] lets routing in progress finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Bounds on what one client can make the server hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest time from accept to a complete request head, against clients trickling bytes.
    pub header_timeout: Duration,
    /// Longest life of a connection, from accept to close, whatever the client does.
    pub connection_deadline: Duration,
    /// Largest request head (the read buffer; at least 8 KiB); larger gets 431.
    pub max_head_bytes: usize,
    /// Connections served at once; at the cap the oldest is closed to admit a new one.
    pub max_connections: usize,
}

impl Default for Limits {
    /// Kubelet sends its whole request at once and gives up after 1s by default, so these
    /// only ever bite misbehaving clients.
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(5),
            connection_deadline: Duration::from_secs(10),
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

    #[error("cannot start the {what} server's runtime: {error}")]
    Runtime {
        what: &'static str,
        error: io::Error,
    },

    #[error("cannot start the {what} server thread: {error}")]
    Thread {
        what: &'static str,
        error: io::Error,
    },
}

/// A running probe (or admin) server; [`ProbeServer::shutdown`] stops it, and so does
/// dropping it (without waiting).
pub struct ProbeServer {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl ProbeServer {
    /// Listens on `listen` (port 0 picks a free port; see [`ProbeServer::local_addr`]) and
    /// serves the probe routes.
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
    /// made. Binding happens before this returns, so an address in use is an error here.
    pub fn serve(
        listen: SocketAddr,
        router: Router,
        limits: Limits,
    ) -> Result<ProbeServer, HttpError> {
        let what = router.what();
        let bind_error = move |error| HttpError::Bind {
            addr: listen,
            error,
        };
        let std_listener = std::net::TcpListener::bind(listen).map_err(bind_error)?;
        std_listener.set_nonblocking(true).map_err(bind_error)?;
        let local_addr = std_listener.local_addr().map_err(bind_error)?;
        let (stop, stopped) = oneshot::channel();
        // The runtime is made, and dropped, on the server's own thread only: dropping a
        // runtime on the caller's thread panics when the caller is async code.
        let (started_tx, started) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(format!("{what}-http"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .max_blocking_threads(ROUTER_THREADS)
                    .thread_name(format!("{what}-route"))
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = started_tx.send(Err(HttpError::Runtime { what, error }));
                        return;
                    }
                };
                let listener = {
                    let _entered = runtime.enter();
                    TcpListener::from_std(std_listener)
                };
                match listener {
                    Ok(listener) => {
                        let _ = started_tx.send(Ok(()));
                        runtime.block_on(accept_loop(listener, router, limits, stopped));
                    }
                    Err(error) => {
                        let _ = started_tx.send(Err(bind_error(error)));
                    }
                }
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
            })
            .map_err(|error| HttpError::Thread { what, error })?;
        // The thread answers as soon as it is serving, or why it cannot.
        match started.recv() {
            Ok(Ok(())) => Ok(ProbeServer {
                local_addr,
                stop,
                thread,
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(HttpError::Thread {
                what,
                error: io::Error::other("the server thread ended before it started serving"),
            }),
        }
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes the listening socket and open connections, and waits for the
    /// server thread.
    pub fn shutdown(self) {
        // The thread may already be gone; then there is nothing to stop.
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the probe server's thread panicked");
        }
    }
}

/// Accepts until told to stop (or the [`ProbeServer`] is dropped). Accept errors, such as
/// running out of file descriptors, are logged and retried after a pause: the probes must
/// come back once the cause goes away.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
) {
    let slots = Slots::new(limits.max_connections);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (mut ticket, evicted) = slots.admit();
                if evicted > 0 {
                    tracing::debug!(
                        "probe server at its connection limit; closed the oldest connection"
                    );
                }
                let router = router.clone();
                tokio::spawn(async move {
                    let conversation = tokio::time::timeout(
                        limits.connection_deadline,
                        converse(stream, peer, router, limits),
                    );
                    tokio::select! {
                        outcome = conversation => if outcome.is_err() {
                            tracing::debug!(%peer, "probe connection closed at its deadline");
                        },
                        // The ticket, dropped at the end of this task, frees the slot.
                        _ = &mut ticket.evicted => {}
                    }
                });
                // Let the new connection read its request before accepting more, so a flood
                // of connections cannot evict a probe before it has been read.
                tokio::task::yield_now().await;
            }
            Err(error) => {
                tracing::warn!(%error, "probe server cannot accept a connection");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// One request and its reply, then a short linger. Errors end the connection quietly: the
/// client went away or misbehaved, and hyper has already answered what deserves an answer
/// (400 for a malformed head, 431 for an oversized one).
async fn converse(mut stream: TcpStream, peer: SocketAddr, router: Router, limits: Limits) {
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let reply = respond(router.clone(), peer, Owned::of(&req));
        async move { Ok::<_, Infallible>(reply.await) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(false)
        .max_buf_size(limits.max_head_bytes.max(MIN_BUF))
        .serve_connection(TokioIo::new(&mut stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, %peer, "probe connection ended without a complete exchange");
    }
    let _ = tokio::time::timeout(LINGER_TIME, linger(&mut stream)).await;
}

/// Half-closes, then reads what the client still sends (bounded) before the socket closes.
async fn linger(stream: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    // hyper has usually shut down the write side already; a second shutdown is harmless.
    let _ = stream.shutdown().await;
    let _ = tokio::io::copy(&mut stream.take(LINGER_BYTES), &mut tokio::io::sink()).await;
}

/// What the router needs of a request, owned, so it can move to a blocking thread.
struct Owned {
    method: String,
    target: String,
    authorization: Option<String>,
    origin: Option<String>,
}

impl Owned {
    /// Only origin-form targets (`/path?query`): probes and curl send nothing else.
    fn of(req: &hyper::Request<Incoming>) -> Option<Owned> {
        let uri = req.uri();
        if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
            return None;
        }
        // Lossy rather than dropped: an Origin header that is not text is still one.
        let header = |name| {
            req.headers()
                .get(name)
                .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
        };
        Some(Owned {
            method: req.method().as_str().to_owned(),
            target: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
            authorization: header(AUTHORIZATION),
            origin: header(ORIGIN),
        })
    }
}

/// Runs the router for one request, off the async runtime (see the module docs).
async fn respond(router: Router, peer: SocketAddr, req: Option<Owned>) -> Response<Full<Bytes>> {
    let Some(req) = req else {
        return to_response(Reply::json(
            400,
            serde_json::json!({ "status": "bad request" }),
        ));
    };
    let routed = tokio::task::spawn_blocking(move || {
        router.handle(&Request {
            method: &req.method,
            target: &req.target,
            peer: Some(peer),
            authorization: req.authorization.as_deref(),
            origin: req.origin.as_deref(),
        })
    })
    .await;
    let reply = routed.unwrap_or_else(|error| {
        tracing::error!(%error, "the probe router failed");
        Reply::json(500, serde_json::json!({ "status": "internal error" }))
    });
    to_response(reply)
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in reply.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => tracing::error!(header = name, "the probe router made an invalid header"),
        }
    }
    // Said explicitly, so clients do not wait for a keep-alive that will not come.
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::super::testing::router;
    use super::*;

    #[test]
    fn start_reports_address_in_use() {
        let (_, state) = router();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = ProbeServer::start(addr, state).err().unwrap();
        let shown = err.to_string();
        assert!(
            shown.contains(&addr.to_string()) && shown.contains("in use"),
            "{shown}"
        );
    }

    /// The agent starts its servers from async code, and a busy admin port is only a
    /// warning there: the failure must come back as an error, not a panic.
    #[tokio::test]
    async fn a_failed_start_from_async_code_is_an_error() {
        let (router, _) = router();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = ProbeServer::serve(addr, router, Limits::default())
            .err()
            .unwrap();
        assert!(matches!(err, HttpError::Bind { .. }), "{err}");
    }

    #[test]
    fn replies_become_responses_that_close_the_connection() {
        let mut reply = Reply::json(405, serde_json::json!({ "status": "x" }));
        reply.headers.push(("Allow", "GET, HEAD".into()));
        reply.headers.push(("X-Bad", "line\nbreak".into()));
        let response = to_response(reply);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let headers = response.headers();
        assert_eq!(headers["allow"], "GET, HEAD");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["connection"], "close");
        assert!(
            !headers.contains_key("x-bad"),
            "an invalid value is dropped"
        );
    }
}
