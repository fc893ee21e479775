//! PostgreSQL access for the database engine: a small per-connection-string
//! pool of `tokio_postgres` clients and transactional statement execution.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Config, NoTls};

/// How to reach a database as the engine's admin user. `Debug` redacts the
/// password so connection details can be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnSpec {
    /// Connection URL or DSN with `{{username}}`/`{{password}}` already filled in.
    pub url: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for ConnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnSpec")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Database failures, rendered like lib/pq errors (`pq: ...`) as Vault shows them.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid connection URL: {0}")]
    Url(String),
    #[error("failed to connect: {0}")]
    Connect(String),
    #[error("pq: {0}")]
    Exec(String),
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

impl ConnSpec {
    fn config(&self) -> Result<Config, PgError> {
        let mut cfg = Config::from_str(&self.url).map_err(|e| PgError::Url(e.to_string()))?;
        if cfg.get_user().is_none() && !self.username.is_empty() {
            cfg.user(&self.username);
        }
        if cfg.get_password().is_none() && !self.password.is_empty() {
            cfg.password(&self.password);
        }
        cfg.connect_timeout(Duration::from_secs(5));
        Ok(cfg)
    }
}

/// How many database operations may run at once. A herd of credential
/// requests queues here instead of exhausting PostgreSQL's `max_connections`.
const MAX_CONCURRENT: usize = 16;

/// Idle admin connections, keyed by connection spec.
pub struct Pools {
    idle: Mutex<HashMap<String, Vec<Client>>>,
    limit: Semaphore,
}

impl Default for Pools {
    fn default() -> Self {
        Pools {
            idle: Mutex::new(HashMap::new()),
            limit: Semaphore::new(MAX_CONCURRENT),
        }
    }
}

impl Pools {
    fn key(spec: &ConnSpec) -> String {
        format!("{}\u{0}{}", spec.url, spec.username)
    }

    fn take(&self, spec: &ConnSpec) -> Option<Client> {
        let mut idle = match self.idle.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let list = idle.get_mut(&Self::key(spec))?;
        while let Some(c) = list.pop() {
            if !c.is_closed() {
                return Some(c);
            }
        }
        None
    }

    fn put(&self, spec: &ConnSpec, c: Client) {
        if c.is_closed() {
            return;
        }
        let mut idle = match self.idle.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let list = idle.entry(Self::key(spec)).or_default();
        // A handful of idle connections is plenty for a dev server.
        if list.len() < 8 {
            list.push(c);
        }
    }

    /// Drops pooled connections for a spec (config changed or deleted).
    pub fn forget(&self, spec: &ConnSpec) {
        let mut idle = match self.idle.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        idle.remove(&Self::key(spec));
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>, PgError> {
        self.limit
            .acquire()
            .await
            .map_err(|_| PgError::Connect("shutting down".into()))
    }

    async fn get(&self, spec: &ConnSpec) -> Result<Client, PgError> {
        if let Some(c) = self.take(spec) {
            return Ok(c);
        }
        connect(spec).await
    }

    /// Runs `statements` in one transaction (each may hold several `;`-separated commands).
    pub async fn exec_tx(&self, spec: &ConnSpec, statements: &[String]) -> Result<(), PgError> {
        let _permit = self.permit().await?;
        let mut client = self.get(spec).await?;
        let result = async {
            let tx = client
                .transaction()
                .await
                .map_err(|e| PgError::Exec(describe(&e)))?;
            for s in statements {
                if s.trim().is_empty() {
                    continue;
                }
                tx.batch_execute(s)
                    .await
                    .map_err(|e| PgError::Exec(describe(&e)))?;
            }
            tx.commit().await.map_err(|e| PgError::Exec(describe(&e)))
        }
        .await;
        self.put(spec, client);
        result
    }

    /// Whether a role exists.
    pub async fn role_exists(&self, spec: &ConnSpec, name: &str) -> Result<bool, PgError> {
        let _permit = self.permit().await?;
        let client = self.get(spec).await?;
        let r = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .map_err(|e| PgError::Exec(describe(&e)));
        self.put(spec, client);
        Ok(r?.is_some())
    }

    /// Terminates every session of `name` so a following DROP ROLE succeeds
    /// and the credential stops working immediately.
    pub async fn terminate_sessions(&self, spec: &ConnSpec, name: &str) -> Result<(), PgError> {
        let _permit = self.permit().await?;
        let client = self.get(spec).await?;
        let r = client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .await
            .map_err(|e| PgError::Exec(describe(&e)));
        self.put(spec, client);
        r.map(|_| ())
    }

    /// Verifies that the spec connects (`verify_connection`).
    pub async fn ping(&self, spec: &ConnSpec) -> Result<(), PgError> {
        let _permit = self.permit().await?;
        let client = connect(spec).await?;
        let r = client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| PgError::Exec(describe(&e)));
        self.put(spec, client);
        r.map(|_| ())
    }
}

async fn connect(spec: &ConnSpec) -> Result<Client, PgError> {
    let cfg = spec.config()?;
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .map_err(|e| PgError::Connect(describe(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}
