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

#[path = "container_e2e/cluster_dns.rs"]
mod cluster_dns;
mod common;
#[path = "container_e2e/pod.rs"]
mod pod;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster_dns::{ClusterDns, CLUSTER_DOMAIN};
use common::*;
use pod::{assert_locked_down, podman, podman_ok, text, Pod, SharedVolume};
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
