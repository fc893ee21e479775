//! A token's stored entry: plain data plus the views of it that responses need. Its own
//! module so the request types can name the calling token without importing the token
//! store (which handles requests itself).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use crate::envelope::Auth;
use crate::util;

/// One token's stored entry (Vault's `logical.TokenEntry` + lease bookkeeping).
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub id: String,
    pub accessor: String,
    pub policies: Vec<String>,
    /// Parent token id; `None` for orphans.
    pub parent: Option<String>,
    /// Creation path, e.g. `auth/approle/login`.
    pub path: String,
    pub meta: BTreeMap<String, String>,
    pub display_name: String,
    /// Remaining uses; 0 = unlimited.
    pub num_uses: i64,
    pub creation_time: SystemTime,
    /// TTL at creation (`creation_ttl`).
    pub creation_ttl: Duration,
    /// Current lease TTL; zero = never expires (root tokens).
    pub ttl: Duration,
    pub expire_time: Option<SystemTime>,
    pub explicit_max_ttl: Duration,
    /// Default TTL the issuing backend applies on renewal.
    pub renew_ttl: Duration,
    /// Max TTL the issuing backend enforces on renewal (role `token_max_ttl`).
    pub renew_max_ttl: Duration,
    pub period: Duration,
    pub renewable: bool,
    pub last_renewal: Option<SystemTime>,
    pub orphan: bool,
    pub entity_id: String,
    pub role: Option<String>,
    /// Accessor of the auth mount that issued it (for `sys/auth` disable).
    pub mount_accessor: String,
    /// The issuing auth mount's default and max lease TTL (tunable).
    pub mount_default_ttl: Duration,
    pub mount_max_ttl: Duration,
}

impl TokenEntry {
    /// Whether the token is usable at `now`.
    pub fn is_live(&self, now: SystemTime) -> bool {
        self.expire_time.is_none_or(|t| t > now)
    }

    /// Seconds left (0 for non-expiring tokens).
    pub fn remaining(&self, now: SystemTime) -> i64 {
        self.expire_time
            .map(|t| {
                t.duration_since(now)
                    .map(|d| d.as_secs_f64().round() as i64)
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// The `auth` block of a login / create / renew response.
    pub fn auth_block(&self) -> Auth {
        Auth {
            client_token: self.id.clone(),
            accessor: self.accessor.clone(),
            policies: self.policies.clone(),
            token_policies: self.policies.clone(),
            identity_policies: Vec::new(),
            metadata: if self.meta.is_empty() {
                None
            } else {
                Some(self.meta.clone())
            },
            lease_duration: util::secs(self.ttl),
            renewable: self.renewable,
            entity_id: self.entity_id.clone(),
            token_type: "service".to_string(),
            orphan: self.orphan,
            mfa_requirement: None,
            num_uses: self.num_uses,
        }
    }

    /// `data` of `lookup-self` / `lookup` (token_store.go handleLookup).
    pub fn lookup_data(&self, now: SystemTime, hide_id: bool) -> Value {
        let mut m = Map::new();
        m.insert("accessor".into(), json!(self.accessor));
        m.insert(
            "creation_time".into(),
            json!(util::unix_secs(self.creation_time)),
        );
        m.insert("creation_ttl".into(), json!(util::secs(self.creation_ttl)));
        m.insert("display_name".into(), json!(self.display_name));
        m.insert("entity_id".into(), json!(self.entity_id));
        m.insert(
            "expire_time".into(),
            self.expire_time
                .map(|t| json!(util::rfc3339_nano(t)))
                .unwrap_or(Value::Null),
        );
        m.insert(
            "explicit_max_ttl".into(),
            json!(util::secs(self.explicit_max_ttl)),
        );
        m.insert(
            "id".into(),
            json!(if hide_id { "" } else { self.id.as_str() }),
        );
        m.insert(
            "issue_time".into(),
            json!(util::rfc3339_nano(self.creation_time)),
        );
        m.insert(
            "meta".into(),
            if self.meta.is_empty() {
                Value::Null
            } else {
                json!(self.meta)
            },
        );
        m.insert("num_uses".into(), json!(self.num_uses));
        m.insert("orphan".into(), json!(self.orphan));
        m.insert("path".into(), json!(self.path));
        m.insert("policies".into(), json!(self.policies));
        m.insert("renewable".into(), json!(self.renewable));
        m.insert("ttl".into(), json!(self.remaining(now)));
        m.insert("type".into(), json!("service"));
        if let Some(lr) = self.last_renewal {
            m.insert("last_renewal".into(), json!(util::rfc3339_nano(lr)));
            m.insert("last_renewal_time".into(), json!(util::unix_secs(lr)));
        }
        if !self.period.is_zero() {
            m.insert("period".into(), json!(util::secs(self.period)));
        }
        if let Some(r) = &self.role {
            m.insert("role".into(), json!(r));
        }
        Value::Object(m)
    }
}
