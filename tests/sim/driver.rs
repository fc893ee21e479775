//! The simulation driver: one seed makes one scenario (a Vault set-up, an agent configuration
//! and a timed schedule of faults and operator actions), runs the real agent against the
//! model in paused time, and checks the design's invariants after every simulated second.
//!
//! Everything random comes from the seed (the agent's own jitter too, through
//! `Agent::with_client`), so a failing seed replays exactly: `SIM_SEED=<n> cargo test --test
//! sim replay -- --nocapture`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use vault_rotator::agent::{Agent, Command};
use vault_rotator::config::Config;
use vault_rotator::state::State;
use vault_rotator::time::{to_system, wall_now};
use vault_rotator::vault::Client;

use crate::model::{AppRole, Fault, Flavor, LeaseState, Model, Scope, TokenSpec};

const S: fn(u64) -> Duration = Duration::from_secs;
/// Secrets a scenario may configure, over its reloads.
const MAX_SECRETS: usize = 16;
/// How often the invariants are checked.
const STEP: Duration = Duration::from_secs(1);

/// What the invariants found: the first violation, with the story so far.
#[derive(Debug)]
pub struct Violation {
    pub seed: u64,
    pub invariant: &'static str,
    pub detail: String,
    pub at: Duration,
    pub trace: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} broke '{}' at {:.1}s: {}",
            self.seed,
            self.invariant,
            self.at.as_secs_f64(),
            self.detail
        )?;
        writeln!(
            f,
            "replay: SIM_SEED={} cargo test --test sim replay -- --nocapture",
            self.seed
        )?;
        write!(f, "{}", self.trace)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dynamic,
    Static,
    Kv,
}

/// One configured secret, as the scenario sees it.
#[derive(Debug, Clone)]
struct SecretSpec {
    name: String,
    kind: Kind,
    /// The Vault path (a mistyped reload changes it).
    path: String,
    output: PathBuf,
    grace: Duration,
    rotate_every: Option<Duration>,
    file_mode: u32,
}

#[derive(Debug, Clone)]
enum Auth {
    AppRole,
    /// `--auth token` with a token file the driver can refill.
    Token(PathBuf),
}

