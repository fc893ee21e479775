//! `cargo run --release -p bench --bin soak -- [--minutes 10] [--sample-every 10]`
//!
//! An accelerated soak of one vault-rotator: short tokens and leases, a rotation every two
//! seconds, probes polled like a kubelet, for the given minutes. Samples memory, file
//! descriptors, threads and CPU from /proc, and Vault's view from devvault's request log;
//! prints them as it goes and writes `bench/out/soak.md`. Not part of `cargo test`.

use std::time::{Duration, Instant};

use bench::agent::{http_status, Agent, Kind, Spec};
use bench::analysis::{self, Class};
use bench::ctx::{out_dir, Ctx, Settings};
use bench::procfs::Sample;
use bench::report::strip_ansi;
use bench::stack::{pg_dynamic_roles, Vault};
use bench::stats::median_u64;

/// Token: 20 s, renewable to 60 s, so the agent renews it and logs in again about once a
/// minute (and re-issues the credentials tied to the old token).
const TOKEN_TTL: &str = "20s";
const TOKEN_MAX_TTL: &str = "60s";

struct Args {
    minutes: f64,
    sample_every: Duration,
}

fn parse_args() -> Args {
    let mut a = Args {
        minutes: 10.0,
        sample_every: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let value = it.next().and_then(|v| v.parse::<f64>().ok());
        match (arg.as_str(), value) {
            ("--minutes", Some(m)) if m > 0.0 => a.minutes = m,
            ("--sample-every", Some(s)) if s >= 1.0 => a.sample_every = Duration::from_secs_f64(s),
            _ => {
                eprintln!("usage: soak [--minutes M] [--sample-every SECONDS]");
                std::process::exit(2);
            }
        }
    }
    a
}

/// One row of the soak.
struct Point {
    t_s: f64,
    sample: Sample,
    reads: usize,
    renewals: usize,
    revokes: usize,
    logins: usize,
    errors: usize,
    ready: Option<u16>,
}

fn main() {
    let args = parse_args();
    eprintln!("[soak] building vault-rotator and devvault (release)");
    testkit::bins::cargo_build(&["-p", "vault-rotator", "-p", "devvault"]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(soak(args));
}

async fn soak(args: Args) {
    let ctx = Ctx::new(Settings::full(), "soak-work");
    let (vault, dir) = ctx
        .vault_with(Kind::Rotator, "soak", TOKEN_TTL, TOKEN_MAX_TTL)
        .await;
    // s0: a new credential every 2 s, the old one revoked 1 s later. s1: a 3 s lease renewed
    // until its 9 s max_ttl, then replaced.
    vault.role("cadence", "6s", "1h").await;
    vault.role("short", "3s", "9s").await;
    let mut spec = Spec::new(
        vault.addr(),
        &vault.approle,
        &dir,
        vec![
            "database/creds/cadence".into(),
            "database/creds/short".into(),
        ],
    );
    spec.rotate_every_for.insert(0, Some("2s".into()));
    spec.revoke_grace = Some("1s".into());
    let since = vault.last_seq().await;
    let mut agent = Agent::spawn(Kind::Rotator, &ctx.bins, &spec).expect("spawn vault-rotator");
    agent
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("vault-rotator ready");
    let points = run(&args, &mut agent, &vault, since).await;
    let pg_roles = pg_dynamic_roles(&ctx.pg).await;
    let warnings = agent.warnings();
    agent.stop(Duration::from_secs(10)).await;
    let text = report(&args, &points, pg_roles.ok(), &warnings);
    println!("\n{text}");
    let path = out_dir().join("soak.md");
    match std::fs::write(&path, &text) {
        Ok(()) => eprintln!("[soak] saved {}", path.display()),
        Err(e) => eprintln!("[soak] could not save {}: {e}", path.display()),
    }
}

async fn run(args: &Args, agent: &mut Agent, vault: &Vault, since: u64) -> Vec<Point> {
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let start = Instant::now();
    let mut points = Vec::new();
    eprintln!("[soak] t_s  VmRSS_KiB anon_KiB fds threads cpu_ms reads renewals revokes logins errors /ready");
    loop {
        tokio::time::sleep(args.sample_every).await;
        if let Some(status) = agent.exited() {
            eprintln!(
                "[soak] vault-rotator exited ({status}): {}",
                agent.log_tail()
            );
            break;
        }
        let p = point(agent, vault, since, start).await;
        eprintln!("[soak] {}", row(&p).replace('|', " "));
        points.push(p);
        if start.elapsed() >= total {
            break;
        }
    }
    points
}

async fn point(agent: &Agent, vault: &Vault, since: u64, start: Instant) -> Point {
    let ready = match agent.port {
        Some(port) => {
            let _ = http_status(port, "/health").await;
            http_status(port, "/ready").await
        }
        None => None,
    };
    let sample = agent.sample().unwrap_or_default();
    let reqs = vault.requests(since).await;
    let logins = reqs.iter().filter(|r| r.path.ends_with("/login")).count();
    Point {
        t_s: start.elapsed().as_secs_f64(),
        sample,
        reads: analysis::count(&reqs, Class::Read),
        renewals: analysis::count(&reqs, Class::Renew),
        revokes: analysis::count(&reqs, Class::Revoke),
        logins,
        errors: analysis::errors(&reqs),
        ready,
    }
}

fn row(p: &Point) -> String {
    let s = &p.sample;
    format!(
        "| {:.0} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
        p.t_s,
        s.rss_kib,
        s.anon_kib,
        s.fds,
        s.threads,
        s.cpu_ms(),
        p.reads,
        p.renewals,
        p.revokes,
        p.logins,
        p.errors,
        p.ready.map_or("none".to_string(), |c| c.to_string())
    )
}

fn report(args: &Args, points: &[Point], pg_roles: Option<i64>, warnings: &[String]) -> String {
    let mut t = format!(
        "# vault-rotator soak\n\n{:.1} min requested, samples every {} s. One vault-rotator against devvault on loopback (PostgreSQL behind it), on a 2-core machine shared with other engineers' builds and tests. Secret s0: 6 s lease, rotated every 2 s, the old one revoked after 1 s. Secret s1: 3 s lease renewed up to its 9 s max_ttl, then replaced. AppRole token {TOKEN_TTL}, renewable to {TOKEN_MAX_TTL}, so the agent logs in again about once a minute. /health and /ready polled at every sample.\n\n",
        args.minutes,
        args.sample_every.as_secs()
    );
    t += &summary(points, pg_roles, warnings);
    t += "\n## Samples\n\n| t (s) | VmRSS KiB | anon KiB | fds | threads | CPU ms | reads | renewals | revokes | logins | Vault errors | /ready |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for p in points {
        t += &row(p);
        t.push('\n');
    }
    t
}

