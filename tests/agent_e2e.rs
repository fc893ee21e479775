//! Black-box tests of the real `vault-rotator` binary against a real PostgreSQL, each scenario
//! on devvault and on a real OpenBao dev server (`matrix!`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SEC: fn(u64) -> Duration = Duration::from_secs;

/// devvault only: a 20 s soak whose claim (no failed login across rotations) OpenBao's half of
/// the matrix shows with `pod_e2e`, `lifecycle_e2e::mount_max_ttl_tuned_down_...` and
/// `mariadb_e2e`, so running it twice would only add CI time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_credential_is_written_logs_in_and_is_rotated_without_a_gap() {
    let stack = Stack::start().await;
    // Short leases: each credential can live 6 s at most, renewed every 2 s or so.
    stack.dynamic_role("app", "3s", "6s").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    // Hold the first credential read for a moment, so /ready can be seen before it exists.
    stack
        .control(
            "POST",
            "faults",
            json!({"path_prefix": "/v1/database/creds/", "count": 1, "action": "latency", "latency_ms": 1500}),
        )
        .await;
    let mut agent = AgentProc::approle(
        &stack,
        dir.path(),
        &role_id,
        &secret_id,
        &out,
        &["--revoke-grace", "2s"],
    );
    assert_eq!(
        agent.status("/ready").await,
        Some(503),
        "not ready before a credential exists"
    );
    agent.wait_ready(SEC(15)).await;

    let first = read_cred(&out).expect("file written before /ready");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o400, "default mode is owner-read only");
    for key in ["username", "password", "expires_at"] {
        assert!(first.get(key).is_some(), "{key} in {first}");
    }
    stack
        .pg_login(&s(&first, "username"), &s(&first, "password"))
        .await
        .expect("first credential logs in");

    // A reader that logs in with whatever the file holds, as fast as it can, for 20 s:
    // across several max_ttl periods, not one login may fail.
    let failures = Arc::new(AtomicU64::new(0));
    let logins = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut users = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + SEC(20);
    let mut last_error = String::new();
    while std::time::Instant::now() < deadline {
        let cred = read_cred(&out).expect("file never disappears");
        users.insert(s(&cred, "username"));
        match stack
            .pg_login(&s(&cred, "username"), &s(&cred, "password"))
            .await
        {
            Ok(()) => logins.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                last_error = format!("{} at {}: {e}", s(&cred, "username"), cred["expires_at"]);
                failures.fetch_add(1, Ordering::Relaxed)
            }
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "logins with the file's credential failed; last: {last_error}"
    );
    // Enough logins to span every rotation (a login costs a scram exchange; on a loaded
    // machine a few per second).
    let n = logins.load(Ordering::Relaxed);
    assert!(n >= 20, "only {n} logins in 20 s");
    assert!(
        users.len() >= 3,
        "expected several rotations in 20 s with max_ttl 6s, saw {users:?}"
    );

    // Old users are dropped after the 2 s grace; only the current one (and at most one still in
    // its grace) exist.
    let current = s(&read_cred(&out).unwrap(), "username");
    let roles = eventually(SEC(10), "old roles dropped", || {
        let stack = &stack;
        let current = current.clone();
        async move {
            let roles = stack.pg_dynamic_roles().await;
            (roles.len() <= 2 && roles.contains(&current)).then_some(roles)
        }
    })
    .await;
    assert!(roles.len() <= 2, "{roles:?}");
    assert_eq!(agent.stop(), 0);
    let logs = agent.logs();
    assert!(logs.contains("wrote new credential"), "{logs}");
    assert!(
        !logs.contains(&s(&first, "password")),
        "a password reached the logs"
    );
    assert!(!logs.contains(&secret_id), "the secret_id reached the logs");
}

async fn old_user_is_dropped_only_after_the_grace(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "1h", "24h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut agent = AgentProc::approle(
        &stack,
        dir.path(),
        &role_id,
        &secret_id,
        &out,
        &["--revoke-grace", "4s"],
    );
    agent.wait_ready(SEC(15)).await;
    let old = read_cred(&out).unwrap();
    // SIGUSR1: rotate now.
    agent.signal("USR1");
    let new = eventually(SEC(10), "a new credential", || {
        let out = out.clone();
        let old_user = s(&old, "username");
        async move { read_cred(&out).filter(|c| s(c, "username") != old_user) }
    })
    .await;
    let switched = std::time::Instant::now();
    stack
        .pg_login(&s(&new, "username"), &s(&new, "password"))
        .await
        .expect("new credential works");
    // Within the grace the old credential still works...
    stack
        .pg_login(&s(&old, "username"), &s(&old, "password"))
        .await
        .expect("old credential works during the grace");
    assert!(stack.pg_role_exists(&s(&old, "username")).await);
    // ...and afterwards its role is gone.
    eventually(SEC(15), "old role dropped", || {
        let stack = &stack;
        let user = s(&old, "username");
        async move { (!stack.pg_role_exists(&user).await).then_some(()) }
    })
    .await;
    assert!(
        switched.elapsed() >= SEC(3),
        "dropped after {:?}, before the 4 s grace",
        switched.elapsed()
    );
    assert!(stack
        .pg_login(&s(&old, "username"), &s(&old, "password"))
        .await
        .is_err());
    assert_eq!(agent.stop(), 0);
}

