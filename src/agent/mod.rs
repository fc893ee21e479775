//! Ties it together: the Vault client and auth, one worker per secret, the probe server, and
//! the signals that steer them.
//!
//! Signals: SIGTERM/SIGINT stop cleanly (revoking first with `--revoke-on-exit`); SIGHUP
//! re-reads the configuration and restarts only the secrets whose settings changed; SIGUSR1
//! rotates every secret now, as `POST /rotate` on the admin listener does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError, Output, SecretConfig};
use crate::http::{AdminAccess, Limits, ProbeServer, Router};
use crate::lease;
use crate::logging::LogHandle;
use crate::metrics::VaultRequests;
use crate::secret::{Control, Retire, Worker};
use crate::sink::{DirSink, FileSink, Sink};
use crate::state::{AuthCount, SecretInfo, State};
use crate::vault::{Auth, AuthEvent, Client, Live};

mod error;
mod reload;

pub use error::AgentError;

/// How long shutdown waits for workers to finish what they are doing (and revoke, if asked).
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(20);

/// What steers a running agent; [`Agent::run`] makes them from signals.
#[derive(Debug)]
pub enum Command {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGUSR1: rotate every secret now.
    RotateAll,
    /// SIGHUP, with the configuration read again.
    Reload(Box<Config>),
}

/// Re-reads the configuration on SIGHUP.
pub type Reload = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

struct Running {
    cfg: SecretConfig,
    rotate: Arc<Notify>,
    stop: watch::Sender<bool>,
    /// Tells the worker that SIGHUP removed or replaced it (see [`Retire`]).
    retire: watch::Sender<Retire>,
    task: JoinHandle<()>,
}

/// A worker SIGHUP retired: still handing over or in its grace, awaited on SIGTERM so that
/// its revocations happen.
struct Retiring {
    name: String,
    stop: watch::Sender<bool>,
    /// A removed secret configured again within its grace becomes a replaced one.
    retire: watch::Sender<Retire>,
    task: JoinHandle<()>,
}

pub struct Agent {
    cfg: Config,
    backend: Arc<Live>,
    state: Arc<State>,
    /// Counts and latencies of Vault requests, fed by the client's observer and read by
    /// `/metrics`. Lock-free atomics, so the request path never waits on a scrape.
    vault_requests: Arc<VaultRequests>,
    running: BTreeMap<String, Running>,
    retiring: Vec<Retiring>,
    /// Per secret name, shared by its successive workers: the id of the last to write.
    written: BTreeMap<String, Arc<watch::Sender<u64>>>,
    /// Seeds every random choice (splay, jitter) so a simulation replays exactly; `None`
    /// draws from the OS.
    seed: Option<u64>,
    /// Workers started so far, so that each gets its own random stream.
    started: u64,
}

impl Agent {
    /// Checks everything that can be checked without Vault; errors here are configuration
    /// errors (exit 2).
    pub fn new(cfg: Config, state: Arc<State>) -> Result<Agent, AgentError> {
        if cfg.vault.addr.starts_with("http://") {
            tracing::warn!(addr = %cfg.vault.addr, "talking to Vault over plain http: tokens and credentials cross the network unencrypted");
        }
        if cfg.vault.skip_verify {
            tracing::warn!("TLS certificate verification of Vault is off (skip_verify)");
        }
        let client = Client::new(&cfg.vault).map_err(AgentError::Client)?;
        Agent::with_client(cfg, state, client, None)
    }

    /// [`Agent::new`] over a given client (the simulator's in-memory Vault), with every
    /// random choice drawn from `seed` when one is given.
    pub fn with_client(
        cfg: Config,
        state: Arc<State>,
        client: Client,
        seed: Option<u64>,
    ) -> Result<Agent, AgentError> {
        let vault_requests = Arc::new(VaultRequests::default());
        let observed = vault_requests.clone();
        let client = client.with_observer(Arc::new(move |kind, status, elapsed| {
            observed.observe(kind, status, elapsed)
        }));
        let metrics_state = state.clone();
        let auth = Auth::new(
            client.clone(),
            cfg.auth.clone(),
            cfg.backoff,
            Box::new(move |e: AuthEvent| {
                metrics_state.auth_event(match e {
                    AuthEvent::Login => AuthCount::Login,
                    AuthEvent::LoginFailed => AuthCount::LoginFailed,
                    AuthEvent::Renewed => AuthCount::Renewed,
                    AuthEvent::RenewFailed => AuthCount::RenewFailed,
                })
            }),
        )
        .with_seed(seed.map(|s| s ^ 0xa5a5_a5a5));
        for s in &cfg.secrets {
            sink_for(s)?;
            // Known from the first instant, so /ready fails until each has been written.
            state.add_secret(secret_info(s));
        }
        Ok(Agent {
            backend: Arc::new(Live {
                client,
                auth: Arc::new(auth),
            }),
            state,
            vault_requests,
            cfg,
            running: BTreeMap::new(),
            retiring: Vec::new(),
            written: BTreeMap::new(),
            seed,
            started: 0,
        })
    }

