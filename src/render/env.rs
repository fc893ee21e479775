//! The env format: `KEY='value'` lines that `sh` can source.

use std::collections::BTreeMap;

use super::{expiry_text, RenderError};
use crate::credential::{Credential, FieldValue};

/// One variable of the env output and where it came from (for collision errors).
struct EnvVar<'a> {
    origin: String,
    field: &'a str,
    value: std::borrow::Cow<'a, str>,
}

/// Plain `KEY='value'` lines, sorted by key. No `export`: docker `--env-file` and systemd
/// `EnvironmentFile=` reject it; shells that need exporting use `set -a; . file; set +a`.
pub(super) fn render_env(cred: &Credential) -> Result<Vec<u8>, RenderError> {
    let mut vars: BTreeMap<String, EnvVar<'_>> = BTreeMap::new();
    for (field, value) in &cred.fields {
        insert_env(
            &mut vars,
            env_key(field)?,
            EnvVar {
                origin: format!("field {field:?}"),
                field,
                value: env_value(value),
            },
        )?;
    }
    let expires = expiry_text(cred)?.unwrap_or_default();
    insert_env(
        &mut vars,
        "EXPIRES_AT".into(),
        EnvVar {
            origin: "the agent's own EXPIRES_AT".into(),
            field: "expires_at",
            value: expires.into(),
        },
    )?;
    add_if_absent(&mut vars, "USERNAME", "username", cred.username.as_deref());
    add_if_absent(
        &mut vars,
        "PASSWORD",
        "password",
        cred.password.as_ref().map(|p| p.expose()),
    );
    env_lines(&vars)
}

fn insert_env<'a>(
    vars: &mut BTreeMap<String, EnvVar<'a>>,
    key: String,
    var: EnvVar<'a>,
) -> Result<(), RenderError> {
    if let Some(existing) = vars.get(&key) {
        return Err(RenderError::EnvCollision {
            key,
            first: existing.origin.clone(),
            second: var.origin,
        });
    }
    vars.insert(key, var);
    Ok(())
}

fn add_if_absent<'a>(
    vars: &mut BTreeMap<String, EnvVar<'a>>,
    key: &str,
    field: &'a str,
    value: Option<&'a str>,
) {
    if let (false, Some(value)) = (vars.contains_key(key), value) {
        vars.insert(
            key.to_string(),
            EnvVar {
                origin: format!("the credential's {field}"),
                field,
                value: value.into(),
            },
        );
    }
}

fn env_lines(vars: &BTreeMap<String, EnvVar<'_>>) -> Result<Vec<u8>, RenderError> {
    let mut out = String::new();
    for (key, var) in vars {
        if var.value.contains('\0') {
            return Err(RenderError::EnvNul {
                field: var.field.to_string(),
            });
        }
        out.push_str(key);
        out.push('=');
        out.push_str(&shell_quote(&var.value));
        out.push('\n');
    }
    Ok(out.into_bytes())
}

/// Upper-cased, every character outside `[A-Z0-9_]` turned into `_`, and `_` in front of a
/// leading digit, so the result is always a valid shell name.
fn env_key(field: &str) -> Result<String, RenderError> {
    let mut key: String = field
        .chars()
        .map(|c| c.to_ascii_uppercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !key.chars().any(|c| c.is_ascii_alphanumeric()) {
        // Empty, or only `_`s: `_` is a special parameter in bash and would be clobbered.
        return Err(RenderError::EnvBadName {
            field: field.to_string(),
        });
    }
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        key.insert(0, '_');
    }
    Ok(key)
}

/// Strings as they are, null as empty, anything else as compact JSON.
pub(super) fn env_value(value: &FieldValue) -> std::borrow::Cow<'_, str> {
    match value {
        FieldValue::Secret(secret) => secret.expose().into(),
        FieldValue::Json(serde_json::Value::String(s)) => s.as_str().into(),
        FieldValue::Json(serde_json::Value::Null) => "".into(),
        FieldValue::Json(other) => other.to_string().into(),
    }
}

/// Single quotes make every character literal in sh; a `'` closes the quote, adds an escaped
/// quote and reopens. Newlines stay inside the quotes, which sh accepts.
pub(super) fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}
