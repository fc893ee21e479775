//! One secret's life: fetch, write, renew, re-issue, revoke the old one after the grace.
//!
//! Each configured secret gets one [`Worker`] running one loop, so there is never more than one
//! request in flight per lease. The loop asks [`lease::plan`] what to do next, sleeps until
//! then (or until a manual rotation, a new token, or shutdown), does it, and backs off on
//! failure. Whatever fails, the file keeps the last good credential: a new one replaces it only
//! after it has been rendered and written in full.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::config::SecretConfig;
use crate::credential::{Credential, FieldValue, SecretKind, SecretValue};
use crate::lease::{self, Backoff, Lease, Next, Why};
use crate::render;
use crate::sink::{FileSink, WriteOutcome};
use crate::state::{EventKind, State};
use crate::time::to_system;
use crate::vault::{AuthError, Backend, Envelope, Token, VaultError};

/// Re-read a static role this long after Vault said it would rotate the password.
const STATIC_SETTLE: Duration = Duration::from_millis(500);
/// How often to look again when a static role's password has not changed yet.
const STATIC_RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("{path}: {reason}")]
    Shape { path: String, reason: String },
    #[error("render: {0}")]
    Render(#[from] render::RenderError),
    #[error("write: {0}")]
    Write(#[from] crate::sink::SinkError),
}

impl SecretError {
    /// The stage that failed, for metrics and /status.
    pub fn stage(&self) -> &'static str {
        match self {
            SecretError::Auth(_) => "auth",
            SecretError::Vault(_) | SecretError::Shape { .. } => "fetch",
            SecretError::Render(_) => "render",
            SecretError::Write(_) => "write",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            SecretError::Vault(e) => e.retry_after(),
            SecretError::Auth(e) => e.vault_error().and_then(VaultError::retry_after),
            _ => None,
        }
    }
}

/// How the worker is told to act outside its plan.
#[derive(Clone)]
pub struct Control {
    /// SIGUSR1 or `POST /rotate`: issue a new credential now.
    pub rotate: Arc<Notify>,
    pub shutdown: watch::Receiver<bool>,
    /// Set before `shutdown` when SIGHUP replaced or removed this secret: its credentials are
    /// no longer ours to keep, so they are revoked after the grace instead of left to expire.
    pub retire: Arc<std::sync::atomic::AtomicBool>,
}

impl Control {
    pub fn new(rotate: Arc<Notify>, shutdown: watch::Receiver<bool>) -> Control {
        Control {
            rotate,
            shutdown,
            retire: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }
}

/// What is known about one issued credential.
struct Held {
    cred: Credential,
    /// Set for leased secrets (dynamic database credentials, other leased reads).
    lease: Option<Lease>,
    /// The token that created the lease: the lease dies with it.
    token: Arc<Token>,
    /// Static roles: when Vault will rotate the password.
    rotates_at: Option<Instant>,
    /// When the secret should next be read again (static roles, KV and other unleased reads).
    refresh_at: Option<Instant>,
    issued_at: Instant,
}

impl Held {
    fn deadline(&self) -> Option<Instant> {
        let lease_end = self.lease.map(|l| l.expires_at);
        let token_end = self.lease.and(self.token.final_end()).map(|t| t.expires_at);
        match (lease_end, token_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b).or(self.rotates_at),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Issue,
    Renew,
    Reissue(Why),
    Reread,
    RotateStatic,
    Revoke,
}

impl Action {
    fn describe(self) -> &'static str {
        match self {
            Action::Issue => "issue",
            Action::Renew => "renew",
            Action::Reissue(Why::Cadence) => "rotate (cadence)",
            Action::Reissue(Why::TokenDeadline) => "re-issue (token ending)",
            Action::Reissue(Why::Deadline) => "re-issue (lease ending)",
            Action::Reread => "re-read",
            Action::RotateStatic => "rotate-role",
            Action::Revoke => "revoke old credential",
        }
    }
}

pub struct Worker<B: Backend> {
    cfg: SecretConfig,
    kind: Option<SecretKind>,
    /// The path actually read, after KV v2's `data/` is put in.
    read_path: String,
    backend: Arc<B>,
    sink: FileSink,
    state: Arc<State>,
    control: Control,
    revoke_on_exit: bool,
    rng: StdRng,
    backoff: Backoff,
    current: Option<Held>,
    /// Old leases waiting out their grace: (lease id, when to revoke).
    pending_revokes: Vec<(String, Instant)>,
    /// After a failure, nothing is tried before this.
    retry_at: Option<Instant>,
    /// The policy refused `rotate-role`: stop asking.
    rotate_denied: bool,
    last_rotate_request: Option<Instant>,
    /// A manual rotation (SIGUSR1, `POST /rotate`) was asked for and has not succeeded yet:
    /// after a failure it is retried with backoff like any planned action, not dropped.
    rotate_requested: bool,
}

impl<B: Backend> Worker<B> {
    pub fn new(
        cfg: SecretConfig,
        backend: Arc<B>,
        sink: FileSink,
        state: Arc<State>,
        control: Control,
        backoff: crate::config::Backoff,
        revoke_on_exit: bool,
    ) -> Worker<B> {
        Worker {
            kind: cfg.kind,
            read_path: cfg.path.clone(),
            cfg,
            backend,
            sink,
            state,
            control,
            revoke_on_exit,
            rng: StdRng::from_os_rng(),
            backoff: Backoff::new(backoff.min, backoff.max),
            current: None,
            pending_revokes: Vec::new(),
            retry_at: None,
            rotate_denied: false,
            last_rotate_request: None,
            rotate_requested: false,
        }
    }

