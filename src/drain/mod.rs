//! Drain-aware revocation: before an old database credential is revoked, ask the database
//! whether the app still holds sessions as that user, and revoke as soon as it holds none.
//!
//! - [`url`]: the `--drain-check` URL (database, address, TLS mode), validated at startup.
//! - `postgres` and `mysql` (cargo feature `drain-check`): one session count each, logged in
//!   as the old user, so the check needs no privileges the user does not already have.
//! - [`wait_drained`]: the polling policy, generic over a [`SessionCount`] so it is tested in
//!   virtual time with a fake database; [`watch`]: a task per old credential that tells the
//!   secret's worker when to revoke early.

pub mod url;
pub mod watch;

#[cfg(feature = "drain-check")]
mod mysql;
#[cfg(feature = "drain-check")]
mod postgres;
#[cfg(feature = "drain-check")]
mod tls;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::credential::SecretValue;
pub use url::{Database, DrainCheck, TlsMode, UrlError};
pub use watch::{next_report, Drainer, Report, Watch};

/// The shortest wait before a drained credential is revoked. Right after the new file is
/// written, a count of zero says little: an app that connects per request, or one that read
/// the old file a moment before the swap, may be about to log in with the old credential.
/// Two seconds covers a file watcher's delay and a connect, and costs little next to any
/// sensible grace.
pub const DRAIN_MIN: Duration = Duration::from_secs(2);

/// How often the sessions are counted: the revoke follows the app's reconnect by about this
/// much, and one short login a second is no load on a database.
pub const DRAIN_POLL: Duration = Duration::from_secs(1);

/// One check's limit (connect, TLS, login, query): a check that hangs is a failed check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a check could not count the sessions. Never holds the password.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("the server at {addr} has no TLS, and the ssl mode requires it")]
    NoTls { addr: String },
    #[error("login as the old user refused: {0}")]
    Auth(String),
    #[error("the database answered something unexpected: {0}")]
    Protocol(String),
    #[error("the session count query failed: {0}")]
    Query(String),
    #[error("the check took longer than {0:?}")]
    Timeout(Duration),
    #[error("the old credential has no username or password to log in with")]
    NoCredential,
    #[error("this build has no database clients (cargo feature `drain-check`)")]
    NotBuilt,
}

/// What [`wait_drained`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum DrainOutcome {
    /// No other session of the old user, this long after the wait began.
    Drained(Duration),
    /// The grace ended with sessions still open.
    Grace,
    /// A check failed; the caller falls back to the grace. The error is for one warning.
    CheckFailed(String),
}

/// Something that counts the old user's other sessions: the database, or a fake in tests.
pub trait SessionCount {
    fn sessions(&self) -> impl Future<Output = Result<u64, DrainError>> + Send;
}

/// The real check: `check`'s database, logged in as the old credential.
pub struct OldUser {
    pub check: DrainCheck,
    pub username: String,
    pub password: SecretValue,
}

impl SessionCount for OldUser {
    fn sessions(&self) -> impl Future<Output = Result<u64, DrainError>> + Send {
        sessions(&self.check, &self.username, &self.password)
    }
}

/// Counts `user`'s sessions other than the check's own, logged in as `user`.
pub async fn sessions(
    check: &DrainCheck,
    user: &str,
    password: &SecretValue,
) -> Result<u64, DrainError> {
    let count = async {
        match check.database {
            #[cfg(feature = "drain-check")]
            Database::Postgres => postgres::sessions(check, user, password).await,
            #[cfg(feature = "drain-check")]
            Database::Mysql => mysql::sessions(check, user, password).await,
            #[cfg(not(feature = "drain-check"))]
            _ => {
                let _ = (user, password);
                Err(DrainError::NotBuilt)
            }
        }
    };
    tokio::time::timeout(CHECK_TIMEOUT, count)
        .await
        .map_err(|_| DrainError::Timeout(CHECK_TIMEOUT))?
}

