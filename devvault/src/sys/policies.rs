//! ACL policies (`sys/policies/acl/*`, legacy `sys/policy/*`) and capability checks
//! (`sys/capabilities`, `sys/capabilities-self`).

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::{injected, str_of};
use crate::acl::{cap, Op, Policy};
use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply, Req};
use crate::flavor::Flavor;
use crate::state::Core;
use crate::util;

/// `LIST sys/policies/acl` and the legacy `GET sys/policy` (with the keys injected).
pub(super) fn list(core: &Core, legacy: bool) -> Reply {
    let mut keys: Vec<String> = core.policies.keys().cloned().collect();
    keys.push("root".into());
    keys.sort();
    if legacy {
        injected(json!({ "keys": keys, "policies": keys }))
    } else {
        Reply::Logical(Logical::data(json!({ "keys": keys })))
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

pub(super) fn capabilities(core: &Core, req: &Req) -> ApiResult<Reply> {
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
    if let Some(p) = req.data.get("path") {
        paths.extend(util::comma_list(p));
    }
    if paths.is_empty() {
        return Err(ApiError::bad_request("paths must be supplied"));
    }
    let root = policies.iter().any(|p| p == "root");
    let acl = core.acl_for(&policies);
    let mut m = Map::new();
    for p in &paths {
        let caps = capability_names(acl.capabilities(p, Op::Read), root);
        m.insert(p.clone(), json!(caps));
    }
    // Kept for old clients, and only for a single path (`handleCapabilities`).
    if let [only] = paths.as_slice() {
        if let Some(caps) = m.get(only).cloned() {
            m.insert("capabilities".into(), caps);
        }
    }
    Ok(injected(Value::Object(m)))
}

pub(super) fn policy(core: &mut Core, req: &Req, raw: &str, legacy: bool) -> ApiResult<Reply> {
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
