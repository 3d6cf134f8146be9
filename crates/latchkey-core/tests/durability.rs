//! Nothing acknowledged is lost: a child process creates and revokes keys and reports each
//! acknowledgement; it is killed with SIGKILL right after one, and on reopen every change it
//! acknowledged is there. Many rounds, because sled has open reports of corruption after
//! abrupt stops.

mod support;

use std::io::{BufRead, BufReader, Write};

use latchkey_core::{Actor, KeyStatus, Store};
use uuid::Uuid;

const CHILD_ENV: &str = "LATCHKEY_DURABILITY_CHILD";
const ROUNDS: u64 = 60;

/// The child: works on the store named in the environment until it is killed, printing
/// `created <id>` or `revoked <id>` after each acknowledged write. Does nothing otherwise.
#[test]
fn durability_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(&path, support::config()).expect("child opens the store");
    let admin = Actor::system();
    let user = store.user("durable").expect("user exists");
    let mut out = std::io::stdout().lock();
    // Bounded: the parent kills us long before this ends.
    for i in 0..10_000 {
        let created = support::key(&store, &user, &format!("k{i}"));
        writeln!(out, "created {}", created.key.id).unwrap();
        out.flush().unwrap();
        if i % 2 == 0 {
            store.revoke_key(&admin, created.key.id).unwrap();
            writeln!(out, "revoked {}", created.key.id).unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Store::create_empty(&path, "lk", support::config()).unwrap();
        support::user(&store, "durable", &["x"]);
    }
    let mut created: Vec<Uuid> = Vec::new();
    let mut revoked: Vec<Uuid> = Vec::new();
    for round in 0..ROUNDS {
        let mut child = support::spawn_child("durability_child", CHILD_ENV, &path);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after a varying number of acknowledgements, so the kill lands at different
        // points of a write (a create, a revoke, a flush).
        let acks_before_kill = 1 + (round * 7) % 13;
        let mut acks = 0;
        while acks < acks_before_kill {
            let line = lines.next().expect("child ended early").unwrap();
            let Some((op, id)) = line.split_once(' ') else {
                continue;
            };
            let Ok(id) = Uuid::parse_str(id) else {
                continue;
            };
            match op {
                "created" => created.push(id),
                "revoked" => revoked.push(id),
                _ => continue,
            }
            acks += 1;
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();

        let store = Store::open(&path, support::config())
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        for id in &created {
            let key = store
                .key(*id)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged key {id} lost: {e}"));
            if revoked.contains(id) {
                assert_eq!(
                    key.status,
                    KeyStatus::Revoked,
                    "round {round}: acknowledged revoke of {id} lost"
                );
            }
        }
        let report = store.verify_audit().unwrap();
        assert_eq!(
            report.broken, None,
            "round {round}: audit chain broken after SIGKILL"
        );
    }
    assert!(created.len() as u64 >= ROUNDS);
}
