//! vault-rotator: a sidecar that keeps a database credential from Vault (or OpenBao) fresh in
//! a file that the application container reads.
#![forbid(unsafe_code)]

pub mod credential;
pub mod http;
pub mod render;
pub mod sink;
pub mod state;
