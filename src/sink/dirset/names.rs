//! Names in a set's directory: the files of the set (the app's) and the generation
//! directories (the writer's, all starting with `..`).

use std::time::{SystemTime, UNIX_EPOCH};

use super::DirSetError;
use crate::time::rfc3339;

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
pub(super) fn check_file_names<'a>(
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

/// `..2026_11_30_10_00_00.123456789` (UTC), as kubelet names them, so `ls -a` sorts them by
/// age; `-N` is added on the rare retry after a name was taken.
pub(super) fn generation_name(now: SystemTime, attempt: u32) -> String {
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
pub(super) fn is_generation_name(name: &str) -> bool {
    name.strip_prefix("..")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()) && !rest.contains('/'))
}
