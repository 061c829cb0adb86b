//! One shard's items, in mmap-backed segments (in the spirit of Segcache): items are
//! appended to fixed-size segments of one region ([`arena`]), grouped by TTL class
//! ([`segments`]); a compact hash index ([`index`]) maps keys to locations; the item
//! header is 3 bytes for a small item without flags or TTL ([`item`]). Memory is
//! reclaimed a segment at a time: whole segments whose items have all expired, and under
//! pressure segments drained a few items per write (`reclaim`): a sparse one keeping
//! every live item (reclaiming dead bytes), else the oldest keeping recently read items.
//!
//! The CAS of an item is derived from where it is (shard, segment generation, location),
//! so it costs no bytes and changes whenever the item is rewritten.
//!
//! The store is owned by one shard's executor: single-threaded by construction, no locks.
//! Its interface ([`Store`]'s methods) carries memcached's storage semantics.

pub mod arena;
mod check;
mod crawl;
mod decide;
mod dump;
mod export;
pub mod index;
pub mod item;
mod persist;
mod reclaim;
mod rules;
pub mod segments;

pub use decide::{Applied, StoreOptions};
pub use dump::DumpCursor;
pub use rules::{CasSource, Limits, StoreMode};

use std::io;
use std::path::PathBuf;

use ahash::RandomState;

use arena::Arena;
use index::{Index, Position};
use item::{Header, Lease};
use segments::{SegState, Segments, NONE};

/// Fixed seeds: key placement (and so shard ownership) is stable across restarts.
pub fn key_hasher() -> RandomState {
    RandomState::with_seeds(0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344, 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89)
}

/// Smallest segment; segments grow (in powers of two) to hold the largest item.
pub const MIN_SEGMENT_SIZE: usize = 1 << 20;
/// A store needs at least this many segments (one to append to while another is evicted).
pub const MIN_SEGMENTS: usize = 2;
/// Without a hint, the index starts sized for this many items (it grows incrementally).
const INITIAL_EXPECTED_ITEMS: usize = 64 * 1024;

/// The segment size for a largest item of `max_item_size` bytes: 1 MiB, or the next
/// power of two that holds one item.
pub fn segment_size_for(max_item_size: usize) -> usize {
    max_item_size.next_power_of_two().max(MIN_SEGMENT_SIZE)
}

/// The least item memory a store (one shard) can run with.
pub fn min_memory_per_shard(max_item_size: usize) -> usize {
    MIN_SEGMENTS * segment_size_for(max_item_size)
}
/// Victims compacted (keeping hot items) before eviction drops a segment whole.
const COMPACTIONS_PER_ALLOCATION: usize = 4;

/// What a compaction (or a drain, see `reclaim`) keeps of a segment's live items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Nothing: every live item is evicted (the segment is emptied).
    Nothing,
    /// Items read since they were written, up to half the segment; the rest is evicted.
    Hot,
    /// Every live item: only dead bytes go (see `reclaim`).
    Live,
}

/// How a store is configured.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Bytes of item memory (segments); the index comes on top.
    pub memory_limit: usize,
    /// Address space to map for item memory, so that `cache_memlimit` can raise the
    /// limit up to it later (None, or less than `memory_limit`: no room to grow). An
    /// anonymous mapping costs nothing until touched; a memory file never grows.
    pub memory_reserve: Option<usize>,
    /// `false` (memcached `-M`): refuse to store instead of evicting.
    pub evictions: bool,
    /// Where CAS values come from ([`CasSource::Off`] is memcached's `-C`).
    pub cas: CasSource,
    /// This shard's index and the shard count (part of every CAS, so CAS values are
    /// unique across shards).
    pub shard: usize,
    pub nshards: usize,
    /// The item size limit (`-I`) as memcached measures it.
    pub limits: Limits,
    /// Expected item count, to size the index (None: from memory / 96 bytes).
    pub expected_items: Option<usize>,
    /// Keep segments in this file (warm restart).
    pub memory_file: Option<PathBuf>,
    pub huge_pages: bool,
    /// Unix time of relative time 0 on this run's clock (to carry TTLs across restarts).
    pub clock_base_unix: i64,
}

impl StoreConfig {
    /// One shard of one, `memory_limit` bytes of anonymous memory, memcached's defaults
    /// otherwise (evictions and CAS on, 1 MiB items, index starting small).
    pub fn with_memory(memory_limit: usize) -> Self {
        StoreConfig {
            memory_limit,
            memory_reserve: None,
            evictions: true,
            cas: CasSource::Derived,
            shard: 0,
            nshards: 1,
            limits: Limits { max_item_size: 1 << 20, cas_enabled: true },
            expected_items: None,
            memory_file: None,
            huge_pages: false,
            clock_base_unix: 0,
        }
    }
}

/// A read view of a live item.
#[derive(Debug, Clone, Copy)]
pub struct ItemRef<'s> {
    pub flags: u32,
    pub cas: u64,
    pub value: &'s [u8],
    /// The segment holding it (what [`Store::pin`] takes).
    pub segment: u32,
}

impl PinnedValue {
    /// Where `item`'s value lies (not yet pinned: see [`Store::pin`]).
    pub fn of(item: &ItemRef<'_>) -> Self {
        PinnedValue { ptr: item.value.as_ptr(), len: item.value.len(), segment: item.segment }
    }
}

