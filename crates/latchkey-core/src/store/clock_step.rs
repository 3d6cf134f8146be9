//! [`StepWatch`]: this process's wall clock stepping, against its monotonic clock.
//!
//! Expiry and the end of a rotation's grace follow the store's wall clock, as a token's
//! expiry does everywhere: a clock stepped back (an NTP step after a drift ahead, a clock
//! set by hand) admits again, until it catches up, the keys that expired in the span it
//! went back over, and one stepped forward refuses early the keys expiring in the span it
//! skipped. Neither is undone here, since either clock may be the wrong one (a step back
//! after a drift ahead puts right what the drift did). What a process can do is say it: the
//! jobs thread looks once a second and logs a step of more than [`STEP`] at WARN.

use std::time::{Duration, Instant};

use crate::clock::Clock;

/// The least step said: the jobs thread's own lateness stays well below it.
pub(crate) const STEP: Duration = Duration::from_secs(2);

/// The wall clock and the monotonic clock as last read.
#[derive(Debug)]
pub(crate) struct StepWatch {
    wall: i128,
    monotonic: Instant,
}

impl StepWatch {
    pub(crate) fn new(clock: &dyn Clock) -> StepWatch {
        StepWatch {
            wall: clock.unix_nanos(),
            monotonic: Instant::now(),
        }
    }

    /// How far the wall clock stepped since the last look, in nanoseconds (ahead positive,
    /// back negative), when by [`STEP`] or more.
    pub(crate) fn step(&mut self, clock: &dyn Clock) -> Option<i128> {
        let (wall, monotonic) = (clock.unix_nanos(), Instant::now());
        let elapsed = i128::try_from(monotonic.duration_since(self.monotonic).as_nanos())
            .unwrap_or(i128::MAX);
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
    fn a_step_either_way_is_told_and_time_going_by_is_not() {
        let clock = ManualClock::new(OffsetDateTime::now_utc());
        let mut watch = StepWatch::new(&clock);
        // The manual clock stands still while real time goes by: a step back by as much,
        // well below `STEP`.
        assert_eq!(watch.step(&clock), None);
        clock.advance(time::Duration::minutes(-10));
        let back = watch.step(&clock).expect("a step back");
        assert!(
            (-600_100_000_000..=-600_000_000_000).contains(&back),
            "{back}"
        );
        assert_eq!(watch.step(&clock), None, "told once");
        clock.advance(time::Duration::hours(1));
        let ahead = watch.step(&clock).expect("a step forward");
        assert!(
            (3_599_900_000_000..=3_600_000_000_000).contains(&ahead),
            "{ahead}"
        );
        clock.advance(time::Duration::seconds(1));
        assert_eq!(watch.step(&clock), None, "a second is no step");
    }
}
