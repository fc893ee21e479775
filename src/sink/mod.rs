//! Atomic file writer for the rendered credential.
//!
//! The app reads the file at any moment, so it must only ever see a complete old version or a
//! complete new one: never an empty, truncated or missing file, and never a file readable by
//! more users than configured, not even for an instant.
//!
//! A write goes to a hidden temp file in the same directory (so the rename stays on one
//! filesystem and file watchers that skip dot files ignore it), created `O_CREAT|O_EXCL` with
//! mode 0600. It is filled, chowned, chmodded to the exact mode, fsynced, renamed over the
//! target, and the directory is fsynced. Any failure removes the temp file and leaves the
//! previous target untouched.
//!
//! [`dirset`] builds the `--output-dir` mode on top: several files, each written this way into
//! a new generation directory, that switch together through a `..data` symlink.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::distr::{Alphanumeric, SampleString};

pub mod dirset;

pub use dirset::{DirSetError, DirSink};

/// Longest file name most Linux filesystems accept (NAME_MAX).
const NAME_MAX: usize = 255;
/// Random characters in a temp name: enough that a collision is never expected.
const TEMP_RANDOM_LEN: usize = 12;
/// Marker between the target name and the random part of a temp name.
const TEMP_MARKER: &str = ".tmp-";
/// Mode of the temp file until the exact mode is set: owner-only, whatever the umask.
const TEMP_MODE: u32 = 0o600;
/// O_EXCL collisions tolerated before giving up (each means a stray file with our random name).
const CREATE_ATTEMPTS: usize = 4;

/// Where a secret's worker writes: one file, or a directory of files that switch together.
#[derive(Debug, Clone)]
pub enum Sink {
    File(FileSink),
    Dir(DirSink),
}

impl Sink {
    /// Removes what a crash in the middle of a write left behind; returns how many entries.
    pub fn cleanup_stale(&self) -> usize {
        match self {
            Sink::File(file) => file.cleanup_stale_temps(),
            Sink::Dir(dir) => dir.cleanup_stale(),
        }
    }
}

impl From<FileSink> for Sink {
    fn from(sink: FileSink) -> Sink {
        Sink::File(sink)
    }
}

impl From<DirSink> for Sink {
    fn from(sink: DirSink) -> Sink {
        Sink::Dir(sink)
    }
}

/// Writes one file atomically, with an exact mode and optional owner.
#[derive(Debug, Clone)]
pub struct FileSink {
    /// The file the app reads.
    path: PathBuf,
    /// Its directory: where temp files live and what is fsynced after a rename.
    dir: PathBuf,
    /// The target's file name, used to build and recognise temp names.
    file_name: OsString,
    /// Exact permission bits; applied with fchmod so the umask has no say.
    mode: u32,
    /// `(uid, gid)` to chown to, when the app runs as a different user than the agent.
    owner: Option<(u32, u32)>,
}

/// What [`FileSink::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The file was replaced.
    Written,
    /// The file already had these bytes, mode and owner; it was not touched.
    Unchanged,
}

/// The step of a write that failed; named in the error so an operator knows what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStep {
    CreateTemp,
    WriteTemp,
    ChownTemp,
    ChmodTemp,
    SyncTemp,
    Rename,
}

impl fmt::Display for WriteStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteStep::CreateTemp => "creating the temp file",
            WriteStep::WriteTemp => "writing the temp file",
            WriteStep::ChownTemp => "setting the owner of the temp file",
            WriteStep::ChmodTemp => "setting the mode of the temp file",
            WriteStep::SyncTemp => "syncing the temp file",
            WriteStep::Rename => "renaming the temp file over the target",
        })
    }
}

/// Errors from building or using a [`FileSink`]. The OS error is part of the message (and not
/// also exposed as `source()`, so chained printing does not show it twice).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(
        "output directory {dir} does not exist; the agent never creates it \
         (mount the shared volume there)"
    )]
    DirMissing { dir: PathBuf },

    #[error("output directory {dir} is not a directory")]
    NotADirectory { dir: PathBuf },

    #[error("cannot inspect output directory {dir}: {error}")]
    DirInspect { dir: PathBuf, error: io::Error },

    #[error("invalid output path {path}: {reason}")]
    InvalidPath { path: PathBuf, reason: String },

    #[error(
        "invalid file mode {mode:#o} for {path}: only permission bits 0o000..=0o777 are allowed"
    )]
    InvalidMode { path: PathBuf, mode: u32 },

    #[error(
        "cannot write {path}: {step} failed: {error}{hint}; the previous file was left untouched",
        hint = hint(*.step, .error)
    )]
    Write {
        path: PathBuf,
        step: WriteStep,
        error: io::Error,
    },
}

