//! Several files that change together: kubelet's AtomicWriter layout in a directory.
//!
//! ```text
//! DIR/
//!   ..2026_11_30_10_00_00.123456789/   one generation: every file, complete and fsynced
//!   ..data -> ..2026_11_30_10_00_00.123456789
//!   username -> ..data/username
//!   password -> ..data/password
//! ```
//!
//! A write puts every file of the set into a new hidden generation directory (each through
//! [`FileSink`], so mode, owner and fsync are exactly those of the single-file output), then
//! points `..data` at it by renaming a temp symlink (`..data_tmp`) over it. That rename is the
//! only step a reader can observe, and it is atomic: the user-visible names are symlinks
//! through `..data`, so they all switch with it. Links for new names are made after the swap
//! (never dangling), links for names that left the set are removed, and then the generation
//! that was swapped out is deleted.
//!
//! Names starting with `..` belong to the writer, which is why a file of the set may not have
//! one. One writer per directory: the agent's configuration rejects two secrets sharing one.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{FileSink, SinkError, WriteOutcome};
use crate::time::rfc3339;

/// The symlink that names the current generation; readers watch it.
pub const DATA_LINK: &str = "..data";
/// Where the next `..data` is built before it is renamed over the current one.
const DATA_TMP_LINK: &str = "..data_tmp";
/// Where a user-visible link is built when something else has to be replaced in one rename.
const LINK_TMP: &str = "..link_tmp";
/// Generation directories as kubelet makes them: anyone may traverse; each file keeps its mode.
const GENERATION_DIR_MODE: u32 = 0o755;
/// Tries at a fresh generation name: a clock coarser than the time a write takes could repeat one.
const CREATE_ATTEMPTS: u32 = 8;

/// The files of one generation: file name to bytes.
pub type FileSet = BTreeMap<String, Vec<u8>>;

/// Writes a [`FileSet`] into a directory so that readers switch from one set to the next at once.
#[derive(Debug, Clone)]
pub struct DirSink {
    /// The directory the app mounts and reads; it must exist (the agent never creates it).
    dir: PathBuf,
    /// Exact permission bits of every file in the set.
    mode: u32,
    /// `(uid, gid)` of every file in the set, when the app runs as another user.
    owner: Option<(u32, u32)>,
}

/// The step of a directory write that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirStep {
    CreateGeneration,
    LinkTemp,
    Swap,
    LinkFile,
}

impl DirStep {
    /// Until the swap, readers still see the previous set, whole.
    fn before_swap(self) -> bool {
        matches!(
            self,
            DirStep::CreateGeneration | DirStep::LinkTemp | DirStep::Swap
        )
    }
}

impl fmt::Display for DirStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DirStep::CreateGeneration => "creating the new generation directory",
            DirStep::LinkTemp => "creating the ..data_tmp symlink",
            DirStep::Swap => "renaming ..data_tmp over ..data",
            DirStep::LinkFile => "linking the file name to ..data",
        })
    }
}

/// Errors from building or using a [`DirSink`]. None contains file content.
#[derive(Debug, thiserror::Error)]
pub enum DirSetError {
    #[error("{field}: file name {name:?} {reason}")]
    InvalidName {
        /// The setting or secret field the name came from, so the operator knows where to look.
        field: String,
        name: String,
        reason: &'static str,
    },

    #[error("output directory {dir}: the set has no files; the previous set was left untouched")]
    EmptySet { dir: PathBuf },

    #[error(
        "output directory {dir}: {name} is a directory, where the link to ..data/{name} \
         belongs; the previous set was left untouched"
    )]
    Occupied { dir: PathBuf, name: String },

    #[error(transparent)]
    Sink(#[from] SinkError),

    #[error(
        "cannot write output directory {dir}: {step} failed{}: {error}{hint}; {outcome}",
        name.as_deref().map(|n| format!(" for {n}")).unwrap_or_default(),
        hint = super::hint(super::WriteStep::CreateTemp, .error),
        outcome = if step.before_swap() {
            "the previous set was left untouched"
        } else {
            "the new set is in ..data, and the next write repairs the links"
        }
    )]
    Write {
        dir: PathBuf,
        step: DirStep,
        name: Option<String>,
        error: io::Error,
    },
}

