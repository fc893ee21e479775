//! Turns the measurements into table rows, side by side per agent, with the goal and the
//! published Vault Agent figures (from the anchor document, never measured here).

use crate::agent::Kind;
use crate::measure::fleet::Fleet;
use crate::measure::idle::Idle;
use crate::measure::lifetime::Lifetime;
use crate::measure::many::Many;
use crate::measure::rotations::Rotations;
use crate::measure::size::Sizes;
use crate::measure::startup::Startup;
use crate::report::Row;
use crate::stack::Server;
use crate::stats::{mb, mib};

/// A measurement's outcome for one agent.
pub type Outcome<T> = (Kind, Result<T, String>);

/// Everything one bench run measured.
#[derive(Default)]
pub struct Results {
    pub sizes: Option<Result<Sizes, String>>,
    pub startup: Vec<Outcome<Startup>>,
    pub idle: Vec<Outcome<Idle>>,
    pub lifetime: Vec<Outcome<Lifetime>>,
    pub rotations: Vec<Outcome<Rotations>>,
    pub many: Vec<Outcome<Many>>,
    pub fleet: Vec<Outcome<Fleet>>,
    /// Why OpenBao Agent did not run, when it did not.
    pub peer_missing: Option<String>,
}

impl Results {
    /// The text for `kind` in a row: the formatted value, the failure, or `absent`.
    fn cell<T>(
        &self,
        list: &[Outcome<T>],
        kind: Kind,
        pick: impl Fn(&T) -> bool,
        show: impl Fn(&T) -> String,
        absent: &str,
    ) -> String {
        let found = list
            .iter()
            .find(|(k, r)| *k == kind && r.as_ref().map_or(true, &pick));
        match found {
            Some((_, Ok(v))) => show(v),
            Some((_, Err(e))) => format!("failed: {}", first_line(e)),
            None if kind == Kind::Bao => self.peer_missing.clone().unwrap_or(absent.to_string()),
            None => absent.to_string(),
        }
    }

    pub fn rows(&self) -> Vec<Row> {
        let mut rows = vec![self.size_row()];
        rows.push(self.row(
            &self.startup,
            "RSS at start, 1 secret",
            |s| s.server == Server::DevVault,
            rss_at_start,
            GOAL_RSS,
            "—",
        ));
        rows.push(self.rotations_row());
        rows.push(self.row(
            &self.startup,
            "Start → ready, less Vault round trips (median)",
            |s| s.server == Server::DevVault,
            startup,
            GOAL_START,
            "—",
        ));
        if self
            .startup
            .iter()
            .any(|(_, r)| r.as_ref().is_ok_and(|s| s.server == Server::OpenBao))
        {
            rows.push(self.row(
                &self.startup,
                &format!("Start → ready, less Vault round trips (median), {ON_OPENBAO}"),
                |s| s.server == Server::OpenBao,
                startup,
                GOAL_START,
                "—",
            ));
        }
        rows.push(self.row(&self.idle, "CPU while idle", |_| true, idle, GOAL_IDLE, "—"));
        for (name, server) in [
            ("max_ttl", Server::DevVault),
            ("max_ttl", Server::OpenBao),
            ("cadence", Server::DevVault),
            ("cadence", Server::OpenBao),
        ] {
            let Some(l) = self.lifetime.iter().find_map(|(_, r)| {
                r.as_ref()
                    .ok()
                    .filter(|l| l.scenario.name == name && l.server == server)
            }) else {
                continue;
            };
            let mut measure = format!("Vault requests per credential: {}", l.scenario.describe());
            if server == Server::OpenBao {
                measure = format!("{measure}, {ON_OPENBAO}");
            }
            let absent = "n/a: no rotation cadence for leased secrets";
            rows.push(self.row(
                &self.lifetime,
                &measure,
                |l| l.scenario.name == name && l.server == server,
                lifetime,
                GOAL_REQUESTS,
                absent,
            ));
        }
        rows.extend(self.fleet_rows());
        let n = self
            .many
            .iter()
            .find_map(|(_, r)| r.as_ref().ok())
            .map_or(100, |m| m.many.secrets);
        let measure = format!("Each extra secret ({n} secrets vs 1)");
        rows.push(self.row(
            &self.many,
            &measure,
            |_| true,
            many,
            "small and linear",
            "—",
        ));
        rows
    }

