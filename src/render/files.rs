//! The `--output-dir` formats: a credential as a set of files, by file name.

use std::collections::BTreeMap;

use super::env::env_value;
use super::{expiry_text, RenderError, Template};
use crate::credential::Credential;

/// Files the agent adds next to the secret's own fields, as the JSON format has them at its
/// top level. A field of the same name would leave the reader guessing which one it got.
const METADATA_FILES: [&str; 3] = ["expires_at", "lease_id", "version"];

/// What each file of an `--output-dir` set holds.
#[derive(Debug, Clone, PartialEq)]
pub enum FilesFormat {
    /// One file per field of the secret, plus `username`, `password` and the metadata files
    /// when the credential has them.
    Fields,
    /// One file per template, by file name.
    Templates(BTreeMap<String, Template>),
}

/// Renders a credential as a set of files: file name to bytes. The names are the set's
/// writer's to check (it knows which ones it reserves).
pub fn render_files(
    format: &FilesFormat,
    cred: &Credential,
) -> Result<BTreeMap<String, Vec<u8>>, RenderError> {
    match format {
        FilesFormat::Fields => field_files(cred),
        FilesFormat::Templates(templates) => templates
            .iter()
            .map(|(name, template)| Ok((name.clone(), template.render(cred)?)))
            .collect(),
    }
}

/// Values exactly as they are, with no newline added: `$(cat password)` and
/// `Files.readString` must give the password itself.
fn field_files(cred: &Credential) -> Result<BTreeMap<String, Vec<u8>>, RenderError> {
    let mut files = BTreeMap::new();
    for (field, value) in &cred.fields {
        if METADATA_FILES.contains(&field.as_str()) {
            return Err(RenderError::FileCollision {
                field: field.clone(),
            });
        }
        files.insert(field.clone(), env_value(value).into_owned().into_bytes());
    }
    let own = [
        ("username", cred.username.clone()),
        (
            "password",
            cred.password.as_ref().map(|p| p.expose().to_string()),
        ),
    ];
    for (name, value) in own {
        if let (false, Some(value)) = (files.contains_key(name), value) {
            files.insert(name.to_string(), value.into_bytes());
        }
    }
    let metadata = [
        expiry_text(cred)?,
        cred.lease_id.clone(),
        cred.version.map(|v| v.to_string()),
    ];
    for (name, value) in METADATA_FILES.iter().zip(metadata) {
        if let Some(value) = value {
            files.insert(name.to_string(), value.into_bytes());
        }
    }
    Ok(files)
}