/// Why `name` cannot be a file of the set, or `None` when it can. `/` would leave the
/// directory, and names starting with `..` (`..`, `..data`, generation names) are the writer's.
pub fn file_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.contains('/') {
        Some("contains '/': a file of the set is a plain name inside the directory")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else if name == "." {
        Some("is '.'")
    } else if name.starts_with("..") {
        Some("starts with '..', which is kept for ..data and the generation directories")
    } else {
        None
    }
}

/// Checks every name of a set, naming `field` in the error.
fn check_file_names<'a>(
    field: &str,
    names: impl IntoIterator<Item = &'a String>,
) -> Result<(), DirSetError> {
    for name in names {
        if let Some(reason) = file_name_problem(name) {
            return Err(DirSetError::InvalidName {
                field: field.to_string(),
                name: name.clone(),
                reason,
            });
        }
    }
    Ok(())
}

impl DirSink {
    /// How long a swapped-out generation is kept, for readers whose path lookup through
    /// `..data` began before the swap.
    pub const LINGER: Duration = Duration::from_secs(1);

    /// Checks the directory and the mode now, so mistakes fail at startup rather than at the
    /// first rotation.
    pub fn new(dir: PathBuf, mode: u32, owner: Option<(u32, u32)>) -> Result<DirSink, DirSetError> {
        if mode & !0o777 != 0 {
            return Err(SinkError::InvalidMode { path: dir, mode }.into());
        }
        super::check_dir(&dir)?;
        Ok(DirSink { dir, mode, owner })
    }

    /// The directory the app reads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The generation `..data` points at, if it points at one of ours.
    pub fn generation(&self) -> Option<String> {
        let target = fs::read_link(self.dir.join(DATA_LINK)).ok()?;
        let name = target.to_str()?;
        is_generation_name(name).then(|| name.to_string())
    }

    /// Makes `files` the current set. When the current generation already holds exactly these
    /// files (bytes, mode, owner), nothing is swapped: a swap would wake every watcher for
    /// nothing. Links are still repaired then, and that alone counts as [`WriteOutcome::Written`].
    pub fn write(&self, files: &FileSet) -> Result<WriteOutcome, DirSetError> {
        self.check_set(files)?;
        let current = self.generation();
        if current.as_deref().is_some_and(|g| self.holds(g, files)) {
            let relinked = self.link_files(files)? | self.unlink_stale(files);
            self.remove_old_generations(Keep::Lingering);
            return Ok(if relinked {
                WriteOutcome::Written
            } else {
                WriteOutcome::Unchanged
            });
        }
        let generation = self.create_generation()?;
        for (name, bytes) in files {
            FileSink::new(generation.path.join(name), self.mode, self.owner)?.write(bytes)?;
        }
        self.swap(&generation.name)?;
        generation.commit();
        self.link_files(files)?;
        self.unlink_stale(files);
        super::sync_dir(&self.dir);
        self.remove_old_generations(Keep::Lingering);
        Ok(WriteOutcome::Written)
    }

    /// Removes what a crash in the middle of a write left behind: a `..data_tmp` or
    /// `..link_tmp` symlink, and generation directories `..data` does not point at. Returns how
    /// many were removed. Best effort: a failure only wastes space, so it is logged.
    pub fn cleanup_stale(&self) -> usize {
        let links = [DATA_TMP_LINK, LINK_TMP]
            .into_iter()
            .filter(|name| remove_link(&self.dir.join(name)))
            .count();
        links + self.remove_old_generations(Keep::CurrentOnly)
    }

