use super::super::tests::{names_in, test_dir};
use super::*;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

fn generations_in(dir: &Path) -> Vec<String> {
    names_in(dir)
        .into_iter()
        .filter(|n| is_generation_name(n))
        .collect()
}

fn set(pairs: &[(&str, &str)]) -> FileSet {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn pair(n: u64) -> FileSet {
    let user = format!("user-{n}");
    set(&[("username", &user), ("password", &format!("pw-{user}"))])
}

#[test]
fn first_write_builds_the_layout() {
    let dir = test_dir();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o440, None).unwrap();

    assert_eq!(sink.write(&pair(1)).unwrap(), WriteOutcome::Written);

    let generation = sink.generation().expect("..data names a generation");
    assert_eq!(
        names_in(dir.path()),
        vec![
            generation.clone(),
            "..data".into(),
            "password".into(),
            "username".into()
        ]
    );
    for name in ["username", "password"] {
        let link = dir.path().join(name);
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("..data").join(name)
        );
        assert_eq!(fs::metadata(&link).unwrap().mode() & 0o7777, 0o440);
    }
    assert_eq!(fs::read(dir.path().join("username")).unwrap(), b"user-1");
    assert_eq!(fs::read(dir.path().join("password")).unwrap(), b"pw-user-1");
    let gen_meta = fs::metadata(dir.path().join(&generation)).unwrap();
    assert_eq!(gen_meta.mode() & 0o7777, GENERATION_DIR_MODE);
    assert_eq!(
        names_in(&dir.path().join(&generation)),
        vec!["password", "username"],
        "no temp files are left in the generation"
    );
}

#[test]
fn generation_names_sort_by_time_and_look_like_kubelets() {
    let t = UNIX_EPOCH + std::time::Duration::new(1_796_032_800, 123_456_789);
    assert_eq!(generation_name(t, 0), "..2026_11_30_10_00_00.123456789");
    assert_eq!(generation_name(t, 2), "..2026_11_30_10_00_00.123456789-2");
    let later = generation_name(t + std::time::Duration::from_nanos(1), 0);
    assert!(later > generation_name(t, 0));
    assert!(is_generation_name(&later));
    for not_ours in [
        "..data",
        "..data_tmp",
        "..link_tmp",
        "username",
        ".x",
        "..",
        "..a1",
    ] {
        assert!(!is_generation_name(not_ours), "{not_ours}");
    }
}

#[test]
fn unchanged_set_does_not_swap() {
    let dir = test_dir();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o400, None).unwrap();
    sink.write(&pair(1)).unwrap();
    let generation = sink.generation().unwrap();
    let inode = fs::metadata(dir.path().join("password")).unwrap().ino();

    assert_eq!(sink.write(&pair(1)).unwrap(), WriteOutcome::Unchanged);

    assert_eq!(sink.generation().unwrap(), generation);
    assert_eq!(
        fs::metadata(dir.path().join("password")).unwrap().ino(),
        inode
    );
    assert_eq!(generations_in(dir.path()), vec![generation]);
}

#[test]
fn a_changed_byte_mode_or_name_swaps() {
    let dir = test_dir();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o400, None).unwrap();
    sink.write(&pair(1)).unwrap();
    let first = sink.generation().unwrap();

    // A mode changed behind the agent's back counts as a change, as in FileSink.
    fs::set_permissions(
        dir.path().join("..data/password"),
        Permissions::from_mode(0o644),
    )
    .unwrap();
    assert_eq!(sink.write(&pair(1)).unwrap(), WriteOutcome::Written);
    let second = sink.generation().unwrap();
    assert_ne!(second, first);
    assert_eq!(
        fs::metadata(dir.path().join("password")).unwrap().mode() & 0o777,
        0o400
    );

    // A stray file in the generation (the set must be exactly what was asked for).
    fs::write(dir.path().join(&second).join("stray"), b"x").unwrap();
    assert_eq!(sink.write(&pair(1)).unwrap(), WriteOutcome::Written);
    assert_ne!(sink.generation().unwrap(), second);

    assert_eq!(sink.write(&pair(2)).unwrap(), WriteOutcome::Written);
    assert_eq!(fs::read(dir.path().join("username")).unwrap(), b"user-2");
    assert_eq!(generations_in(dir.path()).len(), 4, "all are young");
    backdate(dir.path(), &sink.generation().unwrap());
    assert_eq!(sink.remove_swapped_out(), 3);
    assert_eq!(generations_in(dir.path()), vec![sink.generation().unwrap()]);
}

