//! The cost of each extra secret: one agent with N secrets (N distinct roles, so neither agent
//! can share a lease between them) against the same agent with one, run side by side. Each
//! role has a 15 s TTL, so the steady window includes renewals. Per extra secret =
//! (N-secret figure − 1-secret figure) / (N − 1).

use std::time::Duration;

use crate::agent::{Agent, Kind, Spec};
use crate::ctx::{Ctx, Settings};
use crate::procfs::Sample;

pub const TTL: &str = "15s";
const SETTLE: Duration = Duration::from_secs(2);

/// One agent's run.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub secrets: usize,
    pub ready_ms: f64,
    /// CPU used by the time every secret was written.
    pub cpu_ready_ms: f64,
    /// Two seconds after ready.
    pub settled: Sample,
    /// After the steady window.
    pub after: Sample,
    pub window: Duration,
    /// Vault requests during the steady window.
    pub requests: usize,
}

impl Point {
    pub fn steady_cpu_ms_per_min(&self) -> f64 {
        (self.after.cpu_ms() - self.settled.cpu_ms()) * 60.0 / self.window.as_secs_f64()
    }
}

#[derive(Debug, Clone)]
pub struct Many {
    pub kind: Kind,
    pub one: Point,
    pub many: Point,
}

impl Many {
    fn per_extra(&self, f: impl Fn(&Point) -> f64) -> f64 {
        (f(&self.many) - f(&self.one)) / (self.many.secrets - 1) as f64
    }

    pub fn rss_kib_per_secret(&self) -> f64 {
        self.per_extra(|p| p.settled.rss_kib as f64)
    }

    pub fn anon_kib_per_secret(&self) -> f64 {
        self.per_extra(|p| p.settled.anon_kib as f64)
    }

    pub fn start_cpu_ms_per_secret(&self) -> f64 {
        self.per_extra(|p| p.cpu_ready_ms)
    }

    pub fn steady_cpu_ms_per_min_per_secret(&self) -> f64 {
        self.per_extra(Point::steady_cpu_ms_per_min)
    }
}

pub async fn run(ctx: &Ctx, kind: Kind) -> Result<Many, String> {
    let n = ctx.settings.many;
    let (one, many) = tokio::join!(point(ctx, kind, 1), point(ctx, kind, n));
    Ok(Many {
        kind,
        one: one?,
        many: many?,
    })
}

async fn point(ctx: &Ctx, kind: Kind, secrets: usize) -> Result<Point, String> {
    let Settings { many_window, .. } = ctx.settings;
    let (vault, dir) = ctx.vault(kind, &format!("many{secrets}")).await;
    let mut paths = Vec::new();
    for i in 0..secrets {
        vault.role(&format!("r{i}"), TTL, "1h").await;
        paths.push(format!("database/creds/r{i}"));
    }
    let spec = Spec::new(vault.addr(), &vault.approle, &dir, paths);
    let mut agent = Agent::spawn(kind, &ctx.bins, &spec).map_err(|e| e.to_string())?;
    let ready = agent.wait_ready(Duration::from_secs(120)).await?;
    tokio::time::sleep(SETTLE).await;
    let since = vault.last_seq().await;
    let settled = agent.sample().map_err(|e| e.to_string())?;
    tokio::time::sleep(many_window).await;
    let after = agent.sample().map_err(|e| e.to_string())?;
    let requests = vault.requests(since).await.len();
    agent.stop(Duration::from_secs(10)).await;
    Ok(Point {
        secrets,
        ready_ms: ready.ready.as_secs_f64() * 1000.0,
        cpu_ready_ms: ready.at_ready.cpu_ms(),
        settled,
        after,
        window: many_window,
        requests,
    })
}
