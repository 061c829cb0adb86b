//! Store tests: memcached semantics, segment eviction and expiry, warm restart, and a
//! property test against a plain model (a HashMap with expiry).

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::numbers::parse_u64;
use crate::store::item::Lease;

fn config(memory: usize) -> StoreConfig {
    StoreConfig { clock_base_unix: 1_000_000, ..StoreConfig::with_memory(memory) }
}

fn store(memory: usize) -> Store {
    match Store::new(config(memory)) {
        Ok(s) => s,
        Err(e) => panic!("store: {e}"),
    }
}

fn value(s: &mut Store, key: &[u8], now: u32) -> Option<Vec<u8>> {
    s.get(key, now).map(|i| i.value.to_vec())
}

#[test]
fn set_get_delete() {
    let mut s = store(4 << 20);
    assert_eq!(s.store(StoreMode::Set, b"k", 3, 0, b"v", 0, 100), StoreOutcome::Stored);
    let item = s.get(b"k", 100).map(|i| (i.flags, i.value.to_vec()));
    assert_eq!(item, Some((3, b"v".to_vec())));
    assert!(s.delete(b"k", 100));
    assert!(s.get(b"k", 100).is_none());
    assert!(!s.delete(b"k", 100));
}

#[test]
fn cas_add_replace_append_rules() {
    let mut s = store(4 << 20);
    assert_eq!(s.store(StoreMode::Replace, b"k", 0, 0, b"a", 0, 1), StoreOutcome::NotStored);
    assert_eq!(s.store(StoreMode::Cas, b"k", 0, 0, b"a", 1, 1), StoreOutcome::NotFound);
    assert_eq!(s.store(StoreMode::Add, b"k", 0, 0, b"a", 0, 1), StoreOutcome::Stored);
    assert_eq!(s.store(StoreMode::Add, b"k", 0, 0, b"b", 0, 1), StoreOutcome::NotStored);
    let cas = s.get(b"k", 1).map(|i| i.cas).unwrap_or(0);
    assert_ne!(cas, 0);
    assert_eq!(s.store(StoreMode::Cas, b"k", 0, 0, b"c", cas + 1, 1), StoreOutcome::Exists);
    assert_eq!(s.store(StoreMode::Cas, b"k", 0, 0, b"c", cas, 1), StoreOutcome::Stored);
    let new_cas = s.get(b"k", 1).map(|i| i.cas).unwrap_or(0);
    assert_ne!(new_cas, cas, "a new version has a new CAS");
    assert_eq!(s.store(StoreMode::Append, b"k", 9, 0, b"d", 0, 1), StoreOutcome::Stored);
    assert_eq!(s.store(StoreMode::Prepend, b"k", 9, 0, b"b", 0, 1), StoreOutcome::Stored);
    let item = s.get(b"k", 1).map(|i| (i.flags, i.value.to_vec()));
    assert_eq!(item, Some((0, b"bcd".to_vec())));
}

#[test]
fn arith_pads_shorter_results() {
    let mut s = store(4 << 20);
    s.store(StoreMode::Set, b"n", 5, 0, b"100", 0, 1);
    assert_eq!(s.arith(b"n", false, 1, 1), ArithOutcome::Value(99));
    assert_eq!(value(&mut s, b"n", 1), Some(b"99 ".to_vec()));
    assert_eq!(s.arith(b"n", true, 1000, 1), ArithOutcome::Value(1099));
    assert_eq!(value(&mut s, b"n", 1), Some(b"1099".to_vec()));
    assert_eq!(s.get(b"n", 1).map(|i| i.flags), Some(5));
    assert_eq!(s.arith(b"n", false, 5000, 1), ArithOutcome::Value(0));
    s.store(StoreMode::Set, b"m", 0, 0, b"18446744073709551615", 0, 1);
    assert_eq!(s.arith(b"m", true, 2, 1), ArithOutcome::Value(1));
    s.store(StoreMode::Set, b"x", 0, 0, b"abc", 0, 1);
    assert_eq!(s.arith(b"x", true, 1, 1), ArithOutcome::NonNumeric);
    assert_eq!(s.arith(b"y", true, 1, 1), ArithOutcome::NotFound);
}

#[test]
fn touch_keeps_the_cas_when_the_item_has_an_expiry() {
    let mut s = store(4 << 20);
    s.store(StoreMode::Set, b"t", 0, 200, b"v", 0, 100);
    let cas = s.get(b"t", 100).map(|i| i.cas);
    assert_eq!(s.touch(b"t", 300, 100).map(|i| i.cas), cas);
    assert!(s.get(b"t", 250).is_some(), "touch extended the expiry");
    assert!(s.get(b"t", 300).is_none());
    // No expiry field yet: the item is rewritten with one, keeping its CAS.
    s.store(StoreMode::Set, b"u", 0, 0, b"v", 0, 100);
    let cas = s.get(b"u", 100).map(|i| i.cas);
    assert_eq!(s.touch(b"u", 150, 100).map(|i| i.cas), cas);
    assert_eq!(s.get(b"u", 100).map(|i| i.cas), cas);
    assert_eq!(value(&mut s, b"u", 149), Some(b"v".to_vec()));
    assert!(s.get(b"u", 150).is_none());
}