/// Ages generation `upto` and every older one past [`DirSink::LINGER`] without sleeping (older
/// ones too, as real time would).
fn backdate(dir: &Path, upto: &str) {
    let old = SystemTime::now() - DirSink::LINGER * 10;
    for name in generations_in(dir).iter().filter(|n| n.as_str() <= upto) {
        fs::File::open(dir.join(name))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
}

#[test]
fn swapped_out_generations_go_once_their_successor_is_older_than_linger() {
    let dir = test_dir();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o400, None).unwrap();
    let mut made = Vec::new();
    for n in 1..=4 {
        sink.write(&pair(n)).unwrap();
        made.push(sink.generation().unwrap());
    }
    assert_eq!(generations_in(dir.path()), made, "young: all stay");
    assert_eq!(sink.remove_swapped_out(), 0);

    // The second is old: the first (replaced by it) may go, the second (replaced by the
    // young third) stays.
    backdate(dir.path(), &made[1]);
    assert_eq!(sink.write(&pair(4)).unwrap(), WriteOutcome::Unchanged);
    assert_eq!(generations_in(dir.path()), made[1..]);

    // Once the current one is old, everything else goes, without a swap.
    backdate(dir.path(), &made[3]);
    assert_eq!(sink.remove_swapped_out(), 2);
    assert_eq!(generations_in(dir.path()), made[3..]);
    assert_eq!(sink.generation().unwrap(), made[3]);
    assert_eq!(fs::read(dir.path().join("username")).unwrap(), b"user-4");

    // A swap after a quiet spell keeps only the generation it just swapped out.
    sink.write(&pair(5)).unwrap();
    assert_eq!(
        generations_in(dir.path()),
        vec![made[3].clone(), sink.generation().unwrap()]
    );
}

#[test]
fn names_that_leave_the_set_lose_their_link_and_new_ones_gain_one() {
    let dir = test_dir();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o400, None).unwrap();
    sink.write(&set(&[("a", "1"), ("b", "2")])).unwrap();
    fs::write(dir.path().join("unrelated"), b"keep").unwrap();
    symlink("elsewhere", dir.path().join("other-link")).unwrap();

    sink.write(&set(&[("b", "2"), ("c", "3")])).unwrap();

    let generation = sink.generation().unwrap();
    backdate(dir.path(), &generation);
    sink.remove_swapped_out();
    assert_eq!(
        names_in(dir.path()),
        vec![
            generation,
            "..data".into(),
            "b".into(),
            "c".into(),
            "other-link".into(),
            "unrelated".into()
        ]
    );
    assert_eq!(fs::read(dir.path().join("c")).unwrap(), b"3");
}

#[test]
fn a_missing_link_is_repaired_without_a_swap() {
    let dir = test_dir();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o400, None).unwrap();
    sink.write(&pair(1)).unwrap();
    let generation = sink.generation().unwrap();
    fs::remove_file(dir.path().join("username")).unwrap();

    assert_eq!(sink.write(&pair(1)).unwrap(), WriteOutcome::Written);

    assert_eq!(sink.generation().unwrap(), generation);
    assert_eq!(fs::read(dir.path().join("username")).unwrap(), b"user-1");
    assert_eq!(sink.write(&pair(1)).unwrap(), WriteOutcome::Unchanged);
}

