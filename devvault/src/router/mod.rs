//! Request pipeline for `/v1/`: parse the request the way Vault's `http/`
//! package does, check seal state, token and ACL, dispatch to the engine
//! that owns the path, run revocation jobs, optionally wrap the response,
//! and render the envelope.
//!
//! This file is the pipeline itself; reading the request is in `parse`,
//! writing the answer in `render`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::HeaderMap;
use serde_json::{Map, Value};

use crate::acl::{cap, Op};
use crate::auth;
use crate::database;
use crate::envelope::{self, HttpResponse};
use crate::error::{ApiError, ApiResult};
use crate::exchange::{HttpOut, Logical, Reply, Req};
use crate::flavor::Flavor;
use crate::kv;
use crate::state::{Backend, State};
use crate::sys;
use crate::tokens;
use crate::util;

mod parse;
mod render;

pub use parse::is_login;
use parse::{header, needs_sudo, parse_body, parse_wrap_ttl, token_of, unauthenticated};
use render::{render, wrap_reply};

/// Handles one `/v1/...` request end to end.
pub async fn handle_v1(
    state: &Arc<State>,
    method: &str,
    logical_path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> HttpOut {
    let request_id = util::uuid();
    match dispatch(
        state,
        method,
        logical_path,
        query,
        headers,
        body,
        &request_id,
    )
    .await
    {
        Ok((reply, mount_type, path)) => render(state, reply, &request_id, &mount_type, &path),
        Err(e) => HttpOut::error(&e),
    }
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    state: &Arc<State>,
    method: &str,
    logical_path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
) -> ApiResult<(Reply, String, String)> {
    let query = util::parse_query(query);
    let content_type = header(headers, "content-type").unwrap_or("").to_string();
    let list_param = query
        .get("list")
        .map(|v| util::parse_bool_str(v).unwrap_or(false))
        .unwrap_or(false);
    let op = match method {
        "GET" if list_param => Op::List,
        "GET" | "HEAD" => Op::Read,
        "LIST" => Op::List,
        "POST" | "PUT" => Op::Update,
        "DELETE" => Op::Delete,
        "PATCH" => Op::Patch,
        _ => {
            return Err(ApiError {
                status: 405,
                errors: Vec::new(),
                data: None,
            })
        }
    };
    let mut path = util::percent_decode_path(logical_path);
    if op == Op::List && !path.ends_with('/') {
        path.push('/');
    }
    if op == Op::Patch && !content_type.starts_with("application/merge-patch+json") {
        return Err(ApiError::new(
            415,
            format!("PATCH requires Content-Type of application/merge-patch+json, provided {content_type}"),
        ));
    }
    let mut data = if matches!(op, Op::Update | Op::Patch) {
        parse_body(&content_type, body)?
    } else {
        Map::new()
    };
    for (k, v) in &query {
        if k != "list" && !data.contains_key(k) {
            data.insert(k.clone(), Value::String(v.clone()));
        }
    }
    let mut req = Req {
        request_id: request_id.to_string(),
        op,
        path: path.clone(),
        data,
        raw_token: token_of(headers),
        caller: None,
        wrap_ttl: None,
        is_head: method == "HEAD",
        query,
        content_type,
        jobs: Vec::new(),
    };

    // Health and seal status answer even while sealed.
    if matches!(
        path.as_str(),
        "sys/health" | "sys/seal-status" | "sys/leader" | "sys/init" | "sys/unseal"
    ) {
        let reply = sys::handle_unsealed_free(state, &mut req)?;
        return Ok((reply, "system".into(), path));
    }
    if state.core().sealed {
        return Err(ApiError::sealed());
    }
    req.wrap_ttl = parse_wrap_ttl(headers)?;
    if req.is_head {
        return Err(ApiError {
            status: 405,
            errors: Vec::new(),
            data: None,
        });
    }

    let exhausted = authorize(state, &mut req)?;
    let mount_type = mount_type_of(state, &path);
    let result = route(state, &mut req).await;

    if let Some(id) = exhausted {
        let jobs = state.core().revoke_token_tree(&id);
        req.jobs.extend(jobs);
    }
    let jobs = std::mem::take(&mut req.jobs);
    database::run_jobs(state, jobs).await;
    let reply = result?;

    // Response wrapping replaces any logical response by a wrapping token.
    if let (Some(ttl), Reply::Logical(l)) = (req.wrap_ttl, &reply) {
        if l.status.is_none() {
            let wrapped = wrap_reply(state, &req, l, &mount_type, ttl);
            return Ok((wrapped, mount_type, path));
        }
    }
    Ok((reply, mount_type, path))
}

/// Validates the token and the ACL. Returns the token id when this request
/// used its last allowed use (it is revoked after the request).
fn authorize(state: &Arc<State>, req: &mut Req) -> ApiResult<Option<String>> {
    let now = SystemTime::now();
    let mut core = state.core();
    let flavor = core.flavor;
    let token = req.raw_token.clone();
    let public = unauthenticated(&req.path);
    // A response-wrapping token may only unwrap / look itself up.
    if let Some(t) = &token {
        if core.wraps.contains(t) {
            return if matches!(
                req.path.as_str(),
                "sys/wrapping/unwrap" | "sys/wrapping/lookup"
            ) {
                Ok(None)
            } else {
                Err(ApiError::permission_denied())
            };
        }
    }
    // Unwrapping with the wrapping token in the header: the handler itself
    // answers 400 for a used, expired or unknown wrapping token.
    let body_token = req
        .data
        .get("token")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    // `sys/wrapping/lookup` is an unauthenticated path: anyone holding a wrapping token may
    // look it up, with the token in the header or in the body.
    if req.path == "sys/wrapping/lookup" || (req.path == "sys/wrapping/unwrap" && !body_token) {
        return Ok(None);
    }
    let Some(t) = token else {
        return if public {
            Ok(None)
        } else {
            Err(ApiError::missing_token(flavor))
        };
    };
    let entry = match core.tokens.live(&t, now) {
        Some(e) => e.clone(),
        None if public && is_login(&req.path) => return Ok(None),
        None => return Err(ApiError::invalid_token(flavor)),
    };
    if !public || req.path == "sys/wrapping/unwrap" {
        let existing = kv::exists(&core, &req.path);
        let op = match (req.op, existing) {
            (Op::Update, Some(false)) => Op::Create,
            (o, _) => o,
        };
        let acl = core.acl_for(&entry.policies);
        if !acl.allowed(&req.path, op) {
            return Err(ApiError::permission_denied());
        }
        if needs_sudo(&req.path, req.op) && acl.capabilities(&req.path, op) & cap::SUDO == 0 {
            return Err(ApiError::permission_denied());
        }
    }
    let mut exhausted = None;
    if entry.num_uses > 0 {
        if let Some(e) = core.tokens.get_mut(&t) {
            e.num_uses -= 1;
            if e.num_uses == 0 {
                exhausted = Some(t.clone());
            }
        }
    }
    req.caller = Some(entry);
    Ok(exhausted)
}

/// The `mount_type` envelope value for a path.
fn mount_type_of(state: &Arc<State>, path: &str) -> String {
    if path.starts_with("sys/") {
        return "system".into();
    }
    if is_login(path) {
        return String::new();
    }
    let core = state.core();
    if let Some(rest) = path.strip_prefix("auth/") {
        return core
            .find_auth_mount(rest)
            .and_then(|m| core.auth_mounts.get(&m).map(|e| e.kind.clone()))
            .unwrap_or_default();
    }
    core.find_mount(path)
        .and_then(|m| core.mounts.get(&m).map(|e| e.kind.clone()))
        .unwrap_or_default()
}

fn no_route(path: &str) -> ApiError {
    ApiError::new(
        404,
        format!("no handler for route {path:?}. route entry not found."),
    )
}

/// Sends the request to the engine owning its path.
async fn route(state: &Arc<State>, req: &mut Req) -> ApiResult<Reply> {
    let path = req.path.clone();
    if let Some(rest) = path.strip_prefix("sys/") {
        return sys::handle(state, req, rest).await;
    }
    if let Some(rest) = path.strip_prefix("auth/") {
        let (mount, kind) = {
            let core = state.core();
            let m = core.find_auth_mount(rest).ok_or_else(|| no_route(&path))?;
            let kind = core
                .auth_mounts
                .get(&m)
                .map(|e| e.kind.clone())
                .unwrap_or_default();
            (m, kind)
        };
        let sub = rest.get(mount.len()..).unwrap_or("").to_string();
        let mut core = state.core();
        return match kind.as_str() {
            "token" => tokens::handle(&mut core, req, &sub),
            "approle" => auth::approle::handle(&mut core, req, &mount, &sub),
            "kubernetes" => auth::kubernetes::handle(&mut core, req, &mount, &sub),
            "jwt" | "oidc" => auth::jwt::handle(&mut core, req, &mount, &sub),
            _ => Err(ApiError::unsupported_path()),
        };
    }
    let (mount, is_db) = {
        let core = state.core();
        let m = core.find_mount(&path).ok_or_else(|| no_route(&path))?;
        let is_db = matches!(
            core.mounts.get(&m).map(|e| &e.backend),
            Some(Backend::Database(_))
        );
        (m, is_db)
    };
    let sub = path.get(mount.len()..).unwrap_or("").to_string();
    if is_db {
        return database::handle(state, req, &mount, &sub).await;
    }
    let mut core = state.core();
    kv::handle(&mut core, req, &mount, &sub)
}
