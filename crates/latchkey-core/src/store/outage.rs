//! [`Outage`]: a background loop's failures, logged once an outage instead of once a try.
//!
//! A loop that retries every second (the expiry sweep, the background jobs, and on a shared
//! database the follower and its listener) would otherwise write a line a second for as
//! long as the database is away or the disk full. It writes the first failure, then one
//! reminder a minute with how many tries failed, and one line when it works again. A
//! connection that keeps dropping (a proxy that ends idle connections) would write two
//! lines a drop: a failure within a minute of the last outage's end goes on quietly, said
//! only if it lasts a minute (the reminder), and then its end too.

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
    /// When the last outage ended.
    ended: Option<Instant>,
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    failures: u64,
    reminded: Instant,
    /// Whether anything was said of it: its start or a reminder.
    said: bool,
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
            ended: None,
        }
    }

    /// A try failed with `error`.
    pub(crate) fn failed(&mut self, error: &dyn Display) {
        match self.fail(Instant::now()) {
            Said::Began => tracing::warn!(%error, "{} failed; retrying", self.what),
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
            let flapping = self
                .ended
                .is_some_and(|ended| now.duration_since(ended) < REMIND);
            self.failing = Some(Failing {
                since: now,
                failures: 1,
                reminded: now,
                said: !flapping,
            });
            return if flapping { Said::Nothing } else { Said::Began };
        };
        failing.failures += 1;
        if now.duration_since(failing.reminded) < REMIND {
            return Said::Nothing;
        }
        failing.reminded = now;
        failing.said = true;
        Said::Still(failing.failures, now.duration_since(failing.since))
    }

    fn succeed(&mut self, now: Instant) -> Said {
        let Some(failing) = self.failing.take() else {
            return Said::Nothing;
        };
        self.ended = Some(now);
        if !failing.said {
            return Said::Nothing;
        }
        Said::Ended(failing.failures, now.duration_since(failing.since))
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
        assert_eq!(outage.fail(at(200)), Said::Began, "a new outage");
    }

    #[test]
    fn a_connection_that_keeps_dropping_is_said_once_a_minute() {
        let mut outage = Outage::new("listening");
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(outage.fail(at(0)), Said::Began);
        assert_eq!(
            outage.succeed(at(1)),
            Said::Ended(1, Duration::from_secs(1))
        );
        // Dropped again and again within the minute: nothing said.
        for s in (2..40).step_by(2) {
            assert_eq!(outage.fail(at(s)), Said::Nothing, "{s}");
            assert_eq!(outage.succeed(at(s + 1)), Said::Nothing, "{s}");
        }
        // A drop that lasts a minute is reminded of, and its end said.
        assert_eq!(outage.fail(at(50)), Said::Nothing);
        assert_eq!(
            outage.fail(at(110)),
            Said::Still(2, Duration::from_secs(60))
        );
        assert_eq!(
            outage.succeed(at(111)),
            Said::Ended(2, Duration::from_secs(61))
        );
        // A minute after the last end, a drop is a new outage.
        assert_eq!(outage.fail(at(171)), Said::Began);
    }
}
