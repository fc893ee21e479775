//! AppRole auth (`auth/<mount>/role/*`, `login`): role ids, secret ids with
//! TTL and use limits, login → orphan token with `metadata.role_name`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use super::{login, str_field, LoginGrant, TokenParams};
use crate::acl::Op;
use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply, Req};
use crate::flavor::Flavor;
use crate::state::{Backend, Core};
use crate::util;

const INVALID_CREDS: &str = "invalid role or secret ID";

/// One issued secret id.
#[derive(Debug, Clone)]
pub struct SecretId {
    pub accessor: String,
    /// Remaining uses; 0 = unlimited.
    pub num_uses: i64,
    pub ttl: Duration,
    pub creation_time: SystemTime,
    pub expire: Option<SystemTime>,
    pub metadata: BTreeMap<String, String>,
}

/// An AppRole role.
#[derive(Debug, Clone)]
pub struct Role {
    pub role_id: String,
    pub bind_secret_id: bool,
    pub secret_id_num_uses: i64,
    pub secret_id_ttl: Duration,
    pub token: TokenParams,
    pub secret_ids: HashMap<String, SecretId>,
}

/// An AppRole mount.
#[derive(Debug, Default)]
pub struct Approle {
    roles: BTreeMap<String, Role>,
}

impl Approle {
    /// Drops expired secret ids.
    pub fn purge(&mut self, now: SystemTime) {
        for r in self.roles.values_mut() {
            r.secret_ids.retain(|_, s| s.expire.is_none_or(|t| t > now));
        }
    }

    fn by_role_id(&self, role_id: &str) -> Option<String> {
        self.roles
            .iter()
            .find(|(_, r)| r.role_id == role_id)
            .map(|(n, _)| n.clone())
    }
}

fn mount_state<'a>(core: &'a mut Core, mount: &str) -> ApiResult<&'a mut Approle> {
    match core.auth_mounts.get_mut(mount).map(|m| &mut m.backend) {
        Some(Backend::Approle(a)) => Ok(a),
        _ => Err(ApiError::unsupported_path()),
    }
}