    /// A random stream for the `salt`-th user: seeded when the agent is, else from the OS.
    fn rng(&self, salt: u64) -> StdRng {
        match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt),
            None => StdRng::from_os_rng(),
        }
    }

    pub fn state(&self) -> Arc<State> {
        self.state.clone()
    }

    /// `--once`: every secret fetched and written, or an error.
    pub async fn run_once(self) -> Result<(), AgentError> {
        let limit = self.cfg.once_timeout;
        let mut tasks = tokio::task::JoinSet::new();
        for s in &self.cfg.secrets {
            let sink = sink_for(s)?;
            let (_tx, rx) = watch::channel(false);
            let control = Control::new(Arc::new(Notify::new()), rx);
            let worker = Worker::new(
                s.clone(),
                self.backend.clone(),
                sink,
                self.state.clone(),
                control,
                self.cfg.backoff,
                false,
            );
            let name = s.name.clone();
            tasks.spawn(async move { (name, worker.run_once(limit).await) });
        }
        let all = async {
            let mut results = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                results.push(joined);
            }
            results
        };
        let results = tokio::time::timeout(limit + Duration::from_secs(1), all)
            .await
            .map_err(|_| AgentError::OnceTimeout(limit))?;
        for joined in results {
            let (name, r) = joined.map_err(AgentError::Worker)?;
            r.map_err(|source| AgentError::Once {
                name,
                source: Box::new(source),
            })?;
        }
        Ok(())
    }

    /// Runs until SIGTERM or SIGINT: the signals become [`Command`]s for [`Agent::run_with`].
    pub async fn run(self, reload: Reload, log: Option<LogHandle>) -> Result<(), AgentError> {
        use tokio::signal::unix::{signal, SignalKind};
        let sig = |k: SignalKind| signal(k).map_err(AgentError::Signal);
        let mut term = sig(SignalKind::terminate())?;
        let mut int = sig(SignalKind::interrupt())?;
        let mut hup = sig(SignalKind::hangup())?;
        let mut usr1 = sig(SignalKind::user_defined1())?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let signals = tokio::spawn(async move {
            loop {
                let command = tokio::select! {
                    biased;
                    _ = term.recv() => { tracing::info!("SIGTERM: stopping"); Command::Stop }
                    _ = int.recv() => { tracing::info!("SIGINT: stopping"); Command::Stop }
                    _ = usr1.recv() => Command::RotateAll,
                    _ = hup.recv() => match reload() {
                        Ok(cfg) => Command::Reload(Box::new(cfg)),
                        Err(e) => {
                            tracing::error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the running one");
                            continue;
                        }
                    },
                };
                if tx.send(command).await.is_err() {
                    return;
                }
            }
        });
        let result = self.run_with(rx, log).await;
        signals.abort();
        result
    }

    /// Runs until [`Command::Stop`] (or until every sender is gone).
    pub async fn run_with(
        mut self,
        mut commands: tokio::sync::mpsc::Receiver<Command>,
        log: Option<LogHandle>,
    ) -> Result<(), AgentError> {
        let probes = match self.cfg.listen {
            Some(addr) => {
                let status = crate::status::StatusOptions {
                    hide_usernames: self.cfg.status_hide_usernames,
                };
                let router =
                    Router::probes(self.state.clone(), self.vault_requests.clone(), status);
                let server = ProbeServer::serve(addr, router, Limits::default())?;
                tracing::info!(addr = %server.local_addr(), "serving /health, /ready, /metrics, /status and the status page");
                Some(server)
            }
            None => None,
        };
        let admin = self.start_admin()?;
        let (ping_tx, ping_rx) = tokio::sync::mpsc::channel(8);
        self.state.set_liveness(ping_tx);
        let liveness = tokio::spawn(crate::state::serve_liveness(ping_rx));

        let splay = lease::splay(self.cfg.splay, &mut self.rng(0));
        if !splay.is_zero() {
            tracing::info!(splay = %humantime::format_duration(crate::time::round(splay)), "waiting before the first request (splay)");
            let end = tokio::time::sleep(splay);
            tokio::pin!(end);
            // Commands keep their meaning during the splay: a SIGHUP here once cut the splay
            // short and was lost, with the secrets it added never started.
            loop {
                tokio::select! {
                    biased;
                    c = commands.recv() => match c {
                        Some(Command::Stop) | None => return Ok(()),
                        // Every secret is about to be issued anyway.
                        Some(Command::RotateAll) => {}
                        Some(Command::Reload(new)) => self.reload_before_start(*new, log.as_ref()),
                    },
                    _ = &mut end => break,
                }
            }
        }
        let (auth_stop_tx, auth_stop_rx) = watch::channel(false);
        let renewer = tokio::spawn(self.backend.auth.clone().run_renewer(auth_stop_rx));
        for s in self.cfg.secrets.clone() {
            self.start(s)?;
        }
        while let Some(command) = commands.recv().await {
            match command {
                Command::Stop => break,
                Command::RotateAll => {
                    tracing::info!("SIGUSR1: rotating every secret now");
                    for r in self.running.values() {
                        r.rotate.notify_one();
                    }
                }
                Command::Reload(new) => self.reload(*new, log.as_ref()),
            }
        }
        let mut tasks = Vec::new();
        for r in std::mem::take(&mut self.running).into_values() {
            let _ = r.stop.send(true);
            tasks.push(r.task);
        }
        for r in std::mem::take(&mut self.retiring) {
            let _ = r.stop.send(true);
            tasks.push(r.task);
        }
        let all = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_LIMIT, all).await.is_err() {
            tracing::warn!("workers did not stop in time");
        }
        let _ = auth_stop_tx.send(true);
        let _ = renewer.await;
        if self.cfg.revoke_on_exit {
            self.backend.auth.revoke().await;
        }
        liveness.abort();
        if let Some(p) = probes {
            p.shutdown();
        }
        if let Some(a) = admin {
            a.shutdown();
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// The admin listener (`POST /rotate`), when configured. Failing to bind the default
    /// address is only a warning: the agent's job does not depend on it.
    fn start_admin(&self) -> Result<Option<ProbeServer>, AgentError> {
        let Some(admin) = &self.cfg.admin else {
            return Ok(None);
        };
        let access = AdminAccess {
            token_file: admin.token_file.clone(),
            allow_remote: admin.allow_remote,
        };
        let router = Router::admin(self.state.clone(), access);
        match ProbeServer::serve(admin.listen, router, Limits::default()) {
            Ok(server) => {
                let ip = server.local_addr().ip();
                if !ip.is_loopback() && !admin.allow_remote {
                    tracing::info!(addr = %server.local_addr(), "admin listener on a non-loopback address: requests from other hosts are refused (--admin-allow-remote)");
                }
                tracing::info!(
                    addr = %server.local_addr(),
                    token = admin.token_file.is_some(),
                    allow_remote = admin.allow_remote,
                    "serving POST /rotate (admin)"
                );
                Ok(Some(server))
            }
            Err(e) if !admin.required => {
                tracing::warn!(error = %e, "admin listener not started (set --admin-listen to another address, or off)");
                Ok(None)
            }
            Err(e) => Err(AgentError::Http(e)),
        }
    }

    fn start(&mut self, s: SecretConfig) -> Result<(), AgentError> {
        let sink = sink_for(&s)?;
        sink.cleanup_stale();
        self.state.add_secret(secret_info(&s));
        let rotate = Arc::new(Notify::new());
        let hooks: Vec<&str> = s.hooks.iter().map(|h| h.kind()).collect();
        self.state.declare_hooks(&s.name, &hooks);
        // The admin listener reaches the worker through the state; a restarted worker
        // replaces its predecessor's handle here.
        self.state.set_rotate_handle(&s.name, rotate.clone());
        let (stop, stop_rx) = watch::channel(false);
        let (retire, retire_rx) = watch::channel(Retire::No);
        self.started += 1;
        let written = self
            .written
            .entry(s.name.clone())
            .or_insert_with(|| Arc::new(watch::channel(0).0))
            .clone();
        let control = Control {
            rotate: rotate.clone(),
            shutdown: stop_rx,
            retire: retire_rx,
            written,
            id: self.started,
        };
        let worker = Worker::new(
            s.clone(),
            self.backend.clone(),
            sink,
            self.state.clone(),
            control,
            self.cfg.backoff,
            self.cfg.revoke_on_exit,
        )
        .with_rng(self.rng(self.started));
        let task = tokio::spawn(worker.run());
        self.running.insert(
            s.name.clone(),
            Running {
                cfg: s,
                rotate,
                stop,
                retire,
                task,
            },
        );
        Ok(())
    }
}

fn secret_info(s: &SecretConfig) -> SecretInfo {
    SecretInfo {
        name: s.name.clone(),
        path: s.path.clone(),
        kind: s.kind.unwrap_or(crate::credential::SecretKind::Generic),
    }
}

fn sink_for(s: &SecretConfig) -> Result<Sink, AgentError> {
    Ok(match &s.output {
        Output::File { path, .. } => FileSink::new(path.clone(), s.file_mode, s.owner)
            .map_err(|source| AgentError::Output {
                name: s.name.clone(),
                source,
            })?
            .into(),
        Output::Dir { path, .. } => DirSink::new(path.clone(), s.file_mode, s.owner)
            .map_err(|source| AgentError::OutputDir {
                name: s.name.clone(),
                source,
            })?
            .into(),
    })
}
