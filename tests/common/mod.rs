//! Shared pieces of the black-box tests: a PostgreSQL cluster, a Vault server (devvault or a
//! real OpenBao dev server) configured through the standard Vault API, and the real
//! `vault-rotator` binary as a child process.
//!
//! A scenario that both servers can host is an `async fn name(v: Vault)`, and
//! `matrix!(name, ...)` turns it into two tests, `name::devvault` and `name::openbao`.
//! Scenarios that need devvault's fault controls (`/__devvault/...`) stay plain tests on devvault.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::devvault::DevVault;
use testkit::mariadb::MariaDb;
use testkit::openbao::OpenBao;
use testkit::pg::PgCluster;

/// Which Vault server a scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vault {
    /// devvault, the project's stand-in: fast, with fault controls.
    Dev,
    /// A real OpenBao dev server (`bao server -dev`), the reference.
    Bao,
}

/// Turns each `async fn scenario(v: Vault)` into a module with two tests, `devvault` and
/// `openbao`, so `cargo test openbao` runs every scenario on the real server.
#[allow(unused_macros)] // not every test file has a matrix
macro_rules! matrix {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn devvault() {
                super::$name(crate::common::Vault::Dev).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn openbao() {
                super::$name(crate::common::Vault::Bao).await
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use matrix;

/// A running Vault server of either kind.
pub enum Server {
    Dev(DevVault),
    Bao(OpenBao),
}

impl Server {
    pub fn start(kind: Vault) -> Server {
        match kind {
            Vault::Dev => Server::Dev(DevVault::start(&[])),
            // Audited, so a scenario can count requests as it does with devvault's log.
            Vault::Bao => Server::Bao(OpenBao::start_audited()),
        }
    }

    pub fn kind(&self) -> Vault {
        match self {
            Server::Dev(_) => Vault::Dev,
            Server::Bao(_) => Vault::Bao,
        }
    }

    pub fn addr(&self) -> &str {
        match self {
            Server::Dev(v) => v.addr(),
            Server::Bao(v) => v.addr(),
        }
    }

    pub fn root_token(&self) -> &str {
        match self {
            Server::Dev(v) => v.root_token(),
            Server::Bao(v) => v.root_token(),
        }
    }

    pub fn pid(&self) -> u32 {
        match self {
            Server::Dev(v) => v.pid(),
            Server::Bao(v) => v.pid(),
        }
    }
}

impl From<DevVault> for Server {
    fn from(v: DevVault) -> Server {
        Server::Dev(v)
    }
}

impl From<OpenBao> for Server {
    fn from(v: OpenBao) -> Server {
        Server::Bao(v)
    }
}

/// Fields drop in order: the Vault server goes before the database it talks to.
pub struct Stack {
    pub vault: Server,
    pub pg: PgCluster,
    pub http: reqwest::Client,
}

/// The agent's policy, as `scripts/setup-vault.sh` writes it.
pub const APP_POLICY: &str = r#"
path "database/creds/*" { capabilities = ["read"] }
path "database/static-creds/*" { capabilities = ["read"] }
path "database/rotate-role/*" { capabilities = ["update"] }
path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
"#;

pub const ROLE_SQL: &[&str] =
    &["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"];

impl Stack {
    /// devvault and PostgreSQL.
    pub async fn start() -> Stack {
        Stack::start_on(Vault::Dev).await
    }

    /// The given server and PostgreSQL.
    pub async fn start_on(kind: Vault) -> Stack {
        let pg = PgCluster::start();
        Stack::with(Server::start(kind), pg).await
    }

    /// Configures the database engine and the `app` policy on a server already started.
    pub async fn with(vault: impl Into<Server>, pg: PgCluster) -> Stack {
        let stack = Stack {
            vault: vault.into(),
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
                json!({ "policy": APP_POLICY }),
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

    pub fn kind(&self) -> Vault {
        self.vault.kind()
    }

    pub fn is_devvault(&self) -> bool {
        self.kind() == Vault::Dev
    }

    /// The test control API of devvault; a scenario that calls it on OpenBao is a bug.
    pub async fn control(&self, method: &str, path: &str, body: Value) -> Value {
        assert!(
            self.is_devvault(),
            "/__devvault/{path} is devvault's fault control; this step must not run on OpenBao"
        );
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

    /// The database engine pointed at MariaDB too (connection `maria`, OpenBao's MySQL
    /// plugin), with a role `maria` whose users may log in from anywhere (MariaDB runs with
    /// `--skip-name-resolve` on 127.0.0.1) and read one schema, but not see others' sessions.
    pub async fn mariadb_role(&self, db: &MariaDb, ttl: &str, max_ttl: &str) {
        const MARIA_SQL: &[&str] = &[
            "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",
            "GRANT SELECT ON mysql.db TO '{{name}}'@'%';",
        ];
        self.api(
            "POST",
            "database/config/maria",
            json!({
                "plugin_name": "mysql-database-plugin",
                "connection_url": db.plugin_connection_url(),
                "username": db.admin_user(),
                "password": db.admin_password(),
                "allowed_roles": "*",
            }),
        )
        .await;
        self.api(
            "POST",
            "database/roles/maria",
            json!({"db_name": "maria", "creation_statements": MARIA_SQL,
                   "default_ttl": ttl, "max_ttl": max_ttl}),
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
    /// Runs SQL as the superuser.
    pub async fn pg_exec(&self, sql: &str) {
        let admin = self
            .pg
            .conn_string(self.pg.superuser(), self.pg.superuser_password());
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        let h = tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = h.await;
    }

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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vault-rotator"));
        cmd.args(args);
        AgentProc::launch(cmd, envs, dir)
    }

    /// Like [`AgentProc::spawn`], with the test defaults except the start splay (zero there),
    /// which is `splay` here.
    pub fn spawn_with_splay(args: &[&str], splay: &str, dir: &Path) -> AgentProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vault-rotator"));
        cmd.args(args);
        AgentProc::launch_with(cmd, &[("VAULT_ROTATOR_SPLAY", splay)], dir, false)
    }

    fn launch(cmd: Command, envs: &[(&str, &str)], dir: &Path) -> AgentProc {
        AgentProc::launch_with(cmd, envs, dir, true)
    }

    /// Starts `cmd` (the agent, maybe behind a wrapper) with the test defaults, on a probe
    /// port the agent picks itself and reports in its log: picking a free port here and
    /// passing it on would race with other tests doing the same.
    fn launch_with(
        mut cmd: Command,
        envs: &[(&str, &str)],
        dir: &Path,
        no_splay: bool,
    ) -> AgentProc {
        static NEXT_LOG: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT_LOG.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("agent-{n}.log"));
        if no_splay {
            cmd.args(["--splay", "0s"]);
        }
        let child = cmd
            .args([
                "--listen",
                "127.0.0.1:0",
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
        let mut agent = AgentProc {
            child,
            port: 0,
            log,
        };
        agent.port = agent.discover_port();
        agent
    }

    /// The probe port from the agent's "serving /health ..." log line; 0 when the agent
    /// exited (or never listened) first, so a test then fails on a refused connection.
    fn discover_port(&mut self) -> u16 {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Some(port) = listen_port(&self.logs()) {
                return port;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return 0;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        0
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

// ---------------------------------------------------------------------------------------------
// Helpers for the fault and security tests (tests/faults_e2e.rs, tests/security_e2e.rs).

impl Stack {
    /// Adds a devvault fault (see devvault/README.md, "Faults"); returns its id.
    pub async fn fault(&self, spec: Value) -> u64 {
        let r = self.control("POST", "faults", spec).await;
        r["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no fault id in {r}"))
    }

    /// devvault's request log entries whose path starts with `prefix` and whose `seq` is above
    /// `since_seq`.
    pub async fn requests(&self, prefix: &str, since_seq: u64) -> Vec<Value> {
        let r = self
            .control(
                "GET",
                &format!("requests?path_prefix={prefix}&since_seq={since_seq}"),
                Value::Null,
            )
            .await;
        r["requests"].as_array().cloned().unwrap_or_default()
    }

    /// The highest `seq` in devvault's request log so far (0 when empty).
    pub async fn last_seq(&self) -> u64 {
        let r = self
            .control(
                "GET",
                "requests?since_seq=18446744073709551615",
                Value::Null,
            )
            .await;
        r["last_seq"].as_u64().unwrap_or(0)
    }

    /// The usernames of the database leases devvault holds now.
    pub async fn lease_usernames(&self) -> std::collections::BTreeSet<String> {
        let r = self.control("GET", "leases", Value::Null).await;
        r["leases"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["username"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Writes an AppRole's role_id and secret_id to files in `dir`; returns the agent flags that
/// log in with them.
pub fn approle_args(dir: &Path, role_id: &str, secret_id: &str) -> Vec<String> {
    let r = dir.join("role-id");
    let s = dir.join("secret-id");
    std::fs::write(&r, role_id).unwrap();
    std::fs::write(&s, secret_id).unwrap();
    vec![
        "--auth".into(),
        "approle".into(),
        "--role-id-file".into(),
        r.display().to_string(),
        "--secret-id-file".into(),
        s.display().to_string(),
    ]
}

impl AgentProc {
    /// Like [`AgentProc::spawn`], but the agent is started by `sh` with `umask` set first (to
    /// show the file modes do not depend on it).
    pub fn spawn_with_umask(
        args: &[&str],
        envs: &[(&str, &str)],
        dir: &Path,
        umask: &str,
    ) -> AgentProc {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_vault-rotator"))
            .args(args);
        AgentProc::launch(cmd, envs, dir)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET `path` on the probe port: status and body, or None when the request failed.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let resp = client.get(self.url(path)).send().await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    /// Waits until `/health` answers 200: from then on the signal handlers are installed
    /// (SIGUSR1 before that would kill the process).
    pub async fn wait_healthy(&mut self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.status("/health").await == Some(200) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited with {status}; logs:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("agent not healthy after {limit:?}; logs:\n{}", self.logs());
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident memory (VmHWM) of a process in KiB, from /proc.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A thread that reads the credential file as fast as it can (like an app that opens it by path
/// on every read) and remembers every problem: a missing, empty, torn or unparsable file.
pub struct FileWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<WatchReport>>,
}

#[derive(Debug, Default)]
pub struct WatchReport {
    pub reads: u64,
    /// Every bad read, described (at most the first 20 are kept).
    pub problems: Vec<String>,
    pub bad_reads: u64,
    /// Distinct `username`s seen, in order of first appearance.
    pub usernames: Vec<String>,
    /// Distinct file contents seen (counts, not kept).
    pub distinct_contents: u64,
}

impl FileWatch {
    /// Starts watching `path`, which must already hold a credential. `pause` between reads
    /// (zero: back to back).
    pub fn start(path: &Path, pause: Duration) -> FileWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let path = path.to_path_buf();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut report = WatchReport::default();
            let mut last = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                report.reads += 1;
                let problem = match std::fs::read(&path) {
                    Err(e) => Some(format!("read failed: {e}")),
                    Ok(bytes) if bytes.is_empty() => Some("empty file".to_string()),
                    Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                        Err(e) => Some(format!("does not parse ({e}): {} bytes", bytes.len())),
                        Ok(v) if v["password"].as_str().is_none_or(str::is_empty) => {
                            Some(format!("no password in {} bytes", bytes.len()))
                        }
                        Ok(v) => {
                            if bytes != last {
                                report.distinct_contents += 1;
                                last = bytes;
                            }
                            if let Some(u) = v["username"].as_str() {
                                if report.usernames.last().is_none_or(|l| l != u)
                                    && !report.usernames.iter().any(|x| x == u)
                                {
                                    report.usernames.push(u.to_string());
                                }
                            }
                            None
                        }
                    },
                };
                if let Some(p) = problem {
                    report.bad_reads += 1;
                    if report.problems.len() < 20 {
                        report.problems.push(p);
                    }
                }
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
            report
        });
        FileWatch {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> WatchReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("file watch thread")
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl AgentProc {
    /// SIGUSR1 (rotate now) without spawning `kill`, for bursts.
    pub fn usr1(&self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGUSR1);
    }
}

/// Writes an AppRole role_id and secret_id (or wrapping token) to files in `dir`, returning
/// their paths for `--role-id-file` and `--secret-id-file`.
pub fn approle_files(dir: &Path, role_id: &str, secret_id: &str) -> (String, String) {
    let r = dir.join("role-id");
    let s = dir.join("secret-id");
    std::fs::write(&r, role_id).unwrap();
    std::fs::write(&s, secret_id).unwrap();
    (r.display().to_string(), s.display().to_string())
}

/// The port in the agent's "serving /health ..." line, text or JSON log format.
fn listen_port(logs: &str) -> Option<u16> {
    let line = logs.lines().find(|l| l.contains("serving /health"))?;
    let at = line.find("127.0.0.1:")? + "127.0.0.1:".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl AgentProc {
    /// The agent logging in with AppRole (role_id and secret_id written to files in `dir`) and
    /// writing `database/creds/app` to `out`, plus `extra` flags.
    pub fn approle(
        stack: &Stack,
        dir: &Path,
        role_id: &str,
        secret_id: &str,
        out: &Path,
        extra: &[&str],
    ) -> AgentProc {
        let login = (role_id, secret_id);
        AgentProc::approle_secret(stack, dir, login, "database/creds/app", out, extra)
    }

    /// [`AgentProc::approle`] for another secret path.
    pub fn approle_secret(
        stack: &Stack,
        dir: &Path,
        (role_id, secret_id): (&str, &str),
        secret: &str,
        out: &Path,
        extra: &[&str],
    ) -> AgentProc {
        let (rf, sf) = approle_files(dir, role_id, secret_id);
        let mut args = vec![
            "--vault-addr",
            stack.addr(),
            "--auth",
            "approle",
            "--role-id-file",
            &rf,
            "--secret-id-file",
            &sf,
            "--secret",
            secret,
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        AgentProc::spawn(&args, &[], dir)
    }
}

// ---------------------------------------------------------------------------------------------
// Faults made through the standard API, so that they run on real OpenBao as well as devvault.

impl Stack {
    /// An API call with the root token that may fail: the status and the body (Null if empty).
    pub async fn api_status(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(m, format!("{}/v1/{path}", self.addr()))
            .header("X-Vault-Token", self.vault.root_token());
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The lease ids under `prefix` (e.g. `database/creds/app/`), from `LIST sys/leases/lookup`.
    pub async fn lease_ids(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.trim_end_matches('/');
        let (status, body) = self
            .api_status("LIST", &format!("sys/leases/lookup/{prefix}/"), Value::Null)
            .await;
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200, "LIST sys/leases/lookup/{prefix}/: {body}");
        body["data"]["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(|k| format!("{prefix}/{k}")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Revokes a lease out of band (as an operator would).
    pub async fn revoke_lease(&self, lease_id: &str) {
        self.api("PUT", "sys/leases/revoke", json!({"lease_id": lease_id}))
            .await;
    }

    /// The accessors of the live tokens that carry `policy` (the agent's tokens carry `app`).
    pub async fn token_accessors_with_policy(&self, policy: &str) -> Vec<String> {
        let list = self.api("LIST", "auth/token/accessors", Value::Null).await;
        let mut found = Vec::new();
        for a in list["data"]["keys"].as_array().cloned().unwrap_or_default() {
            let Some(a) = a.as_str() else { continue };
            let (status, t) = self
                .api_status("POST", "auth/token/lookup-accessor", json!({"accessor": a}))
                .await;
            let has = t["data"]["policies"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x == policy));
            if status == 200 && has {
                found.push(a.to_string());
            }
        }
        found
    }

    /// Revokes a token (and with it its child leases) out of band.
    pub async fn revoke_accessor(&self, accessor: &str) {
        self.api(
            "POST",
            "auth/token/revoke-accessor",
            json!({"accessor": accessor}),
        )
        .await;
    }

    /// `sys/mounts/<mount>/tune`: caps every lease of the mount at `max_lease_ttl`.
    pub async fn tune_max_ttl(&self, mount: &str, max_lease_ttl: &str) {
        self.api(
            "POST",
            &format!("sys/mounts/{mount}/tune"),
            json!({"max_lease_ttl": max_lease_ttl}),
        )
        .await;
    }

    /// Seals the server: every request but the unauthenticated sys ones now answers 503.
    pub async fn seal(&self) {
        match &self.vault {
            Server::Bao(_) => {
                self.api("PUT", "sys/seal", Value::Null).await;
            }
            Server::Dev(_) => {
                self.control("POST", "seal", Value::Null).await;
            }
        }
    }

    /// Unseals: on OpenBao with the key dev mode printed, as an operator would.
    pub async fn unseal(&self) {
        match &self.vault {
            Server::Bao(b) => {
                let r = self
                    .api("PUT", "sys/unseal", json!({"key": b.unseal_key()}))
                    .await;
                assert_eq!(r["sealed"], false, "still sealed after the dev key: {r}");
            }
            Server::Dev(_) => {
                self.control("POST", "unseal", Value::Null).await;
            }
        }
    }
}

impl Stack {
    /// How many requests whose API path (without `/v1/`) starts with `prefix` the server has
    /// seen so far: devvault's request log, or OpenBao's audit log.
    pub async fn request_count(&self, prefix: &str) -> usize {
        match &self.vault {
            Server::Dev(_) => self.requests(&format!("/v1/{prefix}"), 0).await.len(),
            Server::Bao(b) => b
                .audit_log()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| {
                    e["type"] == "request"
                        && e["request"]["path"]
                            .as_str()
                            .is_some_and(|p| p.starts_with(prefix))
                })
                .count(),
        }
    }
}

impl AgentProc {
    /// The admin listener's port, from the agent's "serving POST /rotate (admin)" log line (start
    /// it with `--admin-listen 127.0.0.1:0`). Panics when the line does not come.
    pub fn admin_port(&self) -> u16 {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            let logs = self.logs();
            let port = logs
                .lines()
                .find(|l| l.contains("serving POST /rotate (admin)"))
                .and_then(|l| {
                    // `addr=IP:PORT` (text) or `"addr":"IP:PORT"` (JSON).
                    let rest = l.split("addr").nth(1)?;
                    let rest = rest.trim_start_matches(|ch: char| !ch.is_ascii_digit());
                    let addr: String = rest
                        .chars()
                        .take_while(|ch| ch.is_ascii_digit() || *ch == '.' || *ch == ':')
                        .collect();
                    addr.rsplit(':').next()?.parse().ok()
                });
            if let Some(port) = port {
                return port;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no admin listener in the agent's log:\n{}", self.logs())
    }
}
