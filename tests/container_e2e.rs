//! The image as users run it: a pod of real podman containers.
//!
//! - The sidecar is the image built from the Dockerfile (`scripts/build-image.sh`), run the way
//!   manifests/ runs it: user 65532, read-only root file system, every capability dropped,
//!   no-new-privileges. It reaches Vault by a short service name (`vault`), resolved by a
//!   stand-in cluster DNS on loopback through the search domains and `ndots:5` of a
//!   kubelet-style resolv.conf: the static binary's name resolution as a cluster needs it.
//! - The example app (`examples/app.rs`, built on the host) runs in a second container from the
//!   Debian stand-in image, as user 10001, locked down the same way.
//! - The two share a tmpfs volume owned by group 2000 with the setgid bit, and both containers
//!   get group 2000: what Kubernetes does for an `emptyDir { medium: Memory }` with
//!   `fsGroup: 2000`. The agent writes with `--file-mode 0440`.
//! - PostgreSQL and devvault run on the host; the containers use the host network.
//!
//! It checks: the file appears with the right owner, group and mode; the app reads it as its
//! own user (and a user outside the group cannot); the app's queries succeed across rotations;
//! the probes answer on the container's port; `podman stop` (SIGTERM to PID 1) makes the sidecar
//! exit 0 before podman's SIGKILL; after the sidecar restarts the app still has a working
//! credential.
//!
//! Needs root (the tmpfs mount, rootful podman) and podman; under CI=true a missing podman or
//! root fails the test, elsewhere it is skipped with a message. The image is (re)built through
//! podman's layer cache, which is a cache hit when CI's `image` step built it already; set
//! VAULT_ROTATOR_TEST_IMAGE to test an existing image instead.

mod common;

use std::net::UdpSocket;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SEC: fn(u64) -> Duration = Duration::from_secs;
const DEFAULT_TAG: &str = "localhost/vault-rotator:ci";
const STANDIN_DEBIAN: &str = "localhost/vault-rotator-standin/debian:bookworm";
/// Kubernetes' `fsGroup`: owns the shared volume, a supplementary group of both containers.
const FS_GROUP: u32 = 2000;
const SIDECAR_UID: u32 = 65532;
const APP_UID: u32 = 10001;
/// `podman stop --time`: the grace before SIGKILL, like terminationGracePeriodSeconds.
const STOP_GRACE_SECS: u64 = 10;
/// Issued credentials to see before stopping the sidecar: the first and two rotations.
const USERS_BEFORE_STOP: usize = 3;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// `podman` with the repository's containers.conf unless the caller chose one.
fn podman() -> Command {
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

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs podman and returns its stdout; panics with its output when it fails.
fn podman_ok(args: &[&str]) -> String {
    let out = podman().args(args).output().expect("run podman");
    assert!(
        out.status.success(),
        "podman {} failed: {}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Why this machine cannot run the test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !is_root() {
        return Some("needs root (tmpfs mount, rootful podman)".into());
    }
    match podman().arg("--version").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("podman --version failed: {}", text(&out))),
        Err(e) => Some(format!(
            "podman not found ({e}); apt-get install podman runc"
        )),
    }
}

/// Runs a repository script; panics with its output when it fails.
fn script(name: &str, args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts").join(name)).args(args);
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        cmd.env("CONTAINERS_CONF", root.join(".ci/containers.conf"));
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run bash");
    let t = text(&out);
    assert!(out.status.success(), "scripts/{name} failed:\n{t}");
    t
}

/// The image under test: VAULT_ROTATOR_TEST_IMAGE, or the Dockerfile built now (a layer-cache
/// hit when nothing changed since CI's image step), so the test never runs a stale image.
fn image() -> String {
    script("image-standins.sh", &[]);
    if let Ok(tag) = std::env::var("VAULT_ROTATOR_TEST_IMAGE") {
        return tag;
    }
    let out = script("build-image.sh", &[DEFAULT_TAG]);
    if let Some(line) = out.lines().rev().find(|l| l.starts_with("build-image:")) {
        eprintln!("container_e2e: {line}");
    }
    DEFAULT_TAG.to_string()
}

/// A tmpfs on the host, group `FS_GROUP` with the setgid bit (files created in it inherit the
/// group), as kubelet prepares an emptyDir with fsGroup. Unmounted on drop.
struct SharedVolume {
    path: PathBuf,
}

