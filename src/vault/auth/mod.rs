//! Logging in, and keeping the Vault token alive.
//!
//! One [`Auth`] owns the current token. Secret workers ask it for the token; a single renewer
//! task renews it at about two thirds of its TTL and logs in again when it can no longer be
//! renewed (capped at max TTL, not renewable, renew-self denied by policy) or when Vault calls
//! it invalid. Logins are single-flight: however many workers see an invalid token at once,
//! only one login is made.
//!
//! Re-authenticating never touches the credentials already issued: their leases stay valid
//! until their own deadline (which `lease::plan` keeps, including the old token's end).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::client::{Client, VaultError};
use crate::config::{AuthConfig, AuthMethod, Backoff as BackoffConfig};
use crate::credential::SecretValue;
use crate::time::round;

mod login;
mod renewer;
#[cfg(test)]
mod tests;
mod token;

pub use token::Token;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth {method}: cannot read {what} {path}: {reason}")]
    File {
        method: &'static str,
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("auth {method}: {what} {path} is empty")]
    Empty {
        method: &'static str,
        what: &'static str,
        path: PathBuf,
    },
    #[error("auth {method} at auth/{mount}: {source}")]
    Vault {
        method: &'static str,
        mount: String,
        #[source]
        source: Box<VaultError>,
    },
    #[error("auth {method}: unwrapping the secret_id from {path}: {source}")]
    Unwrap {
        method: &'static str,
        path: PathBuf,
        #[source]
        source: Box<VaultError>,
    },
    #[error("auth token: the token file still holds the same token, which ends in {}; put a new token there", humantime::format_duration(*.ends_in))]
    SameToken { ends_in: Duration },
    #[error("auth {method} at auth/{mount}: {reason}")]
    Rejected {
        method: &'static str,
        mount: String,
        reason: String,
    },
}

impl AuthError {
    pub fn vault_error(&self) -> Option<&VaultError> {
        match self {
            AuthError::Vault { source, .. } | AuthError::Unwrap { source, .. } => {
                Some(source.as_ref())
            }
            _ => None,
        }
    }
}

pub struct Auth {
    client: Client,
    cfg: AuthConfig,
    backoff: BackoffConfig,
    current: Mutex<Option<Arc<Token>>>,
    login_lock: tokio::sync::Mutex<()>,
    generation: Mutex<u64>,
    changed: watch::Sender<u64>,
    /// The secret_id unwrapped from a wrapping token, keyed by the wrapping token: a wrapping
    /// token works once, so later logins reuse what it held until the file changes.
    unwrapped: Mutex<Option<(SecretValue, SecretValue)>>,
    events: Box<dyn Fn(AuthEvent) + Send + Sync>,
    /// Seeds the renewer's jitter in simulations.
    seed: Option<u64>,
}

/// What the auth layer reports to metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthEvent {
    Login,
    LoginFailed,
    Renewed,
    RenewFailed,
}

impl Auth {
    pub fn new(
        client: Client,
        cfg: AuthConfig,
        backoff: BackoffConfig,
        events: Box<dyn Fn(AuthEvent) + Send + Sync>,
    ) -> Auth {
        Auth {
            client,
            cfg,
            backoff,
            current: Mutex::new(None),
            login_lock: tokio::sync::Mutex::new(()),
            generation: Mutex::new(0),
            changed: watch::channel(0).0,
            unwrapped: Mutex::new(None),
            events,
            seed: None,
        }
    }

    /// Draws the renewer's jitter from `seed` (simulations) instead of the OS.
    pub fn with_seed(mut self, seed: Option<u64>) -> Auth {
        self.seed = seed;
        self
    }

