//! Revoking old leases when their grace ends, and everything on shutdown.

use std::time::Duration;

use tokio::time::Instant;

use super::error::is_transient;
use super::{Call, Worker};
use crate::drain::DrainOutcome;
use crate::lease::Backoff;
use crate::state::RevokeHow;
use crate::vault::Backend;

impl<B: Backend> Worker<B> {
    pub(super) async fn revoke_due(&mut self) {
        self.revoke_due_sparing(|_| false).await;
    }

    /// [`Worker::revoke_due`], except the leases `spared` names when their turn comes: one
    /// revoke can take the whole request timeout, and the answer to `spared` may change
    /// meanwhile (simulator seed 69233). A spared lease stays pending, due as it was.
    pub(super) async fn revoke_due_sparing(&mut self, spared: impl Fn(&str) -> bool) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) =
            self.pending_revokes.drain(..).partition(|p| p.at <= now);
        self.pending_revokes = later;
        for mut p in due {
            if spared(&p.lease_id) {
                self.pending_revokes.push(p);
                continue;
            }
            let waited = Instant::now().saturating_duration_since(p.since);
            if self
                .revoke(&p.lease_id, p.how.map(|how| (how, waited)))
                .await
            {
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
    pub(super) async fn revoke(
        &self,
        lease_id: &str,
        retired: Option<(RevokeHow, Duration)>,
    ) -> bool {
        let backend = self.backend.clone();
        let id = lease_id.to_string();
        let result = self
            .with_token(Call::Upkeep, |t| {
                let backend = backend.clone();
                let id = id.clone();
                async move { backend.revoke_lease(&t, &id).await }
            })
            .await;
        match result {
            Ok(_) => {
                match retired {
                    Some((how, waited)) => {
                        tracing::info!(
                            secret = %self.cfg.name,
                            lease_id,
                            how = how.as_str(),
                            after = %humantime::format_duration(crate::time::round(waited)),
                            "revoked old credential"
                        );
                        self.state
                            .record_retired(&self.cfg.name, lease_id, how, waited);
                    }
                    None => {
                        tracing::info!(secret = %self.cfg.name, lease_id, "revoked old credential");
                        self.state.record_revoked(&self.cfg.name, lease_id);
                    }
                }
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
    pub(super) async fn shutdown(&mut self) {
        if self.revoke_on_exit {
            self.revoke_all().await;
        }
    }

    pub(super) async fn revoke_all(&mut self) {
        let mut ids: Vec<String> = self.pending_revokes.drain(..).map(|p| p.lease_id).collect();
        if let Some(id) = self.current.as_ref().and_then(|h| h.cred.lease_id.clone()) {
            ids.push(id);
        }
        for id in ids {
            self.revoke(&id, None).await;
        }
    }

    /// A drain watch's news: the old user has left (revoke now), or the check failed (the
    /// grace decides, and the revoke says why).
    pub(super) fn on_drain_report(&mut self, report: crate::drain::Report) {
        let Some(p) = self
            .pending_revokes
            .iter_mut()
            .find(|p| p.lease_id == report.lease_id)
        else {
            return;
        };
        match report.outcome {
            DrainOutcome::Drained(after) => {
                tracing::info!(
                    secret = %self.cfg.name,
                    lease_id = %p.lease_id,
                    after = %humantime::format_duration(crate::time::round(after)),
                    "old credential drained: its user has no session left; revoking it now"
                );
                p.how = Some(RevokeHow::Drained);
                p.at = p.at.min(Instant::now());
            }
            DrainOutcome::CheckFailed(_) => p.how = Some(RevokeHow::CheckFailed),
            DrainOutcome::Grace => {}
        }
    }
}