/// A value held in place by a pin: its bytes stay as they are, where they are, until
/// [`Store::unpin`] is called with it. The address is for the kernel to read (a send
/// gathering it), not for safe code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedValue {
    pub ptr: *const u8,
    pub len: usize,
    pub segment: u32,
}

/// A live item and its state, as [`Store::inspect`] found it.
#[derive(Debug, Clone, Copy)]
pub struct Inspected<'s> {
    pub item: ItemRef<'s>,
    /// Relative expiry (0: never).
    pub exptime: u32,
    pub lease: Lease,
    /// Fetched since written (before this look).
    pub fetched: bool,
    /// Relative time of the last access (before this look).
    pub last_access: u32,
    /// Bytes the item takes in its segment.
    pub size: usize,
    /// Its segment's TTL class.
    pub class: u8,
    /// Where it lies (for [`Store::view_at`], until the store next changes).
    pub loc: u64,
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

/// Counters and gauges of a store.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub curr_items: u64,
    pub total_items: u64,
    /// Bytes of live items (headers, keys, values).
    pub bytes: u64,
    /// Bytes of overwritten, deleted or expired items not yet reclaimed.
    pub dead_bytes: u64,
    pub index_bytes: u64,
    /// Entries the index has room for, and whether it is growing.
    pub index_capacity: u64,
    pub index_expanding: u64,
    pub segments_total: u64,
    pub segments_free: u64,
    /// Segments a reply is being sent from (see `segments`), and of those, the ones
    /// freed meanwhile (by `flush_all`), waiting for their sends to end.
    pub segments_pinned: u64,
    pub segments_parked: u64,
    pub segment_size: u64,
    pub evictions: u64,
    pub expired_unfetched: u64,
    pub reclaimed: u64,
    pub get_expired: u64,
    /// Expired items the crawler reclaimed (memcached's `crawler_reclaimed`), and the
    /// items it looked at.
    pub crawler_reclaimed: u64,
    pub crawler_items_checked: u64,
    /// Segments freed by draining them (moving their live items out) to reclaim their
    /// dead bytes, and the items moved (see `reclaim`).
    pub dead_reclaims: u64,
    pub dead_reclaim_moves: u64,
    /// Segments compacted in place keeping every live item, when drains fell behind.
    pub dead_compactions: u64,
    /// Segments freed by draining them keeping their hot items and evicting the rest.
    pub evicting_drains: u64,
    /// Segments in use by the share of their written bytes still live: `[i]` counts
    /// those from i/10 (inclusive) to (i+1)/10 (the last bucket includes 1).
    pub segments_by_live: [u64; 10],
}

/// What happened to the items of one TTL class (memcached's per-slab-class figures,
/// `stats items` and `stats slabs`; ringcache's classes are TTL classes, see `segments`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassCounters {
    pub evicted: u64,
    /// Evicted items that had an expiry.
    pub evicted_nonzero: u64,
    /// Seconds since the last access of the most recently evicted item.
    pub evicted_time: u64,
    pub evicted_unfetched: u64,
    /// Writes refused for want of memory.
    pub outofmemory: u64,
    pub reclaimed: u64,
    pub expired_unfetched: u64,
    pub crawler_reclaimed: u64,
    pub get_hits: u64,
    pub cmd_set: u64,
}

impl ClassCounters {
    pub fn add(&mut self, o: &ClassCounters) {
        self.evicted += o.evicted;
        self.evicted_nonzero += o.evicted_nonzero;
        self.evicted_time = self.evicted_time.max(o.evicted_time);
        self.evicted_unfetched += o.evicted_unfetched;
        self.outofmemory += o.outofmemory;
        self.reclaimed += o.reclaimed;
        self.expired_unfetched += o.expired_unfetched;
        self.crawler_reclaimed += o.crawler_reclaimed;
        self.get_hits += o.get_hits;
        self.cmd_set += o.cmd_set;
    }
}

/// One TTL class of a store, now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassReport {
    /// Index of the TTL class (0: items that never expire).
    pub class: usize,
    pub items: u64,
    /// Bytes of its live items.
    pub live_bytes: u64,
    /// Bytes of its segments, live and dead.
    pub used_bytes: u64,
    pub segments: u64,
    /// Seconds since its oldest segment was started.
    pub age: u64,
    pub counters: ClassCounters,
}

/// Where a new value comes from.
#[derive(Clone, Copy)]
enum Value<'a> {
    Bytes(&'a [u8]),
    /// The old value (at this location and length) followed by `data`.
    Append {
        old_at: usize,
        old_len: usize,
        data: &'a [u8],
    },
    Prepend {
        old_at: usize,
        old_len: usize,
        data: &'a [u8],
    },
    /// A number, space-padded to `pad_to` bytes as memcached's in-place incr does.
    Number {
        digits: &'a [u8],
        pad_to: usize,
    },
}

impl Value<'_> {
    fn len(&self) -> usize {
        match *self {
            Value::Bytes(b) => b.len(),
            Value::Append { old_len, data, .. } | Value::Prepend { old_len, data, .. } => old_len + data.len(),
            Value::Number { digits, pad_to } => digits.len().max(pad_to),
        }
    }
}

/// A live item found by key.
#[derive(Clone, Copy)]
struct Found {
    pos: Position,
    loc: u64,
    header: Header,
}

