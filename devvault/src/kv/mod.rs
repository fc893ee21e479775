//! KV secrets engine, version 1 (flat) and version 2 (versioned, with
//! metadata, check-and-set, soft delete, undelete and destroy), following
//! `vault-plugin-secrets-kv` response shapes.
//!
//! This file holds the store, KV v1 and the v2 dispatch; the v2 endpoints live
//! in `data` (data and version states) and `metadata` (config, metadata, subkeys).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use crate::acl::Op;
use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply, Req};
use crate::flavor::Flavor;
use crate::state::{Backend, Core};
use crate::util;

mod data;
mod metadata;

use data::{data, versions_op};
use metadata::{config, metadata, subkeys};

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
