//! The model's own tests: each drives it through the agent's real `Client` (so the shapes are
//! known to decode) or through the raw transport (to pin status codes and error texts).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};
use vault_rotator::credential::SecretValue;
use vault_rotator::vault::transport::{Request, Response, Transport, TransportError};
use vault_rotator::vault::{Client, VaultError};

use crate::model::{AppRole, Fault, Flavor, LeaseState, Model, Scope, TokenSpec};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn client(m: &Model) -> Client {
    Client::with_transport(Arc::new(m.clone()))
}

fn approle(ttl: u64, max: Option<u64>, renewable: bool) -> AppRole {
    let mut token = TokenSpec::new(SECS(ttl)).renewable(renewable).policy("app");
    if let Some(max) = max {
        token = token.max_ttl(SECS(max));
    }
    AppRole {
        role_name: "app".into(),
        role_id: "role-1".into(),
        secret_id: "secret-1".into(),
        token,
    }
}

/// A model with the AppRole above and a dynamic role `database/creds/app`.
fn setup(
    flavor: Flavor,
    token_ttl: u64,
    token_max: Option<u64>,
    lease_ttl: u64,
    lease_max: u64,
) -> Model {
    let m = Model::new(flavor, 7);
    m.set_approle(approle(token_ttl, token_max, true));
    m.add_dynamic_role("database", "app", SECS(lease_ttl), SECS(lease_max));
    m
}

async fn login(c: &Client) -> (SecretValue, String) {
    let env = c
        .login(
            "approle",
            &json!({"role_id": "role-1", "secret_id": "secret-1"}),
        )
        .await
        .expect("login");
    let auth = env.auth.expect("auth block");
    (auth.client_token.0, auth.accessor)
}

struct Cred {
    lease_id: String,
    username: String,
    password: String,
    lease_duration: u64,
}

async fn issue(c: &Client, token: &SecretValue) -> Cred {
    let env = c.read(token, "database/creds/app").await.expect("issue");
    Cred {
        lease_id: env.lease_id.clone(),
        username: env.data["username"].as_str().expect("username").to_string(),
        password: env.data["password"].as_str().expect("password").to_string(),
        lease_duration: env.lease_duration,
    }
}