/// A plain-words explanation for the errors an operator can act on.
pub(crate) fn hint(step: WriteStep, error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::StorageFull => {
            " (the volume is full: raise the emptyDir sizeLimit or free space)"
        }
        io::ErrorKind::ReadOnlyFilesystem => {
            " (the volume is mounted read-only: mount it read-write in the agent's container)"
        }
        io::ErrorKind::PermissionDenied if step == WriteStep::ChownTemp => {
            " (changing the owner needs CAP_CHOWN, or the agent must run as that user)"
        }
        io::ErrorKind::PermissionDenied if step == WriteStep::ChmodTemp => {
            " (after a chown to another user, setting the mode needs CAP_FOWNER)"
        }
        io::ErrorKind::PermissionDenied => {
            " (the agent's user may not write in that directory: check the volume's owner, \
             mode or fsGroup)"
        }
        _ => "",
    }
}

impl FileSink {
    /// Checks the target's directory and name now, so configuration mistakes fail at startup
    /// rather than at the first rotation.
    pub fn new(path: PathBuf, mode: u32, owner: Option<(u32, u32)>) -> Result<FileSink, SinkError> {
        if mode & !0o777 != 0 {
            return Err(SinkError::InvalidMode { path, mode });
        }
        let file_name = valid_file_name(&path)?;
        let dir = parent_dir(&path);
        check_dir(&dir)?;
        check_not_dir(&path)?;
        Ok(FileSink {
            path,
            dir,
            file_name,
            mode,
            owner,
        })
    }

    /// The file the app reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The target's current bytes, if it exists and is readable.
    pub fn read_current(&self) -> Option<Vec<u8>> {
        fs::read(&self.path).ok()
    }

    /// Replaces the file with `bytes` atomically, unless it already holds exactly these bytes
    /// with the configured mode and owner.
    pub fn write(&self, bytes: &[u8]) -> Result<WriteOutcome, SinkError> {
        if self.is_current(bytes) {
            return Ok(WriteOutcome::Unchanged);
        }
        let temp = self.create_temp()?;
        self.fill(&temp, bytes)?;
        temp.rename_to(&self.path)
            .map_err(|error| self.error(WriteStep::Rename, error))?;
        self.sync_dir();
        Ok(WriteOutcome::Written)
    }

    /// Removes temp files a crash left behind; returns how many were removed. Best effort:
    /// a failure is logged, never fatal, because it only wastes a little space.
    pub fn cleanup_stale_temps(&self) -> usize {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot list directory to remove stale temp files");
                return 0;
            }
        };
        entries
            .filter_map(Result::ok)
            .filter(|entry| self.is_temp_name(&entry.file_name()))
            .filter(|entry| remove_stale(&entry.path()))
            .count()
    }

    /// Compares without writing: a rewrite of identical content would wake every file watcher
    /// and bump the mtime for nothing.
    pub(crate) fn is_current(&self, bytes: &[u8]) -> bool {
        let Ok(link_meta) = fs::symlink_metadata(&self.path) else {
            return false;
        };
        if !link_meta.file_type().is_file() || !self.attributes_match(&link_meta) {
            return false;
        }
        if link_meta.len() != bytes.len() as u64 {
            return false;
        }
        read_exact_len(&self.path, bytes.len()).is_some_and(|current| current == bytes)
    }

    fn attributes_match(&self, meta: &fs::Metadata) -> bool {
        let mode_ok = meta.mode() & 0o7777 == self.mode;
        let owner_ok = self
            .owner
            .is_none_or(|(uid, gid)| meta.uid() == uid && meta.gid() == gid);
        mode_ok && owner_ok
    }

    fn create_temp(&self) -> Result<TempFile, SinkError> {
        let mut last_error = None;
        for _ in 0..CREATE_ATTEMPTS {
            let path = self.dir.join(self.temp_name());
            match create_exclusive(&path) {
                Ok(file) => return Ok(TempFile::new(path, file)),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    last_error = Some(error)
                }
                Err(error) => return Err(self.error(WriteStep::CreateTemp, error)),
            }
        }
        let error = last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
        Err(self.error(WriteStep::CreateTemp, error))
    }

    /// Chown before chmod: the file stays owner-only (0600) until both owner and mode are
    /// final, so no other user can open it in between.
    fn fill(&self, temp: &TempFile, bytes: &[u8]) -> Result<(), SinkError> {
        let mut file = &temp.file;
        file.write_all(bytes)
            .map_err(|e| self.error(WriteStep::WriteTemp, e))?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::fchown(file, Some(uid), Some(gid))
                .map_err(|e| self.error(WriteStep::ChownTemp, e))?;
        }
        file.set_permissions(Permissions::from_mode(self.mode))
            .map_err(|e| self.error(WriteStep::ChmodTemp, e))?;
        file.sync_all()
            .map_err(|e| self.error(WriteStep::SyncTemp, e))
    }

    /// The rename is already visible to readers, so a failed directory fsync is only logged:
    /// reporting the write as failed would make the agent treat a live credential as unwritten.
    /// Some filesystems (FUSE, older NFS) reject fsync on directories outright.
    fn sync_dir(&self) {
        sync_dir(&self.dir);
    }

    fn temp_prefix(&self) -> OsString {
        let mut prefix = OsString::from(".");
        prefix.push(&self.file_name);
        prefix.push(TEMP_MARKER);
        prefix
    }

    fn temp_name(&self) -> OsString {
        let mut name = self.temp_prefix();
        name.push(Alphanumeric.sample_string(&mut rand::rng(), TEMP_RANDOM_LEN));
        name
    }

    fn is_temp_name(&self, name: &OsStr) -> bool {
        name.as_encoded_bytes()
            .starts_with(self.temp_prefix().as_encoded_bytes())
    }

    fn error(&self, step: WriteStep, error: io::Error) -> SinkError {
        SinkError::Write {
            path: self.path.clone(),
            step,
            error,
        }
    }
}

