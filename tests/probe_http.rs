//! The probe server on real sockets: what kubelet sees, and what a hostile or broken client
//! cannot break.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use vault_rotator::credential::SecretKind;
use vault_rotator::http::{Limits, ProbeServer};
use vault_rotator::state::{serve_liveness, EventKind, SecretInfo, State};

/// Upper bound for any single socket wait; a hang fails the test instead of blocking CI.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

struct Response {
    status: u16,
    head: String,
    body: String,
}

fn state() -> Arc<State> {
    State::new(vec![SecretInfo {
        name: "db".into(),
        path: "database/creds/app".into(),
        kind: SecretKind::Dynamic,
    }])
}

fn start(state: Arc<State>) -> ProbeServer {
    ProbeServer::start("127.0.0.1:0".parse().unwrap(), state).unwrap()
}

fn start_with(limits: Limits) -> ProbeServer {
    ProbeServer::start_with("127.0.0.1:0".parse().unwrap(), state(), limits).unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream
}

/// Sends raw bytes and reads until the server closes the connection.
fn exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    // The server may close early (a refused or oversized request); what it said still counts.
    let _ = stream.write_all(raw);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

fn send(addr: SocketAddr, method: &str, path: &str) -> Response {
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: probe\r\n\r\n");
    parse(&exchange(addr, raw.as_bytes()))
}

fn parse(bytes: &[u8]) -> Response {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not a complete HTTP response: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    Response {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap()
}

#[test]
fn ready_tracks_writes_and_expiry() {
    let state = state();
    let server = start(state.clone());
    let addr = server.local_addr();

    let r = send(addr, "GET", "/ready");
    assert_eq!(r.status, 503);
    assert_eq!(json(&r)["status"], "not ready");
    assert_eq!(
        json(&r)["reason"],
        "secret \"db\": no credential written yet"
    );
    assert!(
        r.head.contains("content-type: application/json"),
        "{}",
        r.head
    );
    assert!(r.head.contains("cache-control: no-store"), "{}", r.head);

    state.record("db", EventKind::Written, "/vault/secrets/db.json");
    state.update("db", |s| {
        s.expires_at = Some(SystemTime::now() + Duration::from_secs(3600))
    });
    let r = send(addr, "GET", "/ready");
    assert_eq!(
        (r.status, json(&r)),
        (200, serde_json::json!({"status": "ready"}))
    );

    state.update("db", |s| {
        s.expires_at = Some(SystemTime::now() - Duration::from_secs(1))
    });
    let r = send(addr, "GET", "/ready");
    assert_eq!(r.status, 503);
    assert!(json(&r)["reason"]
        .as_str()
        .unwrap()
        .contains("credential expired at"));

    server.shutdown();
}

#[test]
fn health_follows_the_event_loop_and_tasks() {
    let state = state();
    let (ping_tx, ping_rx) = tokio::sync::mpsc::channel(8);
    state.set_liveness(ping_tx);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent_loop = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::select! {
                _ = serve_liveness(ping_rx) => {}
                _ = stop_rx => {}
            }
        });
    });
    let server = start(state.clone());
    let addr = server.local_addr();

    state.mark_task_alive("db", true);
    let r = send(addr, "GET", "/health");
    assert_eq!(
        (r.status, json(&r)),
        (200, serde_json::json!({"status": "ok"}))
    );

    state.mark_task_alive("db", false);
    let r = send(addr, "GET", "/health");
    assert_eq!(r.status, 503);
    assert_eq!(json(&r)["reason"], "secret \"db\": its task has stopped");

    state.mark_task_alive("db", true);
    stop_tx.send(()).unwrap();
    agent_loop.join().unwrap();
    let r = send(addr, "GET", "/health");
    assert_eq!(r.status, 503);
    assert!(
        json(&r)["reason"].as_str().unwrap().contains("stopped"),
        "{}",
        r.body
    );

    server.shutdown();
}

#[test]
fn head_404_and_405() {
    let server = start(state());
    let addr = server.local_addr();

    let r = send(addr, "HEAD", "/health");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert!(r.head.contains("content-type: application/json"));

    assert_eq!(send(addr, "GET", "/nope").status, 404);

    let r = send(addr, "DELETE", "/ready");
    assert_eq!(r.status, 405);
    assert!(r.head.contains("allow: get, head"), "{}", r.head);

    server.shutdown();
}

