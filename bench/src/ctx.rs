//! What every measurement shares: the PostgreSQL cluster, the binaries, a work directory, and
//! how long each measurement runs.

use std::path::PathBuf;
use std::time::Duration;

use testkit::pg::PgCluster;

use crate::agent::{Bins, Kind};
use crate::stack::{Flavor, Server, Vault};

/// Run lengths and counts. [`Settings::full`] is what the README table is made with;
/// [`Settings::quick`] only checks that the bench works.
#[derive(Debug, Clone)]
pub struct Settings {
    pub startup_runs: usize,
    pub idle: Duration,
    pub lifetime_window: Duration,
    pub rotations: usize,
    pub fleet: usize,
    pub fleet_splay: Duration,
    /// Fleet starts per setting; the run with the median peak is reported.
    pub fleet_runs: usize,
    pub many: usize,
    pub many_window: Duration,
}

impl Settings {
    pub fn full() -> Settings {
        Settings {
            startup_runs: 11,
            idle: Duration::from_secs(60),
            lifetime_window: Duration::from_secs(90),
            rotations: 1000,
            fleet: 200,
            fleet_splay: Duration::from_secs(10),
            fleet_runs: 3,
            many: 100,
            many_window: Duration::from_secs(30),
        }
    }

    pub fn quick() -> Settings {
        Settings {
            startup_runs: 3,
            idle: Duration::from_secs(10),
            lifetime_window: Duration::from_secs(35),
            rotations: 50,
            fleet: 20,
            fleet_splay: Duration::from_secs(3),
            fleet_runs: 1,
            many: 10,
            many_window: Duration::from_secs(10),
        }
    }
}

pub struct Ctx {
    pub pg: PgCluster,
    pub bins: Bins,
    /// `bench/out/work` (`soak-work`): every agent's config, output and log, kept after the run.
    pub work: PathBuf,
    pub settings: Settings,
}

impl Ctx {
    /// Starts PostgreSQL and finds the binaries; empties the work directory `bench/out/<work>`.
    pub fn new(settings: Settings, work: &str) -> Ctx {
        let work = out_dir().join(work);
        if work.exists() {
            std::fs::remove_dir_all(&work).expect("clear the work directory");
        }
        std::fs::create_dir_all(&work).expect("create the work directory");
        Ctx {
            pg: PgCluster::start(),
            bins: Bins::find(),
            work,
            settings,
        }
    }

    /// The agents that can run here: vault-rotator, and OpenBao Agent when installed.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut k = vec![Kind::Rotator];
        if self.bins.bao.is_some() {
            k.push(Kind::Bao);
        }
        k
    }

    /// A fresh devvault in the agent's own dialect, with an AppRole whose tokens live an hour
    /// (renewable to a day), and a directory `work/<name>` for the agents that use it.
    pub async fn vault(&self, kind: Kind, name: &str) -> (Vault, PathBuf) {
        self.vault_on(kind, name, Server::DevVault).await
    }

    /// Like [`Ctx::vault`], on the given server (a real OpenBao dev server, or devvault).
    pub async fn vault_on(&self, kind: Kind, name: &str, server: Server) -> (Vault, PathBuf) {
        self.server_with(kind, name, server, "1h", "24h").await
    }

    pub async fn vault_with(
        &self,
        kind: Kind,
        name: &str,
        token_ttl: &str,
        token_max_ttl: &str,
    ) -> (Vault, PathBuf) {
        self.server_with(kind, name, Server::DevVault, token_ttl, token_max_ttl)
            .await
    }

    async fn server_with(
        &self,
        kind: Kind,
        name: &str,
        server: Server,
        token_ttl: &str,
        token_max_ttl: &str,
    ) -> (Vault, PathBuf) {
        let suffix = match server {
            Server::DevVault => "",
            Server::OpenBao => "-on-openbao",
        };
        let dir = self.work.join(format!("{name}-{}{suffix}", slug(kind)));
        std::fs::create_dir_all(&dir).expect("create a work directory");
        let flavor = match kind {
            Kind::Rotator => Flavor::Vault,
            Kind::Bao => Flavor::OpenBao,
        };
        let vault = Vault::start(&self.pg, flavor, server, &dir, token_ttl, token_max_ttl).await;
        (vault, dir)
    }
}

pub fn slug(kind: Kind) -> &'static str {
    match kind {
        Kind::Rotator => "rotator",
        Kind::Bao => "bao",
    }
}

/// `bench/out` in the workspace (git-ignored).
pub fn out_dir() -> PathBuf {
    testkit::bins::workspace_root().join("bench").join("out")
}

/// Seconds as a Vault duration string ("90s").
pub fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// The workspace README.
pub fn readme() -> PathBuf {
    testkit::bins::workspace_root().join("README.md")
}
