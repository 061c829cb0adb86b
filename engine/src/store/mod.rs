//! The per-shard item store: a hash index over items, an LRU list for eviction, a hard
//! memory limit, lazy expiry on access plus an incremental sweep, and memcached's storage
//! semantics (add/replace/append/prepend/cas/incr/decr/touch/flush_all with delay).
//!
//! The store is owned by one shard's executor, so it is single-threaded by construction:
//! no locks. Its interface ([`Store`]'s methods) is deliberately narrow so the inside can
//! be replaced by mmap-backed segments without touching the server.

pub mod clock;

use ahash::RandomState;
use hashbrown::HashTable;

use crate::protocol::numbers::parse_u64;
use crate::protocol::{Limits, StoreMode};

/// Fixed seeds: key placement (and so shard ownership) is stable across restarts.
pub fn key_hasher() -> RandomState {
    RandomState::with_seeds(
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    )
}

const NIL: u32 = u32::MAX;

/// Bytes charged per item on top of key and value: the entry record, its index slot
/// (4-byte index + 1 control byte), and the allocator's header for the item's buffer.
pub const ITEM_OVERHEAD: usize = std::mem::size_of::<Entry>() + 5 + 16;

/// How a store is configured.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// Hard limit on charged bytes (keys + values + [`ITEM_OVERHEAD`] per item).
    pub memory_limit: usize,
    /// `false` (memcached `-M`): refuse to store instead of evicting.
    pub evictions: bool,
    /// `false` (memcached `-C`): every CAS is 0.
    pub cas_enabled: bool,
    /// CAS values are `cas_first + k * cas_stride`: unique across shards when each shard
    /// has its own `cas_first` in `1..=stride`.
    pub cas_first: u64,
    pub cas_stride: u64,
    /// The item size limit (`-I`), as memcached measures it; an append or prepend that
    /// would grow an item beyond it is not stored.
    pub limits: Limits,
}

#[derive(Debug)]
struct Entry {
    /// Key bytes followed by value bytes.
    data: Box<[u8]>,
    key_len: u8,
    flags: u32,
    /// Relative expiry time, 0 = never.
    exptime: u32,
    /// Relative time of the last store, for `flush_all` with a delay.
    time: u32,
    cas: u64,
    prev: u32,
    next: u32,
}

impl Entry {
    fn key(&self) -> &[u8] {
        &self.data[..usize::from(self.key_len)]
    }
    fn value(&self) -> &[u8] {
        &self.data[usize::from(self.key_len)..]
    }
    fn charge(&self) -> usize {
        self.data.len() + ITEM_OVERHEAD
    }
}

/// A read view of a live item.
#[derive(Debug, Clone, Copy)]
pub struct ItemRef<'s> {
    pub flags: u32,
    pub cas: u64,
    pub value: &'s [u8],
}

/// Result of a storage command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    NotStored,
    Exists,
    NotFound,
    OutOfMemory,
}

/// Result of `incr`/`decr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOutcome {
    Value(u64),
    NotFound,
    NonNumeric,
    OutOfMemory,
}

/// Counters the store keeps itself (the shard keeps the per-command ones).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub curr_items: u64,
    pub total_items: u64,
    pub bytes: u64,
    pub evictions: u64,
    pub expired_unfetched: u64,
    pub reclaimed: u64,
    pub get_expired: u64,
    pub get_flushed: u64,
}

/// Why a lookup found nothing live.
enum Miss {
    Absent,
    Expired,
    Flushed,
}

