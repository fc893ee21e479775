//! A throwaway MariaDB server per test, from Debian's `mariadb-server`.
//!
//! `mariadb-install-db` and `mariadbd` run as the unprivileged `mysql` user when the tests run
//! as root, with their own data directory, port and socket, so nothing touches a system
//! instance. Password authentication on TCP (127.0.0.1), `--skip-name-resolve`: a wrong or
//! dropped credential really fails to log in. MariaDB's `root` (no password, socket only) is
//! for setup; [`MariaDb::admin_user`] is the password account OpenBao's MySQL plugin uses.
//!
//! Queries go through the `mariadb` command-line client that `mariadb-server` pulls in: a
//! MySQL wire-protocol crate would be a heavy dev-dependency for a handful of statements.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::os::{chown_to, free_port, is_root, kill_group, runuser};

const ADMIN: &str = "rotator_admin";
const RUN_AS: &str = "mysql";

pub struct MariaDb {
    dir: tempfile::TempDir,
    bins: Bins,
    port: u16,
    admin_password: String,
    run_as: Option<String>,
    child: Option<Child>,
    /// `--ssl-cert`/`--ssl-key` for the server, copied into its directory: TLS on.
    tls: Option<(PathBuf, PathBuf)>,
}

/// The three programs this needs; all come with Debian's `mariadb-server`.
struct Bins {
    install_db: PathBuf,
    server: PathBuf,
    client: PathBuf,
}

impl MariaDb {
    /// Starts a fresh server with an admin account. Panics with a clear message when MariaDB is
    /// missing or cannot start: tests that need it fail loudly, never skip.
    pub fn start() -> MariaDb {
        MariaDb::start_inner(None)
    }

    /// Like [`MariaDb::start`], with TLS on from this certificate and key (PEM files).
    pub fn start_with_tls(cert: &Path, key: &Path) -> MariaDb {
        MariaDb::start_inner(Some((cert, key)))
    }