/// A temp file that deletes itself unless it was renamed into place, so every early return
/// (and a panic) cleans up.
struct TempFile {
    path: PathBuf,
    file: File,
    renamed: bool,
}

impl TempFile {
    fn new(path: PathBuf, file: File) -> Self {
        TempFile {
            path,
            file,
            renamed: false,
        }
    }

    fn rename_to(mut self, target: &Path) -> io::Result<()> {
        fs::rename(&self.path, target)?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.renamed {
            return;
        }
        if let Err(error) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove temp file after a failed write");
        }
    }
}

/// Fsyncs a directory after a rename in it; a failure is only logged (see
/// [`FileSink::sync_dir`]).
pub(crate) fn sync_dir(dir: &Path) {
    if let Err(error) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), %error, "fsync of the output directory failed after a successful rename");
    }
}

/// O_CREAT|O_EXCL (never follows or reuses an existing file) with owner-only mode from the
/// first instant; the umask can only narrow 0600 further.
fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(TEMP_MODE)
        .open(path)
}

/// Reads at most `len + 1` bytes so a file that grew meanwhile cannot make us read it all.
fn read_exact_len(path: &Path, len: usize) -> Option<Vec<u8>> {
    let file = File::open(path).ok()?;
    let mut buf = Vec::with_capacity(len);
    file.take(len as u64 + 1).read_to_end(&mut buf).ok()?;
    Some(buf)
}

fn remove_stale(path: &Path) -> bool {
    // Only files and symlinks: a directory with a matching name is not ours.
    let is_ours = fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir());
    if !is_ours {
        return false;
    }
    match fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "removed stale temp file");
            true
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot remove stale temp file");
            false
        }
    }
}

fn valid_file_name(path: &Path) -> Result<OsString, SinkError> {
    let invalid = |reason: &str| SinkError::InvalidPath {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let name = path
        .file_name()
        .ok_or_else(|| invalid("it does not end in a file name"))?;
    let temp_len = 1 + name.len() + TEMP_MARKER.len() + TEMP_RANDOM_LEN;
    if temp_len > NAME_MAX {
        return Err(invalid(&format!(
            "the file name is too long: its temp file name would exceed {NAME_MAX} bytes"
        )));
    }
    Ok(name.to_os_string())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub(crate) fn check_dir(dir: &Path) -> Result<(), SinkError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(SinkError::NotADirectory {
            dir: dir.to_path_buf(),
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Err(SinkError::DirMissing {
            dir: dir.to_path_buf(),
        }),
        Err(error) => Err(SinkError::DirInspect {
            dir: dir.to_path_buf(),
            error,
        }),
    }
}

fn check_not_dir(path: &Path) -> Result<(), SinkError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(SinkError::InvalidPath {
            path: path.to_path_buf(),
            reason: "it is a directory".to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
