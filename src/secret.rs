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
/// The least wait after a policy denial.
const DENIED_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Vault(#[from] VaultError),
    /// A 403 with a token that `lookup-self` shows alive: the policy refuses the path. A new
    /// login cannot help, so none is made.
    #[error("denied by policy: {0}")]
    Denied(VaultError),
    /// The credential dies with its token, and no token that outlives it can be had (a
    /// `--auth token` token near its end, or a failing login). Kept until its real end.
    #[error("the Vault token ends in {} and no newer token can be had; the credential in the file dies with it", humantime::format_duration(*.0))]
    TokenEnding(Duration),
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
            SecretError::TokenEnding(_) => "auth",
            SecretError::Vault(_) | SecretError::Denied(_) | SecretError::Shape { .. } => "fetch",
            SecretError::Render(_) => "render",
            SecretError::Write(_) => "write",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            SecretError::Vault(e) | SecretError::Denied(e) => e.retry_after(),
            SecretError::Auth(e) => e.vault_error().and_then(VaultError::retry_after),
            _ => None,
        }
    }
}

/// What SIGHUP made of a running secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    /// Still configured as it is.
    No,
    /// Gone from the configuration: its credentials are revoked after the grace.
    Removed,
    /// Its settings changed and a new worker took its name. This one keeps its credential
    /// alive (renewing it) until the new one has written a credential, and only then starts
    /// the grace: a mistyped path or a Vault outage never leaves the file with a revoked
    /// credential.
    Replaced,
}

/// How a hand-over ended.
enum HandOver {
    /// The new worker wrote its credential: this one's grace starts.
    Written,
    /// SIGTERM came first.
    Stopped,
    /// A later SIGHUP removed the secret after all.
    Removed,
}

/// How the worker is told to act outside its plan.
#[derive(Clone)]
pub struct Control {
    /// SIGUSR1 or `POST /rotate`: issue a new credential now.
    pub rotate: Arc<Notify>,
    /// SIGTERM: stop (revoking only with `--revoke-on-exit`).
    pub shutdown: watch::Receiver<bool>,
    pub retire: watch::Receiver<Retire>,
    /// Shared by every worker that has held this secret's name: the id of the last one to
    /// write a credential. A replaced worker waits for a newer id.
    pub written: Arc<watch::Sender<u64>>,
    /// This worker's place in that order.
    pub id: u64,
}

impl Control {
    /// A control that only SIGTERM and rotations reach (`--once`, tests).
    pub fn new(rotate: Arc<Notify>, shutdown: watch::Receiver<bool>) -> Control {
        Control {
            rotate,
            shutdown,
            retire: watch::channel(Retire::No).1,
            written: Arc::new(watch::channel(0).0),
            id: 1,
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
    /// When the credential stops working unless something is renewed: a lease dies with the
    /// token that created it, so the token's current end bounds it too.
    fn deadline(&self) -> Option<Instant> {
        let lease_end = self.lease.map(|l| l.expires_at);
        let token_end = self.lease.and(self.token.expires_at());
        match (lease_end, token_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b).or(self.rotates_at),
        }
    }
}

/// An old lease to revoke.
struct PendingRevoke {
    lease_id: String,
    /// When to (try to) revoke it.
    at: Instant,
    /// Failed attempts so far: sets the retry's backoff.
    attempts: u32,
    /// When it dies anyway; a failing revoke is not retried past this.
    dies_at: Option<Instant>,
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
    /// The backoff's settings, for the floor after a policy denial and revoke retries.
    backoff_min: Duration,
    backoff_max: Duration,
    current: Option<Held>,
    /// Old leases waiting out their grace, or a retry of a revoke that failed.
    pending_revokes: Vec<PendingRevoke>,
    /// After a failure, nothing is tried before this.
    retry_at: Option<Instant>,
    /// The policy refused `rotate-role`: stop asking.
    rotate_denied: bool,
    last_rotate_request: Option<Instant>,
    /// SIGHUP replaced this worker: it only keeps its credential alive, and issues nothing.
    handing_over: bool,
    /// The last failure was a policy denial (whose wait a manual rotation may cut short).
    denied: bool,
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
            backoff_min: backoff.min,
            backoff_max: backoff.max,
            current: None,
            pending_revokes: Vec::new(),
            retry_at: None,
            rotate_denied: false,
            last_rotate_request: None,
            rotate_requested: false,
            handing_over: false,
            denied: false,
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
        let mut how = self.serve().await;
        // A retired worker may be configured again, or removed again, by later SIGHUPs.
        loop {
            match how {
                Retire::No => return self.shutdown().await,
                Retire::Removed => {
                    if !self.grace_unless_readded().await {
                        return self.revoke_all().await;
                    }
                    how = Retire::Replaced;
                }
                Retire::Replaced => match self.hand_over().await {
                    HandOver::Written => return self.revoke_after_grace().await,
                    HandOver::Stopped => return self.shutdown().await,
                    HandOver::Removed => how = Retire::Removed,
                },
            }
        }
    }

