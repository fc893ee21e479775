//! The deterministic simulation of the agent's lifecycle (issue 13): the real client, auth and
//! workers in paused tokio time against an in-memory model of Vault.

mod model;
mod model_tests;
