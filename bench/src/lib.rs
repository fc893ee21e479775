//! The benchmark and soak test of vault-rotator: see `bench/README.md`.
//!
//! Everything runs on this machine against devvault on loopback, with agents as real child
//! processes measured through `/proc`.

pub mod agent;
pub mod analysis;
pub mod ctx;
pub mod measure;
pub mod procfs;
pub mod report;
pub mod stack;
pub mod stats;
pub mod summary;
