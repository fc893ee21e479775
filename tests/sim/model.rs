//! An in-memory model of Vault's semantics at the HTTP API level, as a [`Transport`].
//!
//! The simulator puts this below the agent's real [`Client`](vault_rotator::vault::Client), so
//! the client's decoding, the auth logic and the workers all run for real against it, in paused
//! tokio time. It models what the agent's correctness depends on: tokens with TTL, max TTL and
//! renewability that parent leases; leases with capped renewals; revocation cascading from a
//! token to its leases; policies that deny path prefixes; static roles rotating on their
//! period; KV versions; and faults a test driver flips at any virtual time.
//!
//! Fidelity: response shapes and error texts follow the team's API reference and, where they
//! disagree, what a real OpenBao 2.7.2 dev server answered (checked while writing this):
//! - a dead token is `permission denied` bare on OpenBao, the 2-error multierror on Vault; an
//!   ACL denial is the 1-error multierror on both;
//! - `sys/leases/revoke` answers 204 by default and 202 only with `"sync": false`;
//! - a capped renewal grants the time left to the max TTL in whole seconds, rounded *up* for a
//!   token (which may so outlive its nominal max by under a second) and *down* for a lease,
//!   with the warning `TTL of "1m" exceeded the effective max_ttl of "18s"; TTL value is
//!   capped accordingly`;
//! - a static role's `ttl` is rounded to the nearest second;
//! - with the database down, issuing (500), `rotate-role` (500) *and lease renewal* (400
//!   `failed to renew entry: ...`) fail: the database plugin moves the user's expiry on renewal;
//! - `sys/internal/ui/mounts/<unknown>` is a 403 "preflight capability check" error.
//!
//! Determinism: the only clock is `tokio::time::Instant` (virtual); every map is a `BTreeMap`;
//! ids come from a counter, random-looking strings from a `StdRng` seeded by the test. State
//! that changes with time alone (expiry, scheduled rotation) is brought up to date lazily, in
//! time order, before every request and every introspection call, so the trace reads as a
//! story in virtual time.
//!
//! Not every item is used by the model's own tests; the simulation driver uses the rest.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use vault_rotator::vault::transport::{BoxFuture, Request, Response, Transport, TransportError};

/// Vault's system-wide `max_lease_ttl` default (768h): the max of any mount not tuned lower.
pub const SYSTEM_MAX_TTL: Duration = Duration::from_secs(768 * 3600);

/// The wall-clock instant the model's virtual start maps to (2026-01-01T00:00:00Z), for the
/// few fields Vault sends as dates.
const EPOCH_UNIX: u64 = 1_767_225_600;

/// Which server's texts and token formats to mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Recent HashiCorp Vault: `hvs.` tokens, "invalid token" in a dead token's 403,
    /// `mount_type` in every envelope.
    Vault,
    /// OpenBao 2.x: `s.` tokens, a bare `permission denied` for a dead token.
    OpenBao,
}

/// How a token is made.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// Lifetime at creation; zero means the token never expires (like root).
    pub ttl: Duration,
    /// The latest the token may live, counted from its creation; `None` means the system max.
    pub max_ttl: Option<Duration>,
    /// Whether `max_ttl` shows as `explicit_max_ttl` in lookup-self (a created token's
    /// `explicit_max_ttl`; an AppRole's `token_max_ttl` reads 0 there, as on a real server).
    pub explicit_max: bool,
    pub renewable: bool,
    /// Policy names; `default` is added as Vault does.
    pub policies: Vec<String>,
}

impl TokenSpec {
    pub fn new(ttl: Duration) -> TokenSpec {
        TokenSpec {
            ttl,
            max_ttl: None,
            explicit_max: false,
            renewable: true,
            policies: vec![],
        }
    }

    pub fn max_ttl(mut self, max: Duration) -> TokenSpec {
        self.max_ttl = Some(max);
        self
    }

    pub fn explicit_max_ttl(mut self, max: Duration) -> TokenSpec {
        self.max_ttl = Some(max);
        self.explicit_max = true;
        self
    }

    pub fn renewable(mut self, renewable: bool) -> TokenSpec {
        self.renewable = renewable;
        self
    }

    pub fn policy(mut self, name: &str) -> TokenSpec {
        self.policies.push(name.to_string());
        self
    }
}

/// An AppRole role at `auth/approle`.
#[derive(Debug, Clone)]
pub struct AppRole {
    pub role_name: String,
    pub role_id: String,
    pub secret_id: String,
    /// `token_ttl`, `token_max_ttl`, renewability and `token_policies` of the role.
    pub token: TokenSpec,
}

/// A token the test made with [`Model::create_token`] (for `--auth token`).
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub value: String,
    pub accessor: String,
}

/// Who a deny rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Every token.
    All,
    /// Tokens carrying this policy.
    Policy(String),
    /// One token, by accessor.
    Token(String),
}

impl From<&str> for Scope {
    /// `"*"` is every token, anything else a policy name.
    fn from(s: &str) -> Scope {
        if s == "*" {
            Scope::All
        } else {
            Scope::Policy(s.to_string())
        }
    }
}

/// An injected error answer.
#[derive(Debug, Clone)]
pub struct Fault {
    pub status: u16,
    /// The `Retry-After` header as sent: seconds, or an HTTP date.
    pub retry_after: Option<String>,
    /// How many more requests get this answer.
    pub remaining: u32,
    /// Only requests whose path starts with this; `None` for all.
    pub path_prefix: Option<String>,
    /// The error text; `None` picks a realistic one for the status.
    pub message: Option<String>,
}

impl Fault {
    pub fn new(status: u16, remaining: u32) -> Fault {
        Fault {
            status,
            retry_after: None,
            remaining,
            path_prefix: None,
            message: None,
        }
    }

    pub fn retry_after(mut self, value: impl Into<String>) -> Fault {
        self.retry_after = Some(value.into());
        self
    }

    pub fn on(mut self, prefix: impl Into<String>) -> Fault {
        self.path_prefix = Some(prefix.into());
        self
    }

    pub fn message(mut self, text: impl Into<String>) -> Fault {
        self.message = Some(text.into());
        self
    }
}

/// One request as the model saw it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// When it arrived.
    pub at: Instant,
    pub method: Method,
    pub path: String,
    /// What the client got; `None` when no answer arrived (down, or timed out).
    pub status: Option<u16>,
    /// What the server did; differs from `status` when the answer was lost to a timeout.
    pub served: Option<u16>,
    /// When the client got the answer or the failure (arrival plus latency or timeout).
    pub done_at: Instant,
    /// The accessor of the token sent, when it names a token the model made (dead or alive).
    pub accessor: Option<String>,
    /// The `Retry-After` header the answer carried.
    pub retry_after: Option<String>,
}

/// One dynamic credential issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub at: Instant,
    pub lease_id: String,
    pub username: String,
    pub role: String,
    pub token_accessor: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Live,
    /// Revoked by a request, out of band, or with its parent token.
    Revoked {
        at: Instant,
    },
    /// Reached the end of its TTL.
    Expired {
        at: Instant,
    },
}

/// When a credential dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredEnd {
    /// If nothing more is renewed: the earliest of the lease's end and its token's end (for a
    /// static role, the next rotation). For a dead credential, the instant it died.
    pub current_end: Instant,
    /// The latest it could live if everything were renewed to the limit: the earliest of the
    /// lease's and the token's max (or the current end if that is later: a capped renewal is
    /// rounded up to whole seconds).
    pub hard_end: Instant,
}

