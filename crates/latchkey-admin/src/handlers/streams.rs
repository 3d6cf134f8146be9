//! How many `GET /v1/events` streams may be open at once, in all and per key.
//!
//! A stream holds a connection, a broadcast receiver and a periodic store read for as long
//! as its client stays: without a bound, one key could hold thousands of them and starve
//! the daemon of sockets and memory. A stream takes a [`StreamSlot`] before it starts and
//! gives it back when it ends (the response body, and with it the slot, is dropped when
//! the client goes). Past either bound the request is answered 429 `too_many_streams`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use uuid::Uuid;

use crate::error::AppError;

/// Streams open at once over one router, whatever key holds them.
pub(crate) const MAX_STREAMS: usize = 1_024;
/// Streams open at once for one key. A remote verifier needs one per process; eight leave
/// room for restarts that overlap the old connection's end.
pub(crate) const MAX_STREAMS_PER_KEY: usize = 8;

/// The open streams: a total and a count per key.
#[derive(Debug, Default)]
pub(crate) struct StreamSlots {
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Only keys with at least one open stream.
    per_key: HashMap<Uuid, usize>,
}

impl StreamSlots {
    /// Takes a slot for a stream of `key` (`None`: the operator, bound by the total only).
    ///
    /// # Errors
    ///
    /// 429 `too_many_streams` when [`MAX_STREAMS`] streams are open, or
    /// [`MAX_STREAMS_PER_KEY`] for this key.
    pub(crate) fn acquire(self: &Arc<Self>, key: Option<Uuid>) -> Result<StreamSlot, AppError> {
        let mut open = self.lock();
        if open.total >= MAX_STREAMS {
            return Err(too_many(format!(
                "{MAX_STREAMS} event streams are open; try again later"
            )));
        }
        if let Some(key) = key {
            let count = open.per_key.entry(key).or_default();
            if *count >= MAX_STREAMS_PER_KEY {
                return Err(too_many(format!(
                    "this key holds {MAX_STREAMS_PER_KEY} event streams already; close one first"
                )));
            }
            *count += 1;
        }
        open.total += 1;
        crate::metrics::live::set_event_streams(open.total);
        Ok(StreamSlot {
            slots: Arc::clone(self),
            key,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn too_many(detail: String) -> AppError {
    AppError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_streams", detail)
}

/// One open stream's place; given back when dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    slots: Arc<StreamSlots>,
    key: Option<Uuid>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        open.total -= 1;
        crate::metrics::live::set_event_streams(open.total);
        if let Some(key) = self.key
            && let Some(count) = open.per_key.get_mut(&key)
        {
            *count -= 1;
            if *count == 0 {
                open.per_key.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_key_and_given_back() {
        let slots = Arc::new(StreamSlots::default());
        let key = Uuid::from_u128(1);
        let mut held: Vec<_> = (0..MAX_STREAMS_PER_KEY)
            .map(|_| slots.acquire(Some(key)).unwrap())
            .collect();
        assert!(slots.acquire(Some(key)).is_err());
        assert!(slots.acquire(Some(Uuid::from_u128(2))).is_ok());
        held.pop();
        assert!(slots.acquire(Some(key)).is_ok());
        drop(held);
        let open = slots.lock();
        assert_eq!(open.total, 0);
        assert!(open.per_key.is_empty());
    }
}
