//! [`Outage`]: a background loop's failures, logged once an outage instead of once a try.
//!
//! A loop that retries every second (the expiry sweep, the background jobs, and on a shared
//! database the follower and its listener) would otherwise write a line a second for as
//! long as the database is away or the disk full. It writes the first failure, then one
//! reminder a minute with how many tries failed, and one line when it works again.
//!
//! A connection that keeps dropping (a proxy that ends idle connections) would write two
//! lines a drop. So an outage's start is said only a minute or more after the loop's last
//! line; one that begins sooner goes on quietly, counted, and is said (with the count of
//! the quiet ones before it) once that minute is up, if it still lasts, or with the next
//! outage said. Whatever fails, a line comes at least once a minute while failures go on.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// The least time between two lines of one loop, while it fails.
const REMIND: Duration = Duration::from_secs(60);

/// One loop's outage, if it is in one.
#[derive(Debug)]
pub(crate) struct Outage {
    /// What fails, as the log says it ("reading the cluster's changes").
    what: &'static str,
    failing: Option<Failing>,
    /// When this loop last logged a line.
    said_at: Option<Instant>,
    /// Outages that began and ended without a line since the last one.
    quiet: u64,
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    failures: u64,
    /// Whether anything was said of it: its start or a reminder.
    said: bool,
}

/// What a try's outcome asks to be logged.
#[derive(Debug, PartialEq, Eq)]
enum Said {
    Nothing,
    /// The first failure of an outage said, after this many outages unsaid.
    Began {
        quiet: u64,
    },
    /// A reminder: this many tries failed in all, since this long, after this many outages
    /// unsaid.
    Still {
        failures: u64,
        down: Duration,
        quiet: u64,
    },
    /// Working again after this many failed tries, this long.
    Ended(u64, Duration),
}

impl Outage {
    pub(crate) const fn new(what: &'static str) -> Outage {
        Outage {
            what,
            failing: None,
            said_at: None,
            quiet: 0,
        }
    }

    /// A try failed with `error`.
    pub(crate) fn failed(&mut self, error: &dyn Display) {
        match self.fail(Instant::now()) {
            Said::Began { quiet: 0 } => tracing::warn!(%error, "{} failed; retrying", self.what),
            Said::Began { quiet } => tracing::warn!(
                %error,
                earlier_outages = quiet,
                "{} failed; retrying (it failed and recovered {quiet} times since the last line)",
                self.what
            ),
            Said::Still {
                failures,
                down,
                quiet,
            } => tracing::warn!(
                %error,
                failures,
                down_s = down.as_secs(),
                earlier_outages = quiet,
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

    /// Whether a line may be said at `now`: a minute after the last.
    fn may_say(&self, now: Instant) -> bool {
        self.said_at
            .is_none_or(|at| now.duration_since(at) >= REMIND)
    }

    fn fail(&mut self, now: Instant) -> Said {
        let may_say = self.may_say(now);
        let failing = self.failing.get_or_insert(Failing {
            since: now,
            failures: 0,
            said: false,
        });
        failing.failures += 1;
        if !may_say {
            return Said::Nothing;
        }
        let quiet = std::mem::take(&mut self.quiet);
        self.said_at = Some(now);
        let said = if failing.failures == 1 {
            Said::Began { quiet }
        } else {
            Said::Still {
                failures: failing.failures,
                down: now.duration_since(failing.since),
                quiet,
            }
        };
        failing.said = true;
        said
    }

    fn succeed(&mut self, now: Instant) -> Said {
        let Some(failing) = self.failing.take() else {
            return Said::Nothing;
        };
        if !failing.said {
            self.quiet += 1;
            return Said::Nothing;
        }
        self.said_at = Some(now);
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
        assert_eq!(outage.fail(at(0)), Said::Began { quiet: 0 });
        for s in 1..60 {
            assert_eq!(outage.fail(at(s)), Said::Nothing, "{s}");
        }
        let still = |failures, down, quiet| Said::Still {
            failures,
            down: Duration::from_secs(down),
            quiet,
        };
        assert_eq!(outage.fail(at(60)), still(61, 60, 0));
        assert_eq!(outage.fail(at(61)), Said::Nothing);
        assert!(outage.is_failing());
        assert_eq!(
            outage.succeed(at(62)),
            Said::Ended(62, Duration::from_secs(62))
        );
        assert!(!outage.is_failing());
        assert_eq!(
            outage.fail(at(200)),
            Said::Began { quiet: 0 },
            "a new outage"
        );
    }

    /// Short outages one after another (50 s down, 1 s up, again and again) get a line a
    /// minute or so, each saying how many went by unsaid, never silence.
    #[test]
    fn outages_one_after_another_are_said_once_a_minute() {
        let mut outage = Outage::new("listening");
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut said = Vec::new();
        for cycle in 0..10 {
            let begin = cycle * 51;
            for s in begin..begin + 50 {
                let line = outage.fail(at(s));
                if line != Said::Nothing {
                    said.push((s, line));
                }
            }
            let line = outage.succeed(at(begin + 50));
            if line != Said::Nothing {
                said.push((begin + 50, line));
            }
        }
        assert_eq!(said[0], (0, Said::Began { quiet: 0 }));
        // Never more than a minute without a line while failures go on, and never two lines
        // within a minute but a start and its end.
        let times: Vec<u64> = said.iter().map(|(s, _)| *s).collect();
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] <= 61, "{said:?}");
        }
        assert!(said.len() <= 2 * (510 / 60 + 1), "{said:?}");
    }

    /// A real outage that begins within a minute of a short one is said within a minute
    /// of the last line, not a minute after it began.
    #[test]
    fn an_outage_soon_after_a_short_one_is_said_at_the_minute() {
        let mut outage = Outage::new("reading");
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(outage.fail(at(0)), Said::Began { quiet: 0 });
        assert_eq!(
            outage.succeed(at(2)),
            Said::Ended(1, Duration::from_secs(2))
        );
        assert_eq!(outage.fail(at(10)), Said::Nothing);
        assert_eq!(outage.succeed(at(11)), Said::Nothing);
        for s in 20..62 {
            assert_eq!(outage.fail(at(s)), Said::Nothing, "{s}");
        }
        assert_eq!(
            outage.fail(at(62)),
            Said::Still {
                failures: 43,
                down: Duration::from_secs(42),
                quiet: 1
            }
        );
    }
}
