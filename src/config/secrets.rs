//! Each secret's settings, from `--secret` and its flags or a `[[secret]]` table, and its
//! notification hooks.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::{
    duration_or, invalid, parse_duration, parse_kind, parse_mode, parse_owner, Cli, ConfigError,
    FileSecret, Output, SecretConfig, DEFAULT_FILE_MODE, DEFAULT_KV_REFRESH, DEFAULT_REVOKE_GRACE,
};
use crate::drain::DrainCheck;
use crate::notify::Hook;
use crate::render::{FilesFormat, OutputFormat, Template};
use crate::sink::dirset::file_name_problem;

pub(super) fn build_secrets(
    cli: &Cli,
    from_file: Vec<FileSecret>,
) -> Result<Vec<SecretConfig>, ConfigError> {
    let mut secrets = Vec::new();
    if let Some(path) = &cli.secret {
        if cli.output.is_none() && cli.output_dir.is_none() {
            return Err(invalid(
                "--output",
                "required with --secret (or --output-dir)",
            ));
        }
        let raw = FileSecret {
            name: cli.name.clone(),
            path: path.clone(),
            kind: cli.kind.clone(),
            output: cli.output.clone(),
            output_dir: cli.output_dir.clone(),
            format: cli.format.clone(),
            template: cli.template.clone(),
            files: Default::default(),
            file_mode: cli.file_mode.clone(),
            owner: cli.owner.clone(),
            rotate_every: cli.rotate_every.clone(),
            revoke_grace: cli.revoke_grace.clone(),
            drain_check: cli.drain_check.clone(),
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
    } else if cli.output_dir.is_some() {
        return Err(invalid("--secret", "required with --output-dir"));
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
        if !outputs.insert(s.output.path()) {
            return Err(invalid(
                "output",
                format!("{} is the output of two secrets", s.output.path().display()),
            ));
        }
    }
    check_dirs_are_their_own(&secrets)?;
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
    let output = build_output(&raw, &field)?;
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
    let drain_check = raw
        .drain_check
        .as_deref()
        .map(|url| parse_drain_check(&field("drain_check"), url))
        .transpose()?;
    Ok(SecretConfig {
        name,
        path,
        kind,
        output,
        file_mode,
        owner,
        rotate_every,
        revoke_grace: duration_or(
            &field("revoke_grace"),
            raw.revoke_grace.as_deref(),
            DEFAULT_REVOKE_GRACE,
        )?,
        drain_check,
        refresh_every,
        hooks,
    })
}

/// The output: `output` (one file, with `format` and `template`) or `output_dir` (a set of
/// files, with `files`), never both.
fn build_output(raw: &FileSecret, field: &dyn Fn(&str) -> String) -> Result<Output, ConfigError> {
    match (&raw.output, &raw.output_dir) {
        (Some(path), None) => {
            if !raw.files.is_empty() {
                return Err(invalid(
                    field("files"),
                    format!(
                        "only goes with {}, not {}",
                        field("output_dir"),
                        field("output")
                    ),
                ));
            }
            if path.file_name().is_none() || path.as_os_str().is_empty() {
                return Err(invalid(
                    field("output"),
                    format!("{} is not a file path", path.display()),
                ));
            }
            Ok(Output::File {
                path: path.clone(),
                format: build_format(raw, field)?,
            })
        }
        (None, Some(path)) => {
            for (name, given) in [
                ("format", raw.format.is_some()),
                ("template", raw.template.is_some()),
            ] {
                if given {
                    return Err(invalid(
                        field(name),
                        format!(
                            "goes with {}, not {}: each field becomes a file, or each template in \
                             [secret.files]",
                            field("output"),
                            field("output_dir")
                        ),
                    ));
                }
            }
            if path.as_os_str().is_empty() {
                return Err(invalid(field("output_dir"), "is empty"));
            }
            Ok(Output::Dir {
                path: path.clone(),
                files: build_files(raw, field)?,
            })
        }
        (Some(_), Some(_)) => Err(invalid(
            field("output_dir"),
            format!(
                "{} and {} cannot both be given: one file, or a directory of files",
                field("output"),
                field("output_dir")
            ),
        )),
        (None, None) => Err(invalid(
            field("output"),
            format!(
                "one of {} or {} is required",
                field("output"),
                field("output_dir")
            ),
        )),
    }
}

/// The single file's format: `format`, and `template` for `format = "template"`.
fn build_format(
    raw: &FileSecret,
    field: &dyn Fn(&str) -> String,
) -> Result<OutputFormat, ConfigError> {
    let default_format = if raw.template.is_some() {
        "template"
    } else {
        "json"
    };
    match (
        raw.format.as_deref().unwrap_or(default_format),
        &raw.template,
    ) {
        ("json", None) => Ok(OutputFormat::Json),
        ("env", None) => Ok(OutputFormat::Env),
        ("template", Some(t)) => Ok(OutputFormat::Template(load_template(
            &field("template"),
            t,
        )?)),
        ("template", None) => Err(invalid(
            field("template"),
            "--format template needs --template",
        )),
        (f @ ("json" | "env"), Some(_)) => Err(invalid(
            field("template"),
            format!("--template only goes with --format template, not {f}"),
        )),
        (other, _) => Err(invalid(
            field("format"),
            format!("{other:?} is not json, env or template"),
        )),
    }
}

/// What each file of an `output_dir` set holds: the fields, or the templates in `files`, whose
/// names are checked here so a bad one stops the agent at startup.
fn build_files(
    raw: &FileSecret,
    field: &dyn Fn(&str) -> String,
) -> Result<FilesFormat, ConfigError> {
    if raw.files.is_empty() {
        return Ok(FilesFormat::Fields);
    }
    let mut templates = BTreeMap::new();
    for (name, path) in &raw.files {
        let at = format!("{}[{name:?}]", field("files"));
        if let Some(reason) = file_name_problem(name) {
            return Err(invalid(at, format!("file name {name:?} {reason}")));
        }
        templates.insert(name.clone(), load_template(&at, path)?);
    }
    Ok(FilesFormat::Templates(templates))
}

fn load_template(field: &str, path: &Path) -> Result<Template, ConfigError> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| invalid(field, format!("{}: {e}", path.display())))?;
    Template::from_source(&path.display().to_string(), source)
        .map_err(|e| invalid(field, e.to_string()))
}

