//! Lease timing of the real worker loop against a fake Vault, in virtual time
//! (`tokio::time::pause`): hours of leases, renewals and revocations run in milliseconds, and
//! every second of them is checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use vault_rotator::config::{Backoff, Output, SecretConfig};
use vault_rotator::credential::{SecretKind, SecretValue};
use vault_rotator::render::OutputFormat;
use vault_rotator::secret::{Control, Worker};
use vault_rotator::sink::FileSink;
use vault_rotator::state::{SecretInfo, State};
use vault_rotator::vault::{AuthError, Backend, Envelope, MountInfo, Token, VaultError};

const S: fn(u64) -> Duration = Duration::from_secs;

#[derive(Debug, Clone)]
struct FakeLease {
    username: String,
    token_gen: u64,
    issued_at: Instant,
    expires_at: Instant,
    revoked_at: Option<Instant>,
}

impl FakeLease {
    fn alive(&self, now: Instant) -> bool {
        self.revoked_at.is_none_or(|r| r > now) && self.expires_at > now
    }
}

#[derive(Default)]
struct Log {
    leases: HashMap<String, FakeLease>,
    reads: u32,
    renewals: u32,
    revokes: u32,
    logins: u32,
    /// Token generation → when it ends (None: never).
    tokens: HashMap<u64, Option<Instant>>,
}

/// A database role with `ttl` and `max_ttl`, and tokens that live `token_ttl` (0: forever).
struct FakeVault {
    ttl: Duration,
    max_ttl: Duration,
    token_ttl: Duration,
    log: Mutex<Log>,
    current: Mutex<Option<Arc<Token>>>,
    changes: watch::Sender<u64>,
}

impl FakeVault {
    fn new(ttl: Duration, max_ttl: Duration, token_ttl: Duration) -> Arc<FakeVault> {
        Arc::new(FakeVault {
            ttl,
            max_ttl,
            token_ttl,
            log: Mutex::new(Log::default()),
            current: Mutex::new(None),
            changes: watch::channel(0).0,
        })
    }

    fn login(&self) -> Arc<Token> {
        let now = Instant::now();
        let mut log = self.log.lock().unwrap();
        log.logins += 1;
        let generation = log.logins as u64;
        let end = (!self.token_ttl.is_zero()).then(|| now + self.token_ttl);
        log.tokens.insert(generation, end);
        // Non-renewable: its end is final, as with a token at its max TTL.
        let t = Arc::new(Token::new(
            SecretValue::new(format!("tok-{generation}")),
            generation,
            format!("acc-{generation}"),
            (!self.token_ttl.is_zero()).then_some(self.token_ttl),
            false,
            now,
        ));
        *self.current.lock().unwrap() = Some(t.clone());
        self.changes.send_replace(generation);
        t
    }

    /// Leases die with their token, as in Vault.
    fn reap(&self, now: Instant) {
        let mut log = self.log.lock().unwrap();
        let tokens = log.tokens.clone();
        for l in log.leases.values_mut() {
            if let Some(Some(end)) = tokens.get(&l.token_gen) {
                if *end <= now && l.revoked_at.is_none() {
                    l.revoked_at = Some(*end);
                }
            }
        }
    }

    fn token_gen(token: &SecretValue) -> u64 {
        token.expose().trim_start_matches("tok-").parse().unwrap()
    }

    fn check_token(&self, token: &SecretValue) -> Result<u64, VaultError> {
        let g = Self::token_gen(token);
        let now = Instant::now();
        match self.log.lock().unwrap().tokens.get(&g) {
            Some(Some(end)) if *end <= now => Err(forbidden()),
            _ => Ok(g),
        }
    }
}

fn forbidden() -> VaultError {
    VaultError::Status {
        method: reqwest::Method::GET,
        path: "x".into(),
        status: 403,
        errors: vec!["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n".into()],
        retry_after: None,
    }
}

fn bad_request(msg: &str) -> VaultError {
    VaultError::Status {
        method: reqwest::Method::PUT,
        path: "sys/leases/renew".into(),
        status: 400,
        errors: vec![msg.into()],
        retry_after: None,
    }
}

fn envelope(v: Value) -> Envelope {
    serde_json::from_value(v).unwrap()
}

