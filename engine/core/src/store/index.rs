//! The hash index: key hash -> item location, 8 bytes per slot. Slots pack a 16-bit tag
//! (from the hash) with the item's location in the shard's arena (48 bits), so most
//! non-matching slots are skipped without touching item memory.
//!
//! Buckets of 8 slots (one cache line), linear probing between buckets with a per-bucket
//! "has overflowed" mark so deletions never break a probe chain. The table is sized from
//! the expected item count and grows by 1.5x when 90% full; growth is incremental (a few
//! buckets move on every insert), so there is never a long pause.

const SLOTS: usize = 8;
const TAG_SHIFT: u32 = 48;
const LOC_MASK: u64 = (1 << TAG_SHIFT) - 1;
/// Largest location an index slot can hold.
pub const MAX_LOCATION: u64 = LOC_MASK - 1;
const MAX_LOAD_NUM: usize = 9;
const MAX_LOAD_DEN: usize = 10;
const MIGRATE_PER_INSERT: usize = 16;

fn tag(hash: u64) -> u64 {
    (hash & 0xffff) << TAG_SHIFT
}

fn slot(hash: u64, loc: u64) -> u64 {
    debug_assert!(loc <= MAX_LOCATION);
    tag(hash) | (loc + 1)
}

fn slot_loc(slot: u64) -> u64 {
    (slot & LOC_MASK) - 1
}

struct Table {
    buckets: Vec<[u64; SLOTS]>,
    overflowed: Vec<bool>,
    len: usize,
}

impl Table {
    fn new(nbuckets: usize) -> Self {
        let n = nbuckets.max(1);
        Table { buckets: vec![[0; SLOTS]; n], overflowed: vec![false; n], len: 0 }
    }

    /// A table of `nbuckets` buckets, or an error if that memory cannot be had.
    fn try_new(nbuckets: usize) -> Result<Self, std::collections::TryReserveError> {
        let n = nbuckets.max(1);
        let mut buckets = Vec::new();
        buckets.try_reserve_exact(n)?;
        buckets.resize(n, [0; SLOTS]);
        let mut overflowed = Vec::new();
        overflowed.try_reserve_exact(n)?;
        overflowed.resize(n, false);
        Ok(Table { buckets, overflowed, len: 0 })
    }

    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.buckets.len() as u128) >> 64) as usize
    }

    fn find(&self, hash: u64, mut is_match: impl FnMut(u64) -> bool) -> Option<(usize, usize, u64)> {
        let want = tag(hash);
        let n = self.buckets.len();
        let mut b = self.home(hash);
        for _ in 0..n {
            for (i, &s) in self.buckets[b].iter().enumerate() {
                if s != 0 && s & !LOC_MASK == want && is_match(slot_loc(s)) {
                    return Some((b, i, slot_loc(s)));
                }
            }
            if !self.overflowed[b] {
                return None;
            }
            b = if b + 1 == n { 0 } else { b + 1 };
        }
        None
    }

    fn insert(&mut self, hash: u64, loc: u64) {
        let n = self.buckets.len();
        let mut b = self.home(hash);
        for _ in 0..n {
            if let Some(free) = self.buckets[b].iter_mut().find(|s| **s == 0) {
                *free = slot(hash, loc);
                self.len += 1;
                return;
            }
            self.overflowed[b] = true;
            b = if b + 1 == n { 0 } else { b + 1 };
        }
        unreachable!("index table full: growth keeps it at most 90% loaded");
    }
}

/// Where a found entry sits (to replace or remove it without searching again).
#[derive(Debug, Clone, Copy)]
pub struct Position {
    in_old: bool,
    bucket: usize,
    slot: usize,
}

/// The index of one shard's store.
pub struct Index {
    cur: Table,
    /// The table being migrated away from during growth.
    old: Option<Table>,
    migrated: usize,
}

impl Index {
    fn buckets_for(expected_items: usize) -> usize {
        (expected_items.saturating_mul(MAX_LOAD_DEN) / MAX_LOAD_NUM).div_ceil(SLOTS).max(16)
    }

    /// An index sized for `expected_items` at 90% load.
    pub fn with_expected_items(expected_items: usize) -> Self {
        Index { cur: Table::new(Self::buckets_for(expected_items)), old: None, migrated: 0 }
    }

    /// As [`Index::with_expected_items`], or an error if the memory cannot be had.
    pub fn try_with_expected_items(expected_items: usize) -> Result<Self, std::collections::TryReserveError> {
        Ok(Index { cur: Table::try_new(Self::buckets_for(expected_items))?, old: None, migrated: 0 })
    }

    /// Bytes an index sized for `expected_items` occupies.
    pub fn bytes_for_expected_items(expected_items: usize) -> usize {
        Self::buckets_for(expected_items).saturating_mul(SLOTS * 8 + 1)
    }

