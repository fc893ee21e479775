//! What the probes, `/metrics` and `/status` read: per-secret status, a bounded event history
//! (the rotation activity log), counters, the liveness of the agent's loops, and the handles
//! that `POST /rotate` wakes.
//!
//! Shared as `Arc<State>` between the tokio runtime (writers) and the probe server's OS thread
//! (readers). A plain `std::sync::Mutex` suffices: every critical section is a few field
//! updates or one clone, and none awaits.
//!
//! Nothing here may hold a password, token or other secret value: everything is meant to be
//! shown on an endpoint. Callers must keep secrets out of `detail` and `last_error` strings.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use tokio::sync::Notify;

mod liveness;
mod records;
#[cfg(test)]
mod tests;

pub use liveness::{
    serve_liveness, LivenessReply, LivenessRx, LivenessTx, TaskGuard, LIVENESS_TIMEOUT,
};
pub use records::{
    AuthCount, AuthCounters, Event, EventKind, HookCounts, LastRevoke, NextAction, OutputSet,
    RevokeHow, SecretInfo, SecretStatus, REVOKE_HOWS,
};

/// Events kept per secret: enough to see the last few rotations and failures on `/status`
/// without growing memory over months of uptime.
pub const HISTORY_LEN: usize = 50;
/// The stages a secret's work can fail in: the `stage` label of the failure metric, closed so
/// its cardinality stays bounded. [`crate::secret::SecretError::stage`] names the first four;
/// the worker tells renewals and revocations apart.
pub const STAGES: [&str; 6] = ["auth", "fetch", "renew", "revoke", "write", "render"];
/// Shared status of the whole agent.
pub struct State {
    inner: Mutex<Inner>,
    /// The agent's ping responder; `None` until the agent registers one (and in tests).
    liveness: Mutex<Option<LivenessTx>>,
    /// For uptime on `/status` and the start-time metric.
    started_at: SystemTime,
}

struct Inner {
    /// In configuration order, so probe reasons name secrets in a stable order.
    secrets: Vec<Entry>,
    auth: AuthCounters,
}

struct Entry {
    status: SecretStatus,
    tasks: Tasks,
    /// Wakes the secret's running worker for a rotation now (SIGUSR1, `POST /rotate`);
    /// replaced when a reload restarts the worker, so the admin listener always reaches the
    /// current one.
    rotate: Option<Arc<Notify>>,
}

/// How many of a secret's tasks are running. A count, not a flag: on reload the old task of a
/// changed secret may report its exit after the new task reported its start.
#[derive(Default)]
struct Tasks {
    started: bool,
    running: u32,
}

impl Tasks {
    fn dead(&self) -> bool {
        self.started && self.running == 0
    }
}

impl State {
    pub fn new(secrets: Vec<SecretInfo>) -> Arc<State> {
        let secrets = secrets.into_iter().map(Entry::new).collect();
        Arc::new(State {
            inner: Mutex::new(Inner {
                secrets,
                auth: AuthCounters::default(),
            }),
            liveness: Mutex::new(None),
            started_at: crate::time::wall_now(),
        })
    }

    /// When this agent started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// Adds a secret, or updates the path and kind of a known one while keeping its status
    /// and history (a secret whose configuration changed on reload is still the same secret).
    pub fn add_secret(&self, info: SecretInfo) {
        let mut inner = self.lock();
        match inner
            .secrets
            .iter_mut()
            .find(|e| e.status.name == info.name)
        {
            Some(entry) => {
                entry.status.path = info.path;
                entry.status.kind = info.kind;
            }
            None => inner.secrets.push(Entry::new(info)),
        }
    }

    /// Forgets a secret removed from the configuration, so it no longer gates readiness.
    pub fn remove_secret(&self, name: &str) {
        self.lock().secrets.retain(|e| e.status.name != name);
    }

    /// The secret's file is another one now (SIGHUP changed its output): nothing is written
    /// there yet, so it is not ready until its worker writes.
    pub fn forget_credential(&self, name: &str) {
        self.update(name, |s| {
            s.written_at = None;
            s.output_set = None;
            s.expires_at = None;
            s.username = None;
            s.lease_id = None;
        });
    }