#[test]
fn garbage_and_huge_headers_do_not_break_later_probes() {
    // Short timeouts only so the unfinished request below is dropped quickly.
    let server = start_with(Limits {
        header_timeout: Duration::from_millis(400),
        connection_deadline: Duration::from_secs(1),
        ..Limits::default()
    });
    let addr = server.local_addr();

    let garbage = parse(&exchange(addr, b"\x00\x01\x02 not http at all\r\n\r\n"));
    assert_eq!(garbage.status, 400);

    let mut raw = b"GET /health HTTP/1.1\r\nHost: probe\r\nX-Big: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 64 * 1024));
    raw.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse(&exchange(addr, &raw)).status, 431);

    let bad_version = exchange(addr, b"GET /health HTTP/9.9\r\n\r\n");
    assert_eq!(parse(&bad_version).status, 400);
    let absolute_form = exchange(addr, b"GET http://x/health HTTP/1.1\r\n\r\n");
    assert_eq!(parse(&absolute_form).status, 400);
    assert!(
        exchange(addr, b"GET /health").is_empty(),
        "an unfinished head gets no reply"
    );
    // Refused as a bad method (400) or, had it been read whole, as too large (431).
    let binary = parse(&exchange(addr, &[0xff; 100_000])).status;
    assert!(matches!(binary, 400 | 431), "{binary}");

    assert_eq!(send(addr, "GET", "/health").status, 200);
    assert_eq!(send(addr, "GET", "/ready").status, 503);
    server.shutdown();
}

#[test]
fn idle_and_stalled_connections_do_not_starve_probes() {
    let server = start(state());
    let addr = server.local_addr();

    let _idle: Vec<TcpStream> = (0..64).map(|_| connect(addr)).collect();
    let mut stalled = connect(addr);
    stalled.write_all(b"GET /heal").unwrap();
    let mut half_header = connect(addr);
    half_header
        .write_all(b"GET /health HTTP/1.1\r\nX-Slow: aaa")
        .unwrap();

    for _ in 0..3 {
        assert_eq!(send(addr, "GET", "/health").status, 200);
        assert_eq!(send(addr, "GET", "/ready").status, 503);
    }
    server.shutdown();
}

#[test]
fn idle_and_trickling_connections_are_closed_at_their_deadline() {
    let server = start_with(Limits {
        header_timeout: Duration::from_millis(400),
        connection_deadline: Duration::from_secs(1),
        ..Limits::default()
    });
    let addr = server.local_addr();
    let started = Instant::now();

    // The read returns when the server closes, long before the client's own timeout.
    let mut buf = Vec::new();
    assert_eq!(connect(addr).read_to_end(&mut buf).unwrap(), 0);
    assert!(started.elapsed() < CLIENT_TIMEOUT);

    // A byte every 100ms never completes a head: the header deadline ends it. Each read waits for the server's answer, so this is not a timing guess.
    let mut trickle = connect(addr);
    trickle
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let closed_by_server = loop {
        assert!(
            started.elapsed() < CLIENT_TIMEOUT,
            "the server never closed the connection"
        );
        if trickle.write_all(b"G").is_err() {
            break true;
        }
        match trickle.read(&mut [0u8; 64]) {
            Ok(0) => break true,
            Ok(_) => break false,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break true,
        }
    };
    assert!(
        closed_by_server,
        "the server replied to an incomplete request"
    );

    assert_eq!(send(addr, "GET", "/health").status, 200);
    server.shutdown();
}

#[test]
fn at_the_limit_the_oldest_idle_connection_makes_room_for_a_probe() {
    let server = start_with(Limits {
        max_connections: 2,
        ..Limits::default()
    });
    let addr = server.local_addr();
    // Connections are accepted in order, so both idle ones hold a slot before the probe.
    let mut idle = [connect(addr), connect(addr)];
    let reply = exchange(addr, b"GET /health HTTP/1.1\r\n\r\n");
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    // The oldest idle connection was the one closed.
    idle[0]
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    let oldest = std::io::Read::read(&mut idle[0], &mut buf);
    assert!(matches!(oldest, Ok(0) | Err(_)), "{oldest:?}");
    server.shutdown();
}

