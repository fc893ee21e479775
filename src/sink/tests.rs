use super::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// tmpfs, like the shared in-memory volume in production, when the machine has one.
pub(super) fn test_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("sink-test-").to_owned();
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return dir;
        }
    }
    builder.tempdir().unwrap()
}

pub(super) fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn mode_is_exact_whatever_the_umask() {
    let dir = test_dir();
    // 0o666 would come out 0o644 under the usual umask 022 if the umask applied.
    for mode in [0o400, 0o440, 0o640, 0o644, 0o666] {
        let path = dir.path().join(format!("m{mode:o}.json"));
        let sink = FileSink::new(path.clone(), mode, None).unwrap();
        assert_eq!(sink.write(b"{}\n").unwrap(), WriteOutcome::Written);
        assert_eq!(mode_of(&path), mode, "mode {mode:o}");
        assert_eq!(fs::read(&path).unwrap(), b"{}\n");
    }
}

#[test]
fn unchanged_bytes_are_not_rewritten() {
    let dir = test_dir();
    let path = dir.path().join("db.json");
    let sink = FileSink::new(path.clone(), 0o400, None).unwrap();
    sink.write(b"one\n").unwrap();
    let before = fs::metadata(&path).unwrap();

    assert_eq!(sink.write(b"one\n").unwrap(), WriteOutcome::Unchanged);

    let after = fs::metadata(&path).unwrap();
    assert_eq!(before.ino(), after.ino());
    assert_eq!(before.mtime_nsec(), after.mtime_nsec());
    assert_eq!(before.ctime_nsec(), after.ctime_nsec());
}

#[test]
fn changed_bytes_replace_the_file_with_a_new_inode() {
    let dir = test_dir();
    let path = dir.path().join("db.json");
    let sink = FileSink::new(path.clone(), 0o400, None).unwrap();
    sink.write(b"one\n").unwrap();
    let before = fs::metadata(&path).unwrap().ino();

    assert_eq!(sink.write(b"two\n").unwrap(), WriteOutcome::Written);

    assert_ne!(fs::metadata(&path).unwrap().ino(), before);
    assert_eq!(sink.read_current().unwrap(), b"two\n");
}

#[test]
fn rewrites_when_mode_differs() {
    let dir = test_dir();
    let path = dir.path().join("db.json");
    let sink = FileSink::new(path.clone(), 0o440, None).unwrap();
    sink.write(b"same\n").unwrap();
    fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();

    assert_eq!(sink.write(b"same\n").unwrap(), WriteOutcome::Written);
    assert_eq!(mode_of(&path), 0o440);
}

#[test]
fn rewrites_a_symlink_target_as_a_regular_file() {
    let dir = test_dir();
    let elsewhere = dir.path().join("elsewhere");
    fs::write(&elsewhere, b"same\n").unwrap();
    let path = dir.path().join("db.json");
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    let sink = FileSink::new(path.clone(), 0o644, None).unwrap();
    fs::set_permissions(&elsewhere, Permissions::from_mode(0o644)).unwrap();

    assert_eq!(sink.write(b"same\n").unwrap(), WriteOutcome::Written);
    assert!(fs::symlink_metadata(&path).unwrap().is_file());
    assert_eq!(fs::read(&elsewhere).unwrap(), b"same\n");
}

