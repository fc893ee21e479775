//! The HTTP client: one method per Vault endpoint the agent uses, no retries.
//!
//! Retrying is the caller's job (it owns the backoff and the one-request-per-lease rule), so
//! every method makes exactly one request. Responses are decoded leniently: unknown fields are
//! ignored and optional ones may be missing, because Vault versions and OpenBao differ.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::transport::{self, Http, Request, Response, Transport, TransportError};
use crate::config::VaultConfig;
use crate::credential::SecretValue;

pub use super::error::VaultError;
pub use super::response::{AuthBlock, Envelope, MountInfo, SecretString, TokenLookup, WrapInfo};
pub use super::transport::MAX_RESPONSE_BYTES;

/// What a request was for, derived from its path: a metric label of bounded cardinality that
/// never carries a lease id, a token or a role name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `auth/<mount>/login[/...]`.
    Login,
    /// `auth/token/...`: lookup-self, renew-self, revoke-self.
    Token,
    LeaseRenew,
    LeaseRevoke,
    /// `sys/internal/ui/mounts/...`: the kind detection preflight.
    MountInfo,
    Unwrap,
    /// `<mount>/rotate-role/<role>` for static database roles.
    RotateRole,
    /// Any other read: the secret itself.
    SecretRead,
    /// Anything else (no such request today; keeps the label set closed).
    Other,
}

impl RequestKind {
    /// Classifies a request by its method and path under `/v1/`.
    pub fn of(method: &Method, path: &str) -> RequestKind {
        let path = path.trim_matches('/');
        let (first, rest) = path.split_once('/').unwrap_or((path, ""));
        let within = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
        if first == "auth" {
            // Mounts may be nested (auth/k8s/prod/login), so look at the end of the path.
            if within("auth/token") {
                RequestKind::Token
            } else if rest.ends_with("/login") || rest.contains("/login/") {
                RequestKind::Login
            } else {
                RequestKind::Other
            }
        } else if within("sys/leases/renew") || within("sys/renew") {
            RequestKind::LeaseRenew
        } else if within("sys/leases/revoke") || within("sys/revoke") {
            RequestKind::LeaseRevoke
        } else if within("sys/internal/ui/mounts") {
            RequestKind::MountInfo
        } else if path == "sys/wrapping/unwrap" {
            RequestKind::Unwrap
        } else if first == "sys" {
            RequestKind::Other
        } else if *method == Method::GET {
            RequestKind::SecretRead
        } else if path.contains("/rotate-role/") {
            RequestKind::RotateRole
        } else {
            RequestKind::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Login => "login",
            RequestKind::Token => "token",
            RequestKind::LeaseRenew => "lease-renew",
            RequestKind::LeaseRevoke => "lease-revoke",
            RequestKind::MountInfo => "mount-info",
            RequestKind::Unwrap => "unwrap",
            RequestKind::RotateRole => "rotate-role",
            RequestKind::SecretRead => "secret-read",
            RequestKind::Other => "other",
        }
    }
}

/// Told about every request once it is over: its kind, the HTTP status (`None` when no
/// complete answer arrived: connection refused, timeout, a body cut short) and how long it
/// took. For metrics; it must be quick, as it runs on the request's task.
pub type Observer = Arc<dyn Fn(RequestKind, Option<u16>, Duration) + Send + Sync>;

#[derive(Clone)]
pub struct Client {
    transport: Arc<dyn Transport>,
    observer: Option<Observer>,
}