    /// The main loop: runs the plan until SIGTERM ([`Retire::No`]) or a SIGHUP retires it.
    async fn serve(&mut self) -> Retire {
        let name = self.cfg.name.clone();
        let mut token_changes = self.backend.token_changes();
        let mut shutdown = self.control.shutdown.clone();
        let mut retire = self.control.retire.clone();
        let rotate = self.control.rotate.clone();
        let mut retire_open = true;
        loop {
            if *shutdown.borrow() {
                return Retire::No;
            }
            let retired = *retire.borrow_and_update();
            if retired != Retire::No {
                return retired;
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
                _ = shutdown.changed() => return Retire::No,
                changed = retire.changed(), if retire_open => {
                    // A control without a SIGHUP sender (`--once`, tests) is never retired.
                    retire_open = changed.is_ok();
                    continue;
                }
                _ = tokio::time::sleep_until(at) => action,
                _ = rotate.notified() => {
                    // Planned like any action: at once, unless a failure's backoff (or a
                    // Retry-After) is still running. A policy denial's long wait is the
                    // exception: an operator who asks again has likely fixed the policy.
                    self.rotate_requested = true;
                    if self.denied {
                        self.retry_at = None;
                    }
                    continue;
                }
                changed = token_changes.changed() => {
                    if changed.is_err() { return Retire::No; }
                    self.refresh_expiry();
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
                    self.denied = false;
                    self.backoff.reset();
                }
                Err(e) => {
                    let wait = self.backoff_for(&e);
                    self.retry_at = Some(Instant::now() + wait);
                    self.denied = matches!(e, SecretError::Denied(_));
                    self.log_failure(action, &e, wait);
                }
            }
        }
    }

    /// A newer worker has written a credential under this name: the file is no longer ours.
    fn handed_over(&self) -> bool {
        *self.control.written.borrow() > self.control.id
    }

    /// Replaced by SIGHUP: keep the credential in the file alive (renewals, due revokes)
    /// until the new worker has written its own.
    async fn hand_over(&mut self) -> HandOver {
        self.handing_over = true;
        let mut written = self.control.written.subscribe();
        let mut shutdown = self.control.shutdown.clone();
        let mut retire = self.control.retire.clone();
        tracing::info!(secret = %self.cfg.name, "SIGHUP: replaced; keeping the current credential alive until the new settings have written one");
        loop {
            if self.handed_over() {
                return HandOver::Written;
            }
            if *shutdown.borrow() {
                return HandOver::Stopped;
            }
            if *retire.borrow_and_update() == Retire::Removed {
                return HandOver::Removed;
            }
            let now = Instant::now();
            let renew_at = match self.planned(now) {
                (Action::Renew, at) => Some(self.retry_at.map_or(at, |r| at.max(r))),
                _ => None,
            };
            let revoke_at = self.pending_revokes.iter().map(|p| p.at).min();
            let wake = renew_at.into_iter().chain(revoke_at).min();
            let sleep = async move {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => continue,
                _ = written.changed() => continue,
                changed = retire.changed() => if changed.is_err() { return HandOver::Stopped } else { continue },
                _ = sleep => {}
            }
            if revoke_at.is_some_and(|r| r <= Instant::now()) {
                self.revoke_due().await;
                continue;
            }
            match self.renew().await {
                Ok(()) => {
                    self.retry_at = None;
                    self.backoff.reset();
                }
                Err(e) => {
                    let wait = self.backoff_for(&e);
                    self.retry_at = Some(Instant::now() + wait);
                    self.log_failure(Action::Renew, &e, wait);
                }
            }
        }
    }

    /// Removed by SIGHUP: waits out the grace. `true` when a later SIGHUP configured the
    /// name again meanwhile (the file holds this credential and is wanted again); `false`
    /// when the grace is over, or SIGTERM cut it short.
    async fn grace_unless_readded(&mut self) -> bool {
        let mut shutdown = self.control.shutdown.clone();
        let mut retire = self.control.retire.clone();
        let grace = tokio::time::sleep(self.cfg.revoke_grace);
        tokio::pin!(grace);
        loop {
            if *retire.borrow_and_update() == Retire::Replaced {
                return true;
            }
            if *shutdown.borrow() {
                return false;
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => return false,
                changed = retire.changed() => if changed.is_err() { return false },
                _ = &mut grace => return false,
            }
        }
    }

