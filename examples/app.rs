//! An example application that reads the credential vault-rotator writes, the way the README's
//! "reader's contract" asks:
//!
//! - it opens the file **by path on every read** (the agent replaces it with a rename, so a kept
//!   file handle would keep reading the first version forever);
//! - it watches the **directory**, not the file (a rename gives the path a new inode, and a watch
//!   on the old inode goes quiet), and ignores the agent's dot-prefixed temp files;
//! - it reconnects **only when username or password changed**: the agent also rewrites the file
//!   when a lease renewal moves `expires_at`, and that must not cost a reconnect;
//! - it switches **make-before-break**: open the new connection first, switch to it, then close
//!   the old one, so no query ever runs without a working connection;
//! - it plans by **`expires_at`**: shortly before the credential expires it re-reads the file
//!   even if no change was seen, in case a watch event was lost.
//!
//! ```text
//! cargo run --example app -- --credentials /path/db.json --pg-host 127.0.0.1 --pg-port 5432 \
//!     [--dbname postgres] [--interval 100ms] [--duration 30s] [--report report.json]
//! ```
//!
//! Exit status: 0 when every query succeeded, 1 when any query failed, 2 when it could not
//! start (bad arguments, no credential file, no first connection). It never prints a password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// How long one query may take before it counts as failed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a new connection before giving up on this attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often to re-try a switch that failed, and to re-read the file once expiry is near.
const RETRY_EVERY: Duration = Duration::from_secs(1);

#[derive(Parser, Debug)]
#[command(about = "Example app: queries PostgreSQL with the credential vault-rotator keeps fresh")]
struct Args {
    /// The JSON credential file the agent writes (its --output)
    #[arg(long, value_name = "FILE")]
    credentials: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    pg_host: String,
    #[arg(long, default_value_t = 5432)]
    pg_port: u16,
    #[arg(long, default_value = "postgres")]
    dbname: String,
    /// Time between two queries
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop after this long (default: run until SIGINT or SIGTERM)
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Write a JSON report here on exit
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print a "query ok" line every this many queries
    #[arg(long, default_value_t = 50)]
    log_every: u64,
    /// How long to wait at start for the file to appear and the first login to work (the agent
    /// may start after the app)
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    wait: Duration,
}

/// What the app needs from the file. `Debug` leaves the password out on purpose.
#[derive(Clone, PartialEq)]
struct Credential {
    username: String,
    password: String,
    /// When the lease ends; `None` for secrets without one.
    expires_at: Option<SystemTime>,
}

impl Credential {
    /// Only a new login means a new connection; a moved `expires_at` (renewal) does not.
    fn same_login(&self, other: &Credential) -> bool {
        self.username == other.username && self.password == other.password
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_at", &self.expires_at.map(fmt_time))
            .finish()
    }
}

/// An error with its causes: tokio-postgres says "db error" and keeps the server's message in
/// the source.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

fn fmt_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Reads the credential file, opened by path every time. Errors name the file and field, never
/// a value.
fn read_credential(path: &Path) -> Result<Credential, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{}: field {k:?} is missing or not a string", path.display()))
    };
    let expires_at = match v.get("expires_at") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(
            humantime::parse_rfc3339_weak(s)
                .map_err(|e| format!("{}: expires_at {s:?}: {e}", path.display()))?,
        ),
        Some(other) => {
            return Err(format!(
                "{}: expires_at is neither a string nor null: {other}",
                path.display()
            ))
        }
    };
    Ok(Credential {
        username: field("username")?,
        password: field("password")?,
        expires_at,
    })
}

/// One open PostgreSQL session and the task that drives its socket.
struct Conn {
    client: tokio_postgres::Client,
    user: String,
    task: JoinHandle<()>,
}

