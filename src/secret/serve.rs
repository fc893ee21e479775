//! The main loop, and what a worker does once SIGHUP retired it: hand over to its
//! successor, wait out the grace, revoke.

use tokio::time::Instant;

use super::error::SecretError;
use super::output::sleep_until_some;
use super::{Action, HandOver, PendingRevoke, Retire, Worker};
use crate::time::to_system;
use crate::vault::Backend;

impl<B: Backend> Worker<B> {
    /// The main loop: runs the plan until SIGTERM ([`Retire::No`]) or a SIGHUP retires it.
    pub(super) async fn serve(&mut self) -> Retire {
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
                _ = sleep_until_some(self.sweep_at) => {
                    self.sweep();
                    continue;
                }
                report = crate::drain::next_report(&mut self.drainer) => {
                    self.on_drain_report(report);
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
                // Nothing was asked of Vault, and the name's state is the successor's now.
                Err(SecretError::Retired) => {}
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
    pub(super) fn handed_over(&self) -> bool {
        *self.control.written.borrow() > self.control.id
    }

    /// Replaced by SIGHUP: keep the credential in the file alive (renewals, due revokes)
    /// until the new worker has written its own.
    pub(super) async fn hand_over(&mut self) -> HandOver {
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
                report = crate::drain::next_report(&mut self.drainer) => {
                    self.on_drain_report(report);
                    continue;
                }
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
    pub(super) async fn grace_unless_readded(&mut self) -> bool {
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
    pub(super) async fn revoke_after_grace(&mut self) {
        let mut shutdown = self.control.shutdown.clone();
        if !*shutdown.borrow() {
            tokio::select! {
                biased;
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(self.cfg.revoke_grace) => {}
            }
        }
        self.revoke_retrying(false).await;
    }

    /// Retired, the grace over: revokes everything this worker holds. A revoke that fails
    /// for a passing fault is retried with backoff while its lease lives, as a running
    /// worker's are: trying once left the credential alive to its TTL after a 429 or a blip
    /// (simulator seeds 1197 and 3875). SIGTERM ends the retries.
    ///
    /// With `readd` (the secret was removed), a later SIGHUP that configures the name again
    /// stops the retries of the current credential, which the file still holds: it returns
    /// `true`, and the worker hands the credential over instead (simulator seed 1006).
    pub(super) async fn revoke_retrying(&mut self, readd: bool) -> bool {
        let mut shutdown = self.control.shutdown.clone();
        let mut retire = self.control.retire.clone();
        let now = Instant::now();
        for p in &mut self.pending_revokes {
            p.at = now;
        }
        // The current credential stays `current` until Vault has revoked it (or it died), so
        // that a re-add can still hand it over.
        let held = self.current.as_ref().and_then(|h| {
            let lease_id = h.cred.lease_id.clone()?;
            Some(PendingRevoke {
                lease_id,
                at: now,
                attempts: 0,
                dies_at: h.latest_end(),
                since: now,
                how: None,
                _watch: None,
            })
        });
        let held_id = held.as_ref().map(|p| p.lease_id.clone());
        self.pending_revokes.extend(held);
        loop {
            if readd && *retire.borrow_and_update() == Retire::Replaced {
                self.pending_revokes
                    .retain(|p| Some(&p.lease_id) != held_id.as_ref());
                return true;
            }
            // The re-add is checked again before the current credential's revoke is sent:
            // other revokes before it may have taken long enough for a SIGHUP to come.
            let readded = retire.clone();
            let held = held_id.clone();
            self.revoke_due_sparing(|id| {
                readd && Some(id) == held.as_deref() && *readded.borrow() == Retire::Replaced
            })
            .await;
            if !self
                .pending_revokes
                .iter()
                .any(|p| Some(&p.lease_id) == held_id.as_ref())
            {
                self.current = None;
            }
            let Some(next) = self.pending_revokes.iter().map(|p| p.at).min() else {
                return false;
            };
            if *shutdown.borrow() {
                return false;
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => return false,
                changed = retire.changed(), if readd => if changed.is_err() { return false },
                _ = tokio::time::sleep_until(next) => {}
            }
        }
    }
}