pub struct Store {
    config: StoreConfig,
    hasher: RandomState,
    arena: Arena,
    index: Index,
    segs: Segments,
    /// memcached's `oldest_live` for a pending delayed `flush_all`.
    oldest_live: Option<u32>,
    /// Bits of an item's offset within its segment, and of the shard index, in a derived
    /// CAS (see `cas_of`).
    offset_bits: u32,
    shard_bits: u32,
    sweep_cursor: usize,
    stats: StoreStats,
    /// Per TTL class.
    class_counters: [ClassCounters; segments::TTL_CLASSES],
    /// Reused by compaction: the kept items, and where their index entries are.
    scratch: Vec<u8>,
    moved: Vec<(Position, u64, usize)>,
    /// The sparse segment whose live items are being moved out (see `reclaim`).
    drain: Option<reclaim::Drain>,
    /// Items came back from the memory file at start.
    recovered: bool,
    /// While `watch evictions` is on: the items evicted since last taken (bounded).
    evicted: Option<Vec<EvictedItem>>,
}

/// An item evicted while evictions are watched (`watch evictions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictedItem {
    pub key: Vec<u8>,
    /// Whether it was ever read.
    pub fetched: bool,
    /// Seconds it had left to live (-1: no expiry).
    pub ttl: i64,
    /// Seconds since its last access.
    pub idle: u32,
    /// Its value's size.
    pub size: u32,
}

fn bits_for(n: u64) -> u32 {
    u64::BITS - n.saturating_sub(1).leading_zeros()
}

impl Store {
    /// A store with anonymous memory, or with the memory file of `config` (recovering
    /// what it holds if it verifies; see `persist`).
    pub fn new(config: StoreConfig) -> io::Result<Self> {
        let seg_size = segment_size_for(config.limits.max_item_size);
        let usable = config.memory_limit / seg_size;
        if usable < MIN_SEGMENTS {
            return Err(io::Error::other(format!(
                "{} bytes of item memory is less than {MIN_SEGMENTS} segments of {seg_size} bytes",
                config.memory_limit
            )));
        }
        let reserved = match (&config.memory_file, config.memory_reserve) {
            (None, Some(reserve)) => (reserve / seg_size).clamp(usable, index::MAX_LOCATION as usize / seg_size),
            _ => usable,
        };
        if (seg_size * usable) as u64 > index::MAX_LOCATION {
            return Err(io::Error::other("memory limit too large for one shard"));
        }
        let offset_bits = bits_for(seg_size as u64);
        let shard_bits = bits_for(config.nshards as u64);
        let gen_bits = u64::BITS - offset_bits - shard_bits;
        let expected = config.expected_items.unwrap_or(INITIAL_EXPECTED_ITEMS);
        let index = Index::try_with_expected_items(expected)
            .map_err(|e| io::Error::other(format!("cannot allocate an index for {expected} items: {e}")))?;
        let (arena, reusable) = match &config.memory_file {
            Some(path) => Arena::file_backed(path, seg_size, usable, config.huge_pages)
                .map_err(|e| io::Error::new(e.kind(), format!("memory file {}: {e}", path.display())))?,
            // The room to grow is address space only: where a limit on it (RLIMIT_AS) or
            // the kernel refuses that much, the store maps what it uses now, and cannot
            // grow later.
            None => match Arena::anonymous(seg_size, reserved, config.huge_pages) {
                Ok(arena) => (arena, false),
                Err(_) if reserved > usable => (Arena::anonymous(seg_size, usable, config.huge_pages)?, false),
                Err(e) => return Err(e),
            },
        };
        let nsegs = arena.nsegs();
        let mut store = Store {
            hasher: key_hasher(),
            arena,
            index,
            segs: Segments::new(nsegs, gen_bits),
            oldest_live: None,
            offset_bits,
            shard_bits,
            sweep_cursor: 0,
            stats: StoreStats::default(),
            class_counters: [ClassCounters::default(); segments::TTL_CLASSES],
            scratch: Vec::new(),
            moved: Vec::new(),
            drain: None,
            evicted: None,
            recovered: false,
            config,
        };
        store.segs.set_usable(usable);
        if reusable {
            store.recover();
        }
        Ok(store)
    }

    pub fn stats(&self) -> StoreStats {
        let mut s = self.stats;
        s.curr_items = self.index.len() as u64;
        s.bytes = 0;
        s.dead_bytes = 0;
        s.segments_by_live = [0; 10];
        for m in self.segs.meta[..self.segs.span()].iter().filter(|m| m.state != SegState::Free) {
            s.bytes += u64::from(m.live_bytes);
            s.dead_bytes += u64::from(m.write_at - m.live_bytes);
            if m.write_at > 0 {
                let decile = (u64::from(m.live_bytes) * 10 / u64::from(m.write_at)).min(9) as usize;
                s.segments_by_live[decile] += 1;
            }
        }
        s.index_bytes = self.index.memory_bytes() as u64;
        s.index_capacity = self.index.capacity() as u64;
        s.index_expanding = u64::from(self.index.is_expanding());
        s.segments_total = self.segs.usable() as u64;
        s.segments_free = self.segs.usable().saturating_sub(self.segs.in_use()) as u64;
        s.segments_pinned = self.segs.pinned_count() as u64;
        s.segments_parked = self.segs.parked_count() as u64;
        s.segment_size = self.arena.seg_size() as u64;
        s
    }

