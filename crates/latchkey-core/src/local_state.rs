//! The state of a rate limit only this process keeps (`governor`'s GCRA over one atomic
//! theoretical arrival time), which can also be *peeked*: asked whether a request would
//! pass, and what would be left, without taking anything (`/v1/verify` with `cost: 0`).
//!
//! `governor` decides through [`StateStore::measure_and_replace`], which stores the new
//! arrival time when the request passes; while [`peeking`] runs on a thread, this store
//! answers the decision and stores nothing.

use std::cell::Cell;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};

thread_local! {
    /// Whether the decisions made on this thread now only look.
    static PEEKING: Cell<bool> = const { Cell::new(false) };
}

/// One limit's theoretical arrival time, in nanoseconds since its limiter was made (0:
/// never used), as `governor`'s own `InMemoryState` keeps it. A clone is a handle on the
/// same state: the limiter holds one, and its [`crate::meter`] another, to give back what a
/// request refused by a later check took ([`LocalState::give_back`]).
#[derive(Debug, Default, Clone)]
pub(crate) struct LocalState(Arc<AtomicU64>);

impl LocalState {
    /// Gives back `nanos` of the arrival time: of a cost taken, what the limit has not won
    /// back since (the caller's part, [`crate::meter`]). Taken off the arrival time
    /// whatever came in between, so never more than was taken; an arrival time that goes
    /// back before now stands for a limit that is whole, as one never used does.
    pub(crate) fn give_back(&self, nanos: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                (tat != 0).then(|| tat.saturating_sub(nanos))
            });
    }

    /// A new state at this one's arrival time, for a limiter made at `to` where this one's
    /// was made at `from` (the clock's monotonic nanoseconds): the same instant, counted
    /// from the other start. One already past at `to` is a limit whole, as one never used.
    pub(crate) fn rebased(&self, from: u64, to: u64) -> LocalState {
        let tat = self.0.load(Ordering::Acquire);
        let moved = match tat {
            0 => 0,
            tat => from.saturating_add(tat).saturating_sub(to),
        };
        LocalState(Arc::new(AtomicU64::new(moved)))
    }
}

impl StateStore for LocalState {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _key: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut prev = self.0.load(Ordering::Acquire);
        loop {
            let (answer, next) = f(NonZeroU64::new(prev).map(|n| n.get().into()))?;
            if PEEKING.get() {
                return Ok(answer);
            }
            match self.0.compare_exchange_weak(
                prev,
                next.into(),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(answer),
                Err(now) => prev = now,
            }
        }
    }
}

/// Runs `decide` (a limiter's check) on this thread so that it takes nothing.
pub(crate) fn peeking<T>(decide: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            PEEKING.set(false);
        }
    }
    PEEKING.set(true);
    let _reset = Reset;
    decide()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An arrival time counted from another start names the same instant; one already
    /// past there, or none, is a limit whole (0).
    #[test]
    fn a_state_rebased_names_the_same_instant() {
        let at = |tat: u64| LocalState(Arc::new(AtomicU64::new(tat)));
        let value = |state: LocalState| state.0.load(Ordering::Acquire);
        assert_eq!(value(at(80).rebased(100, 150)), 30);
        assert_eq!(value(at(40).rebased(100, 150)), 0);
        assert_eq!(value(at(0).rebased(100, 150)), 0);
    }
}
