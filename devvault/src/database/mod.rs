//! Database secrets engine for PostgreSQL (`postgresql-database-plugin`):
//! connection configs, dynamic roles with real `CREATE ROLE`/`DROP ROLE`,
//! leases with `VALID UNTIL` renewal, and static roles whose passwords are
//! rotated on a period or cron schedule by the scheduler.

pub mod cron;
pub mod pg;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use serde_json::{json, Map, Value};

use crate::acl::Op;
use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply, Req};
use crate::flavor::Flavor;
use crate::job::{DbLease, Job};
use crate::leases::{calculate_ttl, Lease, TtlInput};
use crate::state::{Backend, Core, State};
use crate::util;
use cron::Cron;
pub use pg::{ConnSpec, Pools};

const PLUGIN: &str = "postgresql-database-plugin";
const DEFAULT_ROTATION: &str = "ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}';";
const DEFAULT_RENEW: &str = "ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';";

/// `database/config/<name>`.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub plugin_name: String,
    pub connection_url: String,
    pub username: String,
    pub password: String,
    pub allowed_roles: Vec<String>,
    pub verify_connection: bool,
    pub password_policy: String,
    pub root_rotation_statements: Vec<String>,
}

impl DbConfig {
    /// The admin connection with placeholders filled in.
    pub fn spec(&self) -> ConnSpec {
        let url = self
            .connection_url
            .replace("{{username}}", &url_escape(&self.username))
            .replace("{{password}}", &url_escape(&self.password));
        ConnSpec {
            url,
            username: self.username.clone(),
            password: self.password.clone(),
        }
    }

    fn allows(&self, role: &str) -> bool {
        self.allowed_roles.iter().any(|r| r == "*" || r == role)
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `database/roles/<name>`.
#[derive(Debug, Clone)]
pub struct DynRole {
    pub db_name: String,
    pub creation_statements: Vec<String>,
    pub revocation_statements: Vec<String>,
    pub renew_statements: Vec<String>,
    pub rollback_statements: Vec<String>,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

/// `database/static-roles/<name>`.
#[derive(Debug, Clone)]
pub struct StaticRole {
    pub db_name: String,
    pub username: String,
    pub rotation_statements: Vec<String>,
    pub rotation_period: Duration,
    pub rotation_schedule: String,
    pub rotation_window: Duration,
    pub skip_import_rotation: bool,
    pub password: String,
    pub last_vault_rotation: Option<SystemTime>,
    pub next_rotation: SystemTime,
    /// A rotation task is running; the scheduler must not start another.
    pub in_flight: bool,
}

impl StaticRole {
    fn compute_next(&self, from: SystemTime) -> SystemTime {
        if !self.rotation_period.is_zero() {
            return from + self.rotation_period;
        }
        Cron::parse(&self.rotation_schedule)
            .ok()
            .and_then(|c| c.next_after(from))
            .unwrap_or(from + Duration::from_secs(86_400))
    }

    /// Seconds until the next rotation, rounded, never negative.
    fn ttl(&self, now: SystemTime) -> i64 {
        self.next_rotation
            .duration_since(now)
            .map(|d| d.as_secs_f64().round() as i64)
            .unwrap_or(0)
    }
}

/// One database mount.
#[derive(Debug, Default)]
pub struct DbBackend {
    pub configs: BTreeMap<String, DbConfig>,
    pub roles: BTreeMap<String, DynRole>,
    pub static_roles: BTreeMap<String, StaticRole>,
}

impl DbBackend {
    /// Static roles due for rotation; marks them in flight.
    pub fn due_rotations(&mut self, now: SystemTime) -> Vec<String> {
        let mut out = Vec::new();
        for (name, r) in self.static_roles.iter_mut() {
            if !r.in_flight && r.next_rotation <= now {
                r.in_flight = true;
                out.push(name.clone());
            }
        }
        out
    }

    /// Earliest pending rotation.
    pub fn next_rotation(&self) -> Option<SystemTime> {
        self.static_roles
            .values()
            .filter(|r| !r.in_flight)
            .map(|r| r.next_rotation)
            .min()
    }
}

/// Vault's default password policy: 20 chars of `[a-zA-Z0-9-]` with at least
/// one lowercase, uppercase, digit and dash.
pub fn generate_password() -> String {
    const SET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-";
    let mut rng = rand::rng();
    loop {
        let p: String = (0..20)
            .map(|_| SET[rng.random_range(0..SET.len())] as char)
            .collect();
        if p.bytes().any(|b| b.is_ascii_lowercase())
            && p.bytes().any(|b| b.is_ascii_uppercase())
            && p.bytes().any(|b| b.is_ascii_digit())
            && p.contains('-')
        {
            return p;
        }
    }
}

/// The PostgreSQL plugin's default username template:
/// `v-{{display_name|truncate 8}}-{{role|truncate 8}}-{{random 20}}-{{unix}}`, max 63.
pub fn generate_username(display_name: &str, role: &str, now: SystemTime) -> String {
    let t8 = |s: &str| s.chars().take(8).collect::<String>();
    let rand: String = util::random_base62(20);
    let mut u = format!(
        "v-{}-{}-{}-{}",
        t8(display_name),
        t8(role),
        rand,
        util::unix_secs(now)
    );
    u.truncate(63);
    u
}

fn render(stmt: &str, name: &str, password: &str, expiration: &str) -> String {
    let mut s = stmt.to_string();
    for (k, v) in [
        ("name", name),
        ("username", name),
        ("password", password),
        ("expiration", expiration),
    ] {
        s = s
            .replace(&format!("{{{{{k}}}}}"), v)
            .replace(&format!("{{{{ {k} }}}}"), v);
    }
    s
}

fn backend<'a>(core: &'a mut Core, mount: &str) -> ApiResult<&'a mut DbBackend> {
    match core.mounts.get_mut(mount).map(|m| &mut m.backend) {
        Some(Backend::Database(b)) => Ok(b),
        _ => Err(ApiError::unsupported_path()),
    }
}

fn split(sub: &str) -> (&str, &str) {
    match sub.find('/') {
        Some(i) => (&sub[..i], &sub[i + 1..]),
        None => (sub, ""),
    }
}

fn keys_reply<'a>(keys: impl Iterator<Item = &'a String>) -> ApiResult<Reply> {
    let keys: Vec<&String> = keys.collect();
    if keys.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Reply::Logical(Logical::data(json!({ "keys": keys }))))
}

