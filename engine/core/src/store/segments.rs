//! Segment bookkeeping: each segment's fill, live bytes, generation and expiry range,
//! which segment each TTL class is appending to, the free list, and the FIFO of sealed
//! segments that eviction takes its victims from. No item bytes live here (see `arena`).
//!
//! A segment may be *pinned*: a reply is being sent straight from its bytes (see
//! [`Segments::pin`]). A pinned segment is never chosen for compaction, eviction or
//! reclaiming, and one freed while pinned (by `flush_all`) is *parked*: it holds nothing
//! and joins the free list when its last pin goes. At most a quarter of the segments may
//! be pinned at once, so pins can never take the memory writes need.
//!
//! Items are grouped by TTL class (`ttl_class`: powers of two of the remaining TTL), so a
//! segment's items expire at about the same time and a whole segment can be reclaimed
//! once its last item has expired, without scanning items one by one.

use std::collections::VecDeque;

/// Number of TTL classes: 0 for items that never expire, then one per power of two of
/// the remaining TTL in seconds.
pub const TTL_CLASSES: usize = 33;
pub const NONE: u32 = u32::MAX;

/// The TTL class of an item expiring at relative time `exptime` (0 = never).
pub fn ttl_class(exptime: u32, now: u32) -> usize {
    if exptime == 0 {
        return 0;
    }
    let ttl = exptime.saturating_sub(now).max(1);
    (u32::BITS - ttl.leading_zeros()) as usize
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegState {
    Free,
    Active,
    Sealed,
}

/// One segment's metadata.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    /// Append position: bytes used, live or dead.
    pub write_at: u32,
    pub live_items: u32,
    pub live_bytes: u32,
    /// Bumped whenever the segment's contents are rewritten; part of every CAS.
    pub gen: u32,
    pub created: u32,
    /// No item in it was last accessed before this relative time: what its items' access
    /// bytes count from (see `item::AccessTime`).
    pub access_base: u32,
    /// Latest expiry among its items (relative time).
    pub max_expiry: u32,
    /// The earliest expiry among its items not yet crawled (0: none): when the expiry
    /// crawler has something to reclaim in it.
    pub next_crawl: u32,
    /// Some item in it never expires.
    pub never_expires: bool,
    pub class: u8,
    pub state: SegState,
    seal_seq: u64,
}

impl Segment {
    /// Every item in the segment has expired by `now`.
    pub fn expired(&self, now: u32) -> bool {
        !self.never_expires && self.max_expiry != 0 && self.max_expiry <= now
    }
}

/// What a warm restart restores of one segment (times already on this run's clock).
#[derive(Debug, Clone, Copy)]
pub struct SavedSegment {
    pub seg: usize,
    pub class: u8,
    pub write_at: u32,
    pub gen: u32,
    pub created: u32,
    pub access_base: u32,
    pub max_expiry: u32,
    pub never_expires: bool,
}

pub struct Segments {
    pub meta: Vec<Segment>,
    free: Vec<u32>,
    /// The segment each TTL class appends to (or NONE).
    pub active: [u32; TTL_CLASSES],
    sealed: VecDeque<(u32, u64)>,
    seal_seq: u64,
    gen_mask: u32,
    /// The generation the next segment to be (re)written gets.
    next_gen: u32,
    /// Pins held on each segment (replies being sent from its bytes).
    pins: Vec<u32>,
    /// Segments with at least one pin, and the most there may be.
    pinned: usize,
    max_pinned: usize,
    /// Segments the store may use (`cache_memlimit`).
    usable: usize,
    /// One past the highest segment ever taken: no segment beyond it holds anything (the
    /// free list hands out the lowest first), so walks over segments stop here rather
    /// than cross the address space reserved for growth.
    span: usize,
}

impl Segments {
    /// `gen_bits`: how many bits of the generation go into a CAS.
    pub fn new(nsegs: usize, gen_bits: u32) -> Self {
        let gen_mask = if gen_bits >= 32 { u32::MAX } else { (1u32 << gen_bits) - 1 };
        let fresh = Segment {
            write_at: 0,
            live_items: 0,
            live_bytes: 0,
            gen: 1,
            created: 0,
            access_base: 0,
            max_expiry: 0,
            next_crawl: 0,
            never_expires: false,
            class: 0,
            state: SegState::Free,
            seal_seq: 0,
        };
        Segments {
            meta: vec![fresh; nsegs],
            free: (0..nsegs as u32).rev().collect(),
            active: [NONE; TTL_CLASSES],
            sealed: VecDeque::new(),
            seal_seq: 0,
            gen_mask,
            next_gen: 2,
            pins: vec![0; nsegs],
            pinned: 0,
            max_pinned: nsegs / 4,
            usable: nsegs,
            span: 0,
        }
    }

