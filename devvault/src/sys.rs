//! The system backend (`sys/*`): health, seal state, mount and auth tables,
//! ACL policies, capabilities, the KV-version preflight the Vault CLI uses,
//! response wrapping, and (delegated) leases.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::acl::{cap, Op, Policy};
use crate::auth::{approle::Approle, jwt::Jwt, kubernetes::Kubernetes};
use crate::database::DbBackend;
use crate::envelope;
use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply, Req};
use crate::flavor::Flavor;
use crate::job::Job;
use crate::kv::KvStore;
use crate::leases;
use crate::state::{Backend, Core, MountEntry, State};
use crate::util;
use crate::wrapping::INVALID_WRAP;

/// `sys/health` wire body for Vault (Go struct order, `omitempty` honoured).
#[derive(Serialize)]
struct HealthVault<'a> {
    initialized: bool,
    sealed: bool,
    standby: bool,
    performance_standby: bool,
    replication_performance_mode: &'a str,
    replication_dr_mode: &'a str,
    server_time_utc: i64,
    version: &'a str,
    enterprise: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    cluster_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    cluster_id: &'a str,
    echo_duration_ms: i64,
    clock_skew_ms: i64,
    replication_primary_canary_age_ms: i64,
}

/// `sys/health` wire body for OpenBao.
#[derive(Serialize)]
struct HealthBao<'a> {
    initialized: bool,
    sealed: bool,
    standby: bool,
    replication_performance_mode: &'a str,
    replication_dr_mode: &'a str,
    server_time_utc: i64,
    version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    cluster_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    cluster_id: &'a str,
}

/// `sys/seal-status` wire body for Vault.
#[derive(Serialize)]
struct SealStatus<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    initialized: bool,
    sealed: bool,
    t: i64,
    n: i64,
    progress: i64,
    nonce: &'a str,
    version: &'a str,
    build_date: &'a str,
    migration: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    cluster_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    cluster_id: &'a str,
    recovery_seal: bool,
    storage_type: &'a str,
}

/// `sys/seal-status` wire body for OpenBao 2.7: `commit_date` instead of `build_date`,
/// and another field order.
#[derive(Serialize)]
struct SealStatusBao<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    initialized: bool,
    sealed: bool,
    t: i64,
    n: i64,
    progress: i64,
    nonce: &'a str,
    recovery_seal: bool,
    version: &'a str,
    commit_date: &'a str,
    migration: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    cluster_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    cluster_id: &'a str,
    storage_type: &'a str,
}

/// Endpoints that work while sealed and need no token.
pub fn handle_unsealed_free(state: &Arc<State>, req: &mut Req) -> ApiResult<Reply> {
    match req.path.as_str() {
        "sys/health" => health(state, req),
        "sys/seal-status" => Ok(Reply::Raw {
            status: 200,
            body: seal_status_body(state),
        }),
        // Dev server: any key (or `reset`) unseals at once.
        "sys/unseal" if matches!(req.op, Op::Update | Op::Create) => {
            state.core().sealed = false;
            Ok(Reply::Raw {
                status: 200,
                body: seal_status_body(state),
            })
        }
        "sys/unseal" => Err(ApiError::unsupported_operation()),
        "sys/init" => Ok(Reply::Raw {
            status: 200,
            body: envelope::go_json(&json!({"initialized": true})),
        }),
        _ => {
            if state.core().sealed {
                return Err(ApiError::sealed());
            }
            let body = json!({
                "ha_enabled": false,
                "is_self": false,
                "active_time": "0001-01-01T00:00:00Z",
                "leader_address": "",
                "leader_cluster_address": "",
                "performance_standby": false,
                "performance_standby_last_remote_wal": 0
            });
            Ok(Reply::Raw {
                status: 200,
                body: envelope::go_json(&body),
            })
        }
    }
}

