//! What a request to Vault can end in, besides an answer.

use std::time::Duration;

use reqwest::Method;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Vault answered with an error status; `errors` is Vault's own error text.
    #[error("{method} {path}: HTTP {status}: {}", display_errors(.errors))]
    Status {
        method: Method,
        path: String,
        status: u16,
        errors: Vec<String>,
        retry_after: Option<Duration>,
    },
    #[error("{method} {path}: {reason}")]
    Transport {
        method: Method,
        path: String,
        reason: String,
        timeout: bool,
    },
    #[error("{method} {path}: response is not what Vault sends: {reason}")]
    Decode {
        method: Method,
        path: String,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}

fn display_errors(errors: &[String]) -> String {
    if errors.is_empty() {
        return "(no error text)".into();
    }
    // Vault's multierror strings carry newlines and tabs; keep log lines on one line.
    errors
        .iter()
        .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("; ")
}

impl VaultError {
    pub fn status(&self) -> Option<u16> {
        match self {
            VaultError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn text_contains(&self, needle: &str) -> bool {
        matches!(self, VaultError::Status { errors, .. } if errors.iter().any(|e| e.contains(needle)))
    }

    /// A 403 that names the token as invalid (recent Vault). OpenBao and older Vault say only
    /// "permission denied" for a dead token; callers confirm those with lookup-self.
    pub fn is_invalid_token(&self) -> bool {
        self.status() == Some(403) && self.text_contains("invalid token")
    }

    pub fn is_forbidden(&self) -> bool {
        self.status() == Some(403)
    }

    /// The lease is gone for good: renewing again cannot help, a new credential is needed.
    pub fn is_lease_gone(&self) -> bool {
        self.status() == Some(400)
            && (self.text_contains("lease not found")
                || self.text_contains("lease expired")
                || self.text_contains("invalid lease")
                || self.text_contains("past the max TTL"))
    }

    pub fn is_not_renewable(&self) -> bool {
        self.status() == Some(400) && self.text_contains("not renewable")
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            VaultError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Worth retrying with backoff: transport failures, 412, 429 and 5xx except 501.
    /// Whether Vault may have carried the request out although the answer says it failed or
    /// never came: a timeout, a lost connection, a torn answer, a 5xx.
    pub fn may_have_been_applied(&self) -> bool {
        match self {
            VaultError::Status { status, .. } => *status >= 500,
            VaultError::Transport { .. } | VaultError::Decode { .. } => true,
            VaultError::Tls(_) => false,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            VaultError::Status { status, .. } => {
                matches!(status, 412 | 429) || (*status >= 500 && *status != 501)
            }
            VaultError::Transport { .. } | VaultError::Decode { .. } => true,
            VaultError::Tls(_) => false,
        }
    }

    pub fn is_sealed(&self) -> bool {
        self.status() == Some(503) && self.text_contains("sealed")
    }
}
