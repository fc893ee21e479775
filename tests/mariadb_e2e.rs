//! A second database engine, end to end: real OpenBao's MySQL plugin (`mysql-database-plugin`)
//! managing users of a throwaway MariaDB, and the real agent issuing, renewing, rotating and
//! revoking them. Every credential the file holds is used to log in over TCP.
//!
//! The agent knows nothing about MySQL or PostgreSQL: it reads `database/creds/<role>` and
//! manages the lease. This test is the proof that it is engine-agnostic. It runs on OpenBao
//! only: devvault implements the PostgreSQL plugin alone.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::Value;
use testkit::mariadb::MariaDb;

const SEC: fn(u64) -> Duration = Duration::from_secs;

fn expires(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v["expires_at"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_issues_renews_rotates_and_revokes_mariadb_users_through_openbao() {
    let db = MariaDb::start();
    // 4 s leases capped at 12 s: renewals every few seconds, and a new user at the cap.
    let stack = Stack::start_on(Vault::Bao).await;
    stack.mariadb_role(&db, "4s", "12s").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("maria.json");
    let mut agent = AgentProc::approle_secret(
        &stack,
        dir.path(),
        (&role_id, &secret_id),
        "database/creds/maria",
        &out,
        &["--revoke-grace", "1s", "--revoke-on-exit"],
    );
    agent.wait_ready(SEC(20)).await;

    // Issue: the first user exists in MariaDB and logs in.
    let first = read_cred(&out).unwrap();
    let first_user = s(&first, "username");
    assert_eq!(
        db.login(&first_user, &s(&first, "password")).as_deref(),
        Ok(format!("{first_user}@%").as_str()),
        "the first credential logs in"
    );
    assert_eq!(db.app_users(), vec![first_user.clone()]);

    // Renew: before the cap, the same user's expiry moves forward.
    let renewed = eventually(SEC(10), "a renewal of the first lease", || {
        let out = out.clone();
        let (user, at) = (first_user.clone(), expires(&first));
        async move { read_cred(&out).filter(|c| s(c, "username") == user && expires(c) > at) }
    })
    .await;
    db.login(&first_user, &s(&renewed, "password"))
        .expect("the renewed credential logs in");

    // Rotate: at the cap a new user takes over; a reader using whatever the file holds never
    // fails to log in across two rotations.
    let mut users = BTreeSet::new();
    let mut logins = 0;
    let start = Instant::now();
    while start.elapsed() < SEC(26) && users.len() < 3 {
        let cred = read_cred(&out).expect("the file never disappears");
        let user = s(&cred, "username");
        db.login(&user, &s(&cred, "password"))
            .unwrap_or_else(|e| panic!("{user}: {e}; logs:\n{}", agent.logs()));
        users.insert(user);
        logins += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        users.len() >= 3,
        "two rotations at the 12 s cap, saw {users:?}"
    );
    assert!(logins >= 10, "only {logins} logins");

    // Revoke: each retired user is dropped from MariaDB after its grace, and can no longer log
    // in; only the current one (and at most one in its grace) remain.
    let current = s(&read_cred(&out).unwrap(), "username");
    let remaining = eventually(SEC(15), "retired MariaDB users dropped", || {
        let (db, current) = (&db, current.clone());
        async move {
            let users = db.app_users();
            (users.len() <= 2 && users.contains(&current)).then_some(users)
        }
    })
    .await;
    assert!(!remaining.contains(&first_user), "{remaining:?}");
    let refused = db
        .login(&first_user, &s(&renewed, "password"))
        .expect_err("a revoked user cannot log in");
    assert!(refused.contains("Access denied"), "{refused}");

    // SIGUSR1 rotates now; --revoke-on-exit drops the last user on SIGTERM.
    let before = s(&read_cred(&out).unwrap(), "username");
    agent.signal("USR1");
    let rotated = eventually(SEC(15), "a user rotated on SIGUSR1", || {
        let (out, before) = (out.clone(), before.clone());
        async move { read_cred(&out).filter(|c| s(c, "username") != before) }
    })
    .await;
    db.login(&s(&rotated, "username"), &s(&rotated, "password"))
        .expect("the rotated credential logs in");
    assert_eq!(agent.stop(), 0);
    let left = eventually(SEC(10), "every MariaDB user revoked", || {
        let db = &db;
        async move {
            let users = db.app_users();
            users.is_empty().then_some(users)
        }
    })
    .await;
    assert!(left.is_empty());
    assert!(
        stack.lease_ids("database/creds/maria/").await.is_empty(),
        "no lease left in OpenBao"
    );
    let logs = agent.logs();
    assert!(
        !logs.contains(&s(&first, "password")),
        "a password reached the logs"
    );
}
