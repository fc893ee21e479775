//! Every option, its default, and its validation.
//!
//! Options come from three places, in this order of precedence: command-line flags, environment
//! variables (`VAULT_ROTATOR_<FLAG>`, then the standard `VAULT_*` and `BAO_*` ones), and the TOML
//! file given by `--config`. The environment is passed in as a lookup function so tests never
//! touch the process environment. Every error names the flag, variable or field at fault.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::credential::{SecretKind, SecretValue};
use crate::drain::DrainCheck;
use crate::notify::Hook;
use crate::render::{FilesFormat, OutputFormat};

mod build;
mod cli;
mod file;
mod secrets;
#[cfg(test)]
mod tests;

pub use cli::Cli;
pub use file::{FileAgent, FileAuth, FileConfig, FileSecret, FileVault};

/// Default owner-read-only mode: the app container normally runs as the same user, or reads
/// through `fsGroup` when the mode is widened to 0440 on purpose.
pub const DEFAULT_FILE_MODE: u32 = 0o400;
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Loopback only: rotating on demand is an operator's action, not something the network gets.
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
const DEFAULT_REVOKE_GRACE: Duration = Duration::from_secs(300);
const DEFAULT_KV_REFRESH: Duration = Duration::from_secs(300);
const DEFAULT_SPLAY: Duration = Duration::from_secs(2);
const DEFAULT_ONCE_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Kept whole, so that `main` can let clap print it where it belongs (help and version on
    /// stdout) and choose the exit code.
    #[error("{0}")]
    Cli(clap::Error),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub vault: VaultConfig,
    pub auth: AuthConfig,
    pub secrets: Vec<SecretConfig>,
    /// Probe/metrics listener; `None` when disabled or in `--once` mode.
    pub listen: Option<SocketAddr>,
    /// Admin listener for `POST /rotate`; `None` when disabled or in `--once` mode.
    pub admin: Option<AdminConfig>,
    /// Leave database usernames out of `/status` and the status page.
    pub status_hide_usernames: bool,
    pub once: bool,
    pub once_timeout: Duration,
    pub revoke_on_exit: bool,
    pub splay: Duration,
    pub backoff: Backoff,
    pub log_format: LogFormat,
    pub log_level: String,
    /// The `--config` file, re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
}

/// The admin listener: see docs/admin.md for its security model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Set when the address was configured rather than defaulted: then failing to bind it is
    /// an error, where the default only earns a warning (two sidecars in one pod, or tests
    /// running side by side, would otherwise fight over the default port).
    pub required: bool,
    /// The bearer token's file; checked at startup, re-read on every request so a rotated
    /// Kubernetes Secret takes effect without a restart.
    pub token_file: Option<PathBuf>,
    /// Accept requests from peers other than loopback.
    pub allow_remote: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VaultConfig {
    /// Base address without a trailing slash.
    pub addr: String,
    pub namespace: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub skip_verify: bool,
    pub tls_server_name: Option<String>,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Token,
    Kubernetes,
    AppRole,
    Jwt,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Token => "token",
            AuthMethod::Kubernetes => "kubernetes",
            AuthMethod::AppRole => "approle",
            AuthMethod::Jwt => "jwt",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    pub method: AuthMethod,
    /// Mount path without `auth/` and slashes, e.g. `kubernetes` or `k8s-prod`.
    pub mount: String,
    pub role: Option<String>,
    pub jwt_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    /// A token given directly (VAULT_TOKEN); never printed.
    pub token: Option<SecretValue>,
    pub role_id_file: Option<PathBuf>,
    pub secret_id_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecretConfig {
    pub name: String,
    /// Path under /v1/, without slashes at either end.
    pub path: String,
    /// `None`: ask Vault (sys/internal/ui/mounts) at startup.
    pub kind: Option<SecretKind>,
    /// Where the credential is written, and in what shape.
    pub output: Output,
    pub file_mode: u32,
    pub owner: Option<(u32, u32)>,
    pub rotate_every: Option<Duration>,
    pub revoke_grace: Duration,
    /// `--drain-check`: revoke an old credential as soon as the app has left it, within the
    /// grace.
    pub drain_check: Option<DrainCheck>,
    pub refresh_every: Duration,
    /// Told after each new credential is written.
    pub hooks: Vec<Hook>,
}

/// Where a secret is written: one file, or a directory of files that switch together.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// `--output`: one file in one format.
    File { path: PathBuf, format: OutputFormat },
    /// `--output-dir`: one file per field, or per template, swapped in as one set.
    Dir { path: PathBuf, files: FilesFormat },
}

impl Output {
    /// The file, or the directory, the app reads.
    pub fn path(&self) -> &Path {
        match self {
            Output::File { path, .. } | Output::Dir { path, .. } => path,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Environment lookup; `std::env::var` in `main`, a map in tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Parses flags, then fills the gaps from the environment and the `--config` file.
    pub fn load<I, T>(args: I, env: EnvLookup) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = cli::parse(args, env).map_err(ConfigError::Cli)?;
        let file = match &cli.config {
            Some(path) => file::read_file_config(path)?,
            None => FileConfig::default(),
        };
        build::build(cli, file, env)
    }
}

pub fn parse_kind(s: &str) -> Option<SecretKind> {
    Some(match s {
        "dynamic" | "database" => SecretKind::Dynamic,
        "static" => SecretKind::Static,
        "kv-v2" | "kv2" | "kvv2" => SecretKind::KvV2,
        "kv-v1" | "kv1" | "kvv1" | "kv" => SecretKind::KvV1,
        "generic" => SecretKind::Generic,
        _ => return None,
    })
}

fn parse_duration(field: &str, s: &str) -> Result<Duration, ConfigError> {
    let s = s.trim();
    // Bare integers are seconds, as in Vault's own duration fields.
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| {
        invalid(
            field,
            format!("{s:?} is not a duration like 30s, 5m or 24h: {e}"),
        )
    })
}

fn duration_or(field: &str, raw: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    raw.map(|s| parse_duration(field, s))
        .transpose()
        .map(|d| d.unwrap_or(default))
}

fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8).ok()?;
    (mode <= 0o777).then_some(mode)
}

fn parse_owner(s: &str) -> Option<(u32, u32)> {
    let (u, g) = s.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}