/// A token as the model keeps it.
#[derive(Debug, Clone)]
struct TokenEntry {
    value: String,
    accessor: String,
    policies: Vec<String>,
    /// TTL at creation, and the default of a renewal without increment.
    ttl: Duration,
    explicit_max_ttl: Option<Duration>,
    renewable: bool,
    created_at: Instant,
    /// `None`: never expires.
    expires_at: Option<Instant>,
    /// The latest instant a renewal may aim for (creation + max TTL).
    max_end: Option<Instant>,
    last_renewal: Option<Instant>,
    revoked_at: Option<Instant>,
    /// Set once the token is past `expires_at` and its leases went with it.
    expired_at: Option<Instant>,
    /// `auth/approle/login` or `auth/token/create`.
    path: String,
    role_name: Option<String>,
    entity_id: String,
}

impl TokenEntry {
    fn alive(&self, now: Instant) -> bool {
        self.revoked_at.is_none()
            && self.expired_at.is_none()
            && self.expires_at.is_none_or(|e| e > now)
    }

    fn died_at(&self) -> Option<Instant> {
        self.revoked_at.or(self.expired_at)
    }
}

#[derive(Debug, Clone)]
struct LeaseEntry {
    id: String,
    mount: String,
    role: String,
    username: String,
    password: String,
    token_accessor: String,
    issued_at: Instant,
    expires_at: Instant,
    renewable: bool,
    state: LeaseState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MountKind {
    Database,
    KvV1,
    KvV2,
}

#[derive(Debug, Clone)]
struct Mount {
    kind: MountKind,
    /// Tuned `max_lease_ttl`; `None`: the system max.
    max_lease_ttl: Option<Duration>,
    accessor: String,
    uuid: String,
}

#[derive(Debug, Clone)]
struct DynamicRole {
    default_ttl: Duration,
    /// Zero: the mount's max.
    max_ttl: Duration,
}

#[derive(Debug, Clone)]
struct StaticRole {
    username: String,
    password: String,
    rotation_period: Duration,
    last_rotation: Instant,
    rotations: u64,
}

#[derive(Debug, Clone)]
struct KvVersion {
    data: Map<String, Value>,
    created: Instant,
}

/// An answer before it is put on the wire.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, v: Value) -> Answer {
        let mut body = serde_json::to_vec(&v).unwrap_or_default();
        // Go's json.Encoder ends the body with a newline.
        body.push(b'\n');
        Answer {
            status,
            retry_after: None,
            body,
        }
    }

    fn error(status: u16, text: &str) -> Answer {
        Answer::json(status, json!({ "errors": [text] }))
    }

    fn empty(status: u16) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: vec![],
        }
    }
}

/// Vault's error texts.
fn multierror(msg: &str) -> String {
    format!("1 error occurred:\n\t* {msg}\n\n")
}

/// How OpenBao 2.7.2 with PostgreSQL describes a database it cannot reach.
const DB_DOWN: &str = "failed to connect to `user=postgres database=postgres`: 127.0.0.1:5432 (127.0.0.1): dial error: dial tcp 127.0.0.1:5432: connect: connection refused";

struct Inner {
    flavor: Flavor,
    start: Instant,
    rng: StdRng,
    counter: u64,
    down: bool,
    sealed: bool,
    latency: Duration,
    client_timeout: Duration,
    db_down: bool,
    /// When the database last came back; a scheduled rotation missed while it was down
    /// happens then.
    db_up_since: Instant,
    db_down_blocks_renew: bool,
    reap_delay: Duration,
    trace_requests: bool,
    faults: Vec<Fault>,
    tokens: BTreeMap<String, TokenEntry>,
    by_value: BTreeMap<String, String>,
    approles: BTreeMap<String, AppRole>,
    mounts: BTreeMap<String, Mount>,
    dyn_roles: BTreeMap<(String, String), DynamicRole>,
    static_roles: BTreeMap<(String, String), StaticRole>,
    leases: BTreeMap<String, LeaseEntry>,
    by_username: BTreeMap<String, String>,
    kv: BTreeMap<(String, String), Vec<KvVersion>>,
    denies: BTreeMap<Scope, BTreeSet<String>>,
    requests: Vec<RequestRecord>,
    issued: Vec<Issued>,
    logins: usize,
    trace: Vec<String>,
}

/// The model. Clones share one state.
#[derive(Clone)]
pub struct Model {
    inner: Arc<Mutex<Inner>>,
}

