//! Black-box tests of the agent's lifecycle: SIGHUP reload, --revoke-on-exit, --once bounds,
//! JWT auth, OpenBao's flavour of the API, and faults an operator can make through the
//! standard API (a policy change, a tuned-down mount max TTL, a broken role, a seal). Those
//! run on devvault and on a real OpenBao dev server (`matrix!`).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::json;
use testkit::devvault::DevVault;

const SEC: fn(u64) -> Duration = Duration::from_secs;

async fn sighup_adds_a_secret_and_keeps_the_unchanged_one(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "1h", "24h").await;
    stack.dynamic_role("reporting", "1h", "24h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let (rf, sf) = approle_files(dir.path(), &role_id, &secret_id);
    let db = dir.path().join("db.json");
    let rep = dir.path().join("reporting.json");
    let config = dir.path().join("agent.toml");
    let base = format!(
        "[vault]\naddr = \"{}\"\n[auth]\nmethod = \"approle\"\nrole_id_file = \"{rf}\"\nsecret_id_file = \"{sf}\"\n\
         [[secret]]\nname = \"db\"\npath = \"database/creds/app\"\noutput = \"{}\"\nrevoke_grace = \"1s\"\n",
        stack.addr(),
        db.display()
    );
    std::fs::write(&config, &base).unwrap();
    let mut agent = AgentProc::spawn(&["--config", config.to_str().unwrap()], &[], dir.path());
    agent.wait_ready(SEC(15)).await;
    let first = read_cred(&db).unwrap();
    std::fs::write(
        &config,
        format!("{base}[[secret]]\nname = \"reporting\"\npath = \"database/creds/reporting\"\noutput = \"{}\"\nformat = \"env\"\n", rep.display()),
    )
    .unwrap();
    agent.signal("HUP");
    eventually(SEC(15), "the added secret's file", || {
        let rep = rep.clone();
        async move { rep.exists().then_some(()) }
    })
    .await;
    agent.wait_ready(SEC(10)).await;
    let after = read_cred(&db).unwrap();
    assert_eq!(
        s(&first, "username"),
        s(&after, "username"),
        "unchanged secret keeps its credential"
    );
    assert_eq!(
        stack.pg_dynamic_roles().await.len(),
        2,
        "one user per secret, no re-issue"
    );
    // Changing a secret restarts it: a new credential, and the old one revoked after its grace
    // rather than left behind until its TTL.
    std::fs::write(
        &config,
        base.replace(
            "revoke_grace = \"1s\"",
            "revoke_grace = \"1s\"\nfile_mode = \"0440\"",
        ),
    )
    .unwrap();
    agent.signal("HUP");
    let replaced = eventually(SEC(15), "the changed secret's new credential", || {
        let db = db.clone();
        let old = s(&first, "username");
        async move { read_cred(&db).filter(|c| s(c, "username") != old) }
    })
    .await;
    eventually(SEC(15), "the retired credential revoked", || {
        let stack = &stack;
        let user = s(&first, "username");
        async move { (!stack.pg_role_exists(&user).await).then_some(()) }
    })
    .await;
    stack
        .pg_login(&s(&replaced, "username"), &s(&replaced, "password"))
        .await
        .unwrap();
    // An invalid config on SIGHUP keeps the running one.
    std::fs::write(&config, "[[secret]]\nnonsense = 1\n").unwrap();
    agent.signal("HUP");
    tokio::time::sleep(SEC(1)).await;
    assert_eq!(agent.status("/health").await, Some(200));
    assert!(
        agent.logs().contains("keeping the running one"),
        "{}",
        agent.logs()
    );
    assert_eq!(agent.stop(), 0);
}

