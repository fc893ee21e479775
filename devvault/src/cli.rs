//! Command-line flags.

use clap::Parser;

use crate::flavor::Flavor;

/// devvault: a Vault-API-compatible DEV/TEST server. NEVER use it in production:
/// everything is in memory, there is no real seal or audit, and unauthenticated
/// test controls live under /__devvault/.
#[derive(Debug, Clone, Parser)]
#[command(name = "devvault", version, about, long_about = None)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (see the ready line on stdout).
    #[arg(long, default_value = "127.0.0.1:8200")]
    pub listen: String,
    /// The root token (policy `root`, never expires).
    #[arg(long, default_value = "root")]
    pub root_token: String,
    /// PEM certificate chain; with --tls-key serves https.
    #[arg(long)]
    pub tls_cert: Option<String>,
    /// PEM private key for --tls-cert.
    #[arg(long)]
    pub tls_key: Option<String>,
    /// Which server to mimic where Vault and OpenBao differ.
    #[arg(long, value_enum, default_value = "vault")]
    pub flavor: Flavor,
    /// Log filter for stderr (tracing `EnvFilter` syntax), e.g. `debug`.
    #[arg(long, default_value = "info")]
    pub log: String,
}
