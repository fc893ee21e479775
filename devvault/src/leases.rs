//! Leases (`sys/leases/*`) and Vault's TTL arithmetic (`CalculateTTL`).
//! Every lease belongs to the token that created it; revoking or expiring
//! that token revokes the lease. Revocation of a database lease drops the user.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use crate::acl::Op;
use crate::database;
use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply, Req};
use crate::flavor::Flavor;
use crate::job::{DbLease, Job};
use crate::state::{Backend, State};
use crate::util;

/// Inputs of [`calculate_ttl`], named after `framework.CalculateTTL`'s arguments.
pub struct TtlInput {
    pub sys_default: Duration,
    pub sys_max: Duration,
    pub increment: Duration,
    pub backend_ttl: Duration,
    pub period: Duration,
    pub backend_max: Duration,
    pub explicit_max: Duration,
    pub start: SystemTime,
}

/// Vault's `sdk/framework/lease.go CalculateTTL`, including its warnings and
/// the `past the max TTL, cannot renew` error. Times are truncated to seconds
/// like Vault does, so remaining-time math yields whole seconds.
pub fn calculate_ttl(i: &TtlInput, now: SystemTime) -> Result<(Duration, Vec<String>), String> {
    let now = util::truncate_secs(now);
    let start = util::truncate_secs(i.start);
    let mut warnings = Vec::new();
    let mut max_ttl = i.sys_max;
    if !i.backend_max.is_zero() && i.backend_max < max_ttl {
        max_ttl = i.backend_max;
    }
    if !i.explicit_max.is_zero() && i.explicit_max < max_ttl {
        max_ttl = i.explicit_max;
    }
    if max_ttl.is_zero() {
        return Err("max TTL must be greater than zero".into());
    }
    let mut ttl;
    let mut max_valid: Option<SystemTime> = None;
    if !i.period.is_zero() {
        let mut period = i.period;
        if period > max_ttl {
            warnings.push(format!(
                "period of {:?} exceeded the effective max_ttl of {:?}; period value is capped accordingly",
                util::human_duration(period),
                util::human_duration(max_ttl)
            ));
            period = max_ttl;
        }
        ttl = period;
        if !i.explicit_max.is_zero() {
            max_valid = Some(start + i.explicit_max);
        }
    } else {
        ttl = if !i.increment.is_zero() {
            i.increment
        } else if !i.backend_ttl.is_zero() {
            i.backend_ttl
        } else {
            i.sys_default
        };
        max_valid = Some(start + max_ttl);
    }
    if let Some(mv) = max_valid {
        let left = mv.duration_since(now).unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return Err("past the max TTL, cannot renew".into());
        }
        if left < ttl {
            warnings.push(format!(
                "TTL of {:?} exceeded the effective max_ttl of {:?}; TTL value is capped accordingly",
                util::human_duration(ttl),
                util::human_duration(left)
            ));
            ttl = left;
        }
    }
    Ok((ttl, warnings))
}

/// A secret lease.
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: String,
    pub token: String,
    pub issue_time: SystemTime,
    pub expire_time: SystemTime,
    pub last_renewal: Option<SystemTime>,
    pub renewable: bool,
    pub db: DbLease,
}

/// All live leases, indexed by owning token.
#[derive(Default)]
pub struct LeaseStore {
    by_id: HashMap<String, Lease>,
    by_token: HashMap<String, HashSet<String>>,
}

impl LeaseStore {
    pub fn insert(&mut self, l: Lease) {
        self.by_token
            .entry(l.token.clone())
            .or_default()
            .insert(l.id.clone());
        self.by_id.insert(l.id.clone(), l);
    }

