//! Every option, its default, and its validation.
//!
//! Options come from three places, in this order of precedence: command-line flags, environment
//! variables (`VAULT_ROTATOR_<FLAG>`, then the standard `VAULT_*` and `BAO_*` ones), and the TOML
//! file given by `--config`. The environment is passed in as a lookup function so tests never
//! touch the process environment. Every error names the flag, variable or field at fault.

use std::collections::HashSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::credential::{SecretKind, SecretValue};
use crate::notify::Hook;
use crate::render::{OutputFormat, Template};

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
    #[error("{0}")]
    Cli(String),
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

/// Command-line flags. Every flag can also be set through `VAULT_ROTATOR_<FLAG>` (upper snake
/// case), read by [`Config::load`] rather than by clap so tests can pass the environment in.
#[derive(Parser, Debug, Default)]
#[command(
    name = "vault-rotator",
    version,
    about = "Keeps a database credential from Vault or OpenBao fresh in a file, for a sidecar container.",
    after_help = "Every flag can also be given as VAULT_ROTATOR_<FLAG> (e.g. VAULT_ROTATOR_ROTATE_EVERY=1h).\n\
Standard variables are honoured too: VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE, VAULT_CACERT,\n\
VAULT_CLIENT_CERT, VAULT_CLIENT_KEY, VAULT_SKIP_VERIFY, VAULT_TLS_SERVER_NAME, and their BAO_* forms.\n\
Flags win over variables, variables over the --config file.\n\n\
Exit codes: 0 done (--once) or stopped by signal; 1 runtime failure; 2 bad configuration."
)]
pub struct Cli {
    /// Vault or OpenBao address, e.g. https://vault.vault:8200 [env: VAULT_ADDR, BAO_ADDR]
    #[arg(long, value_name = "URL")]
    pub vault_addr: Option<String>,
    /// Vault Enterprise / OpenBao namespace [env: VAULT_NAMESPACE, BAO_NAMESPACE]
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// PEM file with the CA certificate(s) that sign Vault's certificate [env: VAULT_CACERT]
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate for mutual TLS [env: VAULT_CLIENT_CERT]
    #[arg(long, value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate [env: VAULT_CLIENT_KEY]
    #[arg(long, value_name = "FILE")]
    pub client_key: Option<PathBuf>,
    /// Skip verification of Vault's TLS certificate. Insecure; for development only [env: VAULT_SKIP_VERIFY]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub skip_verify: Option<String>,
    /// Name to verify Vault's certificate against when it differs from the address' host [env: VAULT_TLS_SERVER_NAME]
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Timeout for one Vault request [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub request_timeout: Option<String>,

    /// Auth method: token, kubernetes, approle or jwt [default: token when VAULT_TOKEN or --token-file is set, else kubernetes]
    #[arg(long, value_name = "METHOD")]
    pub auth: Option<String>,
    /// Mount path of the auth method [default: the method's name]
    #[arg(long, value_name = "PATH")]
    pub auth_mount: Option<String>,
    /// Role to log in as (kubernetes, jwt) or nothing (approle uses --role-id-file)
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// JWT to log in with; re-read on every login [default for kubernetes: /var/run/secrets/kubernetes.io/serviceaccount/token]
    #[arg(long, value_name = "FILE")]
    pub jwt_file: Option<PathBuf>,
    /// File holding a Vault token (auth=token); VAULT_TOKEN is used when absent
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// File holding the AppRole role_id
    #[arg(long, value_name = "FILE")]
    pub role_id_file: Option<PathBuf>,
    /// File holding the AppRole secret_id, or a response-wrapping token that wraps one
    #[arg(long, value_name = "FILE")]
    pub secret_id_file: Option<PathBuf>,

    /// Secret path to read, e.g. database/creds/app, database/static-creds/app, secret/data/app
    #[arg(long, value_name = "PATH")]
    pub secret: Option<String>,
    /// Name of the secret in logs, metrics and /status [default: the last path segment]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// dynamic, static, kv-v2, kv-v1 or generic [default: detected from the mount, like the vault CLI]
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// File to write the credential to; its directory must exist
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format: json, env or template [default: json]
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Template file for --format template (MiniJinja syntax; a missing key is an error)
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
    /// Octal mode of the output file [default: 0400]
    #[arg(long, value_name = "MODE")]
    pub file_mode: Option<String>,
    /// uid:gid to own the output file (needs CAP_CHOWN unless it is our own)
    #[arg(long, value_name = "UID:GID")]
    pub owner: Option<String>,
    /// Issue a new credential at least this often, e.g. 24h or 5m; for static roles, ask Vault to rotate
    #[arg(long, value_name = "DURATION")]
    pub rotate_every: Option<String>,
    /// How long an old dynamic credential stays valid after the new one is written, before it is revoked [default: 5m]
    #[arg(long, value_name = "DURATION")]
    pub revoke_grace: Option<String>,
    /// How often KV secrets (no lease) are re-read [default: 5m]
    #[arg(long, value_name = "DURATION")]
    pub refresh_every: Option<String>,
    /// Command to run (split on spaces, no shell) after a new credential is written
    #[arg(long, value_name = "COMMAND")]
    pub notify_exec: Option<String>,
    /// Signal to send (e.g. HUP) to the process in --notify-pid-file after a new credential is written
    #[arg(long, value_name = "SIGNAL")]
    pub notify_signal: Option<String>,
    /// File holding the app's pid, for --notify-signal (needs shareProcessNamespace in a pod)
    #[arg(long, value_name = "FILE")]
    pub notify_pid_file: Option<PathBuf>,
    /// URL to POST {"secret","username","expires_at"} to after a new credential is written
    #[arg(long, value_name = "URL")]
    pub notify_url: Option<String>,
    /// Time limit for each notification [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub notify_timeout: Option<String>,

    /// Address for /health, /ready, /metrics and /status ("off" to disable) [default: 0.0.0.0:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Hide database usernames on /status and the status page
    #[arg(long)]
    pub status_hide_usernames: bool,
    /// Address of the admin listener for POST /rotate ("off" to disable) [default: 127.0.0.1:8081]
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// File holding the bearer token that admin requests must send (Authorization: Bearer <token>); re-read on every request
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve admin requests from non-loopback peers too (needs --admin-token-file)
    #[arg(long)]
    pub admin_allow_remote: bool,
    /// Fetch, write and exit 0 (init containers and Jobs); exit 1 when that fails within --once-timeout
    #[arg(long)]
    pub once: bool,
    /// Give up --once after this long [default: 2m]
    #[arg(long, value_name = "DURATION")]
    pub once_timeout: Option<String>,
    /// Revoke the current dynamic credential and token when stopped by SIGTERM/SIGINT
    #[arg(long)]
    pub revoke_on_exit: bool,
    /// Wait a random time up to this long before the first request, to spread fleet restarts [default: 2s; 0 in --once]
    #[arg(long, value_name = "DURATION")]
    pub splay: Option<String>,
    /// First retry delay after a failure [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub backoff_min: Option<String>,
    /// Longest retry delay after repeated failures [default: 5m]
    #[arg(long, value_name = "DURATION")]
    pub backoff_max: Option<String>,
    /// TOML file with several secrets, each with its own output and cadence
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: text or json [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log level or tracing filter, e.g. info or vault_rotator=debug [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// The `--config` TOML file. Unknown keys are rejected so typos surface at startup.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub vault: FileVault,
    #[serde(default)]
    pub auth: FileAuth,
    #[serde(default)]
    pub agent: FileAgent,
    #[serde(default, rename = "secret")]
    pub secrets: Vec<FileSecret>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileVault {
    pub addr: Option<String>,
    pub namespace: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub skip_verify: Option<bool>,
    pub tls_server_name: Option<String>,
    pub request_timeout: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    pub method: Option<String>,
    pub mount: Option<String>,
    pub role: Option<String>,
    pub jwt_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub role_id_file: Option<PathBuf>,
    pub secret_id_file: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileAgent {
    pub listen: Option<String>,
    pub status_hide_usernames: Option<bool>,
    pub admin_listen: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    pub admin_allow_remote: Option<bool>,
    pub revoke_on_exit: Option<bool>,
    pub splay: Option<String>,
    pub backoff_min: Option<String>,
    pub backoff_max: Option<String>,
    pub once_timeout: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileSecret {
    pub name: Option<String>,
    pub path: String,
    pub kind: Option<String>,
    pub output: PathBuf,
    pub format: Option<String>,
    pub template: Option<PathBuf>,
    pub file_mode: Option<String>,
    pub owner: Option<String>,
    pub rotate_every: Option<String>,
    pub revoke_grace: Option<String>,
    pub refresh_every: Option<String>,
    #[serde(default)]
    pub notify_exec: Vec<String>,
    pub notify_signal: Option<String>,
    pub notify_pid_file: Option<PathBuf>,
    pub notify_url: Option<String>,
    pub notify_timeout: Option<String>,
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
    pub output: PathBuf,
    pub format: OutputFormat,
    pub file_mode: u32,
    pub owner: Option<(u32, u32)>,
    pub rotate_every: Option<Duration>,
    pub revoke_grace: Duration,
    pub refresh_every: Duration,
    /// Told after each new credential is written.
    pub hooks: Vec<Hook>,
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
        let cli = Cli::try_parse_from(args).map_err(|e| ConfigError::Cli(e.to_string()))?;
        let cli = apply_env(cli, env);
        let file = match &cli.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        build(cli, file, env)
    }
}

/// Fills every flag the command line left out from `VAULT_ROTATOR_<FLAG>`.
fn apply_env(mut cli: Cli, env: EnvLookup) -> Cli {
    let var = |name: &str| env(&format!("VAULT_ROTATOR_{name}")).filter(|v| !v.is_empty());
    macro_rules! fill {
        ($($field:ident => $name:literal),* $(,)?) => {
            $( if cli.$field.is_none() { cli.$field = var($name).map(Into::into); } )*
        };
    }
    fill!(
        vault_addr => "VAULT_ADDR", namespace => "NAMESPACE", ca_cert => "CA_CERT",
        client_cert => "CLIENT_CERT", client_key => "CLIENT_KEY", skip_verify => "SKIP_VERIFY",
        tls_server_name => "TLS_SERVER_NAME", request_timeout => "REQUEST_TIMEOUT",
        auth => "AUTH", auth_mount => "AUTH_MOUNT", role => "ROLE", jwt_file => "JWT_FILE",
        token_file => "TOKEN_FILE", role_id_file => "ROLE_ID_FILE",
        secret_id_file => "SECRET_ID_FILE", secret => "SECRET", name => "NAME", kind => "KIND",
        output => "OUTPUT", format => "FORMAT", template => "TEMPLATE", file_mode => "FILE_MODE",
        owner => "OWNER", rotate_every => "ROTATE_EVERY", revoke_grace => "REVOKE_GRACE",
        refresh_every => "REFRESH_EVERY", notify_exec => "NOTIFY_EXEC", notify_signal => "NOTIFY_SIGNAL",
        notify_pid_file => "NOTIFY_PID_FILE", notify_url => "NOTIFY_URL", notify_timeout => "NOTIFY_TIMEOUT",
        listen => "LISTEN", once_timeout => "ONCE_TIMEOUT",
        admin_listen => "ADMIN_LISTEN", admin_token_file => "ADMIN_TOKEN_FILE",
        splay => "SPLAY", backoff_min => "BACKOFF_MIN", backoff_max => "BACKOFF_MAX",
        config => "CONFIG", log_format => "LOG_FORMAT", log_level => "LOG_LEVEL",
    );
    cli.once = cli.once || var("ONCE").is_some_and(|v| parse_bool(&v) == Some(true));
    cli.revoke_on_exit =
        cli.revoke_on_exit || var("REVOKE_ON_EXIT").is_some_and(|v| parse_bool(&v) == Some(true));
    cli.status_hide_usernames = cli.status_hide_usernames
        || var("STATUS_HIDE_USERNAMES").is_some_and(|v| parse_bool(&v) == Some(true));
    cli.admin_allow_remote = cli.admin_allow_remote
        || var("ADMIN_ALLOW_REMOTE").is_some_and(|v| parse_bool(&v) == Some(true));
    cli
}

/// A standard Vault variable, with its OpenBao twin as fallback.
fn standard_var(env: EnvLookup, suffix: &str) -> Option<String> {
    env(&format!("VAULT_{suffix}"))
        .or_else(|| env(&format!("BAO_{suffix}")))
        .filter(|v| !v.is_empty())
}

fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn build(cli: Cli, file: FileConfig, env: EnvLookup) -> Result<Config, ConfigError> {
    let vault = build_vault(&cli, &file.vault, env)?;
    let auth = build_auth(&cli, &file.auth, env)?;
    let once = cli.once;
    let secrets = build_secrets(&cli, file.secrets)?;
    let agent = &file.agent;
    let listen_raw = cli
        .listen
        .clone()
        .or_else(|| agent.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen = if once || listen_raw == "off" || listen_raw.is_empty() {
        None
    } else {
        Some(listen_raw.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "--listen",
                format!("{listen_raw:?} is not an address like 0.0.0.0:8080: {e}"),
            )
        })?)
    };
    let admin = if once {
        None
    } else {
        build_admin(&cli, agent)?
    };
    let splay = if once {
        Duration::ZERO
    } else {
        duration_or(
            "--splay",
            cli.splay.as_deref().or(agent.splay.as_deref()),
            DEFAULT_SPLAY,
        )?
    };
    let backoff = Backoff {
        min: duration_or(
            "--backoff-min",
            cli.backoff_min.as_deref().or(agent.backoff_min.as_deref()),
            Duration::from_secs(1),
        )?,
        max: duration_or(
            "--backoff-max",
            cli.backoff_max.as_deref().or(agent.backoff_max.as_deref()),
            Duration::from_secs(300),
        )?,
    };
    if backoff.min.is_zero() || backoff.min > backoff.max {
        return Err(invalid(
            "--backoff-min",
            "must be above zero and not above --backoff-max",
        ));
    }
    let log_format = match cli
        .log_format
        .as_deref()
        .or(agent.log_format.as_deref())
        .unwrap_or("text")
    {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "--log-format",
                format!("{other:?} is not text or json"),
            ))
        }
    };
    Ok(Config {
        vault,
        auth,
        secrets,
        listen,
        admin,
        status_hide_usernames: cli.status_hide_usernames
            || agent.status_hide_usernames.unwrap_or(false),
        once,
        once_timeout: duration_or(
            "--once-timeout",
            cli.once_timeout
                .as_deref()
                .or(agent.once_timeout.as_deref()),
            DEFAULT_ONCE_TIMEOUT,
        )?,
        revoke_on_exit: cli.revoke_on_exit || agent.revoke_on_exit.unwrap_or(false),
        splay,
        backoff,
        log_format,
        log_level: cli
            .log_level
            .clone()
            .or_else(|| agent.log_level.clone())
            .unwrap_or_else(|| "info".into()),
        config_file: cli.config.clone(),
    })
}