    pub fn reset_stats(&mut self) {
        self.stats = StoreStats::default();
        self.class_counters = [ClassCounters::default(); segments::TTL_CLASSES];
    }

    /// Every TTL class that holds items or counted something, at relative time `now`.
    pub fn class_reports(&self, now: u32) -> Vec<ClassReport> {
        let mut reports: Vec<ClassReport> = (0..segments::TTL_CLASSES)
            .map(|class| ClassReport { class, counters: self.class_counters[class], ..ClassReport::default() })
            .collect();
        let mut oldest = [u32::MAX; segments::TTL_CLASSES];
        for m in self.segs.meta[..self.segs.span()].iter().filter(|m| m.state != SegState::Free) {
            let r = &mut reports[usize::from(m.class)];
            r.items += u64::from(m.live_items);
            r.live_bytes += u64::from(m.live_bytes);
            r.used_bytes += u64::from(m.write_at);
            r.segments += 1;
            oldest[usize::from(m.class)] = oldest[usize::from(m.class)].min(m.created);
        }
        for r in &mut reports {
            if r.segments > 0 {
                r.age = u64::from(now.saturating_sub(oldest[r.class]));
            }
        }
        reports.retain(|r| r.segments > 0 || r.counters != ClassCounters::default());
        reports
    }

    /// Bytes of item memory the store may use (`cache_memlimit` may lower it).
    pub fn memory_limit(&self) -> usize {
        self.arena.seg_size() * self.segs.usable()
    }

    /// Sets the item memory the store may use, in bytes: at most what it was made with,
    /// at least two segments. Shrinking evicts (the sweep, and every new segment taken)
    /// until the store is within it. False when `bytes` is out of those bounds.
    pub fn set_memory_limit(&mut self, bytes: usize) -> bool {
        if !self.memory_limit_fits(bytes) {
            return false;
        }
        self.segs.set_usable(bytes / self.arena.seg_size());
        true
    }

    /// Whether [`Store::set_memory_limit`] would take `bytes`.
    pub fn memory_limit_fits(&self, bytes: usize) -> bool {
        (MIN_SEGMENTS..=self.arena.nsegs()).contains(&(bytes / self.arena.seg_size()))
    }

    /// Evicts the oldest segments while more are in use than the memory limit allows,
    /// at most `budget` of them. Returns how many were freed.
    fn shrink_to_limit(&mut self, now: u32, budget: usize) -> usize {
        let mut freed = 0;
        while freed < budget && self.segs.in_use() > self.segs.usable() {
            let Some(victim) = self.segs.pop_oldest_sealed() else { break };
            self.compact(victim, Keep::Nothing, now);
            self.segs.release(victim);
            freed += 1;
        }
        freed
    }

    fn seg_of(&self, loc: u64) -> usize {
        (loc as usize) / self.arena.seg_size()
    }

    /// The CAS of an item: stored in it (stamped, or derived and kept when the item was
    /// moved), else derived from its location.
    fn cas_of(&self, loc: u64, header: &Header) -> u64 {
        if self.config.cas == CasSource::Off {
            return 0;
        }
        if header.cas != 0 || self.config.cas == CasSource::Stamped {
            return header.cas;
        }
        let gen = self.segs.cas_gen(self.seg_of(loc));
        // A generation is never given to two segments (one counter per store), so it and
        // the offset within the segment name an item version without the segment's index:
        // CAS values stay small (below 2^32 for the first 2^(32 - 20 - shard bits)
        // segments written; some clients read a CAS as 32 bits) and grow with time.
        let offset = loc & ((1 << self.offset_bits) - 1);
        (gen << (self.offset_bits + self.shard_bits)) | ((self.config.shard as u64) << self.offset_bits) | offset
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The live-or-expired item stored under `key`, if the index has one.
    #[inline]
    fn find(&self, key: &[u8], hash: u64) -> Option<Found> {
        let bytes = self.arena.bytes();
        let mut header = None;
        let (pos, loc) = self.index.find(hash, |loc| {
            let at = loc as usize;
            match item::decode(&bytes[at..]) {
                Some(h) if &bytes[at + h.key_at..at + h.key_at + h.key_len] == key => {
                    header = Some(h);
                    true
                }
                _ => false,
            }
        })?;
        Some(Found { pos, loc, header: header? })
    }

    /// Applies a delayed flush_all whose time has come.
    fn apply_pending_flush(&mut self, now: u32) {
        if let Some(t) = self.oldest_live {
            if t <= now {
                self.oldest_live = None;
                self.clear();
            }
        }
    }

    fn unlink(&mut self, found: &Found) {
        self.index.remove(found.pos);
        let seg = self.seg_of(found.loc);
        self.segs.note_dead(seg, found.header.total());
    }

    /// Finds a live item, unlinking it if it has expired.
    fn lookup(&mut self, key: &[u8], hash: u64, now: u32) -> Option<Found> {
        self.apply_pending_flush(now);
        let found = self.find(key, hash)?;
        if found.header.exptime != 0 && found.header.exptime <= now {
            self.unlink(&found);
            self.stats.get_expired += 1;
            return None;
        }
        Some(found)
    }

    #[inline]
    fn item_ref(&self, found: &Found) -> ItemRef<'_> {
        let at = found.loc as usize + found.header.value_at();
        ItemRef {
            flags: found.header.flags,
            cas: self.cas_of(found.loc, &found.header),
            value: &self.arena.bytes()[at..at + found.header.value_len],
            segment: self.seg_of(found.loc) as u32,
        }
    }

