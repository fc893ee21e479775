//! Test harness shared by the workspace's black-box tests.
//!
//! - [`pg::PgCluster`]: a throwaway PostgreSQL cluster with scram-sha-256 password
//!   authentication on TCP, so a wrong, changed or dropped credential really fails to log in.
//! - [`mariadb::MariaDb`]: a throwaway MariaDB server, for the second database engine.
//! - [`devvault::DevVault`]: the project's Vault stand-in, started as a real process.
//! - [`openbao::OpenBao`]: a real OpenBao dev server, the reference the stand-in is held to.
//! - [`bins`]: where the workspace's binaries are, building them when missing.
//!
//! Everything is removed on drop, also when the test panics.

pub mod bins;
pub mod devvault;
pub mod mariadb;
pub mod openbao;
mod os;
pub mod pg;
