//! The binary's command line, black-box: where clap's output goes and which exit code it
//! gives (help and version on stdout with 0, usage errors on stderr with 2), and that a
//! `VAULT_ROTATOR_<FLAG>` variable reaches the flag it names.

use std::process::{Command, Output};

fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vault-rotator"))
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_goes_to_stdout_and_exits_0() {
    for flag in ["--help", "-h"] {
        let out = run(&[flag], &[]);
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("Usage: vault-rotator"), "{flag}: {stdout}");
        assert!(stdout.contains("--vault-addr"), "{flag}: {stdout}");
        assert!(out.stderr.is_empty(), "{flag}: {}", text(&out.stderr));
    }
}

#[test]
fn version_goes_to_stdout_and_exits_0() {
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("vault-rotator {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn a_bad_flag_goes_to_stderr_and_exits_2() {
    let out = run(&["--bogus-flag"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--bogus-flag"), "{stderr}");
    assert!(stderr.contains("Usage:"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    // A flag that needs a value, without one.
    let out = run(&["--secret"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_variable_sets_its_flag_and_the_flag_wins() {
    let args = [
        "--vault-addr",
        "http://127.0.0.1:1",
        "--auth",
        "approle",
        "--role-id-file",
        "/nonexistent",
        "--secret",
        "database/creds/app",
        "--output",
        "/nonexistent/db.json",
    ];
    // The variable's bad value is reported under the flag it stands for.
    let out = run(&args, &[("VAULT_ROTATOR_ROTATE_EVERY", "sometimes")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--rotate-every"),
        "{}",
        text(&out.stderr)
    );
    // With the flag given as well, the flag's good value is used and the variable ignored:
    // the run gets past the flags and fails on the missing output directory instead.
    let mut with_flag = args.to_vec();
    with_flag.extend(["--rotate-every", "1h", "--once", "--once-timeout", "1s"]);
    let out = run(&with_flag, &[("VAULT_ROTATOR_ROTATE_EVERY", "sometimes")]);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("--rotate-every"), "{stderr}");
    assert!(stderr.contains("output directory /nonexistent"), "{stderr}");
}
