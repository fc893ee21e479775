//! The one background task: sleeps until the next deadline (token expiry,
//! lease expiry, static-role rotation, revocation retry) or until woken by a
//! change, then does what is due. No polling loop.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::database;
use crate::state::State;

/// Longest nap when nothing is scheduled (also bounds clock-jump effects).
const IDLE: Duration = Duration::from_secs(60);

/// Runs forever.
pub async fn run(state: Arc<State>) {
    loop {
        let now = SystemTime::now();
        let (mut jobs, next) = state.core().expire_due(now);
        let next_retry = {
            let mut core = state.core();
            let inow = Instant::now();
            let (due, keep): (Vec<_>, Vec<_>) = core.retry.drain(..).partition(|(t, _)| *t <= inow);
            core.retry = keep;
            jobs.extend(due.into_iter().map(|(_, j)| j));
            core.retry.iter().map(|(t, _)| *t).min()
        };
        if !jobs.is_empty() {
            // Each job runs on its own task so a slow database never delays expiry.
            for job in jobs {
                let st = state.clone();
                tokio::spawn(async move { database::run_jobs(&st, vec![job]).await });
            }
        }
        let mut sleep = IDLE;
        if let Some(n) = next {
            sleep = sleep.min(
                n.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            );
        }
        if let Some(r) = next_retry {
            sleep = sleep.min(r.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = state.wake.notified() => {}
        }
    }
}
