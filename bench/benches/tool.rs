//! The load tool's own per-request cost, without the network: generating the next operation
//! (kind, key with uniform/zipf/sequential popularity, value size), encoding it into a send
//! buffer (get, multiget, set, delete, incr, cas), parsing replies (`VALUE ... END`, `END`,
//! `STORED`, `DELETED`, an incr's number), recording a latency pair into the HDR histograms, and
//! `--verify`'s value check. Each iteration is one request, so the time
//! criterion prints is the cost per request and the throughput is requests per second per core.
//!
//! Encoding and the verify check are composed from the same calls, in the same order, as the
//! worker's `issue_op` and `parse_replies`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringcache_bench::stats::Recorder;
use ringcache_bench::verify;
use ringcache_bench::workload::{
    Generator, KeyDist, KeySpace, OpKind, Ratio, SizeDist, ValueSize, WorkloadSpec, MAX_KEY_LEN,
};
use ringcache_client::{self as protocol, DeleteReply, GetItem, IncrReply, Parsed, StoreReply};
use std::hint::black_box;
use std::time::Duration;

const KEYS: u64 = 1_000_000;
const KEY_SIZE: usize = 16;

fn spec(dist: KeyDist) -> WorkloadSpec {
    WorkloadSpec {
        keys: KeySpace::new(KEYS, KEY_SIZE).expect("valid key space"),
        dist,
        ratio: Ratio::get_set(10, 1),
        multiget: 1,
        value_size: ValueSize::uniform(32, 32),
    }
}

/// A key index walk that the optimiser cannot see through, cheaper than the generator.
fn step(k: u64) -> u64 {
    (k + 7_919) % KEYS
}

