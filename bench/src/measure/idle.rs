//! Idle cost: one agent holding a credential that needs nothing for the next hour (1 h lease,
//! 1 h token), left alone for the window: no probes, no signals. CPU ticks and context
//! switches before and after, and the Vault requests it made meanwhile.

use std::time::Duration;

use crate::agent::{Agent, Kind, Spec};
use crate::ctx::Ctx;

#[derive(Debug, Clone)]
pub struct Idle {
    pub kind: Kind,
    pub window: Duration,
    pub cpu_ms_per_min: f64,
    pub wakeups_per_min: f64,
    pub requests: usize,
    pub rss_kib: u64,
    pub anon_kib: u64,
    pub threads: u64,
}

/// Time to let start-up work (log flushes, the first lease renewal of a peer) finish.
const SETTLE: Duration = Duration::from_secs(5);

pub async fn run(ctx: &Ctx, kind: Kind) -> Result<Idle, String> {
    let window = ctx.settings.idle;
    let (vault, dir) = ctx.vault(kind, "idle").await;
    vault.role("idle", "1h", "24h").await;
    let spec = Spec::new(
        vault.addr(),
        &vault.approle,
        &dir,
        vec!["database/creds/idle".into()],
    );
    let mut agent = Agent::spawn(kind, &ctx.bins, &spec).map_err(|e| e.to_string())?;
    agent.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(SETTLE).await;
    let since = vault.last_seq().await;
    let before = agent.sample().map_err(|e| e.to_string())?;
    tokio::time::sleep(window).await;
    let after = agent.sample().map_err(|e| e.to_string())?;
    let requests = vault.requests(since).await.len();
    agent.stop(Duration::from_secs(5)).await;
    let per_min = 60.0 / window.as_secs_f64();
    Ok(Idle {
        kind,
        window,
        cpu_ms_per_min: (after.cpu_ms() - before.cpu_ms()) * per_min,
        wakeups_per_min: after.ctx_switches.saturating_sub(before.ctx_switches) as f64 * per_min,
        requests,
        rss_kib: after.rss_kib,
        anon_kib: after.anon_kib,
        threads: after.threads,
    })
}