    pub fn get(&self, id: &str) -> Option<&Lease> {
        self.by_id.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Lease> {
        self.by_id.get_mut(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Lease> {
        self.by_id.values()
    }

    pub fn ids_for_token(&self, token: &str) -> Vec<String> {
        self.by_token
            .get(token)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets the lease and returns the revocation work for it.
    pub fn remove(&mut self, id: &str) -> Option<Job> {
        let l = self.by_id.remove(id)?;
        if let Some(s) = self.by_token.get_mut(&l.token) {
            s.remove(id);
            if s.is_empty() {
                self.by_token.remove(&l.token);
            }
        }
        Some(Job::RevokeDb {
            lease_id: l.id,
            lease: l.db,
            attempt: 0,
        })
    }

    pub fn expired(&self, now: SystemTime) -> Vec<String> {
        self.by_id
            .values()
            .filter(|l| l.expire_time <= now)
            .map(|l| l.id.clone())
            .collect()
    }

    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.by_id.values().map(|l| l.expire_time).min()
    }

    pub fn ids_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.by_id
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

fn lease_id_of(req: &Req, url_rest: &str) -> String {
    match req.data.get("lease_id").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => url_rest.trim_start_matches('/').to_string(),
    }
}

/// Dispatches `sys/leases/<rest>` (and the legacy `sys/renew`, `sys/revoke`).
pub async fn handle(state: &Arc<State>, req: &mut Req, rest: &str) -> ApiResult<Reply> {
    let write = matches!(req.op, Op::Update | Op::Create);
    let (verb, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    match verb {
        "renew" if write => {
            let id = lease_id_of(req, tail);
            let inc = req
                .data
                .get("increment")
                .map(util::parse_duration)
                .transpose()
                .map_err(ApiError::bad_request)?
                .unwrap_or_default();
            renew(state, &id, inc).await
        }
        "revoke" if write => {
            let id = lease_id_of(req, tail);
            if id.is_empty() {
                return Err(ApiError::bad_request("lease_id must be specified"));
            }
            let sync = sync_flag(req, state.flavor)?;
            let job = state.core().leases.remove(&id);
            req.jobs.extend(job);
            Ok(if sync {
                Reply::NoContent
            } else {
                Reply::Accepted
            })
        }
        "revoke-prefix" | "revoke-force" if write => {
            let prefix = tail.trim_start_matches('/').to_string();
            let sync = sync_flag(req, state.flavor)?;
            let mut core = state.core();
            for id in core.leases.ids_with_prefix(&prefix) {
                if let Some(j) = core.leases.remove(&id) {
                    req.jobs.push(j);
                }
            }
            Ok(if sync || verb == "revoke-force" {
                Reply::NoContent
            } else {
                Reply::Accepted
            })
        }
        "lookup" if write => {
            let id = lease_id_of(req, "");
            let core = state.core();
            let l = core
                .leases
                .get(&id)
                .ok_or_else(|| ApiError::bad_request("invalid lease"))?;
            Ok(Reply::Logical(Logical::data(lookup_data(l, state.flavor))))
        }
        "lookup" if req.op == Op::List => {
            let prefix = tail.trim_start_matches('/');
            let core = state.core();
            let mut keys: Vec<String> = core
                .leases
                .ids_with_prefix(prefix)
                .into_iter()
                .map(|k| {
                    let rest = &k[prefix.len()..];
                    match rest.find('/') {
                        Some(i) => rest[..=i].to_string(),
                        None => rest.to_string(),
                    }
                })
                .collect();
            keys.sort();
            keys.dedup();
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Reply::Logical(Logical::data(json!({ "keys": keys }))))
        }
        "tidy" if write => Ok(Reply::Accepted),
        "renew" | "revoke" | "revoke-prefix" | "revoke-force" | "lookup" | "tidy" => {
            Err(ApiError::unsupported_operation())
        }
        _ => Err(ApiError::unsupported_path()),
    }
}

/// `sync` of the revoke endpoints: Vault queues by default (202), OpenBao 2.7 revokes
/// before answering (204) unless `sync=false`.
fn sync_flag(req: &Req, flavor: Flavor) -> ApiResult<bool> {
    req.data
        .get("sync")
        .map(util::parse_bool)
        .transpose()
        .map_err(ApiError::bad_request)
        .map(|b| b.unwrap_or(flavor == Flavor::OpenBao))
}

fn lookup_data(l: &Lease, flavor: Flavor) -> Value {
    let now = SystemTime::now();
    let mut m = Map::new();
    m.insert(
        "expire_time".into(),
        json!(util::rfc3339_nano(l.expire_time)),
    );
    m.insert("id".into(), json!(l.id));
    m.insert("issue_time".into(), json!(util::rfc3339_nano(l.issue_time)));
    m.insert(
        "last_renewal".into(),
        l.last_renewal
            .map(|t| json!(util::rfc3339_nano(t)))
            .unwrap_or(Value::Null),
    );
    // OpenBao also names the path that issued the lease (the id without its suffix).
    if flavor == Flavor::OpenBao {
        let path = l.id.rsplit_once('/').map_or(l.id.as_str(), |(p, _)| p);
        m.insert("path".into(), json!(path));
    }
    m.insert("renewable".into(), json!(l.renewable));
    let ttl = l
        .expire_time
        .duration_since(now)
        .map(|d| d.as_secs_f64().round() as i64)
        .unwrap_or(0);
    m.insert("ttl".into(), json!(ttl));
    Value::Object(m)
}

/// Renews a lease: TTL math under the lock, `VALID UNTIL` update in
/// PostgreSQL outside it, then the new expiry is recorded.
pub async fn renew(state: &Arc<State>, id: &str, increment: Duration) -> ApiResult<Reply> {
    if id.is_empty() {
        return Err(ApiError::bad_request("lease_id must be specified"));
    }
    if id.starts_with("auth/") {
        return Err(ApiError::bad_request(
            "tokens cannot be renewed through this endpoint",
        ));
    }
    let now = SystemTime::now();
    let (db, ttl, warnings) = {
        let core = state.core();
        let l = core
            .leases
            .get(id)
            .ok_or_else(|| ApiError::bad_request("lease not found"))?;
        if l.expire_time <= now {
            return Err(ApiError::bad_request("lease expired"));
        }
        if !l.renewable {
            return Err(ApiError::bad_request("lease is not renewable"));
        }
        let mount = core.mounts.get(&l.db.mount);
        let role = mount.and_then(|m| match &m.backend {
            Backend::Database(b) => b.roles.get(&l.db.role).cloned(),
            _ => None,
        });
        let Some(role) = role else {
            return Err(ApiError::bad_request(format!(
                "failed to renew entry: resp: (*logical.Response)(nil) err: error during renew: could not find role with name {:?}",
                l.db.role
            )));
        };
        let (sys_default, sys_max) = mount.map(|m| (m.default_ttl(), m.max_ttl())).unwrap_or((
            crate::state::SYSTEM_DEFAULT_TTL,
            crate::state::SYSTEM_MAX_TTL,
        ));
        let (ttl, warnings) = calculate_ttl(
            &TtlInput {
                sys_default,
                sys_max,
                increment,
                backend_ttl: role.default_ttl,
                period: Duration::ZERO,
                backend_max: role.max_ttl,
                explicit_max: Duration::ZERO,
                start: l.issue_time,
            },
            now,
        )
        .map_err(ApiError::bad_request)?;
        let mut db = l.db.clone();
        db.renew = role.renew_statements.clone();
        (db, ttl, warnings)
    };
    database::renew_user(state, &db, now + ttl + Duration::from_secs(5))
        .await
        .map_err(|e| {
            ApiError::internal(&format!(
                "failed to renew entry: resp: (*logical.Response)(nil) err: {e}"
            ))
        })?;
    {
        let mut core = state.core();
        let l = core
            .leases
            .get_mut(id)
            .ok_or_else(|| ApiError::bad_request("lease not found"))?;
        l.expire_time = now + ttl;
        l.last_renewal = Some(now);
    }
    state.wake.notify_one();
    Ok(Reply::Logical(Logical {
        lease_id: id.to_string(),
        renewable: true,
        lease_duration: util::secs(ttl),
        warnings,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn input(start: SystemTime, inc: u64, ttl: u64, max: u64) -> TtlInput {
        TtlInput {
            sys_default: Duration::from_secs(2_764_800),
            sys_max: Duration::from_secs(2_764_800),
            increment: Duration::from_secs(inc),
            backend_ttl: Duration::from_secs(ttl),
            period: Duration::ZERO,
            backend_max: Duration::from_secs(max),
            explicit_max: Duration::ZERO,
            start,
        }
    }

    #[test]
    fn caps_with_vault_warning() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (ttl, w) = calculate_ttl(&input(start, 0, 3600, 100), start).unwrap();
        assert_eq!(ttl, Duration::from_secs(100));
        assert_eq!(
            w,
            vec!["TTL of \"1h\" exceeded the effective max_ttl of \"1m40s\"; TTL value is capped accordingly"]
        );
        let later = start + Duration::from_secs(100);
        assert_eq!(
            calculate_ttl(&input(start, 0, 3600, 100), later).unwrap_err(),
            "past the max TTL, cannot renew"
        );
    }

    #[test]
    fn increment_wins_over_default() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (ttl, w) = calculate_ttl(&input(start, 30, 3600, 7200), start).unwrap();
        assert_eq!(ttl, Duration::from_secs(30));
        assert!(w.is_empty());
    }
}
