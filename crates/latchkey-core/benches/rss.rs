//! Memory of a process serving a store of 1,000,000 keys: resident set after opening it and
//! after 200,000 verifications of random keys, with latchkey's default sled cache and with
//! sled's own default (1 GiB), each in a fresh process.
//!
//! Run with `cargo bench -p latchkey-core --bench rss`. Target: ≤ 128 MiB with the defaults.
//! `LATCHKEY_RSS_VERIFICATIONS=N` and `LATCHKEY_RSS_VERIFY_CACHE=ENTRIES` change the run.

mod support;

use latchkey_core::StoreConfig;

const KEYS: usize = 1_000_000;
const DEFAULT_VERIFICATIONS: usize = 200_000;

fn main() {
    match std::env::var("LATCHKEY_RSS_CACHE_BYTES") {
        Ok(bytes) => measure(bytes.parse().expect("a byte count")),
        Err(_) => {
            // Seed (if needed) in this process, then measure each configuration in a child.
            drop(support::seeded(KEYS, StoreConfig::default()));
            let exe = std::env::current_exe().unwrap();
            for (label, bytes) in [
                ("latchkey default (24 MiB sled cache)", 24u64 << 20),
                ("sled default (1 GiB cache)", 1 << 30),
            ] {
                println!("{label}:");
                let status = std::process::Command::new(&exe)
                    .env("LATCHKEY_RSS_CACHE_BYTES", bytes.to_string())
                    .status()
                    .unwrap();
                assert!(status.success());
            }
        }
    }
}

fn measure(cache_bytes: u64) {
    let verifications = support::env_number("LATCHKEY_RSS_VERIFICATIONS")
        .map_or(DEFAULT_VERIFICATIONS, |n| n as usize);
    let mut config = StoreConfig::default()
        .cache_capacity_bytes(cache_bytes)
        .usage_flush_interval(None);
    if let Some(entries) = support::env_number("LATCHKEY_RSS_VERIFY_CACHE") {
        config = config.verify_cache_entries(entries as usize);
    }
    let (store, samples) = support::seeded(KEYS, config);
    let (opened, _) = support::rss_mib();
    let mut pick = support::Pick::new(42);
    let started = std::time::Instant::now();
    for _ in 0..verifications {
        store.verify(&samples[pick.next(samples.len())]).unwrap();
    }
    let elapsed = started.elapsed();
    let (rss, peak) = support::rss_mib();
    println!(
        "  {KEYS} keys: RSS after open {opened:.1} MiB; after {verifications} verifications {rss:.1} MiB (peak {peak:.1} MiB); {:.2} µs/verify",
        elapsed.as_secs_f64() * 1e6 / verifications as f64
    );
}
