//! Response wrapping: a wrapped response is stored under a single-use token
//! with a TTL; `sys/wrapping/unwrap` hands back the original bytes verbatim.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::envelope::WrapInfo;
use crate::util;

/// Vault's error for a missing, used or expired wrapping token.
pub const INVALID_WRAP: &str = "wrapping token is not valid or does not exist";

/// One wrapped response.
#[derive(Debug, Clone)]
pub struct WrapEntry {
    pub accessor: String,
    pub body: Vec<u8>,
    pub ttl: Duration,
    pub creation_time: SystemTime,
    pub creation_path: String,
}

impl WrapEntry {
    fn live(&self, now: SystemTime) -> bool {
        self.creation_time + self.ttl > now
    }
}

/// Wrapping tokens → wrapped responses.
#[derive(Default)]
pub struct WrapStore {
    by_token: HashMap<String, WrapEntry>,
}

impl WrapStore {
    /// Stores `body` and returns the `wrap_info` to send instead.
    pub fn wrap(
        &mut self,
        token_prefix: &str,
        body: Vec<u8>,
        ttl: Duration,
        creation_path: &str,
        wrapped_accessor: String,
    ) -> WrapInfo {
        let now = SystemTime::now();
        let token = format!("{token_prefix}{}", util::random_base62(24));
        let accessor = util::random_base62(24);
        self.by_token.insert(
            token.clone(),
            WrapEntry {
                accessor: accessor.clone(),
                body,
                ttl,
                creation_time: now,
                creation_path: creation_path.trim_end_matches('/').to_string(),
            },
        );
        WrapInfo {
            token,
            accessor,
            ttl: util::secs(ttl),
            creation_time: util::rfc3339_nano(now),
            creation_path: creation_path.trim_end_matches('/').to_string(),
            wrapped_accessor,
        }
    }

    pub fn contains(&self, token: &str) -> bool {
        self.by_token.contains_key(token)
    }

    /// Single-use retrieval.
    pub fn take(&mut self, token: &str, now: SystemTime) -> Option<Vec<u8>> {
        let e = self.by_token.remove(token)?;
        e.live(now).then_some(e.body)
    }

    /// `sys/wrapping/lookup` data.
    pub fn lookup(&self, token: &str, now: SystemTime) -> Option<Value> {
        let e = self.by_token.get(token).filter(|e| e.live(now))?;
        Some(json!({
            "creation_path": e.creation_path,
            "creation_time": util::rfc3339_nano(e.creation_time),
            "creation_ttl": util::secs(e.ttl),
        }))
    }

    /// Drops expired entries.
    pub fn purge(&mut self, now: SystemTime) {
        self.by_token.retain(|_, e| e.live(now));
    }

    /// Accessors, for diagnostics.
    pub fn accessors(&self) -> Vec<String> {
        self.by_token.values().map(|e| e.accessor.clone()).collect()
    }
}
