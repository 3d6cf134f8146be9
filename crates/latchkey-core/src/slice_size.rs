//! How many requests of a shared rate limit a process reserves at once: one policy for a
//! daemon's slice of a limit several daemons share (PostgreSQL) and for a remote
//! verifier's lease of it.
//!
//! A slice of `k` requests is valid for the time the limit takes to win them back (`k`
//! emission intervals), so whoever holds slices without a break takes the limit's whole
//! rate from the shared state, whatever its own traffic. A process whose traffic for the
//! key is below that rate wastes what it cannot use before the slice lapses, and two such
//! processes used a limit up between them with requests nobody sent (seen: a limit of
//! 1,000 per 10 s, two remote verifiers at 20 requests a second in all, 27 to 50 refused).
//! Yet a slice of 1 costs a round trip per request.
//!
//! So a slice doubles, up to a twentieth of the limit, while the key comes at the limit's
//! rate or faster in this process (its slice ran short before it lapsed), or while the
//! limit had at least half of itself left at the last grant: what a few processes waste
//! then takes nothing anyone is waiting for, and as they use the limit up the room goes
//! and their slices fall back to 1 before it is gone. Otherwise, after a slice that lapsed
//! with requests left, the next is 1. A quiet key on a limit with room reserves about 20
//! times a window, as a busy one does; near the limit, a key slower than its rate in this
//! process reserves each request as it comes.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The size of a process's next reservation of one shared rate limit. Its callers take
/// one reservation at a time per limit (a lock), so each reads and sets the size alone.
///
/// ```
/// use latchkey_core::slice_size::SliceSize;
/// let size = SliceSize::new(200);
/// // A first slice, or one that lapsed with requests left, the limit short of room: 1.
/// assert_eq!(size.reserve(false), 1);
/// // Slices that ran short before they lapsed: double, to a twentieth of the limit.
/// let grown: Vec<u32> = (0..6).map(|_| size.reserve(true)).collect();
/// assert_eq!(grown, [2, 4, 8, 10, 10, 10]);
/// assert_eq!(size.reserve(false), 1);
/// // While the limit had half of itself left at the last grant, they grow all the same.
/// size.granted(100);
/// assert_eq!(size.reserve(false), 2);
/// assert_eq!(size.top_up(), 4);
/// size.granted(99);
/// assert_eq!(size.top_up(), 4);
/// ```
#[derive(Debug)]
pub struct SliceSize {
    /// The size of the last reservation.
    last: AtomicU32,
    /// The limit had at least half of itself left after the last grant.
    roomy: AtomicBool,
    /// The limit's requests per window.
    limit: u32,
}

impl SliceSize {
    /// The policy for a limit of `limit` requests a window.
    pub fn new(limit: u32) -> SliceSize {
        SliceSize {
            last: AtomicU32::new(1),
            roomy: AtomicBool::new(false),
            limit,
        }
    }

    /// The largest slice: a twentieth of the limit, at least 1.
    pub fn max(&self) -> u32 {
        (self.limit / 20).max(1)
    }

    /// Records what the limit had `left` after a grant (as the shared state answered).
    pub fn granted(&self, left: u32) {
        let roomy = u64::from(left) * 2 >= u64::from(self.limit);
        self.roomy.store(roomy, Ordering::Relaxed);
    }

    /// How many requests to reserve for a request that found the slice short:
    /// `ran_short_in_time` when the slice was still valid (the key came at the limit's
    /// rate or faster; not when it is the same request's extra cost), or while the limit
    /// has room, twice the last size, to [`SliceSize::max`]; 1 otherwise.
    pub fn reserve(&self, ran_short_in_time: bool) -> u32 {
        let grow = ran_short_in_time || self.roomy.load(Ordering::Relaxed);
        let size = if grow { self.doubled() } else { 1 };
        self.last.store(size, Ordering::Relaxed);
        size
    }

    /// How many requests to ask for ahead, while the slice is still valid and half used
    /// (a remote verifier's top-up): twice the last size while the limit has room, the
    /// last size otherwise.
    pub fn top_up(&self) -> u32 {
        if !self.roomy.load(Ordering::Relaxed) {
            return self.last.load(Ordering::Relaxed);
        }
        let size = self.doubled();
        self.last.store(size, Ordering::Relaxed);
        size
    }

    fn doubled(&self) -> u32 {
        self.last
            .load(Ordering::Relaxed)
            .saturating_mul(2)
            .min(self.max())
    }
}