    pub fn method(&self) -> &'static str {
        self.cfg.method.as_str()
    }

    /// Ticks on every login and whenever a token's known end moves (renewed, found final,
    /// found dead), so workers re-plan and keep `expires_at` within the token's life.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn tell_workers(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Vault refused `token` with a 403. Tells a dead token (which must be replaced) from a
    /// policy denial (which a new login cannot fix): recent Vault says "invalid token", but
    /// OpenBao and older Vault say only "permission denied", so ask `lookup-self`.
    pub async fn confirm_dead(
        &self,
        token: &Arc<Token>,
        refusal: &VaultError,
    ) -> Result<bool, AuthError> {
        if token.is_dead() {
            return Ok(true);
        }
        // Asked even after "invalid token": a live token's leases are alive, and replacing
        // them would mint database users for nothing.
        match self.client.lookup_self(token.secret()).await {
            Ok(_) => return Ok(false),
            // Refused alive or dead: only its own end can say it died.
            Err(e) if e.is_forbidden() && !token.can_lookup => {
                if !token.is_expired(Instant::now()) {
                    return Ok(false);
                }
            }
            Err(e) if e.is_forbidden() => {}
            Err(e) => return Err(self.vault_err(e)),
        }
        let _ = refusal;
        tracing::warn!(accessor = %token.accessor, "Vault no longer knows the token: its leases are gone too");
        token.mark_dead(Instant::now());
        self.tell_workers();
        Ok(true)
    }

    fn current(&self) -> Option<Arc<Token>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current token, logging in first when there is none or it has expired. One attempt:
    /// the caller backs off on error.
    pub async fn token(&self) -> Result<Arc<Token>, AuthError> {
        if let Some(t) = self.current().filter(|t| !t.is_expired(Instant::now())) {
            return Ok(t);
        }
        self.login_replacing(None).await
    }

    /// Logs in again because the token of `stale` generation is bad or about to end; a no-op
    /// when another caller already replaced it.
    pub async fn relogin(&self, stale: u64) -> Result<Arc<Token>, AuthError> {
        self.login_replacing(Some(stale)).await
    }

    async fn login_replacing(&self, stale: Option<u64>) -> Result<Arc<Token>, AuthError> {
        let _guard = self.login_lock.lock().await;
        if let Some(t) = self.current() {
            let replaced = stale.is_some_and(|g| t.generation != g);
            let fine = stale.is_none() && !t.is_expired(Instant::now());
            if replaced || fine {
                return Ok(t);
            }
        }
        match self.login().await {
            Ok(token) => {
                (self.events)(AuthEvent::Login);
                let token = Arc::new(token);
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
                self.tell_workers();
                tracing::info!(
                    method = self.method(),
                    accessor = %token.accessor,
                    ttl = %humantime::format_duration(token.ttl),
                    renewable = token.renewable,
                    "logged in to Vault"
                );
                Ok(token)
            }
            Err(e) => {
                (self.events)(AuthEvent::LoginFailed);
                Err(e)
            }
        }
    }

    fn next_generation(&self) -> u64 {
        let mut g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        *g += 1;
        *g
    }

    fn vault_err(&self, source: VaultError) -> AuthError {
        AuthError::Vault {
            method: self.method(),
            mount: self.cfg.mount.clone(),
            source: Box::new(source),
        }
    }

    /// Revokes the current token (and with it every lease it created) on `--revoke-on-exit`.
    pub async fn revoke(&self) {
        if let Some(t) = self.current() {
            if self.cfg.method == AuthMethod::Token {
                // The token was handed to us; it is not ours to revoke.
                return;
            }
            match self.client.revoke_self(t.secret()).await {
                Ok(()) => tracing::info!(accessor = %t.accessor, "revoked the Vault token"),
                Err(e) => tracing::warn!(error = %e, "revoking the Vault token failed"),
            }
        }
    }
}

pub(super) fn fmt_in(at: Instant) -> String {
    humantime::format_duration(round(at.saturating_duration_since(Instant::now()))).to_string()
}

/// Vault tokens carry a type prefix (`hvs.`, `s.`, ...); secret-ids are UUIDs.
pub(super) fn looks_like_token(s: &str) -> bool {
    ["hvs.", "hvb.", "s.", "b."]
        .iter()
        .any(|p| s.starts_with(p))
}

pub(super) fn read_secret_file(
    method: &'static str,
    what: &'static str,
    path: &Path,
) -> Result<SecretValue, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|e| AuthError::File {
        method,
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(AuthError::Empty {
            method,
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(SecretValue::new(trimmed))
}
