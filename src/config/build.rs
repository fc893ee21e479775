//! From flags, variables and file to the validated [`Config`]: the agent-wide settings, the
//! admin listener, Vault and auth. The secrets have a file of their own (`secrets.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use super::cli::standard_var;
use super::secrets::build_secrets;
use super::{
    duration_or, invalid, parse_bool, AdminConfig, AuthConfig, AuthMethod, Backoff, Cli, Config,
    ConfigError, EnvLookup, FileAgent, FileAuth, FileConfig, FileVault, LogFormat, VaultConfig,
    DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN, DEFAULT_ONCE_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SA_TOKEN, DEFAULT_SPLAY,
};
use crate::credential::SecretValue;

pub(super) fn build(cli: Cli, file: FileConfig, env: EnvLookup) -> Result<Config, ConfigError> {
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
    let addr = vault_addr(&addr).map_err(|reason| invalid("--vault-addr", reason))?;
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
            .or_else(|| file.tls_server_name.clone())
            .map(|name| server_name(&name).map_err(|r| invalid("--tls-server-name", r)))
            .transpose()?,
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

/// The Vault address as the client uses it: an http(s) URL with a host, checked by
/// `reqwest::Url` (so IPv6 literals need their brackets), without a trailing slash. A path is
/// kept (Vault behind a proxy under a prefix); user info, a query or a fragment are refused,
/// because the client appends `/v1/...` to the address and the address is logged.
pub(super) fn vault_addr(raw: &str) -> Result<String, String> {
    // Never echo an address with user info: its password would end up in the error.
    let shown = if raw.contains('@') {
        "the address".to_string()
    } else {
        format!("{raw:?}")
    };
    let url = Url::parse(raw.trim())
        .map_err(|e| format!("{shown} is not a URL like https://vault.vault:8200: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{shown} must be an http:// or https:// URL"));
    }
    if url.host().is_none() {
        return Err(format!("{shown} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the address must not carry a user name or password (user:pass@)".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{shown} must not have a query or fragment"));
    }
    // `Url` normalises (lower-case host, `/` for an empty path); keep that form.
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// `--tls-server-name`: a DNS name alone, which the client puts in the URL's host so that
/// reqwest verifies the certificate against it; no port, path, user info or IP address.
pub(super) fn server_name(raw: &str) -> Result<String, String> {
    let bad = || format!("{raw:?} is not a DNS name like vault.internal");
    let mut url = Url::parse("https://placeholder.invalid/").map_err(|_| bad())?;
    url.set_host(Some(raw)).map_err(|_| bad())?;
    match url.domain() {
        // `set_host` stops at a `:` or `/`; the name must have been the whole input.
        Some(name) if name.eq_ignore_ascii_case(raw) => Ok(name.to_string()),
        _ => Err(bad()),
    }
}
