//! Seeded stores shared by the benchmarks, cached under Cargo's target directory so a
//! million keys are written once, not on every run.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use latchkey_core::{Actor, Engine, NewKey, NewUser, Store, StoreConfig};

// The tests' record helpers, so benches and tests create users and keys one way.
#[path = "../../tests/support/records.rs"]
mod records;
#[allow(unused_imports)]
pub use records::*;

/// The embedded engine the benchmarks' stores are made with: `LATCHKEY_BENCH_ENGINE=redb`
/// for redb, sled otherwise.
pub fn engine() -> Engine {
    match std::env::var("LATCHKEY_BENCH_ENGINE").as_deref() {
        Ok("redb") => Engine::Redb,
        _ => Engine::Sled,
    }
}

/// A store with `n` keys, and the full text of every 100th key (bench fixtures only: these
/// live in the target directory, never in the repository). On the benchmarks' [`engine`].
pub fn seeded(n: usize, config: StoreConfig) -> (Store, Vec<String>) {
    let name = match engine() {
        Engine::Redb => format!("latchkey-bench-{n}-redb"),
        _ => format!("latchkey-bench-{n}"),
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let samples_path = dir.join("samples.txt");
    if !samples_path.exists() {
        seed(&dir, n);
    }
    let samples = std::fs::read_to_string(&samples_path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    (open(&dir.join("store"), config), samples)
}

/// Opens a store just seeded in this process: sled's I/O threads may hold its file lock
/// for longer than `Store::open` waits (1 s) on a loaded machine, so waits up to a minute.
fn open(path: &Path, config: StoreConfig) -> Store {
    let started = std::time::Instant::now();
    loop {
        match Store::open(path, config.clone()) {
            Err(latchkey_core::StoreError::Locked { .. })
                if started.elapsed() < std::time::Duration::from_secs(60) => {}
            opened => return opened.unwrap(),
        }
    }
}

fn seed(dir: &Path, n: usize) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    eprintln!("seeding a store of {n} keys in {} (once)…", dir.display());
    let started = std::time::Instant::now();
    let store = Store::create_empty(
        dir.join("store"),
        "lk",
        StoreConfig::default()
            .engine(engine())
            .usage_flush_interval(None),
    )
    .unwrap();
    let admin = Actor::system();
    let group = group(&store, "orders", &["orders:*"]);
    let user = user_with(
        &store,
        NewUser {
            name: "bench".into(),
            groups: vec![group.id],
            ..NewUser::default()
        },
    );
    let mut samples = String::new();
    let chunk = 5_000;
    for start in (0..n).step_by(chunk) {
        let batch: Vec<NewKey> = (start..(start + chunk).min(n))
            .map(|i| NewKey {
                name: format!("key {i}"),
                user_id: user.id,
                ..NewKey::default()
            })
            .collect();
        for (i, created) in store
            .create_keys(&admin, &batch)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            if (start + i) % 100 == 0 {
                samples.push_str(created.secret.expose());
                samples.push('\n');
            }
        }
    }
    drop(store);
    std::fs::write(dir.join("samples.txt"), samples).unwrap();
    eprintln!("seeded in {:.1?}", started.elapsed());
}

/// The process's resident set and its peak, in MiB, from /proc (Linux).
pub fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A whole number from the environment, if set.
pub fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number"))
    })
}

/// A small deterministic generator for picking samples (xorshift64*).
pub struct Pick(u64);

impl Pick {
    pub fn new(seed: u64) -> Pick {
        Pick(seed | 1)
    }

    pub fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below as u64) as usize
    }
}
