//! Deterministic hit-ratio simulation of one shard's store: a cache-aside client reads
//! zipf-distributed keys and, on a miss, stores the value. No network, no timing: only
//! the eviction policy decides the result, so two policies can be compared exactly.
//!
//! A fraction of requests (SET_PERCENT) are writes of an existing key, which leave dead
//! bytes behind in the segments.
//!
//! cargo run --release -p ringcache-core --example hit_ratio -- [MEMORY_MB] [KEYS] [VALUE_BYTES] [ZIPF_S] [REQUESTS] [SET_PERCENT]

use ringcache_core::store::StoreMode;
use ringcache_core::store::{Store, StoreConfig};

fn main() {
    let arg = |i: usize, default: f64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let memory_mb = arg(1, 64.0) as usize;
    let keys = arg(2, 1_000_000.0) as usize;
    let value_len = arg(3, 100.0) as usize;
    let s = arg(4, 0.99);
    let requests = arg(5, 5_000_000.0) as usize;
    let set_percent = arg(6, 0.0) as u64;

    // Zipf CDF over ranks 1..=keys.
    let mut cdf = Vec::with_capacity(keys);
    let mut total = 0.0;
    for rank in 1..=keys {
        total += 1.0 / (rank as f64).powf(s);
        cdf.push(total);
    }
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let u = (rng >> 11) as f64 / (1u64 << 53) as f64 * total;
        cdf.partition_point(|&c| c < u)
    };
    let config = StoreConfig::with_memory(memory_mb << 20);
    let mut store = match Store::new(config) {
        Ok(s) => s,
        Err(e) => panic!("store: {e}"),
    };
    let value = vec![b'v'; value_len];
    let (mut hits, mut gets) = (0u64, 0u64);
    for i in 0..requests {
        let key = format!("key:{:012}", next());
        if (i as u64 * 7919) % 100 < set_percent {
            store.store(StoreMode::Set, key.as_bytes(), 0, 0, &value, 0, 100);
            continue;
        }
        let hit = store.get(key.as_bytes(), 100).is_some();
        if !hit {
            store.store(StoreMode::Set, key.as_bytes(), 0, 0, &value, 0, 100);
        }
        // Count the second half only (warm cache).
        if i >= requests / 2 {
            gets += 1;
            hits += u64::from(hit);
        }
    }
    let st = store.stats();
    println!(
        "memory {memory_mb} MB, {keys} keys, {value_len} B values, zipf {s}: hit ratio {:.4} ({} items, {} evictions)",
        hits as f64 / gets as f64,
        st.curr_items,
        st.evictions
    );
}
