//! Typed errors. [`ApiError`] is what a handler returns for a client-visible
//! failure: a status plus the exact `errors` strings Vault would send.
//! [`StartError`] covers process start-up (bind, TLS material).

use serde_json::Value;

use crate::envelope::multierror;
use crate::flavor::Flavor;

/// A failed API request, rendered as `{"errors":[...]}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("HTTP {status}: {errors:?}")]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// The strings of the `errors` array (may be empty, like Vault's 404s).
    pub errors: Vec<String>,
    /// Set for `RespondErrorAndData` style errors.
    pub data: Option<Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with one bare message (a backend `logical.ErrorResponse`).
    pub fn new(status: u16, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            errors: vec![msg.into()],
            data: None,
        }
    }

    /// 400 with a bare message.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, msg)
    }

    /// 404 `{"errors":[]}`: nothing at this path.
    pub fn not_found() -> Self {
        ApiError {
            status: 404,
            errors: Vec::new(),
            data: None,
        }
    }

    /// 400 `{"errors":[]}`.
    pub fn bad_request_empty() -> Self {
        ApiError {
            status: 400,
            errors: Vec::new(),
            data: None,
        }
    }

    /// A plain Go error from the request pipeline, multierror-wrapped.
    pub fn wrapped(status: u16, msg: &str) -> Self {
        Self::new(status, multierror(&[msg]))
    }

    /// 403 from an ACL denial.
    pub fn permission_denied() -> Self {
        Self::wrapped(403, "permission denied")
    }

    /// 403 for an unknown, expired or revoked token. OpenBao 2.7 answers a bare
    /// `permission denied`, without Vault's `invalid token` and without the multierror text.
    pub fn invalid_token(flavor: Flavor) -> Self {
        match flavor {
            Flavor::Vault => Self::new(403, multierror(&["permission denied", "invalid token"])),
            Flavor::OpenBao => Self::new(403, "permission denied"),
        }
    }

    /// 403 for a request without a token on a path that needs one.
    pub fn missing_token(flavor: Flavor) -> Self {
        match flavor {
            Flavor::Vault => Self::permission_denied(),
            Flavor::OpenBao => Self::new(403, "permission denied"),
        }
    }

    /// 404 for a path no backend handles.
    pub fn unsupported_path() -> Self {
        Self::wrapped(404, "unsupported path")
    }

    /// 405 for a method the path does not handle.
    pub fn unsupported_operation() -> Self {
        Self::wrapped(405, "unsupported operation")
    }

    /// 500 for an internal failure (plain Go error).
    pub fn internal(msg: &str) -> Self {
        Self::wrapped(500, msg)
    }

    /// 503 while sealed.
    pub fn sealed() -> Self {
        Self::new(503, "Vault is sealed")
    }

    /// 400 `error parsing JSON`.
    pub fn bad_json() -> Self {
        Self::bad_request("error parsing JSON")
    }
}

/// Failures while starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        path: String,
        source: std::io::Error,
    },
    #[error("no private key found in {0}")]
    NoKey(String),
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
    #[error("--tls-cert and --tls-key must be given together")]
    TlsPair,
    #[error("cannot write ready line: {0}")]
    Stdout(std::io::Error),
}