fn build_admin(cli: &Cli, agent: &FileAgent) -> Result<Option<AdminConfig>, ConfigError> {
    let configured = cli
        .admin_listen
        .clone()
        .or_else(|| agent.admin_listen.clone());
    let raw = configured
        .clone()
        .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_string());
    if raw == "off" || raw.is_empty() {
        return Ok(None);
    }
    let listen = raw.parse::<SocketAddr>().map_err(|e| {
        invalid(
            "--admin-listen",
            format!("{raw:?} is not an address like 127.0.0.1:8081: {e}"),
        )
    })?;
    let token_file = cli
        .admin_token_file
        .clone()
        .or_else(|| agent.admin_token_file.clone());
    if let Some(path) = &token_file {
        // Fail at startup rather than answer 500 to every request later; the content is
        // checked, never kept or shown.
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("--admin-token-file", format!("{}: {e}", path.display())))?;
        if text.trim().is_empty() {
            return Err(invalid(
                "--admin-token-file",
                format!("{} is empty", path.display()),
            ));
        }
    }
    let allow_remote = cli.admin_allow_remote || agent.admin_allow_remote.unwrap_or(false);
    if allow_remote && token_file.is_none() {
        return Err(invalid(
            "--admin-allow-remote",
            "needs --admin-token-file: remote peers must authenticate",
        ));
    }
    Ok(Some(AdminConfig {
        listen,
        required: configured.is_some(),
        token_file,
        allow_remote,
    }))
}

