//! Black-box tests of what operators see and hear: `/metrics` moving with each event,
//! `/status` and the status page agreeing with the file, no secret on any of them or in the
//! logs, the admin listener's `POST /rotate` and its refusals, and the app-notification hooks
//! firing once per real credential change (never on renewals). The real binary, a real
//! PostgreSQL, and devvault or a real OpenBao dev server: the metrics walk-through injects
//! devvault faults and stays on devvault; the admin and notification scenarios run on both
//! (`matrix!`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

const SEC: fn(u64) -> Duration = Duration::from_secs;

/// No proxy from the environment may sit between the test and the agent.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(SEC(10))
        .build()
        .unwrap()
}

async fn get_text(url: &str) -> String {
    let resp = client().get(url).send().await.unwrap();
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.text().await.unwrap()
}

async fn scrape(agent: &AgentProc) -> String {
    get_text(&agent.url("/metrics")).await
}

async fn status(agent: &AgentProc) -> Value {
    serde_json::from_str(&get_text(&agent.url("/status")).await).unwrap()
}

/// The value of one series (name and labels exactly as exposed), or None when absent.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// The sum of every series of `name` whose labels include all of `labels`.
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn requests(text: &str, kind: &str, status: &str) -> f64 {
    metric(
        text,
        &format!("vault_rotator_vault_requests_total{{kind=\"{kind}\",status=\"{status}\"}}"),
    )
    .unwrap_or(0.0)
}

fn failures(text: &str, secret: &str, stage: &str) -> f64 {
    metric(
        text,
        &format!("vault_rotator_secret_failures_total{{secret=\"{secret}\",stage=\"{stage}\"}}"),
    )
    .unwrap_or_else(|| panic!("failures of {secret}/{stage} in\n{text}"))
}

fn counter(text: &str, name: &str, secret: &str) -> f64 {
    metric(text, &format!("{name}{{secret=\"{secret}\"}}"))
        .unwrap_or_else(|| panic!("{name} of {secret} in\n{text}"))
}