impl SharedVolume {
    fn mount(path: PathBuf) -> SharedVolume {
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
struct Pod {
    name: String,
}

impl Pod {
    fn create() -> Pod {
        let name = format!("vr-e2e-{}", std::process::id());
        // No infra container: every member joins the host network itself (the brief of this
        // test is "PostgreSQL and Vault on the host"), so there is no namespace to share.
        podman_ok(&["pod", "create", "--infra=false", "--name", &name]);
        Pod { name }
    }

    fn container(&self, role: &str) -> String {
        format!("{}-{role}", self.name)
    }

    fn logs(&self, role: &str) -> String {
        let out = podman()
            .args(["logs", &self.container(role)])
            .output()
            .expect("podman logs");
        text(&out)
    }

    fn inspect(&self, role: &str, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.container(role)])
    }

    /// The host PID of the container's PID 1.
    fn pid(&self, role: &str) -> u32 {
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
fn assert_locked_down(pid: u32, uid: u32, role: &str) {
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

/// The cluster DNS stand-in: a tiny DNS server on a loopback address (port 53, as resolv.conf
/// cannot name another) that answers A queries for `vault.<namespace>.svc.cluster.local` with
/// 127.0.0.1, AAAA with no records, anything else with NXDOMAIN. It records every name asked
/// for, so the test can see the resolver expanded a short name with the search domains.
struct ClusterDns {
    ip: std::net::Ipv4Addr,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const CLUSTER_DOMAIN: &str = "e2e.svc.cluster.local";

impl ClusterDns {
    fn start() -> ClusterDns {
        // 127.53.x.y: out of the way of a local resolver on 127.0.0.53; retried on a clash.
        let socket = (0..20)
            .find_map(|i| {
                let ip = std::net::Ipv4Addr::new(127, 53, (std::process::id() % 250) as u8, 1 + i);
                UdpSocket::bind((ip, 53)).ok()
            })
            .expect("bind UDP port 53 on a 127.53.x.y address");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("socket timeout");
        let ip = match socket.local_addr().expect("local addr").ip() {
            std::net::IpAddr::V4(ip) => ip,
            other => panic!("unexpected address {other}"),
        };
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((name, reply)) = dns_answer(&buf[..n]) {
                    a.lock().expect("dns log").push(name);
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        ClusterDns {
            ip,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    /// A resolv.conf as kubelet writes one for a pod in namespace `e2e`.
    fn resolv_conf(&self) -> String {
        format!(
            "nameserver {}\nsearch {CLUSTER_DOMAIN} svc.cluster.local cluster.local\noptions ndots:5\n",
            self.ip
        )
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("dns log").clone()
    }
}

impl Drop for ClusterDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The queried name and the reply to one DNS query (RFC 1035), or None for a packet that is
/// not a plain one-question query.
fn dns_answer(q: &[u8]) -> Option<(String, Vec<u8>)> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    let name = labels.join(".");
    let known = name == format!("vault.{CLUSTER_DOMAIN}");
    let answer_a = known && qtype == 1;
    let mut r = q.get(..question_end)?.to_vec();
    r[2] = 0x84 | (q[2] & 0x01); // response, authoritative, recursion desired copied
    r[3] = 0x80 | if known { 0 } else { 3 }; // recursion available; NOERROR or NXDOMAIN
    r[6..12].copy_from_slice(&[0, u8::from(answer_a), 0, 0, 0, 0]);
    if answer_a {
        // Name pointer to the question, type A, class IN, TTL 5 s, 4 bytes: 127.0.0.1.
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1]);
    }
    Some((name, r))
}

/// The usernames of the sidecar's "wrote new credential" lines, in order (both runs).
fn issued_users(logs: &str) -> Vec<String> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "wrote new credential")
        .filter_map(|v| v["username"].as_str().map(str::to_string))
        .collect()
}

async fn http_status(url: &str) -> Option<u16> {
    let client = reqwest::Client::builder().timeout(SEC(3)).build().ok()?;
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// A directory on the host for a bind mount, owned by `uid` (the container's user).
fn owned_dir(path: PathBuf, uid: u32, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(&path).expect("create dir");
    std::os::unix::fs::chown(&path, Some(uid), Some(uid)).expect("chown dir");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod dir");
    path
}

fn owned_file(path: &Path, contents: &str, uid: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).expect("write file");
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400)).expect("chmod file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_image_and_app_share_a_volume_in_a_pod() {
    if let Some(why) = missing_prerequisite() {
        assert!(!ci(), "container_e2e cannot run under CI=true: {why}");
        eprintln!("container_e2e: SKIPPED: {why}");
        return;
    }
    let started = Instant::now();
    let image = image();
    let app_bin = testkit::bins::workspace_example("vault-rotator", "app");
    let stack = Stack::start().await;
    // A 30 s lease replaced every 6 s: a credential outlives the sidecar's restart below.
    stack.dynamic_role("app", "30s", "60s").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let vault_port = stack
        .addr()
        .rsplit(':')
        .next()
        .expect("devvault address has a port")
        .to_string();

    let work = tempfile::tempdir().expect("tempdir");
    let volume = SharedVolume::mount(work.path().join("volume"));
    let auth = owned_dir(work.path().join("auth"), SIDECAR_UID, 0o500);
    owned_file(&auth.join("role-id"), &role_id, SIDECAR_UID);
    owned_file(&auth.join("secret-id"), &secret_id, SIDECAR_UID);
    let app_out = owned_dir(work.path().join("app-out"), APP_UID, 0o700);
    let probe_port = free_port();
    let dns = ClusterDns::start();
    let resolv = work.path().join("resolv.conf");
    std::fs::write(&resolv, dns.resolv_conf()).expect("write resolv.conf");
    let pod = Pod::create();

    let vol_mount = format!("{}:/run/secrets/db", volume.path.display());
    let auth_mount = format!("{}:/etc/vault-rotator:ro", auth.display());
    let sidecar_user = format!("{SIDECAR_UID}:{SIDECAR_UID}");
    let fs_group = FS_GROUP.to_string();
    let resolv_mount = format!("{}:/etc/resolv.conf:ro", resolv.display());
    // A short service name, as in a cluster: resolved through resolv.conf's search domains.
    let vault_addr = format!("http://vault:{vault_port}");
    let listen = format!("127.0.0.1:{probe_port}");
    let sidecar = pod.container("sidecar");
    #[rustfmt::skip]
    let sidecar_args = [
        "run", "--detach", "--pod", &pod.name, "--name", &sidecar, "--network", "host",
        "--user", &sidecar_user, "--group-add", &fs_group,
        "--read-only", "--cap-drop", "all", "--security-opt", "no-new-privileges",
        "--volume", &vol_mount, "--volume", &auth_mount, "--volume", &resolv_mount,
        &image,
        "--vault-addr", &vault_addr,
        "--auth", "approle",
        "--role-id-file", "/etc/vault-rotator/role-id",
        "--secret-id-file", "/etc/vault-rotator/secret-id",
        "--secret", "database/creds/app",
        "--output", "/run/secrets/db/db.json", "--format", "json", "--file-mode", "0440",
        "--rotate-every", "6s", "--revoke-grace", "2s",
        "--listen", &listen, "--admin-listen", "off",
        "--splay", "0s", "--log-format", "json",
    ];
    podman_ok(&sidecar_args);

    let app_mount = format!("{}:/usr/local/bin/app:ro", app_bin.display());
    let out_mount = format!("{}:/out", app_out.display());
    let vol_ro = format!("{}:/run/secrets/db:ro", volume.path.display());
    let app_user = format!("{APP_UID}:{APP_UID}");
    let pg_port = stack.pg.port().to_string();
    let app = pod.container("app");
    #[rustfmt::skip]
    podman_ok(&[
        "run", "--detach", "--pod", &pod.name, "--name", &app, "--network", "host",
        "--user", &app_user, "--group-add", &fs_group,
        "--read-only", "--cap-drop", "all", "--security-opt", "no-new-privileges",
        "--volume", &vol_ro, "--volume", &app_mount, "--volume", &out_mount,
        STANDIN_DEBIAN,
        "/usr/local/bin/app", "--credentials", "/run/secrets/db/db.json",
        "--pg-host", "127.0.0.1", "--pg-port", &pg_port,
        "--interval", "50ms", "--wait", "60s", "--report", "/out/report.json",
    ]);

    // The probes answer on the container's port, and the file appears.
    let ready = format!("http://{listen}/ready");
    let health = format!("http://{listen}/health");
    eventually(SEC(60), "the sidecar's /ready", || {
        let ready = ready.clone();
        async move { (http_status(&ready).await == Some(200)).then_some(()) }
    })
    .await;
    assert_eq!(http_status(&health).await, Some(200), "/health");
    let cred_path = volume.path.join("db.json");
    let meta = std::fs::metadata(&cred_path).expect("the credential file appears");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (SIDECAR_UID, FS_GROUP, 0o440),
        "owner, group (inherited from the setgid volume) and --file-mode"
    );
    assert_locked_down(pod.pid("sidecar"), SIDECAR_UID, "sidecar");
    // The static binary found Vault through DNS, after the search domain made the short name
    // a fully qualified one.
    let asked = dns.asked();
    assert!(
        asked.contains(&format!("vault.{CLUSTER_DOMAIN}")),
        "DNS queries seen: {asked:?}"
    );
    assert_locked_down(pod.pid("app"), APP_UID, "app");

