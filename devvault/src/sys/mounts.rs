//! Secret and auth mount tables (`sys/mounts`, `sys/auth`, their `/tune`), and the
//! KV-version preflight the CLI and the agent use (`sys/internal/ui/mounts/<path>`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use super::str_of;
use crate::acl::Op;
use crate::auth::{approle::Approle, jwt::Jwt, kubernetes::Kubernetes};
use crate::database::DbBackend;
use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply, Req};
use crate::flavor::Flavor;
use crate::job::Job;
use crate::kv::KvStore;
use crate::state::{Backend, Core, MountEntry};
use crate::util;

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
    // The built-in mounts of a dev server, as Vault and OpenBao set them up.
    match e.kind.as_str() {
        "system" => {
            info["seal_wrap"] = json!(true);
            info["config"]["passthrough_request_headers"] = json!(["Accept"]);
        }
        "identity" => {
            info["config"]["passthrough_request_headers"] = json!(["Authorization"]);
        }
        "cubbyhole" => info["local"] = json!(true),
        _ => {}
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

/// A mount table as `sys/mounts` and `sys/auth` list it, keyed by path.
pub(super) fn table(t: &BTreeMap<String, MountEntry>, flavor: Flavor) -> Value {
    Value::Object(
        t.values()
            .map(|e| (e.path.clone(), mount_info(e, flavor)))
            .collect::<Map<String, Value>>(),
    )
}

pub(super) fn ui_mount(core: &Core, req: &Req, raw: &str) -> ApiResult<Reply> {
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

pub(super) fn mounts(core: &mut Core, req: &mut Req, raw: &str) -> ApiResult<Reply> {
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

pub(super) fn auth_mounts(
    core: &mut Core,
    req: &mut Req,
    raw: &str,
) -> ApiResult<(Vec<Job>, Reply)> {
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