#[test]
fn expiry_and_delayed_flush() {
    let mut s = store(4 << 20);
    s.store(StoreMode::Set, b"a", 0, 105, b"v", 0, 100);
    assert!(s.get(b"a", 104).is_some());
    assert!(s.get(b"a", 105).is_none());
    s.store(StoreMode::Set, b"b", 0, 0, b"v", 0, 100);
    s.flush(Some(110), 100);
    assert!(s.get(b"b", 109).is_some());
    assert!(s.get(b"b", 110).is_none());
}

#[test]
fn expired_segments_are_reclaimed_whole_by_the_sweep() {
    let mut s = store(8 << 20);
    let v = [b'x'; 1000];
    for i in 0..3000u32 {
        s.store(StoreMode::Set, format!("ttl{i}").as_bytes(), 0, 110, &v, 0, 100);
    }
    let used = s.stats().segments_total - s.stats().segments_free;
    assert!(used >= 3, "items span several segments: {used}");
    assert_eq!(s.sweep(105, 100), 0, "nothing expired yet");
    let reclaimed = s.sweep(200, 100);
    assert!(reclaimed >= 2, "sealed expired segments reclaimed: {reclaimed}");
    assert!(s.stats().curr_items < 3000);
    assert!(s.get(b"ttl5", 200).is_none());
}

#[test]
fn eviction_keeps_recently_read_items() {
    // 4 segments of 1 MiB; write 10 MiB of items while reading a hot set.
    let mut s = store(4 << 20);
    let v = [b'x'; 500];
    let hot: Vec<String> = (0..200).map(|i| format!("hot{i}")).collect();
    for h in &hot {
        s.store(StoreMode::Set, h.as_bytes(), 0, 0, &v, 0, 1);
    }
    for i in 0..20_000u32 {
        s.store(StoreMode::Set, format!("cold{i}").as_bytes(), 0, 0, &v, 0, 1);
        let h = &hot[i as usize % hot.len()];
        s.get(h.as_bytes(), 1);
    }
    let cas_before: Vec<_> = hot.iter().map(|h| s.get(h.as_bytes(), 1).map(|i| i.cas)).collect();
    for i in 20_000..30_000u32 {
        s.store(StoreMode::Set, format!("cold{i}").as_bytes(), 0, 0, &v, 0, 1);
        s.get(hot[i as usize % hot.len()].as_bytes(), 1);
    }
    let cas_after: Vec<_> = hot.iter().map(|h| s.get(h.as_bytes(), 1).map(|i| i.cas)).collect();
    let same = cas_before.iter().zip(&cas_after).filter(|(a, b)| a.is_some() && a == b).count();
    assert!(same >= 190, "items moved by compaction keep their CAS: {same}/200");
    let hot_left = hot.iter().filter(|h| s.get(h.as_bytes(), 1).is_some()).count();
    let cold_left = (0..30_000u32).filter(|i| s.get(format!("cold{i}").as_bytes(), 1).is_some()).count();
    assert!(hot_left >= 190, "hot items survive eviction: {hot_left}/200");
    assert!(cold_left < 8_000, "memory is bounded: {cold_left} cold items left");
    assert!(s.stats().evictions > 0);
}

#[test]
fn a_segment_left_without_live_items_is_free_at_once() {
    // 4 segments of 1 MiB; items of 600 KB fill a segment each. Three keys overwritten
    // over and over never need an eviction: each overwrite frees the old copy's segment.
    let mut s = store(4 << 20);
    let v = vec![b'x'; 600_000];
    for round in 0..100u32 {
        for k in 0..3u32 {
            let out = s.store(StoreMode::Set, format!("big{k}").as_bytes(), round, 0, &v, 0, 1);
            assert_eq!(out, StoreOutcome::Stored);
        }
    }
    assert_eq!(s.stats().evictions, 0, "live items were never evicted");
    for k in 0..3u32 {
        assert_eq!(s.get(format!("big{k}").as_bytes(), 1).map(|i| i.flags), Some(99));
    }
    assert!(s.delete(b"big0", 1) && s.delete(b"big1", 1));
    assert!(s.stats().segments_free >= 2, "deleted items' segments are free: {:?}", s.stats());
    s.check().expect("consistent");
}

