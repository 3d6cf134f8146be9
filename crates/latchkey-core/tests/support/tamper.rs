//! Edits a closed store's files behind its back, as an attacker with disk access would:
//! sled's, or redb's (`latchkey.redb`) when the directory holds that. Shared with the
//! management API's tests (`latchkey-admin/tests/api`), which include this file by path:
//! one copy of the on-disk layout outside the crate that owns it.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;

/// Replaces the audit event of seq `to` with a copy of the one of seq `from`: well-formed,
/// but it no longer fits the hash chain. Core's layout: the event of seq n is at `a:` + n
/// (big endian).
pub fn copy_audit_event(path: &Path, from: u64, to: u64) {
    let db = Raw::open(path);
    let at = |seq: u64| [b"a:".as_slice(), &seq.to_be_bytes()].concat();
    let copy = db.get(&at(from)).unwrap();
    db.apply(vec![(at(to), Some(copy))]);
}

/// A closed store's database, opened directly.
pub enum Raw {
    Sled(sled::Db),
    Redb(redb::Database),
}

/// The one table of a redb store (core's `redb_db.rs`).
const TABLE: redb::TableDefinition<'static, &'static [u8], &'static [u8]> =
    redb::TableDefinition::new("latchkey");

impl Raw {
    /// Opens the store's database with the engine whose files the directory holds,
    /// waiting (bounded) for the lock that a just dropped `Store` releases (sled's, once
    /// its I/O threads finish).
    pub fn open(path: &Path) -> Raw {
        let redb_file = path.join("latchkey.redb");
        for _ in 0..100 {
            let opened = if redb_file.is_file() {
                redb::Database::open(&redb_file).ok().map(Raw::Redb)
            } else {
                sled::open(path).ok().map(Raw::Sled)
            };
            if let Some(db) = opened {
                return db;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("cannot open the store at {} directly", path.display());
    }

    /// Every key that starts with `prefix`, in order.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        match self {
            Raw::Sled(db) => db
                .scan_prefix(prefix)
                .keys()
                .map(|k| k.unwrap().to_vec())
                .collect(),
            Raw::Redb(db) => {
                let read = db.begin_read().unwrap();
                let table = read.open_table(TABLE).unwrap();
                table
                    .range::<&[u8]>(prefix..)
                    .unwrap()
                    .map(|item| item.unwrap().0.value().to_vec())
                    .take_while(|k| k.starts_with(prefix))
                    .collect()
            }
        }
    }

    /// One entry's value.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self {
            Raw::Sled(db) => db.get(key).unwrap().map(|v| v.to_vec()),
            Raw::Redb(db) => {
                let read = db.begin_read().unwrap();
                let table = read.open_table(TABLE).unwrap();
                table.get(key).unwrap().map(|v| v.value().to_vec())
            }
        }
    }

    /// Writes (`Some`) and removes (`None`) entries, in order, and makes them durable.
    pub fn apply(&self, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        match self {
            Raw::Sled(db) => {
                for (key, value) in writes {
                    match value {
                        Some(value) => db.insert(key, value).map(drop).unwrap(),
                        None => db.remove(key).map(drop).unwrap(),
                    }
                }
                db.flush().unwrap();
            }
            Raw::Redb(db) => {
                let txn = db.begin_write().unwrap();
                {
                    let mut table = txn.open_table(TABLE).unwrap();
                    for (key, value) in &writes {
                        match value {
                            Some(value) => table.insert(key.as_slice(), value.as_slice()).map(drop),
                            None => table.remove(key.as_slice()).map(drop),
                        }
                        .unwrap();
                    }
                }
                txn.commit().unwrap();
            }
        }
    }
}
