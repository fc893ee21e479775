//! ACL policies: a parser for the HCL (and JSON) subset Vault policies use,
//! and the path matcher with Vault's precedence rules (exact path, then the
//! most specific of `*` globs and `+` segment wildcards).
//!
//! Only capabilities are enforced; parameter constraints and wrapping-TTL
//! bounds are parsed and ignored.

use std::collections::BTreeMap;

use serde_json::Value;

/// Capability bits.
pub mod cap {
    pub const CREATE: u16 = 1;
    pub const READ: u16 = 2;
    pub const UPDATE: u16 = 4;
    pub const DELETE: u16 = 8;
    pub const LIST: u16 = 16;
    pub const SUDO: u16 = 32;
    pub const DENY: u16 = 64;
    pub const PATCH: u16 = 128;
    pub const SUBSCRIBE: u16 = 256;
}

/// The operation a request performs, as Vault's `logical.Operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Read,
    Update,
    Delete,
    List,
    Patch,
}

impl Op {
    fn bit(self) -> u16 {
        match self {
            Op::Create => cap::CREATE,
            Op::Read => cap::READ,
            Op::Update => cap::UPDATE,
            Op::Delete => cap::DELETE,
            Op::List => cap::LIST,
            Op::Patch => cap::PATCH,
        }
    }
}

/// The built-in `default` policy (Vault's `vault/policy_store.go`), limited to
/// the paths devvault serves or that clients commonly probe.
pub const DEFAULT_POLICY: &str = r#"
# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own entity by id or name
path "identity/entity/id/{{identity.entity.id}}" {
  capabilities = ["read"]
}
path "identity/entity/name/{{identity.entity.name}}" {
  capabilities = ["read"]
}

# Allow a token to look up its resultant ACL from all policies. This is useful
# for UIs. It is an internal path because the format may change at any time
# based on how the internal ACL features and capabilities change.
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}

# Allow a token to renew a lease via lease_id in the request body; old path for
# old clients, new path for newer
path "sys/renew" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}

# Allow looking up lease properties. This requires knowing the lease ID ahead
# of time and does not divulge any sensitive information.
path "sys/leases/lookup" {
    capabilities = ["update"]
}

# Allow a token to manage its own cubbyhole
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

# Allow a token to wrap arbitrary values in a response-wrapping token
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

# Allow a token to look up the creation time and TTL of a given
# response-wrapping token
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

# Allow a token to unwrap a response-wrapping token. This is a convenience to
# avoid client token swapping since this is also part of the response wrapping
# policy.
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Allow general purpose tools
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}

# Allow checking the status of a Control Group request if the user has the
# accessor
path "sys/control-group/request" {
    capabilities = ["update"]
}

# Allow a token to make requests to the Authorization Endpoint for OIDC providers.
path "identity/oidc/provider/+/authorize" {
    capabilities = ["read", "update"]
}
"#;

/// A parsed policy: path pattern → capability bits.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub raw: String,
    pub paths: Vec<(String, u16)>,
}

/// Errors from policy parsing, reported as `failed to parse policy: ...`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Syntax(String),
    #[error("path {path:?}: invalid capability {cap:?}")]
    Capability { path: String, cap: String },
    #[error("path {path:?}: invalid policy {policy:?}")]
    Legacy { path: String, policy: String },
}

impl Policy {
    /// Parses HCL or JSON policy text.
    pub fn parse(raw: &str) -> Result<Policy, PolicyError> {
        let doc = if raw.trim_start().starts_with('{') {
            serde_json::from_str::<Value>(raw).map_err(|e| PolicyError::Syntax(e.to_string()))?
        } else {
            hcl::parse(raw).map_err(PolicyError::Syntax)?
        };
        let mut paths = Vec::new();
        // HCL `path "x" {...}` blocks parse to {"path": [{"x": {...}}, ...]}
        // JSON policies use {"path": {"x": {...}}}.
        let mut push_block = |name: &str, body: &Value| -> Result<(), PolicyError> {
            paths.push((name.to_string(), capabilities_of(name, body)?));
            Ok(())
        };
        match doc.get("path") {
            Some(Value::Array(blocks)) => {
                for b in blocks {
                    if let Value::Object(m) = b {
                        for (k, v) in m {
                            push_block(k, v)?;
                        }
                    }
                }
            }
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    push_block(k, v)?;
                }
            }
            _ => {}
        }
        Ok(Policy {
            raw: raw.to_string(),
            paths,
        })
    }
}