    fn start_inner(tls: Option<(&Path, &Path)>) -> MariaDb {
        let bins = find_bins().unwrap_or_else(|| {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            panic!(
                "MariaDB (mariadb-install-db, mariadbd, mariadb) not found on PATH or in /usr/sbin, /usr/bin; {}",
                if ci {
                    "CI=true: `.ci/run` installs Debian's mariadb-server; a test that needs it never skips in CI"
                } else {
                    "install Debian's `mariadb-server` (apt-get install mariadb-server)"
                }
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("vr-mariadb-")
            .tempdir()
            .expect("create temp dir for MariaDB");
        let run_as = is_root().then(|| RUN_AS.to_string());
        if let Some(user) = &run_as {
            chown_to(dir.path(), user);
        }
        let tls = tls.map(|(cert, key)| {
            // The server (maybe the `mysql` user) must read them: copies in its directory.
            let copy = |from: &Path, name: &str| {
                let to = dir.path().join(name);
                std::fs::copy(from, &to).expect("copy a TLS file for MariaDB");
                if let Some(user) = &run_as {
                    chown_to(&to, user);
                }
                to
            };
            (copy(cert, "server-cert.pem"), copy(key, "server-key.pem"))
        });
        let mut db = MariaDb {
            dir,
            bins,
            port: 0,
            admin_password: random_password(),
            run_as,
            child: None,
            tls,
        };
        db.install_db();
        db.launch();
        db.create_admin();
        db
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn admin_user(&self) -> &str {
        ADMIN
    }

    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// The connection URL for OpenBao's `mysql-database-plugin` (credentials templated in).
    pub fn plugin_connection_url(&self) -> String {
        format!(
            "{{{{username}}}}:{{{{password}}}}@tcp(127.0.0.1:{})/",
            self.port
        )
    }

    /// Runs `sql` as MariaDB's root over the socket and returns its tab-separated output.
    /// Panics on failure (for test setup).
    pub fn exec_root(&self, sql: &str) -> String {
        let mut cmd = Command::new(&self.bins.client);
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "-N", "-B", "-e", sql]);
        run_client(cmd).unwrap_or_else(|e| panic!("MariaDB root query failed: {e}"))
    }

    /// Runs `sql` as `user` with `password` over TCP, as an application would. The error is
    /// the client's message (e.g. `Access denied for user ...`).
    pub fn query_as(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(&self.bins.client);
        cmd.arg("--no-defaults")
            .args(["--protocol=TCP", "-h", "127.0.0.1", "--connect-timeout=5"])
            .arg(format!("--port={}", self.port))
            .args(["-u", user, "-N", "-B", "-e", sql])
            // Not on the command line, where `ps` would show it.
            .env("MYSQL_PWD", password);
        run_client(cmd)
    }

    /// Logs in as `user` and returns `CURRENT_USER()`.
    pub fn login(&self, user: &str, password: &str) -> Result<String, String> {
        self.query_as(user, password, "SELECT CURRENT_USER()")
            .map(|s| s.trim().to_string())
    }

    /// The names of the accounts in `mysql.user`, other than the built-in and admin ones.
    pub fn app_users(&self) -> Vec<String> {
        self.exec_root(&format!(
            "SELECT User FROM mysql.user WHERE User NOT IN ('root','mysql','mariadb.sys','','{ADMIN}') ORDER BY User"
        ))
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// The server's error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mariadb.log")
    }

    fn command(&self, program: &Path) -> Command {
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new(runuser());
                c.arg("-u").arg(user).arg("--").arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn install_db(&self) {
        let out = self
            .command(&self.bins.install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn launch(&mut self) {
        // A port can be taken between probing and binding; retry a few times.
        for _ in 0..5 {
            let port = free_port();
            let tls_args: Vec<String> = match &self.tls {
                Some((cert, key)) => vec![
                    format!("--ssl-cert={}", cert.display()),
                    format!("--ssl-key={}", key.display()),
                ],
                None => Vec::new(),
            };
            let child = self
                .command(&self.bins.server)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", self.data_dir().display()))
                .arg(format!("--socket={}", self.socket().display()))
                .arg(format!(
                    "--pid-file={}",
                    self.dir.path().join("mariadb.pid").display()
                ))
                .arg(format!("--log-error={}", self.log_path().display()))
                .arg(format!("--port={port}"))
                .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
                .args(["--innodb-buffer-pool-size=16M", "--max-connections=300"])
                .args(["--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"])
                .args(&tls_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group, killed as a whole on drop.
                .process_group(0)
                .spawn()
                .expect("spawn mariadbd");
            self.child = Some(child);
            self.port = port;
            if self.wait_ready(Duration::from_secs(60)) {
                return;
            }
            self.stop();
        }
        panic!("MariaDB did not start; log:\n{}", self.log());
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if self.log().contains("ready for connections")
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn create_admin(&self) {
        // '%' with --skip-name-resolve: any address, matched by IP (only 127.0.0.1 listens).
        self.exec_root(&format!(
            "CREATE USER '{ADMIN}'@'%' IDENTIFIED BY '{pw}'; \
             GRANT ALL PRIVILEGES ON *.* TO '{ADMIN}'@'%' WITH GRANT OPTION;",
            pw = self.admin_password
        ));
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- MariaDB log (port {}) ----\n{}---- end of MariaDB log ----",
                self.port,
                self.log()
            );
        }
        self.stop();
    }
}

fn run_client(mut cmd: Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the mariadb client: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn find_bins() -> Option<Bins> {
    let find = |name: &str| -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    Some(Bins {
        install_db: find("mariadb-install-db")?,
        server: find("mariadbd")?,
        client: find("mariadb")?,
    })
}

fn random_password() -> String {
    // Not security-relevant (throwaway server), but distinct per run; no quote characters.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("pw{:x}x{}", nanos, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_starts_and_refuses_wrong_password() {
        let db = MariaDb::start();
        let me = db
            .login(db.admin_user(), db.admin_password())
            .expect("admin logs in");
        assert_eq!(me, format!("{ADMIN}@%"));
        let bad = db
            .login(db.admin_user(), "wrong-password")
            .expect_err("wrong password refused");
        assert!(bad.contains("Access denied"), "{bad}");
        assert!(db.app_users().is_empty());
    }
}
