//! What [`State`](super::State) records and shows: each secret's status and history, the
//! events that change them, and the auth counters.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use super::HISTORY_LEN;
use crate::credential::SecretKind;

/// Longest event detail kept, in characters; details come from error messages of any size.
pub(super) const DETAIL_MAX: usize = 300;

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
    /// `failures` split by the stage that failed (one of [`STAGES`](super::STAGES)); failures recorded
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
    /// With `--output-dir`: the set as last written.
    pub output_set: Option<OutputSet>,
    /// The `--drain-check` URL (it holds no secret), when one is configured.
    pub drain_check: Option<String>,
    /// Old credentials revoked after a rotation, by how (every one of [`REVOKE_HOWS`]).
    pub revokes_by_how: BTreeMap<&'static str, u64>,
    /// The last old credential revoked after a rotation: how, and how long it took.
    pub last_revoke: Option<LastRevoke>,
    /// The most recent events, oldest first, at most [`HISTORY_LEN`].
    pub history: VecDeque<Event>,
}

/// How an old credential came to be revoked after a rotation: a metric label and a
/// `/status` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeHow {
    /// The drain check found no session of the old user left.
    Drained,
    /// The grace ran out first: sessions remained, or no drain check is configured.
    Grace,
    /// The drain check failed (unreachable, login or TLS refused), so the grace decided.
    CheckFailed,
}

/// Every [`RevokeHow`], as labels: the metric shows each, zeros included.
pub const REVOKE_HOWS: [&str; 3] = ["drained", "grace", "check_failed"];

impl RevokeHow {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeHow::Drained => "drained",
            RevokeHow::Grace => "grace",
            RevokeHow::CheckFailed => "check_failed",
        }
    }
}

/// The last old credential revoked after a rotation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastRevoke {
    pub how: RevokeHow,
    /// From the new credential's write to the revoke: how long the app took to leave the old
    /// one (when drained), or the grace.
    pub drain_seconds: f64,
    #[serde(serialize_with = "time")]
    pub at: SystemTime,
    /// The old user (hidden with `--status-hide-usernames`).
    pub username: Option<String>,
}

/// The next thing a secret's loop plans to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextAction {
    pub what: String,
    #[serde(serialize_with = "time")]
    pub at: SystemTime,
}

/// An `--output-dir` set: where it is, what it holds, and which generation is current. File
/// names only: their content never leaves the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputSet {
    pub dir: String,
    pub files: Vec<String>,
    /// The generation directory `..data` names; readers see it change on every swap.
    pub generation: Option<String>,
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
    /// For failures: which of [`STAGES`](super::STAGES) failed.
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

/// What happened. [`crate::state::State::record`] keeps the counters in step with these.
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

impl SecretStatus {
    pub(super) fn new(info: SecretInfo) -> SecretStatus {
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
            output_set: None,
            drain_check: None,
            revokes_by_how: REVOKE_HOWS.iter().map(|h| (*h, 0)).collect(),
            last_revoke: None,
            history: VecDeque::with_capacity(HISTORY_LEN),
        }
    }

    pub(super) fn apply(&mut self, event: Event) {
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

    pub(super) fn ready(&self, now: SystemTime) -> Result<(), String> {
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