    // The app's user reads it through the group; a user outside the group cannot.
    let stranger = podman()
        .args(["exec", "--user", "10002:10002", &app])
        .args(["cat", "/run/secrets/db/db.json"])
        .output()
        .expect("podman exec");
    assert!(
        !stranger.status.success() && text(&stranger).contains("Permission denied"),
        "a user outside fsGroup must not read the file: {}",
        text(&stranger)
    );

    // Rotations: the app follows each new user.
    let users = eventually(SEC(60), "two rotations", || {
        let users = issued_users(&pod.logs("sidecar"));
        async move { (users.len() >= USERS_BEFORE_STOP).then_some(users) }
    })
    .await;
    let newest = users.last().expect("users").clone();
    eventually(SEC(15), "the app to use the newest user", || {
        let seen = pod.logs("app").contains(&format!("connected as {newest}"));
        async move { seen.then_some(()) }
    })
    .await;

    // SIGTERM to PID 1: exit 0, before podman's SIGKILL (which would be exit code 137).
    let stop_start = Instant::now();
    podman_ok(&["stop", "--time", &STOP_GRACE_SECS.to_string(), &sidecar]);
    let stop_took = stop_start.elapsed();
    let code = pod.inspect("sidecar", "{{.State.ExitCode}}");
    assert_eq!(
        code,
        "0",
        "sidecar exit code after podman stop ({stop_took:?}); logs:\n{}",
        pod.logs("sidecar")
    );
    eprintln!("container_e2e: sidecar stopped with exit 0 in {stop_took:?}");
    for line in pod.logs("sidecar").lines().filter(|l| l.contains("stop")) {
        eprintln!("container_e2e: sidecar: {line}");
    }

