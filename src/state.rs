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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::Notify;

use crate::credential::SecretKind;

/// Events kept per secret: enough to see the last few rotations and failures on `/status`
/// without growing memory over months of uptime.
pub const HISTORY_LEN: usize = 50;
/// Longest event detail kept, in characters; details come from error messages of any size.
const DETAIL_MAX: usize = 300;
/// The stages a secret's work can fail in: the `stage` label of the failure metric, closed so
/// its cardinality stays bounded. [`crate::secret::SecretError::stage`] names the first four;
/// the worker tells renewals and revocations apart.
pub const STAGES: [&str; 6] = ["auth", "fetch", "renew", "revoke", "write", "render"];
/// How long `/health` waits for the agent's event loop to answer a ping.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the agent's liveness task sends its answer to one ping.
pub type LivenessReply = std::sync::mpsc::Sender<()>;
/// Registered with [`State::set_liveness`]; the probe thread sends pings through it.
pub type LivenessTx = tokio::sync::mpsc::Sender<LivenessReply>;
/// Handed to [`serve_liveness`], running on the agent's runtime.
pub type LivenessRx = tokio::sync::mpsc::Receiver<LivenessReply>;

/// A configured secret, as the agent knows it before anything is fetched.
#[derive(Debug, Clone)]
pub struct SecretInfo {
    pub name: String,
    pub path: String,
    pub kind: SecretKind,
}

/// One secret's status. Never holds a secret value.
#[derive(Debug, Clone, Serialize)]
pub struct SecretStatus {
    /// The configured name; the key every method uses.
    pub name: String,
    /// The Vault path it is read from.
    pub path: String,
    pub kind: SecretKind,
    /// The database user (not secret; it is in Vault's audit log and the database's too).
    pub username: Option<String>,
    /// Vault's lease id; not a bearer secret.
    pub lease_id: Option<String>,
    /// When the credential in the file stops working; readiness fails from then on.
    #[serde(serialize_with = "opt_time")]
    pub expires_at: Option<SystemTime>,
    pub renewable: bool,
    /// Last successful file write; `None` means the app has nothing to read yet.
    #[serde(serialize_with = "opt_time")]
    pub written_at: Option<SystemTime>,
    #[serde(serialize_with = "opt_time")]
    pub last_rotation: Option<SystemTime>,
    pub rotations: u64,
    pub renewals: u64,
    pub failures: u64,
    /// `failures` split by the stage that failed (one of [`STAGES`]); failures recorded
    /// without a stage are only in the total.
    pub failures_by_stage: BTreeMap<&'static str, u64>,
    /// App notifications (exec, signal, HTTP hooks) that succeeded and failed; a failed
    /// notification is not a credential failure, so it has its own counter.
    pub notifications: u64,
    pub notify_failures: u64,
    /// The same, per hook kind ("exec", "signal", "http").
    pub notifications_by_hook: BTreeMap<String, HookCounts>,
    /// When `expires_at` last changed (a new credential, a renewal): the start of the lifetime
    /// that the status page draws as a bar.
    #[serde(serialize_with = "opt_time")]
    pub expiry_set_at: Option<SystemTime>,
    pub last_error: Option<String>,
    /// The credential cannot outlive the Vault token that created it, and no newer token can
    /// be had: it is kept until its real end (`expires_at`), then the agent is not ready.
    pub dies_with_login: bool,
    /// What the secret's loop will do next, and when.
    pub next_action: Option<NextAction>,
    /// The most recent events, oldest first, at most [`HISTORY_LEN`].
    pub history: VecDeque<Event>,
}

/// The next thing a secret's loop plans to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextAction {
    pub what: String,
    #[serde(serialize_with = "time")]
    pub at: SystemTime,
}

/// Outcomes of one kind of app-notification hook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HookCounts {
    pub ok: u64,
    pub failed: u64,
}

