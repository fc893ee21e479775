//! podman, the shared volume and the pod for tests/container_e2e.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::FS_GROUP;

/// `podman` with the repository's containers.conf unless the caller chose one.
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        c.env(
            "CONTAINERS_CONF",
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/containers.conf"),
        );
    }
    c.stdin(Stdio::null());
    c
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs podman and returns its stdout; panics with its output when it fails.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman().args(args).output().expect("run podman");
    assert!(
        out.status.success(),
        "podman {} failed: {}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A tmpfs on the host, group `FS_GROUP` with the setgid bit (files created in it inherit the
/// group), as kubelet prepares an emptyDir with fsGroup. Unmounted on drop.
pub struct SharedVolume {
    pub path: PathBuf,
}

impl SharedVolume {
    pub fn mount(path: PathBuf) -> SharedVolume {
        std::fs::create_dir(&path).expect("create volume dir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size=1m,uid=0,gid={FS_GROUP},mode=2770"))
            .arg("tmpfs")
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount tmpfs on {}", path.display());
        SharedVolume { path }
    }
}

impl Drop for SharedVolume {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// A podman pod; removed with its containers on drop, also when the test fails.
pub struct Pod {
    pub name: String,
}

impl Pod {
    pub fn create() -> Pod {
        let name = format!("vr-e2e-{}", std::process::id());
        // No infra container: every member joins the host network itself (the brief of this
        // test is "PostgreSQL and Vault on the host"), so there is no namespace to share.
        podman_ok(&["pod", "create", "--infra=false", "--name", &name]);
        Pod { name }
    }

    pub fn container(&self, role: &str) -> String {
        format!("{}-{role}", self.name)
    }

    pub fn logs(&self, role: &str) -> String {
        let out = podman()
            .args(["logs", &self.container(role)])
            .output()
            .expect("podman logs");
        text(&out)
    }

    pub fn inspect(&self, role: &str, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.container(role)])
    }

    /// The host PID of the container's PID 1.
    pub fn pid(&self, role: &str) -> u32 {
        let pid = self.inspect(role, "{{.State.Pid}}");
        pid.parse()
            .unwrap_or_else(|_| panic!("{role}: no PID ({pid:?}); logs:\n{}", self.logs(role)))
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = podman()
            .args(["pod", "rm", "--force", "--time", "0", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The lines of /proc/PID/status that show a process's identity and privileges.
fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status")
}

fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{key} missing in /proc status"))
}

/// Asserts what the pod spec promises about a container's PID 1, seen from the host.
pub fn assert_locked_down(pid: u32, uid: u32, role: &str) {
    let st = proc_status(pid);
    let uids: Vec<&str> = status_field(&st, "Uid:").split_whitespace().collect();
    assert_eq!(
        uids,
        vec![uid.to_string(); 4],
        "{role}: real/effective/saved/fs uid"
    );
    let groups: Vec<&str> = status_field(&st, "Groups:").split_whitespace().collect();
    assert!(
        groups.contains(&FS_GROUP.to_string().as_str()),
        "{role}: supplementary groups {groups:?} lack fsGroup {FS_GROUP}"
    );
    for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(
            status_field(&st, cap),
            "0000000000000000",
            "{role}: {cap} (all capabilities dropped)"
        );
    }
    assert_eq!(
        status_field(&st, "NoNewPrivs:"),
        "1",
        "{role}: no_new_privs"
    );
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("{role}: no / in mountinfo"));
    let opts = root.split_whitespace().nth(5).unwrap_or("");
    assert!(
        opts.split(',').any(|o| o == "ro"),
        "{role}: root file system is not read-only: {root}"
    );
}
