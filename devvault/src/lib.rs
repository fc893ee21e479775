//! devvault: a Vault-API-compatible development and test server.
//!
//! **NEVER use devvault in production.** It keeps everything in memory, has no
//! real seal, no audit log, no storage, and exposes unauthenticated test
//! controls. It exists so the vault-rotator agent can be black-box tested
//! and demoed where no Vault binary can run, and it answers like real Vault
//! (or OpenBao with `--flavor openbao`) byte for byte where a client can tell.
//!
//! Layout, in request order:
//! - [`cli`]: command-line flags; [`run`] wires everything together.
//! - [`server`]: TCP/TLS listener, hyper framing, fault injection, request log.
//! - [`router`]: `/v1/` pipeline: parse, seal check, token + ACL, dispatch,
//!   response wrapping, rendering. Only the server imports it.
//! - [`exchange`]: the request and reply types the router hands to the engines and
//!   gets back; a leaf below both, so no engine imports the router.
//! - [`envelope`]: Vault's JSON envelope and Go `encoding/json` quirks.
//! - [`error`]: typed errors with Vault's exact texts.
//! - [`flavor`]: what differs between the Vault and OpenBao personalities.
//! - [`acl`]: HCL policy parsing and path matching.
//! - [`tokens`] (with [`token_entry`]), [`leases`], [`wrapping`]: the token store,
//!   lease TTL math and `sys/leases/*`, response-wrapping tokens.
//! - [`sys`]: `sys/*`, one submodule per endpoint group (health, mounts, policies,
//!   wrapping).
//! - [`kv`]: KV v1 and v2. [`database`]: PostgreSQL dynamic and static roles;
//!   [`job`]: the database work queued outside the state lock.
//! - [`auth`]: approle, kubernetes, jwt logins.
//! - [`controls`]: `/__devvault/` test controls.
//! - [`scheduler`]: the single background task for expiry and rotation.
//! - [`state`]: the in-memory store; [`util`]: ids, time and parsing helpers.

#![forbid(unsafe_code)]

pub mod acl;
pub mod auth;
pub mod cli;
pub mod controls;
pub mod database;
pub mod envelope;
pub mod error;
pub mod exchange;
pub mod flavor;
pub mod job;
pub mod kv;
pub mod leases;
pub mod router;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod sys;
pub mod token_entry;
pub mod tokens;
pub mod util;
pub mod wrapping;

use std::io::Write;

use error::StartError;

/// Starts devvault and serves until SIGINT/SIGTERM.
pub async fn run(args: cli::Args) -> Result<(), StartError> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(server::tls_acceptor(c, k)?),
        (None, None) => None,
        _ => return Err(StartError::TlsPair),
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| StartError::Bind {
            addr: args.listen.clone(),
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| StartError::Bind {
        addr: args.listen.clone(),
        source: e,
    })?;
    let state = state::State::new(args.flavor, &args.root_token);
    tracing::warn!("devvault is a development/test server: in-memory, unsealed, unaudited. NEVER use it in production.");
    tracing::info!(flavor = ?args.flavor, %addr, "devvault starting");
    let scheme = if tls.is_some() { "https" } else { "http" };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "devvault listening on {scheme}://{addr}").map_err(StartError::Stdout)?;
        out.flush().map_err(StartError::Stdout)?;
    }
    tokio::spawn(scheduler::run(state.clone()));
    tokio::select! {
        _ = server::serve(state, listener, tls) => {}
        _ = shutdown_signal() => tracing::info!("devvault stopping"),
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