    /// One past the highest segment that may hold anything.
    pub fn span(&self) -> usize {
        self.span
    }

    /// Segments the store may hold items in (`cache_memlimit`): at most all of them.
    pub fn usable(&self) -> usize {
        self.usable
    }

    /// Lets the store use `n` segments (at most all): fewer, and no free segment is
    /// handed out until eviction brings the segments in use under `n`.
    pub fn set_usable(&mut self, n: usize) {
        self.usable = n.min(self.meta.len());
        self.max_pinned = self.usable / 4;
    }

    /// Segments holding items (or being appended to).
    pub fn in_use(&self) -> usize {
        self.meta[..self.span].iter().filter(|m| m.state != SegState::Free).count()
    }

    /// Holds `seg`'s bytes where they are until [`Segments::unpin`]: no compaction,
    /// eviction or reuse touches them meanwhile. False (and nothing held) when pinning
    /// it would put more than a quarter of the segments under pins.
    pub fn pin(&mut self, seg: usize) -> bool {
        if self.pins[seg] == 0 {
            if self.pinned >= self.max_pinned {
                return false;
            }
            self.pinned += 1;
        }
        self.pins[seg] += 1;
        true
    }

    /// Lets go of one pin of `seg`; a segment freed while pinned joins the free list
    /// with its last pin.
    pub fn unpin(&mut self, seg: usize) {
        assert!(self.pins[seg] > 0, "segment {seg} unpinned more often than pinned");
        self.pins[seg] -= 1;
        if self.pins[seg] == 0 {
            self.pinned -= 1;
            if self.meta[seg].state == SegState::Free {
                self.free.push(seg as u32);
            }
        }
    }

    pub fn is_pinned(&self, seg: usize) -> bool {
        self.pins[seg] > 0
    }