impl Client {
    pub fn new(cfg: &VaultConfig) -> Result<Client, VaultError> {
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(10)))
            // One sidecar talks to one Vault; a couple of idle connections is plenty and keeps
            // file descriptors flat.
            .pool_max_idle_per_host(2)
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // Like Vault's own client: follow one redirect, never downgrade https to http.
                let downgrade = attempt
                    .previous()
                    .first()
                    .is_some_and(|p| p.scheme() == "https")
                    && attempt.url().scheme() == "http";
                if attempt.previous().len() > 1 || downgrade {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .user_agent(concat!("vault-rotator/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca_cert {
            let pem = std::fs::read(ca)
                .map_err(|e| VaultError::Tls(format!("CA file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| VaultError::Tls(format!("CA file {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(VaultError::Tls(format!(
                    "CA file {}: no PEM certificate found",
                    ca.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&cfg.client_cert, &cfg.client_key) {
            let mut pem = std::fs::read(cert)
                .map_err(|e| VaultError::Tls(format!("client cert {}: {e}", cert.display())))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key)
                    .map_err(|e| VaultError::Tls(format!("client key {}: {e}", key.display())))?,
            );
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| VaultError::Tls(format!("client cert/key {}: {e}", cert.display())))?;
            builder = builder.identity(identity);
        }
        if cfg.addr.starts_with("http://") && cfg.tls_server_name.is_none() {
            // No TLS to set up: loading the system trust store would cost most of the start-up
            // time and memory for nothing.
            builder = builder.tls_built_in_root_certs(false);
        }
        if cfg.skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let mut base = cfg.addr.clone();
        if let Some(name) = &cfg.tls_server_name {
            // reqwest verifies against the URL's host, so put the expected name in the URL and
            // pin it to the address the user gave.
            let (url, resolved) = pin_server_name(&cfg.addr, name)?;
            builder = builder.resolve(name, resolved);
            base = url;
        }
        let http = builder
            .build()
            .map_err(|e| VaultError::Tls(e.to_string()))?;
        Ok(Client::with_transport(Arc::new(Http {
            http,
            base: base.trim_end_matches('/').to_string(),
            namespace: cfg.namespace.clone(),
        })))
    }

    /// A client over any transport: the simulator's in-memory Vault, for one.
    pub fn with_transport(transport: Arc<dyn Transport>) -> Client {
        Client {
            transport,
            observer: None,
        }
    }

    /// Reports every request to `observer` (set once, at construction, so every clone of the
    /// client reports to the same place).
    pub fn with_observer(mut self, observer: Observer) -> Client {
        self.observer = Some(observer);
        self
    }

    /// One request, timed and reported to the observer.
    async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&SecretValue>,
        body: Option<&Value>,
    ) -> Result<Option<Envelope>, VaultError> {
        let started = Instant::now();
        let req = Request {
            method: method.clone(),
            path: path.to_string(),
            token: token.cloned(),
            body: body.cloned(),
        };
        let result = self.transport.send(req).await;
        if let Some(observe) = &self.observer {
            let status = result.as_ref().ok().map(|r| r.status);
            observe(RequestKind::of(&method, path), status, started.elapsed());
        }
        match result {
            Ok(resp) => decode(method, path, resp),
            Err(TransportError::TooLarge) => Err(VaultError::Decode {
                method,
                path: path.to_string(),
                reason: TransportError::TooLarge.to_string(),
            }),
            Err(TransportError::Invalid(reason)) => Err(VaultError::Decode {
                method,
                path: path.to_string(),
                reason,
            }),
            Err(TransportError::Failed { reason, timeout }) => Err(VaultError::Transport {
                method,
                path: path.to_string(),
                reason,
                timeout,
            }),
        }
    }

    fn require(method: Method, path: &str, env: Option<Envelope>) -> Result<Envelope, VaultError> {
        env.ok_or_else(|| VaultError::Decode {
            method,
            path: path.to_string(),
            reason: "empty response where data was expected".into(),
        })
    }

    /// `GET /v1/<path>`: a secret read.
    pub async fn read(&self, token: &SecretValue, path: &str) -> Result<Envelope, VaultError> {
        let env = self.request(Method::GET, path, Some(token), None).await?;
        Self::require(Method::GET, path, env)
    }

    /// A login: `POST auth/<mount>/login[/<suffix>]` with the method's body.
    pub async fn login(&self, mount: &str, body: &Value) -> Result<Envelope, VaultError> {
        let path = format!("auth/{mount}/login");
        let env = self.request(Method::POST, &path, None, Some(body)).await?;
        Self::require(Method::POST, &path, env)
    }

    pub async fn unwrap(&self, wrapping_token: &SecretValue) -> Result<Envelope, VaultError> {
        let path = "sys/wrapping/unwrap";
        let env = self
            .request(Method::POST, path, Some(wrapping_token), None)
            .await?;
        Self::require(Method::POST, path, env)
    }

    pub async fn lookup_self(&self, token: &SecretValue) -> Result<TokenLookup, VaultError> {
        let path = "auth/token/lookup-self";
        let env = self.read(token, path).await?;
        decode_data(Method::GET, path, env.data)
    }

    pub async fn renew_self(
        &self,
        token: &SecretValue,
        increment: Duration,
    ) -> Result<Envelope, VaultError> {
        let path = "auth/token/renew-self";
        let body = serde_json::json!({ "increment": format!("{}s", increment.as_secs()) });
        let env = self
            .request(Method::POST, path, Some(token), Some(&body))
            .await?;
        Self::require(Method::POST, path, env)
    }

    pub async fn revoke_self(&self, token: &SecretValue) -> Result<(), VaultError> {
        self.request(Method::POST, "auth/token/revoke-self", Some(token), None)
            .await
            .map(|_| ())
    }

    pub async fn renew_lease(
        &self,
        token: &SecretValue,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Envelope, VaultError> {
        let path = "sys/leases/renew";
        let body = serde_json::json!({ "lease_id": lease_id, "increment": increment.as_secs() });
        let env = self
            .request(Method::PUT, path, Some(token), Some(&body))
            .await?;
        Self::require(Method::PUT, path, env)
    }

    pub async fn revoke_lease(
        &self,
        token: &SecretValue,
        lease_id: &str,
    ) -> Result<(), VaultError> {
        let body = serde_json::json!({ "lease_id": lease_id });
        self.request(Method::PUT, "sys/leases/revoke", Some(token), Some(&body))
            .await
            .map(|_| ())
    }

    /// `POST <mount>/rotate-role/<role>` for a static database role.
    pub async fn rotate_role(&self, token: &SecretValue, path: &str) -> Result<(), VaultError> {
        self.request(Method::POST, path, Some(token), None)
            .await
            .map(|_| ())
    }

    pub async fn mount_info(
        &self,
        token: &SecretValue,
        secret_path: &str,
    ) -> Result<MountInfo, VaultError> {
        let path = format!("sys/internal/ui/mounts/{secret_path}");
        let env = self.read(token, &path).await?;
        decode_data(Method::GET, &path, env.data)
    }
}

/// An answer in full: the envelope on success (`None` for an empty 204), else Vault's error.
fn decode(method: Method, path: &str, resp: Response) -> Result<Option<Envelope>, VaultError> {
    let bytes = &resp.body;
    if (200..300).contains(&resp.status) {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        return serde_json::from_slice(bytes)
            .map(Some)
            .map_err(|e| VaultError::Decode {
                method,
                path: path.to_string(),
                reason: format!("HTTP {}: invalid JSON ({})", resp.status, e),
            });
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct ErrorBody {
        errors: Vec<String>,
        warnings: Option<Vec<String>>,
    }
    // Error bodies are Vault's own texts, never secrets; a non-JSON body (a proxy's HTML
    // page) is summarised rather than dumped.
    let errors = match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) if !b.errors.is_empty() => b.errors,
        Ok(b) => b.warnings.unwrap_or_default(),
        Err(_) if bytes.is_empty() => vec![],
        Err(_) => vec![format!("non-JSON body of {} bytes", bytes.len())],
    };
    let retry_after = resp
        .retry_after
        .as_deref()
        .and_then(|v| transport::parse_retry_after(v, crate::time::wall_now()));
    Err(VaultError::Status {
        method,
        path: path.to_string(),
        status: resp.status,
        errors,
        retry_after,
    })
}

fn decode_data<T: DeserializeOwned>(
    method: Method,
    path: &str,
    data: serde_json::Map<String, Value>,
) -> Result<T, VaultError> {
    serde_json::from_value(Value::Object(data)).map_err(|e| VaultError::Decode {
        method,
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// The base URL with `name` as its host (so reqwest verifies the certificate against it), and
/// the socket address of the host the user gave, to pin `name` to. The port stays the one
/// the address gives, or the scheme's.
fn pin_server_name(addr: &str, name: &str) -> Result<(String, SocketAddr), VaultError> {
    let tls = |reason: String| VaultError::Tls(reason);
    let mut url = Url::parse(addr).map_err(|e| tls(format!("address {addr}: {e}")))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| tls(format!("address {addr}: no port")))?;
    let resolved = url
        .socket_addrs(|| None)
        .map_err(|e| tls(format!("resolve the host of {addr}: {e}")))?
        .into_iter()
        .next()
        .ok_or_else(|| tls(format!("the host of {addr} resolves to nothing")))?;
    url.set_host(Some(name))
        .map_err(|e| tls(format!("--tls-server-name {name}: {e}")))?;
    url.set_port(Some(port))
        .map_err(|()| tls(format!("address {addr}: cannot carry a port")))?;
    Ok((url.as_str().trim_end_matches('/').to_string(), resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_pins_the_given_host_and_keeps_port_and_path() {
        let (url, at) = pin_server_name("https://[::1]:8200/prefix", "vault.internal").unwrap();
        assert_eq!(url, "https://vault.internal:8200/prefix");
        assert_eq!(at, "[::1]:8200".parse().unwrap());
        let (url, at) = pin_server_name("https://127.0.0.1", "vault.internal").unwrap();
        assert_eq!(url, "https://vault.internal");
        assert_eq!(at, "127.0.0.1:443".parse().unwrap());
        let (url, at) = pin_server_name("http://127.0.0.1:8200", "vault.internal").unwrap();
        assert_eq!(url, "http://vault.internal:8200");
        assert_eq!(at.port(), 8200);
        let (_, at) = pin_server_name("https://localhost:8200", "vault.internal").unwrap();
        assert!(at.ip().is_loopback() && at.port() == 8200, "{at}");
        assert!(pin_server_name("not a url", "vault.internal").is_err());
    }

    #[test]
    fn envelope_decodes_leniently() {
        let raw = r#"{"request_id":"x","lease_id":"database/creds/app/abc","renewable":true,"lease_duration":3600,
            "data":{"password":"p","username":"u"},"wrap_info":null,"warnings":null,"auth":null,"mount_type":"database","future":1}"#;
        let env: Envelope = serde_json::from_str(raw).unwrap();
        assert_eq!(env.lease_duration, 3600);
        assert!(env.renewable);
        assert_eq!(env.data["username"], "u");
        let minimal: Envelope = serde_json::from_str(r#"{"data":null}"#).unwrap();
        assert!(minimal.data.is_empty() && minimal.lease_id.is_empty());
    }

    fn status_err(status: u16, msg: &str) -> VaultError {
        VaultError::Status {
            method: Method::GET,
            path: "p".into(),
            status,
            errors: vec![msg.into()],
            retry_after: None,
        }
    }

    #[test]
    fn classifies_vault_errors() {
        assert!(status_err(
            403,
            "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"
        )
        .is_invalid_token());
        assert!(
            !status_err(403, "1 error occurred:\n\t* permission denied\n\n").is_invalid_token()
        );
        assert!(status_err(400, "lease not found").is_lease_gone());
        assert!(status_err(400, "lease expired").is_lease_gone());
        assert!(status_err(429, "x").is_transient());
        assert!(status_err(503, "Vault is sealed").is_sealed());
        assert!(!status_err(501, "x").is_transient());
        assert!(!status_err(400, "x").is_transient());
        let shown = status_err(403, "1 error occurred:\n\t* permission denied\n\n").to_string();
        assert_eq!(
            shown,
            "GET p: HTTP 403: 1 error occurred: * permission denied"
        );
    }

    #[test]
    fn request_kinds_come_from_the_path_and_never_carry_it() {
        let kind = |m: Method, p: &str| RequestKind::of(&m, p).as_str();
        assert_eq!(kind(Method::POST, "auth/approle/login"), "login");
        assert_eq!(kind(Method::POST, "auth/k8s/prod/login"), "login");
        assert_eq!(kind(Method::POST, "auth/jwt/login/extra"), "login");
        assert_eq!(kind(Method::GET, "auth/token/lookup-self"), "token");
        assert_eq!(kind(Method::POST, "auth/token/renew-self"), "token");
        assert_eq!(kind(Method::PUT, "sys/leases/renew"), "lease-renew");
        assert_eq!(kind(Method::PUT, "sys/leases/revoke"), "lease-revoke");
        assert_eq!(
            kind(Method::GET, "sys/internal/ui/mounts/database/creds/app"),
            "mount-info"
        );
        assert_eq!(kind(Method::POST, "sys/wrapping/unwrap"), "unwrap");
        assert_eq!(kind(Method::POST, "team/db/rotate-role/app"), "rotate-role");
        assert_eq!(kind(Method::GET, "database/creds/app"), "secret-read");
        assert_eq!(
            kind(Method::GET, "secret/data/rotate-role/x"),
            "secret-read"
        );
        assert_eq!(kind(Method::GET, "sys/leases/renewals"), "other");
        assert_eq!(kind(Method::POST, "auth/approle/role/app"), "other");
    }

    #[test]
    fn auth_block_debug_hides_token() {
        let a: AuthBlock = serde_json::from_str(
            r#"{"client_token":"hvs.topsecret","accessor":"acc","lease_duration":5}"#,
        )
        .unwrap();
        assert!(!format!("{a:?}").contains("topsecret"));
        assert_eq!(a.client_token.0.expose(), "hvs.topsecret");
    }
}
