//! Decide and apply: a leader shard decides random client ops and applies its effects,
//! stamped with a log version as a replicated log would; replicas apply the same effects
//! in the same order. A replica with as much memory ends in exactly the leader's state;
//! ones with much less (one evicts, one refuses writes it has no room for, as `-M`) only
//! ever forget: every (key, value, CAS) they hold is one the leader held at that same
//! version.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::protocol::MetaCmd;
use crate::store::{CasSource, StoreConfig};

fn shard(memory: usize, base: i64) -> Shard {
    shard_with(memory, base, true)
}

fn shard_with(memory: usize, base: i64, evictions: bool) -> Shard {
    let config = StoreConfig {
        clock_base_unix: base,
        expected_items: Some(256),
        evictions,
        cas: CasSource::Stamped,
        ..StoreConfig::with_memory(memory)
    };
    match Store::new(config) {
        Ok(store) => Shard::new(store, true),
        Err(e) => panic!("store: {e}"),
    }
}

/// One client op of the test (keys and values by index).
#[derive(Debug, Clone)]
enum Cmd {
    Store(StoreMode, u8, u16, i8),
    /// A cas with the leader's current CAS of the key (or a wrong one).
    Cas(u8, u16, bool),
    Arith(u8, bool, u8),
    Touch(u8, i8),
    Delete(u8),
    Flush(u8),
    /// A meta command: (mg ms md ma, key, value, TTL, flag choices, right CAS).
    Meta(u8, u8, u16, i8, u8, bool),
    /// Time moves on this many seconds.
    Wait(u8),
}

/// The flag tokens of a `Cmd::Meta`: a random pick of those that change state.
fn meta_flags(which: u8, ttl: i8, bits: u8, v: u16, cas: u64) -> String {
    let on = |b: u8| bits & (1 << b) != 0;
    let mut f = String::from(" v c");
    match which {
        0 => {
            for (b, flag) in
                [(0, format!(" N{ttl}")), (1, format!(" R{}", i16::from(ttl) + 5)), (2, format!(" T{ttl}"))]
            {
                if on(b) {
                    f.push_str(&flag);
                }
            }
            if on(3) {
                f.push_str(" u");
            }
        }
        1 => {
            f = format!(" T{ttl} F{v}");
            f.push_str([" ME", " MA", " MP", " MR", " MS", ""][usize::from(bits % 6)]);
            if on(3) {
                f.push_str(&format!(" C{cas}"));
            }
            if on(4) {
                f.push_str(" I");
            }
            if on(5) {
                f.push_str(&format!(" E{}", 1_000_000 + u64::from(v)));
            }
            if on(6) {
                f.push_str(&format!(" N{ttl}"));
            }
        }
        2 => {
            for (b, flag) in [
                (0, " I".to_string()),
                (1, format!(" C{cas}")),
                (2, format!(" T{ttl}")),
                (3, " x".to_string()),
                (4, format!(" E{}", 2_000_000 + u64::from(v))),
            ] {
                if on(b) {
                    f.push_str(&flag);
                }
            }
        }
        _ => {
            for (b, flag) in
                [(0, format!(" N{ttl} J{v}")), (1, " MD".to_string()), (2, format!(" T{ttl}")), (3, format!(" C{cas}"))]
            {
                if on(b) {
                    f.push_str(&flag);
                }
            }
        }
    }
    f
}

