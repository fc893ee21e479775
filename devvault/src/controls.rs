//! Test controls under `/__devvault/` (never under `/v1/`): seal/unseal,
//! fault injection, a request log, and out-of-band views and revocation of
//! tokens and leases. They need no token: devvault is a dev server.
//! The formats are documented in `devvault/README.md`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::database;
use crate::exchange::HttpOut;
use crate::state::State;
use crate::util;
use crate::util::parse_query;

/// What a fault does to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with `status`, `body` and `headers` instead of handling the request.
    #[default]
    Status,
    /// Only delay (`latency_ms`), then handle normally.
    Latency,
    /// Handle normally, send the headers and `after_bytes` of the body, then close.
    Drop,
    /// Handle normally but send only the first half of the body (valid HTTP, broken JSON).
    Truncate,
    /// Answer 200 with a body that is not JSON.
    InvalidJson,
    /// Answer 200 with a JSON body of `size_mb` megabytes.
    Oversize,
    /// Close the connection without any response.
    Reset,
}

/// A registered fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    #[serde(default)]
    pub id: u64,
    /// Matches request paths starting with this (e.g. `/v1/database/creds/`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Matches this HTTP method only (e.g. `GET`, `PUT`).
    #[serde(default)]
    pub method: Option<String>,
    /// How many matching requests to affect; absent = until cleared.
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub action: FaultAction,
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Delay before answering, for every action.
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub after_bytes: Option<usize>,
    #[serde(default = "default_size")]
    pub size_mb: u64,
}

fn default_status() -> u16 {
    503
}

fn default_size() -> u64 {
    40
}

impl Fault {
    fn matches(&self, method: &str, path: &str) -> bool {
        self.path_prefix
            .as_deref()
            .is_none_or(|p| path.starts_with(p))
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// One request-log line.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub seq: u64,
    /// Arrival, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Arrival, milliseconds since devvault started (monotonic clock).
    pub mono_ms: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub duration_ms: u64,
    /// Id of the fault that affected the request, if any.
    pub fault: Option<u64>,
}

#[derive(Default)]
struct Inner {
    faults: Vec<Fault>,
    next_id: u64,
    log: VecDeque<LogEntry>,
    seq: u64,
}

/// Faults and the request log.
#[derive(Default)]
pub struct Controls {
    inner: Mutex<Inner>,
}

const LOG_CAP: usize = 200_000;

impl Controls {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The first fault matching the request, consuming one of its uses.
    pub fn take_fault(&self, method: &str, path: &str) -> Option<Fault> {
        let mut g = self.lock();
        let idx = g.faults.iter().position(|f| f.matches(method, path))?;
        let f = g.faults[idx].clone();
        if let Some(c) = g.faults[idx].count.as_mut() {
            *c = c.saturating_sub(1);
            if *c == 0 {
                g.faults.remove(idx);
            }
        }
        Some(f)
    }

