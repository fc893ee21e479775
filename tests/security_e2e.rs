//! Security, black-box: no secret in any output, exact file modes, TLS to Vault, and listeners
//! that hostile clients cannot take down.
//!
//! The secret scan and the file modes run on devvault and on a real OpenBao dev server
//! (`matrix!`); the TLS scenarios need devvault's TLS and client-certificate options, and the
//! hostile-client ones do not depend on the server.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};
use testkit::devvault::DevVault;

const SEC: fn(u64) -> Duration = Duration::from_secs;

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// A service-account JWT like kubelet projects, signed with the test-only key.
fn sa_jwt(valid_for: Duration) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:default:app",
        "aud": ["vault"],
        "iat": now, "nbf": now, "exp": now + valid_for.as_secs(),
        "kubernetes.io": {"namespace": "default",
            "serviceaccount": {"name": "app", "uid": "4ce3a724-ddad-4cb3-ae46-2f97fc420a3d"}}
    });
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("fixtures/k8s-test-key.pem"))
        .unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .unwrap()
}

/// Collects every password that appears in the given credential files while it runs.
struct PasswordCollector {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PasswordCollector {
    fn start(files: Vec<PathBuf>) -> PasswordCollector {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let (flag, set) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                for f in &files {
                    if let Some(v) = std::fs::read(f)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    {
                        if let Some(p) = v["password"].as_str() {
                            set.lock().unwrap().insert(p.to_string());
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        PasswordCollector {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.seen.lock().unwrap().clone()
    }
}

/// Every `hvs.`-prefixed token-shaped string (devvault: `hvs.` + 24 base62 characters).
fn token_shaped(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("hvs.") {
        let rest: String = text[i + 4..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if rest.len() >= 20 {
            found.push(format!("hvs.{rest}"));
        }
    }
    found
}

/// Scrapes an HTTP endpoint of the agent with a raw request, so any status and body count.
fn scrape(port: u16, method: &str, path: &str, headers: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(SEC(10))).unwrap();
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: agent\r\n{headers}Content-Length: 0\r\n\r\n"
    );
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Kubernetes auth whose role `app` accepts `sa_jwt`, verified with the local public key.
async fn kubernetes_auth_with_local_key(stack: &Stack) {
    stack
        .api("POST", "sys/auth/kubernetes", json!({"type": "kubernetes"}))
        .await;
    stack
        .api(
            "POST",
            "auth/kubernetes/config",
            json!({"kubernetes_host": "https://kubernetes.default.svc",
                   "pem_keys": [include_str!("fixtures/k8s-test-pub.pem")]}),
        )
        .await;
    stack
        .api(
            "POST",
            "auth/kubernetes/role/app",
            json!({"bound_service_account_names": ["app"],
                   "bound_service_account_namespaces": ["default"],
                   "token_policies": ["app"], "token_ttl": "1h"}),
        )
        .await;
}

/// The jwt method whose role `app` accepts `sa_jwt` (its issuer, subject and audience),
/// verified with the same local public key (`jwt_validation_pubkeys`).
async fn jwt_auth_with_local_key(stack: &Stack) {
    stack
        .api("POST", "sys/auth/jwt", json!({"type": "jwt"}))
        .await;
    stack
        .api(
            "POST",
            "auth/jwt/config",
            json!({"jwt_validation_pubkeys": [include_str!("fixtures/k8s-test-pub.pem")],
                   "bound_issuer": "https://kubernetes.default.svc.cluster.local"}),
        )
        .await;
    stack
        .api(
            "POST",
            "auth/jwt/role/app",
            json!({"role_type": "jwt", "bound_audiences": ["vault"],
                   "bound_subject": "system:serviceaccount:default:app", "user_claim": "sub",
                   "token_policies": ["app"], "token_ttl": "1h"}),
        )
        .await;
}

async fn no_secret_reaches_logs_metrics_status_admin_or_error_texts(v: Vault) {
    let stack = Stack::start_on(v).await;
    // Short leases and tokens: renewals, re-issues at max_ttl, token renewals and re-logins
    // all happen within the scenario, each a chance to log something it should not.
    stack.dynamic_role("app", "3s", "8s").await;
    let (role_id, secret_id) = stack.approle("4s", "1h").await;
    // Agent B logs in with the service-account JWT: Kubernetes auth on devvault; on OpenBao,
    // whose kubernetes method asks a real cluster's TokenReview API, the jwt method with the
    // same key (the same secret to keep out of every output).
    let b_auth = if stack.is_devvault() {
        kubernetes_auth_with_local_key(&stack).await;
        "kubernetes"
    } else {
        jwt_auth_with_local_key(&stack).await;
        "jwt"
    };
    let kv_password = "kv-secret-Zq81mWx0Lk";
    stack
        .api(
            "POST",
            "secret/data/app",
            json!({"data": {"username": "kvuser", "password": kv_password, "api_key": "kv-apikey-77Hf0aPq"}}),
        )
        .await;
    let token = stack
        .api(
            "POST",
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "1h"}),
        )
        .await["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let jwt = sa_jwt(SEC(3600));
    let admin_token = "admin-bearer-9fK2LmQ0pX";

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("jwt"), &jwt).unwrap();
    std::fs::write(d.join("token"), &token).unwrap();
    std::fs::write(d.join("admin-token"), admin_token).unwrap();
    let (a_out, b_out, c_out) = (d.join("a.json"), d.join("b.json"), d.join("c.json"));
    // Port 0: the agent binds it and logs it; a port picked here could be taken first.
    let admin_listen = "127.0.0.1:0".to_string();
    // A: AppRole, dynamic credentials, JSON logs at debug level, admin listener.
    let mut a_args = approle_args(d, &role_id, &secret_id);
    a_args.extend(
        [
            "--vault-addr",
            stack.addr(),
            "--secret",
            "database/creds/app",
            "--output",
            a_out.to_str().unwrap(),
            "--revoke-grace",
            "1s",
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--admin-listen",
            &admin_listen,
            "--admin-token-file",
            d.join("admin-token").to_str().unwrap(),
        ]
        .map(String::from),
    );
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let mut a = AgentProc::spawn(&a_args, &[], d);
    // B: Kubernetes auth with the JWT, text logs at debug level.
    let mut b = AgentProc::spawn(
        &[
            "--vault-addr",
            stack.addr(),
            "--auth",
            b_auth,
            "--role",
            "app",
            "--jwt-file",
            d.join("jwt").to_str().unwrap(),
            "--secret",
            "database/creds/app",
            "--output",
            b_out.to_str().unwrap(),
            "--revoke-grace",
            "1s",
            "--log-level",
            "debug",
            "--admin-listen",
            "off",
        ],
        &[],
        d,
    );
    // C: a token from VAULT_TOKEN (the environment), KV v2, re-read every second.
    let mut c = AgentProc::spawn(
        &[
            "--vault-addr",
            stack.addr(),
            "--secret",
            "secret/app",
            "--output",
            c_out.to_str().unwrap(),
            "--refresh-every",
            "1s",
            "--log-level",
            "debug",
            "--admin-listen",
            "off",
        ],
        &[("VAULT_TOKEN", &token)],
        d,
    );
    a.wait_ready(SEC(30)).await;
    let admin_port = a.admin_port();
    b.wait_ready(SEC(30)).await;
    c.wait_ready(SEC(30)).await;
    let collector = PasswordCollector::start(vec![a_out.clone(), b_out.clone(), c_out.clone()]);

    let mut scraped = String::new();
    let ports = [a.port, b.port, c.port];
    let scrape_all = |scraped: &mut String| {
        for port in ports {
            for path in [
                "/health",
                "/ready",
                "/metrics",
                "/status",
                "/",
                "/status?format=json",
            ] {
                scraped.push_str(&scrape(port, "GET", path, ""));
            }
        }
        for (m, p, h) in [
            (
                "POST",
                "/rotate",
                format!("Authorization: Bearer {admin_token}\r\n"),
            ),
            (
                "POST",
                "/rotate",
                "Authorization: Bearer wrong\r\n".to_string(),
            ),
            ("POST", "/rotate", String::new()),
            ("GET", "/rotate", String::new()),
            ("GET", "/status", String::new()),
        ] {
            scraped.push_str(&scrape(admin_port, m, p, &h));
        }
    };
    // Events worth logging: manual rotation, a token refused as invalid (re-login), an error
    // body, broken responses, Vault sealed for a moment.
    a.signal("USR1");
    b.signal("USR1");
    // (The injected refusals and broken bodies are devvault faults; OpenBao gets the seal.)
    if stack.is_devvault() {
        stack
            .fault(json!({"path_prefix": "/v1/sys/leases/renew", "count": 2, "status": 403,
                "body": "{\"errors\":[\"2 errors occurred:\\n\\t* permission denied\\n\\t* invalid token\\n\\n\"]}"}))
            .await;
        stack
            .fault(json!({"path_prefix": "/v1/database/creds/", "count": 1, "action": "truncate"}))
            .await;
        stack
            .fault(json!({"path_prefix": "/v1/secret/", "count": 1, "status": 500}))
            .await;
    }
    let start = Instant::now();
    let mut sealed = false;
    while start.elapsed() < SEC(12) {
        scrape_all(&mut scraped);
        if !sealed && start.elapsed() > SEC(5) {
            stack.seal().await;
            sealed = true;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            scrape_all(&mut scraped);
            stack.unseal().await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    for agent in [&mut a, &mut b, &mut c] {
        agent.wait_ready(SEC(30)).await;
    }
    scrape_all(&mut scraped);
    let metrics = scrape(a.port, "GET", "/metrics", "");
    let status = scrape(a.port, "GET", "/status", "");
    assert_eq!(a.stop(), 0);
    assert_eq!(b.stop(), 0);
    assert_eq!(c.stop(), 0);
    let passwords = collector.finish();
    assert!(
        passwords.len() >= 4,
        "rotations happened: {}",
        passwords.len()
    );

    // Error texts: --once failures (bad secret_id, sealed Vault) and a configuration error
    // while a token sits in the environment.
    let once = |args: &[&str], envs: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vault-rotator"))
            .args(args)
            .env_clear()
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let mut errors = String::new();
    std::fs::write(
        d.join("bad-secret-id"),
        "0badf00d-1111-2222-3333-444455556666",
    )
    .unwrap();
    errors.push_str(&once(
        &[
            "--vault-addr",
            stack.addr(),
            "--auth",
            "approle",
            "--role-id-file",
            d.join("role-id").to_str().unwrap(),
            "--secret-id-file",
            d.join("bad-secret-id").to_str().unwrap(),
            "--secret",
            "database/creds/app",
            "--output",
            d.join("once.json").to_str().unwrap(),
            "--once",
            "--once-timeout",
            "2s",
        ],
        &[],
    ));
    errors.push_str(&once(
        &[
            "--vault-addr",
            stack.addr(),
            "--secret",
            "database/creds/nope",
            "--output",
            d.join("once.json").to_str().unwrap(),
            "--once",
            "--once-timeout",
            "2s",
            "--log-level",
            "debug",
        ],
        &[("VAULT_TOKEN", &token)],
    ));
    errors.push_str(&once(
        &[
            "--secret",
            "x/y",
            "--output",
            "/nonexistent/dir/f",
            "--file-mode",
            "999",
        ],
        &[("VAULT_TOKEN", &token), ("VAULT_ADDR", "not a url")],
    ));
    assert!(
        errors.contains("--once") || errors.contains("error"),
        "{errors}"
    );

    let logs = format!("{}{}{}", a.logs(), b.logs(), c.logs());
    eprintln!(
        "scanned {} bytes of logs, {} of endpoint answers, {} of error texts for {} issued passwords",
        logs.len(),
        scraped.len(),
        errors.len(),
        passwords.len()
    );
    if std::env::var_os("VR_DUMP_SCAN").is_some() {
        std::fs::write("/tmp/vr-scan-logs.txt", &logs).unwrap();
        std::fs::write("/tmp/vr-scan-endpoints.txt", &scraped).unwrap();
        std::fs::write("/tmp/vr-scan-errors.txt", &errors).unwrap();
    }
    assert!(logs.contains("wrote new credential"), "{logs}");
    let mut secrets: Vec<(String, String)> = passwords
        .iter()
        .map(|p| ("an issued password".to_string(), p.clone()))
        .collect();
    secrets.extend([
        ("the secret_id".to_string(), secret_id.clone()),
        ("the JWT".to_string(), jwt.clone()),
        // The JWT's signature alone, should it be logged in parts.
        (
            "the JWT signature".to_string(),
            jwt.rsplit('.').next().unwrap().to_string(),
        ),
        ("the Vault token".to_string(), token.clone()),
        ("the KV password".to_string(), kv_password.to_string()),
        ("a KV field".to_string(), "kv-apikey-77Hf0aPq".to_string()),
        ("the admin token".to_string(), admin_token.to_string()),
        (
            "PostgreSQL's admin password".to_string(),
            stack.pg.superuser_password().to_string(),
        ),
    ]);
    for (source, text) in [
        ("logs", &logs),
        ("endpoints", &scraped),
        ("error texts", &errors),
    ] {
        for (what, secret) in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} appears in the {source}"
            );
        }
        // Tokens the agent got from logins and renewals are unknown to the test: catch any
        // token-shaped string instead.
        let tokens = token_shaped(text);
        assert!(
            tokens.is_empty(),
            "token-shaped strings in the {source}: {tokens:?}"
        );
    }
    // The endpoints answered what they should (so the scan looked at real content).
    assert!(
        metrics.starts_with("HTTP/1.1 200"),
        "/metrics is not served yet:\n{metrics}"
    );
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "/status is not served yet:\n{status}"
    );
    assert!(!status.contains("password"), "{status}");
}

/// Lists temp files of `name` in `dir` as fast as it can, recording every mode it sees.
struct TempWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(u32, u32)>>>,
}

