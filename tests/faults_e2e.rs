//! Faults, black-box: the real binary against devvault's fault injection and a real PostgreSQL.
//!
//! Every scenario ends with the app holding a credential that works (it logs in to
//! PostgreSQL), or, while none can exist, `/ready` saying so; and none ever loses, empties or
//! tears the last good file (a [`FileWatch`] reads it back to back throughout).
//!
//! Request storms are checked by counting requests in devvault's request log over a window and
//! comparing with what the backoff allows. The agent runs with `--backoff-min 200ms
//! --backoff-max 2s` (set by [`AgentProc::spawn`]); each delay is the exponential step cut by
//! up to a quarter at random, so after the k-th consecutive failure the agent waits at least
//! `0.75 * min(200ms * 2^k, 2s)`: at least 150, 300, 600, 1200, then 1500 ms. [`max_attempts`]
//! turns that into an upper bound for a window. Load only spreads requests out, so these upper
//! bounds cannot flake on a slow machine.
//!
//! Covered elsewhere, not repeated here: a token revoked out of band and an invalid token
//! (tests/auth_e2e.rs); max_ttl reached with no gap (tests/agent_e2e.rs and, in virtual time,
//! tests/timing.rs); the probe server's own robustness (tests/probe_http.rs).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use serde_json::{json, Value};

const SEC: fn(u64) -> Duration = Duration::from_secs;

/// Upper bound on attempts that fit in `window_ms` when every failure is followed by the
/// shortest delay the backoff allows (see the module doc), counting the first attempt.
fn max_attempts(window_ms: u64) -> u64 {
    let mut elapsed = 0;
    let mut attempts = 1;
    for k in 0.. {
        let step = (200u64 << k.min(10)).min(2000) * 3 / 4;
        elapsed += step;
        if elapsed > window_ms {
            break;
        }
        attempts += 1;
    }
    attempts
}

/// How many of `requests` arrived within `window_ms` of the first of them (devvault's
/// monotonic clock).
fn in_window(requests: &[Value], window_ms: u64) -> u64 {
    let Some(first) = requests.first().map(|r| r["mono_ms"].as_u64().unwrap()) else {
        return 0;
    };
    requests
        .iter()
        .filter(|r| r["mono_ms"].as_u64().unwrap() <= first + window_ms)
        .count() as u64
}

/// A running agent on a dynamic database role, logged in with AppRole.
struct Run {
    stack: Stack,
    /// Holds the agent's files (and its log) for the test's duration.
    _dir: tempfile::TempDir,
    out: PathBuf,
    agent: AgentProc,
}

impl Run {
    /// Starts the stack and an agent for role `app` (`ttl`, `max_ttl`); `extra` flags are added
    /// to the agent's. Does not wait for readiness.
    async fn start(ttl: &str, max_ttl: &str, extra: &[&str]) -> Run {
        let stack = Stack::start().await;
        stack.dynamic_role("app", ttl, max_ttl).await;
        let (role_id, secret_id) = stack.approle("1h", "24h").await;
        Run::spawn(
            stack,
            &role_id,
            &secret_id,
            tempfile::tempdir().unwrap(),
            extra,
        )
    }

