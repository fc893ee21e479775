//! KV secrets engine, version 1 (flat) and version 2 (versioned, with
//! metadata, check-and-set, soft delete, undelete and destroy), following
//! `vault-plugin-secrets-kv` response shapes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use crate::acl::Op;
use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply, Req};
use crate::flavor::Flavor;
use crate::state::{Backend, Core};
use crate::util;

const INVALID_PATH_WARNING: &str = "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints to use. If using the Vault CLI, use 'vault kv get' for this operation.";

/// One version of a KV v2 secret.
#[derive(Debug, Clone)]
pub struct Version {
    pub data: Option<Map<String, Value>>,
    pub created_time: SystemTime,
    pub deletion_time: Option<SystemTime>,
    pub destroyed: bool,
}

/// A KV v2 key's metadata and versions.
#[derive(Debug, Clone)]
pub struct Secret {
    pub versions: BTreeMap<u64, Version>,
    pub current_version: u64,
    pub oldest_version: u64,
    /// Writes to `metadata/` so far (OpenBao reports it as `current_metadata_version`).
    pub metadata_version: u64,
    pub created_time: SystemTime,
    pub updated_time: SystemTime,
    pub max_versions: u64,
    pub cas_required: bool,
    pub delete_version_after: Duration,
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

impl Secret {
    fn new(now: SystemTime) -> Secret {
        Secret {
            versions: BTreeMap::new(),
            current_version: 0,
            oldest_version: 0,
            metadata_version: 0,
            created_time: now,
            updated_time: now,
            max_versions: 0,
            cas_required: false,
            delete_version_after: Duration::ZERO,
            custom_metadata: None,
        }
    }
}

/// A KV mount's contents.
#[derive(Debug, Clone)]
pub struct KvStore {
    pub version: u8,
    v1: BTreeMap<String, Map<String, Value>>,
    v2: BTreeMap<String, Secret>,
    max_versions: u64,
    cas_required: bool,
    delete_version_after: Duration,
}

impl KvStore {
    pub fn new(version: u8) -> KvStore {
        KvStore {
            version,
            v1: BTreeMap::new(),
            v2: BTreeMap::new(),
            max_versions: 0,
            cas_required: false,
            delete_version_after: Duration::ZERO,
        }
    }

