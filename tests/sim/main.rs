//! The deterministic simulation of the agent's lifecycle (issue 13): the real client, auth and
//! workers in paused tokio time against an in-memory model of Vault.

mod driver;
mod model;
mod model_tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the scenarios' files go: tmpfs when there is one (the agent fsyncs every write).
fn base_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs seeds from `SIM_FIRST` (default 0): `SIM_SEEDS` of them when set, otherwise as many
/// as fit in `SIM_SECONDS` (default 60) of real time, on `SIM_JOBS` threads (default: the
/// machine's cores). Fails on the first broken invariant, printing its seed and trace.
///
/// Each seed runs alone on its own thread and runtime, so the threads share nothing and a
/// seed replays the same however many run beside it.
#[test]
fn seeds_hold_the_invariants() {
    let first = env_u64("SIM_FIRST").unwrap_or(0);
    let count = env_u64("SIM_SEEDS");
    let budget = Duration::from_secs(env_u64("SIM_SECONDS").unwrap_or(60));
    let jobs = env_u64("SIM_JOBS")
        .map(|n| n.max(1) as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let started = Instant::now();
    let base = base_dir();
    let next = AtomicU64::new(first);
    let done = AtomicU64::new(0);
    let failed = Mutex::new(None::<Box<driver::Violation>>);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                let enough = match count {
                    Some(_) => false,
                    None => started.elapsed() >= budget,
                };
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if enough || count.is_some_and(|n| seed >= first + n) {
                    return;
                }
                match driver::run_seed(seed, &base) {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(v) => {
                        if let Ok(mut f) = failed.lock() {
                            // The lowest failing seed, should two threads fail at once.
                            if f.as_ref().is_none_or(|old| v.seed < old.seed) {
                                *f = Some(v);
                            }
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(v) = failed.into_inner().ok().flatten() {
        panic!("{v}");
    }
    let n = done.load(Ordering::SeqCst);
    assert!(n > 0, "no seed ran");
    println!(
        "sim: {n} seeds from seed {first} ({jobs} threads) held every invariant in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// `SIM_SEED=<n>`: replays one seed and prints its trace, pass or fail.
#[test]
fn replay() {
    let Some(seed) = env_u64("SIM_SEED") else {
        return;
    };
    if let Ok(level) = std::env::var("SIM_LOG") {
        // The agent's own log, interleaved in real time (its timestamps are not virtual).
        let _ = vault_rotator::logging::init(vault_rotator::config::LogFormat::Text, &level);
    }
    match driver::run_seed(seed, &base_dir()) {
        Ok(()) => println!("seed {seed}: every invariant held"),
        Err(v) => panic!("{v}"),
    }
}

/// The scripted scenarios: one per lifecycle failure of issue 13.
#[test]
fn scripted_failures_hold_the_invariants() {
    let mut broken = vec![];
    for (name, _) in driver::SCRIPTED {
        if let Err(v) = driver::run_scripted(name, &base_dir()) {
            broken.push(format!("{name}: {v}"));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n\n"));
}

/// `SIM_SURVEY=<n>`: runs n seeds from `SIM_FIRST` without stopping at the first failure and
/// prints which invariant each broken seed broke (for running the simulator on old code).
#[test]
fn survey() {
    let Some(n) = env_u64("SIM_SURVEY") else {
        return;
    };
    let first = env_u64("SIM_FIRST").unwrap_or(0);
    let mut broken = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for seed in first..first + n {
        if let Err(v) = driver::run_seed(seed, &base_dir()) {
            let detail: String = v.detail.chars().take(90).collect();
            println!(
                "seed {seed}: {} at {:.0}s: {detail}",
                v.invariant,
                v.at.as_secs_f64()
            );
            broken
                .entry(v.invariant.to_string())
                .or_default()
                .push(seed);
        }
    }
    for (invariant, seeds) in &broken {
        println!(
            "{invariant}: {} seeds, first {:?}",
            seeds.len(),
            &seeds[..seeds.len().min(8)]
        );
    }
}