fn build_vault(cli: &Cli, file: &FileVault, env: EnvLookup) -> Result<VaultConfig, ConfigError> {
    let addr = cli
        .vault_addr
        .clone()
        .or_else(|| standard_var(env, "ADDR"))
        .or_else(|| file.addr.clone())
        .ok_or_else(|| {
            invalid(
                "--vault-addr",
                "required (or VAULT_ADDR / BAO_ADDR / [vault] addr)",
            )
        })?;
    let addr = addr.trim_end_matches('/').to_string();
    let host = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"));
    if host.is_none_or(str::is_empty) {
        return Err(invalid(
            "--vault-addr",
            format!("{addr:?} must be an http:// or https:// URL"),
        ));
    }
    let skip_verify = match cli
        .skip_verify
        .clone()
        .or_else(|| standard_var(env, "SKIP_VERIFY"))
    {
        Some(v) => parse_bool(&v)
            .ok_or_else(|| invalid("--skip-verify", format!("{v:?} is not a boolean")))?,
        None => file.skip_verify.unwrap_or(false),
    };
    let pick_path = |flag: &Option<PathBuf>, var: &str, from_file: &Option<PathBuf>| {
        flag.clone()
            .or_else(|| standard_var(env, var).map(PathBuf::from))
            .or_else(|| from_file.clone())
    };
    let client_cert = pick_path(&cli.client_cert, "CLIENT_CERT", &file.client_cert);
    let client_key = pick_path(&cli.client_key, "CLIENT_KEY", &file.client_key);
    if client_cert.is_some() != client_key.is_some() {
        return Err(invalid(
            "--client-cert",
            "--client-cert and --client-key go together",
        ));
    }
    Ok(VaultConfig {
        addr,
        namespace: cli
            .namespace
            .clone()
            .or_else(|| standard_var(env, "NAMESPACE"))
            .or_else(|| file.namespace.clone()),
        ca_cert: pick_path(&cli.ca_cert, "CACERT", &file.ca_cert),
        client_cert,
        client_key,
        skip_verify,
        tls_server_name: cli
            .tls_server_name
            .clone()
            .or_else(|| standard_var(env, "TLS_SERVER_NAME"))
            .or_else(|| file.tls_server_name.clone()),
        request_timeout: duration_or(
            "--request-timeout",
            cli.request_timeout
                .as_deref()
                .or(file.request_timeout.as_deref()),
            DEFAULT_REQUEST_TIMEOUT,
        )?,
    })
}