async fn once_writes_with_exact_mode_and_exits_zero(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "1h", "24h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let (rf, sf) = approle_files(dir.path(), &role_id, &secret_id);
    let out = dir.path().join("db.env");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_vault-rotator"))
        .args([
            "--vault-addr",
            stack.addr(),
            "--auth",
            "approle",
            "--role-id-file",
            &rf,
            "--secret-id-file",
            &sf,
            "--secret",
            "database/creds/app",
            "--output",
            out.to_str().unwrap(),
            "--format",
            "env",
            "--file-mode",
            "0640",
            "--once",
        ])
        .env_clear()
        .status()
        .unwrap();
    assert!(status.success());
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // The env file is safe to source and logs in.
    let sourced = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". '{}'; printf '%s\\n%s' \"$USERNAME\" \"$PASSWORD\"",
            out.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8(sourced.stdout).unwrap();
    let (user, pass) = text.split_once('\n').unwrap();
    stack
        .pg_login(user, pass)
        .await
        .expect("the env file's credential logs in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_vault-rotator");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let out = dir.path().join("x.json");
    let out = out.to_str().unwrap();
    let base = [
        "--vault-addr",
        "http://127.0.0.1:1",
        "--auth",
        "approle",
        "--role-id-file",
        "/nonexistent",
        "--secret",
        "database/creds/app",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--rotate-every", "sometimes", "--output", out],
            "--rotate-every",
        ),
        (vec!["--output", "/no/such/dir/db.json"], "/no/such/dir"),
        (vec!["--output", out, "--file-mode", "888"], "--file-mode"),
        (vec!["--output", out, "--format", "xml"], "--format"),
        (vec!["--output", out, "--bogus-flag"], "--bogus-flag"),
        (vec![], "--output"),
    ];
    for (extra, needle) in cases {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra.iter());
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: stderr does not name {needle}: {stderr}"
        );
    }
    let (code, stderr) = run(&["--help"]);
    assert_eq!(code, Some(0), "{stderr}");
}

async fn kv_v2_version_change_lands_in_the_file(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack
        .api(
            "POST",
            "sys/mounts/team-kv",
            json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await;
    stack
        .api(
            "POST",
            "team-kv/data/app",
            json!({"data": {"username": "app", "password": "one", "host": "db"}}),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, stack.vault.root_token()).unwrap();
    let out = dir.path().join("kv.json");
    let mut agent = AgentProc::spawn(
        &[
            "--vault-addr",
            stack.addr(),
            "--auth",
            "token",
            "--token-file",
            token.to_str().unwrap(),
            "--secret",
            "team-kv/app",
            "--output",
            out.to_str().unwrap(),
            "--refresh-every",
            "1s",
        ],
        &[],
        dir.path(),
    );
    agent.wait_ready(SEC(15)).await;
    let first = read_cred(&out).unwrap();
    assert_eq!(first["version"], 1);
    assert_eq!(first["data"]["host"], "db");
    assert!(first["expires_at"].is_null());
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&out).unwrap());
    tokio::time::sleep(SEC(3)).await;
    let inode_after = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&out).unwrap());
    assert_eq!(inode, inode_after, "unchanged secret must not be rewritten");
    stack
        .api(
            "POST",
            "team-kv/data/app",
            json!({"data": {"username": "app", "password": "two", "host": "db"}}),
        )
        .await;
    let second = eventually(SEC(10), "version 2 in the file", || {
        let out = out.clone();
        async move { read_cred(&out).filter(|c| c["version"] == 2) }
    })
    .await;
    assert_eq!(second["password"], "two");
    assert_eq!(agent.stop(), 0);
}

