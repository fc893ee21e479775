//! Shared pieces of the black-box tests: a PostgreSQL cluster, devvault configured through the
//! standard Vault API, and the real `vault-rotator` binary as a child process.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::devvault::DevVault;
use testkit::pg::PgCluster;

/// Fields drop in order: devvault goes before the database it talks to.
pub struct Stack {
    pub vault: DevVault,
    pub pg: PgCluster,
    pub http: reqwest::Client,
}

pub const ROLE_SQL: &[&str] = &[
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    "GRANT CONNECT ON DATABASE postgres TO \"{{name}}\";",
];

impl Stack {
    pub async fn start() -> Stack {
        let pg = PgCluster::start();
        Stack::with(DevVault::start(&[]), pg).await
    }

    /// Configures the database engine and the `app` policy on a devvault already started.
    pub async fn with(vault: DevVault, pg: PgCluster) -> Stack {
        let stack = Stack {
            vault,
            pg,
            http: reqwest::Client::new(),
        };
        stack
            .api("POST", "sys/mounts/database", json!({"type": "database"}))
            .await;
        let url = format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres",
            stack.pg.port()
        );
        stack
            .api(
                "POST",
                "database/config/pg",
                json!({
                    "plugin_name": "postgresql-database-plugin",
                    "connection_url": url,
                    "username": stack.pg.superuser(),
                    "password": stack.pg.superuser_password(),
                    "allowed_roles": "*",
                }),
            )
            .await;
        stack
            .api(
                "PUT",
                "sys/policies/acl/app",
                json!({"policy": r#"
path "database/creds/*" { capabilities = ["read"] }
path "database/static-creds/*" { capabilities = ["read"] }
path "database/rotate-role/*" { capabilities = ["update"] }
path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
"#}),
            )
            .await;
        stack
    }

    pub fn addr(&self) -> &str {
        self.vault.addr()
    }

    /// A Vault API call with the root token; panics with Vault's answer when it fails.
    pub async fn api(&self, method: &str, path: &str, body: Value) -> Value {
        self.api_with(method, path, body, self.vault.root_token(), &[])
            .await
    }

    pub async fn api_with(
        &self,
        method: &str,
        path: &str,
        body: Value,
        token: &str,
        headers: &[(&str, &str)],
    ) -> Value {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(m, format!("{}/v1/{path}", self.addr()))
            .header("X-Vault-Token", token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status}: {text}");
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    /// The test control API of devvault.
    pub async fn control(&self, method: &str, path: &str, body: Value) -> Value {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(m, format!("{}/__devvault/{path}", self.addr()));
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "control {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn dynamic_role(&self, name: &str, ttl: &str, max_ttl: &str) {
        self.api(
            "POST",
            &format!("database/roles/{name}"),
            json!({"db_name": "pg", "creation_statements": ROLE_SQL, "default_ttl": ttl, "max_ttl": max_ttl}),
        )
        .await;
    }

    /// An AppRole `app` with the `app` policy; returns (role_id, secret_id).
    pub async fn approle(&self, token_ttl: &str, token_max_ttl: &str) -> (String, String) {
        self.api("POST", "sys/auth/approle", json!({"type": "approle"}))
            .await;
        self.api(
            "POST",
            "auth/approle/role/app",
            json!({"token_policies": ["app"], "token_ttl": token_ttl, "token_max_ttl": token_max_ttl}),
        )
        .await;
        let role_id = self
            .api("GET", "auth/approle/role/app/role-id", Value::Null)
            .await["data"]["role_id"]
            .as_str()
            .unwrap()
            .to_string();
        let secret_id = self
            .api("POST", "auth/approle/role/app/secret-id", json!({}))
            .await["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_string();
        (role_id, secret_id)
    }

    /// Tries to log in to PostgreSQL with a credential.
    pub async fn pg_login(&self, user: &str, password: &str) -> Result<(), String> {
        let conn = self.pg.conn_string(user, password);
        match tokio_postgres::connect(&conn, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                let h = tokio::spawn(connection);
                let r = client
                    .simple_query("SELECT 1")
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                drop(client);
                let _ = h.await;
                r
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether a role exists in PostgreSQL.
    pub async fn pg_role_exists(&self, user: &str) -> bool {
        let (client, connection) = tokio_postgres::connect(
            &self
                .pg
                .conn_string(self.pg.superuser(), self.pg.superuser_password()),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        let h = tokio::spawn(connection);
        let rows = client
            .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
            .await
            .unwrap();
        drop(client);
        let _ = h.await;
        !rows.is_empty()
    }

    /// Login roles created by the database engine (Vault's `v-` names).
    pub async fn pg_dynamic_roles(&self) -> Vec<String> {
        let (client, connection) = tokio_postgres::connect(
            &self
                .pg
                .conn_string(self.pg.superuser(), self.pg.superuser_password()),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        let h = tokio::spawn(connection);
        let rows = client
            .query(
                "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'v-%' ORDER BY 1",
                &[],
            )
            .await
            .unwrap();
        drop(client);
        let _ = h.await;
        rows.iter().map(|r| r.get::<_, String>(0)).collect()
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The agent binary as a child process; killed on drop. stderr goes to a file so tests can
/// read (and scan) every log line.
pub struct AgentProc {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl AgentProc {
    pub fn spawn(args: &[&str], envs: &[(&str, &str)], dir: &Path) -> AgentProc {
        let port = free_port();
        let log = dir.join(format!("agent-{port}.log"));
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_vault-rotator"))
            .args(args)
            .args([
                "--listen",
                &listen,
                "--splay",
                "0s",
                "--backoff-min",
                "200ms",
                "--backoff-max",
                "2s",
            ])
            .env_clear()
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        AgentProc { child, port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn status(&self, path: &str) -> Option<u16> {
        reqwest::get(self.url(path))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Waits for `/ready` to answer 200.
    pub async fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.status("/ready").await == Some(200) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited with {status}; logs:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("agent not ready after {limit:?}; logs:\n{}", self.logs());
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGTERM, then the exit code.
    pub fn stop(&mut self) -> i32 {
        self.signal("TERM");
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "agent did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The credential file as JSON, or None while it does not exist.
pub fn read_cred(path: &Path) -> Option<Value> {
    let bytes = std::fs::read(path).ok()?;
    Some(serde_json::from_slice(&bytes).expect("the credential file always parses"))
}

pub fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
        .to_string()
}

/// Polls `f` until it returns Some, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