/// Waits until the old user holds no other session (checked no earlier than `min`, then
/// every [`DRAIN_POLL`]), or `grace` has passed, or a check fails. A failed check is not
/// retried: a refused login repeated every second would only fill the database's log (and
/// MySQL blocks a host after enough failed handshakes); the grace is the safe answer.
pub async fn wait_drained<C: SessionCount>(
    checker: &C,
    min: Duration,
    grace: Duration,
) -> DrainOutcome {
    let start = Instant::now();
    let grace_end = start + grace;
    let mut next = start + min.min(grace);
    loop {
        if next >= grace_end {
            tokio::time::sleep_until(grace_end).await;
            return DrainOutcome::Grace;
        }
        tokio::time::sleep_until(next).await;
        let counted = tokio::select! {
            biased;
            _ = tokio::time::sleep_until(grace_end) => return DrainOutcome::Grace,
            counted = checker.sessions() => counted,
        };
        match counted {
            Ok(0) => return DrainOutcome::Drained(start.elapsed()),
            Ok(_) => {}
            Err(e) => return DrainOutcome::CheckFailed(e.to_string()),
        }
        next = (next + DRAIN_POLL).max(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A database whose answers are scripted by time since the test began.
    struct Fake {
        start: Instant,
        /// `(from, answer)`: from this offset on, checks answer this (last match wins).
        script: Vec<(Duration, Result<u64, ()>)>,
        /// How long one check takes.
        latency: Duration,
        calls: Mutex<Vec<Duration>>,
    }

    impl Fake {
        fn new(script: Vec<(u64, Result<u64, ()>)>) -> Fake {
            Fake {
                start: Instant::now(),
                script: script
                    .into_iter()
                    .map(|(ms, a)| (Duration::from_millis(ms), a))
                    .collect(),
                latency: Duration::from_millis(20),
                calls: Mutex::new(Vec::new()),
            }
        }

        fn calls(&self) -> Vec<Duration> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }
    }

    impl SessionCount for Fake {
        fn sessions(&self) -> impl Future<Output = Result<u64, DrainError>> + Send {
            let at = self.start.elapsed();
            if let Ok(mut calls) = self.calls.lock() {
                calls.push(at);
            }
            let answer = self
                .script
                .iter()
                .rev()
                .find(|(from, _)| *from <= at)
                .map(|(_, a)| *a)
                .unwrap_or(Ok(1));
            let latency = self.latency;
            async move {
                tokio::time::sleep(latency).await;
                answer.map_err(|()| DrainError::Auth("refused".into()))
            }
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn idle_user_is_revoked_at_the_minimum_not_before() {
        let fake = Fake::new(vec![(0, Ok(0))]);
        let out = wait_drained(&fake, 2 * S, 60 * S).await;
        assert_eq!(out, DrainOutcome::Drained(2 * S + fake.latency));
        assert_eq!(fake.calls(), vec![2 * S], "no check before the minimum");
    }

    #[tokio::test(start_paused = true)]
    async fn revoke_follows_the_reconnect_within_a_poll() {
        // The app holds a session until 7.5 s, then has moved to the new user.
        let fake = Fake::new(vec![(0, Ok(1)), (7_500, Ok(0))]);
        let out = wait_drained(&fake, 2 * S, 60 * S).await;
        let DrainOutcome::Drained(after) = out else {
            panic!("expected drained, got {out:?}");
        };
        assert!(after > Duration::from_millis(7_500), "{after:?}");
        assert!(
            after <= Duration::from_millis(8_500) + fake.latency,
            "{after:?}"
        );
        let calls = fake.calls();
        assert_eq!(calls.first(), Some(&(2 * S)));
        for pair in calls.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= S && gap <= S + fake.latency, "poll gap {gap:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_that_never_close_end_at_the_grace() {
        let fake = Fake::new(vec![(0, Ok(3))]);
        let before = Instant::now();
        let out = wait_drained(&fake, 2 * S, 5 * S).await;
        assert_eq!(out, DrainOutcome::Grace);
        assert_eq!(before.elapsed(), 5 * S, "exactly at the grace");
        assert_eq!(fake.calls().len(), 3, "checks at 2, 3 and 4 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_check_falls_back_at_once_and_is_not_repeated() {
        let fake = Fake::new(vec![(0, Err(()))]);
        let out = wait_drained(&fake, 2 * S, 30 * S).await;
        assert!(
            matches!(&out, DrainOutcome::CheckFailed(e) if e.contains("refused")),
            "{out:?}"
        );
        assert_eq!(fake.calls().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_grace_shorter_than_the_minimum_wins() {
        let fake = Fake::new(vec![(0, Ok(0))]);
        let before = Instant::now();
        let out = wait_drained(&fake, 2 * S, S).await;
        assert_eq!(out, DrainOutcome::Grace);
        assert_eq!(before.elapsed(), S);
        assert!(fake.calls().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_check_does_not_outlast_the_grace() {
        let mut fake = Fake::new(vec![(0, Ok(0))]);
        fake.latency = 10 * S;
        let before = Instant::now();
        let out = wait_drained(&fake, 2 * S, 4 * S).await;
        assert_eq!(out, DrainOutcome::Grace);
        assert_eq!(before.elapsed(), 4 * S);
    }

    #[cfg(not(feature = "drain-check"))]
    #[tokio::test]
    async fn without_the_feature_the_check_says_so() {
        let check: DrainCheck = "postgres://db/app".parse().expect("valid");
        let err = sessions(&check, "u", &SecretValue::new("p"))
            .await
            .expect_err("not built");
        assert!(matches!(err, DrainError::NotBuilt));
    }
}
