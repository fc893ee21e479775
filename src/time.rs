//! Wall-clock time derived from the monotonic clock the agent plans with.
//!
//! Every deadline is planned on tokio's monotonic [`Instant`]; the file's `expires_at`, the
//! readiness check and `/status` need wall-clock times. Deriving both from one anchor keeps
//! them consistent with each other, including under tokio's paused (virtual) clock, where
//! the simulator advances hours in milliseconds and `SystemTime::now()` would not move.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// First second RFC 3339 (four-digit years) cannot show: year 10000.
pub(crate) const RFC3339_LIMIT_SECS: u64 = 253_402_300_800;

thread_local! {
    /// A simulation's own anchor (see [`pin_wall_clock`]); `None` everywhere else.
    static PINNED: std::cell::Cell<Option<(Instant, SystemTime)>> = const { std::cell::Cell::new(None) };
}

/// The first reading of both clocks, taken together.
fn anchor() -> (Instant, SystemTime) {
    if let Some(pinned) = PINNED.with(std::cell::Cell::get) {
        return pinned;
    }
    static ANCHOR: OnceLock<(std::time::Instant, SystemTime)> = OnceLock::new();
    let (mono, wall) = *ANCHOR.get_or_init(|| (std::time::Instant::now(), SystemTime::now()));
    (Instant::from_std(mono), wall)
}

/// Makes "now" read `wall` on this thread's wall clock, from here on. For the deterministic
/// simulator, which runs each seed on a thread of its own: wall-clock times (and so their
/// rounding to whole seconds in the file) then replay exactly, whenever the seed runs.
pub fn pin_wall_clock(wall: SystemTime) {
    PINNED.with(|p| p.set(Some((Instant::now(), wall))));
}

/// The wall-clock time of a point on the monotonic clock.
pub fn to_system(at: Instant) -> SystemTime {
    let (mono, wall) = anchor();
    if at >= mono {
        wall + (at - mono)
    } else {
        wall - (mono - at)
    }
}

/// Now, on the wall clock, as the agent's monotonic clock sees it.
pub fn wall_now() -> SystemTime {
    to_system(Instant::now())
}

/// Rounded down to a tenth of a second, for log lines.
pub fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}

/// RFC 3339 UTC with whole seconds (`2026-11-26T01:02:03Z`), or `None` for a time before 1970
/// or after 9999, which humantime cannot format (it would panic).
pub fn rfc3339(t: SystemTime) -> Option<String> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    if secs >= RFC3339_LIMIT_SECS {
        return None;
    }
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wall_time_follows_virtual_time() {
        let before = wall_now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let after = wall_now();
        assert_eq!(
            after.duration_since(before).ok(),
            Some(Duration::from_secs(3600))
        );
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            to_system(soon).duration_since(after).ok(),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn rfc3339_is_utc_with_seconds_and_never_panics() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_654_923_456);
        assert_eq!(rfc3339(t).unwrap(), "2026-11-26T01:02:03Z");
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(1)), None);
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(RFC3339_LIMIT_SECS)),
            None
        );
    }
}
