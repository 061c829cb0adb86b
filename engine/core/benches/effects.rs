//! Encoding and decoding an effect batch (what a replication log entry will carry): 16
//! puts of 32-byte values under 16-byte keys, the typical batch of a busy shard's round.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringcache_core::effect::{Effect, EffectBatch, PutValue};

fn keys() -> Vec<Vec<u8>> {
    (0..16).map(|i| format!("key:{i:012}").into_bytes()).collect()
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let value = [b'v'; 32];
    let effects: Vec<Effect<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Effect::Put {
            key: k,
            flags: 0,
            expires_at: 1_700_000_000 + i as i64,
            value: PutValue::Bytes(&value),
            cas: 1000 + i as u64,
            lease: ringcache_core::store::item::Lease::NONE,
        })
        .collect();
    let mut group = c.benchmark_group("effects");
    group.throughput(Throughput::Elements(effects.len() as u64));
    let mut batch = EffectBatch::default();
    let mut bytes = Vec::new();
    group.bench_function("encode_16_puts_32B", |b| {
        b.iter(|| {
            batch.clear();
            for e in &effects {
                batch.push(black_box(e));
            }
            bytes.clear();
            batch.encode_into(&mut bytes);
            black_box(bytes.len())
        })
    });
    bytes.clear();
    batch.encode_into(&mut bytes);
    group.bench_function("decode_16_puts_32B", |b| {
        b.iter(|| {
            let decoded = EffectBatch::decode(black_box(&bytes)).map(|e| e.count());
            black_box(decoded)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
