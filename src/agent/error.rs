//! What stops the agent, and the exit code each kind of stop gives: 2 for a configuration
//! that cannot work, 1 for a failure at run time.

use std::time::Duration;

use crate::http::HttpError;
use crate::secret::SecretError;
use crate::sink::SinkError;
use crate::vault::VaultError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The Vault client cannot be set up (a CA file, a client certificate, the TLS server
    /// name): configuration.
    #[error("{0}")]
    Client(#[source] VaultError),
    /// A secret's output file cannot be written where it is configured: configuration.
    #[error("secret {name:?} output: {source}")]
    Output {
        name: String,
        #[source]
        source: SinkError,
    },
    /// A secret's output directory (`--output-dir`) cannot be used where it is configured.
    #[error("secret {name:?} output directory: {source}")]
    OutputDir {
        name: String,
        #[source]
        source: crate::sink::dirset::DirSetError,
    },
    /// A listener could not start (its address is taken, say).
    #[error("listener: {0}")]
    Http(#[from] HttpError),
    #[error("--once: secret {name:?}: {source}")]
    Once {
        name: String,
        #[source]
        source: Box<SecretError>,
    },
    #[error("--once: gave up after {0:?}")]
    OnceTimeout(Duration),
    /// A `--once` worker panicked or was cancelled.
    #[error("--once: a worker stopped abnormally: {0}")]
    Worker(#[source] tokio::task::JoinError),
    #[error("installing a signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

impl AgentError {
    /// 2: the configuration cannot work, and restarting will not help; 1: a failure while
    /// running.
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Client(_) | AgentError::Output { .. } | AgentError::OutputDir { .. } => 2,
            AgentError::Http(_)
            | AgentError::Once { .. }
            | AgentError::OnceTimeout(_)
            | AgentError::Worker(_)
            | AgentError::Signal(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn configuration_exits_2_and_runtime_failures_1() {
        let tls = AgentError::Client(VaultError::Tls("CA file /x: not found".into()));
        assert_eq!(tls.exit_code(), 2);
        let output = AgentError::Output {
            name: "db".into(),
            source: SinkError::DirMissing { dir: "/x".into() },
        };
        assert_eq!(output.exit_code(), 2);
        // A panicked worker is a failure at run time, not bad configuration.
        let panicked = tokio::spawn(async { panic!("boom") }).await.unwrap_err();
        assert_eq!(AgentError::Worker(panicked).exit_code(), 1);
        assert_eq!(
            AgentError::OnceTimeout(Duration::from_secs(1)).exit_code(),
            1
        );
        let signal = AgentError::Signal(std::io::Error::other("no handler"));
        assert_eq!(signal.exit_code(), 1);
    }
}
