//! The world the agents run against: one throwaway PostgreSQL cluster, and Vault servers
//! (devvault, or a real OpenBao dev server) configured through the ordinary Vault API (database
//! engine, roles, a policy and an AppRole), the way an operator would configure Vault. Each
//! measurement that runs beside another gets its own server, so its request log holds only its
//! own agent's requests: devvault's request log, or OpenBao's file audit log.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use testkit::devvault::DevVault;
use testkit::openbao::OpenBao;
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

/// Which server a measurement runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// devvault, in the agent's own dialect.
    DevVault,
    /// A real OpenBao dev server (`bao server -dev`) with a file audit device.
    OpenBao,
}

enum Backend {
    Dev(DevVault),
    Bao(OpenBao),
}

/// One entry of devvault's request log (or of OpenBao's audit log, see [`audit_requests`]).
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
    backend: Backend,
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
        server: Server,
        dir: &Path,
        token_ttl: &str,
        token_max_ttl: &str,
    ) -> Vault {
        let backend = match server {
            Server::DevVault => {
                let mut args = vec!["--log", "error"];
                if flavor == Flavor::OpenBao {
                    args.extend(["--flavor", "openbao"]);
                }
                Backend::Dev(DevVault::start(&args))
            }
            Server::OpenBao => Backend::Bao(
                OpenBao::try_start_audited(&|k| std::env::var(k).ok())
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
        };
        let http = reqwest::Client::new();
        let mut vault = Vault {
            backend,
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
        match &self.backend {
            Backend::Dev(v) => v.addr(),
            Backend::Bao(v) => v.addr(),
        }
    }

    pub fn pid(&self) -> u32 {
        match &self.backend {
            Backend::Dev(v) => v.pid(),
            Backend::Bao(v) => v.pid(),
        }
    }

    fn root_token(&self) -> &str {
        match &self.backend {
            Backend::Dev(v) => v.root_token(),
            Backend::Bao(v) => v.root_token(),
        }
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
            .header("X-Vault-Token", self.root_token());
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("Vault answers");
        let status = resp.status();
        let text = resp.text().await.expect("Vault's body");
        assert!(status.is_success(), "{method} {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The request log after `since_seq` (0 for all of it).
    pub async fn requests(&self, since_seq: u64) -> Vec<Req> {
        if let Backend::Bao(b) = &self.backend {
            return audit_requests(&b.audit_log())
                .into_iter()
                .filter(|r| r.seq > since_seq)
                .collect();
        }
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

/// OpenBao's audit log as a request log: one [`Req`] per `request` entry, numbered from 1 in
/// order, with the status and duration taken from its `response` entry (the audit log has no
/// HTTP status: an `error` means 400, or 403 for "permission denied"; else 200). Paths get their
/// `/v1/` back; operations map to the methods the agents use.
pub fn audit_requests(log: &str) -> Vec<Req> {
    let entries: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut responses = std::collections::HashMap::new();
    for e in entries.iter().filter(|e| e["type"] == "response") {
        if let Some(id) = e["request"]["id"].as_str() {
            responses.insert(id.to_string(), e);
        }
    }
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e["type"] == "request") {
        let Some(ts_ms) = audit_time_ms(e) else {
            continue;
        };
        let response = e["request"]["id"].as_str().and_then(|id| responses.get(id));
        let status = match response.and_then(|r| r["error"].as_str()) {
            Some(err) if err.contains("permission denied") => 403,
            Some(err) if !err.is_empty() => 400,
            _ => 200,
        };
        let done = response.and_then(|r| audit_time_ms(r)).unwrap_or(ts_ms);
        let method = match e["request"]["operation"].as_str().unwrap_or("") {
            "read" => "GET",
            "list" => "LIST",
            "delete" => "DELETE",
            _ => "PUT",
        };
        out.push(Req {
            seq: out.len() as u64 + 1,
            ts_ms,
            method: method.to_string(),
            path: format!("/v1/{}", e["request"]["path"].as_str().unwrap_or("")),
            query: String::new(),
            status,
            duration_ms: u64::try_from(done - ts_ms).unwrap_or(0),
        });
    }
    out
}

/// An audit entry's `time` (RFC 3339, nanoseconds) in ms since the Unix epoch.
fn audit_time_ms(e: &Value) -> Option<i64> {
    let t = humantime::parse_rfc3339(e["time"].as_str()?).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_log_becomes_a_request_log() {
        let log = r#"{"time":"2026-11-30T05:53:15.600000000Z","type":"request","request":{"id":"a","operation":"update","path":"auth/approle/login"}}
{"time":"2026-11-30T05:53:15.604000000Z","type":"response","request":{"id":"a","operation":"update","path":"auth/approle/login"}}
{"time":"2026-11-30T05:53:15.610000000Z","type":"request","request":{"id":"b","operation":"read","path":"database/creds/app"}}
{"time":"2026-11-30T05:53:15.611000000Z","type":"response","request":{"id":"b","operation":"read","path":"database/creds/app"},"error":"1 error occurred:\n\t* permission denied\n\n"}
not json
"#;
        let reqs = audit_requests(log);
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            (reqs[0].seq, reqs[0].method.as_str(), reqs[0].path.as_str()),
            (1, "PUT", "/v1/auth/approle/login")
        );
        assert_eq!((reqs[0].status, reqs[0].duration_ms), (200, 4));
        assert_eq!(
            (reqs[1].seq, reqs[1].method.as_str(), reqs[1].status),
            (2, "GET", 403)
        );
        assert_eq!(reqs[1].ts_ms - reqs[0].ts_ms, 10);
    }
}