#[test]
fn overwrites_reclaim_dead_bytes_without_evicting() {
    // 8 segments of 1 MiB. 11,000 keys of ~530 B (5.8 MB live, never read); then the even
    // keys are overwritten 40 times: 116 MB of writes through 8 MB. The first segments
    // keep the odd keys among dead copies of the even ones: draining such sparse
    // segments reclaims the dead bytes, so no live key is evicted (evicting the oldest
    // segment, as before, would lose odd keys: they were never read, so not kept as hot).
    let mut s = store(8 << 20);
    let keys: Vec<String> = (0..11_000).map(|i| format!("key:{i:08}")).collect();
    for k in &keys {
        assert_eq!(s.store(StoreMode::Set, k.as_bytes(), 0, 0, value_of(0).as_bytes(), 0, 1), StoreOutcome::Stored);
    }
    let odd_cas: Vec<Option<u64>> =
        keys.iter().skip(1).step_by(2).map(|k| s.get(k.as_bytes(), 1).map(|i| i.cas)).collect();
    for round in 1..=40u32 {
        for k in keys.iter().step_by(2) {
            let moves = s.stats().dead_reclaim_moves;
            let out = s.store(StoreMode::Set, k.as_bytes(), round, 0, value_of(round).as_bytes(), 0, 1);
            assert_eq!(out, StoreOutcome::Stored);
            let moved = s.stats().dead_reclaim_moves - moves;
            assert!(moved <= u64::from(reclaim::DRAIN_MAX_STEP), "one set moved {moved} items");
        }
    }
    let st = s.stats();
    assert_eq!(st.evictions, 0, "no live item was evicted: {st:?}");
    assert!(st.dead_reclaims > 0, "dead bytes were reclaimed: {st:?}");
    assert_eq!(st.dead_compactions, 0, "the drains kept up, no segment was walked in one go: {st:?}");
    assert_eq!(st.curr_items, keys.len() as u64);
    for (i, k) in keys.iter().enumerate() {
        let round = if i % 2 == 0 { 40 } else { 0 };
        assert_eq!(value(&mut s, k.as_bytes(), 1).as_deref(), Some(value_of(round).as_bytes()), "{k}");
        assert_eq!(s.get(k.as_bytes(), 1).map(|i| i.flags), Some(round));
    }
    // A moved item is the same version: its CAS did not change, and a check-and-set
    // with it succeeds.
    let moved_cas: Vec<Option<u64>> =
        keys.iter().skip(1).step_by(2).map(|k| s.get(k.as_bytes(), 1).map(|i| i.cas)).collect();
    assert_eq!(moved_cas, odd_cas);
    let first_odd = keys[1].as_bytes();
    let cas = odd_cas[0].unwrap_or(0);
    assert_eq!(s.store(StoreMode::Cas, first_odd, 0, 0, b"new", cas, 1), StoreOutcome::Stored);
    assert!(st.segments_by_live.iter().sum::<u64>() > 0);
    assert_eq!(s.check(), Ok(()));
}

#[test]
fn drains_keep_up_with_overwrites_of_items_with_a_ttl() {
    // As above, with every item given 100 s to live and the clock advancing a second
    // every 2,000 sets, so that writes and moves meet items of several TTL classes and
    // items that expire: the store stays consistent after every round, drains keep up
    // (no write compacts a segment in place), and nothing live is evicted or lost.
    let mut s = store(8 << 20);
    let keys: Vec<String> = (0..11_000).map(|i| format!("key:{i:08}")).collect();
    let mut now = 1;
    let mut sets = 0u32;
    let mut set = |s: &mut Store, k: &str, round: u32, now: &mut u32| {
        sets += 1;
        if sets % 2_000 == 0 {
            *now += 1;
        }
        s.store(StoreMode::Set, k.as_bytes(), round, *now + 100, value_of(round).as_bytes(), 0, *now)
    };
    for k in &keys {
        assert_eq!(set(&mut s, k, 0, &mut now), StoreOutcome::Stored);
    }
    for round in 1..=20u32 {
        for k in keys.iter().step_by(2) {
            assert_eq!(set(&mut s, k, round, &mut now), StoreOutcome::Stored);
        }
        // Odd keys are rewritten now and then, so they outlive their first TTL.
        if round % 4 == 0 {
            for k in keys.iter().skip(1).step_by(2) {
                assert_eq!(set(&mut s, k, round, &mut now), StoreOutcome::Stored);
            }
        }
        assert_eq!(s.check(), Ok(()));
    }
    let st = s.stats();
    assert!(st.dead_reclaims > 0, "{st:?}");
    assert_eq!(st.dead_compactions, 0, "no segment was walked in one go: {st:?}");
    assert_eq!(st.evictions, 0, "{st:?}");
    assert_eq!(st.curr_items, keys.len() as u64);
}

fn value_of(round: u32) -> String {
    format!("{round:0500}")
}

#[test]
fn a_reclaim_makes_room_for_the_item_even_when_moves_grow_items() {
    // Items that fill most of a segment: a sparse segment's live items plus the new one
    // must fit, else eviction decides; the store never loops or overfills.
    let mut s = store(4 << 20);
    for round in 0..50u32 {
        for k in 0..5u32 {
            let v = vec![b'a' + (round % 26) as u8; 300_000 + (k as usize) * 1000];
            s.store(StoreMode::Set, format!("big{k}").as_bytes(), 0, 0, &v, 0, 1);
        }
        assert_eq!(s.check(), Ok(()));
    }
    assert!(s.stats().curr_items >= 1);
}

#[test]
fn without_evictions_a_full_store_refuses() {
    let mut cfg = config(2 << 20);
    cfg.evictions = false;
    let mut s = Store::new(cfg).expect("store");
    let v = vec![b'x'; 100_000];
    let mut stored = 0;
    for i in 0..100u32 {
        match s.store(StoreMode::Set, format!("k{i}").as_bytes(), 0, 0, &v, 0, 1) {
            StoreOutcome::Stored => stored += 1,
            StoreOutcome::OutOfMemory => break,
            other => panic!("{other:?}"),
        }
    }
    assert!((15..=21).contains(&stored), "2 MiB holds about 20 items of 100 KB: {stored}");
    assert_eq!(s.store(StoreMode::Set, b"one-more", 0, 0, &v, 0, 1), StoreOutcome::OutOfMemory);
    assert!(s.get(b"k0", 1).is_some(), "nothing was evicted");
}

#[test]
fn cas_values_are_unique_across_shards() {
    let mut a = Store::new(StoreConfig { shard: 0, nshards: 2, ..config(2 << 20) }).expect("store");
    let mut b = Store::new(StoreConfig { shard: 1, nshards: 2, ..config(2 << 20) }).expect("store");
    a.store(StoreMode::Set, b"k", 0, 0, b"v", 0, 1);
    b.store(StoreMode::Set, b"k", 0, 0, b"v", 0, 1);
    assert_ne!(a.get(b"k", 1).map(|i| i.cas), b.get(b"k", 1).map(|i| i.cas));
}