fn build_auth(cli: &Cli, file: &FileAuth, env: EnvLookup) -> Result<AuthConfig, ConfigError> {
    let token = standard_var(env, "TOKEN").map(SecretValue::new);
    let token_file = cli.token_file.clone().or_else(|| file.token_file.clone());
    let method = match cli.auth.as_deref().or(file.method.as_deref()) {
        Some("token") => AuthMethod::Token,
        Some("kubernetes") => AuthMethod::Kubernetes,
        Some("approle") => AuthMethod::AppRole,
        Some("jwt") => AuthMethod::Jwt,
        Some(other) => {
            return Err(invalid(
                "--auth",
                format!("{other:?} is not one of token, kubernetes, approle, jwt"),
            ))
        }
        None if token.is_some() || token_file.is_some() => AuthMethod::Token,
        None => AuthMethod::Kubernetes,
    };
    let mount = cli
        .auth_mount
        .clone()
        .or_else(|| file.mount.clone())
        .unwrap_or_else(|| method.as_str().to_string());
    let mount = mount
        .trim_matches('/')
        .trim_start_matches("auth/")
        .to_string();
    let role = cli.role.clone().or_else(|| file.role.clone());
    let mut jwt_file = cli.jwt_file.clone().or_else(|| file.jwt_file.clone());
    let role_id_file = cli
        .role_id_file
        .clone()
        .or_else(|| file.role_id_file.clone());
    let secret_id_file = cli
        .secret_id_file
        .clone()
        .or_else(|| file.secret_id_file.clone());
    match method {
        AuthMethod::Token if token.is_none() && token_file.is_none() => {
            return Err(invalid(
                "--token-file",
                "auth=token needs --token-file or VAULT_TOKEN",
            ));
        }
        AuthMethod::Kubernetes => {
            if role.is_none() {
                return Err(invalid("--role", "auth=kubernetes needs --role"));
            }
            jwt_file.get_or_insert_with(|| PathBuf::from(DEFAULT_SA_TOKEN));
        }
        AuthMethod::Jwt if jwt_file.is_none() => {
            return Err(invalid("--jwt-file", "auth=jwt needs --jwt-file"));
        }
        AuthMethod::AppRole if role_id_file.is_none() => {
            return Err(invalid(
                "--role-id-file",
                "auth=approle needs --role-id-file",
            ));
        }
        _ => {}
    }
    Ok(AuthConfig {
        method,
        mount,
        role,
        jwt_file,
        token_file,
        token,
        role_id_file,
        secret_id_file,
    })
}

