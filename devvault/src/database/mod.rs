//! Database secrets engine for PostgreSQL (`postgresql-database-plugin`):
//! connection configs, dynamic roles with real `CREATE ROLE`/`DROP ROLE`,
//! leases with `VALID UNTIL` renewal, and static roles whose passwords are
//! rotated on a period or cron schedule by the scheduler.
//!
//! This file holds the types and the `database/<sub>` dispatch; the endpoint
//! groups live in `connection`, `dynamic` and `static_roles`, the
//! PostgreSQL work over time (rotation, renewal, revocation, jobs) in `lifecycle`.

mod connection;
pub mod cron;
mod dynamic;
mod lifecycle;
pub mod pg;
mod static_roles;

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
use connection::config;
use cron::Cron;
use dynamic::{creds, role};
pub use lifecycle::{renew_user, revoke_user, rotate_static, run_jobs};
pub use pg::{ConnSpec, Pools};
use static_roles::{static_creds_data, static_role};

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

#[cfg(test)]
mod tests;
