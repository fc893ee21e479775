//! Drain-aware revocation end to end: the real agent, real OpenBao, real PostgreSQL and real
//! MariaDB. The "app" is a connection this test holds as the credential's user.
//!
//! - Held through a rotation, then moved to the new user: the old user is revoked (gone from
//!   `pg_roles` / `mysql.user`) within a few seconds of the move, long before the grace.
//! - Never moved: the old user is revoked at the grace.
//!
//! `/status`, `/metrics` and the log say which it was. Bounds are generous: the claim is
//! "seconds after the move, not the grace", never a precise latency.
#![cfg(feature = "drain-check")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use testkit::mariadb::MariaDb;

const SEC: fn(u64) -> Duration = Duration::from_secs;

/// The database the app talks to, seen from the test.
enum Db<'a> {
    Pg(&'a Stack),
    Maria(&'a MariaDb),
}

/// One app connection as a user, open until dropped.
enum AppConn {
    Pg(tokio_postgres::Client),
    Maria(Child),
}

impl Drop for AppConn {
    fn drop(&mut self) {
        if let AppConn::Maria(child) = self {
            // Closing its stdin ends the client, which says COM_QUIT.
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

impl Db<'_> {
    async fn connect(&self, cred: &Value) -> AppConn {
        let (user, pw) = (s(cred, "username"), s(cred, "password"));
        match self {
            Db::Pg(stack) => {
                let (client, conn) = tokio_postgres::connect(
                    &stack.pg.conn_string(&user, &pw),
                    tokio_postgres::NoTls,
                )
                .await
                .unwrap_or_else(|e| panic!("app connects as {user}: {e}"));
                tokio::spawn(conn);
                client.simple_query("SELECT 1").await.expect("app query");
                AppConn::Pg(client)
            }
            Db::Maria(db) => {
                db.login(&user, &pw).expect("the credential logs in");
                let child = Command::new("mariadb")
                    .arg("--no-defaults")
                    .args(["--protocol=TCP", "-h", "127.0.0.1"])
                    .arg(format!("--port={}", db.port()))
                    .args(["-u", &user, "-N", "-B"])
                    .env("MYSQL_PWD", &pw)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("run the mariadb client");
                let conn = AppConn::Maria(child);
                // The client is connected once the server lists it.
                eventually(SEC(10), "the app's MariaDB session", || async {
                    let n = db.exec_root(&format!(
                        "SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{user}'"
                    ));
                    (n.trim() != "0").then_some(())
                })
                .await;
                conn
            }
        }
    }

    async fn user_exists(&self, user: &str) -> bool {
        match self {
            Db::Pg(stack) => stack.pg_role_exists(user).await,
            Db::Maria(db) => db.app_users().iter().any(|u| u == user),
        }
    }

    fn drain_url(&self) -> String {
        match self {
            Db::Pg(stack) => format!(
                "postgres://127.0.0.1:{}/postgres?sslmode=disable",
                stack.pg.port()
            ),
            Db::Maria(db) => format!("mysql://127.0.0.1:{}/?ssl-mode=DISABLED", db.port()),
        }
    }
}

/// OpenBao with a long-lived role `app` on PostgreSQL, or `maria` on MariaDB.
async fn stack(maria: Option<&MariaDb>) -> (Stack, &'static str) {
    let stack = Stack::start_on(Vault::Bao).await;
    let Some(db) = maria else {
        stack.dynamic_role("app", "1h", "2h").await;
        return (stack, "database/creds/app");
    };
    stack.mariadb_role(db, "1h", "2h").await;
    (stack, "database/creds/maria")
}

async fn agent(stack: &Stack, secret: &str, drain: &str, grace: &str, dir: &Path) -> AgentProc {
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let out = dir.join("db.json");
    let extra = ["--revoke-grace", grace, "--drain-check", drain];
    let login = (role_id.as_str(), secret_id.as_str());
    let mut agent = AgentProc::approle_secret(stack, dir, login, secret, &out, &extra);
    agent.wait_ready(SEC(20)).await;
    agent
}

async fn status(agent: &AgentProc) -> Value {
    let text = reqwest::get(agent.url("/status"))
        .await
        .expect("GET /status")
        .text()
        .await
        .expect("body");
    serde_json::from_str(&text).expect("/status is JSON")
}

async fn metric(agent: &AgentProc, series: &str) -> Option<f64> {
    let text = reqwest::get(agent.url("/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Rotates with SIGUSR1 and returns the new credential once it is in the file.
async fn rotate(agent: &AgentProc, out: &Path, old: &Value) -> Value {
    agent.signal("USR1");
    let old_user = s(old, "username");
    eventually(SEC(15), "the rotated credential", || async {
        read_cred(out).filter(|c| s(c, "username") != old_user)
    })
    .await
}

/// The app holds a session as the old user through the rotation, then moves to the new one:
/// the revoke waits for the move and follows it within a few seconds.
async fn drained_after_the_app_moves(db: Db<'_>, stack: &Stack, secret: &str) {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(stack, secret, &db.drain_url(), "60s", dir.path()).await;
    let out = dir.path().join("db.json");
    let first = read_cred(&out).unwrap();
    let old_user = s(&first, "username");
    let app = db.connect(&first).await;

    let second = rotate(&agent, &out, &first).await;
    // Well past the 2 s minimum and several polls: still held, so not revoked.
    tokio::time::sleep(SEC(5)).await;
    assert!(
        db.user_exists(&old_user).await,
        "revoked while the app still held a session; logs:\n{}",
        agent.logs()
    );
    assert!(!agent.logs().contains("revoked old credential"));

    // The app moves: make-before-break, then the old session closes.
    let new_app = db.connect(&second).await;
    drop(app);
    let moved = Instant::now();
    eventually(
        SEC(15),
        "the old user revoked after the app moved",
        || async { (!db.user_exists(&old_user).await).then_some(()) },
    )
    .await;
    let took = moved.elapsed();
    assert!(
        took < SEC(10),
        "revoked {took:?} after the move: the drain check, not the 60 s grace"
    );
    let st = status(&agent).await;
    let secret = &st["secrets"][0];
    assert_eq!(secret["last_revoke"]["how"], "drained", "{secret}");
    assert_eq!(
        secret["last_revoke"]["username"].as_str(),
        Some(old_user.as_str())
    );
    let drain = secret["last_revoke"]["drain_seconds"]
        .as_f64()
        .expect("drain seconds");
    assert!((5.0..60.0).contains(&drain), "drain took {drain} s");
    assert_eq!(secret["revokes_by_how"]["drained"], 1, "{secret}");
    assert_eq!(secret["revokes_by_how"]["grace"], 0, "{secret}");
    eprintln!("old user revoked {took:?} after the app moved; drain_seconds {drain}");
    let name = secret["name"].as_str().unwrap();
    assert_eq!(
        metric(
            &agent,
            &format!("vault_rotator_secret_revokes_total{{secret=\"{name}\",how=\"drained\"}}")
        )
        .await,
        Some(1.0)
    );
    let gauge = metric(
        &agent,
        &format!("vault_rotator_secret_last_drain_seconds{{secret=\"{name}\"}}"),
    )
    .await
    .expect("drain gauge");
    assert!((gauge - drain).abs() < 0.01, "{gauge} vs {drain}");
    let page = reqwest::get(agent.url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("drained"),
        "the status page shows how it was revoked"
    );
    let logs = agent.logs();
    assert!(logs.contains("drained"), "{logs}");
    assert!(
        !logs.contains(&s(&first, "password")),
        "no password in the log"
    );
    // The app works on.
    if let AppConn::Pg(client) = &new_app {
        client
            .simple_query("SELECT 1")
            .await
            .expect("new session works");
    }
    drop(new_app);
}

/// The app never moves: the old user is revoked at the grace, and the report says so.
async fn grace_when_the_app_never_moves(db: Db<'_>, stack: &Stack, secret: &str) {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(stack, secret, &db.drain_url(), "5s", dir.path()).await;
    let out = dir.path().join("db.json");
    let first = read_cred(&out).unwrap();
    let old_user = s(&first, "username");
    let _app = db.connect(&first).await;
    rotate(&agent, &out, &first).await;
    let rotated = Instant::now();
    tokio::time::sleep(SEC(3)).await;
    assert!(db.user_exists(&old_user).await, "revoked before the grace");
    eventually(SEC(20), "the old user revoked at the grace", || async {
        (!db.user_exists(&old_user).await).then_some(())
    })
    .await;
    assert!(rotated.elapsed() >= SEC(4), "{:?}", rotated.elapsed());
    let st = status(&agent).await;
    let secret = &st["secrets"][0];
    assert_eq!(secret["last_revoke"]["how"], "grace", "{secret}");
    assert_eq!(secret["revokes_by_how"]["grace"], 1, "{secret}");
    assert_eq!(secret["revokes_by_how"]["drained"], 0, "{secret}");
    let name = secret["name"].as_str().unwrap();
    assert_eq!(
        metric(
            &agent,
            &format!("vault_rotator_secret_revokes_total{{secret=\"{name}\",how=\"grace\"}}")
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_revoke_follows_the_apps_move() {
    let (stack, secret) = stack(None).await;
    drained_after_the_app_moves(Db::Pg(&stack), &stack, secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_revoke_at_the_grace_when_the_app_never_moves() {
    let (stack, secret) = stack(None).await;
    grace_when_the_app_never_moves(Db::Pg(&stack), &stack, secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_revoke_follows_the_apps_move() {
    let db = MariaDb::start();
    let (stack, secret) = stack(Some(&db)).await;
    drained_after_the_app_moves(Db::Maria(&db), &stack, secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_revoke_at_the_grace_when_the_app_never_moves() {
    let db = MariaDb::start();
    let (stack, secret) = stack(Some(&db)).await;
    grace_when_the_app_never_moves(Db::Maria(&db), &stack, secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_check_falls_back_to_the_grace_and_warns_once() {
    let (stack, secret) = stack(None).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = format!(
        "postgres://127.0.0.1:{}/postgres?sslmode=disable",
        free_port()
    );
    let agent = agent(&stack, secret, &dead, "5s", dir.path()).await;
    let out = dir.path().join("db.json");
    let first = read_cred(&out).unwrap();
    let old_user = s(&first, "username");
    rotate(&agent, &out, &first).await;
    eventually(SEC(20), "the old user revoked at the grace", || async {
        (!stack.pg_role_exists(&old_user).await).then_some(())
    })
    .await;
    let st = status(&agent).await;
    assert_eq!(
        st["secrets"][0]["last_revoke"]["how"], "check_failed",
        "{st}"
    );
    let logs = agent.logs();
    assert_eq!(
        logs.matches("drain check failed").count(),
        1,
        "one warning per credential:\n{logs}"
    );
}

/// The example app (`examples/app.rs`) as the app: it reconnects make-before-break when the
/// file changes. The old user is revoked seconds after the rotation, not at the 60 s grace, and
/// not one of the app's queries fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_example_app_is_never_cut_and_its_old_user_goes_soon() {
    let app_bin = testkit::bins::workspace_example("vault-rotator", "app");
    let (stack, secret) = stack(None).await;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::Pg(&stack);
    let agent = agent(&stack, secret, &db.drain_url(), "60s", dir.path()).await;
    let out = dir.path().join("db.json");
    let first = read_cred(&out).unwrap();
    let old_user = s(&first, "username");
    let report = dir.path().join("report.json");
    let app_log = dir.path().join("app.log");
    let mut app = Command::new(&app_bin)
        .arg("--credentials")
        .arg(&out)
        .args([
            "--pg-host",
            "127.0.0.1",
            "--pg-port",
            &stack.pg.port().to_string(),
        ])
        .args(["--interval", "50ms", "--wait", "30s"])
        .arg("--report")
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&app_log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the example app");
    let app_logs = || std::fs::read_to_string(&app_log).unwrap_or_default();
    eventually(SEC(20), "the app connected as the first user", || async {
        app_logs()
            .contains(&format!("connected as {old_user}"))
            .then_some(())
    })
    .await;

    let second = rotate(&agent, &out, &first).await;
    let rotated = Instant::now();
    eventually(
        SEC(20),
        "the old user revoked once the app moved",
        || async { (!db.user_exists(&old_user).await).then_some(()) },
    )
    .await;
    let took = rotated.elapsed();
    assert!(
        took < SEC(15),
        "revoked {took:?} after the rotation: the drain check, not the 60 s grace"
    );
    assert!(
        app_logs().contains(&format!("connected as {}", s(&second, "username"))),
        "{}",
        app_logs()
    );
    let st = status(&agent).await;
    assert_eq!(st["secrets"][0]["last_revoke"]["how"], "drained", "{st}");
    eprintln!("example app: old user revoked {took:?} after the rotation");

    // Let it query a little on the new user, then stop it: no query failed.
    tokio::time::sleep(SEC(1)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &app.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let code = app.wait().expect("app exits");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap())
        .unwrap_or_else(|e| panic!("app report: {e}\n{}", app_logs()));
    assert_eq!(report["queries_failed"], 0, "{report}\n{}", app_logs());
    assert!(report["queries_ok"].as_u64() > Some(20), "{report}");
    assert_eq!(code.code(), Some(0), "{report}");
}
