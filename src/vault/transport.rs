//! The seam below the client: one HTTP exchange with Vault, as plain data.
//!
//! [`Client`](super::Client) builds every request and decodes every answer; a [`Transport`]
//! only carries them. [`Http`] is the real one (reqwest). The deterministic simulator in
//! `tests/sim` puts an in-memory model of Vault here, so that the client's decoding, the auth
//! logic (login, renew-self, re-login) and the workers all run for real in virtual time.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::Value;

use crate::credential::SecretValue;

/// Larger answers are refused: a credential response is a few hundred bytes, and a runaway
/// or hostile body must not grow the sidecar's memory.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A boxed future, so that `Transport` can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One request to Vault.
#[derive(Clone)]
pub struct Request {
    pub method: Method,
    /// The path below `/v1/`, e.g. `auth/token/lookup-self`.
    pub path: String,
    /// Sent as `X-Vault-Token`.
    pub token: Option<SecretValue>,
    /// Sent as a JSON body.
    pub body: Option<Value>,
}

/// One complete answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The `Retry-After` header as sent (seconds or an HTTP date).
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

/// No complete answer arrived.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// Connection refused or reset, timed out, a body cut short.
    #[error("{reason}")]
    Failed { reason: String, timeout: bool },
    /// The body passed [`MAX_RESPONSE_BYTES`].
    #[error("body larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// The request cannot be sent as given (a token with bytes a header cannot carry).
    #[error("{0}")]
    Invalid(String),
}

/// Carries requests to Vault and brings back their answers. No retries: the caller owns them.
pub trait Transport: Send + Sync {
    fn send(&self, req: Request) -> BoxFuture<'_, Result<Response, TransportError>>;
}

/// The real transport: HTTP(S) through reqwest.
pub struct Http {
    pub(super) http: reqwest::Client,
    /// `scheme://host:port`, no trailing slash.
    pub(super) base: String,
    pub(super) namespace: Option<String>,
}

impl Transport for Http {
    fn send(&self, req: Request) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(self.exchange(req))
    }
}

impl Http {
    async fn exchange(&self, req: Request) -> Result<Response, TransportError> {
        let url = format!("{}/v1/{}", self.base, req.path);
        let mut builder = self
            .http
            .request(req.method, &url)
            // Required by Vault Agent/Proxy listeners; harmless to Vault itself.
            .header("X-Vault-Request", "true");
        if let Some(ns) = &self.namespace {
            builder = builder.header("X-Vault-Namespace", ns);
        }
        if let Some(token) = &req.token {
            let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
                TransportError::Invalid("token contains characters not allowed in a header".into())
            })?;
            value.set_sensitive(true);
            builder = builder.header("X-Vault-Token", value);
        }
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        let failed = |e: reqwest::Error| TransportError::Failed {
            timeout: e.is_timeout(),
            reason: describe_reqwest(&e),
        };
        let mut resp = builder.send().await.map_err(failed)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(TransportError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            retry_after,
            body,
        })
    }
}

/// `Retry-After` as seconds, or as an HTTP date measured from `now` (RFC 9110 §10.2.3). A date
/// in the past means "now"; anything unreadable is ignored.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// reqwest's Display hides the cause ("error sending request"); the cause is what an operator
/// needs (connection refused, certificate unknown, timed out).
fn describe_reqwest(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut parts = vec![if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    }];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", SystemTime::now()), None);
    }
}