/// One entry of a secret's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    #[serde(serialize_with = "time")]
    pub at: SystemTime,
    pub kind: EventKind,
    /// Why, or what went wrong; never a secret value.
    pub detail: String,
    /// For failures: which of [`STAGES`] failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<&'static str>,
    /// The database user the event is about (issued, rotated, revoked), kept apart from the
    /// detail so `/status` can hide it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The lease the event is about: lets a revocation find the user it ended. Never shown.
    #[serde(skip)]
    pub lease_id: Option<String>,
}

impl Event {
    pub fn new(kind: EventKind, detail: impl Into<String>, at: SystemTime) -> Event {
        Event {
            at,
            kind,
            detail: truncate(detail.into()),
            stage: None,
            username: None,
            lease_id: None,
        }
    }
}

/// What happened. [`State::record`] keeps the counters in step with these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A credential was obtained (the first, or one replacing a lost lease).
    Issued,
    /// The lease was extended. Bumps `renewals`.
    Renewed,
    /// A new credential replaced the previous one. Bumps `rotations`, sets `last_rotation`.
    Rotated,
    /// An old lease was revoked after its grace period.
    Revoked,
    /// The file was written. Sets `written_at`.
    Written,
    /// Something failed. Bumps `failures`, sets `last_error` to the detail.
    Failed,
    /// A hook told the app about a new credential. Bumps `notifications`.
    Notified,
    /// A hook failed to tell the app. Bumps `notify_failures`.
    NotifyFailed,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::Issued => "issued",
            EventKind::Renewed => "renewed",
            EventKind::Rotated => "rotated",
            EventKind::Revoked => "revoked",
            EventKind::Written => "written",
            EventKind::Failed => "failed",
            EventKind::Notified => "notified",
            EventKind::NotifyFailed => "notify_failed",
        })
    }
}

/// The auth layer's events that [`AuthCounters`] counts. Its own enum, so that `state` stays
/// below `vault`: the agent translates `vault::AuthEvent` into this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthCount {
    Login,
    LoginFailed,
    Renewed,
    RenewFailed,
}

/// Counts of the auth layer's events, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AuthCounters {
    pub logins: u64,
    pub login_failures: u64,
    pub token_renewals: u64,
    pub token_renew_failures: u64,
}

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
        self.with_entry(name, |entry| {
            let username = entry
                .status
                .history
                .iter()
                .rev()
                .find(|e| e.lease_id.as_deref() == Some(lease_id))
                .and_then(|e| e.username.clone());
            let mut event =
                Event::new(EventKind::Revoked, "lease revoked", crate::time::wall_now());
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

    /// Reports a secret's task as started (`true`) or stopped (`false`). Once a task has
    /// started, the secret fails liveness while none of its tasks runs. Prefer
    /// [`State::task_guard`], which also reports a task that ends by panicking.
    pub fn mark_task_alive(&self, name: &str, alive: bool) {
        self.with_entry(name, |entry| {
            let tasks = &mut entry.tasks;
            if alive {
                tasks.started = true;
                tasks.running += 1;
            } else {
                tasks.running = tasks.running.saturating_sub(1);
            }
        });
    }

    /// Marks the task alive now and stopped when the guard drops, however the task ends.
    pub fn task_guard(self: &Arc<Self>, name: &str) -> TaskGuard {
        self.mark_task_alive(name, true);
        TaskGuard {
            state: self.clone(),
            name: name.to_string(),
        }
    }

    /// Registers the agent's ping responder (see [`serve_liveness`]); replaces any earlier one.
    pub fn set_liveness(&self, tx: LivenessTx) {
        *self.liveness.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
    }

    /// Liveness: no secret's task has died, and the agent's event loop answers a ping within
    /// [`LIVENESS_TIMEOUT`]. Never depends on Vault. Without a registered responder only the
    /// task flags count. Blocks up to the timeout: call it from the probe thread, never from
    /// async code on the agent's runtime.
    pub fn alive(&self) -> Result<(), String> {
        self.alive_within(LIVENESS_TIMEOUT)
    }

    /// [`State::alive`] with an explicit wait.
    pub fn alive_within(&self, timeout: Duration) -> Result<(), String> {
        self.tasks_alive()?;
        self.event_loop_alive(timeout)
    }

    fn tasks_alive(&self) -> Result<(), String> {
        match self.lock().secrets.iter().find(|e| e.tasks.dead()) {
            Some(e) => Err(format!("secret {:?}: its task has stopped", e.status.name)),
            None => Ok(()),
        }
    }

    /// A ping costs nothing while idle: no timer ticks, the responder sleeps on its channel.
    fn event_loop_alive(&self, timeout: Duration) -> Result<(), String> {
        let Some(tx) = self
            .liveness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return Ok(());
        };
        let (reply_tx, reply_rx) = std::sync::mpsc::channel();
        match tx.try_send(reply_tx) {
            Ok(()) => {}
            // Earlier pings are still unanswered: the loop is stuck, not merely slow.
            Err(TrySendError::Full(_)) => {
                return Err("the agent's event loop is not answering pings".into())
            }
            Err(TrySendError::Closed(_)) => {
                return Err("the agent's liveness responder has stopped".into())
            }
        }
        match reply_rx.recv_timeout(timeout) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "the agent's event loop did not answer within {}",
                humantime::format_duration(timeout)
            )),
            Err(RecvTimeoutError::Disconnected) => {
                Err("the agent's liveness responder has stopped".into())
            }
        }
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

