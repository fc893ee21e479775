//! Output formats: what the app finds in the file.
//!
//! Every format is a pure function of the [`Credential`], and equal credentials give equal
//! bytes, so the sink can skip unchanged writes. Errors never carry a secret value: they name
//! templates, lines, field names and keys only.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};
use serde::ser::SerializeMap;
use serde::Serialize;

use crate::credential::{Credential, FieldValue};
use crate::time::rfc3339;

/// Names a template can use at the top level; anything else is rejected at startup.
const CONTEXT_KEYS: [&str; 6] = [
    "username",
    "password",
    "expires_at",
    "lease_id",
    "version",
    "data",
];
/// Secret values shorter than this are not searched and replaced in error text (a one-letter
/// replacement would shred the message); an error mentioning one is withheld whole instead.
const MIN_REDACT_LEN: usize = 3;

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

/// A template checked at startup, ready to render.
#[derive(Clone)]
pub struct Template {
    /// The name errors use: normally the template's file path.
    name: String,
    /// The text it was compiled from: what tells two templates apart on SIGHUP.
    source: Arc<str>,
    /// Holds the one compiled template plus the strict settings and filters; shared, so
    /// clones of the configuration are cheap and `OutputFormat` stays small.
    env: Arc<Environment<'static>>,
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

    #[error("expires_at is outside the range RFC 3339 can show (1970 to 9999)")]
    ExpiryOutOfRange,

    #[error("cannot serialize the JSON output: {0}")]
    Json(#[from] serde_json::Error),
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

impl PartialEq for Template {
    fn eq(&self, other: &Template) -> bool {
        self.name == other.name && self.source == other.source
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The source may hold literals an operator would not want in logs; the name suffices.
        f.debug_struct("Template")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Template {
    /// Compiles and checks a template, so mistakes stop the agent at startup instead of at
    /// the first rotation: syntax errors name the template and line, and top-level names
    /// that can never be defined (a typo such as `pasword`) are rejected.
    pub fn from_source(name: &str, source: String) -> Result<Template, RenderError> {
        let mut env = strict_environment();
        let text: Arc<str> = Arc::from(source.as_str());
        env.add_template_owned(name.to_string(), source)
            .map_err(|e| RenderError::Syntax {
                template: name.to_string(),
                line: e.line(),
                detail: describe(&e),
            })?;
        let template = Template {
            name: name.to_string(),
            source: text,
            env: Arc::new(env),
        };
        template.check_top_level_names()?;
        Ok(template)
    }

    /// The template's name, as given to [`Template::from_source`].
    pub fn name(&self) -> &str {
        &self.name
    }

    fn check_top_level_names(&self) -> Result<(), RenderError> {
        let compiled = self.compiled()?;
        let globals: Vec<&str> = self.env.globals().map(|(name, _)| name).collect();
        let mut unknown: Vec<String> = compiled
            .undeclared_variables(false)
            .into_iter()
            .filter(|n| !CONTEXT_KEYS.contains(&n.as_str()) && !globals.contains(&n.as_str()))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort();
        Err(RenderError::UnknownVariable {
            template: self.name.clone(),
            names: unknown.join(", "),
        })
    }

    fn compiled(&self) -> Result<minijinja::Template<'_, '_>, RenderError> {
        self.env
            .get_template(&self.name)
            .map_err(|e| RenderError::Template {
                template: self.name.clone(),
                line: e.line(),
                detail: describe(&e),
            })
    }

    fn render(&self, cred: &Credential) -> Result<Vec<u8>, RenderError> {
        let context = Value::from_serialize(View::new(cred)?);
        let compiled = self.compiled()?;
        match compiled.render(&context) {
            Ok(text) => Ok(text.into_bytes()),
            Err(e) if e.kind() == ErrorKind::UndefinedError => {
                Err(self.undefined_error(&compiled, &context, &e, cred))
            }
            Err(e) => Err(RenderError::Template {
                template: self.name.clone(),
                line: e.line(),
                detail: redact(&describe(&e), cred),
            }),
        }
    }

    /// minijinja reports only "undefined value" and a line; name the lookups that are
    /// actually missing so the operator sees `data.hots`, not just a line number.
    fn undefined_error(
        &self,
        compiled: &minijinja::Template<'_, '_>,
        context: &Value,
        error: &Error,
        cred: &Credential,
    ) -> RenderError {
        let mut missing: Vec<String> = compiled
            .undeclared_variables(true)
            .into_iter()
            .filter(|path| is_missing(context, path))
            .collect();
        missing.sort();
        let keys = if missing.is_empty() {
            "a lookup on that line (e.g. data[\"...\"]) found nothing".to_string()
        } else {
            missing.join(", ")
        };
        RenderError::Undefined {
            template: self.name.clone(),
            line: error.line(),
            keys,
            fields: cred.fields.keys().cloned().collect::<Vec<_>>().join(", "),
        }
    }
}

/// Renders a credential in the given format.
pub fn render(format: &OutputFormat, cred: &Credential) -> Result<Vec<u8>, RenderError> {
    match format {
        OutputFormat::Json => render_json(cred),
        OutputFormat::Env => render_env(cred),
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

// ---------------------------------------------------------------------------------------------
// env

/// One variable of the env output and where it came from (for collision errors).
struct EnvVar<'a> {
    origin: String,
    field: &'a str,
    value: std::borrow::Cow<'a, str>,
}

/// Plain `KEY='value'` lines, sorted by key. No `export`: docker `--env-file` and systemd
/// `EnvironmentFile=` reject it; shells that need exporting use `set -a; . file; set +a`.
fn render_env(cred: &Credential) -> Result<Vec<u8>, RenderError> {
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
fn env_value(value: &FieldValue) -> std::borrow::Cow<'_, str> {
    match value {
        FieldValue::Secret(secret) => secret.expose().into(),
        FieldValue::Json(serde_json::Value::String(s)) => s.as_str().into(),
        FieldValue::Json(serde_json::Value::Null) => "".into(),
        FieldValue::Json(other) => other.to_string().into(),
    }
}

/// Single quotes make every character literal in sh; a `'` closes the quote, adds an escaped
/// quote and reopens. Newlines stay inside the quotes, which sh accepts.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

// ---------------------------------------------------------------------------------------------
// template environment and filters

/// Strict undefined handling: a missing key is an error, never an empty string (the opposite
/// of consul-template's `<no value>` default). No auto-escaping: the output is a config file,
/// not HTML, whatever the template's extension. Printing `none` is an error too, because
/// `none` written into a config file is as wrong as an empty value.
fn strict_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_keep_trailing_newline(true);
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "cannot print a none (null) value; use `x or \"\"` or an `if` block",
            ));
        }
        minijinja::escape_formatter(out, state, value)
    });
    env.add_filter("urlencode", urlencode);
    env.add_filter("pgpass", pgpass);
    env.add_filter("tojson", tojson);
    env.add_filter("shellquote", shellquote);
    env
}

