//! The expiry crawler: reclaims items whose expiry has come without waiting for a read of
//! their key or for their whole segment to expire (memcached's LRU crawler does this for
//! it). Each segment knows the earliest expiry among its items (`next_crawl`); a crawl
//! walks only the segments where that time has come, unlinks their expired items (a
//! sealed segment left without live items is freed at once) and notes the next earliest
//! expiry. The background sweep crawls a few segments every tick; `lru_crawler crawl`
//! crawls every segment that is due at once.

use super::{item, segments::SegState, Store};

impl Store {
    /// Crawls up to `max_segments` segments whose earliest expiry has come by `now`.
    /// Returns how many items it reclaimed.
    pub fn crawl(&mut self, now: u32, max_segments: usize) -> usize {
        self.apply_pending_flush(now);
        let seg_size = self.arena.seg_size();
        let mut reclaimed = 0;
        let mut crawled = 0;
        let mut seg = 0;
        while crawled < max_segments {
            let Some(next) = self.segs.crawl_due(now).find(|&s| s >= seg) else { break };
            seg = next + 1;
            crawled += 1;
            let base = next * seg_size;
            let end = base + self.segs.meta[next].write_at as usize;
            let mut earliest = 0u32;
            let mut at = base;
            while at < end {
                let Some(h) = item::decode(&self.arena.bytes()[at..end]) else { break };
                let loc = at as u64;
                at += h.total();
                self.stats.crawler_items_checked += 1;
                if h.exptime == 0 {
                    continue;
                }
                let key = &self.arena.bytes()[loc as usize + h.key_at..loc as usize + h.key_at + h.key_len];
                let hash = self.hasher.hash_one(key);
                let Some((pos, _)) = self.index.find(hash, |l| l == loc) else { continue };
                if h.exptime > now {
                    if earliest == 0 || h.exptime < earliest {
                        earliest = h.exptime;
                    }
                    continue;
                }
                self.unlink(&super::Found { pos, loc, header: h });
                self.stats.reclaimed += 1;
                self.stats.crawler_reclaimed += 1;
                self.stats.expired_unfetched += u64::from(!h.fetched());
                let class = &mut self.class_counters[usize::from(self.segs.meta[next].class)];
                class.reclaimed += 1;
                class.crawler_reclaimed += 1;
                class.expired_unfetched += u64::from(!h.fetched());
                reclaimed += 1;
            }
            let m = &mut self.segs.meta[next];
            m.next_crawl = if m.state == SegState::Free { 0 } else { earliest };
        }
        reclaimed
    }
}
