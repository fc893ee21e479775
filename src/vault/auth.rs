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

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::client::{Client, Envelope, VaultError};
use crate::config::{AuthConfig, AuthMethod, Backoff as BackoffConfig};
use crate::credential::SecretValue;
use crate::lease::{self, Backoff, TokenEnd};
use crate::time::round;

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

/// A Vault token and what is known of its life.
pub struct Token {
    value: SecretValue,
    /// Increases with every login; lets a worker say "the token I used is bad" without racing
    /// a login that already replaced it.
    pub generation: u64,
    pub accessor: String,
    /// Lifetime at login; 0 for a token that never expires (root, or no TTL).
    pub ttl: Duration,
    pub renewable: bool,
    /// Whether `lookup-self` can tell this token's fate: Vault's `default` policy grants it,
    /// but a token without that policy is refused it alive or dead.
    pub can_lookup: bool,
    life: Mutex<TokenLife>,
}

#[derive(Debug, Clone, Copy)]
struct TokenLife {
    expires_at: Option<Instant>,
    renewed_at: Instant,
    last_ttl: Duration,
    /// The token cannot be extended any more: its expiry is final.
    is_final: bool,
    /// Vault said the token no longer exists; `expires_at` is when we learnt it.
    dead: bool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("generation", &self.generation)
            .field("accessor", &self.accessor)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// `ttl` is `None` for a token that never expires.
    pub fn new(
        value: SecretValue,
        generation: u64,
        accessor: String,
        ttl: Option<Duration>,
        renewable: bool,
        now: Instant,
    ) -> Token {
        let expires_at = ttl.map(|ttl| now + ttl);
        let ttl = ttl.unwrap_or_default();
        Token {
            value,
            generation,
            accessor,
            ttl,
            renewable,
            can_lookup: true,
            life: Mutex::new(TokenLife {
                expires_at,
                renewed_at: now,
                last_ttl: ttl,
                is_final: !renewable && expires_at.is_some(),
                dead: false,
            }),
        }
    }

    /// A token whose policies leave out `default` (and `root`) cannot look itself up.
    pub fn with_policies(mut self, policies: Option<&[String]>) -> Token {
        self.can_lookup = policies.is_none_or(|p| p.iter().any(|n| n == "default" || n == "root"));
        self
    }

    pub fn secret(&self) -> &SecretValue {
        &self.value
    }

