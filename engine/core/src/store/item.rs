//! The on-segment item layout, byte-packed (no alignment padding):
//!
//! ```text
//! key_len: u8 | bits: u8 | access: u8 | value_len: LEB128 (1-4 bytes) | [exptime: u24 or u32] | [flags: u32] | [cas: u64] | key | value
//! ```
//!
//! `bits` says which optional fields are present (each omitted when zero; an exptime
//! below 2^24 s of relative time, 194 days, takes 3 bytes), holds a 2-bit access
//! frequency used by eviction, and the meta protocol's two lease bits: *stale* (marked
//! by an invalidation, `md I` / `ms I`) and *win sent* (a client was told to recompute
//! it, `W`). `access` is the memcached's fetched bit (`h`, `fetch=`) and the time of
//! the last access (`l`, `la=`) as a 7-bit [`AccessTime`] relative to the segment's
//! access base. A 16-byte key with a 32-byte value therefore costs 4 bytes of header. The CAS is normally not stored: it is derived from the item's
//! location and its segment's generation. Only an item the store moves without changing
//! its version (compaction, or a `touch` that needs room for an expiry) carries its CAS
//! explicitly.

/// The item has an exptime field (3 bytes, or 4 with [`EXPTIME_WIDE`]).
const HAS_EXPTIME: u8 = 0x01;
/// The item has a 4-byte flags field.
const HAS_FLAGS: u8 = 0x02;
/// The item has an 8-byte CAS field.
const HAS_CAS: u8 = 0x10;
/// The exptime field is 4 bytes wide (else 3).
const EXPTIME_WIDE: u8 = 0x20;
/// Lease bit: the item was invalidated (served with `X` until replaced).
const STALE: u8 = 0x40;
/// Lease bit: a client has been handed the win token (`W`); others see `Z`.
const WIN_SENT: u8 = 0x80;
/// Offset of the access byte.
const ACCESS_AT: usize = 2;
/// In the access byte: the item has been fetched since it was written.
const FETCHED: u8 = 0x80;
/// In the access byte: the access time.
const ACCESS_TIME_MASK: u8 = 0x7f;
const NARROW_EXPTIME_LIMIT: u32 = 1 << 24;

fn exptime_len(exptime: u32) -> usize {
    match exptime {
        0 => 0,
        e if e < NARROW_EXPTIME_LIMIT => 3,
        _ => 4,
    }
}
const FREQ_SHIFT: u32 = 2;
const FREQ_MASK: u8 = 0x0c;
/// Highest access frequency an item records.
pub const MAX_FREQ: u8 = 3;

fn varint_len(mut v: u32) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Bytes an item takes in a segment (`cas` 0: derived from the location, not stored).
pub fn size(key_len: usize, value_len: usize, exptime: u32, flags: u32, cas: u64) -> usize {
    3 + varint_len(value_len as u32)
        + exptime_len(exptime)
        + if flags != 0 { 4 } else { 0 }
        + if cas != 0 { 8 } else { 0 }
        + key_len
        + value_len
}

/// Header bytes of an item (everything before the key).
pub fn header_size(value_len: usize, exptime: u32, flags: u32, cas: u64) -> usize {
    size(0, value_len, exptime, flags, cas) - value_len
}

/// The meta protocol's lease state of an item (see the module documentation). It is
/// part of the item's version: effects carry it, so every replica holds the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lease {
    /// Invalidated: served with `X` (and a win token to the first to ask) until replaced.
    pub stale: bool,
    /// A win token (`W`) was handed out; later readers see `Z`.
    pub win_sent: bool,
}

impl Lease {
    pub const NONE: Lease = Lease { stale: false, win_sent: false };

    /// The lease as a byte (bit 0 stale, bit 1 win sent), for encodings.
    pub fn to_byte(self) -> u8 {
        u8::from(self.stale) | u8::from(self.win_sent) << 1
    }

    /// The lease of [`Lease::to_byte`]'s byte (None when other bits are set).
    pub fn from_byte(b: u8) -> Option<Lease> {
        (b & !3 == 0).then_some(Lease { stale: b & 1 != 0, win_sent: b & 2 != 0 })
    }

    fn bits(self) -> u8 {
        (if self.stale { STALE } else { 0 }) | (if self.win_sent { WIN_SENT } else { 0 })
    }
}

