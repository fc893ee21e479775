//! Black-box regression tests for the lifecycle failures of issue 13 that can be seen from
//! outside: the real binary, devvault and PostgreSQL. (Failures 2, 3 and 5 are timing faults;
//! the simulator's scripted scenarios in `tests/sim` hold them, in virtual time.)

mod common;

use std::time::{Duration, Instant};

use common::*;

const SEC: fn(u64) -> Duration = Duration::from_secs;

/// Failure 1: with a start splay, `/ready` answered 200 before any credential existed, so a
/// native sidecar's startupProbe let the app start with no file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_until_the_first_credential_is_written() {
    let stack = Stack::start().await;
    stack.dynamic_role("app", "1h", "24h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.json");
    let mut args = approle_args(dir.path(), &role_id, &secret_id);
    args.extend(
        [
            "--vault-addr",
            stack.addr(),
            "--secret",
            "database/creds/app",
            "--output",
        ]
        .map(String::from),
    );
    args.push(out.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The first read is slow, so the window before the first write is long with any splay
    // the agent draws (before the fix, the splay was the window in which /ready said 200).
    stack
        .fault(
            serde_json::json!({"action": "latency", "latency_ms": 2000, "count": 1,
            "path_prefix": "/v1/database/creds/"}),
        )
        .await;
    let mut agent = AgentProc::spawn_with_splay(&args, "10s", dir.path());
    let start = Instant::now();
    let mut answers_before_file = 0;
    while !out.exists() {
        assert!(
            start.elapsed() < SEC(20),
            "no file after 20 s:\n{}",
            agent.logs()
        );
        let status = agent.status("/ready").await;
        // The file may land between the probe and the check: only count answers given
        // while it was certainly absent.
        if !out.exists() {
            assert_ne!(
                status,
                Some(200),
                "/ready answered 200 {:?} after start, before any credential was written",
                start.elapsed()
            );
            answers_before_file += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answers_before_file >= 10,
        "the slow first read should have left time to probe ({answers_before_file} answers)"
    );
    agent.wait_ready(SEC(10)).await;
    agent.stop();
}

/// Failure 4: a SIGHUP to a mistyped path revoked the credential still in the file after the
/// grace, while `/ready` stayed 200. The last good credential must stay alive until a
/// replacement is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_to_a_mistyped_path_keeps_the_credential_alive() {
    let stack = Stack::start().await;
    stack.dynamic_role("app", "1h", "24h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let (rf, sf) = approle_files(dir.path(), &role_id, &secret_id);
    let out = dir.path().join("db.json");
    let config = dir.path().join("agent.toml");
    let write = |path: &str| {
        std::fs::write(
            &config,
            format!(
                "[vault]\naddr = \"{}\"\n[auth]\nmethod = \"approle\"\nrole_id_file = \"{rf}\"\nsecret_id_file = \"{sf}\"\n\
                 [[secret]]\nname = \"db\"\npath = \"{path}\"\noutput = \"{}\"\nrevoke_grace = \"1s\"\n",
                stack.addr(),
                out.display()
            ),
        )
        .unwrap()
    };
    write("database/creds/app");
    let mut agent = AgentProc::spawn(&["--config", config.to_str().unwrap()], &[], dir.path());
    agent.wait_ready(SEC(15)).await;
    let first = read_cred(&out).unwrap();
    let (user, pass) = (s(&first, "username"), s(&first, "password"));

    write("database/creds/ap");
    agent.signal("HUP");
    // Well past the 1 s grace and several failed attempts at the mistyped path.
    tokio::time::sleep(SEC(6)).await;
    let held = read_cred(&out).unwrap();
    assert_eq!(
        s(&held, "username"),
        user,
        "the file keeps the last good credential"
    );
    stack.pg_login(&user, &pass).await.unwrap_or_else(|e| {
        panic!(
            "the credential in the file was revoked: {e}\n{}",
            agent.logs()
        )
    });
    assert_eq!(
        agent.status("/ready").await,
        Some(200),
        "the file's credential works"
    );

    // Fixed: the new settings write a credential, and only then is the old one revoked.
    write("database/creds/app");
    agent.signal("HUP");
    eventually(SEC(15), "a new credential from the fixed path", || {
        let out = out.clone();
        let user = user.clone();
        async move { read_cred(&out).filter(|c| s(c, "username") != user) }
    })
    .await;
    eventually(
        SEC(15),
        "the old credential revoked after its grace",
        || {
            let stack = &stack;
            let user = user.clone();
            async move { (!stack.pg_role_exists(&user).await).then_some(()) }
        },
    )
    .await;
    agent.stop();
}

/// Failure 7: SIGHUP compared configurations by their `Debug` text, which shows only a
/// template's file name, so a changed template was ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_changed_template() {
    let stack = Stack::start().await;
    stack.dynamic_role("app", "1h", "24h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db.conf");
    let template = dir.path().join("db.tmpl");
    std::fs::write(&template, "user={{ username }}\n").unwrap();
    let mut agent = AgentProc::approle(
        &stack,
        dir.path(),
        &role_id,
        &secret_id,
        &out,
        &[
            "--format",
            "template",
            "--template",
            template.to_str().unwrap(),
        ],
    );
    agent.wait_ready(SEC(15)).await;
    let before = std::fs::read_to_string(&out).unwrap();
    assert!(before.starts_with("user="), "{before}");
    std::fs::write(&template, "login={{ username }}\n").unwrap();
    agent.signal("HUP");
    let after = eventually(SEC(15), "the file rendered with the new template", || {
        let out = out.clone();
        async move {
            std::fs::read_to_string(&out)
                .ok()
                .filter(|t| t.starts_with("login="))
        }
    })
    .await;
    assert!(!after.contains("user="), "{after}");
    agent.stop();
}