async fn connect(args: &Args, cred: &Credential) -> Result<Conn, String> {
    let mut cfg = tokio_postgres::Config::new();
    // Built field by field rather than as a connection string, so no password needs quoting.
    cfg.host(&args.pg_host)
        .port(args.pg_port)
        .dbname(&args.dbname)
        .user(&cred.username)
        .password(&cred.password)
        .application_name("vault-rotator-example-app")
        .connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) =
        tokio::time::timeout(CONNECT_TIMEOUT, cfg.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| format!("connecting as {} timed out", cred.username))?
            .map_err(|e| format!("connecting as {}: {}", cred.username, chain(&e)))?;
    let user = cred.username.clone();
    let task = tokio::spawn(async move {
        // Ends when the client is dropped (clean close) or the server goes away.
        if let Err(e) = connection.await {
            println!("connection as {user} ended with an error: {}", chain(&e));
        }
    });
    Ok(Conn {
        client,
        user: cred.username.clone(),
        task,
    })
}

/// Closes a connection we no longer need: dropping the client ends the session cleanly.
async fn close(conn: Conn) {
    let Conn { client, task, .. } = conn;
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
}

#[derive(Default)]
struct Stats {
    queries_ok: u64,
    queries_failed: u64,
    /// Users as PostgreSQL reported them (`current_user`), in the order first seen.
    users_seen: Vec<String>,
    /// Switches to a new connection after the first one.
    reconnects: u64,
    /// File rewrites with the same login but a moved `expires_at`.
    renewals_seen: u64,
    last_error: Option<String>,
}

struct App {
    args: Args,
    cred: Credential,
    conn: Conn,
    stats: Stats,
    /// When the current credential was read, to size the "expiry is near" margin.
    loaded_at: SystemTime,
    /// The next time to re-read the file without a watch event (expiry plan or a retry).
    next_check: Option<Instant>,
    /// Connecting failed (with a newer login from the file, or after the session was lost);
    /// retry on a timer.
    switch_pending: bool,
    /// Say "query ok" after the next success (the first query of a new connection).
    announce: bool,
    /// Each warning once per credential.
    warned_near_expiry: bool,
    warned_expired: bool,
}

impl App {
    async fn query(&mut self) {
        let q = self
            .conn
            .client
            .query_one("SELECT current_user::text, now()::text", &[]);
        let result = match tokio::time::timeout(QUERY_TIMEOUT, q).await {
            Ok(Ok(row)) => row.try_get::<_, String>(0).map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(chain(&e)),
            Err(_) => Err(format!("no answer within {QUERY_TIMEOUT:?}")),
        };
        match result {
            Ok(user) => self.query_ok(user),
            Err(e) => self.query_failed(e).await,
        }
    }

    fn query_ok(&mut self, user: String) {
        self.stats.queries_ok += 1;
        let n = self.stats.queries_ok;
        if self.announce || (self.args.log_every > 0 && n % self.args.log_every == 0) {
            println!("query ok as {user} ({n} total)");
            self.announce = false;
        }
        if user != self.conn.user {
            println!(
                "warning: connected as {} but PostgreSQL says current_user is {user}",
                self.conn.user
            );
        }
        if !self.stats.users_seen.contains(&user) {
            self.stats.users_seen.push(user);
        }
    }

    async fn query_failed(&mut self, e: String) {
        self.stats.queries_failed += 1;
        self.stats.last_error = Some(format!("as {}: {e}", self.conn.user));
        if self.switch_pending {
            // Already reconnecting on a timer: count, but do not print ten lines a second.
            return;
        }
        println!("query FAILED as {}: {e}", self.conn.user);
        if self.conn.client.is_closed() {
            // The session is gone (server restart, role dropped under us): nothing to keep, so
            // connect with whatever the file holds now.
            println!("connection as {} is closed; reconnecting", self.conn.user);
            match read_credential(&self.args.credentials) {
                Ok(cred) => self.switch_to(cred, "connection lost").await,
                Err(e) => println!("cannot reconnect: {e}"),
            }
        }
    }