/// The last access time of an item, in 7 bits: seconds after its segment's access base
/// ([`crate::store::segments::Segment::access_base`]), exact up to 15 s, then with 4
/// significant bits (rounded to the nearest; within 1/16 of the offset), saturating at
/// [`AccessTime::MAX`] (2.8 days). Memory for a figure that is only reported (`l`, `la=`), never acted
/// on.
pub struct AccessTime;

impl AccessTime {
    /// The largest offset a code holds.
    pub const MAX: u32 = 15 << 14;

    /// The code of `offset` seconds after the base.
    pub fn encode(offset: u32) -> u8 {
        if offset < 16 {
            return if offset < 8 { offset as u8 } else { (1 << 3) | (offset - 8) as u8 };
        }
        if offset >= Self::MAX {
            return ACCESS_TIME_MASK;
        }
        // offset = (8 + m) << (e - 1), with 8 <= offset >> (e - 1) < 16.
        let mut shift = u32::BITS - offset.leading_zeros() - 4;
        let mut mantissa = (offset + (1 << (shift - 1))) >> shift;
        if mantissa == 16 {
            mantissa = 8;
            shift += 1;
        }
        let e = shift + 1;
        if e > 15 {
            return ACCESS_TIME_MASK;
        }
        ((e as u8) << 3) | (mantissa - 8) as u8
    }

    /// The offset (seconds after the base) a code stands for.
    pub fn decode(code: u8) -> u32 {
        let (e, m) = (u32::from(code >> 3) & 0xf, u32::from(code & 7));
        if e == 0 {
            m
        } else {
            (8 + m) << (e - 1)
        }
    }
}

/// The access byte of an item written (or last accessed) at `now` in a segment whose
/// access base is `base`, fetched or not.
pub fn access_byte(fetched: bool, base: u32, now: u32) -> u8 {
    (if fetched { FETCHED } else { 0 }) | AccessTime::encode(now.saturating_sub(base))
}

/// The access byte `access` with the fetched bit set (its time unchanged).
pub fn with_fetched(access: u8) -> u8 {
    access | FETCHED
}

/// A decoded item header: field values and where key and value sit in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub key_len: usize,
    pub value_len: usize,
    pub exptime: u32,
    pub flags: u32,
    /// The stored CAS, 0 when it is derived from the location.
    pub cas: u64,
    pub freq: u8,
    pub lease: Lease,
    /// The access byte: fetched bit and [`AccessTime`] code (see [`Header::fetched`]).
    pub access: u8,
    /// Offset of the exptime field, if the item has one.
    pub exptime_at: Option<usize>,
    /// The exptime field is 4 bytes (else 3).
    pub exptime_wide: bool,
    /// Offset of the key (the value follows it).
    pub key_at: usize,
}

impl Header {
    pub fn total(&self) -> usize {
        self.key_at + self.key_len + self.value_len
    }
    pub fn value_at(&self) -> usize {
        self.key_at + self.key_len
    }
    /// Fetched since it was written (memcached's `ITEM_FETCHED`).
    pub fn fetched(&self) -> bool {
        self.access & FETCHED != 0
    }
    /// Seconds after its segment's access base that it was last accessed.
    pub fn access_offset(&self) -> u32 {
        AccessTime::decode(self.access & ACCESS_TIME_MASK)
    }
}

/// Decodes the header of the item starting at `buf[0]`. None if the bytes are not a
/// well-formed item that fits in `buf` (a corrupt segment).
pub fn decode(buf: &[u8]) -> Option<Header> {
    let key_len = usize::from(*buf.first()?);
    let bits = *buf.get(1)?;
    let access = *buf.get(ACCESS_AT)?;
    let mut at = ACCESS_AT + 1;
    let mut value_len: u32 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(at)?;
        at += 1;
        value_len |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    let read_u32 =
        |at: usize| -> Option<u32> { buf.get(at..at + 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes) };
    let mut exptime = 0;
    let mut exptime_at = None;
    let exptime_wide = bits & EXPTIME_WIDE != 0;
    if bits & HAS_EXPTIME != 0 {
        exptime_at = Some(at);
        if exptime_wide {
            exptime = read_u32(at)?;
            at += 4;
        } else {
            let b = buf.get(at..at + 3)?;
            exptime = u32::from_le_bytes([b[0], b[1], b[2], 0]);
            at += 3;
        }
    }
    let mut flags = 0;
    if bits & HAS_FLAGS != 0 {
        flags = read_u32(at)?;
        at += 4;
    }
    let mut cas = 0;
    if bits & HAS_CAS != 0 {
        cas = buf.get(at..at + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes)?;
        at += 8;
    }
    let header = Header {
        key_len,
        value_len: value_len as usize,
        exptime,
        flags,
        cas,
        freq: (bits & FREQ_MASK) >> FREQ_SHIFT,
        lease: Lease { stale: bits & STALE != 0, win_sent: bits & WIN_SENT != 0 },
        access,
        exptime_at,
        exptime_wide,
        key_at: at,
    };
    if key_len == 0 || header.total() > buf.len() {
        return None;
    }
    Some(header)
}

