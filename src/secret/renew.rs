//! Keeping a held credential: renewing its lease, re-reading an unleased secret, asking
//! Vault to rotate a static role.

use std::time::Duration;

use tokio::time::Instant;

use super::error::SecretError;
use super::{Call, Worker, STATIC_RECHECK};
use crate::credential::SecretKind;
use crate::lease::Why;
use crate::state::EventKind;
use crate::time::to_system;
use crate::vault::Backend;

impl<B: Backend> Worker<B> {
    pub(super) async fn renew(&mut self) -> Result<(), SecretError> {
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
            .with_token(Call::Upkeep, |t| {
                let backend = backend.clone();
                let id = id.clone();
                async move { backend.renew_lease(&t, &id, asked).await }
            })
            .await;
        let name = self.cfg.name.clone();
        if let Err(SecretError::Vault(e)) = &result {
            if e.may_have_been_applied() {
                if let Some(l) = self.current.as_mut().and_then(|h| h.lease.as_mut()) {
                    l.renewal_unanswered(sent, asked);
                }
            }
        }
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
    pub(super) async fn reread(&mut self) -> Result<(), SecretError> {
        let kind = self.resolve_kind().await?;
        let sent = Instant::now();
        let backend = self.backend.clone();
        let path = self.read_path.clone();
        let (env, token) = self
            .with_token(Call::Fetch, |t| {
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
    pub(super) async fn rotate_static(&mut self) -> Result<(), SecretError> {
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
            .with_token(Call::Fetch, |t| {
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
                // Should that read fail too, the next one comes when its backoff allows, not
                // at the refresh planned for the old password, which may be Vault's own
                // rotation an hour away (simulator seed 9312).
                if let Some(held) = self.current.as_mut() {
                    held.refresh_at = Some(Instant::now());
                }
                self.reread().await
            }
            Err(e) => Err(e),
        }
    }
}
