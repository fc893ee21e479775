//! The in-memory store behind the API: mount tables, policies, tokens,
//! leases and wrapped responses, all inside one [`Core`] guarded by a plain
//! mutex. Handlers lock it only for synchronous bookkeeping; database I/O
//! happens outside the lock as [`Job`]s.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use crate::acl::{Acl, Policy, DEFAULT_POLICY};
use crate::auth::{approle::Approle, jwt::Jwt, kubernetes::Kubernetes};
use crate::controls::Controls;
use crate::database::{pg::Pools, DbBackend};
use crate::flavor::Flavor;
use crate::job::Job;
use crate::kv::KvStore;
use crate::leases::LeaseStore;
use crate::tokens::TokenStore;
use crate::util;
use crate::wrapping::WrapStore;

/// System defaults: Vault's `default_lease_ttl`/`max_lease_ttl` are both 768h.
pub const SYSTEM_DEFAULT_TTL: Duration = Duration::from_secs(768 * 3600);
pub const SYSTEM_MAX_TTL: Duration = Duration::from_secs(768 * 3600);

/// Per-mount engine state.
pub enum Backend {
    System,
    Cubbyhole,
    Identity,
    Token,
    Kv(KvStore),
    Database(DbBackend),
    Approle(Approle),
    Kubernetes(Kubernetes),
    Jwt(Jwt),
}

/// A secrets-engine or auth-method mount.
pub struct MountEntry {
    /// Path with trailing slash, e.g. `secret/` (auth mounts without `auth/`).
    pub path: String,
    /// Engine type as reported by `sys/mounts` (`kv`, `database`, `approle`...).
    pub kind: String,
    pub description: String,
    pub accessor: String,
    pub uuid: String,
    /// Mount options (`{"version":"2"}` for KV v2); `None` serialises as `null`.
    pub options: Option<BTreeMap<String, String>>,
    /// Zero means "use the system default".
    pub default_lease_ttl: Duration,
    pub max_lease_ttl: Duration,
    pub backend: Backend,
}

impl MountEntry {
    pub fn new(path: &str, kind: &str, description: &str, backend: Backend) -> Self {
        let short = kind.replace('-', "_");
        MountEntry {
            path: path.to_string(),
            kind: kind.to_string(),
            description: description.to_string(),
            accessor: format!("{}_{}", short, &util::uuid()[..8]),
            uuid: util::uuid(),
            options: None,
            default_lease_ttl: Duration::ZERO,
            max_lease_ttl: Duration::ZERO,
            backend,
        }
    }

    /// Effective default TTL for leases from this mount.
    pub fn default_ttl(&self) -> Duration {
        if self.default_lease_ttl.is_zero() {
            SYSTEM_DEFAULT_TTL
        } else {
            self.default_lease_ttl
        }
    }

    /// Effective max TTL for leases from this mount.
    pub fn max_ttl(&self) -> Duration {
        if self.max_lease_ttl.is_zero() {
            SYSTEM_MAX_TTL
        } else {
            self.max_lease_ttl
        }
    }
}

/// Everything the API serves.
pub struct Core {
    pub flavor: Flavor,
    pub sealed: bool,
    pub mounts: BTreeMap<String, MountEntry>,
    pub auth_mounts: BTreeMap<String, MountEntry>,
    pub policies: BTreeMap<String, Policy>,
    /// Per policy: how many times it was written and when last (OpenBao reports both).
    pub policy_versions: BTreeMap<String, (u64, SystemTime)>,
    pub tokens: TokenStore,
    pub leases: LeaseStore,
    pub wraps: WrapStore,
    /// Stable entity ids per (auth mount accessor, alias name).
    pub entities: HashMap<(String, String), String>,
    /// Revocations that failed and are retried by the scheduler.
    pub retry: Vec<(Instant, Job)>,
    pub cluster_id: String,
    pub cluster_name: String,
}

impl Core {
    /// A fresh dev-mode server: `secret/` is KV v2, `cubbyhole/`, `identity/`,
    /// `sys/` and `auth/token/` exist, like `vault server -dev`.
    pub fn new(flavor: Flavor, root_token: &str) -> Core {
        let mut mounts = BTreeMap::new();
        let mut secret = MountEntry::new(
            "secret/",
            "kv",
            "key/value secret storage",
            Backend::Kv(KvStore::new(2)),
        );
        secret.options = Some(BTreeMap::from([("version".to_string(), "2".to_string())]));
        mounts.insert("secret/".to_string(), secret);
        mounts.insert(
            "cubbyhole/".into(),
            MountEntry::new(
                "cubbyhole/",
                "cubbyhole",
                "per-token private secret storage",
                Backend::Cubbyhole,
            ),
        );
        mounts.insert(
            "identity/".into(),
            MountEntry::new("identity/", "identity", "identity store", Backend::Identity),
        );
        mounts.insert(
            "sys/".into(),
            MountEntry::new(
                "sys/",
                "system",
                "system endpoints used for control, policy and debugging",
                Backend::System,
            ),
        );
        let mut auth_mounts = BTreeMap::new();
        auth_mounts.insert(
            "token/".to_string(),
            MountEntry::new("token/", "token", "token based credentials", Backend::Token),
        );
        let mut policies = BTreeMap::new();
        let mut policy_versions = BTreeMap::new();
        if let Ok(p) = Policy::parse(DEFAULT_POLICY) {
            policies.insert("default".to_string(), p);
            policy_versions.insert("default".to_string(), (1, SystemTime::now()));
        }
        let mut tokens = TokenStore::default();
        tokens.insert_root(root_token);
        Core {
            flavor,
            sealed: false,
            mounts,
            auth_mounts,
            policies,
            policy_versions,
            tokens,
            leases: LeaseStore::default(),
            wraps: WrapStore::default(),
            entities: HashMap::new(),
            retry: Vec::new(),
            cluster_id: util::uuid(),
            cluster_name: format!("vault-cluster-{}", &util::uuid()[..8]),
        }
    }

