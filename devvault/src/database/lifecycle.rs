//! The PostgreSQL side of credentials over time: static-role rotation, lease
//! renewal and revocation, and the background job runner.

use super::*;

/// Rotates a static role's password in PostgreSQL and records it. The role
/// must be marked `in_flight` by the caller; it is cleared here.
pub async fn rotate_static(state: &Arc<State>, mount: &str, name: &str) -> Result<(), String> {
    let plan = {
        let mut core = state.core();
        let b = backend(&mut core, mount).map_err(|_| "mount disappeared".to_string())?;
        let r = b
            .static_roles
            .get(name)
            .cloned()
            .ok_or_else(|| "role disappeared".to_string())?;
        let cfg = b.configs.get(&r.db_name).cloned();
        (r, cfg)
    };
    let (role, cfg) = plan;
    let finish = |ok: Option<String>| {
        let now = SystemTime::now();
        let mut core = state.core();
        if let Ok(b) = backend(&mut core, mount) {
            if let Some(r) = b.static_roles.get_mut(name) {
                r.in_flight = false;
                match ok {
                    Some(pw) => {
                        r.password = pw;
                        r.last_vault_rotation = Some(now);
                        r.next_rotation = r.compute_next(now);
                    }
                    // Retry failed rotations soon, like Vault's rotation queue.
                    None => r.next_rotation = now + Duration::from_secs(10),
                }
            }
        }
        drop(core);
        state.wake.notify_one();
    };
    let Some(cfg) = cfg else {
        finish(None);
        return Err(format!(
            "failed to find entry for connection with name: {:?}",
            role.db_name
        ));
    };
    let password = generate_password();
    // Like the PostgreSQL plugin, an empty list means its default ALTER ROLE; the role
    // itself keeps (and reads back) the empty list.
    let default = [DEFAULT_ROTATION.to_string()];
    let given: &[String] = if role.rotation_statements.is_empty() {
        &default
    } else {
        &role.rotation_statements
    };
    let stmts: Vec<String> = given
        .iter()
        .map(|s| render(s, &role.username, &password, ""))
        .collect();
    match state.pools.exec_tx(&cfg.spec(), &stmts).await {
        Ok(()) => {
            finish(Some(password));
            Ok(())
        }
        Err(e) => {
            tracing::warn!(role = name, error = %e, "static role rotation failed");
            finish(None);
            Err(e.to_string())
        }
    }
}

/// Extends a dynamic user's `VALID UNTIL` (lease renewal).
pub async fn renew_user(
    state: &Arc<State>,
    lease: &DbLease,
    expire: SystemTime,
) -> Result<(), pg::PgError> {
    let exp = util::pg_expiration(expire);
    let stmts: Vec<String> = if lease.renew.is_empty() {
        vec![render(DEFAULT_RENEW, &lease.username, "", &exp)]
    } else {
        lease
            .renew
            .iter()
            .map(|s| render(s, &lease.username, "", &exp))
            .collect()
    };
    state.pools.exec_tx(&lease.conn, &stmts).await
}

/// Drops a dynamic user: ends its sessions, then runs the role's revocation
/// statements or the robust default (`DROP OWNED` + `DROP ROLE IF EXISTS`).
pub async fn revoke_user(state: &Arc<State>, lease: &DbLease) -> Result<(), pg::PgError> {
    let pools = &state.pools;
    if !pools.role_exists(&lease.conn, &lease.username).await? {
        return Ok(());
    }
    // Block new logins first so a client cannot reconnect between the two steps.
    let quoted = lease.username.replace('"', "\"\"");
    pools
        .exec_tx(&lease.conn, &[format!("ALTER ROLE \"{quoted}\" NOLOGIN")])
        .await?;
    pools
        .terminate_sessions(&lease.conn, &lease.username)
        .await?;
    let stmts: Vec<String> = if lease.revocation.is_empty() {
        vec![
            format!("DROP OWNED BY \"{quoted}\""),
            format!("DROP ROLE IF EXISTS \"{quoted}\""),
        ]
    } else {
        lease
            .revocation
            .iter()
            .map(|s| render(s, &lease.username, "", ""))
            .collect()
    };
    pools.exec_tx(&lease.conn, &stmts).await
}

/// Runs background jobs; failed revocations are queued for retry with backoff.
pub async fn run_jobs(state: &Arc<State>, jobs: Vec<Job>) {
    for job in jobs {
        match job {
            Job::RevokeDb {
                lease_id,
                lease,
                attempt,
            } => {
                if let Err(e) = revoke_user(state, &lease).await {
                    tracing::warn!(lease_id = %lease_id, attempt, error = %e, "lease revocation failed; will retry");
                    if attempt < 12 {
                        let delay = Duration::from_secs((2u64 << attempt.min(6)).min(120));
                        state.core().retry.push((
                            Instant::now() + delay,
                            Job::RevokeDb {
                                lease_id,
                                lease,
                                attempt: attempt + 1,
                            },
                        ));
                        state.wake.notify_one();
                    }
                } else {
                    tracing::debug!(lease_id = %lease_id, "lease revoked");
                }
            }
            Job::RotateStatic { mount, role } => {
                if let Err(e) = rotate_static(state, &mount, &role).await {
                    tracing::warn!(role = %role, error = %e, "scheduled rotation failed");
                }
            }
        }
    }
}
