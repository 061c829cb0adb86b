//! [`FileDurable`]: a group's durable storage in a directory of its own.
//!
//! - `wal-<n>.log`: the write-ahead log in segments (records of [`crate::wal`]); new
//!   records are buffered and written with one `write` per [`Durable::sync`], followed
//!   by one `fdatasync` with [`Durability::Fsync`]. A segment past [`SEGMENT_BYTES`]
//!   is closed and the next one started.
//! - `snapshot-<index>-<term>.snap`: the current snapshot: chunk records and an end
//!   record with their count. A snapshot is written to `<slot>.tmp`, synced, renamed,
//!   and only then does a new WAL segment begin with its metadata (and the hard state
//!   and entries after it); older segments and snapshot files are removed last, so a
//!   crash at any point leaves a log that names a snapshot file that exists.
//!
//! Recovery reads every segment in order; a torn tail is accepted only at the end of
//! the last segment (and cut off), damage anywhere else refuses to start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft::prelude::{Entry, HardState, SnapshotMetadata};

use crate::durable::{read_wal, replay, restart_records, Durable, Recovered, SnapshotSlot};
use crate::wal::{self, Record};

/// A WAL segment is closed once it grows past this.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Whether a sync reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fdatasync` once per Ready: survives power loss.
    Fsync,
    /// Written to the kernel, not synced: survives a process crash, not power loss.
    None,
}

struct Staged {
    index: u64,
    term: u64,
    file: File,
    path: PathBuf,
    chunks: u32,
    bytes: Vec<u8>,
}

/// The current snapshot: its file and where each chunk record starts.
struct Current {
    index: u64,
    term: u64,
    file: File,
    chunks: Vec<(u64, usize)>,
}

/// Durable storage in files (see the module documentation).
pub struct FileDurable {
    dir: PathBuf,
    durability: Durability,
    /// The segment being written, its number and size.
    segment: Option<(File, u64, u64)>,
    pending: Vec<u8>,
    staging: [Option<Staged>; 2],
    current: Option<Current>,
    syncs: u64,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:016}.log"))
}

fn snapshot_path(dir: &Path, index: u64, term: u64) -> PathBuf {
    dir.join(format!("snapshot-{index:020}-{term:020}.snap"))
}

fn context(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| context(e, dir.display()))
}

/// The numbers of the WAL segments in `dir`, in order.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| context(e, dir.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_prefix("wal-").and_then(|r| r.strip_suffix(".log")).and_then(|n| n.parse().ok()) {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

impl FileDurable {
    /// Storage in `dir` (created if missing).
    pub fn open(dir: &Path, durability: Durability) -> io::Result<Self> {
        fs::create_dir_all(dir).map_err(|e| context(e, dir.display()))?;
        Ok(FileDurable {
            dir: dir.to_path_buf(),
            durability,
            segment: None,
            pending: Vec::new(),
            staging: [None, None],
            current: None,
            syncs: 0,
        })
    }

    fn open_segment(&mut self, n: u64) -> io::Result<()> {
        let path = segment_path(&self.dir, n);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| context(e, path.display()))?;
        let len = file.metadata()?.len();
        sync_dir(&self.dir)?;
        self.segment = Some((file, n, len));
        Ok(())
    }

    /// Reads snapshot (index, term)'s file: where its chunks are.
    fn load_snapshot(&self, index: u64, term: u64) -> io::Result<Current> {
        let path = snapshot_path(&self.dir, index, term);
        let bytes = fs::read(&path).map_err(|e| context(e, path.display()))?;
        let damaged = || io::Error::new(io::ErrorKind::InvalidData, format!("{} is damaged", path.display()));
        let wal::Scan::Clean { records, torn: 0, .. } = wal::scan(&bytes) else { return Err(damaged()) };
        // Record offsets: walk the framing again (each record is 8 bytes + its length).
        let mut chunks = Vec::new();
        let mut at = 0usize;
        let mut end = None;
        for record in &records {
            let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
            match record {
                Record::Chunk(_) => chunks.push((at as u64, 8 + len)),
                Record::End { chunks } => end = Some(*chunks),
                _ => return Err(damaged()),
            }
            at += 8 + len;
        }
        if end != Some(chunks.len() as u32) {
            return Err(damaged());
        }
        let file = File::open(&path).map_err(|e| context(e, path.display()))?;
        Ok(Current { index, term, file, chunks })
    }

    /// Bytes written but not yet synced (none after [`Durable::sync`]).
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }
}

impl Drop for FileDurable {
    /// A clean stop writes what is buffered (a crash would lose it, as it loses anything
    /// not yet synced).
    fn drop(&mut self) {
        if !self.pending.is_empty() && self.segment.is_some() {
            if let Err(e) = self.sync() {
                tracing::warn!(dir = %self.dir.display(), "the log's last records were not written: {e}");
            }
        }
    }
}

