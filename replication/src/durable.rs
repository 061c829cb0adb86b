//! What a group needs from durable storage, and an in-memory implementation of it.
//!
//! [`Durable`] is a write-ahead log (entries, hard state) plus snapshots written and read
//! in chunks. A group writes a Ready's records and then calls [`Durable::sync`] once
//! (group commit); nothing it acknowledges to a peer is sent before that returns.
//! Recovery reads the records back ([`crate::wal::scan`]) and replays them into a
//! [`LogStore`] with [`replay`], which both implementations share.
//!
//! [`MemoryDurable`] keeps the bytes in memory and models a crash: what was not synced is
//! lost, and a torn write may leave garbage at the end. Simulations and tests use it; the
//! server uses the file implementation in `drivers`.

use std::io;

use raft::prelude::{Entry, HardState, SnapshotMetadata};

use crate::log_store::LogStore;
use crate::wal::{self, Record, Scan};

/// Which snapshot is being written: one this node takes of its own store, or one
/// arriving from the leader (the two may be under way at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSlot {
    Local,
    Incoming,
}

impl SnapshotSlot {
    fn at(self) -> usize {
        self as usize
    }
}

/// Durable storage of one group on one node.
pub trait Durable {
    /// Reads back what is stored (once, before anything is written).
    fn recover(&mut self) -> io::Result<Recovered>;
    fn append_entries(&mut self, entries: &[Entry]) -> io::Result<()>;
    fn set_hard_state(&mut self, hs: &HardState) -> io::Result<()>;
    /// Makes everything written so far durable (one fsync; none with durability `none`).
    fn sync(&mut self) -> io::Result<()>;
    /// Starts writing snapshot (index, term) into `slot`, dropping what the slot held.
    fn snapshot_begin(&mut self, slot: SnapshotSlot, index: u64, term: u64) -> io::Result<()>;
    /// Appends the next chunk to the snapshot in `slot`.
    fn snapshot_chunk(&mut self, slot: SnapshotSlot, chunk: &[u8]) -> io::Result<()>;
    /// The snapshot in `slot`, whole, becomes the current one, with metadata `meta`,
    /// durably, and the log restarts from it: what a restart needs is then `meta`,
    /// `hard_state` and the entries after the snapshot, `tail`; older records go.
    fn snapshot_commit(
        &mut self,
        slot: SnapshotSlot,
        meta: &SnapshotMetadata,
        hard_state: &HardState,
        tail: &[Entry],
    ) -> io::Result<()>;
    /// Chunk `seq` of the current snapshot, if it is snapshot (index, term).
    fn read_chunk(&self, index: u64, term: u64, seq: u32) -> io::Result<Option<Vec<u8>>>;
    /// fsyncs so far.
    fn syncs(&self) -> u64;
}

/// What durable storage held: the log (entries after the snapshot, hard state,
/// configuration, snapshot metadata) and the current snapshot's chunk count.
#[derive(Debug)]
pub struct Recovered {
    pub log: LogStore,
    /// Whether anything was stored at all (false: a new node).
    pub existing: bool,
    /// Bytes of a torn write found and dropped at the end of the log.
    pub torn_bytes: usize,
}

/// Replays WAL records, in the order they were written, into a log. `chunks` is the
/// current snapshot's chunk count.
pub fn replay(records: impl IntoIterator<Item = Record>, chunks: u32) -> LogStore {
    let mut log = LogStore::default();
    for record in records {
        match record {
            Record::Entries(entries) => {
                // Records from before a snapshot may hold entries it already covers.
                let from = entries.iter().position(|e| e.index > log.first_index() - 1);
                if let Some(from) = from {
                    let entries = &entries[from..];
                    if entries[0].index <= log.last_index() + 1 {
                        log.append(entries);
                    }
                }
            }
            Record::HardState(hs) => log.set_hard_state(hs),
            Record::Snapshot(meta) => log.set_snapshot(meta, chunks),
            Record::Chunk(_) | Record::End { .. } => {}
        }
    }
    if let Some((meta, _)) = log.snapshot_metadata() {
        let index = meta.index;
        log.compact(index);
    }
    log
}

/// The records a log restarts with after snapshot `meta`: the snapshot, the hard state
/// and the entries after the snapshot.
pub fn restart_records(out: &mut Vec<u8>, meta: &SnapshotMetadata, hard_state: &HardState, tail: &[Entry]) {
    wal::write_snapshot(out, meta);
    wal::write_hard_state(out, hard_state);
    let tail: Vec<Entry> = tail.iter().filter(|e| e.index > meta.index).cloned().collect();
    if !tail.is_empty() {
        wal::write_entries(out, &tail);
    }
}

/// Reads a WAL's bytes: its records and the length of a torn tail, or an error for
/// damage in the middle.
pub fn read_wal(bytes: &[u8]) -> io::Result<(Vec<Record>, usize, usize)> {
    match wal::scan(bytes) {
        Scan::Clean { records, valid, torn } => Ok((records, valid, torn)),
        Scan::Corrupt { at } => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the write-ahead log is damaged at byte {at} with whole records after it"),
        )),
    }
}

/// A snapshot held in memory.
#[derive(Debug, Clone, Default)]
struct HeldSnapshot {
    index: u64,
    term: u64,
    chunks: Vec<Vec<u8>>,
}

/// Durable storage in memory, with crash semantics (see the module documentation).
#[derive(Debug, Default)]
pub struct MemoryDurable {
    wal: Vec<u8>,
    /// Bytes of `wal` that a crash keeps.
    synced: usize,
    current: Option<HeldSnapshot>,
    staging: [Option<HeldSnapshot>; 2],
    syncs: u64,
}