    /// Retired: the app has had the successor (or, for a removed secret, the reload) since
    /// now; after the grace, revoke everything this worker still holds. SIGTERM cuts the
    /// grace short rather than leaving the credentials to their TTL.
    async fn revoke_after_grace(&mut self) {
        let mut shutdown = self.control.shutdown.clone();
        if !*shutdown.borrow() {
            tokio::select! {
                biased;
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(self.cfg.revoke_grace) => {}
            }
        }
        self.revoke_all().await;
    }

    /// The wait before retrying after `e`. A policy denial is no passing fault: it waits at
    /// least a minute, so a missing grant costs Vault little.
    fn backoff_for(&mut self, e: &SecretError) -> Duration {
        let wait = self.backoff.next_delay(e.retry_after(), &mut self.rng);
        match e {
            SecretError::Denied(_) => wait.max(DENIED_RETRY),
            _ => wait,
        }
    }

    /// Keeps `expires_at` (file, state) equal to the credential's real end after something
    /// other than a renewal moved it: the token renewed, found final, or found dead.
    fn refresh_expiry(&mut self) {
        let Some(held) = self.current.as_mut() else {
            return;
        };
        let expires_at = held.deadline().map(to_system);
        if expires_at == held.cred.expires_at {
            return;
        }
        held.cred.expires_at = expires_at;
        let cred = held.cred.clone();
        if self.handed_over() {
            return;
        }
        self.state
            .update(&self.cfg.name, |s| s.expires_at = expires_at);
        if let Err(e) = self.write(&cred) {
            tracing::warn!(secret = %self.cfg.name, error = %e, "could not write the new expires_at");
        }
    }

