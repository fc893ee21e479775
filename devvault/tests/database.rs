//! Database engine against a real throwaway PostgreSQL cluster (testkit).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, pg_admin, pg_connect, pg_login_works, Dv, ROOT};
use serde_json::{json, Value};
use testkit::pg::PgCluster;

const CREATE: &str =
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';";

async fn configure(dv: &Dv, pg: &PgCluster) {
    drop(pg_admin(pg.port(), pg.superuser(), pg.superuser_password()).await);
    dv.ok(
        "POST",
        "/v1/sys/mounts/database",
        Some(&json!({"type": "database"})),
    )
    .await;
    let url = format!(
        "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port()
    );
    let r = dv
        .root(
            "POST",
            "/v1/database/config/pg",
            Some(&json!({"plugin_name": "postgresql-database-plugin", "connection_url": url, "username": pg.superuser(), "password": "wrong", "allowed_roles": ["app", "short", "capped"]})),
        )
        .await;
    assert_eq!(
        r.status, 400,
        "verify_connection must catch a bad password: {}",
        r.text
    );
    assert!(
        r.errors()[0].starts_with("error creating database object: error verifying"),
        "{:?}",
        r.errors()
    );
    dv.ok(
        "POST",
        "/v1/database/config/pg",
        Some(&json!({"plugin_name": "postgresql-database-plugin", "connection_url": url, "username": pg.superuser(), "password": pg.superuser_password(), "allowed_roles": "app,short,capped,static-a,static-b,static-c"})),
    )
    .await;
}