/// Dispatches `database/<sub>`.
pub async fn handle(state: &Arc<State>, req: &mut Req, mount: &str, sub: &str) -> ApiResult<Reply> {
    let (kind, name) = split(sub);
    let name = name.trim_end_matches('/').to_string();
    let write = matches!(req.op, Op::Update | Op::Create);
    if req.op == Op::List && name.is_empty() {
        let mut core = state.core();
        let b = backend(&mut core, mount)?;
        return match kind {
            "config" => keys_reply(b.configs.keys()),
            "roles" => keys_reply(b.roles.keys()),
            "static-roles" => keys_reply(b.static_roles.keys()),
            _ => Err(ApiError::unsupported_path()),
        };
    }
    if name.is_empty() {
        return Err(ApiError::unsupported_path());
    }
    match kind {
        "config" => config(state, req, mount, &name).await,
        "roles" => {
            let mut core = state.core();
            role(backend(&mut core, mount)?, req, &name)
        }
        "creds" if req.op == Op::Read => creds(state, req, mount, &name).await,
        "static-roles" => static_role(state, req, mount, &name).await,
        "static-creds" if req.op == Op::Read => {
            let mut core = state.core();
            let flavor = core.flavor;
            let b = backend(&mut core, mount)?;
            let r = b
                .static_roles
                .get(&name)
                .ok_or_else(|| ApiError::bad_request(format!("unknown role: {name}")))?;
            Ok(Reply::Logical(Logical::data(static_creds_data(
                r,
                flavor == Flavor::OpenBao,
            ))))
        }
        "rotate-role" if write => {
            {
                let mut core = state.core();
                let b = backend(&mut core, mount)?;
                let r = b
                    .static_roles
                    .get_mut(&name)
                    .ok_or_else(|| ApiError::bad_request("no static role found for role name"))?;
                r.in_flight = true;
            }
            rotate_static(state, mount, &name).await.map_err(|e| {
                ApiError::internal(&format!(
                    "unable to finish rotating credentials; retries will continue in the background but it is also safe to retry manually: {e}"
                ))
            })?;
            Ok(Reply::NoContent)
        }
        "reset" if write => {
            let mut core = state.core();
            let b = backend(&mut core, mount)?;
            if !b.configs.contains_key(&name) {
                return Err(ApiError::bad_request(format!(
                    "failed to find entry for connection with name: {name:?}"
                )));
            }
            Ok(Reply::NoContent)
        }
        "rotate-root" if write => Err(ApiError::bad_request(
            "devvault does not support rotate-root",
        )),
        "creds" | "static-creds" | "rotate-role" | "reset" | "rotate-root" => {
            Err(ApiError::unsupported_operation())
        }
        _ => Err(ApiError::unsupported_path()),
    }
}

fn bool_field(d: &Map<String, Value>, k: &str) -> ApiResult<Option<bool>> {
    d.get(k)
        .map(util::parse_bool)
        .transpose()
        .map_err(ApiError::bad_request)
}

fn dur_field(d: &Map<String, Value>, k: &str) -> ApiResult<Option<Duration>> {
    d.get(k)
        .map(util::parse_duration)
        .transpose()
        .map_err(ApiError::bad_request)
}

