//! Black-box tests of `--output-dir` with the real binary: the files of a set switch together
//! across many rotations (devvault, KV v2), and the pair read from the directory logs in to a
//! real PostgreSQL through a real OpenBao.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use testkit::devvault::DevVault;

const SEC: fn(u64) -> Duration = Duration::from_secs;
/// Rotations in the devvault test: each is a new KV version, a SIGUSR1 and a swap.
const ROTATIONS: u64 = 300;

/// What one reader saw.
#[derive(Debug, Default)]
struct ReadReport {
    /// Reads whose `..data` did not move meanwhile, each checked to belong together.
    checked: u64,
    /// Reads that overlapped a swap and were read again (the documented protocol).
    retried: u64,
    /// Generations seen, by their number in the username.
    generations: std::collections::BTreeSet<u64>,
    problems: Vec<String>,
}

/// A thread that reads the set as the README tells app authors to: note `..data`, read
/// `username`, `password` and `version` through their links, and keep the read only if
/// `..data` did not move. Every kept read must belong together: `password` is `pw-` plus
/// the username, and the KV version is the username's number plus one. A missing or empty
/// file is a problem whenever it happens.
struct SetReader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<ReadReport>>,
}

impl SetReader {
    fn start(dir: &Path) -> SetReader {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, dir) = (stop.clone(), dir.to_path_buf());
        let thread = std::thread::spawn(move || {
            let mut report = ReadReport::default();
            // Reads after the stop, until one is whole: the last swap may have come after
            // this thread's last read, and the report must include the final generation.
            let mut after_stop = 0;
            loop {
                let stopping = flag.load(Ordering::Acquire);
                let whole = match read_set(&dir) {
                    Ok(Some(n)) => {
                        report.checked += 1;
                        report.generations.insert(n);
                        true
                    }
                    Ok(None) => {
                        report.retried += 1;
                        false
                    }
                    Err(problem) => {
                        if report.problems.len() < 20 {
                            report.problems.push(problem);
                        }
                        false
                    }
                };
                if stopping {
                    after_stop += 1;
                    if whole || after_stop >= 100 {
                        return report;
                    }
                }
            }
        });
        SetReader {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> ReadReport {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().expect("reader thread")
    }
}

impl Drop for SetReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One careful read: the generation number, `None` when a swap overlapped it, or what was
/// wrong.
fn read_set(dir: &Path) -> Result<Option<u64>, String> {
    let link = |what: &str| {
        std::fs::read_link(dir.join("..data")).map_err(|e| format!("..data {what}: {e}"))
    };
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name} missing: {e}"))
    };
    let before = link("before")?;
    let (user, password, version) = (read("username")?, read("password")?, read("version")?);
    if link("after")? != before {
        return Ok(None);
    }
    let n: u64 = user
        .strip_prefix("user-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("username {user:?} is not user-N"))?;
    if password != format!("pw-{user}") {
        return Err(format!("{user} with the password of another generation"));
    }
    if version != (n + 1).to_string() {
        return Err(format!("{user} with KV version {version:?}"));
    }
    Ok(Some(n))
}

async fn kv_put(http: &reqwest::Client, vault: &DevVault, n: u64) {
    let user = format!("user-{n}");
    let resp = http
        .post(format!("{}/v1/secret/data/app", vault.addr()))
        .header("X-Vault-Token", vault.root_token())
        .json(&json!({"data": {"username": user, "password": format!("pw-{user}")}}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "KV write: {}", resp.status());
}

fn generations_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("..2"))
        .collect();
    names.sort();
    names
}

