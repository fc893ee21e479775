//! What can go wrong with a secret, and how the loop treats each kind of failure.

use std::time::Duration;

use super::Action;
use crate::render;
use crate::vault::{AuthError, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Vault(#[from] VaultError),
    /// A 403 with a token that `lookup-self` shows alive: the policy refuses the path. A new
    /// login cannot help, so none is made.
    #[error("denied by policy: {0}")]
    Denied(VaultError),
    /// The credential dies with its token, and no token that outlives it can be had (a
    /// `--auth token` token near its end, or a failing login). Kept until its real end.
    #[error("the Vault token ends in {} and no newer token can be had; the credential in the file dies with it", humantime::format_duration(*.0))]
    TokenEnding(Duration),
    /// SIGHUP retired the worker before the request could start: its successor fetches.
    #[error("replaced by SIGHUP before the request was made")]
    Retired,
    #[error("{path}: {reason}")]
    Shape { path: String, reason: String },
    #[error("render: {0}")]
    Render(#[from] render::RenderError),
    #[error("write: {0}")]
    Write(#[from] crate::sink::SinkError),
    #[error("write: {0}")]
    WriteDir(#[from] crate::sink::DirSetError),
    /// The worker was given a sink of another kind than its output setting: a bug.
    #[error("write: the sink does not match the configured output")]
    SinkMismatch,
}

impl SecretError {
    /// The stage that failed, for metrics and /status.
    pub fn stage(&self) -> &'static str {
        match self {
            SecretError::Auth(_) => "auth",
            SecretError::TokenEnding(_) => "auth",
            SecretError::Vault(_)
            | SecretError::Denied(_)
            | SecretError::Retired
            | SecretError::Shape { .. } => "fetch",
            SecretError::Render(_) => "render",
            SecretError::Write(_) | SecretError::WriteDir(_) | SecretError::SinkMismatch => "write",
        }
    }

    pub(super) fn retry_after(&self) -> Option<Duration> {
        match self {
            SecretError::Vault(e) | SecretError::Denied(e) => e.retry_after(),
            SecretError::Auth(e) => e.vault_error().and_then(VaultError::retry_after),
            _ => None,
        }
    }
}

/// The stage for metrics and /status: [`SecretError::stage`], except that a Vault error while
/// renewing is a renewal failure, not a fetch failure (the alert differs: a failing renewal
/// still has the old lease's lifetime to recover in).
pub(super) fn failure_stage(action: Action, e: &SecretError) -> &'static str {
    match (action, e) {
        (Action::Renew, SecretError::Vault(_)) => "renew",
        _ => e.stage(),
    }
}

/// A fault that may pass by itself (Vault down or overloaded, a token to replace).
pub(super) fn is_transient(e: &SecretError) -> bool {
    match e {
        SecretError::Vault(v) => v.is_transient(),
        SecretError::Auth(a) => a.vault_error().is_none_or(VaultError::is_transient),
        _ => false,
    }
}

pub(super) fn is_retryable(e: &SecretError) -> bool {
    match e {
        SecretError::Vault(v) => v.is_transient(),
        SecretError::Denied(_) => true,
        SecretError::TokenEnding(_) => true,
        SecretError::Auth(a) => a.vault_error().is_none_or(VaultError::is_transient),
        SecretError::Shape { .. }
        | SecretError::Render(_)
        | SecretError::SinkMismatch
        | SecretError::Retired => false,
        SecretError::Write(_) | SecretError::WriteDir(_) => true,
    }
}

/// Vault answered the mount preflight with a definite refusal (403 when the policy does not
/// grant `sys/internal/ui/mounts`, 404 on old versions): guessing from the path is what the
/// vault CLI does then. Anything else (sealed, 5xx, transport, a failed login) says nothing
/// about the mount.
pub(super) fn answered_for_the_mount(e: &SecretError) -> bool {
    match e {
        SecretError::Vault(v) => v.status().is_some() && !v.is_transient(),
        _ => false,
    }
}