/// Dispatches `auth/<mount>/<sub>`.
pub fn handle(core: &mut Core, req: &mut Req, mount: &str, sub: &str) -> ApiResult<Reply> {
    let write = matches!(req.op, Op::Update | Op::Create);
    if sub == "login" {
        return if write {
            do_login(core, req, mount)
        } else {
            Err(ApiError::unsupported_operation())
        };
    }
    if sub == "role/" || sub == "role" {
        if req.op != Op::List {
            return Err(ApiError::unsupported_operation());
        }
        let a = mount_state(core, mount)?;
        let keys: Vec<&String> = a.roles.keys().collect();
        if keys.is_empty() {
            return Err(ApiError::not_found());
        }
        return Ok(Reply::Logical(Logical::data(json!({ "keys": keys }))));
    }
    let Some(rest) = sub.strip_prefix("role/") else {
        return Err(ApiError::unsupported_path());
    };
    let (name, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let name = name.to_string();
    let flavor = core.flavor;
    let a = mount_state(core, mount)?;
    match tail {
        "" => role(a, req, &name, flavor),
        "role-id" => role_id(a, req, &name),
        "secret-id" | "custom-secret-id" | "secret-id/" => {
            secret_id(a, req, &name, tail == "custom-secret-id")
        }
        "secret-id/lookup"
        | "secret-id/destroy"
        | "secret-id-accessor/lookup"
        | "secret-id-accessor/destroy"
            if write =>
        {
            secret_id_manage(a, req, &name, tail)
        }
        _ => Err(ApiError::unsupported_path()),
    }
}

fn role(a: &mut Approle, req: &Req, name: &str, flavor: Flavor) -> ApiResult<Reply> {
    match req.op {
        Op::Read => {
            let r = a.roles.get(name).ok_or_else(ApiError::not_found)?;
            let mut m = Map::new();
            m.insert("bind_secret_id".into(), json!(r.bind_secret_id));
            m.insert("local_secret_ids".into(), json!(false));
            // OpenBao keeps an unset list as nil.
            m.insert(
                "secret_id_bound_cidrs".into(),
                match flavor {
                    Flavor::Vault => json!([]),
                    Flavor::OpenBao => Value::Null,
                },
            );
            m.insert("secret_id_num_uses".into(), json!(r.secret_id_num_uses));
            m.insert("secret_id_ttl".into(), json!(util::secs(r.secret_id_ttl)));
            r.token.populate(&mut m, flavor);
            if !r.token.period.is_zero() {
                m.insert("period".into(), json!(util::secs(r.token.period)));
            }
            Ok(Reply::Logical(Logical::data(Value::Object(m))))
        }
        Op::Update | Op::Create => {
            let d = &req.data;
            let r = a.roles.entry(name.to_string()).or_insert_with(|| Role {
                role_id: util::uuid(),
                bind_secret_id: true,
                secret_id_num_uses: 0,
                secret_id_ttl: Duration::ZERO,
                token: TokenParams::default(),
                secret_ids: HashMap::new(),
            });
            if let Some(v) = d.get("bind_secret_id") {
                r.bind_secret_id = util::parse_bool(v).map_err(ApiError::bad_request)?;
            }
            if let Some(v) = d.get("secret_id_num_uses") {
                r.secret_id_num_uses = util::parse_int(v).map_err(ApiError::bad_request)?;
                if r.secret_id_num_uses < 0 {
                    return Err(ApiError::bad_request(
                        "secret_id_num_uses cannot be negative",
                    ));
                }
            }
            if let Some(v) = d.get("secret_id_ttl") {
                r.secret_id_ttl = util::parse_duration(v).map_err(ApiError::bad_request)?;
            }
            if let Some(v) = d.get("role_id").and_then(Value::as_str) {
                r.role_id = v.to_string();
            }
            r.token.update(d)?;
            Ok(Reply::NoContent)
        }
        Op::Delete => {
            a.roles.remove(name);
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn role_id(a: &mut Approle, req: &Req, name: &str) -> ApiResult<Reply> {
    let r = a.roles.get_mut(name).ok_or_else(ApiError::not_found)?;
    match req.op {
        Op::Read => Ok(Reply::Logical(Logical::data(
            json!({ "role_id": r.role_id }),
        ))),
        Op::Update | Op::Create => {
            let id = str_field(&req.data, "role_id");
            if id.is_empty() {
                return Err(ApiError::bad_request("missing role_id"));
            }
            r.role_id = id.to_string();
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn secret_id(a: &mut Approle, req: &Req, name: &str, custom: bool) -> ApiResult<Reply> {
    let r = a
        .roles
        .get_mut(name)
        .ok_or_else(|| ApiError::bad_request(format!("role {name:?} does not exist")))?;
    match req.op {
        Op::List => {
            let keys: Vec<&String> = r.secret_ids.values().map(|s| &s.accessor).collect();
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Reply::Logical(Logical::data(json!({ "keys": keys }))))
        }
        Op::Update | Op::Create => {
            let d = &req.data;
            let metadata: BTreeMap<String, String> = match d.get("metadata") {
                Some(Value::String(s)) if !s.is_empty() => serde_json::from_str(s)
                    .map_err(|_| ApiError::bad_request("failed to parse metadata: invalid JSON"))?,
                Some(Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
                _ => BTreeMap::new(),
            };
            let ttl = match d.get("ttl") {
                Some(v) => util::parse_duration(v).map_err(ApiError::bad_request)?,
                None => r.secret_id_ttl,
            };
            let num_uses = match d.get("num_uses") {
                Some(v) => util::parse_int(v).map_err(ApiError::bad_request)?,
                None => r.secret_id_num_uses,
            };
            let secret = if custom {
                let s = str_field(d, "secret_id");
                if s.is_empty() {
                    return Err(ApiError::bad_request("missing secret_id"));
                }
                s.to_string()
            } else {
                util::uuid()
            };
            let now = SystemTime::now();
            let accessor = util::uuid();
            r.secret_ids.insert(
                secret.clone(),
                SecretId {
                    accessor: accessor.clone(),
                    num_uses,
                    ttl,
                    creation_time: now,
                    expire: if ttl.is_zero() { None } else { Some(now + ttl) },
                    metadata,
                },
            );
            Ok(Reply::Logical(Logical::data(json!({
                "secret_id": secret,
                "secret_id_accessor": accessor,
                "secret_id_num_uses": num_uses,
                "secret_id_ttl": util::secs(ttl),
            }))))
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn secret_id_lookup_data(s: &SecretId) -> Value {
    json!({
        "cidr_list": [],
        "creation_time": util::rfc3339_nano(s.creation_time),
        "expiration_time": s.expire.map(util::rfc3339_nano).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "last_updated_time": util::rfc3339_nano(s.creation_time),
        "metadata": s.metadata,
        "secret_id_accessor": s.accessor,
        "secret_id_num_uses": s.num_uses,
        "secret_id_ttl": util::secs(s.ttl),
        "token_bound_cidrs": [],
    })
}

fn secret_id_manage(a: &mut Approle, req: &Req, name: &str, tail: &str) -> ApiResult<Reply> {
    let r = a
        .roles
        .get_mut(name)
        .ok_or_else(|| ApiError::bad_request(format!("role {name:?} does not exist")))?;
    let by_accessor = tail.starts_with("secret-id-accessor");
    let key = if by_accessor {
        let acc = str_field(&req.data, "secret_id_accessor");
        r.secret_ids
            .iter()
            .find(|(_, s)| s.accessor == acc)
            .map(|(k, _)| k.clone())
    } else {
        let s = str_field(&req.data, "secret_id").to_string();
        r.secret_ids.contains_key(&s).then_some(s)
    };
    if tail.ends_with("destroy") {
        if let Some(k) = key {
            r.secret_ids.remove(&k);
        }
        return Ok(Reply::NoContent);
    }
    match key.and_then(|k| r.secret_ids.get(&k)) {
        Some(s) => Ok(Reply::Logical(Logical::data(secret_id_lookup_data(s)))),
        None if by_accessor => Err(ApiError::bad_request(
            "failed to find accessor entry for secret_id_accessor",
        )),
        None => Ok(Reply::NoContent),
    }
}

fn do_login(core: &mut Core, req: &Req, mount: &str) -> ApiResult<Reply> {
    let role_id = str_field(&req.data, "role_id").to_string();
    if role_id.is_empty() {
        return Err(ApiError::new(500, "missing role_id"));
    }
    let secret = str_field(&req.data, "secret_id").to_string();
    let now = SystemTime::now();
    let a = mount_state(core, mount)?;
    let name = a
        .by_role_id(&role_id)
        .ok_or_else(|| ApiError::bad_request(INVALID_CREDS))?;
    let r = a
        .roles
        .get_mut(&name)
        .ok_or_else(|| ApiError::bad_request(INVALID_CREDS))?;
    let mut metadata = BTreeMap::new();
    if r.bind_secret_id {
        if secret.is_empty() {
            return Err(ApiError::bad_request("missing secret_id"));
        }
        let s = r
            .secret_ids
            .get_mut(&secret)
            .filter(|s| s.expire.is_none_or(|t| t > now))
            .ok_or_else(|| ApiError::bad_request(INVALID_CREDS))?;
        metadata.extend(s.metadata.clone());
        if s.num_uses > 0 {
            s.num_uses -= 1;
            if s.num_uses == 0 {
                r.secret_ids.remove(&secret);
            }
        }
    }
    metadata.insert("role_name".into(), name.clone());
    let params = r.token.clone();
    login(
        core,
        LoginGrant {
            mount,
            params: &params,
            metadata,
            display_name: String::new(),
            alias: role_id,
        },
    )
}