    /// `sys/mounts/x/tune` with `options.version=2`: existing keys become version 1.
    pub fn upgrade_to_v2(&mut self) {
        if self.version == 2 {
            return;
        }
        let now = SystemTime::now();
        for (k, v) in std::mem::take(&mut self.v1) {
            let mut s = Secret::new(now);
            s.versions.insert(
                1,
                Version {
                    data: Some(v),
                    created_time: now,
                    deletion_time: None,
                    destroyed: false,
                },
            );
            s.current_version = 1;
            self.v2.insert(k, s);
        }
        self.version = 2;
    }
}

/// Whether the key a write targets exists (drives create vs update in ACL
/// checks); `None` for paths outside KV mounts.
pub fn exists(core: &Core, path: &str) -> Option<bool> {
    let mount = core.find_mount(path)?;
    let e = core.mounts.get(&mount)?;
    let Backend::Kv(kv) = &e.backend else {
        return None;
    };
    let sub = path.get(mount.len()..).unwrap_or("");
    if kv.version == 1 {
        return Some(kv.v1.contains_key(sub));
    }
    for p in ["data/", "metadata/"] {
        if let Some(k) = sub.strip_prefix(p) {
            return Some(kv.v2.contains_key(k));
        }
    }
    None
}

fn ts(t: Option<SystemTime>) -> String {
    t.map(util::rfc3339_nano).unwrap_or_default()
}

fn list_keys<'a>(keys: impl Iterator<Item = &'a String>, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = keys
        .filter_map(|k| k.strip_prefix(prefix))
        .map(|rest| match rest.find('/') {
            Some(i) => rest[..=i].to_string(),
            None => rest.to_string(),
        })
        .filter(|k| !k.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn keys_reply(keys: Vec<String>) -> ApiResult<Reply> {
    if keys.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Reply::Logical(Logical::data(json!({ "keys": keys }))))
}

/// Dispatches a request under a KV mount.
pub fn handle(core: &mut Core, req: &mut Req, mount: &str, sub: &str) -> ApiResult<Reply> {
    let Some(entry) = core.mounts.get_mut(mount) else {
        return Err(ApiError::unsupported_path());
    };
    let default_ttl = entry.default_ttl();
    let flavor = core.flavor;
    let Backend::Kv(kv) = &mut entry.backend else {
        return Err(ApiError::unsupported_path());
    };
    if kv.version == 1 {
        v1(kv, req, sub, default_ttl)
    } else {
        v2(kv, req, sub, flavor)
    }
}

fn v1(kv: &mut KvStore, req: &Req, key: &str, default_ttl: Duration) -> ApiResult<Reply> {
    match req.op {
        Op::Read => {
            let data = kv.v1.get(key).ok_or_else(ApiError::not_found)?;
            let ttl = data
                .get("ttl")
                .and_then(|v| util::parse_duration(v).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(default_ttl);
            let mut l = Logical::data(Value::Object(data.clone()));
            l.lease_duration = util::secs(ttl);
            Ok(Reply::Logical(l))
        }
        Op::List => keys_reply(list_keys(kv.v1.keys(), key)),
        Op::Update | Op::Create => {
            if req.data.is_empty() {
                return Err(ApiError::bad_request("missing data fields"));
            }
            kv.v1.insert(key.to_string(), req.data.clone());
            Ok(Reply::NoContent)
        }
        Op::Delete => {
            kv.v1.remove(key);
            Ok(Reply::NoContent)
        }
        Op::Patch => Err(ApiError::unsupported_operation()),
    }
}

fn version_metadata(s: &Secret, n: u64, v: &Version) -> Value {
    json!({
        "created_time": util::rfc3339_nano(v.created_time),
        "custom_metadata": s.custom_metadata,
        "deletion_time": ts(v.deletion_time),
        "destroyed": v.destroyed,
        "version": n,
    })
}

fn invalid_path() -> Reply {
    Reply::Logical(Logical {
        status: Some(404),
        warnings: vec![INVALID_PATH_WARNING.to_string()],
        ..Default::default()
    })
}

fn v2(kv: &mut KvStore, req: &Req, sub: &str, flavor: Flavor) -> ApiResult<Reply> {
    if sub == "config" {
        return config(kv, req);
    }
    let (kind, key) = match sub.find('/') {
        Some(i) => (&sub[..i], &sub[i + 1..]),
        None => (sub, ""),
    };
    match kind {
        "data" => data(kv, req, key),
        "metadata" => metadata(kv, req, key, flavor),
        "delete" | "undelete" | "destroy" => versions_op(kv, req, kind, key),
        "subkeys" => subkeys(kv, req, key),
        _ => Ok(invalid_path()),
    }
}

fn config(kv: &mut KvStore, req: &Req) -> ApiResult<Reply> {
    match req.op {
        Op::Read => Ok(Reply::Logical(Logical::data(json!({
            "cas_required": kv.cas_required,
            "delete_version_after": util::go_duration_string(kv.delete_version_after),
            "max_versions": kv.max_versions,
        })))),
        Op::Update | Op::Create => {
            if let Some(v) = req.data.get("max_versions") {
                kv.max_versions = util::parse_int(v).map_err(ApiError::bad_request)?.max(0) as u64;
            }
            if let Some(v) = req.data.get("cas_required") {
                kv.cas_required = util::parse_bool(v).map_err(ApiError::bad_request)?;
            }
            if let Some(v) = req.data.get("delete_version_after") {
                kv.delete_version_after = util::parse_duration(v).map_err(ApiError::bad_request)?;
            }
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn cas_of(req: &Req) -> ApiResult<Option<u64>> {
    let Some(opts) = req.data.get("options") else {
        return Ok(None);
    };
    let Some(cas) = opts.get("cas") else {
        return Ok(None);
    };
    if cas.is_null() {
        return Ok(None);
    }
    util::parse_int(cas)
        .map(|n| Some(n.max(0) as u64))
        .map_err(|_| ApiError::bad_request("error parsing check-and-set parameter"))
}

fn data(kv: &mut KvStore, req: &Req, key: &str) -> ApiResult<Reply> {
    let now = SystemTime::now();
    match req.op {
        Op::Read => {
            let s = kv.v2.get(key).ok_or_else(ApiError::not_found)?;
            let want = match req.data.get("version") {
                Some(v) => util::parse_int(v).map_err(ApiError::bad_request)?,
                None => 0,
            };
            let n = if want > 0 {
                want as u64
            } else {
                s.current_version
            };
            let v = s.versions.get(&n).ok_or_else(ApiError::not_found)?;
            let deleted = v.deletion_time.is_some_and(|t| t <= now);
            let body = json!({
                "data": if deleted || v.destroyed { Value::Null } else { json!(v.data) },
                "metadata": version_metadata(s, n, v),
            });
            let mut l = Logical::data(body);
            if deleted || v.destroyed {
                l.status = Some(404);
            }
            Ok(Reply::Logical(l))
        }
        Op::Update | Op::Create | Op::Patch => write(kv, req, key, now),
        Op::Delete => {
            if let Some(s) = kv.v2.get_mut(key) {
                let cur = s.current_version;
                if let Some(v) = s.versions.get_mut(&cur) {
                    if v.deletion_time.is_none_or(|t| t > now) && !v.destroyed {
                        v.deletion_time = Some(now);
                    }
                }
                s.updated_time = now;
            }
            Ok(Reply::NoContent)
        }
        Op::List => Err(ApiError::unsupported_operation()),
    }
}

fn write(kv: &mut KvStore, req: &Req, key: &str, now: SystemTime) -> ApiResult<Reply> {
    let patch = req.op == Op::Patch;
    let new_data = match req.data.get("data") {
        Some(Value::Object(m)) => m.clone(),
        _ => return Err(ApiError::bad_request("no data provided")),
    };
    let cas = cas_of(req)?;
    let mount_cas = kv.cas_required;
    let mount_max = kv.max_versions;
    let mount_dva = kv.delete_version_after;
    if patch {
        let Some(s) = kv.v2.get(key) else {
            return Ok(Reply::Raw {
                status: 404,
                body: Vec::new(),
            });
        };
        let Some(cur) = s.versions.get(&s.current_version) else {
            return Ok(Reply::Raw {
                status: 404,
                body: Vec::new(),
            });
        };
        if cur.destroyed || cur.deletion_time.is_some_and(|t| t <= now) {
            let mut l = Logical::data(version_metadata(s, s.current_version, cur));
            l.status = Some(404);
            return Ok(Reply::Logical(l));
        }
    }
    let s = kv
        .v2
        .entry(key.to_string())
        .or_insert_with(|| Secret::new(now));
    if (mount_cas || s.cas_required) && cas.is_none() {
        return Err(ApiError::bad_request(
            "check-and-set parameter required for this call",
        ));
    }
    if let Some(c) = cas {
        if c != s.current_version {
            return Err(ApiError::bad_request(
                "check-and-set parameter did not match the current version",
            ));
        }
    }
    let merged = if patch {
        let mut base = s
            .versions
            .get(&s.current_version)
            .and_then(|v| v.data.clone())
            .unwrap_or_default();
        for (k, v) in new_data {
            if v.is_null() {
                base.remove(&k);
            } else {
                base.insert(k, v);
            }
        }
        base
    } else {
        new_data
    };
    let n = s.current_version + 1;
    let dva = if s.delete_version_after.is_zero() {
        mount_dva
    } else {
        s.delete_version_after
    };
    s.versions.insert(
        n,
        Version {
            data: Some(merged),
            created_time: now,
            deletion_time: if dva.is_zero() { None } else { Some(now + dva) },
            destroyed: false,
        },
    );
    s.current_version = n;
    s.updated_time = now;
    let max = if s.max_versions > 0 {
        s.max_versions
    } else if mount_max > 0 {
        mount_max
    } else {
        10
    };
    // Vault's `KeyMetadata.AddVersion`: `oldest_version` stays 0 until a version is pruned.
    if n - s.oldest_version >= max {
        let last_dropped = n - max;
        s.versions.retain(|v, _| *v > last_dropped);
        s.oldest_version = last_dropped + 1;
    }
    let v = s
        .versions
        .get(&n)
        .cloned()
        .ok_or_else(|| ApiError::internal("version vanished"))?;
    let mut meta = version_metadata(s, n, &v);
    if let Value::Object(m) = &mut meta {
        m.insert("version".into(), json!(n));
    }
    Ok(Reply::Logical(Logical::data(meta)))
}

fn versions_list(req: &Req) -> ApiResult<Vec<u64>> {
    let vs: Vec<u64> = match req.data.get("versions") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| util::parse_int(v).ok())
            .map(|n| n as u64)
            .collect(),
        Some(v @ Value::String(_)) => util::comma_list(v)
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
        Some(Value::Number(n)) => n.as_u64().into_iter().collect(),
        _ => Vec::new(),
    };
    if vs.is_empty() {
        return Err(ApiError::bad_request("no version number provided"));
    }
    Ok(vs)
}

fn versions_op(kv: &mut KvStore, req: &Req, kind: &str, key: &str) -> ApiResult<Reply> {
    if !matches!(req.op, Op::Update | Op::Create) {
        return Err(ApiError::unsupported_operation());
    }
    let now = SystemTime::now();
    let versions = versions_list(req)?;
    let Some(s) = kv.v2.get_mut(key) else {
        return Ok(Reply::NoContent);
    };
    for n in versions {
        let Some(v) = s.versions.get_mut(&n) else {
            continue;
        };
        match kind {
            "delete" if !v.destroyed && v.deletion_time.is_none_or(|t| t > now) => {
                v.deletion_time = Some(now)
            }
            "undelete" if !v.destroyed => v.deletion_time = None,
            "destroy" => {
                v.destroyed = true;
                v.data = None;
            }
            _ => {}
        }
    }
    s.updated_time = now;
    Ok(Reply::NoContent)
}

fn metadata(kv: &mut KvStore, req: &Req, key: &str, flavor: Flavor) -> ApiResult<Reply> {
    let now = SystemTime::now();
    match req.op {
        Op::List => keys_reply(list_keys(kv.v2.keys(), key)),
        Op::Read => {
            let s = kv.v2.get(key).ok_or_else(ApiError::not_found)?;
            let versions: Map<String, Value> = s
                .versions
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        json!({
                            "created_time": util::rfc3339_nano(v.created_time),
                            "deletion_time": ts(v.deletion_time),
                            "destroyed": v.destroyed,
                        }),
                    )
                })
                .collect();
            let mut data = json!({
                "cas_required": s.cas_required,
                "created_time": util::rfc3339_nano(s.created_time),
                "current_version": s.current_version,
                "custom_metadata": s.custom_metadata,
                "delete_version_after": util::go_duration_string(s.delete_version_after),
                "max_versions": s.max_versions,
                "oldest_version": s.oldest_version,
                "updated_time": util::rfc3339_nano(s.updated_time),
                "versions": versions,
            });
            // OpenBao versions the metadata itself (for check-and-set on metadata writes).
            if flavor == Flavor::OpenBao {
                data["current_metadata_version"] = json!(s.metadata_version);
                data["metadata_cas_required"] = json!(false);
            }
            Ok(Reply::Logical(Logical::data(data)))
        }
        Op::Update | Op::Create | Op::Patch => {
            let s = kv
                .v2
                .entry(key.to_string())
                .or_insert_with(|| Secret::new(now));
            if let Some(v) = req.data.get("max_versions") {
                s.max_versions = util::parse_int(v).map_err(ApiError::bad_request)?.max(0) as u64;
            }
            if let Some(v) = req.data.get("cas_required") {
                s.cas_required = util::parse_bool(v).map_err(ApiError::bad_request)?;
            }
            if let Some(v) = req.data.get("delete_version_after") {
                s.delete_version_after = util::parse_duration(v).map_err(ApiError::bad_request)?;
            }
            if let Some(Value::Object(m)) = req.data.get("custom_metadata") {
                s.custom_metadata = Some(
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| v.to_string()),
                            )
                        })
                        .collect(),
                );
            }
            s.updated_time = now;
            s.metadata_version += 1;
            Ok(Reply::NoContent)
        }
        Op::Delete => {
            kv.v2.remove(key);
            Ok(Reply::NoContent)
        }
    }
}

fn subkeys(kv: &mut KvStore, req: &Req, key: &str) -> ApiResult<Reply> {
    if req.op != Op::Read {
        return Err(ApiError::unsupported_operation());
    }
    let s = kv.v2.get(key).ok_or_else(ApiError::not_found)?;
    let v = s
        .versions
        .get(&s.current_version)
        .ok_or_else(ApiError::not_found)?;
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), strip(v))).collect())
            }
            _ => Value::Null,
        }
    }
    let sub = v
        .data
        .as_ref()
        .map(|d| strip(&Value::Object(d.clone())))
        .unwrap_or(Value::Null);
    Ok(Reply::Logical(Logical::data(json!({
        "metadata": version_metadata(s, s.current_version, v),
        "subkeys": sub,
    }))))
}
