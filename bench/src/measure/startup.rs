//! Start-up: from spawn to `/ready` 200 (vault-rotator) or to the rendered file (OpenBao
//! Agent, which has no readiness endpoint), less the time Vault took. The Vault time is found
//! by replaying the requests the agent made up to and including its first credential read,
//! in order, with a fresh HTTP client over a new connection, as the agent did. Also the CPU
//! the process had used when it became ready, and its memory one second later ("at start").

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agent::{Agent, Kind, Spec};
use crate::analysis::{classify, Class};
use crate::ctx::Ctx;
use crate::procfs::Sample;
use crate::stack::{Req, Server, Vault};
use crate::stats::{median, median_u64};

#[derive(Debug, Clone)]
pub struct Startup {
    pub kind: Kind,
    pub server: Server,
    pub runs: usize,
    /// Medians, in ms.
    pub ready_ms: f64,
    pub files_ms: f64,
    pub vault_ms: f64,
    pub net_ms: f64,
    pub cpu_ms: f64,
    /// Requests before the credential was in hand (median count).
    pub requests: u64,
    /// One second after ready (medians).
    pub rss_kib: u64,
    pub anon_kib: u64,
    pub threads: u64,
    pub fds: u64,
}

struct Run {
    ready: f64,
    files: f64,
    vault: f64,
    cpu: f64,
    requests: u64,
    settled: Sample,
}

pub async fn run(ctx: &Ctx, kind: Kind, server: Server) -> Result<Startup, String> {
    let (vault, dir) = ctx.vault_on(kind, "startup", server).await;
    vault.role("start", "1h", "24h").await;
    let mut runs = Vec::new();
    for i in 0..ctx.settings.startup_runs {
        let spec = Spec::new(
            vault.addr(),
            &vault.approle,
            &dir.join(format!("run{i}")),
            vec!["database/creds/start".into()],
        );
        runs.push(one(ctx, kind, &vault, &spec).await?);
    }
    let f = |get: fn(&Run) -> f64| median(&runs.iter().map(get).collect::<Vec<_>>());
    let u = |get: fn(&Run) -> u64| median_u64(&runs.iter().map(get).collect::<Vec<_>>());
    Ok(Startup {
        kind,
        server,
        runs: runs.len(),
        ready_ms: f(|r| r.ready),
        files_ms: f(|r| r.files),
        vault_ms: f(|r| r.vault),
        net_ms: f(|r| r.ready - r.vault),
        cpu_ms: f(|r| r.cpu),
        requests: u(|r| r.requests),
        rss_kib: u(|r| r.settled.rss_kib),
        anon_kib: u(|r| r.settled.anon_kib),
        threads: u(|r| r.settled.threads),
        fds: u(|r| r.settled.fds),
    })
}

async fn one(ctx: &Ctx, kind: Kind, vault: &Vault, spec: &Spec) -> Result<Run, String> {
    let since = vault.last_seq().await;
    let mut agent = Agent::spawn(kind, &ctx.bins, spec).map_err(|e| e.to_string())?;
    let ready = agent.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = agent.sample().map_err(|e| e.to_string())?;
    let path = critical_path(&vault.requests(since).await);
    let vault_time = replay(vault, &path).await?;
    agent.stop(Duration::from_secs(5)).await;
    Ok(Run {
        ready: ms(ready.ready),
        files: ms(ready.files),
        vault: ms(vault_time),
        cpu: ready.at_ready.cpu_ms(),
        requests: path.len() as u64,
        settled,
    })
}

/// The requests up to and including the first credential read.
fn critical_path(reqs: &[Req]) -> Vec<Req> {
    let end = reqs
        .iter()
        .position(|r| classify(r) == Class::Read)
        .map_or(reqs.len(), |i| i + 1);
    reqs[..end].to_vec()
}

/// Sends the same requests again, one after another on one new connection, and times them.
async fn replay(vault: &Vault, reqs: &[Req]) -> Result<Duration, String> {
    let http = reqwest::Client::new();
    let mut token: Option<String> = None;
    let start = Instant::now();
    for r in reqs {
        let body = send(&http, vault, r, token.as_deref()).await?;
        if let Some(t) = body["auth"]["client_token"].as_str() {
            token = Some(t.to_string());
        }
    }
    Ok(start.elapsed())
}

async fn send(
    http: &reqwest::Client,
    vault: &Vault,
    r: &Req,
    token: Option<&str>,
) -> Result<Value, String> {
    let mut url = format!("{}{}", vault.addr(), r.path);
    if !r.query.is_empty() {
        url = format!("{url}?{}", r.query);
    }
    let method = reqwest::Method::from_bytes(r.method.as_bytes()).map_err(|e| e.to_string())?;
    let writes = matches!(r.method.as_str(), "PUT" | "POST");
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.header("X-Vault-Token", t);
    }
    if r.path.ends_with("/login") {
        req = req
            .json(&json!({"role_id": vault.approle.role_id, "secret_id": vault.approle.secret_id}));
    } else if writes {
        req = req.json(&json!({}));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("replay {}: {e}", r.path))?;
    Ok(resp.json().await.unwrap_or(Value::Null))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
