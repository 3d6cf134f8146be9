//! [`LogLimit`]: at most one warning a second from one place in the code, however often
//! the caller makes it happen.
//!
//! A keystore or daemon that cannot answer fails every request, and whoever sends the
//! requests would set the rate of the lines in the log: a flood of bad keys during an
//! outage would fill the disk the logs go to. Each place that warns per request keeps a
//! `static` limit ([`warn_limited!`](crate::warn_limited) writes one), and the next line
//! it writes tells how many it held back (`held_back`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often one place may write its line.
pub const PERIOD: Duration = Duration::from_secs(1);

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// One place in the code's right to log, once per [`PERIOD`].
///
/// ```
/// use latchkey_core::log_limit::LogLimit;
///
/// fn warn_unavailable(error: &str) {
///     static LIMIT: LogLimit = LogLimit::new();
///     if let Some(held_back) = LIMIT.admit() {
///         tracing::warn!(%error, held_back, "keystore unavailable");
///     }
/// }
/// # warn_unavailable("locked");
/// ```
#[derive(Debug, Default)]
pub struct LogLimit {
    /// Milliseconds after `START` from which the next line may be written.
    next: AtomicU64,
    /// Lines held back since the last one written.
    held: AtomicU64,
}

impl LogLimit {
    /// A place that has not logged yet: its first line is written.
    pub const fn new() -> Self {
        LogLimit {
            next: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(held_back)` when the line may be written now, with how many were held back
    /// since the last one; `None` when this one is held back.
    pub fn admit(&self) -> Option<u64> {
        let now = u64::try_from(START.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next.load(Ordering::Relaxed);
        let period = u64::try_from(PERIOD.as_millis()).unwrap_or(u64::MAX);
        if now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now.saturating_add(period),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::AcqRel));
        }
        self.held.fetch_add(1, Ordering::AcqRel);
        None
    }
}

/// A [`LogLimit`] for each of many keys (a key's id, a client's address) at one place:
/// one key's flood holds back its own lines only, never another's (a sign-in told once a
/// second in all hid every other key's sign-in behind one key's flood). It keeps at most
/// [`KeyedLogLimit::KEYS`] keys and starts afresh past that, so that keys made up for the
/// purpose cannot grow it.
///
/// ```
/// use latchkey_core::log_limit::KeyedLogLimit;
///
/// static SIGN_INS: KeyedLogLimit = KeyedLogLimit::new();
/// assert_eq!(SIGN_INS.admit(1), Some(0));
/// assert_eq!(SIGN_INS.admit(1), None);
/// assert_eq!(SIGN_INS.admit(2), Some(0), "another key is told");
/// ```
#[derive(Debug, Default)]
pub struct KeyedLogLimit {
    limits: Mutex<BTreeMap<u128, LogLimit>>,
}

impl KeyedLogLimit {
    /// How many keys one place keeps.
    pub const KEYS: usize = 1024;

    /// A place that has not logged yet.
    pub const fn new() -> Self {
        KeyedLogLimit {
            limits: Mutex::new(BTreeMap::new()),
        }
    }

    /// [`LogLimit::admit`] for `key`.
    pub fn admit(&self, key: u128) -> Option<u64> {
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        if limits.len() >= Self::KEYS && !limits.contains_key(&key) {
            limits.clear();
        }
        limits.entry(key).or_default().admit()
    }
}

/// `tracing::warn!` at most once a [`PERIOD`] from this place, with a `held_back` field
/// counting the lines held back since the last one.
///
/// ```
/// let error = "locked";
/// latchkey_core::warn_limited!(%error, "keystore unavailable");
/// ```
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => { $crate::__log_limited!(warn, $($arg)+) };
}

/// [`warn_limited!`] at ERROR: a misconfiguration that every request meets (a remote
/// verifier's refused service key) is said at once, and a flood of requests does not
/// repeat it more than once a [`PERIOD`].
///
/// ```
/// latchkey_core::error_limited!("the daemon refused the service key");
/// ```
#[macro_export]
macro_rules! error_limited {
    ($($arg:tt)+) => { $crate::__log_limited!(error, $($arg)+) };
}

/// The body of [`warn_limited!`] and [`error_limited!`]: one limit per place.
#[doc(hidden)]
#[macro_export]
macro_rules! __log_limited {
    ($level:ident, $($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimit = $crate::log_limit::LogLimit::new();
        if let Some(held_back) = LIMIT.admit() {
            $crate::__tracing::$level!(held_back, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One key's flood holds back its own lines only, and keys made up for the purpose do
    /// not grow the place past [`KeyedLogLimit::KEYS`].
    #[test]
    fn each_key_has_its_own_limit_and_the_keys_are_bounded() {
        let limit = KeyedLogLimit::new();
        assert_eq!(limit.admit(7), Some(0));
        assert_eq!(limit.admit(7), None);
        assert_eq!(limit.admit(8), Some(0));
        for key in 100..(100 + KeyedLogLimit::KEYS as u128 * 2) {
            limit.admit(key);
            let held = limit.limits.lock().unwrap().len();
            assert!(held <= KeyedLogLimit::KEYS, "{held}");
        }
    }

    #[test]
    fn one_line_a_period_and_the_next_counts_the_ones_held_back() {
        let limit = LogLimit::new();
        let started = Instant::now();
        assert_eq!(limit.admit(), Some(0));
        let mut held = 0;
        while started.elapsed() < PERIOD / 2 {
            assert_eq!(limit.admit(), None);
            held += 1;
            if held == 100 {
                break;
            }
        }
        std::thread::sleep(PERIOD);
        assert_eq!(limit.admit(), Some(held));
        assert_eq!(limit.admit(), None);
    }

    #[test]
    fn each_place_has_its_own_limit() {
        let (a, b) = (LogLimit::new(), LogLimit::new());
        assert_eq!(a.admit(), Some(0));
        assert_eq!(b.admit(), Some(0));
    }
}
