//! An injectable clock, so expiry and grace periods are tested without sleeping.

use std::fmt::Debug;
use std::sync::Mutex;

use time::{Duration, OffsetDateTime};

/// The time source of a store.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current time, in UTC.
    fn now(&self) -> OffsetDateTime;

    /// The current time as nanoseconds since the Unix epoch: what the verification hot path
    /// needs (expiry, last use), without a calendar conversion.
    fn unix_nanos(&self) -> i128 {
        self.now().unix_timestamp_nanos()
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn unix_nanos(&self) -> i128 {
        system_unix_nanos()
    }
}

/// On Linux, `clock_gettime` itself: std's `SystemTime::duration_since` spends as many
/// instructions again on checked arithmetic, on every verification.
#[cfg(target_os = "linux")]
fn system_unix_nanos() -> i128 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    (i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec)).max(0)
}

#[cfg(not(target_os = "linux"))]
fn system_unix_nanos() -> i128 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_nanos() as i128)
}

/// A clock that moves only when told, for tests.
///
/// ```
/// use latchkey_core::{Clock, ManualClock};
/// let clock = ManualClock::new(time::macros::datetime!(2026-01-01 00:00 UTC));
/// clock.advance(time::Duration::hours(1));
/// assert_eq!(clock.now(), time::macros::datetime!(2026-01-01 01:00 UTC));
/// ```
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: OffsetDateTime) -> ManualClock {
        ManualClock(Mutex::new(at))
    }

    /// Moves the clock forward (or back, for a negative duration).
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }

    /// Sets the clock.
    pub fn set(&self, at: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_s_nanos_are_its_time() {
        let before = SystemClock.now().unix_timestamp_nanos();
        let nanos = SystemClock.unix_nanos();
        let after = SystemClock.now().unix_timestamp_nanos();
        assert!(
            before <= nanos && nanos <= after,
            "{before} {nanos} {after}"
        );
    }
}