/// Text of a scalar for a filter; errors never include the value.
fn scalar_text(value: &Value, filter: &str) -> Result<String, Error> {
    if value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            format!("{filter}: the value is undefined"),
        ));
    }
    if value.is_none() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{filter}: the value is none (null)"),
        ));
    }
    match value.kind() {
        minijinja::value::ValueKind::String
        | minijinja::value::ValueKind::Number
        | minijinja::value::ValueKind::Bool => Ok(value.to_string()),
        kind => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{filter} expects a string or a number, not a {kind}"),
        )),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters. Unlike minijinja's builtin,
/// `/`, `:` and `@` are encoded too, so the result is safe inside the user-info of a URL
/// (`postgres://user:{{ password | urlencode }}@host/db`).
fn urlencode(value: Value) -> Result<String, Error> {
    let text = scalar_text(&value, "urlencode")?;
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(out)
}

/// Escapes `\` and `:` for one field of a `.pgpass` line.
fn pgpass(value: Value) -> Result<String, Error> {
    let text = scalar_text(&value, "pgpass")?;
    if text.contains(['\n', '\r']) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "pgpass: the value contains a line break, which .pgpass cannot represent",
        ));
    }
    Ok(text.replace('\\', r"\\").replace(':', r"\:"))
}

/// JSON text of any value; a JSON string is also a valid YAML double-quoted scalar.
fn tojson(value: Value) -> Result<String, Error> {
    if value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            "tojson: the value is undefined",
        ));
    }
    serde_json::to_string(&value).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            "tojson: the value cannot be written as JSON",
        )
    })
}

/// One single-quoted sh word.
fn shellquote(value: Value) -> Result<String, Error> {
    scalar_text(&value, "shellquote").map(|text| shell_quote(&text))
}

/// Whether a dotted lookup such as `data.host` finds nothing in the context.
fn is_missing(context: &Value, path: &str) -> bool {
    let mut current = context.clone();
    for part in path.split('.') {
        match current.get_attr(part) {
            Ok(next) if !next.is_undefined() => current = next,
            _ => return true,
        }
    }
    false
}

