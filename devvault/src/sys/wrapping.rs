//! Response wrapping: `sys/wrapping/unwrap`, `lookup` and `wrap`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{is_write, str_of};
use crate::acl::Op;
use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply, Req};
use crate::state::State;
use crate::wrapping::INVALID_WRAP;

pub(super) fn handle(state: &Arc<State>, req: &mut Req, rest: &str) -> ApiResult<Reply> {
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
