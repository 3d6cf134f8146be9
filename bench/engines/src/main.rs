//! One million keys' worth of entries, shaped like latchkey's store (`store/layout.rs`):
//! for key `i`, a 150-byte record under a random 12-letter id, a 120-byte audit event under
//! its sequence number and, for seven keys in eight, a 300-byte index chunk under a random
//! 30-byte key (2.875 entries per key). Written in transactions of 10,000 keys.
//!
//! ```sh
//! cargo run --release -- write sled|redb DIR KEYS    # DIR must not exist
//! cargo run --release -- read  sled|redb DIR KEYS    # RSS after opening, then 200,000 random gets
//! ```
//!
//! `CACHE_MIB` (default 24, latchkey's default) sets each engine's cache. Prints the
//! process's VmRSS (and VmHWM, its peak) from /proc.

use std::path::Path;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::TableDefinition;

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const BATCH: u64 = 10_000;
const GETS: u64 = 200_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, engine, dir, keys] = &args[..] else {
        panic!("usage: engines write|read sled|redb DIR KEYS");
    };
    let keys: u64 = keys.parse().expect("KEYS is a number");
    let cache: u64 = std::env::var("CACHE_MIB").map_or(24, |v| v.parse().expect("a number")) << 20;
    let started = Instant::now();
    let store = Engine::open(engine, Path::new(dir), cache, mode == "write");
    match mode.as_str() {
        "write" => {
            let mut rng = StdRng::seed_from_u64(7);
            for first in (0..keys).step_by(BATCH as usize) {
                let batch: Vec<_> = (first..(first + BATCH).min(keys))
                    .flat_map(|i| entries(i, &mut rng))
                    .collect();
                store.write(batch);
            }
            store.flush();
            println!(
                "{engine}: wrote {keys} keys in {:.1?}; {}",
                started.elapsed(),
                memory()
            );
        }
        "read" => {
            println!(
                "{engine}: opened in {:.1?}; {}",
                started.elapsed(),
                memory()
            );
            let mut rng = StdRng::seed_from_u64(99);
            let reading = Instant::now();
            let found = (0..GETS)
                .filter(|_| store.contains(&record_key(rng.gen_range(0..keys))))
                .count();
            assert_eq!(found as u64, GETS, "every record is found");
            let each = reading.elapsed().as_secs_f64() * 1e6 / GETS as f64;
            println!(
                "{engine}: {GETS} random gets, {each:.1} µs each; {}",
                memory()
            );
        }
        other => panic!("unknown mode {other}"),
    }
}

/// The entries of key `i`.
fn entries(i: u64, rng: &mut StdRng) -> Vec<(Vec<u8>, Vec<u8>)> {
    let record: Vec<u8> = (0..150).map(|_| rng.gen()).collect();
    let mut out = vec![
        (
            [b"a:".as_slice(), &i.to_be_bytes()].concat(),
            record[..120].to_vec(),
        ),
        (record_key(i), record),
    ];
    if i % 8 != 0 {
        let key: Vec<u8> = b"x:"
            .iter()
            .copied()
            .chain((0..30).map(|_| rng.gen()))
            .collect();
        out.push((key, (0..300).map(|_| rng.gen()).collect()));
    }
    out
}

/// Key `i`'s record key: a random id, as a key's public id is.
fn record_key(i: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(i);
    b"k:"
        .iter()
        .copied()
        .chain((0..12).map(|_| rng.gen_range(b'a'..=b'z')))
        .collect()
}

fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or(0, |v| {
                v.trim().trim_end_matches(" kB").parse::<u64>().unwrap_or(0) / 1024
            })
    };
    format!("RSS {} MiB (peak {} MiB)", field("VmRSS:"), field("VmHWM:"))
}

enum Engine {
    Sled(sled::Db),
    Redb(redb::Database),
}

impl Engine {
    fn open(engine: &str, dir: &Path, cache: u64, create: bool) -> Engine {
        match engine {
            "sled" => Engine::Sled(
                sled::Config::new()
                    .path(dir)
                    .cache_capacity(cache)
                    .open()
                    .expect("sled opens"),
            ),
            "redb" => {
                let file = dir.join("store.redb");
                let mut builder = redb::Database::builder();
                builder.set_cache_size(cache as usize);
                if create {
                    std::fs::create_dir_all(dir).expect("the directory");
                }
                let db = if create {
                    builder.create(file)
                } else {
                    builder.open(file)
                };
                Engine::Redb(db.expect("redb opens"))
            }
            other => panic!("unknown engine {other}"),
        }
    }

    fn write(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        match self {
            Engine::Sled(db) => {
                let mut batch = sled::Batch::default();
                for (k, v) in entries {
                    batch.insert(k, v);
                }
                db.apply_batch(batch).expect("sled writes");
            }
            Engine::Redb(db) => {
                let tx = db.begin_write().expect("a write transaction");
                {
                    let mut table = tx.open_table(TABLE).expect("the table");
                    for (k, v) in &entries {
                        table
                            .insert(k.as_slice(), v.as_slice())
                            .expect("redb writes");
                    }
                }
                tx.commit().expect("redb commits");
            }
        }
    }

    fn flush(&self) {
        if let Engine::Sled(db) = self {
            db.flush().expect("sled flushes");
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        match self {
            Engine::Sled(db) => db.get(key).expect("sled reads").is_some(),
            Engine::Redb(db) => {
                let tx = db.begin_read().expect("a read transaction");
                let table = tx.open_table(TABLE).expect("the table");
                let found = table.get(key).expect("redb reads").is_some();
                found
            }
        }
    }
}