    /// Re-reads the file and acts on what changed.
    async fn refresh(&mut self) {
        let new = match read_credential(&self.args.credentials) {
            Ok(c) => c,
            Err(e) => {
                // Keep the last good credential and connection; the agent never leaves a torn
                // file, so this is transient or a misconfiguration worth seeing.
                println!("cannot use the credential file, keeping the current connection: {e}");
                return;
            }
        };
        if !new.same_login(&self.cred) {
            println!(
                "credential changed: reconnecting as {} (was {})",
                new.username, self.cred.username
            );
            self.switch_to(new, "credential changed").await;
        } else if self.conn.client.is_closed() {
            // A retry after the session was lost: same credential, new connection.
            self.switch_to(new, "connection lost").await;
        } else if new.expires_at != self.cred.expires_at {
            self.stats.renewals_seen += 1;
            println!(
                "credential file rewritten, same user {} (lease renewed, expires_at {}): keeping the connection",
                new.username,
                new.expires_at.map(fmt_time).unwrap_or_else(|| "none".into())
            );
            self.cred = new;
            self.loaded_at = SystemTime::now();
            self.warned_near_expiry = false;
            self.warned_expired = false;
        }
        self.schedule();
    }

    /// Make-before-break: the old connection keeps serving until the new one works.
    async fn switch_to(&mut self, new: Credential, why: &str) {
        match connect(&self.args, &new).await {
            Ok(conn) => {
                let old = std::mem::replace(&mut self.conn, conn);
                println!(
                    "connected as {} ({why}); closing the old connection as {}",
                    new.username, old.user
                );
                close(old).await;
                self.cred = new;
                self.loaded_at = SystemTime::now();
                self.stats.reconnects += 1;
                self.switch_pending = false;
                self.announce = true;
                self.warned_near_expiry = false;
                self.warned_expired = false;
            }
            Err(e) if self.conn.client.is_closed() => {
                println!("could not reconnect ({e}); retrying every {RETRY_EVERY:?}");
                self.switch_pending = true;
            }
            Err(e) => {
                println!(
                    "could not connect with the new credential ({e}); keeping the connection as {} and retrying",
                    self.conn.user
                );
                self.switch_pending = true;
            }
        }
        self.schedule();
    }

    /// Plans the next re-read by the clock: a retry, or a margin before `expires_at`.
    fn schedule(&mut self) {
        let now = SystemTime::now();
        self.next_check = if self.switch_pending {
            Some(Instant::now() + RETRY_EVERY)
        } else if let Some(exp) = self.cred.expires_at {
            // An eighth of the credential's life as seen from here, between 0.5 s and 5 min:
            // the agent renews or replaces it at about two thirds of its life, so by then a
            // change should have arrived, and if the watch missed it there is still time.
            let life = exp.duration_since(self.loaded_at).unwrap_or_default();
            let margin = (life / 8).clamp(Duration::from_millis(500), Duration::from_secs(300));
            let until = exp
                .duration_since(now)
                .unwrap_or_default()
                .saturating_sub(margin);
            // Once inside the margin, poll every second rather than spinning.
            Some(Instant::now() + if until.is_zero() { RETRY_EVERY } else { until })
        } else {
            None
        };
    }

    /// The clock says expiry is near (or a retry is due) and no file change arrived.
    async fn planned_check(&mut self) {
        let before = self.cred.clone();
        self.refresh().await;
        if self.switch_pending || !self.cred.same_login(&before) {
            return;
        }
        let Some(exp) = self.cred.expires_at else {
            return;
        };
        match exp.duration_since(SystemTime::now()) {
            Ok(left) if !self.warned_near_expiry => {
                println!(
                    "credential of {} expires in {:.1}s and no new one has appeared yet; re-reading the file every {RETRY_EVERY:?}",
                    self.cred.username,
                    left.as_secs_f64()
                );
                self.warned_near_expiry = true;
            }
            Err(_) if !self.warned_expired => {
                println!(
                    "credential of {} expired at {}; the open connection stays usable (PostgreSQL checks VALID UNTIL only at login), waiting for a new credential",
                    self.cred.username,
                    fmt_time(exp)
                );
                self.warned_expired = true;
            }
            _ => {}
        }
        self.next_check = Some(Instant::now() + RETRY_EVERY);
    }

