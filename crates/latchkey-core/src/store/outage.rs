//! [`Outage`]: a background loop's failures, logged once an outage instead of once a try.
//!
//! A loop that retries every second (the expiry sweep, the background jobs, and on a shared
//! database the follower and its listener) would otherwise write a line a second for as
//! long as the database is away or the disk full. It writes the first failure, then one
//! reminder a minute with how many tries failed, and one line when it works again.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often an outage that goes on is logged again.
const REMIND: Duration = Duration::from_secs(60);

/// One loop's outage, if it is in one.
#[derive(Debug)]
pub(crate) struct Outage {
    /// What fails, as the log says it ("reading the cluster's changes").
    what: &'static str,
    failing: Option<Failing>,
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    failures: u64,
    reminded: Instant,
}

/// What a try's outcome asks to be logged.
#[derive(Debug, PartialEq, Eq)]
enum Said {
    Nothing,
    /// The first failure of an outage.
    Began,
    /// A reminder: this many tries failed in all, since this long.
    Still(u64, Duration),
    /// Working again after this many failed tries, this long.
    Ended(u64, Duration),
}

impl Outage {
    pub(crate) const fn new(what: &'static str) -> Outage {
        Outage {
            what,
            failing: None,
        }
    }

    /// A try failed with `error`.
    pub(crate) fn failed(&mut self, error: &dyn Display) {
        match self.fail(Instant::now()) {
            Said::Began => tracing::warn!(%error, "{} failed; retrying every second", self.what),
            Said::Still(failures, down) => tracing::warn!(
                %error,
                failures,
                down_s = down.as_secs(),
                "{} still fails",
                self.what
            ),
            Said::Nothing | Said::Ended(..) => {}
        }
    }

    /// A try succeeded.
    pub(crate) fn succeeded(&mut self) {
        if let Said::Ended(failures, down) = self.succeed(Instant::now()) {
            tracing::info!(
                failures,
                down_s = down.as_secs(),
                "{} works again",
                self.what
            );
        }
    }

    /// Whether the last try failed.
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.is_some()
    }

    fn fail(&mut self, now: Instant) -> Said {
        let Some(failing) = &mut self.failing else {
            self.failing = Some(Failing {
                since: now,
                failures: 1,
                reminded: now,
            });
            return Said::Began;
        };
        failing.failures += 1;
        if now.duration_since(failing.reminded) < REMIND {
            return Said::Nothing;
        }
        failing.reminded = now;
        Said::Still(failing.failures, now.duration_since(failing.since))
    }

    fn succeed(&mut self, now: Instant) -> Said {
        match self.failing.take() {
            None => Said::Nothing,
            Some(failing) => Said::Ended(failing.failures, now.duration_since(failing.since)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_says_its_start_a_reminder_a_minute_and_its_end() {
        let mut outage = Outage::new("reading");
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(outage.succeed(at(0)), Said::Nothing);
        assert_eq!(outage.fail(at(0)), Said::Began);
        for s in 1..60 {
            assert_eq!(outage.fail(at(s)), Said::Nothing, "{s}");
        }
        assert_eq!(
            outage.fail(at(60)),
            Said::Still(61, Duration::from_secs(60))
        );
        assert_eq!(outage.fail(at(61)), Said::Nothing);
        assert!(outage.is_failing());
        assert_eq!(
            outage.succeed(at(62)),
            Said::Ended(62, Duration::from_secs(62))
        );
        assert!(!outage.is_failing());
        assert_eq!(outage.fail(at(63)), Said::Began, "a new outage");
    }
}