impl TempWatch {
    fn start(dir: &Path, name: &str) -> TempWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (dir, prefix) = (dir.to_path_buf(), format!(".{name}.tmp-"));
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for e in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
                    if e.file_name().to_string_lossy().starts_with(&prefix) {
                        // The file may be renamed between listing and stat.
                        if let Ok(m) = std::fs::symlink_metadata(e.path()) {
                            seen.push((m.mode() & 0o7777, m.uid()));
                        }
                    }
                }
            }
            seen
        });
        TempWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(u32, u32)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
}

async fn file_modes_and_owner_are_exact_whatever_the_umask_and_temps_stay_private(v: Vault) {
    let vault = Server::start(v);
    let http = reqwest::Client::new();
    let put = |n: u64| {
        let (http, url) = (http.clone(), format!("{}/v1/secret/data/app", vault.addr()));
        async move {
            let r = http
                .post(url)
                .header("X-Vault-Token", "root")
                .json(&json!({"data": {"username": "app", "password": format!("pw-{n}")}}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
    };
    put(0).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "root").unwrap();
    // As root the file is handed to another user (nobody), as for an app running as another
    // uid; otherwise to ourselves, which still exercises the chown step.
    let (uid, gid) = if is_root() {
        (65534, 65534)
    } else {
        let m = std::fs::metadata(dir.path()).unwrap();
        (m.uid(), m.gid())
    };
    let owner = format!("{uid}:{gid}");
    let cases = [("0440", Some(owner.as_str()), 0o440), ("0400", None, 0o400)];
    for (i, (mode, owner, expect)) in cases.into_iter().enumerate() {
        let name = format!("db{i}.json");
        let out = dir.path().join(&name);
        let mut args = vec![
            "--vault-addr",
            vault.addr(),
            "--token-file",
            dir.path()
                .join("token")
                .to_str()
                .unwrap()
                .to_string()
                .leak(),
            "--secret",
            "secret/app",
            "--output",
            out.to_str().unwrap().to_string().leak(),
        ];
        if mode != "0400" {
            args.extend(["--file-mode", mode]);
        }
        if let Some(o) = owner {
            args.extend(["--owner", o]);
        }
        // umask 000 would make a careless create world-readable and writable.
        let mut agent = AgentProc::spawn_with_umask(&args, &[], dir.path(), "000");
        agent.wait_ready(SEC(30)).await;
        let watch = TempWatch::start(dir.path(), &name);
        let mut last = 0;
        for n in 1..=40u64 {
            put(n).await;
            agent.usr1();
            last = eventually(SEC(30), "the new version in the file", || {
                let out = out.clone();
                async move {
                    read_cred(&out)
                        .and_then(|c| c["version"].as_u64())
                        .filter(|v| *v > last)
                }
            })
            .await;
            let m = std::fs::metadata(&out).unwrap();
            assert_eq!(m.mode() & 0o7777, expect, "mode after write {n}");
            assert_eq!(
                (m.uid(), m.gid()),
                if owner.is_some() {
                    (uid, gid)
                } else {
                    (
                        std::fs::metadata(dir.path()).unwrap().uid(),
                        std::fs::metadata(dir.path()).unwrap().gid(),
                    )
                },
                "owner after write {n}"
            );
        }
        let temps = watch.finish();
        eprintln!("mode {mode}: saw {} temp file states", temps.len());
        for (m, _) in &temps {
            assert_eq!(m & 0o007, 0, "a temp file was readable by others: {m:o}");
            assert!(
                *m == 0o600 || *m == expect,
                "a temp file had mode {m:o}, neither 0600 nor the final {expect:o}"
            );
        }
        assert_eq!(agent.stop(), 0);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!(".{name}.tmp-"))
            })
            .collect();
        assert!(left.is_empty(), "temp files left behind");
    }
}