    /// The segments a crawl reclaims from at `now`: those with an item whose expiry has
    /// come.
    pub fn crawl_due(&self, now: u32) -> impl Iterator<Item = usize> + '_ {
        (0..self.span).filter(move |&s| {
            let m = &self.meta[s];
            m.state != SegState::Free && m.next_crawl != 0 && m.next_crawl <= now
        })
    }

    /// Segments under pins now.
    pub fn pinned_count(&self) -> usize {
        self.pinned
    }

    /// Segments freed while pinned, waiting for their last pin to join the free list.
    pub fn parked_count(&self) -> usize {
        (0..self.span).filter(|&s| self.meta[s].state == SegState::Free && self.pins[s] > 0).count()
    }

    /// The generation as it appears in a CAS (never 0).
    pub fn cas_gen(&self, seg: usize) -> u64 {
        u64::from(self.meta[seg].gen & self.gen_mask)
    }

    /// Starts a new generation of `seg` (its old CAS values can never come back): the
    /// store's next one, so that a segment written later has a higher generation than
    /// every segment written before it, and derived CAS values grow with time (the meta
    /// protocol's `ms ... I` takes a lower CAS for an older write).
    pub fn bump_gen(&mut self, seg: usize) {
        self.meta[seg].gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1);
        if self.next_gen & self.gen_mask == 0 {
            self.next_gen = self.next_gen.wrapping_add(1);
        }
    }

    /// A free segment, unless the store already uses as many as it may.
    pub fn take_free(&mut self) -> Option<u32> {
        if self.usable < self.meta.len() && self.in_use() >= self.usable {
            return None;
        }
        self.free.pop()
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// How many segments [`Segments::take_free`] can still give.
    pub fn headroom(&self) -> usize {
        if self.usable < self.meta.len() {
            self.free.len().min(self.usable.saturating_sub(self.in_use()))
        } else {
            self.free.len()
        }
    }

    /// Makes `seg` (free or just emptied) the appending segment of `class`.
    pub fn activate(&mut self, seg: u32, class: usize, now: u32) {
        self.span = self.span.max(seg as usize + 1);
        self.bump_gen(seg as usize);
        let m = &mut self.meta[seg as usize];
        m.write_at = 0;
        m.live_items = 0;
        m.live_bytes = 0;
        m.created = now;
        m.access_base = now;
        m.max_expiry = 0;
        m.next_crawl = 0;
        m.never_expires = false;
        m.class = class as u8;
        m.state = SegState::Active;
        self.active[class] = seg;
    }

    /// Makes a compacted segment, which still holds items, the appending segment of its
    /// class if that class has none, or queues it as sealed again.
    pub fn reuse_compacted(&mut self, seg: u32) {
        let class = usize::from(self.meta[seg as usize].class);
        if self.active[class] == NONE {
            self.meta[seg as usize].state = SegState::Active;
            self.active[class] = seg;
        } else {
            self.seal(seg);
        }
    }

    /// Stops appending to `seg` and queues it for eviction (oldest first).
    pub fn seal(&mut self, seg: u32) {
        let m = &mut self.meta[seg as usize];
        if m.state == SegState::Active && self.active[usize::from(m.class)] == seg {
            self.active[usize::from(m.class)] = NONE;
        }
        self.seal_seq += 1;
        m.state = SegState::Sealed;
        m.seal_seq = self.seal_seq;
        self.sealed.push_back((seg, self.seal_seq));
    }

    /// Returns an emptied segment to the free list (parks it, if pinned).
    pub fn release(&mut self, seg: u32) {
        let class = usize::from(self.meta[seg as usize].class);
        if self.active[class] == seg {
            self.active[class] = NONE;
        }
        self.bump_gen(seg as usize);
        let m = &mut self.meta[seg as usize];
        m.state = SegState::Free;
        m.write_at = 0;
        m.live_items = 0;
        m.live_bytes = 0;
        m.never_expires = false;
        m.max_expiry = 0;
        m.next_crawl = 0;
        if self.pins[seg as usize] == 0 {
            self.free.push(seg);
        }
    }

    /// The oldest sealed segment that is not pinned, taken out of the queue (pinned
    /// ones keep their place).
    pub fn pop_oldest_sealed(&mut self) -> Option<u32> {
        let mut i = 0;
        while let Some(&(seg, seq)) = self.sealed.get(i) {
            let m = &self.meta[seg as usize];
            if m.state != SegState::Sealed || m.seal_seq != seq {
                self.sealed.remove(i);
            } else if self.pins[seg as usize] > 0 {
                i += 1;
            } else {
                self.sealed.remove(i);
                return Some(seg);
            }
        }
        None
    }

    /// The oldest sealed segment no reply is sent from, left in the queue (entries of
    /// segments no longer sealed are dropped from its front).
    pub fn oldest_sealed(&mut self) -> Option<u32> {
        while let Some(&(seg, seq)) = self.sealed.front() {
            let m = &self.meta[seg as usize];
            if m.state == SegState::Sealed && m.seal_seq == seq {
                break;
            }
            self.sealed.pop_front();
        }
        self.sealed
            .iter()
            .find(|&&(seg, seq)| {
                let m = &self.meta[seg as usize];
                m.state == SegState::Sealed && m.seal_seq == seq && self.pins[seg as usize] == 0
            })
            .map(|&(seg, _)| seg)
    }

    /// Among the `scan` oldest sealed segments (of TTL class `class`, if given) that no
    /// reply is sent from, the one with the fewest live bytes, if it has at most
    /// `max_live`.
    pub fn sparsest_sealed(&self, class: Option<usize>, scan: usize, max_live: u32) -> Option<u32> {
        self.sealed
            .iter()
            .filter(|&&(seg, seq)| {
                let m = &self.meta[seg as usize];
                m.state == SegState::Sealed && m.seal_seq == seq && class.is_none_or(|c| usize::from(m.class) == c)
            })
            .take(scan)
            .filter(|&&(seg, _)| self.pins[seg as usize] == 0)
            .map(|&(seg, _)| seg)
            .min_by_key(|&seg| self.meta[seg as usize].live_bytes)
            .filter(|&seg| self.meta[seg as usize].live_bytes <= max_live)
    }

    /// Records an item of `size` bytes appended to `seg`.
    pub fn note_write(&mut self, seg: usize, size: usize, exptime: u32) {
        let m = &mut self.meta[seg];
        m.write_at += size as u32;
        m.live_items += 1;
        m.live_bytes += size as u32;
        m.note_expiry(exptime);
    }

    /// Records that an item of `size` bytes in `seg` is no longer live. A sealed
    /// segment left with no live item is free at once (parked, if pinned), rather than
    /// waiting to reach the head of the FIFO: a large item that fills a segment alone
    /// gives its memory back the moment it is overwritten or deleted.
    pub fn note_dead(&mut self, seg: usize, size: usize) {
        let m = &mut self.meta[seg];
        m.live_items -= 1;
        m.live_bytes -= size as u32;
        if m.live_items == 0 && m.state == SegState::Sealed {
            self.release(seg as u32);
        }
    }

    /// Rebuilds the bookkeeping from a saved state: one [`SavedSegment`] for each
    /// segment that verified; every other segment is free. Live counts start at zero
    /// (see [`Segments::count_live`]).
    pub fn restore(&mut self, saved: &[SavedSegment]) {
        self.reset();
        self.free.clear();
        let mut in_use = vec![false; self.meta.len()];
        let mut order: Vec<_> = saved.to_vec();
        order.sort_by_key(|s| s.created);
        for s in &order {
            in_use[s.seg] = true;
            self.span = self.span.max(s.seg + 1);
            let m = &mut self.meta[s.seg];
            m.class = s.class;
            m.write_at = s.write_at;
            // A save never has a generation that shows as 0 in a CAS; a damaged one
            // might, and CAS 0 means "no CAS".
            m.gen = if s.gen & self.gen_mask == 0 { s.gen.wrapping_add(1) } else { s.gen };
            self.next_gen = self.next_gen.max(m.gen.wrapping_add(1));
            m.created = s.created;
            m.access_base = s.access_base;
            m.max_expiry = s.max_expiry;
            // Unknown until the crawler walks it: at once.
            m.next_crawl = u32::from(s.max_expiry != 0);
            m.never_expires = s.never_expires;
            m.live_items = 0;
            m.live_bytes = 0;
            m.state = SegState::Active;
            self.seal(s.seg as u32);
        }
        self.free = (0..self.meta.len() as u32).rev().filter(|&s| !in_use[s as usize]).collect();
    }

    /// Counts a recovered live item of `size` bytes in `seg`.
    pub fn count_live(&mut self, seg: usize, size: usize) {
        self.meta[seg].live_items += 1;
        self.meta[seg].live_bytes += size as u32;
    }

    /// Frees everything (flush_all); pinned segments are parked.
    pub fn reset(&mut self) {
        for seg in 0..self.meta.len() as u32 {
            if self.meta[seg as usize].state != SegState::Free {
                self.release(seg);
            }
        }
        self.sealed.clear();
    }
}

