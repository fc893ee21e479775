//! Wall-clock time derived from the monotonic clock the agent plans with.
//!
//! Every deadline is planned on tokio's monotonic [`Instant`]; the file's `expires_at`, the
//! readiness check and `/status` need wall-clock times. Deriving both from one anchor keeps
//! them consistent with each other, including under tokio's paused (virtual) clock, where
//! the simulator advances hours in milliseconds and `SystemTime::now()` would not move.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

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
}
