//! One secret's drain watches: a task per old credential, beside the secret's worker, that
//! reports when the old user's sessions are gone (or the check failed). The worker keeps the
//! revoke itself, its retries and its grace timer: a watch only brings the revoke forward.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{wait_drained, DrainCheck, DrainOutcome, OldUser, DRAIN_MIN};
use crate::credential::SecretValue;

/// What a watch found, for the lease it watched.
#[derive(Debug)]
pub struct Report {
    pub lease_id: String,
    pub outcome: DrainOutcome,
}

/// Starts watches for one secret and hands their reports to its worker.
pub struct Drainer {
    secret: String,
    check: DrainCheck,
    tx: mpsc::UnboundedSender<Report>,
    rx: mpsc::UnboundedReceiver<Report>,
}

/// A running watch; dropping it (the lease was revoked, or the worker ended) stops it.
#[derive(Debug)]
pub struct Watch(JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drainer {
    pub fn new(secret: &str, check: DrainCheck) -> Drainer {
        let (tx, rx) = mpsc::unbounded_channel();
        Drainer {
            secret: secret.to_string(),
            check,
            tx,
            rx,
        }
    }

    /// Watches `username`'s sessions for at most `grace`. A failed check is logged here, once
    /// for this credential (the watch then ends), and reported so the revoke can say why it
    /// waited for the grace.
    pub fn watch(
        &self,
        lease_id: String,
        username: String,
        password: SecretValue,
        grace: Duration,
    ) -> Watch {
        let user = OldUser {
            check: self.check.clone(),
            username,
            password,
        };
        let tx = self.tx.clone();
        let secret = self.secret.clone();
        Watch(tokio::spawn(async move {
            let outcome = wait_drained(&user, DRAIN_MIN, grace).await;
            if let DrainOutcome::CheckFailed(error) = &outcome {
                tracing::warn!(
                    secret = %secret,
                    username = %user.username,
                    drain_check = %user.check,
                    error = %error,
                    "drain check failed; the old credential is revoked at the grace"
                );
            }
            // The worker may be gone (shut down): nobody left to tell.
            let _ = tx.send(Report { lease_id, outcome });
        }))
    }

    /// The next report of any watch. Never ends on its own: the drainer holds a sender.
    pub async fn next(&mut self) -> Report {
        match self.rx.recv().await {
            Some(report) => report,
            None => std::future::pending().await,
        }
    }
}

/// [`Drainer::next`] for a worker that may have no drain check.
pub async fn next_report(drainer: &mut Option<Drainer>) -> Report {
    match drainer {
        Some(d) => d.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failed_check_is_reported_and_a_dropped_watch_stops() {
        // Port 1 on loopback: refused at once (or a failure without the feature).
        let check: DrainCheck = "postgres://127.0.0.1:1/app?sslmode=disable"
            .parse()
            .expect("valid");
        let mut d = Drainer::new("db", check);
        let w = d.watch(
            "l/1".into(),
            "v-1".into(),
            SecretValue::new("pw"),
            Duration::from_secs(60),
        );
        let report = d.next().await;
        assert_eq!(report.lease_id, "l/1");
        assert!(
            matches!(report.outcome, DrainOutcome::CheckFailed(_)),
            "{report:?}"
        );
        drop(w);

        let w = d.watch(
            "l/2".into(),
            "v-2".into(),
            SecretValue::new("pw"),
            Duration::from_secs(60),
        );
        drop(w);
        let none = tokio::time::timeout(Duration::from_secs(120), d.next()).await;
        assert!(none.is_err(), "an aborted watch reports nothing");
    }
}
