//! `lru_crawler metadump`: the live items' metadata as memcached writes it, one line per
//! item (`key=<uri-encoded> exp=<unix time or -1> la=<unix time> cas=<n> fetch=<yes|no>
//! cls=<class> size=<bytes>`), produced a bounded chunk at a time from a cursor so that
//! a dump of millions of items never holds more than a chunk. The dump is not a
//! snapshot: items written or moved between chunks may be missed or seen twice, as
//! with memcached's crawler.

use std::io::Write as _;

use super::{segments::SegState, Store};

/// Where a dump goes on: a segment and an offset in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpCursor {
    pub segment: usize,
    pub offset: usize,
}

/// memcached's `uriencode`: bytes other than letters, digits and `-._~` as `%XX`.
fn uri_encode(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

impl Store {
    /// Appends the lines of live items from `from` on (items of the TTL classes whose
    /// bit is set in `classes`), until `out` has grown by `budget` bytes; returns where
    /// to go on, or None when every segment was walked.
    pub fn dump(
        &self,
        from: DumpCursor,
        classes: u64,
        now: u32,
        out: &mut Vec<u8>,
        budget: usize,
    ) -> Option<DumpCursor> {
        let start = out.len();
        for seg in from.segment..self.segs.span() {
            let m = &self.segs.meta[seg];
            if m.state == SegState::Free || classes & (1u64 << m.class) == 0 {
                continue;
            }
            let base = seg * self.arena.seg_size();
            let offset = if seg == from.segment { from.offset } else { 0 };
            for (loc, h) in self.chain(seg, offset) {
                if out.len() - start >= budget {
                    return Some(DumpCursor { segment: seg, offset: loc as usize - base });
                }
                if !self.is_live_copy(loc, &h) || (h.exptime != 0 && h.exptime <= now) {
                    continue;
                }
                if self.oldest_live.is_some_and(|t| t <= now) {
                    continue;
                }
                out.extend_from_slice(b"key=");
                uri_encode(self.key_at(loc, &h), out);
                let exp = if h.exptime == 0 { -1 } else { self.absolute(h.exptime) };
                let last_access = m.access_base.saturating_add(h.access_offset());
                let _ = writeln!(
                    out,
                    " exp={exp} la={} cas={} fetch={} cls={} size={}",
                    self.absolute(last_access.max(1)),
                    self.cas_of(loc, &h),
                    if h.fetched() { "yes" } else { "no" },
                    u32::from(m.class) + 1,
                    h.total()
                );
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_uri_encoded_as_memcached_encodes_them() {
        let mut out = Vec::new();
        uri_encode(b"a:b c%d-e._~\xff", &mut out);
        assert_eq!(out, b"a%3Ab%20c%25d-e._~%FF");
    }
}
