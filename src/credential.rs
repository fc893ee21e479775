//! The credential as the rest of the agent sees it, whatever kind of secret produced it.
//!
//! Secret values live only in [`SecretValue`], whose `Debug` and `Display` never show the value,
//! so a stray `{:?}` in a log line or an error cannot leak a password.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

/// A string that must never be printed: passwords, tokens, secret-ids, JWTs.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself; call only where it is sent to Vault or rendered into the output file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl serde::Serialize for SecretValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Serialization is only used to render the output file, where the value belongs.
        s.serialize_str(&self.0)
    }
}

/// What kind of secret engine a credential came from; decides how it is kept alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretKind {
    /// `database/creds/<role>`: a leased, renewable, per-issue database user.
    Dynamic,
    /// `database/static-creds/<role>`: a fixed user whose password Vault rotates.
    Static,
    /// KV version 2 (`<mount>/data/<path>`): versioned, no lease.
    KvV2,
    /// KV version 1: plain key/value, advisory TTL only.
    KvV1,
    /// Anything else that answers a read with `data` (and maybe a lease).
    Generic,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Dynamic => "dynamic",
            SecretKind::Static => "static",
            SecretKind::KvV2 => "kv-v2",
            SecretKind::KvV1 => "kv-v1",
            SecretKind::Generic => "generic",
        }
    }
}

/// One issued credential: what is rendered into the output file.
///
/// `fields` holds every key Vault returned in `data` (for KV, the inner `data.data`), so
/// templates can use keys beyond username and password. Non-string values keep their JSON form.
#[derive(Clone)]
pub struct Credential {
    /// The database user name, when the secret has one (database kinds, or a KV `username` key).
    pub username: Option<String>,
    /// The password, when the secret has one.
    pub password: Option<SecretValue>,
    /// When the credential stops working: lease expiry, static-role next rotation, or none.
    pub expires_at: Option<SystemTime>,
    /// Vault's lease id (dynamic secrets only); safe to log, it is not a bearer secret.
    pub lease_id: Option<String>,
    /// KV v2 version, when known.
    pub version: Option<u64>,
    /// All fields Vault returned, values kept secret.
    pub fields: BTreeMap<String, FieldValue>,
}

/// One field of a secret's data: strings stay secret; other JSON values are kept as they came.
#[derive(Clone, PartialEq)]
pub enum FieldValue {
    Secret(SecretValue),
    Json(serde_json::Value),
}

impl fmt::Debug for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field(
                "expires_at",
                &self.expires_at.map(humantime::format_rfc3339_seconds),
            )
            .field("lease_id", &self.lease_id)
            .field("version", &self.version)
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_values() {
        let mut fields = BTreeMap::new();
        fields.insert(
            "password".into(),
            FieldValue::Secret(SecretValue::new("hunter2-secret")),
        );
        let c = Credential {
            username: Some("v-app-1".into()),
            password: Some(SecretValue::new("hunter2-secret")),
            expires_at: None,
            lease_id: Some("database/creds/app/abc".into()),
            version: None,
            fields,
        };
        let shown = format!(
            "{c:?} {:?} {}",
            c.password,
            SecretValue::new("hunter2-secret")
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("v-app-1"));
    }
}