impl Segment {
    /// Widens the segment's expiry range to cover an item expiring at `exptime`.
    pub fn note_expiry(&mut self, exptime: u32) {
        if exptime != 0 && (self.next_crawl == 0 || exptime < self.next_crawl) {
            self.next_crawl = exptime;
        }
        if exptime == 0 {
            self.never_expires = true;
        } else {
            self.max_expiry = self.max_expiry.max(exptime);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_classes_are_powers_of_two() {
        assert_eq!(ttl_class(0, 100), 0);
        assert_eq!(ttl_class(101, 100), 1);
        assert_eq!(ttl_class(102, 100), 2);
        assert_eq!(ttl_class(103, 100), 2);
        assert_eq!(ttl_class(104, 100), 3);
        assert_eq!(ttl_class(50, 100), 1, "already expired: shortest class");
        assert_eq!(ttl_class(u32::MAX, 0), 32);
    }

    #[test]
    fn fifo_skips_segments_that_left_the_queue() {
        let mut s = Segments::new(4, 16);
        let a = s.take_free().expect("free");
        s.activate(a, 0, 1);
        s.seal(a);
        let b = s.take_free().expect("free");
        s.activate(b, 1, 1);
        s.seal(b);
        s.release(a);
        assert_eq!(s.pop_oldest_sealed(), Some(b));
        assert_eq!(s.pop_oldest_sealed(), None);
    }

    #[test]
    fn generations_change_and_never_show_as_zero() {
        let mut s = Segments::new(1, 2);
        let mut seen = Vec::new();
        for _ in 0..10 {
            let g = s.cas_gen(0);
            assert_ne!(g, 0);
            seen.push(g);
            s.bump_gen(0);
        }
        assert!(seen.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn a_segment_rewritten_later_has_a_higher_generation() {
        let mut s = Segments::new(3, 32);
        let mut last = 0;
        for seg in [2, 0, 1, 0, 2, 1] {
            s.bump_gen(seg);
            assert!(s.cas_gen(seg) > last, "segment {seg}");
            last = s.cas_gen(seg);
        }
    }
}