#[test]
fn small_items_cost_four_header_bytes() {
    let mut s = store(4 << 20);
    let key = [b'k'; 16];
    s.store(StoreMode::Set, &key, 0, 0, &[b'v'; 32], 0, 1);
    assert_eq!(s.stats().bytes, 16 + 32 + 4);
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringcache-store-{}-{name}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir.join("segments")
}

fn file_config(path: &Path, base: i64) -> StoreConfig {
    StoreConfig { memory_file: Some(path.to_path_buf()), clock_base_unix: base, ..config(4 << 20) }
}

use std::path::Path;

#[test]
fn warm_restart_brings_back_items_with_flags_cas_and_ttl() {
    let path = temp_path("restart");
    let _ = std::fs::remove_file(&path);
    let mut s = Store::new(file_config(&path, 1_000_000)).expect("store");
    for i in 0..1000u32 {
        s.store(
            StoreMode::Set,
            format!("k{i}").as_bytes(),
            i,
            if i % 2 == 0 { 0 } else { 500 },
            format!("v{i}").as_bytes(),
            0,
            100,
        );
    }
    s.store(StoreMode::Set, b"k7", 7, 500, b"newer", 0, 100);
    let cas7 = s.get(b"k7", 100).map(|i| i.cas);
    s.save().expect("save");
    drop(s);
    // The new run's clock starts 50 s later: relative times shift by 50.
    let mut r = Store::new(file_config(&path, 1_000_050)).expect("store");
    assert_eq!(r.stats().curr_items, 1000);
    let k7 = r.get(b"k7", 100).map(|i| (i.flags, i.cas, i.value.to_vec()));
    assert_eq!(k7, Some((7, cas7.unwrap_or(0), b"newer".to_vec())));
    assert_eq!(value(&mut r, b"k2", 100), Some(b"v2".to_vec()));
    assert!(r.get(b"k3", 449).is_some());
    assert!(r.get(b"k3", 450).is_none(), "TTL carried over on the new clock");
    assert!(r.get(b"k4", 10_000).is_some(), "no TTL stays without TTL");
}

#[test]
fn restart_without_a_fresh_save_starts_empty_or_verified() {
    let path = temp_path("crash");
    let _ = std::fs::remove_file(&path);
    let mut s = Store::new(file_config(&path, 1_000_000)).expect("store");
    for i in 0..100u32 {
        s.store(StoreMode::Set, format!("k{i}").as_bytes(), 0, 0, b"before", 0, 100);
    }
    s.save().expect("save");
    // Changes after the save (then a crash): the changed segment must not verify.
    for i in 0..100u32 {
        s.store(StoreMode::Set, format!("k{i}").as_bytes(), 0, 0, b"after!", 0, 100);
    }
    drop(s);
    let mut r = Store::new(file_config(&path, 1_000_000)).expect("store");
    for i in 0..100u32 {
        let v = value(&mut r, format!("k{i}").as_bytes(), 100);
        assert!(v.is_none() || v == Some(b"before".to_vec()), "k{i}: {v:?}");
    }
    drop(r);
    // The metadata was consumed: another restart starts empty.
    let r = Store::new(file_config(&path, 1_000_000)).expect("store");
    assert_eq!(r.stats().curr_items, 0);
}

#[test]
fn damaged_metadata_or_other_settings_start_empty() {
    let path = temp_path("damaged");
    let _ = std::fs::remove_file(&path);
    let mut s = Store::new(file_config(&path, 1_000_000)).expect("store");
    s.store(StoreMode::Set, b"k", 0, 0, b"v", 0, 100);
    s.save().expect("save");
    drop(s);
    let meta = persist_meta_path(&path);
    let mut bytes = std::fs::read(&meta).expect("meta");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&meta, &bytes).expect("write");
    let r = Store::new(file_config(&path, 1_000_000)).expect("store");
    assert_eq!(r.stats().curr_items, 0);
    drop(r);
    let mut s = Store::new(file_config(&path, 1_000_000)).expect("store");
    s.store(StoreMode::Set, b"k", 0, 0, b"v", 0, 100);
    s.save().expect("save");
    drop(s);
    let other = StoreConfig { nshards: 2, shard: 1, ..file_config(&path, 1_000_000) };
    let r = Store::new(other).expect("store");
    assert_eq!(r.stats().curr_items, 0);
}

