//! Black-box tests of authentication: Kubernetes auth with a rotating JWT file, tokens and
//! leases revoked out of band, and re-login that does not mint new database users.
//!
//! Kubernetes auth and the injected 403 stay on devvault: OpenBao's kubernetes method asks a
//! real cluster's TokenReview API, and the 403 is a devvault fault. The out-of-band
//! revocations are made through the standard API and run on real OpenBao too (`matrix!`).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::json;

const SEC: fn(u64) -> Duration = Duration::from_secs;

/// A service-account JWT like kubelet projects, signed with the test-only key.
fn sa_jwt(name: &str, namespace: &str, valid_for: Duration) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "aud": ["vault"],
        "iat": now,
        "nbf": now,
        "exp": now + valid_for.as_secs(),
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": "4ce3a724-ddad-4cb3-ae46-2f97fc420a3d"}
        }
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

async fn kubernetes_auth(stack: &Stack, token_ttl: &str) {
    stack
        .api("POST", "sys/auth/kubernetes", json!({"type": "kubernetes"}))
        .await;
    stack
        .api(
            "POST",
            "auth/kubernetes/config",
            json!({
                "kubernetes_host": "https://kubernetes.default.svc",
                "pem_keys": [include_str!("fixtures/k8s-test-pub.pem")],
            }),
        )
        .await;
    stack
        .api(
            "POST",
            "auth/kubernetes/role/app",
            json!({
                "bound_service_account_names": ["app"],
                "bound_service_account_namespaces": ["default"],
                "token_policies": ["app"],
                "token_ttl": token_ttl,
                "token_max_ttl": token_ttl,
            }),
        )
        .await;
}