    /// Draws jitter and backoff from `rng` (seeded in simulations).
    pub fn with_rng(mut self, rng: StdRng) -> Worker<B> {
        self.rng = rng;
        self
    }

    /// Fetches and writes one credential, retrying with backoff until it works or `limit`
    /// passes. For `--once`.
    pub async fn run_once(mut self, limit: Duration) -> Result<(), SecretError> {
        let deadline = Instant::now() + limit;
        loop {
            match self.issue(None).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let wait = self.backoff.next_delay(e.retry_after(), &mut self.rng);
                    if Instant::now() + wait >= deadline || !is_retryable(&e) {
                        return Err(e);
                    }
                    self.log_failure(Action::Issue, &e, wait);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Runs until shutdown; returns after revoking what `--revoke-on-exit` asks for.
    pub async fn run(mut self) {
        let name = self.cfg.name.clone();
        let _alive = self.state.task_guard(&name);
        let mut token_changes = self.backend.token_changes();
        let mut shutdown = self.control.shutdown.clone();
        let rotate = self.control.rotate.clone();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let (action, at) = self.next_action(Instant::now());
            self.state.update(&name, |s| {
                s.next_action = Some(crate::state::NextAction {
                    what: action.describe().to_string(),
                    at: to_system(at),
                });
            });
            let action = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep_until(at) => action,
                _ = rotate.notified() => {
                    self.rotate_requested = true;
                    Action::Reissue(Why::Cadence)
                }
                changed = token_changes.changed() => {
                    if changed.is_err() { break; }
                    continue;
                }
            };
            let result = self.perform(action).await;
            match result {
                // Revoking an old lease always "succeeds" (best effort) and says nothing about
                // the action that is failing: it must not reset that action's backoff.
                Ok(()) if action == Action::Revoke => {}
                Ok(()) => {
                    if matches!(action, Action::Issue | Action::Reissue(_)) {
                        self.rotate_requested = false;
                    }
                    self.retry_at = None;
                    self.backoff.reset();
                }
                Err(e) => {
                    let wait = self.backoff.next_delay(e.retry_after(), &mut self.rng);
                    self.retry_at = Some(Instant::now() + wait);
                    self.log_failure(action, &e, wait);
                }
            }
        }
        self.shutdown().await;
    }

    fn next_action(&mut self, now: Instant) -> (Action, Instant) {
        let mut planned = self.planned(now);
        if self.rotate_requested && planned.0 != Action::Issue {
            // A manual rotation that failed is retried when its backoff ends, unless the plan
            // needs something sooner (a renewal keeps the current lease alive meanwhile).
            let retry = self.retry_at.unwrap_or(now);
            if retry <= planned.1 {
                planned = (Action::Reissue(Why::Cadence), retry);
            }
        }
        let (action, at) = match self.pending_revokes.iter().map(|(_, at)| *at).min() {
            Some(revoke_at) if revoke_at < planned.1 => (Action::Revoke, revoke_at),
            _ => planned,
        };
        match self.retry_at {
            Some(retry) if retry > at && action != Action::Revoke => (action, retry),
            _ => (action, at.max(now)),
        }
    }