/// Found by the simulator (seed 542): a SIGHUP during the start splay was dropped and cut the
/// splay short, so a secret it added was never started, and `/ready` answered 200 without
/// that secret's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_during_the_splay_starts_the_secrets_it_adds() {
    let stack = Stack::start().await;
    stack.dynamic_role("app", "1h", "24h").await;
    let (role_id, secret_id) = stack.approle("1h", "24h").await;
    let dir = tempfile::tempdir().unwrap();
    let (rf, sf) = approle_files(dir.path(), &role_id, &secret_id);
    let config = dir.path().join("agent.toml");
    let outs = [dir.path().join("db0.json"), dir.path().join("db1.json")];
    let write = |n: usize| {
        let mut text = format!(
            "[vault]\naddr = \"{}\"\n[auth]\nmethod = \"approle\"\nrole_id_file = \"{rf}\"\nsecret_id_file = \"{sf}\"\n",
            stack.addr()
        );
        for (i, out) in outs.iter().take(n).enumerate() {
            text.push_str(&format!(
                "[[secret]]\nname = \"db{i}\"\npath = \"database/creds/app\"\noutput = \"{}\"\n",
                out.display()
            ));
        }
        std::fs::write(&config, text).unwrap()
    };
    // The splay is drawn at random: start again until it leaves a clear window for SIGHUP.
    let mut agent = None;
    for _ in 0..10 {
        write(1);
        let mut a =
            AgentProc::spawn_with_splay(&["--config", config.to_str().unwrap()], "8s", dir.path());
        let drawn = eventually(SEC(10), "the splay in the log", || {
            let logs = a.logs();
            async move { splay_drawn(&logs) }
        })
        .await;
        if drawn >= SEC(2) {
            agent = Some(a);
            break;
        }
        a.stop();
    }
    let mut agent = agent.expect("a splay of 2 s or more in 10 draws of [0, 8 s)");
    write(2);
    agent.signal("HUP");
    assert!(
        !agent.logs().contains("wrote new credential"),
        "the SIGHUP came after the splay:\n{}",
        agent.logs()
    );
    // Not ready until both secrets, the added one too, have their files.
    let start = Instant::now();
    loop {
        // Asked before the files are looked at: a file written after the probe's answer
        // must not count against it.
        let ready = agent.status("/ready").await == Some(200);
        let both = outs.iter().all(|o| o.exists());
        if ready {
            assert!(both, "/ready is 200 without db1's file:\n{}", agent.logs());
            break;
        }
        assert!(
            start.elapsed() < SEC(25),
            "not ready 25 s after start:\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.stop();
}

/// The splay the agent drew, from its "waiting before the first request" log line.
fn splay_drawn(logs: &str) -> Option<Duration> {
    let line = logs.lines().find(|l| l.contains("(splay)"))?;
    let at = line.find("splay=")? + "splay=".len();
    let text = line[at..].trim_start_matches('"');
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == ' '))
        .unwrap_or(text.len());
    // "4s 500ms waiting ..." in text logs: keep the leading duration words only.
    let words: Vec<&str> = text[..end]
        .split(' ')
        .take_while(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    humantime::parse_duration(&words.join(" ")).ok()
}
