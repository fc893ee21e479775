//! ACL policies: a parser for the HCL (and JSON) subset Vault policies use,
//! and the path matcher with Vault's precedence rules (exact path, then the
//! most specific of `*` globs and `+` segment wildcards).
//!
//! Only capabilities are enforced; parameter constraints and wrapping-TTL
//! bounds are parsed and ignored.

use std::collections::BTreeMap;

use serde_json::Value;

mod eval;
mod hcl;

pub use eval::Acl;

/// Capability bits.
pub mod cap {
    pub const CREATE: u16 = 1;
    pub const READ: u16 = 2;
    pub const UPDATE: u16 = 4;
    pub const DELETE: u16 = 8;
    pub const LIST: u16 = 16;
    pub const SUDO: u16 = 32;
    pub const DENY: u16 = 64;
    pub const PATCH: u16 = 128;
    pub const SUBSCRIBE: u16 = 256;
}

/// The operation a request performs, as Vault's `logical.Operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Read,
    Update,
    Delete,
    List,
    Patch,
}

impl Op {
    fn bit(self) -> u16 {
        match self {
            Op::Create => cap::CREATE,
            Op::Read => cap::READ,
            Op::Update => cap::UPDATE,
            Op::Delete => cap::DELETE,
            Op::List => cap::LIST,
            Op::Patch => cap::PATCH,
        }
    }
}

/// The built-in `default` policy (Vault's `vault/policy_store.go`), limited to
/// the paths devvault serves or that clients commonly probe.
pub const DEFAULT_POLICY: &str = r#"
# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own entity by id or name
path "identity/entity/id/{{identity.entity.id}}" {
  capabilities = ["read"]
}
path "identity/entity/name/{{identity.entity.name}}" {
  capabilities = ["read"]
}

# Allow a token to look up its resultant ACL from all policies. This is useful
# for UIs. It is an internal path because the format may change at any time
# based on how the internal ACL features and capabilities change.
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}

# Allow a token to renew a lease via lease_id in the request body; old path for
# old clients, new path for newer
path "sys/renew" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}

# Allow looking up lease properties. This requires knowing the lease ID ahead
# of time and does not divulge any sensitive information.
path "sys/leases/lookup" {
    capabilities = ["update"]
}

# Allow a token to manage its own cubbyhole
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

# Allow a token to wrap arbitrary values in a response-wrapping token
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

# Allow a token to look up the creation time and TTL of a given
# response-wrapping token
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

# Allow a token to unwrap a response-wrapping token. This is a convenience to
# avoid client token swapping since this is also part of the response wrapping
# policy.
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Allow general purpose tools
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}

# Allow checking the status of a Control Group request if the user has the
# accessor
path "sys/control-group/request" {
    capabilities = ["update"]
}

# Allow a token to make requests to the Authorization Endpoint for OIDC providers.
path "identity/oidc/provider/+/authorize" {
    capabilities = ["read", "update"]
}
"#;

/// A parsed policy: path pattern → capability bits.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub raw: String,
    pub paths: Vec<(String, u16)>,
}

/// Errors from policy parsing, reported as `failed to parse policy: ...`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Syntax(String),
    #[error("path {path:?}: invalid capability {cap:?}")]
    Capability { path: String, cap: String },
    #[error("path {path:?}: invalid policy {policy:?}")]
    Legacy { path: String, policy: String },
}

impl Policy {
    /// Parses HCL or JSON policy text.
    pub fn parse(raw: &str) -> Result<Policy, PolicyError> {
        let doc = if raw.trim_start().starts_with('{') {
            serde_json::from_str::<Value>(raw).map_err(|e| PolicyError::Syntax(e.to_string()))?
        } else {
            hcl::parse(raw).map_err(PolicyError::Syntax)?
        };
        let mut paths = Vec::new();
        // HCL `path "x" {...}` blocks parse to {"path": [{"x": {...}}, ...]}
        // JSON policies use {"path": {"x": {...}}}.
        let mut push_block = |name: &str, body: &Value| -> Result<(), PolicyError> {
            paths.push((name.to_string(), capabilities_of(name, body)?));
            Ok(())
        };
        match doc.get("path") {
            Some(Value::Array(blocks)) => {
                for b in blocks {
                    if let Value::Object(m) = b {
                        for (k, v) in m {
                            push_block(k, v)?;
                        }
                    }
                }
            }
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    push_block(k, v)?;
                }
            }
            _ => {}
        }
        Ok(Policy {
            raw: raw.to_string(),
            paths,
        })
    }
}

fn capabilities_of(path: &str, body: &Value) -> Result<u16, PolicyError> {
    let mut bits = 0u16;
    if let Some(Value::String(p)) = body.get("policy") {
        bits |= match p.as_str() {
            "deny" => cap::DENY,
            "read" => cap::READ | cap::LIST,
            "write" => cap::CREATE | cap::READ | cap::UPDATE | cap::DELETE | cap::LIST,
            "sudo" => cap::CREATE | cap::READ | cap::UPDATE | cap::DELETE | cap::LIST | cap::SUDO,
            other => {
                return Err(PolicyError::Legacy {
                    path: path.into(),
                    policy: other.into(),
                })
            }
        };
    }
    if let Some(Value::Array(caps)) = body.get("capabilities") {
        for c in caps {
            let name = c.as_str().unwrap_or_default();
            bits |= match name {
                "create" => cap::CREATE,
                "read" => cap::READ,
                "update" => cap::UPDATE,
                "delete" => cap::DELETE,
                "list" => cap::LIST,
                "sudo" => cap::SUDO,
                "deny" => cap::DENY,
                "patch" => cap::PATCH,
                "subscribe" => cap::SUBSCRIBE,
                "recover" => 0,
                _ => {
                    return Err(PolicyError::Capability {
                        path: path.into(),
                        cap: name.into(),
                    })
                }
            };
        }
    }
    if bits & cap::DENY != 0 {
        bits = cap::DENY;
    }
    Ok(bits)
}

#[cfg(test)]
mod tests;
