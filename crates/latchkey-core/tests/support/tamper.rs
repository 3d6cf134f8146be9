//! Edits a closed sled store's files behind its back, as an attacker with disk access would.
//! Shared with the management API's tests (`latchkey-admin/tests/api`), which include this
//! file by path: one copy of the on-disk layout outside the crate that owns it.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;

/// Replaces the audit event of seq `to` with a copy of the one of seq `from`: well-formed,
/// but it no longer fits the hash chain. Core's layout: the event of seq n is at `a:` + n
/// (big endian).
pub fn copy_audit_event(path: &Path, from: u64, to: u64) {
    let db = open_sled(path);
    let at = |seq: u64| [b"a:".as_slice(), &seq.to_be_bytes()].concat();
    let copy = db.get(at(from)).unwrap().unwrap();
    db.insert(at(to), copy).unwrap();
    db.flush().unwrap();
}

/// Opens the store's sled database directly, waiting (bounded) for the lock that a just
/// dropped `Store` releases once sled's I/O threads finish.
pub fn open_sled(path: &Path) -> sled::Db {
    for _ in 0..100 {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    sled::open(path).unwrap()
}