async fn raw(
    m: &Model,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<Response, TransportError> {
    m.send(Request {
        method,
        path: path.into(),
        token: token.map(SecretValue::new),
        body,
    })
    .await
}

fn errors(resp: &Response) -> Vec<String> {
    let v: Value = serde_json::from_slice(&resp.body).expect("JSON error body");
    v["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn revoke_self_cascades_to_the_tokens_leases() {
    let m = setup(Flavor::Vault, 3600, None, 300, 0);
    let c = client(&m);
    let (token, accessor) = login(&c).await;
    let cred = issue(&c, &token).await;
    assert_eq!(cred.lease_duration, 300);
    assert!(cred.lease_id.starts_with("database/creds/app/"));
    assert!(cred.username.starts_with("v-app-"));
    assert_eq!(
        m.lease_parent(&cred.lease_id).as_deref(),
        Some(accessor.as_str())
    );
    assert!(m.credential_alive(&cred.username, &cred.password));
    assert!(!m.credential_alive(&cred.username, "wrong password"));

    sleep(SECS(10)).await;
    let at = Instant::now();
    c.revoke_self(&token).await.expect("revoke-self");
    assert_eq!(
        m.lease_state(&cred.lease_id),
        Some(LeaseState::Revoked { at })
    );
    assert!(!m.credential_alive(&cred.username, &cred.password));
    assert!(!m.token_alive(&accessor));

    // The token is dead now, and says so the way recent Vault does.
    let err = c.lookup_self(&token).await.expect_err("dead token");
    assert!(err.is_invalid_token(), "{err}");
    let trace = m.trace_text();
    assert!(
        trace.contains("revoked by revoke-self; revoked its lease(s)"),
        "{trace}"
    );
}

#[tokio::test(start_paused = true)]
async fn token_expiry_cascades_to_its_leases_at_the_expiry_instant() {
    let m = setup(Flavor::OpenBao, 20, None, 120, 0);
    let c = client(&m);
    let t0 = Instant::now();
    let (token, accessor) = login(&c).await;
    let cred = issue(&c, &token).await;
    let end = m.credential_end(&cred.username).expect("known user");
    assert_eq!(
        end.current_end,
        t0 + SECS(20),
        "the token ends before the lease"
    );
    assert_eq!(
        m.token_end(&accessor).expect("expiring token").hard_end,
        t0 + crate::model::SYSTEM_MAX_TTL
    );

    sleep(SECS(19)).await;
    assert!(m.credential_alive(&cred.username, &cred.password));
    // lookup-self reads whole seconds left, truncated: 0 in the last second.
    sleep(Duration::from_millis(500)).await;
    assert_eq!(c.lookup_self(&token).await.expect("lookup").ttl, 0);
    sleep(Duration::from_millis(500)).await;
    assert!(!m.credential_alive(&cred.username, &cred.password));
    assert_eq!(
        m.lease_state(&cred.lease_id),
        Some(LeaseState::Revoked { at: t0 + SECS(20) })
    );

    // OpenBao calls a dead token just "permission denied".
    let resp = raw(
        &m,
        Method::GET,
        "auth/token/lookup-self",
        Some(token.expose()),
        None,
    )
    .await
    .expect("answer");
    assert_eq!(
        (resp.status, errors(&resp)),
        (403, vec!["permission denied".to_string()])
    );
    // The lease went with the token.
    let renew = c
        .renew_lease(&login(&c).await.0, &cred.lease_id, SECS(60))
        .await
        .expect_err("lease gone");
    assert!(renew.is_lease_gone(), "{renew}");
    let trace = m.trace_text();
    assert!(
        trace.contains(&format!(
            "[    20.000] token {accessor} expired; revoked its lease(s) {}",
            cred.lease_id
        )),
        "{trace}"
    );
}

#[tokio::test(start_paused = true)]
async fn lease_renewals_are_capped_at_max_ttl_with_vaults_warning() {
    let m = setup(Flavor::Vault, 3600, None, 30, 50);
    let c = client(&m);
    let t0 = Instant::now();
    let (token, _) = login(&c).await;
    let cred = issue(&c, &token).await;
    assert_eq!(cred.lease_duration, 30);

    sleep(SECS(20)).await;
    let env = c
        .renew_lease(&token, &cred.lease_id, SECS(30))
        .await
        .expect("renew");
    assert_eq!((env.lease_duration, env.warnings().len()), (30, 0));

    sleep(SECS(20)).await;
    let env = c
        .renew_lease(&token, &cred.lease_id, SECS(30))
        .await
        .expect("renew");
    assert_eq!(env.lease_duration, 10);
    assert_eq!(
        env.warnings(),
        [
            r#"TTL of "30s" exceeded the effective max_ttl of "10s"; TTL value is capped accordingly"#
        ]
    );
    // Part-seconds left are rounded down for a lease (measured on OpenBao 2.7.2: 7.6 s left
    // granted 7 s with the warning "7s").
    sleep(Duration::from_millis(2_500)).await;
    let env = c
        .renew_lease(&token, &cred.lease_id, SECS(30))
        .await
        .expect("renew");
    assert_eq!(env.lease_duration, 7);
    assert_eq!(
        env.warnings(),
        [r#"TTL of "30s" exceeded the effective max_ttl of "7s"; TTL value is capped accordingly"#]
    );
    let end = m.credential_end(&cred.username).expect("known");
    assert_eq!(end.current_end, t0 + Duration::from_millis(49_500));

    sleep(SECS(7)).await;
    assert_eq!(
        m.lease_state(&cred.lease_id),
        Some(LeaseState::Expired {
            at: t0 + Duration::from_millis(49_500)
        })
    );
    let err = c
        .renew_lease(&token, &cred.lease_id, SECS(30))
        .await
        .expect_err("expired");
    assert!(err.is_lease_gone(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_tuned_mount_max_caps_renewals_and_expired_leases_answer_lease_expired_until_reaped() {
    let m = setup(Flavor::Vault, 3600, None, 30, 0);
    m.set_reap_delay(SECS(5));
    let c = client(&m);
    let (token, _) = login(&c).await;
    let cred = issue(&c, &token).await;
    m.tune_max_ttl("database", SECS(40));
    sleep(SECS(25)).await;
    let env = c
        .renew_lease(&token, &cred.lease_id, SECS(60))
        .await
        .expect("renew");
    assert_eq!(env.lease_duration, 15);
    sleep(SECS(16)).await;
    let err = c
        .renew_lease(&token, &cred.lease_id, SECS(60))
        .await
        .expect_err("expired");
    assert!(
        matches!(&err, VaultError::Status { status: 400, errors, .. } if errors == &["lease expired"]),
        "{err}"
    );
    sleep(SECS(5)).await;
    let err = c
        .renew_lease(&token, &cred.lease_id, SECS(60))
        .await
        .expect_err("reaped");
    assert!(
        matches!(&err, VaultError::Status { status: 400, errors, .. } if errors == &["lease not found"]),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn token_renewals_are_capped_like_the_real_server_and_non_renewable_ones_refused() {
    // What OpenBao 2.7.2 answered for an AppRole with token_ttl=20s, token_max_ttl=30s, renewed
    // with increment 60s at 12.3 s: 18 s granted, with this warning.
    let m = Model::new(Flavor::OpenBao, 1);
    m.set_approle(approle(20, Some(30), true));
    let c = client(&m);
    let (token, accessor) = login(&c).await;
    sleep(Duration::from_millis(12_300)).await;
    let env = c.renew_self(&token, SECS(60)).await.expect("renew-self");
    let auth = env.auth.as_ref().expect("auth");
    assert_eq!((auth.lease_duration, auth.renewable), (18, true));
    assert_eq!(auth.accessor, accessor);
    assert_eq!(
        env.warnings(),
        [r#"TTL of "1m" exceeded the effective max_ttl of "18s"; TTL value is capped accordingly"#]
    );
    let lookup = c.lookup_self(&token).await.expect("lookup");
    assert_eq!(
        (lookup.ttl, lookup.explicit_max_ttl, lookup.renewable),
        (18, 0, true)
    );

    let pre_made = m.create_token(TokenSpec::new(SECS(20)).renewable(false));
    let err = c
        .renew_self(&SecretValue::new(pre_made.value.clone()), SECS(60))
        .await
        .expect_err("not renewable");
    assert!(err.is_not_renewable(), "{err}");
    let lookup = c
        .lookup_self(&SecretValue::new(pre_made.value))
        .await
        .expect("lookup");
    assert_eq!((lookup.ttl, lookup.renewable), (20, false));
    let end = m.token_end(&pre_made.accessor).expect("expiring token");
    assert_eq!(
        end.hard_end, end.current_end,
        "a non-renewable token cannot outlive its TTL"
    );
}

#[tokio::test(start_paused = true)]
async fn static_roles_rotate_on_their_period_and_on_request() {
    let m = Model::new(Flavor::Vault, 3);
    m.set_trace_requests(true);
    m.set_approle(approle(3600, None, true));
    m.add_static_role("database", "svc", "svc-user", SECS(60));
    let c = client(&m);
    let t0 = Instant::now();
    let (token, _) = login(&c).await;
    let read = |c: Client, token: SecretValue| async move {
        let env = c
            .read(&token, "database/static-creds/svc")
            .await
            .expect("static creds");
        assert_eq!((env.lease_id.as_str(), env.lease_duration), ("", 0));
        (
            env.data["password"].as_str().expect("password").to_string(),
            env.data["ttl"].as_u64().expect("ttl"),
        )
    };
    let (p0, ttl) = read(c.clone(), token.clone()).await;
    assert_eq!(ttl, 60);
    assert_eq!(
        m.credential_end("svc-user").expect("static").current_end,
        t0 + SECS(60)
    );

    sleep(Duration::from_millis(59_500)).await;
    // ttl is rounded to the nearest second: 0.5 s before the rotation it still reads 1.
    assert_eq!(read(c.clone(), token.clone()).await, (p0.clone(), 1));
    sleep(Duration::from_millis(400)).await;
    assert_eq!(read(c.clone(), token.clone()).await, (p0.clone(), 0));
    assert!(m.credential_alive("svc-user", &p0));
    sleep(Duration::from_millis(100)).await;
    let (p1, ttl) = read(c.clone(), token.clone()).await;
    assert_ne!(p0, p1);
    assert_eq!(ttl, 60);
    assert!(
        !m.credential_alive("svc-user", &p0),
        "the old password dies at the rotation"
    );
    assert!(m.credential_alive("svc-user", &p1));

    sleep(SECS(10)).await;
    c.rotate_role(&token, "database/rotate-role/svc")
        .await
        .expect("rotate");
    let (p2, ttl) = read(c.clone(), token.clone()).await;
    assert_ne!(p1, p2);
    assert_eq!(ttl, 60, "a manual rotation restarts the period");
    assert_eq!(m.static_rotations("database", "svc"), 2);

    // Denied by policy, and impossible with the database down (the rotation then waits).
    m.deny("app", "database/rotate-role/");
    let err = c
        .rotate_role(&token, "database/rotate-role/svc")
        .await
        .expect_err("denied");
    assert!(err.is_forbidden() && !err.is_invalid_token(), "{err}");
    m.set_db_down(true);
    sleep(SECS(70)).await;
    assert!(
        m.credential_alive("svc-user", &p2),
        "no rotation while the database is down"
    );
    m.set_db_down(false);
    assert!(
        !m.credential_alive("svc-user", &p2),
        "the overdue rotation happens on recovery"
    );
    assert_eq!(m.static_rotations("database", "svc"), 3);
    let trace = m.trace_text();
    for expected in [
        "[    60.000] static role database/svc rotated on schedule (user svc-user, rotation 1",
        "[    70.000] request POST database/rotate-role/svc by acc",
        "rotated by rotate-role",
        "[   140.000] fault: database back up",
        "[   140.000] static role database/svc rotated on schedule (user svc-user, rotation 3",
    ] {
        assert!(
            trace.contains(expected),
            "{expected:?} missing in:\n{trace}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn forbidden_texts_differ_by_flavor_and_policy_denials_are_not_invalid_tokens() {
    for (flavor, dead) in [
        (
            Flavor::Vault,
            "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n",
        ),
        (Flavor::OpenBao, "permission denied"),
    ] {
        let m = setup(flavor, 3600, None, 60, 0);
        let c = client(&m);
        for token in [None, Some("hvs.unknown")] {
            let resp = raw(&m, Method::GET, "database/creds/app", token, None)
                .await
                .expect("answer");
            assert_eq!(
                (resp.status, errors(&resp)),
                (403, vec![dead.to_string()]),
                "{flavor:?}"
            );
        }
        let (token, _) = login(&c).await;
        let cred = issue(&c, &token).await;
        m.deny("default", "sys/leases/revoke");
        let resp = raw(
            &m,
            Method::PUT,
            "sys/leases/revoke",
            Some(token.expose()),
            Some(json!({"lease_id": cred.lease_id})),
        )
        .await
        .expect("answer");
        assert_eq!(
            (resp.status, errors(&resp)),
            (
                403,
                vec!["1 error occurred:\n\t* permission denied\n\n".to_string()]
            ),
            "{flavor:?}"
        );
        assert_eq!(m.lease_state(&cred.lease_id), Some(LeaseState::Live));
        m.allow("default", "sys/leases/revoke");
        let resp = raw(
            &m,
            Method::PUT,
            "sys/leases/revoke",
            Some(token.expose()),
            Some(json!({"lease_id": cred.lease_id})),
        )
        .await
        .expect("answer");
        assert_eq!((resp.status, resp.body.len()), (204, 0));
        assert!(matches!(
            m.lease_state(&cred.lease_id),
            Some(LeaseState::Revoked { .. })
        ));
        // A deny for one token only.
        m.deny(
            Scope::Token(m.lease_parent(&cred.lease_id).expect("parent")),
            "database/",
        );
        let err = c
            .read(&token, "database/creds/app")
            .await
            .expect_err("denied");
        assert!(err.is_forbidden() && !err.is_invalid_token(), "{err}");
        let (other, _) = login(&c).await;
        issue(&c, &other).await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_injected_fault_answers_its_count_with_retry_after_then_stops() {
    let m = setup(Flavor::Vault, 3600, None, 60, 0);
    let c = client(&m);
    let (token, _) = login(&c).await;
    m.inject(Fault::new(429, 2).retry_after("7").on("database/"));
    for _ in 0..2 {
        let err = c.read(&token, "database/creds/app").await.expect_err("429");
        assert_eq!(
            (err.status(), err.retry_after()),
            (Some(429), Some(SECS(7)))
        );
        assert!(err.is_transient());
        assert!(
            err.to_string().contains("rate limit quota exceeded"),
            "{err}"
        );
        // Other paths are untouched.
        c.lookup_self(&token).await.expect("lookup");
    }
    issue(&c, &token).await;
    let statuses: Vec<_> = m
        .requests()
        .iter()
        .filter(|r| r.path == "database/creds/app")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [Some(429), Some(429), Some(200)]);
    let n = m.requests().len();
    assert_eq!(m.requests_from(n - 1)[0].path, "database/creds/app");
    assert!(m.requests_from(n).is_empty() && m.requests_from(n + 5).is_empty());
    assert_eq!(m.issued().len(), 1);

    m.set_sealed(true);
    let err = c.lookup_self(&token).await.expect_err("sealed");
    assert!(err.is_sealed(), "{err}");
    m.set_sealed(false);
    m.inject(Fault::new(503, 1).retry_after("Wed, 21 Oct 2015 07:28:00 GMT"));
    let resp = raw(
        &m,
        Method::GET,
        "auth/token/lookup-self",
        Some(token.expose()),
        None,
    )
    .await
    .expect("answer");
    assert_eq!(resp.status, 503);
    assert_eq!(
        resp.retry_after.as_deref(),
        Some("Wed, 21 Oct 2015 07:28:00 GMT")
    );
}

#[tokio::test(start_paused = true)]
async fn latency_delays_answers_and_past_the_timeout_loses_them_after_serving() {
    let m = setup(Flavor::Vault, 3600, None, 60, 0);
    m.set_client_timeout(SECS(5));
    let c = client(&m);
    let (token, _) = login(&c).await;

    m.set_latency(SECS(2));
    let before = Instant::now();
    issue(&c, &token).await;
    assert_eq!(before.elapsed(), SECS(2));

    // Slower than the client waits: a timeout after 5 s, but Vault did issue (a lost answer).
    m.set_latency(SECS(10));
    let before = Instant::now();
    let err = c
        .read(&token, "database/creds/app")
        .await
        .expect_err("timeout");
    assert_eq!(before.elapsed(), SECS(5));
    assert!(
        matches!(err, VaultError::Transport { timeout: true, .. }),
        "{err}"
    );
    assert_eq!(m.issued().len(), 2);
    let last = m.requests().last().cloned().expect("recorded");
    assert_eq!((last.status, last.served), (None, Some(200)));
    assert_eq!(last.done_at, last.at + SECS(5));

    // Down: refused at once, nothing served.
    m.set_latency(Duration::ZERO);
    m.set_down(true);
    let before = Instant::now();
    let err = c
        .read(&token, "database/creds/app")
        .await
        .expect_err("down");
    assert_eq!(before.elapsed(), Duration::ZERO);
    assert!(
        matches!(&err, VaultError::Transport { timeout: false, reason, .. } if reason.contains("Connection refused")),
        "{err}"
    );
    assert_eq!(m.issued().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_database_outage_fails_issues_and_renewals() {
    let m = setup(Flavor::OpenBao, 3600, None, 60, 0);
    let c = client(&m);
    let (token, _) = login(&c).await;
    let cred = issue(&c, &token).await;
    m.set_db_down(true);
    let err = c
        .read(&token, "database/creds/app")
        .await
        .expect_err("db down");
    assert_eq!(err.status(), Some(500));
    assert!(err.is_transient());
    assert!(
        err.to_string().contains("unable to start transaction"),
        "{err}"
    );
    // A real server touches the database on renewal too (it moves VALID UNTIL).
    let err = c
        .renew_lease(&token, &cred.lease_id, SECS(60))
        .await
        .expect_err("blocked");
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains("failed to renew entry"), "{err}");
    assert!(!err.is_lease_gone() && !err.is_transient());
    m.set_db_down_blocks_renew(false);
    c.renew_lease(&token, &cred.lease_id, SECS(60))
        .await
        .expect("a plugin that does not touch the database renews");
    m.set_db_down(false);
    issue(&c, &token).await;
    let err = c
        .read(&token, "database/creds/nope")
        .await
        .expect_err("unknown role");
    assert!(
        matches!(&err, VaultError::Status { status: 400, errors, .. } if errors == &["unknown role: nope"]),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn kv_versions_mount_info_and_bad_logins() {
    let m = Model::new(Flavor::OpenBao, 5);
    m.set_approle(approle(3600, None, true));
    let c = client(&m);
    let err = c
        .login(
            "approle",
            &json!({"role_id": "role-1", "secret_id": "wrong"}),
        )
        .await
        .expect_err("bad secret_id");
    assert!(
        matches!(&err, VaultError::Status { status: 400, errors, .. } if errors == &["invalid role or secret ID"]),
        "{err}"
    );
    assert_eq!(m.logins(), 0);
    let (token, _) = login(&c).await;
    assert_eq!(m.logins(), 1);

    let missing = raw(
        &m,
        Method::GET,
        "secret/data/app",
        Some(token.expose()),
        None,
    )
    .await
    .expect("answer");
    assert_eq!((missing.status, errors(&missing).len()), (404, 0));
    let mut v = serde_json::Map::new();
    v.insert("username".into(), json!("kvuser"));
    v.insert("password".into(), json!("one"));
    assert_eq!(m.kv_put("secret/app", v.clone()), 1);
    v.insert("password".into(), json!("two"));
    assert_eq!(m.kv_put("secret/app", v.clone()), 2);
    let env = c.read(&token, "secret/data/app").await.expect("kv v2");
    assert_eq!(env.data["data"]["password"], "two");
    assert_eq!(env.data["metadata"]["version"], 2);
    assert!(m.credential_alive("kvuser", "two") && !m.credential_alive("kvuser", "one"));
    m.kv_put("kv/app", v);
    let env = c.read(&token, "kv/app").await.expect("kv v1");
    assert_eq!(env.data["password"], "two");

    let info = c
        .mount_info(&token, "secret/app")
        .await
        .expect("mount info");
    assert_eq!(
        (info.mount_type.as_str(), info.path.as_str()),
        ("kv", "secret/")
    );
    assert_eq!(info.options.get("version"), Some(&json!("2")));
    let info = c
        .mount_info(&token, "database/creds/app")
        .await
        .expect("mount info");
    assert_eq!(
        (info.mount_type.as_str(), info.options.len()),
        ("database", 0)
    );
    let err = c
        .mount_info(&token, "nosuch/path")
        .await
        .expect_err("unknown mount");
    assert!(
        err.to_string()
            .contains("preflight capability check returned 403"),
        "{err}"
    );
    let resp = raw(&m, Method::GET, "nosuch/path", Some(token.expose()), None)
        .await
        .expect("answer");
    assert_eq!(
        errors(&resp),
        ["no handler for route \"nosuch/path\". route entry not found."]
    );
}

#[tokio::test(start_paused = true)]
async fn a_seed_replays_exactly() {
    async fn run(seed: u64) -> (Vec<String>, String) {
        let m = Model::new(Flavor::Vault, seed);
        m.set_approle(approle(30, Some(100), true));
        m.add_dynamic_role("database", "app", SECS(20), SECS(60));
        let c = client(&m);
        let (token, _) = login(&c).await;
        let cred = issue(&c, &token).await;
        sleep(SECS(15)).await;
        c.renew_self(&token, SECS(30)).await.expect("renew");
        c.renew_lease(&token, &cred.lease_id, SECS(20))
            .await
            .expect("renew");
        sleep(SECS(200)).await;
        (m.trace(), format!("{}{}", token.expose(), cred.password))
    }
    let start = Instant::now();
    let (a, secret_a) = run(42).await;
    // The trace is stamped relative to each model's start, so a later run reads the same.
    let (b, secret_b) = run(42).await;
    assert_eq!(a, b);
    assert_eq!(secret_a, secret_b);
    let (_, secret_c) = run(43).await;
    assert_ne!(secret_a, secret_c);
    assert!(start.elapsed() >= SECS(600));
    let text = a.join("\n");
    for expected in [
        "[     0.000] login #1 (approle app)",
        "[    15.000] lease database/creds/app/",
        "granted 20s",
        "[    35.000] lease database/creds/app/",
        "expired (user v-app-",
        "[    45.000] token acc",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
    }
}