fn capabilities_of(path: &str, body: &Value) -> Result<u16, PolicyError> {
    let mut bits = 0u16;
    if let Some(Value::String(p)) = body.get("policy") {
        bits |= match p.as_str() {
            "deny" => cap::DENY,
            "read" => cap::READ | cap::LIST,
            "write" => cap::CREATE | cap::READ | cap::UPDATE | cap::DELETE | cap::LIST,
            "sudo" => cap::CREATE | cap::READ | cap::UPDATE | cap::DELETE | cap::LIST | cap::SUDO,
            other => {
                return Err(PolicyError::Legacy {
                    path: path.into(),
                    policy: other.into(),
                })
            }
        };
    }
    if let Some(Value::Array(caps)) = body.get("capabilities") {
        for c in caps {
            let name = c.as_str().unwrap_or_default();
            bits |= match name {
                "create" => cap::CREATE,
                "read" => cap::READ,
                "update" => cap::UPDATE,
                "delete" => cap::DELETE,
                "list" => cap::LIST,
                "sudo" => cap::SUDO,
                "deny" => cap::DENY,
                "patch" => cap::PATCH,
                "subscribe" => cap::SUBSCRIBE,
                "recover" => 0,
                _ => {
                    return Err(PolicyError::Capability {
                        path: path.into(),
                        cap: name.into(),
                    })
                }
            };
        }
    }
    if bits & cap::DENY != 0 {
        bits = cap::DENY;
    }
    Ok(bits)
}

/// The merged rules of all of a token's policies.
#[derive(Debug, Default)]
pub struct Acl {
    root: bool,
    exact: BTreeMap<String, u16>,
    /// Rules ending in `*` without `+`: prefix (without the `*`) → caps.
    prefix: BTreeMap<String, u16>,
    /// Rules containing `+`.
    segment: BTreeMap<String, u16>,
}

fn merge(map: &mut BTreeMap<String, u16>, key: &str, bits: u16) {
    let e = map.entry(key.to_string()).or_insert(0);
    *e |= bits;
    if *e & cap::DENY != 0 {
        *e = cap::DENY;
    }
}

impl Acl {
    /// Builds an ACL from policies; `root` short-circuits everything.
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a Policy>, root: bool) -> Acl {
        let mut acl = Acl {
            root,
            ..Default::default()
        };
        for p in policies {
            for (path, bits) in &p.paths {
                if path.contains('+') {
                    merge(&mut acl.segment, path, *bits);
                } else if let Some(pre) = path.strip_suffix('*') {
                    merge(&mut acl.prefix, pre, *bits);
                } else {
                    merge(&mut acl.exact, path, *bits);
                }
            }
        }
        acl
    }

    /// Capability bits granted on `path` (list paths carry their trailing `/`).
    pub fn capabilities(&self, path: &str, op: Op) -> u16 {
        if self.root {
            return !cap::DENY;
        }
        if let Some(b) = self.exact.get(path) {
            return *b;
        }
        if op == Op::List {
            if let Some(b) = self.exact.get(path.trim_end_matches('/')) {
                return *b;
            }
        }
        self.non_exact(path).unwrap_or(0)
    }

    /// Whether `op` on `path` is allowed.
    pub fn allowed(&self, path: &str, op: Op) -> bool {
        if self.root {
            return true;
        }
        let bits = self.capabilities(path, op);
        bits & cap::DENY == 0 && bits & op.bit() != 0
    }

    /// Whether any rule could grant something under `prefix` (hasMountAccess).
    pub fn has_any_under(&self, prefix: &str) -> bool {
        if self.root {
            return true;
        }
        let grants = |b: &u16| *b & cap::DENY == 0 && *b != 0;
        self.exact
            .iter()
            .any(|(p, b)| p.starts_with(prefix) && grants(b))
            || self.prefix.iter().any(|(p, b)| {
                (p.starts_with(prefix) || prefix.starts_with(p.as_str())) && grants(b)
            })
            || self
                .segment
                .iter()
                .any(|(rule, b)| segment_rule_reaches(rule, prefix) && grants(b))
    }

    fn non_exact(&self, path: &str) -> Option<u16> {
        let mut candidates: Vec<Candidate> = Vec::new();
        // Longest matching prefix rule.
        if let Some((pre, bits)) = self
            .prefix
            .iter()
            .filter(|(pre, _)| path.starts_with(pre.as_str()))
            .max_by_key(|(pre, _)| pre.len())
        {
            candidates.push(Candidate {
                first_wc: pre.len(),
                is_prefix: true,
                wildcards: 0,
                path: pre.clone(),
                bits: *bits,
            });
        }
        for (rule, bits) in &self.segment {
            if segment_match(rule, path) {
                let is_prefix = rule.ends_with('*');
                let first_wc = rule.find(['+', '*']).unwrap_or(rule.len());
                candidates.push(Candidate {
                    first_wc,
                    is_prefix,
                    wildcards: rule.split('/').filter(|s| *s == "+").count(),
                    path: rule.trim_end_matches('*').to_string(),
                    bits: *bits,
                });
            }
        }
        candidates
            .into_iter()
            .max_by(|a, b| a.cmp_priority(b))
            .map(|c| c.bits)
    }
}

