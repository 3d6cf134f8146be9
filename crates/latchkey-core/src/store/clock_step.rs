//! [`StepWatch`]: this process's wall clock stepping, against its monotonic clock.
//!
//! Expiry and the end of a rotation's grace follow the store's wall clock, as a token's
//! expiry does everywhere: a clock stepped back (an NTP step after a drift ahead, a clock
//! set by hand) admits again, until it catches up, the keys that expired in the span it
//! went back over, and one stepped forward refuses early the keys expiring in the span it
//! skipped. Neither is undone here, since either clock may be the wrong one (a step back
//! after a drift ahead puts right what the drift did). What a process can do is say it: the
//! jobs thread looks once a second and logs a step of more than [`STEP`] at WARN.

use std::time::Duration;

use crate::clock::Clock;

/// The least step said: the jobs thread's own lateness stays well below it.
pub(crate) const STEP: Duration = Duration::from_secs(2);

/// The wall clock and the monotonic clock as last read (the store's: a test's manual
/// clock keeps both).
#[derive(Debug)]
pub(crate) struct StepWatch {
    wall: i128,
    monotonic: u64,
}

impl StepWatch {
    pub(crate) fn new(clock: &dyn Clock) -> StepWatch {
        StepWatch {
            wall: clock.unix_nanos(),
            monotonic: clock.monotonic_nanos(),
        }
    }

    /// How far the wall clock stepped since the last look, in nanoseconds (ahead positive,
    /// back negative), when by [`STEP`] or more.
    pub(crate) fn step(&mut self, clock: &dyn Clock) -> Option<i128> {
        let (wall, monotonic) = (clock.unix_nanos(), clock.monotonic_nanos());
        let elapsed = i128::from(monotonic.saturating_sub(self.monotonic));
        let step = wall.saturating_sub(self.wall).saturating_sub(elapsed);
        (self.wall, self.monotonic) = (wall, monotonic);
        (step.unsigned_abs() >= STEP.as_nanos()).then_some(step)
    }

    /// Looks, and says a step at WARN.
    pub(crate) fn say(&mut self, clock: &dyn Clock) {
        let Some(step) = self.step(clock) else {
            return;
        };
        let by = Duration::from_nanos(u64::try_from(step.unsigned_abs()).unwrap_or(u64::MAX));
        if step < 0 {
            tracing::warn!(
                step_ms = by.as_millis(),
                "the wall clock stepped back by {by:?}: until it catches up, keys that expired in that span (and rotated keys whose grace ended in it) authenticate again, and new records are stamped before older ones"
            );
        } else {
            tracing::warn!(
                step_ms = by.as_millis(),
                "the wall clock stepped forward by {by:?}: keys expiring in that span are refused from now on"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn a_step_back_is_told_and_time_going_by_is_not() {
        // A manual clock keeps a monotonic time that follows the wall clock forward and
        // stays put when it is set back, as a machine's does.
        let clock = ManualClock::new(OffsetDateTime::now_utc());
        let mut watch = StepWatch::new(&clock);
        assert_eq!(watch.step(&clock), None);
        clock.advance(time::Duration::hours(1));
        assert_eq!(watch.step(&clock), None, "time going by");
        clock.advance(time::Duration::minutes(-10));
        assert_eq!(watch.step(&clock), Some(-600_000_000_000));
        assert_eq!(watch.step(&clock), None, "told once");
        clock.advance(time::Duration::seconds(-1));
        assert_eq!(watch.step(&clock), None, "a second is no step");
    }

    /// A clock whose wall time is put ahead of its monotonic time.
    #[derive(Debug)]
    struct Ahead(ManualClock, std::sync::atomic::AtomicI64);

    impl Clock for Ahead {
        fn now(&self) -> OffsetDateTime {
            let ahead = self.1.load(std::sync::atomic::Ordering::Relaxed);
            self.0.now() + time::Duration::nanoseconds(ahead)
        }

        fn monotonic_nanos(&self) -> u64 {
            self.0.monotonic_nanos()
        }
    }

    #[test]
    fn a_step_forward_is_told() {
        let clock = Ahead(ManualClock::new(OffsetDateTime::now_utc()), 0.into());
        let mut watch = StepWatch::new(&clock);
        clock
            .1
            .store(3_600_000_000_000, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(watch.step(&clock), Some(3_600_000_000_000));
    }
}
