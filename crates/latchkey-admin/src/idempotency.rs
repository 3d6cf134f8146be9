//! The `Idempotency-Key` of `POST /v1/usage`: a report sent again under the key it was
//! first sent with (a remote verifier whose answer was lost, or came after its timeout)
//! is recorded once.
//!
//! In memory and bounded: the newest [`CAPACITY`] keys per daemon. A report sent again
//! after its key was forgotten (a restart, or that many reports since), or to another
//! daemon on a shared database, is recorded again, as every report was before keys.

use std::sync::Mutex;

use quick_cache::sync::Cache;
use uuid::Uuid;

/// The most keys remembered.
pub(crate) const CAPACITY: usize = 16_384;

/// The longest key taken, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 255;

/// Keys claimed by their caller's key id (`None`: the operator), so that one caller's
/// keys never stand for another's reports.
#[derive(Debug)]
pub(crate) struct SeenReports {
    seen: Cache<(Option<Uuid>, String), ()>,
    /// A claim is a look and an insert: one at a time.
    claiming: Mutex<()>,
}

impl Default for SeenReports {
    fn default() -> SeenReports {
        SeenReports {
            seen: Cache::new(CAPACITY),
            claiming: Mutex::new(()),
        }
    }
}

impl SeenReports {
    /// Claims `key` for `caller`: `false` when a report was claimed under it before (it is
    /// recorded, or being recorded).
    pub(crate) fn claim(&self, caller: Option<Uuid>, key: &str) -> bool {
        let _one = self.claiming.lock().unwrap_or_else(|e| e.into_inner());
        let entry = (caller, key.to_owned());
        if self.seen.get(&entry).is_some() {
            return false;
        }
        self.seen.insert(entry, ());
        true
    }

    /// Gives up a claim whose report was not recorded (refused, or the store failed), so
    /// that the report sent again under it is.
    pub(crate) fn release(&self, caller: Option<Uuid>, key: &str) {
        self.seen.remove(&(caller, key.to_owned()));
    }
}

/// Whether `key` is one this daemon takes: 1 to [`MAX_KEY_BYTES`] visible ASCII
/// characters.
pub(crate) fn is_valid(key: &str) -> bool {
    (1..=MAX_KEY_BYTES).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_claimed_once_per_caller_until_released() {
        let seen = SeenReports::default();
        let (a, b) = (Some(Uuid::from_u128(1)), Some(Uuid::from_u128(2)));
        assert!(seen.claim(a, "r1"));
        assert!(!seen.claim(a, "r1"));
        assert!(seen.claim(b, "r1"), "another caller's key is its own");
        assert!(seen.claim(None, "r1"));
        seen.release(a, "r1");
        assert!(seen.claim(a, "r1"));
        assert!(is_valid("0190a1b2-aaaa-7bbb-8ccc-0123456789ab"));
        assert!(!is_valid("") && !is_valid("a b") && !is_valid(&"a".repeat(256)));
    }
}
