//! Conformance: the same request sequence against `devvault --flavor openbao` and a real
//! OpenBao dev server (testkit::openbao, `bao server -dev`), both backed by one throwaway
//! PostgreSQL cluster (testkit::pg).
//!
//! Each step is sent to both servers in lockstep. Values a step produces (tokens, lease ids,
//! secret ids) are kept per server and substituted into later steps, so the two servers get
//! the same sequence with their own ids. For every step the test compares the status code and
//! the whole JSON body as a tree: keys, value types, and every value except the volatile ones
//! (ids, tokens, accessors, times, passwords, usernames), which are compared by type only.
//! Remaining TTLs may differ by a few seconds. Warnings and error texts are part of the body
//! and compared exactly, after each server's own ids are replaced by their names.
//!
//! The differences devvault keeps on purpose are listed in [`KNOWN`] (and in devvault's
//! README): one entry per step and field, with the reason. They are skipped by name and
//! printed; a listed difference that no longer occurs fails the test, so the list stays true.
//! The test prints a table of all steps and fails on any unlisted difference.
//!
//! Real OpenBao is required: without `bao` the test fails (never skips), with the install
//! command in the message.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Map, Value};
use testkit::openbao::OpenBao;
use testkit::pg::PgCluster;

/// A difference devvault keeps on purpose: in step `step`, the body field at JSON pointer
/// `field` (and everything below it) is not compared.
struct Known {
    step: &'static str,
    field: &'static str,
    reason: &'static str,
}

/// Keep in sync with "Known differences from OpenBao" in devvault/README.md.
const KNOWN: &[Known] = &[];

/// Keys whose values are volatile: compared by JSON type only.
const MASKED: &[&str] = &[
    "request_id",
    "lease_id",
    "accessor",
    "client_token",
    "token",
    "id",
    "password",
    "username",
    "creation_time",
    "expire_time",
    "issue_time",
    "last_renewal",
    "last_renewal_time",
    "entity_id",
    "secret_id",
    "secret_id_accessor",
    "wrapped_accessor",
    "role_id",
    "uuid",
    "cluster_id",
    "cluster_name",
    "nonce",
    "created_time",
    "updated_time",
    "last_vault_rotation",
    "modified",
    "server_time_utc",
];

/// Keys holding a remaining time in seconds: equal within [`TTL_SLACK`].
const TTLS: &[&str] = &["ttl", "lease_duration", "creation_ttl"];
const TTL_SLACK: i64 = 5;

const CREATE: &str =
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';";

const APP_POLICY: &str = r#"
path "database/creds/app" { capabilities = ["read"] }
path "database/creds/capped" { capabilities = ["read"] }
path "database/static-creds/st" { capabilities = ["read"] }
path "database/rotate-role/st" { capabilities = ["update"] }
path "kv1/*" { capabilities = ["read"] }
path "secret/data/*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"#;

