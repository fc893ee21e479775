//! The token store (`auth/token/*`): service tokens with TTL, max TTL,
//! periods, use counts and a parent/child tree. Revoking a token revokes its
//! children and every lease it owns; expiry does the same via the scheduler.
//!
//! This file is the store and the token lifecycle (issue, renew); the HTTP
//! endpoints live in `endpoints`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::exchange::{Logical, Reply, Req};
use crate::flavor::Flavor;
use crate::leases::{calculate_ttl, TtlInput};
use crate::state::{Core, SYSTEM_DEFAULT_TTL, SYSTEM_MAX_TTL};
use crate::token_entry::TokenEntry;
use crate::util;

mod endpoints;

pub use endpoints::handle;

/// All tokens, indexed by id and accessor, with the parent→children tree.
#[derive(Default)]
pub struct TokenStore {
    by_id: HashMap<String, TokenEntry>,
    by_accessor: HashMap<String, String>,
    children: HashMap<String, Vec<String>>,
}

impl TokenStore {
    /// The `--root-token`: root policy, no TTL, orphan.
    pub fn insert_root(&mut self, id: &str) {
        let now = SystemTime::now();
        self.insert(TokenEntry {
            id: id.to_string(),
            accessor: util::random_base62(24),
            policies: vec!["root".into()],
            parent: None,
            path: "auth/token/root".into(),
            meta: BTreeMap::new(),
            display_name: "root".into(),
            num_uses: 0,
            creation_time: now,
            creation_ttl: Duration::ZERO,
            ttl: Duration::ZERO,
            expire_time: None,
            explicit_max_ttl: Duration::ZERO,
            renew_ttl: Duration::ZERO,
            renew_max_ttl: Duration::ZERO,
            period: Duration::ZERO,
            renewable: false,
            last_renewal: None,
            orphan: true,
            entity_id: String::new(),
            role: None,
            mount_accessor: String::new(),
            mount_default_ttl: SYSTEM_DEFAULT_TTL,
            mount_max_ttl: SYSTEM_MAX_TTL,
        });
    }

    pub fn insert(&mut self, e: TokenEntry) {
        if let Some(p) = &e.parent {
            self.children
                .entry(p.clone())
                .or_default()
                .push(e.id.clone());
        }
        self.by_accessor.insert(e.accessor.clone(), e.id.clone());
        self.by_id.insert(e.id.clone(), e);
    }

    pub fn get(&self, id: &str) -> Option<&TokenEntry> {
        self.by_id.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut TokenEntry> {
        self.by_id.get_mut(id)
    }

    /// A token that exists and has not expired.
    pub fn live(&self, id: &str, now: SystemTime) -> Option<&TokenEntry> {
        self.by_id.get(id).filter(|e| e.is_live(now))
    }

    pub fn id_by_accessor(&self, accessor: &str) -> Option<String> {
        self.by_accessor.get(accessor).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &TokenEntry> {
        self.by_id.values()
    }

    fn remove_one(&mut self, id: &str) -> Option<TokenEntry> {
        let e = self.by_id.remove(id)?;
        self.by_accessor.remove(&e.accessor);
        if let Some(p) = &e.parent {
            if let Some(sibs) = self.children.get_mut(p) {
                sibs.retain(|c| c != id);
            }
        }
        Some(e)
    }

    /// Removes the token and all descendants; returns the removed ids.
    pub fn revoke_tree(&mut self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![id.to_string()];
        while let Some(cur) = stack.pop() {
            if let Some(kids) = self.children.remove(&cur) {
                stack.extend(kids);
            }
            if self.remove_one(&cur).is_some() {
                out.push(cur);
            }
        }
        out
    }

    /// Removes only the token; its children become orphans.
    pub fn revoke_orphan(&mut self, id: &str) -> Vec<String> {
        if let Some(kids) = self.children.remove(id) {
            for k in kids {
                if let Some(c) = self.by_id.get_mut(&k) {
                    c.parent = None;
                    c.orphan = true;
                }
            }
        }
        self.remove_one(id)
            .map(|_| vec![id.to_string()])
            .unwrap_or_default()
    }

    pub fn expired(&self, now: SystemTime) -> Vec<String> {
        self.by_id
            .values()
            .filter(|e| !e.is_live(now))
            .map(|e| e.id.clone())
            .collect()
    }

    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.by_id.values().filter_map(|e| e.expire_time).min()
    }
}

/// What a new token should look like; built by token create and by logins.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub policies: Vec<String>,
    pub no_default_policy: bool,
    pub meta: BTreeMap<String, String>,
    pub display_name: String,
    pub path: String,
    pub parent: Option<String>,
    pub ttl: Duration,
    pub max_ttl: Duration,
    pub explicit_max_ttl: Duration,
    pub period: Duration,
    pub renewable: bool,
    pub num_uses: i64,
    pub entity_id: String,
    pub role: Option<String>,
    pub mount_accessor: String,
}

