//! Counts for `/metrics`, kept by the writes that change them, in the same transaction:
//! reading them is a handful of point reads, never a scan.
//!
//! Keys are counted by their stored [`Class`]: the status at the expiry mark. A key that
//! expired since the last sweep (at most a second ago while the store is open, see
//! `sweep.rs`) is still counted as active or disabled until the sweep moves it.

use super::backend::Backend;
use super::index::Class;
use super::rebuild::RECOUNT;
use super::tx::{Tx, TxResult, abort};
use crate::error::StoreError;

/// One durable count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    Keys(Class),
    Users,
    Groups,
}

impl Counter {
    /// Every count the store keeps.
    pub(crate) const ALL: [Counter; 6] = [
        Counter::Keys(Class::Active),
        Counter::Keys(Class::Disabled),
        Counter::Keys(Class::Expired),
        Counter::Keys(Class::Revoked),
        Counter::Users,
        Counter::Groups,
    ];

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

/// A stored count: none is 0. One of another length than 8 bytes is `Corrupt`, never read
/// as 0, which every later write would count on from (the open rebuilds it: [`readable`]).
fn decode(counter: Counter, bytes: Option<&[u8]>) -> Result<u64, StoreError> {
    match bytes {
        None => Ok(0),
        Some(bytes) => bytes.try_into().map(u64::from_be_bytes).map_err(|_| {
            let key = String::from_utf8_lossy(counter.key());
            StoreError::Corrupt(format!("bad count {key}"))
        }),
    }
}

impl Tx<'_> {
    /// Adds `delta` to a count, inside the write's transaction.
    pub(crate) fn count(&self, counter: Counter, delta: i64) -> TxResult<()> {
        if delta == 0 {
            return Ok(());
        }
        let now = match decode(counter, self.get_raw(counter.key())?.as_deref()) {
            Ok(now) => now,
            Err(e) => return abort(e),
        };
        let next = match now.checked_add_signed(delta) {
            Some(next) => next,
            None => {
                // Below zero: the count is out of step with the records (a damaged or
                // hand-edited store). It reads 0 until the next open counts the records
                // again (the indexes are left alone), which the mark asks for. Logged once
                // the write commits (`Store::write`).
                let key = String::from_utf8_lossy(counter.key()).into_owned();
                self.out_of_step.borrow_mut().push(key);
                self.put_raw(RECOUNT, b"1")?;
                0
            }
        };
        self.put_raw(counter.key(), &next.to_be_bytes())
    }
}

/// Reads a count.
pub(crate) fn read(db: &dyn Backend, counter: Counter) -> Result<u64, StoreError> {
    decode(counter, db.get(counter.key())?.as_deref())
}

/// Reads every count, in the order of [`Counter::ALL`], in one read.
pub(crate) fn read_all(db: &dyn Backend) -> Result<Vec<u64>, StoreError> {
    let keys: Vec<Vec<u8>> = Counter::ALL.iter().map(|c| c.key().to_vec()).collect();
    let values = db.get_many(&keys)?;
    Counter::ALL
        .into_iter()
        .zip(values)
        .map(|(counter, value)| decode(counter, value.as_deref()))
        .collect()
}

/// Whether every count reads. The counts are derived from the records, so the open
/// rebuilds them when one does not, rather than refusing the store or counting from 0.
pub(crate) fn readable(db: &dyn Backend) -> Result<bool, StoreError> {
    for counter in Counter::ALL {
        match read(db, counter) {
            Ok(_) => {}
            Err(StoreError::Corrupt(what)) => {
                tracing::warn!("{what}: rebuilding the indexes and counts");
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