    /// Pins the segment holding `value` (an item's value, from [`PinnedValue::of`]), so
    /// that a reply can be sent from its bytes after this call returns. False when the
    /// store has as many pinned segments as it allows: the caller copies the value
    /// instead ([`Store::bytes_of`]).
    pub fn pin(&mut self, value: &PinnedValue) -> bool {
        let seg_size = self.arena.seg_size();
        let offset = (value.ptr as usize).wrapping_sub(self.arena.bytes().as_ptr() as usize);
        assert!(
            offset / seg_size == value.segment as usize && (offset % seg_size) + value.len <= seg_size,
            "a pinned value lies within its segment"
        );
        self.segs.pin(value.segment as usize)
    }

    /// The bytes `value` points at (for copying them when they could not be pinned).
    pub fn bytes_of(&self, value: &PinnedValue) -> &[u8] {
        let offset = (value.ptr as usize).wrapping_sub(self.arena.bytes().as_ptr() as usize);
        &self.arena.bytes()[offset..offset + value.len]
    }

    /// Lets go of a pin that [`Store::pin`] gave.
    pub fn unpin(&mut self, value: &PinnedValue) {
        self.segs.unpin(value.segment as usize);
    }

    /// Records a fetch of the item: its access frequency (for eviction), and, as
    /// memcached does, the fetched bit on its first fetch and the access time on later
    /// ones.
    fn bump(&mut self, found: &Found, now: u32) {
        let at = found.loc as usize;
        let seg = &self.segs.meta[self.seg_of(found.loc)];
        self.class_counters[usize::from(seg.class)].get_hits += 1;
        let access = if found.header.fetched() {
            item::access_byte(true, seg.access_base, now)
        } else {
            item::with_fetched(found.header.access)
        };
        let bytes = &mut self.arena.bytes_mut()[at..];
        if found.header.freq < item::MAX_FREQ {
            item::set_freq(bytes, found.header.freq + 1);
        }
        item::set_access(bytes, access);
    }

    /// The value length of the live item under `key`, touching nothing (no expiry is
    /// applied, no access recorded).
    pub fn peek_value_len(&self, key: &[u8], now: u32) -> Option<usize> {
        self.peek(key, now).map(|(item, _)| item.value.len())
    }

    /// The live item under `key` and its relative expiry, touching nothing (no access
    /// recorded, nothing dropped): for comparing stores.
    pub fn peek(&self, key: &[u8], now: u32) -> Option<(ItemRef<'_>, u32)> {
        if self.oldest_live.is_some_and(|t| t <= now) {
            return None;
        }
        let found = self.find(key, self.hash(key))?;
        if found.header.exptime != 0 && found.header.exptime <= now {
            return None;
        }
        Some((self.item_ref(&found), found.header.exptime))
    }

    /// What relative time 0 of this store is, in Unix time.
    pub fn time_base(&self) -> crate::time::TimeBase {
        crate::time::TimeBase { unix_at_zero: self.config.clock_base_unix }
    }

    /// Whether this store started with what a previous run saved (warm restart).
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// The item size rule this store was made with.
    pub fn limits(&self) -> Limits {
        self.config.limits
    }