impl Model {
    /// A model with a `database/` mount, a KV v2 mount at `secret/` and a KV v1 mount at `kv/`,
    /// no roles, no tokens. Call inside the tokio runtime (it reads the virtual clock).
    pub fn new(flavor: Flavor, seed: u64) -> Model {
        let now = Instant::now();
        let mut inner = Inner {
            flavor,
            start: now,
            rng: StdRng::seed_from_u64(seed),
            counter: 0,
            down: false,
            sealed: false,
            latency: Duration::ZERO,
            client_timeout: Duration::from_secs(30),
            db_down: false,
            db_up_since: now,
            db_down_blocks_renew: true,
            reap_delay: Duration::ZERO,
            trace_requests: false,
            faults: vec![],
            tokens: BTreeMap::new(),
            by_value: BTreeMap::new(),
            approles: BTreeMap::new(),
            mounts: BTreeMap::new(),
            dyn_roles: BTreeMap::new(),
            static_roles: BTreeMap::new(),
            leases: BTreeMap::new(),
            by_username: BTreeMap::new(),
            kv: BTreeMap::new(),
            denies: BTreeMap::new(),
            requests: vec![],
            issued: vec![],
            logins: 0,
            trace: vec![],
        };
        inner.add_mount("database", MountKind::Database);
        inner.add_mount("secret", MountKind::KvV2);
        inner.add_mount("kv", MountKind::KvV1);
        inner.note(now, format!("model started ({flavor:?}, seed {seed})"));
        Model {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.reap(Instant::now());
        inner
    }

    // ---- setup ----

    pub fn set_approle(&self, role: AppRole) {
        let mut m = self.lock();
        let now = Instant::now();
        m.note(now, format!("approle role {} configured", role.role_name));
        m.approles.insert(role.role_id.clone(), role);
    }

    /// A token made out of band (`bao token create`), for `--auth token`.
    pub fn create_token(&self, spec: TokenSpec) -> CreatedToken {
        let mut m = self.lock();
        let now = Instant::now();
        let t = m.new_token(&spec, now, "auth/token/create", None);
        m.note(
            now,
            format!(
                "token {} created: ttl {}, renewable {}",
                t.accessor,
                secs(spec.ttl),
                spec.renewable
            ),
        );
        t
    }

    /// A dynamic role at `<mount>/creds/<name>`; `max_ttl` zero means the mount's max.
    pub fn add_dynamic_role(
        &self,
        mount: &str,
        name: &str,
        default_ttl: Duration,
        max_ttl: Duration,
    ) {
        let mut m = self.lock();
        m.dyn_roles.insert(
            (mount.to_string(), name.to_string()),
            DynamicRole {
                default_ttl,
                max_ttl,
            },
        );
    }

    /// A static role at `<mount>/static-creds/<name>`, rotated every `rotation_period` from now.
    pub fn add_static_role(
        &self,
        mount: &str,
        name: &str,
        username: &str,
        rotation_period: Duration,
    ) {
        let mut m = self.lock();
        let now = Instant::now();
        let password = m.password();
        m.static_roles.insert(
            (mount.to_string(), name.to_string()),
            StaticRole {
                username: username.to_string(),
                password,
                rotation_period,
                last_rotation: now,
                rotations: 0,
            },
        );
    }

    /// Adds a mount (`kind`: `"database"`, `"kv1"` or `"kv2"`).
    pub fn add_mount(&self, path: &str, kind: &str) {
        let kind = match kind {
            "database" => MountKind::Database,
            "kv1" => MountKind::KvV1,
            _ => MountKind::KvV2,
        };
        self.lock().add_mount(path, kind);
    }

    /// Writes a KV secret at its logical path (`secret/app`, `kv/app`), bumping the version.
    pub fn kv_put(&self, path: &str, data: Map<String, Value>) -> u64 {
        let mut m = self.lock();
        let now = Instant::now();
        let Some((mount, key)) = m.split_mount(path) else {
            panic!("kv_put: no mount serves {path}");
        };
        let versions = m.kv.entry((mount, key)).or_default();
        versions.push(KvVersion { data, created: now });
        let version = versions.len() as u64;
        m.note(now, format!("kv {path} written: version {version}"));
        version
    }

    // ---- knobs ----

    /// The client's request timeout: a latency longer than this answers a timeout after it.
    pub fn set_client_timeout(&self, d: Duration) {
        self.lock().client_timeout = d;
    }

    /// How long an expired lease answers `lease expired` before it is reaped and answers
    /// `lease not found` (zero by default: Vault reaps promptly).
    pub fn set_reap_delay(&self, d: Duration) {
        self.lock().reap_delay = d;
    }

    /// Also write every request and its outcome to the trace (off by default: it is long).
    pub fn set_trace_requests(&self, on: bool) {
        self.lock().trace_requests = on;
    }

    pub fn flavor(&self) -> Flavor {
        self.lock().flavor
    }

    /// Vault unreachable: every request fails with "connection refused".
    pub fn set_down(&self, down: bool) {
        let mut m = self.lock();
        let now = Instant::now();
        if m.down != down {
            m.note(
                now,
                format!("fault: Vault {}", if down { "down" } else { "back up" }),
            );
        }
        m.down = down;
    }

    pub fn set_sealed(&self, sealed: bool) {
        let mut m = self.lock();
        let now = Instant::now();
        if m.sealed != sealed {
            m.note(
                now,
                format!(
                    "fault: Vault {}",
                    if sealed { "sealed" } else { "unsealed" }
                ),
            );
        }
        m.sealed = sealed;
    }

    /// Drops every injected fault still pending.
    pub fn clear_faults(&self) {
        let mut m = self.lock();
        let now = Instant::now();
        let pending = m.faults.iter().filter(|f| f.remaining > 0).count();
        m.faults.clear();
        m.note(now, format!("fault: {pending} pending fault(s) cleared"));
    }

    pub fn inject(&self, fault: Fault) {
        let mut m = self.lock();
        let now = Instant::now();
        m.note(
            now,
            format!(
                "fault: next {} request(s){} answer {}{}",
                fault.remaining,
                fault
                    .path_prefix
                    .as_deref()
                    .map(|p| format!(" under {p}"))
                    .unwrap_or_default(),
                fault.status,
                fault
                    .retry_after
                    .as_deref()
                    .map(|r| format!(" with Retry-After {r}"))
                    .unwrap_or_default()
            ),
        );
        m.faults.push(fault);
    }

    /// Every answer takes this long (virtual time). The request is served on arrival; the
    /// answer is lost when the latency passes the client timeout.
    pub fn set_latency(&self, d: Duration) {
        let mut m = self.lock();
        let now = Instant::now();
        if m.latency != d {
            m.note(now, format!("fault: latency {}", secs(d)));
        }
        m.latency = d;
    }

    /// The database unreachable: issuing, rotating and (as on a real server) renewing fail;
    /// static passwords stop rotating on schedule and rotate when it comes back.
    pub fn set_db_down(&self, down: bool) {
        let mut m = self.lock();
        let now = Instant::now();
        if m.db_down != down {
            m.note(
                now,
                format!("fault: database {}", if down { "down" } else { "back up" }),
            );
            if !down {
                m.db_up_since = now;
            }
        }
        m.db_down = down;
        // Rotations that fell due while the database was down happen now.
        m.reap(now);
    }

    /// A real server renews a database lease by updating the user's expiry in the database
    /// (`VALID UNTIL`), so with the database down the renewal fails: 400, `failed to renew
    /// entry: ...` (measured on OpenBao 2.7.2 with PostgreSQL). On by default; turn it off for
    /// a plugin that does not touch the database on renewal.
    pub fn set_db_down_blocks_renew(&self, blocks: bool) {
        self.lock().db_down_blocks_renew = blocks;
    }

    /// Denies a path prefix to every token (`"*"`), to a policy, or to one token.
    pub fn deny(&self, scope: impl Into<Scope>, prefix: &str) {
        let scope = scope.into();
        let mut m = self.lock();
        let now = Instant::now();
        m.note(now, format!("policy: deny {prefix} to {scope:?}"));
        m.denies
            .entry(scope)
            .or_default()
            .insert(prefix.to_string());
    }

    pub fn allow(&self, scope: impl Into<Scope>, prefix: &str) {
        let scope = scope.into();
        let mut m = self.lock();
        let now = Instant::now();
        m.note(now, format!("policy: allow {prefix} to {scope:?}"));
        if let Some(set) = m.denies.get_mut(&scope) {
            set.remove(prefix);
        }
    }

    /// `sys/mounts/<mount>/tune` `max_lease_ttl`: caps issues and renewals from now on.
    pub fn tune_max_ttl(&self, mount: &str, max: Duration) {
        let mut m = self.lock();
        let now = Instant::now();
        m.note(
            now,
            format!("mount {mount}/ tuned: max_lease_ttl {}", secs(max)),
        );
        if let Some(mt) = m.mounts.get_mut(mount) {
            mt.max_lease_ttl = Some(max);
        }
    }

    /// An operator revokes a lease (`bao lease revoke`). True when it was live.
    pub fn revoke_lease_out_of_band(&self, lease_id: &str) -> bool {
        let mut m = self.lock();
        let now = Instant::now();
        m.revoke_lease(lease_id, now, "out of band")
    }

    /// An operator revokes a token by accessor; its leases go with it. True when it was live.
    pub fn revoke_token_out_of_band(&self, accessor: &str) -> bool {
        let mut m = self.lock();
        let now = Instant::now();
        m.revoke_token(accessor, now, "out of band")
    }

    /// An operator rotates a static role (`bao write -f database/rotate-role/<name>`).
    pub fn rotate_static_out_of_band(&self, mount: &str, role: &str) -> bool {
        let mut m = self.lock();
        let now = Instant::now();
        m.rotate_static(mount, role, now, "out of band")
    }

    // ---- introspection ----

    /// Whether a database login with these credentials works now: a dynamic user whose lease
    /// (and so its parent token) is live, a static role's current password, or a value held
    /// by a KV secret's current version.
    pub fn credential_alive(&self, username: &str, password: &str) -> bool {
        let m = self.lock();
        let now = Instant::now();
        if let Some(l) = m.by_username.get(username).and_then(|id| m.leases.get(id)) {
            return l.state == LeaseState::Live
                && l.password == password
                && m.tokens
                    .get(&l.token_accessor)
                    .is_some_and(|t| t.alive(now));
        }
        if let Some(s) = m.static_roles.values().find(|s| s.username == username) {
            return s.password == password;
        }
        m.kv.values().filter_map(|v| v.last()).any(|v| {
            v.data.get("username").and_then(Value::as_str) == Some(username)
                && v.data.get("password").and_then(Value::as_str) == Some(password)
        })
    }

    /// When a dynamic or static user's credential dies; `None` for an unknown user.
    pub fn credential_end(&self, username: &str) -> Option<CredEnd> {
        let m = self.lock();
        if let Some(l) = m.by_username.get(username).and_then(|id| m.leases.get(id)) {
            return Some(m.lease_end(l));
        }
        m.static_roles
            .values()
            .find(|s| s.username == username)
            .map(|s| {
                let next = s.last_rotation + s.rotation_period;
                CredEnd {
                    current_end: next,
                    hard_end: next,
                }
            })
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    /// The requests from index `start` on (for checks run at every step without copying the
    /// whole history each time).
    pub fn requests_from(&self, start: usize) -> Vec<RequestRecord> {
        let m = self.lock();
        m.requests
            .get(start..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.lock().issued.clone()
    }

    pub fn lease_state(&self, lease_id: &str) -> Option<LeaseState> {
        self.lock().leases.get(lease_id).map(|l| l.state)
    }

    /// The lease ids that are live now.
    pub fn live_leases(&self) -> Vec<String> {
        let m = self.lock();
        m.leases
            .values()
            .filter(|l| l.state == LeaseState::Live)
            .map(|l| l.id.clone())
            .collect()
    }

    /// The lease that issued a dynamic user.
    pub fn lease_of(&self, username: &str) -> Option<String> {
        self.lock().by_username.get(username).cloned()
    }

    /// The accessor of the token that parents a lease.
    pub fn lease_parent(&self, lease_id: &str) -> Option<String> {
        self.lock()
            .leases
            .get(lease_id)
            .map(|l| l.token_accessor.clone())
    }

    pub fn token_alive(&self, accessor: &str) -> bool {
        let m = self.lock();
        let now = Instant::now();
        m.tokens.get(accessor).is_some_and(|t| t.alive(now))
    }

    /// A token's current and hardest end; `None` for an unknown or never-expiring token.
    pub fn token_end(&self, accessor: &str) -> Option<CredEnd> {
        let m = self.lock();
        m.tokens.get(accessor).and_then(token_end)
    }

    /// Accessors of the tokens issued by logins, in order.
    pub fn login_accessors(&self) -> Vec<String> {
        let m = self.lock();
        let mut list: Vec<_> = m
            .tokens
            .values()
            .filter(|t| t.path.ends_with("/login"))
            .map(|t| (t.created_at, t.accessor.clone()))
            .collect();
        list.sort();
        list.into_iter().map(|(_, a)| a).collect()
    }

    pub fn logins(&self) -> usize {
        self.lock().logins
    }

    /// How many times a static role has rotated (scheduled, requested and out of band).
    pub fn static_rotations(&self, mount: &str, role: &str) -> u64 {
        self.lock()
            .static_roles
            .get(&(mount.to_string(), role.to_string()))
            .map_or(0, |s| s.rotations)
    }

    /// The static role's current password (what the database accepts now).
    pub fn static_password(&self, mount: &str, role: &str) -> Option<String> {
        self.lock()
            .static_roles
            .get(&(mount.to_string(), role.to_string()))
            .map(|s| s.password.clone())
    }

    /// Every transition, one line each, with seconds since the model started.
    pub fn trace(&self) -> Vec<String> {
        self.lock().trace.clone()
    }

    pub fn trace_text(&self) -> String {
        self.trace().join("\n")
    }

    /// Seconds since the model started, as the trace prints them.
    pub fn stamp(&self, at: Instant) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.stamp(at)
    }

    /// Adds a line to the trace (the driver's own events: signals, checks).
    pub fn note(&self, text: impl Into<String>) {
        let mut m = self.lock();
        let now = Instant::now();
        m.note(now, text.into());
    }

    // ---- the transport ----

    async fn exchange(&self, req: Request) -> Result<Response, TransportError> {
        let (outcome, wait) = {
            let mut m = self.lock();
            m.handle(req)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        outcome
    }
}

impl Transport for Model {
    fn send(&self, req: Request) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(self.exchange(req))
    }
}

fn token_end(t: &TokenEntry) -> Option<CredEnd> {
    if let Some(died) = t.died_at() {
        return Some(CredEnd {
            current_end: died,
            hard_end: died,
        });
    }
    let current = t.expires_at?;
    let hard = match t.max_end {
        Some(max) if t.renewable => max.max(current),
        _ => current,
    };
    Some(CredEnd {
        current_end: current,
        hard_end: hard,
    })
}

/// Whole seconds for the trace.
fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// Vault's `humanDuration`: Go's duration text without zero units (`1h`, `1m40s`).
pub fn human_duration(d: Duration) -> String {
    let n = d.as_secs();
    if n == 0 {
        return "0s".into();
    }
    let (h, m, s) = (n / 3600, n % 3600 / 60, n % 60);
    let mut text = if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    };
    if text.ends_with("m0s") {
        text.truncate(text.len() - 2);
    }
    if let Some(i) = text.find("h0m") {
        text.replace_range(i + 1..i + 3, "");
    }
    text
}

/// How a capped TTL is made whole seconds. A real server (OpenBao 2.7.2, measured) rounds a
/// token's up, so a token may outlive its max TTL by under a second, and a lease's down.
#[derive(Debug, Clone, Copy)]
enum Rounding {
    Up,
    Down,
}

fn whole_secs(d: Duration, r: Rounding) -> Duration {
    let whole = Duration::from_secs(d.as_secs());
    match r {
        Rounding::Up if whole != d => whole + Duration::from_secs(1),
        _ => whole,
    }
}

/// RFC 3339 in UTC with nanoseconds, as Go prints a `time.Time`.
fn rfc3339(unix: u64, nanos: u32) -> String {
    let days = (unix / 86_400) as i64;
    let rem = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A duration from a request body: integer seconds or a Go duration string (`"60s"`).
fn parse_increment(v: Option<&Value>) -> Result<Duration, String> {
    match v {
        None | Some(Value::Null) => Ok(Duration::ZERO),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| "invalid increment".to_string()),
        Some(Value::String(s)) if s.is_empty() => Ok(Duration::ZERO),
        Some(Value::String(s)) => s
            .parse::<u64>()
            .map(Duration::from_secs)
            .or_else(|_| humantime::parse_duration(s))
            .map_err(|_| format!("invalid increment {s:?}")),
        Some(_) => Err("invalid increment".into()),
    }
}

/// The outcome of one capped TTL computation (`framework.CalculateTTL`).
struct Granted {
    ttl: Duration,
    warning: Option<String>,
}

/// `candidate` capped to what is left until `max_end`, made whole seconds like a real server.
fn calculate_ttl(
    candidate: Duration,
    now: Instant,
    max_end: Option<Instant>,
    rounding: Rounding,
) -> Result<Granted, String> {
    let Some(max_end) = max_end else {
        return Ok(Granted {
            ttl: candidate,
            warning: None,
        });
    };
    let left = max_end.saturating_duration_since(now);
    if left.is_zero() {
        return Err("past the max TTL, cannot renew".into());
    }
    if candidate > left {
        let capped = whole_secs(left, rounding);
        return Ok(Granted {
            ttl: capped,
            warning: Some(format!(
                "TTL of {:?} exceeded the effective max_ttl of {:?}; TTL value is capped accordingly",
                human_duration(candidate),
                human_duration(capped)
            )),
        });
    }
    Ok(Granted {
        ttl: candidate,
        warning: None,
    })
}

impl Inner {
    fn stamp(&self, at: Instant) -> String {
        format!(
            "{:.3}",
            at.saturating_duration_since(self.start).as_secs_f64()
        )
    }

