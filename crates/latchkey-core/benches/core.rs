//! Hot-path costs of latchkey-core: parsing, rejecting, verifying (warm and cold, at 10,000
//! and 1,000,000 keys), durable key creation, and effective permissions.
//!
//! Run with `cargo bench -p latchkey-core --bench core`. Targets on a 2-core machine: warm
//! verify ≤ 1 µs, cold ≤ 15 µs, cold at 1M within 2× of 10k, malformed rejection ≤ 100 ns;
//! the effective permissions of the largest user the limits allow (256 direct + 64 groups
//! of 256) ≤ 50 ms (it runs on a cold verification and under the write lock; comparing
//! every pair took 4.8 s).
//! `LATCHKEY_BENCH_SLED_CACHE_MIB=N` sets sled's page cache for the cold runs (default: the store default, 24).
//! `LATCHKEY_BENCH_ENGINE=redb` runs the verifications and creations on redb stores (the
//! cache setting then sizes redb's cache).

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey_core::{ApiKey, Env, Prefix, StoreConfig};

fn parse(c: &mut Criterion) {
    let key = ApiKey::generate(&Prefix::default(), Env::Live);
    let valid = key.expose().to_owned();
    // Same shape, last checksum digit changed: the costliest rejection (full CRC).
    let mut malformed = valid.clone();
    let last = malformed.pop().unwrap();
    malformed.push(if last == '0' { '1' } else { '0' });

    let mut group = c.benchmark_group("parse");
    group.bench_function("valid", |b| {
        b.iter(|| ApiKey::parse(black_box(&valid)).unwrap())
    });
    group.bench_function("malformed_checksum", |b| {
        b.iter(|| ApiKey::parse(black_box(&malformed)).unwrap_err())
    });
    group.bench_function("malformed_length", |b| {
        b.iter(|| ApiKey::parse(black_box("lk_live_tooshort")).unwrap_err())
    });
    group.finish();
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    group.measurement_time(Duration::from_secs(4));

    let (warm, samples) =
        support::seeded(10_000, StoreConfig::default().usage_flush_interval(None));
    let one = samples[0].clone();
    warm.verify(&one).unwrap();
    group.bench_function("warm", |b| b.iter(|| warm.verify(black_box(&one)).unwrap()));
    drop(warm);

    for n in [10_000, 1_000_000] {
        // The verify cache is off, so every call reads the key, user and group from sled.
        let mut config = StoreConfig::default()
            .verify_cache_entries(0)
            .usage_flush_interval(None);
        if let Some(mib) = support::env_number("LATCHKEY_BENCH_SLED_CACHE_MIB") {
            config = config.cache_capacity_bytes(mib << 20);
        }
        let (store, samples) = support::seeded(n, config);
        let mut pick = support::Pick::new(7);
        group.bench_function(format!("cold_{n}"), |b| {
            b.iter(|| {
                store
                    .verify(black_box(&samples[pick.next(samples.len())]))
                    .unwrap()
            })
        });
        let (rss, peak) = support::rss_mib();
        eprintln!("  after cold_{n}: RSS {rss:.1} MiB (peak {peak:.1} MiB)");
    }
    group.finish();
}

fn create(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = latchkey_core::Store::create_empty(
        dir.path(),
        "lk",
        StoreConfig::default()
            .engine(support::engine())
            .usage_flush_interval(None),
    )
    .unwrap();
    let user = support::user(&store, "u", &[]);
    let mut group = c.benchmark_group("create");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("key_durable", |b| {
        b.iter(|| support::key(&store, &user, "k"))
    });
    group.finish();
}

fn permissions(c: &mut Criterion) {
    use latchkey_core::PermissionSet;
    use latchkey_core::limits::{MAX_GROUPS_PER_USER, MAX_PERMISSIONS};
    let set = |prefix: &str, n: usize| {
        PermissionSet::parse((0..n).map(|i| format!("{prefix}{i}:items:read"))).unwrap()
    };
    let typical = (set("orders", 3), vec![set("billing", 2), set("users", 2)]);
    let largest = (
        set("direct", MAX_PERMISSIONS),
        (0..MAX_GROUPS_PER_USER)
            .map(|g| set(&format!("g{g}x"), MAX_PERMISSIONS))
            .collect::<Vec<_>>(),
    );
    let mut group = c.benchmark_group("permissions");
    group.bench_function("effective_typical", |b| {
        b.iter(|| PermissionSet::effective(black_box(&typical.0), &typical.1, None))
    });
    group.sample_size(10);
    group.bench_function("effective_largest", |b| {
        b.iter(|| PermissionSet::effective(black_box(&largest.0), &largest.1, None))
    });
    group.finish();
}

criterion_group!(benches, parse, verify, create, permissions);
criterion_main!(benches);