async fn static_role_rotation_lands_in_the_file(v: Vault) {
    let stack = Stack::start_on(v).await;
    // The static role's user must exist first.
    stack
        .pg_exec("CREATE ROLE app_static LOGIN PASSWORD 'initial'")
        .await;
    stack
        .api(
            "POST",
            "database/static-roles/app-static",
            json!({"db_name": "pg", "username": "app_static", "rotation_period": "6s"}),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, stack.vault.root_token()).unwrap();
    let out = dir.path().join("static.json");
    let mut agent = AgentProc::spawn(
        &[
            "--vault-addr",
            stack.addr(),
            "--token-file",
            token.to_str().unwrap(),
            "--secret",
            "database/static-creds/app-static",
            "--output",
            out.to_str().unwrap(),
        ],
        &[],
        dir.path(),
    );
    agent.wait_ready(SEC(15)).await;
    let first = read_cred(&out).unwrap();
    assert_eq!(first["username"], "app_static");
    assert!(first["expires_at"].is_string());
    stack
        .pg_login("app_static", &s(&first, "password"))
        .await
        .expect("static credential logs in");
    let second = eventually(SEC(15), "the rotated password in the file", || {
        let out = out.clone();
        let old = s(&first, "password");
        async move { read_cred(&out).filter(|c| s(c, "password") != old) }
    })
    .await;
    stack
        .pg_login("app_static", &s(&second, "password"))
        .await
        .expect("rotated password logs in");
    assert!(
        stack
            .pg_login("app_static", &s(&first, "password"))
            .await
            .is_err(),
        "old password must be dead"
    );
    assert_eq!(agent.stop(), 0);
}

async fn approle_with_a_wrapped_secret_id(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "1h", "24h").await;
    let (role_id, _) = stack.approle("1h", "24h").await;
    let wrapped = stack
        .api_with(
            "POST",
            "auth/approle/role/app/secret-id",
            json!({}),
            stack.vault.root_token(),
            &[("X-Vault-Wrap-TTL", "60s")],
        )
        .await;
    let wrapping_token = wrapped["wrap_info"]["token"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut agent = AgentProc::approle(&stack, dir.path(), &role_id, &wrapping_token, &out, &[]);
    agent.wait_ready(SEC(15)).await;
    let cred = read_cred(&out).unwrap();
    stack
        .pg_login(&s(&cred, "username"), &s(&cred, "password"))
        .await
        .unwrap();
    assert!(agent.logs().contains("unwrapped"), "{}", agent.logs());
    assert!(!agent.logs().contains(&wrapping_token));
    assert_eq!(agent.stop(), 0);
}

/// Parses `expires_at` for comparisons.
fn expires(v: &Value) -> std::time::SystemTime {
    humantime::parse_rfc3339(v["expires_at"].as_str().unwrap()).unwrap()
}

async fn renewals_move_expires_at_without_new_users(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "3s", "1h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut agent = AgentProc::approle(&stack, dir.path(), &role_id, &secret_id, &out, &[]);
    agent.wait_ready(SEC(15)).await;
    let first = read_cred(&out).unwrap();
    tokio::time::sleep(SEC(7)).await;
    let later = read_cred(&out).unwrap();
    assert_eq!(
        s(&first, "username"),
        s(&later, "username"),
        "renewal, not re-issue"
    );
    assert!(
        expires(&later) > expires(&first),
        "expires_at moves with renewals"
    );
    stack
        .pg_login(&s(&later, "username"), &s(&later, "password"))
        .await
        .expect("still logs in after the first TTL");
    assert_eq!(stack.pg_dynamic_roles().await.len(), 1);
    assert_eq!(agent.stop(), 0);
}

async fn rotate_every_on_a_static_role_calls_rotate_role_and_stops_when_denied(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack
        .pg_exec("CREATE ROLE app_static LOGIN PASSWORD 'initial'")
        .await;
    stack
        .api(
            "POST",
            "database/static-roles/app-static",
            json!({"db_name": "pg", "username": "app_static", "rotation_period": "1h"}),
        )
        .await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let (rf, sf) = approle_files(dir.path(), &role_id, &secret_id);
    let out = dir.path().join("static.json");
    let args = |out: &std::path::Path| {
        vec![
            "--vault-addr".to_string(),
            stack.addr().to_string(),
            "--auth".into(),
            "approle".into(),
            "--role-id-file".into(),
            rf.clone(),
            "--secret-id-file".into(),
            sf.clone(),
            "--secret".into(),
            "database/static-creds/app-static".into(),
            "--output".into(),
            out.display().to_string(),
            "--rotate-every".into(),
            "3s".into(),
        ]
    };
    let a = args(&out);
    let mut agent = AgentProc::spawn(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
        dir.path(),
    );
    agent.wait_ready(SEC(15)).await;
    let first = read_cred(&out).unwrap();
    let second = eventually(SEC(15), "a password rotated on our cadence", || {
        let out = out.clone();
        let old = s(&first, "password");
        async move { read_cred(&out).filter(|c| s(c, "password") != old) }
    })
    .await;
    stack
        .pg_login("app_static", &s(&second, "password"))
        .await
        .expect("the rotated password works");
    assert_eq!(agent.stop(), 0);

    // A policy without rotate-role: one attempt, a warning, then no more asking.
    stack
        .api(
            "PUT",
            "sys/policies/acl/app",
            json!({"policy": "path \"database/static-creds/*\" { capabilities = [\"read\"] }\npath \"sys/internal/ui/mounts/*\" { capabilities = [\"read\"] }"}),
        )
        .await;
    let before = stack.request_count("database/rotate-role/").await;
    let out2 = dir.path().join("static2.json");
    let a = args(&out2);
    let mut denied = AgentProc::spawn(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
        dir.path(),
    );
    denied.wait_ready(SEC(15)).await;
    tokio::time::sleep(SEC(10)).await;
    let attempts = stack.request_count("database/rotate-role/").await - before;
    // One attempt, then never again: lookup-self shows the token alive, so the bare 403 is a
    // policy denial and earns no new login (issue 13, failure 3).
    assert_eq!(
        attempts,
        1,
        "asked once, then stopped; logs:\n{}",
        denied.logs()
    );
    assert!(
        denied.logs().contains("does not allow rotate-role"),
        "{}",
        denied.logs()
    );
    assert_eq!(denied.status("/ready").await, Some(200));
    assert_eq!(denied.stop(), 0);
}