    /// `get`: a live item, marked as recently used.
    pub fn get(&mut self, key: &[u8], now: u32) -> Option<ItemRef<'_>> {
        let found = self.lookup(key, self.hash(key), now)?;
        self.bump(&found, now);
        Some(self.item_ref(&found))
    }

    /// The item under `key` with its state, even if it has expired (nothing is dropped,
    /// no access recorded): what a write just left there, to answer about it.
    pub fn view(&self, key: &[u8]) -> Option<Inspected<'_>> {
        let found = self.find(key, self.hash(key))?;
        Some(self.inspected(found.loc, found.header))
    }

    fn inspected(&self, loc: u64, h: Header) -> Inspected<'_> {
        let seg = &self.segs.meta[self.seg_of(loc)];
        let value_at = loc as usize + h.value_at();
        Inspected {
            item: ItemRef {
                flags: h.flags,
                cas: self.cas_of(loc, &h),
                value: &self.arena.bytes()[value_at..value_at + h.value_len],
                segment: self.seg_of(loc) as u32,
            },
            exptime: h.exptime,
            lease: h.lease,
            fetched: h.fetched(),
            last_access: seg.access_base.saturating_add(h.access_offset()),
            size: h.total(),
            class: seg.class,
            loc,
        }
    }

    /// The item at `loc`, as [`Store::inspect`] or [`Store::view`] found it there with
    /// nothing written since (the caller's promise): no index probe.
    pub fn view_at(&self, loc: u64) -> Option<Inspected<'_>> {
        let header = item::decode(&self.arena.bytes()[loc as usize..])?;
        Some(self.inspected(loc, header))
    }

    /// The live item under `key` with its state as it was before this look (the meta
    /// protocol's view), recording the fetch unless `fetch` is false. Expired items are
    /// dropped on the way, as by a get.
    pub fn inspect(&mut self, key: &[u8], fetch: bool, now: u32) -> Option<Inspected<'_>> {
        let found = self.lookup(key, self.hash(key), now)?;
        if fetch {
            self.bump(&found, now);
        }
        Some(self.inspected(found.loc, found.header))
    }

    fn clear(&mut self) {
        self.drain = None;
        self.index.clear();
        self.segs.reset();
    }

    /// Writes a new version of `key` and points the index at it, replacing any old one.
    /// `cas` 0 gives it a new CAS (from its location); otherwise the item keeps `cas`.
    /// It is written with lease `lease`, not yet fetched, accessed `now`.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        key: &[u8],
        hash: u64,
        value: Value<'_>,
        flags: u32,
        exptime: u32,
        cas: u64,
        lease: Lease,
        now: u32,
    ) -> StoreOutcome {
        let value_len = value.len();
        let size = item::size(key.len(), value_len, exptime, flags, cas);
        let Some(loc) = self.reserve(size, exptime, now) else {
            self.class_counters[segments::ttl_class(exptime, now)].outofmemory += 1;
            return StoreOutcome::OutOfMemory;
        };
        // Reserving may have evicted or moved items: look the old version up again.
        let old = self.find(key, hash);
        let value = match (value, old) {
            (Value::Append { old_len, data, .. }, Some(o)) if o.header.value_len == old_len => {
                Value::Append { old_at: o.loc as usize + o.header.value_at(), old_len, data }
            }
            (Value::Prepend { old_len, data, .. }, Some(o)) if o.header.value_len == old_len => {
                Value::Prepend { old_at: o.loc as usize + o.header.value_at(), old_len, data }
            }
            (Value::Append { .. } | Value::Prepend { .. }, _) => return StoreOutcome::NotStored,
            (v, _) => v,
        };
        let seg = self.seg_of(loc);
        let state = item::State { lease, access: item::access_byte(false, self.segs.meta[seg].access_base, now) };
        self.write(loc, key, value, flags, exptime, cas, state);
        self.segs.note_write(seg, size, exptime);
        match old {
            Some(o) => {
                let old_seg = self.seg_of(o.loc);
                self.segs.note_dead(old_seg, o.header.total());
                self.index.set(o.pos, hash, loc);
            }
            None => {
                let (arena, hasher) = (&self.arena, &self.hasher);
                self.index.insert(hash, loc, |l| hash_at(arena, hasher, l));
            }
        }
        self.stats.total_items += 1;
        self.class_counters[usize::from(self.segs.meta[seg].class)].cmd_set += 1;
        StoreOutcome::Stored
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        loc: u64,
        key: &[u8],
        value: Value<'_>,
        flags: u32,
        exptime: u32,
        cas: u64,
        state: item::State,
    ) {
        let at = loc as usize;
        let value_len = value.len();
        let bytes = self.arena.bytes_mut();
        let value_at = at + item::encode_header(&mut bytes[at..], key, value_len, exptime, flags, cas, state);
        match value {
            Value::Bytes(b) => bytes[value_at..value_at + b.len()].copy_from_slice(b),
            Value::Append { old_at, old_len, data } => {
                bytes.copy_within(old_at..old_at + old_len, value_at);
                bytes[value_at + old_len..value_at + old_len + data.len()].copy_from_slice(data);
            }
            Value::Prepend { old_at, old_len, data } => {
                bytes[value_at..value_at + data.len()].copy_from_slice(data);
                bytes.copy_within(old_at..old_at + old_len, value_at + data.len());
            }
            Value::Number { digits, pad_to } => {
                bytes[value_at..value_at + digits.len()].copy_from_slice(digits);
                bytes[value_at + digits.len()..value_at + value_len].fill(b' ');
                debug_assert_eq!(value_len, digits.len().max(pad_to));
            }
        }
    }

    /// Finds room for `size` bytes in the segment of the item's TTL class, taking a new
    /// segment when it is full (a drain keeps one free, see `reclaim`), or else making
    /// room in place. Returns the location.
    fn reserve(&mut self, size: usize, exptime: u32, now: u32) -> Option<u64> {
        let seg_size = self.arena.seg_size();
        if size > seg_size {
            return None;
        }
        // Moves append to the segments this allocation reserves in: before reserving.
        self.drain_step(now);
        let class = segments::ttl_class(exptime, now);
        let mut compactions = 0;
        loop {
            if let Some(loc) = self.room_in_class(class, size, now) {
                return Some(loc);
            }
            let keep_hot = compactions < COMPACTIONS_PER_ALLOCATION;
            if !self.free_up_segment(class, size, keep_hot, now) {
                return None;
            }
            self.maybe_start_drain();
            compactions += 1;
        }
    }

    /// Makes room when no segment is free: reclaims a segment whose items have all
    /// expired, or compacts a sparse segment keeping every live item (when drains fell
    /// behind, see `reclaim`), or else (if evictions are on) compacts the oldest segment,
    /// keeping items read since they were written when `keep_hot`, and evicting the rest.
    /// False when nothing could be freed.
    fn free_up_segment(&mut self, class: usize, size: usize, keep_hot: bool, now: u32) -> bool {
        if self.reclaim_expired_segment(now) {
            return true;
        }
        // Bounded per allocation like keeping hot items: a kept item may come out larger
        // (it carries its CAS), so this need not make room.
        if keep_hot && self.compact_sparsest(class, size, now) {
            return true;
        }
        if !self.config.evictions {
            return false;
        }
        let victim = match self.segs.pop_oldest_sealed() {
            Some(v) => v,
            None => match self.oldest_active_except(class) {
                Some(v) => v,
                None => return false,
            },
        };
        self.compact(victim, if keep_hot { Keep::Hot } else { Keep::Nothing }, now);
        if self.segs.meta[victim as usize].live_items == 0 {
            self.segs.release(victim);
        } else {
            self.segs.reuse_compacted(victim);
        }
        true
    }

    fn oldest_active_except(&mut self, class: usize) -> Option<u32> {
        let seg = (0..segments::TTL_CLASSES)
            .filter(|&c| c != class)
            .map(|c| self.segs.active[c])
            .filter(|&s| s != NONE && !self.segs.is_pinned(s as usize))
            .min_by_key(|&s| self.segs.meta[s as usize].created)?;
        self.segs.seal(seg);
        self.segs.pop_oldest_sealed()
    }

    /// A sealed segment whose items have all expired by `now`, and which no reply is
    /// being sent from.
    fn reclaimable(&self, seg: usize, now: u32) -> bool {
        let m = &self.segs.meta[seg];
        m.state == SegState::Sealed && m.expired(now) && !self.segs.is_pinned(seg)
    }

    /// Records evicted items (for `watch evictions`) or stops.
    pub fn watch_evictions(&mut self, on: bool) {
        self.evicted = on.then(Vec::new);
    }

    /// The items evicted since last taken, while evictions are watched.
    pub fn take_evicted(&mut self) -> Vec<EvictedItem> {
        self.evicted.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Counts the live item at `loc` (decoded as `h`) of segment `seg` as evicted, and
    /// logs it while evictions are watched.
    fn count_evicted(&mut self, seg: usize, loc: u64, h: &Header, now: u32) {
        let class = &mut self.class_counters[usize::from(self.segs.meta[seg].class)];
        self.stats.evictions += 1;
        class.evicted += 1;
        class.evicted_nonzero += u64::from(h.exptime != 0);
        class.evicted_unfetched += u64::from(!h.fetched());
        let last = self.segs.meta[seg].access_base.saturating_add(h.access_offset());
        class.evicted_time = u64::from(now.saturating_sub(last));
        if let Some(log) = self.evicted.as_mut().filter(|l| l.len() < crate::shard::watch::MAX_EVENTS) {
            let bytes = self.arena.bytes();
            log.push(EvictedItem {
                key: bytes[loc as usize + h.key_at..loc as usize + h.key_at + h.key_len].to_vec(),
                fetched: h.fetched(),
                ttl: if h.exptime == 0 { -1 } else { i64::from(h.exptime) - i64::from(now) },
                idle: now.saturating_sub(last),
                size: h.value_len as u32,
            });
        }
    }

    /// Counts an expired item dropped from a segment of TTL `class`.
    fn count_reclaimed(&mut self, class: usize, fetched: bool) {
        self.stats.reclaimed += 1;
        self.stats.expired_unfetched += u64::from(!fetched);
        self.class_counters[class].reclaimed += 1;
        self.class_counters[class].expired_unfetched += u64::from(!fetched);
    }

    /// Empties and releases a sealed segment whose items have all expired, if any.
    fn reclaim_expired_segment(&mut self, now: u32) -> bool {
        let Some(seg) = (0..self.segs.span()).find(|&s| self.reclaimable(s, now)) else {
            return false;
        };
        self.compact(seg as u32, Keep::Nothing, now);
        self.segs.release(seg as u32);
        true
    }

    /// Walks the items of `seg`: dead ones are skipped, expired ones unlinked, and live
    /// ones either kept (when `keep_hot`, items read since written, up to half the
    /// segment) or evicted. Kept items are rewritten at the front of the segment, carrying
    /// their CAS so that a move does not look like a new version.
    #[inline(never)]
    fn compact(&mut self, seg: u32, keep: Keep, now: u32) {
        assert!(!self.segs.is_pinned(seg as usize), "segment {seg} compacted while a reply is sent from it");
        let seg_size = self.arena.seg_size();
        let base = seg as usize * seg_size;
        let end = base + self.segs.meta[seg as usize].write_at as usize;
        let keep_budget = if keep == Keep::Live { seg_size } else { seg_size / 2 };
        self.scratch.clear();
        self.moved.clear();
        // (some kept item never expires, latest expiry of the kept items, earliest one)
        let mut kept_expiry = (false, 0u32, 0u32);
        // The earliest last access of the kept items: the segment's new access base.
        let old_access_base = self.segs.meta[seg as usize].access_base;
        let mut earliest_access = now;
        let mut at = base;
        while at < end {
            let Some(h) = item::decode(&self.arena.bytes()[at..end]) else { break };
            let key = &self.arena.bytes()[at + h.key_at..at + h.key_at + h.key_len];
            let hash = self.hasher.hash_one(key);
            let loc = at as u64;
            at += h.total();
            let Some((pos, _)) = self.index.find(hash, |l| l == loc) else { continue };
            let expired = h.exptime != 0 && h.exptime <= now;
            let cas = self.cas_of(loc, &h);
            let kept_size = item::size(h.key_len, h.value_len, h.exptime, h.flags, cas);
            let kept = match keep {
                Keep::Nothing => false,
                Keep::Hot => h.freq > 0,
                Keep::Live => true,
            };
            if !expired && kept && self.scratch.len() + kept_size <= keep_budget {
                let off = self.scratch.len();
                self.scratch.resize(off + kept_size, 0);
                let src = loc as usize;
                let bytes = self.arena.bytes();
                let key = &bytes[src + h.key_at..src + h.key_at + h.key_len];
                let state = item::State { lease: h.lease, access: h.access };
                let value_at = off
                    + item::encode_header(&mut self.scratch[off..], key, h.value_len, h.exptime, h.flags, cas, state);
                self.scratch[value_at..off + kept_size].copy_from_slice(&bytes[src + h.value_at()..src + h.total()]);
                if keep == Keep::Hot {
                    // Kept for being read: it must be read again to be kept again.
                    item::set_freq(&mut self.scratch[off..], h.freq - 1);
                }
                earliest_access = earliest_access.min(old_access_base.saturating_add(h.access_offset()));
                self.moved.push((pos, hash, off));
                kept_expiry.0 |= h.exptime == 0;
                kept_expiry.1 = kept_expiry.1.max(h.exptime);
                if h.exptime != 0 && (kept_expiry.2 == 0 || h.exptime < kept_expiry.2) {
                    kept_expiry.2 = h.exptime;
                }
                continue;
            }
            self.index.remove(pos);
            let class = usize::from(self.segs.meta[seg as usize].class);
            if expired {
                self.count_reclaimed(class, h.fetched());
            } else {
                self.count_evicted(seg as usize, loc, &h, now);
            }
        }
        // Access times count from the earliest kept one now, so they stay as exact as
        // a young segment's.
        for &(_, _, off) in &self.moved {
            let Some(h) = item::decode(&self.scratch[off..]) else { continue };
            let last = old_access_base.saturating_add(h.access_offset());
            item::set_access(&mut self.scratch[off..], item::access_byte(h.fetched(), earliest_access, last));
        }
        self.segs.meta[seg as usize].access_base = earliest_access;
        let kept = self.scratch.len();
        self.arena.bytes_mut()[base..base + kept].copy_from_slice(&self.scratch);
        for &(pos, hash, off) in &self.moved {
            self.index.set(pos, hash, (base + off) as u64);
        }
        self.segs.bump_gen(seg as usize);
        let m = &mut self.segs.meta[seg as usize];
        m.write_at = kept as u32;
        m.live_bytes = kept as u32;
        m.live_items = self.moved.len() as u32;
        m.never_expires = kept_expiry.0;
        m.max_expiry = kept_expiry.1;
        m.next_crawl = kept_expiry.2;
        m.created = now;
    }

    /// Reclaims whole segments whose items have all expired, looking at up to `budget`
    /// segments from where the last sweep stopped. Returns how many were reclaimed.
    pub fn sweep(&mut self, now: u32, budget: usize) -> usize {
        self.apply_pending_flush(now);
        self.shrink_to_limit(now, budget);
        let n = self.segs.span().max(1);
        let mut reclaimed = 0;
        for _ in 0..budget.min(n) {
            self.sweep_cursor = (self.sweep_cursor + 1) % n;
            let seg = self.sweep_cursor;
            if self.reclaimable(seg, now) {
                self.compact(seg as u32, Keep::Nothing, now);
                self.segs.release(seg as u32);
                reclaimed += 1;
            }
        }
        reclaimed
    }

    /// Writes what a restart needs to find the items again (file-backed stores only).
    pub fn save(&self) -> io::Result<()> {
        persist::save(self, self.config.clock_base_unix)
    }
}

