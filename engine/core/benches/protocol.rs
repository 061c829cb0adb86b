//! Protocol micro-benchmarks: parsing get/set requests and encoding a VALUE reply.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringcache_core::protocol::{parse, reply, Limits, Parse};

const LIMITS: Limits = Limits { max_item_size: 1 << 20, cas_enabled: true };

fn consumed(p: Parse<'_>) -> usize {
    match p {
        Parse::Request { consumed, .. } => consumed,
        _ => 0,
    }
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol");
    group.throughput(Throughput::Elements(1));
    let get = b"get key:000000012345\r\n";
    group.bench_function("parse_get", |b| b.iter(|| consumed(parse(black_box(get), &LIMITS))));
    let set = b"set key:000000012345 0 0 32\r\nvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\r\n";
    group.bench_function("parse_set_32B", |b| b.iter(|| consumed(parse(black_box(set), &LIMITS))));
    let multi = b"get k1 k2 k3 k4 k5 k6 k7 k8 k9 k10 k11 k12 k13 k14 k15 k16\r\n";
    group.bench_function("parse_get16", |b| b.iter(|| consumed(parse(black_box(multi), &LIMITS))));
    let mut out = Vec::with_capacity(4096);
    let value = [b'v'; 32];
    group.bench_function("encode_value_32B", |b| {
        b.iter(|| {
            out.clear();
            reply::value(&mut out, black_box(b"key:000000012345"), 0, &value, Some(12345));
            out.len()
        })
    });
    group.finish();
}

criterion_group!(protocol_benches, benches);
criterion_main!(protocol_benches);