fn data_target(dir: &Path) -> String {
    std::fs::read_link(dir.join("..data"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

async fn status_json(agent: &AgentProc) -> Value {
    let (code, body) = agent.get("/status").await.expect("/status answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_set_switches_whole_across_hundreds_of_rotations() {
    let vault = DevVault::start(&[]);
    let http = reqwest::Client::new();
    kv_put(&http, &vault, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, vault.root_token()).unwrap();
    let out = tmp.path().join("db");
    std::fs::create_dir(&out).unwrap();
    // What an earlier `--output` run, or an older tool, left there: replaced by a link.
    std::fs::write(out.join("password"), "stale").unwrap();
    let mut agent = AgentProc::spawn(
        &[
            "--vault-addr",
            vault.addr(),
            "--token-file",
            token.to_str().unwrap(),
            "--secret",
            "secret/app",
            "--output-dir",
            out.to_str().unwrap(),
            "--file-mode",
            "0440",
        ],
        &[],
        tmp.path(),
    );
    agent.wait_ready(SEC(15)).await;

    // The layout: links through ..data, the files of a KV v2 secret, exact modes.
    let first = data_target(&out);
    let mut visible: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".."))
        .collect();
    visible.sort();
    assert_eq!(visible, ["password", "username", "version"]);
    for name in &visible {
        let link = std::fs::read_link(out.join(name)).unwrap();
        assert_eq!(link, Path::new("..data").join(name));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(out.join(name)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o440, "{name}");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("password")).unwrap(),
        "pw-user-0"
    );
    assert_eq!(read_set(&out), Ok(Some(0)));

    let reader = SetReader::start(&out);
    let started = Instant::now();
    let mut generations = std::collections::BTreeSet::from([first]);
    for n in 1..=ROTATIONS {
        kv_put(&http, &vault, n).await;
        agent.usr1();
        let want = format!("user-{n}");
        let deadline = Instant::now() + SEC(10);
        while std::fs::read_to_string(out.join("username"))
            .ok()
            .as_deref()
            != Some(&want)
        {
            assert!(
                Instant::now() < deadline,
                "rotation {n} not written in 10 s; logs:\n{}",
                agent.logs()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        generations.insert(data_target(&out));
    }
    let elapsed = started.elapsed();
    let report = reader.finish();
    eprintln!(
        "{ROTATIONS} rotations in {elapsed:?}; reader: {} reads checked, {} retried after a \
         swap, {} generations seen",
        report.checked,
        report.retried,
        report.generations.len()
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        generations.len() as u64,
        ROTATIONS + 1,
        "one generation per rotation"
    );
    assert!(
        report.checked > ROTATIONS,
        "the reader checked only {}",
        report.checked
    );
    assert!(
        report.generations.len() > 1 && report.generations.last() == Some(&ROTATIONS),
        "the reader followed the rotations: {:?}",
        report.generations.len()
    );

    // Swapped-out generations go about a second after the last swap, without a new write.
    let current = data_target(&out);
    let left = eventually(SEC(10), "old generations removed", || {
        let left = generations_in(&out);
        async move { (left.len() == 1).then_some(left) }
    })
    .await;
    assert_eq!(left, std::slice::from_ref(&current));

    // An unchanged secret, re-read on demand, does not swap.
    agent.usr1();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(data_target(&out), current);

    // /status shows the directory, its files and the generation ..data names.
    let status = status_json(&agent).await;
    let set = &status["secrets"][0]["output_dir"];
    assert_eq!(set["dir"], json!(out.display().to_string()), "{status}");
    assert_eq!(set["files"], json!(["password", "username", "version"]));
    assert_eq!(set["generation"], json!(current));
    assert!(
        !status.to_string().contains("pw-user"),
        "no password in /status"
    );
    assert_eq!(agent.stop(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templated_set_from_real_openbao_logs_in_to_postgresql() {
    let stack = Stack::start_on(Vault::Bao).await;
    stack.dynamic_role("app", "1h", "24h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let tmp = tempfile::tempdir().unwrap();
    let (rf, sf) = approle_files(tmp.path(), &role_id, &secret_id);
    let out = tmp.path().join("db");
    std::fs::create_dir(&out).unwrap();
    let template = |name: &str, text: &str| -> PathBuf {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let user_t = template("username.j2", "{{ username }}");
    let pw_t = template("password.j2", "{{ password }}");
    let jdbc_t = template(
        "jdbc.j2",
        "user={{ username }}\npassword={{ password }}\nexpires={{ expires_at }}\n",
    );
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[vault]\naddr = {addr:?}\n\n[auth]\nmethod = \"approle\"\nrole_id_file = {rf:?}\n\
             secret_id_file = {sf:?}\n\n[[secret]]\nname = \"db\"\npath = \"database/creds/app\"\n\
             output_dir = {out:?}\nrevoke_grace = \"1s\"\n\n[secret.files]\n\
             \"username\" = {user_t:?}\n\"password\" = {pw_t:?}\n\"jdbc.properties\" = {jdbc_t:?}\n",
            addr = stack.addr(),
            out = out.display().to_string(),
            user_t = user_t.display().to_string(),
            pw_t = pw_t.display().to_string(),
            jdbc_t = jdbc_t.display().to_string(),
        ),
    )
    .unwrap();
    let mut agent = AgentProc::spawn(&["--config", config.to_str().unwrap()], &[], tmp.path());
    agent.wait_ready(SEC(30)).await;

    let login = |out: PathBuf| {
        let stack = &stack;
        async move {
            let user = std::fs::read_to_string(out.join("username")).unwrap();
            let password = std::fs::read_to_string(out.join("password")).unwrap();
            let jdbc = std::fs::read_to_string(out.join("jdbc.properties")).unwrap();
            assert!(
                jdbc.starts_with(&format!("user={user}\n")),
                "jdbc.properties: other user"
            );
            stack
                .pg_login(&user, &password)
                .await
                .unwrap_or_else(|e| panic!("{user} from the directory cannot log in: {e}"));
            user
        }
    };
    let first_gen = data_target(&out);
    let first = login(out.clone()).await;
    assert!(first.starts_with("v-"), "{first}");

    agent.usr1();
    let second = eventually(SEC(15), "a rotated set", || {
        let out = out.clone();
        let first = first.clone();
        async move {
            std::fs::read_to_string(out.join("username"))
                .ok()
                .filter(|u| *u != first)
        }
    })
    .await;
    assert_ne!(data_target(&out), first_gen);
    assert_eq!(login(out.clone()).await, second);
    // The replaced user is revoked after its 1 s grace, and its generation swept about a
    // second after the swap: two clocks of about the same length, so either may come first.
    eventually(SEC(15), "the old user dropped", || {
        let (stack, first) = (&stack, first.clone());
        async move { (!stack.pg_role_exists(&first).await).then_some(()) }
    })
    .await;
    let current = data_target(&out);
    eventually(SEC(10), "the old generation swept", || {
        let left = generations_in(&out);
        let current = current.clone();
        async move { (left == [current]).then_some(()) }
    })
    .await;
    let status = status_json(&agent).await;
    assert_eq!(
        status["secrets"][0]["output_dir"]["files"],
        json!(["jdbc.properties", "password", "username"]),
        "{status}"
    );
    assert_eq!(agent.stop(), 0);
}
