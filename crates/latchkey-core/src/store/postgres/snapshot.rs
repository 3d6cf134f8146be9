//! A consistent read-only view of a PostgreSQL store that writers do not wait for: one
//! `SERIALIZABLE READ ONLY DEFERRABLE` transaction on a connection of its own, as
//! `pg_dump --serializable-deferrable` takes (it waits, if need be, for a moment no
//! concurrent write can make its reads inconsistent, then never fails for serialization).
//! An online backup reads through it, so the other processes' writes go on meanwhile.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use super::client::{Pg, get_on, range_on};
use super::conn::Conn;
use crate::error::StoreError;
use crate::store::backend::{Backend, Batch, Entry, KeyRange, Take, TxBody, TxError};

/// The view; it ends (its transaction commits, reading nothing more) when dropped.
pub(super) struct PgSnapshot {
    pg: Arc<Pg>,
    client: Mutex<Option<Conn>>,
}

impl PgSnapshot {
    /// Takes the view now.
    pub(super) fn begin(pg: Arc<Pg>) -> Result<PgSnapshot, StoreError> {
        let client = pg.client()?;
        pg.begin(
            &client,
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
        )?;
        Ok(PgSnapshot {
            pg,
            client: Mutex::new(Some(client)),
        })
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Pg, &Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let client = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        let client = client.as_ref().expect("open until dropped");
        f(&self.pg, client)
    }
}

impl fmt::Debug for PgSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSnapshot").finish_non_exhaustive()
    }
}

impl Drop for PgSnapshot {
    fn drop(&mut self) {
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = client.take()
            && self.pg.execute(&client, "COMMIT").is_err()
        {
            // Never hand back to the pool a connection that may still be in the transaction.
            client.discard();
        }
    }
}

/// A read-only view: the writes of [`Backend`] are refused.
fn read_only() -> StoreError {
    StoreError::storage("a snapshot is read-only")
}

impl Backend for PgSnapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|pg, client| get_on(pg, client, key))
    }

    fn range(&self, range: &KeyRange, take: Take) -> Result<Vec<Entry>, StoreError> {
        self.read(|pg, client| range_on(pg, client, range, take))
    }

    fn transaction(&self, _body: &mut TxBody<'_>) -> Result<(), TxError> {
        Err(TxError::Storage(read_only()))
    }

    fn apply_batch(&self, _batch: Batch) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