    /// Says once, in the log, `/status` and the metrics, that the credential will die with
    /// its token; cleared by the next credential written.
    fn set_dies_with_login(&self, bound: bool) {
        let name = &self.cfg.name;
        let was = self.state.get(name).is_some_and(|s| s.dies_with_login);
        if bound && !was {
            tracing::warn!(secret = %name, "the credential cannot outlive its Vault token and no newer token can be had (auth=token: put a new token in the token file); keeping it until it ends, then /ready fails");
        }
        self.state.update(name, |s| s.dies_with_login = bound);
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
        let (action, at) = match self.pending_revokes.iter().map(|p| p.at).min() {
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
        if held.lease.is_some() && (held.token.is_dead() || held.token.is_expired(now)) {
            // The token that created the lease ran out (renewals failed while Vault was
            // away) or is gone: so is the lease, whatever its own TTL says.
            return (Action::Reissue(Why::TokenDeadline), now);
        }
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
            Action::Reissue(why) if self.current.as_ref().is_some_and(|h| h.lease.is_none()) => {
                // Nothing leased to replace (static role, KV): rotating means asking Vault
                // for a new password where it can, then reading again, and a credential
                // that did not change is no rotation.
                let _ = why;
                if self.kind == Some(SecretKind::Static) && !self.rotate_denied {
                    self.rotate_static().await
                } else {
                    self.reread().await
                }
            }
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

    /// Runs a Vault call with the current token. A 403 is either a dead token or a policy
    /// denial; only a dead token (confirmed with `lookup-self`, since OpenBao and older Vault
    /// say just "permission denied") earns a new login and one more try.
    async fn with_token<T, F, Fut>(&self, call: F) -> Result<(T, Arc<Token>), SecretError>
    where
        F: Fn(SecretValue) -> Fut,
        Fut: std::future::Future<Output = Result<T, VaultError>>,
    {
        let token = self.backend.token().await?;
        let refusal = match call(token.secret().clone()).await {
            Ok(v) => return Ok((v, token)),
            Err(e) if e.is_forbidden() => e,
            Err(e) => return Err(e.into()),
        };
        if !self.backend.confirm_dead(&token, &refusal).await? {
            // The token is alive. "invalid token" for a live token is a passing refusal
            // (a standby not yet caught up): retry on the backoff. Anything else is the
            // policy's answer.
            if refusal.is_invalid_token() {
                return Err(SecretError::Vault(refusal));
            }
            return Err(SecretError::Denied(refusal));
        }
        tracing::debug!(secret = %self.cfg.name, "the token is gone; logging in again before retrying once");
        let fresh = self.backend.relogin(token.generation).await?;
        match call(fresh.secret().clone()).await {
            Ok(v) => Ok((v, fresh)),
            Err(e) if e.is_forbidden() => Err(SecretError::Denied(e)),
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
            // with it too, so log in first, and re-issue only under a token that outlives
            // this one. Chasing the same token would re-issue ever faster as its end nears.
            if let Some(held) = &self.current {
                let old = held.token.clone();
                let fresh = self.backend.relogin(old.generation).await?;
                if !outlives(&fresh, &old) {
                    let left = old
                        .expires_at()
                        .map(|e| e.saturating_duration_since(Instant::now()))
                        .unwrap_or_default();
                    self.set_dies_with_login(true);
                    return Err(SecretError::TokenEnding(crate::time::round(left)));
                }
            }
        }
        // Lifetimes count from when the request left: an answer that took a while to come
        // back describes a lease that started before we read it.
        let sent = Instant::now();
        let backend = self.backend.clone();
        let path = self.read_path.clone();
        let (env, token) = self
            .with_token(|t| {
                let backend = backend.clone();
                let path = path.clone();
                async move { backend.read(&t, &path).await }
            })
            .await?;
        let lease_id = env.lease_id.clone();
        let held = match self.held_from(env, kind, token, sent) {
            Ok(held) => held,
            Err(e) => {
                // Vault made a lease (a database user) that we cannot use: give it back.
                if !lease_id.is_empty() {
                    self.revoke(&lease_id).await;
                }
                return Err(e);
            }
        };
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
        self.control
            .written
            .send_modify(|w| *w = (*w).max(self.control.id));
        if let Some(old) = self.current.take() {
            if let Some(id) = old.cred.lease_id.clone() {
                let grace_end = Instant::now() + self.cfg.revoke_grace;
                // No need to revoke what dies by itself before the grace is over.
                let dies_at = old.deadline();
                match dies_at {
                    Some(d) if d <= grace_end => {}
                    _ => self.pending_revokes.push(PendingRevoke {
                        lease_id: id,
                        at: grace_end,
                        attempts: 0,
                        dies_at,
                    }),
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
            s.dies_with_login = false;
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
            let state = self.state.clone();
            let outcome: crate::notify::Outcome =
                Arc::new(move |secret, hook, ok| state.notify_result(secret, hook, ok));
            crate::notify::fire(&self.cfg.hooks, change, outcome);
        }
        self.current = Some(held);
    }

    fn held_from(
        &mut self,
        env: Envelope,
        kind: SecretKind,
        token: Arc<Token>,
        now: Instant,
    ) -> Result<Held, SecretError> {
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
            // Vault rounds `ttl` to the nearest second: the password may die up to half a
            // second before `now + ttl`, so it counts as dead a second early, and is read
            // again just after the rotation.
            let rotates = now + Duration::from_secs_f64(ttl.max(0.0));
            let dies = rotates.checked_sub(crate::lease::ROUNDING).unwrap_or(now);
            (None, Some(dies), Some(rotates + STATIC_SETTLE))
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
        if self.handed_over() {
            // A newer worker owns the file (SIGHUP replaced this one).
            return Ok(WriteOutcome::Unchanged);
        }
        let bytes = render::render(&self.cfg.format, cred)?;
        Ok(self.sink.write(&bytes)?)
    }

    async fn renew(&mut self) -> Result<(), SecretError> {
        let Some(held) = &self.current else {
            return Ok(());
        };
        let (Some(lease), Some(id)) = (held.lease, held.cred.lease_id.clone()) else {
            // Nothing to renew: make sure the plan re-issues instead of asking again.
            if let Some(l) = self.current.as_mut().and_then(|h| h.lease.as_mut()) {
                l.renewable = false;
            }
            return Ok(());
        };
        let asked = lease.ttl;
        let sent = Instant::now();
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
                    l.renewed(sent, asked, granted, env.renewable);
                }
                held.cred.expires_at = held.deadline().map(to_system);
                let expires_at = held.cred.expires_at;
                let cred = held.cred.clone();
                if self.handed_over() {
                    return Ok(());
                }
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
                    // The credential is dead: it can be neither renewed nor revoked, and the
                    // plan must re-issue (with backoff) until a new one is written.
                    held.cred.lease_id = None;
                    if let Some(l) = held.lease.as_mut() {
                        l.renewable = false;
                        l.expires_at = l.expires_at.min(Instant::now());
                    }
                }
                self.refresh_expiry();
                if self.handing_over {
                    // Replaced by SIGHUP: the new settings' worker issues the replacement; a
                    // second issuer here would only mint a user nobody keeps.
                    return Ok(());
                }
                self.issue(Some(Why::Deadline)).await
            }
            // Refused by policy (the token is alive), or not renewable. A 403 for a live
            // token that says "invalid token" is neither: it comes back as a passing fault.
            Err(SecretError::Denied(e)) | Err(SecretError::Vault(e))
                if !e.is_invalid_token() && (e.is_forbidden() || e.is_not_renewable()) =>
            {
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
        let sent = Instant::now();
        let backend = self.backend.clone();
        let path = self.read_path.clone();
        let (env, token) = self
            .with_token(|t| {
                let backend = backend.clone();
                let path = path.clone();
                async move { backend.read(&t, &path).await }
            })
            .await?;
        let mut held = self.held_from(env, kind, token, sent)?;
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
        // The password in the file dies the moment Vault rotates it, before the answer is
        // back and the new one is read: from now on it counts as ended.
        if let Some(held) = self.current.as_mut() {
            held.rotates_at = Some(Instant::now());
        }
        self.refresh_expiry();
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
                // Only a rotation that happened starts the next cadence; a failed one is
                // retried with backoff.
                self.last_rotate_request = Some(Instant::now());
                tracing::info!(secret = %self.cfg.name, path = %rotate_path, "asked Vault to rotate the static role");
                self.reread().await
            }
            Err(SecretError::Denied(e)) => {
                tracing::warn!(secret = %self.cfg.name, error = %e, "the policy does not allow rotate-role; relying on Vault's own rotation schedule");
                self.rotate_denied = true;
                // Nothing rotated: read the role again, which restores the password's end.
                self.reread().await
            }
            Err(e) => Err(e),
        }
    }

