//! The command line, and the `VAULT_ROTATOR_<FLAG>` variables that stand in for its flags.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, Parser};

use super::{parse_bool, EnvLookup};

/// Command-line flags. Every flag can also be set through `VAULT_ROTATOR_<FLAG>` (upper snake
/// case); see `parse`.
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
    /// Directory to write the credential to as a set of files (one per field; per template with
    /// [secret.files] in --config) that switch together through a ..data symlink; not with --output
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
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
    /// Before revoking an old database credential, log in as it here and wait until the app holds no other session as that user (at most --revoke-grace), e.g. postgres://db:5432/app?sslmode=verify-full or mysql://db:3306/app; no user or password in the URL
    #[arg(long, value_name = "URL")]
    pub drain_check: Option<String>,
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

/// Parses the command line, with every flag it leaves out filled from `VAULT_ROTATOR_<FLAG>`
/// (the flag's name in upper snake case; empty values count as unset). The names come from
/// clap's own list of arguments, so a new flag gets its variable with no table to keep. Read
/// here rather than through clap's `env` feature so that tests pass the environment in and
/// never set the process's own. A boolean flag's variable turns it on when it reads true.
pub(super) fn parse<I, T>(args: I, env: EnvLookup) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = Cli::command();
    // The command line alone first: `--help`, `--version` and usage errors end here.
    let given = command.clone().try_get_matches_from(&args)?;
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let (Some(long), Some(value)) = (arg.get_long(), env(&env_name(id))) else {
            continue;
        };
        if value.is_empty() || given.value_source(id) == Some(ValueSource::CommandLine) {
            continue;
        }
        match arg.get_action() {
            ArgAction::SetTrue if parse_bool(&value) == Some(true) => {
                args.push(format!("--{long}").into())
            }
            // `--flag=value`, so that a value starting with `-` stays a value.
            ArgAction::Set => args.push(format!("--{long}={value}").into()),
            _ => {}
        }
    }
    Cli::try_parse_from(args)
}

/// `VAULT_ROTATOR_ROTATE_EVERY` for the argument `rotate_every` (`--rotate-every`).
pub(super) fn env_name(id: &str) -> String {
    format!("VAULT_ROTATOR_{}", id.to_ascii_uppercase())
}

/// A standard Vault variable, with its OpenBao twin as fallback.
pub(super) fn standard_var(env: EnvLookup, suffix: &str) -> Option<String> {
    env(&format!("VAULT_{suffix}"))
        .or_else(|| env(&format!("BAO_{suffix}")))
        .filter(|v| !v.is_empty())
}