struct Candidate {
    first_wc: usize,
    is_prefix: bool,
    wildcards: usize,
    path: String,
    bits: u16,
}

impl Candidate {
    /// Vault's precedence (docs "Priority matching"): later wildcard wins, a
    /// non-glob beats a glob, fewer `+` wins, longer wins, lexicographically larger wins.
    fn cmp_priority(&self, other: &Candidate) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        self.first_wc
            .cmp(&other.first_wc)
            .then_with(|| match (self.is_prefix, other.is_prefix) {
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                _ => Ordering::Equal,
            })
            .then_with(|| other.wildcards.cmp(&self.wildcards))
            .then_with(|| self.path.len().cmp(&other.path.len()))
            .then_with(|| self.path.cmp(&other.path))
    }
}

/// Whether a `+` rule can match something under `mount` (Vault's
/// `CheckAllowedFromNonExactPaths` with `bareMount`): the rule's first segments match the
/// mount's segments.
fn segment_rule_reaches(rule: &str, mount: &str) -> bool {
    let rparts: Vec<&str> = rule.split('/').collect();
    let mparts: Vec<&str> = mount.trim_end_matches('/').split('/').collect();
    mparts.iter().enumerate().all(|(i, m)| match rparts.get(i) {
        Some(&"+") => true,
        Some(r) if i + 1 == rparts.len() && r.ends_with('*') => {
            m.starts_with(r.trim_end_matches('*'))
        }
        Some(r) => r == m,
        // The rule is shorter than the mount path: only a trailing glob reaches below.
        None => rparts.last().is_some_and(|r| r.ends_with('*')),
    })
}

fn segment_match(rule: &str, path: &str) -> bool {
    let rparts: Vec<&str> = rule.split('/').collect();
    let pparts: Vec<&str> = path.split('/').collect();
    let is_prefix = rule.ends_with('*');
    if is_prefix {
        if pparts.len() < rparts.len() {
            return false;
        }
    } else if pparts.len() != rparts.len() {
        return false;
    }
    let last = rparts.len() - 1;
    for (i, part) in rparts.iter().enumerate() {
        if *part == "+" {
            continue;
        }
        if i == last && is_prefix {
            let pre = part.trim_end_matches('*');
            if !pparts[i].starts_with(pre) {
                return false;
            }
            if *part == "+*" {
                continue;
            }
            continue;
        }
        if *part != pparts[i] {
            return false;
        }
    }
    true
}