/// Polls the metrics until `ok` holds; returns the scrape that satisfied it.
async fn metrics_until(
    agent: &AgentProc,
    limit: Duration,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> String {
    let mut last = String::new();
    let start = std::time::Instant::now();
    loop {
        last = match client().get(agent.url("/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or(last),
            Err(_) => last,
        };
        if ok(&last) {
            return last;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; last scrape:\n{last}\nlogs:\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn admin_post(port: u16, host: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = client().post(format!("http://{host}:{port}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn approle_files(dir: &std::path::Path, role_id: &str, secret_id: &str) -> (String, String) {
    let r = dir.join("role-id");
    let s = dir.join("secret-id");
    std::fs::write(&r, role_id).unwrap();
    std::fs::write(&s, secret_id).unwrap();
    (r.display().to_string(), s.display().to_string())
}

fn write_token(dir: &std::path::Path, name: &str, token: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path.display().to_string()
}

/// Waits for the file to hold a user other than `old`; returns the new credential.
async fn new_credential(out: &std::path::Path, old: &str) -> Value {
    eventually(SEC(15), "a new credential in the file", || {
        let out = out.to_path_buf();
        let old = old.to_string();
        async move { read_cred(&out).filter(|c| s(c, "username") != old) }
    })
    .await
}

/// Asserts that none of `secrets` appears in any of `places` (name, text).
fn assert_no_secrets(places: &[(&str, &str)], secrets: &[&str]) {
    for (place, text) in places {
        for secret in secrets {
            assert!(!secret.is_empty());
            assert!(!text.contains(secret), "a secret value reached {place}");
        }
    }
}

/// Everything the agent shows or writes to its log, for secret scanning.
async fn all_outputs(agent: &AgentProc) -> Vec<(&'static str, String)> {
    vec![
        ("/metrics", scrape(agent).await),
        ("/status", get_text(&agent.url("/status")).await),
        ("/", get_text(&agent.url("/")).await),
        ("/status.html", get_text(&agent.url("/status.html")).await),
        ("the log", agent.logs()),
    ]
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_and_page_follow_renewal_rotation_and_failures() {
    let stack = Stack::start().await;
    // Leases of 8 s: renewed every 5 s or so, so renewals happen during the test, with enough
    // slack that a renewal delayed by a loaded machine still finds its lease alive (a dead
    // lease would be replaced, and count as a rotation).
    stack.dynamic_role("app", "8s", "1h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let admin_token = "adm-Qx7c1b0e9d";
    let admin_file = write_token(dir.path(), "admin-token", admin_token);
    // Port 0: the agent binds it and logs it; a port picked here could be taken first.
    let admin_listen = "127.0.0.1:0".to_string();
    let out = dir.path().join("db.json");
    // The first login fails: an auth failure, counted before anything else happens.
    stack
        .control(
            "POST",
            "faults",
            json!({"path_prefix": "/v1/auth/approle/login", "count": 1, "status": 500,
                   "body": {"errors": ["injected login failure"]}}),
        )
        .await;
    let mut agent = AgentProc::approle(
        &stack,
        dir.path(),
        &role_id,
        &secret_id,
        &out,
        &[
            // Known kind: no mount preflight, so the worker's own first login is the one
            // that fails.
            "--kind",
            "dynamic",
            // Shorter than what is left of an 8 s lease when it is replaced, so the old lease
            // is revoked rather than left to expire.
            "--revoke-grace",
            "500ms",
            "--admin-listen",
            &admin_listen,
            "--admin-token-file",
            &admin_file,
        ],
    );
    agent.wait_ready(SEC(15)).await;
    let admin_port = agent.admin_port();
    let first = read_cred(&out).unwrap();
    let mut passwords = vec![s(&first, "password")];

    // After the first credential: one failed and one good login, one read, no rotation.
    let m = scrape(&agent).await;
    assert_eq!(
        metric(&m, "vault_rotator_auth_logins_total{result=\"failed\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "vault_rotator_auth_logins_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(failures(&m, "app", "auth"), 1.0);
    assert_eq!(failures(&m, "app", "fetch"), 0.0);
    assert_eq!(requests(&m, "login", "500"), 1.0);
    assert_eq!(requests(&m, "login", "200"), 1.0);
    assert_eq!(requests(&m, "secret-read", "200"), 1.0);
    assert_eq!(
        counter(&m, "vault_rotator_secret_rotations_total", "app"),
        0.0
    );
    let left = counter(&m, "vault_rotator_secret_expires_in_seconds", "app");
    assert!(left > 0.0 && left <= 8.0, "seconds to expiry {left}");
    let written = counter(
        &m,
        "vault_rotator_secret_last_write_timestamp_seconds",
        "app",
    );
    assert!((now_unix() - written).abs() < 10.0, "last write {written}");
    assert!(m.contains(&format!(
        "vault_rotator_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(
        metric_sum(
            &m,
            "vault_rotator_vault_request_duration_seconds_count",
            &["kind=\"secret-read\""]
        ) >= 1.0
    );
    assert!(m.contains("# HELP vault_rotator_secret_expires_in_seconds "));

    // /status and the page agree with the file: same user, same expiry. Renewals move the
    // expiry, so compare a file read, a status read and a second file read that agree.
    let (cred, st) = eventually(SEC(15), "/status matching the file", || {
        let (out, agent) = (out.clone(), &agent);
        async move {
            let before = read_cred(&out)?;
            let st = status(agent).await;
            let after = read_cred(&out)?;
            let db = &st["secrets"][0];
            let same = before == after
                && db["username"] == before["username"]
                && db["expires_at"] == before["expires_at"];
            same.then_some((before, st))
        }
    })
    .await;
    let db = &st["secrets"][0];
    assert_eq!(db["name"], "app");
    assert_eq!(db["path"], "database/creds/app");
    assert_eq!(db["kind"], "dynamic");
    assert_eq!(db["leased"], true);
    assert!(
        db.get("lease_id").is_none(),
        "lease ids stay out of /status"
    );
    assert_eq!(db["failures_by_stage"]["auth"], 1);
    assert!(db["next_action"]["what"].is_string());
    assert_eq!(db["history"][0]["kind"], "failed");
    assert_eq!(db["history"][0]["stage"], "auth");
    assert_eq!(st["auth"]["login_failures"], 1);
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert!(st["uptime_seconds"].as_u64().is_some());
    let page = eventually(SEC(15), "the page matching the file", || {
        let (out, agent) = (out.clone(), &agent);
        async move {
            let before = read_cred(&out)?;
            let page = get_text(&agent.url("/")).await;
            let after = read_cred(&out)?;
            let same = before == after
                && page.contains(&s(&before, "username"))
                && page.contains(&s(&before, "expires_at"));
            same.then_some(page)
        }
    })
    .await;
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert!(
        page.contains("class=\"fill\" style=\"width:"),
        "a lifetime bar"
    );
    assert!(!page.contains("<script"));
    assert_eq!(s(&cred, "username"), s(&first, "username"));

    // A renewal.
    let m = metrics_until(&agent, SEC(20), "a lease renewal", |m| {
        metric(m, "vault_rotator_secret_renewals_total{secret=\"app\"}").unwrap_or(0.0) >= 1.0
    })
    .await;
    assert!(requests(&m, "lease-renew", "200") >= 1.0, "{m}");
    assert_eq!(
        counter(&m, "vault_rotator_secret_rotations_total", "app"),
        0.0
    );
    assert!(status(&agent).await["secrets"][0]["renewals"].as_u64() >= Some(1));

    // A failed renewal: counted under "renew", the request under its status; the next
    // renewal works again and the file keeps its credential throughout.
    stack
        .control(
            "POST",
            "faults",
            json!({"path_prefix": "/v1/sys/leases/renew", "count": 1, "status": 500,
                   "body": {"errors": ["injected renewal failure"]}}),
        )
        .await;
    let m = metrics_until(&agent, SEC(20), "a renewal failure", |m| {
        failures(m, "app", "renew") == 1.0
    })
    .await;
    assert_eq!(requests(&m, "lease-renew", "500"), 1.0);
    let renewals = counter(&m, "vault_rotator_secret_renewals_total", "app");
    metrics_until(&agent, SEC(15), "renewing again after the failure", |m| {
        counter(m, "vault_rotator_secret_renewals_total", "app") > renewals
    })
    .await;
    let st = status(&agent).await;
    let db = &st["secrets"][0];
    assert!(
        db["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("renew: ")),
        "{db}\nlogs:\n{}",
        agent.logs()
    );
    assert_eq!(db["failures_by_stage"]["renew"], 1);
    assert_eq!(
        s(&read_cred(&out).unwrap(), "username"),
        s(&first, "username")
    );

    // A manual rotation through the admin listener.
    let (code, body) = admin_post(admin_port, "127.0.0.1", "/rotate/app", Some(admin_token)).await;
    assert_eq!((code, body), (202, json!({"rotating": ["app"]})));
    let second = new_credential(&out, &s(&first, "username")).await;
    passwords.push(s(&second, "password"));
    let m = metrics_until(&agent, SEC(10), "the rotation counted", |m| {
        counter(m, "vault_rotator_secret_rotations_total", "app") == 1.0
    })
    .await;
    assert!(requests(&m, "secret-read", "200") >= 2.0);
    // The old lease is revoked after the grace.
    metrics_until(&agent, SEC(15), "the old lease revoked", |m| {
        metric_sum(
            m,
            "vault_rotator_vault_requests_total",
            &["kind=\"lease-revoke\""],
        ) >= 1.0
    })
    .await;
    let st = eventually(SEC(10), "the revocation in the activity log", || {
        let agent = &agent;
        async move {
            let st = status(agent).await;
            let history = st["secrets"][0]["history"].as_array()?.clone();
            history.iter().any(|e| e["kind"] == "revoked").then_some(st)
        }
    })
    .await;
    let db = &st["secrets"][0];
    let history = db["history"].as_array().unwrap();
    let rotated = history.iter().find(|e| e["kind"] == "rotated").unwrap();
    assert_eq!(rotated["username"], second["username"]);
    let revoked = history.iter().find(|e| e["kind"] == "revoked").unwrap();
    assert_eq!(
        revoked["username"], first["username"],
        "the revocation names the old user"
    );
    assert!(db["last_rotation"].is_string());
    assert_eq!(db["rotations"], 1);

    // A failed fetch: SIGUSR1 asks for a rotation, the read answers 500 (the file keeps the
    // last good credential), and the rotation is retried with backoff until it works.
    stack
        .control(
            "POST",
            "faults",
            json!({"path_prefix": "/v1/database/creds/", "count": 1, "status": 500,
                   "body": {"errors": ["injected read failure"]}}),
        )
        .await;
    agent.signal("USR1");
    let third = new_credential(&out, &s(&second, "username")).await;
    passwords.push(s(&third, "password"));
    let m = metrics_until(
        &agent,
        SEC(10),
        "the failed fetch and the retried rotation",
        |m| counter(m, "vault_rotator_secret_rotations_total", "app") == 2.0,
    )
    .await;
    assert_eq!(requests(&m, "secret-read", "500"), 1.0);
    assert_eq!(failures(&m, "app", "fetch"), 1.0, "{m}");
    assert_eq!(failures(&m, "app", "write"), 0.0);
    assert_eq!(failures(&m, "app", "render"), 0.0);
    let written_after = counter(
        &m,
        "vault_rotator_secret_last_write_timestamp_seconds",
        "app",
    );
    assert!(
        written_after > written,
        "last write moved: {written} -> {written_after}"
    );

    // Nothing secret anywhere: not the passwords, the secret_id, or the admin token.
    let outputs = all_outputs(&agent).await;
    let places: Vec<(&str, &str)> = outputs.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let mut secrets: Vec<&str> = passwords.iter().map(String::as_str).collect();
    secrets.extend([secret_id.as_str(), admin_token]);
    assert_no_secrets(&places, &secrets);
    assert_eq!(agent.stop(), 0);
    assert_no_secrets(&[("the log", &agent.logs())], &secrets);
}

/// This machine's first non-loopback address (`hostname -I`), to reach a listener bound to
/// 0.0.0.0 from a peer address that is not loopback. The connection stays on this machine.
fn non_loopback_address() -> Option<String> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace()
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .map(|ip| ip.to_string())
}

async fn admin_rotate_needs_the_token_refuses_remote_peers_and_survives_reload(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "1h", "24h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let (rf, sf) = approle_files(dir.path(), &role_id, &secret_id);
    let admin_token = "adm-5e1f0c2a77";
    let admin_file = write_token(dir.path(), "admin-token", admin_token);
    let out = dir.path().join("db.json");
    let config = dir.path().join("agent.toml");
    let secret_toml = |grace: &str| {
        format!(
            "[[secret]]\nname = \"app\"\npath = \"database/creds/app\"\noutput = \"{}\"\nrevoke_grace = \"{grace}\"\n",
            out.display()
        )
    };
    std::fs::write(&config, secret_toml("1m")).unwrap();
    // Port 0: the agent binds it and logs it; a port picked here could be taken first.
    // Bound to every address by mistake: remote peers are still refused.
    let listen = "0.0.0.0:0".to_string();
    let mut agent = AgentProc::spawn(
        &[
            "--vault-addr",
            stack.addr(),
            "--auth",
            "approle",
            "--role-id-file",
            &rf,
            "--secret-id-file",
            &sf,
            "--config",
            config.to_str().unwrap(),
            "--admin-listen",
            &listen,
            "--admin-token-file",
            &admin_file,
        ],
        &[],
        dir.path(),
    );
    agent.wait_ready(SEC(15)).await;
    let port = agent.admin_port();
    let first = read_cred(&out).unwrap();
    let local = "127.0.0.1";

    // Without the token, or with a wrong one: 401, and nothing rotates.
    assert_eq!(admin_post(port, local, "/rotate", None).await.0, 401);
    assert_eq!(
        admin_post(port, local, "/rotate/app", Some("adm-wrong"))
            .await
            .0,
        401
    );
    assert_eq!(
        admin_post(port, local, "/rotate", Some(&format!("{admin_token}x")))
            .await
            .0,
        401
    );
    // Probe routes are not on the admin listener, and admin routes only take POST.
    let get = client()
        .get(format!("http://{local}:{port}/rotate"))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);
    let health = client()
        .get(format!("http://{local}:{port}/health"))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 404);
    let (code, body) = admin_post(port, local, "/rotate/nope", Some(admin_token)).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (404, Some("unknown secret"))
    );
    tokio::time::sleep(SEC(1)).await;
    assert_eq!(
        s(&read_cred(&out).unwrap(), "username"),
        s(&first, "username")
    );

    // From this machine's non-loopback address, even the right token gets 403.
    let remote = non_loopback_address();
    match &remote {
        Some(addr) => {
            let (code, body) = admin_post(port, addr, "/rotate", Some(admin_token)).await;
            assert_eq!(code, 403, "{body}");
            assert!(agent
                .logs()
                .contains("refused a request from a non-loopback peer"));
        }
        None => eprintln!(
            "no non-loopback address on this machine: the peer check is covered only by the \
             Router tests in src/http.rs, with fabricated peer addresses"
        ),
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s(&read_cred(&out).unwrap(), "username"),
        s(&first, "username")
    );

    // With the token from loopback: 202, and a new credential.
    let (code, body) = admin_post(port, local, "/rotate", Some(admin_token)).await;
    assert_eq!((code, body), (202, json!({"rotating": ["app"]})));
    let second = new_credential(&out, &s(&first, "username")).await;

    // SIGHUP restarts the changed secret with a new worker; the admin listener reaches it.
    std::fs::write(&config, secret_toml("2m")).unwrap();
    agent.signal("HUP");
    eventually(SEC(10), "the secret restarted by SIGHUP", || {
        let agent = &agent;
        async move { agent.logs().contains("SIGHUP: started").then_some(()) }
    })
    .await;
    agent.wait_ready(SEC(15)).await;
    let current = s(&read_cred(&out).unwrap(), "username");
    let (code, _) = admin_post(port, local, "/rotate/app", Some(admin_token)).await;
    assert_eq!(code, 202);
    let third = new_credential(&out, &current).await;
    assert_ne!(s(&third, "username"), s(&second, "username"));
    assert_eq!(agent.stop(), 0);
    let logs = agent.logs();
    assert!(
        !logs.contains(admin_token),
        "the admin token reached the log"
    );
    assert!(logs.contains("admin: rotation requested"), "{logs}");

    // --admin-allow-remote: remote peers get in with the token, and only with it.
    if let Some(addr) = remote {
        // Port 0: the agent binds it and logs it; a port picked here could be taken first.
        let listen = "0.0.0.0:0".to_string();
        let out = dir.path().join("remote.json");
        let mut agent = AgentProc::approle(
            &stack,
            dir.path(),
            &role_id,
            &secret_id,
            &out,
            &[
                "--admin-listen",
                &listen,
                "--admin-token-file",
                &admin_file,
                "--admin-allow-remote",
            ],
        );
        agent.wait_ready(SEC(15)).await;
        let port = agent.admin_port();
        let before = s(&read_cred(&out).unwrap(), "username");
        assert_eq!(admin_post(port, &addr, "/rotate", None).await.0, 401);
        let (code, body) = admin_post(port, &addr, "/rotate", Some(admin_token)).await;
        assert_eq!((code, body), (202, json!({"rotating": ["app"]})));
        new_credential(&out, &before).await;
        assert_eq!(agent.stop(), 0);
    }
}

/// A tiny HTTP server that answers 200 to everything and keeps the bodies it was sent.
async fn hook_listener() -> (u16, Arc<Mutex<Vec<(String, String)>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then as much body as Content-Length says.
                let body = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0usize);
                    if body.len() >= length {
                        break (
                            head.lines().next().unwrap_or("").to_string(),
                            body.to_string(),
                        );
                    }
                };
                kept.lock().unwrap().push(body);
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (port, bodies)
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The process that counts signals: a shell that appends a line to a file per SIGUSR1.
struct SignalCounter(std::process::Child);

impl Drop for SignalCounter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn each_notification_fires_once_per_new_credential_and_never_on_renewal(v: Vault) {
    let stack = Stack::start_on(v).await;
    // Leases of 6 s: a renewal every 4 s or so, with slack for a loaded machine (a lease that
    // died would be replaced: a real change, and a notification).
    stack.dynamic_role("app", "6s", "1h").await;
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
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_token(dir.path(), "vault-token", &token);
    let out = dir.path().join("db.json");

    let exec_log = dir.path().join("exec.log");
    let script = dir.path().join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "echo \"$VAULT_ROTATOR_SECRET $VAULT_ROTATOR_USERNAME\" >> {}\n",
            exec_log.display()
        ),
    )
    .unwrap();
    let signal_log = dir.path().join("signals.log");
    let app = SignalCounter(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap 'echo usr1 >> {}' USR1; while :; do sleep 0.1; done",
                signal_log.display()
            ))
            .spawn()
            .unwrap(),
    );
    let pid_file = dir.path().join("app.pid");
    std::fs::write(&pid_file, app.0.id().to_string()).unwrap();
    let (hook_port, posts) = hook_listener().await;
    let hook_url = format!("http://127.0.0.1:{hook_port}/credential-changed");
    // Port 0: the agent binds it and logs it; a port picked here could be taken first.
    let admin_listen = "127.0.0.1:0".to_string();
    // Let the trap be installed before any signal can arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut agent = AgentProc::spawn(
        &[
            "--vault-addr",
            stack.addr(),
            "--auth",
            "token",
            "--token-file",
            &token_file,
            "--secret",
            "database/creds/app",
            "--output",
            out.to_str().unwrap(),
            "--revoke-grace",
            "1s",
            "--notify-exec",
            &format!("sh {}", script.display()),
            "--notify-signal",
            "USR1",
            "--notify-pid-file",
            pid_file.to_str().unwrap(),
            "--notify-url",
            &hook_url,
            "--notify-timeout",
            "5s",
            "--admin-listen",
            &admin_listen,
        ],
        &[],
        dir.path(),
    );
    agent.wait_ready(SEC(15)).await;
    let admin_port = agent.admin_port();
    let first = read_cred(&out).unwrap();
    let mut passwords = vec![s(&first, "password")];
    let notified = |m: &str, hook: &str| {
        metric(
            m,
            &format!(
                "vault_rotator_notifications_total{{secret=\"app\",hook=\"{hook}\",result=\"ok\"}}"
            ),
        )
        .unwrap_or_else(|| panic!("{hook} notifications in\n{m}"))
    };

    // The first credential is in place before the app starts: no notification. Two renewals
    // later, still none.
    let m = metrics_until(&agent, SEC(30), "two renewals", |m| {
        counter(m, "vault_rotator_secret_renewals_total", "app") >= 2.0
    })
    .await;
    for hook in ["exec", "signal", "http"] {
        assert_eq!(notified(&m, hook), 0.0, "{hook} before any change");
    }
    assert!(lines(&exec_log).is_empty() && lines(&signal_log).is_empty());
    assert!(posts.lock().unwrap().is_empty());

    // A rotation (admin, no token configured, loopback): each hook fires once.
    let (code, _) = admin_post(admin_port, "127.0.0.1", "/rotate", None).await;
    assert_eq!(code, 202);
    let second = new_credential(&out, &s(&first, "username")).await;
    passwords.push(s(&second, "password"));
    let m = metrics_until(&agent, SEC(15), "every hook to report", |m| {
        ["exec", "signal", "http"]
            .iter()
            .all(|h| notified(m, h) == 1.0)
    })
    .await;
    let renewals = counter(&m, "vault_rotator_secret_renewals_total", "app");
    eventually(SEC(10), "the signal to be counted", || {
        let log = signal_log.clone();
        async move { (lines(&log).len() == 1).then_some(()) }
    })
    .await;
    assert_eq!(
        lines(&exec_log),
        [format!("app {}", s(&second, "username"))]
    );
    {
        let posts = posts.lock().unwrap();
        assert_eq!(posts.len(), 1, "{posts:?}");
        assert_eq!(posts[0].0, "POST /credential-changed HTTP/1.1");
        let body: Value = serde_json::from_str(&posts[0].1).unwrap();
        assert_eq!(body["event"], "credential_changed");
        assert_eq!(body["secret"], "app");
        assert_eq!(body["username"], second["username"]);
        assert_eq!(body["expires_at"], second["expires_at"]);
    }

    // Renewals of the new credential: nothing more.
    let m = metrics_until(&agent, SEC(30), "two more renewals", |m| {
        counter(m, "vault_rotator_secret_renewals_total", "app") >= renewals + 2.0
    })
    .await;
    for hook in ["exec", "signal", "http"] {
        assert_eq!(notified(&m, hook), 1.0, "{hook} after renewals");
    }
    assert_eq!(lines(&exec_log).len(), 1);
    assert_eq!(lines(&signal_log).len(), 1);
    assert_eq!(posts.lock().unwrap().len(), 1);

    // SIGUSR1: one more change, one more of each.
    agent.signal("USR1");
    let third = new_credential(&out, &s(&second, "username")).await;
    passwords.push(s(&third, "password"));
    let m = metrics_until(&agent, SEC(15), "the second round of notifications", |m| {
        ["exec", "signal", "http"]
            .iter()
            .all(|h| notified(m, h) == 2.0)
    })
    .await;
    for hook in ["exec", "signal", "http"] {
        let failed = format!(
            "vault_rotator_notifications_total{{secret=\"app\",hook=\"{hook}\",result=\"failed\"}}"
        );
        assert_eq!(metric(&m, &failed), Some(0.0));
    }
    eventually(SEC(10), "the second signal to be counted", || {
        let log = signal_log.clone();
        async move { (lines(&log).len() == 2).then_some(()) }
    })
    .await;
    assert_eq!(
        lines(&exec_log)[1],
        format!("app {}", s(&third, "username"))
    );
    assert_eq!(posts.lock().unwrap().len(), 2);
    let st = status(&agent).await;
    assert_eq!(st["secrets"][0]["notifications"], 6);
    assert_eq!(st["secrets"][0]["notifications_by_hook"]["signal"]["ok"], 2);

    // Nothing secret anywhere: not the passwords, not the agent's Vault token.
    let outputs = all_outputs(&agent).await;
    let posted: String = posts
        .lock()
        .unwrap()
        .iter()
        .map(|(line, body)| format!("{line}\n{body}\n"))
        .collect();
    let mut places: Vec<(&str, &str)> = outputs.iter().map(|(p, t)| (*p, t.as_str())).collect();
    places.push(("the HTTP hook", &posted));
    let exec_text = lines(&exec_log).join("\n");
    places.push(("the exec hook", &exec_text));
    let mut secrets: Vec<&str> = passwords.iter().map(String::as_str).collect();
    secrets.push(&token);
    assert_no_secrets(&places, &secrets);
    assert_eq!(agent.stop(), 0);
    assert_no_secrets(&[("the log", &agent.logs())], &secrets);
}

matrix!(
    admin_rotate_needs_the_token_refuses_remote_peers_and_survives_reload,
    each_notification_fires_once_per_new_credential_and_never_on_renewal,
);
