//! Output formats: what the app finds in the file, or in each file of an `--output-dir` set.
//!
//! Every format is a pure function of the [`Credential`], and equal credentials give equal
//! bytes, so the sink can skip unchanged writes. Errors never carry a secret value: they name
//! templates, lines, field names and keys only.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::Serialize;

mod env;
mod files;
mod template;
#[cfg(test)]
mod tests;

pub use files::{render_files, FilesFormat};
pub use template::Template;

use crate::credential::{Credential, FieldValue};
use crate::time::rfc3339;

/// How a credential is written to the file.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// A JSON document with fixed top-level keys and every field under `data`.
    Json,
    /// `KEY='value'` lines that `sh` can source.
    Env,
    /// A user template (minijinja), for config files, URLs, `.pgpass` lines and the like.
    Template(Template),
}

/// Errors from building a template or rendering a credential. None contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {template}{}: syntax error: {detail}", at_line(*.line))]
    Syntax {
        template: String,
        line: Option<usize>,
        detail: String,
    },

    #[error(
        "template {template}: unknown variable(s) {names}; available: username, password, \
         expires_at, lease_id, version, data (secret fields are under data, e.g. data.host)"
    )]
    UnknownVariable { template: String, names: String },

    #[error(
        "template {template}{}: undefined value: {keys}; the secret's fields are: [{fields}]",
        at_line(*.line)
    )]
    Undefined {
        template: String,
        line: Option<usize>,
        keys: String,
        fields: String,
    },

    #[error("template {template}{}: {detail}", at_line(*.line))]
    Template {
        template: String,
        line: Option<usize>,
        detail: String,
    },

    #[error("env output: {first} and {second} both become the variable {key}")]
    EnvCollision {
        key: String,
        first: String,
        second: String,
    },

    #[error("env output: field {field:?} has no letters or digits to make a variable name from")]
    EnvBadName { field: String },

    #[error("env output: field {field:?} contains a NUL byte, which a shell variable cannot hold")]
    EnvNul { field: String },

    #[error(
        "output directory: the secret's field {field:?} would take the name of the agent's own \
         {field} file; name the files with templates ([secret.files] in --config)"
    )]
    FileCollision { field: String },

    #[error("expires_at is outside the range RFC 3339 can show (1970 to 9999)")]
    ExpiryOutOfRange,

    #[error("cannot serialize the JSON output: {0}")]
    Json(#[from] serde_json::Error),
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

/// Renders a credential in the given format.
pub fn render(format: &OutputFormat, cred: &Credential) -> Result<Vec<u8>, RenderError> {
    match format {
        OutputFormat::Json => render_json(cred),
        OutputFormat::Env => env::render_env(cred),
        OutputFormat::Template(template) => template.render(cred),
    }
}

/// The document both the JSON format and templates see. Field order is fixed and `data` is
/// a sorted map, so equal credentials serialize to equal bytes.
#[derive(Serialize)]
struct View<'a> {
    username: Option<&'a str>,
    password: Option<&'a str>,
    expires_at: Option<String>,
    lease_id: Option<&'a str>,
    version: Option<u64>,
    data: Fields<'a>,
}

impl<'a> View<'a> {
    fn new(cred: &'a Credential) -> Result<Self, RenderError> {
        Ok(View {
            username: cred.username.as_deref(),
            password: cred.password.as_ref().map(|p| p.expose()),
            expires_at: expiry_text(cred)?,
            lease_id: cred.lease_id.as_deref(),
            version: cred.version,
            data: Fields(&cred.fields),
        })
    }
}

fn expiry_text(cred: &Credential) -> Result<Option<String>, RenderError> {
    cred.expires_at
        .map(|t| rfc3339(t).ok_or(RenderError::ExpiryOutOfRange))
        .transpose()
}

/// Every field of the secret: secret strings as strings, other JSON values as they came.
struct Fields<'a>(&'a BTreeMap<String, FieldValue>);

impl Serialize for Fields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            match value {
                FieldValue::Secret(secret) => map.serialize_entry(key, secret.expose())?,
                FieldValue::Json(json) => map.serialize_entry(key, json)?,
            }
        }
        map.end()
    }
}

fn render_json(cred: &Credential) -> Result<Vec<u8>, RenderError> {
    let mut out = serde_json::to_vec_pretty(&View::new(cred)?)?;
    out.push(b'\n');
    Ok(out)
}