fn cmd() -> impl Strategy<Value = Cmd> {
    let mode = prop_oneof![
        Just(StoreMode::Set),
        Just(StoreMode::Add),
        Just(StoreMode::Replace),
        Just(StoreMode::Append),
        Just(StoreMode::Prepend)
    ];
    prop_oneof![
        6 => (mode, 0u8..24, any::<u16>(), -2i8..20).prop_map(|(m, k, v, t)| Cmd::Store(m, k, v, t)),
        2 => (0u8..24, any::<u16>(), any::<bool>()).prop_map(|(k, v, ok)| Cmd::Cas(k, v, ok)),
        2 => (0u8..24, any::<bool>(), any::<u8>()).prop_map(|(k, i, d)| Cmd::Arith(k, i, d)),
        1 => (0u8..24, -2i8..20).prop_map(|(k, t)| Cmd::Touch(k, t)),
        1 => (0u8..24).prop_map(Cmd::Delete),
        1 => (0u8..3).prop_map(Cmd::Flush),
        6 => (0u8..4, 0u8..24, any::<u16>(), -2i8..20, any::<u8>(), any::<bool>())
            .prop_map(|(w, k, v, t, b, ok)| Cmd::Meta(w, k, v, t, b, ok)),
        1 => (0u8..5).prop_map(Cmd::Wait),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

/// Values up to ~6 KB, numeric ones now and then (for incr/decr).
fn value(v: u16) -> Vec<u8> {
    if v % 5 == 0 {
        return (v / 5).to_string().into_bytes();
    }
    let len = usize::from(v) % 6000;
    (0..len).map(|i| b'a' + ((i + usize::from(v)) % 26) as u8).collect()
}

/// (value, CAS, flags, absolute expiry, lease) of `key` in `shard`.
fn state(shard: &Shard, key: &[u8], now: u32) -> Option<(Vec<u8>, u64, u32, i64, crate::store::item::Lease)> {
    let base = shard.store().time_base();
    let lease = shard.store().view(key).map(|it| it.lease).unwrap_or_default();
    shard.store().peek(key, now).map(|(item, exptime)| {
        let expires = if exptime == 0 { 0 } else { base.to_unix(exptime) };
        (item.value.to_vec(), item.cas, item.flags, expires, lease)
    })
}

const LEADER_BASE: i64 = 1_700_000_000;
/// The big replica started 37 s later: its relative times differ, absolute ones do not.
const REPLICA_BASE: i64 = LEADER_BASE + 37;

fn check_replication(cmds: &[Cmd]) -> Result<(), TestCaseError> {
    // Enough memory never to evict: a segment for each TTL class the items fall in.
    let mut leader = shard(64 << 20, LEADER_BASE);
    let mut big = shard(64 << 20, REPLICA_BASE);
    let mut small = shard(2 << 20, LEADER_BASE);
    let mut full = shard_with(2 << 20, LEADER_BASE, false);
    let mut now = 1_000u32;
    let mut version = 0u64;
    // Every (value, CAS) the leader held for each key.
    let mut held: HashMap<Vec<u8>, HashSet<(Vec<u8>, u64)>> = HashMap::new();
    for cmd in cmds {
        let replica_now = (i64::from(now) + LEADER_BASE - REPLICA_BASE) as u32;
        let (k, v);
        // A meta op's flag tokens (borrowed by the op).
        let flags = match *cmd {
            Cmd::Meta(which, kk, vv, t, bits, right) => {
                let current = state(&leader, &key(kk), now).map_or(0, |s| s.1);
                meta_flags(which, t, bits, vv, if right { current } else { current.wrapping_sub(1) })
            }
            _ => String::new(),
        };
        let op = match *cmd {
            Cmd::Meta(which, kk, vv, ..) => {
                (k, v) = (key(kk), value(vv));
                let cmd = [MetaCmd::Get, MetaCmd::Set, MetaCmd::Delete, MetaCmd::Arith][usize::from(which)];
                Op::Meta(crate::protocol::MetaOp { cmd, key: &k, flags: flags.as_bytes(), data: &v })
            }
            Cmd::Store(mode, kk, vv, t) => {
                (k, v) = (key(kk), value(vv));
                Op::Store { mode, key: &k, flags: u32::from(vv), exptime: i32::from(t), data: &v, cas: 0 }
            }
            Cmd::Cas(kk, vv, right) => {
                (k, v) = (key(kk), value(vv));
                let current = state(&leader, &k, now).map_or(0, |s| s.1);
                let cas = if right { current } else { current.wrapping_add(1) };
                Op::Store { mode: StoreMode::Cas, key: &k, flags: 1, exptime: 0, data: &v, cas }
            }
            Cmd::Arith(kk, incr, delta) => {
                (k, v) = (key(kk), Vec::new());
                Op::Arith { key: &k, incr, delta: u64::from(delta) }
            }
            Cmd::Touch(kk, t) => {
                (k, v) = (key(kk), Vec::new());
                Op::Touch { key: &k, exptime: i32::from(t) }
            }
            Cmd::Delete(kk) => {
                (k, v) = (key(kk), Vec::new());
                Op::Delete { key: &k }
            }
            Cmd::Flush(delay) => {
                (k, v) = (Vec::new(), Vec::new());
                Op::FlushAll { delay: i32::from(delay), reply: true }
            }
            Cmd::Wait(secs) => {
                now += u32::from(secs);
                continue;
            }
        };
        let _ = &v;
        let mut key_buf = [0u8; crate::protocol::KEY_MAX_LENGTH];
        let decision = leader.decide(&op, &mut key_buf, now);
        let Some(effect) = decision.effect else { continue };
        version += 1;
        let effect = effect.stamped(version);
        let applied = leader.apply(&effect, now);
        prop_assert_ne!(applied, Applied::OutOfMemory, "the leader has room for everything");
        big.apply(&effect, replica_now);
        small.apply(&effect, now);
        full.apply(&effect, now);
        if let Some((value, cas, ..)) = state(&leader, &k, now) {
            held.entry(k.clone()).or_default().insert((value, cas));
        }
    }
    let replica_now = (i64::from(now) + LEADER_BASE - REPLICA_BASE) as u32;
    for kk in 0..24u8 {
        let k = key(kk);
        prop_assert_eq!(state(&big, &k, replica_now), state(&leader, &k, now), "key {}", kk);
        for (name, replica) in [("evicting", &small), ("full", &full)] {
            if let Some((value, cas, ..)) = state(replica, &k, now) {
                let ever = held.get(&k).is_some_and(|h| h.contains(&(value.clone(), cas)));
                prop_assert!(ever, "the {} replica invented key {} = {} bytes at CAS {}", name, kk, value.len(), cas);
            }
        }
    }
    prop_assert_eq!(leader.store().stats().evictions, 0, "the leader and its twin must not evict");
    for s in [&leader, &big, &small, &full] {
        prop_assert_eq!(s.store().check(), Ok(()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn replicas_reach_the_leaders_state_or_only_forget(cmds in proptest::collection::vec(cmd(), 1..400)) {
        check_replication(&cmds)?;
    }
}

/// A `Concat` applied where the key holds another version than the one it was decided
/// on (a replica that kept an older version when the newer one did not fit) drops the
/// key: appending to the older version would make a value the leader never held.
#[test]
fn a_concat_on_another_version_drops_the_key() {
    let mut replica = shard(4 << 20, LEADER_BASE);
    let put = |cas| Effect::Put {
        key: b"k",
        flags: 0,
        expires_at: 0,
        value: crate::effect::PutValue::Bytes(b"old"),
        cas,
        lease: crate::store::item::Lease::NONE,
    };
    assert_eq!(replica.apply(&put(7), 1000), Applied::Done);
    let concat = |base_cas| Effect::Concat { key: b"k", data: b"+tail", prepend: false, base_cas, cas: 9 };
    assert_eq!(replica.apply(&concat(8), 1000), Applied::Dropped);
    assert_eq!(state(&replica, b"k", 1000), None, "dropped, not appended to version 7");
    assert_eq!(replica.apply(&put(7), 1000), Applied::Done);
    assert_eq!(replica.apply(&concat(7), 1000), Applied::Done);
    assert_eq!(state(&replica, b"k", 1000).map(|s| (s.0, s.1)), Some((b"old+tail".to_vec(), 9)));
}

/// The flags memcached 1.6.21 added: `E` (the client names the write's CAS), `x` (`md`
/// empties the value and keeps the item) and `N` on an appending `ms` (a missing item is
/// created from the data).
#[test]
fn newer_meta_flags_name_the_cas_empty_the_value_and_vivify_appends() {
    // A standalone store (CAS derived where the client names none).
    let config = StoreConfig { clock_base_unix: LEADER_BASE, ..StoreConfig::with_memory(4 << 20) };
    let mut s = match Store::new(config) {
        Ok(store) => Shard::new(store, true),
        Err(e) => panic!("store: {e}"),
    };
    let now = 1000;
    let run = |s: &mut Shard, cmd: MetaCmd, key: &[u8], flags: &[u8], data: &[u8]| -> String {
        let mut out = Vec::new();
        s.execute(&Op::Meta(crate::protocol::MetaOp { cmd, key, flags, data }), false, now, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    // E on ms, then the same CAS on a compare.
    assert_eq!(run(&mut s, MetaCmd::Set, b"k", b" E999 c", b"v1"), "HD c999\r\n");
    assert_eq!(run(&mut s, MetaCmd::Get, b"k", b" c v", b""), "VA 2 c999\r\nv1\r\n");
    assert_eq!(run(&mut s, MetaCmd::Set, b"k", b" C999 E1000 c", b"v2"), "HD c1000\r\n");
    // ma with E, and mg N with E.
    assert_eq!(run(&mut s, MetaCmd::Arith, b"n", b" N0 J5 E42 c v", b""), "VA 1 c42\r\n5\r\n");
    assert_eq!(run(&mut s, MetaCmd::Get, b"new", b" N30 E43 c", b""), "HD c43 W\r\n");
    // md x: an empty tombstone with F's flags, keeping its CAS; with E, E's.
    assert_eq!(run(&mut s, MetaCmd::Delete, b"k", b" x F7", b""), "HD\r\n");
    assert_eq!(run(&mut s, MetaCmd::Get, b"k", b" c f s v", b""), "VA 0 c1000 f7 s0\r\n\r\n");
    assert_eq!(run(&mut s, MetaCmd::Delete, b"k", b" x E5", b""), "HD\r\n");
    assert_eq!(run(&mut s, MetaCmd::Get, b"k", b" c", b""), "HD c5\r\n");
    // md x I: also stale, so the next reader wins.
    assert_eq!(run(&mut s, MetaCmd::Delete, b"k", b" x I", b""), "HD\r\n");
    assert_eq!(run(&mut s, MetaCmd::Get, b"k", b" v", b""), "VA 0 X W\r\n\r\n");
    // ms MA N: an append to a missing item creates it, with N's TTL.
    assert_eq!(run(&mut s, MetaCmd::Set, b"a", b" MA N30", b"tail"), "HD\r\n");
    assert_eq!(run(&mut s, MetaCmd::Get, b"a", b" v t", b""), "VA 4 t30\r\ntail\r\n");
    assert_eq!(run(&mut s, MetaCmd::Set, b"a", b" MA N30", b"+more"), "HD\r\n");
    assert_eq!(run(&mut s, MetaCmd::Get, b"a", b" v", b""), "VA 9\r\ntail+more\r\n");
    assert_eq!(run(&mut s, MetaCmd::Set, b"b", b" MA", b"tail"), "NS\r\n", "without N, as before");
    assert_eq!(s.store().check(), Ok(()));
}