    fn planned(&mut self, now: Instant) -> (Action, Instant) {
        let Some(held) = &self.current else {
            return (Action::Issue, now);
        };
        if let Some(lease) = &held.lease {
            return match lease::plan(
                now,
                lease,
                held.token.final_end(),
                self.cfg.rotate_every,
                &mut self.rng,
            ) {
                Next::Renew(at) => (Action::Renew, at),
                Next::Reissue(at, why) => (Action::Reissue(why), at),
            };
        }
        let refresh = held.refresh_at.unwrap_or(now);
        if self.kind == Some(SecretKind::Static) && !self.rotate_denied {
            if let Some(every) = self.cfg.rotate_every {
                let since = self.last_rotate_request.unwrap_or(held.issued_at);
                let rotate_at = since + every;
                if rotate_at < refresh {
                    return (Action::RotateStatic, rotate_at);
                }
            }
        }
        (Action::Reread, refresh)
    }

    async fn perform(&mut self, action: Action) -> Result<(), SecretError> {
        match action {
            Action::Issue => self.issue(None).await,
            Action::Reissue(why) => self.issue(Some(why)).await,
            Action::Renew => self.renew().await,
            Action::Reread => self.reread().await,
            Action::RotateStatic => self.rotate_static().await,
            Action::Revoke => {
                self.revoke_due().await;
                Ok(())
            }
        }
    }