fn count(logs: &str, needle: &str) -> usize {
    logs.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_auth_rereads_a_rotated_jwt_file() {
    let stack = Stack::start().await;
    stack.dynamic_role("app", "1h", "24h").await;
    // Tokens live 6 s and cannot be renewed past that: the agent logs in again every few
    // seconds. (4 s left under a second between a capped renewal and the token's end, less
    // the second kept in hand for Vault's rounding: too tight on a loaded CI machine.)
    kubernetes_auth(&stack, "6s").await;
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("token");
    // The first JWT is valid for 5 s only; unless the file is re-read, later logins fail.
    std::fs::write(&jwt, sa_jwt("app", "default", SEC(5))).unwrap();
    let out = dir.path().join("db.json");
    let mut agent = AgentProc::spawn(
        &[
            "--vault-addr",
            stack.addr(),
            "--auth",
            "kubernetes",
            "--role",
            "app",
            "--jwt-file",
            jwt.to_str().unwrap(),
            "--secret",
            "database/creds/app",
            "--output",
            out.to_str().unwrap(),
            "--revoke-grace",
            "1s",
        ],
        &[],
        dir.path(),
    );
    agent.wait_ready(SEC(15)).await;
    // kubelet rotates the projected token.
    std::fs::write(&jwt, sa_jwt("app", "default", SEC(3600))).unwrap();
    let start = std::time::Instant::now();
    while start.elapsed() < SEC(18) {
        assert_eq!(
            agent.status("/ready").await,
            Some(200),
            "ready throughout; logs:\n{}",
            agent.logs()
        );
        let cred = read_cred(&out).unwrap();
        stack
            .pg_login(&s(&cred, "username"), &s(&cred, "password"))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.logs()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let logs = agent.logs();
    assert!(count(&logs, "logged in to Vault") >= 4, "{logs}");
    assert_eq!(
        count(&logs, "auth kubernetes"),
        0,
        "no login failed: {logs}"
    );
    assert_eq!(agent.stop(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_token_refused_as_invalid_is_retried_without_a_login_or_a_new_user() {
    let stack = Stack::start().await;
    // A lease long enough that a slow machine still renews it after the refusal.
    stack.dynamic_role("app", "8s", "1h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut agent = AgentProc::approle(&stack, dir.path(), &role_id, &secret_id, &out, &[]);
    agent.wait_ready(SEC(15)).await;
    let first = read_cred(&out).unwrap();
    // The next renewal is refused as if the token had died, but lookup-self shows it alive
    // (as after a standby that had not caught up): the renewal is retried, with no login.
    stack
        .control(
            "POST",
            "faults",
            json!({"path_prefix": "/v1/sys/leases/renew", "count": 1, "status": 403,
                   "body": "{\"errors\":[\"2 errors occurred:\\n\\t* permission denied\\n\\t* invalid token\\n\\n\"]}"}),
        )
        .await;
    tokio::time::sleep(SEC(10)).await;
    let logs = agent.logs();
    assert_eq!(
        count(&logs, "logged in to Vault"),
        1,
        "no new login for a live token: {logs}"
    );
    let now = read_cred(&out).unwrap();
    assert_eq!(
        s(&first, "username"),
        s(&now, "username"),
        "the lease survived: same user"
    );
    assert_eq!(
        stack.pg_dynamic_roles().await.len(),
        1,
        "no new database user"
    );
    stack
        .pg_login(&s(&now, "username"), &s(&now, "password"))
        .await
        .unwrap();
    assert_eq!(agent.stop(), 0);
}

async fn token_revoked_out_of_band_is_replaced_and_so_is_its_dead_credential(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "3s", "1h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut agent = AgentProc::approle(&stack, dir.path(), &role_id, &secret_id, &out, &[]);
    agent.wait_ready(SEC(15)).await;
    let first = read_cred(&out).unwrap();
    // Revoke the agent's token out of band, through the token API as an operator would:
    // Vault revokes its leases with it, which drops the database user.
    let accessors = stack.token_accessors_with_policy("app").await;
    assert_eq!(accessors.len(), 1, "one agent token: {accessors:?}");
    stack.revoke_accessor(&accessors[0]).await;
    eventually(SEC(10), "old user dropped with its token", || {
        let stack = &stack;
        let user = s(&first, "username");
        async move { (!stack.pg_role_exists(&user).await).then_some(()) }
    })
    .await;
    let second = eventually(SEC(15), "a new credential", || {
        let out = out.clone();
        let old = s(&first, "username");
        async move { read_cred(&out).filter(|c| s(c, "username") != old) }
    })
    .await;
    stack
        .pg_login(&s(&second, "username"), &s(&second, "password"))
        .await
        .unwrap();
    tokio::time::sleep(SEC(4)).await;
    // Exactly one replacement: no storm of logins or users.
    let logs = agent.logs();
    assert_eq!(count(&logs, "logged in to Vault"), 2, "{logs}");
    assert_eq!(stack.pg_dynamic_roles().await.len(), 1);
    assert_eq!(agent.stop(), 0);
}

async fn lease_revoked_out_of_band_is_replaced_without_a_new_login(v: Vault) {
    let stack = Stack::start_on(v).await;
    stack.dynamic_role("app", "3s", "1h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut agent = AgentProc::approle(&stack, dir.path(), &role_id, &secret_id, &out, &[]);
    agent.wait_ready(SEC(15)).await;
    let first = read_cred(&out).unwrap();
    // An operator revokes the lease: the database user is dropped at once, and the agent's
    // next renewal (within about 2 s) finds the lease gone.
    let leases = stack.lease_ids("database/creds/app/").await;
    assert_eq!(leases.len(), 1, "{leases:?}");
    stack.revoke_lease(&leases[0]).await;
    assert!(!stack.pg_role_exists(&s(&first, "username")).await);
    let second = eventually(SEC(15), "a new credential after the revocation", || {
        let out = out.clone();
        let old = s(&first, "username");
        async move { read_cred(&out).filter(|c| s(c, "username") != old) }
    })
    .await;
    stack
        .pg_login(&s(&second, "username"), &s(&second, "password"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.logs()));
    tokio::time::sleep(SEC(4)).await;
    // One replacement, and the token was fine: no second login, no extra users.
    let logs = agent.logs();
    assert_eq!(count(&logs, "logged in to Vault"), 1, "{logs}");
    assert_eq!(stack.pg_dynamic_roles().await.len(), 1, "{logs}");
    assert_eq!(agent.status("/ready").await, Some(200));
    assert_eq!(agent.stop(), 0);
}

matrix!(
    token_revoked_out_of_band_is_replaced_and_so_is_its_dead_credential,
    lease_revoked_out_of_band_is_replaced_without_a_new_login,
);