impl MemoryDurable {
    /// A crash: unsynced bytes are lost, `torn` garbage is left where they were, and
    /// snapshots being written are gone.
    pub fn crash(&mut self, torn: &[u8]) {
        self.wal.truncate(self.synced);
        self.wal.extend_from_slice(torn);
        self.staging = [None, None];
    }
}

impl Durable for MemoryDurable {
    fn recover(&mut self) -> io::Result<Recovered> {
        let (records, valid, torn) = read_wal(&self.wal)?;
        self.wal.truncate(valid);
        self.synced = valid;
        let existing = !records.is_empty();
        let chunks = self.current.as_ref().map_or(0, |s| s.chunks.len() as u32);
        Ok(Recovered { log: replay(records, chunks), existing, torn_bytes: torn })
    }

    fn append_entries(&mut self, entries: &[Entry]) -> io::Result<()> {
        wal::write_entries(&mut self.wal, entries);
        Ok(())
    }

    fn set_hard_state(&mut self, hs: &HardState) -> io::Result<()> {
        wal::write_hard_state(&mut self.wal, hs);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.synced = self.wal.len();
        self.syncs += 1;
        Ok(())
    }

    fn snapshot_begin(&mut self, slot: SnapshotSlot, index: u64, term: u64) -> io::Result<()> {
        self.staging[slot.at()] = Some(HeldSnapshot { index, term, chunks: Vec::new() });
        Ok(())
    }

    fn snapshot_chunk(&mut self, slot: SnapshotSlot, chunk: &[u8]) -> io::Result<()> {
        match &mut self.staging[slot.at()] {
            Some(s) => {
                s.chunks.push(chunk.to_vec());
                Ok(())
            }
            None => Err(io::Error::other("a snapshot chunk with no snapshot begun")),
        }
    }

    fn snapshot_commit(
        &mut self,
        slot: SnapshotSlot,
        meta: &SnapshotMetadata,
        hard_state: &HardState,
        tail: &[Entry],
    ) -> io::Result<()> {
        let staged = self.staging[slot.at()].take();
        let Some(staged) = staged.filter(|s| (s.index, s.term) == (meta.index, meta.term)) else {
            return Err(io::Error::other(format!("no whole snapshot {}/{} to commit", meta.index, meta.term)));
        };
        self.current = Some(staged);
        let mut wal = Vec::new();
        restart_records(&mut wal, meta, hard_state, tail);
        self.wal = wal;
        self.sync()
    }

    fn read_chunk(&self, index: u64, term: u64, seq: u32) -> io::Result<Option<Vec<u8>>> {
        Ok(self
            .current
            .as_ref()
            .filter(|s| (s.index, s.term) == (index, term))
            .and_then(|s| s.chunks.get(seq as usize).cloned()))
    }

    fn syncs(&self) -> u64 {
        self.syncs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = vec![index as u8].into();
        e
    }

    fn hard_state(term: u64, commit: u64) -> HardState {
        let mut hs = HardState::default();
        hs.term = term;
        hs.vote = 1;
        hs.commit = commit;
        hs
    }

    #[test]
    fn a_crash_keeps_what_was_synced_and_drops_a_torn_tail() {
        let mut d = MemoryDurable::default();
        d.append_entries(&[entry(1, 1), entry(2, 1)]).ok();
        d.set_hard_state(&hard_state(1, 1)).ok();
        d.sync().ok();
        d.append_entries(&[entry(3, 1)]).ok();
        d.crash(&[0x55; 7]);
        let r = d.recover().ok();
        let r = r.as_ref().map(|r| (r.log.last_index(), r.log.hard_state().commit, r.torn_bytes, r.existing));
        assert_eq!(r, Some((2, 1, 7, true)));
        // Writing goes on after the torn tail was cut off.
        d.append_entries(&[entry(3, 2)]).ok();
        d.sync().ok();
        d.crash(&[]);
        assert_eq!(d.recover().ok().map(|r| (r.log.last_index(), r.log.term_of(3))), Some((3, Some(2))));
    }

    #[test]
    fn a_snapshot_commit_keeps_only_what_follows_it() {
        let mut d = MemoryDurable::default();
        d.append_entries(&[entry(1, 1), entry(2, 1), entry(3, 1), entry(4, 2)]).ok();
        d.set_hard_state(&hard_state(2, 4)).ok();
        d.sync().ok();
        let mut meta = SnapshotMetadata::default();
        meta.index = 3;
        meta.term = 1;
        d.snapshot_begin(SnapshotSlot::Local, 3, 1).ok();
        d.snapshot_chunk(SnapshotSlot::Local, b"one").ok();
        d.snapshot_chunk(SnapshotSlot::Local, b"two").ok();
        // An incoming snapshot being written at the same time is not disturbed.
        d.snapshot_begin(SnapshotSlot::Incoming, 9, 3).ok();
        let tail = [entry(3, 1), entry(4, 2)];
        assert!(d.snapshot_commit(SnapshotSlot::Local, &meta, &hard_state(2, 4), &tail).is_ok());
        d.crash(&[]);
        let r = d.recover().ok();
        let log = r.as_ref().map(|r| (r.log.first_index(), r.log.last_index(), r.log.hard_state().commit));
        assert_eq!(log, Some((4, 4, 4)));
        assert_eq!(d.read_chunk(3, 1, 1).ok().flatten(), Some(b"two".to_vec()));
        assert_eq!(d.read_chunk(3, 2, 1).ok().flatten(), None, "another snapshot");
        assert!(
            d.snapshot_commit(SnapshotSlot::Incoming, &meta, &hard_state(2, 4), &[]).is_err(),
            "not the snapshot begun"
        );
    }
}
