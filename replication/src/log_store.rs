//! The Raft log as raft-rs reads it: the entries since the last compaction, the hard
//! state (term, vote, commit) and the configuration, in memory. The group writes every
//! change here *and* to its [`crate::durable::Durable`] (the WAL); after a restart this
//! is rebuilt from the WAL. Snapshots live in durable storage; `snapshot()` answers with
//! the metadata of the current one (the chunks travel beside the Raft message).

use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

/// The in-memory Raft log of one group on one node.
#[derive(Debug, Default)]
pub struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the entry before `entries[0]` (the compaction point).
    offset: (u64, u64),
    entries: Vec<Entry>,
    /// The current durable snapshot (its metadata and chunk count), if any.
    snapshot: Option<(SnapshotMetadata, u32)>,
    /// raft-rs asked for a snapshot the current one cannot serve (it was taken before
    /// the peer joined): the group takes a new one.
    wants_snapshot: std::cell::Cell<bool>,
}

impl LogStore {
    /// A log that starts after `(index, term)` with configuration `conf_state`.
    pub fn starting_after(index: u64, term: u64, conf_state: ConfState) -> Self {
        LogStore { offset: (index, term), conf_state, ..Default::default() }
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    pub fn first_index(&self) -> u64 {
        self.offset.0 + 1
    }

    pub fn last_index(&self) -> u64 {
        self.offset.0 + self.entries.len() as u64
    }

    /// The term of entry `index`, if this log knows it.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.offset.0 {
            return Some(self.offset.1);
        }
        let i = index.checked_sub(self.first_index())? as usize;
        self.entries.get(i).map(|e| e.term)
    }

    /// Appends `entries`, replacing any of ours from the first one's index on (a new
    /// leader overwriting an uncommitted tail). Entries must follow on from the log.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index > self.offset.0 && first.index <= self.last_index() + 1,
            "entries from {} do not follow on from a log of {}..={}",
            first.index,
            self.first_index(),
            self.last_index()
        );
        self.entries.truncate((first.index - self.first_index()) as usize);
        self.entries.extend_from_slice(entries);
    }

    /// Drops the entries up to and including `index` (they are in a snapshot). Entries
    /// beyond the log are not invented: compaction stops at the last entry.
    pub fn compact(&mut self, index: u64) {
        if index <= self.offset.0 {
            return;
        }
        let index = index.min(self.last_index());
        let term = self.term_of(index).unwrap_or(self.offset.1);
        self.entries.drain(..(index - self.offset.0) as usize);
        self.offset = (index, term);
    }

    /// Records `meta` (of `chunks` chunks) as the current snapshot. When the log does
    /// not hold its index with its term (a snapshot received from the leader), the log
    /// restarts after it; otherwise entries stay until [`LogStore::compact`].
    pub fn set_snapshot(&mut self, meta: SnapshotMetadata, chunks: u32) {
        if meta.index < self.offset.0 {
            return;
        }
        if self.term_of(meta.index) != Some(meta.term) {
            self.entries.clear();
            self.offset = (meta.index, meta.term);
        }
        if meta.index > self.hard_state.commit {
            self.hard_state.commit = meta.index;
        }
        self.conf_state = meta.get_conf_state().clone();
        self.snapshot = Some((meta, chunks));
    }

    /// Asks again for a snapshot (one wished for could not be taken yet).
    pub fn wish_snapshot(&self) {
        self.wants_snapshot.set(true);
    }

    /// Whether a snapshot was asked for that the current one cannot serve (clears it).
    pub fn take_snapshot_wish(&self) -> bool {
        self.wants_snapshot.replace(false)
    }

    /// The current snapshot's metadata and chunk count.
    pub fn snapshot_metadata(&self) -> Option<(&SnapshotMetadata, u32)> {
        self.snapshot.as_ref().map(|(meta, chunks)| (meta, *chunks))
    }

    /// The entries after the current snapshot (what a log restarting from it keeps).
    pub fn tail(&self) -> Vec<Entry> {
        let after = self.snapshot.as_ref().map_or(self.offset.0, |(meta, _)| meta.index.max(self.offset.0));
        self.entries.iter().filter(|e| e.index > after).cloned().collect()
    }

    /// Whether it holds no entries (all are in the snapshot).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.hard_state.clone(), conf_state: self.conf_state.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.offset.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.first_index()) as usize;
        let to = (high - self.first_index()) as usize;
        let mut entries = self.entries[from..to].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.offset.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let includes = |meta: &SnapshotMetadata| {
            let cs = meta.get_conf_state();
            [&cs.voters, &cs.learners, &cs.voters_outgoing, &cs.learners_next].iter().any(|ids| ids.contains(&to))
        };
        match &self.snapshot {
            // A peer added after the snapshot was taken would refuse it (raft-rs does):
            // it needs one that names it.
            Some((meta, _)) if !includes(meta) => {
                self.wants_snapshot.set(true);
                Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
            }
            Some((meta, chunks)) if meta.index >= request_index && meta.index >= self.offset.0 => {
                // The chunks travel beside the message; it carries how many there are.
                let mut snap = Snapshot::default();
                snap.set_metadata(meta.clone());
                snap.data = chunks.to_le_bytes().to_vec().into();
                Ok(snap)
            }
            _ => Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = vec![index as u8; 10].into();
        e
    }

    #[test]
    fn appends_replace_a_conflicting_tail_and_compaction_keeps_terms() {
        let mut log = LogStore::default();
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        log.append(&[entry(3, 2), entry(4, 2)]);
        assert_eq!((log.first_index(), log.last_index()), (1, 4));
        assert_eq!(log.term(3).ok(), Some(2));
        log.compact(2);
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.term(2).ok(), Some(1), "the term at the compaction point stays known");
        assert!(matches!(log.term(1), Err(raft::Error::Store(StorageError::Compacted))));
        assert!(matches!(
            log.entries(2, 4, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let got = log.entries(3, 5, None, GetEntriesContext::empty(false)).unwrap_or_default();
        assert_eq!(got.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(3, 2), (4, 2)]);
        let limited = log.entries(3, 5, Some(1), GetEntriesContext::empty(false)).unwrap_or_default();
        assert_eq!(limited.len(), 1, "a size limit still returns one entry");
    }

    #[test]
    fn a_snapshot_ahead_of_the_log_restarts_it() {
        let mut log = LogStore::default();
        log.append(&[entry(1, 1), entry(2, 1)]);
        assert!(log.snapshot(0, 2).is_err(), "no snapshot yet");
        let mut meta = SnapshotMetadata::default();
        meta.index = 10;
        meta.term = 3;
        log.set_snapshot(meta, 3);
        assert_eq!((log.first_index(), log.last_index()), (11, 10));
        assert_eq!(log.hard_state().commit, 10);
        assert!(log.snapshot(5, 2).is_err(), "node 2 is not in the snapshot's configuration");
        assert!(log.take_snapshot_wish() && !log.take_snapshot_wish());
        let mut meta = SnapshotMetadata::default();
        meta.index = 10;
        meta.term = 3;
        meta.mut_conf_state().learners = vec![2];
        log.set_snapshot(meta, 3);
        let snap = log.snapshot(5, 2).unwrap_or_default();
        assert_eq!((snap.get_metadata().index, &snap.data[..]), (10, &3u32.to_le_bytes()[..]));
        log.append(&[entry(11, 3)]);
        assert_eq!(log.term(11).ok(), Some(3));
    }
}