fn persist_meta_path(data: &Path) -> PathBuf {
    let mut p = data.as_os_str().to_owned();
    p.push(".meta");
    PathBuf::from(p)
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Step {
    Set(u8, u8, u8, u16),
    Add(u8, u8),
    Replace(u8, u8),
    Append(u8, u8),
    Prepend(u8, u8),
    Delete(u8),
    Get(u8),
    Incr(u8, u8),
    Touch(u8, u8),
    Advance(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (any::<u8>(), any::<u8>(), 0u8..4, 0u16..3000).prop_map(|(k, v, t, l)| Step::Set(k, v, t, l)),
        (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Step::Add(k, v)),
        (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Step::Replace(k, v)),
        (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Step::Append(k, v)),
        (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Step::Prepend(k, v)),
        any::<u8>().prop_map(Step::Delete),
        any::<u8>().prop_map(Step::Get),
        (any::<u8>(), any::<u8>()).prop_map(|(k, d)| Step::Incr(k, d)),
        (any::<u8>(), 0u8..4).prop_map(|(k, t)| Step::Touch(k, t)),
        (0u8..3).prop_map(Step::Advance),
    ]
}

/// The model: key -> (value, flags, expiry).
type Model = HashMap<Vec<u8>, (Vec<u8>, u32, u32)>;

fn model_live<'m>(m: &'m Model, k: &[u8], now: u32) -> Option<&'m (Vec<u8>, u32, u32)> {
    m.get(k).filter(|(_, _, e)| *e == 0 || *e > now)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Without memory pressure the store agrees with the model exactly.
    #[test]
    fn agrees_with_a_model_without_eviction(steps in proptest::collection::vec(step(), 1..400)) {
        let mut s = Store::new(StoreConfig { expected_items: Some(64), ..config(64 << 20) }).expect("store");
        let mut m: Model = HashMap::new();
        let mut now = 100u32;
        let exp = |t: u8, now: u32| if t == 0 { 0 } else { now + u32::from(t) };
        for st in steps {
            match st {
                Step::Set(k, v, t, len) => {
                    let key = vec![b'k', k % 64];
                    let val = vec![v; usize::from(len)];
                    prop_assert_eq!(s.store(StoreMode::Set, &key, u32::from(v), exp(t, now), &val, 0, now), StoreOutcome::Stored);
                    m.insert(key, (val, u32::from(v), exp(t, now)));
                }
                Step::Add(k, v) | Step::Replace(k, v) | Step::Append(k, v) | Step::Prepend(k, v) => {
                    let key = vec![b'k', k % 64];
                    let live = model_live(&m, &key, now).cloned();
                    let (mode, expect) = match st {
                        Step::Add(..) => (StoreMode::Add, live.is_none()),
                        Step::Replace(..) => (StoreMode::Replace, live.is_some()),
                        Step::Append(..) => (StoreMode::Append, live.is_some()),
                        _ => (StoreMode::Prepend, live.is_some()),
                    };
                    let got = s.store(mode, &key, 1, 0, &[v], 0, now);
                    prop_assert_eq!(got == StoreOutcome::Stored, expect, "{:?} {:?}", mode, got);
                    if expect {
                        let new = match (mode, live) {
                            (StoreMode::Append, Some((old, f, e))) => ([old, vec![v]].concat(), f, e),
                            (StoreMode::Prepend, Some((old, f, e))) => ([vec![v], old].concat(), f, e),
                            _ => (vec![v], 1, 0),
                        };
                        m.insert(key, new);
                    }
                }
                Step::Delete(k) => {
                    let key = vec![b'k', k % 64];
                    let expect = model_live(&m, &key, now).is_some();
                    prop_assert_eq!(s.delete(&key, now), expect);
                    m.remove(&key);
                }
                Step::Get(k) => {
                    let key = vec![b'k', k % 64];
                    let got = s.get(&key, now).map(|i| (i.value.to_vec(), i.flags));
                    let want = model_live(&m, &key, now).map(|(v, f, _)| (v.clone(), *f));
                    prop_assert_eq!(got, want);
                }
                Step::Incr(k, d) => {
                    let key = vec![b'k', k % 64];
                    let got = s.arith(&key, true, u64::from(d), now);
                    match model_live(&m, &key, now).cloned() {
                        None => prop_assert_eq!(got, ArithOutcome::NotFound),
                        Some((old, f, e)) => match if old.is_empty() { None } else { parse_u64(&old) } {
                            None => prop_assert_eq!(got, ArithOutcome::NonNumeric),
                            Some(n) => {
                                let r = n.wrapping_add(u64::from(d));
                                prop_assert_eq!(got, ArithOutcome::Value(r));
                                let mut digits = r.to_string().into_bytes();
                                if digits.len() <= old.len() {
                                    digits.resize(old.len(), b' ');
                                }
                                m.insert(key, (digits, f, e));
                            }
                        },
                    }
                }
                Step::Touch(k, t) => {
                    let key = vec![b'k', k % 64];
                    let live = model_live(&m, &key, now).is_some();
                    prop_assert_eq!(s.touch(&key, exp(t, now), now).is_some(), live);
                    if live {
                        if let Some(entry) = m.get_mut(&key) {
                            entry.2 = exp(t, now);
                        }
                    }
                }
                Step::Advance(secs) => now += u32::from(secs),
            }
            if let Err(e) = s.check() {
                prop_assert!(false, "store inconsistent after {:?}: {}", st, e);
            }
        }
        for k in 0..64u8 {
            let key = vec![b'k', k];
            let got = s.get(&key, now).map(|i| i.value.to_vec());
            prop_assert_eq!(got, model_live(&m, &key, now).map(|(v, _, _)| v.clone()));
        }
    }

    /// Under memory pressure the store may forget items, but never returns a value that
    /// was not the latest one written for that key.
    #[test]
    fn under_pressure_only_forgets(steps in proptest::collection::vec((any::<u16>(), 1u16..20_000), 1..600)) {
        let mut s = store(2 << 20);
        let mut latest: HashMap<u16, Vec<u8>> = HashMap::new();
        for (i, (k, len)) in steps.into_iter().enumerate() {
            let key = format!("key{}", k % 500);
            let val = vec![(i % 251) as u8; usize::from(len)];
            s.store(StoreMode::Set, key.as_bytes(), 0, 0, &val, 0, 1);
            latest.insert(k % 500, val);
            let probe = (k.wrapping_mul(7)) % 500;
            if let Some(got) = s.get(format!("key{probe}").as_bytes(), 1) {
                prop_assert_eq!(Some(got.value), latest.get(&probe).map(|v| v.as_slice()));
            }
            if i % 16 == 0 {
                if let Err(e) = s.check() {
                    prop_assert!(false, "store inconsistent after step {}: {}", i, e);
                }
            }
        }
    }
}