/// minijinja's kind and detail, without the `(in name:line)` suffix we report ourselves.
fn describe(error: &Error) -> String {
    match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    }
}

/// Error text must never carry a secret. minijinja details rarely include values, but some
/// (arithmetic failures, formatting) do; replace any secret found, and withhold the text
/// entirely when a secret is too short to replace cleanly.
fn redact(text: &str, cred: &Credential) -> String {
    let mut out = text.to_string();
    for secret in secret_strings(cred) {
        if !out.contains(secret) {
            continue;
        }
        if secret.len() < MIN_REDACT_LEN {
            return "rendering failed (details withheld: they may contain a secret value)".into();
        }
        out = out.replace(secret, "<redacted>");
    }
    out
}

fn secret_strings(cred: &Credential) -> Vec<&str> {
    let mut found: Vec<&str> = cred.password.iter().map(|p| p.expose()).collect();
    for value in cred.fields.values() {
        match value {
            FieldValue::Secret(secret) => found.push(secret.expose()),
            FieldValue::Json(json) => json_strings(json, &mut found),
        }
    }
    found.retain(|s| !s.is_empty());
    // Longest first, so a secret that contains another is replaced whole.
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found
}

fn json_strings<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::String(s) => found.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, found)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::SecretValue;
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, UNIX_EPOCH};

    const NASTY: &str = "p'a\"ss $(touch /tmp/pwned) `id` $HOME\\n\nline2 ; |&:@/?#%";

    fn cred(password: &str) -> Credential {
        let mut fields = BTreeMap::new();
        fields.insert(
            "username".into(),
            FieldValue::Secret(SecretValue::new("v-app-abc")),
        );
        fields.insert(
            "password".into(),
            FieldValue::Secret(SecretValue::new(password)),
        );
        fields.insert("host".into(), FieldValue::Json("db.internal".into()));
        fields.insert("port".into(), FieldValue::Json(5432.into()));
        Credential {
            username: Some("v-app-abc".into()),
            password: Some(SecretValue::new(password)),
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(1_795_654_923)),
            lease_id: Some("database/creds/app/xyz".into()),
            version: None,
            fields,
        }
    }

    fn template(source: &str) -> OutputFormat {
        OutputFormat::Template(Template::from_source("app.tmpl", source.to_string()).unwrap())
    }

    fn render_text(format: &OutputFormat, cred: &Credential) -> String {
        String::from_utf8(render(format, cred).unwrap()).unwrap()
    }

    /// Sources the env output in a real POSIX shell and prints one variable.
    fn sourced(env_file: &[u8], var: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.env");
        std::fs::write(&path, env_file).unwrap();
        let script = format!(". \"$1\"; printf %s \"${var}\"");
        let out = Command::new("sh")
            .args(["-c", &script, "sh"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn json_has_fixed_keys_and_all_fields() {
        let out = render(&OutputFormat::Json, &cred("s3cret")).unwrap();
        assert_eq!(out.last(), Some(&b'\n'));
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["username"], "v-app-abc");
        assert_eq!(doc["password"], "s3cret");
        assert_eq!(doc["expires_at"], "2026-11-26T01:02:03Z");
        assert_eq!(doc["lease_id"], "database/creds/app/xyz");
        assert_eq!(doc["version"], serde_json::Value::Null);
        assert_eq!(doc["data"]["port"], 5432);
        assert_eq!(doc["data"]["host"], "db.internal");
        assert_eq!(doc["data"]["password"], "s3cret");
    }

    #[test]
    fn json_nulls_when_not_leased() {
        let mut c = cred("x");
        (c.expires_at, c.lease_id, c.username, c.password) = (None, None, None, None);
        c.version = Some(7);
        let doc: serde_json::Value =
            serde_json::from_slice(&render(&OutputFormat::Json, &c).unwrap()).unwrap();
        assert_eq!(doc["expires_at"], serde_json::Value::Null);
        assert_eq!(doc["lease_id"], serde_json::Value::Null);
        assert_eq!(doc["username"], serde_json::Value::Null);
        assert_eq!(doc["password"], serde_json::Value::Null);
        assert_eq!(doc["version"], 7);
    }

    #[test]
    fn output_is_byte_identical_for_equal_input() {
        let formats = [
            OutputFormat::Json,
            OutputFormat::Env,
            template("{{ data | tojson }}"),
        ];
        for format in &formats {
            let a = render(format, &cred("same")).unwrap();
            let b = render(format, &cred("same").clone()).unwrap();
            assert_eq!(a, b, "{format:?}");
        }
    }

    #[test]
    fn expiry_out_of_range_is_an_error_not_a_panic() {
        let mut c = cred("x");
        c.expires_at = Some(UNIX_EPOCH + Duration::from_secs(crate::time::RFC3339_LIMIT_SECS + 10));
        for format in [OutputFormat::Json, OutputFormat::Env] {
            assert!(matches!(
                render(&format, &c),
                Err(RenderError::ExpiryOutOfRange)
            ));
        }
    }

    #[test]
    fn env_survives_sourcing_nasty_values() {
        let out = render(&OutputFormat::Env, &cred(NASTY)).unwrap();
        assert_eq!(sourced(&out, "PASSWORD"), NASTY);
        assert_eq!(sourced(&out, "USERNAME"), "v-app-abc");
        assert_eq!(sourced(&out, "PORT"), "5432");
        assert_eq!(sourced(&out, "EXPIRES_AT"), "2026-11-26T01:02:03Z");
        assert!(!Path::new("/tmp/pwned").exists());
    }

    #[test]
    fn env_keys_are_sanitised_and_sorted() {
        let mut c = cred("pw");
        c.fields
            .insert("db-name.x".into(), FieldValue::Json("app".into()));
        c.fields
            .insert("9lives".into(), FieldValue::Json(true.into()));
        c.fields.insert(
            "opts".into(),
            FieldValue::Json(serde_json::json!({"a": [1, 2]})),
        );
        c.fields
            .insert("nothing".into(), FieldValue::Json(serde_json::Value::Null));
        let text = render_text(&OutputFormat::Env, &c);
        let keys: Vec<&str> = text.lines().map(|l| l.split('=').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "DB_NAME_X",
                "EXPIRES_AT",
                "HOST",
                "NOTHING",
                "OPTS",
                "PASSWORD",
                "PORT",
                "USERNAME",
                "_9LIVES"
            ]
        );
        assert_eq!(sourced(text.as_bytes(), "_9LIVES"), "true");
        assert_eq!(sourced(text.as_bytes(), "OPTS"), r#"{"a":[1,2]}"#);
        assert_eq!(sourced(text.as_bytes(), "NOTHING"), "");
    }

    #[test]
    fn env_adds_username_password_and_empty_expiry_when_missing() {
        let mut c = cred("from-cred");
        c.fields.clear();
        c.expires_at = None;
        let text = render_text(&OutputFormat::Env, &c);
        assert_eq!(
            text,
            "EXPIRES_AT=''\nPASSWORD='from-cred'\nUSERNAME='v-app-abc'\n"
        );
    }

    #[test]
    fn env_collisions_are_errors_naming_fields_not_values() {
        let mut c = cred("pw-value");
        c.fields
            .insert("Host".into(), FieldValue::Secret(SecretValue::new("other")));
        let err = render(&OutputFormat::Env, &c).unwrap_err().to_string();
        assert!(
            err.contains("\"Host\"") && err.contains("\"host\"") && err.contains("HOST"),
            "{err}"
        );
        assert!(
            !err.contains("db.internal") && !err.contains("other"),
            "{err}"
        );

        let mut c = cred("pw");
        c.fields
            .insert("expires-at".into(), FieldValue::Json(1.into()));
        let err = render(&OutputFormat::Env, &c).unwrap_err().to_string();
        assert!(err.contains("EXPIRES_AT"), "{err}");
    }

    #[test]
    fn env_rejects_unusable_names_and_nul() {
        let mut c = cred("pw");
        c.fields.insert("--".into(), FieldValue::Json(1.into()));
        assert!(matches!(
            render(&OutputFormat::Env, &c),
            Err(RenderError::EnvBadName { .. })
        ));

        let c = cred("nul\0inside");
        let err = render(&OutputFormat::Env, &c).unwrap_err();
        assert!(matches!(err, RenderError::EnvNul { .. }), "{err:?}");
        assert!(!err.to_string().contains("inside"));
    }

    #[test]
    fn template_pgpass_line() {
        let f = template(
            "{{ data.host }}:{{ data.port }}:app:{{ username | pgpass }}:{{ password | pgpass }}\n",
        );
        let out = render_text(&f, &cred(r"a:b\c"));
        assert_eq!(out, "db.internal:5432:app:v-app-abc:a\\:b\\\\c\n");
    }

    #[test]
    fn template_urls_encode_the_password_whole() {
        let f = template(
            "postgres://{{ username | urlencode }}:{{ password | urlencode }}@{{ data.host }}:{{ data.port }}/app\n\
             jdbc:postgresql://{{ data.host }}:{{ data.port }}/app?user={{ username | urlencode }}&password={{ password | urlencode }}",
        );
        let out = render_text(&f, &cred("p@ss/w:rd?#&= %~"));
        let enc = "p%40ss%2Fw%3Ard%3F%23%26%3D%20%25~";
        assert_eq!(
            out,
            format!(
                "postgres://v-app-abc:{enc}@db.internal:5432/app\n\
                 jdbc:postgresql://db.internal:5432/app?user=v-app-abc&password={enc}"
            )
        );
    }

    #[test]
    fn template_yaml_snippet_parses_back() {
        let f = template(
            "database:\n  user: {{ username | tojson }}\n  password: {{ password | tojson }}\n  port: {{ data.port }}\n{% if expires_at %}  expires: {{ expires_at | tojson }}\n{% endif %}",
        );
        let out = render_text(&f, &cred("it's: \"quoted\"\n#not-a-comment"));
        assert!(
            out.contains("  password: \"it's: \\\"quoted\\\"\\n#not-a-comment\"\n"),
            "{out}"
        );
        assert!(
            out.ends_with("  expires: \"2026-11-26T01:02:03Z\"\n"),
            "{out}"
        );
    }

    #[test]
    fn template_shellquote_round_trips_through_sh() {
        let f = template("PGPASSWORD={{ password | shellquote }}\n");
        let out = render(&f, &cred(NASTY)).unwrap();
        assert_eq!(sourced(&out, "PGPASSWORD"), NASTY);
    }

    #[test]
    fn template_missing_key_is_an_error_naming_it() {
        let f = template("host={{ data.host }}\nport={{ data.prot }}\n");
        let err = render(&f, &cred("s3cret-pw")).unwrap_err();
        let shown = err.to_string();
        assert!(
            matches!(err, RenderError::Undefined { line: Some(2), .. }),
            "{err:?}"
        );
        assert!(
            shown.contains("app.tmpl") && shown.contains("data.prot"),
            "{shown}"
        );
        assert!(shown.contains("host, password, port, username"), "{shown}");
        assert!(
            !shown.contains("s3cret-pw") && !shown.contains("db.internal"),
            "{shown}"
        );
    }

    #[test]
    fn template_missing_key_through_a_filter_is_an_error() {
        let f = template("{{ data.pasword | urlencode }}");
        let err = render(&f, &cred("pw")).unwrap_err();
        assert!(err.to_string().contains("data.pasword"), "{err}");
    }

    #[test]
    fn template_printing_none_is_an_error() {
        let f = template("version={{ version }}");
        let err = render(&f, &cred("pw")).unwrap_err().to_string();
        assert!(err.contains("none"), "{err}");
        assert_eq!(
            render_text(&template("v={{ version or '' }}"), &cred("pw")),
            "v="
        );
    }

    #[test]
    fn syntax_errors_name_template_and_line() {
        let err =
            Template::from_source("/etc/app/db.tmpl", "ok\n{{ password \n".into()).unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, RenderError::Syntax { .. }), "{err:?}");
        assert!(
            shown.contains("/etc/app/db.tmpl") && shown.contains("line 2"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_top_level_names_fail_at_startup() {
        let err = Template::from_source(
            "t",
            "{{ pasword }}{{ data.x }}{% for i in range(2) %}{{ loop.index }}{% endfor %}".into(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, RenderError::UnknownVariable { names, .. } if names == "pasword"),
            "{err:?}"
        );
    }

    #[test]
    fn no_auto_escaping_whatever_the_extension() {
        let f = OutputFormat::Template(
            Template::from_source("page.html", "{{ password }}".into()).unwrap(),
        );
        assert_eq!(render_text(&f, &cred("<&>'\"")), "<&>'\"");
    }

    #[test]
    fn render_errors_redact_secret_values() {
        let c = cred("hunter2-long");
        let text = "unable to calculate hunter2-long + 5432";
        assert_eq!(redact(text, &c), "unable to calculate <redacted> + 5432");
        assert!(redact("a value ab here", &cred("ab")).contains("withheld"));
    }

    #[test]
    fn template_debug_shows_only_the_name() {
        let t = Template::from_source("t.tmpl", "literal-secret {{ password }}".into()).unwrap();
        let shown = format!("{t:?}");
        assert!(
            shown.contains("t.tmpl") && !shown.contains("literal-secret"),
            "{shown}"
        );
    }
}
