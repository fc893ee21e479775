//! `database/static-roles/<name>` and the data `database/static-creds/<name>` answers.

use super::*;

pub fn static_creds_data(r: &StaticRole, openbao: bool) -> Value {
    let now = SystemTime::now();
    let mut m = Map::new();
    m.insert("username".into(), json!(r.username));
    m.insert("password".into(), json!(r.password));
    m.insert("ttl".into(), json!(r.ttl(now)));
    match r.last_vault_rotation {
        Some(t) => {
            m.insert("last_vault_rotation".into(), json!(util::rfc3339_nano(t)));
        }
        None if openbao => {
            m.insert("last_vault_rotation".into(), json!("0001-01-01T00:00:00Z"));
        }
        None => {}
    }
    // OpenBao's static-creds name the period even when the role rotates on a schedule.
    insert_rotation(&mut m, r, openbao);
    Value::Object(m)
}

/// The role's rotation: its period, or else its schedule (and window, when set).
/// `period_anyway` names the period even when it is zero.
fn insert_rotation(m: &mut Map<String, Value>, r: &StaticRole, period_anyway: bool) {
    if !r.rotation_period.is_zero() || period_anyway {
        m.insert(
            "rotation_period".into(),
            json!(util::secs(r.rotation_period)),
        );
    } else {
        m.insert("rotation_schedule".into(), json!(r.rotation_schedule));
        if !r.rotation_window.is_zero() {
            m.insert(
                "rotation_window".into(),
                json!(util::secs(r.rotation_window)),
            );
        }
    }
}

pub async fn static_role(
    state: &Arc<State>,
    req: &Req,
    mount: &str,
    name: &str,
) -> ApiResult<Reply> {
    match req.op {
        Op::Read => {
            let mut core = state.core();
            let b = backend(&mut core, mount)?;
            let r = b.static_roles.get(name).ok_or_else(ApiError::not_found)?;
            let mut m = Map::new();
            m.insert("credential_type".into(), json!("password"));
            m.insert("db_name".into(), json!(r.db_name));
            m.insert("rotation_statements".into(), json!(r.rotation_statements));
            m.insert("username".into(), json!(r.username));
            if let Some(t) = r.last_vault_rotation {
                m.insert("last_vault_rotation".into(), json!(util::rfc3339_nano(t)));
            }
            // OpenBao 2.7 has no skip_import_rotation and reports the time to the next
            // rotation only through static-creds.
            if state.flavor == Flavor::Vault {
                m.insert("skip_import_rotation".into(), json!(r.skip_import_rotation));
                m.insert("ttl".into(), json!(r.ttl(SystemTime::now())));
            }
            insert_rotation(&mut m, r, false);
            Ok(Reply::Logical(Logical::data(Value::Object(m))))
        }
        Op::Delete => {
            let mut core = state.core();
            backend(&mut core, mount)?.static_roles.remove(name);
            Ok(Reply::NoContent)
        }
        Op::Update | Op::Create => {
            let created = write_static_role(state, req, mount, name)?;
            state.wake.notify_one();
            if created {
                if let Err(e) = rotate_static(state, mount, name).await {
                    let mut core = state.core();
                    if let Ok(b) = backend(&mut core, mount) {
                        b.static_roles.remove(name);
                    }
                    return Err(ApiError::internal(&format!(
                        "error setting credentials: {e}"
                    )));
                }
            }
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// Validates and stores a static role; returns true when it is new and must
/// be rotated right away (no `skip_import_rotation`).
fn write_static_role(state: &Arc<State>, req: &Req, mount: &str, name: &str) -> ApiResult<bool> {
    let d = &req.data;
    let now = SystemTime::now();
    let mut core = state.core();
    let b = backend(&mut core, mount)?;
    if b.roles.contains_key(name) {
        return Err(ApiError::bad_request(
            "Role and Static Role names must be unique",
        ));
    }
    let existing = b.static_roles.get(name).cloned();
    let is_new = existing.is_none();
    let mut r = existing.unwrap_or(StaticRole {
        db_name: String::new(),
        username: String::new(),
        rotation_statements: Vec::new(),
        rotation_period: Duration::ZERO,
        rotation_schedule: String::new(),
        rotation_window: Duration::ZERO,
        skip_import_rotation: false,
        password: String::new(),
        last_vault_rotation: None,
        next_rotation: now,
        in_flight: false,
    });
    if let Some(v) = d.get("db_name").and_then(Value::as_str) {
        r.db_name = v.to_string();
    }
    if r.db_name.is_empty() {
        return Err(ApiError::bad_request("empty database name attribute"));
    }
    if !b.configs.contains_key(&r.db_name) {
        return Err(ApiError::bad_request(format!(
            "failed to find entry for connection with name: {:?}",
            r.db_name
        )));
    }
    if let Some(v) = d.get("username").and_then(Value::as_str) {
        if !is_new && v != r.username {
            return Err(ApiError::bad_request(
                "cannot update static account username",
            ));
        }
        r.username = v.to_string();
    }
    if r.username.is_empty() {
        return Err(ApiError::bad_request(
            "username is a required field to create a static account",
        ));
    }
    if let Some(v) = d.get("rotation_statements") {
        r.rotation_statements = util::statement_list(v);
    }
    let period = dur_field(d, "rotation_period")?;
    let schedule = d
        .get("rotation_schedule")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (period, schedule) {
        (Some(p), Some(_)) if !p.is_zero() => {
            return Err(ApiError::bad_request(
                "mutually exclusive fields rotation_period and rotation_schedule were both specified; only one of them can be provided",
            ))
        }
        (Some(p), _) if !p.is_zero() => {
            if p < Duration::from_secs(5) {
                return Err(ApiError::bad_request("rotation_period must be 5 seconds or more"));
            }
            r.rotation_period = p;
            r.rotation_schedule.clear();
            r.rotation_window = Duration::ZERO;
        }
        (_, Some(s)) => {
            Cron::parse(s).map_err(|e| ApiError::bad_request(format!("could not parse rotation_schedule: {e}")))?;
            r.rotation_schedule = s.to_string();
            r.rotation_period = Duration::ZERO;
        }
        _ if is_new => {
            return Err(ApiError::bad_request(
                "one of rotation_schedule or rotation_period must be provided to create a static account",
            ))
        }
        _ => {}
    }
    if let Some(w) = dur_field(d, "rotation_window")? {
        if !w.is_zero() {
            if r.rotation_schedule.is_empty() {
                return Err(ApiError::bad_request(
                    "rotation_window is invalid with use of rotation_period",
                ));
            }
            if w < Duration::from_secs(3600) {
                return Err(ApiError::bad_request(
                    "rotation_window must be 3600 seconds or more",
                ));
            }
            r.rotation_window = w;
        }
    }
    if is_new {
        r.skip_import_rotation = bool_field(d, "skip_import_rotation")?.unwrap_or(false);
        if let Some(p) = d.get("password").and_then(Value::as_str) {
            r.password = p.to_string();
        }
    }
    let rotate_now = is_new && !r.skip_import_rotation;
    let base = r.last_vault_rotation.unwrap_or(now);
    r.next_rotation = r.compute_next(base);
    if rotate_now {
        // The synchronous import rotation below owns this role until it finishes.
        r.in_flight = true;
    }
    b.static_roles.insert(name.to_string(), r);
    Ok(rotate_now)
}
