//! Counts for `/metrics`, kept by the writes that change them, in the same transaction:
//! reading them is a handful of point reads, never a scan.
//!
//! Keys are counted by their stored [`Class`]: the status at the expiry mark. A key that
//! expired since the last sweep (at most a second ago while the store is open, see
//! `sweep.rs`) is still counted as active or disabled until the sweep moves it.

use super::backend::Backend;
use super::index::Class;
use super::tx::{Tx, TxResult};
use crate::error::StoreError;

/// One durable count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    Keys(Class),
    Users,
    Groups,
}

impl Counter {
    /// Its entry: `m:n:<name>`, a big-endian `u64`.
    pub(crate) fn key(self) -> &'static [u8] {
        match self {
            Counter::Keys(Class::Active) => b"m:n:active",
            Counter::Keys(Class::Disabled) => b"m:n:disabled",
            Counter::Keys(Class::Expired) => b"m:n:expired",
            Counter::Keys(Class::Revoked) => b"m:n:revoked",
            Counter::Users => b"m:n:users",
            Counter::Groups => b"m:n:groups",
        }
    }
}

fn decode(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

impl Tx<'_> {
    /// Adds `delta` to a count, inside the write's transaction.
    pub(crate) fn count(&self, counter: Counter, delta: i64) -> TxResult<()> {
        if delta == 0 {
            return Ok(());
        }
        let now = decode(self.get_raw(counter.key())?.as_deref());
        let next = now.saturating_add_signed(delta);
        self.put_raw(counter.key(), &next.to_be_bytes())
    }
}

/// Reads a count.
pub(crate) fn read(db: &dyn Backend, counter: Counter) -> Result<u64, StoreError> {
    Ok(decode(db.get(counter.key())?.as_deref()))
}
