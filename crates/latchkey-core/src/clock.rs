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

    /// Nanoseconds on a clock that never goes back, from an arbitrary origin: what the rate
    /// limits a process keeps in memory measure their intervals by. A wall clock set back
    /// (an NTP step, a virtual machine restored) would refuse a busy key for as long as the
    /// step. By default, [`Clock::unix_nanos`]: a clock that is never set back may keep it.
    fn monotonic_nanos(&self) -> u64 {
        u64::try_from(self.unix_nanos()).unwrap_or(0)
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

    fn monotonic_nanos(&self) -> u64 {
        system_monotonic_nanos()
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

#[cfg(target_os = "linux")]
fn system_monotonic_nanos() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let nanos = i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec);
    u64::try_from(nanos).unwrap_or(0)
}

#[cfg(not(target_os = "linux"))]
fn system_monotonic_nanos() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let elapsed = ORIGIN.get_or_init(std::time::Instant::now).elapsed();
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// A clock that moves only when told, for tests.
///
/// Like a machine's clocks, it keeps two times: the wall clock ([`Clock::now`]) goes where
/// it is told, back too; the monotonic one ([`Clock::monotonic_nanos`]) follows it forward
/// and stays where it is when the wall clock is set back.
///
/// ```
/// use latchkey_core::{Clock, ManualClock};
/// let clock = ManualClock::new(time::macros::datetime!(2026-01-01 00:00 UTC));
/// clock.advance(time::Duration::hours(1));
/// assert_eq!(clock.now(), time::macros::datetime!(2026-01-01 01:00 UTC));
/// let monotonic = clock.monotonic_nanos();
/// clock.advance(time::Duration::hours(-1));
/// assert_eq!(clock.monotonic_nanos(), monotonic);
/// ```
#[derive(Debug)]
pub struct ManualClock(Mutex<Reading>);

#[derive(Debug)]
struct Reading {
    wall: OffsetDateTime,
    monotonic: u64,
}

impl Reading {
    fn move_by(&mut self, by: Duration) {
        self.wall += by;
        let forward = u64::try_from(by.whole_nanoseconds()).unwrap_or(0);
        self.monotonic = self.monotonic.saturating_add(forward);
    }
}

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: OffsetDateTime) -> ManualClock {
        ManualClock(Mutex::new(Reading {
            wall: at,
            monotonic: 0,
        }))
    }

    fn reading(&self) -> std::sync::MutexGuard<'_, Reading> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the clock forward (or back, for a negative duration).
    pub fn advance(&self, by: Duration) {
        self.reading().move_by(by);
    }

    /// Sets the clock.
    pub fn set(&self, at: OffsetDateTime) {
        let mut reading = self.reading();
        let by = at - reading.wall;
        reading.move_by(by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        self.reading().wall
    }

    fn monotonic_nanos(&self) -> u64 {
        self.reading().monotonic
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

    #[test]
    fn the_system_clock_s_monotonic_time_moves_with_the_wall_clock() {
        let (wall, monotonic) = (SystemClock.unix_nanos(), SystemClock.monotonic_nanos());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let wall = SystemClock.unix_nanos() - wall;
        let monotonic = i128::from(SystemClock.monotonic_nanos() - monotonic);
        // Both measured the same sleep, apart from an NTP step meanwhile.
        assert!(monotonic >= 20_000_000, "{monotonic}");
        assert!(
            (wall - monotonic).abs() < 1_000_000_000,
            "{wall} {monotonic}"
        );
    }

    #[test]
    fn a_manual_clock_set_back_keeps_its_monotonic_time() {
        let at = time::macros::datetime!(2026-01-01 00:00 UTC);
        let clock = ManualClock::new(at);
        clock.advance(Duration::seconds(5));
        assert_eq!(clock.monotonic_nanos(), 5_000_000_000);
        clock.set(at - Duration::hours(1));
        assert_eq!(clock.now(), at - Duration::hours(1));
        assert_eq!(clock.monotonic_nanos(), 5_000_000_000);
        clock.set(at);
        assert_eq!(clock.monotonic_nanos(), 3_605_000_000_000);
    }
}
