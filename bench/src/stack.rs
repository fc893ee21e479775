//! The world the agents run against: one throwaway PostgreSQL cluster, and devvault instances
//! configured through the ordinary Vault API (database engine, roles, a policy and an AppRole),
//! the way an operator would configure Vault. Each measurement that runs beside another gets
//! its own devvault, so its request log holds only its own agent's requests.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use testkit::devvault::DevVault;
use testkit::pg::PgCluster;

/// What the role's `creation_statements` run: a login role that expires with the lease. No
/// `GRANT CONNECT ON DATABASE` (PUBLIC has it already): run by many agents at once, PostgreSQL
/// fails concurrent grants on one database with "tuple concurrently updated" (HTTP 500 from
/// Vault), which measures the role's SQL rather than the agent.
const ROLE_SQL: &[&str] =
    &["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"];

/// The agents' policy: what a credential sidecar needs, nothing more.
const POLICY: &str = r#"
path "database/creds/*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
"#;

/// Which server dialect devvault speaks: each agent gets its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Vault,
    OpenBao,
}

/// One entry of devvault's request log.
#[derive(Debug, Clone)]
pub struct Req {
    pub seq: u64,
    /// Arrival, ms since the Unix epoch.
    pub ts_ms: i64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub duration_ms: u64,
}

/// AppRole login material, in files as both agents read it.
#[derive(Debug, Clone)]
pub struct AppRole {
    pub role_id: String,
    pub secret_id: String,
    pub role_id_file: PathBuf,
    pub secret_id_file: PathBuf,
}

/// A configured devvault. Dropping it stops the server.
pub struct Vault {
    dv: DevVault,
    http: reqwest::Client,
    pub approle: AppRole,
}

impl Vault {
    /// Starts devvault, mounts the database engine on `pg`, writes the policy and an AppRole
    /// `app` whose tokens live `token_ttl` (renewable up to `token_max_ttl`); its ids go to
    /// files in `dir`.
    pub async fn start(
        pg: &PgCluster,
        flavor: Flavor,
        dir: &Path,
        token_ttl: &str,
        token_max_ttl: &str,
    ) -> Vault {
        let mut args = vec!["--log", "error"];
        if flavor == Flavor::OpenBao {
            args.extend(["--flavor", "openbao"]);
        }
        let dv = DevVault::start(&args);
        let http = reqwest::Client::new();
        let mut vault = Vault {
            dv,
            http,
            approle: AppRole {
                role_id: String::new(),
                secret_id: String::new(),
                role_id_file: dir.join("role_id"),
                secret_id_file: dir.join("secret_id"),
            },
        };
        vault.configure_database(pg).await;
        vault.configure_approle(token_ttl, token_max_ttl).await;
        vault
    }

    pub fn addr(&self) -> &str {
        self.dv.addr()
    }

    pub fn pid(&self) -> u32 {
        self.dv.pid()
    }

    async fn configure_database(&self, pg: &PgCluster) {
        self.api("POST", "sys/mounts/database", json!({"type": "database"}))
            .await;
        let url = format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres",
            pg.port()
        );
        let config = json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": url,
            "username": pg.superuser(),
            "password": pg.superuser_password(),
            "allowed_roles": "*",
        });
        self.api("POST", "database/config/pg", config).await;
        self.api("PUT", "sys/policies/acl/app", json!({ "policy": POLICY }))
            .await;
    }

    async fn configure_approle(&mut self, token_ttl: &str, token_max_ttl: &str) {
        self.api("POST", "sys/auth/approle", json!({"type": "approle"}))
            .await;
        let role = json!({"token_policies": ["app"], "token_ttl": token_ttl, "token_max_ttl": token_max_ttl});
        self.api("POST", "auth/approle/role/app", role).await;
        let role_id = self
            .api("GET", "auth/approle/role/app/role-id", Value::Null)
            .await["data"]["role_id"]
            .as_str()
            .expect("role_id in the answer")
            .to_string();
        let secret_id = self
            .api("POST", "auth/approle/role/app/secret-id", json!({}))
            .await["data"]["secret_id"]
            .as_str()
            .expect("secret_id in the answer")
            .to_string();
        std::fs::write(&self.approle.role_id_file, &role_id).expect("write role_id file");
        std::fs::write(&self.approle.secret_id_file, &secret_id).expect("write secret_id file");
        self.approle.role_id = role_id;
        self.approle.secret_id = secret_id;
    }

    /// A dynamic database role.
    pub async fn role(&self, name: &str, ttl: &str, max_ttl: &str) {
        let body = json!({"db_name": "pg", "creation_statements": ROLE_SQL, "default_ttl": ttl, "max_ttl": max_ttl});
        self.api("POST", &format!("database/roles/{name}"), body)
            .await;
    }

    /// A Vault API call with the root token; panics with Vault's answer when it fails (the
    /// bench cannot measure anything on a half-configured server).
    pub async fn api(&self, method: &str, path: &str, body: Value) -> Value {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let mut req = self
            .http
            .request(m, format!("{}/v1/{path}", self.addr()))
            .header("X-Vault-Token", self.dv.root_token());
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("devvault answers");
        let status = resp.status();
        let text = resp.text().await.expect("devvault body");
        assert!(status.is_success(), "{method} {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The request log after `since_seq` (0 for all of it).
    pub async fn requests(&self, since_seq: u64) -> Vec<Req> {
        let url = format!("{}/__devvault/requests?since_seq={since_seq}", self.addr());
        let body: Value = self
            .http
            .get(url)
            .send()
            .await
            .expect("devvault request log")
            .json()
            .await
            .expect("request log is JSON");
        body["requests"]
            .as_array()
            .map(|a| a.iter().filter_map(parse_req).collect())
            .unwrap_or_default()
    }

    /// The last sequence number logged so far.
    pub async fn last_seq(&self) -> u64 {
        self.requests(0).await.last().map(|r| r.seq).unwrap_or(0)
    }
}

fn parse_req(v: &Value) -> Option<Req> {
    Some(Req {
        seq: v["seq"].as_u64()?,
        ts_ms: v["ts_ms"].as_i64()?,
        method: v["method"].as_str()?.to_string(),
        path: v["path"].as_str()?.to_string(),
        query: v["query"].as_str().unwrap_or("").to_string(),
        status: u16::try_from(v["status"].as_u64()?).ok()?,
        duration_ms: v["duration_ms"].as_u64().unwrap_or(0),
    })
}

/// How many `v-` login roles (dynamic credentials) exist in PostgreSQL right now.
pub async fn pg_dynamic_roles(pg: &PgCluster) -> Result<i64, tokio_postgres::Error> {
    let conn = pg.conn_string(pg.superuser(), pg.superuser_password());
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-%'",
            &[],
        )
        .await?;
    drop(client);
    let _ = task.await;
    Ok(row.get(0))
}
