//! Store micro-benchmarks: get hit, get miss, set (overwrite) and set (new key, with
//! eviction once full) on one shard's store, through its public interface.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringcache_core::store::StoreMode;
use ringcache_core::store::{Store, StoreConfig};

const KEYS: usize = 100_000;

fn config(memory: usize) -> StoreConfig {
    let huge_pages = std::env::var_os("RINGCACHE_BENCH_HUGE_PAGES").is_some();
    StoreConfig { huge_pages, ..StoreConfig::with_memory(memory) }
}

fn key(i: usize) -> [u8; 16] {
    let mut k = *b"key:000000000000";
    let mut n = i;
    for b in k[4..].iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// A pseudo-random walk over the key space (no stride a prefetcher could follow).
fn next(i: &mut usize) -> usize {
    let mut x = (*i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    *i = x as usize;
    (x % KEYS as u64) as usize
}

fn filled(memory: usize) -> Store {
    let mut store = match Store::new(config(memory)) {
        Ok(s) => s,
        Err(e) => panic!("store: {e}"),
    };
    let value = [b'v'; 32];
    for i in 0..KEYS {
        store.store(StoreMode::Set, &key(i), 0, 0, &value, 0, 100);
    }
    store
}

fn benches(c: &mut Criterion) {
    let value = [b'v'; 32];
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));

    let mut store = filled(256 << 20);
    let mut i = 0usize;
    group.bench_function("get_hit_32B", |b| {
        b.iter(|| black_box(store.get(&key(next(&mut i)), 100).map(|item| item.value.len())))
    });
    group.bench_function("get_miss", |b| {
        b.iter(|| {
            let mut k = key(next(&mut i));
            k[0] = b'x';
            black_box(store.get(&k, 100).is_some())
        })
    });
    group.bench_function("set_overwrite_32B", |b| {
        b.iter(|| black_box(store.store(StoreMode::Set, &key(next(&mut i)), 0, 0, &value, 0, 100)))
    });
    // A store too small for the key space: every set of a new key evicts.
    group.bench_function("set_evicting_32B", |b| {
        b.iter_batched_ref(
            || filled(4 << 20),
            |s| {
                for j in 0..1000 {
                    black_box(s.store(StoreMode::Set, &key(KEYS + j), 0, 0, &value, 0, 100));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);
