//! Warm restart for file-backed stores (`--memory-file`). The segments already live in
//! the file; [`save`] (when the server stops, once no shard can change the store any
//! more) writes next to it a metadata file:
//! the settings it was made with, the clock base, each segment's state, generation and a
//! CRC32 of its used bytes, and every indexed item location, with a CRC32 of the whole.
//!
//! [`Store::recover`] trusts nothing it cannot verify: a missing, torn or foreign
//! metadata file, or different settings, means starting empty; a segment whose CRC does
//! not match (changed after the save, e.g. before a kill -9) is dropped with its items.
//! The metadata file is removed once read, before the store serves anything, and it is
//! only written when the server stops: so it exists only while no process is changing
//! the store, and a crash of a running server restarts empty, never older.

use std::io;
use std::path::{Path, PathBuf};

use super::segments::{SavedSegment, SegState, TTL_CLASSES};
use super::{item, Store};
use crate::codec::{Reader, Writer};

/// v02: items have an access byte; segments save their access base.
const MAGIC: &[u8; 8] = b"RCSEGv02";

fn meta_path(data: &Path) -> PathBuf {
    let mut p = data.as_os_str().to_owned();
    p.push(".meta");
    PathBuf::from(p)
}

fn state_code(s: SegState) -> u8 {
    match s {
        SegState::Free => 0,
        SegState::Active => 1,
        SegState::Sealed => 2,
    }
}

/// The settings a metadata file must match to be used.
fn settings(store: &Store) -> [u64; 6] {
    [
        store.arena.seg_size() as u64,
        store.arena.nsegs() as u64,
        store.config.shard as u64,
        store.config.nshards as u64,
        store.config.limits.max_item_size as u64,
        store.config.cas.code(),
    ]
}

/// Writes the metadata that lets a restart find the items again.
pub(super) fn save(store: &Store, clock_base_unix: i64) -> io::Result<()> {
    let Some(data_path) = &store.config.memory_file else { return Ok(()) };
    store.arena.sync()?;
    let mut out = Vec::with_capacity(64 + store.segs.meta.len() * 32 + store.index.len() * 8);
    let mut w = Writer::new(&mut out);
    w.raw(MAGIC);
    for v in settings(store) {
        w.u64(v);
    }
    w.i64(clock_base_unix).u32(store.oldest_live.unwrap_or(0));
    for (seg, m) in store.segs.meta.iter().enumerate() {
        w.u8(state_code(m.state)).u8(m.class).u8(u8::from(m.never_expires));
        w.u32(m.write_at).u32(m.gen).u32(m.created).u32(m.access_base).u32(m.max_expiry);
        let used = &store.arena.segment(seg)[..m.write_at as usize];
        w.u32(crc32fast::hash(used));
    }
    let mut locations: Vec<u64> = store.index.locations().collect();
    locations.sort_unstable();
    w.u64(locations.len() as u64);
    for loc in locations {
        w.u64(loc);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let path = meta_path(data_path);
    let tmp = path.with_extension("meta.tmp");
    // Written aside, made durable, then renamed into place: a crash leaves either no
    // metadata or a whole one.
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&out)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// What recovery found, for the log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub items: usize,
    pub segments: usize,
    pub segments_dropped: usize,
}