fn creds(v: &Value) -> (String, String, String) {
    (
        v["data"]["username"].as_str().unwrap().to_string(),
        v["data"]["password"].as_str().unwrap().to_string(),
        v["lease_id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn dynamic_credentials_lifecycle() {
    let pg = PgCluster::start();
    let dv = Dv::start();
    configure(&dv, &pg).await;
    let port = pg.port();

    let cfg = dv.ok("GET", "/v1/database/config/pg", None).await;
    assert!(
        !cfg.text.contains(pg.superuser_password()),
        "password must never be returned"
    );
    assert_eq!(
        cfg.json()["data"]["connection_details"]["username"],
        json!(pg.superuser())
    );

    dv.ok("POST", "/v1/database/roles/app", Some(&json!({"db_name": "pg", "creation_statements": [CREATE], "default_ttl": "1h", "max_ttl": 7200}))).await;
    let role = dv.ok("GET", "/v1/database/roles/app", None).await.json()["data"].clone();
    assert_eq!(
        (
            role["default_ttl"].clone(),
            role["max_ttl"].clone(),
            role["credential_type"].clone()
        ),
        (json!(3600), json!(7200), json!("password"))
    );
    dv.ok("POST", "/v1/database/roles/short", Some(&json!({"db_name": "pg", "creation_statements": CREATE, "default_ttl": 2, "max_ttl": "10s"}))).await;
    dv.ok("POST", "/v1/database/roles/capped", Some(&json!({"db_name": "pg", "creation_statements": [CREATE], "default_ttl": 3, "max_ttl": 3}))).await;
    dv.ok(
        "POST",
        "/v1/database/roles/notallowed",
        Some(&json!({"db_name": "pg", "creation_statements": [CREATE]})),
    )
    .await;

    // Issue: envelope shape, real login.
    let r = dv.ok("GET", "/v1/database/creds/app", None).await;
    let v = r.json();
    assert_eq!(
        (
            v["renewable"].clone(),
            v["lease_duration"].clone(),
            v["mount_type"].clone()
        ),
        (json!(true), json!(3600), json!("database"))
    );
    let (user, pass, lease) = creds(&v);
    assert!(lease.starts_with("database/creds/app/"), "{lease}");
    assert!(user.starts_with("v-root-app-"), "{user}");
    assert_eq!(pass.len(), 20);
    assert_eq!(
        v["data"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["password", "username"]
    );
    assert!(
        pg_login_works(port, &user, &pass).await,
        "dynamic credential must log in"
    );
    assert!(!pg_login_works(port, &user, "wrong-password").await);

    // Renew: increment honoured, login keeps working, lookup shows the renewal.
    let r = dv
        .ok(
            "PUT",
            "/v1/sys/leases/renew",
            Some(&json!({"lease_id": lease, "increment": 600})),
        )
        .await;
    let v = r.json();
    assert_eq!(
        (
            v["lease_id"].clone(),
            v["lease_duration"].clone(),
            v["data"].clone(),
            v["renewable"].clone()
        ),
        (json!(lease), json!(600), Value::Null, json!(true))
    );
    assert!(pg_login_works(port, &user, &pass).await);
    let l = dv
        .ok(
            "PUT",
            "/v1/sys/leases/lookup",
            Some(&json!({"lease_id": lease})),
        )
        .await
        .json()["data"]
        .clone();
    assert!(l["last_renewal"].is_string() && l["ttl"].as_i64().unwrap() > 590);
    let r = dv
        .ok(
            "PUT",
            &format!("/v1/sys/leases/renew/{lease}"),
            Some(&json!({"increment": 60})),
        )
        .await;
    assert_eq!(r.json()["lease_duration"], json!(60));
    let leases = dv
        .call("GET", "/__devvault/leases", None, None)
        .await
        .json();
    assert!(leases["leases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["lease_id"] == json!(lease) && l["username"] == json!(user)));

    // Revoke (async 202) ends open sessions and logins; revoking again is fine.
    let open = pg_connect(port, &user, &pass).await.expect("open session");
    let r = dv
        .root(
            "PUT",
            "/v1/sys/leases/revoke",
            Some(&json!({"lease_id": lease})),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (202, ""));
    assert!(
        eventually(Duration::from_secs(5), || async {
            !pg_login_works(port, &user, &pass).await
        })
        .await,
        "revoked credential still works"
    );
    assert!(
        open.simple_query("SELECT 1").await.is_err(),
        "open session must be terminated"
    );
    assert_eq!(
        dv.root(
            "PUT",
            "/v1/sys/leases/revoke",
            Some(&json!({"lease_id": lease, "sync": true}))
        )
        .await
        .status,
        204
    );
    let r = dv
        .root(
            "PUT",
            "/v1/sys/leases/renew",
            Some(&json!({"lease_id": lease})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["lease not found".to_string()])
    );

    // Expiry: a 2s lease is revoked on time by the scheduler.
    let (su, sp, sl) = creds(&dv.ok("GET", "/v1/database/creds/short", None).await.json());
    assert!(pg_login_works(port, &su, &sp).await);
    assert!(
        eventually(Duration::from_secs(8), || async {
            !pg_login_works(port, &su, &sp).await
        })
        .await,
        "expired credential still works"
    );
    assert_eq!(
        dv.root(
            "PUT",
            "/v1/sys/leases/renew",
            Some(&json!({"lease_id": sl}))
        )
        .await
        .errors(),
        vec!["lease not found".to_string()]
    );

    // Renewal past max_ttl is capped with Vault's warning, then refused.
    let (_, _, cl) = creds(&dv.ok("GET", "/v1/database/creds/capped", None).await.json());
    let r = dv
        .ok(
            "PUT",
            "/v1/sys/leases/renew",
            Some(&json!({"lease_id": cl, "increment": 3600})),
        )
        .await
        .json();
    let d = r["lease_duration"].as_i64().unwrap();
    assert!((1..=3).contains(&d), "{r}");
    assert_eq!(r["warnings"][0], json!(format!("TTL of \"1h\" exceeded the effective max_ttl of \"{d}s\"; TTL value is capped accordingly")));

    // Leases die with their token: a child token's credential stops working when it is revoked.
    dv.ok(
        "PUT",
        "/v1/sys/policies/acl/creds",
        Some(&json!({"policy": "path \"database/creds/app\" { capabilities = [\"read\"] }"})),
    )
    .await;
    let t = dv
        .ok(
            "POST",
            "/v1/auth/token/create",
            Some(&json!({"policies": ["creds"], "ttl": "1h"})),
        )
        .await
        .json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = dv
        .call("GET", "/v1/database/creds/app", Some(&t), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (tu, tp, _) = creds(&r.json());
    assert!(tu.starts_with("v-token-app-"), "{tu}");
    assert!(pg_login_works(port, &tu, &tp).await);
    assert_eq!(
        dv.call("GET", "/v1/database/creds/short", Some(&t), None)
            .await
            .status,
        403
    );
    assert_eq!(
        dv.root("POST", "/v1/auth/token/revoke", Some(&json!({"token": t})))
            .await
            .status,
        204
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            !pg_login_works(port, &tu, &tp).await
        })
        .await,
        "credential outlived its token"
    );

    // ...and when the token expires.
    let t = dv
        .ok(
            "POST",
            "/v1/auth/token/create",
            Some(&json!({"policies": ["creds"], "ttl": "2s"})),
        )
        .await
        .json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (eu, ep, _) = creds(
        &dv.call("GET", "/v1/database/creds/app", Some(&t), None)
            .await
            .json(),
    );
    assert!(pg_login_works(port, &eu, &ep).await);
    assert!(
        eventually(Duration::from_secs(8), || async {
            !pg_login_works(port, &eu, &ep).await
        })
        .await,
        "credential outlived its expired token"
    );

    // Error texts.
    let r = dv.root("GET", "/v1/database/creds/nope", None).await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["unknown role: nope".to_string()])
    );
    let r = dv.root("GET", "/v1/database/creds/notallowed", None).await;
    assert_eq!(
        (r.status, r.errors()),
        (
            500,
            vec!["1 error occurred:\n\t* \"notallowed\" is not an allowed role\n\n".to_string()]
        )
    );
    assert_eq!(
        dv.root("LIST", "/v1/database/roles", None).await.json()["data"]["keys"],
        json!(["app", "capped", "notallowed", "short"])
    );
}

#[tokio::test]
async fn static_roles_rotate_real_passwords() {
    let pg = PgCluster::start();
    let dv = Dv::start();
    configure(&dv, &pg).await;
    let port = pg.port();
    let admin = pg_admin(port, pg.superuser(), pg.superuser_password()).await;
    admin
        .batch_execute("CREATE ROLE static_a LOGIN PASSWORD 'initial-a'; CREATE ROLE static_b LOGIN PASSWORD 'initial-b'; CREATE ROLE static_c LOGIN PASSWORD 'initial-c';")
        .await
        .unwrap();
    assert!(pg_login_works(port, "static_a", "initial-a").await);

    // Creating the role rotates at once.
    dv.ok(
        "POST",
        "/v1/database/static-roles/static-a",
        Some(&json!({"db_name": "pg", "username": "static_a", "rotation_period": "1h"})),
    )
    .await;
    assert!(
        !pg_login_works(port, "static_a", "initial-a").await,
        "import rotation must change the password"
    );
    let r = dv
        .ok("GET", "/v1/database/static-creds/static-a", None)
        .await
        .json();
    assert_eq!(
        (
            r["lease_id"].clone(),
            r["renewable"].clone(),
            r["lease_duration"].clone()
        ),
        (json!(""), json!(false), json!(0))
    );
    let d = r["data"].clone();
    let mut keys: Vec<&String> = d.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "last_vault_rotation",
            "password",
            "rotation_period",
            "ttl",
            "username"
        ]
    );
    assert_eq!(
        (d["rotation_period"].clone(), d["username"].clone()),
        (json!(3600), json!("static_a"))
    );
    assert!((3590..=3600).contains(&d["ttl"].as_i64().unwrap()));
    let p1 = d["password"].as_str().unwrap().to_string();
    assert!(pg_login_works(port, "static_a", &p1).await);

    // Manual rotation.
    let r = dv
        .root("POST", "/v1/database/rotate-role/static-a", None)
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let d = dv
        .ok("GET", "/v1/database/static-creds/static-a", None)
        .await
        .json()["data"]
        .clone();
    let p2 = d["password"].as_str().unwrap().to_string();
    assert_ne!(p1, p2);
    assert!(
        pg_login_works(port, "static_a", &p2).await && !pg_login_works(port, "static_a", &p1).await
    );
    let r = dv.root("POST", "/v1/database/rotate-role/nope", None).await;
    assert_eq!(
        r.errors(),
        vec!["no static role found for role name".to_string()]
    );

    // Scheduled rotation every 5s.
    dv.ok(
        "POST",
        "/v1/database/static-roles/static-b",
        Some(&json!({"db_name": "pg", "username": "static_b", "rotation_period": 5})),
    )
    .await;
    let first = dv
        .ok("GET", "/v1/database/static-creds/static-b", None)
        .await
        .json()["data"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    let rotated = eventually(Duration::from_secs(10), || async {
        let p = dv
            .ok("GET", "/v1/database/static-creds/static-b", None)
            .await
            .json()["data"]["password"]
            .as_str()
            .unwrap()
            .to_string();
        p != first && pg_login_works(port, "static_b", &p).await
    })
    .await;
    assert!(rotated, "background rotation did not happen");
    assert!(!pg_login_works(port, "static_b", &first).await);

    // Cron schedule and skip_import_rotation.
    dv.ok(
        "POST",
        "/v1/database/static-roles/static-c",
        Some(&json!({"db_name": "pg", "username": "static_c", "rotation_schedule": "0 0 * * SAT", "rotation_window": "1h", "skip_import_rotation": true})),
    )
    .await;
    assert!(
        pg_login_works(port, "static_c", "initial-c").await,
        "skip_import_rotation must not rotate"
    );
    let d = dv
        .ok("GET", "/v1/database/static-creds/static-c", None)
        .await
        .json()["data"]
        .clone();
    assert_eq!(
        (d["rotation_schedule"].clone(), d["rotation_window"].clone()),
        (json!("0 0 * * SAT"), json!(3600))
    );
    assert!(d.get("last_vault_rotation").is_none() && d.get("rotation_period").is_none());
    let role = dv
        .ok("GET", "/v1/database/static-roles/static-c", None)
        .await
        .json()["data"]
        .clone();
    // Like Vault and OpenBao, the role keeps the empty list; the plugin's default ALTER ROLE
    // applies at rotation time.
    assert_eq!(role["rotation_statements"], json!([]));

    let r = dv.root("POST", "/v1/database/static-roles/x", Some(&json!({"db_name": "pg", "username": "static_c", "rotation_period": 60, "rotation_schedule": "* * * * *"}))).await;
    assert_eq!(r.status, 400);
    let r = dv
        .root("GET", "/v1/database/static-creds/missing", None)
        .await;
    assert_eq!(r.errors(), vec!["unknown role: missing".to_string()]);
}

#[tokio::test]
async fn setup_script_configures_devvault() {
    let pg = PgCluster::start();
    let dv = Dv::start();
    let port = pg.port();
    let admin = pg_admin(port, pg.superuser(), pg.superuser_password()).await;
    admin
        .batch_execute("CREATE ROLE app_static LOGIN PASSWORD 'before'")
        .await
        .unwrap();
    let script = format!("{}/../scripts/setup-vault.sh", env!("CARGO_MANIFEST_DIR"));
    let pem = format!(
        "{}/tests/fixtures/test-only-rsa-public.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("bash")
        .arg(&script)
        .env("VAULT_ADDR", &dv.base)
        .env("VAULT_TOKEN", ROOT)
        .env("PG_HOST", "127.0.0.1")
        .env("PG_PORT", port.to_string())
        .env("PG_ADMIN_USER", pg.superuser())
        .env("PG_ADMIN_PASSWORD", pg.superuser_password())
        .env("SETUP_CREATE_STATIC_USER", "0")
        .env("DB_DEFAULT_TTL", "5m")
        .env("K8S_PEM_KEYS_FILE", &pem)
        .output()
        .expect("run setup-vault.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "setup-vault.sh failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("setup-vault: done"), "{stdout}");

    // The configured approle can fetch and renew a working credential, and nothing else.
    let role_id = dv
        .ok("GET", "/v1/auth/approle/role/app/role-id", None)
        .await
        .json()["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = dv
        .ok("POST", "/v1/auth/approle/role/app/secret-id", None)
        .await
        .json()["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    let login = dv
        .call(
            "POST",
            "/v1/auth/approle/login",
            None,
            Some(&json!({"role_id": role_id, "secret_id": secret_id})),
        )
        .await
        .json();
    let tok = login["auth"]["client_token"].as_str().unwrap().to_string();
    let c = dv
        .call("GET", "/v1/database/creds/app", Some(&tok), None)
        .await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.json()["lease_duration"], json!(300));
    let (u, p, l) = creds(&c.json());
    assert!(pg_login_works(port, &u, &p).await);
    assert_eq!(
        dv.call(
            "PUT",
            "/v1/sys/leases/renew",
            Some(&tok),
            Some(&json!({"lease_id": l}))
        )
        .await
        .status,
        200
    );
    let s = dv
        .call(
            "GET",
            "/v1/database/static-creds/app-static",
            Some(&tok),
            None,
        )
        .await
        .json();
    assert!(pg_login_works(port, "app_static", s["data"]["password"].as_str().unwrap()).await);
    assert!(!pg_login_works(port, "app_static", "before").await);
    assert_eq!(
        dv.call("GET", "/v1/secret/data/app/config", Some(&tok), None)
            .await
            .status,
        200
    );
    assert_eq!(
        dv.call("GET", "/v1/secret/data/other", Some(&tok), None)
            .await
            .status,
        403
    );
    assert_eq!(
        dv.call(
            "PUT",
            "/v1/sys/leases/revoke",
            Some(&tok),
            Some(&json!({"lease_id": l}))
        )
        .await
        .status,
        202
    );
    // The policy grants rotating app-static and nothing else there.
    let r = dv
        .call(
            "PUT",
            "/v1/database/rotate-role/app-static",
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = dv
        .call("PUT", "/v1/database/rotate-role/other", Some(&tok), None)
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![common::DENIED.to_string()])
    );
    let k = dv
        .ok("GET", "/v1/auth/kubernetes/role/app", None)
        .await
        .json()["data"]
        .clone();
    assert_eq!(k["bound_service_account_names"], json!(["app"]));
    assert_eq!(k["audience"], json!("vault"));

    // Running it again is fine (idempotent), and a failure shows Vault's error text.
    let again = Command::new("bash")
        .arg(&script)
        .env("VAULT_ADDR", &dv.base)
        .env("VAULT_TOKEN", ROOT)
        .env("PG_PORT", port.to_string())
        .env("PG_ADMIN_USER", pg.superuser())
        .env("PG_ADMIN_PASSWORD", pg.superuser_password())
        .env("SETUP_CREATE_STATIC_USER", "0")
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let bad = Command::new("bash")
        .arg(&script)
        .env("VAULT_ADDR", &dv.base)
        .env("VAULT_TOKEN", "not-a-token")
        .env("PG_ADMIN_USER", "x")
        .env("PG_ADMIN_PASSWORD", "y")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
