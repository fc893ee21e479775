//! Memory after many rotations. vault-rotator is driven with SIGUSR1, one rotation per signal,
//! waiting for the file to change each time, with a 1 h lease (no renewals in between) and a
//! 1 s revoke grace, so every replaced credential is also revoked. OpenBao Agent has no
//! "rotate now"; it runs meanwhile on a 1 s lease (max_ttl 1 s), which it replaces about once
//! a second, and its figures are for however many rotations that gave.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::agent::{Agent, Kind, Spec};
use crate::analysis::{self, Class};
use crate::ctx::Ctx;
use crate::procfs::Sample;

#[derive(Debug, Clone)]
pub struct Rotations {
    pub kind: Kind,
    pub rotations: usize,
    pub wall: Duration,
    pub start: Sample,
    pub end: Sample,
    /// (rotations so far, sample): every tenth of the way for vault-rotator.
    pub trajectory: Vec<(usize, Sample)>,
    pub reads: usize,
    pub revokes: usize,
    pub errors: usize,
}

impl Rotations {
    pub fn cpu_ms_per_rotation(&self) -> f64 {
        (self.end.cpu_ms() - self.start.cpu_ms()) / self.rotations.max(1) as f64
    }
}

const GRACE: &str = "1s";
/// After the last rotation: the last revoke's grace, and its request.
const DRAIN: Duration = Duration::from_secs(3);
const ONE_ROTATION_LIMIT: Duration = Duration::from_secs(30);

pub async fn rotator(ctx: &Ctx) -> Result<Rotations, String> {
    let n = ctx.settings.rotations;
    let (vault, dir) = ctx.vault(Kind::Rotator, "rotations").await;
    vault.role("rot", "1h", "24h").await;
    let mut spec = Spec::new(
        vault.addr(),
        &vault.approle,
        &dir,
        vec!["database/creds/rot".into()],
    );
    spec.revoke_grace = Some(GRACE.to_string());
    let since = vault.last_seq().await;
    let mut agent = Agent::spawn(Kind::Rotator, &ctx.bins, &spec).map_err(|e| e.to_string())?;
    agent.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = agent.sample().map_err(|e| e.to_string())?;
    let mut trajectory = vec![(0, start)];
    let began = Instant::now();
    for i in 1..=n {
        rotate_once(&mut agent)
            .await
            .map_err(|e| format!("rotation {i}: {e}"))?;
        if i % (n / 10).max(1) == 0 {
            trajectory.push((i, agent.sample().map_err(|e| e.to_string())?));
        }
    }
    let wall = began.elapsed();
    tokio::time::sleep(DRAIN).await;
    let end = agent.sample().map_err(|e| e.to_string())?;
    let reqs = vault.requests(since).await;
    agent.stop(Duration::from_secs(5)).await;
    Ok(Rotations {
        kind: Kind::Rotator,
        rotations: n,
        wall,
        start,
        end,
        trajectory,
        reads: analysis::count(&reqs, Class::Read),
        revokes: analysis::count(&reqs, Class::Revoke),
        errors: analysis::errors(&reqs),
    })
}

/// SIGUSR1, then wait until the credential file holds something else.
async fn rotate_once(agent: &mut Agent) -> Result<(), String> {
    let file = agent.outputs[0].clone();
    let before = read(&file);
    agent.signal("USR1").map_err(|e| e.to_string())?;
    let sent = Instant::now();
    while read(&file) == before {
        if let Some(status) = agent.exited() {
            return Err(format!("agent exited ({status}): {}", agent.log_tail()));
        }
        if sent.elapsed() > ONE_ROTATION_LIMIT {
            return Err(format!(
                "file unchanged after {ONE_ROTATION_LIMIT:?}: {}",
                agent.log_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

/// OpenBao Agent on a 1 s lease until `done` turns true.
pub async fn peer(ctx: &Ctx, mut done: watch::Receiver<bool>) -> Result<Rotations, String> {
    let (vault, dir) = ctx.vault(Kind::Bao, "rotations").await;
    vault.role("rot", "1s", "1s").await;
    let spec = Spec::new(
        vault.addr(),
        &vault.approle,
        &dir,
        vec!["database/creds/rot".into()],
    );
    let since = vault.last_seq().await;
    let mut agent = Agent::spawn(Kind::Bao, &ctx.bins, &spec).map_err(|e| e.to_string())?;
    agent.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = agent.sample().map_err(|e| e.to_string())?;
    let began = Instant::now();
    let _ = done.wait_for(|d| *d).await;
    let wall = began.elapsed();
    tokio::time::sleep(DRAIN).await;
    let end = agent.sample().map_err(|e| e.to_string())?;
    let reqs = vault.requests(since).await;
    agent.stop(Duration::from_secs(5)).await;
    let reads = analysis::count(&reqs, Class::Read);
    Ok(Rotations {
        kind: Kind::Bao,
        rotations: reads.saturating_sub(1),
        wall,
        start,
        end,
        trajectory: vec![(0, start)],
        reads,
        revokes: analysis::count(&reqs, Class::Revoke),
        errors: analysis::errors(&reqs),
    })
}