impl Store {
    /// Restores the items of a previous run from the memory file, if its metadata
    /// verifies; otherwise leaves the store empty. Logs which happened.
    pub(super) fn recover(&mut self) {
        let Some(data_path) = self.config.memory_file.clone() else { return };
        let path = meta_path(&data_path);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(_) => {
                tracing::info!(
                    shard = self.config.shard,
                    "no saved metadata for {}: starting empty",
                    data_path.display()
                );
                return;
            }
        };
        // Whatever happens next, this metadata must not be trusted again.
        let _ = std::fs::remove_file(&path);
        match self.restore_from(&bytes) {
            Some(r) => {
                self.recovered = true;
                tracing::info!(
                    shard = self.config.shard,
                    "recovered {} items in {} segments from {} ({} segments failed verification and were dropped)",
                    r.items,
                    r.segments,
                    data_path.display(),
                    r.segments_dropped
                )
            }
            None => {
                self.clear();
                self.oldest_live = None;
                tracing::warn!(
                    shard = self.config.shard,
                    "metadata for {} is damaged or from other settings: starting empty",
                    data_path.display()
                );
            }
        }
    }

    fn restore_from(&mut self, bytes: &[u8]) -> Option<Recovered> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32fast::hash(body).to_le_bytes() != crc || !body.starts_with(MAGIC) {
            return None;
        }
        let mut r = Reader::at(body, MAGIC.len());
        for expected in settings(self) {
            if r.u64()? != expected {
                return None;
            }
        }
        let old_base = r.i64()?;
        let oldest_live = r.u32()?;
        let new_base = self.config.clock_base_unix;
        // Relative times of the old run, moved onto this run's clock.
        let shift = |t: u32| -> u32 {
            if t == 0 {
                return 0;
            }
            (i64::from(t) + old_base - new_base).clamp(1, i64::from(u32::MAX)) as u32
        };
        let nsegs = self.segs.meta.len();
        let mut verified = vec![false; nsegs];
        let mut result = Recovered::default();
        let mut restored = Vec::with_capacity(nsegs);
        for (seg, ok) in verified.iter_mut().enumerate() {
            let state = r.u8()?;
            let class = r.u8()?;
            let never = r.u8()? != 0;
            let (write_at, gen, created) = (r.u32()?, r.u32()?, r.u32()?);
            let (access_base, max_expiry) = (r.u32()?, r.u32()?);
            let crc = r.u32()?;
            if state == 0 || usize::from(class) >= TTL_CLASSES || write_at as usize > self.arena.seg_size() {
                continue;
            }
            let used = &self.arena.segment(seg)[..write_at as usize];
            if crc32fast::hash(used) != crc {
                result.segments_dropped += 1;
                continue;
            }
            *ok = true;
            result.segments += 1;
            restored.push(SavedSegment {
                seg,
                class,
                write_at,
                gen,
                created: shift(created),
                // The access base may lie before this run's clock begins: it is a time,
                // not an expiry, so 0 is a time like any other here.
                access_base: (i64::from(access_base) + old_base - new_base).clamp(0, i64::from(u32::MAX)) as u32,
                max_expiry: shift(max_expiry),
                never_expires: never,
            });
        }
        let count = r.u64()? as usize;
        let mut locations = Vec::with_capacity(count.min(bytes.len() / 8));
        for _ in 0..count {
            locations.push(r.u64()?);
        }
        // Saved in order; sorting (cheap on sorted input) lets overlaps be refused below.
        locations.sort_unstable();
        // Size the index for what comes back, so recovery does not grow it step by step.
        if count > self.index.len() {
            if let Ok(index) = super::index::Index::try_with_expected_items(count) {
                self.index = index;
            }
        }
        self.segs.restore(&restored);
        self.oldest_live = (oldest_live != 0).then(|| shift(oldest_live));
        let seg_size = self.arena.seg_size();
        // Items are accepted only on their segment's item chain (each item starting where
        // the one before it ends, from the segment's start): the chain is what compaction
        // and sweeping walk, so an indexed item off it would be left behind, dangling.
        // Locations are sorted, so one walk per segment suffices: (segment, next start).
        let mut chain = (usize::MAX, 0usize);
        for loc in locations {
            let seg = loc as usize / seg_size;
            if seg >= nsegs || !verified[seg] {
                continue;
            }
            let end = seg * seg_size + self.segs.meta[seg].write_at as usize;
            let at = loc as usize;
            if chain.0 != seg {
                chain = (seg, seg * seg_size);
            }
            while chain.1 < at {
                match item::decode(&self.arena.bytes()[chain.1..end]) {
                    Some(h) => chain.1 += h.total(),
                    None => chain.1 = usize::MAX,
                }
            }
            if chain.1 != at {
                continue;
            }
            let Some(h) = item::decode(&self.arena.bytes()[at..end]) else {
                chain.1 = usize::MAX;
                continue;
            };
            chain.1 = at + h.total();
            // Move the expiry onto this run's clock; an item whose field cannot hold the
            // moved value is not recovered.
            if h.exptime_at.is_some() && !item::set_exptime(&mut self.arena.bytes_mut()[at..], &h, shift(h.exptime)) {
                continue;
            }
            let hash = self.hasher.hash_one(&self.arena.bytes()[at + h.key_at..at + h.key_at + h.key_len]);
            if self.find_at_hash(hash, at).is_some() {
                continue;
            }
            let (arena, hasher) = (&self.arena, &self.hasher);
            self.index.insert(hash, loc, |l| super::hash_at(arena, hasher, l));
            self.segs.count_live(seg, h.total());
            result.items += 1;
        }
        Some(result)
    }

    /// True if the index already has an item with the same key as the one at `at`.
    fn find_at_hash(&self, hash: u64, at: usize) -> Option<()> {
        let bytes = self.arena.bytes();
        let h = item::decode(&bytes[at..])?;
        let key = &bytes[at + h.key_at..at + h.key_at + h.key_len];
        self.find(key, hash).map(|_| ())
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Store {
    /// Restores from untrusted input, as a restart would (for fuzzing the metadata
    /// reader): `segments` is copied into the arena from its start, and the metadata is
    /// this store's magic and settings followed by `body`. With `fix_checksums`, each
    /// segment record's CRC and the file's CRC are made to match, so that the input
    /// reaches the parser behind them. Returns whether the metadata was accepted; either
    /// way the store is left consistent (empty when refused).
    pub fn restore_untrusted(&mut self, segments: &[u8], body: &[u8], fix_checksums: bool) -> bool {
        let arena = self.arena.bytes_mut();
        let n = segments.len().min(arena.len());
        arena[..n].copy_from_slice(&segments[..n]);
        let mut meta = MAGIC.to_vec();
        for v in settings(self) {
            meta.extend_from_slice(&v.to_le_bytes());
        }
        meta.extend_from_slice(body);
        if fix_checksums {
            // A segment's record: state, class, never-expires, five u32 fields, the CRC.
            const SEGMENT_RECORD: usize = 3 + 5 * 4 + 4;
            let records = MAGIC.len() + 6 * 8 + 8 + 4;
            for seg in 0..self.segs.meta.len() {
                let at = records + seg * SEGMENT_RECORD;
                let Some(record) = meta.get(at..at + SEGMENT_RECORD) else { break };
                let write_at = u32::from_le_bytes([record[3], record[4], record[5], record[6]]) as usize;
                let used = &self.arena.segment(seg)[..write_at.min(self.arena.seg_size())];
                meta[at + SEGMENT_RECORD - 4..at + SEGMENT_RECORD]
                    .copy_from_slice(&crc32fast::hash(used).to_le_bytes());
            }
            let crc = crc32fast::hash(&meta);
            meta.extend_from_slice(&crc.to_le_bytes());
        }
        let accepted = self.restore_from(&meta).is_some();
        if !accepted {
            self.clear();
            self.oldest_live = None;
        }
        accepted
    }
}