    fn summary(&self) -> String {
        format!(
            "summary: {} queries ok, {} failed, {} reconnects, {} renewals seen, users seen: {}",
            self.stats.queries_ok,
            self.stats.queries_failed,
            self.stats.reconnects,
            self.stats.renewals_seen,
            self.stats.users_seen.join(", ")
        )
    }

    fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "queries_ok": self.stats.queries_ok,
            "queries_failed": self.stats.queries_failed,
            "users_seen": self.stats.users_seen,
            "reconnects": self.stats.reconnects,
            "renewals_seen": self.stats.renewals_seen,
            "last_error": self.stats.last_error,
        })
    }
}

/// Watches the credential file's directory and sends a unit on every change that concerns it.
fn watch_dir(
    file: &Path,
) -> Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<()>), String> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .ok_or_else(|| format!("{} has no file name", file.display()))?
        .to_os_string();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        // Our own reads show up as access events; reacting to them would loop.
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        // The rename that installs a new version names the target; the agent's temp files are
        // dot-prefixed and ignored. `..data` is kubelet's AtomicWriter layout (a symlink swap).
        let relevant = event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n == name.as_os_str() || n == "..data")
        });
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("cannot create a file watcher: {e}"))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok((watcher, rx))
}

/// Waits for a readable file and a working first login (the agent may still be starting).
async fn first_connection(args: &Args) -> Result<(Credential, Conn), String> {
    let deadline = Instant::now() + args.wait;
    let mut said = String::new();
    loop {
        let attempt = match read_credential(&args.credentials) {
            Ok(cred) => match connect(args, &cred).await {
                Ok(conn) => return Ok((cred, conn)),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!("gave up after {:?}: {attempt}", args.wait));
        }
        if attempt != said {
            println!("waiting: {attempt}");
            said = attempt;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Resolves on SIGINT, SIGTERM, or when `--duration` has elapsed.
async fn stop_signal(duration: Option<Duration>) -> Result<&'static str, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let elapsed = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = elapsed => "duration elapsed",
    })
}

async fn run(args: Args) -> Result<ExitCode, String> {
    // Signal handlers first: a SIGTERM while waiting for the file must not kill us silently.
    let stop = stop_signal(args.duration);
    tokio::pin!(stop);
    // The watch starts before the first read, so a change between the two is not missed.
    let (_watcher, mut events) = watch_dir(&args.credentials)?;
    let (cred, conn) = tokio::select! {
        r = first_connection(&args) => r?,
        why = &mut stop => {
            println!("stopped ({}) before the first connection", why?);
            return Ok(ExitCode::from(2));
        }
    };
    println!(
        "connected as {} (credential expires at {})",
        cred.username,
        cred.expires_at
            .map(fmt_time)
            .unwrap_or_else(|| "never".into())
    );
    let mut tick = tokio::time::interval(args.interval);
    // After a slow query or a reconnect, carry on at the normal pace instead of bursting.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut app = App {
        args,
        cred,
        conn,
        stats: Stats::default(),
        loaded_at: SystemTime::now(),
        next_check: None,
        switch_pending: false,
        announce: true,
        warned_near_expiry: false,
        warned_expired: false,
    };
    app.schedule();
    let why = loop {
        let check = app
            .next_check
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            why = &mut stop => break why?,
            _ = tick.tick() => app.query().await,
            Some(()) = events.recv() => {
                // One rename produces several events; one re-read covers them all.
                while events.try_recv().is_ok() {}
                app.refresh().await;
            }
            _ = tokio::time::sleep_until(check), if app.next_check.is_some() => app.planned_check().await,
        }
    };
    println!("stopping ({why})");
    let summary = app.summary();
    let report = app.report();
    let failed = app.stats.queries_failed;
    close(app.conn).await;
    println!("{summary}");
    if let Some(path) = &app.args.report {
        let text = serde_json::to_string_pretty(&report).map_err(|e| format!("report: {e}"))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write report {}: {e}", path.display()))?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("app: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("app: {e}");
            ExitCode::from(2)
        }
    }
}
