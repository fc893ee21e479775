//! User templates (minijinja): compiled and checked at startup, rendered strictly, with the
//! filters a config file needs and errors that never show a secret value.

use std::fmt;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};

use super::env::shell_quote;
use super::{RenderError, View};
use crate::credential::{Credential, FieldValue};

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

    pub(super) fn render(&self, cred: &Credential) -> Result<Vec<u8>, RenderError> {
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
pub(super) fn redact(text: &str, cred: &Credential) -> String {
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