fn seal_status_body(state: &Arc<State>) -> Vec<u8> {
    let core = state.core();
    let (name, id) = if core.sealed {
        ("", "")
    } else {
        (core.cluster_name.as_str(), core.cluster_id.as_str())
    };
    match core.flavor {
        Flavor::Vault => envelope::go_json(&SealStatus {
            kind: "shamir",
            initialized: true,
            sealed: core.sealed,
            t: 1,
            n: 1,
            progress: 0,
            nonce: "",
            version: core.flavor.version(),
            build_date: "2025-03-04T17:02:28Z",
            migration: false,
            cluster_name: name,
            cluster_id: id,
            recovery_seal: false,
            storage_type: "inmem",
        }),
        Flavor::OpenBao => envelope::go_json(&SealStatusBao {
            kind: "shamir",
            initialized: true,
            sealed: core.sealed,
            t: 1,
            n: 1,
            progress: 0,
            nonce: "",
            recovery_seal: false,
            version: core.flavor.version(),
            commit_date: "2026-10-26T20:32:27Z",
            migration: false,
            cluster_name: name,
            cluster_id: id,
            storage_type: "inmem",
        }),
    }
}

fn health(state: &Arc<State>, req: &Req) -> ApiResult<Reply> {
    if req.op != Op::Read {
        return Err(ApiError {
            status: 405,
            errors: Vec::new(),
            data: None,
        });
    }
    let code = |name: &str, default: u16| -> ApiResult<u16> {
        match req.query.get(name) {
            None => Ok(default),
            Some(v) => v.parse::<u16>().map_err(|_| ApiError::bad_request_empty()),
        }
    };
    for b in ["standbyok", "perfstandbyok"] {
        if let Some(v) = req.query.get(b) {
            if !v.is_empty() {
                util::parse_bool_str(v).map_err(ApiError::bad_request)?;
            }
        }
    }
    let core = state.core();
    let status = if core.sealed {
        code("sealedcode", 503)?
    } else {
        code("activecode", 200)?
    };
    // Validate the remaining codes like Vault does, even though unused here.
    for (n, d) in [
        ("standbycode", 429),
        ("drsecondarycode", 472),
        ("performancestandbycode", 473),
        ("uninitcode", 501),
        ("haunhealthycode", 474),
        ("removedcode", 530),
    ] {
        code(n, d)?;
    }
    if req.is_head {
        return Ok(Reply::Raw {
            status,
            body: Vec::new(),
        });
    }
    let (name, id) = if core.sealed {
        ("", "")
    } else {
        (core.cluster_name.as_str(), core.cluster_id.as_str())
    };
    let now = util::unix_secs(SystemTime::now());
    let body = match core.flavor {
        Flavor::Vault => envelope::go_json(&HealthVault {
            initialized: true,
            sealed: core.sealed,
            standby: false,
            performance_standby: false,
            replication_performance_mode: "disabled",
            replication_dr_mode: "disabled",
            server_time_utc: now,
            version: core.flavor.version(),
            enterprise: false,
            cluster_name: name,
            cluster_id: id,
            echo_duration_ms: 0,
            clock_skew_ms: 0,
            replication_primary_canary_age_ms: 0,
        }),
        Flavor::OpenBao => envelope::go_json(&HealthBao {
            initialized: true,
            sealed: core.sealed,
            standby: false,
            replication_performance_mode: "disabled",
            replication_dr_mode: "disabled",
            server_time_utc: now,
            version: core.flavor.version(),
            cluster_name: name,
            cluster_id: id,
        }),
    };
    Ok(Reply::Raw { status, body })
}

