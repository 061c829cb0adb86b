//! Deterministic hit-ratio simulation of one shard's store, no network and no timing:
//! only the store's policy decides the result, so two policies compare exactly.
//!
//! The load is that of `ringcache-bench --ratio G:S`: gets and sets of zipf-distributed
//! keys, drawn independently, in phases. Sets overwrite, so they leave dead bytes in
//! the segments. With `--cache-aside`, a get that misses also stores the key, as a
//! cache-aside client does. At the end of each phase it prints:
//! - the gets' hit ratio;
//! - the items held;
//! - the dead bytes as a share of item memory, sampled ten times in the phase;
//! - the share of sets that replaced a live item of the same value size (those an
//!   overwrite in place could have served);
//! - the segments drained and compacted to reclaim dead bytes, and how long stores took
//!   (p99.9, the longest, and how many took over 100 us and over 1 ms; wall-clock: the
//!   pause a request would see when its set makes room).
//!
//! ```text
//! cargo run --release -p ringcache-core --example hit_ratio -- \
//!     --memory 64 --keys 2000000 --zipf 0.9 --value 100 --phase 6000000:1:1 --phase 4000000:10:1
//! ```
//!
//! Options:
//! - `--value-dist lognormal` draws value sizes around `--value` (sigma 0.5), instead of
//!   a fixed size;
//! - `--ttl S` gives every set a TTL of S seconds, with the clock advancing 1 s every
//!   `--per-second` requests (default 100000);
//! - `--seed N` sets the seed.

use std::time::Instant;

use ringcache_core::store::{Store, StoreConfig, StoreMode};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

