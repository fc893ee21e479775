//! A throwaway PostgreSQL cluster per test (or per test binary).
//!
//! Authentication is scram-sha-256 on TCP (127.0.0.1), never `trust`: credential tests are only
//! meaningful when a wrong password is refused. When the tests run as root, `initdb` and
//! `postgres` run as the unprivileged `postgres` user through `runuser`, because PostgreSQL
//! refuses to run as root.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::os::{chown_to, free_port, is_root, runuser};
use std::time::{Duration, Instant};

const SUPERUSER: &str = "rotator_admin";

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin_dir: PathBuf,
    port: u16,
    password: String,
    run_as: Option<String>,
    child: Option<Child>,
}

impl PgCluster {
    /// Starts a fresh cluster. Panics with a clear message when PostgreSQL cannot start: tests
    /// that need it must fail loudly, never skip.
    pub fn start() -> PgCluster {
        let bin_dir = find_bin_dir().unwrap_or_else(|| {
            panic!("PostgreSQL binaries (initdb, postgres, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin; install the `postgresql` package")
        });
        let dir = tempfile::Builder::new()
            .prefix("vr-pg-")
            .tempdir()
            .expect("create temp dir for PostgreSQL");
        let run_as = is_root().then(|| "postgres".to_string());
        if let Some(user) = &run_as {
            chown_to(dir.path(), user);
        }
        let password = random_password();
        let mut cluster = PgCluster {
            dir,
            bin_dir,
            port: 0,
            password,
            run_as,
            child: None,
        };
        cluster.initdb();
        cluster.launch();
        cluster
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// `postgres://USER:PASS@127.0.0.1:PORT/postgres`
    pub fn superuser_url(&self) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/postgres",
            SUPERUSER, self.password, self.port
        )
    }

    /// A libpq-style keyword/value connection string for any user.
    pub fn conn_string(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname=postgres connect_timeout=5",
            self.port,
            user,
            quote_conn_value(password)
        )
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin_dir.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new(runuser());
                c.arg("-u").arg(user).arg("--").arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn initdb(&self) {
        let pwfile = self.dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{}\n", self.password)).expect("write pwfile");
        if let Some(user) = &self.run_as {
            chown_to(&pwfile, user);
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&pwfile);
    }

    fn launch(&mut self) {
        // A port can be taken between probing and binding; retry a few times.
        for _ in 0..5 {
            let port = free_port();
            let log = self.dir.path().join("postgres.log");
            let log_file = std::fs::File::create(&log).expect("create postgres log");
            if let Some(user) = &self.run_as {
                chown_to(&log, user);
            }
            let child = self
                .command("postgres")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(self.dir.path())
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file.try_clone().expect("clone log handle"))
                // Its own process group: a Ctrl-C in the terminal is for the demo or test,
                // which stops PostgreSQL itself after its clients.
                .process_group(0)
                .spawn()
                .expect("spawn postgres");
            self.child = Some(child);
            self.port = port;
            if self.wait_ready(Duration::from_secs(30)) {
                return;
            }
            self.stop();
        }
        let log = std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        panic!("PostgreSQL did not start; log:\n{log}");
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            // A listening socket is not enough: during startup PostgreSQL accepts connections
            // only to refuse them ("the database system is starting up"). Its log says when
            // it really is ready.
            let log =
                std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
            if log.contains("ready to accept connections")
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", "10", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn quote_conn_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn find_bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "postgres", "pg_ctl"]
            .iter()
            .all(|b| d.join(b).exists())
    };
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has_all(&d) {
                return Some(d);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| has_all(d))
        .collect();
    versions.sort();
    versions.pop()
}

fn random_password() -> String {
    // Not security-relevant (throwaway cluster), but distinct per run.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("pw-{:x}-{}", nanos, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_starts_and_refuses_wrong_password() {
        let pg = PgCluster::start();
        assert!(pg.port() > 0);
        let psql = pg.bin_dir.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        let run = |pw: &str| {
            Command::new(&psql)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    SUPERUSER,
                    "-d",
                    "postgres",
                    "-tAc",
                    "select 1",
                    "-p",
                ])
                .arg(pg.port().to_string())
                .env("PGPASSWORD", pw)
                .output()
                .expect("run psql")
        };
        let ok = run(pg.superuser_password());
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "1");
        let bad = run("wrong-password");
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("password authentication failed"));
    }
}
