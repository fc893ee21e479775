//! Vault requests per credential lifetime, for a role's TTL and max_ttl and the agent's
//! rotation cadence, against the fewest possible (see [`Lifetimes::minimum_per_credential`]).
//! Each agent has its own server (devvault, or a real OpenBao whose audit log is read), so its
//! request log holds only its own requests.

use std::time::Duration;

use crate::agent::{Agent, Kind, Spec};
use crate::analysis::{self, LifetimeCost, Lifetimes};
use crate::ctx::{secs, Ctx};
use crate::stack::Server;

/// A named set of lease settings.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub lifetimes: Lifetimes,
}

impl Scenario {
    pub fn describe(&self) -> String {
        let l = &self.lifetimes;
        let cadence = l.cadence.map_or("none".to_string(), secs);
        format!(
            "TTL {}, max_ttl {}, cadence {cadence}, revoke grace {}",
            secs(l.ttl),
            human(l.max_ttl),
            secs(l.grace)
        )
    }
}

fn human(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{s}s"),
    }
}

/// Renew-to-max_ttl (both agents), and a cadence shorter than max_ttl (vault-rotator only:
/// OpenBao Agent has no rotation cadence for leased secrets).
pub fn scenarios() -> [Scenario; 2] {
    let s = Duration::from_secs;
    [
        Scenario {
            name: "max_ttl",
            lifetimes: Lifetimes {
                ttl: s(10),
                max_ttl: s(30),
                cadence: None,
                grace: s(5),
            },
        },
        Scenario {
            name: "cadence",
            lifetimes: Lifetimes {
                ttl: s(10),
                max_ttl: s(3600),
                cadence: Some(s(20)),
                grace: s(5),
            },
        },
    ]
}

#[derive(Debug, Clone)]
pub struct Lifetime {
    pub kind: Kind,
    pub server: Server,
    pub scenario: Scenario,
    pub window: Duration,
    pub cost: Option<LifetimeCost>,
    /// Auth requests (login, token renewals, health) over the whole run.
    pub auth: usize,
    pub errors: usize,
}

pub async fn run(
    ctx: &Ctx,
    kind: Kind,
    scenario: Scenario,
    server: Server,
) -> Result<Lifetime, String> {
    let window = ctx.settings.lifetime_window;
    let l = scenario.lifetimes;
    let (vault, dir) = ctx
        .vault_on(kind, &format!("lifetime-{}", scenario.name), server)
        .await;
    vault.role("life", &secs(l.ttl), &secs(l.max_ttl)).await;
    let mut spec = Spec::new(
        vault.addr(),
        &vault.approle,
        &dir,
        vec!["database/creds/life".into()],
    );
    spec.rotate_every = l.cadence.map(secs);
    spec.revoke_grace = Some(secs(l.grace));
    let since = vault.last_seq().await;
    let mut agent = Agent::spawn(kind, &ctx.bins, &spec).map_err(|e| e.to_string())?;
    agent.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(window).await;
    let reqs = &vault.requests(since).await;
    agent.stop(Duration::from_secs(5)).await;
    Ok(Lifetime {
        kind,
        server,
        scenario,
        window,
        cost: analysis::lifetime_cost(reqs),
        auth: analysis::count(reqs, analysis::Class::Auth),
        errors: analysis::errors(reqs),
    })
}