/// Answers every ping until the sender side is dropped. Spawn it on the agent's runtime: if
/// that runtime is blocked or dead, pings go unanswered and `/health` fails.
pub async fn serve_liveness(mut rx: LivenessRx) {
    while let Some(reply) = rx.recv().await {
        // The prober may have given up waiting; that is its business.
        let _ = reply.send(());
    }
}

/// Reports a task stopped when dropped; see [`State::task_guard`].
pub struct TaskGuard {
    state: Arc<State>,
    name: String,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.state.mark_task_alive(&self.name, false);
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

impl SecretStatus {
    fn new(info: SecretInfo) -> SecretStatus {
        SecretStatus {
            name: info.name,
            path: info.path,
            kind: info.kind,
            username: None,
            lease_id: None,
            expires_at: None,
            renewable: false,
            written_at: None,
            last_rotation: None,
            rotations: 0,
            renewals: 0,
            failures: 0,
            failures_by_stage: BTreeMap::new(),
            notifications: 0,
            notify_failures: 0,
            notifications_by_hook: BTreeMap::new(),
            expiry_set_at: None,
            last_error: None,
            dies_with_login: false,
            next_action: None,
            history: VecDeque::with_capacity(HISTORY_LEN),
        }
    }

    fn apply(&mut self, event: Event) {
        match event.kind {
            EventKind::Renewed => self.renewals += 1,
            EventKind::Rotated => {
                self.rotations += 1;
                self.last_rotation = Some(event.at);
            }
            EventKind::Written => self.written_at = Some(event.at),
            EventKind::Failed => {
                self.failures += 1;
                if let Some(stage) = event.stage {
                    *self.failures_by_stage.entry(stage).or_default() += 1;
                }
                self.last_error = Some(event.detail.clone());
            }
            EventKind::Notified => self.notifications += 1,
            EventKind::NotifyFailed => self.notify_failures += 1,
            EventKind::Issued | EventKind::Revoked => {}
        }
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(event);
    }

    fn ready(&self, now: SystemTime) -> Result<(), String> {
        if self.written_at.is_none() {
            return Err(format!("secret {:?}: no credential written yet", self.name));
        }
        match self.expires_at {
            Some(at) if at <= now => Err(format!(
                "secret {:?}: credential expired at {}",
                self.name,
                crate::time::rfc3339(at).unwrap_or_else(|| "an unprintable time".into())
            )),
            _ => Ok(()),
        }
    }
}

fn truncate(mut detail: String) -> String {
    if let Some((cut, _)) = detail.char_indices().nth(DETAIL_MAX) {
        detail.truncate(cut);
        detail.push('…');
    }
    detail
}

fn time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    opt_time(&Some(*t), s)
}