fn build_secrets(cli: &Cli, from_file: Vec<FileSecret>) -> Result<Vec<SecretConfig>, ConfigError> {
    let mut secrets = Vec::new();
    if let Some(path) = &cli.secret {
        let output = cli
            .output
            .clone()
            .ok_or_else(|| invalid("--output", "required with --secret"))?;
        let raw = FileSecret {
            name: cli.name.clone(),
            path: path.clone(),
            kind: cli.kind.clone(),
            output,
            format: cli.format.clone(),
            template: cli.template.clone(),
            file_mode: cli.file_mode.clone(),
            owner: cli.owner.clone(),
            rotate_every: cli.rotate_every.clone(),
            revoke_grace: cli.revoke_grace.clone(),
            refresh_every: cli.refresh_every.clone(),
            notify_exec: cli
                .notify_exec
                .as_deref()
                .map(|c| c.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            notify_signal: cli.notify_signal.clone(),
            notify_pid_file: cli.notify_pid_file.clone(),
            notify_url: cli.notify_url.clone(),
            notify_timeout: cli.notify_timeout.clone(),
        };
        secrets.push(build_secret(raw, "--")?);
    } else if cli.output.is_some() {
        return Err(invalid("--secret", "required with --output"));
    }
    for (i, raw) in from_file.into_iter().enumerate() {
        secrets.push(build_secret(raw, &format!("secret[{i}].",))?);
    }
    if secrets.is_empty() {
        return Err(invalid(
            "--secret",
            "no secret configured: give --secret and --output, or [[secret]] in --config",
        ));
    }
    let mut names = HashSet::new();
    let mut outputs = HashSet::new();
    for s in &secrets {
        if !names.insert(s.name.clone()) {
            return Err(invalid(
                "name",
                format!("secret name {:?} is used twice", s.name),
            ));
        }
        if !outputs.insert(s.output.clone()) {
            return Err(invalid(
                "output",
                format!("{} is the output of two secrets", s.output.display()),
            ));
        }
    }
    Ok(secrets)
}

/// `prefix` is `--` for flags and `secret[i].` for file entries, so errors name the right place.
fn build_secret(raw: FileSecret, prefix: &str) -> Result<SecretConfig, ConfigError> {
    let field = |name: &str| {
        if prefix == "--" {
            format!("--{}", name.replace('_', "-"))
        } else {
            format!("{prefix}{name}")
        }
    };
    let hooks = build_hooks(&raw, &field)?;
    let path = raw
        .path
        .trim_matches('/')
        .trim_start_matches("v1/")
        .to_string();
    if path.is_empty() || path.contains("//") || path.split('/').any(|s| s == ".." || s == ".") {
        return Err(invalid(
            field("secret"),
            format!("{:?} is not a Vault path like database/creds/app", raw.path),
        ));
    }
    let kind = raw
        .kind
        .as_deref()
        .map(|k| {
            parse_kind(k).ok_or_else(|| {
                invalid(
                    field("kind"),
                    format!("{k:?} is not one of dynamic, static, kv-v2, kv-v1, generic"),
                )
            })
        })
        .transpose()?;
    let name = raw
        .name
        .unwrap_or_else(|| path.rsplit('/').next().unwrap_or(&path).to_string());
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(
            field("name"),
            format!("{name:?} must be letters, digits, '-', '_' or '.'"),
        ));
    }
    let default_format = if raw.template.is_some() {
        "template"
    } else {
        "json"
    };
    let format = match (
        raw.format.as_deref().unwrap_or(default_format),
        &raw.template,
    ) {
        ("json", None) => OutputFormat::Json,
        ("env", None) => OutputFormat::Env,
        ("template", Some(t)) => {
            let source = std::fs::read_to_string(t)
                .map_err(|e| invalid(field("template"), format!("{}: {e}", t.display())))?;
            let template = Template::from_source(&t.display().to_string(), source)
                .map_err(|e| invalid(field("template"), e.to_string()))?;
            OutputFormat::Template(template)
        }
        ("template", None) => {
            return Err(invalid(
                field("template"),
                "--format template needs --template",
            ))
        }
        (f @ ("json" | "env"), Some(_)) => {
            return Err(invalid(
                field("template"),
                format!("--template only goes with --format template, not {f}"),
            ))
        }
        (other, _) => {
            return Err(invalid(
                field("format"),
                format!("{other:?} is not json, env or template"),
            ))
        }
    };
    if raw.output.file_name().is_none() || raw.output.as_os_str().is_empty() {
        return Err(invalid(
            field("output"),
            format!("{} is not a file path", raw.output.display()),
        ));
    }
    let file_mode = match raw.file_mode.as_deref() {
        Some(m) => parse_mode(m).ok_or_else(|| {
            invalid(
                field("file_mode"),
                format!("{m:?} is not an octal mode like 0440"),
            )
        })?,
        None => DEFAULT_FILE_MODE,
    };
    let owner = raw
        .owner
        .as_deref()
        .map(|o| {
            parse_owner(o).ok_or_else(|| invalid(field("owner"), format!("{o:?} is not uid:gid")))
        })
        .transpose()?;
    let rotate_every = raw
        .rotate_every
        .as_deref()
        .map(|d| parse_duration(&field("rotate_every"), d))
        .transpose()?;
    if rotate_every.is_some_and(|d| d < Duration::from_secs(1)) {
        return Err(invalid(field("rotate_every"), "must be at least 1s"));
    }
    let refresh_every = duration_or(
        &field("refresh_every"),
        raw.refresh_every.as_deref(),
        DEFAULT_KV_REFRESH,
    )?;
    // Below a second a KV secret would be re-read in a tight loop.
    if refresh_every < Duration::from_secs(1) {
        return Err(invalid(field("refresh_every"), "must be at least 1s"));
    }
    Ok(SecretConfig {
        name,
        path,
        kind,
        output: raw.output,
        format,
        file_mode,
        owner,
        rotate_every,
        revoke_grace: duration_or(
            &field("revoke_grace"),
            raw.revoke_grace.as_deref(),
            DEFAULT_REVOKE_GRACE,
        )?,
        refresh_every,
        hooks,
    })
}