    /// The ACL for a set of policy names (unknown names grant nothing).
    pub fn acl_for(&self, policies: &[String]) -> Acl {
        let root = policies.iter().any(|p| p == "root");
        Acl::new(policies.iter().filter_map(|p| self.policies.get(p)), root)
    }

    /// Longest secrets-engine mount matching `path` (mount path, entry).
    pub fn find_mount(&self, path: &str) -> Option<String> {
        longest_mount(&self.mounts, path)
    }

    /// Longest auth mount matching `path` (without the `auth/` prefix).
    pub fn find_auth_mount(&self, path: &str) -> Option<String> {
        longest_mount(&self.auth_mounts, path)
    }

    /// Stable entity id for an auth alias, created on first login.
    pub fn entity_for(&mut self, mount_accessor: &str, alias: &str) -> String {
        self.entities
            .entry((mount_accessor.to_string(), alias.to_string()))
            .or_insert_with(util::uuid)
            .clone()
    }

    /// Revokes a token, its children and all their leases; returns the
    /// database work to do. Unknown tokens are a no-op.
    pub fn revoke_token_tree(&mut self, id: &str) -> Vec<Job> {
        let ids = self.tokens.revoke_tree(id);
        self.leases_of_tokens(&ids)
    }

    /// Revokes only the token (children become orphans), plus its own leases.
    pub fn revoke_token_orphan(&mut self, id: &str) -> Vec<Job> {
        let ids = self.tokens.revoke_orphan(id);
        self.leases_of_tokens(&ids)
    }

    fn leases_of_tokens(&mut self, ids: &[String]) -> Vec<Job> {
        let mut jobs = Vec::new();
        for t in ids {
            for lease_id in self.leases.ids_for_token(t) {
                if let Some(job) = self.leases.remove(&lease_id) {
                    jobs.push(job);
                }
            }
        }
        jobs
    }

    /// Expires everything due at `now`; returns jobs and the next deadline.
    pub fn expire_due(&mut self, now: SystemTime) -> (Vec<Job>, Option<SystemTime>) {
        let mut jobs = Vec::new();
        for id in self.tokens.expired(now) {
            jobs.extend(self.revoke_token_tree(&id));
        }
        for lease_id in self.leases.expired(now) {
            if let Some(job) = self.leases.remove(&lease_id) {
                jobs.push(job);
            }
        }
        self.wraps.purge(now);
        for m in self.auth_mounts.values_mut() {
            if let Backend::Approle(a) = &mut m.backend {
                a.purge(now);
            }
        }
        let mut next: Option<SystemTime> = None;
        let mut consider = |t: Option<SystemTime>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.tokens.next_expiry());
        consider(self.leases.next_expiry());
        for m in self.mounts.values_mut() {
            if let Backend::Database(db) = &mut m.backend {
                for role in db.due_rotations(now) {
                    jobs.push(Job::RotateStatic {
                        mount: m.path.clone(),
                        role,
                    });
                }
                consider(db.next_rotation());
            }
        }
        (jobs, next)
    }
}

fn longest_mount(table: &BTreeMap<String, MountEntry>, path: &str) -> Option<String> {
    let with_slash = format!("{}/", path.trim_end_matches('/'));
    table
        .keys()
        .filter(|m| with_slash.starts_with(m.as_str()))
        .max_by_key(|m| m.len())
        .cloned()
}

/// Process-wide shared state.
pub struct State {
    core: Mutex<Core>,
    pub flavor: Flavor,
    /// Wakes the scheduler when deadlines change.
    pub wake: Notify,
    /// Test controls: faults and the request log.
    pub controls: Controls,
    /// PostgreSQL connection pools.
    pub pools: Pools,
    pub started: Instant,
}

impl State {
    pub fn new(flavor: Flavor, root_token: &str) -> Arc<State> {
        Arc::new(State {
            core: Mutex::new(Core::new(flavor, root_token)),
            flavor,
            wake: Notify::new(),
            controls: Controls::default(),
            pools: Pools::default(),
            started: Instant::now(),
        })
    }

    /// Locks the core. A poisoned lock (a panic while held) is recovered:
    /// the data is plain bookkeeping and a dev server should keep serving.
    pub fn core(&self) -> MutexGuard<'_, Core> {
        match self.core.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}