    fn trace_request(&mut self, r: &RequestRecord) {
        if !self.trace_requests {
            return;
        }
        let outcome = match (r.status, r.served) {
            (Some(s), _) => s.to_string(),
            (None, Some(s)) => format!("served {s}, answer lost to the client timeout"),
            (None, None) => "no answer (down)".into(),
        };
        let by = r.accessor.as_deref().unwrap_or("-");
        self.note(
            r.at,
            format!("request {} {} by {by}: {outcome}", r.method, r.path),
        );
    }

    fn note(&mut self, at: Instant, text: String) {
        let line = format!("[{:>10}] {text}", self.stamp(at));
        self.trace.push(line);
    }

    fn next_id(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn random_chars(&mut self, n: usize) -> String {
        (&mut self.rng)
            .sample_iter(rand::distr::Alphanumeric)
            .take(n)
            .map(char::from)
            .collect()
    }

    fn password(&mut self) -> String {
        format!("A1a-{}", self.random_chars(20))
    }

    fn uuid(&mut self) -> String {
        let hex: String = (0..32)
            .map(|_| char::from_digit(self.rng.random_range(0..16), 16).unwrap_or('0'))
            .collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    fn wall(&self, at: Instant) -> (u64, u32) {
        let d = at.saturating_duration_since(self.start);
        (EPOCH_UNIX + d.as_secs(), d.subsec_nanos())
    }

    fn date(&self, at: Instant) -> String {
        let (s, n) = self.wall(at);
        rfc3339(s, n)
    }

    fn add_mount(&mut self, path: &str, kind: MountKind) {
        let n = self.next_id();
        let prefix = match kind {
            MountKind::Database => "database",
            _ => "kv",
        };
        let uuid = self.uuid();
        self.mounts.insert(
            path.trim_matches('/').to_string(),
            Mount {
                kind,
                max_lease_ttl: None,
                accessor: format!("{prefix}_{n:08x}"),
                uuid,
            },
        );
    }

    /// The mount serving `path` (longest match) and the rest of the path.
    fn split_mount(&self, path: &str) -> Option<(String, String)> {
        let path = path.trim_matches('/');
        self.mounts
            .keys()
            .filter(|m| path == m.as_str() || path.starts_with(&format!("{m}/")))
            .max_by_key(|m| m.len())
            .map(|m| {
                (
                    m.clone(),
                    path[m.len()..].trim_start_matches('/').to_string(),
                )
            })
    }

    fn mount_max(&self, mount: &str) -> Duration {
        self.mounts
            .get(mount)
            .and_then(|m| m.max_lease_ttl)
            .unwrap_or(SYSTEM_MAX_TTL)
    }

    fn new_token(
        &mut self,
        spec: &TokenSpec,
        now: Instant,
        path: &str,
        role_name: Option<&str>,
    ) -> CreatedToken {
        let n = self.next_id();
        let prefix = match self.flavor {
            Flavor::Vault => "hvs.",
            Flavor::OpenBao => "s.",
        };
        let value = format!("{prefix}{n:04}{}", self.random_chars(20));
        let accessor = format!("acc{n:04}{}", self.random_chars(8));
        let mut policies = vec!["default".to_string()];
        for p in &spec.policies {
            if !policies.contains(p) {
                policies.push(p.clone());
            }
        }
        let max = spec.max_ttl.unwrap_or(SYSTEM_MAX_TTL);
        let never = spec.ttl.is_zero();
        let ttl = spec.ttl.min(max);
        let entity_id = if role_name.is_some() {
            self.uuid()
        } else {
            String::new()
        };
        self.tokens.insert(
            accessor.clone(),
            TokenEntry {
                value: value.clone(),
                accessor: accessor.clone(),
                policies,
                ttl,
                explicit_max_ttl: spec.max_ttl.filter(|_| spec.explicit_max),
                renewable: spec.renewable && !never,
                created_at: now,
                expires_at: (!never).then(|| now + ttl),
                max_end: (!never).then(|| now + max),
                last_renewal: None,
                revoked_at: None,
                expired_at: None,
                path: path.to_string(),
                role_name: role_name.map(str::to_string),
                entity_id,
            },
        );
        self.by_value.insert(value.clone(), accessor.clone());
        CreatedToken { value, accessor }
    }

    fn lease_max_end(&self, l: &LeaseEntry) -> Instant {
        let role_max = self
            .dyn_roles
            .get(&(l.mount.clone(), l.role.clone()))
            .map_or(Duration::ZERO, |r| r.max_ttl);
        let mount_max = self.mount_max(&l.mount);
        let max = if role_max.is_zero() {
            mount_max
        } else {
            role_max.min(mount_max)
        };
        l.issued_at + max
    }

    fn lease_end(&self, l: &LeaseEntry) -> CredEnd {
        match l.state {
            LeaseState::Revoked { at } | LeaseState::Expired { at } => CredEnd {
                current_end: at,
                hard_end: at,
            },
            LeaseState::Live => {
                let tok = self.tokens.get(&l.token_accessor).and_then(token_end);
                let lease_hard = if l.renewable {
                    self.lease_max_end(l).max(l.expires_at)
                } else {
                    l.expires_at
                };
                let current = tok.map_or(l.expires_at, |t| t.current_end.min(l.expires_at));
                let hard = tok.map_or(lease_hard, |t| t.hard_end.min(lease_hard));
                CredEnd {
                    current_end: current,
                    hard_end: hard,
                }
            }
        }
    }

    /// Brings time-driven state up to `now`, one event at a time in time order: token
    /// expiries (cascading to their leases), lease expiries, scheduled static rotations.
    fn reap(&mut self, now: Instant) {
        loop {
            enum Ev {
                Token(String),
                Lease(String),
                Rotate(String, String),
            }
            let mut next: Option<(Instant, Ev)> = None;
            // Called for every token, lease and role on every request: the event is built
            // only when it is due (this is the simulator's hot path).
            let mut consider = |at: Instant, ev: &dyn Fn() -> Ev| {
                if at <= now && next.as_ref().is_none_or(|(t, _)| at < *t) {
                    next = Some((at, ev()));
                }
            };
            for t in self.tokens.values() {
                if t.revoked_at.is_none() && t.expired_at.is_none() {
                    if let Some(e) = t.expires_at {
                        consider(e, &|| Ev::Token(t.accessor.clone()));
                    }
                }
            }
            for l in self.leases.values() {
                if l.state == LeaseState::Live {
                    consider(l.expires_at, &|| Ev::Lease(l.id.clone()));
                }
            }
            if !self.db_down {
                for ((mount, role), s) in &self.static_roles {
                    let due = (s.last_rotation + s.rotation_period).max(self.db_up_since);
                    consider(due, &|| Ev::Rotate(mount.clone(), role.clone()));
                }
            }
            let Some((at, ev)) = next else { return };
            match ev {
                Ev::Token(acc) => {
                    if let Some(t) = self.tokens.get_mut(&acc) {
                        t.expired_at = Some(at);
                    }
                    let leases = self.cascade(&acc, at);
                    self.note(at, format!("token {acc} expired{}", cascade_text(&leases)));
                }
                Ev::Lease(id) => {
                    if let Some(l) = self.leases.get_mut(&id) {
                        l.state = LeaseState::Expired { at };
                        let user = l.username.clone();
                        self.note(at, format!("lease {id} expired (user {user} dropped)"));
                    }
                }
                Ev::Rotate(mount, role) => {
                    self.rotate_static(&mount, &role, at, "on schedule");
                }
            }
        }
    }

    /// Revokes every live lease of a token; returns their ids.
    fn cascade(&mut self, accessor: &str, at: Instant) -> Vec<String> {
        let mut ids = vec![];
        for l in self.leases.values_mut() {
            if l.token_accessor == accessor && l.state == LeaseState::Live {
                l.state = LeaseState::Revoked { at };
                ids.push(l.id.clone());
            }
        }
        ids
    }

    fn revoke_token(&mut self, accessor: &str, at: Instant, why: &str) -> bool {
        let alive = self.tokens.get(accessor).is_some_and(|t| t.alive(at));
        if !alive {
            return false;
        }
        if let Some(t) = self.tokens.get_mut(accessor) {
            t.revoked_at = Some(at);
        }
        let leases = self.cascade(accessor, at);
        self.note(
            at,
            format!("token {accessor} revoked {why}{}", cascade_text(&leases)),
        );
        true
    }

    fn revoke_lease(&mut self, id: &str, at: Instant, why: &str) -> bool {
        match self.leases.get_mut(id) {
            Some(l) if l.state == LeaseState::Live => {
                l.state = LeaseState::Revoked { at };
                let user = l.username.clone();
                self.note(
                    at,
                    format!("lease {id} revoked {why} (user {user} dropped)"),
                );
                true
            }
            _ => false,
        }
    }

    fn rotate_static(&mut self, mount: &str, role: &str, at: Instant, why: &str) -> bool {
        let password = self.password();
        let key = (mount.to_string(), role.to_string());
        let Some(s) = self.static_roles.get_mut(&key) else {
            return false;
        };
        s.password = password;
        s.last_rotation = at;
        s.rotations += 1;
        let (user, n) = (s.username.clone(), s.rotations);
        self.note(
            at,
            format!("static role {mount}/{role} rotated {why} (user {user}, rotation {n}; old password dead)"),
        );
        true
    }

    /// Whether a policy denies `path` to this token.
    fn denied(&self, t: &TokenEntry, path: &str) -> bool {
        let scopes = std::iter::once(Scope::All)
            .chain(t.policies.iter().map(|p| Scope::Policy(p.clone())))
            .chain(std::iter::once(Scope::Token(t.accessor.clone())));
        scopes
            .filter_map(|s| self.denies.get(&s))
            .flatten()
            .any(|prefix| path.starts_with(prefix.as_str()))
    }

    fn envelope(
        &mut self,
        mount_type: &str,
        lease: (&str, bool, u64),
        data: Value,
        warnings: Vec<String>,
        auth: Value,
    ) -> Value {
        let mut env = json!({
            "request_id": self.uuid(),
            "lease_id": lease.0,
            "renewable": lease.1,
            "lease_duration": lease.2,
            "data": data,
            "wrap_info": null,
            "warnings": if warnings.is_empty() { Value::Null } else { json!(warnings) },
            "auth": auth,
        });
        if self.flavor == Flavor::Vault {
            env["mount_type"] = json!(mount_type);
        }
        env
    }

    fn auth_block(&self, t: &TokenEntry, lease_duration: u64) -> Value {
        json!({
            "client_token": t.value,
            "accessor": t.accessor,
            "policies": t.policies,
            "token_policies": t.policies,
            "metadata": t.role_name.as_ref().map(|r| json!({ "role_name": r })),
            "lease_duration": lease_duration,
            "renewable": t.renewable,
            "entity_id": t.entity_id,
            "token_type": "service",
            "orphan": t.role_name.is_some(),
            "mfa_requirement": null,
            "num_uses": 0,
        })
    }

    /// One request: serve it now, and say how long the answer takes to arrive.
    fn handle(&mut self, req: Request) -> (Result<Response, TransportError>, Duration) {
        let now = Instant::now();
        let path = req.path.trim_matches('/').to_string();
        let accessor = req
            .token
            .as_ref()
            .and_then(|t| self.by_value.get(t.expose()).cloned());
        let mut record = RequestRecord {
            at: now,
            method: req.method.clone(),
            path: path.clone(),
            status: None,
            served: None,
            done_at: now,
            accessor,
            retry_after: None,
        };
        if self.down {
            self.trace_request(&record);
            self.requests.push(record);
            let reason = format!(
                "error sending request for url (http://127.0.0.1:8200/v1/{path}): client error (Connect): tcp connect error: Connection refused (os error 111)"
            );
            return (
                Err(TransportError::Failed {
                    reason,
                    timeout: false,
                }),
                Duration::ZERO,
            );
        }
        let answer = self.dispatch(&req, &path, now);
        record.served = Some(answer.status);
        if self.latency > self.client_timeout {
            record.done_at = now + self.client_timeout;
            self.trace_request(&record);
            self.requests.push(record);
            return (
                Err(TransportError::Failed {
                    reason: "timed out".into(),
                    timeout: true,
                }),
                self.client_timeout,
            );
        }
        record.status = Some(answer.status);
        record.done_at = now + self.latency;
        record.retry_after = answer.retry_after.clone();
        self.trace_request(&record);
        self.requests.push(record);
        (
            Ok(Response {
                status: answer.status,
                retry_after: answer.retry_after,
                body: answer.body,
            }),
            self.latency,
        )
    }

    fn dispatch(&mut self, req: &Request, path: &str, now: Instant) -> Answer {
        if self.sealed {
            return Answer::error(503, "Vault is sealed");
        }
        if let Some(fault) = self.faults.iter_mut().find(|f| {
            f.remaining > 0 && f.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
        }) {
            fault.remaining -= 1;
            let text = fault.message.clone().unwrap_or_else(|| match fault.status {
                429 => format!("request path {path:?}: rate limit quota exceeded"),
                412 => "required index state not present".into(),
                502 => multierror("upstream rate limited"),
                503 => "no active Vault instance found".into(),
                _ => multierror("internal error"),
            });
            let mut a = Answer::error(fault.status, &text);
            a.retry_after = fault.retry_after.clone();
            return a;
        }
        let body = req.body.clone().unwrap_or(Value::Null);
        let is_read = req.method == Method::GET;
        let is_write = req.method == Method::POST || req.method == Method::PUT;
        if path == "auth/approle/login" {
            if !is_write {
                return Answer::error(405, &multierror("unsupported operation"));
            }
            return self.login(&body, now);
        }
        let flavor = self.flavor;
        let dead = || {
            Answer::error(
                403,
                &match flavor {
                    Flavor::Vault => {
                        "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"
                            .to_string()
                    }
                    Flavor::OpenBao => "permission denied".to_string(),
                },
            )
        };
        let Some(acc) = req
            .token
            .as_ref()
            .and_then(|t| self.by_value.get(t.expose()).cloned())
        else {
            return dead();
        };
        let Some(token) = self.tokens.get(&acc).cloned() else {
            return dead();
        };
        if !token.alive(now) {
            return dead();
        }
        if let Some(target) = path.strip_prefix("sys/internal/ui/mounts/") {
            if !is_read {
                return Answer::error(405, &multierror("unsupported operation"));
            }
            let target_denied = self.denied(&token, target);
            return match self.split_mount(target) {
                Some((mount, _)) if !target_denied => self.mount_info(&mount),
                _ => Answer::error(
                    403,
                    &format!(
                        "preflight capability check returned 403, please ensure client's policies grant access to path \"{target}/\""
                    ),
                ),
            };
        }
        if self.denied(&token, path) {
            return Answer::error(403, &multierror("permission denied"));
        }
        match path {
            "auth/token/lookup-self" if is_read => self.lookup_self(&acc, now),
            "auth/token/renew-self" if is_write => self.renew_self(&acc, &body, now),
            "auth/token/revoke-self" if is_write => {
                self.revoke_token(&acc, now, "by revoke-self");
                Answer::empty(204)
            }
            "sys/leases/renew" | "sys/renew" if is_write => self.renew_lease(&body, now),
            "sys/leases/revoke" | "sys/revoke" if is_write => {
                self.revoke_lease_req(&acc, &body, now)
            }
            "auth/token/lookup-self"
            | "auth/token/renew-self"
            | "auth/token/revoke-self"
            | "sys/leases/renew"
            | "sys/renew"
            | "sys/leases/revoke"
            | "sys/revoke" => Answer::error(405, &multierror("unsupported operation")),
            _ => self.engine(req, path, &acc, now),
        }
    }

    fn login(&mut self, body: &Value, now: Instant) -> Answer {
        let role_id = body.get("role_id").and_then(Value::as_str).unwrap_or("");
        if role_id.is_empty() {
            return Answer::error(500, "missing role_id");
        }
        let secret_id = body.get("secret_id").and_then(Value::as_str).unwrap_or("");
        if secret_id.is_empty() {
            return Answer::error(400, "missing secret_id");
        }
        let Some(role) = self
            .approles
            .get(role_id)
            .filter(|r| r.secret_id == secret_id)
            .cloned()
        else {
            self.note(now, "login refused: invalid role or secret ID".into());
            return Answer::error(400, "invalid role or secret ID");
        };
        let created = self.new_token(
            &role.token,
            now,
            "auth/approle/login",
            Some(&role.role_name),
        );
        self.logins += 1;
        let Some(t) = self.tokens.get(&created.accessor).cloned() else {
            return Answer::error(500, &multierror("internal error"));
        };
        let ttl = t.ttl.as_secs();
        self.note(
            now,
            format!(
                "login #{} (approle {}): token {} ttl {}s, max {}, renewable {}",
                self.logins,
                role.role_name,
                t.accessor,
                ttl,
                role.token.max_ttl.map_or("system".into(), secs),
                t.renewable
            ),
        );
        let auth = self.auth_block(&t, ttl);
        let env = self.envelope("", ("", false, 0), Value::Null, vec![], auth);
        Answer::json(200, env)
    }

    fn lookup_self(&mut self, acc: &str, now: Instant) -> Answer {
        let Some(t) = self.tokens.get(acc).cloned() else {
            return Answer::error(403, "permission denied");
        };
        let ttl = t
            .expires_at
            .map_or(0, |e| e.saturating_duration_since(now).as_secs());
        let mut data = json!({
            "accessor": t.accessor,
            "creation_time": self.wall(t.created_at).0,
            "creation_ttl": t.ttl.as_secs(),
            "display_name": if t.role_name.is_some() { "approle" } else { "token" },
            "entity_id": t.entity_id,
            "expire_time": t.expires_at.map(|e| self.date(e)),
            "explicit_max_ttl": t.explicit_max_ttl.map_or(0, |d| d.as_secs()),
            "id": t.value,
            "issue_time": self.date(t.created_at),
            "meta": t.role_name.as_ref().map(|r| json!({ "role_name": r })),
            "num_uses": 0,
            "orphan": t.role_name.is_some(),
            "path": t.path,
            "policies": t.policies,
            "renewable": t.renewable,
            "ttl": ttl,
            "type": "service",
        });
        if let Some(r) = t.last_renewal {
            data["last_renewal"] = json!(self.date(r));
            data["last_renewal_time"] = json!(self.wall(r).0);
        }
        let env = self.envelope("token", ("", false, 0), data, vec![], Value::Null);
        Answer::json(200, env)
    }

    fn renew_self(&mut self, acc: &str, body: &Value, now: Instant) -> Answer {
        let Some(t) = self.tokens.get(acc).cloned() else {
            return Answer::error(403, "permission denied");
        };
        if !t.renewable {
            self.note(now, format!("token {acc} renew refused: not renewable"));
            return Answer::error(400, "lease is not renewable");
        }
        let increment = match parse_increment(body.get("increment")) {
            Ok(d) => d,
            Err(e) => return Answer::error(400, &e),
        };
        let candidate = if increment.is_zero() {
            t.ttl
        } else {
            increment
        };
        let granted = match calculate_ttl(candidate, now, t.max_end, Rounding::Up) {
            Ok(g) => g,
            Err(e) => return Answer::error(400, &e),
        };
        if let Some(tm) = self.tokens.get_mut(acc) {
            tm.expires_at = Some(now + granted.ttl);
            tm.last_renewal = Some(now);
        }
        self.note(
            now,
            format!(
                "token {acc} renewed: asked {}, granted {}{}",
                secs(candidate),
                secs(granted.ttl),
                if granted.warning.is_some() {
                    " (capped at max TTL)"
                } else {
                    ""
                }
            ),
        );
        let Some(t) = self.tokens.get(acc).cloned() else {
            return Answer::error(500, &multierror("internal error"));
        };
        let auth = self.auth_block(&t, granted.ttl.as_secs());
        let env = self.envelope(
            "token",
            ("", false, 0),
            Value::Null,
            granted.warning.into_iter().collect(),
            auth,
        );
        Answer::json(200, env)
    }

    fn renew_lease(&mut self, body: &Value, now: Instant) -> Answer {
        let id = body
            .get("lease_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if id.is_empty() {
            return Answer::error(400, "lease_id must be specified");
        }
        let increment = match parse_increment(body.get("increment")) {
            Ok(d) => d,
            Err(e) => return Answer::error(400, &e),
        };
        let Some(l) = self.leases.get(&id).cloned() else {
            return Answer::error(400, "lease not found");
        };
        match l.state {
            LeaseState::Live => {}
            LeaseState::Expired { at } if now < at + self.reap_delay => {
                return Answer::error(400, "lease expired");
            }
            _ => return Answer::error(400, "lease not found"),
        }
        if !l.renewable {
            return Answer::error(400, "lease is not renewable");
        }
        if self.db_down && self.db_down_blocks_renew {
            self.note(now, format!("lease {id} renew failed: database down"));
            return Answer::error(
                400,
                &format!(
                    "failed to renew entry: resp: (*logical.Response)(nil) err: {}",
                    multierror(DB_DOWN)
                ),
            );
        }
        let default_ttl = self
            .dyn_roles
            .get(&(l.mount.clone(), l.role.clone()))
            .map_or(Duration::ZERO, |r| r.default_ttl);
        let candidate = if !increment.is_zero() {
            increment
        } else if !default_ttl.is_zero() {
            default_ttl
        } else {
            self.mount_max(&l.mount)
        };
        let granted =
            match calculate_ttl(candidate, now, Some(self.lease_max_end(&l)), Rounding::Down) {
                Ok(g) => g,
                Err(e) => return Answer::error(400, &e),
            };
        if let Some(lm) = self.leases.get_mut(&id) {
            lm.expires_at = now + granted.ttl;
        }
        self.note(
            now,
            format!(
                "lease {id} renewed: asked {}, granted {}{}",
                secs(candidate),
                secs(granted.ttl),
                if granted.warning.is_some() {
                    " (capped at max TTL)"
                } else {
                    ""
                }
            ),
        );
        let env = self.envelope(
            "system",
            (&id, true, granted.ttl.as_secs()),
            Value::Null,
            granted.warning.into_iter().collect(),
            Value::Null,
        );
        Answer::json(200, env)
    }

    fn revoke_lease_req(&mut self, acc: &str, body: &Value, now: Instant) -> Answer {
        let id = body
            .get("lease_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if id.is_empty() {
            return Answer::error(400, "lease_id must be specified");
        }
        // Unknown or already revoked leases succeed too: revocation is idempotent.
        self.revoke_lease(&id, now, &format!("by token {acc}"));
        let sync = body.get("sync").and_then(Value::as_bool).unwrap_or(true);
        Answer::empty(if sync { 204 } else { 202 })
    }

    fn mount_info(&mut self, mount: &str) -> Answer {
        let Some(m) = self.mounts.get(mount).cloned() else {
            return Answer::error(500, &multierror("internal error"));
        };
        let (ty, desc, options) = match m.kind {
            MountKind::Database => (
                "database",
                "",
                match self.flavor {
                    Flavor::Vault => Value::Null,
                    Flavor::OpenBao => json!({}),
                },
            ),
            MountKind::KvV1 => ("kv", "key/value secret storage", json!({ "version": "1" })),
            MountKind::KvV2 => ("kv", "key/value secret storage", json!({ "version": "2" })),
        };
        let data = json!({
            "accessor": m.accessor,
            "config": {
                "default_lease_ttl": 0,
                "force_no_cache": false,
                "max_lease_ttl": m.max_lease_ttl.map_or(0, |d| d.as_secs()),
            },
            "deprecation_status": "supported",
            "description": desc,
            "external_entropy_access": false,
            "local": false,
            "options": options,
            "path": format!("{mount}/"),
            "plugin_version": "",
            "running_plugin_version": "",
            "running_sha256": "",
            "seal_wrap": false,
            "type": ty,
            "uuid": m.uuid,
        });
        let env = self.envelope("system", ("", false, 0), data, vec![], Value::Null);
        Answer::json(200, env)
    }

    /// Paths served by a secrets engine mount.
    fn engine(&mut self, req: &Request, path: &str, acc: &str, now: Instant) -> Answer {
        let Some((mount, rest)) = self.split_mount(path) else {
            return Answer::error(
                404,
                &format!("no handler for route \"{path}\". route entry not found."),
            );
        };
        let Some(kind) = self.mounts.get(&mount).map(|m| m.kind) else {
            return Answer::error(404, &multierror("unsupported path"));
        };
        let is_read = req.method == Method::GET;
        let is_write = req.method == Method::POST || req.method == Method::PUT;
        let unsupported = || Answer::error(404, &multierror("unsupported path"));
        let wrong_method = || Answer::error(405, &multierror("unsupported operation"));
        match kind {
            MountKind::Database => {
                let (op, role) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
                if role.is_empty() || role.contains('/') {
                    return unsupported();
                }
                match op {
                    "creds" if is_read => self.issue(&mount, role, acc, now),
                    "static-creds" if is_read => self.static_creds(&mount, role, now),
                    "rotate-role" if is_write => self.rotate_role(&mount, role, now),
                    "creds" | "static-creds" | "rotate-role" => wrong_method(),
                    _ => unsupported(),
                }
            }
            MountKind::KvV2 => {
                let Some(key) = rest.strip_prefix("data/") else {
                    return unsupported();
                };
                if !is_read {
                    return wrong_method();
                }
                let key = key.to_string();
                self.kv_read(&mount, &key, true)
            }
            MountKind::KvV1 => {
                if !is_read {
                    return wrong_method();
                }
                self.kv_read(&mount, &rest, false)
            }
        }
    }

    fn issue(&mut self, mount: &str, role: &str, acc: &str, now: Instant) -> Answer {
        let Some(r) = self
            .dyn_roles
            .get(&(mount.to_string(), role.to_string()))
            .cloned()
        else {
            return Answer::error(400, &format!("unknown role: {role}"));
        };
        if self.db_down {
            self.note(
                now,
                format!("issue {mount}/creds/{role} failed: database down"),
            );
            return Answer::error(
                500,
                &multierror(&format!("unable to start transaction: {DB_DOWN}")),
            );
        }
        let mount_max = self.mount_max(mount);
        let max = if r.max_ttl.is_zero() {
            mount_max
        } else {
            r.max_ttl.min(mount_max)
        };
        let candidate = if r.default_ttl.is_zero() {
            mount_max
        } else {
            r.default_ttl
        };
        let granted = match calculate_ttl(candidate, now, Some(now + max), Rounding::Down) {
            Ok(g) => g,
            Err(e) => return Answer::error(500, &multierror(&e)),
        };
        let n = self.next_id();
        let id = format!("{mount}/creds/{role}/{n}");
        let username = format!("v-{role}-{n}");
        let password = self.password();
        self.leases.insert(
            id.clone(),
            LeaseEntry {
                id: id.clone(),
                mount: mount.to_string(),
                role: role.to_string(),
                username: username.clone(),
                password: password.clone(),
                token_accessor: acc.to_string(),
                issued_at: now,
                expires_at: now + granted.ttl,
                renewable: true,
                state: LeaseState::Live,
            },
        );
        self.by_username.insert(username.clone(), id.clone());
        self.issued.push(Issued {
            at: now,
            lease_id: id.clone(),
            username: username.clone(),
            role: role.to_string(),
            token_accessor: acc.to_string(),
        });
        self.note(
            now,
            format!(
                "issued {id}: user {username}, ttl {}, max {}, parent token {acc}",
                secs(granted.ttl),
                secs(max)
            ),
        );
        let data = json!({ "password": password, "username": username });
        let env = self.envelope(
            "database",
            (&id, true, granted.ttl.as_secs()),
            data,
            granted.warning.into_iter().collect(),
            Value::Null,
        );
        Answer::json(200, env)
    }

    fn static_creds(&mut self, mount: &str, role: &str, now: Instant) -> Answer {
        let Some(s) = self
            .static_roles
            .get(&(mount.to_string(), role.to_string()))
            .cloned()
        else {
            return Answer::error(400, &format!("unknown role: {role}"));
        };
        let next = s.last_rotation + s.rotation_period;
        // Rounded to the nearest second (measured on OpenBao 2.7.2): in the last half second
        // before a rotation it still reads 1.
        let ttl = next.saturating_duration_since(now).as_secs_f64().round() as u64;
        let data = json!({
            "last_vault_rotation": self.date(s.last_rotation),
            "password": s.password,
            "rotation_period": s.rotation_period.as_secs(),
            "ttl": ttl,
            "username": s.username,
        });
        let env = self.envelope("database", ("", false, 0), data, vec![], Value::Null);
        Answer::json(200, env)
    }

    fn rotate_role(&mut self, mount: &str, role: &str, now: Instant) -> Answer {
        if !self
            .static_roles
            .contains_key(&(mount.to_string(), role.to_string()))
        {
            return Answer::error(400, "no static role found for role name");
        }
        if self.db_down {
            self.note(
                now,
                format!("rotate-role {mount}/{role} failed: database down"),
            );
            return Answer::error(
                500,
                &multierror(&format!(
                    "unable to finish rotating credentials; retries will continue in the background but it is also safe to retry manually: error setting credentials: {}",
                    multierror(&format!("user does not appear to exist: {DB_DOWN}"))
                )),
            );
        }
        self.rotate_static(mount, role, now, "by rotate-role");
        Answer::empty(204)
    }

    fn kv_read(&mut self, mount: &str, key: &str, v2: bool) -> Answer {
        let Some(v) = self
            .kv
            .get(&(mount.to_string(), key.to_string()))
            .and_then(|vs| vs.last().map(|v| (vs.len(), v.clone())))
        else {
            return Answer::json(404, json!({ "errors": [] }));
        };
        let (version, entry) = v;
        let data = if v2 {
            json!({
                "data": entry.data,
                "metadata": {
                    "created_time": self.date(entry.created),
                    "custom_metadata": null,
                    "deletion_time": "",
                    "destroyed": false,
                    "version": version,
                },
            })
        } else {
            Value::Object(entry.data)
        };
        let env = self.envelope("kv", ("", false, 0), data, vec![], Value::Null);
        Answer::json(200, env)
    }
}

fn cascade_text(leases: &[String]) -> String {
    if leases.is_empty() {
        String::new()
    } else {
        format!("; revoked its lease(s) {}", leases.join(", "))
    }
}
