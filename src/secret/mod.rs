//! One secret's life: fetch, write, renew, re-issue, revoke the old one after the grace.
//!
//! Each configured secret gets one [`Worker`] running one loop, so there is never more than one
//! request in flight per lease. The loop asks [`crate::lease::plan`] what to do next, sleeps until
//! then (or until a manual rotation, a new token, or shutdown), does it, and backs off on
//! failure. Whatever fails, the file keeps the last good credential: a new one replaces it only
//! after it has been rendered and written in full.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::config::SecretConfig;
use crate::credential::{Credential, SecretKind};
use crate::drain::Drainer;
use crate::lease::{Backoff, Lease, Why};
use crate::sink::Sink;
use crate::state::{RevokeHow, State};
use crate::vault::{Backend, Token};

mod error;
mod issue;
mod output;
mod plan;
mod renew;
mod revoke;
mod serve;
#[cfg(test)]
mod tests;

use error::is_retryable;
pub use error::SecretError;

/// Re-read a static role this long after Vault said it would rotate the password.
const STATIC_SETTLE: Duration = Duration::from_millis(500);
/// How often to look again when a static role's password has not changed yet.
const STATIC_RECHECK: Duration = Duration::from_secs(1);
/// The least wait after a policy denial.
const DENIED_RETRY: Duration = Duration::from_secs(60);

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

/// What a Vault call does for the worker, which decides whether it may start once SIGHUP
/// retired the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// Gets a credential, or makes Vault change one (reads, rotate-role): only while the
    /// worker is the secret's current one.
    Fetch,
    /// Keeps what the worker holds alive, or gives it back (renewals, revokes): also while
    /// it hands over and after.
    Upkeep,
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

    /// The latest the credential may still work, for revoking it: past [`Held::deadline`]
    /// when a renewal's answer was lost but Vault may have applied it.
    fn latest_end(&self) -> Option<Instant> {
        let deadline = self.deadline();
        match self.lease {
            Some(l) => deadline.map(|d| d.max(l.latest_end())),
            None => deadline,
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
    /// When its successor was written: the drain time counts from here.
    since: Instant,
    /// How the revoke of a rotated-out credential comes about: the grace, unless the drain
    /// watch says otherwise. `None` for what a retired worker revokes, which is no rotation.
    how: Option<RevokeHow>,
    /// The drain watch that may bring the revoke forward; stopped when the entry goes.
    _watch: Option<crate::drain::Watch>,
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
    sink: Sink,
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
    /// When to delete the generations an `--output-dir` write swapped out.
    sweep_at: Option<Instant>,
    /// `--drain-check`: watches old credentials' sessions, to revoke them once the app left.
    drainer: Option<Drainer>,
}

impl<B: Backend> Worker<B> {
    pub fn new(
        cfg: SecretConfig,
        backend: Arc<B>,
        sink: impl Into<Sink>,
        state: Arc<State>,
        control: Control,
        backoff: crate::config::Backoff,
        revoke_on_exit: bool,
    ) -> Worker<B> {
        let drainer = cfg
            .drain_check
            .clone()
            .map(|check| Drainer::new(&cfg.name, check));
        state.update(&cfg.name, |s| {
            s.drain_check = cfg.drain_check.as_ref().map(ToString::to_string);
        });
        Worker {
            kind: cfg.kind,
            read_path: cfg.path.clone(),
            cfg,
            backend,
            sink: sink.into(),
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
            sweep_at: None,
            drainer,
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
                    if !self.grace_unless_readded().await && !self.revoke_retrying(true).await {
                        return;
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
}