impl Durable for FileDurable {
    fn recover(&mut self) -> io::Result<Recovered> {
        let numbers = segments(&self.dir)?;
        let mut records = Vec::new();
        let mut torn_bytes = 0;
        for (i, &n) in numbers.iter().enumerate() {
            let path = segment_path(&self.dir, n);
            let bytes = fs::read(&path).map_err(|e| context(e, path.display()))?;
            let (mut found, valid, torn) = read_wal(&bytes).map_err(|e| context(e, path.display()))?;
            if torn > 0 {
                if i + 1 != numbers.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: damaged at byte {valid}, and it is not the last segment", path.display()),
                    ));
                }
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(valid as u64)?;
                file.sync_all()?;
                torn_bytes = torn;
            }
            records.append(&mut found);
        }
        let snapshot = records.iter().rev().find_map(|r| match r {
            Record::Snapshot(meta) => Some((meta.index, meta.term)),
            _ => None,
        });
        if let Some((index, term)) = snapshot {
            self.current = Some(self.load_snapshot(index, term)?);
        }
        let chunks = self.current.as_ref().map_or(0, |c| c.chunks.len() as u32);
        let existing = !records.is_empty();
        let log = replay(records, chunks);
        self.open_segment(numbers.last().copied().unwrap_or(1))?;
        Ok(Recovered { log, existing, torn_bytes })
    }

    fn append_entries(&mut self, entries: &[Entry]) -> io::Result<()> {
        wal::write_entries(&mut self.pending, entries);
        Ok(())
    }

    fn set_hard_state(&mut self, hs: &HardState) -> io::Result<()> {
        wal::write_hard_state(&mut self.pending, hs);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let Some((file, n, len)) = self.segment.as_mut() else {
            return Err(io::Error::other("the log was not recovered before writing"));
        };
        if !self.pending.is_empty() {
            file.write_all(&self.pending)?;
            *len += self.pending.len() as u64;
            self.pending.clear();
        }
        if self.durability == Durability::Fsync {
            file.sync_data()?;
        }
        self.syncs += 1;
        if *len > SEGMENT_BYTES {
            let next = *n + 1;
            self.open_segment(next)?;
        }
        Ok(())
    }

    fn snapshot_begin(&mut self, slot: SnapshotSlot, index: u64, term: u64) -> io::Result<()> {
        let path = self.dir.join(format!("{}.tmp", if slot == SnapshotSlot::Local { "local" } else { "incoming" }));
        let file = File::create(&path).map_err(|e| context(e, path.display()))?;
        self.staging[slot as usize] = Some(Staged { index, term, file, path, chunks: 0, bytes: Vec::new() });
        Ok(())
    }

    fn snapshot_chunk(&mut self, slot: SnapshotSlot, chunk: &[u8]) -> io::Result<()> {
        let Some(staged) = self.staging[slot as usize].as_mut() else {
            return Err(io::Error::other("a snapshot chunk with no snapshot begun"));
        };
        staged.bytes.clear();
        wal::write_chunk(&mut staged.bytes, chunk);
        staged.file.write_all(&staged.bytes)?;
        staged.chunks += 1;
        Ok(())
    }

    fn snapshot_commit(
        &mut self,
        slot: SnapshotSlot,
        meta: &SnapshotMetadata,
        hard_state: &HardState,
        tail: &[Entry],
    ) -> io::Result<()> {
        let staged = self.staging[slot as usize].take();
        let Some(mut staged) = staged.filter(|s| (s.index, s.term) == (meta.index, meta.term)) else {
            return Err(io::Error::other(format!("no whole snapshot {}/{} to commit", meta.index, meta.term)));
        };
        staged.bytes.clear();
        wal::write_end(&mut staged.bytes, staged.chunks);
        staged.file.write_all(&staged.bytes)?;
        staged.file.sync_all()?;
        let path = snapshot_path(&self.dir, meta.index, meta.term);
        fs::rename(&staged.path, &path).map_err(|e| context(e, path.display()))?;
        sync_dir(&self.dir)?;
        // The log restarts from the snapshot in a new segment.
        let old = segments(&self.dir)?;
        let next = old.last().map_or(1, |n| n + 1);
        self.pending.clear();
        restart_records(&mut self.pending, meta, hard_state, tail);
        self.open_segment(next)?;
        self.sync()?;
        self.current = Some(self.load_snapshot(meta.index, meta.term)?);
        // Only now is what came before unneeded.
        for n in old {
            let p = segment_path(&self.dir, n);
            fs::remove_file(&p).map_err(|e| context(e, p.display()))?;
        }
        for entry in fs::read_dir(&self.dir)? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "snap") && p != path {
                fs::remove_file(&p).map_err(|e| context(e, p.display()))?;
            }
        }
        sync_dir(&self.dir)
    }

    fn read_chunk(&self, index: u64, term: u64, seq: u32) -> io::Result<Option<Vec<u8>>> {
        let Some(current) = self.current.as_ref().filter(|c| (c.index, c.term) == (index, term)) else {
            return Ok(None);
        };
        let Some(&(at, len)) = current.chunks.get(seq as usize) else { return Ok(None) };
        let mut bytes = vec![0; len];
        current.file.read_exact_at(&mut bytes, at)?;
        match wal::scan(&bytes) {
            wal::Scan::Clean { mut records, torn: 0, .. } if records.len() == 1 => match records.pop() {
                Some(Record::Chunk(data)) => Ok(Some(data)),
                _ => Err(io::Error::new(io::ErrorKind::InvalidData, "a snapshot record is not a chunk")),
            },
            _ => Err(io::Error::new(io::ErrorKind::InvalidData, "a snapshot chunk is damaged on disk")),
        }
    }

    fn syncs(&self) -> u64 {
        self.syncs
    }
}