    fn life(&self) -> TokenLife {
        *self.life.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn expires_at(&self) -> Option<Instant> {
        self.life().expires_at
    }

    /// The token's end when it can no longer be pushed out; `None` while renewals still extend
    /// it (or it never expires).
    pub fn final_end(&self) -> Option<TokenEnd> {
        let life = self.life();
        match (life.is_final, life.expires_at) {
            (true, Some(expires_at)) => Some(TokenEnd {
                expires_at,
                ttl: self.ttl.max(life.last_ttl),
            }),
            _ => None,
        }
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at().is_some_and(|e| e <= now)
    }

    fn set_final(&self) {
        self.life.lock().unwrap_or_else(|p| p.into_inner()).is_final = true;
    }

    /// Vault confirmed the token is gone (expired or revoked): so is every lease it created.
    pub fn mark_dead(&self, now: Instant) {
        let mut life = self.life.lock().unwrap_or_else(|p| p.into_inner());
        if !life.dead {
            life.dead = true;
            life.is_final = true;
            life.expires_at = Some(life.expires_at.map_or(now, |e| e.min(now)));
        }
    }

    pub fn is_dead(&self) -> bool {
        self.life().dead
    }

    /// Whether this is the same Vault token as `other` (a token file read again gives a new
    /// `Token` for the same secret).
    pub fn same_as(&self, other: &Token) -> bool {
        self.value == other.value
    }

    fn renewed(&self, now: Instant, asked: Duration, granted: Duration, renewable: bool) {
        let mut life = self.life.lock().unwrap_or_else(|p| p.into_inner());
        life.renewed_at = now;
        life.last_ttl = granted;
        // Near its max, each renewal may pull the token's end in by up to a second (Vault
        // rounds the capped TTL), and the answer to one may be lost: keep a second in hand.
        life.expires_at = Some(now + granted.saturating_sub(crate::lease::ROUNDING));
        if !renewable || granted < asked {
            life.is_final = true;
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

    async fn login(&self) -> Result<Token, AuthError> {
        let method = self.method();
        let sent = Instant::now();
        let env = match self.cfg.method {
            AuthMethod::Token => return self.token_from_config().await,
            AuthMethod::Kubernetes | AuthMethod::Jwt => {
                let path = self.cfg.jwt_file.clone().unwrap_or_default();
                // Re-read on every login: projected service account tokens rotate.
                let jwt = read_secret_file(method, "JWT file", &path)?;
                let mut body = json!({ "jwt": jwt.expose() });
                if let Some(role) = &self.cfg.role {
                    body["role"] = json!(role);
                }
                self.client.login(&self.cfg.mount, &body).await
            }
            AuthMethod::AppRole => {
                let role_path = self.cfg.role_id_file.clone().unwrap_or_default();
                let role_id = read_secret_file(method, "role_id file", &role_path)?;
                let mut body = json!({ "role_id": role_id.expose() });
                if let Some(path) = &self.cfg.secret_id_file {
                    body["secret_id"] = json!(self.secret_id(path).await?.expose());
                }
                self.client.login(&self.cfg.mount, &body).await
            }
        }
        .map_err(|e| self.vault_err(e))?;
        self.token_from_login(env, sent)
    }

    fn token_from_login(&self, env: Envelope, sent: Instant) -> Result<Token, AuthError> {
        let auth = env.auth.ok_or_else(|| AuthError::Rejected {
            method: self.method(),
            mount: self.cfg.mount.clone(),
            reason: "login response has no auth block".into(),
        })?;
        if auth.client_token.0.is_empty() {
            let reason = if auth.mfa_requirement.is_some() {
                "login requires MFA, which a sidecar cannot answer; exempt this role from login MFA"
            } else {
                "login response has an empty client_token"
            };
            return Err(AuthError::Rejected {
                method: self.method(),
                mount: self.cfg.mount.clone(),
                reason: reason.into(),
            });
        }
        for w in env.warnings.as_deref().unwrap_or_default() {
            tracing::warn!(method = self.method(), warning = %w, "Vault warned on login");
        }
        Ok(Token::new(
            auth.client_token.0,
            self.next_generation(),
            auth.accessor,
            (auth.lease_duration > 0).then(|| Duration::from_secs(auth.lease_duration)),
            auth.renewable,
            sent,
        )
        .with_policies(auth.policies.as_deref()))
    }

    /// auth=token: the token comes from a file (re-read every time, something may refresh it)
    /// or VAULT_TOKEN; lookup-self tells its TTL.
    async fn token_from_config(&self) -> Result<Token, AuthError> {
        let value = match &self.cfg.token_file {
            Some(path) => read_secret_file("token", "token file", path)?,
            None => self.cfg.token.clone().unwrap_or_default(),
        };
        let sent = Instant::now();
        let info = self
            .client
            .lookup_self(&value)
            .await
            .map_err(|e| self.vault_err(e))?;
        // A token that never expires has no expire_time; one in its last second reads ttl 0
        // too, but still has one.
        let never = info.ttl == 0 && info.expire_time.is_none();
        // `ttl` is what is left, rounded to a whole second: keep a second in hand.
        let ttl = Duration::from_secs(info.ttl).saturating_sub(crate::lease::ROUNDING);
        Ok(Token::new(
            value,
            self.next_generation(),
            info.accessor,
            (!never).then_some(ttl),
            info.renewable,
            sent,
        ))
    }

    async fn secret_id(&self, path: &Path) -> Result<SecretValue, AuthError> {
        let raw = read_secret_file("approle", "secret_id file", path)?;
        if !looks_like_token(raw.expose()) {
            return Ok(raw);
        }
        if let Some((wrapper, secret_id)) = self
            .unwrapped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            if wrapper == raw {
                return Ok(secret_id);
            }
        }
        let env = self
            .client
            .unwrap(&raw)
            .await
            .map_err(|source| AuthError::Unwrap {
                method: "approle",
                path: path.to_path_buf(),
                source: Box::new(source),
            })?;
        let secret_id = env
            .data
            .get("secret_id")
            .and_then(|v| v.as_str())
            .map(SecretValue::new)
            .ok_or_else(|| AuthError::Rejected {
                method: "approle",
                mount: self.cfg.mount.clone(),
                reason: format!(
                    "the wrapping token in {} does not wrap a secret_id",
                    path.display()
                ),
            })?;
        tracing::info!(file = %path.display(), "unwrapped the response-wrapped secret_id");
        *self.unwrapped.lock().unwrap_or_else(|p| p.into_inner()) = Some((raw, secret_id.clone()));
        Ok(secret_id)
    }

    /// Keeps the token alive until `shutdown` fires: renews at about two thirds of its TTL,
    /// logs in again two thirds of the way to a final expiry, and backs off on failures.
    pub async fn run_renewer(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut rng = match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let mut backoff = Backoff::new(self.backoff.min, self.backoff.max);
        let mut changes = self.subscribe();
        loop {
            let Some(token) = self.current() else {
                // Workers log in on demand; wait for the first login.
                tokio::select! {
                    biased;
                    _ = changes.changed() => continue,
                    _ = shutdown.changed() => return,
                }
            };
            let life = token.life();
            let Some(expires_at) = life.expires_at else {
                tokio::select! {
                    biased;
                    _ = changes.changed() => continue,
                    _ = shutdown.changed() => return,
                }
            };
            let can_relogin = self.cfg.method != AuthMethod::Token || self.cfg.token_file.is_some();
            // A token that ran out (renewals failed while Vault was away) cannot be renewed:
            // only a new login helps.
            let life = TokenLife {
                is_final: life.is_final || token.is_expired(Instant::now()),
                ..life
            };
            let at = if life.is_final {
                if !can_relogin {
                    tracing::warn!(expires_in = %fmt_in(expires_at), "the Vault token cannot be renewed further and auth=token cannot log in again");
                    expires_at
                } else {
                    lease::relogin_at(life.renewed_at, expires_at)
                }
            } else {
                life.renewed_at + lease::renew_delay(life.last_ttl, &mut rng)
            };
            tokio::select! {
                    biased;
                _ = tokio::time::sleep_until(at) => {}
                _ = changes.changed() => continue,
                _ = shutdown.changed() => return,
            }
            let result = if life.is_final {
                if can_relogin {
                    match self.relogin(token.generation).await {
                        // The token file still holds the same token: logging in again cannot
                        // move its end. Look again after a backoff, not in a loop.
                        Ok(fresh) if fresh.same_as(&token) => Err(AuthError::SameToken {
                            ends_in: round(fresh.expires_at().map_or(Duration::ZERO, |e| {
                                e.saturating_duration_since(Instant::now())
                            })),
                        }),
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    }
                } else {
                    // Nothing to do but let workers fail and retry against a refreshed token.
                    tokio::select! {
                    biased;
                        _ = changes.changed() => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            } else {
                self.renew(&token).await
            };
            match result {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    let wait = backoff
                        .next_delay(e.vault_error().and_then(VaultError::retry_after), &mut rng);
                    tracing::warn!(error = %e, retry_in = %humantime::format_duration(round(wait)), "keeping the Vault token alive failed");
                    tokio::select! {
                    biased;
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    async fn renew(&self, token: &Arc<Token>) -> Result<(), AuthError> {
        let asked = token.ttl.max(token.life().last_ttl);
        // The new TTL counts from when Vault took the request, which is before we read it.
        let sent = Instant::now();
        match self.client.renew_self(token.secret(), asked).await {
            Ok(env) => {
                let (granted, renewable) = env
                    .auth
                    .as_ref()
                    .map(|a| (Duration::from_secs(a.lease_duration), a.renewable))
                    .unwrap_or((Duration::ZERO, false));
                token.renewed(sent, asked, granted, renewable);
                self.tell_workers();
                (self.events)(AuthEvent::Renewed);
                for w in env.warnings() {
                    tracing::info!(warning = %w, "Vault capped the token renewal");
                }
                tracing::debug!(ttl = %humantime::format_duration(granted), "renewed the Vault token");
                Ok(())
            }
            Err(e) if e.is_forbidden() && self.confirm_dead(token, &e).await? => {
                (self.events)(AuthEvent::RenewFailed);
                tracing::warn!(error = %e, "the Vault token is no longer valid; logging in again");
                self.relogin(token.generation).await.map(|_| ())
            }
            Err(e) if e.is_forbidden() || e.is_not_renewable() => {
                // Denied by policy, or not renewable: renewing again would only flood Vault.
                // Treat the expiry as final; the loop logs in again ahead of it.
                (self.events)(AuthEvent::RenewFailed);
                tracing::warn!(error = %e, "cannot renew the Vault token; will log in again before it expires");
                token.set_final();
                self.tell_workers();
                Ok(())
            }
            Err(e) => {
                (self.events)(AuthEvent::RenewFailed);
                Err(self.vault_err(e))
            }
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

fn fmt_in(at: Instant) -> String {
    humantime::format_duration(round(at.saturating_duration_since(Instant::now()))).to_string()
}

/// Vault tokens carry a type prefix (`hvs.`, `s.`, ...); secret-ids are UUIDs.
fn looks_like_token(s: &str) -> bool {
    ["hvs.", "hvb.", "s.", "b."]
        .iter()
        .any(|p| s.starts_with(p))
}

fn read_secret_file(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn token_life_becomes_final_when_capped() {
        let now = Instant::now();
        let t = Token::new(
            SecretValue::new("x"),
            1,
            "a".into(),
            Some(Duration::from_secs(60)),
            true,
            now,
        );
        assert!(t.final_end().is_none());
        t.renewed(
            now + Duration::from_secs(40),
            Duration::from_secs(60),
            Duration::from_secs(60),
            true,
        );
        assert!(t.final_end().is_none());
        t.renewed(
            now + Duration::from_secs(80),
            Duration::from_secs(60),
            Duration::from_secs(20),
            true,
        );
        let end = t.final_end().expect("capped renewal makes the end final");
        // Granted 20 s at 80 s, less the second kept in hand for Vault's rounding.
        assert_eq!(end.expires_at, now + Duration::from_secs(99));
        let never = Token::new(SecretValue::new("root"), 2, String::new(), None, false, now);
        assert!(
            never.final_end().is_none() && !never.is_expired(now + Duration::from_secs(1_000_000))
        );
    }

    #[test]
    fn wrapped_secret_ids_are_recognised() {
        assert!(looks_like_token("hvs.CAESIabc"));
        assert!(looks_like_token("s.abcdef"));
        assert!(!looks_like_token("84896a0c-1347-aa90-a4f6-aca8b7558780"));
    }
}