    /// Appends to the request log.
    pub fn record(&self, mut e: LogEntry) {
        let mut g = self.lock();
        g.seq += 1;
        e.seq = g.seq;
        if g.log.len() >= LOG_CAP {
            g.log.pop_front();
        }
        g.log.push_back(e);
    }
}

fn json_out(status: u16, v: &Value) -> HttpOut {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    HttpOut {
        status,
        headers: Vec::new(),
        body,
    }
}

fn no_content() -> HttpOut {
    HttpOut {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

fn err(status: u16, msg: &str) -> HttpOut {
    json_out(status, &json!({ "errors": [msg] }))
}

fn body_json(body: &[u8]) -> Result<Value, HttpOut> {
    if body.trim_ascii().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| err(400, &format!("invalid JSON body: {e}")))
}

/// Handles `/__devvault/<rest>`.
pub async fn handle(
    state: &Arc<State>,
    method: &str,
    rest: &str,
    query: &str,
    body: &[u8],
) -> HttpOut {
    let q = parse_query(query);
    match (method, rest.trim_end_matches('/')) {
        ("GET", "") => json_out(
            200,
            &json!({
                "endpoints": [
                    "POST /__devvault/seal", "POST /__devvault/unseal",
                    "GET|POST|DELETE /__devvault/faults",
                    "GET|DELETE /__devvault/requests",
                    "GET /__devvault/leases", "GET /__devvault/tokens",
                    "POST /__devvault/revoke-token", "POST /__devvault/revoke-lease"
                ]
            }),
        ),
        ("POST", "seal") => {
            state.core().sealed = true;
            no_content()
        }
        ("POST", "unseal") => {
            state.core().sealed = false;
            no_content()
        }
        ("GET", "faults") => {
            let faults = state.controls.lock().faults.clone();
            json_out(200, &json!({ "faults": faults }))
        }
        ("DELETE", "faults") => {
            state.controls.lock().faults.clear();
            no_content()
        }
        ("POST", "faults") => add_fault(state, body),
        ("GET", "requests") => requests(state, &q),
        ("DELETE", "requests") => {
            state.controls.lock().log.clear();
            no_content()
        }
        ("GET", "leases") => leases(state),
        ("GET", "tokens") => tokens(state),
        ("POST", "revoke-token") => revoke_token(state, body).await,
        ("POST", "revoke-lease") => revoke_lease(state, body).await,
        _ => err(404, "unknown devvault control"),
    }
}

fn add_fault(state: &Arc<State>, body: &[u8]) -> HttpOut {
    let v = match body_json(body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let mut f: Fault = match serde_json::from_value(v) {
        Ok(f) => f,
        Err(e) => return err(400, &format!("invalid fault: {e}")),
    };
    if f.count == Some(0) {
        return err(
            400,
            "count must be at least 1 (omit it for an unlimited fault)",
        );
    }
    let mut g = state.controls.lock();
    g.next_id += 1;
    f.id = g.next_id;
    g.faults.push(f.clone());
    json_out(200, &json!({ "id": f.id, "fault": f }))
}

fn requests(state: &Arc<State>, q: &BTreeMap<String, String>) -> HttpOut {
    let since: i64 = q
        .get("since")
        .and_then(|s| s.parse().ok())
        .unwrap_or(i64::MIN);
    let since_seq: u64 = q.get("since_seq").and_then(|s| s.parse().ok()).unwrap_or(0);
    let prefix = q.get("path_prefix").cloned().unwrap_or_default();
    let g = state.controls.lock();
    let list: Vec<&LogEntry> = g
        .log
        .iter()
        .filter(|e| e.ts_ms >= since && e.seq > since_seq && e.path.starts_with(&prefix))
        .collect();
    json_out(200, &json!({ "requests": list, "last_seq": g.seq }))
}

fn leases(state: &Arc<State>) -> HttpOut {
    let now = SystemTime::now();
    let core = state.core();
    let mut list: Vec<Value> = core
        .leases
        .all()
        .map(|l| {
            json!({
                "lease_id": l.id,
                "issue_time": util::rfc3339_nano(l.issue_time),
                "expire_time": util::rfc3339_nano(l.expire_time),
                "expire_unix_ms": util::unix_millis(l.expire_time),
                "ttl": l.expire_time.duration_since(now).map(|d| d.as_secs()).unwrap_or(0),
                "renewable": l.renewable,
                "last_renewal": l.last_renewal.map(util::rfc3339_nano),
                "username": l.db.username,
                "role": l.db.role,
                "token_accessor": core.tokens.get(&l.token).map(|t| t.accessor.clone()),
            })
        })
        .collect();
    list.sort_by(|a, b| a["lease_id"].as_str().cmp(&b["lease_id"].as_str()));
    json_out(200, &json!({ "leases": list }))
}

fn tokens(state: &Arc<State>) -> HttpOut {
    let now = SystemTime::now();
    let core = state.core();
    let list: Vec<Value> = core
        .tokens
        .all()
        .map(|t| {
            json!({
                "accessor": t.accessor,
                "policies": t.policies,
                "path": t.path,
                "display_name": t.display_name,
                "orphan": t.orphan,
                "parent_accessor": t.parent.as_ref().and_then(|p| core.tokens.get(p)).map(|p| p.accessor.clone()),
                "expire_time": t.expire_time.map(util::rfc3339_nano),
                "expire_unix_ms": t.expire_time.map(util::unix_millis),
                "ttl": t.remaining(now),
                "renewable": t.renewable,
                "num_uses": t.num_uses,
                "lease_count": core.leases.ids_for_token(&t.id).len(),
            })
        })
        .collect();
    json_out(200, &json!({ "tokens": list }))
}

async fn revoke_token(state: &Arc<State>, body: &[u8]) -> HttpOut {
    let v = match body_json(body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let jobs = {
        let mut core = state.core();
        let id = match (
            v.get("token").and_then(Value::as_str),
            v.get("accessor").and_then(Value::as_str),
        ) {
            (Some(t), _) if core.tokens.get(t).is_some() => t.to_string(),
            (_, Some(a)) => match core.tokens.id_by_accessor(a) {
                Some(id) => id,
                None => return err(404, "no such token"),
            },
            _ => return err(404, "no such token"),
        };
        core.revoke_token_tree(&id)
    };
    database::run_jobs(state, jobs).await;
    state.wake.notify_one();
    no_content()
}

async fn revoke_lease(state: &Arc<State>, body: &[u8]) -> HttpOut {
    let v = match body_json(body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let id = v.get("lease_id").and_then(Value::as_str).unwrap_or("");
    let job = state.core().leases.remove(id);
    match job {
        Some(j) => {
            database::run_jobs(state, vec![j]).await;
            no_content()
        }
        None => err(404, "no such lease"),
    }
}