/// A set's directory belongs to its writer: a file output in it, or a set inside another's
/// directory, would be touched by both.
fn check_dirs_are_their_own(secrets: &[SecretConfig]) -> Result<(), ConfigError> {
    for dir in secrets.iter().filter_map(|s| match &s.output {
        Output::Dir { path, .. } => Some(path),
        Output::File { .. } => None,
    }) {
        let inside = secrets
            .iter()
            .map(|s| s.output.path())
            .find(|p| p.parent() == Some(dir.as_path()));
        if let Some(other) = inside {
            return Err(invalid(
                "output_dir",
                format!(
                    "{} is inside the output directory {}: give the set a directory of its own",
                    other.display(),
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// A `--drain-check` URL, checked as far as can be without the database: its syntax, no
/// password in it, a readable root file, and a build that has the database clients.
fn parse_drain_check(field: &str, url: &str) -> Result<DrainCheck, ConfigError> {
    let check: DrainCheck = url.parse().map_err(|e| invalid(field, format!("{e}")))?;
    if !cfg!(feature = "drain-check") {
        return Err(invalid(
            field,
            "this build has no database clients: rebuild with the cargo feature `drain-check`",
        ));
    }
    if let Some(root) = &check.root_cert {
        std::fs::metadata(root).map_err(|e| {
            invalid(
                field,
                format!("cannot read the root certificate {}: {e}", root.display()),
            )
        })?;
    }
    Ok(check)
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
