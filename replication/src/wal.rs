//! The byte format of the write-ahead log and of snapshot files, sans-IO.
//!
//! A file is a sequence of records: `len u32 | crc32c u32 | kind u8 | body`, where `len`
//! counts `kind` and `body` and the CRC (crc32c, Castagnoli) covers them. Fields inside a
//! body use the core's codec (little-endian numbers, length-prefixed bytes).
//!
//! Reading back ([`scan`]) stops at the first record that is cut short or fails its
//! checksum. If nothing valid follows it, it is a *torn tail* (a write the process or the
//! machine did not finish; it was never synced, so never acknowledged) and the file is
//! valid up to it. If a valid record follows it, the damage is in the middle of the log:
//! [`Scan::Corrupt`], and the node refuses to start on it rather than forget
//! acknowledged entries silently.
//!
//! WAL records: [`Record::Entries`] (a Ready's new entries; an entry's index replaces
//! any entry at or after it), [`Record::HardState`] (the last one counts), and
//! [`Record::Snapshot`] (a snapshot with this metadata is durable: entries up to its
//! index are no longer needed). Snapshot files: [`Record::Snapshot`] first, then
//! [`Record::Chunk`]s, then [`Record::End`] with the chunk count.

use raft::prelude::{ConfState, Entry, EntryType, HardState, SnapshotMetadata};
use ringcache_core::codec::{Reader, Writer};

const HEADER: usize = 8;

/// The largest record body a reader accepts (a guard against a damaged length).
pub const MAX_RECORD: usize = 1 << 30;

/// One record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Entries(Vec<Entry>),
    HardState(HardState),
    Snapshot(SnapshotMetadata),
    Chunk(Vec<u8>),
    End { chunks: u32 },
}

const KIND_ENTRIES: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_SNAPSHOT: u8 = 3;
const KIND_CHUNK: u8 = 4;
const KIND_END: u8 = 5;

