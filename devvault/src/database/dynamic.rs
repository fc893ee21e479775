//! `database/roles/<name>` and `database/creds/<name>`: dynamic roles and the
//! users (with leases) issued from them.

use super::*;

pub fn role(b: &mut DbBackend, req: &Req, name: &str) -> ApiResult<Reply> {
    match req.op {
        Op::Read => {
            let r = b.roles.get(name).ok_or_else(ApiError::not_found)?;
            Ok(Reply::Logical(Logical::data(json!({
                "creation_statements": r.creation_statements,
                "credential_type": "password",
                "db_name": r.db_name,
                "default_ttl": util::secs(r.default_ttl),
                "max_ttl": util::secs(r.max_ttl),
                "renew_statements": r.renew_statements,
                "revocation_statements": r.revocation_statements,
                "rollback_statements": r.rollback_statements,
            }))))
        }
        Op::Delete => {
            b.roles.remove(name);
            Ok(Reply::NoContent)
        }
        Op::Update | Op::Create => {
            if b.static_roles.contains_key(name) {
                return Err(ApiError::bad_request(
                    "Role and Static Role names must be unique",
                ));
            }
            let d = &req.data;
            let mut r = b.roles.get(name).cloned().unwrap_or(DynRole {
                db_name: String::new(),
                creation_statements: Vec::new(),
                revocation_statements: Vec::new(),
                renew_statements: Vec::new(),
                rollback_statements: Vec::new(),
                default_ttl: Duration::ZERO,
                max_ttl: Duration::ZERO,
            });
            if let Some(v) = d.get("db_name").and_then(Value::as_str) {
                r.db_name = v.to_string();
            }
            if r.db_name.is_empty() {
                return Err(ApiError::bad_request("empty database name attribute"));
            }
            for (k, target) in [
                ("creation_statements", &mut r.creation_statements),
                ("revocation_statements", &mut r.revocation_statements),
                ("renew_statements", &mut r.renew_statements),
                ("rollback_statements", &mut r.rollback_statements),
            ] {
                if let Some(v) = d.get(k) {
                    *target = util::statement_list(v);
                }
            }
            if r.creation_statements.is_empty() {
                return Err(ApiError::bad_request("empty creation statements"));
            }
            if let Some(v) = dur_field(d, "default_ttl")? {
                r.default_ttl = v;
            }
            if let Some(v) = dur_field(d, "max_ttl")? {
                r.max_ttl = v;
            }
            if !r.max_ttl.is_zero() && r.default_ttl > r.max_ttl {
                return Err(ApiError::bad_request("ttl cannot be greater than max_ttl"));
            }
            b.roles.insert(name.to_string(), r);
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

pub async fn creds(state: &Arc<State>, req: &Req, mount: &str, name: &str) -> ApiResult<Reply> {
    let now = SystemTime::now();
    let caller = req.caller.clone().ok_or_else(ApiError::permission_denied)?;
    let (role, cfg, ttl, warnings) = {
        let mut core = state.core();
        let (sys_default, sys_max) = core
            .mounts
            .get(mount)
            .map(|m| (m.default_ttl(), m.max_ttl()))
            .ok_or_else(ApiError::unsupported_path)?;
        let b = backend(&mut core, mount)?;
        let role = b
            .roles
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("unknown role: {name}")))?;
        let cfg = b.configs.get(&role.db_name).cloned().ok_or_else(|| {
            ApiError::internal(&format!(
                "failed to find entry for connection with name: {:?}",
                role.db_name
            ))
        })?;
        if !cfg.allows(name) {
            return Err(ApiError::internal(&format!(
                "{name:?} is not an allowed role"
            )));
        }
        let (ttl, warnings) = calculate_ttl(
            &TtlInput {
                sys_default,
                sys_max,
                increment: Duration::ZERO,
                backend_ttl: role.default_ttl,
                period: Duration::ZERO,
                backend_max: role.max_ttl,
                explicit_max: Duration::ZERO,
                start: now,
            },
            now,
        )
        .map_err(ApiError::bad_request)?;
        (role, cfg, ttl, warnings)
    };
    let username = generate_username(&caller.display_name, name, now);
    let password = generate_password();
    let expiration = util::pg_expiration(now + ttl + Duration::from_secs(5));
    let stmts: Vec<String> = role
        .creation_statements
        .iter()
        .map(|s| render(s, &username, &password, &expiration))
        .collect();
    let spec = cfg.spec();
    state
        .pools
        .exec_tx(&spec, &stmts)
        .await
        .map_err(|e| ApiError::internal(&e.to_string()))?;
    let lease_id = format!("{mount}creds/{name}/{}", util::random_base62(24));
    let db = DbLease {
        mount: mount.to_string(),
        role: name.to_string(),
        username: username.clone(),
        db_name: role.db_name.clone(),
        conn: spec,
        revocation: role.revocation_statements.clone(),
        renew: role.renew_statements.clone(),
    };
    let orphaned = {
        let mut core = state.core();
        if core.tokens.live(&caller.id, SystemTime::now()).is_some() {
            core.leases.insert(Lease {
                id: lease_id.clone(),
                token: caller.id.clone(),
                issue_time: now,
                expire_time: now + ttl,
                last_renewal: None,
                renewable: true,
                db: db.clone(),
            });
            false
        } else {
            true
        }
    };
    if orphaned {
        // The token died while the user was being created: undo at once.
        run_jobs(
            state,
            vec![Job::RevokeDb {
                lease_id,
                lease: db,
                attempt: 0,
            }],
        )
        .await;
        return Err(ApiError::invalid_token(state.flavor));
    }
    state.wake.notify_one();
    Ok(Reply::Logical(Logical {
        data: Some(json!({ "password": password, "username": username })),
        lease_id,
        renewable: true,
        lease_duration: util::secs(ttl),
        warnings,
        ..Default::default()
    }))
}
