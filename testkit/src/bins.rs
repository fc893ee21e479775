//! Locating the workspace's binaries from a test process.

use std::path::PathBuf;
use std::process::Command;

/// The `target/<profile>` directory of the running test binary (`target/debug/deps/x` → `target/debug`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a parent dir");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Path of a workspace binary, building its package first when it is missing (for example when
/// only one package's tests were asked for). `cargo test --workspace` builds it anyway.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let path = target_dir().join(bin);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", bin])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p {package} failed");
    }
    assert!(path.exists(), "{} not found after build", path.display());
    path
}
