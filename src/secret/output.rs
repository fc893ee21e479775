//! Writing the credential where the app reads it: one file, or an `--output-dir` set, whose
//! swapped-out generations the loop sweeps a little later.

use std::time::Duration;

use tokio::time::Instant;

use super::error::SecretError;
use super::Worker;
use crate::config::Output;
use crate::credential::Credential;
use crate::render;
use crate::sink::{DirSink, Sink, WriteOutcome};
use crate::state::OutputSet;
use crate::vault::Backend;

/// Slack past [`DirSink::LINGER`] before a sweep: directory mtimes have a coarse clock.
const SWEEP_MARGIN: Duration = Duration::from_millis(100);

impl<B: Backend> Worker<B> {
    pub(super) fn write(&mut self, cred: &Credential) -> Result<WriteOutcome, SecretError> {
        if self.handed_over() {
            // A newer worker owns the file (SIGHUP replaced this one).
            return Ok(WriteOutcome::Unchanged);
        }
        match (&self.sink, &self.cfg.output) {
            (Sink::File(file), Output::File { format, .. }) => {
                Ok(file.write(&render::render(format, cred)?)?)
            }
            (Sink::Dir(dir), Output::Dir { files, .. }) => {
                let set = render::render_files(files, cred)?;
                let outcome = dir.write(&set)?;
                if outcome == WriteOutcome::Written {
                    // Swapped-out generations wait for readers still passing through them.
                    self.sweep_at = Some(Instant::now() + DirSink::LINGER + SWEEP_MARGIN);
                }
                let shown = OutputSet {
                    dir: dir.dir().display().to_string(),
                    files: set.into_keys().collect(),
                    generation: dir.generation(),
                };
                self.state
                    .update(&self.cfg.name, |s| s.output_set = Some(shown));
                Ok(outcome)
            }
            _ => Err(SecretError::SinkMismatch),
        }
    }

    /// Removes the generations of an `--output-dir` set that were swapped out long enough ago.
    pub(super) fn sweep(&mut self) {
        self.sweep_at = None;
        if let Sink::Dir(dir) = &self.sink {
            dir.remove_swapped_out();
        }
    }
}

/// Sleeps until `at`, or forever without one.
pub(super) async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