/// The items along a segment's chain: `(location, header)` of each, back to back from
/// an offset until the segment's fill (live or not: see [`Store::is_live_copy`]).
pub(crate) struct Chain<'s> {
    bytes: &'s [u8],
    at: usize,
    end: usize,
}

impl Iterator for Chain<'_> {
    type Item = (u64, Header);
    fn next(&mut self) -> Option<(u64, Header)> {
        if self.at >= self.end {
            return None;
        }
        let h = item::decode(&self.bytes[self.at..self.end])?;
        let loc = self.at as u64;
        self.at += h.total();
        Some((loc, h))
    }
}

impl Store {
    /// The items of segment `seg` from byte `offset` of it on.
    pub(crate) fn chain(&self, seg: usize, offset: usize) -> Chain<'_> {
        let base = seg * self.arena.seg_size();
        Chain { bytes: self.arena.bytes(), at: base + offset, end: base + self.segs.meta[seg].write_at as usize }
    }

    /// The key of the item at `loc`.
    pub(crate) fn key_at(&self, loc: u64, h: &Header) -> &[u8] {
        &self.arena.bytes()[loc as usize + h.key_at..loc as usize + h.key_at + h.key_len]
    }

    /// The item at `loc` is the one the index points to for its key (not an overwritten
    /// or deleted copy).
    pub(crate) fn is_live_copy(&self, loc: u64, h: &Header) -> bool {
        self.index.find(self.hasher.hash_one(self.key_at(loc, h)), |l| l == loc).is_some()
    }
}

/// The hash of the key of the item at `loc`.
fn hash_at(arena: &Arena, hasher: &RandomState, loc: u64) -> u64 {
    let bytes = arena.bytes();
    let at = loc as usize;
    match item::decode(&bytes[at..]) {
        Some(h) => hasher.hash_one(&bytes[at + h.key_at..at + h.key_at + h.key_len]),
        None => 0,
    }
}

#[cfg(test)]
mod tests;
