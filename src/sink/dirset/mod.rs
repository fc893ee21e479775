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
//! (never dangling), and links for names that left the set are removed. A swapped-out
//! generation is deleted once its successor is [`DirSink::LINGER`] old, not at once: a reader
//! whose path lookup went through `..data` just before the swap still needs it (see
//! `remove_old_generations`).
//!
//! Names starting with `..` belong to the writer, which is why a file of the set may not have
//! one. One writer per directory: the agent's configuration rejects two secrets sharing one.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{FileSink, SinkError, WriteOutcome};

mod names;
#[cfg(test)]
mod tests;

pub use names::file_name_problem;
use names::{check_file_names, generation_name, is_generation_name};

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
            let relinked = self.link_files(files) | self.unlink_stale(files);
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
        self.link_files(files);
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

    /// Makes each `DIR/<name>` a symlink to `..data/<name>`; returns whether any changed. A
    /// failure is only logged: the set is live in `..data` by now, and reporting the write as
    /// failed would make the agent treat a live credential as unwritten (and revoke a new
    /// lease the existing links already show). The next write tries again.
    fn link_files(&self, files: &FileSet) -> bool {
        let mut changed = false;
        for name in files.keys() {
            match self.link_file(name) {
                Ok(linked) => changed |= linked,
                Err(e) => {
                    let error = self.error(DirStep::LinkFile, Some(name), e);
                    tracing::warn!(%error, "a file of the set is not linked yet");
                }
            }
        }
        changed
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
