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
//! The modules form layers, in the order the data flows; a module names only modules in lower
//! layers, so there is no import cycle (`tests/layers.rs` checks this on every test run):
//!
//! 1. [`credential`], [`lease`], [`time`]: values and pure decisions, no I/O;
//! 2. [`state`], [`render`], [`sink`], [`notify`], [`drain`]: what is shown, written, told
//!    and checked;
//! 3. [`config`]: every option;
//! 4. [`vault`] (and [`logging`]): talking to Vault;
//! 5. [`metrics`], [`status`]: what `/metrics`, `/status` and the status page show;
//! 6. [`http`]: the probe and admin servers;
//! 7. [`secret`]: one secret's loop;
//! 8. [`agent`]: everything together; `main.rs` on top only wires it up.
//!
//! Where a lower layer must reach a higher one, it takes a callback: [`notify::fire`] reports
//! each hook's outcome through one, the Vault client reports requests through an
//! [`vault::client::Observer`], and [`vault::Auth`] reports its events through a closure that
//! the agent maps onto [`state::AuthCount`]s.
//!
//! - [`credential`]: the credential and the [`credential::SecretValue`] that never prints.
//! - [`lease`]: pure timing decisions, tested in virtual time; [`time`]: wall-clock times
//!   derived from the monotonic clock (so they follow virtual time too), RFC 3339, rounding.
//! - [`state`] (`records`: per-secret status, events, counters; `liveness`: task and event-loop
//!   liveness for `/health`): the shared status every endpoint reads.
//! - [`render`] (`env`, `template`: minijinja, strict): the output formats.
//! - [`sink`]: the atomic file write, and [`sink::dirset`]: the `--output-dir` set of files
//!   that switch together through a `..data` symlink, as kubelet does it. [`notify`]: telling
//!   the app (exec, signal, HTTP).
//! - [`drain`] (`url`, `postgres`, `mysql`, `tls`, `watch`): drain-aware revocation
//!   (`--drain-check`): revoke an old database credential once the app holds no session as
//!   its user.
//! - [`config`] (`cli`: flags and their `VAULT_ROTATOR_<FLAG>` variables; `file`: the TOML
//!   file; `build`: validation of the agent, admin, Vault and auth settings; `secrets`: each
//!   secret and its hooks): every option, its default and its validation.
//! - [`vault`]: the HTTP [`vault::client`], its errors and the response shapes, the
//!   [`vault::auth`] folder (`token`, `login`, `renewer`, and the 403 triage: a dead token or a
//!   policy denial), the [`vault::Backend`] seam for workers, and the [`vault::transport`] seam
//!   below the client, where the simulator (`tests/sim`) puts its in-memory Vault.
//! - [`metrics`], [`status`]: the Prometheus exposition, `/status` and the status page.
//! - [`http`]: the pure router and its routes (`probes`, `admin`), hyper's server on its own
//!   thread.
//! - [`secret`] (`serve`: the loop and the hand-over when `SIGHUP` replaces a worker; `plan`:
//!   the next action; `issue`, `renew`, `revoke`; `error`): one secret's life.
//! - [`agent`] (`reload`: `SIGHUP`; `error`): the workers, probes and signals (as
//!   [`agent::Command`]s) together, and the
//!   [`agent::AgentError`] whose variant chooses the exit code.
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
