//! The admin listener's routes and its gate: `POST /rotate` and `POST /rotate/<secret>`,
//! loopback-only unless remote peers are allowed, never from a browser page, and with the
//! bearer token when one is configured. docs/admin.md has the security model.

use std::path::PathBuf;

use subtle::ConstantTimeEq;

use super::router::{Reply, Request, Route, Router};

/// Who may use the admin routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminAccess {
    /// Holds the bearer token; re-read on every request, so a rotated Kubernetes Secret
    /// applies at once. `None`: no token needed (loopback peers only, then).
    pub token_file: Option<PathBuf>,
    /// Accept non-loopback peers.
    pub allow_remote: bool,
}

pub(super) const ROUTES: &[Route] = &[
    Route::exact("/rotate", &["POST"], rotate),
    Route::prefix("/rotate/", &["POST"], rotate),
];

/// `POST /rotate` (every secret) or `POST /rotate/<secret>`: wakes the workers, as SIGUSR1
/// does, and answers before the rotation is done (202): it can take a while, and its outcome
/// shows on `/status` and in the file.
fn rotate(router: &Router, req: &Request, path: &str) -> Reply {
    let name = path.strip_prefix("/rotate/");
    match router.state().request_rotation(name) {
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
pub(super) fn admit(access: &AdminAccess, req: &Request) -> Result<(), Reply> {
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
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::testing::{body, router};
    use super::*;

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
}
