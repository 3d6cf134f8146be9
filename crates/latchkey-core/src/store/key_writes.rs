//! Writing a key record inside a transaction, with its index entries and counts: the one
//! path every key change takes, so indexes and counters never disagree with the records.

use super::chunks::Change;
use super::counters::Counter;
use super::index::{self, Class, Sink};
use super::keys::KeyRecord;
use super::layout;
use super::tx::{Tx, TxResult};

/// A transaction's index changes wait for the end of its body, when the hints they need
/// are known (`Store::write_prepared`).
impl Sink for &Tx<'_> {
    type Error = super::backend::TxError;

    fn insert(&mut self, prefix: &[u8], position: &[u8]) -> TxResult<()> {
        self.change_index(prefix, position, true);
        Ok(())
    }

    fn remove(&mut self, prefix: &[u8], position: &[u8]) -> TxResult<()> {
        self.change_index(prefix, position, false);
        Ok(())
    }
}

impl Tx<'_> {
    fn change_index(&self, prefix: &[u8], position: &[u8], insert: bool) {
        self.index_changes.borrow_mut().push(Change {
            prefix: prefix.to_vec(),
            position: position.to_vec(),
            insert,
        });
    }

    /// The expiry mark as this transaction sees it.
    pub(crate) fn expiry_mark(&self) -> TxResult<Vec<u8>> {
        Ok(self
            .get_raw(index::EXPIRY_MARK)?
            .map(|m| m.to_vec())
            .unwrap_or_default())
    }

    /// Stores a key record (new or changed), moving its index entries and counts.
    pub(crate) fn put_key(&self, record: &KeyRecord) -> TxResult<()> {
        let path = layout::key(&record.public_id().map_err(Self::fail)?);
        let old = self.get::<KeyRecord>(&path)?;
        self.reindex(old.as_ref(), Some(record))?;
        self.put(&path, record)
    }

    /// Removes a key record with its index entries and counts.
    pub(crate) fn remove_key(&self, record: &KeyRecord) -> TxResult<()> {
        let path = layout::key(&record.public_id().map_err(Self::fail)?);
        let old = self.get::<KeyRecord>(&path)?;
        self.reindex(old.as_ref(), None)?;
        self.remove(&path)
    }

    fn reindex(&self, old: Option<&KeyRecord>, new: Option<&KeyRecord>) -> TxResult<()> {
        let mark = self.expiry_mark()?;
        let entries =
            |r: Option<&KeyRecord>| r.map(|r| index::entries(r, &mark)).unwrap_or_default();
        let mut sink = self;
        index::apply(&mut sink, entries(old), entries(new))?;
        let class = |r: Option<&KeyRecord>| r.map(|r| Class::of(r, &mark));
        let (before, after) = (class(old), class(new));
        if before != after {
            if let Some(c) = before {
                self.count(Counter::Keys(c), -1)?;
            }
            if let Some(c) = after {
                self.count(Counter::Keys(c), 1)?;
            }
        }
        Ok(())
    }

    fn fail(e: crate::error::StoreError) -> super::backend::TxError {
        super::backend::TxError::Abort(e)
    }
}