    fn row<T>(
        &self,
        list: &[Outcome<T>],
        measure: &str,
        pick: impl Fn(&T) -> bool + Copy,
        show: impl Fn(&T) -> String + Copy,
        goal: &str,
        absent: &str,
    ) -> Row {
        Row::new(
            measure,
            self.cell(list, Kind::Rotator, pick, show, absent),
            self.cell(list, Kind::Bao, pick, show, absent),
            goal,
        )
    }

    fn size_row(&self) -> Row {
        let (ours, peer) = match &self.sizes {
            Some(Ok(s)) => {
                let peer = match s.bao {
                    Some((shipped, Some(stripped))) => {
                        format!(
                            "{} stripped ({} as shipped, with debug info)",
                            mb(stripped),
                            mb(shipped)
                        )
                    }
                    Some((shipped, None)) => format!("{} as shipped", mb(shipped)),
                    None => self.peer_missing.clone().unwrap_or_default(),
                };
                (format!("{} ({} bytes)", mb(s.rotator), s.rotator), peer)
            }
            Some(Err(e)) => (format!("failed: {e}"), String::new()),
            None => (String::new(), String::new()),
        };
        Row::new("Binary size (stripped)", ours, peer, GOAL_SIZE)
    }

    fn rotations_row(&self) -> Row {
        let n = self
            .rotations
            .iter()
            .find_map(|(k, r)| r.as_ref().ok().filter(|_| *k == Kind::Rotator))
            .map_or(1000, |r| r.rotations);
        let measure = format!("RSS after {n} rotations");
        let absent = "n/a: no rotate-now";
        self.row(
            &self.rotations,
            &measure,
            |_| true,
            rotations,
            GOAL_RSS,
            absent,
        )
    }

    fn fleet_rows(&self) -> Vec<Row> {
        let n = self
            .fleet
            .iter()
            .find_map(|(_, r)| r.as_ref().ok())
            .map_or(200, |f| f.agents);
        let zero = |f: &Fleet| f.splay.is_none_or(|s| s.is_zero());
        let splayed = |f: &Fleet| f.splay.is_some_and(|s| !s.is_zero());
        let splay_s = self
            .fleet
            .iter()
            .find_map(|(_, r)| r.as_ref().ok().filter(|f| splayed(f)))
            .and_then(|f| f.splay)
            .map_or(10, |s| s.as_secs());
        vec![
            self.row(
                &self.fleet,
                &format!("Fleet of {n} started at once, no splay"),
                zero,
                fleet,
                GOAL_FLEET,
                "—",
            ),
            self.row(
                &self.fleet,
                &format!("Fleet of {n}, splay {splay_s} s"),
                splayed,
                fleet,
                GOAL_FLEET,
                "n/a: no splay setting",
            ),
        ]
    }
}

/// Marks the rows measured against a real OpenBao dev server instead of devvault.
const ON_OPENBAO: &str = "**on real OpenBao** (dev server)";

const GOAL_SIZE: &str = "≤ 6 MB. Published: the `vault` binary Vault Agent ships as is 178.6 MB (1.13.2) to 355 MB (1.14.2), 384 MB (openbao#162); `bao` 97 MB stripped (openbao#77)";
const GOAL_RSS: &str = "≤ 8 MiB. Published: sidecars get 64Mi request / 128Mi limit (vault-k8s); \"134MB res. memory\" (vault#27887); 13–20Mi working set observed (vault-k8s#216, vault-helm#472)";
const GOAL_START: &str = "a few ms. Published: sidecar fetched ~8 s after the app started (vault-k8s#125); an init container is needed to block the app";
const GOAL_IDLE: &str = "≈ 0 (no polling). Published: \"never above 15m, mostly 1m–5m\" CPU (vault-k8s#216); 1m = 60 ms CPU per minute";
const GOAL_REQUESTS: &str = "close to the minimum (one read, a renewal per TTL, a revoke when retired early). Vault Agent renews at ≈70% of each lease and re-reads 1–3 graces before max_ttl (anchor §1)";
const GOAL_FLEET: &str =
    "peak ÷ mean near 1 with splay. Vault Agent has no start splay (anchor §4.7)";

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    line.chars().take(160).collect()
}

fn rss_at_start(s: &Startup) -> String {
    format!(
        "{} (anon {}), {} threads, {} fds; median of {} runs",
        mib(s.rss_kib),
        mib(s.anon_kib),
        s.threads,
        s.fds,
        s.runs
    )
}