async fn revoke_on_exit_drops_the_user_and_plain_exit_keeps_it(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "1h", "24h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut plain = AgentProc::approle(&stack, dir.path(), &role_id, &secret_id, &out, &[]);
    plain.wait_ready(SEC(15)).await;
    let kept = s(&read_cred(&out).unwrap(), "username");
    assert_eq!(plain.stop(), 0);
    assert!(
        stack.pg_role_exists(&kept).await,
        "without --revoke-on-exit the credential outlives the agent"
    );

    let mut agent = AgentProc::approle(
        &stack,
        dir.path(),
        &role_id,
        &secret_id,
        &out,
        &["--revoke-on-exit"],
    );
    agent.wait_ready(SEC(15)).await;
    let user = s(&read_cred(&out).unwrap(), "username");
    assert_ne!(user, kept);
    assert_eq!(agent.stop(), 0);
    assert!(
        !stack.pg_role_exists(&user).await,
        "revoked on exit: {}",
        agent.logs()
    );
    // The file keeps the last credential: the agent never deletes it.
    assert!(out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_gives_up_within_its_bound_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("t");
    std::fs::write(&token, "hvs.whatever").unwrap();
    let out = dir.path().join("db.json");
    let port = free_port();
    let start = std::time::Instant::now();
    let result = std::process::Command::new(env!("CARGO_BIN_EXE_vault-rotator"))
        .args([
            "--vault-addr",
            &format!("http://127.0.0.1:{port}"),
            "--token-file",
            token.to_str().unwrap(),
            "--secret",
            "database/creds/app",
            "--kind",
            "dynamic",
            "--output",
            out.to_str().unwrap(),
            "--once",
            "--once-timeout",
            "3s",
            "--backoff-min",
            "200ms",
            "--backoff-max",
            "1s",
        ])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(result.status.code(), Some(1));
    assert!(
        start.elapsed() < SEC(20),
        "bounded: took {:?}",
        start.elapsed()
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("--once"), "{stderr}");
    assert!(!out.exists(), "nothing written");
}

async fn jwt_auth_logs_in_with_bound_audience_and_subject(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "1h", "24h").await;
    stack
        .api("POST", "sys/auth/jwt", json!({"type": "jwt"}))
        .await;
    stack
        .api("POST", "auth/jwt/config", json!({"jwt_validation_pubkeys": [include_str!("fixtures/k8s-test-pub.pem")], "bound_issuer": "https://ci.example"}))
        .await;
    stack
        .api(
            "POST",
            "auth/jwt/role/deployer",
            json!({"role_type": "jwt", "bound_audiences": ["vault"], "bound_subject": "repo:team/app", "user_claim": "sub", "token_policies": ["app"], "token_ttl": "1h"}),
        )
        .await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": "https://ci.example", "sub": "repo:team/app", "aud": "vault", "iat": now, "exp": now + 600});
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("fixtures/k8s-test-key.pem"))
        .unwrap();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jwt_file = dir.path().join("jwt");
    std::fs::write(&jwt_file, &jwt).unwrap();
    let out = dir.path().join("db.json");
    let mut agent = AgentProc::spawn(
        &[
            "--vault-addr",
            stack.addr(),
            "--auth",
            "jwt",
            "--role",
            "deployer",
            "--jwt-file",
            jwt_file.to_str().unwrap(),
            "--secret",
            "database/creds/app",
            "--output",
            out.to_str().unwrap(),
        ],
        &[],
        dir.path(),
    );
    agent.wait_ready(SEC(15)).await;
    let cred = read_cred(&out).unwrap();
    stack
        .pg_login(&s(&cred, "username"), &s(&cred, "password"))
        .await
        .unwrap();
    assert!(!agent.logs().contains(&jwt), "the JWT reached the logs");
    assert_eq!(agent.stop(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_against_openbao_flavour_with_bare_permission_denied() {
    // OpenBao answers a dead token with a bare "permission denied" (no "invalid token"), has no
    // mount_type, and issues s. tokens. Run the token-revocation scenario against it.
    let pg = testkit::pg::PgCluster::start();
    let vault = DevVault::start(&["--flavor", "openbao"]);
    let stack = Stack::with(vault, pg).await;
    stack.dynamic_role("app", "3s", "1h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut agent = AgentProc::approle(&stack, dir.path(), &role_id, &secret_id, &out, &[]);
    agent.wait_ready(SEC(15)).await;
    let first = read_cred(&out).unwrap();
    let tokens = stack
        .control("GET", "tokens", serde_json::Value::Null)
        .await;
    for t in tokens["tokens"].as_array().unwrap() {
        if t["policies"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x == "app"))
        {
            stack
                .control("POST", "revoke-token", json!({"accessor": t["accessor"]}))
                .await;
        }
    }
    let second = eventually(SEC(15), "a new credential after the token died", || {
        let out = out.clone();
        let old = s(&first, "username");
        async move { read_cred(&out).filter(|c| s(c, "username") != old) }
    })
    .await;
    stack
        .pg_login(&s(&second, "username"), &s(&second, "password"))
        .await
        .unwrap();
    assert_eq!(agent.stop(), 0);
}

/// The agent's `app` policy without `database/creds/*`: issuing is denied, the rest allowed.
const POLICY_WITHOUT_CREDS: &str = r#"
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
"#;

/// An agent logging in with AppRole and writing `database/creds/app` to `db.json` in `dir`.
async fn approle_agent(stack: &Stack, dir: &std::path::Path, extra: &[&str]) -> AgentProc {
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let out = dir.join("db.json");
    let mut agent = AgentProc::approle(stack, dir, &role_id, &secret_id, &out, extra);
    agent.wait_ready(SEC(15)).await;
    agent
}

fn logins(agent: &AgentProc) -> usize {
    agent.logs().matches("logged in to Vault").count()
}

/// Waits for a credential in `out` other than `old_user`'s.
async fn new_credential(out: &std::path::Path, old_user: &str, what: &str) -> serde_json::Value {
    eventually(SEC(20), what, || {
        let out = out.to_path_buf();
        let old = old_user.to_string();
        async move { read_cred(&out).filter(|c| s(c, "username") != old) }
    })
    .await
}

async fn policy_change_denies_issue_and_the_last_good_credential_stays(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut agent = approle_agent(&stack, dir.path(), &["--revoke-grace", "1s"]).await;
    let first = read_cred(&out).unwrap();
    stack
        .api(
            "PUT",
            "sys/policies/acl/app",
            json!({ "policy": POLICY_WITHOUT_CREDS }),
        )
        .await;
    agent.signal("USR1");
    tokio::time::sleep(SEC(5)).await;
    // Denied: the file keeps the working credential and the agent stays ready.
    assert!(
        agent.logs().contains("permission denied"),
        "{}",
        agent.logs()
    );
    assert_eq!(
        read_cred(&out).unwrap(),
        first,
        "the file kept the last good credential"
    );
    stack
        .pg_login(&s(&first, "username"), &s(&first, "password"))
        .await
        .expect("the kept credential still logs in");
    assert_eq!(agent.status("/ready").await, Some(200), "{}", agent.logs());
    // The policy is put back: the next rotation goes through.
    stack
        .api(
            "PUT",
            "sys/policies/acl/app",
            json!({ "policy": APP_POLICY }),
        )
        .await;
    agent.signal("USR1");
    let second = new_credential(
        &out,
        &s(&first, "username"),
        "a credential once allowed again",
    )
    .await;
    stack
        .pg_login(&s(&second, "username"), &s(&second, "password"))
        .await
        .unwrap();
    assert_eq!(agent.stop(), 0);
}

async fn policy_denial_is_not_retried_as_if_transient(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = approle_agent(&stack, dir.path(), &[]).await;
    stack
        .api(
            "PUT",
            "sys/policies/acl/app",
            json!({ "policy": POLICY_WITHOUT_CREDS }),
        )
        .await;
    let before = stack.request_count("database/creds/").await;
    agent.signal("USR1");
    tokio::time::sleep(SEC(5)).await;
    // Invariant 4: a denial is asked once (twice with the dead-token check of a bare 403),
    // not retried on the transient backoff, which would ask 6 times or more in 5 s.
    let asked = stack.request_count("database/creds/").await - before;
    assert!(
        (1..=3).contains(&asked),
        "asked {asked} times in 5 s; logs:\n{}",
        agent.logs()
    );
    // ...and a denial is no reason to log in again (the token is fine).
    assert_eq!(logins(&agent), 1, "one login; logs:\n{}", agent.logs());
    assert_eq!(agent.stop(), 0);
}

async fn mount_max_ttl_tuned_down_is_met_by_reissuing_in_time(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "4s", "1h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut agent = approle_agent(&stack, dir.path(), &["--revoke-grace", "1s"]).await;
    // An operator caps every lease of the mount at 10 s: renewals come back short, and the
    // agent must issue the next credential before the cap, not after.
    stack.tune_max_ttl("database", "10s").await;
    let mut users = std::collections::BTreeSet::new();
    let start = std::time::Instant::now();
    while start.elapsed() < SEC(24) {
        let cred = read_cred(&out).unwrap();
        users.insert(s(&cred, "username"));
        stack
            .pg_login(&s(&cred, "username"), &s(&cred, "password"))
            .await
            .unwrap_or_else(|e| panic!("{e}; logs:\n{}", agent.logs()));
        assert_eq!(agent.status("/ready").await, Some(200), "{}", agent.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(users.len() >= 2, "re-issued under the cap: {users:?}");
    assert!(users.len() <= 6, "no flood of credentials: {users:?}");
    assert_eq!(agent.stop(), 0);
}

async fn broken_role_sql_fails_issue_keeps_the_credential_and_recovers(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut agent = approle_agent(&stack, dir.path(), &["--revoke-grace", "1s"]).await;
    let first = read_cred(&out).unwrap();
    // The role's SQL breaks: the database refuses it, and Vault answers the issue with 500.
    stack
        .api(
            "POST",
            "database/roles/app",
            json!({"db_name": "pg", "creation_statements": ["CREATE ROLEX \"{{name}}\";"],
                   "default_ttl": "1h", "max_ttl": "24h"}),
        )
        .await;
    agent.signal("USR1");
    tokio::time::sleep(SEC(4)).await;
    assert_eq!(
        read_cred(&out).unwrap(),
        first,
        "the file kept the last good credential"
    );
    assert_eq!(agent.status("/ready").await, Some(200), "{}", agent.logs());
    assert_eq!(
        stack.pg_dynamic_roles().await,
        vec![s(&first, "username")],
        "no half-made users"
    );
    // Fixed: the agent's retries go through.
    stack.dynamic_role("app", "1h", "24h").await;
    let second = new_credential(
        &out,
        &s(&first, "username"),
        "a credential once the SQL works",
    )
    .await;
    stack
        .pg_login(&s(&second, "username"), &s(&second, "password"))
        .await
        .unwrap();
    assert_eq!(
        logins(&agent),
        1,
        "a failed issue is no reason to log in again"
    );
    assert_eq!(agent.stop(), 0);
}

async fn sealed_server_keeps_the_file_and_the_agent_recovers_after_unseal(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "4s", "1h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut agent = approle_agent(&stack, dir.path(), &["--revoke-grace", "1s"]).await;
    let first = read_cred(&out).unwrap();
    stack.seal().await;
    // Renewals fail while sealed; once the credential's end has passed, /ready says so
    // (ready implies valid), but the file is never removed.
    eventually(SEC(15), "/ready 503 after the sealed lease's end", || {
        let agent = &agent;
        async move { (agent.status("/ready").await == Some(503)).then_some(()) }
    })
    .await;
    assert!(out.exists(), "the file stays while Vault is sealed");
    assert_eq!(
        agent.status("/health").await,
        Some(200),
        "health never depends on Vault"
    );
    // /ready fails a second before the lease's real end (a second is kept in hand for
    // Vault's rounding): stay sealed until the lease is surely gone in Vault too.
    tokio::time::sleep(SEC(2)).await;
    stack.unseal().await;
    agent.wait_ready(SEC(30)).await;
    let now = read_cred(&out).unwrap();
    stack
        .pg_login(&s(&now, "username"), &s(&now, "password"))
        .await
        .unwrap_or_else(|e| panic!("{e}; logs:\n{}", agent.logs()));
    assert_ne!(
        s(&now, "username"),
        s(&first, "username"),
        "the expired lease was replaced"
    );
    assert_eq!(agent.stop(), 0);
}

matrix!(
    sighup_adds_a_secret_and_keeps_the_unchanged_one,
    revoke_on_exit_drops_the_user_and_plain_exit_keeps_it,
    jwt_auth_logs_in_with_bound_audience_and_subject,
    policy_change_denies_issue_and_the_last_good_credential_stays,
    mount_max_ttl_tuned_down_is_met_by_reissuing_in_time,
    broken_role_sql_fails_issue_keeps_the_credential_and_recovers,
    sealed_server_keeps_the_file_and_the_agent_recovers_after_unseal,
    // Found while bringing real OpenBao into the loop (issue 13, failure 3): a denial was
    // retried on the transient backoff, each time after a new login.
    policy_denial_is_not_retried_as_if_transient,
);