/// Appends the record `kind | body` (the body written by `body`) to `out`.
fn frame(out: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Writer<'_>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    let mut w = Writer::new(out);
    w.u8(kind);
    body(&mut w);
    let len = (out.len() - start - HEADER) as u32;
    let crc = crc32c::crc32c(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends an entries record.
pub fn write_entries(out: &mut Vec<u8>, entries: &[Entry]) {
    frame(out, KIND_ENTRIES, |w| {
        w.u32(entries.len() as u32);
        for e in entries {
            w.u64(e.index).u64(e.term).u8(e.get_entry_type() as u8).bytes(&e.data).bytes(&e.context);
        }
    });
}

/// Appends a hard-state record.
pub fn write_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    frame(out, KIND_HARD_STATE, |w| {
        w.u64(hs.term).u64(hs.vote).u64(hs.commit);
    });
}

/// Appends a snapshot-metadata record.
pub fn write_snapshot(out: &mut Vec<u8>, meta: &SnapshotMetadata) {
    frame(out, KIND_SNAPSHOT, |w| {
        w.u64(meta.index).u64(meta.term);
        let cs = meta.get_conf_state();
        for ids in [&cs.voters, &cs.learners, &cs.voters_outgoing, &cs.learners_next] {
            w.u32(ids.len() as u32);
            for &id in ids {
                w.u64(id);
            }
        }
        w.u8(u8::from(cs.auto_leave));
    });
}

/// Appends a snapshot chunk record.
pub fn write_chunk(out: &mut Vec<u8>, chunk: &[u8]) {
    frame(out, KIND_CHUNK, |w| {
        w.bytes(chunk);
    });
}

/// Appends the end record of a snapshot file.
pub fn write_end(out: &mut Vec<u8>, chunks: u32) {
    frame(out, KIND_END, |w| {
        w.u32(chunks);
    });
}

fn read_ids(r: &mut Reader<'_>) -> Option<Vec<u64>> {
    let n = r.u32()? as usize;
    if n > r.remaining() / 8 {
        return None;
    }
    (0..n).map(|_| r.u64()).collect()
}

fn decode_body(kind: u8, body: &[u8]) -> Option<Record> {
    let mut r = Reader::new(body);
    let record = match kind {
        KIND_ENTRIES => {
            let n = r.u32()? as usize;
            let mut entries = Vec::with_capacity(n.min(r.remaining() / 25));
            for _ in 0..n {
                let mut e = Entry::default();
                e.index = r.u64()?;
                e.term = r.u64()?;
                e.set_entry_type(match r.u8()? {
                    0 => EntryType::EntryNormal,
                    1 => EntryType::EntryConfChange,
                    2 => EntryType::EntryConfChangeV2,
                    _ => return None,
                });
                e.data = r.bytes()?.to_vec().into();
                e.context = r.bytes()?.to_vec().into();
                entries.push(e);
            }
            Record::Entries(entries)
        }
        KIND_HARD_STATE => {
            let mut hs = HardState::default();
            hs.term = r.u64()?;
            hs.vote = r.u64()?;
            hs.commit = r.u64()?;
            Record::HardState(hs)
        }
        KIND_SNAPSHOT => {
            let mut meta = SnapshotMetadata::default();
            meta.index = r.u64()?;
            meta.term = r.u64()?;
            let mut cs = ConfState::default();
            cs.voters = read_ids(&mut r)?;
            cs.learners = read_ids(&mut r)?;
            cs.voters_outgoing = read_ids(&mut r)?;
            cs.learners_next = read_ids(&mut r)?;
            cs.auto_leave = r.u8()? != 0;
            meta.set_conf_state(cs);
            Record::Snapshot(meta)
        }
        KIND_CHUNK => Record::Chunk(r.bytes()?.to_vec()),
        KIND_END => Record::End { chunks: r.u32()? },
        _ => return None,
    };
    r.is_done().then_some(record)
}

/// What reading a file back found.
#[derive(Debug, PartialEq)]
pub enum Scan {
    /// Every record is whole; `torn` bytes at the end were a write never finished (0:
    /// none). The file is valid for its first `valid` bytes.
    Clean { records: Vec<Record>, valid: usize, torn: usize },
    /// A damaged record at byte `at` with valid records after it.
    Corrupt { at: usize },
}

/// One record at `at`: its decoded form and its end, or None if it is cut short,
/// damaged or (all zeros) not there.
fn record_at(bytes: &[u8], at: usize) -> Option<(Record, usize)> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let body = bytes.get(at + HEADER..at + HEADER + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let record = decode_body(body[0], &body[1..])?;
    Some((record, at + HEADER + len))
}

/// Reads every record of `bytes` (see the module documentation).
pub fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match record_at(bytes, at) {
            Some((record, end)) => {
                records.push(record);
                at = end;
            }
            None => {
                // Torn, unless a whole record starts somewhere after the damage.
                if (at + 1..bytes.len()).any(|later| record_at(bytes, later).is_some()) {
                    return Scan::Corrupt { at };
                }
                return Scan::Clean { records, valid: at, torn: bytes.len() - at };
            }
        }
    }
    Scan::Clean { records, valid: at, torn: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = data.to_vec().into();
        e
    }

    fn sample() -> (Vec<u8>, Vec<Record>) {
        let entries = vec![entry(1, 1, b"one"), entry(2, 1, b""), entry(3, 2, &[7; 300])];
        let mut hs = HardState::default();
        hs.term = 2;
        hs.vote = 3;
        hs.commit = 2;
        let mut meta = SnapshotMetadata::default();
        meta.index = 2;
        meta.term = 1;
        let mut cs = ConfState::default();
        cs.voters = vec![1, 2, 3];
        cs.learners = vec![4];
        meta.set_conf_state(cs);
        let mut bytes = Vec::new();
        write_entries(&mut bytes, &entries);
        write_hard_state(&mut bytes, &hs);
        write_snapshot(&mut bytes, &meta);
        write_chunk(&mut bytes, b"chunk");
        write_end(&mut bytes, 1);
        let records = vec![
            Record::Entries(entries),
            Record::HardState(hs),
            Record::Snapshot(meta),
            Record::Chunk(b"chunk".to_vec()),
            Record::End { chunks: 1 },
        ];
        (bytes, records)
    }

    #[test]
    fn records_round_trip() {
        let (bytes, records) = sample();
        assert_eq!(scan(&bytes), Scan::Clean { records, valid: bytes.len(), torn: 0 });
    }

    #[test]
    fn a_torn_tail_is_cut_off_at_the_last_whole_record() {
        let (bytes, records) = sample();
        let last_start = bytes.len() - (HEADER + 1 + 4);
        for cut in last_start..bytes.len() {
            let scanned = scan(&bytes[..cut]);
            let expected = Scan::Clean { records: records[..4].to_vec(), valid: last_start, torn: cut - last_start };
            assert_eq!(scanned, expected, "cut at {cut}");
        }
        // Garbage (or zeros) after the last record is a torn write too.
        for tail in [vec![0u8; 64], vec![0xAB; 5], vec![0xFF; 40]] {
            let mut b = bytes.clone();
            b.extend_from_slice(&tail);
            assert!(matches!(scan(&b), Scan::Clean { valid, torn, .. } if valid == bytes.len() && torn == tail.len()));
        }
    }

    #[test]
    fn damage_before_the_last_record_is_corruption() {
        let (bytes, _) = sample();
        for i in [0, 3, 4, 9, 20] {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert_eq!(scan(&b), Scan::Corrupt { at: 0 }, "byte {i} flipped");
        }
        // A flipped byte in the last record is indistinguishable from a torn write.
        let mut b = bytes.clone();
        let n = b.len();
        b[n - 2] ^= 1;
        assert!(matches!(scan(&b), Scan::Clean { torn, .. } if torn > 0));
    }
}