/// Creates and stores a token; returns it with any TTL-capping warnings.
pub fn issue(core: &mut Core, spec: TokenSpec) -> ApiResult<(TokenEntry, Vec<String>)> {
    let now = SystemTime::now();
    let (sys_default, sys_max) = core
        .auth_mounts
        .values()
        .find(|m| m.accessor == spec.mount_accessor)
        .map(|m| (m.default_ttl(), m.max_ttl()))
        .unwrap_or((SYSTEM_DEFAULT_TTL, SYSTEM_MAX_TTL));
    let policies = util::sanitize_policies(spec.policies.clone(), !spec.no_default_policy);
    let is_root = policies.iter().any(|p| p == "root");
    let (ttl, warnings) = if spec.period.is_zero() && spec.ttl.is_zero() && is_root {
        (Duration::ZERO, Vec::new())
    } else {
        calculate_ttl(
            &TtlInput {
                sys_default,
                sys_max,
                increment: Duration::ZERO,
                backend_ttl: spec.ttl,
                period: spec.period,
                backend_max: spec.max_ttl,
                explicit_max: spec.explicit_max_ttl,
                start: now,
            },
            now,
        )
        .map_err(ApiError::bad_request)?
    };
    let entry = TokenEntry {
        id: format!("{}{}", core.flavor.token_prefix(), util::random_base62(24)),
        accessor: util::random_base62(24),
        policies,
        orphan: spec.parent.is_none(),
        parent: spec.parent,
        path: spec.path,
        meta: spec.meta,
        display_name: spec.display_name,
        num_uses: spec.num_uses,
        creation_time: now,
        creation_ttl: ttl,
        ttl,
        expire_time: if ttl.is_zero() { None } else { Some(now + ttl) },
        explicit_max_ttl: spec.explicit_max_ttl,
        renew_ttl: spec.ttl,
        renew_max_ttl: spec.max_ttl,
        period: spec.period,
        renewable: spec.renewable && !ttl.is_zero(),
        last_renewal: None,
        entity_id: spec.entity_id,
        role: spec.role,
        mount_accessor: spec.mount_accessor,
        mount_default_ttl: sys_default,
        mount_max_ttl: sys_max,
    };
    core.tokens.insert(entry.clone());
    Ok((entry, warnings))
}

/// Renews a token (`renew-self`, `renew`), capping at its max TTL.
pub fn renew(
    core: &mut Core,
    id: &str,
    increment: Duration,
) -> ApiResult<(TokenEntry, Vec<String>)> {
    let now = SystemTime::now();
    let flavor = core.flavor;
    let e = core
        .tokens
        .get_mut(id)
        .filter(|e| e.is_live(now))
        .ok_or_else(|| ApiError::invalid_token(flavor))?;
    if !e.renewable || e.expire_time.is_none() {
        return Err(ApiError::bad_request("lease is not renewable"));
    }
    let (ttl, warnings) = calculate_ttl(
        &TtlInput {
            sys_default: e.mount_default_ttl,
            sys_max: e.mount_max_ttl,
            increment,
            backend_ttl: e.renew_ttl,
            period: e.period,
            backend_max: e.renew_max_ttl,
            explicit_max: e.explicit_max_ttl,
            start: e.creation_time,
        },
        now,
    )
    .map_err(ApiError::bad_request)?;
    e.ttl = ttl;
    e.expire_time = Some(now + ttl);
    e.last_renewal = Some(now);
    Ok((e.clone(), warnings))
}
