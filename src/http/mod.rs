//! The probe server: `/health` and `/ready` for kubelet, `/metrics`, `/status` and the status
//! page. A second instance, with only the admin routes (`POST /rotate[/<secret>]`), is the
//! admin listener; docs/admin.md has its security model.
//!
//! - [`router`]: a pure function from a [`Request`] (method, target, peer, the two headers
//!   that matter) to a [`Reply`], testable without sockets. `probes` and [`admin`] hold the
//!   routes and their handlers; add a route to their tables to serve more.
//! - [`server`]: the transport. hyper's HTTP/1 server on its own OS thread with its own
//!   current-thread runtime, so a stuck agent runtime cannot take the probes down (that is
//!   exactly what `/health` must detect). Every connection has a header deadline, a deadline
//!   for its whole life, a small read buffer and no keep-alive; at the connection cap the
//!   oldest connection is closed to make room (`slots`), so no client, however slow, can
//!   lock kubelet out.
//!
//! Why not tiny_http, which the design card suggested: tiny_http 0.12 sets no socket
//! timeouts, holds a thread per idle connection without a cap, and its accept loop stops for
//! good on the first accept error (for example, out of file descriptors).

pub mod admin;
mod probes;
pub mod router;
pub mod server;
mod slots;

pub use admin::AdminAccess;
pub use router::{Reply, Request, Router};
pub use server::{HttpError, Limits, ProbeServer};

#[cfg(test)]
mod testing {
    use std::sync::Arc;

    use super::Router;
    use crate::credential::SecretKind;
    use crate::state::{SecretInfo, State};

    /// A probe router over one dynamic secret called `db`.
    pub fn router() -> (Router, Arc<State>) {
        let state = State::new(vec![SecretInfo {
            name: "db".into(),
            path: "database/creds/app".into(),
            kind: SecretKind::Dynamic,
        }]);
        (Router::new(state.clone()), state)
    }

    pub fn body(reply: &super::Reply) -> serde_json::Value {
        serde_json::from_slice(&reply.body).unwrap()
    }
}