fn startup(s: &Startup) -> String {
    let to = match s.kind {
        Kind::Rotator => "to /ready 200",
        Kind::Bao => "to file (no /ready)",
    };
    format!(
        "{:.1} ms net ({:.1} ms {to}, {:.1} ms Vault for {} requests; file at {:.1} ms); CPU {:.1} ms; median of {} runs",
        s.net_ms, s.ready_ms, s.vault_ms, s.requests, s.files_ms, s.cpu_ms, s.runs
    )
}

fn idle(i: &Idle) -> String {
    format!(
        "{:.0} ms CPU/min, {:.0} wake-ups/min, {} Vault requests in {} s",
        i.cpu_ms_per_min,
        i.wakeups_per_min,
        i.requests,
        i.window.as_secs()
    )
}

fn rotations(r: &Rotations) -> String {
    let how = match r.kind {
        Kind::Rotator => format!(
            "{} rotations by SIGUSR1 in {:.0} s, {} revoked",
            r.rotations,
            r.wall.as_secs_f64(),
            r.revokes
        ),
        Kind::Bao => format!(
            "only {} rotations (1 s leases, {:.0} s; no rotate-now)",
            r.rotations,
            r.wall.as_secs_f64()
        ),
    };
    format!(
        "{} → {} (anon {} → {}, peak {}); fds {} → {}, threads {} → {}; {how}; {:.1} ms CPU per rotation",
        mib(r.start.rss_kib),
        mib(r.end.rss_kib),
        mib(r.start.anon_kib),
        mib(r.end.anon_kib),
        mib(r.end.hwm_kib),
        r.start.fds,
        r.end.fds,
        r.start.threads,
        r.end.threads,
        r.cpu_ms_per_rotation()
    )
}

fn lifetime(l: &Lifetime) -> String {
    let lt = l.scenario.lifetimes;
    let min = lt.minimum_per_credential();
    let min_h = lt.minimum_per_hour();
    match &l.cost {
        Some(c) => format!(
            "{:.1} per credential (min {min}, ×{:.2}): {} reads, {} renewals, {} revokes over {} credentials; {:.0}/h (min {min_h:.0}/h, ×{:.2}); replaced every {:.1} s; {} auth requests, {} errors in {} s",
            c.per_credential,
            c.per_credential / min as f64,
            c.reads,
            c.renewals,
            c.revokes,
            c.credentials,
            c.per_hour,
            c.per_hour / min_h,
            c.mean_life_s,
            l.auth,
            l.errors,
            l.window.as_secs()
        ),
        None => format!("fewer than two credentials in {} s", l.window.as_secs()),
    }
}

fn fleet(f: &Fleet) -> String {
    let errors: usize = f
        .statuses
        .iter()
        .filter(|(s, _)| **s >= 400)
        .map(|(_, n)| n)
        .sum();
    let mut s = format!(
        "peak {} req/100 ms (runs: {:?}), mean {:.1}, peak ÷ mean {:.1}; {} requests over {:.1} s; spawning took {:.1} s, {}/{} ready in {:.1} s; {errors} errors; per agent: RSS {} (anon {}), CPU {:.0} ms",
        f.burst.peak,
        f.peaks,
        f.burst.mean,
        f.burst.peak_over_mean(),
        f.burst.total,
        f.burst.span_s,
        f.spawn_s,
        f.ready,
        f.agents,
        f.all_ready_s,
        mib(f.rss_kib),
        mib(f.anon_kib),
        f.cpu_ms
    );
    if !f.exited.is_empty() {
        s += &format!("; {} exited", f.exited.len());
    }
    if f.warned > 0 {
        s += &format!("; {} logged warnings", f.warned);
    }
    s
}

fn many(m: &Many) -> String {
    format!(
        "RSS +{:.0} KiB (anon +{:.0} KiB); CPU +{:.1} ms to start, +{:.2} ms/min steady at {} TTL ({} vs 1 secrets: {} vs {}, ready in {:.0} vs {:.0} ms)",
        m.rss_kib_per_secret(),
        m.anon_kib_per_secret(),
        m.start_cpu_ms_per_secret(),
        m.steady_cpu_ms_per_min_per_secret(),
        crate::measure::many::TTL,
        m.many.secrets,
        mib(m.many.settled.rss_kib),
        mib(m.one.settled.rss_kib),
        m.many.ready_ms,
        m.one.ready_ms
    )
}