    fn check_set(&self, files: &FileSet) -> Result<(), DirSetError> {
        if files.is_empty() {
            return Err(DirSetError::EmptySet {
                dir: self.dir.clone(),
            });
        }
        check_file_names(
            &format!("output directory {}", self.dir.display()),
            files.keys(),
        )?;
        // Checked before anything is written, so this error leaves the previous set whole.
        let occupied = files
            .keys()
            .find(|name| fs::symlink_metadata(self.dir.join(name)).is_ok_and(|m| m.is_dir()));
        match occupied {
            Some(name) => Err(DirSetError::Occupied {
                dir: self.dir.clone(),
                name: name.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Whether generation `name` holds exactly `files`: the same names, and each file with
    /// these bytes, mode and owner.
    fn holds(&self, name: &str, files: &FileSet) -> bool {
        let path = self.dir.join(name);
        let Ok(entries) = fs::read_dir(&path) else {
            return false;
        };
        let present: Result<Vec<String>, _> = entries
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        let Ok(mut present) = present else {
            return false;
        };
        present.sort();
        present.iter().eq(files.keys())
            && files.iter().all(|(file, bytes)| {
                FileSink::new(path.join(file), self.mode, self.owner)
                    .is_ok_and(|s| s.is_current(bytes))
            })
    }

    fn create_generation(&self) -> Result<Generation, DirSetError> {
        let mut last_error = io::Error::from(io::ErrorKind::AlreadyExists);
        for attempt in 0..CREATE_ATTEMPTS {
            let name = generation_name(SystemTime::now(), attempt);
            let path = self.dir.join(&name);
            match fs::create_dir(&path) {
                Ok(()) => {
                    let generation = Generation {
                        path,
                        name,
                        committed: false,
                    };
                    // Exact, whatever the umask: the app may run as another user.
                    fs::set_permissions(
                        &generation.path,
                        Permissions::from_mode(GENERATION_DIR_MODE),
                    )
                    .map_err(|e| self.error(DirStep::CreateGeneration, None, e))?;
                    return Ok(generation);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = e,
                Err(e) => return Err(self.error(DirStep::CreateGeneration, None, e)),
            }
        }
        Err(self.error(DirStep::CreateGeneration, None, last_error))
    }

    /// The one step readers see: `..data` names the new generation, atomically.
    fn swap(&self, generation: &str) -> Result<(), DirSetError> {
        let temp = self.dir.join(DATA_TMP_LINK);
        remove_link(&temp);
        symlink(generation, &temp).map_err(|e| self.error(DirStep::LinkTemp, None, e))?;
        fs::rename(&temp, self.dir.join(DATA_LINK)).map_err(|e| {
            remove_link(&temp);
            self.error(DirStep::Swap, None, e)
        })
    }

    /// Makes each `DIR/<name>` a symlink to `..data/<name>`; returns whether any changed.
    fn link_files(&self, files: &FileSet) -> Result<bool, DirSetError> {
        let mut changed = false;
        for name in files.keys() {
            changed |= self
                .link_file(name)
                .map_err(|e| self.error(DirStep::LinkFile, Some(name), e))?;
        }
        Ok(changed)
    }

    fn link_file(&self, name: &str) -> io::Result<bool> {
        let path = self.dir.join(name);
        let target = Path::new(DATA_LINK).join(name);
        match fs::read_link(&path) {
            Ok(existing) if existing == target => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                symlink(&target, &path)?;
                return Ok(true);
            }
            _ => {}
        }
        // A regular file (the single-file output used to be here) or a stray link: replaced
        // by one rename, so a reader never finds the name missing.
        let temp = self.dir.join(LINK_TMP);
        remove_link(&temp);
        symlink(&target, &temp)?;
        fs::rename(&temp, &path).inspect_err(|_| {
            remove_link(&temp);
        })?;
        Ok(true)
    }

    /// Removes the links of names that left the set; returns whether any was removed. Only
    /// links of the form `name -> ..data/name` are touched: anything else is not ours.
    fn unlink_stale(&self, files: &FileSet) -> bool {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return false;
        };
        let mut removed = false;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with("..") {
                continue;
            }
            let ours =
                fs::read_link(entry.path()).is_ok_and(|t| t == Path::new(DATA_LINK).join(name));
            if ours && !files.contains_key(name) {
                removed |= remove_link(&entry.path());
            }
        }
        removed
    }

    /// Deletes the generation directories `..data` no longer points at; returns how many.
    ///
    /// A reader's path lookup that read `..data` just before a swap goes on to look up that
    /// generation by name; deleting it at once makes the lookup fail with "no such file" (the
    /// concurrency test below saw it within seconds, even when the one generation swapped out
    /// last was kept: a reader descheduled mid-lookup can span several swaps). So after a write
    /// a generation is kept until the one that replaced it is [`DirSink::LINGER`] old.
    fn remove_old_generations(&self, keep: Keep) -> usize {
        let current = self.generation();
        let mut old = match self.generation_names() {
            Ok(names) => names,
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot list the output directory to remove old generations");
                return 0;
            }
        };
        if keep == Keep::Lingering {
            // Names sort by creation time, and a generation was swapped out when the next one
            // was made: everything before the newest generation older than LINGER may go.
            // (A binary search: the ages fall in name order, and a write may find many young
            // generations when swaps come fast.)
            let young = old.partition_point(|name| !self.younger_than_linger(name));
            old.truncate(young.saturating_sub(1));
        }
        old.retain(|name| Some(name) != current.as_ref());
        old.iter()
            .filter(|name| remove_generation(&self.dir.join(name)))
            .count()
    }

    /// Removes the generations swapped out at least [`DirSink::LINGER`] ago; returns how many. For the
    /// agent to call once [`DirSink::LINGER`] has passed after a write, so an old credential does not
    /// wait on disk for the next write.
    pub fn remove_swapped_out(&self) -> usize {
        self.remove_old_generations(Keep::Lingering)
    }

    /// Every generation directory's name, oldest first.
    fn generation_names(&self) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| is_generation_name(name))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Whether generation `name` was completed less than [`DirSink::LINGER`] ago (by its directory's
    /// mtime, which its last file set). A clock that went backwards counts as young.
    fn younger_than_linger(&self, name: &str) -> bool {
        fs::metadata(self.dir.join(name))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().map_or(true, |age| age < DirSink::LINGER))
    }

