//! The `Idempotency-Key` of `POST /v1/usage`: a report sent again under the key it was
//! first sent with (a remote verifier whose answer was lost, or came after its timeout)
//! is recorded once.
//!
//! In memory and bounded: the newest [`CAPACITY`] keys per daemon, first in, first out. A
//! report sent again after its key was forgotten (a restart, or that many reports since),
//! or to another daemon on a shared database, is recorded again, as every report was
//! before keys.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

/// The most keys remembered.
pub(crate) const CAPACITY: usize = 16_384;

/// The longest key taken, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 255;

/// A key, by its caller's key id (`None`: the operator), so that one caller's keys never
/// stand for another's reports.
type Entry = (Option<Uuid>, String);

/// Where a report under a key stands, and the report's fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Recording(u64),
    Recorded(u64),
}

impl State {
    fn report(self) -> u64 {
        match self {
            State::Recording(report) | State::Recorded(report) => report,
        }
    }
}

/// What a claim found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The key is this request's: record the report, then [`Claimed::recorded`].
    New(Claimed),
    /// A report under the key is recorded.
    Recorded,
    /// A report under the key is being recorded: its outcome is not known yet.
    Recording,
    /// The key came with another report: the reporter used it twice (a report sent
    /// again is sent as it was).
    OtherReport,
}

#[derive(Debug, Default)]
struct Seen {
    states: HashMap<Entry, State>,
    order: VecDeque<Entry>,
}

/// The keys of the reports recorded lately.
#[derive(Debug, Default)]
pub(crate) struct SeenReports {
    seen: Arc<Mutex<Seen>>,
}

impl SeenReports {
    /// Claims `key` for `caller`'s report, `report` its fingerprint ([`fingerprint`]).
    pub(crate) fn claim(&self, caller: Option<Uuid>, key: &str, report: u64) -> Claim {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = (caller, key.to_owned());
        match seen.states.get(&entry) {
            Some(state) if state.report() != report => return Claim::OtherReport,
            Some(State::Recorded(_)) => return Claim::Recorded,
            Some(State::Recording(_)) => return Claim::Recording,
            None => {}
        }
        if seen.order.len() >= CAPACITY
            && let Some(oldest) = seen.order.pop_front()
        {
            seen.states.remove(&oldest);
        }
        seen.states.insert(entry.clone(), State::Recording(report));
        seen.order.push_back(entry.clone());
        Claim::New(Claimed {
            seen: Arc::clone(&self.seen),
            entry: Some(entry),
        })
    }
}

/// A key being recorded under. Dropped before [`Claimed::recorded`] (the report refused,
/// the store failed, a panic), it is given up, so that the report sent again is recorded.
#[derive(Debug)]
pub(crate) struct Claimed {
    seen: Arc<Mutex<Seen>>,
    entry: Option<Entry>,
}

impl Claimed {
    /// The report is recorded.
    pub(crate) fn recorded(mut self) {
        if let Some(entry) = self.entry.take() {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = seen.states.get_mut(&entry) {
                *state = State::Recorded(state.report());
            }
        }
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.states.remove(&entry);
            // Its place in `order` stays until it comes out at the front: a stale place
            // removes nothing but what it names, and only if that was claimed again.
            // Cheaper than a search, and the bound holds either way.
        }
    }
}

/// A report's fingerprint, to tell one sent again from another under the same key: a hash
/// of the report as read (not security: a reporter can only fool itself).
pub(crate) fn fingerprint(report: &impl serde::Serialize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    serde_json::to_vec(report)
        .expect("a report serializes")
        .hash(&mut hasher);
    hasher.finish()
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
    fn a_key_is_claimed_once_per_caller_until_given_up() {
        let seen = SeenReports::default();
        let (a, b) = (Some(Uuid::from_u128(1)), Some(Uuid::from_u128(2)));
        let Claim::New(first) = seen.claim(a, "r1", 7) else {
            panic!("a new key")
        };
        assert!(matches!(seen.claim(a, "r1", 7), Claim::Recording));
        first.recorded();
        assert!(matches!(seen.claim(a, "r1", 7), Claim::Recorded));
        assert!(matches!(seen.claim(a, "r1", 8), Claim::OtherReport));
        assert!(
            matches!(seen.claim(b, "r1", 8), Claim::New(_)),
            "another caller's"
        );
        // Given up (dropped unrecorded): free again.
        assert!(matches!(seen.claim(None, "r2", 7), Claim::New(_)));
        assert!(matches!(seen.claim(None, "r2", 7), Claim::New(_)));
        assert!(is_valid("0190a1b2-aaaa-7bbb-8ccc-0123456789ab"));
        assert!(!is_valid("") && !is_valid("a b") && !is_valid(&"a".repeat(256)));
    }

    #[test]
    fn the_oldest_keys_go_first() {
        let seen = SeenReports::default();
        for i in 0..=CAPACITY {
            let Claim::New(claimed) = seen.claim(None, &i.to_string(), 7) else {
                panic!("{i} is new")
            };
            claimed.recorded();
        }
        assert!(matches!(seen.claim(None, "1", 7), Claim::Recorded));
        assert!(matches!(
            seen.claim(None, &CAPACITY.to_string(), 7),
            Claim::Recorded
        ));
        assert!(
            matches!(seen.claim(None, "0", 7), Claim::New(_)),
            "forgotten"
        );
    }
}