fn next_op(c: &mut Criterion) {
    let mut g = c.benchmark_group("next_op");
    g.throughput(Throughput::Elements(1));
    for (name, dist) in
        [("uniform", KeyDist::Uniform), ("zipf_0.99", KeyDist::Zipf(0.99)), ("sequential", KeyDist::Sequential)]
    {
        let mut gen = Generator::new(spec(dist), 1, 0, 1).expect("valid workload");
        g.bench_function(name, |b| {
            b.iter(|| {
                let kind = gen.next_kind();
                let key = gen.next_key();
                let size = if kind == OpKind::Set { gen.next_value_size() } else { 0 };
                black_box((kind, key, size))
            })
        });
    }
    let mut ranged = spec(KeyDist::Uniform);
    ranged.value_size = ValueSize::uniform(16, 4096);
    let mut gen = Generator::new(ranged, 1, 0, 1).expect("valid workload");
    g.bench_function("uniform_size_16-4096", |b| {
        b.iter(|| {
            let kind = gen.next_kind();
            black_box((kind, gen.next_key(), gen.next_value_size()))
        })
    });
    let mut mixed = spec(KeyDist::Uniform);
    mixed.ratio = Ratio { get: 6, set: 2, delete: 1, incr: 1, cas: 1 };
    mixed.value_size = ValueSize { min: 1, max: 65_536, dist: SizeDist::LogNormal { median: 300.0, sigma: 1.5 } };
    let mut gen = Generator::new(mixed, 1, 0, 1).expect("valid workload");
    g.bench_function("mixed_6:2:1:1:1_lognormal", |b| {
        b.iter(|| {
            let kind = gen.next_kind();
            black_box((kind, gen.next_key(), gen.next_value_size()))
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let keys = KeySpace::new(KEYS, KEY_SIZE).expect("valid key space");
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut kb = [0u8; MAX_KEY_LEN];

    let mut k = 0u64;
    g.bench_function("get", |b| {
        b.iter(|| {
            out.clear();
            k = step(k);
            let key = &mut kb[..KEY_SIZE];
            protocol::begin_get(&mut out);
            keys.write_key(k, key);
            protocol::push_get_key(&mut out, key);
            protocol::end_line(&mut out);
            black_box(out.len())
        })
    });
    g.bench_function("delete", |b| {
        b.iter(|| {
            out.clear();
            k = step(k);
            let key = &mut kb[..KEY_SIZE];
            keys.write_key(k, key);
            protocol::delete(&mut out, key);
            black_box(out.len())
        })
    });
    g.bench_function("incr", |b| {
        b.iter(|| {
            out.clear();
            k = step(k);
            let key = &mut kb[..KEY_SIZE];
            keys.write_counter_key(k, key);
            protocol::incr(&mut out, key, 1);
            black_box(out.len())
        })
    });
    let mut cas_value = [0u8; 32];
    verify::fill_value(b"ringcache-bench filler", 0, &mut cas_value);
    g.bench_function("cas_32B", |b| {
        b.iter(|| {
            out.clear();
            k = step(k);
            let key = &mut kb[..KEY_SIZE];
            keys.write_key(k, key);
            protocol::cas_header(&mut out, key, 0, 0, cas_value.len(), black_box(1_234_567_890));
            out.extend_from_slice(&cas_value);
            protocol::end_line(&mut out);
            black_box(out.len())
        })
    });
    g.bench_function("multiget_10", |b| {
        b.iter(|| {
            out.clear();
            let key = &mut kb[..KEY_SIZE];
            protocol::begin_get(&mut out);
            for _ in 0..10 {
                k = step(k);
                keys.write_key(k, key);
                protocol::push_get_key(&mut out, key);
            }
            protocol::end_line(&mut out);
            black_box(out.len())
        })
    });
    for size in [32usize, 1024] {
        let mut filler = vec![0u8; size];
        verify::fill_value(b"ringcache-bench filler", 0, &mut filler);
        g.bench_function(format!("set_{size}B"), |b| {
            b.iter(|| {
                out.clear();
                k = step(k);
                let key = &mut kb[..KEY_SIZE];
                keys.write_key(k, key);
                protocol::set_header(&mut out, key, 0, 0, size);
                out.extend_from_slice(&filler[..size]);
                protocol::end_line(&mut out);
                black_box(out.len())
            })
        });
        let mut version = 0u32;
        g.bench_function(format!("set_{size}B_verify"), |b| {
            b.iter(|| {
                out.clear();
                k = step(k);
                let key = &mut kb[..KEY_SIZE];
                keys.write_key(k, key);
                protocol::set_header(&mut out, key, 0, 0, size);
                let start = out.len();
                out.resize(start + size, 0);
                verify::fill_value(key, version, &mut out[start..]);
                version = version.wrapping_add(1);
                protocol::end_line(&mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// Walks one GET reply unit by unit, as the worker does; returns (hits, consumed).
fn walk_get(buf: &[u8]) -> (u32, usize) {
    let (mut hits, mut at) = (0, 0);
    loop {
        match protocol::parse_get_item(&buf[at..]) {
            Ok(Parsed::Done { consumed, item }) => {
                at += consumed;
                match item {
                    GetItem::Value { .. } => hits += 1,
                    GetItem::End | GetItem::Error(_) => return (hits, at),
                }
            }
            Ok(Parsed::Incomplete { .. }) | Err(_) => return (hits, at),
        }
    }
}

fn value_reply(keys: &KeySpace, idx: &[u64], size: usize) -> Vec<u8> {
    let mut reply = Vec::new();
    let mut key = vec![0u8; keys.key_size()];
    for &k in idx {
        keys.write_key(k, &mut key);
        let mut value = vec![0u8; size];
        verify::fill_value(&key, 1, &mut value);
        reply.extend_from_slice(b"VALUE ");
        reply.extend_from_slice(&key);
        reply.extend_from_slice(format!(" 0 {size}\r\n").as_bytes());
        reply.extend_from_slice(&value);
        reply.extend_from_slice(b"\r\n");
    }
    reply.extend_from_slice(b"END\r\n");
    reply
}

fn parse(c: &mut Criterion) {
    let keys = KeySpace::new(KEYS, KEY_SIZE).expect("valid key space");
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    let hit = value_reply(&keys, &[12_345], 32);
    g.bench_function("get_hit_32B", |b| b.iter(|| walk_get(black_box(&hit))));
    let big = value_reply(&keys, &[12_345], 4096);
    g.bench_function("get_hit_4096B", |b| b.iter(|| walk_get(black_box(&big))));
    let multi = value_reply(&keys, &(0..10).map(|i| i * 1000).collect::<Vec<_>>(), 32);
    g.bench_function("multiget_10_hits_32B", |b| b.iter(|| walk_get(black_box(&multi))));
    g.bench_function("get_miss", |b| b.iter(|| walk_get(black_box(b"END\r\n"))));
    g.bench_function("stored", |b| {
        b.iter(|| match protocol::parse_store_reply(black_box(b"STORED\r\n")) {
            Ok(Parsed::Done { consumed, item: StoreReply::Stored }) => consumed,
            _ => 0,
        })
    });
    g.bench_function("deleted", |b| {
        b.iter(|| match protocol::parse_delete_reply(black_box(b"DELETED\r\n")) {
            Ok(Parsed::Done { consumed, item: DeleteReply::Deleted }) => consumed,
            _ => 0,
        })
    });
    g.bench_function("incr_value", |b| {
        b.iter(|| match protocol::parse_incr_reply(black_box(b"1234567\r\n")) {
            Ok(Parsed::Done { consumed, item: IncrReply::Value(v) }) => consumed + v as usize,
            _ => 0,
        })
    });
    g.finish();
}

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    // Latencies spread over 20 us .. 20 ms, so the histograms touch many buckets.
    let samples: Vec<u64> = (0..4096u64).map(|i| 20_000 + (i * 2_654_435_761) % 20_000_000).collect();
    let mut rec = Recorder::default();
    let mut i = 0usize;
    g.bench_function("latency_and_service", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let ns = samples[i];
            rec.record(black_box(ns + 1_000), black_box(ns));
        })
    });
    black_box(rec.latency.len());
    g.finish();
}

fn verify_values(c: &mut Criterion) {
    let keys = KeySpace::new(KEYS, KEY_SIZE).expect("valid key space");
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(1));
    for size in [32usize, 1024] {
        let mut key = vec![0u8; KEY_SIZE];
        keys.write_key(424_242, &mut key);
        let mut value = vec![0u8; size];
        verify::fill_value(&key, 7, &mut value);
        let asked = [(0u32, 424_242u64)];
        g.bench_function(format!("check_{size}B"), |b| {
            b.iter(|| {
                // What the worker does for each VALUE under --verify.
                let key = black_box(&key[..]);
                let ok = keys.parse_key(key).is_some_and(|k| asked.iter().any(|e| e.1 == k))
                    && verify::check_value(key, black_box(&value)).is_ok();
                black_box(ok)
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    // Short runs: the numbers are stable to a few percent on an idle core well within this.
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = tool;
    config = config();
    targets = next_op, encode, parse, record, verify_values
}
criterion_main!(tool);
