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
//! - [`vault`]: the HTTP client, typed responses, auth methods, and the [`vault::Backend`] seam.
//! - [`lease`]: pure timing decisions, tested in virtual time.
//! - [`secret`]: one secret's loop; [`agent`]: the workers, probes and signals together.
//! - [`credential`]: the credential and the [`credential::SecretValue`] that never prints.
//! - [`render`], [`sink`], [`state`], [`http`]: output, files, shared status, probe and admin
//!   servers; [`metrics`] and [`status`]: what `/metrics`, `/status` and the status page show.
//! - [`notify`]: telling the app about a new credential (exec, signal, HTTP).
//!
//! `main.rs` only wires these together.
#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod credential;
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
