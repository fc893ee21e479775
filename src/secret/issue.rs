//! Getting a credential: the secret's kind, the token to ask with, the read, and installing
//! what came back (file, state, hooks).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::error::{answered_for_the_mount, SecretError};
use super::{Call, Held, PendingRevoke, Retire, Worker, STATIC_SETTLE};
use crate::credential::{Credential, FieldValue, SecretKind, SecretValue};
use crate::lease::{Lease, Why};
use crate::state::{EventKind, RevokeHow};
use crate::time::to_system;
use crate::vault::{Backend, Envelope, Token, VaultError};

impl<B: Backend> Worker<B> {
    /// Runs a Vault call with the current token. A 403 is either a dead token or a policy
    /// denial; only a dead token (confirmed with `lookup-self`, since OpenBao and older Vault
    /// say just "permission denied") earns a new login and one more try.
    ///
    /// A [`Call::Fetch`] starts no request once SIGHUP has retired the worker: its successor
    /// fetches under the new settings, and a fetch from here (the retry after a new login)
    /// would hit Vault beside the successor's first one (simulator seed 50289).
    pub(super) async fn with_token<T, F, Fut>(
        &self,
        what: Call,
        call: F,
    ) -> Result<(T, Arc<Token>), SecretError>
    where
        F: Fn(SecretValue) -> Fut,
        Fut: std::future::Future<Output = Result<T, VaultError>>,
    {
        self.may_start(what)?;
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
        self.may_start(what)?;
        match call(fresh.secret().clone()).await {
            Ok(v) => Ok((v, fresh)),
            Err(e) if e.is_forbidden() => Err(SecretError::Denied(e)),
            Err(e) => Err(e.into()),
        }
    }

    fn may_start(&self, what: Call) -> Result<(), SecretError> {
        if what == Call::Fetch && *self.control.retire.borrow() != Retire::No {
            return Err(SecretError::Retired);
        }
        Ok(())
    }

    pub(super) async fn resolve_kind(&mut self) -> Result<SecretKind, SecretError> {
        if let Some(kind) = self.kind {
            if kind != SecretKind::KvV2 || self.read_path.contains("/data/") {
                return Ok(kind);
            }
        }
        let backend = self.backend.clone();
        let path = self.cfg.path.clone();
        let info = self
            .with_token(Call::Fetch, |t| {
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
    pub(super) async fn issue(&mut self, why: Option<Why>) -> Result<(), SecretError> {
        let kind = self.resolve_kind().await?;
        if why == Some(Why::TokenDeadline) {
            // The lease is ending with its token: a credential from the same token would die
            // with it too, so log in first, and re-issue only under a token that outlives
            // this one. Chasing the same token would re-issue ever faster as its end nears.
            if let Some(held) = &self.current {
                let old = held.token.clone();
                let mut fresh = self.backend.relogin(old.generation).await?;
                if fresh.same_as(&old) && !Arc::ptr_eq(&fresh, &old) && !knows_more(&fresh, &old) {
                    // Another read of the token file (or login) since found the same token.
                    // A new one may be there by now: look again, on this retry's backoff,
                    // rather than wait for the renewer's next planned login (seed 36862).
                    fresh = self.backend.relogin(fresh.generation).await?;
                }
                if knows_more(&fresh, &old) {
                    // The same Vault token, renewed since or renewable again (a policy that
                    // refused renew-self allows it now): the lease lives on with it, and what
                    // was taken for its final end is not (simulator seed 4902).
                    if let Some(held) = self.current.as_mut() {
                        held.token = fresh;
                    }
                    self.set_dies_with_login(false);
                    self.refresh_expiry();
                    return Ok(());
                }
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
            .with_token(Call::Fetch, |t| {
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
                    self.revoke(&lease_id, None).await;
                }
                return Err(e);
            }
        };
        if let Err(e) = self.write(&held.cred) {
            // Never leave a database user behind that nobody holds.
            if let Some(id) = &held.cred.lease_id {
                self.revoke(id, None).await;
            }
            return Err(e);
        }
        self.install(held, why);
        Ok(())
    }

    pub(super) fn install(&mut self, held: Held, why: Option<Why>) {
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
                let now = Instant::now();
                let grace_end = now + self.cfg.revoke_grace;
                // No need to revoke what dies by itself before the grace is over. A lease
                // whose renewal went unanswered may live longer than the agent knows
                // (simulator seed 2354).
                let dies_at = old.latest_end();
                match dies_at {
                    Some(d) if d <= grace_end => {}
                    _ => {
                        let watch = match (&self.drainer, &old.cred.username, &old.cred.password) {
                            (Some(d), Some(user), Some(pw)) => Some(d.watch(
                                id.clone(),
                                user.clone(),
                                pw.clone(),
                                self.cfg.revoke_grace,
                            )),
                            _ => None,
                        };
                        self.pending_revokes.push(PendingRevoke {
                            lease_id: id,
                            at: grace_end,
                            attempts: 0,
                            dies_at,
                            since: now,
                            how: Some(RevokeHow::Grace),
                            _watch: watch,
                        });
                    }
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
                file: self.cfg.output.path().display().to_string(),
            };
            let state = self.state.clone();
            let outcome: crate::notify::Outcome =
                Arc::new(move |secret, hook, ok| state.notify_result(secret, hook, ok));
            crate::notify::fire(&self.cfg.hooks, change, outcome);
        }
        self.current = Some(held);
    }

    pub(super) fn held_from(
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
}

/// Whether `fresh` is the same Vault token as `old`, seen later and living longer: renewed
/// since, or no longer at a final end.
pub(super) fn knows_more(fresh: &Arc<Token>, old: &Arc<Token>) -> bool {
    if !fresh.same_as(old) || Arc::ptr_eq(fresh, old) || fresh.is_dead() {
        return false;
    }
    let now = Instant::now();
    if fresh.is_expired(now) {
        return false;
    }
    match (fresh.expires_at(), old.expires_at()) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(f), Some(o)) => fresh.final_end().is_none() || f > o,
    }
}

/// Whether `fresh` is another token that lives past `old`'s end, so that a credential
/// issued under it outlives the one issued under `old`.
pub(super) fn outlives(fresh: &Token, old: &Token) -> bool {
    if fresh.same_as(old) || fresh.is_dead() {
        return false;
    }
    match (fresh.final_end(), old.expires_at()) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(f), Some(o)) => f.expires_at > o,
    }
}

pub(super) fn guess_from_path(path: &str) -> Option<SecretKind> {
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
pub(super) fn kv2_data_path(path: &str, mount: Option<&str>) -> String {
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
