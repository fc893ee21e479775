//! Which server devvault imitates where Vault and OpenBao differ. A leaf: every layer
//! (wire format, errors, engines) asks it, and it asks nobody.

/// Which server to imitate where Vault and OpenBao differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// HashiCorp Vault (≥ 1.19): `mount_type`, `hvs.` tokens, 2-error invalid-token 403.
    Vault,
    /// OpenBao 2.x: no `mount_type`, `s.` tokens, 1-error invalid-token 403.
    #[value(name = "openbao")]
    OpenBao,
}

impl Flavor {
    /// The `mount_type` envelope value, absent for OpenBao.
    pub fn mount_type(self, t: &str) -> Option<String> {
        match self {
            Flavor::Vault => Some(t.to_string()),
            Flavor::OpenBao => None,
        }
    }

    /// Service token prefix.
    pub fn token_prefix(self) -> &'static str {
        match self {
            Flavor::Vault => "hvs.",
            Flavor::OpenBao => "s.",
        }
    }

    /// Version reported by `sys/health` and `sys/seal-status`.
    pub fn version(self) -> &'static str {
        match self {
            Flavor::Vault => "1.19.0",
            Flavor::OpenBao => "2.7.2",
        }
    }

    /// `deprecation_status` of a builtin plugin in mount listings. Vault's listing is left
    /// as it was; OpenBao 2.7 reports it for its builtin plugins (KV and the auth methods),
    /// but not for the database engine or the built-in system mounts.
    pub fn deprecation_status(self, kind: &str) -> Option<&'static str> {
        match (self, kind) {
            (Flavor::OpenBao, "kv" | "approle" | "jwt" | "oidc" | "kubernetes") => {
                Some("supported")
            }
            _ => None,
        }
    }
}
