//! The file-backed durable storage: what survives a reopen, a torn write, damage, and a
//! snapshot that restarts the log; and a one-node group that restarts from its files.

#![allow(clippy::field_reassign_with_default)] // raft-rs messages are built field by field

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use raft::prelude::{Entry, HardState, SnapshotMetadata};
use ringcache_core::effect::{Effect, EffectBatch, PutValue};
use ringcache_core::shard::Shard;
use ringcache_core::store::{CasSource, Store, StoreConfig};
use ringcache_replication::drivers::file::{Durability, FileDurable};
use ringcache_replication::durable::{Durable, SnapshotSlot};
use ringcache_replication::group::{Group, GroupConfig, Output};

fn entry(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.data = format!("entry {index}").into_bytes().into();
    e
}

fn hard_state(term: u64, commit: u64) -> HardState {
    let mut hs = HardState::default();
    hs.term = term;
    hs.vote = 1;
    hs.commit = commit;
    hs
}

fn open(dir: &Path) -> FileDurable {
    FileDurable::open(dir, Durability::Fsync).unwrap_or_else(|e| panic!("open: {e}"))
}

fn wal_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn synced_records_survive_a_reopen_and_a_torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut d = open(dir.path());
    let r = d.recover().unwrap_or_else(|e| panic!("{e}"));
    assert!(!r.existing);
    d.append_entries(&[entry(1, 1), entry(2, 1)]).ok();
    d.set_hard_state(&hard_state(1, 2)).ok();
    d.sync().unwrap_or_else(|e| panic!("{e}"));
    d.append_entries(&[entry(3, 1)]).ok();
    assert!(d.pending_bytes() > 0, "not written until synced");
    // A crash: the process ends without a clean stop (which would write what is buffered).
    std::mem::forget(d);
    // A write the machine did not finish.
    let segment = dir.path().join(&wal_files(dir.path())[0]);
    let whole = fs::metadata(&segment).map(|m| m.len()).unwrap_or(0);
    OpenOptions::new().append(true).open(&segment).and_then(|mut f| f.write_all(&[9, 0, 0, 0, 1, 2])).ok();
    let mut d = open(dir.path());
    let r = d.recover().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.log.last_index(), r.log.hard_state().commit, r.torn_bytes), (2, 2, 6));
    assert_eq!(fs::metadata(&segment).map(|m| m.len()).ok(), Some(whole), "the torn bytes are gone from the file");
}

#[test]
fn damage_before_the_end_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut d = open(dir.path());
    d.recover().ok();
    for i in 1..=3 {
        d.append_entries(&[entry(i, 1)]).ok();
        d.sync().ok();
    }
    drop(d);
    let segment = dir.path().join(&wal_files(dir.path())[0]);
    let mut bytes = fs::read(&segment).unwrap_or_default();
    bytes[12] ^= 0xff;
    fs::write(&segment, &bytes).ok();
    let err = open(dir.path()).recover().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("damaged"), "refused: {err}");
}

#[test]
fn a_snapshot_restarts_the_log_and_its_chunks_read_back() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut d = open(dir.path());
    d.recover().ok();
    d.append_entries(&(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>()).ok();
    d.set_hard_state(&hard_state(1, 5)).ok();
    d.sync().ok();
    let mut meta = SnapshotMetadata::default();
    meta.index = 4;
    meta.term = 1;
    meta.mut_conf_state().voters = vec![1, 2, 3];
    d.snapshot_begin(SnapshotSlot::Local, 4, 1).ok();
    for chunk in [&b"first"[..], b"second"] {
        d.snapshot_chunk(SnapshotSlot::Local, chunk).ok();
    }
    d.snapshot_commit(SnapshotSlot::Local, &meta, &hard_state(1, 5), &[entry(4, 1), entry(5, 1)])
        .unwrap_or_else(|e| panic!("{e}"));
    let files = wal_files(dir.path());
    assert_eq!(files.iter().filter(|f| f.starts_with("wal-")).count(), 1, "old segments removed: {files:?}");
    assert_eq!(files.iter().filter(|f| f.ends_with(".snap")).count(), 1);
    drop(d);
    let mut d = open(dir.path());
    let r = d.recover().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.log.first_index(), r.log.last_index(), r.log.hard_state().commit), (5, 5, 5));
    assert_eq!(r.log.conf_state().voters, vec![1, 2, 3]);
    assert_eq!(d.read_chunk(4, 1, 1).ok().flatten(), Some(b"second".to_vec()));
    assert_eq!(d.read_chunk(4, 1, 2).ok().flatten(), None);
}

fn stamped_shard() -> Shard {
    let config =
        StoreConfig { cas: CasSource::Stamped, clock_base_unix: 1_000_000, ..StoreConfig::with_memory(4 << 20) };
    Shard::new(Store::new(config).unwrap_or_else(|e| panic!("{e}")), true)
}

#[test]
fn a_one_node_group_restarts_from_its_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = GroupConfig { snapshot_after_bytes: 2 << 10, keep_entries: 3, ..GroupConfig::new(1) };
    let mut out = Output::default();
    let mut group =
        Group::open(config.clone(), open(dir.path()), stamped_shard(), &[1], 1).unwrap_or_else(|e| panic!("{e}"));
    group.campaign();
    group.process(1, &mut out).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..5 {
        group.process(1, &mut out).ok();
    }
    assert!(group.can_decide(), "a lone voter leads at once");
    for i in 0..200u32 {
        let key = format!("key{}", i % 50);
        let value = format!("value {i}");
        let mut batch = EffectBatch::default();
        batch.push(&Effect::Put {
            key: key.as_bytes(),
            flags: i,
            expires_at: 0,
            value: PutValue::Bytes(value.as_bytes()),
            cas: 0,
            lease: ringcache_core::store::item::Lease::NONE,
        });
        group.propose(&batch).unwrap_or_else(|e| panic!("propose: {e:?}"));
        group.process(1, &mut out).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(group.stats().snapshots_taken > 0, "the log was compacted");
    let before = group.shard().store().peek(b"key7", 1).map(|(item, _)| (item.cas, item.value.to_vec()));
    let applied = group.applied();
    drop(group);
    let mut group = Group::open(config, open(dir.path()), stamped_shard(), &[1], 1).unwrap_or_else(|e| panic!("{e}"));
    group.campaign();
    for _ in 0..5 {
        group.process(1, &mut out).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(group.applied() > applied, "everything applied again, and the new term's first entry");
    let after = group.shard().store().peek(b"key7", 1).map(|(item, _)| (item.cas, item.value.to_vec()));
    assert_eq!(after, before);
    assert_eq!(group.shard().store().stats().curr_items, 50);
}