#[test]
fn owner_is_set_and_checked_when_privileged() {
    let dir = test_dir();
    let path = dir.path().join("db.json");
    let sink = FileSink::new(path.clone(), 0o440, Some((4242, 4343))).unwrap();
    match sink.write(b"x\n") {
        Ok(outcome) => assert_eq!(outcome, WriteOutcome::Written),
        Err(SinkError::Write {
            step: WriteStep::ChownTemp,
            ..
        }) => {
            // Not privileged to chown: the error path is covered; the file must not exist.
            assert!(!path.exists());
            assert!(names_in(dir.path()).is_empty());
            return;
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
    let meta = fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
    assert_eq!(sink.write(b"x\n").unwrap(), WriteOutcome::Unchanged);

    std::os::unix::fs::chown(&path, Some(4242), Some(0)).unwrap();
    assert_eq!(sink.write(b"x\n").unwrap(), WriteOutcome::Written);
    assert_eq!(fs::metadata(&path).unwrap().gid(), 4343);
}

#[test]
fn missing_parent_is_an_error_naming_it() {
    let dir = test_dir();
    let missing = dir.path().join("nope");
    let err = FileSink::new(missing.join("db.json"), 0o400, None).unwrap_err();
    assert!(matches!(err, SinkError::DirMissing { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing.display().to_string()));
    assert!(
        !missing.exists(),
        "the agent must never create the directory"
    );
}

#[test]
fn parent_that_is_a_file_is_an_error() {
    let dir = test_dir();
    let file = dir.path().join("plain");
    fs::write(&file, b"").unwrap();
    let err = FileSink::new(file.join("db.json"), 0o400, None).unwrap_err();
    assert!(matches!(err, SinkError::NotADirectory { .. }), "{err:?}");
}

#[test]
fn invalid_paths_and_modes_are_rejected() {
    let dir = test_dir();
    let base = dir.path();
    let too_long = base.join("a".repeat(NAME_MAX - 10));
    fs::create_dir(base.join("sub")).unwrap();
    for path in [base.join(".."), too_long, base.join("sub")] {
        let err = FileSink::new(path.clone(), 0o400, None).unwrap_err();
        assert!(
            matches!(err, SinkError::InvalidPath { .. }),
            "{path:?}: {err:?}"
        );
    }
    let err = FileSink::new(base.join("db"), 0o4755, None).unwrap_err();
    assert!(matches!(err, SinkError::InvalidMode { .. }), "{err:?}");
}

#[test]
fn relative_path_uses_current_directory() {
    let sink = FileSink::new(PathBuf::from("relative.json"), 0o400, None).unwrap();
    assert_eq!(sink.dir, PathBuf::from("."));
}

#[test]
fn failed_rename_leaves_target_untouched_and_no_temp() {
    let dir = test_dir();
    let path = dir.path().join("db.json");
    let sink = FileSink::new(path.clone(), 0o400, None).unwrap();
    // A non-empty directory where the file should be makes rename(2) fail even for root,
    // after the temp file was fully written: the last step that can fail.
    fs::create_dir(&path).unwrap();
    fs::write(path.join("keep"), b"old").unwrap();

    let err = sink.write(b"new\n").unwrap_err();

    assert!(
        matches!(
            err,
            SinkError::Write {
                step: WriteStep::Rename,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(fs::read(path.join("keep")).unwrap(), b"old");
    assert_eq!(names_in(dir.path()), vec!["db.json"]);
}

#[test]
fn unwritable_directory_keeps_old_file() {
    let dir = test_dir();
    let path = dir.path().join("db.json");
    let sink = FileSink::new(path.clone(), 0o400, None).unwrap();
    sink.write(b"old\n").unwrap();
    fs::set_permissions(dir.path(), Permissions::from_mode(0o555)).unwrap();
    // Root (CAP_DAC_OVERRIDE) ignores directory modes, so probe instead of assuming;
    // under root the rename-failure test above covers the same guarantee.
    if File::create(dir.path().join("probe")).is_ok() {
        fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
        eprintln!("skipped: privileged process can write in a 0555 directory");
        return;
    }

    let err = sink.write(b"new\n").unwrap_err();

    fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
    assert!(
        matches!(
            err,
            SinkError::Write {
                step: WriteStep::CreateTemp,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("may not write"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"old\n");
    assert_eq!(names_in(dir.path()), vec!["db.json"]);
}

#[test]
fn errors_name_the_file_and_explain_common_causes() {
    let path = PathBuf::from("/vault/secrets/db.json");
    let cases = [
        (28, WriteStep::WriteTemp, "volume is full"),
        (30, WriteStep::CreateTemp, "mounted read-only"),
        (13, WriteStep::CreateTemp, "may not write"),
        (1, WriteStep::ChownTemp, "CAP_CHOWN"),
    ];
    for (errno, step, expected) in cases {
        let err = SinkError::Write {
            path: path.clone(),
            step,
            error: io::Error::from_raw_os_error(errno),
        };
        let shown = err.to_string();
        assert!(shown.contains("/vault/secrets/db.json"), "{shown}");
        assert!(shown.contains(expected), "{shown}");
        assert!(shown.contains(&format!("os error {errno}")), "{shown}");
        assert!(shown.contains("left untouched"), "{shown}");
    }
}

#[test]
fn no_temp_files_are_left_behind() {
    let dir = test_dir();
    let path = dir.path().join("db.json");
    let sink = FileSink::new(path, 0o400, None).unwrap();
    for i in 0..20 {
        sink.write(format!("{i}\n").as_bytes()).unwrap();
    }
    assert_eq!(names_in(dir.path()), vec!["db.json"]);
}

#[test]
fn cleanup_removes_only_our_stale_temps() {
    let dir = test_dir();
    let base = dir.path();
    let sink = FileSink::new(base.join("db.json"), 0o400, None).unwrap();
    fs::write(base.join(".db.json.tmp-abc123"), b"partial").unwrap();
    fs::write(base.join(".db.json.tmp-"), b"partial").unwrap();
    fs::write(base.join(".other.json.tmp-abc123"), b"someone else's").unwrap();
    fs::write(base.join("db.json"), b"good").unwrap();
    fs::create_dir(base.join(".db.json.tmp-dir")).unwrap();

    assert_eq!(sink.cleanup_stale_temps(), 2);

    assert_eq!(
        names_in(base),
        vec![".db.json.tmp-dir", ".other.json.tmp-abc123", "db.json"]
    );
}

#[test]
fn concurrent_reader_never_sees_torn_content() {
    let dir = test_dir();
    let path = dir.path().join("db.json");
    let sink = FileSink::new(path.clone(), 0o644, None).unwrap();
    let doc = |i: usize| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 3000));
    sink.write(doc(0).as_bytes()).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, path) = (done.clone(), path.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(Ordering::Acquire) {
                let bytes = fs::read(&path).expect("file must always exist");
                let value: serde_json::Value =
                    serde_json::from_slice(&bytes).expect("file must always be complete");
                assert!(value["n"].is_u64());
                reads += 1;
            }
            reads
        })
    };
    for i in 1..=2000 {
        assert_eq!(
            sink.write(doc(i).as_bytes()).unwrap(),
            WriteOutcome::Written
        );
    }
    done.store(true, Ordering::Release);

    let reads = reader.join().expect("reader saw an empty or torn file");
    assert!(reads > 0);
    assert_eq!(names_in(dir.path()), vec!["db.json"]);
}