/// What a pinning test does: write (evicting, with TTLs), pin what a get finds,
/// unpin the oldest pin, flush, or let time pass.
#[derive(Debug, Clone)]
enum PinStep {
    Set(u16, u16, bool),
    Pin(u16),
    Unpin,
    Flush,
    Advance,
}

fn pin_step() -> impl Strategy<Value = PinStep> {
    prop_oneof![
        6 => (any::<u16>(), 1u16..60_000, any::<bool>()).prop_map(|(k, l, t)| PinStep::Set(k, l, t)),
        3 => any::<u16>().prop_map(PinStep::Pin),
        2 => Just(PinStep::Unpin),
        1 => Just(PinStep::Flush),
        1 => Just(PinStep::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A pinned value's bytes stay exactly as they were, where they were, whatever
    /// writes, evictions, expiries and flushes happen until it is unpinned; at most a
    /// quarter of the segments are pinned; the store stays consistent; and once every
    /// pin is gone every segment can be used again.
    #[test]
    fn pinned_values_stay_in_place_until_unpinned(steps in proptest::collection::vec(pin_step(), 1..500)) {
        let mut s = store(16 << 20);
        let nsegs = s.stats().segments_total as usize;
        let mut pins: std::collections::VecDeque<(PinnedValue, Vec<u8>)> = Default::default();
        let mut now = 100u32;
        for (i, st) in steps.into_iter().enumerate() {
            match st {
                PinStep::Set(k, len, ttl) => {
                    let val = vec![(i % 251) as u8; usize::from(len)];
                    let exptime = if ttl { now + 2 } else { 0 };
                    s.store(StoreMode::Set, format!("key{}", k % 400).as_bytes(), 0, exptime, &val, 0, now);
                }
                PinStep::Pin(k) => {
                    let Some(item) = s.get(format!("key{}", k % 400).as_bytes(), now) else { continue };
                    let (value, bytes) = (PinnedValue::of(&item), item.value.to_vec());
                    if s.pin(&value) {
                        pins.push_back((value, bytes));
                    } else {
                        prop_assert!(s.stats().segments_pinned as usize >= nsegs / 4, "a pin is refused only at the cap");
                    }
                }
                PinStep::Unpin => {
                    if let Some((value, _)) = pins.pop_front() {
                        s.unpin(&value);
                    }
                }
                PinStep::Flush => s.flush(None, now),
                PinStep::Advance => now += 3,
            }
            prop_assert!(s.stats().segments_pinned as usize <= nsegs / 4);
            for (value, bytes) in &pins {
                prop_assert!(s.bytes_of(value) == bytes.as_slice(), "pinned bytes changed at step {}", i);
            }
            if let Err(e) = s.check() {
                prop_assert!(false, "store inconsistent after step {}: {}", i, e);
            }
        }
        while let Some((value, _)) = pins.pop_front() {
            s.unpin(&value);
        }
        prop_assert_eq!((s.stats().segments_pinned, s.stats().segments_parked), (0, 0));
        s.flush(None, now);
        prop_assert_eq!(s.stats().segments_free as usize, nsegs, "every segment is free again");
    }
}

/// The metadata reader never trusts what it cannot verify, and never makes an
/// inconsistent store out of a file that verifies: an intact save is restored whole, a
/// damaged byte refuses the file, and crafted locations (overlapping, repeated, out of
/// range) with valid checksums are skipped.
#[test]
fn untrusted_metadata_never_makes_an_inconsistent_store() {
    let path = temp_path("untrusted");
    let _ = std::fs::remove_file(&path);
    let mut s = Store::new(file_config(&path, 1_000_000)).expect("store");
    for i in 0..50u32 {
        s.store(StoreMode::Set, format!("k{i}").as_bytes(), i, 0, format!("value-{i}").as_bytes(), 0, 100);
    }
    s.save().expect("save");
    drop(s);
    let meta = std::fs::read(format!("{}.meta", path.display())).expect("metadata");
    let data = std::fs::read(&path).expect("memory file");
    // MAGIC and six settings, then the body: clock base, oldest_live, one 23-byte record
    // per segment (write_at at offset 3 of the first), the location count, locations, CRC.
    let body = &meta[8 + 48..];
    let write_at = u32::from_le_bytes([body[12 + 3], body[12 + 4], body[12 + 5], body[12 + 6]]) as usize;
    let segments = &data[..write_at];
    let fresh = || Store::new(config(4 << 20)).expect("store");

    let mut r = fresh();
    assert!(r.restore_untrusted(segments, body, false), "an intact save verifies by itself");
    assert_eq!(r.stats().curr_items, 50);
    assert_eq!(value(&mut r, b"k7", 100), Some(b"value-7".to_vec()));
    assert_eq!(r.check(), Ok(()));

    for flip in [0, 12, 12 + 7, body.len() - 30, body.len() - 1] {
        let mut damaged = body.to_vec();
        damaged[flip] ^= 0x40;
        let mut r = fresh();
        assert!(!r.restore_untrusted(segments, &damaged, false), "byte {flip} flipped: refused");
        assert_eq!((r.stats().curr_items, r.check()), (0, Ok(())), "refused means empty");
    }

    // Valid checksums over crafted locations: every one a byte later (overlapping its
    // item), repeated, and beyond the segment.
    let records = 12 + 4 * 27;
    let count = u64::from_le_bytes(body[records..records + 8].try_into().expect("count")) as usize;
    let locations: Vec<u64> = (0..count)
        .map(|i| u64::from_le_bytes(body[records + 8 + i * 8..records + 16 + i * 8].try_into().expect("loc")))
        .collect();
    let mut crafted = body[..records].to_vec();
    let mut evil: Vec<u64> = locations.iter().flat_map(|&l| [l, l + 1, l]).collect();
    evil.extend([write_at as u64, (4 << 20) + 5, u64::MAX]);
    crafted.extend_from_slice(&(evil.len() as u64).to_le_bytes());
    for l in &evil {
        crafted.extend_from_slice(&l.to_le_bytes());
    }
    let mut r = fresh();
    assert!(r.restore_untrusted(segments, &crafted, true));
    assert_eq!(r.check(), Ok(()), "crafted locations made an inconsistent store");
    assert_eq!(r.stats().curr_items, 50, "each real item once, nothing else");
}

/// The CAS source is a setting of the store: derived from where the item is (no bytes)
/// unless the write names its CAS (the client's own, memcached's `E`: kept, 8 bytes),
/// stamped by the log (the item keeps it, 8 bytes; a write without one is refused), or
/// off (`-C`: every CAS 0, none stored).
#[test]
fn the_cas_source_decides_what_an_item_carries() {
    use crate::effect::{Effect, PutValue};
    let with = |cas| match Store::new(StoreConfig { cas, ..config(4 << 20) }) {
        Ok(s) => s,
        Err(e) => panic!("store: {e}"),
    };
    let (mut derived, mut stamped, mut off) =
        (with(CasSource::Derived), with(CasSource::Stamped), with(CasSource::Off));
    for i in 0..1000u64 {
        let key = format!("key:{i:012}");
        let put = |cas| Effect::Put {
            key: key.as_bytes(),
            flags: 0,
            expires_at: 0,
            value: PutValue::Bytes(&[b'v'; 32]),
            cas,
            lease: Lease::NONE,
        };
        assert_eq!(stamped.apply(&put(0), 100), Applied::Unstamped, "a stamped store needs the log's CAS");
        assert_eq!(derived.apply(&put(0), 100), Applied::Done);
        let derived_cas = derived.get(key.as_bytes(), 100).map(|it| it.cas);
        assert!(derived_cas.is_some_and(|c| c != 0), "derived from where the item is");
        for s in [&mut stamped, &mut off] {
            assert_eq!(s.apply(&put(i + 1_000_000), 100), Applied::Done);
        }
        assert_eq!(stamped.get(key.as_bytes(), 100).map(|it| it.cas), Some(i + 1_000_000));
        assert_eq!(off.get(key.as_bytes(), 100).map(|it| it.cas), Some(0));
    }
    assert_eq!(stamped.stats().bytes - derived.stats().bytes, 8 * 1000, "a stamped CAS costs 8 bytes an item");
    assert_eq!(derived.stats().bytes, off.stats().bytes, "a derived CAS costs none");
    assert_eq!(stamped.stats().curr_items, 1000);
    // A write that names its own CAS keeps it in a derived store too (8 bytes).
    let before = derived.stats().bytes;
    let own = Effect::Put {
        key: b"key:000000000999",
        flags: 0,
        expires_at: 0,
        value: PutValue::Bytes(&[b'v'; 32]),
        cas: 77,
        lease: Lease::NONE,
    };
    assert_eq!(derived.apply(&own, 100), Applied::Done);
    assert_eq!(derived.get(b"key:000000000999", 100).map(|it| it.cas), Some(77));
    assert_eq!(derived.stats().bytes - before, 8, "the own CAS is stored");
}

#[test]
fn an_export_recreates_the_store_on_another() {
    use crate::effect::{Effect, PutValue};
    let stamped =
        |base| match Store::new(StoreConfig { cas: CasSource::Stamped, clock_base_unix: base, ..config(4 << 20) }) {
            Ok(s) => s,
            Err(e) => panic!("store: {e}"),
        };
    let mut source = stamped(1_000_000);
    for i in 0..500u64 {
        let key = format!("k{i}");
        // Every third item expires at relative 50 (already past at 60), the others at 1000 or never.
        let expires_at = match i % 3 {
            0 => 1_000_050,
            1 => 1_001_000,
            _ => 0,
        };
        let put = Effect::Put {
            key: key.as_bytes(),
            flags: i as u32,
            expires_at,
            value: PutValue::Bytes(key.as_bytes()),
            cas: i + 1,
            lease: Lease { stale: i % 5 == 0, win_sent: i % 7 == 0 },
        };
        assert_eq!(source.apply(&put, 10), Applied::Done);
    }
    source.apply(&Effect::Delete { key: b"k1" }, 10);
    // A pending delayed flush travels too.
    source.apply(&Effect::Flush { at: Some(1_002_000) }, 10);
    let mut effects = Vec::new();
    source.export(60, |e| {
        let owned = match *e {
            Effect::Put { key, flags, expires_at, value: PutValue::Bytes(v), cas, lease } => {
                (Some((key.to_vec(), flags, expires_at, v.to_vec(), cas, lease)), None)
            }
            Effect::Flush { at } => (None, at),
            ref other => panic!("an export has only puts and a flush: {other:?}"),
        };
        effects.push(owned);
    });
    assert_eq!(effects.first().map(|e| e.1), Some(Some(1_002_000)), "the pending flush comes first");
    // The copy's clock starts elsewhere: expiries are carried as absolute times.
    let mut copy = stamped(1_000_020);
    for (put, flush) in &effects {
        let effect = match put {
            Some((key, flags, expires_at, value, cas, lease)) => Effect::Put {
                key,
                flags: *flags,
                expires_at: *expires_at,
                value: PutValue::Bytes(value),
                cas: *cas,
                lease: *lease,
            },
            None => Effect::Flush { at: *flush },
        };
        assert_eq!(copy.apply(&effect, 40), Applied::Done);
    }
    assert_eq!(copy.stats().curr_items, 500 - 167 - 1, "expired and deleted items are not exported");
    for i in 0..500u64 {
        let key = format!("k{i}");
        let lease = |s: &Store| s.view(key.as_bytes()).map(|it| it.lease);
        let at_source = source.peek(key.as_bytes(), 60).map(|(it, exp)| {
            (it.flags, it.cas, it.value.to_vec(), exp + 1_000_000 * u32::from(exp != 0), lease(&source))
        });
        let at_copy = copy.peek(key.as_bytes(), 40).map(|(it, exp)| {
            (it.flags, it.cas, it.value.to_vec(), exp + 1_000_020 * u32::from(exp != 0), lease(&copy))
        });
        assert_eq!(at_source, at_copy, "{key}");
    }
    assert!(copy.peek(b"k2", 1980).is_none(), "the flush arrives at its absolute time on the copy");
}

/// Items whose expiry has come are reclaimed by the crawler without a read of their key,
/// and while their segment still holds items that live on; the counters and the live
/// bytes show it.
#[test]
fn the_crawler_reclaims_expired_items_without_a_read() {
    let mut s = store(8 << 20);
    // Expiries 40..=70 share a TTL class (32-63 s left): one segment, mixed.
    for i in 0..300u32 {
        let key = format!("k{i}");
        assert_eq!(s.store(StoreMode::Set, key.as_bytes(), 0, 40 + i % 31, b"value", 0, 1), StoreOutcome::Stored);
    }
    s.store(StoreMode::Set, b"forever", 0, 0, b"v", 0, 1);
    assert_eq!(s.crawl(30, usize::MAX), 0, "nothing due yet");
    let bytes_before = s.stats().bytes;
    let due = (0..300u32).filter(|i| 40 + i % 31 <= 55).count();
    assert_eq!(s.crawl(55, usize::MAX), due);
    let st = s.stats();
    assert_eq!((st.curr_items, st.crawler_reclaimed, st.reclaimed), (301 - due as u64, due as u64, due as u64));
    assert!(st.bytes < bytes_before, "live bytes fell");
    assert_eq!(st.expired_unfetched, due as u64, "none was read");
    assert_eq!(s.check(), Ok(()));
    // The next crawl of that segment waits for its next expiry, then takes the rest.
    assert_eq!(s.crawl(55, usize::MAX), 0);
    assert_eq!(s.crawl(71, usize::MAX), 300 - due);
    assert_eq!(s.stats().curr_items, 1, "only the item without expiry is left");
    assert_eq!(value(&mut s, b"forever", 71), Some(b"v".to_vec()));
    assert_eq!(s.check(), Ok(()));
}

/// `cache_memlimit`: a lower limit evicts down to it (the sweep) and holds there; a
/// higher one, within the address space reserved, lets the store hold more again.
#[test]
fn the_memory_limit_shrinks_and_grows_at_run_time() {
    let mut s = match Store::new(StoreConfig { memory_reserve: Some(16 << 20), ..config(4 << 20) }) {
        Ok(s) => s,
        Err(e) => panic!("store: {e}"),
    };
    let value = [b'v'; 1000];
    let fill = |s: &mut Store, from: u32, n: u32| {
        for i in from..from + n {
            assert_eq!(s.store(StoreMode::Set, format!("k{i}").as_bytes(), 0, 0, &value, 0, 1), StoreOutcome::Stored);
        }
    };
    fill(&mut s, 0, 10_000);
    let at_4mb = s.stats().curr_items;
    assert!(at_4mb < 4_200, "4 MiB holds about 4,000 1 KB items, not {at_4mb}");
    assert_eq!(s.memory_limit(), 4 << 20);
    assert!(s.set_memory_limit(12 << 20));
    fill(&mut s, 10_000, 20_000);
    let at_12mb = s.stats().curr_items;
    assert!(at_12mb > 2 * at_4mb, "grown: {at_12mb} items against {at_4mb}");
    assert!(s.set_memory_limit(2 << 20));
    for _ in 0..20 {
        s.sweep(1, 64);
    }
    let st = s.stats();
    assert!(st.segments_total == 2 && st.segments_free == 0, "{st:?}");
    assert!(st.curr_items < 2_200, "shrunk to 2 MiB: {} items", st.curr_items);
    fill(&mut s, 30_000, 5_000);
    assert!(s.stats().curr_items < 2_200, "and it holds there");
    assert!(!s.set_memory_limit(32 << 20), "beyond the reserved address space");
    assert!(!s.set_memory_limit(1 << 20), "under two segments");
    assert_eq!(s.check(), Ok(()));
}