    fn error(&self, step: DirStep, name: Option<&str>, error: io::Error) -> DirSetError {
        DirSetError::Write {
            dir: self.dir.clone(),
            step,
            name: name.map(str::to_string),
            error,
        }
    }
}

/// Which generations [`DirSink::remove_old_generations`] spares besides the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// At startup: the last swap was before the agent (re)started, or never happened (a crash
    /// between writing a generation and swapping to it leaves one `..data` never named).
    CurrentOnly,
    /// After a write: those swapped out less than [`DirSink::LINGER`] ago.
    Lingering,
}

/// A generation directory that deletes itself unless `..data` was swapped to it, so every
/// early return (and a panic) leaves no half-written generation behind.
struct Generation {
    path: PathBuf,
    name: String,
    committed: bool,
}

impl Generation {
    fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if !self.committed {
            remove_generation(&self.path);
        }
    }
}

/// `..2026_11_30_10_00_00.123456789` (UTC), as kubelet names them, so `ls -a` sorts them by
/// age; `-N` is added on the rare retry after a name was taken.
fn generation_name(now: SystemTime, attempt: u32) -> String {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let stamp = rfc3339(now)
        .map(|t| t.trim_end_matches('Z').replace(['-', 'T', ':'], "_"))
        .unwrap_or_else(|| since_epoch.as_secs().to_string());
    let mut name = format!("..{stamp}.{:09}", since_epoch.subsec_nanos());
    if attempt > 0 {
        name.push_str(&format!("-{attempt}"));
    }
    name
}

/// A name [`generation_name`] makes: `..` then a digit. File names of the set cannot start
/// with `..`, and the writer's links are `..data*`/`..link_tmp`, so nothing else matches.
fn is_generation_name(name: &str) -> bool {
    name.strip_prefix("..")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()) && !rest.contains('/'))
}

/// Removes a generation directory; only a real directory (never through a symlink).
fn remove_generation(path: &Path) -> bool {
    remove_if(
        path,
        |m| m.is_dir(),
        |p| fs::remove_dir_all(p),
        "an old generation directory",
    )
}

/// Removes a symlink if one is there; returns whether it was.
fn remove_link(path: &Path) -> bool {
    remove_if(
        path,
        |m| m.file_type().is_symlink(),
        |p| fs::remove_file(p),
        "a stale symlink",
    )
}

/// Removes `path` with `remove` when what is there (not following a symlink) is `ours`;
/// returns whether it went. A failure is logged: leftovers only waste space.
fn remove_if(
    path: &Path,
    ours: fn(&fs::Metadata) -> bool,
    remove: fn(&Path) -> io::Result<()>,
    what: &str,
) -> bool {
    if !fs::symlink_metadata(path).is_ok_and(|m| ours(&m)) {
        return false;
    }
    match remove(path) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot remove {what}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{names_in, test_dir};
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

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
        eprintln!(
            "naive reader: {reads} reads, {mixed} mixed an old username with a newer password"
        );
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
}
