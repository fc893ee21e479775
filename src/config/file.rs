//! The `--config` TOML file, as written: every field optional, checked later by `build`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

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
    pub output: Option<PathBuf>,
    pub output_dir: Option<PathBuf>,
    pub format: Option<String>,
    pub template: Option<PathBuf>,
    /// With `output_dir`: file name to template path, one file per template.
    #[serde(default)]
    pub files: BTreeMap<String, PathBuf>,
    pub file_mode: Option<String>,
    pub owner: Option<String>,
    pub rotate_every: Option<String>,
    pub revoke_grace: Option<String>,
    pub drain_check: Option<String>,
    pub refresh_every: Option<String>,
    #[serde(default)]
    pub notify_exec: Vec<String>,
    pub notify_signal: Option<String>,
    pub notify_pid_file: Option<PathBuf>,
    pub notify_url: Option<String>,
    pub notify_timeout: Option<String>,
}

pub(super) fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
