//! Logs through tracing, as text or JSON, with a level that SIGHUP can change.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::LogFormat;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "--log-level: {0:?} is not a level (error, warn, info, debug, trace) or a tracing filter"
    )]
    Level(String),
}

/// Changes the level of the installed subscriber.
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

impl LogHandle {
    pub fn set_level(&self, level: &str) -> Result<(), LogError> {
        let filter = parse_filter(level)?;
        self.0
            .reload(filter)
            .map_err(|_| LogError::Level(level.to_string()))
    }
}

pub fn parse_filter(level: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::builder()
        .parse(level)
        .map_err(|_| LogError::Level(level.to_string()))
}

/// Installs the global subscriber; logs go to stderr so stdout stays free for tools.
pub fn init(format: LogFormat, level: &str) -> Result<LogHandle, LogError> {
    let (filter, handle) = reload::Layer::new(parse_filter(level)?);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    // Colour codes only for a person at a terminal, never in `kubectl logs`.
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = result;
    Ok(LogHandle(handle))
}
