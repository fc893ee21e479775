//! The system backend (`sys/*`), split by endpoint group:
//! - [`health`]: `sys/health`, `sys/seal-status`, `sys/unseal`, `sys/init`, `sys/leader`
//!   (answered while sealed, without a token);
//! - [`mounts`]: the secret and auth mount tables, tuning, and the KV-version preflight
//!   (`sys/internal/ui/mounts`);
//! - [`policies`]: ACL policies and capabilities;
//! - [`wrapping`]: response wrapping;
//! - leases are delegated to [`crate::leases`].

mod health;
mod mounts;
mod policies;
mod wrapping;

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::acl::Op;
use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply, Req};
use crate::leases;
use crate::state::State;

pub use health::handle_unsealed_free;
pub use mounts::mount_info;

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
        return wrapping::handle(state, req, r);
    }
    let mut core = state.core();
    let flavor = core.flavor;
    match rest {
        "mounts" if req.op == Op::Read => Ok(injected(mounts::table(&core.mounts, flavor))),
        "auth" if req.op == Op::Read => Ok(injected(mounts::table(&core.auth_mounts, flavor))),
        "policies/acl/" | "policy" if matches!(req.op, Op::List | Op::Read) => {
            Ok(policies::list(&core, rest == "policy"))
        }
        "capabilities-self" | "capabilities" if is_write(req.op) => {
            policies::capabilities(&core, req)
        }
        "seal" if is_write(req.op) => {
            core.sealed = true;
            Ok(Reply::NoContent)
        }
        "internal/ui/mounts" if req.op == Op::Read => Ok(Reply::Logical(Logical::data(json!({
            "auth": mounts::table(&core.auth_mounts, flavor),
            "secret": mounts::table(&core.mounts, flavor),
        })))),
        r if r.starts_with("internal/ui/mounts/") => {
            mounts::ui_mount(&core, req, &r["internal/ui/mounts/".len()..])
        }
        r if r.starts_with("mounts/") => mounts::mounts(&mut core, req, &r["mounts/".len()..]),
        r if r.starts_with("auth/") => {
            let (jobs, reply) = mounts::auth_mounts(&mut core, req, &r["auth/".len()..])?;
            req.jobs.extend(jobs);
            Ok(reply)
        }
        r if r.starts_with("policies/acl/") => {
            policies::policy(&mut core, req, &r["policies/acl/".len()..], false)
        }
        r if r.starts_with("policy/") => {
            policies::policy(&mut core, req, &r["policy/".len()..], true)
        }
        _ => Err(ApiError::unsupported_path()),
    }
}
