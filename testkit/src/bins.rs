//! Locating the workspace's binaries from a test process or an example.

use std::path::PathBuf;
use std::process::Command;

/// The `target/<profile>` directory of the running executable: a test binary lives in
/// `target/<profile>/deps`, an example in `target/<profile>/examples`, both one level below it.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("executable has a parent dir");
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.parent()
            .expect("deps/examples has a parent")
            .to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The workspace root, where `cargo build` must run to build into the same `target/`.
pub fn workspace_root() -> PathBuf {
    // testkit sits one level below the workspace root.
    let testkit = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    testkit.parent().map(PathBuf::from).unwrap_or(testkit)
}

/// Path of a workspace binary, building its package first when it is missing (for example when
/// only one package's tests were asked for). `cargo test --workspace` builds it anyway.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let path = target_dir().join(bin);
    if !path.exists() {
        cargo_build(&["-p", package, "--bin", bin]);
    }
    assert!(path.exists(), "{} not found after build", path.display());
    path
}

/// Path of a workspace example binary (`target/<profile>/examples/<name>`). Unlike
/// [`workspace_bin`] it always runs `cargo build --example`: `cargo test --test x` does not build
/// examples, and a stale example would test old code. When it is fresh that costs well under a
/// second.
pub fn workspace_example(package: &str, example: &str) -> PathBuf {
    cargo_build(&["-p", package, "--example", example]);
    let path = target_dir().join("examples").join(example);
    assert!(path.exists(), "{} not found after build", path.display());
    path
}

/// `cargo build <args>` in the workspace, with the profile of the running executable so the
/// result lands next to it. Panics when the build fails (for tests).
pub fn cargo_build(args: &[&str]) {
    if let Err(e) = try_cargo_build(args) {
        panic!("{e}");
    }
}

/// Like [`cargo_build`], with the failure as an error (for examples, which report it plainly).
/// Cargo's own output goes to stderr as usual.
pub fn try_cargo_build(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build").args(args).current_dir(workspace_root());
    // `cargo test` and `cargo run` give the running program the variables Cargo sets for a
    // crate (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...). Passed on, some build scripts (ring's)
    // see them as changed and rebuild, and the outer build then rebuilds them back: drop them.
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        let set_for_crates = k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_EXE_")
            || matches!(
                k,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_for_crates {
            cmd.env_remove(k);
        }
    }
    if target_dir().file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo build {} failed; see the errors above",
            args.join(" ")
        ))
    }
}