struct Phase {
    requests: u64,
    gets: u64,
    sets: u64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut memory_mb, mut keys, mut zipf, mut value, mut ttl, mut per_second, mut seed) =
        (64usize, 1_000_000usize, 0.99f64, 100usize, 0u32, 100_000u64, 7u64);
    let (mut lognormal, mut cache_aside) = (false, false);
    let mut phases = Vec::new();
    while let Some(flag) = args.next() {
        let mut value_of = |what: &str| args.next().unwrap_or_else(|| panic!("{what} needs a value"));
        let number = |s: String| -> f64 { s.parse().unwrap_or_else(|_| panic!("not a number: {s}")) };
        match flag.as_str() {
            "--memory" => memory_mb = number(value_of("--memory")) as usize,
            "--keys" => keys = number(value_of("--keys")) as usize,
            "--zipf" => zipf = number(value_of("--zipf")),
            "--value" => value = number(value_of("--value")) as usize,
            "--ttl" => ttl = number(value_of("--ttl")) as u32,
            "--per-second" => per_second = number(value_of("--per-second")) as u64,
            "--seed" => seed = number(value_of("--seed")) as u64,
            "--value-dist" => lognormal = value_of("--value-dist") == "lognormal",
            "--cache-aside" => cache_aside = true,
            "--phase" => {
                let spec = value_of("--phase");
                let parts: Vec<u64> = spec.split(':').map(|p| number(p.to_string()) as u64).collect();
                assert!(parts.len() == 3, "--phase REQUESTS:GETS:SETS, not {spec}");
                phases.push(Phase { requests: parts[0], gets: parts[1], sets: parts[2] });
            }
            "-h" | "--help" => {
                println!(
                    "hit_ratio [--memory MB] [--keys N] [--zipf S] [--value BYTES] [--value-dist fixed|lognormal] \
                     [--ttl S] [--per-second N] [--seed N] [--cache-aside] [--phase REQUESTS:GETS:SETS]..."
                );
                return;
            }
            other => panic!("unknown option {other} (--help lists them)"),
        }
    }
    if phases.is_empty() {
        phases.push(Phase { requests: 5_000_000, gets: 1, sets: 0 });
        cache_aside = true;
    }

    // Zipf CDF over ranks 1..=keys.
    let mut cdf = Vec::with_capacity(keys);
    let mut total = 0.0;
    for rank in 1..=keys {
        total += 1.0 / (rank as f64).powf(zipf);
        cdf.push(total);
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut store = Store::new(StoreConfig::with_memory(memory_mb << 20)).unwrap_or_else(|e| panic!("store: {e}"));
    let big = vec![b'v'; value * 20 + 1];
    let size = |rng: &mut Rng| -> usize {
        if lognormal {
            // Median `value`, sigma 0.5, at least 1 byte, at most 20x the median.
            ((value as f64) * (0.5 * rng.normal()).exp()).round().clamp(1.0, (value * 20) as f64) as usize
        } else {
            value
        }
    };
    println!(
        "memory {memory_mb} MB, {keys} keys, zipf {zipf}, values {value} B{}, ttl {ttl}{}",
        if lognormal { " (lognormal)" } else { "" },
        if cache_aside { ", cache-aside" } else { "" }
    );
    let mut done = 0u64;
    let now_of = |done: u64| 100 + (done / per_second.max(1)) as u32;
    for (n, phase) in phases.iter().enumerate() {
        let (mut gets, mut hits) = (0u64, 0u64);
        // Sets, and those that replace a live item of the same value size: what an
        // overwrite in place could serve (issue 14's alternative to reclaiming).
        let (mut sets, mut same_size) = (0u64, 0u64);
        let before = store.stats();
        let mut store_ns: Vec<u32> = Vec::new();
        let mut samples = Vec::new();
        for i in 0..phase.requests {
            let now = now_of(done);
            let u = rng.unit() * total;
            let key = format!("key:{:012}", cdf.partition_point(|&c| c < u));
            let is_set = rng.next() % (phase.gets + phase.sets) >= phase.gets;
            let exptime = if ttl > 0 { now + ttl } else { 0 };
            if is_set {
                let len = size(&mut rng);
                sets += 1;
                same_size += u64::from(store.peek_value_len(key.as_bytes(), now) == Some(len));
                let started = Instant::now();
                store.store(StoreMode::Set, key.as_bytes(), 0, exptime, &big[..len], 0, now);
                store_ns.push(started.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
            } else {
                gets += 1;
                let hit = store.get(key.as_bytes(), now).is_some();
                hits += u64::from(hit);
                if !hit && cache_aside {
                    let len = size(&mut rng);
                    let started = Instant::now();
                    store.store(StoreMode::Set, key.as_bytes(), 0, exptime, &big[..len], 0, now);
                    store_ns.push(started.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
                }
            }
            done += 1;
            if (i + 1) % (phase.requests / 10).max(1) == 0 {
                let st = store.stats();
                samples.push(st.dead_bytes as f64 / (st.bytes + st.dead_bytes).max(1) as f64);
            }
        }
        let st = store.stats();
        store_ns.sort_unstable();
        let p999 = store_ns.get(store_ns.len() * 999 / 1000).copied().unwrap_or(0);
        let longest = store_ns.last().copied().unwrap_or(0);
        let shown: Vec<String> = samples.iter().map(|d| format!("{:.2}", d)).collect();
        println!(
            "phase {} ({} requests, {}:{}): hit ratio {:.4}, items {}, evictions {}, dead-byte share [{}], \
             sets replacing a live item of the same size {:.2}, segments drained {} (items moved {}), \
             compacted in place {}, evicting drains {}, \
             store time p99.9 {:.1} us, longest {:.1} us, over 100 us {}, over 1 ms {}",
            n + 1,
            phase.requests,
            phase.gets,
            phase.sets,
            hits as f64 / gets.max(1) as f64,
            st.curr_items,
            st.evictions,
            shown.join(" "),
            same_size as f64 / sets.max(1) as f64,
            st.dead_reclaims - before.dead_reclaims,
            st.dead_reclaim_moves - before.dead_reclaim_moves,
            st.dead_compactions - before.dead_compactions,
            st.evicting_drains - before.evicting_drains,
            f64::from(p999) / 1000.0,
            f64::from(longest) / 1000.0,
            store_ns.len() - store_ns.partition_point(|&ns| ns <= 100_000),
            store_ns.len() - store_ns.partition_point(|&ns| ns <= 1_000_000)
        );
    }
}
