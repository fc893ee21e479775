//! The shapes of Vault's answers: the envelope every response shares and the few `data`
//! documents the agent reads. Decoded leniently: unknown fields are ignored and optional ones
//! may be missing, because Vault versions and OpenBao differ.

use serde::Deserialize;
use serde_json::Value;

use crate::credential::SecretValue;

/// The envelope every Vault response shares (§1.2 of the API reference).
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub struct Envelope {
    pub request_id: String,
    pub lease_id: String,
    pub renewable: bool,
    pub lease_duration: u64,
    #[serde(deserialize_with = "null_as_default")]
    pub data: serde_json::Map<String, Value>,
    pub warnings: Option<Vec<String>>,
    pub auth: Option<AuthBlock>,
    pub wrap_info: Option<WrapInfo>,
}

impl Envelope {
    pub fn warnings(&self) -> &[String] {
        self.warnings.as_deref().unwrap_or(&[])
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AuthBlock {
    pub client_token: SecretString,
    pub accessor: String,
    pub policies: Option<Vec<String>>,
    pub lease_duration: u64,
    pub renewable: bool,
    pub token_type: String,
    pub mfa_requirement: Option<Value>,
}

impl std::fmt::Debug for AuthBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthBlock")
            .field("accessor", &self.accessor)
            .field("lease_duration", &self.lease_duration)
            .field("renewable", &self.renewable)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct WrapInfo {
    pub token: SecretString,
    pub ttl: u64,
    pub creation_path: String,
}

impl std::fmt::Debug for WrapInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrapInfo")
            .field("creation_path", &self.creation_path)
            .finish_non_exhaustive()
    }
}

/// A string field that must stay secret once decoded.
#[derive(Default, Clone)]
pub struct SecretString(pub SecretValue);

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SecretString(SecretValue::new(
            Option::<String>::deserialize(d)?.unwrap_or_default(),
        )))
    }
}

/// `lookup-self`'s `data`, the fields the agent plans with.
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub struct TokenLookup {
    pub accessor: String,
    pub ttl: u64,
    /// `null` for a token that never expires.
    pub expire_time: Option<String>,
    pub renewable: bool,
    pub explicit_max_ttl: u64,
    pub period: Option<u64>,
    #[serde(rename = "type")]
    pub token_type: Option<String>,
}

/// What `sys/internal/ui/mounts/<path>` says about the mount that serves a path.
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub struct MountInfo {
    #[serde(rename = "type")]
    pub mount_type: String,
    pub path: String,
    #[serde(deserialize_with = "null_as_default")]
    pub options: std::collections::BTreeMap<String, Value>,
}