/// Who signs a request.
#[derive(Clone, Copy)]
enum Tok {
    Anon,
    Root,
    /// A token saved earlier under this name.
    Var(&'static str),
    /// A literal token string (a bad one).
    Lit(&'static str),
}

/// One response, fully read.
struct Answer {
    status: u16,
    text: String,
    body: Option<Value>,
}

/// A server under test with the values its steps produced.
struct Target {
    label: &'static str,
    base: String,
    vars: BTreeMap<String, String>,
    last: Option<Answer>,
}

struct Row {
    step: String,
    call: String,
    status: (u16, u16),
    diffs: Vec<String>,
    known: Vec<String>,
}

struct Suite {
    http: reqwest::Client,
    dv: Target,
    bao: Target,
    rows: Vec<Row>,
}

/// A running `devvault --flavor openbao`, killed on drop.
struct DevVault {
    child: Child,
    base: String,
}

impl DevVault {
    fn start() -> DevVault {
        let mut child = Command::new(env!("CARGO_BIN_EXE_devvault"))
            .args(["--listen", "127.0.0.1:0", "--root-token", "root"])
            .args(["--flavor", "openbao", "--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn devvault");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("devvault stdout"))
            .read_line(&mut line)
            .expect("read devvault ready line");
        let base = line
            .trim()
            .strip_prefix("devvault listening on ")
            .unwrap_or_else(|| panic!("unexpected devvault ready line {line:?}"))
            .to_string();
        DevVault { child, base }
    }
}

impl Drop for DevVault {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Target {
    fn new(label: &'static str, base: &str) -> Target {
        Target {
            label,
            base: base.to_string(),
            vars: BTreeMap::new(),
            last: None,
        }
    }

    /// Replaces `{name}` by this server's saved value.
    fn fill(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (k, v) in &self.vars {
            out = out.replace(&format!("{{{k}}}"), v);
        }
        out
    }

    fn fill_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.fill(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.fill_value(x)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (k.clone(), self.fill_value(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Replaces this server's saved values by their names, so texts that quote an id
    /// compare equal across servers.
    fn unfill(&self, s: &str) -> String {
        let mut out = s.to_string();
        // Longest first: one value may contain another (a lease id contains its path).
        let mut vars: Vec<_> = self.vars.iter().filter(|(_, v)| v.len() >= 6).collect();
        vars.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        for (k, v) in vars {
            out = out.replace(v.as_str(), &format!("<{k}>"));
        }
        out
    }

    fn last(&self) -> &Answer {
        self.last.as_ref().expect("a step ran")
    }
}

/// A request as the sequence describes it, before per-server substitution.
struct Call {
    method: &'static str,
    path: String,
    token: Tok,
    body: Option<Value>,
    wrap_ttl: Option<&'static str>,
}

impl Suite {
    async fn send(&self, t: &Target, c: &Call) -> Answer {
        let method = reqwest::Method::from_bytes(c.method.as_bytes()).expect("method");
        let url = format!("{}/v1/{}", t.base, t.fill(&c.path));
        let mut rb = self.http.request(method, url);
        let token = match c.token {
            Tok::Anon => None,
            Tok::Root => Some("root".to_string()),
            Tok::Lit(s) => Some(s.to_string()),
            Tok::Var(name) => Some(
                t.vars
                    .get(name)
                    .unwrap_or_else(|| panic!("{}: no saved value {name}", t.label))
                    .clone(),
            ),
        };
        if let Some(tok) = token {
            rb = rb.header("X-Vault-Token", tok);
        }
        if let Some(w) = c.wrap_ttl {
            rb = rb.header("X-Vault-Wrap-TTL", w);
        }
        if let Some(b) = &c.body {
            rb = rb.json(&t.fill_value(b));
        }
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", t.label, c.path));
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("read body");
        let body = serde_json::from_str(&text).ok();
        Answer { status, text, body }
    }

    /// Sends one step to both servers and records the comparison.
    async fn step(&mut self, name: &str, c: Call) {
        let a = self.send(&self.dv, &c).await;
        let b = self.send(&self.bao, &c).await;
        let mut diffs = Vec::new();
        if a.status != b.status {
            diffs.push(format!(
                "status: devvault {} openbao {}",
                a.status, b.status
            ));
        }
        match (&a.body, &b.body) {
            (Some(x), Some(y)) => {
                let x = normalise(&self.dv, x);
                let y = normalise(&self.bao, y);
                compare("", None, &x, &y, &mut diffs);
            }
            (None, None) if a.text.trim() == b.text.trim() => {}
            _ => diffs.push(format!(
                "body: devvault {:?} openbao {:?}",
                a.text.trim(),
                b.text.trim()
            )),
        }
        let (known, diffs) = split_known(name, diffs, KNOWN);
        if std::env::var_os("CONFORMANCE_DUMP").is_some() {
            println!(
                "---- {name}\n  devvault {} {}\n  openbao  {} {}",
                a.status,
                a.text.trim(),
                b.status,
                b.text.trim()
            );
        }
        self.rows.push(Row {
            step: name.to_string(),
            call: format!("{} {}", c.method, c.path),
            status: (a.status, b.status),
            diffs,
            known,
        });
        self.dv.last = Some(a);
        self.bao.last = Some(b);
    }

    /// Saves the string at `pointer` of the last answer of each server under `name`.
    fn save(&mut self, name: &str, pointer: &str) {
        for t in [&mut self.dv, &mut self.bao] {
            let v = t
                .last()
                .body
                .as_ref()
                .and_then(|b| b.pointer(pointer))
                .and_then(Value::as_str)
                .unwrap_or_else(|| {
                    panic!("{}: no string at {pointer} in {}", t.label, t.last().text)
                })
                .to_string();
            t.vars.insert(name.to_string(), v);
        }
    }

    fn set(&mut self, name: &str, dv: &str, bao: &str) {
        self.dv.vars.insert(name.to_string(), dv.to_string());
        self.bao.vars.insert(name.to_string(), bao.to_string());
    }

    /// Both servers answered the last step with `status` (a setup step that later steps need).
    fn expect(&self, status: u16) {
        for t in [&self.dv, &self.bao] {
            let a = t.last();
            assert_eq!(
                a.status, status,
                "{}: setup step failed: {}",
                t.label, a.text
            );
        }
    }
}

/// Splits a step's differences into the listed ones (first) and the rest.
fn split_known(step: &str, diffs: Vec<String>, known: &[Known]) -> (Vec<String>, Vec<String>) {
    diffs.into_iter().partition(|d| {
        known
            .iter()
            .any(|k| k.step == step && field_of(d).starts_with(k.field))
    })
}

/// The body path a difference line is about (`/data/options: ...` → `/data/options`).
fn field_of(d: &str) -> &str {
    d.split(':').next().unwrap_or("")
}

/// Replaces each server's own ids by their names inside every string.
fn normalise(t: &Target, v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(t.unfill(s)),
        Value::Array(a) => Value::Array(a.iter().map(|x| normalise(t, x)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), normalise(t, x)))
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s
    }
}

/// Walks both trees; `key` is the object key that holds this value.
fn compare(path: &str, key: Option<&str>, a: &Value, b: &Value, out: &mut Vec<String>) {
    let here = if path.is_empty() { "/" } else { path };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let p = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => compare(&p, Some(k), va, vb, out),
                    (Some(va), None) => {
                        out.push(format!("{p}: only devvault has it ({})", short(va)))
                    }
                    (None, Some(vb)) => {
                        out.push(format!("{p}: only openbao has it ({})", short(vb)))
                    }
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                compare(&format!("{path}/{i}"), key, va, vb, out);
            }
        }
        // A volatile value: same JSON type, and both empty or both not.
        _ if key.is_some_and(|k| MASKED.contains(&k)) => {
            let empty = |v: &Value| v.as_str() == Some("");
            if kind(a) != kind(b) || empty(a) != empty(b) {
                out.push(format!(
                    "{here}: devvault {} openbao {} (masked)",
                    short(a),
                    short(b)
                ));
            }
        }
        (Value::Number(x), Value::Number(y)) if key.is_some_and(|k| TTLS.contains(&k)) => {
            let (x, y) = (x.as_i64().unwrap_or(-1), y.as_i64().unwrap_or(-1));
            if (x - y).abs() > TTL_SLACK || (x == 0) != (y == 0) {
                out.push(format!("{here}: devvault {x} openbao {y}"));
            }
        }
        // Warnings quote remaining times ("effective max_ttl of \"1m59s\""), which may be a
        // second apart between two servers answering a few milliseconds apart.
        (Value::String(x), Value::String(y)) if same_but_durations(x, y) => {}
        _ if a != b => out.push(format!(
            "{here}: devvault {} openbao {}",
            short(a),
            short(b)
        )),
        _ => {}
    }
}

/// Seconds of a Go duration string such as `1h2m3s`, `2m` or `45s`.
fn go_duration_secs(s: &str) -> Option<i64> {
    let (mut total, mut num) = (0i64, String::new());
    for c in s.chars() {
        match c {
            '0'..='9' => num.push(c),
            'h' | 'm' | 's' if !num.is_empty() => {
                let n: i64 = num.parse().ok()?;
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                num.clear();
            }
            _ => return None,
        }
    }
    (num.is_empty() && !s.is_empty()).then_some(total)
}

/// Equal texts, except that quoted durations may differ by [`TTL_SLACK`] seconds.
fn same_but_durations(a: &str, b: &str) -> bool {
    let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split('"').collect(), b.split('"').collect());
    pa.len() == pb.len()
        && pa.iter().zip(&pb).all(|(x, y)| {
            x == y
                || matches!(
                    (go_duration_secs(x), go_duration_secs(y)),
                    (Some(dx), Some(dy)) if (dx - dy).abs() <= TTL_SLACK
                )
        })
}