async fn setup_script_configures_the_server_for_the_agent(v: Vault) {
    // The server as it starts, configured only by the documented script.
    let stack = Stack {
        vault: Server::start(v),
        pg: testkit::pg::PgCluster::start(),
        http: reqwest::Client::new(),
    };
    stack
        .pg_exec("CREATE ROLE app_static LOGIN PASSWORD 'before'")
        .await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-vault.sh");
    let pem =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s-test-pub.pem");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("VAULT_ADDR", stack.addr())
        .env("VAULT_TOKEN", stack.vault.root_token())
        .env("PG_PORT", stack.pg.port().to_string())
        .env("PG_ADMIN_USER", stack.pg.superuser())
        .env("PG_ADMIN_PASSWORD", stack.pg.superuser_password())
        .env("SETUP_CREATE_STATIC_USER", "0")
        .env("K8S_PEM_KEYS_FILE", &pem)
        // Outside a cluster OpenBao has no service-account files of its own: it needs the
        // cluster's CA given (any CA certificate does for a config that is never used here).
        .env("K8S_DISABLE_LOCAL_CA_JWT", "true")
        .env(
            "K8S_CA_CERT_FILE",
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/tls/test-only-ca.pem"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("setup-vault: done"),
        "setup-vault.sh failed on {v:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let role_id = s(
        &stack
            .api("GET", "auth/approle/role/app/role-id", Value::Null)
            .await["data"],
        "role_id",
    );
    let secret_id = s(
        &stack
            .api("POST", "auth/approle/role/app/secret-id", json!({}))
            .await["data"],
        "secret_id",
    );
    let dir = tempfile::tempdir().unwrap();
    let (rf, sf) = approle_files(dir.path(), &role_id, &secret_id);
    // The agent, with the script's AppRole and policy: a dynamic and a static credential, and
    // the sample KV secret.
    for (secret, file) in [
        ("database/creds/app", "dyn.json"),
        ("database/static-creds/app-static", "static.json"),
        ("secret/app/config", "kv.json"),
    ] {
        let out = dir.path().join(file);
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_vault-rotator"))
            .args(["--vault-addr", stack.addr(), "--auth", "approle"])
            .args(["--role-id-file", &rf, "--secret-id-file", &sf])
            .args([
                "--secret",
                secret,
                "--output",
                out.to_str().unwrap(),
                "--once",
            ])
            .env_clear()
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{secret}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let dynamic = read_cred(&dir.path().join("dyn.json")).unwrap();
    stack
        .pg_login(&s(&dynamic, "username"), &s(&dynamic, "password"))
        .await
        .expect("the dynamic credential logs in");
    let fixed = read_cred(&dir.path().join("static.json")).unwrap();
    assert_eq!(fixed["username"], "app_static");
    stack
        .pg_login("app_static", &s(&fixed, "password"))
        .await
        .expect("the static credential logs in");
    let kv = read_cred(&dir.path().join("kv.json")).unwrap();
    assert_eq!(kv["data"]["feature_flag"], "on", "{kv}");
}

matrix!(
    old_user_is_dropped_only_after_the_grace,
    once_writes_with_exact_mode_and_exits_zero,
    kv_v2_version_change_lands_in_the_file,
    static_role_rotation_lands_in_the_file,
    approle_with_a_wrapped_secret_id,
    renewals_move_expires_at_without_new_users,
    rotate_every_on_a_static_role_calls_rotate_role_and_stops_when_denied,
    setup_script_configures_the_server_for_the_agent,
);
