//! A full consistency check of a store, for tests and fuzzing (it walks every index
//! entry and every segment; never on the request path).
//!
//! The rules it checks:
//! - every index entry points into a segment that is in use, below its append position,
//!   at a well-formed item that ends within the segment's used bytes;
//! - the entry can be found again by its item's key (index and items agree);
//! - the item lies on its segment's item chain (each item starting where the one before
//!   it ends, from the segment's start), which is what compaction and sweeping walk;
//! - no two entries point at overlapping bytes;
//! - each segment's live item count and live bytes are exactly those of its entries, and
//!   never exceed its used bytes; its generation never shows as 0 in a CAS;
//! - the free list holds exactly the free segments that are not pinned, and each TTL class appends to an
//!   active segment of that class;
//! - a drain in progress (see `reclaim`) is on a sealed segment, its cursor at an item of
//!   that segment's chain or at its end.

use std::collections::BTreeMap;

use super::item;
use super::segments::{SegState, NONE};
use super::Store;

impl Store {
    /// Checks the store's invariants (see the module documentation); the first broken
    /// rule, described.
    pub fn check(&self) -> Result<(), String> {
        let seg_size = self.arena.seg_size();
        let bytes = self.arena.bytes();
        let nsegs = self.segs.meta.len();
        let mut live = vec![(0u64, 0u64); nsegs];
        let mut spans: BTreeMap<u64, u64> = BTreeMap::new();
        let mut chains: Vec<Option<std::collections::HashSet<usize>>> = vec![None; nsegs];
        for loc in self.index.locations() {
            let seg = loc as usize / seg_size;
            let m = self.segs.meta.get(seg).ok_or_else(|| format!("location {loc} beyond the arena"))?;
            if m.state == SegState::Free {
                return Err(format!("location {loc} in free segment {seg}"));
            }
            let end = seg * seg_size + m.write_at as usize;
            let at = loc as usize;
            if at >= end {
                return Err(format!("location {loc} at or past segment {seg}'s append position"));
            }
            let h = item::decode(&bytes[at..end]).ok_or_else(|| format!("no well-formed item at {loc}"))?;
            let key = &bytes[at + h.key_at..at + h.key_at + h.key_len];
            match self.find(key, self.hash(key)) {
                Some(found) if found.loc == loc => {}
                Some(found) => return Err(format!("key at {loc} is found at {} instead", found.loc)),
                None => return Err(format!("key at {loc} cannot be found by its hash")),
            }
            let chain = chains[seg].get_or_insert_with(|| {
                let (mut starts, mut walk) = (std::collections::HashSet::new(), seg * seg_size);
                while let Some(h) = item::decode(&bytes[walk..end]) {
                    starts.insert(walk);
                    walk += h.total();
                }
                starts
            });
            if !chain.contains(&at) {
                return Err(format!("item at {loc} is not on segment {seg}'s item chain"));
            }
            let total = h.total() as u64;
            if let Some((&prev, &prev_end)) = spans.range(..=loc).next_back() {
                if prev_end > loc {
                    return Err(format!("item at {loc} overlaps the item at {prev}"));
                }
            }
            if let Some((&next, _)) = spans.range(loc + 1..).next() {
                if loc + total > next {
                    return Err(format!("item at {loc} overlaps the item at {next}"));
                }
            }
            spans.insert(loc, loc + total);
            live[seg].0 += 1;
            live[seg].1 += total;
        }
        for (seg, m) in self.segs.meta.iter().enumerate() {
            if (u64::from(m.live_items), u64::from(m.live_bytes)) != live[seg] {
                return Err(format!(
                    "segment {seg} counts {} items / {} bytes live, its index entries {} / {}",
                    m.live_items, m.live_bytes, live[seg].0, live[seg].1
                ));
            }
            if m.live_bytes > m.write_at || m.write_at as usize > seg_size {
                return Err(format!("segment {seg}: {} live bytes, {} used", m.live_bytes, m.write_at));
            }
            if self.segs.cas_gen(seg) == 0 {
                return Err(format!("segment {seg}'s generation shows as 0 in a CAS"));
            }
        }
        let free_segments =
            (0..nsegs).filter(|&s| self.segs.meta[s].state == SegState::Free && !self.segs.is_pinned(s)).count();
        if self.segs.free_count() != free_segments {
            return Err(format!("{} on the free list, {free_segments} free", self.segs.free_count()));
        }
        for (class, &seg) in self.segs.active.iter().enumerate() {
            if seg == NONE {
                continue;
            }
            let m = self.segs.meta.get(seg as usize).ok_or_else(|| format!("class {class} appends to {seg}"))?;
            if m.state != SegState::Active || usize::from(m.class) != class {
                return Err(format!(
                    "class {class} appends to segment {seg}, which is {:?} of class {}",
                    m.state, m.class
                ));
            }
        }
        self.check_drain()
    }
}