/// RFC 3339 UTC for endpoints; serde's default (seconds and nanos since the epoch) is
/// unreadable on a status page.
fn opt_time<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t.and_then(crate::time::rfc3339) {
        Some(text) => s.serialize_str(&text),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn info(name: &str) -> SecretInfo {
        SecretInfo {
            name: name.into(),
            path: format!("database/creds/{name}"),
            kind: SecretKind::Dynamic,
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn written(state: &State, name: &str, expires: Option<SystemTime>) {
        state.record_at(name, EventKind::Written, "db.json", at(1_000));
        state.update(name, |s| s.expires_at = expires);
    }

    #[test]
    fn ready_requires_every_secret_written() {
        let state = State::new(vec![info("db"), info("cache")]);
        assert_eq!(
            state.ready(at(2_000)).unwrap_err(),
            "secret \"db\": no credential written yet"
        );
        written(&state, "db", None);
        assert_eq!(
            state.ready(at(2_000)).unwrap_err(),
            "secret \"cache\": no credential written yet"
        );
        written(&state, "cache", Some(at(3_000)));
        assert_eq!(state.ready(at(2_000)), Ok(()));
    }

    #[test]
    fn ready_fails_once_expired() {
        let state = State::new(vec![info("db")]);
        written(&state, "db", Some(at(1_795_654_923)));
        assert_eq!(state.ready(at(1_795_654_922)), Ok(()));
        assert_eq!(
            state.ready(at(1_795_654_923)).unwrap_err(),
            "secret \"db\": credential expired at 2026-11-26T01:02:03Z"
        );
    }

    #[test]
    fn removed_secret_no_longer_gates_readiness() {
        let state = State::new(vec![info("db"), info("old")]);
        written(&state, "db", None);
        state.remove_secret("old");
        assert_eq!(state.ready(at(2_000)), Ok(()));
        state.update("old", |s| s.failures = 99);
        assert_eq!(state.snapshot().len(), 1);
    }

    #[test]
    fn add_secret_keeps_status_of_a_known_name() {
        let state = State::new(vec![info("db")]);
        state.record("db", EventKind::Renewed, "1h");
        state.add_secret(SecretInfo {
            kind: SecretKind::Static,
            ..info("db")
        });
        state.add_secret(info("new"));
        let snap = state.snapshot();
        assert_eq!((snap[0].renewals, snap[0].kind), (1, SecretKind::Static));
        assert_eq!(snap[1].name, "new");
    }

    #[test]
    fn record_keeps_counters_in_step() {
        let state = State::new(vec![info("db")]);
        state.record_at("db", EventKind::Issued, "v-1", at(10));
        state.record_at("db", EventKind::Written, "", at(11));
        state.record_at("db", EventKind::Renewed, "", at(12));
        state.record_at("db", EventKind::Rotated, "v-2", at(13));
        state.record_at("db", EventKind::Failed, "renew: 503", at(14));
        state.record_at("db", EventKind::Revoked, "lease", at(15));
        let s = state.get("db").unwrap();
        assert_eq!((s.renewals, s.rotations, s.failures), (1, 1, 1));
        assert_eq!(s.written_at, Some(at(11)));
        assert_eq!(s.last_rotation, Some(at(13)));
        assert_eq!(s.last_error.as_deref(), Some("renew: 503"));
        let kinds: Vec<EventKind> = s.history.iter().map(|e| e.kind).collect();
        use EventKind::*;
        assert_eq!(kinds, [Issued, Written, Renewed, Rotated, Failed, Revoked]);
    }

    #[test]
    fn notify_results_have_their_own_counters() {
        let state = State::new(vec![info("db")]);
        state.notify_result("db", "exec", true);
        state.notify_result("db", "http", false);
        let s = state.get("db").unwrap();
        assert_eq!((s.notifications, s.notify_failures, s.failures), (1, 1, 0));
        assert_eq!(s.history[1].detail, "http hook failed");
        assert_eq!(s.history[1].kind, EventKind::NotifyFailed);
    }

    #[test]
    fn failures_are_counted_by_stage() {
        let state = State::new(vec![info("db")]);
        state.record_failure("db", "renew", "renew: HTTP 500");
        state.record_failure("db", "renew", "renew: HTTP 502");
        state.record_failure("db", "auth", "auth: HTTP 400");
        state.record("db", EventKind::Failed, "no stage");
        let s = state.get("db").unwrap();
        assert_eq!(s.failures, 4);
        assert_eq!(s.failures_by_stage.get("renew"), Some(&2));
        assert_eq!(s.failures_by_stage.get("auth"), Some(&1));
        assert_eq!(s.history[2].stage, Some("auth"));
        assert_eq!(s.last_error.as_deref(), Some("no stage"));
    }

    #[test]
    fn revocation_names_the_user_its_lease_was_issued_to() {
        let state = State::new(vec![info("db")]);
        state.record_credential(
            "db",
            EventKind::Issued,
            Some("v-1".into()),
            Some("l/1".into()),
            "first",
        );
        state.record_credential(
            "db",
            EventKind::Rotated,
            Some("v-2".into()),
            Some("l/2".into()),
            "cadence",
        );
        state.record_revoked("db", "l/1");
        state.record_revoked("db", "l/unknown");
        let s = state.get("db").unwrap();
        assert_eq!(s.history[2].username.as_deref(), Some("v-1"));
        assert_eq!(s.history[3].username, None);
        assert_eq!(s.rotations, 1);
        let json = serde_json::to_string(&s.history).unwrap();
        assert!(
            !json.contains("l/1") && !json.contains("lease_id"),
            "{json}"
        );
    }

    #[test]
    fn rotation_requests_reach_the_current_handle() {
        let state = State::new(vec![info("db"), info("kv")]);
        assert_eq!(state.request_rotation(Some("nope")), None);
        assert_eq!(
            state.request_rotation(None),
            Some(vec![]),
            "no worker running yet"
        );
        let old = Arc::new(Notify::new());
        state.set_rotate_handle("db", old.clone());
        // A reload restarts the worker with a new handle.
        let new = Arc::new(Notify::new());
        state.set_rotate_handle("db", new.clone());
        state.set_rotate_handle("kv", Arc::new(Notify::new()));
        assert_eq!(
            state.request_rotation(Some("db")),
            Some(vec!["db".to_string()])
        );
        assert_eq!(
            state.request_rotation(None),
            Some(vec!["db".to_string(), "kv".to_string()])
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let woken = |n: &Notify| {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_millis(1), n.notified())
                    .await
                    .is_ok()
            })
        };
        assert!(woken(&new));
        assert!(!woken(&old), "the stopped worker's handle is dropped");
        state.remove_secret("db");
        assert_eq!(state.request_rotation(Some("db")), None);
    }

    #[test]
    fn a_new_expiry_starts_a_new_lifetime() {
        let state = State::new(vec![info("db")]);
        state.update("db", |s| s.renewable = true);
        assert_eq!(state.get("db").unwrap().expiry_set_at, None);
        state.update("db", |s| s.expires_at = Some(at(5_000)));
        let first = state.get("db").unwrap().expiry_set_at.unwrap();
        state.update("db", |s| s.renewals += 0);
        assert_eq!(state.get("db").unwrap().expiry_set_at, Some(first));
        std::thread::sleep(Duration::from_millis(2));
        state.update("db", |s| s.expires_at = Some(at(6_000)));
        assert!(state.get("db").unwrap().expiry_set_at.unwrap() > first);
    }

    #[test]
    fn declared_hooks_start_at_zero_and_count_apart() {
        let state = State::new(vec![info("db")]);
        state.declare_hooks("db", &["exec", "http"]);
        state.notify_result("db", "http", false);
        state.declare_hooks("db", &["exec", "http"]);
        let s = state.get("db").unwrap();
        assert_eq!(s.notifications_by_hook["exec"], HookCounts::default());
        assert_eq!(
            s.notifications_by_hook["http"],
            HookCounts { ok: 0, failed: 1 }
        );
    }

    #[test]
    fn history_is_bounded_and_details_truncated() {
        let state = State::new(vec![info("db")]);
        for i in 0..(HISTORY_LEN + 7) {
            state.record_at("db", EventKind::Renewed, format!("#{i}"), at(i as u64));
        }
        state.record("db", EventKind::Failed, "é".repeat(DETAIL_MAX * 2));
        let s = state.get("db").unwrap();
        assert_eq!(s.history.len(), HISTORY_LEN);
        assert_eq!(s.history[0].detail, "#8");
        assert_eq!(
            s.history.back().unwrap().detail.chars().count(),
            DETAIL_MAX + 1
        );
        assert_eq!(s.renewals, (HISTORY_LEN + 7) as u64);
    }

    #[test]
    fn serializes_times_as_rfc3339_and_no_secret_fields() {
        let state = State::new(vec![info("db")]);
        state.update("db", |s| {
            s.expires_at = Some(at(1_795_654_923));
            s.next_action = Some(NextAction {
                what: "renew".into(),
                at: at(1_795_654_000),
            });
        });
        state.record_at("db", EventKind::Issued, "v-1", at(1_795_650_000));
        let json = serde_json::to_value(state.snapshot()).unwrap();
        assert_eq!(json[0]["expires_at"], "2026-11-26T01:02:03Z");
        assert_eq!(json[0]["written_at"], serde_json::Value::Null);
        assert_eq!(json[0]["next_action"]["at"], "2026-11-26T00:46:40Z");
        assert_eq!(json[0]["history"][0]["kind"], "issued");
        assert_eq!(json[0]["kind"], "dynamic");
        let keys: Vec<&String> = json[0].as_object().unwrap().keys().collect();
        assert!(
            !keys
                .iter()
                .any(|k| k.contains("password") || k.contains("token")),
            "{keys:?}"
        );
    }

    #[test]
    fn task_liveness_counts_overlapping_tasks() {
        let state = State::new(vec![info("db")]);
        assert_eq!(state.alive(), Ok(()), "not started yet is not dead");
        state.mark_task_alive("db", true);
        // Reload: the new task starts before the old one reports its exit.
        state.mark_task_alive("db", true);
        state.mark_task_alive("db", false);
        assert_eq!(state.alive(), Ok(()));
        state.mark_task_alive("db", false);
        assert_eq!(
            state.alive().unwrap_err(),
            "secret \"db\": its task has stopped"
        );
    }

    #[test]
    fn task_guard_reports_a_panicking_task() {
        let state = State::new(vec![info("db")]);
        let s = state.clone();
        let joined = std::thread::spawn(move || {
            let _guard = s.task_guard("db");
            assert_eq!(s.alive(), Ok(()));
            panic!("task failed");
        })
        .join();
        assert!(joined.is_err());
        assert!(state.alive().is_err());
    }

    #[test]
    fn auth_events_are_counted() {
        let state = State::new(vec![]);
        state.auth_event(AuthCount::Login);
        state.auth_event(AuthCount::Login);
        state.auth_event(AuthCount::RenewFailed);
        let c = state.auth_counters();
        assert_eq!(
            (c.logins, c.token_renew_failures, c.login_failures),
            (2, 1, 0)
        );
    }

    #[test]
    fn liveness_answers_while_the_runtime_runs() {
        let state = State::new(vec![info("db")]);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        state.set_liveness(tx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let result = rt.block_on(async {
            tokio::spawn(serve_liveness(rx));
            // The probe blocks, as on the HTTP thread; the runtime answers meanwhile.
            let s = state.clone();
            tokio::task::spawn_blocking(move || s.alive_within(Duration::from_secs(30)))
                .await
                .unwrap()
        });
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn liveness_fails_when_the_loop_does_not_answer() {
        let state = State::new(vec![info("db")]);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        state.set_liveness(tx);
        // Nobody serves `rx`: the first ping times out, the next finds the queue full.
        let err = state.alive_within(Duration::from_millis(1)).unwrap_err();
        assert!(err.contains("did not answer"), "{err}");
        let err = state.alive_within(Duration::from_millis(1)).unwrap_err();
        assert!(err.contains("not answering"), "{err}");
        drop(rx);
        let err = state.alive_within(Duration::from_millis(1)).unwrap_err();
        assert!(err.contains("stopped"), "{err}");
    }
}
