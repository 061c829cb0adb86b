//! `stats detail`: per key prefix counts of gets, hits, sets and deletes (memcached's
//! `stats_prefix.c`), kept by each shard while `stats detail on` holds. A prefix is a
//! key's bytes before its first `:` (keys without one are not counted). At most
//! [`MAX_PREFIXES`] prefixes are kept per shard, so a client making up prefixes cannot
//! grow memory without bound (memcached has no such bound).

use std::collections::BTreeMap;

/// The most prefixes a shard keeps counts for; later new prefixes are not counted.
pub const MAX_PREFIXES: usize = 4096;
/// memcached's default prefix delimiter (`-D`).
const DELIMITER: u8 = b':';

/// One prefix's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCounts {
    pub gets: u64,
    pub hits: u64,
    pub sets: u64,
    pub deletes: u64,
}

/// The counts by prefix.
#[derive(Debug, Default, Clone)]
pub struct PrefixStats {
    by_prefix: BTreeMap<Vec<u8>, PrefixCounts>,
}

impl PrefixStats {
    fn counts(&mut self, key: &[u8]) -> Option<&mut PrefixCounts> {
        let end = key.iter().position(|&b| b == DELIMITER)?;
        let prefix = &key[..end];
        if !self.by_prefix.contains_key(prefix) && self.by_prefix.len() >= MAX_PREFIXES {
            return None;
        }
        Some(self.by_prefix.entry(prefix.to_vec()).or_default())
    }

    pub fn record_get(&mut self, key: &[u8], hit: bool) {
        if let Some(c) = self.counts(key) {
            c.gets += 1;
            c.hits += u64::from(hit);
        }
    }

    pub fn record_set(&mut self, key: &[u8]) {
        if let Some(c) = self.counts(key) {
            c.sets += 1;
        }
    }

    pub fn record_delete(&mut self, key: &[u8]) {
        if let Some(c) = self.counts(key) {
            c.deletes += 1;
        }
    }

    /// Every prefix with its counts, in prefix order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &PrefixCounts)> {
        self.by_prefix.iter().map(|(p, c)| (p.as_slice(), c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_prefix_up_to_a_bound() {
        let mut p = PrefixStats::default();
        p.record_get(b"user:1", true);
        p.record_get(b"user:2", false);
        p.record_set(b"user:3");
        p.record_delete(b"page:x:y");
        p.record_get(b"nodelimiter", true);
        let all: Vec<_> = p.iter().map(|(k, c)| (k.to_vec(), *c)).collect();
        assert_eq!(
            all,
            vec![
                (b"page".to_vec(), PrefixCounts { deletes: 1, ..PrefixCounts::default() }),
                (b"user".to_vec(), PrefixCounts { gets: 2, hits: 1, sets: 1, deletes: 0 }),
            ]
        );
        for i in 0..MAX_PREFIXES + 10 {
            p.record_set(format!("p{i}:k").as_bytes());
        }
        assert_eq!(p.iter().count(), MAX_PREFIXES, "bounded");
        p.record_set(b"user:9");
        assert_eq!(p.iter().find(|(k, _)| *k == b"user").map(|(_, c)| c.sets), Some(2), "known ones still count");
    }
}