/// A tiny HCL reader: blocks (`name "label" { ... }`), attributes (`k = v`),
/// strings, numbers, bools, lists and nested objects. Comments `#`, `//`, `/* */`.
mod hcl {
    use serde_json::{Map, Value};

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        Str(String),
        Num(f64),
        LBrace,
        RBrace,
        LBrack,
        RBrack,
        Eq,
        Comma,
    }

    fn lex(src: &str) -> Result<Vec<Tok>, String> {
        let chars: Vec<char> = src.chars().collect();
        let mut i = 0;
        let mut out = Vec::new();
        while i < chars.len() {
            let c = chars[i];
            match c {
                ' ' | '\t' | '\r' | '\n' => i += 1,
                '#' => {
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1
                    }
                }
                '/' if chars.get(i + 1) == Some(&'/') => {
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1
                    }
                }
                '/' if chars.get(i + 1) == Some(&'*') => {
                    i += 2;
                    while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                        i += 1
                    }
                    i += 2;
                }
                '{' => {
                    out.push(Tok::LBrace);
                    i += 1
                }
                '}' => {
                    out.push(Tok::RBrace);
                    i += 1
                }
                '[' => {
                    out.push(Tok::LBrack);
                    i += 1
                }
                ']' => {
                    out.push(Tok::RBrack);
                    i += 1
                }
                '=' | ':' => {
                    out.push(Tok::Eq);
                    i += 1
                }
                ',' => {
                    out.push(Tok::Comma);
                    i += 1
                }
                '"' => {
                    i += 1;
                    let mut s = String::new();
                    loop {
                        let Some(&ch) = chars.get(i) else {
                            return Err("unterminated string".into());
                        };
                        i += 1;
                        match ch {
                            '"' => break,
                            '\\' => {
                                let Some(&e) = chars.get(i) else {
                                    return Err("unterminated string".into());
                                };
                                i += 1;
                                s.push(match e {
                                    'n' => '\n',
                                    't' => '\t',
                                    other => other,
                                });
                            }
                            other => s.push(other),
                        }
                    }
                    out.push(Tok::Str(s));
                }
                c if c.is_ascii_digit() || c == '-' => {
                    let start = i;
                    i += 1;
                    while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                        i += 1
                    }
                    let s: String = chars[start..i].iter().collect();
                    out.push(Tok::Num(
                        s.parse().map_err(|_| format!("bad number {s:?}"))?,
                    ));
                }
                c if c.is_alphabetic() || c == '_' => {
                    let start = i;
                    while i < chars.len()
                        && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '-')
                    {
                        i += 1
                    }
                    out.push(Tok::Ident(chars[start..i].iter().collect()));
                }
                other => return Err(format!("unexpected character {other:?}")),
            }
        }
        Ok(out)
    }

    struct Parser {
        toks: Vec<Tok>,
        pos: usize,
        /// Nesting depth, bounded so hostile input cannot overflow the stack.
        depth: usize,
    }

    const MAX_DEPTH: usize = 32;

    impl Parser {
        fn peek(&self) -> Option<&Tok> {
            self.toks.get(self.pos)
        }
        fn next(&mut self) -> Option<Tok> {
            let t = self.toks.get(self.pos).cloned();
            self.pos += 1;
            t
        }

        /// Body until `}` (or EOF at top level).
        fn body(&mut self, top: bool) -> Result<Map<String, Value>, String> {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err("policy nested too deeply".into());
            }
            let r = self.body_inner(top);
            self.depth -= 1;
            r
        }

        fn body_inner(&mut self, top: bool) -> Result<Map<String, Value>, String> {
            let mut m = Map::new();
            loop {
                match self.peek() {
                    None if top => return Ok(m),
                    None => return Err("unexpected end of input, expected }".into()),
                    Some(Tok::RBrace) if !top => {
                        self.pos += 1;
                        return Ok(m);
                    }
                    Some(Tok::Comma) => {
                        self.pos += 1;
                        continue;
                    }
                    _ => {}
                }
                let key = match self.next() {
                    Some(Tok::Ident(s)) | Some(Tok::Str(s)) => s,
                    other => return Err(format!("expected identifier, got {other:?}")),
                };
                match self.peek() {
                    Some(Tok::Eq) => {
                        self.pos += 1;
                        let v = self.value()?;
                        m.insert(key, v);
                    }
                    Some(Tok::Str(_)) | Some(Tok::LBrace) => {
                        let mut labels = Vec::new();
                        while let Some(Tok::Str(l)) = self.peek().cloned() {
                            labels.push(l);
                            self.pos += 1;
                        }
                        match self.next() {
                            Some(Tok::LBrace) => {}
                            other => return Err(format!("expected {{, got {other:?}")),
                        }
                        let mut inner = Value::Object(self.body(false)?);
                        for l in labels.into_iter().rev() {
                            let mut wrap = Map::new();
                            wrap.insert(l, inner);
                            inner = Value::Object(wrap);
                        }
                        match m.get_mut(&key) {
                            Some(Value::Array(arr)) => arr.push(inner),
                            _ => {
                                m.insert(key, Value::Array(vec![inner]));
                            }
                        }
                    }
                    other => {
                        return Err(format!("expected = or block after {key:?}, got {other:?}"))
                    }
                }
            }
        }

        fn value(&mut self) -> Result<Value, String> {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err("policy nested too deeply".into());
            }
            let r = self.value_inner();
            self.depth -= 1;
            r
        }

        fn value_inner(&mut self) -> Result<Value, String> {
            match self.next() {
                Some(Tok::Str(s)) => Ok(Value::String(s)),
                Some(Tok::Num(n)) => Ok(serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)),
                Some(Tok::Ident(s)) if s == "true" => Ok(Value::Bool(true)),
                Some(Tok::Ident(s)) if s == "false" => Ok(Value::Bool(false)),
                Some(Tok::LBrack) => {
                    let mut items = Vec::new();
                    loop {
                        match self.peek() {
                            Some(Tok::RBrack) => {
                                self.pos += 1;
                                return Ok(Value::Array(items));
                            }
                            Some(Tok::Comma) => self.pos += 1,
                            None => return Err("unterminated list".into()),
                            _ => items.push(self.value()?),
                        }
                    }
                }
                Some(Tok::LBrace) => Ok(Value::Object(self.body(false)?)),
                other => Err(format!("unexpected value token {other:?}")),
            }
        }
    }

    /// Parses HCL into a JSON value; repeated blocks become arrays.
    pub fn parse(src: &str) -> Result<Value, String> {
        let toks = lex(src)?;
        let mut p = Parser {
            toks,
            pos: 0,
            depth: 0,
        };
        Ok(Value::Object(p.body(true)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(src: &str) -> Acl {
        let p = Policy::parse(src).expect("parse");
        Acl::new([&p], false)
    }

    #[test]
    fn parses_and_matches_globs() {
        let a = acl(r#"
            # comment
            path "secret/data/*" { capabilities = ["read", "list"] }
            path "database/creds/app" {
              capabilities = ["read"]
            }
            path "secret/data/private/*" { capabilities = ["deny"] }
            path "kv/+/foo" { capabilities = ["update"] }
            "#);
        assert!(a.allowed("secret/data/x", Op::Read));
        assert!(!a.allowed("secret/data/x", Op::Update));
        assert!(!a.allowed("secret/data/private/x", Op::Read));
        assert!(a.allowed("database/creds/app", Op::Read));
        assert!(!a.allowed("database/creds/other", Op::Read));
        assert!(a.allowed("kv/any/foo", Op::Update));
        assert!(!a.allowed("kv/any/bar", Op::Update));
    }

    #[test]
    fn default_policy_parses() {
        let a = acl(DEFAULT_POLICY);
        assert!(a.allowed("auth/token/lookup-self", Op::Read));
        assert!(a.allowed("sys/leases/renew", Op::Update));
        assert!(!a.allowed("sys/leases/revoke", Op::Update));
    }

    #[test]
    fn json_policy_parses() {
        let a = acl(r#"{"path": {"a/b": {"capabilities": ["read"]}}}"#);
        assert!(a.allowed("a/b", Op::Read));
    }

    #[test]
    fn hostile_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            "path \"a\" {{ x = {}1{} }}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(Policy::parse(&deep).is_err());
    }

    #[test]
    fn preflight_reach_of_segment_rules() {
        // The default policy's `identity/oidc/provider/+/authorize` must not open other mounts.
        let a = acl(DEFAULT_POLICY);
        assert!(!a.has_any_under("kv0/"));
        assert!(a.has_any_under("identity/"));
        let a = acl(r#"path "kv/+/app" { capabilities = ["read"] }"#);
        assert!(a.has_any_under("kv/"));
        assert!(!a.has_any_under("kv2/"));
    }

    #[test]
    fn bad_capability_rejected() {
        assert!(Policy::parse(r#"path "a" { capabilities = ["fly"] }"#).is_err());
        assert!(Policy::parse(r#"path "a" { capabilities = ["read"] "#).is_err());
    }
}