/// The state of an item beside its fields: its lease and its access byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    pub lease: Lease,
    pub access: u8,
}

/// Writes the header and key of an item with a `value_len`-byte value at `buf[0]`;
/// returns the offset where the value goes.
pub fn encode_header(
    buf: &mut [u8],
    key: &[u8],
    value_len: usize,
    exptime: u32,
    flags: u32,
    cas: u64,
    state: State,
) -> usize {
    debug_assert!(!key.is_empty() && key.len() <= usize::from(u8::MAX));
    buf[0] = key.len() as u8;
    buf[1] = if exptime != 0 { HAS_EXPTIME } else { 0 }
        | if exptime_len(exptime) == 4 { EXPTIME_WIDE } else { 0 }
        | if flags != 0 { HAS_FLAGS } else { 0 }
        | if cas != 0 { HAS_CAS } else { 0 }
        | state.lease.bits();
    buf[ACCESS_AT] = state.access;
    let mut at = ACCESS_AT + 1;
    let mut v = value_len as u32;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[at] = byte;
            at += 1;
            break;
        }
        buf[at] = byte | 0x80;
        at += 1;
    }
    let width = exptime_len(exptime);
    buf[at..at + width].copy_from_slice(&exptime.to_le_bytes()[..width]);
    at += width;
    if flags != 0 {
        buf[at..at + 4].copy_from_slice(&flags.to_le_bytes());
        at += 4;
    }
    if cas != 0 {
        buf[at..at + 8].copy_from_slice(&cas.to_le_bytes());
        at += 8;
    }
    buf[at..at + key.len()].copy_from_slice(key);
    at + key.len()
}

