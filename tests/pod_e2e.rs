//! "A pod on one machine": the agent and the example app (`examples/app.rs`) as two processes
//! sharing one directory, the way two containers share an `emptyDir { medium: Memory }` volume;
//! devvault and PostgreSQL beside them; and a probe loop standing in for kubelet.
//!
//! Across at least five rotations of a short-lived credential it checks what an operator cares
//! about: no app query fails, /ready and /health never drop once up, the app reconnects once per
//! new user and never for a mere renewal, and every old database user is gone after its grace.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SEC: fn(u64) -> Duration = Duration::from_secs;
/// New credential every 6 s, old one revoked 2 s later. With an 8 s lease the agent renews it
/// once (at about 5 s) before replacing it.
const ROTATE_EVERY: &str = "6s";
const REVOKE_GRACE: &str = "2s";
const ROTATIONS: usize = 5;

/// The shared volume: a real tmpfs when we may mount one (root), else a plain directory.
struct Volume {
    path: PathBuf,
    mounted: bool,
}

impl Volume {
    fn new(path: PathBuf) -> Volume {
        std::fs::create_dir(&path).unwrap();
        let mounted = is_root()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"])
                .arg(&path)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            // An unprivileged container cannot mount; the contract under test is the same.
            eprintln!(
                "pod_e2e: shared volume is a plain directory (tmpfs needs root and CAP_SYS_ADMIN)"
            );
        }
        Volume { path, mounted }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        if self.mounted {
            let ok = Command::new("umount")
                .arg(&self.path)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                // Lazy unmount as a last resort: never leave a mount behind after a failed test.
                let _ = Command::new("umount").arg("-l").arg(&self.path).status();
            }
        }
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid() == 0
}

/// The example app as a child process; killed on drop.
struct AppProc {
    child: Child,
    log: PathBuf,
}

impl AppProc {
    fn spawn(bin: &Path, cred: &Path, pg_port: u16, report: &Path, log: PathBuf) -> AppProc {
        let child = Command::new(bin)
            .arg("--credentials")
            .arg(cred)
            .args(["--pg-host", "127.0.0.1", "--pg-port", &pg_port.to_string()])
            .args(["--interval", "50ms", "--wait", "30s"])
            .arg("--report")
            .arg(report)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap();
        AppProc { child, log }
    }

    fn logs(&self) -> String {
        let out = std::fs::read_to_string(&self.log).unwrap_or_default();
        let err = std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
        format!("{out}{err}")
    }