impl Backend for FakeVault {
    async fn token(&self) -> Result<Arc<Token>, AuthError> {
        let cur = self.current.lock().unwrap().clone();
        match cur {
            Some(t) if !t.is_expired(Instant::now()) => Ok(t),
            _ => Ok(self.login()),
        }
    }

    async fn confirm_dead(&self, token: &Arc<Token>, _: &VaultError) -> Result<bool, AuthError> {
        // Like lookup-self: a token this fake no longer honours is dead.
        let dead = self.check_token(token.secret()).is_err();
        if dead {
            token.mark_dead(Instant::now());
        }
        Ok(dead)
    }

    async fn relogin(&self, stale: u64) -> Result<Arc<Token>, AuthError> {
        let cur = self.current.lock().unwrap().clone();
        match cur {
            Some(t) if t.generation != stale => Ok(t),
            _ => Ok(self.login()),
        }
    }

    fn token_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn read(&self, token: &SecretValue, path: &str) -> Result<Envelope, VaultError> {
        let g = self.check_token(token)?;
        let now = Instant::now();
        let mut log = self.log.lock().unwrap();
        log.reads += 1;
        let n = log.reads;
        let id = format!("{path}/lease{n}");
        let username = format!("v-app-{n}");
        log.leases.insert(
            id.clone(),
            FakeLease {
                username: username.clone(),
                token_gen: g,
                issued_at: now,
                expires_at: now + self.ttl,
                revoked_at: None,
            },
        );
        Ok(envelope(json!({
            "lease_id": id, "renewable": true, "lease_duration": self.ttl.as_secs(),
            "data": {"username": username, "password": format!("pw-{n}")}
        })))
    }