#[test]
fn a_regular_file_where_a_link_belongs_is_replaced() {
    let dir = test_dir();
    // What a single-file output, or an older tool, left in the directory.
    fs::write(dir.path().join("password"), b"old").unwrap();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o400, None).unwrap();

    sink.write(&pair(1)).unwrap();

    let link = dir.path().join("password");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&link).unwrap(), b"pw-user-1");
    assert!(!dir.path().join(LINK_TMP).exists());
}

#[test]
fn a_link_that_cannot_be_made_after_the_swap_does_not_fail_the_write() {
    let dir = test_dir();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o400, None).unwrap();
    // A regular file to replace, and `..link_tmp` taken by a directory the writer never
    // removes: replacing `password` fails once the new generation is live.
    fs::write(dir.path().join("password"), b"stale").unwrap();
    fs::create_dir(dir.path().join(LINK_TMP)).unwrap();
    fs::write(dir.path().join(LINK_TMP).join("x"), b"").unwrap();

    // Reporting a failure here would make the agent revoke a credential readers may see.
    assert_eq!(sink.write(&pair(1)).unwrap(), WriteOutcome::Written);
    assert!(sink.generation().is_some());
    assert_eq!(fs::read(dir.path().join("username")).unwrap(), b"user-1");
    assert_eq!(fs::read(dir.path().join("password")).unwrap(), b"stale");

    // Once the obstacle is gone, the next write links it without a swap.
    let generation = sink.generation().unwrap();
    fs::remove_dir_all(dir.path().join(LINK_TMP)).unwrap();
    assert_eq!(sink.write(&pair(1)).unwrap(), WriteOutcome::Written);
    assert_eq!(sink.generation().unwrap(), generation);
    assert_eq!(fs::read(dir.path().join("password")).unwrap(), b"pw-user-1");
    assert_eq!(sink.write(&pair(1)).unwrap(), WriteOutcome::Unchanged);
}

#[test]
fn a_directory_where_a_link_belongs_fails_before_anything_changes() {
    let dir = test_dir();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o400, None).unwrap();
    sink.write(&pair(1)).unwrap();
    let generation = sink.generation().unwrap();
    fs::create_dir(dir.path().join("extra")).unwrap();
    let mut files = pair(2);
    files.insert("extra".into(), b"x".to_vec());

    let err = sink.write(&files).unwrap_err();

    assert!(matches!(err, DirSetError::Occupied { .. }), "{err:?}");
    assert!(err.to_string().contains("extra is a directory"), "{err}");
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(sink.generation().unwrap(), generation);
    assert_eq!(fs::read(dir.path().join("username")).unwrap(), b"user-1");
    assert_eq!(generations_in(dir.path()), vec![generation]);
}

#[test]
fn invalid_names_are_rejected_naming_the_field() {
    let dir = test_dir();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o400, None).unwrap();
    for bad in [
        "", ".", "..", "..data", "..x", "a/b", "/abs", "../up", "nul\0",
    ] {
        let mut files = pair(1);
        files.insert(bad.to_string(), b"x".to_vec());
        let err = sink.write(&files).unwrap_err();
        assert!(
            matches!(err, DirSetError::InvalidName { .. }),
            "{bad:?}: {err:?}"
        );
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }
    assert!(names_in(dir.path()).is_empty(), "nothing was written");
    let err = check_file_names("secret[0].files", [&"..data".to_string()]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("secret[0].files: file name \"..data\""),
        "{err}"
    );
    for good in ["username", ".hidden", "jdbc.properties", "a..b", "ca.crt"] {
        assert_eq!(file_name_problem(good), None, "{good}");
    }
}

#[test]
fn an_empty_set_is_an_error() {
    let dir = test_dir();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o400, None).unwrap();
    sink.write(&pair(1)).unwrap();
    let err = sink.write(&FileSet::new()).unwrap_err();
    assert!(matches!(err, DirSetError::EmptySet { .. }), "{err:?}");
    assert_eq!(fs::read(dir.path().join("username")).unwrap(), b"user-1");
}