    /// SIGTERM (the app then writes its report), then its exit code.
    fn stop(&mut self) -> i32 {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < SEC(15),
                "app did not stop on SIGTERM; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AppProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What kubelet would have seen.
#[derive(Default, Debug)]
struct Probes {
    ready_ok: u64,
    /// /ready answers other than 200 (or no answer) after the first 200.
    ready_drops: Vec<String>,
    health_drops: Vec<String>,
}

/// GET /ready and /health every 150 ms until `stop`, like kubelet with a very short period.
fn probe_loop(agent: &AgentProc, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Probes> {
    let (ready_url, health_url) = (agent.url("/ready"), agent.url("/health"));
    tokio::spawn(async move {
        // kubelet's default probe timeout is 1 s; 3 s here so a loaded CI machine (2 cores,
        // other tests compiling) does not turn a slow answer into a false alarm.
        let http = reqwest::Client::builder().timeout(SEC(3)).build().unwrap();
        let get = |url: String| {
            let http = http.clone();
            async move {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => Ok(()),
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let mut p = Probes::default();
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let at = start.elapsed().as_secs_f64();
            match get(ready_url.clone()).await {
                Ok(()) => p.ready_ok += 1,
                Err(e) if p.ready_ok > 0 => p.ready_drops.push(format!("{at:.2}s: {e}")),
                Err(_) => {}
            }
            if let Err(e) = get(health_url.clone()).await {
                if p.ready_ok > 0 {
                    p.health_drops.push(format!("{at:.2}s: {e}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        p
    })
}

/// The usernames of the agent's "wrote new credential" audit lines, in order.
fn issued_users(agent: &AgentProc) -> Vec<String> {
    agent
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "wrote new credential")
        .filter_map(|v| v["username"].as_str().map(str::to_string))
        .collect()
}

async fn agent_and_app_share_a_volume_through_five_rotations(v: Vault) {
    let app_bin = testkit::bins::workspace_example("vault-rotator", "app");
    let stack = Stack::start_on(v).await;
    // An 8 s lease, renewed before each rotation: the file is rewritten for renewals (same
    // user) as well as for rotations (new user), and the app must tell them apart.
    stack.dynamic_role("app", "8s", "30s").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let work = tempfile::tempdir().unwrap();
    let role_file = work.path().join("role-id");
    let secret_file = work.path().join("secret-id");
    std::fs::write(&role_file, &role_id).unwrap();
    std::fs::write(&secret_file, &secret_id).unwrap();
    let volume = Volume::new(work.path().join("volume"));
    let cred = volume.path.join("db.json");
    let report = work.path().join("report.json");

    // Both containers start together: the app waits for the file like a real one would.
    let mut agent = AgentProc::spawn(
        &[
            "--vault-addr",
            stack.addr(),
            "--auth",
            "approle",
            "--role-id-file",
            role_file.to_str().unwrap(),
            "--secret-id-file",
            secret_file.to_str().unwrap(),
            "--secret",
            "database/creds/app",
            "--output",
            cred.to_str().unwrap(),
            "--format",
            "json",
            "--file-mode",
            "0440",
            "--rotate-every",
            ROTATE_EVERY,
            "--revoke-grace",
            REVOKE_GRACE,
            "--log-format",
            "json",
        ],
        &[],
        work.path(),
    );
    let mut app = AppProc::spawn(
        &app_bin,
        &cred,
        stack.pg.port(),
        &report,
        work.path().join("app.log"),
    );
    let stop_probes = Arc::new(AtomicBool::new(false));
    let probes = probe_loop(&agent, stop_probes.clone());
    agent.wait_ready(SEC(15)).await;

    // First credential plus five rotations.
    let users = eventually(SEC(50), "five rotations", || {
        let users = issued_users(&agent);
        async move { (users.len() > ROTATIONS).then_some(users) }
    })
    .await;
    // Let the app switch to the newest user and use it for a moment.
    let newest = users.last().unwrap().clone();
    eventually(SEC(5), "the app to use the newest user", || {
        let seen = app.logs().contains(&format!("connected as {newest}"));
        async move { seen.then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let app_code = app.stop();
    stop_probes.store(true, Ordering::Relaxed);
    let probes = probes.await.unwrap();
    let app_logs = app.logs();
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&report)
            .unwrap_or_else(|e| panic!("no app report ({e}); app logs:\n{app_logs}")),
    )
    .unwrap();
    let context = format!("report: {report}\nprobes: {probes:?}\napp logs:\n{app_logs}");

    // Every query succeeded, and there were plenty of them.
    assert_eq!(app_code, 0, "app exit code; {context}");
    assert_eq!(report["queries_failed"], 0, "{context}");
    assert!(report["queries_ok"].as_u64().unwrap() > 200, "{context}");
    // The app used every credential the agent issued, and reconnected exactly once per new user:
    // renewals (same user, new expires_at) did not cost a reconnect.
    let seen: Vec<String> = serde_json::from_value(report["users_seen"].clone()).unwrap();
    let issued: Vec<String> = issued_users(&agent);
    for u in &users {
        assert!(seen.contains(u), "app never queried as {u}; {context}");
    }
    assert!(
        seen.iter().all(|u| issued.contains(u)),
        "app used a user the agent never issued; {context}"
    );
    assert_eq!(
        report["reconnects"].as_u64().unwrap(),
        seen.len() as u64 - 1,
        "{context}"
    );
    assert!(
        report["renewals_seen"].as_u64().unwrap() > 0,
        "expected lease renewals with an 8 s TTL; {context}"
    );

    // kubelet never saw the pod go unready or unhealthy once it was up.
    assert!(probes.ready_ok > 50, "{probes:?}");
    assert!(probes.ready_drops.is_empty(), "/ready dropped: {probes:?}");
    assert!(
        probes.health_drops.is_empty(),
        "/health dropped: {probes:?}"
    );

    // Every old user is gone after its grace: only the current one, and at most one still in
    // its grace, exist; every user older than those two is gone for good.
    let roles = eventually(SEC(10), "old users dropped", || {
        let stack = &stack;
        let cred = cred.clone();
        let agent = &agent;
        async move {
            let current = s(&read_cred(&cred)?, "username");
            let issued = issued_users(agent);
            let roles = stack.pg_dynamic_roles().await;
            let old = &issued[..issued.len().saturating_sub(2)];
            let ok = roles.contains(&current)
                && roles.len() <= 2
                && old.iter().all(|u| !roles.contains(u));
            ok.then_some(roles)
        }
    })
    .await;
    assert!(roles.len() <= 2, "{roles:?}");

    assert_eq!(agent.stop(), 0, "agent exit code; logs:\n{}", agent.logs());
    // The agent's atomic writes leave no temp file behind on the shared volume.
    let left: Vec<String> = std::fs::read_dir(&volume.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["db.json"], "files on the shared volume");
    let logs = agent.logs() + &app_logs;
    assert!(!logs.contains(&secret_id), "the secret_id reached a log");
}

matrix!(agent_and_app_share_a_volume_through_five_rotations);
