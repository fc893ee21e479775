//! A fleet start: N agents spawned at once against one devvault (as after a node failure or a
//! rollout), each with its own AppRole login and dynamic credential. devvault's request log is
//! cut into 100 ms bins: the peak bin against the mean bin, where the mean spreads the run's
//! requests over the splay window (10 s) for every run, with or without splay, so a perfectly
//! even spread scores 1 and the no-splay herd shows how much sharper it is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::agent::{self, Agent, Kind, Spec};
use crate::analysis::{self, Burst};
use crate::ctx::{secs, slug, Ctx};
use crate::stats::{median, median_u64};

#[derive(Debug, Clone)]
pub struct Fleet {
    pub kind: Kind,
    pub agents: usize,
    /// None: the agent has no splay setting.
    pub splay: Option<Duration>,
    pub ready: usize,
    /// Agents that exited, with their last log lines.
    pub exited: Vec<String>,
    /// How long spawning all of them took.
    pub spawn_s: f64,
    /// From the first spawn until every agent had written its file (or gave up).
    pub all_ready_s: f64,
    pub burst: Burst,
    /// The peak of every run of this setting (this one is the median).
    pub peaks: Vec<usize>,
    /// Vault answers by status code.
    pub statuses: BTreeMap<u16, usize>,
    pub rss_kib: u64,
    pub anon_kib: u64,
    pub cpu_ms: f64,
    /// Agents that logged at WARN or ERROR, and one such line.
    pub warned: usize,
    pub warning: Option<String>,
}

/// Leaves time for the slowest agent after the splay.
const LIMIT_AFTER_SPLAY: Duration = Duration::from_secs(120);

/// `fleet_runs` starts of the same setting; the one with the median peak, with every peak.
pub async fn runs(ctx: &Ctx, kind: Kind, splay: Option<Duration>) -> Result<Fleet, String> {
    let mut all = Vec::new();
    for i in 0..ctx.settings.fleet_runs.max(1) {
        all.push(run(ctx, kind, splay, i).await?);
    }
    all.sort_by_key(|f| f.burst.peak);
    let peaks: Vec<usize> = all.iter().map(|f| f.burst.peak).collect();
    let mut median = all.swap_remove(all.len() / 2);
    median.peaks = peaks;
    Ok(median)
}

async fn run(ctx: &Ctx, kind: Kind, splay: Option<Duration>, i: usize) -> Result<Fleet, String> {
    let n = ctx.settings.fleet;
    let name = format!("fleet-splay{}-run{i}", splay.map_or("none".into(), secs));
    let (vault, dir) = ctx.vault(kind, &name).await;
    vault.role("fleet", "1h", "24h").await;
    let since = vault.last_seq().await;
    let began = Instant::now();
    let mut agents = Vec::with_capacity(n);
    for i in 0..n {
        let mut spec = Spec::new(
            vault.addr(),
            &vault.approle,
            &dir.join(format!("{}{i}", slug(kind))),
            vec!["database/creds/fleet".into()],
        );
        if let Some(s) = splay {
            spec.splay = secs(s);
        }
        agents.push(Agent::spawn(kind, &ctx.bins, &spec).map_err(|e| format!("agent {i}: {e}"))?);
    }
    let spawn_s = began.elapsed().as_secs_f64();
    let limit = splay.unwrap_or_default() + LIMIT_AFTER_SPLAY;
    let exited = wait_all(&mut agents, limit).await;
    let all_ready_s = began.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reqs = vault.requests(since).await;
    let samples: Vec<_> = agents.iter().filter_map(|a| a.sample().ok()).collect();
    let warnings: Vec<Vec<String>> = agents.iter().map(Agent::warnings).collect();
    let ready = agents.iter().filter(|a| a.has_outputs()).count();
    agent::stop_all(agents, Duration::from_secs(20)).await;
    let mut statuses = BTreeMap::new();
    for r in &reqs {
        *statuses.entry(r.status).or_insert(0) += 1;
    }
    Ok(Fleet {
        kind,
        agents: n,
        splay,
        ready,
        exited,
        spawn_s,
        all_ready_s,
        burst: analysis::burst(&reqs, ctx.settings.fleet_splay),
        peaks: Vec::new(),
        statuses,
        rss_kib: median_u64(&samples.iter().map(|s| s.rss_kib).collect::<Vec<_>>()),
        anon_kib: median_u64(&samples.iter().map(|s| s.anon_kib).collect::<Vec<_>>()),
        cpu_ms: median(&samples.iter().map(|s| s.cpu_ms()).collect::<Vec<_>>()),
        warned: warnings.iter().filter(|w| !w.is_empty()).count(),
        warning: warnings.into_iter().flatten().next(),
    })
}

/// Waits until every agent has written its file or exited; returns what the exited ones said.
async fn wait_all(agents: &mut [Agent], limit: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let mut exited = Vec::new();
        let mut pending = 0;
        for a in agents.iter_mut() {
            if let Some(status) = a.exited() {
                exited.push(format!("pid {} {status}: {}", a.pid, a.log_tail()));
            } else if !a.has_outputs() {
                pending += 1;
            }
        }
        if pending == 0 || start.elapsed() > limit {
            return exited;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