    /// Runs a Vault call with the current token; on a refused token logs in once and retries.
    /// OpenBao and older Vault answer a dead token with a bare "permission denied", so any 403
    /// earns one fresh login before it is taken as a policy problem.
    async fn with_token<T, F, Fut>(&self, call: F) -> Result<(T, Arc<Token>), SecretError>
    where
        F: Fn(SecretValue) -> Fut,
        Fut: std::future::Future<Output = Result<T, VaultError>>,
    {
        let token = self.backend.token().await?;
        match call(token.secret().clone()).await {
            Ok(v) => Ok((v, token)),
            Err(e) if e.is_forbidden() => {
                tracing::debug!(secret = %self.cfg.name, error = %e, "403 from Vault; logging in again before retrying once");
                let fresh = self.backend.relogin(token.generation).await?;
                let v = call(fresh.secret().clone()).await?;
                Ok((v, fresh))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn resolve_kind(&mut self) -> Result<SecretKind, SecretError> {
        if let Some(kind) = self.kind {
            if kind != SecretKind::KvV2 || self.read_path.contains("/data/") {
                return Ok(kind);
            }
        }
        let backend = self.backend.clone();
        let path = self.cfg.path.clone();
        let info = self
            .with_token(|t| {
                let backend = backend.clone();
                let path = path.clone();
                async move { backend.mount_info(&t, &path).await }
            })
            .await;
        let (kind, mount) = match info {
            Ok((info, _)) => {
                let version = info.options.get("version").and_then(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .or_else(|| v.as_u64().map(|n| n.to_string()))
                });
                let kind = match (info.mount_type.as_str(), version.as_deref()) {
                    ("database", _) => {
                        guess_from_path(&self.cfg.path).unwrap_or(SecretKind::Generic)
                    }
                    ("kv", Some("2")) => SecretKind::KvV2,
                    ("kv" | "generic", _) => SecretKind::KvV1,
                    _ => SecretKind::Generic,
                };
                (self.kind.unwrap_or(kind), Some(info.path))
            }
            // Vault is sealed, unreachable or refused the login: nothing was learnt about the
            // mount, and a guess would be kept for good (a KV v2 path read without `data/`
            // forever). Fail this attempt; the backoff retries it.
            Err(e) if !answered_for_the_mount(&e) => return Err(e),
            Err(e) => {
                let guess = self
                    .kind
                    .or_else(|| guess_from_path(&self.cfg.path))
                    .unwrap_or(SecretKind::Generic);
                tracing::warn!(secret = %self.cfg.name, error = %e, kind = guess.as_str(), "could not ask Vault for the mount type; guessing from the path");
                (guess, None)
            }
        };
        if kind == SecretKind::KvV2 {
            self.read_path = kv2_data_path(&self.cfg.path, mount.as_deref());
        }
        tracing::info!(secret = %self.cfg.name, kind = kind.as_str(), path = %self.read_path, "secret kind");
        self.kind = Some(kind);
        self.state.update(&self.cfg.name, |s| s.kind = kind);
        Ok(kind)
    }

    /// Reads a credential and makes it the current one. `why` is `None` for the first one.
    async fn issue(&mut self, why: Option<Why>) -> Result<(), SecretError> {
        let kind = self.resolve_kind().await?;
        if why == Some(Why::TokenDeadline) {
            // The lease is ending with its token: a credential from the same token would die
            // with it too, so log in first.
            if let Some(held) = &self.current {
                let generation = held.token.generation;
                self.backend.relogin(generation).await?;
            }
        }
        let backend = self.backend.clone();
        let path = self.read_path.clone();
        let (env, token) = self
            .with_token(|t| {
                let backend = backend.clone();
                let path = path.clone();
                async move { backend.read(&t, &path).await }
            })
            .await?;
        let held = self.held_from(env, kind, token)?;
        if let Err(e) = self.write(&held.cred) {
            // Never leave a database user behind that nobody holds.
            if let Some(id) = &held.cred.lease_id {
                self.revoke(id).await;
            }
            return Err(e);
        }
        self.install(held, why);
        Ok(())
    }

    fn install(&mut self, held: Held, why: Option<Why>) {
        let name = self.cfg.name.clone();
        let username = held.cred.username.clone().unwrap_or_default();
        let expires = held
            .cred
            .expires_at
            .map(|t| humantime::format_rfc3339_seconds(t).to_string());
        let event = if self.current.is_some() {
            EventKind::Rotated
        } else {
            EventKind::Issued
        };
        let reason = match why {
            None => "first credential",
            Some(Why::Cadence) => "rotation cadence or manual rotation",
            Some(Why::Deadline) => "lease reaching its end",
            Some(Why::TokenDeadline) => "token reaching its end",
        };
        // The audit trail: one line per credential, never the secret itself.
        tracing::info!(
            secret = %name,
            username = %username,
            expires_at = expires.as_deref().unwrap_or("none"),
            lease_id = held.cred.lease_id.as_deref().unwrap_or(""),
            version = held.cred.version,
            reason,
            "wrote new credential"
        );
        if let Some(old) = self.current.take() {
            if let Some(id) = old.cred.lease_id.clone() {
                let grace_end = Instant::now() + self.cfg.revoke_grace;
                // No need to revoke what dies by itself before the grace is over.
                match old.deadline() {
                    Some(d) if d <= grace_end => {}
                    _ => self.pending_revokes.push((id, grace_end)),
                }
            }
        }
        let now = crate::time::wall_now();
        self.state.update(&name, |s| {
            s.username = held.cred.username.clone();
            s.lease_id = held.cred.lease_id.clone();
            s.expires_at = held.cred.expires_at;
            s.renewable = held.lease.is_some_and(|l| l.renewable);
            s.written_at = Some(now);
            s.last_rotation = Some(now);
            s.last_error = None;
        });
        self.state.record_credential(
            &name,
            event,
            held.cred.username.clone(),
            held.cred.lease_id.clone(),
            reason,
        );
        // The first credential is in place before the app starts; later ones are news to it.
        if event == EventKind::Rotated && !self.cfg.hooks.is_empty() {
            let change = crate::notify::Change {
                secret: name.clone(),
                username: held.cred.username.clone(),
                expires_at: expires.clone(),
                file: self.cfg.output.display().to_string(),
            };
            crate::notify::fire(&self.cfg.hooks, change, self.state.clone());
        }
        self.current = Some(held);
    }

    fn held_from(
        &mut self,
        env: Envelope,
        kind: SecretKind,
        token: Arc<Token>,
    ) -> Result<Held, SecretError> {
        let now = Instant::now();
        let shape = |reason: &str| SecretError::Shape {
            path: self.read_path.clone(),
            reason: reason.to_string(),
        };
        for w in env.warnings() {
            tracing::info!(secret = %self.cfg.name, warning = %w, "Vault warning");
        }
        let (data, version) = if kind == SecretKind::KvV2 {
            let inner = env.data.get("data").and_then(Value::as_object).cloned();
            let version = env
                .data
                .get("metadata")
                .and_then(|m| m.get("version"))
                .and_then(Value::as_u64);
            let inner = inner.ok_or_else(|| {
                shape("KV v2 read has no data.data: is the version deleted or destroyed?")
            })?;
            (inner, version)
        } else {
            (env.data.clone(), None)
        };
        if kind == SecretKind::Dynamic
            && (!data.contains_key("username") || env.lease_id.is_empty())
        {
            return Err(shape(
                "a dynamic database credential needs data.username and a lease_id",
            ));
        }
        let mut fields = BTreeMap::new();
        for (k, v) in data {
            if kind == SecretKind::Static && k == "ttl" {
                // Relative and stale at once; expires_at carries it instead.
                continue;
            }
            let value = match v {
                Value::String(s) => FieldValue::Secret(SecretValue::new(s)),
                other => FieldValue::Json(other),
            };
            fields.insert(k, value);
        }
        let text = |k: &str| match fields.get(k) {
            Some(FieldValue::Secret(s)) => Some(s.clone()),
            _ => None,
        };
        let username = text("username").map(|s| s.expose().to_string());
        let password = text("password");
        let leased = !env.lease_id.is_empty() && kind != SecretKind::Static;
        let (lease, rotates_at, refresh_at) = if leased {
            (
                Some(Lease::issued(
                    now,
                    Duration::from_secs(env.lease_duration),
                    env.renewable,
                )),
                None,
                None,
            )
        } else if kind == SecretKind::Static {
            let ttl = env
                .data
                .get("ttl")
                .and_then(Value::as_f64)
                .ok_or_else(|| shape("static credential without data.ttl"))?;
            let rotates = now + Duration::from_secs_f64(ttl.max(0.0));
            (None, Some(rotates), Some(rotates + STATIC_SETTLE))
        } else {
            let mut every = self.cfg.rotate_every.unwrap_or(self.cfg.refresh_every);
            if kind == SecretKind::KvV1 || kind == SecretKind::Generic {
                // An advisory TTL (KV v1's "ttl" key) asks to be read again sooner.
                if env.lease_duration > 0 && self.cfg.rotate_every.is_none() {
                    every = every.min(Duration::from_secs(env.lease_duration));
                }
            }
            (None, None, Some(now + every))
        };
        let mut held = Held {
            cred: Credential {
                username,
                password,
                expires_at: None,
                lease_id: leased.then(|| env.lease_id.clone()),
                version,
                fields,
            },
            lease,
            token,
            rotates_at,
            refresh_at,
            issued_at: now,
        };
        held.cred.expires_at = held.deadline().map(to_system);
        Ok(held)
    }

    fn write(&self, cred: &Credential) -> Result<WriteOutcome, SecretError> {
        let bytes = render::render(&self.cfg.format, cred)?;
        Ok(self.sink.write(&bytes)?)
    }

    async fn renew(&mut self) -> Result<(), SecretError> {
        let Some(held) = &self.current else {
            return Ok(());
        };
        let (Some(lease), Some(id)) = (held.lease, held.cred.lease_id.clone()) else {
            return Ok(());
        };
        let asked = lease.ttl;
        let backend = self.backend.clone();
        let result = self
            .with_token(|t| {
                let backend = backend.clone();
                let id = id.clone();
                async move { backend.renew_lease(&t, &id, asked).await }
            })
            .await;
        let name = self.cfg.name.clone();
        match result {
            Ok((env, _)) => {
                let granted = Duration::from_secs(env.lease_duration);
                for w in env.warnings() {
                    tracing::info!(secret = %name, warning = %w, "Vault capped the lease renewal");
                }
                let Some(held) = self.current.as_mut() else {
                    return Ok(());
                };
                if let Some(l) = held.lease.as_mut() {
                    l.renewed(Instant::now(), asked, granted, env.renewable);
                }
                held.cred.expires_at = held.deadline().map(to_system);
                let expires_at = held.cred.expires_at;
                let cred = held.cred.clone();
                self.state.update(&name, |s| {
                    s.expires_at = expires_at;
                    s.renewable = env.renewable;
                });
                self.state.record(
                    &name,
                    EventKind::Renewed,
                    format!("lease extended by {}", humantime::format_duration(granted)),
                );
                tracing::debug!(secret = %name, granted = %humantime::format_duration(granted), "renewed lease");
                // The file carries expires_at, so it moves with the lease.
                self.write(&cred)?;
                Ok(())
            }
            Err(SecretError::Vault(e)) if e.is_lease_gone() => {
                tracing::warn!(secret = %name, error = %e, "the lease is gone (revoked or expired in Vault); issuing a new credential");
                self.state
                    .record_failure(&name, "renew", format!("renew: {e}"));
                if let Some(held) = self.current.as_mut() {
                    // It cannot be revoked or renewed any more; forget its lease.
                    held.cred.lease_id = None;
                }
                self.issue(Some(Why::Deadline)).await
            }
            Err(SecretError::Vault(e)) if e.is_forbidden() || e.is_not_renewable() => {
                // Renewing again would only repeat the refusal: keep the credential to the end
                // of its lease and replace it ahead of that.
                tracing::warn!(secret = %name, error = %e, "cannot renew this lease; will issue a new credential before it expires");
                if let Some(l) = self.current.as_mut().and_then(|h| h.lease.as_mut()) {
                    l.renewable = false;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Static roles, KV and other unleased secrets: read again, write when it changed.
    async fn reread(&mut self) -> Result<(), SecretError> {
        let kind = self.resolve_kind().await?;
        let backend = self.backend.clone();
        let path = self.read_path.clone();
        let (env, token) = self
            .with_token(|t| {
                let backend = backend.clone();
                let path = path.clone();
                async move { backend.read(&t, &path).await }
            })
            .await?;
        let mut held = self.held_from(env, kind, token)?;
        let Some(old) = &self.current else {
            self.write(&held.cred)?;
            self.install(held, None);
            return Ok(());
        };
        let changed = old.cred.password != held.cred.password
            || old.cred.username != held.cred.username
            || old.cred.version != held.cred.version
            || old.cred.fields != held.cred.fields;
        if kind == SecretKind::Static && !changed {
            // Vault has not rotated yet (or the clock is a little ahead): look again soon,
            // rather than keep a password that is about to stop working.
            let overdue = old.rotates_at.is_some_and(|r| r <= Instant::now());
            if overdue {
                held.refresh_at = Some(Instant::now() + STATIC_RECHECK);
            }
        }
        if changed {
            self.write(&held.cred)?;
            self.install(held, Some(Why::Deadline));
        } else {
            // Same credential: keep its history, move its expiry and next read.
            if let Some(cur) = self.current.as_mut() {
                cur.rotates_at = held.rotates_at;
                cur.refresh_at = held.refresh_at;
                cur.cred.expires_at = held.cred.expires_at;
                let cred = cur.cred.clone();
                self.state
                    .update(&self.cfg.name, |s| s.expires_at = cred.expires_at);
                self.write(&cred)?;
            }
        }
        Ok(())
    }

    /// `--rotate-every` on a static role: ask Vault to rotate now, then read the new password.
    async fn rotate_static(&mut self) -> Result<(), SecretError> {
        self.last_rotate_request = Some(Instant::now());
        let rotate_path = self
            .read_path
            .replacen("/static-creds/", "/rotate-role/", 1);
        let backend = self.backend.clone();
        let path = rotate_path.clone();
        let result = self
            .with_token(|t| {
                let backend = backend.clone();
                let path = path.clone();
                async move { backend.rotate_role(&t, &path).await }
            })
            .await;
        match result {
            Ok(_) => {
                tracing::info!(secret = %self.cfg.name, path = %rotate_path, "asked Vault to rotate the static role");
                self.reread().await
            }
            Err(SecretError::Vault(e)) if e.is_forbidden() => {
                tracing::warn!(secret = %self.cfg.name, error = %e, "the policy does not allow rotate-role; relying on Vault's own rotation schedule");
                self.rotate_denied = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn revoke_due(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self
            .pending_revokes
            .drain(..)
            .partition(|(_, at)| *at <= now);
        self.pending_revokes = later;
        for (id, _) in due {
            self.revoke(&id).await;
        }
    }

    /// Best effort: a lease that cannot be revoked still ends at its TTL.
    async fn revoke(&self, lease_id: &str) {
        let backend = self.backend.clone();
        let id = lease_id.to_string();
        let result = self
            .with_token(|t| {
                let backend = backend.clone();
                let id = id.clone();
                async move { backend.revoke_lease(&t, &id).await }
            })
            .await;
        match result {
            Ok(_) => {
                tracing::info!(secret = %self.cfg.name, lease_id, "revoked old credential");
                self.state.record_revoked(&self.cfg.name, lease_id);
            }
            Err(e) => {
                tracing::warn!(secret = %self.cfg.name, lease_id, error = %e, "revoking old credential failed; it will expire at its TTL");
                self.state
                    .record_failure(&self.cfg.name, "revoke", format!("revoke: {e}"));
            }
        }
    }

    async fn shutdown(&mut self) {
        let retired = self
            .control
            .retire
            .load(std::sync::atomic::Ordering::Relaxed);
        if retired {
            // The app may still hold this credential until the successor's file lands: give
            // it the same grace as any replaced credential.
            tokio::time::sleep(self.cfg.revoke_grace).await;
        } else if !self.revoke_on_exit {
            return;
        }
        let mut ids: Vec<String> = self.pending_revokes.drain(..).map(|(id, _)| id).collect();
        if let Some(id) = self.current.as_ref().and_then(|h| h.cred.lease_id.clone()) {
            ids.push(id);
        }
        for id in ids {
            self.revoke(&id).await;
        }
    }

    fn log_failure(&self, action: Action, e: &SecretError, wait: Duration) {
        let name = &self.cfg.name;
        let stage = failure_stage(action, e);
        tracing::warn!(
            secret = %name,
            action = action.describe(),
            stage,
            error = %e,
            retry_in = %humantime::format_duration(crate::vault::auth::round(wait)),
            "failed; the last good file is kept"
        );
        // Counts the failure, by stage, and keeps it as last_error.
        self.state
            .record_failure(name, stage, format!("{stage}: {e}"));
    }
}

/// The stage for metrics and /status: [`SecretError::stage`], except that a Vault error while
/// renewing is a renewal failure, not a fetch failure (the alert differs: a failing renewal
/// still has the old lease's lifetime to recover in).
fn failure_stage(action: Action, e: &SecretError) -> &'static str {
    match (action, e) {
        (Action::Renew, SecretError::Vault(_)) => "renew",
        _ => e.stage(),
    }
}

fn is_retryable(e: &SecretError) -> bool {
    match e {
        SecretError::Vault(v) => v.is_transient() || v.is_forbidden(),
        SecretError::Auth(a) => a.vault_error().is_none_or(VaultError::is_transient),
        SecretError::Shape { .. } | SecretError::Render(_) => false,
        SecretError::Write(_) => true,
    }
}

/// Vault answered the mount preflight with a definite refusal (403 when the policy does not
/// grant `sys/internal/ui/mounts`, 404 on old versions): guessing from the path is what the
/// vault CLI does then. Anything else (sealed, 5xx, transport, a failed login) says nothing
/// about the mount.
fn answered_for_the_mount(e: &SecretError) -> bool {
    match e {
        SecretError::Vault(v) => v.status().is_some() && !v.is_transient(),
        _ => false,
    }
}

fn guess_from_path(path: &str) -> Option<SecretKind> {
    if path.contains("/static-creds/") {
        Some(SecretKind::Static)
    } else if path.contains("/creds/") {
        Some(SecretKind::Dynamic)
    } else if path.contains("/data/") {
        Some(SecretKind::KvV2)
    } else {
        None
    }
}

/// `secret/app` on a KV v2 mount `secret/` reads `secret/data/app`, as `vault kv get` does.
fn kv2_data_path(path: &str, mount: Option<&str>) -> String {
    let mount = mount
        .map(|m| m.trim_end_matches('/'))
        .unwrap_or_else(|| path.split('/').next().unwrap_or(path));
    let rest = path
        .strip_prefix(mount)
        .unwrap_or(path)
        .trim_start_matches('/');
    if rest.starts_with("data/") {
        path.to_string()
    } else {
        format!("{mount}/data/{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv2_paths_get_data_inserted_once() {
        assert_eq!(
            kv2_data_path("secret/app", Some("secret/")),
            "secret/data/app"
        );
        assert_eq!(
            kv2_data_path("secret/data/app", Some("secret/")),
            "secret/data/app"
        );
        assert_eq!(
            kv2_data_path("team/kv/app/db", Some("team/kv/")),
            "team/kv/data/app/db"
        );
        assert_eq!(kv2_data_path("secret/app", None), "secret/data/app");
    }

    #[test]
    fn kinds_are_guessed_from_paths() {
        assert_eq!(
            guess_from_path("database/creds/app"),
            Some(SecretKind::Dynamic)
        );
        assert_eq!(
            guess_from_path("db/static-creds/app"),
            Some(SecretKind::Static)
        );
        assert_eq!(guess_from_path("secret/data/app"), Some(SecretKind::KvV2));
        assert_eq!(guess_from_path("secret/app"), None);
    }
}
