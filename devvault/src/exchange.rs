//! The request and reply types every engine speaks: what the router hands a handler
//! ([`Req`]) and what the handler answers ([`Reply`], usually a [`Logical`] envelope).
//! A leaf below the router and the engines, so the engines never import the router.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::acl::Op;
use crate::envelope::{self, Auth};
use crate::error::ApiError;
use crate::job::Job;
use crate::token_entry::TokenEntry;

/// A parsed logical request.
pub struct Req {
    pub request_id: String,
    pub op: Op,
    /// Logical path without `/v1/`; list requests end in `/`.
    pub path: String,
    /// Body (or query) parameters.
    pub data: Map<String, Value>,
    /// The token string presented, if any.
    pub raw_token: Option<String>,
    /// The calling token, once validated.
    pub caller: Option<TokenEntry>,
    pub wrap_ttl: Option<Duration>,
    pub is_head: bool,
    pub query: BTreeMap<String, String>,
    pub content_type: String,
    /// Database work to run before answering (revocations).
    pub jobs: Vec<Job>,
}

/// An envelope response as a handler builds it.
#[derive(Debug, Default, Clone)]
pub struct Logical {
    /// Non-200 status: rendered as a raw envelope (`RespondWithStatusCode`).
    pub status: Option<u16>,
    pub data: Option<Value>,
    pub lease_id: String,
    pub renewable: bool,
    pub lease_duration: i64,
    pub warnings: Vec<String>,
    pub auth: Option<Auth>,
    /// Copy `data` keys to the top level (`HTTPSysInjector`).
    pub inject: bool,
    /// Overrides the mount type derived from the path.
    pub mount_type: Option<String>,
}

impl Logical {
    pub fn data(v: Value) -> Logical {
        Logical {
            data: Some(v),
            ..Default::default()
        }
    }
}

/// What a handler answers.
// One short-lived value per request; boxing the big variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Reply {
    /// 204, empty body.
    NoContent,
    /// 202, empty body (async lease revocation).
    Accepted,
    /// The standard envelope.
    Logical(Logical),
    /// A pre-serialised JSON body with its own status (sys/health).
    Raw { status: u16, body: Vec<u8> },
    /// An unwrapped response: the stored original bytes.
    Unwrapped(Vec<u8>),
    /// A response replaced by its wrapping token.
    Wrapped(envelope::WrapInfo),
}

/// What goes back on the wire.
pub struct HttpOut {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpOut {
    pub fn error(e: &ApiError) -> HttpOut {
        HttpOut {
            status: e.status,
            headers: Vec::new(),
            body: envelope::error_body(&e.errors, e.data.as_ref()),
        }
    }
}