    // The restarted sidecar (same container, same volume, as kubelet restarts one) is ready
    // again, and the app holds a working credential.
    podman_ok(&["start", &sidecar]);
    eventually(SEC(60), "/ready after the restart", || {
        let ready = ready.clone();
        async move { (http_status(&ready).await == Some(200)).then_some(()) }
    })
    .await;
    let current = eventually(SEC(30), "a credential after the restart", || {
        let logs = pod.logs("app");
        let cred = read_cred(&cred_path);
        async move {
            let user = s(&cred?, "username");
            logs.contains(&format!("connected as {user}"))
                .then_some(user)
        }
    })
    .await;
    let cred = read_cred(&cred_path).expect("credential file");
    assert_eq!(s(&cred, "username"), current);
    stack
        .pg_login(&current, &s(&cred, "password"))
        .await
        .unwrap_or_else(|e| panic!("the file's credential must log in: {e}"));
    // A few more seconds of queries on it.
    tokio::time::sleep(SEC(2)).await;

    // The app stops on SIGTERM too, and writes its report.
    podman_ok(&["stop", "--time", &STOP_GRACE_SECS.to_string(), &app]);
    let app_logs = pod.logs("app");
    let app_code = pod.inspect("app", "{{.State.ExitCode}}");
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(app_out.join("report.json"))
            .unwrap_or_else(|e| panic!("no app report ({e}); app logs:\n{app_logs}")),
    )
    .expect("report is JSON");
    let context = format!("report: {report}\napp logs:\n{app_logs}");
    assert_eq!(app_code, "0", "app exit code; {context}");
    assert_eq!(report["queries_failed"], 0, "{context}");
    assert!(
        report["queries_ok"].as_u64().unwrap_or(0) > 100,
        "{context}"
    );
    let seen: Vec<String> =
        serde_json::from_value(report["users_seen"].clone()).expect("users_seen");
    for u in users.iter().chain(std::iter::once(&current)) {
        assert!(seen.contains(u), "the app never queried as {u}; {context}");
    }

    let sidecar_logs = pod.logs("sidecar");
    assert!(
        !sidecar_logs.contains(&secret_id) && !app_logs.contains(&secret_id),
        "the secret_id reached a log"
    );
    eprintln!(
        "container_e2e: {} credentials issued, app made {} queries as {} users, none failed; {:?} in all",
        issued_users(&sidecar_logs).len(),
        report["queries_ok"],
        seen.len(),
        started.elapsed()
    );
}