/// `mountInfo()` from `logical_system.go`.
pub fn mount_info(e: &MountEntry, flavor: Flavor) -> Value {
    let builtin = match flavor {
        Flavor::Vault => format!("v{}+builtin.vault", flavor.version()),
        Flavor::OpenBao => format!("v{}+builtin.bao", flavor.version()),
    };
    let mut info = json!({
        "accessor": e.accessor,
        "config": {
            "default_lease_ttl": util::secs(e.default_lease_ttl),
            "force_no_cache": false,
            "max_lease_ttl": util::secs(e.max_lease_ttl),
        },
        "description": e.description,
        "external_entropy_access": false,
        "local": false,
        "options": e.options,
        "plugin_version": "",
        "running_plugin_version": builtin,
        "running_sha256": "",
        "seal_wrap": false,
        "type": e.kind,
        "uuid": e.uuid,
    });
    if let Some(s) = flavor.deprecation_status(&e.kind) {
        info["deprecation_status"] = json!(s);
    }
    // `mountInfo` adds the token type to the config of auth-table entries.
    if matches!(
        e.kind.as_str(),
        "token" | "approle" | "kubernetes" | "jwt" | "oidc"
    ) {
        info["config"]["token_type"] = json!("default-service");
    }
    info
}

fn is_write(op: Op) -> bool {
    matches!(op, Op::Update | Op::Create)
}

fn injected(v: Value) -> Reply {
    Reply::Logical(Logical {
        data: Some(v),
        inject: true,
        ..Default::default()
    })
}

fn str_of<'a>(d: &'a Map<String, Value>, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Dispatches `sys/<rest>` for unsealed servers.
pub async fn handle(state: &Arc<State>, req: &mut Req, rest: &str) -> ApiResult<Reply> {
    if let Some(r) = rest.strip_prefix("leases/") {
        return leases::handle(state, req, r).await;
    }
    if rest == "renew"
        || rest.starts_with("renew/")
        || rest == "revoke"
        || rest.starts_with("revoke/")
    {
        return leases::handle(state, req, rest).await;
    }
    if let Some(r) = rest.strip_prefix("wrapping/") {
        return wrapping(state, req, r);
    }
    let mut core = state.core();
    let flavor = core.flavor;
    match rest {
        "mounts" if req.op == Op::Read => {
            let m: Map<String, Value> = core
                .mounts
                .values()
                .map(|e| (e.path.clone(), mount_info(e, flavor)))
                .collect();
            Ok(injected(Value::Object(m)))
        }
        "auth" if req.op == Op::Read => {
            let m: Map<String, Value> = core
                .auth_mounts
                .values()
                .map(|e| (e.path.clone(), mount_info(e, flavor)))
                .collect();
            Ok(injected(Value::Object(m)))
        }
        "policies/acl/" | "policy" if matches!(req.op, Op::List | Op::Read) => {
            let mut keys: Vec<String> = core.policies.keys().cloned().collect();
            keys.push("root".into());
            keys.sort();
            if rest == "policy" {
                Ok(injected(json!({ "keys": keys, "policies": keys })))
            } else {
                Ok(Reply::Logical(Logical::data(json!({ "keys": keys }))))
            }
        }
        "capabilities-self" | "capabilities" if is_write(req.op) => capabilities(&core, req),
        "seal" if is_write(req.op) => {
            core.sealed = true;
            Ok(Reply::NoContent)
        }
        "internal/ui/mounts" if req.op == Op::Read => {
            let secret: Map<String, Value> = core
                .mounts
                .values()
                .map(|e| (e.path.clone(), mount_info(e, flavor)))
                .collect();
            let auth: Map<String, Value> = core
                .auth_mounts
                .values()
                .map(|e| (e.path.clone(), mount_info(e, flavor)))
                .collect();
            Ok(Reply::Logical(Logical::data(
                json!({ "auth": auth, "secret": secret }),
            )))
        }
        r if r.starts_with("internal/ui/mounts/") => {
            ui_mount(&core, req, &r["internal/ui/mounts/".len()..])
        }
        r if r.starts_with("mounts/") => mounts(&mut core, req, &r["mounts/".len()..]),
        r if r.starts_with("auth/") => {
            let (jobs, reply) = auth_mounts(&mut core, req, &r["auth/".len()..])?;
            req.jobs.extend(jobs);
            Ok(reply)
        }
        r if r.starts_with("policies/acl/") => {
            policy(&mut core, req, &r["policies/acl/".len()..], false)
        }
        r if r.starts_with("policy/") => policy(&mut core, req, &r["policy/".len()..], true),
        _ => Err(ApiError::unsupported_path()),
    }
}

