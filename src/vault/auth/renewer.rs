//! The renewer task: keeps the token alive, and logs in again before a final expiry.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::token::TokenLife;
use super::{fmt_in, Auth, AuthError, AuthEvent, Token};
use crate::config::AuthMethod;
use crate::lease::{self, Backoff};
use crate::time::round;
use crate::vault::client::VaultError;

impl Auth {
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

    pub(super) async fn renew(&self, token: &Arc<Token>) -> Result<(), AuthError> {
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
}