    async fn revoke_due(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) =
            self.pending_revokes.drain(..).partition(|p| p.at <= now);
        self.pending_revokes = later;
        for mut p in due {
            if self.revoke(&p.lease_id).await {
                continue;
            }
            // A passing fault: try again with backoff while the lease still lives.
            p.attempts += 1;
            let mut retry = Backoff::new(self.backoff_min, self.backoff_max);
            let mut wait = Duration::ZERO;
            for _ in 0..p.attempts {
                wait = retry.next_delay(None, &mut self.rng);
            }
            p.at = Instant::now() + wait;
            if p.dies_at.is_none_or(|d| p.at < d) {
                self.pending_revokes.push(p);
            }
        }
    }

    /// Revokes one lease. Returns `false` when it is worth trying again (a passing fault);
    /// `true` when it is done, or can never be done (refused by policy, already gone): such
    /// a lease still ends at its TTL.
    async fn revoke(&self, lease_id: &str) -> bool {
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
                true
            }
            Err(e) => {
                let again = is_transient(&e);
                tracing::warn!(secret = %self.cfg.name, lease_id, error = %e, will_retry = again, "revoking old credential failed; it expires at its TTL if no retry succeeds");
                self.state
                    .record_failure(&self.cfg.name, "revoke", format!("revoke: {e}"));
                !again
            }
        }
    }

    /// SIGTERM: the credentials stay for the next start, unless `--revoke-on-exit`.
    async fn shutdown(&mut self) {
        if self.revoke_on_exit {
            self.revoke_all().await;
        }
    }

    async fn revoke_all(&mut self) {
        let mut ids: Vec<String> = self.pending_revokes.drain(..).map(|p| p.lease_id).collect();
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
            retry_in = %humantime::format_duration(crate::time::round(wait)),
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

/// A fault that may pass by itself (Vault down or overloaded, a token to replace).
fn is_transient(e: &SecretError) -> bool {
    match e {
        SecretError::Vault(v) => v.is_transient(),
        SecretError::Auth(a) => a.vault_error().is_none_or(VaultError::is_transient),
        _ => false,
    }
}

/// Whether `fresh` is another token that lives past `old`'s end, so that a credential
/// issued under it outlives the one issued under `old`.
fn outlives(fresh: &Token, old: &Token) -> bool {
    if fresh.same_as(old) || fresh.is_dead() {
        return false;
    }
    match (fresh.final_end(), old.expires_at()) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(f), Some(o)) => f.expires_at > o,
    }
}

fn is_retryable(e: &SecretError) -> bool {
    match e {
        SecretError::Vault(v) => v.is_transient(),
        SecretError::Denied(_) => true,
        SecretError::TokenEnding(_) => true,
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