fn call(method: &'static str, path: &str, token: Tok, body: Option<Value>) -> Call {
    Call {
        method,
        path: path.to_string(),
        token,
        body,
        wrap_ttl: None,
    }
}

fn wrapped(mut c: Call, ttl: &'static str) -> Call {
    c.wrap_ttl = Some(ttl);
    c
}

async fn create_static_users(pg: &PgCluster, users: &[&str]) {
    let (client, conn) = tokio_postgres::connect(
        &pg.conn_string(pg.superuser(), pg.superuser_password()),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to PostgreSQL as superuser");
    let task = tokio::spawn(conn);
    for u in users {
        client
            .batch_execute(&format!(
                "CREATE ROLE \"{u}\" WITH LOGIN PASSWORD 'initial-pw'"
            ))
            .await
            .expect("create static user");
    }
    drop(client);
    let _ = task.await;
}

fn fixture(name: &str) -> String {
    let p = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {p}: {e}"))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A JWT signed with one of the committed test-only keys.
fn sign(key: &str, sub: &str, aud: &str, exp: i64, nbf: i64) -> String {
    sign_as(key, "https://issuer.example", sub, aud, exp, nbf)
}

fn sign_as(key: &str, iss: &str, sub: &str, aud: &str, exp: i64, nbf: i64) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let claims =
        json!({"iss": iss, "sub": sub, "aud": aud, "exp": exp, "nbf": nbf, "iat": unix_now()});
    let (alg, key) = if key == "rsa" {
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(fixture("test-only-rsa-private.pem").as_bytes()),
        )
    } else {
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(fixture("test-only-ec-private.pem").as_bytes()),
        )
    };
    encode(&Header::new(alg), &claims, &key.expect("test key")).expect("sign JWT")
}