#[test]
fn every_reply_closes_the_connection() {
    let server = start(state());
    let r = send(server.local_addr(), "GET", "/health");
    assert!(r.head.contains("connection: close"), "{}", r.head);
    assert!(r.head.contains("content-length: 16"), "{}", r.head);
    server.shutdown();
}

#[test]
fn shutdown_closes_the_listener() {
    let server = start(state());
    let addr = server.local_addr();
    assert_eq!(send(addr, "GET", "/health").status, 200);
    server.shutdown();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

/// Issue 13, failure 6: clients that send a whole request and then drip a byte every second
/// or so, more of them than the server has connection slots, and that reconnect whenever the
/// server closes them. A probe that arrives meanwhile must still be answered. Before the fix,
/// each answered connection was held while the client kept sending (the drain after the
/// reply had only a per-read timeout), every slot stayed taken, and the probe was closed
/// without a reply.
#[test]
fn dripping_clients_cannot_hold_every_slot() {
    const DRIPPERS: usize = 150;
    let server = start(state());
    let addr = server.local_addr();

    let dripper = move || -> Option<TcpStream> {
        let mut s = TcpStream::connect(addr).ok()?;
        s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: probe\r\n\r\n")
            .ok()?;
        Some(s)
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dripping = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conns: Vec<Option<TcpStream>> = (0..DRIPPERS).map(|_| dripper()).collect();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for conn in &mut conns {
                    // A closed connection is replaced, as an attacker would.
                    let alive = conn.as_mut().is_some_and(|s| s.write_all(b"x").is_ok());
                    if !alive {
                        *conn = dripper();
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // Let every dripper be answered and start dripping.
    std::thread::sleep(Duration::from_secs(2));

    for round in 0..5 {
        let reply = exchange(addr, b"GET /health HTTP/1.1\r\nHost: probe\r\n\r\n");
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "round {round}: with {DRIPPERS} dripping clients the probe got {text:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    dripping.join().unwrap();
    server.shutdown();
}

/// A client that was answered and keeps sending is closed at the connection deadline: the
/// linger after the reply cannot be stretched by dripping bytes into it.
#[test]
fn an_answered_client_that_keeps_sending_is_closed_at_the_deadline() {
    let server = start_with(Limits {
        connection_deadline: Duration::from_secs(1),
        ..Limits::default()
    });
    let addr = server.local_addr();
    let started = Instant::now();
    let mut dripper = connect(addr);
    dripper
        .write_all(b"GET /health HTTP/1.1\r\nHost: probe\r\n\r\n")
        .unwrap();
    // The reply, then end of stream: the server half-closes and lingers.
    let mut reply = Vec::new();
    dripper.read_to_end(&mut reply).unwrap();
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    // Once the server has closed for good, a write is answered with a reset.
    let closed_by_server = loop {
        if started.elapsed() > CLIENT_TIMEOUT {
            break false;
        }
        if dripper.write_all(b"x").is_err() {
            break true;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(closed_by_server, "the server kept a dripping client open");
    server.shutdown();
}

/// `/health` waits for the agent's event loop to answer a ping. While several such checks
/// wait, other requests are still answered: the router runs off the server's runtime.
#[test]
fn health_checks_waiting_on_the_agent_do_not_hold_up_other_requests() {
    const WAITING: usize = 6;
    let state = state();
    // The test plays the agent's event loop: it takes the pings and answers them late.
    let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel(8);
    state.set_liveness(ping_tx);
    let server = start(state);
    let addr = server.local_addr();

    let healths: Vec<_> = (0..WAITING)
        .map(|_| std::thread::spawn(move || send(addr, "GET", "/health")))
        .collect();
    let started = Instant::now();
    let mut unanswered = Vec::new();
    while unanswered.len() < WAITING {
        assert!(
            started.elapsed() < CLIENT_TIMEOUT,
            "only {} of {WAITING} health checks reached the agent",
            unanswered.len()
        );
        match ping_rx.try_recv() {
            Ok(reply) => unanswered.push(reply),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }

    // Every health check is waiting now; this one must not queue behind them.
    assert_eq!(send(addr, "GET", "/ready").status, 503);
    for reply in unanswered {
        let _ = reply.send(());
    }
    for health in healths {
        let r = health.join().unwrap();
        // Had /ready waited for them, they would have given up first and failed.
        assert_eq!(r.status, 200, "{}", r.body);
    }
    server.shutdown();
}