#[derive(Debug, Clone)]
enum Event {
    Down(bool),
    Sealed(bool),
    Fault(Fault),
    Latency(Duration),
    DbDown(bool),
    RevokeCurrentLease(usize),
    RevokeCurrentToken,
    Deny(&'static str),
    Allow(&'static str),
    /// A new token in the token file (`--auth token`).
    NewToken(TokenSpec),
    Reload(Vec<SecretSpec>),
    RotateAll,
    AdminRotate(String),
    /// Faults are over from here: everything is allowed and healthy again.
    Quiet,
}

pub struct Scenario {
    seed: u64,
    flavor: Flavor,
    auth: Auth,
    approle_token: TokenSpec,
    first_token: Option<TokenSpec>,
    dyn_ttl: Duration,
    dyn_max: Duration,
    static_period: Duration,
    secrets: Vec<SecretSpec>,
    splay: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    events: Vec<(Duration, Event)>,
    quiet_at: Duration,
    horizon: Duration,
    dir: PathBuf,
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn secs(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    S(rng.random_range(lo..=hi))
}

impl Scenario {
    fn generate(seed: u64, dir: &Path) -> Scenario {
        let mut rng = StdRng::seed_from_u64(seed);
        let flavor = if rng.random_bool(0.5) {
            Flavor::OpenBao
        } else {
            Flavor::Vault
        };
        let dyn_ttl = secs(&mut rng, 20, 900);
        let dyn_max = dyn_ttl * rng.random_range(1..=4);
        let token_ttl = secs(&mut rng, 15, 1800);
        let approle_token = TokenSpec::new(token_ttl)
            .max_ttl(token_ttl * rng.random_range(1..=6))
            .renewable(rng.random_bool(0.85));
        let use_token_auth = rng.random_bool(0.2);
        let auth = if use_token_auth {
            Auth::Token(dir.join("vault-token"))
        } else {
            Auth::AppRole
        };
        let first_token = use_token_auth.then(|| {
            let ttl = secs(&mut rng, 20, 1800);
            TokenSpec::new(ttl)
                .explicit_max_ttl(ttl * rng.random_range(1..=3))
                .renewable(rng.random_bool(0.5))
        });
        let backoff_min = S(1);
        let backoff_max = pick(&mut rng, &[S(10), S(30), S(60), S(300)]);
        let mut secrets = vec![];
        let count = rng.random_range(1..=3);
        for i in 0..count {
            let kind = if i == 0 {
                Kind::Dynamic
            } else {
                pick(&mut rng, &[Kind::Dynamic, Kind::Static, Kind::Kv])
            };
            secrets.push(secret_spec(&mut rng, dir, i, kind));
        }
        let horizon = secs(&mut rng, 600, 3600);
        let settle = backoff_max * 3 + S(120) + S(60);
        let quiet_at = horizon.saturating_sub(settle + S(300)).max(S(60));
        let mut sc = Scenario {
            seed,
            flavor,
            auth,
            approle_token,
            first_token,
            dyn_ttl,
            dyn_max,
            static_period: secs(&mut rng, 30, 1200),
            secrets,
            splay: secs(&mut rng, 0, 10),
            backoff_min,
            backoff_max,
            events: vec![],
            quiet_at,
            horizon,
            dir: dir.to_path_buf(),
        };
        sc.schedule(&mut rng);
        sc
    }

    /// The timed faults and operator actions, all before `quiet_at`, then the return to health.
    fn schedule(&mut self, rng: &mut StdRng) {
        let mut events = vec![];
        let quiet = self.quiet_at.as_secs().max(2);
        let n = rng.random_range(0..=12);
        let mut config = self.secrets.clone();
        let mut next_index = config.len();
        if rng.random_bool(0.25) {
            // Like Vault's default policy: no sys/leases/revoke.
            events.push((S(0), Event::Deny("sys/leases/revoke")));
        }
        for _ in 0..n {
            let at = S(rng.random_range(1..quiet));
            let len = secs(rng, 1, 900);
            let end = (at + len).min(self.quiet_at);
            match rng.random_range(0..15) {
                0 => {
                    events.push((at, Event::Down(true)));
                    events.push((end, Event::Down(false)));
                }
                1 => {
                    events.push((at, Event::Sealed(true)));
                    events.push((end, Event::Sealed(false)));
                }
                2 => {
                    let status = pick(rng, &[500, 502, 503, 429]);
                    let mut f = Fault::new(status, rng.random_range(1..=20));
                    if status == 429 || rng.random_bool(0.3) {
                        f = f.retry_after(rng.random_range(1..=120).to_string());
                    }
                    if rng.random_bool(0.5) {
                        f = f.on(pick(rng, &["database/", "sys/leases/", "auth/"]));
                    }
                    events.push((at, Event::Fault(f)));
                }
                3 => {
                    events.push((at, Event::Latency(secs(rng, 1, 40))));
                    events.push((end, Event::Latency(Duration::ZERO)));
                }
                4 => {
                    events.push((at, Event::DbDown(true)));
                    events.push((end, Event::DbDown(false)));
                }
                5 => events.push((at, Event::RevokeCurrentLease(rng.random_range(0..4)))),
                6 => events.push((at, Event::RevokeCurrentToken)),
                7 => {
                    let path = pick(
                        rng,
                        &["database/", "sys/leases/renew", "auth/token/renew-self"],
                    );
                    events.push((at, Event::Deny(path)));
                    events.push((end, Event::Allow(path)));
                }
                8 => events.push((at, Event::RotateAll)),
                9 => {
                    if let Some(s) = config.get(rng.random_range(0..config.len())) {
                        events.push((at, Event::AdminRotate(s.name.clone())));
                    }
                }
                10 => {
                    // A changed secret: a new grace (or file mode) for one of them.
                    let i = rng.random_range(0..config.len());
                    config[i].grace = secs(rng, 0, 120);
                    if rng.random_bool(0.3) {
                        config[i].file_mode = 0o440;
                    }
                    events.push((at, Event::Reload(config.clone())));
                }
                11 => {
                    // A mistyped path, fixed later.
                    let i = rng.random_range(0..config.len());
                    let good = config[i].path.clone();
                    config[i].path = format!("{good}x");
                    events.push((at, Event::Reload(config.clone())));
                    config[i].path = good;
                    events.push((end, Event::Reload(config.clone())));
                }
                12 => {
                    if config.len() < 4 && next_index < MAX_SECRETS {
                        let kind = pick(rng, &[Kind::Dynamic, Kind::Static, Kind::Kv]);
                        config.push(secret_spec(rng, &self.dir, next_index, kind));
                        next_index += 1;
                        events.push((at, Event::Reload(config.clone())));
                    }
                }
                13 => {
                    if config.len() > 1 {
                        config.remove(rng.random_range(1..config.len()));
                        events.push((at, Event::Reload(config.clone())));
                    }
                }
                _ => {
                    if let Auth::Token(_) = self.auth {
                        let ttl = secs(rng, 20, 1800);
                        let spec = TokenSpec::new(ttl)
                            .explicit_max_ttl(ttl * rng.random_range(1..=3))
                            .renewable(rng.random_bool(0.5));
                        events.push((at, Event::NewToken(spec)));
                    }
                }
            }
        }
        events.push((self.quiet_at, Event::Quiet));
        events.push((self.quiet_at, Event::Reload(config.clone())));
        if let Auth::Token(_) = self.auth {
            // Liveness is owed only when a token that lasts can be had.
            let spec = TokenSpec::new(self.horizon * 2).renewable(true);
            events.push((self.quiet_at, Event::NewToken(spec)));
        }
        events.sort_by_key(|(at, _)| *at);
        self.events = events;
    }
}

fn secret_spec(rng: &mut StdRng, dir: &Path, i: usize, kind: Kind) -> SecretSpec {
    let (name, path) = match kind {
        // One path per secret, so that every request names the worker that sent it.
        Kind::Dynamic => (format!("db{i}"), format!("database/creds/app{i}")),
        Kind::Static => (format!("st{i}"), format!("database/static-creds/svc{i}")),
        Kind::Kv => (format!("kv{i}"), format!("secret/data/app{i}")),
    };
    SecretSpec {
        output: dir.join(format!("{name}.json")),
        name,
        kind,
        path,
        grace: secs(rng, 0, 120),
        rotate_every: rng.random_bool(0.25).then(|| secs(rng, 30, 1800)),
        file_mode: 0o400,
    }
}

fn toml_config(sc: &Scenario, secrets: &[SecretSpec]) -> String {
    let mut t = String::new();
    t.push_str("[vault]\naddr = \"http://vault.sim:8200\"\nrequest_timeout = \"10s\"\n\n[auth]\n");
    match &sc.auth {
        Auth::AppRole => {
            t.push_str("method = \"approle\"\n");
            t.push_str(&format!(
                "role_id_file = {:?}\nsecret_id_file = {:?}\n",
                sc.dir.join("role-id"),
                sc.dir.join("secret-id")
            ));
        }
        Auth::Token(file) => {
            t.push_str(&format!("method = \"token\"\ntoken_file = {file:?}\n"));
        }
    }
    t.push_str(&format!(
        "\n[agent]\nlisten = \"off\"\nadmin_listen = \"off\"\nsplay = \"{}s\"\nbackoff_min = \"{}s\"\nbackoff_max = \"{}s\"\n",
        sc.splay.as_secs(),
        sc.backoff_min.as_secs(),
        sc.backoff_max.as_secs()
    ));
    for s in secrets {
        t.push_str(&format!(
            "\n[[secret]]\nname = {:?}\npath = {:?}\noutput = {:?}\nrevoke_grace = \"{}s\"\nfile_mode = \"{:o}\"\nrefresh_every = \"60s\"\n",
            s.name,
            s.path,
            s.output,
            s.grace.as_secs(),
            s.file_mode
        ));
        if let Some(every) = s.rotate_every {
            t.push_str(&format!("rotate_every = \"{}s\"\n", every.as_secs()));
        }
    }
    t
}

fn load_config(sc: &Scenario, secrets: &[SecretSpec], n: usize) -> Config {
    let path = sc.dir.join(format!("config-{n}.toml"));
    std::fs::write(&path, toml_config(sc, secrets)).expect("write the config");
    let args = vec![
        "vault-rotator".to_string(),
        "--config".into(),
        path.display().to_string(),
    ];
    Config::load(args.into_iter().map(std::ffi::OsString::from), &|_| None)
        .unwrap_or_else(|e| panic!("seed {}: the generated config is invalid: {e}", sc.seed))
}

/// What the driver itself did to Vault, so that the checks can tell the agent's doing from
/// the environment's.
#[derive(Default)]
struct Doings {
    /// Leases and tokens revoked out of band.
    revoked_leases: Vec<String>,
    revoked_tokens: Vec<String>,
    /// When sys/leases/revoke was denied: [from, to).
    revoke_denied: Vec<(Instant, Option<Instant>)>,
    /// Operator actions (rotations, reloads), for the flood bound.
    operator_actions: Vec<Instant>,
    reloads: Vec<Instant>,
    /// Per username: when it was first and last seen in a configured file.
    seen: BTreeMap<String, (Instant, Instant)>,
    /// Per secret name: since when it has been configured without a break. A file left by a
    /// removed secret may hold a credential revoked while it was not configured.
    configured_since: BTreeMap<String, Instant>,
    /// The most secrets configured at once, over the reloads.
    most_secrets: usize,
}

struct Run {
    sc: Scenario,
    model: Model,
    state: Arc<State>,
    commands: mpsc::Sender<Command>,
    agent: tokio::task::JoinHandle<()>,
    secrets: Vec<SecretSpec>,
    start: Instant,
    did: Doings,
    reload_count: usize,
    files: FileCache,
}

struct LostReads(Vec<(Instant, String)>);

impl LostReads {
    /// Whether this credential was made by a read whose answer was lost.
    fn made(&self, i: &crate::model::Issued) -> bool {
        let path = i.lease_id.rsplit_once('/').map_or("", |(p, _)| p);
        self.0.iter().any(|(at, p)| *at == i.at && p == path)
    }
}

/// The output files as last parsed, keyed by what `stat` says of them: the checks look at
/// every file every simulated second, and the agent rewrites them far less often (always by
/// rename, so a new write is a new inode).
#[derive(Default)]
struct FileCache(HashMap<PathBuf, (FileStamp, Rc<Value>)>);

type FileStamp = (u64, i64, i64, u64);

impl FileCache {
    fn doc(&mut self, path: &Path) -> Option<Rc<Value>> {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(path) else {
            self.0.remove(path);
            return None;
        };
        let stamp = (meta.ino(), meta.mtime(), meta.mtime_nsec(), meta.len());
        if let Some((seen, doc)) = self.0.get(path) {
            if *seen == stamp {
                return Some(doc.clone());
            }
        }
        let doc = Rc::new(read_json(path)?);
        self.0.insert(path.to_path_buf(), (stamp, doc.clone()));
        Some(doc)
    }

    fn field(&mut self, path: &Path, field: &str) -> Option<String> {
        self.doc(path)?[field].as_str().map(str::to_string)
    }
}

fn rfc3339(v: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339(v.as_str()?).ok()
}

impl Run {
    fn elapsed(&self) -> Duration {
        Instant::now() - self.start
    }

    /// A violation, unless `SIM_SKIP` (a comma list of invariant names) masks that invariant:
    /// one failure can hide the others behind it when the simulator is run on old code.
    fn flag(&self, invariant: &'static str, detail: String) -> Result<(), Violation> {
        if skipped(invariant) {
            return Ok(());
        }
        Err(self.violation(invariant, detail))
    }

    fn violation(&self, invariant: &'static str, detail: String) -> Violation {
        Violation {
            seed: self.sc.seed,
            invariant,
            detail,
            at: self.elapsed(),
            trace: self.model.trace_text(),
        }
    }

    async fn apply(&mut self, event: Event) {
        let now = Instant::now();
        self.model.note(format!("driver: {event:?}"));
        match event {
            Event::Down(d) => self.model.set_down(d),
            Event::Sealed(s) => self.model.set_sealed(s),
            Event::Fault(f) => self.model.inject(f),
            Event::Latency(d) => self.model.set_latency(d),
            Event::DbDown(d) => self.model.set_db_down(d),
            Event::RevokeCurrentLease(i) => {
                let Some(s) = self.secrets.get(i % self.secrets.len().max(1)) else {
                    return;
                };
                if let Some(user) = self.files.field(&s.output, "username") {
                    if let Some(lease) = self.model.lease_of(&user) {
                        self.model.revoke_lease_out_of_band(&lease);
                        self.did.revoked_leases.push(lease);
                    }
                }
            }
            Event::RevokeCurrentToken => {
                let token = match &self.sc.auth {
                    Auth::AppRole => self.model.login_accessors().last().cloned(),
                    Auth::Token(_) => self.did.revoked_tokens.last().cloned().and(None),
                };
                if let Some(acc) = token {
                    self.model.revoke_token_out_of_band(&acc);
                    self.did.revoked_tokens.push(acc);
                }
            }
            Event::Deny(p) => {
                self.model.deny(Scope::All, p);
                if p == "sys/leases/revoke" {
                    self.did.revoke_denied.push((now, None));
                }
            }
            Event::Allow(p) => {
                self.model.allow(Scope::All, p);
                if p == "sys/leases/revoke" {
                    if let Some(last) = self.did.revoke_denied.last_mut() {
                        last.1.get_or_insert(now);
                    }
                }
            }
            Event::NewToken(spec) => {
                if let Auth::Token(file) = &self.sc.auth {
                    let t = self.model.create_token(spec);
                    std::fs::write(file, &t.value).expect("write the token file");
                }
            }
            Event::Reload(secrets) => {
                self.reload_count += 1;
                let names: Vec<String> = secrets.iter().map(|s| s.name.clone()).collect();
                self.did.configured_since.retain(|n, _| names.contains(n));
                for n in names {
                    self.did.configured_since.entry(n).or_insert(now);
                }
                let cfg = load_config(&self.sc, &secrets, self.reload_count);
                self.did.most_secrets = self.did.most_secrets.max(secrets.len());
                self.secrets = secrets;
                self.did.reloads.push(now);
                self.did.operator_actions.push(now);
                let _ = self.commands.send(Command::Reload(Box::new(cfg))).await;
            }
            Event::RotateAll => {
                self.did.operator_actions.push(now);
                let _ = self.commands.send(Command::RotateAll).await;
            }
            Event::AdminRotate(name) => {
                self.did.operator_actions.push(now);
                self.state.request_rotation(Some(&name));
            }
            Event::Quiet => {
                self.model.clear_faults();
                self.model.set_down(false);
                self.model.set_sealed(false);
                self.model.set_latency(Duration::ZERO);
                self.model.set_db_down(false);
                for p in [
                    "database/",
                    "sys/leases/renew",
                    "auth/token/renew-self",
                    "sys/leases/revoke",
                ] {
                    self.model.allow(Scope::All, p);
                }
                if let Some(last) = self.did.revoke_denied.last_mut() {
                    last.1.get_or_insert(now);
                }
            }
        }
    }

    /// ready ⇒ valid, and never revoke what the file holds.
    fn check_files(&mut self) -> Result<(), Violation> {
        let now = Instant::now();
        let ready = self.state.ready(wall_now()).is_ok();
        for s in self.secrets.clone() {
            let doc = self.files.doc(&s.output);
            if ready && doc.is_none() {
                self.flag(
                    "ready => written",
                    format!("/ready is 200 but {} has no credential file", s.name),
                )?;
                continue;
            }
            let Some(doc) = doc else { continue };
            if s.kind == Kind::Kv {
                continue;
            }
            let (Some(user), Some(pass)) = (doc["username"].as_str(), doc["password"].as_str())
            else {
                self.flag("file", format!("{} lacks username/password", s.name))?;
                continue;
            };
            self.did
                .seen
                .entry(user.to_string())
                .and_modify(|e| e.1 = now)
                .or_insert((now, now));
            let alive = self.model.credential_alive(user, pass);
            if !alive {
                if let Some(since) = self.revoked_out_of_band(user) {
                    // Vault does not tell anyone: the agent learns at its next renewal (of the
                    // lease or of the token), and must replace the credential by then.
                    // Counted from when Vault is reachable again, should faults be running.
                    let notice = self.sc.dyn_ttl.max(self.sc.approle_token.ttl)
                        + self.sc.backoff_max * 2
                        + S(60);
                    let from = since.max(self.start + self.sc.quiet_at);
                    if now < from + notice {
                        continue;
                    }
                    self.flag(
                        "liveness",
                        format!("{}'s user {user} was revoked out of band {:.0}s ago and is still in the file", s.name, (now - since).as_secs_f64()),
                    )?;
                }
            }
            if ready && !alive {
                self.flag(
                    "ready => alive",
                    format!("/ready is 200 but {}'s user {user} does not work", s.name),
                )?;
            }
            if ready {
                if let (Some(exp), Some(end)) =
                    (rfc3339(&doc["expires_at"]), self.model.credential_end(user))
                {
                    if exp > to_system(end.current_end) {
                        self.flag(
                            "expires_at <= real end",
                            format!(
                                "{}'s expires_at is {:.1}s past the credential's real end",
                                s.name,
                                exp.duration_since(to_system(end.current_end))
                                    .unwrap_or_default()
                                    .as_secs_f64()
                            ),
                        )?;
                    }
                }
            }
            if s.kind == Kind::Dynamic {
                self.check_not_revoked_by_agent(&s.name, user)?;
            }
        }
        Ok(())
    }

    /// The reads Vault served whose answers the agent never got (a timeout).
    fn lost_reads(&self) -> LostReads {
        LostReads(
            self.model
                .requests()
                .into_iter()
                .filter(|r| r.status.is_none() && r.served.is_some())
                .map(|r| (r.at, r.path))
                .collect(),
        )
    }

    /// When the driver revoked this user's lease, or its parent token, out of band.
    fn revoked_out_of_band(&self, user: &str) -> Option<Instant> {
        let lease = self.model.lease_of(user)?;
        let parent = self.model.lease_parent(&lease).unwrap_or_default();
        let by_driver =
            self.did.revoked_leases.contains(&lease) || self.did.revoked_tokens.contains(&parent);
        match self.model.lease_state(&lease) {
            Some(LeaseState::Revoked { at }) if by_driver => Some(at),
            _ => None,
        }
    }

    fn check_not_revoked_by_agent(&self, name: &str, user: &str) -> Result<(), Violation> {
        let Some(lease) = self.model.lease_of(user) else {
            return Ok(());
        };
        let Some(LeaseState::Revoked { at }) = self.model.lease_state(&lease) else {
            return Ok(());
        };
        if self.did.revoked_leases.contains(&lease) {
            return Ok(());
        }
        if self
            .did
            .configured_since
            .get(name)
            .is_some_and(|since| at < *since)
        {
            return Ok(());
        }
        let parent = self.model.lease_parent(&lease).unwrap_or_default();
        if self.did.revoked_tokens.contains(&parent) {
            return Ok(());
        }
        // Died with its token's expiry: a ready => valid matter, not a revocation.
        if self
            .model
            .token_end(&parent)
            .is_some_and(|t| t.current_end <= at)
        {
            return Ok(());
        }
        self.flag(
            "never revoke what the file holds",
            format!("{name}'s file holds {user}, whose lease the agent revoked"),
        )
    }

    /// No floods or hot loops: requests per minute, and credentials per lease lifetime.
    fn check_floods(&self) -> Result<(), Violation> {
        let requests = self.model.requests();
        let secrets = self.secrets.len().max(self.sc.secrets.len()) + 2;
        let per_minute = 40 * secrets + 20;
        let mut lo = 0;
        for (hi, r) in requests.iter().enumerate() {
            while requests[lo].at + S(60) <= r.at {
                lo += 1;
            }
            let ops = self
                .did
                .operator_actions
                .iter()
                .filter(|t| **t + S(60) > r.at && **t <= r.at)
                .count();
            if hi + 1 - lo > per_minute + 10 * ops {
                self.flag(
                    "no floods",
                    format!(
                        "{} requests within one minute (bound {per_minute})",
                        hi + 1 - lo
                    ),
                )?;
            }
        }
        // Credentials whose answer was lost are retries the backoff check governs: with Vault
        // slower than the client's timeout, each retry at the backoff cap makes one (seed 7572).
        let lost = self.lost_reads();
        let issued: Vec<_> = self
            .model
            .issued()
            .into_iter()
            .filter(|i| !lost.made(i))
            .collect();
        let lifetime = self
            .sc
            .dyn_max
            .min(self.sc.approle_token.max_ttl.unwrap_or(self.sc.dyn_max))
            .max(S(1));
        let window = lifetime.max(S(60));
        let secrets = self
            .did
            .most_secrets
            .max(self.sc.secrets.len())
            .max(self.secrets.len())
            .max(1);
        // A login whose token cannot be renewed takes its leases with it: each secret then
        // needs a new credential about every half of the token's TTL (seed 5674: 31 s
        // tokens, two secrets). Otherwise, one every 20 s in all is already a flood.
        let forced = match (&self.sc.auth, self.sc.approle_token.renewable) {
            (Auth::AppRole, false) => {
                let step = (self.sc.approle_token.ttl / 2).clamp(S(1), S(20));
                secrets * (window.as_secs() / step.as_secs()) as usize
            }
            _ => (window.as_secs() / 20) as usize,
        };
        let mut lo = 0;
        for (hi, i) in issued.iter().enumerate() {
            while issued[lo].at + window <= i.at {
                lo += 1;
            }
            let ops = self
                .did
                .operator_actions
                .iter()
                .filter(|t| **t + window > i.at && **t <= i.at)
                .count();
            let bound = 6 * secrets
                + forced
                + 2 * ops
                + 2 * (self.did.revoked_leases.len() + self.did.revoked_tokens.len());
            if hi + 1 - lo > bound {
                self.flag(
                    "no floods",
                    format!(
                        "{} credentials issued within {:?} (bound {bound})",
                        hi + 1 - lo,
                        window
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// No retry of a secret read earlier than the backoff or Retry-After allows.
    fn check_backoff(&self) -> Result<(), Violation> {
        let requests = self.model.requests();
        // Per path: when the failed request left, when its failure came back, the wait owed.
        let mut last_failure: BTreeMap<&str, (Instant, Instant, Duration)> = BTreeMap::new();
        for r in &requests {
            let read = r.method == reqwest::Method::GET
                && (r.path.contains("/creds/")
                    || r.path.contains("/static-creds/")
                    || r.path.starts_with("secret/"));
            if !read {
                continue;
            }
            if let Some((sent, done, wait)) = last_failure.get(r.path.as_str()) {
                // A reload (a new worker) or an operator's rotation since the failed request
                // left owes nothing to its backoff.
                let reloaded = self.did.reloads.iter().any(|t| t > sent && *t <= r.at);
                let rotated = self
                    .did
                    .operator_actions
                    .iter()
                    .any(|t| t > sent && *t <= r.at);
                if !reloaded && !rotated && r.at < *done + *wait {
                    self.flag(
                        "backoff honoured",
                        format!(
                            "GET {} retried {:.2}s after a failure; at least {:.2}s was owed",
                            r.path,
                            (r.at - *done).as_secs_f64(),
                            wait.as_secs_f64()
                        ),
                    )?;
                }
            }
            let failed = match r.status {
                None => true,
                Some(s) => s == 429 || (500..600).contains(&s) && s != 501,
            };
            if failed {
                let retry_after = self.retry_after_of(r);
                let floor = self.sc.backoff_min.mul_f64(0.75);
                let wait = floor.max(retry_after.unwrap_or_default().min(self.sc.backoff_max));
                last_failure.insert(
                    r.path.as_str(),
                    (r.at, r.done_at, wait - Duration::from_millis(1)),
                );
            } else {
                last_failure.remove(r.path.as_str());
            }
        }
        Ok(())
    }

    fn retry_after_of(&self, r: &crate::model::RequestRecord) -> Option<Duration> {
        r.retry_after
            .as_deref()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(S)
    }

    /// Every credential that left the files was revoked (or died) within its grace plus a
    /// bound, wherever policy allowed the revoke.
    fn check_leaks(&self) -> Result<(), Violation> {
        let now = Instant::now();
        let in_files: Vec<String> = self
            .secrets
            .iter()
            .filter_map(|s| file_field(&s.output, "username"))
            .collect();
        let grace = self
            .did
            .reloads
            .iter()
            .map(|_| S(120))
            .chain(self.sc.secrets.iter().map(|s| s.grace))
            .max()
            .unwrap_or_default();
        let bound = grace + self.sc.backoff_max * 3 + S(60);
        // A read whose answer was lost (a timeout after Vault served it) made a lease the
        // agent never heard of: it can only die at its TTL, or with its token.
        let lost = self.lost_reads();
        for i in self.model.issued() {
            if in_files.contains(&i.username) || lost.made(&i) {
                continue;
            }
            if self.model.lease_state(&i.lease_id) != Some(LeaseState::Live) {
                continue;
            }
            let left = self.did.seen.get(&i.username).map_or(i.at, |s| s.1);
            if now < left + bound {
                continue;
            }
            let denied = self
                .did
                .revoke_denied
                .iter()
                .any(|(from, to)| *from <= left + bound && to.is_none_or(|t| t >= left));
            if denied {
                continue;
            }
            self.flag(
                "no leaks",
                format!(
                    "{} left the files {:.0}s ago and its lease is still live",
                    i.username,
                    (now - left).as_secs_f64()
                ),
            )?;
        }
        Ok(())
    }
}

fn skipped(invariant: &str) -> bool {
    std::env::var("SIM_SKIP")
        .map(|v| v.split(',').any(|s| s.trim() == invariant))
        .unwrap_or(false)
}

fn read_json(path: &Path) -> Option<Value> {
    let bytes = std::fs::read(path).ok()?;
    Some(serde_json::from_slice(&bytes).expect("the file is never torn"))
}

fn file_field(path: &Path, field: &str) -> Option<String> {
    read_json(path)?[field].as_str().map(str::to_string)
}

/// Real time one seed may take. Virtual time only moves when every task waits, so a hot
/// loop in the agent freezes it: the seed then never ends, and this catches it.
const WATCHDOG: Duration = Duration::from_secs(60);

fn watchdog() -> Duration {
    std::env::var("SIM_WATCHDOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(WATCHDOG, Duration::from_secs)
}

/// Runs one seed to its end; `Err` names the first invariant broken.
pub fn run_seed(seed: u64, base: &Path) -> Result<(), Box<Violation>> {
    run_with(seed, base, move |dir| Scenario::generate(seed, dir))
}

/// Runs one of the scripted scenarios of [`SCRIPTED`].
pub fn run_scripted(name: &str, base: &Path) -> Result<(), Box<Violation>> {
    let make = SCRIPTED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no scripted scenario {name}"));
    run_with(0, base, make)
}

fn run_with(
    seed: u64,
    base: &Path,
    make: impl FnOnce(&Path) -> Scenario + Send + 'static,
) -> Result<(), Box<Violation>> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("sim-{seed}-"))
        .tempdir_in(base)
        .expect("temp dir");
    let path = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let progress: Progress = Arc::new(std::sync::Mutex::new((Duration::ZERO, None)));
    let seen = progress.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let _ = tx.send(runtime.block_on(async move {
            // The same wall clock for every run of a seed: 2026-01-01T00:00:00Z at its start.
            vault_rotator::time::pin_wall_clock(
                std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            );
            let sc = make(&path);
            simulate(sc, seen).await
        }));
    });
    match rx.recv_timeout(watchdog()) {
        Ok(result) => result.map_err(Box::new),
        Err(_) => {
            let (at, model) = progress
                .lock()
                .map(|p| p.clone())
                .unwrap_or((Duration::ZERO, None));
            let trace = model.map(|m| m.trace_text()).unwrap_or_default();
            // The stuck thread is left behind; the test fails here.
            std::mem::forget(dir);
            Err(Box::new(Violation {
                seed,
                invariant: "no hot loops",
                detail: format!(
                    "virtual time stopped at {:.3}s: some task never waits (a busy loop)",
                    at.as_secs_f64()
                ),
                at,
                trace,
            }))
        }
    }
}

/// How far a seed got in virtual time, and its model, for the watchdog's report.
type Progress = Arc<std::sync::Mutex<(Duration, Option<Model>)>>;

async fn simulate(sc: Scenario, progress: Progress) -> Result<(), Violation> {
    let seed = sc.seed;
    let dir = sc.dir.clone();
    let dir = dir.as_path();
    let model = Model::new(sc.flavor, seed);
    model.set_client_timeout(S(10));
    if std::env::var("SIM_TRACE_REQUESTS").is_ok() {
        model.set_trace_requests(true);
    }
    for i in 0..MAX_SECRETS {
        model.add_dynamic_role("database", &format!("app{i}"), sc.dyn_ttl, sc.dyn_max);
        model.add_static_role(
            "database",
            &format!("svc{i}"),
            &format!("svc-user{i}"),
            sc.static_period,
        );
        let mut kv = Map::new();
        kv.insert("username".into(), format!("kv-user{i}").into());
        kv.insert("password".into(), "kv-pass".into());
        model.kv_put(&format!("secret/app{i}"), kv);
    }
    std::fs::write(dir.join("role-id"), "role-1").expect("role id");
    std::fs::write(dir.join("secret-id"), "secret-1").expect("secret id");
    model.set_approle(AppRole {
        role_name: "app".into(),
        role_id: "role-1".into(),
        secret_id: "secret-1".into(),
        token: sc.approle_token.clone(),
    });
    if let (Auth::Token(file), Some(spec)) = (&sc.auth, &sc.first_token) {
        let t = model.create_token(spec.clone());
        std::fs::write(file, &t.value).expect("token file");
    }
    let cfg = load_config(&sc, &sc.secrets, 0);
    let state = State::new(Vec::new());
    let client = Client::with_transport(Arc::new(model.clone()));
    let agent = Agent::with_client(cfg, state.clone(), client, Some(seed))
        .unwrap_or_else(|e| panic!("seed {seed}: agent: {e}"));
    let (tx, rx) = mpsc::channel(8);
    let task = tokio::spawn(async move {
        let _ = agent.run_with(rx, None).await;
    });
    let mut run = Run {
        secrets: sc.secrets.clone(),
        sc,
        model,
        state,
        commands: tx,
        agent: task,
        start: Instant::now(),
        did: Doings::default(),
        reload_count: 0,
        files: FileCache::default(),
    };
    let events = std::mem::take(&mut run.sc.events);
    let mut events = events.into_iter().peekable();
    // Three backoff caps, a minute for a policy denial's floor, and a minute more.
    let liveness_by = run.sc.quiet_at + run.sc.backoff_max * 3 + S(120) + run.sc.splay;
    let mut ready_since_quiet = false;
    loop {
        let elapsed = run.elapsed();
        while let Some((at, _)) = events.peek() {
            if *at > elapsed {
                break;
            }
            let (_, e) = events.next().expect("peeked");
            run.apply(e).await;
            // Let the agent take in a command before the invariants look (a signal, too,
            // takes effect when the agent next runs, not at the instant it is sent).
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if let Ok(mut p) = progress.lock() {
            // For the watchdog's report, should the next step never come.
            p.0 = elapsed;
            if p.1.is_none() {
                p.1 = Some(run.model.clone());
            }
        }
        run.check_files()?;
        if elapsed >= run.sc.quiet_at && run.state.ready(wall_now()).is_ok() {
            ready_since_quiet = true;
        }
        if elapsed >= liveness_by && !ready_since_quiet {
            let why = run.state.ready(wall_now()).err().unwrap_or_default();
            run.flag(
                "liveness",
                format!(
                    "not ready {:.0}s after the faults stopped: {why}",
                    (elapsed - run.sc.quiet_at).as_secs_f64()
                ),
            )?;
        }
        if elapsed >= run.sc.horizon {
            break;
        }
        tokio::time::sleep(STEP).await;
    }
    run.check_floods()?;
    run.check_backoff()?;
    run.check_leaks()?;
    let _ = run.commands.send(Command::Stop).await;
    if tokio::time::timeout(S(60), &mut run.agent).await.is_err() {
        run.flag(
            "liveness",
            "the agent did not stop within 60s of SIGTERM".into(),
        )?;
    }
    Ok(())
}

/// Hand-written scenarios, one per lifecycle failure of issue 13, run through the same
/// invariants as the random ones. Each broke an invariant before its fix.
pub type Script = fn(&Path) -> Scenario;

pub const SCRIPTED: &[(&str, Script)] = &[
    (
        "ready-before-first-credential",
        ready_before_first_credential,
    ),
    ("lease-gone-then-issue-fails", lease_gone_then_issue_fails),
    (
        "denied-revoke-keeps-the-token",
        denied_revoke_keeps_the_token,
    ),
    (
        "reload-to-a-typo-keeps-the-credential",
        reload_to_a_typo_keeps_the_credential,
    ),
    (
        "token-that-cannot-outlive-the-lease",
        token_that_cannot_outlive_the_lease,
    ),
    ("reload-during-the-splay", reload_during_the_splay),
    (
        "retired-worker-retries-a-failed-revoke",
        retired_worker_retries_a_failed_revoke,
    ),
    (
        "unanswered-renewals-still-revoke",
        unanswered_renewals_still_revoke,
    ),
    (
        "removed-secret-retries-a-failed-revoke",
        removed_secret_retries_a_failed_revoke,
    ),
    (
        "readded-while-its-revoke-is-retried",
        readded_while_its_revoke_is_retried,
    ),
    (
        "token-renewable-again-after-a-denial",
        token_renewable_again_after_a_denial,
    ),
    (
        "static-rotation-denied-then-allowed",
        static_rotation_denied_then_allowed,
    ),
    (
        "new-token-file-while-the-old-token-ends",
        new_token_file_while_the_old_token_ends,
    ),
    (
        "retired-during-a-new-login-reads-nothing",
        retired_during_a_new_login_reads_nothing,
    ),
    (
        "readded-while-an-older-revoke-hangs",
        readded_while_an_older_revoke_hangs,
    ),
];

/// The common base: AppRole, one dynamic secret, no faults, a 20-minute run.
fn scripted(dir: &Path) -> Scenario {
    Scenario {
        seed: 0,
        flavor: Flavor::OpenBao,
        auth: Auth::AppRole,
        approle_token: TokenSpec::new(S(3600)).max_ttl(S(36_000)),
        first_token: None,
        dyn_ttl: S(120),
        dyn_max: S(3600),
        static_period: S(3600),
        secrets: vec![SecretSpec {
            name: "db0".into(),
            kind: Kind::Dynamic,
            path: "database/creds/app0".into(),
            output: dir.join("db0.json"),
            grace: S(5),
            rotate_every: None,
            file_mode: 0o400,
        }],
        splay: Duration::ZERO,
        backoff_min: S(1),
        backoff_max: S(30),
        events: vec![],
        quiet_at: S(900),
        horizon: S(1200),
        dir: dir.to_path_buf(),
    }
}

fn finish(mut sc: Scenario, mut events: Vec<(Duration, Event)>) -> Scenario {
    events.push((sc.quiet_at, Event::Quiet));
    events.sort_by_key(|(at, _)| *at);
    sc.events = events;
    sc
}

/// Failure 1: with a start splay, /ready answered 200 before any secret was registered.
fn ready_before_first_credential(dir: &Path) -> Scenario {
    let mut sc = scripted(dir);
    sc.splay = S(5);
    finish(sc, vec![])
}

/// Failure 2: a renewal finds the lease gone while issuing fails (database down): the worker
/// spun on "renew now" for good.
fn lease_gone_then_issue_fails(dir: &Path) -> Scenario {
    let mut sc = scripted(dir);
    sc.dyn_ttl = S(60);
    finish(
        sc,
        vec![
            (S(20), Event::DbDown(true)),
            (S(25), Event::RevokeCurrentLease(0)),
            (S(600), Event::DbDown(false)),
        ],
    )
}

/// Failure 3: a policy without sys/leases/revoke made the revoke's 403 trigger a new login,
/// and the token that parents the live lease was no longer renewed.
fn denied_revoke_keeps_the_token(dir: &Path) -> Scenario {
    let mut sc = scripted(dir);
    sc.approle_token = TokenSpec::new(S(20)).max_ttl(S(3600));
    finish(
        sc,
        vec![
            (S(0), Event::Deny("sys/leases/revoke")),
            (S(30), Event::RotateAll),
        ],
    )
}

/// Failure 4: a SIGHUP to a mistyped path revoked the credential still in the file after the
/// grace, whatever became of its replacement.
fn reload_to_a_typo_keeps_the_credential(dir: &Path) -> Scenario {
    let sc = scripted(dir);
    let mut typo = sc.secrets.clone();
    typo[0].path = "database/creds/ap0".into();
    let fixed = sc.secrets.clone();
    finish(
        sc,
        vec![(S(30), Event::Reload(typo)), (S(600), Event::Reload(fixed))],
    )
}

/// Failure 5: `--auth token` with a non-renewable 20 s token under a 2-minute lease re-issued
/// ever faster as the token's end neared.
fn token_that_cannot_outlive_the_lease(dir: &Path) -> Scenario {
    let mut sc = scripted(dir);
    sc.auth = Auth::Token(dir.join("vault-token"));
    sc.first_token = Some(TokenSpec::new(S(20)).renewable(false));
    let quiet = sc.quiet_at;
    let horizon = sc.horizon;
    finish(
        sc,
        vec![(quiet, Event::NewToken(TokenSpec::new(horizon * 2)))],
    )
}

/// Found by seed 542: a SIGHUP during the start splay was dropped and cut the splay short, so
/// a secret it added was never started, and /ready answered 200 without its file.
fn reload_during_the_splay(dir: &Path) -> Scenario {
    let mut sc = scripted(dir);
    sc.splay = S(5);
    let mut added = sc.secrets.clone();
    added.push(second_secret(&sc, dir));
    finish(sc, vec![(S(1), Event::Reload(added))])
}

/// Found by seed 1197: a worker retired by SIGHUP tried each revoke once after its grace, so
/// a passing fault (a 429, Vault down) left the old credential alive to its TTL.
fn retired_worker_retries_a_failed_revoke(dir: &Path) -> Scenario {
    let mut sc = scripted(dir);
    // Long enough that the lease left unrevoked outlives the leak bound.
    sc.dyn_ttl = S(1800);
    let mut regraced = sc.secrets.clone();
    regraced[0].grace = S(10);
    let fault = Fault::new(503, 2).on("sys/leases/revoke");
    finish(
        sc,
        vec![
            (S(30), Event::Reload(regraced)),
            (S(34), Event::Fault(fault)),
        ],
    )
}

/// Found by seed 2354: renewals whose answers were lost (Vault slower than the client's
/// timeout) still extended the lease in Vault. The agent, counting only answered renewals,
/// took the old lease for dead when it replaced it and never revoked it.
fn unanswered_renewals_still_revoke(dir: &Path) -> Scenario {
    let mut sc = scripted(dir);
    sc.dyn_ttl = S(600);
    finish(
        sc,
        vec![
            (S(300), Event::Latency(S(13))),
            (S(700), Event::Latency(S(0))),
        ],
    )
}

/// Found by seed 3875: the same as seed 1197, for a secret that SIGHUP removed.
fn removed_secret_retries_a_failed_revoke(dir: &Path) -> Scenario {
    let (sc, kept) = with_a_removable_secret(dir);
    let fault = Fault::new(503, 2).on("sys/leases/revoke");
    finish(
        sc,
        vec![(S(30), Event::Reload(kept)), (S(34), Event::Fault(fault))],
    )
}

/// Found by seed 1006: a removed secret's worker, retrying its revoke, went on after the
/// secret was configured again, and revoked the credential its file still held while the
/// new worker could not issue (the database down).
fn readded_while_its_revoke_is_retried(dir: &Path) -> Scenario {
    let (sc, kept) = with_a_removable_secret(dir);
    let both = sc.secrets.clone();
    let fault = Fault::new(503, 3).on("sys/leases/revoke");
    finish(
        sc,
        vec![
            (S(30), Event::Reload(kept)),
            (S(34), Event::Fault(fault)),
            (S(37), Event::DbDown(true)),
            (S(38), Event::Reload(both)),
            (S(300), Event::DbDown(false)),
        ],
    )
}

/// Found by seed 4902: `--auth token`, and renew-self denied for a while. The worker kept the
/// token's end it had seen as final, and once the policy allowed renewals again (the token
/// renewed, alive for long), it still took the same token for one that cannot outlive its
/// lease, and never issued again.
fn token_renewable_again_after_a_denial(dir: &Path) -> Scenario {
    let mut sc = scripted(dir);
    sc.auth = Auth::Token(dir.join("vault-token"));
    sc.first_token = Some(TokenSpec::new(S(600)));
    sc.dyn_ttl = S(300);
    finish(
        sc,
        vec![
            (S(50), Event::Deny("auth/token/renew-self")),
            (S(400), Event::Allow("auth/token/renew-self")),
        ],
    )
}

/// Found by seed 9312: `--rotate-every` on a static role, and then a policy that denies the
/// whole mount. The denied rotate-role marked the password ended, the read after it was denied
/// too, and the next read was planned for Vault's own rotation, an hour away: the file's
/// password stayed expired long after the policy allowed reads again.
fn static_rotation_denied_then_allowed(dir: &Path) -> Scenario {
    let mut sc = scripted(dir);
    sc.secrets = vec![SecretSpec {
        name: "st0".into(),
        kind: Kind::Static,
        path: "database/static-creds/svc0".into(),
        output: dir.join("st0.json"),
        grace: S(5),
        rotate_every: Some(S(65)),
        file_mode: 0o400,
    }];
    finish(
        sc,
        vec![
            (S(100), Event::Deny("database/")),
            (S(300), Event::Allow("database/")),
        ],
    )
}

/// Found by seed 36862: `--auth token` with a non-renewable token that cannot outlive the
/// lease. Once one re-read of the token file had found the same token, the workers' retries
/// were answered with that read instead of reading the file again, so a new token put there
/// was picked up only at the renewer's next planned login, minutes later.
fn new_token_file_while_the_old_token_ends(dir: &Path) -> Scenario {
    let mut sc = scripted(dir);
    sc.auth = Auth::Token(dir.join("vault-token"));
    sc.first_token = Some(TokenSpec::new(S(1774)).renewable(false));
    sc.dyn_ttl = S(178);
    sc.dyn_max = S(712);
    sc.quiet_at = S(1276);
    sc.horizon = S(1700);
    let horizon = sc.horizon;
    finish(
        sc,
        vec![(S(1276), Event::NewToken(TokenSpec::new(horizon * 2)))],
    )
}

/// Found by seed 50289: the token revoked out of band while issues failed (database down),
/// and a SIGHUP that changed the secret while its worker was logging in again. The retired
/// worker still made its "retry once with the new token" read, at the instant its successor
/// made its first: two reads of one path, the second with no backoff after the first's
/// failure.
fn retired_during_a_new_login_reads_nothing(dir: &Path) -> Scenario {
    let mut sc = scripted(dir);
    sc.backoff_min = S(5);
    let mut regraced = sc.secrets.clone();
    regraced[0].grace = S(10);
    finish(
        sc,
        vec![
            (S(10), Event::DbDown(true)),
            (S(11), Event::Latency(S(1))),
            (S(12), Event::RotateAll),
            (S(15), Event::RevokeCurrentToken),
            // The old worker's issue meets the revoked token at 18 s and logs in again, slowed
            // by the latency, until 19.2 s.
            (S(19), Event::Reload(regraced)),
            (S(200), Event::Latency(S(0))),
            (S(300), Event::DbDown(false)),
        ],
    )
}

/// Found by seed 69233: the same as seed 1006, but the secret was configured again while
/// the removed worker waited on an older lease's revoke (Vault slower than the request
/// timeout). The re-add was looked at only before the round of revokes, so the current
/// credential's revoke, next in that round, still went out.
fn readded_while_an_older_revoke_hangs(dir: &Path) -> Scenario {
    let (sc, kept) = with_a_removable_secret(dir);
    let both = sc.secrets.clone();
    finish(
        sc,
        vec![
            // db1's old lease waits for its revoke at 25 s, which times out from then on.
            (S(20), Event::RotateAll),
            (S(24), Event::Latency(S(12))),
            (S(30), Event::Reload(kept)),
            // The grace ends at 35 s: the old lease's revoke takes until 45 s, and then came
            // the current one's.
            (S(40), Event::Reload(both)),
            (S(300), Event::Latency(S(0))),
        ],
    )
}

/// Two dynamic secrets on long leases, and the set of secrets without the second (`db1`): the
/// start of the scenarios where SIGHUP removes a secret, and may configure it again.
fn with_a_removable_secret(dir: &Path) -> (Scenario, Vec<SecretSpec>) {
    let mut sc = scripted(dir);
    // Long enough that a lease left unrevoked outlives the leak bound.
    sc.dyn_ttl = S(1800);
    let kept = sc.secrets.clone();
    let second = second_secret(&sc, dir);
    sc.secrets.push(second);
    (sc, kept)
}

/// A second dynamic secret like the scripted scenario's first: `db1`, from `app1`.
fn second_secret(sc: &Scenario, dir: &Path) -> SecretSpec {
    let mut second = sc.secrets[0].clone();
    second.name = "db1".into();
    second.path = "database/creds/app1".into();
    second.output = dir.join("db1.json");
    second
}
