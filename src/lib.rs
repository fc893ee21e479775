//! vault-rotator: a sidecar that keeps a database credential from Vault (or OpenBao) fresh in
//! a file that the application container reads.
//!
//! The flow, and the module that owns each step:
//!
//! ```text
//! config ──▶ vault::auth (login, token renewal) ──▶ secret::Worker (one per secret)
//!                                                    │  lease: when to renew / re-issue / back off
//!                                                    ▼
//!                              render (json | env | template) ──▶ sink (atomic file write)
//!                                                    │
//!                                                    ▼
//!                              state ──▶ http (/health /ready /metrics /status)
//! ```
//!
//! - [`config`]: every option, its default and its validation.
//! - [`vault`]: the HTTP client, typed responses, auth methods (and the 403 triage: a dead
//!   token or a policy denial), the [`vault::Backend`] seam for workers, and the
//!   [`vault::transport`] seam below the client, where the simulator (`tests/sim`) puts its
//!   in-memory Vault.
//! - [`lease`]: pure timing decisions, tested in virtual time; [`time`]: wall-clock times
//!   derived from the monotonic clock, so they follow virtual time too.
//! - [`secret`]: one secret's loop, including the hand-over when `SIGHUP` replaces it;
//!   [`agent`]: the workers, probes and signals (as [`agent::Command`]s) together.
//! - [`credential`]: the credential and the [`credential::SecretValue`] that never prints.
//! - [`render`], [`sink`], [`state`], [`http`]: output, files, shared status, probe and admin
//!   servers; [`metrics`] and [`status`]: what `/metrics`, `/status` and the status page show.
//! - [`drain`]: drain-aware revocation (`--drain-check`): revoke an old database credential
//!   once the app holds no session as its user.
//! - [`notify`]: telling the app about a new credential (exec, signal, HTTP).
//! - [`sink::dirset`]: the `--output-dir` mode: a set of files that switch together through a
//!   `..data` symlink, as kubelet does it.
//!
//! `main.rs` only wires these together.
#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod credential;
pub mod drain;
pub mod http;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod render;
pub mod secret;
pub mod sink;
pub mod state;
pub mod status;
pub mod time;
pub mod vault;