fn build_hooks(raw: &FileSecret, field: &dyn Fn(&str) -> String) -> Result<Vec<Hook>, ConfigError> {
    let timeout = duration_or(
        &field("notify_timeout"),
        raw.notify_timeout.as_deref(),
        Duration::from_secs(30),
    )?;
    let mut hooks = Vec::new();
    if !raw.notify_exec.is_empty() {
        hooks.push(Hook::Exec {
            command: raw.notify_exec.clone(),
            timeout,
        });
    }
    match (&raw.notify_signal, &raw.notify_pid_file) {
        (Some(sig), Some(pid_file)) => {
            if crate::notify::parse_signal(sig).is_none() {
                return Err(invalid(
                    field("notify_signal"),
                    format!("{sig:?} is not a signal name like HUP or USR1"),
                ));
            }
            hooks.push(Hook::Signal {
                pid_file: pid_file.clone(),
                signal: sig.clone(),
            });
        }
        (Some(_), None) => {
            return Err(invalid(
                field("notify_pid_file"),
                "--notify-signal needs --notify-pid-file",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                field("notify_signal"),
                "--notify-pid-file needs --notify-signal",
            ))
        }
        (None, None) => {}
    }
    if let Some(url) = &raw.notify_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                field("notify_url"),
                format!("{url:?} is not an http(s) URL"),
            ));
        }
        hooks.push(Hook::Http {
            url: url.clone(),
            timeout,
            retries: 3,
        });
    }
    Ok(hooks)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| map.get(k).cloned();
        let mut all = vec!["vault-rotator"];
        all.extend_from_slice(args);
        Config::load(all, &lookup)
    }

    const BASE: &[&str] = &[
        "--vault-addr",
        "http://127.0.0.1:8200",
        "--auth",
        "approle",
        "--role-id-file",
        "/r",
        "--secret",
        "database/creds/app",
        "--output",
        "/tmp/x/db.json",
    ];

    #[test]
    fn defaults_are_safe() {
        let c = load(BASE, &[]).unwrap();
        let s = &c.secrets[0];
        assert_eq!(s.name, "app");
        assert_eq!(s.file_mode, 0o400);
        assert_eq!(s.revoke_grace, Duration::from_secs(300));
        assert!(s.kind.is_none());
        assert_eq!(c.listen, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(
            c.backoff,
            Backoff {
                min: Duration::from_secs(1),
                max: Duration::from_secs(300)
            }
        );
        assert_eq!(c.auth.mount, "approle");
    }

    #[test]
    fn env_fills_flags_and_flags_win() {
        let c = load(
            &[
                "--auth",
                "kubernetes",
                "--role",
                "app",
                "--secret",
                "secret/data/a",
                "--output",
                "/o/a",
            ],
            &[
                ("VAULT_ADDR", "https://v:8200/"),
                ("VAULT_ROTATOR_ROTATE_EVERY", "1h"),
                ("VAULT_ROTATOR_ROLE", "ignored"),
                ("BAO_NAMESPACE", "team"),
            ],
        )
        .unwrap();
        assert_eq!(c.vault.addr, "https://v:8200");
        assert_eq!(c.auth.role.as_deref(), Some("app"));
        assert_eq!(c.vault.namespace.as_deref(), Some("team"));
        assert_eq!(c.secrets[0].rotate_every, Some(Duration::from_secs(3600)));
        assert_eq!(
            c.auth.jwt_file.as_deref(),
            Some(Path::new(DEFAULT_SA_TOKEN))
        );
    }

    #[test]
    fn vault_rotator_var_beats_standard_var() {
        let c = load(
            &BASE[2..],
            &[
                ("VAULT_ADDR", "http://a:1"),
                ("VAULT_ROTATOR_VAULT_ADDR", "http://b:2"),
            ],
        )
        .unwrap();
        assert_eq!(c.vault.addr, "http://b:2");
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&[&str], &str)] = &[
            (&["--rotate-every", "soon"], "--rotate-every"),
            (&["--file-mode", "999"], "--file-mode"),
            (&["--kind", "dinamic"], "--kind"),
            (&["--format", "yaml"], "--format"),
            (&["--listen", "nope"], "--listen"),
            (&["--refresh-every", "10ms"], "--refresh-every"),
            (&["--owner", "root"], "--owner"),
        ];
        for (extra, field) in cases {
            let mut args = BASE.to_vec();
            args.extend_from_slice(extra);
            let err = load(&args, &[]).unwrap_err().to_string();
            assert!(err.starts_with(field), "{extra:?}: {err}");
        }
        let err = load(&["--secret", "database/creds/app", "--output", "/o"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--vault-addr"), "{err}");
        let err = load(
            &[
                "--vault-addr",
                "http://v",
                "--auth",
                "kubernetes",
                "--secret",
                "a/b",
                "--output",
                "/o",
            ],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--role"), "{err}");
        let err = load(&["--vault-addr", "http://v", "--auth", "magic"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--auth"), "{err}");
    }

    #[test]
    fn config_file_rejects_unknown_keys_and_names_the_secret() {
        let dir = tempdir();
        let path = dir.join("c.toml");
        std::fs::write(&path, "[vault]\naddr = \"http://v:1\"\n[auth]\nmethod=\"token\"\n[[secret]]\npath=\"a/b\"\noutput=\"/o/x\"\nrotate_evry=\"1h\"\n").unwrap();
        let err = load(
            &["--config", path.to_str().unwrap()],
            &[("VAULT_TOKEN", "t")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("rotate_evry"), "{err}");
        std::fs::write(&path, "[vault]\naddr = \"http://v:1\"\n[auth]\nmethod=\"token\"\n[[secret]]\nname=\"db\"\npath=\"database/creds/app\"\noutput=\"/o/x\"\nrevoke_grace=\"later\"\n").unwrap();
        let err = load(
            &["--config", path.to_str().unwrap()],
            &[("VAULT_TOKEN", "t")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("secret[0].revoke_grace"), "{err}");
        std::fs::write(&path, "[vault]\naddr = \"http://v:1\"\n[auth]\nmethod=\"token\"\n[[secret]]\nname=\"db\"\npath=\"database/creds/app\"\noutput=\"/o/x\"\nkind=\"dynamic\"\n[[secret]]\npath=\"secret/data/k\"\noutput=\"/o/k\"\nformat=\"env\"\n").unwrap();
        let c = load(
            &["--config", path.to_str().unwrap()],
            &[("VAULT_TOKEN", "t")],
        )
        .unwrap();
        assert_eq!(c.secrets.len(), 2);
        assert_eq!(c.secrets[1].name, "k");
        assert!(matches!(c.secrets[1].format, OutputFormat::Env));
        assert_eq!(c.auth.method, AuthMethod::Token);
    }

    #[test]
    fn once_disables_listener_and_splay() {
        let mut args = BASE.to_vec();
        args.push("--once");
        let c = load(&args, &[]).unwrap();
        assert!(c.once && c.listen.is_none() && c.splay.is_zero());
    }

    #[test]
    fn admin_listener_defaults_to_loopback_and_can_be_turned_off() {
        let c = load(BASE, &[]).unwrap();
        let admin = c.admin.unwrap();
        assert_eq!(admin.listen, "127.0.0.1:8081".parse().unwrap());
        assert!(!admin.required && !admin.allow_remote && admin.token_file.is_none());
        assert!(!c.status_hide_usernames);
        let mut args = BASE.to_vec();
        args.extend(["--admin-listen", "off"]);
        assert!(load(&args, &[]).unwrap().admin.is_none());
        let c = load(
            BASE,
            &[
                ("VAULT_ROTATOR_ADMIN_LISTEN", "0.0.0.0:9000"),
                ("VAULT_ROTATOR_STATUS_HIDE_USERNAMES", "true"),
            ],
        )
        .unwrap();
        let admin = c.admin.unwrap();
        assert_eq!(admin.listen, "0.0.0.0:9000".parse().unwrap());
        assert!(admin.required && c.status_hide_usernames);
        let mut args = BASE.to_vec();
        args.push("--once");
        assert!(load(&args, &[]).unwrap().admin.is_none());
    }

    #[test]
    fn admin_token_file_is_checked_and_remote_access_needs_it() {
        let dir = tempdir();
        let token = dir.join("admin-token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let token = token.to_str().unwrap();
        let with = |extra: &[&str], env: &[(&str, &str)]| {
            let mut args = BASE.to_vec();
            args.extend_from_slice(extra);
            load(&args, env)
        };
        let c = with(&["--admin-token-file", token, "--admin-allow-remote"], &[]).unwrap();
        let admin = c.admin.clone().unwrap();
        assert!(admin.allow_remote);
        assert_eq!(admin.token_file.as_deref(), Some(Path::new(token)));
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = with(
            &[],
            &[
                ("VAULT_ROTATOR_ADMIN_TOKEN_FILE", token),
                ("VAULT_ROTATOR_ADMIN_ALLOW_REMOTE", "1"),
            ],
        )
        .unwrap();
        assert!(c.admin.unwrap().allow_remote);
        let err = with(&["--admin-allow-remote"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--admin-allow-remote"), "{err}");
        let err = with(&["--admin-token-file", "/no/such/token"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--admin-token-file"), "{err}");
        let empty = dir.join("empty-token");
        std::fs::write(&empty, "\n").unwrap();
        let err = with(&["--admin-token-file", empty.to_str().unwrap()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
        let err = with(&["--admin-listen", "localhost"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--admin-listen"), "{err}");
    }

    #[test]
    fn token_is_never_in_debug_output() {
        let c = load(
            &[
                "--vault-addr",
                "http://v",
                "--secret",
                "a/b",
                "--output",
                "/o/x",
            ],
            &[("VAULT_TOKEN", "hvs.supersecret")],
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("supersecret"));
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "vr-cfg-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