/// JWT auth with a local public key: the one login method both servers verify offline.
async fn jwt_steps(s: &mut Suite) {
    use Tok::*;
    let now = unix_now();
    s.step(
        "enable jwt auth",
        call("POST", "sys/auth/jwt", Root, Some(json!({"type": "jwt"}))),
    )
    .await;
    s.step(
        "configure jwt auth",
        call(
            "POST",
            "auth/jwt/config",
            Root,
            Some(json!({"jwt_validation_pubkeys": [fixture("test-only-rsa-public.pem")], "bound_issuer": "https://issuer.example"})),
        ),
    )
    .await;
    s.step(
        "jwt role without user claim",
        call(
            "POST",
            "auth/jwt/role/ci",
            Root,
            Some(json!({"role_type": "jwt", "bound_audiences": ["vault"]})),
        ),
    )
    .await;
    s.step(
        "write jwt role",
        call(
            "POST",
            "auth/jwt/role/ci",
            Root,
            Some(json!({"role_type": "jwt", "bound_audiences": ["vault"], "bound_subject": "repo:acme/app", "user_claim": "sub", "token_policies": ["app"], "token_ttl": "1h", "token_max_ttl": "2h"})),
        ),
    )
    .await;
    let login = |name: &'static str, jwt: String| {
        (
            name,
            call(
                "POST",
                "auth/jwt/login",
                Anon,
                Some(json!({"role": "ci", "jwt": jwt})),
            ),
        )
    };
    let cases = [
        login(
            "jwt login",
            sign("rsa", "repo:acme/app", "vault", now + 300, now - 10),
        ),
        login(
            "jwt login, wrong audience",
            sign("rsa", "repo:acme/app", "other", now + 300, now - 10),
        ),
        login(
            "jwt login, expired",
            sign("rsa", "repo:acme/app", "vault", now - 600, now - 900),
        ),
        login(
            "jwt login, not yet valid",
            sign("rsa", "repo:acme/app", "vault", now + 900, now + 600),
        ),
        login(
            "jwt login, wrong subject",
            sign("rsa", "repo:evil/app", "vault", now + 300, now - 10),
        ),
        login(
            "jwt login, wrong issuer",
            sign_as(
                "rsa",
                "https://evil.example",
                "repo:acme/app",
                "vault",
                now + 300,
                now - 10,
            ),
        ),
        login(
            "jwt login, unknown key",
            sign("ec", "repo:acme/app", "vault", now + 300, now - 10),
        ),
    ];
    for (name, c) in cases {
        s.step(name, c).await;
    }
    s.step(
        "jwt login, unknown role",
        call(
            "POST",
            "auth/jwt/login",
            Anon,
            Some(json!({"role": "zz", "jwt": "x"})),
        ),
    )
    .await;
}