fn capability_names(bits: u16, root: bool) -> Vec<String> {
    if root {
        return vec!["root".into()];
    }
    if bits & cap::DENY != 0 || bits == 0 {
        return vec!["deny".into()];
    }
    let names = [
        (cap::CREATE, "create"),
        (cap::DELETE, "delete"),
        (cap::LIST, "list"),
        (cap::PATCH, "patch"),
        (cap::READ, "read"),
        (cap::SUBSCRIBE, "subscribe"),
        (cap::SUDO, "sudo"),
        (cap::UPDATE, "update"),
    ];
    names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

fn capabilities(core: &Core, req: &Req) -> ApiResult<Reply> {
    let policies = if req.path == "sys/capabilities" {
        let t = str_of(&req.data, "token");
        core.tokens
            .live(t, SystemTime::now())
            .map(|e| e.policies.clone())
            .ok_or_else(|| ApiError::bad_request("invalid token"))?
    } else {
        req.caller
            .as_ref()
            .map(|c| c.policies.clone())
            .unwrap_or_default()
    };
    let mut paths = req
        .data
        .get("paths")
        .map(util::comma_list)
        .unwrap_or_default();
    if let Some(p) = req.data.get("path").and_then(Value::as_str) {
        paths.push(p.to_string());
    }
    if paths.is_empty() {
        return Err(ApiError::bad_request("paths must be supplied"));
    }
    let root = policies.iter().any(|p| p == "root");
    let acl = core.acl_for(&policies);
    let mut m = Map::new();
    let mut all: Vec<String> = Vec::new();
    for p in &paths {
        let caps = capability_names(acl.capabilities(p, Op::Read), root);
        all.extend(caps.clone());
        m.insert(p.clone(), json!(caps));
    }
    all.sort();
    all.dedup();
    m.insert("capabilities".into(), json!(all));
    Ok(injected(Value::Object(m)))
}

fn ui_mount(core: &Core, req: &Req, raw: &str) -> ApiResult<Reply> {
    let path = format!("{}/", raw.trim_start_matches('/').trim_end_matches('/'));
    let denied = ApiError::new(
        403,
        format!("preflight capability check returned 403, please ensure client's policies grant access to path {path:?}"),
    );
    if raw.trim_matches('/').is_empty() {
        return Err(ApiError::bad_request("path not set"));
    }
    let (entry, full) = if let Some(a) = path.strip_prefix("auth/") {
        let m = core.find_auth_mount(a).ok_or_else(|| denied.clone())?;
        (core.auth_mounts.get(&m), format!("auth/{m}"))
    } else {
        let m = core.find_mount(&path).ok_or_else(|| denied.clone())?;
        (core.mounts.get(&m), m)
    };
    let entry = entry.ok_or_else(|| denied.clone())?;
    let now = SystemTime::now();
    let policies = req
        .raw_token
        .as_deref()
        .and_then(|t| core.tokens.live(t, now))
        .map(|e| e.policies.clone())
        .unwrap_or_default();
    if !core.acl_for(&policies).has_any_under(&full) {
        return Err(denied);
    }
    let mut info = mount_info(entry, core.flavor);
    if let Value::Object(m) = &mut info {
        m.insert("path".into(), json!(full));
    }
    Ok(Reply::Logical(Logical::data(info)))
}

fn ttl_config(d: &Map<String, Value>) -> ApiResult<(Option<Duration>, Option<Duration>)> {
    let cfg = d
        .get("config")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let get = |k: &str| -> ApiResult<Option<Duration>> {
        match cfg.get(k).or_else(|| d.get(k)) {
            None => Ok(None),
            Some(Value::String(s)) if s == "system" => Ok(Some(Duration::ZERO)),
            Some(v) => util::parse_duration(v)
                .map(Some)
                .map_err(ApiError::bad_request),
        }
    };
    Ok((get("default_lease_ttl")?, get("max_lease_ttl")?))
}

fn options_of(d: &Map<String, Value>) -> Option<BTreeMap<String, String>> {
    d.get("options").and_then(Value::as_object).map(|o| {
        o.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect()
    })
}

fn mounts(core: &mut Core, req: &mut Req, raw: &str) -> ApiResult<Reply> {
    let (path, tune) = match raw.strip_suffix("/tune") {
        Some(p) => (format!("{}/", p.trim_end_matches('/')), true),
        None => (format!("{}/", raw.trim_end_matches('/')), false),
    };
    let flavor = core.flavor;
    if tune {
        let e = core.mounts.get_mut(&path).ok_or_else(|| {
            ApiError::bad_request(format!("cannot fetch sysview for path {path:?}"))
        })?;
        return tune_mount(e, req);
    }
    match req.op {
        Op::Read => {
            let e = core.mounts.get(&path).ok_or_else(|| {
                ApiError::bad_request(format!("No secret engine mount at {path}"))
            })?;
            Ok(Reply::Logical(Logical {
                data: Some(mount_info(e, flavor)),
                inject: true,
                ..Default::default()
            }))
        }
        Op::Update | Op::Create => {
            if let Some(existing) = core
                .mounts
                .keys()
                .find(|m| path.starts_with(m.as_str()) || m.starts_with(&path))
            {
                return Err(ApiError::bad_request(format!(
                    "path is already in use at {existing}"
                )));
            }
            if ["sys/", "auth/", "cubbyhole/", "identity/"]
                .iter()
                .any(|r| path.starts_with(r))
            {
                return Err(ApiError::bad_request(format!(
                    "cannot mount under reserved path {path:?}"
                )));
            }
            let kind = str_of(&req.data, "type").to_string();
            let mut options = options_of(&req.data);
            let (kind, backend) = match kind.as_str() {
                "kv" | "generic" => {
                    let version = options
                        .as_ref()
                        .and_then(|o| o.get("version"))
                        .map(String::as_str)
                        == Some("2");
                    if options.is_none() && flavor == Flavor::Vault {
                        options = Some(BTreeMap::from([("version".to_string(), "1".to_string())]));
                    }
                    ("kv", Backend::Kv(KvStore::new(if version { 2 } else { 1 })))
                }
                "kv-v2" => {
                    options
                        .get_or_insert_with(BTreeMap::new)
                        .insert("version".into(), "2".into());
                    ("kv", Backend::Kv(KvStore::new(2)))
                }
                "database" => ("database", Backend::Database(DbBackend::default())),
                "" => return Err(ApiError::bad_request("backend type must be specified")),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "plugin not found in the catalog: {other}"
                    )))
                }
            };
            let mut e = MountEntry::new(&path, kind, str_of(&req.data, "description"), backend);
            // OpenBao keeps the (empty) options map of an API mount, so it reads back as `{}`.
            if flavor == Flavor::OpenBao {
                options.get_or_insert_with(BTreeMap::new);
            }
            e.options = options;
            let (d, m) = ttl_config(&req.data)?;
            e.default_lease_ttl = d.unwrap_or_default();
            e.max_lease_ttl = m.unwrap_or_default();
            core.mounts.insert(path, e);
            Ok(Reply::NoContent)
        }
        Op::Delete => {
            if ["sys/", "cubbyhole/", "identity/"].contains(&path.as_str()) {
                return Err(ApiError::bad_request(format!("cannot unmount {path:?}")));
            }
            if core.mounts.remove(&path).is_some() {
                for id in core.leases.ids_with_prefix(&path) {
                    if let Some(j) = core.leases.remove(&id) {
                        req.jobs.push(j);
                    }
                }
            }
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn tune_mount(e: &mut MountEntry, req: &Req) -> ApiResult<Reply> {
    match req.op {
        Op::Read => Ok(Reply::Logical(Logical::data(json!({
            "default_lease_ttl": util::secs(e.default_ttl()),
            "description": e.description,
            "force_no_cache": false,
            "max_lease_ttl": util::secs(e.max_ttl()),
            "options": e.options,
        })))),
        Op::Update | Op::Create => {
            let (d, m) = ttl_config(&req.data)?;
            if let Some(d) = d {
                e.default_lease_ttl = d;
            }
            if let Some(m) = m {
                e.max_lease_ttl = m;
            }
            if let Some(o) = options_of(&req.data) {
                let opts = e.options.get_or_insert_with(BTreeMap::new);
                for (k, v) in o {
                    opts.insert(k, v);
                }
                if let Backend::Kv(kv) = &mut e.backend {
                    if opts.get("version").map(String::as_str) == Some("2") {
                        kv.upgrade_to_v2();
                    }
                }
            }
            if let Some(desc) = req.data.get("description").and_then(Value::as_str) {
                e.description = desc.to_string();
            }
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn auth_mounts(core: &mut Core, req: &mut Req, raw: &str) -> ApiResult<(Vec<Job>, Reply)> {
    let (path, tune) = match raw.strip_suffix("/tune") {
        Some(p) => (format!("{}/", p.trim_end_matches('/')), true),
        None => (format!("{}/", raw.trim_end_matches('/')), false),
    };
    let flavor = core.flavor;
    if tune {
        let e = core.auth_mounts.get_mut(&path).ok_or_else(|| {
            ApiError::bad_request(format!("cannot fetch sysview for path \"auth/{path}\""))
        })?;
        return Ok((Vec::new(), tune_mount(e, req)?));
    }
    match req.op {
        Op::Read => {
            let e = core
                .auth_mounts
                .get(&path)
                .ok_or_else(|| ApiError::bad_request(format!("No auth engine at auth/{path}")))?;
            Ok((
                Vec::new(),
                Reply::Logical(Logical {
                    data: Some(mount_info(e, flavor)),
                    inject: true,
                    ..Default::default()
                }),
            ))
        }
        Op::Update | Op::Create => {
            if core.auth_mounts.contains_key(&path) {
                return Err(ApiError::bad_request(format!(
                    "path is already in use at auth/{path}"
                )));
            }
            let kind = str_of(&req.data, "type").to_string();
            let backend = match kind.as_str() {
                "approle" => Backend::Approle(Approle::default()),
                "kubernetes" => Backend::Kubernetes(Kubernetes::default()),
                "jwt" | "oidc" => Backend::Jwt(Jwt::default()),
                "token" => {
                    return Err(ApiError::bad_request(
                        "token credential backend cannot be instantiated",
                    ))
                }
                "" => return Err(ApiError::bad_request("backend type must be specified")),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "plugin not found in the catalog: {other}"
                    )))
                }
            };
            let mut e = MountEntry::new(&path, &kind, str_of(&req.data, "description"), backend);
            if flavor == Flavor::OpenBao {
                e.options = Some(options_of(&req.data).unwrap_or_default());
            }
            let (d, m) = ttl_config(&req.data)?;
            e.default_lease_ttl = d.unwrap_or_default();
            e.max_lease_ttl = m.unwrap_or_default();
            core.auth_mounts.insert(path, e);
            Ok((Vec::new(), Reply::NoContent))
        }
        Op::Delete => {
            if path == "token/" {
                return Err(ApiError::bad_request(
                    "token credential backend cannot be disabled",
                ));
            }
            let mut jobs = Vec::new();
            if let Some(e) = core.auth_mounts.remove(&path) {
                let ids: Vec<String> = core
                    .tokens
                    .all()
                    .filter(|t| t.mount_accessor == e.accessor)
                    .map(|t| t.id.clone())
                    .collect();
                for id in ids {
                    jobs.extend(core.revoke_token_tree(&id));
                }
            }
            Ok((jobs, Reply::NoContent))
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn policy(core: &mut Core, req: &Req, raw: &str, legacy: bool) -> ApiResult<Reply> {
    let name = raw.trim_end_matches('/').trim().to_lowercase();
    match req.op {
        Op::Read => {
            let text = match name.as_str() {
                "root" => String::new(),
                _ => core
                    .policies
                    .get(&name)
                    .map(|p| p.raw.clone())
                    .ok_or_else(ApiError::not_found)?,
            };
            let mut data = if legacy {
                json!({ "name": name, "rules": text })
            } else {
                json!({ "name": name, "policy": text })
            };
            // OpenBao 2.x stores policies with a version for check-and-set writes.
            if core.flavor == Flavor::OpenBao && name != "root" {
                let (version, modified) = core
                    .policy_versions
                    .get(&name)
                    .copied()
                    .unwrap_or((1, SystemTime::now()));
                data["allow_slashes_in_identity_templates"] = json!(false);
                data["allow_wildcards_in_identity_templates"] = json!(false);
                data["cas_required"] = json!(false);
                data["modified"] = json!(util::rfc3339_nano(modified));
                data["version"] = json!(version);
            }
            Ok(Reply::Logical(Logical {
                data: Some(data),
                inject: legacy,
                ..Default::default()
            }))
        }
        Op::Update | Op::Create => {
            if name == "root" || name == "response-wrapping" {
                return Err(ApiError::bad_request(format!(
                    "cannot update {name:?} policy"
                )));
            }
            let text = match (req.data.get("policy"), req.data.get("rules")) {
                (Some(Value::String(s)), _) | (None, Some(Value::String(s)))
                    if !s.trim().is_empty() =>
                {
                    s.clone()
                }
                _ => {
                    return Err(ApiError::bad_request(
                        "'policy' parameter not supplied or empty",
                    ))
                }
            };
            let p = Policy::parse(&text)
                .map_err(|e| ApiError::bad_request(format!("failed to parse policy: {e}")))?;
            let version = core.policy_versions.get(&name).map_or(0, |v| v.0) + 1;
            core.policy_versions
                .insert(name.clone(), (version, SystemTime::now()));
            core.policies.insert(name, p);
            Ok(Reply::NoContent)
        }
        Op::Delete => match name.as_str() {
            "default" => Err(ApiError::bad_request("cannot delete default policy")),
            "root" | "response-wrapping" => Err(ApiError::bad_request(format!(
                "cannot delete {name:?} policy"
            ))),
            _ => {
                core.policies.remove(&name);
                core.policy_versions.remove(&name);
                Ok(Reply::NoContent)
            }
        },
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn wrapping(state: &Arc<State>, req: &mut Req, rest: &str) -> ApiResult<Reply> {
    let body_token = str_of(&req.data, "token").to_string();
    let token = if body_token.is_empty() {
        req.raw_token.clone().unwrap_or_default()
    } else {
        body_token
    };
    match rest {
        "unwrap" if is_write(req.op) => {
            if token.is_empty() {
                return Err(ApiError::bad_request(INVALID_WRAP));
            }
            Ok(Reply::Unwrapped(unwrap_token(state, &token)?))
        }
        "lookup" if is_write(req.op) || req.op == Op::Read => {
            let core = state.core();
            let data = core
                .wraps
                .lookup(&token, SystemTime::now())
                .ok_or_else(|| ApiError::bad_request(INVALID_WRAP))?;
            Ok(Reply::Logical(Logical::data(data)))
        }
        "wrap" if is_write(req.op) => {
            if req.data.is_empty() {
                return Err(ApiError::bad_request("empty request body"));
            }
            if req.wrap_ttl.is_none() {
                req.wrap_ttl = Some(Duration::from_secs(300));
            }
            Ok(Reply::Logical(Logical::data(Value::Object(
                req.data.clone(),
            ))))
        }
        "unwrap" | "lookup" | "wrap" => Err(ApiError::unsupported_operation()),
        _ => Err(ApiError::unsupported_path()),
    }
}

/// Unwraps (used by `sys/wrapping/unwrap`), single use.
pub fn unwrap_token(state: &Arc<State>, token: &str) -> ApiResult<Vec<u8>> {
    let mut core = state.core();
    core.wraps
        .take(token, SystemTime::now())
        .ok_or_else(|| ApiError::bad_request(INVALID_WRAP))
}