    async fn renew_lease(
        &self,
        token: &SecretValue,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Envelope, VaultError> {
        self.check_token(token)?;
        let now = Instant::now();
        let mut log = self.log.lock().unwrap();
        log.renewals += 1;
        let lease = log
            .leases
            .get_mut(lease_id)
            .ok_or_else(|| bad_request("lease not found"))?;
        if !lease.alive(now) {
            return Err(bad_request("lease not found"));
        }
        let max_end = lease.issued_at + self.max_ttl;
        if max_end <= now {
            return Err(bad_request("past the max TTL, cannot renew"));
        }
        let granted = increment.min(max_end - now);
        lease.expires_at = now + granted;
        Ok(envelope(
            json!({"lease_id": lease_id, "renewable": true, "lease_duration": granted.as_secs()}),
        ))
    }

    async fn revoke_lease(&self, token: &SecretValue, lease_id: &str) -> Result<(), VaultError> {
        self.check_token(token)?;
        let now = Instant::now();
        let mut log = self.log.lock().unwrap();
        log.revokes += 1;
        if let Some(l) = log.leases.get_mut(lease_id) {
            l.revoked_at.get_or_insert(now);
        }
        Ok(())
    }

    async fn rotate_role(&self, _token: &SecretValue, _path: &str) -> Result<(), VaultError> {
        Ok(())
    }

    async fn mount_info(&self, _token: &SecretValue, _path: &str) -> Result<MountInfo, VaultError> {
        Ok(serde_json::from_value(json!({"type": "database", "path": "database/"})).unwrap())
    }
}

struct Run {
    vault: Arc<FakeVault>,
    file: PathBuf,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn start(vault: Arc<FakeVault>, rotate_every: Option<Duration>, grace: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db.json");
    let cfg = SecretConfig {
        name: "db".into(),
        path: "database/creds/app".into(),
        kind: Some(SecretKind::Dynamic),
        output: Output::File {
            path: file.clone(),
            format: OutputFormat::Json,
        },
        file_mode: 0o400,
        owner: None,
        rotate_every,
        revoke_grace: grace,
        drain_check: None,
        refresh_every: S(300),
        hooks: vec![],
    };
    let state = State::new(vec![SecretInfo {
        name: "db".into(),
        path: cfg.path.clone(),
        kind: SecretKind::Dynamic,
    }]);
    let sink = FileSink::new(file.clone(), 0o400, None).unwrap();
    let (stop, rx) = watch::channel(false);
    let control = Control::new(Arc::new(Notify::new()), rx);
    let backoff = Backoff {
        min: S(1),
        max: S(60),
    };
    let worker = Worker::new(cfg, vault.clone(), sink, state, control, backoff, false);
    let task = tokio::spawn(worker.run());
    Run {
        vault,
        file,
        stop,
        task,
        _dir: dir,
    }
}

fn file_username(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let v: Value = serde_json::from_slice(&bytes).expect("the file always parses");
    v["username"].as_str().map(str::to_string)
}

/// Steps virtual time a second at a time for `total`, asserting that the credential in the file
/// is alive in Vault at every step. Returns, per username, when it was first and last seen.
async fn watch_file(run: &Run, total: Duration) -> HashMap<String, (Instant, Instant)> {
    let start = Instant::now();
    let mut seen: HashMap<String, (Instant, Instant)> = HashMap::new();
    while Instant::now() - start < total {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = Instant::now();
        run.vault.reap(now);
        let Some(user) = file_username(&run.file) else {
            assert!(
                now - start < S(2),
                "no credential written after {:?}",
                now - start
            );
            continue;
        };
        let log = run.vault.log.lock().unwrap();
        let lease = log
            .leases
            .values()
            .find(|l| l.username == user)
            .expect("file holds an issued credential");
        assert!(
            lease.alive(now),
            "at {:?} the file holds {user}, which Vault no longer honours: {lease:?}",
            now - start
        );
        seen.entry(user)
            .and_modify(|e| e.1 = now)
            .or_insert((now, now));
    }
    seen
}

async fn stop(run: Run) -> Log {
    run.stop.send(true).unwrap();
    run.task.await.unwrap();
    let log = std::mem::take(&mut *run.vault.log.lock().unwrap());
    log
}

#[tokio::test(start_paused = true)]
async fn capped_leases_are_replaced_before_max_ttl_and_revoked_after_grace() {
    // ttl 30s, max_ttl 100s: each credential can live 100s at most.
    let vault = FakeVault::new(S(30), S(100), Duration::ZERO);
    let run = start(vault, None, S(10));
    let seen = watch_file(&run, S(1000)).await;
    let log = stop(run).await;
    // About one credential per 60–90 s of a 100 s max_ttl, never one per renewal.
    assert!((11..=17).contains(&log.reads), "reads: {}", log.reads);
    assert!(seen.len() as u32 >= log.reads - 1);
    // Renewals: one or two per credential, no storm.
    assert!(
        log.renewals <= log.reads * 4,
        "renewals: {} for {} credentials",
        log.renewals,
        log.reads
    );
    // Every replaced credential was revoked about one grace after its successor appeared.
    let mut checked = 0;
    for (user, (_, last_seen)) in &seen {
        let lease = log.leases.values().find(|l| &l.username == user).unwrap();
        if let Some(revoked) = lease.revoked_at {
            let after = revoked - *last_seen;
            assert!(
                after >= S(9) && after <= S(11),
                "{user} revoked {after:?} after it left the file"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} revocations checked");
}

#[tokio::test(start_paused = true)]
async fn rotate_every_issues_on_cadence() {
    let vault = FakeVault::new(S(3600), S(86400), Duration::ZERO);
    let run = start(vault, Some(S(120)), S(30));
    let seen = watch_file(&run, S(605)).await;
    let log = stop(run).await;
    assert_eq!(log.reads, 6, "one at start and one every 120 s");
    assert_eq!(seen.len(), 6);
    assert_eq!(
        log.renewals, 0,
        "a one-hour lease needs no renewal inside two minutes"
    );
    // The one replaced at 600 s is still in its 30 s grace when the test stops.
    assert_eq!(
        log.revokes, 4,
        "each replaced credential revoked after its grace"
    );
}

#[tokio::test(start_paused = true)]
async fn leases_are_replaced_before_their_token_ends() {
    // Long leases, but the token that creates them lives only 90 s and cannot be renewed:
    // the leases die with it, so they must be replaced (under a new login) before that.
    let vault = FakeVault::new(S(3600), S(86400), S(90));
    let run = start(vault, None, S(5));
    watch_file(&run, S(600)).await;
    let log = stop(run).await;
    assert!(
        log.logins >= 6 && log.logins <= 12,
        "logins: {}",
        log.logins
    );
    // One credential per token lifetime, not more: re-login alone does not mint users.
    assert!(
        log.reads <= log.logins + 1,
        "reads {} > logins {} + 1",
        log.reads,
        log.logins
    );
}
