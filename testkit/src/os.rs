//! Small process and user helpers shared by the server launchers (no libc).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

pub(crate) fn runuser() -> &'static str {
    ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("runuser")
}

pub(crate) fn is_root() -> bool {
    // The uid of a file we just created is our effective uid; avoids libc.
    let probe = tempfile::NamedTempFile::new().expect("temp file");
    use std::os::unix::fs::MetadataExt;
    probe
        .as_file()
        .metadata()
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn user_ids(user: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == user {
            return (f[2].parse().expect("uid"), f[3].parse().expect("gid"));
        }
    }
    panic!("user {user} does not exist; create it (e.g. `useradd -r {user}`) or install the server package that creates it")
}

pub(crate) fn chown_to(path: &Path, user: &str) {
    let (uid, gid) = user_ids(user);
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} to {user}: {e}", path.display()));
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// SIGKILL to a whole process group (the child leads its own group).
pub(crate) fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