fn summary(points: &[Point], pg_roles: Option<i64>, warnings: &[String]) -> String {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return "No samples: the agent did not survive the first interval.\n".to_string();
    };
    let range = |f: fn(&Sample) -> u64| {
        let v: Vec<u64> = points.iter().map(|p| f(&p.sample)).collect();
        (
            v.iter().copied().min().unwrap_or(0),
            v.iter().copied().max().unwrap_or(0),
        )
    };
    // Drift: the median of the first and last fifth of the samples (at least three each).
    let k = (points.len() / 5).max(3).min(points.len());
    let med = |ps: &[Point], f: fn(&Sample) -> u64| {
        median_u64(&ps.iter().map(|p| f(&p.sample)).collect::<Vec<_>>())
    };
    let head = &points[..k];
    let tail = &points[points.len() - k..];
    let (rss_min, rss_max) = range(|s| s.rss_kib);
    let (anon_min, anon_max) = range(|s| s.anon_kib);
    let (fd_min, fd_max) = range(|s| s.fds);
    let (th_min, th_max) = range(|s| s.threads);
    let minutes = (last.t_s - first.t_s) / 60.0;
    let cpu_per_min = (last.sample.cpu_ms() - first.sample.cpu_ms()) / minutes.max(1e-9);
    let not_ready = points.iter().filter(|p| p.ready != Some(200)).count();
    let mut s = String::from("## Summary\n\n| | first sample | last sample | min – max | median of first fifth → last fifth |\n|---|---|---|---|---|\n");
    s += &format!(
        "| VmRSS | {} KiB | {} KiB | {rss_min} – {rss_max} KiB | {} → {} KiB |\n",
        first.sample.rss_kib,
        last.sample.rss_kib,
        med(head, |x| x.rss_kib),
        med(tail, |x| x.rss_kib)
    );
    s += &format!(
        "| RssAnon | {} KiB | {} KiB | {anon_min} – {anon_max} KiB | {} → {} KiB |\n",
        first.sample.anon_kib,
        last.sample.anon_kib,
        med(head, |x| x.anon_kib),
        med(tail, |x| x.anon_kib)
    );
    s += &format!(
        "| open fds | {} | {} | {fd_min} – {fd_max} | {} → {} |\n",
        first.sample.fds,
        last.sample.fds,
        med(head, |x| x.fds),
        med(tail, |x| x.fds)
    );
    s += &format!(
        "| threads | {} | {} | {th_min} – {th_max} | {} → {} |\n",
        first.sample.threads,
        last.sample.threads,
        med(head, |x| x.threads),
        med(tail, |x| x.threads)
    );
    s += &format!(
        "\nOver {:.1} min of samples: {} credentials issued, {} renewals, {} revokes, {} logins, {} Vault errors (status ≥ 400); CPU {:.0} ms per minute; VmHWM {} KiB; /ready not 200 at {not_ready} of {} samples; dynamic PostgreSQL roles left at the end: {}; agent WARN/ERROR lines: {}.\n",
        last.t_s / 60.0,
        last.reads,
        last.renewals,
        last.revokes,
        last.logins,
        last.errors,
        cpu_per_min,
        last.sample.hwm_kib,
        points.len(),
        pg_roles.map_or("unknown".to_string(), |n| n.to_string()),
        warnings.len()
    );
    for w in warnings.iter().take(5) {
        s += &format!("- `{}`\n", strip_ansi(w));
    }
    s
}