/// The sequence: setup through the API, every call the agent makes, then the error paths.
async fn run_sequence(s: &mut Suite, pg: &PgCluster) {
    use Tok::*;
    let conn_url = format!(
        "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port()
    );

    // ---- setup ----
    s.step(
        "unauthenticated seal status",
        call("GET", "sys/seal-status", Anon, None),
    )
    .await;
    s.step("health", call("GET", "sys/health", Anon, None))
        .await;
    s.step(
        "enable database mount",
        call(
            "POST",
            "sys/mounts/database",
            Root,
            Some(json!({"type": "database"})),
        ),
    )
    .await;
    s.expect(204);
    s.step(
        "read database mount",
        call("GET", "sys/mounts/database", Root, None),
    )
    .await;
    s.step(
        "configure postgres connection",
        call(
            "POST",
            "database/config/pg",
            Root,
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": conn_url,
                "username": pg.superuser(),
                "password": pg.superuser_password(),
                "allowed_roles": "*",
            })),
        ),
    )
    .await;
    s.expect(204);
    s.step(
        "read postgres connection",
        call("GET", "database/config/pg", Root, None),
    )
    .await;
    s.step(
        "write dynamic role",
        call("POST", "database/roles/app", Root, Some(json!({
            "db_name": "pg", "creation_statements": [CREATE], "default_ttl": "1h", "max_ttl": "2h",
        }))),
    )
    .await;
    s.expect(204);
    s.step(
        "write short-max role",
        call(
            "POST",
            "database/roles/capped",
            Root,
            Some(json!({
                "db_name": "pg", "creation_statements": [CREATE], "default_ttl": 60, "max_ttl": 120,
            })),
        ),
    )
    .await;
    s.expect(204);
    s.step(
        "read dynamic role",
        call("GET", "database/roles/app", Root, None),
    )
    .await;
    s.step(
        "write static role",
        call(
            "POST",
            "database/static-roles/st",
            Root,
            Some(json!({
                "db_name": "pg", "username": "{static_user}", "rotation_period": "24h",
            })),
        ),
    )
    .await;
    s.step(
        "read static role",
        call("GET", "database/static-roles/st", Root, None),
    )
    .await;
    s.step(
        "write policy",
        call(
            "POST",
            "sys/policies/acl/app",
            Root,
            Some(json!({"policy": APP_POLICY})),
        ),
    )
    .await;
    s.expect(204);
    s.step(
        "read policy",
        call("GET", "sys/policies/acl/app", Root, None),
    )
    .await;
    s.step(
        "read policy, legacy path",
        call("GET", "sys/policy/app", Root, None),
    )
    .await;
    s.step(
        "enable approle",
        call(
            "POST",
            "sys/auth/approle",
            Root,
            Some(json!({"type": "approle"})),
        ),
    )
    .await;
    s.expect(204);
    s.step(
        "read approle mount",
        call("GET", "sys/auth/approle", Root, None),
    )
    .await;
    s.step(
        "write approle role",
        call(
            "POST",
            "auth/approle/role/agent",
            Root,
            Some(json!({
                "token_policies": ["app"], "token_ttl": "1h", "token_max_ttl": "2h",
            })),
        ),
    )
    .await;
    s.expect(204);
    s.step(
        "read role-id",
        call("GET", "auth/approle/role/agent/role-id", Root, None),
    )
    .await;
    s.save("role_id", "/data/role_id");
    s.step(
        "wrapped secret-id",
        wrapped(
            call("POST", "auth/approle/role/agent/secret-id", Root, None),
            "300s",
        ),
    )
    .await;
    s.save("wrapping_token", "/wrap_info/token");
    s.step(
        "enable kv v1 mount",
        call(
            "POST",
            "sys/mounts/kv1",
            Root,
            Some(json!({"type": "kv", "options": {"version": "1"}})),
        ),
    )
    .await;
    s.expect(204);
    s.step(
        "enable kv mount without options",
        call("POST", "sys/mounts/kv0", Root, Some(json!({"type": "kv"}))),
    )
    .await;
    s.step(
        "read kv mount without options",
        call("GET", "sys/mounts/kv0", Root, None),
    )
    .await;
    s.step(
        "write kv v1",
        call(
            "POST",
            "kv1/app",
            Root,
            Some(json!({"api_key": "v1-value"})),
        ),
    )
    .await;
    s.step(
        "write kv v2",
        call(
            "POST",
            "secret/data/app",
            Root,
            Some(json!({"data": {"api_key": "v2-value"}})),
        ),
    )
    .await;
    s.step(
        "read kv v2 metadata",
        call("GET", "secret/metadata/app", Root, None),
    )
    .await;
    s.step(
        "second kv v2 write",
        call(
            "POST",
            "secret/data/app",
            Root,
            Some(json!({"data": {"api_key": "v2-value-2"}})),
        ),
    )
    .await;
    s.step(
        "write kv v2 metadata",
        call(
            "POST",
            "secret/metadata/app",
            Root,
            Some(json!({"max_versions": 5})),
        ),
    )
    .await;
    s.step(
        "read kv v2 metadata again",
        call("GET", "secret/metadata/app", Root, None),
    )
    .await;

    s.step("list secret mounts", call("GET", "sys/mounts", Root, None))
        .await;
    s.step("list auth mounts", call("GET", "sys/auth", Root, None))
        .await;

    // ---- the agent's calls ----
    s.step(
        "unwrap secret-id",
        call("POST", "sys/wrapping/unwrap", Var("wrapping_token"), None),
    )
    .await;
    s.save("secret_id", "/data/secret_id");
    s.step(
        "unwrap secret-id again",
        call("POST", "sys/wrapping/unwrap", Var("wrapping_token"), None),
    )
    .await;
    s.step(
        "approle login, bad secret-id",
        call(
            "POST",
            "auth/approle/login",
            Anon,
            Some(json!({"role_id": "{role_id}", "secret_id": "not-a-secret-id"})),
        ),
    )
    .await;
    s.step(
        "approle login",
        call(
            "POST",
            "auth/approle/login",
            Anon,
            Some(json!({"role_id": "{role_id}", "secret_id": "{secret_id}"})),
        ),
    )
    .await;
    s.save("app", "/auth/client_token");
    s.step(
        "lookup-self",
        call("GET", "auth/token/lookup-self", Var("app"), None),
    )
    .await;
    s.step(
        "renew-self",
        call(
            "POST",
            "auth/token/renew-self",
            Var("app"),
            Some(json!({"increment": "3600s"})),
        ),
    )
    .await;
    s.step(
        "preflight database path",
        call(
            "GET",
            "sys/internal/ui/mounts/database/creds/app",
            Var("app"),
            None,
        ),
    )
    .await;
    s.step(
        "preflight kv v1 path",
        call("GET", "sys/internal/ui/mounts/kv1/app", Var("app"), None),
    )
    .await;
    s.step(
        "preflight kv v2 path",
        call("GET", "sys/internal/ui/mounts/secret/app", Var("app"), None),
    )
    .await;
    s.step(
        "read dynamic creds",
        call("GET", "database/creds/app", Var("app"), None),
    )
    .await;
    s.save("lease", "/lease_id");
    s.step(
        "renew lease",
        call(
            "PUT",
            "sys/leases/renew",
            Var("app"),
            Some(json!({"lease_id": "{lease}", "increment": 1800})),
        ),
    )
    .await;
    s.step(
        "read short-max creds",
        call("GET", "database/creds/capped", Var("app"), None),
    )
    .await;
    s.save("capped_lease", "/lease_id");
    s.step(
        "renew lease past max_ttl",
        call(
            "PUT",
            "sys/leases/renew",
            Var("app"),
            Some(json!({"lease_id": "{capped_lease}", "increment": 3600})),
        ),
    )
    .await;
    s.step(
        "read static creds",
        call("GET", "database/static-creds/st", Var("app"), None),
    )
    .await;
    s.step(
        "rotate static role",
        call("POST", "database/rotate-role/st", Var("app"), None),
    )
    .await;
    s.step("read kv v1", call("GET", "kv1/app", Var("app"), None))
        .await;
    s.step(
        "read kv v2",
        call("GET", "secret/data/app", Var("app"), None),
    )
    .await;
    s.step(
        "wrapped creds read",
        wrapped(call("GET", "database/creds/app", Var("app"), None), "120s"),
    )
    .await;
    s.save("wrapped_creds", "/wrap_info/token");
    s.step(
        "unwrap creds",
        call("POST", "sys/wrapping/unwrap", Var("wrapped_creds"), None),
    )
    .await;
    s.save("lease2", "/lease_id");
    s.step(
        "revoke lease",
        call(
            "PUT",
            "sys/leases/revoke",
            Var("app"),
            Some(json!({"lease_id": "{lease}"})),
        ),
    )
    .await;
    s.step(
        "revoke lease, queued",
        call(
            "PUT",
            "sys/leases/revoke",
            Var("app"),
            Some(json!({"lease_id": "{capped_lease}", "sync": false})),
        ),
    )
    .await;
    s.step(
        "revoke unknown lease",
        call(
            "PUT",
            "sys/leases/revoke",
            Var("app"),
            Some(json!({"lease_id": "database/creds/app/unknown"})),
        ),
    )
    .await;
    s.step(
        "renew revoked lease",
        call(
            "PUT",
            "sys/leases/renew",
            Var("app"),
            Some(json!({"lease_id": "{lease}", "increment": 60})),
        ),
    )
    .await;

    s.step(
        "preflight without access",
        call("GET", "sys/internal/ui/mounts/kv0/x", Var("app"), None),
    )
    .await;
    s.step(
        "renew-self past max_ttl",
        call(
            "POST",
            "auth/token/renew-self",
            Var("app"),
            Some(json!({"increment": "3h"})),
        ),
    )
    .await;
    s.step(
        "read approle role",
        call("GET", "auth/approle/role/agent", Root, None),
    )
    .await;
    s.step(
        "lookup lease",
        call(
            "PUT",
            "sys/leases/lookup",
            Root,
            Some(json!({"lease_id": "{lease2}"})),
        ),
    )
    .await;
    s.step(
        "lookup revoked lease",
        call(
            "PUT",
            "sys/leases/lookup",
            Root,
            Some(json!({"lease_id": "{lease}"})),
        ),
    )
    .await;
    s.step(
        "capabilities-self",
        call(
            "POST",
            "sys/capabilities-self",
            Var("app"),
            Some(json!({"paths": ["database/creds/app", "sys/mounts"]})),
        ),
    )
    .await;
    s.step(
        "wrapped creds for lookup",
        wrapped(call("GET", "database/creds/app", Var("app"), None), "60s"),
    )
    .await;
    s.save("wrap2", "/wrap_info/token");
    s.step(
        "sys/wrapping/lookup",
        call(
            "POST",
            "sys/wrapping/lookup",
            Anon,
            Some(json!({"token": "{wrap2}"})),
        ),
    )
    .await;
    jwt_steps(s).await;
    s.step("read jwt role", call("GET", "auth/jwt/role/ci", Root, None))
        .await;

    // ---- error paths ----
    s.step(
        "bad token",
        call(
            "GET",
            "auth/token/lookup-self",
            Lit("s.not-a-real-token"),
            None,
        ),
    )
    .await;
    s.step("no token", call("GET", "database/creds/app", Anon, None))
        .await;
    s.step(
        "policy denial",
        call("GET", "database/roles/app", Var("app"), None),
    )
    .await;
    s.step(
        "policy denial on sys",
        call("GET", "sys/mounts", Var("app"), None),
    )
    .await;
    s.step(
        "unknown role",
        call("GET", "database/creds/nope", Root, None),
    )
    .await;
    s.step(
        "missing kv v1 path",
        call("GET", "kv1/missing", Var("app"), None),
    )
    .await;
    s.step(
        "missing kv v2 path",
        call("GET", "secret/data/missing", Var("app"), None),
    )
    .await;
    s.step("unmounted path", call("GET", "nomount/x", Root, None))
        .await;
    s.step(
        "unwrap unknown wrapping token",
        call(
            "POST",
            "sys/wrapping/unwrap",
            Lit("s.not-a-wrapping-token"),
            None,
        ),
    )
    .await;
    s.step(
        "revoke-self",
        call("POST", "auth/token/revoke-self", Var("app"), None),
    )
    .await;
    s.step(
        "revoked token",
        call("GET", "auth/token/lookup-self", Var("app"), None),
    )
    .await;
    s.step("seal status", call("GET", "sys/seal-status", Root, None))
        .await;
}

