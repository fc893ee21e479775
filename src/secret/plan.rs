//! Choosing the next action and when, from the held credential, the backoff and the
//! requests from outside; doing it; logging a failure.

use std::time::Duration;

use tokio::time::Instant;

use super::error::{failure_stage, SecretError};
use super::{Action, Worker, DENIED_RETRY};
use crate::credential::SecretKind;
use crate::lease::{self, Next, Why};
use crate::time::to_system;
use crate::vault::Backend;

impl<B: Backend> Worker<B> {
    /// The wait before retrying after `e`. A policy denial is no passing fault: it waits at
    /// least a minute, so a missing grant costs Vault little.
    pub(super) fn backoff_for(&mut self, e: &SecretError) -> Duration {
        let wait = self.backoff.next_delay(e.retry_after(), &mut self.rng);
        match e {
            SecretError::Denied(_) => wait.max(DENIED_RETRY),
            _ => wait,
        }
    }

    /// Keeps `expires_at` (file, state) equal to the credential's real end after something
    /// other than a renewal moved it: the token renewed, found final, or found dead.
    pub(super) fn refresh_expiry(&mut self) {
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
    pub(super) fn set_dies_with_login(&self, bound: bool) {
        let name = &self.cfg.name;
        let was = self.state.get(name).is_some_and(|s| s.dies_with_login);
        if bound && !was {
            tracing::warn!(secret = %name, "the credential cannot outlive its Vault token and no newer token can be had (auth=token: put a new token in the token file); keeping it until it ends, then /ready fails");
        }
        self.state.update(name, |s| s.dies_with_login = bound);
    }

    pub(super) fn next_action(&mut self, now: Instant) -> (Action, Instant) {
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

    pub(super) fn planned(&mut self, now: Instant) -> (Action, Instant) {
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

    pub(super) async fn perform(&mut self, action: Action) -> Result<(), SecretError> {
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

    pub(super) fn log_failure(&self, action: Action, e: &SecretError, wait: Duration) {
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