    fn spawn(
        stack: Stack,
        role_id: &str,
        secret_id: &str,
        dir: tempfile::TempDir,
        extra: &[&str],
    ) -> Run {
        let out = dir.path().join("db.json");
        let mut args = approle_args(dir.path(), role_id, secret_id);
        args.extend(
            [
                "--vault-addr",
                stack.addr(),
                "--secret",
                "database/creds/app",
                "--output",
                out.to_str().unwrap(),
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = AgentProc::spawn(&args, &[], dir.path());
        Run {
            stack,
            _dir: dir,
            out,
            agent,
        }
    }

    fn cred(&self) -> Value {
        read_cred(&self.out).expect("the credential file exists")
    }

    fn username(&self) -> String {
        s(&self.cred(), "username")
    }

    /// The file's credential logs in to PostgreSQL.
    async fn assert_works(&self, when: &str) {
        let c = self.cred();
        if let Err(e) = self
            .stack
            .pg_login(&s(&c, "username"), &s(&c, "password"))
            .await
        {
            panic!(
                "{when}: the file's credential does not log in: {e}\nlogs:\n{}",
                self.agent.logs()
            );
        }
    }

    /// Waits for a credential whose user is not `old`.
    async fn wait_new_user(&self, old: &str, limit: Duration, what: &str) -> Value {
        let start = Instant::now();
        loop {
            if let Some(c) = read_cred(&self.out).filter(|c| s(c, "username") != old) {
                return c;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; logs:\n{}",
                self.agent.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ready(&self) -> Option<(u16, String)> {
        self.agent.get("/ready").await
    }

    /// Waits until `/ready` answers `status`.
    async fn wait_ready_status(&self, status: u16, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some((s, body)) = self.ready().await {
                if s == status {
                    return body;
                }
            }
            assert!(
                start.elapsed() < limit,
                "/ready never answered {status} within {limit:?}; logs:\n{}",
                self.agent.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn assert_clean(report: &WatchReport) {
    assert_eq!(
        report.bad_reads, 0,
        "the file was missing, empty or unparsable {} times in {} reads: {:?}",
        report.bad_reads, report.reads, report.problems
    );
    assert!(report.reads > 0);
}

/// One fault step: what devvault does to the credential reads, how many of them it hits, and
/// the text the agent's failure log must carry.
struct Step {
    name: &'static str,
    faults: Vec<Value>,
    hits: u64,
    logged: &'static str,
}

fn on_creds(v: Value) -> Value {
    let mut v = v;
    v["path_prefix"] = json!("/v1/database/creds/");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_on_credential_reads_keep_the_file_and_recover() {
    // A long lease: nothing but the test's SIGUSR1 makes the agent read credentials.
    let mut run = Run::start(
        "1h",
        "24h",
        &["--request-timeout", "3s", "--revoke-grace", "1s"],
    )
    .await;
    run.agent.wait_ready(SEC(30)).await;
    run.assert_works("start").await;
    let watch = FileWatch::start(&run.out, Duration::from_millis(2));
    let steps = vec![
        // First, so the peak RSS before it is the baseline: 64 MiB answered to a 1 MiB cap.
        Step {
            name: "oversized response",
            faults: vec![on_creds(
                json!({"action": "oversize", "size_mb": 64, "count": 1}),
            )],
            hits: 1,
            logged: "larger than",
        },
        Step {
            name: "500/502/503 burst",
            faults: vec![
                on_creds(json!({"status": 500, "count": 1})),
                on_creds(json!({"status": 502, "count": 2, "body": "<html>bad gateway</html>"})),
                on_creds(json!({"status": 503, "count": 2})),
            ],
            hits: 5,
            logged: "HTTP 502",
        },
        Step {
            name: "connection dropped mid-response",
            faults: vec![on_creds(
                json!({"action": "drop", "after_bytes": 20, "count": 2}),
            )],
            hits: 2,
            logged: "failed; the last good file is kept",
        },
        Step {
            name: "connection reset without a response",
            faults: vec![on_creds(json!({"action": "reset", "count": 2}))],
            hits: 2,
            logged: "failed; the last good file is kept",
        },
        Step {
            name: "truncated JSON",
            faults: vec![on_creds(json!({"action": "truncate", "count": 2}))],
            hits: 2,
            logged: "invalid JSON",
        },
        Step {
            name: "invalid JSON",
            faults: vec![on_creds(json!({"action": "invalid_json", "count": 2}))],
            hits: 2,
            logged: "invalid JSON",
        },
        Step {
            name: "slower than the request timeout",
            faults: vec![on_creds(
                json!({"action": "latency", "latency_ms": 6000, "count": 1}),
            )],
            hits: 1,
            logged: "timed out",
        },
        Step {
            name: "429 with Retry-After",
            faults: vec![on_creds(
                json!({"status": 429, "count": 1, "headers": {"Retry-After": "2"},
                "body": {"errors": ["request path \"database/creds/app\": rate limit quota exceeded"]}}),
            )],
            hits: 1,
            logged: "HTTP 429",
        },
    ];
    let pid = run.agent.pid();
    for step in &steps {
        let rss_before = peak_rss_kib(pid);
        let old = run.username();
        let seq = run.stack.last_seq().await;
        for f in &step.faults {
            run.stack.fault(f.clone()).await;
        }
        run.agent.signal("USR1");
        let new = run
            .wait_new_user(&old, SEC(60), &format!("recovery from {}", step.name))
            .await;
        run.stack
            .pg_login(&s(&new, "username"), &s(&new, "password"))
            .await
            .unwrap_or_else(|e| panic!("{}: the new credential does not log in: {e}", step.name));
        assert_eq!(
            run.ready().await.map(|r| r.0),
            Some(200),
            "{}: ready after recovery",
            step.name
        );
        // Every fault was used up by the agent's attempts.
        let left = run.stack.control("GET", "faults", Value::Null).await;
        assert_eq!(
            left["faults"],
            json!([]),
            "{}: faults not consumed",
            step.name
        );
        let mut reads = run.stack.requests("/v1/database/creds/", seq).await;
        reads.sort_by_key(|r| r["mono_ms"].as_u64());
        let faulted = reads.iter().filter(|r| !r["fault"].is_null()).count() as u64;
        // devvault logs a request once it has answered it; one the agent gave up on while it
        // was delayed is never logged.
        let logged_hits = if step.name == "slower than the request timeout" {
            0
        } else {
            step.hits
        };
        assert_eq!(
            faulted, logged_hits,
            "{}: faults that hit: {reads:?}",
            step.name
        );
        // One read per attempt: the failures, then the one that worked. No storm.
        assert!(
            reads.len() as u64 <= step.hits + 1,
            "{}: {} credential reads for {} faults: {reads:?}",
            step.name,
            reads.len(),
            step.hits
        );
        let logs = run.agent.logs();
        assert!(
            logs.contains(step.logged),
            "{}: no failure log with {:?}:\n{logs}",
            step.name,
            step.logged
        );
        match step.name {
            "oversized response" => {
                // The agent stops reading at MAX_RESPONSE_BYTES (1 MiB): its peak memory must
                // not grow by anything like the 64 MiB that devvault sent.
                let grown = peak_rss_kib(pid).saturating_sub(rss_before);
                eprintln!(
                    "peak RSS {rss_before} KiB before the oversized response, grew by {grown} KiB"
                );
                assert!(
                    grown < 16 * 1024,
                    "peak RSS grew by {grown} KiB reading an oversized response"
                );
            }
            "429 with Retry-After" => {
                let t: Vec<u64> = reads
                    .iter()
                    .map(|r| r["mono_ms"].as_u64().unwrap())
                    .collect();
                assert_eq!(t.len(), 2, "{reads:?}");
                // The backoff alone would retry after 150-200 ms. (Retry-After is capped at
                // --backoff-max, 2 s here, so a hostile header cannot stall the agent for days.)
                assert!(
                    t[1] - t[0] >= 1900,
                    "retried {} ms after a 429 with Retry-After: 2",
                    t[1] - t[0]
                );
            }
            _ => {}
        }
    }
    let report = watch.finish();
    assert_clean(&report);
    assert!(
        report.usernames.len() > steps.len(),
        "{:?}",
        report.usernames
    );
    run.assert_works("end").await;
    assert_eq!(run.agent.stop(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_at_start_is_not_ready_without_a_storm_and_recovers_when_unsealed() {
    let stack = Stack::start().await;
    stack.dynamic_role("app", "1h", "24h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    stack
        .api(
            "POST",
            "secret/data/app",
            json!({"data": {"username": "kv", "password": "kv-pw"}}),
        )
        .await;
    stack.control("POST", "seal", Value::Null).await;
    let seq = stack.last_seq().await;
    let run = Run::spawn(
        stack,
        &role_id,
        &secret_id,
        tempfile::tempdir().unwrap(),
        &[],
    );
    // A second agent on a KV v2 secret named without `data/` and without --kind: its kind can
    // only be learnt from Vault once unsealed (a guess made while sealed would read
    // `secret/app` for good, which KV v2 answers with 404).
    let kv_dir = tempfile::tempdir().unwrap();
    std::fs::write(kv_dir.path().join("token"), "root").unwrap();
    let kv_out = kv_dir.path().join("kv.json");
    let mut kv_agent = AgentProc::spawn(
        &[
            "--vault-addr",
            run.stack.addr(),
            "--token-file",
            kv_dir.path().join("token").to_str().unwrap(),
            "--secret",
            "secret/app",
            "--output",
            kv_out.to_str().unwrap(),
        ],
        &[],
        kv_dir.path(),
    );
    // Not ready, with a reason; alive (a restart cannot unseal Vault); no file.
    let body = run.wait_ready_status(503, SEC(15)).await;
    assert!(body.contains("not ready"), "{body}");
    let window_ms = 6000;
    tokio::time::sleep(Duration::from_millis(window_ms + 1500)).await;
    assert_eq!(run.agent.status("/health").await, Some(200));
    assert_eq!(run.ready().await.map(|r| r.0), Some(503));
    assert!(!run.out.exists(), "no file can exist while sealed");
    let all: Vec<Value> = run
        .stack
        .requests("/v1/", seq)
        .await
        .into_iter()
        .filter(|r| r["path"] != "/v1/auth/token/lookup-self")
        .collect();
    let lookups = run.stack.requests("/v1/auth/token/lookup-self", seq).await;
    assert!(
        in_window(&lookups, window_ms) <= max_attempts(window_ms),
        "KV agent: {} token lookups in {window_ms} ms: {lookups:?}",
        lookups.len()
    );
    let logins: Vec<Value> = all
        .iter()
        .filter(|r| r["path"] == "/v1/auth/approle/login")
        .cloned()
        .collect();
    let n = in_window(&logins, window_ms);
    assert!(
        n >= 2 && n <= max_attempts(window_ms),
        "{n} logins in {window_ms} ms while sealed (backoff allows at most {}): {logins:?}",
        max_attempts(window_ms)
    );
    assert!(
        in_window(&all, window_ms) <= max_attempts(window_ms),
        "only the login is tried while there is no token: {all:?}"
    );
    assert!(
        run.agent.logs().contains("Vault is sealed"),
        "{}",
        run.agent.logs()
    );
    run.stack.control("POST", "unseal", Value::Null).await;
    // The backoff is capped at 2 s: ready soon after.
    run.wait_ready_status(200, SEC(30)).await;
    run.assert_works("after unseal").await;
    kv_agent.wait_ready(SEC(30)).await;
    assert_eq!(read_cred(&kv_out).unwrap()["password"], "kv-pw");
    assert_eq!(kv_agent.stop(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_mid_run_keeps_the_file_reports_expiry_and_recovers() {
    // A 4 s lease that can only be renewed while Vault is unsealed.
    let mut run = Run::start("4s", "1h", &["--revoke-grace", "1s"]).await;
    run.agent.wait_ready(SEC(30)).await;
    let before = std::fs::read(&run.out).unwrap();
    let old = run.username();
    let watch = FileWatch::start(&run.out, Duration::from_millis(2));
    let seq = run.stack.last_seq().await;
    run.stack.control("POST", "seal", Value::Null).await;
    // While sealed: the lease cannot be renewed, so it expires, and /ready must say so.
    let body = run.wait_ready_status(503, SEC(30)).await;
    assert!(body.contains("expired"), "{body}");
    assert_eq!(run.agent.status("/health").await, Some(200));
    let c = run.cred();
    assert_eq!(
        s(&c, "username"),
        old,
        "nothing new could be issued while sealed"
    );
    // The file was rewritten at most with a moved expires_at; its credential is kept.
    assert_eq!(
        s(&c, "password"),
        s(&serde_json::from_slice(&before).unwrap(), "password")
    );
    let sealed_requests = run.stack.requests("/v1/", seq).await;
    // /ready fails a second before the lease's real end (the agent keeps a second in hand
    // for Vault's rounding): stay sealed until the lease is surely gone in Vault too.
    tokio::time::sleep(SEC(2)).await;
    run.stack.control("POST", "unseal", Value::Null).await;
    let new = run
        .wait_new_user(&old, SEC(30), "a credential after unseal")
        .await;
    run.wait_ready_status(200, SEC(30)).await;
    run.stack
        .pg_login(&s(&new, "username"), &s(&new, "password"))
        .await
        .expect("the credential issued after unseal works");
    assert_clean(&watch.finish());
    // While sealed, one worker retried with backoff (the token renewer has nothing to do with
    // a 1 h token); a storm would be hundreds.
    let sealed: Vec<&Value> = sealed_requests
        .iter()
        .filter(|r| r["status"] == 503)
        .collect();
    let first = sealed.first().map(|r| r["mono_ms"].as_u64().unwrap());
    let last = sealed.last().map(|r| r["mono_ms"].as_u64().unwrap());
    if let (Some(first), Some(last)) = (first, last) {
        let bound = max_attempts(last - first) + 1;
        assert!(
            sealed.len() as u64 <= bound,
            "{} requests over {} ms while sealed, backoff allows {bound}: {sealed:?}",
            sealed.len(),
            last - first
        );
    }
    assert_eq!(run.agent.stop(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_revoked_out_of_band_is_replaced_once() {
    // The agent learns of the revocation at the next renewal: with a 3 s lease, within ~2 s.
    let mut run = Run::start("3s", "1h", &["--revoke-grace", "1s"]).await;
    run.agent.wait_ready(SEC(30)).await;
    let old = run.cred();
    let leases = run.stack.control("GET", "leases", Value::Null).await;
    let lease_id = leases["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["username"] == old["username"])
        .map(|l| l["lease_id"].as_str().unwrap().to_string())
        .expect("the file's lease in devvault");
    let watch = FileWatch::start(&run.out, Duration::from_millis(2));
    let seq = run.stack.last_seq().await;
    run.stack
        .control("POST", "revoke-lease", json!({ "lease_id": lease_id }))
        .await;
    assert!(!run.stack.pg_role_exists(&s(&old, "username")).await);
    let new = run
        .wait_new_user(&s(&old, "username"), SEC(20), "a replacement credential")
        .await;
    run.stack
        .pg_login(&s(&new, "username"), &s(&new, "password"))
        .await
        .expect("the replacement works");
    // Watch a few more renewals: exactly one replacement, renewals back to normal.
    tokio::time::sleep(SEC(4)).await;
    assert_eq!(run.username(), s(&new, "username"), "no further re-issue");
    let reads = run.stack.requests("/v1/database/creds/", seq).await;
    assert_eq!(reads.len(), 1, "one credential read: {reads:?}");
    let renews = run.stack.requests("/v1/sys/leases/renew", seq).await;
    let failed: Vec<&Value> = renews.iter().filter(|r| r["status"] != 200).collect();
    assert_eq!(
        failed.len(),
        1,
        "one failed renewal, then a new lease: {renews:?}"
    );
    assert_clean(&watch.finish());
    run.assert_works("end").await;
    run.wait_ready_status(200, SEC(5)).await;
    assert_eq!(run.agent.stop(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_self_denied_by_policy_falls_back_to_relogin_without_a_storm() {
    let stack = Stack::start().await;
    stack.dynamic_role("app", "1h", "24h").await;
    // Tokens of 4 s with only the `app` policy: no `default` policy, so renew-self is denied
    // by the ACL like a locked-down production role.
    stack
        .api("POST", "sys/auth/approle", json!({"type": "approle"}))
        .await;
    stack
        .api(
            "POST",
            "auth/approle/role/app",
            json!({"token_policies": ["app"], "token_ttl": "4s", "token_max_ttl": "1h",
                   "token_no_default_policy": true}),
        )
        .await;
    let role_id = stack
        .api("GET", "auth/approle/role/app/role-id", Value::Null)
        .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = stack
        .api("POST", "auth/approle/role/app/secret-id", json!({}))
        .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut run = Run::spawn(
        stack,
        &role_id,
        &secret_id,
        tempfile::tempdir().unwrap(),
        &["--revoke-grace", "1s"],
    );
    run.agent.wait_ready(SEC(30)).await;
    let seq = run.stack.last_seq().await;
    let watch = FileWatch::start(&run.out, Duration::from_millis(2));
    // 12 s = three token lifetimes. The credential must keep working throughout: each lease
    // dies with its token, so the agent re-issues ahead of every token's end.
    let start = Instant::now();
    while start.elapsed() < SEC(12) {
        run.assert_works("while tokens cannot be renewed").await;
        assert_eq!(
            run.ready().await.map(|r| r.0),
            Some(200),
            "{}",
            run.agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let window = start.elapsed().as_millis() as u64;
    assert_clean(&watch.finish());
    let renew_self = run.stack.requests("/v1/auth/token/renew-self", seq).await;
    let logins = run.stack.requests("/v1/auth/approle/login", seq).await;
    let all = run.stack.requests("/v1/", seq).await;
    // A token is renewed at the earliest after 0.57 of its 4 s, and after a denial it is
    // replaced at 2/3 of its life: at most one token per ~2.2 s.
    let per_token_ms = 2200;
    let bound = window / per_token_ms + 2;
    assert!(
        (2..=bound).contains(&(logins.len() as u64)),
        "{} logins in {window} ms (bound {bound}): {logins:?}",
        logins.len()
    );
    assert!(
        renew_self.iter().all(|r| r["status"] == 403),
        "renew-self is denied: {renew_self:?}"
    );
    assert!(
        renew_self.len() <= logins.len() + 1,
        "renew-self is not retried once denied: {} renew-self for {} tokens",
        renew_self.len(),
        logins.len()
    );
    // Per token: a login, a renew-self, a credential read, a revoke of the previous lease.
    assert!(
        all.len() as u64 <= bound * 5,
        "{} requests in {window} ms: {all:?}",
        all.len()
    );
    let logs = run.agent.logs();
    assert!(logs.contains("cannot renew the Vault token"), "{logs}");
    assert_eq!(run.agent.stop(), 0);
}

/// A tmpfs mounted for one test; unmounted on drop (also when the test panics).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `dir`, or None when that is not permitted (not root).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

fn remount(dir: &Path, opt: &str) {
    let ok = std::process::Command::new("mount")
        .args(["-o", &format!("remount,{opt}")])
        .arg(dir)
        .status()
        .unwrap();
    assert!(ok.success(), "remount {opt}");
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem at `dir` until it reports ENOSPC.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match f.write_all(&chunk).and_then(|()| f.sync_all()) {
            Ok(()) => continue,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_or_read_only_volume_keeps_the_old_file_and_recovers() {
    let stack = Stack::start().await;
    stack.dynamic_role("app", "1h", "24h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    // As root (CI and developer machines here) a 64 KiB tmpfs is really filled, then remounted
    // read-only: ENOSPC and EROFS. Not root: the directory is made unwritable with chmod, which
    // shows the same handling for EACCES but not ENOSPC/EROFS. Root without permission to
    // mount (an unprivileged container) can do neither, since root ignores the mode bits.
    let tmpfs = Tmpfs::mount(&vol, "64k");
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(1)
        == 0;
    match (&tmpfs, root) {
        (Some(_), _) => eprintln!("volume test: full and read-only tmpfs"),
        (None, false) => {
            eprintln!("volume test: not root, chmod 0555 directory instead of a tmpfs")
        }
        (None, true) => {
            eprintln!("volume test SKIPPED: root, but mounting a tmpfs is not permitted here");
            return;
        }
    }
    let out = vol.join("db.json");
    let mut args = approle_args(dir.path(), &role_id, &secret_id);
    args.extend(
        [
            "--vault-addr",
            stack.addr(),
            "--secret",
            "database/creds/app",
            "--output",
            out.to_str().unwrap(),
            "--revoke-grace",
            "1s",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = AgentProc::spawn(&args, &[], dir.path());
    agent.wait_ready(SEC(30)).await;
    let run = Run {
        stack,
        // `dir` holds the tmpfs mount point: it must outlive the mount guard, so Run gets
        // an empty directory of its own.
        _dir: tempfile::tempdir().unwrap(),
        out: out.clone(),
        agent,
    };
    run.assert_works("start").await;
    let watch = FileWatch::start(&out, Duration::from_millis(2));

    // Each case: break the volume, ask for a rotation, see the error surfaced and the old file
    // untouched, then repair and see the rotation land.
    let cases: &[(&str, &str)] = if tmpfs.is_some() {
        &[
            ("volume full", "the volume is full"),
            ("volume read-only", "mounted read-only"),
        ]
    } else {
        &[("directory not writable", "may not write in that directory")]
    };
    for &(name, hint) in cases {
        let before = std::fs::read(&out).unwrap();
        let old = run.username();
        let seq = run.stack.last_seq().await;
        let filler = match name {
            "volume full" => Some(fill(&vol)),
            "volume read-only" => {
                remount(&vol, "ro");
                None
            }
            _ => {
                std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o555)).unwrap();
                None
            }
        };
        run.agent.signal("USR1");
        // The failure is surfaced in the log with the operator's hint...
        eventually(SEC(30), &format!("{name}: error logged"), || {
            let logs = run.agent.logs();
            async move { logs.contains(hint).then_some(()) }
        })
        .await;
        // ...and keeps failing with backoff while broken, without losing the file.
        tokio::time::sleep(SEC(3)).await;
        assert_eq!(std::fs::read(&out).unwrap(), before, "{name}: file changed");
        assert_eq!(
            run.ready().await.map(|r| r.0),
            Some(200),
            "{name}: old credential still valid"
        );
        run.assert_works(name).await;
        // Every credential issued for a write that failed was revoked: no users pile up.
        let roles = run.stack.pg_dynamic_roles().await;
        // (The current user, at most one still in its grace, at most one being revoked.)
        assert!(roles.len() <= 3, "{name}: users left behind: {roles:?}");
        match name {
            "volume full" => std::fs::remove_file(filler.unwrap()).unwrap(),
            "volume read-only" => remount(&vol, "rw"),
            _ => std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o755)).unwrap(),
        }
        let new = run
            .wait_new_user(&old, SEC(30), &format!("{name}: recovery"))
            .await;
        run.stack
            .pg_login(&s(&new, "username"), &s(&new, "password"))
            .await
            .unwrap_or_else(|e| panic!("{name}: new credential: {e}"));
        let reads = run.stack.requests("/v1/database/creds/", seq).await;
        let window = reads
            .last()
            .zip(reads.first())
            .map(|(l, f)| l["mono_ms"].as_u64().unwrap() - f["mono_ms"].as_u64().unwrap())
            .unwrap_or(0);
        assert!(
            reads.len() as u64 <= max_attempts(window),
            "{name}: {} credential reads in {window} ms: {reads:?}\nlogs:\n{}",
            reads.len(),
            run.agent.logs()
        );
        // Temp files of failed writes are removed.
        let temps: Vec<_> = std::fs::read_dir(&vol)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".db.json.tmp-"))
            .map(|e| e.file_name())
            .collect();
        assert!(temps.is_empty(), "{name}: temp files left: {temps:?}");
    }
    assert_clean(&watch.finish());
    let mut agent = run.agent;
    assert_eq!(agent.stop(), 0);
    drop(tmpfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_during_rapid_rotation_never_breaks_the_file() {
    let stack = Stack::start().await;
    stack.dynamic_role("app", "1h", "24h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut args = approle_args(dir.path(), &role_id, &secret_id);
    args.extend(
        [
            "--vault-addr",
            stack.addr(),
            "--secret",
            "database/creds/app",
            "--output",
            out.to_str().unwrap(),
            // Old credentials are revoked at once: the file must never hold a revoked one.
            "--revoke-grace",
            "0s",
            "--rotate-every",
            "1s",
            "--file-mode",
            "0400",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut rng = rand::rng();
    let kills = 32;
    let mut seen = std::collections::BTreeSet::new();
    let mut temps_seen = 0;
    for i in 0..kills {
        let mut agent = AgentProc::spawn(&args, &[], dir.path());
        agent.wait_healthy(SEC(30)).await;
        if i == 0 {
            agent.wait_ready(SEC(30)).await;
        }
        // Rotate as fast as the agent can (SIGUSR1 bursts), and kill it at a random moment.
        let life = Duration::from_millis(rng.random_range(0..700));
        let start = Instant::now();
        while start.elapsed() < life {
            agent.usr1();
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..25))).await;
        }
        agent.kill9();
        let cred = read_cred(&out).unwrap_or_else(|| panic!("kill {i}: the file is gone"));
        let user = s(&cred, "username");
        seen.insert(user.clone());
        assert!(
            stack.lease_usernames().await.contains(&user),
            "kill {i}: {user} has no live lease in Vault (never issued, or revoked)"
        );
        stack
            .pg_login(&user, &s(&cred, "password"))
            .await
            .unwrap_or_else(|e| panic!("kill {i}: the file's credential does not log in: {e}"));
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400, "kill {i}");
        // A kill can leave a temp file behind; it must not be readable by anyone else, and
        // the next start removes it.
        for e in std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
        {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(".db.json.tmp-") {
                temps_seen += 1;
                let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                assert_eq!(
                    mode & 0o077,
                    0,
                    "kill {i}: temp file {name} has mode {mode:o}"
                );
            }
        }
    }
    eprintln!(
        "{kills} kills, {} distinct credentials in the file after a kill, {temps_seen} stray temp files",
        seen.len()
    );
    assert!(seen.len() > kills / 2, "rotations happened: {seen:?}");
    // A clean start removes the strays.
    let mut agent = AgentProc::spawn(&args, &[], dir.path());
    agent.wait_ready(SEC(30)).await;
    let temps: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".db.json.tmp-"))
        .collect();
    assert!(
        temps.is_empty() || temps.len() == 1,
        "stale temps not removed: {temps:?}"
    );
    assert_eq!(agent.stop(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_torn_or_empty_file_across_thousands_of_rotations() {
    // KV v2 rather than database credentials: a rotation costs a KV write instead of a
    // PostgreSQL role, so thousands fit in seconds. The file is written the same way.
    let vault = testkit::devvault::DevVault::start(&[]);
    let http = reqwest::Client::new();
    let put = |version: u64| {
        let http = http.clone();
        let url = format!("{}/v1/secret/data/app", vault.addr());
        async move {
            // 8 KiB per version, so that a write that was not atomic would be seen half done.
            let padding: String =
                std::iter::repeat_n(char::from(b'a' + (version % 26) as u8), 8 * 1024).collect();
            let r = http
                .post(url)
                .header("X-Vault-Token", "root")
                .json(&json!({"data": {"username": "app", "password": format!("pw-{version}"), "padding": padding}}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    put(0).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "root").unwrap();
    let out = dir.path().join("kv.json");
    let mut agent = AgentProc::spawn(
        &[
            "--vault-addr",
            vault.addr(),
            "--token-file",
            token.to_str().unwrap(),
            "--secret",
            "secret/app",
            "--kind",
            "kv-v2",
            "--output",
            out.to_str().unwrap(),
        ],
        &[],
        dir.path(),
    );
    agent.wait_ready(SEC(30)).await;
    // Two readers, like apps opening the file by path on every read. A short pause between
    // reads leaves the 2 cores to the agent and devvault; each reader still reads the file
    // several times per rotation.
    let readers = [
        FileWatch::start(&out, Duration::from_micros(200)),
        FileWatch::start(&out, Duration::from_micros(300)),
    ];
    let target = 2000u64;
    let start = Instant::now();
    let mut version = 0;
    let mut written = 0u64;
    let mut last = read_cred(&out).unwrap()["version"].as_u64().unwrap();
    while written < target {
        version += 1;
        put(version).await;
        // SIGUSR1: read it now (and again, should a signal be coalesced with an earlier one).
        agent.usr1();
        let deadline = Instant::now() + SEC(30);
        let mut nudged = Instant::now();
        loop {
            if nudged.elapsed() > SEC(1) {
                agent.usr1();
                nudged = Instant::now();
            }
            let v = read_cred(&out).unwrap()["version"].as_u64().unwrap();
            if v > last {
                written += v - last;
                last = v;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "version {version} never reached the file"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let elapsed = start.elapsed();
    let reports: Vec<WatchReport> = readers.into_iter().map(FileWatch::finish).collect();
    let reads: u64 = reports.iter().map(|r| r.reads).sum();
    let contents: u64 = reports.iter().map(|r| r.distinct_contents).sum();
    eprintln!("{written} rotations in {elapsed:?}; {reads} reads saw {contents} distinct files");
    for r in &reports {
        assert_clean(r);
    }
    assert!(
        contents > target / 10,
        "the readers saw the rotations: {contents}"
    );
    assert_eq!(agent.stop(), 0);
    // Every rotation was a real file replacement, each logged once.
    let logs = agent.logs();
    assert!(
        logs.matches("wrote new credential").count() as u64 >= target,
        "{}",
        &logs[..2000.min(logs.len())]
    );
}
