//! Routing: a pure function from a [`Request`] to a [`Reply`], independent of the HTTP
//! library and testable without sockets. The route tables live with their handlers in
//! `probes` and `admin`.

use std::net::SocketAddr;
use std::sync::Arc;

use super::admin::{self, AdminAccess};
use super::probes;
use crate::metrics::VaultRequests;
use crate::state::State;
use crate::status::StatusOptions;

/// A response, independent of the HTTP library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// A short JSON reply that no cache may keep: probe answers are only true right now.
    pub(super) fn json(status: u16, body: serde_json::Value) -> Reply {
        let mut bytes = body.to_string().into_bytes();
        bytes.push(b'\n');
        Reply::with_type(status, "application/json", bytes)
    }

    pub(super) fn with_type(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
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

/// Which routes a router serves.
#[derive(Debug, Clone)]
enum Listener {
    Probe(StatusOptions),
    Admin(AdminAccess),
}

/// A route's handler: the router (for the state), the request, and its path without query.
pub(super) type Handler = fn(&Router, &Request, &str) -> Reply;

/// One path the server answers, the methods it accepts, and what computes the reply.
pub(super) struct Route {
    path: &'static str,
    /// Match every path that starts with `path` (which then ends in `/`), e.g. `/rotate/<name>`.
    prefix: bool,
    methods: &'static [&'static str],
    handler: Handler,
}

impl Route {
    pub(super) const fn exact(
        path: &'static str,
        methods: &'static [&'static str],
        handler: Handler,
    ) -> Route {
        Route {
            path,
            prefix: false,
            methods,
            handler,
        }
    }

    pub(super) const fn prefix(
        path: &'static str,
        methods: &'static [&'static str],
        handler: Handler,
    ) -> Route {
        Route {
            path,
            prefix: true,
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

/// Maps a request to a reply; no sockets involved.
#[derive(Clone)]
pub struct Router {
    state: Arc<State>,
    /// The agent's Vault request metrics, for `/metrics`.
    vault_requests: Arc<VaultRequests>,
    listener: Listener,
}

impl Router {
    /// The probe routes, showing usernames on `/status`, with no Vault requests counted.
    pub fn new(state: Arc<State>) -> Router {
        Router::probes(state, Arc::default(), StatusOptions::default())
    }

    /// The probe routes: `/health`, `/ready`, `/metrics`, `/status`, `/`, `/status.html`.
    pub fn probes(
        state: Arc<State>,
        vault_requests: Arc<VaultRequests>,
        status: StatusOptions,
    ) -> Router {
        Router {
            state,
            vault_requests,
            listener: Listener::Probe(status),
        }
    }

    /// The admin routes only: `POST /rotate` and `POST /rotate/<secret>`.
    pub fn admin(state: Arc<State>, access: AdminAccess) -> Router {
        Router {
            state,
            vault_requests: Arc::default(),
            listener: Listener::Admin(access),
        }
    }

    /// Names the server in thread names and errors.
    pub(super) fn what(&self) -> &'static str {
        match self.listener {
            Listener::Probe(_) => "probe",
            Listener::Admin(_) => "admin",
        }
    }

    pub(super) fn state(&self) -> &State {
        &self.state
    }

    pub(super) fn vault_requests(&self) -> &VaultRequests {
        &self.vault_requests
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
    /// listener every request must first pass `admin::admit`, so a refused client learns
    /// nothing, not even which paths exist.
    ///
    /// May block: `/health` waits up to [`crate::state::LIVENESS_TIMEOUT`] for the agent's
    /// event loop, and the admin gate reads the token file. The server calls it off its
    /// async runtime.
    pub fn handle(&self, req: &Request) -> Reply {
        let path = req
            .target
            .split_once('?')
            .map_or(req.target, |(path, _)| path);
        let mut reply = match &self.listener {
            Listener::Probe(_) => self.dispatch(probes::ROUTES, req, path),
            Listener::Admin(access) => match admin::admit(access, req) {
                Ok(()) => self.dispatch(admin::ROUTES, req, path),
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

    pub(super) fn status_options(&self) -> StatusOptions {
        match &self.listener {
            Listener::Probe(opts) => *opts,
            Listener::Admin(_) => StatusOptions::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::router;

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
}