fn report(rows: &[Row]) -> (String, usize, Vec<String>) {
    let mut out = String::new();
    let w = rows.iter().map(|r| r.step.len()).max().unwrap_or(4);
    let _ = writeln!(
        out,
        "{:>3}  {:<w$}  {:>3} {:>3}  verdict",
        "#", "step", "dv", "bao"
    );
    let mut unlisted = 0;
    for (i, r) in rows.iter().enumerate() {
        let verdict = if !r.diffs.is_empty() {
            unlisted += 1;
            "DIFFERENT"
        } else if !r.known.is_empty() {
            "known difference (skipped)"
        } else {
            "same"
        };
        let _ = writeln!(
            out,
            "{:>3}  {:<w$}  {:>3} {:>3}  {verdict}   [{}]",
            i + 1,
            r.step,
            r.status.0,
            r.status.1,
            r.call
        );
        for d in &r.diffs {
            let _ = writeln!(out, "       ! {d}");
        }
        for d in &r.known {
            let _ = writeln!(out, "       ~ {d}");
        }
    }
    // A listed difference that did not occur: the list (and the README) is stale.
    let stale = KNOWN
        .iter()
        .filter(|k| {
            !rows.iter().any(|r| {
                r.step == k.step && r.known.iter().any(|d| field_of(d).starts_with(k.field))
            })
        })
        .map(|k| format!("{} {} ({})", k.step, k.field, k.reason))
        .collect();
    (out, unlisted, stale)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devvault_answers_like_openbao() {
    let pg = PgCluster::start();
    let bao = OpenBao::start();
    let dv = DevVault::start();
    create_static_users(&pg, &["conform-static-dv", "conform-static-bao"]).await;

    let mut s = Suite {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        dv: Target::new("devvault", &dv.base),
        bao: Target::new("openbao", bao.addr()),
        rows: Vec::new(),
    };
    s.set("static_user", "conform-static-dv", "conform-static-bao");
    run_sequence(&mut s, &pg).await;

    let (table, unlisted, stale) = report(&s.rows);
    println!(
        "devvault --flavor openbao against {} ({} steps)\n{table}",
        testkit::openbao::bao_version(bao.bin()),
        s.rows.len()
    );
    for k in KNOWN {
        println!(
            "known difference, skipped: {} {}: {}",
            k.step, k.field, k.reason
        );
    }
    assert!(
        stale.is_empty(),
        "listed known differences that no longer occur (remove them here and in the README): {stale:?}"
    );
    assert_eq!(
        unlisted,
        0,
        "{unlisted} of {} steps differ from real OpenBao (table above)",
        s.rows.len()
    );
}

/// The comparison itself must be able to fail.
#[test]
fn comparison_catches_differences() {
    let mut out = Vec::new();
    compare(
        "",
        None,
        &json!({"a": 1, "lease_id": "x", "ttl": 100, "warnings": ["TTL of \"2m\" exceeded"]}),
        &json!({"a": 2, "lease_id": "y", "ttl": 98, "warnings": ["TTL of \"1m59s\" exceeded"]}),
        &mut out,
    );
    assert_eq!(out, vec!["/a: devvault 1 openbao 2".to_string()]);
    out.clear();
    compare(
        "",
        None,
        &json!({"lease_id": "", "ttl": 100, "errors": ["1 error occurred"], "x": null}),
        &json!({"lease_id": "y", "ttl": 10, "errors": ["permission denied"], "x": {}}),
        &mut out,
    );
    assert_eq!(out.len(), 4, "{out:?}");
    assert_eq!(go_duration_secs("1h0m5s"), Some(3605));
    assert_eq!(go_duration_secs("database"), None);
    assert!(!same_but_durations("TTL of \"1h\"", "TTL of \"2h\""));
}

/// A listed difference is skipped only for its own step and field.
#[test]
fn known_differences_are_matched_by_step_and_field() {
    let known = [Known {
        step: "seal status",
        field: "/build_date",
        reason: "test",
    }];
    let diffs = vec![
        "/build_date: only devvault has it (\"x\")".to_string(),
        "/version: devvault \"1\" openbao \"2\"".to_string(),
    ];
    let (k, d) = split_known("seal status", diffs.clone(), &known);
    assert_eq!((k.len(), d.len()), (1, 1));
    assert!(d[0].starts_with("/version"));
    let (k, d) = split_known("health", diffs, &known);
    assert_eq!((k.len(), d.len()), (0, 2));
}