    /// Changes a secret's status in place. An unknown name is ignored: it can only be a secret
    /// removed on reload whose task has not stopped yet. A changed `expires_at` also moves
    /// `expiry_set_at`, so every writer keeps the lifetime bar right without knowing of it.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut SecretStatus)) {
        self.with_entry(name, |entry| {
            let before = entry.status.expires_at;
            f(&mut entry.status);
            if entry.status.expires_at != before {
                entry.status.expiry_set_at =
                    entry.status.expires_at.map(|_| crate::time::wall_now());
            }
        });
    }

    /// Declares the app-notification hooks a secret has (their kinds), so their counters exist
    /// at zero before the first notification; `increase()` needs a starting point.
    pub fn declare_hooks(&self, name: &str, hooks: &[&str]) {
        self.with_entry(name, |entry| {
            for hook in hooks {
                let by_hook = &mut entry.status.notifications_by_hook;
                by_hook.entry(hook.to_string()).or_default();
            }
        });
    }

    /// Registers the handle that wakes a secret's worker for a manual rotation, replacing the
    /// one of a worker that a reload stopped.
    pub fn set_rotate_handle(&self, name: &str, rotate: Arc<Notify>) {
        self.with_entry(name, |entry| entry.rotate = Some(rotate));
    }

    /// Asks the named secret's worker, or every worker when `name` is `None`, to issue a new
    /// credential now; returns the names woken, or `None` for an unknown name. The wake-up is
    /// a permit, so requests arriving while a rotation runs coalesce into one more.
    pub fn request_rotation(&self, name: Option<&str>) -> Option<Vec<String>> {
        let inner = self.lock();
        let mut woken = Vec::new();
        for entry in &inner.secrets {
            if name.is_some_and(|n| n != entry.status.name) {
                continue;
            }
            if let Some(rotate) = &entry.rotate {
                rotate.notify_one();
                woken.push(entry.status.name.clone());
            }
        }
        let known = name.is_none_or(|n| inner.secrets.iter().any(|e| e.status.name == n));
        known.then_some(woken)
    }

    /// Appends an event (timestamped now) and keeps the counters in step; see [`EventKind`].
    pub fn record(&self, name: &str, kind: EventKind, detail: impl Into<String>) {
        self.record_at(name, kind, detail, crate::time::wall_now());
    }

    /// [`State::record`] with an explicit time, for callers that already took one, and tests.
    pub fn record_at(
        &self,
        name: &str,
        kind: EventKind,
        detail: impl Into<String>,
        at: SystemTime,
    ) {
        self.record_event(name, Event::new(kind, detail, at));
    }

    /// Appends a fully built event; see [`EventKind`] for the counters it moves.
    pub fn record_event(&self, name: &str, event: Event) {
        self.with_entry(name, |entry| entry.status.apply(event));
    }

    /// Records a failure in `stage` (one of [`STAGES`]): counts it in total and by stage and
    /// keeps `detail` as the last error.
    pub fn record_failure(&self, name: &str, stage: &'static str, detail: impl Into<String>) {
        let mut event = Event::new(EventKind::Failed, detail, crate::time::wall_now());
        event.stage = Some(stage);
        self.record_event(name, event);
    }

    /// Records a new credential (`Issued` or `Rotated`) for `username` under `lease_id`.
    pub fn record_credential(
        &self,
        name: &str,
        kind: EventKind,
        username: Option<String>,
        lease_id: Option<String>,
        reason: &str,
    ) {
        let mut event = Event::new(kind, reason, crate::time::wall_now());
        event.username = username;
        event.lease_id = lease_id;
        self.record_event(name, event);
    }

    /// Records the revocation of `lease_id`, naming the user it belonged to when the history
    /// still holds the event that issued it.
    pub fn record_revoked(&self, name: &str, lease_id: &str) {
        self.record_revoke(name, lease_id, None);
    }

    /// Records the revocation of an old credential after a rotation: how it came about, and
    /// how long after the new credential's write (`waited`).
    pub fn record_retired(
        &self,
        name: &str,
        lease_id: &str,
        how: RevokeHow,
        waited: std::time::Duration,
    ) {
        self.record_revoke(name, lease_id, Some((how, waited)));
    }

    fn record_revoke(
        &self,
        name: &str,
        lease_id: &str,
        retired: Option<(RevokeHow, std::time::Duration)>,
    ) {
        self.with_entry(name, |entry| {
            let username = entry
                .status
                .history
                .iter()
                .rev()
                .find(|e| e.lease_id.as_deref() == Some(lease_id))
                .and_then(|e| e.username.clone());
            let now = crate::time::wall_now();
            let detail = match retired {
                None => "lease revoked".to_string(),
                Some((how, waited)) => {
                    let secs = waited.as_secs_f64();
                    *entry.status.revokes_by_how.entry(how.as_str()).or_default() += 1;
                    entry.status.last_revoke = Some(LastRevoke {
                        how,
                        drain_seconds: (secs * 10.0).round() / 10.0,
                        at: now,
                        username: username.clone(),
                    });
                    match how {
                        RevokeHow::Drained => format!("lease revoked: drained after {secs:.1} s"),
                        RevokeHow::Grace => format!("lease revoked at the grace ({secs:.1} s)"),
                        RevokeHow::CheckFailed => {
                            format!(
                                "lease revoked at the grace ({secs:.1} s): the drain check failed"
                            )
                        }
                    }
                }
            };
            let mut event = Event::new(EventKind::Revoked, detail, now);
            event.username = username;
            event.lease_id = Some(lease_id.to_string());
            entry.status.apply(event);
        });
    }

    /// Every secret's status, in configuration order.
    pub fn snapshot(&self) -> Vec<SecretStatus> {
        self.lock()
            .secrets
            .iter()
            .map(|e| e.status.clone())
            .collect()
    }

    /// One secret's status.
    pub fn get(&self, name: &str) -> Option<SecretStatus> {
        let inner = self.lock();
        inner
            .secrets
            .iter()
            .find(|e| e.status.name == name)
            .map(|e| e.status.clone())
    }

    /// Counts one auth-layer event (the agent maps `vault::AuthEvent`s to these).
    pub fn auth_event(&self, event: AuthCount) {
        let auth = &mut self.lock().auth;
        let counter = match event {
            AuthCount::Login => &mut auth.logins,
            AuthCount::LoginFailed => &mut auth.login_failures,
            AuthCount::Renewed => &mut auth.token_renewals,
            AuthCount::RenewFailed => &mut auth.token_renew_failures,
        };
        *counter += 1;
    }

    /// Records the outcome of one app-notification hook (`hook` is its kind, e.g. "exec").
    pub fn notify_result(&self, name: &str, hook: &str, ok: bool) {
        let (kind, outcome) = match ok {
            true => (EventKind::Notified, "succeeded"),
            false => (EventKind::NotifyFailed, "failed"),
        };
        self.with_entry(name, |entry| {
            let counts = entry
                .status
                .notifications_by_hook
                .entry(hook.to_string())
                .or_default();
            match ok {
                true => counts.ok += 1,
                false => counts.failed += 1,
            }
            let event = Event::new(
                kind,
                format!("{hook} hook {outcome}"),
                crate::time::wall_now(),
            );
            entry.status.apply(event);
        });
    }

    pub fn auth_counters(&self) -> AuthCounters {
        self.lock().auth
    }

    /// Readiness: every secret has a written credential that has not expired at `now`.
    /// The reason names the first secret that is not ready.
    pub fn ready(&self, now: SystemTime) -> Result<(), String> {
        self.lock()
            .secrets
            .iter()
            .try_for_each(|e| e.status.ready(now))
    }

    fn with_entry(&self, name: &str, f: impl FnOnce(&mut Entry)) {
        let mut inner = self.lock();
        match inner.secrets.iter_mut().find(|e| e.status.name == name) {
            Some(entry) => f(entry),
            None => tracing::debug!(secret = name, "status update for an unknown secret ignored"),
        }
    }

    /// A panic while holding the lock leaves plain counters and strings, still consistent
    /// enough to report; refusing to serve probes forever would be worse.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("secrets", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl Entry {
    fn new(info: SecretInfo) -> Entry {
        Entry {
            status: SecretStatus::new(info),
            tasks: Tasks::default(),
            rotate: None,
        }
    }
}