async fn config(state: &Arc<State>, req: &Req, mount: &str, name: &str) -> ApiResult<Reply> {
    match req.op {
        Op::Read => {
            let mut core = state.core();
            let b = backend(&mut core, mount)?;
            let c = b.configs.get(name).ok_or_else(ApiError::not_found)?;
            // Like Vault, the password is never returned.
            let mut data = json!({
                "allowed_roles": c.allowed_roles,
                "connection_details": {
                    "connection_url": c.connection_url,
                    "username": c.username,
                },
                "password_policy": c.password_policy,
                "plugin_name": c.plugin_name,
                "plugin_version": "",
                "root_credentials_rotate_statements": c.root_rotation_statements,
                "verify_connection": c.verify_connection,
            });
            // OpenBao 2.7 does not echo verify_connection back.
            if state.flavor == Flavor::OpenBao {
                if let Value::Object(m) = &mut data {
                    m.remove("verify_connection");
                }
            }
            Ok(Reply::Logical(Logical::data(data)))
        }
        Op::Delete => {
            let mut core = state.core();
            let b = backend(&mut core, mount)?;
            if let Some(c) = b.configs.remove(name) {
                state.pools.forget(&c.spec());
            }
            Ok(Reply::NoContent)
        }
        Op::Update | Op::Create => {
            let d = &req.data;
            let existing = {
                let mut core = state.core();
                backend(&mut core, mount)?.configs.get(name).cloned()
            };
            let mut c = existing.clone().unwrap_or(DbConfig {
                plugin_name: String::new(),
                connection_url: String::new(),
                username: String::new(),
                password: String::new(),
                allowed_roles: Vec::new(),
                verify_connection: true,
                password_policy: String::new(),
                root_rotation_statements: Vec::new(),
            });
            let s = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
            if let Some(v) = s("plugin_name") {
                c.plugin_name = v;
            }
            if c.plugin_name.is_empty() {
                return Err(ApiError::bad_request("empty plugin name"));
            }
            if c.plugin_name != PLUGIN {
                return Err(ApiError::bad_request(format!(
                    "error creating database object: devvault supports only {PLUGIN}, not {:?}",
                    c.plugin_name
                )));
            }
            if let Some(v) = s("connection_url") {
                c.connection_url = v;
            }
            if c.connection_url.is_empty() {
                return Err(ApiError::bad_request(
                    "error creating database object: connection_url cannot be empty",
                ));
            }
            if let Some(v) = s("username") {
                c.username = v;
            }
            if let Some(v) = s("password") {
                c.password = v;
            }
            if let Some(v) = d.get("allowed_roles") {
                c.allowed_roles = util::comma_list(v);
            }
            if let Some(v) = s("password_policy") {
                c.password_policy = v;
            }
            if let Some(v) = d.get("root_rotation_statements") {
                c.root_rotation_statements = util::statement_list(v);
            }
            c.verify_connection = bool_field(d, "verify_connection")?.unwrap_or(true);
            if c.verify_connection {
                state.pools.ping(&c.spec()).await.map_err(|e| {
                    ApiError::bad_request(format!(
                        "error creating database object: error verifying - ping: {e}"
                    ))
                })?;
            }
            if let Some(old) = existing {
                state.pools.forget(&old.spec());
            }
            let mut core = state.core();
            backend(&mut core, mount)?
                .configs
                .insert(name.to_string(), c);
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn role(b: &mut DbBackend, req: &Req, name: &str) -> ApiResult<Reply> {
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

async fn creds(state: &Arc<State>, req: &Req, mount: &str, name: &str) -> ApiResult<Reply> {
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

fn static_creds_data(r: &StaticRole, openbao: bool) -> Value {
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
    if !r.rotation_period.is_zero() || openbao {
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
    Value::Object(m)
}

async fn static_role(state: &Arc<State>, req: &Req, mount: &str, name: &str) -> ApiResult<Reply> {
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
            if !r.rotation_period.is_zero() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy_holds() {
        for _ in 0..50 {
            let p = generate_password();
            assert_eq!(p.len(), 20);
            assert!(p.contains('-'));
        }
    }

    #[test]
    fn username_shape() {
        let u = generate_username("approle", "app-readonly-role", SystemTime::now());
        assert!(u.starts_with("v-approle-app-read-"), "{u}");
        assert!(u.len() <= 63);
    }

    #[test]
    fn statements_render() {
        assert_eq!(
            render(
                "CREATE ROLE \"{{name}}\" PASSWORD '{{ password }}' VALID UNTIL '{{expiration}}'",
                "u",
                "p",
                "e"
            ),
            "CREATE ROLE \"u\" PASSWORD 'p' VALID UNTIL 'e'"
        );
    }
}