#[test]
fn missing_directory_and_bad_mode_fail_at_construction() {
    let dir = test_dir();
    let missing = dir.path().join("nope");
    let err = DirSink::new(missing.clone(), 0o400, None).unwrap_err();
    assert!(
        matches!(err, DirSetError::Sink(SinkError::DirMissing { .. })),
        "{err:?}"
    );
    assert!(!missing.exists(), "the agent never creates the directory");
    let err = DirSink::new(dir.path().to_path_buf(), 0o1755, None).unwrap_err();
    assert!(
        matches!(err, DirSetError::Sink(SinkError::InvalidMode { .. })),
        "{err:?}"
    );
}

#[test]
fn a_failed_swap_leaves_the_previous_set_and_no_new_generation() {
    let dir = test_dir();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o400, None).unwrap();
    // `..data` as a non-empty directory makes rename(2) fail even for root, after the new
    // generation was fully written: the last step that can fail before readers switch.
    fs::create_dir(dir.path().join(DATA_LINK)).unwrap();
    fs::write(dir.path().join(DATA_LINK).join("keep"), b"old").unwrap();

    let err = sink.write(&pair(1)).unwrap_err();

    assert!(
        matches!(
            err,
            DirSetError::Write {
                step: DirStep::Swap,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(names_in(dir.path()), vec!["..data"]);
    assert_eq!(fs::read(dir.path().join("..data/keep")).unwrap(), b"old");
}

#[test]
fn owner_is_set_on_every_file_when_privileged() {
    let dir = test_dir();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o440, Some((4242, 4343))).unwrap();
    match sink.write(&pair(1)) {
        Ok(outcome) => assert_eq!(outcome, WriteOutcome::Written),
        Err(DirSetError::Sink(SinkError::Write { .. })) => {
            // Not privileged to chown: the new generation must be gone, nothing linked.
            assert!(names_in(dir.path()).is_empty());
            return;
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
    for name in ["username", "password"] {
        let meta = fs::metadata(dir.path().join(name)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343), "{name}");
    }
    assert_eq!(sink.write(&pair(1)).unwrap(), WriteOutcome::Unchanged);
}

#[test]
fn cleanup_removes_what_a_crashed_swap_left() {
    let dir = test_dir();
    let base = dir.path();
    let sink = DirSink::new(base.to_path_buf(), 0o400, None).unwrap();
    sink.write(&pair(1)).unwrap();
    let current = sink.generation().unwrap();
    // A crash after the next generation was written, and after ..data_tmp was made.
    let orphan = "..2026_11_30_09_00_00.000000001";
    fs::create_dir(base.join(orphan)).unwrap();
    fs::write(base.join(orphan).join("username"), b"user-2").unwrap();
    symlink(orphan, base.join(DATA_TMP_LINK)).unwrap();
    symlink("..data/x", base.join(LINK_TMP)).unwrap();
    // Not ours: kept.
    fs::write(base.join(".db.json.tmp-abc"), b"x").unwrap();
    fs::create_dir(base.join("..notours")).unwrap();
    let fresh = DirSink::new(base.to_path_buf(), 0o400, None).unwrap();

    assert_eq!(fresh.cleanup_stale(), 3);

    assert_eq!(
        names_in(base),
        vec![
            current.clone(),
            "..data".into(),
            "..notours".into(),
            ".db.json.tmp-abc".into(),
            "password".into(),
            "username".into()
        ]
    );
    assert_eq!(fresh.generation().unwrap(), current);
    assert_eq!(fresh.cleanup_stale(), 0);
}

#[test]
fn cleanup_without_data_link_removes_every_generation() {
    let dir = test_dir();
    fs::create_dir(dir.path().join("..2026_11_30_09_00_00.000000001")).unwrap();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o400, None).unwrap();
    assert_eq!(sink.cleanup_stale(), 1);
    assert!(names_in(dir.path()).is_empty());
}

/// The generation number a reader's pair came from, or a panic when the pair does not
/// belong together.
fn checked_pair(user: &[u8], password: &[u8]) -> u64 {
    let user = std::str::from_utf8(user).expect("username is complete text");
    let password = std::str::from_utf8(password).expect("password is complete text");
    let n = user
        .strip_prefix("user-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("torn username {user:?}"));
    assert_eq!(
        password,
        format!("pw-{user}"),
        "a pair from two generations"
    );
    n
}

fn generation_of(text: &[u8]) -> u64 {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.trim_start_matches("pw-").strip_prefix("user-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("torn file {:?}", String::from_utf8_lossy(text)))
}

fn read_or_fail(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("{} missing during a swap: {e}", path.display()))
}

/// The documented reader: note `..data`, read the files through their links, and keep the
/// pair only when `..data` did not move meanwhile. Every kept pair must belong together.
fn careful_reader(dir: PathBuf, done: Arc<AtomicBool>) -> (u64, u64) {
    let (mut checked, mut retried, mut last) = (0u64, 0u64, 0u64);
    while !done.load(Ordering::Acquire) {
        let before = fs::read_link(dir.join(DATA_LINK)).expect("..data always exists");
        let user = read_or_fail(&dir.join("username"));
        let password = read_or_fail(&dir.join("password"));
        let after = fs::read_link(dir.join(DATA_LINK)).expect("..data always exists");
        if before != after {
            retried += 1;
            continue;
        }
        let n = checked_pair(&user, &password);
        assert!(n >= last, "generation went backwards: {n} after {last}");
        last = n;
        checked += 1;
    }
    (checked, retried)
}

/// A reader that ignores `..data`: it may pair an old username with a newer password (the
/// documented caveat), but never a newer username with an older password, and never finds
/// a file missing.
fn naive_reader(dir: PathBuf, done: Arc<AtomicBool>) -> (u64, u64) {
    let (mut reads, mut mixed) = (0u64, 0u64);
    while !done.load(Ordering::Acquire) {
        let user = generation_of(&read_or_fail(&dir.join("username")));
        let password = generation_of(&read_or_fail(&dir.join("password")));
        assert!(
            password >= user,
            "username of generation {user} with the older password of {password}"
        );
        mixed += u64::from(password != user);
        reads += 1;
    }
    (reads, mixed)
}

#[test]
fn concurrent_readers_never_see_a_mixed_or_missing_set() {
    const SWAPS: u64 = 3000;
    let dir = test_dir();
    let sink = DirSink::new(dir.path().to_path_buf(), 0o444, None).unwrap();
    sink.write(&pair(0)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let spawn = |reader: fn(PathBuf, Arc<AtomicBool>) -> (u64, u64)| {
        let (dir, done) = (dir.path().to_path_buf(), done.clone());
        std::thread::spawn(move || reader(dir, done))
    };
    let careful = spawn(careful_reader);
    let naive = spawn(naive_reader);

    for n in 1..=SWAPS {
        let mut files = pair(n);
        // Every other generation also adds a file, so links come and go under the readers.
        if n % 2 == 0 {
            files.insert("note".into(), b"even".to_vec());
        }
        assert_eq!(sink.write(&files).unwrap(), WriteOutcome::Written);
    }
    done.store(true, Ordering::Release);

    let (checked, retried) = careful.join().expect("the careful reader saw a bad set");
    eprintln!("careful reader: {checked} pairs checked, {retried} retried after a swap");
    let (reads, mixed) = naive.join().expect("the naive reader saw a bad set");
    eprintln!("naive reader: {reads} reads, {mixed} mixed an old username with a newer password");
    assert!(checked > 0, "the careful reader checked nothing");
    let current = sink.generation().unwrap();
    backdate(dir.path(), &current);
    sink.remove_swapped_out();
    assert_eq!(generations_in(dir.path()), vec![current]);
    assert_eq!(
        fs::read(dir.path().join("username")).unwrap(),
        format!("user-{SWAPS}").as_bytes()
    );
    assert_eq!(fs::read(dir.path().join("note")).unwrap(), b"even");
}