/// devvault over https with the test-only server certificate.
fn tls_vault() -> DevVault {
    DevVault::start(&[
        "--tls-cert",
        &fixture("tls/test-only-server.pem"),
        "--tls-key",
        &fixture("tls/test-only-server-key.pem"),
    ])
}

/// Runs `--once` against `addr` for the KV secret `secret/app` with `extra` flags; returns
/// (exit code, stderr).
fn once(addr: &str, dir: &Path, extra: &[&str]) -> (i32, String) {
    let out = dir.join("once.json");
    let _ = std::fs::remove_file(&out);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vault-rotator"))
        .args([
            "--vault-addr",
            addr,
            "--token-file",
            dir.join("token").to_str().unwrap(),
            "--secret",
            "secret/app",
            "--kind",
            "kv-v2",
            "--output",
            out.to_str().unwrap(),
            "--once",
            "--once-timeout",
            "3s",
        ])
        .args(extra)
        .env_clear()
        .output()
        .unwrap();
    let code = o.status.code().unwrap_or(-1);
    if code == 0 {
        assert_eq!(read_cred(&out).unwrap()["password"], "over-tls");
    }
    (code, String::from_utf8_lossy(&o.stderr).into_owned())
}

async fn put_kv(http: &reqwest::Client, addr: &str) {
    let r = http
        .post(format!("{addr}/v1/secret/data/app"))
        .header("X-Vault-Token", "root")
        .json(&json!({"data": {"username": "app", "password": "over-tls"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

fn tls_client(ca: &str) -> reqwest::Client {
    let pem = std::fs::read(fixture(ca)).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_vault_verifies_the_ca_and_server_name_and_warns_on_plain_http() {
    let vault = tls_vault();
    assert!(
        vault.addr().starts_with("https://127.0.0.1:"),
        "{}",
        vault.addr()
    );
    put_kv(&tls_client("tls/test-only-ca.pem"), vault.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "root").unwrap();
    let ca = fixture("tls/test-only-ca.pem");
    let other_ca = fixture("tls/test-only-other-ca.pem");

    // The CA file: accepted; the IP SAN matches 127.0.0.1.
    let (code, err) = once(vault.addr(), dir.path(), &["--ca-cert", &ca]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !err.contains("plain http"),
        "no plain-http warning over https: {err}"
    );
    // The server name: the certificate is checked against vault.test, not the address.
    let (code, err) = once(
        vault.addr(),
        dir.path(),
        &["--ca-cert", &ca, "--tls-server-name", "vault.test"],
    );
    assert_eq!(code, 0, "{err}");
    // The same through the standard variables.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vault-rotator"))
        .args([
            "--secret",
            "secret/app",
            "--kind",
            "kv-v2",
            "--once",
            "--once-timeout",
            "3s",
        ])
        .arg("--output")
        .arg(dir.path().join("env.json"))
        .env_clear()
        .env("VAULT_ADDR", vault.addr())
        .env("VAULT_TOKEN", "root")
        .env("VAULT_CACERT", &ca)
        .env("VAULT_TLS_SERVER_NAME", "vault.test")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Refused: a name the certificate does not carry, no CA file, an unrelated CA.
    let refused: [(&str, Vec<&str>); 3] = [
        (
            "wrong server name",
            vec!["--ca-cert", &ca, "--tls-server-name", "other.test"],
        ),
        ("no CA file", vec![]),
        ("unrelated CA", vec!["--ca-cert", &other_ca]),
    ];
    for (what, extra) in refused {
        let (code, err) = once(vault.addr(), dir.path(), &extra);
        assert_eq!(code, 1, "{what}: must fail: {err}");
        assert!(
            err.to_lowercase().contains("certificate"),
            "{what}: the error names the certificate problem: {err}"
        );
    }
    // A CA file that holds no certificate is a configuration error (exit 2).
    std::fs::write(dir.path().join("empty.pem"), "not a pem\n").unwrap();
    let (code, err) = once(
        vault.addr(),
        dir.path(),
        &["--ca-cert", dir.path().join("empty.pem").to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");

    // Plain http works, with a warning.
    let plain = DevVault::start(&[]);
    put_kv(&reqwest::Client::new(), plain.addr()).await;
    let (code, err) = once(plain.addr(), dir.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("plain http"),
        "a warning for plain http: {err}"
    );
}

/// A TLS terminator that requires a client certificate signed by the test CA, in front of a
/// plain-http devvault (devvault itself cannot ask for client certificates). Records the
/// certificate each client presented.
struct MtlsProxy {
    port: u16,
    presented: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MtlsProxy {
    async fn start(upstream: std::net::SocketAddr) -> MtlsProxy {
        use tokio_rustls::rustls::{self, pki_types::CertificateDer, server::WebPkiClientVerifier};
        let load = |f: &str| -> Vec<CertificateDer<'static>> {
            rustls_pemfile::certs(&mut std::fs::read(fixture(f)).unwrap().as_slice())
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in load("tls/test-only-ca.pem") {
            roots.add(c).unwrap();
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let key = rustls_pemfile::private_key(
            &mut std::fs::read(fixture("tls/test-only-server-key.pem"))
                .unwrap()
                .as_slice(),
        )
        .unwrap()
        .unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(load("tls/test-only-server.pem"), key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let presented = Arc::new(Mutex::new(Vec::new()));
        let seen = presented.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Some(certs) = tls.get_ref().1.peer_certificates() {
                        seen.lock().unwrap().push(certs[0].to_vec());
                    }
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    }
                });
            }
        });
        MtlsProxy {
            port,
            presented,
            task,
        }
    }
}

impl Drop for MtlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate() {
    let vault = DevVault::start(&[]);
    put_kv(&reqwest::Client::new(), vault.addr()).await;
    let upstream = vault
        .addr()
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap();
    let proxy = MtlsProxy::start(upstream).await;
    let addr = format!("https://127.0.0.1:{}", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "root").unwrap();
    let ca = fixture("tls/test-only-ca.pem");
    let cert = fixture("tls/test-only-client.pem");
    let key = fixture("tls/test-only-client-key.pem");

    // Without a client certificate the proxy refuses the handshake.
    let (code, err) = once(&addr, dir.path(), &["--ca-cert", &ca]);
    assert_eq!(code, 1, "must fail without a client certificate: {err}");
    assert!(proxy.presented.lock().unwrap().is_empty());
    // With one, it works, and the certificate presented is the configured one.
    let (code, err) = once(
        &addr,
        dir.path(),
        &[
            "--ca-cert",
            &ca,
            "--client-cert",
            &cert,
            "--client-key",
            &key,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let expected: Vec<u8> = rustls_pemfile::certs(&mut std::fs::read(&cert).unwrap().as_slice())
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    let presented = proxy.presented.lock().unwrap().clone();
    assert!(!presented.is_empty());
    assert!(
        presented.iter().all(|c| *c == expected),
        "another certificate was presented"
    );
    // The same through VAULT_CLIENT_CERT / VAULT_CLIENT_KEY.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vault-rotator"))
        .args([
            "--secret",
            "secret/app",
            "--kind",
            "kv-v2",
            "--once",
            "--once-timeout",
            "3s",
        ])
        .arg("--output")
        .arg(dir.path().join("env.json"))
        .env_clear()
        .env("VAULT_ADDR", &addr)
        .env("VAULT_TOKEN", "root")
        .env("VAULT_CACERT", &ca)
        .env("VAULT_CLIENT_CERT", &cert)
        .env("VAULT_CLIENT_KEY", &key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Opens `n` connections to `port` that send nothing (or a partial request head) and stay open.
fn idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            if i % 2 == 0 {
                let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n");
            }
            Some(s)
        })
        .collect()
}

/// Sends raw bytes and reads what comes back, tolerating resets.
fn hostile(port: u16, bytes: &[u8]) {
    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
        s.set_read_timeout(Some(SEC(10))).unwrap();
        s.set_write_timeout(Some(SEC(10))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.read_to_end(&mut Vec::new());
    }
}

/// GET `path` with a 1 s budget for connect, request and response: kubelet's default probe
/// timeout.
fn probe_within_a_second(port: u16, path: &str) -> Result<u16, String> {
    let start = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, SEC(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(SEC(1))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    if start.elapsed() > SEC(1) {
        return Err(format!("answered after {:?}", start.elapsed()));
    }
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_and_admin_ports_survive_hostile_clients() {
    // Below the probe server's connection limit (128).
    hostile_clients_then_probes(100).await;
}

/// More idle connections than the probe server's connection limit (128): each new connection
/// closes the oldest one, so the probes still get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_with_more_idle_connections_than_the_connection_limit() {
    hostile_clients_then_probes(300).await;
}

async fn hostile_clients_then_probes(idle_count: usize) {
    let vault = DevVault::start(&[]);
    put_kv(&reqwest::Client::new(), vault.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "root").unwrap();
    std::fs::write(dir.path().join("admin-token"), "admin-secret").unwrap();
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let mut agent = AgentProc::spawn(
        &[
            "--vault-addr",
            vault.addr(),
            "--token-file",
            dir.path().join("token").to_str().unwrap(),
            "--secret",
            "secret/app",
            "--output",
            dir.path().join("kv.json").to_str().unwrap(),
            "--admin-listen",
            &admin,
            "--admin-token-file",
            dir.path().join("admin-token").to_str().unwrap(),
        ],
        &[],
        dir.path(),
    );
    agent.wait_ready(SEC(30)).await;
    let probe_port = agent.port;
    for port in [probe_port, admin_port] {
        // Malformed requests and a 1 MiB header: each gets an answer or a close, nothing more.
        for garbage in [
            &b"\x00\x01\x02\xff\xfe garbage\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /health HTTP/9.9\r\n\r\n",
            b"GET http://evil/ HTTP/1.1\r\n\r\n",
            b"POST /rotate HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"GET /../../etc/passwd HTTP/1.1\r\n\r\n",
        ] {
            hostile(port, garbage);
        }
        let mut huge = b"GET /health HTTP/1.1\r\nX-Big: ".to_vec();
        huge.resize(1024 * 1024, b'a');
        huge.extend_from_slice(b"\r\n\r\n");
        hostile(port, &huge);
    }
    // Many idle and half-sent connections on both ports, kept open while probing.
    let _idle_probe = idle_connections(probe_port, idle_count);
    let _idle_admin = idle_connections(admin_port, idle_count);
    for round in 0..5 {
        for path in ["/health", "/ready"] {
            let status = probe_within_a_second(probe_port, path).unwrap_or_else(|e| {
                panic!("round {round}: {path} with {idle_count} idle connections: {e}")
            });
            assert_eq!(status, 200, "round {round}: {path}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The admin port still answers too (401 without the token is an answer).
    let status = probe_within_a_second(admin_port, "/rotate").expect("admin port answers");
    assert!((200..500).contains(&status), "{status}");
    // And the agent itself is fine: still rotating on request.
    assert_eq!(agent.status("/health").await, Some(200));
    assert_eq!(agent.stop(), 0);
}

matrix!(
    no_secret_reaches_logs_metrics_status_admin_or_error_texts,
    file_modes_and_owner_are_exact_whatever_the_umask_and_temps_stay_private,
);