/// Writes an item whose value is the concatenation of `value_parts` at `buf[0]`;
/// `buf` must be exactly [`size`] bytes.
#[cfg(test)]
fn encode(buf: &mut [u8], key: &[u8], value_parts: &[&[u8]], exptime: u32, flags: u32, cas: u64) {
    let value_len: usize = value_parts.iter().map(|p| p.len()).sum();
    debug_assert_eq!(buf.len(), size(key.len(), value_len, exptime, flags, cas));
    let mut at = encode_header(buf, key, value_len, exptime, flags, cas, State::default());
    for part in value_parts {
        buf[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
}

/// Overwrites the exptime of the item at `buf[0]` (decoded as `header`) in place; false
/// when the item has no exptime field or `exptime` does not fit its width.
pub fn set_exptime(buf: &mut [u8], header: &Header, exptime: u32) -> bool {
    let Some(at) = header.exptime_at else { return false };
    let width = if header.exptime_wide { 4 } else { 3 };
    if width == 3 && exptime >= NARROW_EXPTIME_LIMIT {
        return false;
    }
    buf[at..at + width].copy_from_slice(&exptime.to_le_bytes()[..width]);
    true
}

/// Sets the lease bits of the item at `buf[0]`.
pub fn set_lease(buf: &mut [u8], lease: Lease) {
    buf[1] = (buf[1] & !(STALE | WIN_SENT)) | lease.bits();
}

/// Sets the access byte of the item at `buf[0]`.
pub fn set_access(buf: &mut [u8], access: u8) {
    buf[ACCESS_AT] = access;
}

/// Sets the access frequency of the item at `buf[0]`.
pub fn set_freq(buf: &mut [u8], freq: u8) {
    buf[1] = (buf[1] & !FREQ_MASK) | ((freq.min(MAX_FREQ) << FREQ_SHIFT) & FREQ_MASK);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_optional_fields() {
        for (exptime, flags, cas, vlen) in
            [(0, 0, 0, 32), (1234, 0, 0, 127), (0, 7, 9, 128), (99, u32::MAX, 1, 70_000), (u32::MAX, 1, 0, 5)]
        {
            let value = vec![b'v'; vlen];
            let n = size(5, vlen, exptime, flags, cas);
            let mut buf = vec![0u8; n + 3];
            encode(&mut buf[..n], b"hello", &[&value[..vlen / 2], &value[vlen / 2..]], exptime, flags, cas);
            let h = decode(&buf).expect("decodes");
            assert_eq!((h.key_len, h.value_len, h.exptime, h.flags, h.cas, h.freq), (5, vlen, exptime, flags, cas, 0));
            assert_eq!(h.total(), n);
            assert_eq!(&buf[h.key_at..h.key_at + 5], b"hello");
            assert_eq!(&buf[h.value_at()..h.total()], &value[..]);
        }
    }

    #[test]
    fn small_items_have_a_four_byte_header() {
        assert_eq!(header_size(32, 0, 0, 0), 4);
        assert_eq!(header_size(100, 0, 0, 0), 4);
        assert_eq!(header_size(200, 10, 0, 0), 8);
        assert_eq!(header_size(200, 1 << 24, 0, 0), 9);
        assert_eq!(header_size(200, 10, 0, 5), 16);
    }

    #[test]
    fn exptime_is_rewritten_in_place_only_when_it_fits() {
        let n = size(1, 1, 5, 0, 0);
        let mut buf = vec![0u8; n];
        encode(&mut buf, b"k", &[b"v"], 5, 0, 0);
        let h = decode(&buf).expect("decodes");
        assert!(set_exptime(&mut buf, &h, 70_000));
        assert_eq!(decode(&buf).map(|h| h.exptime), Some(70_000));
        assert!(!set_exptime(&mut buf, &h, 1 << 24), "3-byte field cannot hold it");
        assert!(set_exptime(&mut buf, &h, 0));
        assert_eq!(decode(&buf).map(|h| (h.exptime, h.value_len)), Some((0, 1)));
    }

    #[test]
    fn frequency_saturates_and_keeps_other_bits() {
        let n = size(1, 1, 5, 0, 0);
        let mut buf = vec![0u8; n];
        encode(&mut buf, b"k", &[b"v"], 5, 0, 0);
        set_freq(&mut buf, 9);
        let h = decode(&buf).expect("decodes");
        assert_eq!((h.freq, h.exptime), (MAX_FREQ, 5));
    }

    #[test]
    fn corrupt_bytes_do_not_decode_past_the_buffer() {
        assert!(decode(&[]).is_none());
        assert!(decode(&[0, 0, 0, 1, b'v']).is_none(), "zero-length key");
        assert!(decode(&[3, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(decode(&[3, 0, 0, 10, b'a', b'b', b'c']).is_none(), "value past the end");
        assert!(decode(&[1, 0]).is_none(), "no access byte");
    }

    #[test]
    fn lease_and_access_round_trip_and_change_in_place() {
        let n = size(1, 1, 5, 3, 0);
        let mut buf = vec![0u8; n];
        let state = State { lease: Lease { stale: true, win_sent: false }, access: access_byte(false, 100, 103) };
        encode_header(&mut buf, b"k", 1, 5, 3, 0, state);
        let h = decode(&buf).expect("decodes");
        assert_eq!((h.lease, h.fetched(), h.access_offset(), h.exptime, h.flags), (state.lease, false, 3, 5, 3));
        set_lease(&mut buf, Lease { stale: false, win_sent: true });
        set_access(&mut buf, access_byte(true, 100, 140));
        set_freq(&mut buf, 2);
        let h = decode(&buf).expect("decodes");
        assert_eq!(
            (h.lease.stale, h.lease.win_sent, h.fetched(), h.access_offset(), h.freq),
            (false, true, true, 40, 2)
        );
        assert_eq!((h.exptime, h.flags), (5, 3), "the other fields are untouched");
        for b in 0..4 {
            assert_eq!(Lease::from_byte(b).map(Lease::to_byte), Some(b));
        }
        assert_eq!(Lease::from_byte(4), None);
    }

    #[test]
    fn access_time_is_exact_to_15_seconds_then_within_a_sixteenth() {
        for offset in 0..16 {
            assert_eq!(AccessTime::decode(AccessTime::encode(offset)), offset);
        }
        let mut last = 0;
        for offset in (16..AccessTime::MAX + 100).step_by(7) {
            let code = AccessTime::encode(offset);
            assert!(code <= ACCESS_TIME_MASK, "{offset}: code {code} has 7 bits");
            let back = AccessTime::decode(code);
            assert!(back >= last, "monotonic at {offset}");
            last = back;
            if offset < AccessTime::MAX {
                assert!(back.abs_diff(offset) <= offset / 16 + 1, "{offset} came back as {back}");
            } else {
                assert_eq!(back, AccessTime::MAX);
            }
        }
    }
}
