//! [`SkewWatch`]: this process's clock against a shared database's.
//!
//! On a database several daemons share, rate limits, credits' refills and expiry are
//! judged by each daemon's own wall clock against state they share: a daemon an hour
//! ahead finds a used-up limit won back and admits a burst early; one a day behind still
//! admits a key that expired. Keeping the clocks together is the operator's (NTP), and
//! this is how they hear that it is not done: the change follower compares the two clocks
//! once a minute and says so at WARN when they are more than [`TOLERATED`] apart, once
//! each time they part, and at INFO when they agree again.

use std::time::{Duration, Instant};

use super::Store;

/// How far this process's clock may be from the database's before it is said.
pub(crate) const TOLERATED: Duration = Duration::from_secs(1);

/// How often the clocks are compared.
const EVERY: Duration = Duration::from_secs(60);

/// What a comparison asks to be said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Said {
    /// The clocks parted: this process's is ahead (positive) or behind by so many ms.
    Apart { skew_ms: i64 },
    /// They agree again.
    Together,
}

/// The comparisons of one process, to say each parting once.
#[derive(Debug, Default)]
pub(crate) struct SkewWatch {
    checked: Option<Instant>,
    apart: bool,
}

impl SkewWatch {
    /// Compares the clocks when a minute has gone by since the last comparison, and logs
    /// what there is to say. A database that cannot be read tells nothing (the follower
    /// says that outage).
    pub(crate) fn check(&mut self, store: &Store) {
        if self.checked.is_some_and(|at| at.elapsed() < EVERY) {
            return;
        }
        self.checked = Some(Instant::now());
        let Ok(Some(skew)) = measure(store) else {
            return;
        };
        match self.judge(skew) {
            Some(Said::Apart { skew_ms }) => tracing::warn!(
                skew_ms,
                "this machine's clock is {:.1} s {} the database's: on a shared database rate \
                 limits, refills and expiry follow each daemon's clock, so keys are admitted \
                 early or late; synchronise the clocks (NTP)",
                skew_ms.unsigned_abs() as f64 / 1000.0,
                if skew_ms > 0 { "ahead of" } else { "behind" }
            ),
            Some(Said::Together) => {
                tracing::info!("this machine's clock agrees with the database's again");
            }
            None => {}
        }
    }

    /// What a comparison that found this process's clock `skew` nanoseconds ahead of the
    /// database's (behind when negative) asks to be said.
    pub(crate) fn judge(&mut self, skew: i128) -> Option<Said> {
        // Apart past the tolerance, together again within half of it: a skew that hovers
        // about the tolerance is not said every minute.
        let bound = if self.apart { TOLERATED / 2 } else { TOLERATED };
        let apart = skew.unsigned_abs() > bound.as_nanos();
        let said = match (apart, self.apart) {
            (true, false) => Some(Said::Apart {
                skew_ms: i64::try_from(skew / 1_000_000).unwrap_or(i64::MAX),
            }),
            (false, true) => Some(Said::Together),
            _ => None,
        };
        self.apart = apart;
        said
    }
}

/// How far ahead of the database's clock the store's is, in nanoseconds (behind when
/// negative): `None` on an embedded engine, or when the database took longer than half
/// of [`TOLERATED`] to answer, which leaves the comparison too loose.
pub(crate) fn measure(store: &Store) -> Result<Option<i128>, crate::StoreError> {
    let clock = &store.inner.clock;
    let before = clock.unix_nanos();
    let asked = Instant::now();
    let Some(database) = store.inner.db.clock()? else {
        return Ok(None);
    };
    // The answer's time is taken as the middle of the round trip (a wait for a pooled
    // connection included): off by half of it at most.
    if asked.elapsed() > TOLERATED / 2 {
        return Ok(None);
    }
    Ok(Some(skew(before, database, clock.unix_nanos())))
}

/// How far ahead of `database` this process's clock was, read at `before` and `after` the
/// database's answer: against the middle of the two.
fn skew(before: i128, database: i128, after: i128) -> i128 {
    before + (after - before) / 2 - database
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skew_is_against_the_middle_of_the_round_trip() {
        assert_eq!(skew(100, 50, 200), 100);
        assert_eq!(skew(100, 170, 140), -50);
    }

    #[test]
    fn a_parting_is_said_once_and_so_is_the_return() {
        let second = 1_000_000_000_i128;
        let mut watch = SkewWatch::default();
        assert_eq!(watch.judge(second / 2), None, "within the tolerance");
        assert_eq!(
            watch.judge(3_600 * second),
            Some(Said::Apart { skew_ms: 3_600_000 })
        );
        assert_eq!(watch.judge(3_600 * second), None, "said already");
        assert_eq!(
            watch.judge(second * 7 / 10),
            None,
            "not within half of it yet"
        );
        assert_eq!(watch.judge(second * 4 / 10), Some(Said::Together));
        assert_eq!(watch.judge(second * 9 / 10), None, "within the tolerance");
        assert_eq!(
            watch.judge(-2 * second),
            Some(Said::Apart { skew_ms: -2_000 })
        );
        assert_eq!(watch.judge(-2 * second), None);
    }
}
