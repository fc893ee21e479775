//! Shared harness: runs the real devvault binary on port 0 and talks HTTP to it.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ROOT: &str = "root";

/// A running devvault process, killed on drop.
pub struct Dv {
    child: Child,
    pub base: String,
    pub client: reqwest::Client,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// The `errors` array as strings.
    pub fn errors(&self) -> Vec<String> {
        self.json()["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array: {}", self.text))
            .iter()
            .map(|e| e.as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

pub fn fixture(name: &str) -> String {
    let p = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {p}: {e}"))
}

impl Dv {
    pub fn start() -> Dv {
        Dv::start_with(&[])
    }

    /// Starts devvault with extra flags and waits for the ready line.
    pub fn start_with(extra: &[&str]) -> Dv {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_devvault"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--root-token",
                ROOT,
                "--log",
                "warn",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn devvault");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        let base = line
            .trim()
            .strip_prefix("devvault listening on ")
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
            .to_string();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "devvault took {:?} to be ready",
            started.elapsed()
        );
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(20));
        if base.starts_with("https") {
            let ca = reqwest::Certificate::from_pem(fixture("test-only-tls-ca.pem").as_bytes())
                .expect("ca");
            builder = builder.add_root_certificate(ca);
        }
        Dv {
            child,
            base,
            client: builder.build().expect("client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request; `path` starts with `/`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        self.call_h(method, path, token, body, &[]).await
    }

    pub async fn call_h(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.client.request(m, self.url(path));
        if let Some(t) = token {
            rb = rb.header("X-Vault-Token", t);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.body(serde_json::to_vec(b).expect("body"));
        }
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body text");
        Resp {
            status,
            headers,
            text,
        }
    }

    /// Root-token request.
    pub async fn root(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        self.call(method, path, Some(ROOT), body).await
    }

    /// Root-token request that must succeed (2xx).
    pub async fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let r = self.root(method, path, body).await;
        assert!(r.status < 300, "{method} {path} -> {} {}", r.status, r.text);
        r
    }
}

impl Drop for Dv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tries to log in to PostgreSQL; returns the client on success.
pub async fn pg_connect(
    port: u16,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5));
    let (client, conn) =
        cfg.connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => e.to_string(),
            })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The cluster's superuser connection, retried briefly: right after start-up
/// PostgreSQL may still answer "the database system is starting up".
pub async fn pg_admin(port: u16, user: &str, password: &str) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match pg_connect(port, user, password).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for PostgreSQL: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot connect as {user}: {e}"),
        }
    }
}

/// Whether `user`/`password` can log in and run a query.
pub async fn pg_login_works(port: u16, user: &str, password: &str) -> bool {
    match pg_connect(port, user, password).await {
        Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    }
}

/// The exact 403 texts.
pub const INVALID_TOKEN: &str = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n";
pub const DENIED: &str = "1 error occurred:\n\t* permission denied\n\n";
