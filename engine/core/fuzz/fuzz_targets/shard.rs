//! Request handling on a shard: a pipelined byte stream, parsed as a connection parses
//! it, run two ways on two identical stores: op by op (as a connection runs ops its own
//! shard owns) and through an encoded op batch executed under a small reply budget and
//! resumed until done (as another shard runs them over the mesh). Both must give
//! byte-identical replies and counters; a batch execution may exceed its budget only
//! with its first op; and both stores must stay consistent (`Store::check`). The direct
//! side sends values from where they lie (`Shard::get_in_place`, as a connection does):
//! their bytes are read only when the batch runs, after the requests that followed, just
//! before the pins are let go, so a pinned value rewritten meanwhile shows as a
//! difference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcache_core::protocol::{parse, reply, Limits, Parse, Request};
use ringcache_core::shard::{Op, OpBatch, Shard};
use ringcache_core::store::{CasSource, PinnedValue, Store, StoreConfig};

/// Values at least this long are pinned rather than copied on the direct side.
const PIN_MIN: usize = 16;

fn shard(setting: u8) -> Shard {
    let cas_enabled = setting & 0x08 == 0;
    let config = StoreConfig {
        evictions: setting & 0x04 == 0,
        cas: if cas_enabled { CasSource::Derived } else { CasSource::Off },
        limits: Limits { max_item_size: 64 << 10, cas_enabled },
        expected_items: Some(64),
        clock_base_unix: 1_700_000_000,
        ..StoreConfig::with_memory((2 + usize::from(setting & 0x03)) << 20)
    };
    let store = match Store::new(config) {
        Ok(s) => s,
        Err(e) => panic!("store: {e}"),
    };
    Shard::new(store, setting & 0x10 == 0)
}

fn check(shard: &Shard, what: &str) {
    if let Err(e) = shard.store().check() {
        panic!("{what} store inconsistent: {e}");
    }
}

/// Runs the queued batch on `batched` within `budget` per call, resuming until done, and
/// compares with what the direct shard answered, once the values it pinned are read
/// into their places (and unpinned).
fn run_batch(
    batched: &mut Shard,
    batch: &mut OpBatch,
    budget: usize,
    now: u32,
    direct: &mut Shard,
    direct_out: &mut Vec<u8>,
    pinned: &mut Vec<(usize, PinnedValue)>,
) {
    for (at, value) in pinned.drain(..) {
        // SAFETY: the value's segment is pinned: its bytes stay where they are, as they
        // are, until the unpin below.
        let bytes = unsafe { std::slice::from_raw_parts(value.ptr, value.len) };
        direct_out[at..at + value.len].copy_from_slice(bytes);
        direct.unpin(&value);
    }
    let mut out = Vec::new();
    let mut from = 0;
    let largest_small_reply = 64;
    while from < batch.bytes() {
        let (start, mut ends) = (out.len(), Vec::new());
        let resume = batched.execute_batch(batch, from, budget, true, now, &mut out, &mut ends);
        assert!(resume > from, "no progress from {from}");
        let used = out.len() - start;
        assert!(
            ends.len() == 1 || used <= budget.max(largest_small_reply),
            "{used} reply bytes over a budget of {budget} with {} ops",
            ends.len()
        );
        from = resume;
    }
    assert!(
        out == *direct_out,
        "batched replies differ:\n{:?}\nvs direct\n{:?}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(direct_out)
    );
    batch.clear();
    direct_out.clear();
}

fuzz_target!(|data: &[u8]| {
    let Some((&setting, rest)) = data.split_first() else { return };
    let Some((&budget, stream)) = rest.split_first() else { return };
    let budget = usize::from(budget) * 16;
    let (mut direct, mut batched) = (shard(setting), shard(setting));
    let limits = direct.store().limits();
    let mut direct_out = Vec::new();
    let mut batch = OpBatch::default();
    let mut pinned = Vec::new();
    let mut now = 100u32;
    let (mut at, mut swallow, mut requests) = (0usize, 0usize, 0u32);
    while at < stream.len() {
        if swallow > 0 {
            let skip = swallow.min(stream.len() - at);
            at += skip;
            swallow -= skip;
            continue;
        }
        let (request, noreply, consumed) = match parse(&stream[at..], &limits) {
            Parse::Request { request, noreply, consumed, swallow: s } => {
                swallow = s;
                (request, noreply, consumed)
            }
            _ => break,
        };
        at += consumed;
        requests += 1;
        // Time moves on every few requests; a batch runs at one time.
        if requests % 5 == 0 {
            run_batch(&mut batched, &mut batch, budget, now, &mut direct, &mut direct_out, &mut pinned);
            now += 1;
            direct.sweep(now);
            batched.sweep(now);
            check(&direct, "direct");
            check(&batched, "batched");
        }
        let mut run = |op: Op<'_>, noreply: bool| {
            direct.execute(&op, noreply, now, &mut direct_out);
            batch.push(&op, noreply);
        };
        match request {
            Request::Get { keys, cas, touch } => {
                if keys.iter().any(|k| k.len() > 250) {
                    continue;
                }
                drop(run);
                for key in keys.iter() {
                    if let Some(value) = direct.get_in_place(key, cas, touch, now, &mut direct_out, PIN_MIN) {
                        pinned.push((direct_out.len(), value));
                        direct_out.resize(direct_out.len() + value.len, 0);
                        direct_out.extend_from_slice(reply::VALUE_END);
                    }
                    batch.push(&Op::Get { key, cas, touch }, false);
                }
            }
            Request::Op(op) => run(op, noreply),
            Request::FlushAll { delay } => run(Op::FlushAll { delay, reply: true }, noreply),
            _ => {}
        }
    }
    run_batch(&mut batched, &mut batch, budget, now, &mut direct, &mut direct_out, &mut pinned);
    check(&direct, "direct");
    check(&batched, "batched");
    assert_eq!(format!("{:?}", direct.counters()), format!("{:?}", batched.counters()), "counters differ");
});