    pub fn len(&self) -> usize {
        self.cur.len + self.old.as_ref().map_or(0, |t| t.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index is growing (entries still move from the old table).
    pub fn is_expanding(&self) -> bool {
        self.old.is_some()
    }

    /// Entries the index has room for.
    pub fn capacity(&self) -> usize {
        self.cur.buckets.len() * SLOTS
    }

    /// Bytes the index occupies.
    pub fn memory_bytes(&self) -> usize {
        let table = |t: &Table| t.buckets.len() * (SLOTS * 8 + 1);
        table(&self.cur) + self.old.as_ref().map_or(0, table)
    }

    /// Finds the entry for `hash` whose location satisfies `is_match` (the caller
    /// compares the key stored there).
    #[inline]
    pub fn find(&self, hash: u64, mut is_match: impl FnMut(u64) -> bool) -> Option<(Position, u64)> {
        if let Some((bucket, slot, loc)) = self.cur.find(hash, &mut is_match) {
            return Some((Position { in_old: false, bucket, slot }, loc));
        }
        let old = self.old.as_ref()?;
        let (bucket, slot, loc) = old.find(hash, is_match)?;
        Some((Position { in_old: true, bucket, slot }, loc))
    }

    fn table_mut(&mut self, in_old: bool) -> Option<&mut Table> {
        if in_old {
            self.old.as_mut()
        } else {
            Some(&mut self.cur)
        }
    }

    /// Points an existing entry at a new location.
    pub fn set(&mut self, pos: Position, hash: u64, loc: u64) {
        if let Some(t) = self.table_mut(pos.in_old) {
            t.buckets[pos.bucket][pos.slot] = slot(hash, loc);
        }
    }

    pub fn remove(&mut self, pos: Position) {
        if let Some(t) = self.table_mut(pos.in_old) {
            if t.buckets[pos.bucket][pos.slot] != 0 {
                t.buckets[pos.bucket][pos.slot] = 0;
                t.len -= 1;
            }
        }
    }

    /// Adds an entry (the key must not be present). `hash_of` recomputes the hash of the
    /// item at a location, for entries moved by incremental growth.
    pub fn insert(&mut self, hash: u64, loc: u64, hash_of: impl Fn(u64) -> u64) {
        if self.old.is_none() && (self.cur.len + 1) * MAX_LOAD_DEN > self.cur.buckets.len() * SLOTS * MAX_LOAD_NUM {
            let bigger = Table::new(self.cur.buckets.len() * 3 / 2 + 1);
            self.old = Some(std::mem::replace(&mut self.cur, bigger));
            self.migrated = 0;
        }
        self.cur.insert(hash, loc);
        self.migrate(MIGRATE_PER_INSERT, &hash_of);
    }

    fn migrate(&mut self, buckets: usize, hash_of: &impl Fn(u64) -> u64) {
        let Some(old) = self.old.as_mut() else { return };
        for _ in 0..buckets {
            if self.migrated == old.buckets.len() {
                self.old = None;
                return;
            }
            let bucket = std::mem::replace(&mut old.buckets[self.migrated], [0; SLOTS]);
            for s in bucket.into_iter().filter(|&s| s != 0) {
                let loc = slot_loc(s);
                self.cur.insert(hash_of(loc), loc);
                old.len -= 1;
            }
            self.migrated += 1;
        }
    }

    /// Removes every entry, keeping the table's size.
    pub fn clear(&mut self) {
        for b in &mut self.cur.buckets {
            *b = [0; SLOTS];
        }
        self.cur.overflowed.fill(false);
        self.cur.len = 0;
        self.old = None;
    }

    /// Every location in the index (for checks and rebuilding).
    pub fn locations(&self) -> impl Iterator<Item = u64> + '_ {
        let table =
            |t: &'_ Table| t.buckets.iter().flatten().filter(|&&s| s != 0).map(|&s| slot_loc(s)).collect::<Vec<_>>();
        table(&self.cur).into_iter().chain(self.old.as_ref().map(table).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn h(i: u64) -> u64 {
        // A reproducible, well-spread hash for tests.
        let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    #[test]
    fn grows_incrementally_and_finds_everything() {
        // Location i holds "key" i, whose hash is h(i).
        let mut index = Index::with_expected_items(100);
        for i in 0..50_000u64 {
            assert!(index.find(h(i), |loc| loc == i).is_none());
            index.insert(h(i), i, h);
        }
        assert_eq!(index.len(), 50_000);
        for i in 0..50_000u64 {
            let found = index.find(h(i), |loc| loc == i).map(|(_, loc)| loc);
            assert_eq!(found, Some(i));
        }
        let load = index.len() as f64 / (index.cur.buckets.len() * SLOTS) as f64;
        assert!(load > 0.5 && load <= 0.9, "load {load}");
    }

    #[test]
    fn removals_keep_probe_chains_intact() {
        let mut index = Index::with_expected_items(1000);
        let mut model = HashMap::new();
        for i in 0..900u64 {
            index.insert(h(i), i, h);
            model.insert(i, ());
        }
        for i in (0..900u64).step_by(3) {
            let (pos, _) = index.find(h(i), |loc| loc == i).expect("present");
            index.remove(pos);
            model.remove(&i);
        }
        for i in 0..900u64 {
            assert_eq!(index.find(h(i), |loc| loc == i).is_some(), model.contains_key(&i), "key {i}");
        }
        assert_eq!(index.len(), model.len());
    }

    #[test]
    fn set_moves_an_entry_and_clear_empties() {
        let mut index = Index::with_expected_items(10);
        index.insert(h(1), 1, h);
        let (pos, _) = index.find(h(1), |loc| loc == 1).expect("present");
        index.set(pos, h(1), 77);
        assert!(index.find(h(1), |loc| loc == 77).is_some());
        index.clear();
        assert!(index.is_empty());
        assert!(index.find(h(1), |_| true).is_none());
    }
}
