//! The drain check's session counts against real PostgreSQL and real MariaDB: a user holding
//! one other connection sees 1, then 0 once it closes; a user without privileges sees only its
//! own sessions; a wrong password, a dead port and an impossible TLS demand are errors, never
//! a count of zero.
#![cfg(feature = "drain-check")]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::mariadb::MariaDb;
use testkit::pg::PgCluster;
use tokio_postgres::NoTls;
use vault_rotator::credential::SecretValue;
use vault_rotator::drain::{sessions, DrainCheck, DrainError};

fn check(url: &str) -> DrainCheck {
    url.parse().expect("valid drain-check URL")
}

/// Polls until the count is `want` (a closed session leaves the server's lists a moment
/// after the client's socket closes).
async fn count_becomes(check: &DrainCheck, user: &str, pw: &str, want: u64) {
    let pw = SecretValue::new(pw);
    let mut last = None;
    for _ in 0..50 {
        match sessions(check, user, &pw).await {
            Ok(n) if n == want => return,
            other => last = Some(format!("{other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{user}: count never became {want}; last: {last:?}");
}

async fn pg_connect(pg: &PgCluster, user: &str, pw: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg.conn_string(user, pw), NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn postgres_counts_the_old_users_other_sessions() {
    let pg = PgCluster::start();
    let admin = pg_connect(&pg, pg.superuser(), pg.superuser_password()).await;
    admin
        .batch_execute(
            "CREATE ROLE old_app LOGIN PASSWORD 'old-pw'; \
             CREATE ROLE other LOGIN PASSWORD 'other-pw';",
        )
        .await
        .expect("create roles");
    let url = check(&format!(
        "postgres://127.0.0.1:{}/postgres?sslmode=disable",
        pg.port()
    ));

    count_becomes(&url, "old_app", "old-pw", 0).await;
    let app = pg_connect(&pg, "old_app", "old-pw").await;
    // Another role's sessions (and the superuser's) are not the old user's.
    let other = pg_connect(&pg, "other", "other-pw").await;
    count_becomes(&url, "old_app", "old-pw", 1).await;
    let second = pg_connect(&pg, "old_app", "old-pw").await;
    count_becomes(&url, "old_app", "old-pw", 2).await;
    drop(second);
    drop(app);
    count_becomes(&url, "old_app", "old-pw", 0).await;
    count_becomes(&url, "other", "other-pw", 1).await;
    drop(other);

    let err = sessions(&url, "old_app", &SecretValue::new("wrong"))
        .await
        .expect_err("wrong password");
    assert!(matches!(err, DrainError::Auth(_)), "{err}");
    assert!(!format!("{err} {err:?}").contains("wrong"), "{err:?}");

    // The test cluster has no TLS: `require` must fail, `prefer` must fall back to plain.
    let require = check(&format!(
        "postgres://127.0.0.1:{}/postgres?sslmode=require",
        pg.port()
    ));
    let err = sessions(&require, "old_app", &SecretValue::new("old-pw"))
        .await
        .expect_err("no TLS on the server");
    assert!(
        matches!(
            err,
            DrainError::Tls { .. } | DrainError::NoTls { .. } | DrainError::Protocol(_)
        ),
        "{err}"
    );
    let prefer = check(&format!("postgres://127.0.0.1:{}/postgres", pg.port()));
    count_becomes(&prefer, "old_app", "old-pw", 0).await;

    // Nobody listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dead = check(&format!("postgres://127.0.0.1:{port}/postgres"));
    let err = sessions(&dead, "old_app", &SecretValue::new("old-pw"))
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, DrainError::Connect { .. }), "{err}");
}

/// A `mariadb` client logged in as `user`, idle (it waits on its stdin) until dropped.
struct HeldConnection(Child);

impl HeldConnection {
    fn open(db: &MariaDb, user: &str, pw: &str) -> HeldConnection {
        let child = Command::new("mariadb")
            .arg("--no-defaults")
            .args(["--protocol=TCP", "-h", "127.0.0.1"])
            .arg(format!("--port={}", db.port()))
            .args(["-u", user, "-N", "-B"])
            .env("MYSQL_PWD", pw)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the mariadb client");
        HeldConnection(child)
    }
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        // Closing its stdin ends the client, which says COM_QUIT.
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn mariadb_counts_the_old_users_other_sessions_without_privileges() {
    let db = MariaDb::start();
    // Accounts as OpenBao's MySQL plugin makes them: a password, no PROCESS privilege.
    db.exec_root(
        "CREATE USER 'old_app'@'%' IDENTIFIED BY 'old-pw'; \
         CREATE USER 'other'@'%' IDENTIFIED BY 'other-pw'; \
         GRANT SELECT ON mysql.* TO 'other'@'%';",
    );
    let url = check(&format!(
        "mysql://127.0.0.1:{}/?ssl-mode=DISABLED",
        db.port()
    ));

    count_becomes(&url, "old_app", "old-pw", 0).await;
    let app = HeldConnection::open(&db, "old_app", "old-pw");
    let other = HeldConnection::open(&db, "other", "other-pw");
    let admin = HeldConnection::open(&db, db.admin_user(), db.admin_password());
    count_becomes(&url, "old_app", "old-pw", 1).await;
    let second = HeldConnection::open(&db, "old_app", "old-pw");
    count_becomes(&url, "old_app", "old-pw", 2).await;
    // The admin (PROCESS privilege) sees every thread, yet counts only its own user's.
    count_becomes(&url, db.admin_user(), db.admin_password(), 1).await;
    drop(second);
    drop(app);
    count_becomes(&url, "old_app", "old-pw", 0).await;
    count_becomes(&url, "other", "other-pw", 1).await;
    drop(other);
    drop(admin);

    // With a database in the URL, the login names it (the account may use it).
    db.exec_root("CREATE DATABASE app; GRANT SELECT ON app.* TO 'old_app'@'%';");
    let with_db = check(&format!(
        "mariadb://127.0.0.1:{}/app?ssl-mode=disabled",
        db.port()
    ));
    count_becomes(&with_db, "old_app", "old-pw", 0).await;

    let err = sessions(&url, "old_app", &SecretValue::new("wrong"))
        .await
        .expect_err("wrong password");
    assert!(
        matches!(&err, DrainError::Auth(m) if m.contains("1045")),
        "{err}"
    );
    assert!(!format!("{err} {err:?}").contains("wrong"), "{err:?}");

    // This server has no TLS: REQUIRED fails, PREFERRED falls back to plain.
    let required = check(&format!(
        "mysql://127.0.0.1:{}/?ssl-mode=REQUIRED",
        db.port()
    ));
    let err = sessions(&required, "old_app", &SecretValue::new("old-pw"))
        .await
        .expect_err("no TLS on the server");
    assert!(matches!(err, DrainError::NoTls { .. }), "{err}");
    let preferred = check(&format!("mysql://127.0.0.1:{}/", db.port()));
    count_becomes(&preferred, "old_app", "old-pw", 0).await;
}

/// Turns TLS on in a running cluster (`ssl` reloads without a restart) with the test-only
/// server certificate (SAN `IP:127.0.0.1`, `DNS:vault.test`).
async fn pg_enable_tls(pg: &PgCluster) {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let data = pg.data_dir();
    for (from, to) in [
        ("test-only-server.pem", "server.crt"),
        ("test-only-server-key.pem", "server.key"),
    ] {
        let dest = data.join(to);
        std::fs::copy(fixtures.join(from), &dest).expect("copy TLS fixture");
        std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        // The server runs as `postgres` when the tests run as root, and wants its key owned.
        let owner = std::fs::metadata(&data).expect("data dir");
        std::os::unix::fs::chown(
            &dest,
            Some(std::os::unix::fs::MetadataExt::uid(&owner)),
            Some(std::os::unix::fs::MetadataExt::gid(&owner)),
        )
        .expect("chown");
    }
    let admin = pg_connect(pg, pg.superuser(), pg.superuser_password()).await;
    for sql in ["ALTER SYSTEM SET ssl = on", "SELECT pg_reload_conf()"] {
        admin.batch_execute(sql).await.expect("turn TLS on");
    }
}

#[tokio::test]
async fn postgres_tls_modes_verify_what_they_say() {
    let pg = PgCluster::start();
    let admin = pg_connect(&pg, pg.superuser(), pg.superuser_password()).await;
    admin
        .batch_execute("CREATE ROLE old_app LOGIN PASSWORD 'old-pw';")
        .await
        .expect("create role");
    pg_enable_tls(&pg).await;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let ca = fixtures.join("test-only-ca.pem");
    let other_ca = fixtures.join("test-only-other-ca.pem");
    let url = |host: &str, mode: &str, root: &std::path::Path| {
        check(&format!(
            "postgres://{host}:{}/postgres?sslmode={mode}&sslrootcert={}",
            pg.port(),
            root.display()
        ))
    };
    // The right CA and the name in the certificate: every mode works (reload takes a moment).
    count_becomes(
        &url("127.0.0.1", "verify-full", &ca),
        "old_app",
        "old-pw",
        0,
    )
    .await;
    count_becomes(&url("127.0.0.1", "require", &ca), "old_app", "old-pw", 0).await;
    // `localhost` is not in the certificate: verify-ca accepts it, verify-full does not.
    count_becomes(&url("localhost", "verify-ca", &ca), "old_app", "old-pw", 0).await;
    let pw = SecretValue::new("old-pw");
    let err = sessions(&url("localhost", "verify-full", &ca), "old_app", &pw)
        .await
        .expect_err("wrong name");
    assert!(matches!(err, DrainError::Tls { .. }), "{err}");
    // A CA that did not sign the server's certificate: both verifying modes refuse.
    for mode in ["verify-ca", "verify-full"] {
        let err = sessions(&url("127.0.0.1", mode, &other_ca), "old_app", &pw)
            .await
            .expect_err("unknown issuer");
        assert!(matches!(err, DrainError::Tls { .. }), "{mode}: {err}");
    }
    // `require` does not verify: the wrong CA does not matter.
    count_becomes(
        &url("127.0.0.1", "require", &other_ca),
        "old_app",
        "old-pw",
        0,
    )
    .await;
}

#[tokio::test]
async fn mariadb_tls_modes_verify_what_they_say() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let db = MariaDb::start_with_tls(
        &fixtures.join("test-only-server.pem"),
        &fixtures.join("test-only-server-key.pem"),
    );
    db.exec_root("CREATE USER 'old_app'@'%' IDENTIFIED BY 'old-pw';");
    let ca = fixtures.join("test-only-ca.pem");
    let other_ca = fixtures.join("test-only-other-ca.pem");
    let url = |host: &str, mode: &str, root: &std::path::Path| {
        check(&format!(
            "mysql://{host}:{}/?ssl-mode={mode}&ssl-ca={}",
            db.port(),
            root.display()
        ))
    };
    // The right CA and the name in the certificate; `REQUIRED` verifies nothing; the default
    // (`PREFERRED`) takes TLS when offered. The failures below show the handshake is real.
    count_becomes(
        &url("127.0.0.1", "VERIFY_IDENTITY", &ca),
        "old_app",
        "old-pw",
        0,
    )
    .await;
    count_becomes(
        &url("127.0.0.1", "REQUIRED", &other_ca),
        "old_app",
        "old-pw",
        0,
    )
    .await;
    count_becomes(
        &check(&format!("mysql://127.0.0.1:{}/", db.port())),
        "old_app",
        "old-pw",
        0,
    )
    .await;
    count_becomes(&url("localhost", "VERIFY_CA", &ca), "old_app", "old-pw", 0).await;
    let pw = SecretValue::new("old-pw");
    let err = sessions(&url("localhost", "VERIFY_IDENTITY", &ca), "old_app", &pw)
        .await
        .expect_err("wrong name");
    assert!(matches!(err, DrainError::Tls { .. }), "{err}");
    for mode in ["VERIFY_CA", "VERIFY_IDENTITY"] {
        let err = sessions(&url("127.0.0.1", mode, &other_ca), "old_app", &pw)
            .await
            .expect_err("unknown issuer");
        assert!(matches!(err, DrainError::Tls { .. }), "{mode}: {err}");
    }
    // A wrong password over TLS is still a refused login, not a TLS failure.
    let err = sessions(
        &url("127.0.0.1", "REQUIRED", &ca),
        "old_app",
        &SecretValue::new("nope"),
    )
    .await
    .expect_err("wrong password");
    assert!(matches!(err, DrainError::Auth(_)), "{err}");
}