pub struct Store {
    config: StoreConfig,
    hasher: RandomState,
    index: HashTable<u32>,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    /// LRU list: head is most recently used.
    head: u32,
    tail: u32,
    used: usize,
    next_cas: u64,
    /// memcached's `oldest_live` for a pending delayed `flush_all`.
    oldest_live: Option<u32>,
    sweep_cursor: usize,
    stats: StoreStats,
}

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        Store {
            config,
            hasher: key_hasher(),
            index: HashTable::new(),
            entries: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            used: 0,
            next_cas: config.cas_first,
            oldest_live: None,
            sweep_cursor: 0,
            stats: StoreStats::default(),
        }
    }

    pub fn stats(&self) -> StoreStats {
        let mut s = self.stats;
        s.bytes = self.used as u64;
        s
    }

    pub fn reset_stats(&mut self) {
        let curr = self.stats.curr_items;
        self.stats = StoreStats {
            curr_items: curr,
            ..StoreStats::default()
        };
    }

    pub fn memory_limit(&self) -> usize {
        self.config.memory_limit
    }

    fn entry(&self, idx: u32) -> &Entry {
        match &self.entries[idx as usize] {
            Some(e) => e,
            None => unreachable!("index points at a free entry {idx}"),
        }
    }

    fn entry_mut(&mut self, idx: u32) -> &mut Entry {
        match &mut self.entries[idx as usize] {
            Some(e) => e,
            None => unreachable!("index points at a free entry {idx}"),
        }
    }

    fn take_cas(&mut self) -> u64 {
        if !self.config.cas_enabled {
            return 0;
        }
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(self.config.cas_stride);
        cas
    }

    fn is_dead(&self, e: &Entry, now: u32) -> Option<Miss> {
        if let Some(oldest) = self.oldest_live {
            if oldest <= now && e.time <= oldest {
                return Some(Miss::Flushed);
            }
        }
        if e.exptime != 0 && e.exptime <= now {
            return Some(Miss::Expired);
        }
        None
    }

    /// Finds a live item, unlinking it if it is expired or flushed.
    fn lookup(&mut self, key: &[u8], now: u32) -> Result<u32, Miss> {
        let hash = self.hasher.hash_one(key);
        let entries = &self.entries;
        let found = self.index.find(
            hash,
            |&i| matches!(&entries[i as usize], Some(e) if e.key() == key),
        );
        let Some(&idx) = found else {
            return Err(Miss::Absent);
        };
        if let Some(miss) = self.is_dead(self.entry(idx), now) {
            self.remove(idx);
            return Err(miss);
        }
        Ok(idx)
    }

    fn item_ref(&self, idx: u32) -> ItemRef<'_> {
        let e = self.entry(idx);
        ItemRef {
            flags: e.flags,
            cas: e.cas,
            value: e.value(),
        }
    }

    /// `get`: a live item, marked recently used.
    pub fn get(&mut self, key: &[u8], now: u32) -> Option<ItemRef<'_>> {
        match self.lookup(key, now) {
            Ok(idx) => {
                self.touch_lru(idx);
                Some(self.item_ref(idx))
            }
            Err(miss) => {
                self.count_miss(miss);
                None
            }
        }
    }

    fn count_miss(&mut self, miss: Miss) {
        match miss {
            Miss::Expired => self.stats.get_expired += 1,
            Miss::Flushed => self.stats.get_flushed += 1,
            Miss::Absent => {}
        }
    }

    /// `touch`/`gat`: sets a new relative expiry on a live item.
    pub fn touch(&mut self, key: &[u8], exptime: u32, now: u32) -> Option<ItemRef<'_>> {
        match self.lookup(key, now) {
            Ok(idx) => {
                self.entry_mut(idx).exptime = exptime;
                self.touch_lru(idx);
                Some(self.item_ref(idx))
            }
            Err(miss) => {
                self.count_miss(miss);
                None
            }
        }
    }

    /// `delete`: true if a live item was removed.
    pub fn delete(&mut self, key: &[u8], now: u32) -> bool {
        match self.lookup(key, now) {
            Ok(idx) => {
                self.remove(idx);
                true
            }
            Err(_) => false,
        }
    }

    /// The storage commands, with memcached's `do_store_item` rules.
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &mut self,
        mode: StoreMode,
        key: &[u8],
        flags: u32,
        exptime: u32,
        value: &[u8],
        cas: u64,
        now: u32,
    ) -> StoreOutcome {
        let existing = self.lookup(key, now).ok();
        match (mode, existing) {
            (StoreMode::Add, Some(idx)) => {
                self.touch_lru(idx);
                StoreOutcome::NotStored
            }
            (StoreMode::Replace | StoreMode::Append | StoreMode::Prepend, None) => {
                StoreOutcome::NotStored
            }
            (StoreMode::Cas, None) => StoreOutcome::NotFound,
            (StoreMode::Cas, Some(idx)) if self.entry(idx).cas != cas => StoreOutcome::Exists,
            (StoreMode::Append | StoreMode::Prepend, Some(idx)) => {
                let old = self.entry(idx);
                let (old_flags, old_exptime) = (old.flags, old.exptime);
                let new_len = old.value().len() + value.len();
                if !self.config.limits.item_fits(key.len(), old_flags, new_len) {
                    return StoreOutcome::NotStored;
                }
                let mut data = Vec::with_capacity(key.len() + new_len);
                data.extend_from_slice(key);
                if mode == StoreMode::Append {
                    data.extend_from_slice(old.value());
                    data.extend_from_slice(value);
                } else {
                    data.extend_from_slice(value);
                    data.extend_from_slice(old.value());
                }
                self.insert(key, data.into_boxed_slice(), old_flags, old_exptime, now)
            }
            (StoreMode::Set | StoreMode::Add | StoreMode::Replace | StoreMode::Cas, _) => {
                let mut data = Vec::with_capacity(key.len() + value.len());
                data.extend_from_slice(key);
                data.extend_from_slice(value);
                self.insert(key, data.into_boxed_slice(), flags, exptime, now)
            }
        }
    }

    /// `incr`/`decr` with memcached's rules: 64-bit unsigned, incr wraps, decr stops at 0,
    /// and a result no longer than the old value is written in place, space-padded.
    pub fn arith(&mut self, key: &[u8], incr: bool, delta: u64, now: u32) -> ArithOutcome {
        let Ok(idx) = self.lookup(key, now) else {
            return ArithOutcome::NotFound;
        };
        let e = self.entry(idx);
        let Some(current) = (if e.value().is_empty() {
            None
        } else {
            parse_u64(e.value())
        }) else {
            return ArithOutcome::NonNumeric;
        };
        let result = if incr {
            current.wrapping_add(delta)
        } else {
            current.saturating_sub(delta)
        };
        let mut buf = [0u8; 20];
        let digits = crate::protocol::reply::decimal(result, &mut buf);
        let old_len = e.value().len();
        let (flags, exptime) = (e.flags, e.exptime);
        if digits.len() <= old_len {
            let cas = self.take_cas();
            let e = self.entry_mut(idx);
            let start = usize::from(e.key_len);
            e.data[start..start + digits.len()].copy_from_slice(digits);
            e.data[start + digits.len()..].fill(b' ');
            e.cas = cas;
            self.touch_lru(idx);
            return ArithOutcome::Value(result);
        }
        let mut data = Vec::with_capacity(key.len() + digits.len());
        data.extend_from_slice(key);
        data.extend_from_slice(digits);
        match self.insert(key, data.into_boxed_slice(), flags, exptime, now) {
            StoreOutcome::Stored => ArithOutcome::Value(result),
            _ => ArithOutcome::OutOfMemory,
        }
    }

    /// `set` that failed for size: memcached drops the old value so a stale one is not
    /// served.
    pub fn drop_key(&mut self, key: &[u8], now: u32) {
        self.delete(key, now);
    }

    /// `flush_all`: `oldest_live` None flushes now; Some(t) flushes, once relative time `t`
    /// is reached, everything stored at or before `t`.
    pub fn flush(&mut self, oldest_live: Option<u32>, now: u32) {
        match oldest_live {
            Some(t) if t > now => self.oldest_live = Some(t),
            _ => {
                self.oldest_live = None;
                while self.head != NIL {
                    self.remove(self.head);
                }
            }
        }
    }

    /// Reclaims up to `budget` expired or flushed items, resuming where the last sweep
    /// stopped. Returns how many were reclaimed.
    pub fn sweep(&mut self, now: u32, budget: usize) -> usize {
        let mut reclaimed = 0;
        for _ in 0..budget.min(self.entries.len()) {
            if self.sweep_cursor >= self.entries.len() {
                self.sweep_cursor = 0;
            }
            let idx = self.sweep_cursor as u32;
            self.sweep_cursor += 1;
            let dead = match &self.entries[idx as usize] {
                Some(e) => self.is_dead(e, now).is_some(),
                None => false,
            };
            if dead {
                self.remove(idx);
                self.stats.reclaimed += 1;
                self.stats.expired_unfetched += 1;
                reclaimed += 1;
            }
        }
        reclaimed
    }

    /// Stores a new item for `key`, replacing any old one, evicting as needed.
    fn insert(
        &mut self,
        key: &[u8],
        data: Box<[u8]>,
        flags: u32,
        exptime: u32,
        now: u32,
    ) -> StoreOutcome {
        if let Ok(old) = self.lookup(key, now) {
            self.remove(old);
        }
        let charge = data.len() + ITEM_OVERHEAD;
        if charge > self.config.memory_limit {
            return StoreOutcome::OutOfMemory;
        }
        while self.used + charge > self.config.memory_limit {
            if !self.config.evictions || self.tail == NIL {
                return StoreOutcome::OutOfMemory;
            }
            self.remove(self.tail);
            self.stats.evictions += 1;
        }
        let cas = self.take_cas();
        let entry = Entry {
            data,
            key_len: key.len() as u8,
            flags,
            exptime,
            time: now,
            cas,
            prev: NIL,
            next: NIL,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = Some(entry);
                i
            }
            None => {
                self.entries.push(Some(entry));
                (self.entries.len() - 1) as u32
            }
        };
        let hash = self.hasher.hash_one(key);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index
            .insert_unique(hash, idx, |&i| match &entries[i as usize] {
                Some(e) => hasher.hash_one(e.key()),
                None => 0,
            });
        self.link_head(idx);
        self.used += charge;
        self.stats.curr_items += 1;
        self.stats.total_items += 1;
        StoreOutcome::Stored
    }

    fn remove(&mut self, idx: u32) {
        let hash = self.hasher.hash_one(self.entry(idx).key());
        if let Ok(slot) = self.index.find_entry(hash, |&i| i == idx) {
            slot.remove();
        }
        self.unlink(idx);
        let charge = self.entry(idx).charge();
        self.used -= charge;
        self.stats.curr_items -= 1;
        self.entries[idx as usize] = None;
        self.free.push(idx);
    }

    fn touch_lru(&mut self, idx: u32) {
        if self.head != idx {
            self.unlink(idx);
            self.link_head(idx);
        }
    }

    fn link_head(&mut self, idx: u32) {
        let old_head = self.head;
        {
            let e = self.entry_mut(idx);
            e.prev = NIL;
            e.next = old_head;
        }
        if old_head != NIL {
            self.entry_mut(old_head).prev = idx;
        } else {
            self.tail = idx;
        }
        self.head = idx;
    }

    fn unlink(&mut self, idx: u32) {
        let (prev, next) = {
            let e = self.entry(idx);
            (e.prev, e.next)
        };
        if prev != NIL {
            self.entry_mut(prev).next = next;
        } else if self.head == idx {
            self.head = next;
        }
        if next != NIL {
            self.entry_mut(next).prev = prev;
        } else if self.tail == idx {
            self.tail = prev;
        }
        let e = self.entry_mut(idx);
        e.prev = NIL;
        e.next = NIL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(limit: usize, evictions: bool) -> Store {
        Store::new(StoreConfig {
            memory_limit: limit,
            evictions,
            cas_enabled: true,
            cas_first: 1,
            cas_stride: 1,
            limits: Limits {
                max_item_size: 1 << 20,
                cas_enabled: true,
            },
        })
    }

    #[test]
    fn set_get_delete() {
        let mut s = store(1 << 20, true);
        assert_eq!(
            s.store(StoreMode::Set, b"k", 3, 0, b"v", 0, 100),
            StoreOutcome::Stored
        );
        let item = s.get(b"k", 100).map(|i| (i.flags, i.value.to_vec()));
        assert_eq!(item, Some((3, b"v".to_vec())));
        assert!(s.delete(b"k", 100));
        assert!(s.get(b"k", 100).is_none());
        assert!(!s.delete(b"k", 100));
    }

    #[test]
    fn cas_add_replace_rules() {
        let mut s = store(1 << 20, true);
        assert_eq!(
            s.store(StoreMode::Replace, b"k", 0, 0, b"a", 0, 1),
            StoreOutcome::NotStored
        );
        assert_eq!(
            s.store(StoreMode::Cas, b"k", 0, 0, b"a", 1, 1),
            StoreOutcome::NotFound
        );
        assert_eq!(
            s.store(StoreMode::Add, b"k", 0, 0, b"a", 0, 1),
            StoreOutcome::Stored
        );
        assert_eq!(
            s.store(StoreMode::Add, b"k", 0, 0, b"b", 0, 1),
            StoreOutcome::NotStored
        );
        let cas = s.get(b"k", 1).map(|i| i.cas).unwrap_or(0);
        assert_eq!(
            s.store(StoreMode::Cas, b"k", 0, 0, b"c", cas + 1, 1),
            StoreOutcome::Exists
        );
        assert_eq!(
            s.store(StoreMode::Cas, b"k", 0, 0, b"c", cas, 1),
            StoreOutcome::Stored
        );
        assert_eq!(
            s.store(StoreMode::Append, b"k", 9, 0, b"d", 0, 1),
            StoreOutcome::Stored
        );
        assert_eq!(
            s.store(StoreMode::Prepend, b"k", 9, 0, b"b", 0, 1),
            StoreOutcome::Stored
        );
        let item = s.get(b"k", 1).map(|i| (i.flags, i.value.to_vec()));
        assert_eq!(item, Some((0, b"bcd".to_vec())));
    }

    #[test]
    fn arith_pads_shorter_results() {
        let mut s = store(1 << 20, true);
        s.store(StoreMode::Set, b"n", 0, 0, b"100", 0, 1);
        assert_eq!(s.arith(b"n", false, 1, 1), ArithOutcome::Value(99));
        assert_eq!(
            s.get(b"n", 1).map(|i| i.value.to_vec()),
            Some(b"99 ".to_vec())
        );
        assert_eq!(s.arith(b"n", true, 1000, 1), ArithOutcome::Value(1099));
        assert_eq!(
            s.get(b"n", 1).map(|i| i.value.to_vec()),
            Some(b"1099".to_vec())
        );
        assert_eq!(s.arith(b"n", false, 5000, 1), ArithOutcome::Value(0));
        s.store(StoreMode::Set, b"m", 0, 0, b"18446744073709551615", 0, 1);
        assert_eq!(s.arith(b"m", true, 2, 1), ArithOutcome::Value(1));
        s.store(StoreMode::Set, b"x", 0, 0, b"abc", 0, 1);
        assert_eq!(s.arith(b"x", true, 1, 1), ArithOutcome::NonNumeric);
        assert_eq!(s.arith(b"y", true, 1, 1), ArithOutcome::NotFound);
    }

    #[test]
    fn expiry_and_delayed_flush() {
        let mut s = store(1 << 20, true);
        s.store(StoreMode::Set, b"a", 0, 105, b"v", 0, 100);
        assert!(s.get(b"a", 104).is_some());
        assert!(s.get(b"a", 105).is_none());
        s.store(StoreMode::Set, b"b", 0, 0, b"v", 0, 100);
        s.flush(Some(110), 100);
        assert!(s.get(b"b", 109).is_some());
        assert!(s.get(b"b", 110).is_none());
    }

    #[test]
    fn evicts_least_recently_used_within_the_limit() {
        let limit = 10 * (ITEM_OVERHEAD + 11);
        let mut s = store(limit, true);
        for i in 0..10u8 {
            s.store(StoreMode::Set, &[b'k', i], 0, 0, b"123456789", 0, 1);
        }
        assert!(s.get(&[b'k', 0], 1).is_some()); // k0 is now most recently used
        s.store(StoreMode::Set, b"kx", 0, 0, b"123456789", 0, 1);
        assert!(s.get(&[b'k', 0], 1).is_some());
        assert!(s.get(&[b'k', 1], 1).is_none(), "k1 was least recently used");
        assert!(s.stats().bytes as usize <= limit);
        assert_eq!(s.stats().evictions, 1);
    }

    #[test]
    fn without_evictions_a_full_store_refuses() {
        let limit = 2 * (ITEM_OVERHEAD + 11);
        let mut s = store(limit, false);
        assert_eq!(
            s.store(StoreMode::Set, b"k1", 0, 0, b"123456789", 0, 1),
            StoreOutcome::Stored
        );
        assert_eq!(
            s.store(StoreMode::Set, b"k2", 0, 0, b"123456789", 0, 1),
            StoreOutcome::Stored
        );
        assert_eq!(
            s.store(StoreMode::Set, b"k3", 0, 0, b"123456789", 0, 1),
            StoreOutcome::OutOfMemory
        );
    }
}
