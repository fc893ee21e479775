//! `sys/health`, `sys/seal-status`, `sys/unseal`, `sys/init` and `sys/leader`: the
//! endpoints that answer while sealed and without a token.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::json;

use crate::acl::Op;
use crate::envelope;
use crate::error::{ApiError, ApiResult};
use crate::exchange::{Reply, Req};
use crate::flavor::Flavor;
use crate::state::State;
use crate::util;

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
