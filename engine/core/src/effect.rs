//! Effects: the changes a shard makes to its store, stated so that applying one needs no
//! condition and no clock. A shard *decides* a command against its state (is the key
//! there, does the CAS match, is the value a number) and produces at most one effect;
//! applying the effect is then the same on every store that applies it, which is what a
//! replication log carries. Times are absolute Unix seconds (each store turns them into
//! its own relative time). A write's CAS is 0 when decided; a replication log stamps it
//! with the write's index ([`Effect::stamped`]). What a store does with the stamp is its
//! setting ([`crate::store::CasSource`]): a standalone store derives its own CAS from
//! where it puts the item (free), a replicated one stores the stamp (8 bytes an item).
//!
//! Rule: applying an effect may make a store *forget* (an eviction, a local expiry, a
//! `Concat` whose base version this store does not hold drops the key) but never makes
//! it hold a value the deciding store would not.
//!
//! [`EffectBatch`] is the encoding a log carries: a version byte, the count, the effects
//! (little-endian, [`crate::codec`]) and a CRC32 of it all.

use crate::codec::{Reader, Writer};
use crate::store::item::Lease;

/// The new value of a [`Effect::Put`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutValue<'a> {
    Bytes(&'a [u8]),
    /// An `incr`/`decr` result: the digits, space-padded to `pad_to` bytes as memcached
    /// pads a result that is shorter than the old value.
    Number {
        digits: [u8; 20],
        len: u8,
        pad_to: u32,
    },
}

impl PutValue<'_> {
    /// An `incr`/`decr` result of `n`, padded to `pad_to`.
    pub fn number(n: u64, pad_to: usize) -> Self {
        let mut buf = [0u8; 20];
        let len = crate::numbers::decimal(n, &mut buf).len();
        let mut digits = [0u8; 20];
        digits[..len].copy_from_slice(&buf[20 - len..]);
        PutValue::Number { digits, len: len as u8, pad_to: pad_to as u32 }
    }

    /// Length of the value.
    pub fn len(&self) -> usize {
        match *self {
            PutValue::Bytes(b) => b.len(),
            PutValue::Number { len, pad_to, .. } => usize::from(len).max(pad_to as usize),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One change to a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect<'a> {
    /// Store `value` under `key`, replacing any version; `cas` is the CAS the item gets:
    /// 0 when decided (the store derives one, or a log stamps it), or the client's own
    /// (memcached's `E` flag), which every store keeps; `lease` is the new item's lease
    /// state (the meta protocol's stale and win bits; none for a plain write).
    Put {
        key: &'a [u8],
        flags: u32,
        expires_at: i64,
        value: PutValue<'a>,
        cas: u64,
        lease: Lease,
    },
    /// Give the item whose CAS is `base_cas` the lease `lease` (and the expiry
    /// `expires_at`, when there is one). With `new_version` the item becomes a new
    /// version, its value unchanged (`md <key> I`: marked stale, CAS bumped), and `cas`
    /// is the write's stamp; without, its CAS stays (`mg` handing out a win token). A
    /// store whose item under `key` has another CAS drops the key.
    Mark {
        key: &'a [u8],
        base_cas: u64,
        lease: Lease,
        expires_at: Option<i64>,
        new_version: bool,
        cas: u64,
    },
    /// Append (or prepend) `data` to the value of the item whose CAS is `base_cas`; the
    /// result keeps that item's flags and expiry; `cas` is the write's stamp. A store
    /// whose item under `key` has another CAS, or that has none, drops the key.
    Concat {
        key: &'a [u8],
        data: &'a [u8],
        prepend: bool,
        base_cas: u64,
        cas: u64,
    },
    /// Set the expiry of the item under `key` (its CAS stays).
    Touch {
        key: &'a [u8],
        expires_at: i64,
    },
    Delete {
        key: &'a [u8],
    },
    /// Drop every item: now (`at` None), or once Unix time `at` comes (a delayed
    /// `flush_all`).
    Flush {
        at: Option<i64>,
    },
}

impl Effect<'_> {
    /// The effect with the CAS its write gives the item set to `cas` (a replicated log
    /// stamps every write with its index, so that every replica holds the same CAS). A
    /// write that already names its CAS (the client's own, memcached's `E` flag) keeps
    /// it: it is in the effect, so every replica holds it too.
    pub fn stamped(self, cas: u64) -> Self {
        let own = matches!(
            self,
            Effect::Put { cas: c, .. } | Effect::Concat { cas: c, .. } | Effect::Mark { cas: c, .. } if c != 0
        );
        if own {
            return self;
        }
        match self {
            Effect::Put { key, flags, expires_at, value, lease, .. } => {
                Effect::Put { key, flags, expires_at, value, cas, lease }
            }
            Effect::Mark { key, base_cas, lease, expires_at, new_version: true, .. } => {
                Effect::Mark { key, base_cas, lease, expires_at, new_version: true, cas }
            }
            Effect::Concat { key, data, prepend, base_cas, .. } => Effect::Concat { key, data, prepend, base_cas, cas },
            other => other,
        }
    }

    /// The key the effect changes (None for a flush).
    pub fn key(&self) -> Option<&[u8]> {
        match *self {
            Effect::Put { key, .. }
            | Effect::Concat { key, .. }
            | Effect::Touch { key, .. }
            | Effect::Mark { key, .. }
            | Effect::Delete { key } => Some(key),
            Effect::Flush { .. } => None,
        }
    }
}

/// 2: `Put` carries a lease byte; `Mark`.
const FORMAT_VERSION: u8 = 2;
const HEADER: usize = 1 + 4;

/// Effects encoded back to back for a log entry: `version u8 | count u32 | effects... |
/// crc32 u32` (the CRC covers everything before it). Appending encodes; [`EffectBatch::
/// decode`] checks the version and CRC and then yields the effects, borrowing the bytes.
#[derive(Debug, Default, Clone)]
pub struct EffectBatch {
    buf: Vec<u8>,
    count: u32,
}

/// Why encoded effects were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Too short, a damaged effect, or bytes left over.
    Malformed,
    /// The CRC does not match.
    Checksum,
    /// Written by a format this code does not know.
    Version(u8),
}

impl EffectBatch {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
    }

    /// Bytes [`EffectBatch::encode_into`] will write.
    pub fn encoded_len(&self) -> usize {
        self.buf.len().max(HEADER) + 4
    }

    /// Appends `effect`.
    pub fn push(&mut self, effect: &Effect<'_>) {
        if self.buf.is_empty() {
            Writer::new(&mut self.buf).u8(FORMAT_VERSION).u32(0);
        }
        let mut w = Writer::new(&mut self.buf);
        match *effect {
            Effect::Put { key, flags, expires_at, value, cas, lease } => {
                w.u8(0).key(key).u32(flags).i64(expires_at).u64(cas).u8(lease.to_byte());
                match value {
                    PutValue::Bytes(b) => {
                        w.u8(0).bytes(b);
                    }
                    PutValue::Number { digits, len, pad_to } => {
                        w.u8(1).u8(len).raw(&digits[..usize::from(len)]).u32(pad_to);
                    }
                }
            }
            Effect::Concat { key, data, prepend, base_cas, cas } => {
                w.u8(1).key(key).u8(u8::from(prepend)).u64(base_cas).u64(cas).bytes(data);
            }
            Effect::Touch { key, expires_at } => {
                w.u8(2).key(key).i64(expires_at);
            }
            Effect::Delete { key } => {
                w.u8(3).key(key);
            }
            Effect::Flush { at } => {
                w.u8(4).u8(u8::from(at.is_some())).i64(at.unwrap_or(0));
            }
            Effect::Mark { key, base_cas, lease, expires_at, new_version, cas } => {
                w.u8(5).key(key).u64(base_cas).u8(lease.to_byte()).u8(u8::from(expires_at.is_some()));
                w.i64(expires_at.unwrap_or(0)).u8(u8::from(new_version)).u64(cas);
            }
        }
        self.count += 1;
    }

    /// The encoded batch (version, count, effects, CRC) appended to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        if self.buf.is_empty() {
            Writer::new(out).u8(FORMAT_VERSION).u32(0);
        } else {
            out.extend_from_slice(&self.buf);
            out[start + 1..start + HEADER].copy_from_slice(&self.count.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[start..]);
        Writer::new(out).u32(crc);
    }

    /// Checks an encoded batch (version, CRC, every effect well-formed, nothing left
    /// over) and returns its effects, borrowing `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Effects<'_>, DecodeError> {
        let body_len = bytes.len().checked_sub(4).ok_or(DecodeError::Malformed)?;
        let (body, crc) = bytes.split_at(body_len);
        let version = *body.first().ok_or(DecodeError::Malformed)?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::Version(version));
        }
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(DecodeError::Checksum);
        }
        let mut r = Reader::at(body, 1);
        let count = r.u32().ok_or(DecodeError::Malformed)?;
        let effects = Effects { r, left: count };
        // Walk it once so that a batch is accepted whole or not at all.
        let mut check = effects;
        for _ in 0..count {
            check.next_effect().ok_or(DecodeError::Malformed)?;
        }
        if !check.r.is_done() {
            return Err(DecodeError::Malformed);
        }
        Ok(effects)
    }
}

/// The effects of a decoded batch, in order.
#[derive(Debug, Clone, Copy)]
pub struct Effects<'a> {
    r: Reader<'a>,
    left: u32,
}

impl<'a> Effects<'a> {
    fn next_effect(&mut self) -> Option<Effect<'a>> {
        let r = &mut self.r;
        Some(match r.u8()? {
            0 => {
                let key = r.key()?;
                let (flags, expires_at, cas) = (r.u32()?, r.i64()?, r.u64()?);
                let lease = Lease::from_byte(r.u8()?)?;
                let value = match r.u8()? {
                    0 => PutValue::Bytes(r.bytes()?),
                    1 => {
                        let len = r.u8()?;
                        if len == 0 || len > 20 {
                            return None;
                        }
                        let mut digits = [0u8; 20];
                        digits[..usize::from(len)].copy_from_slice(r.take(usize::from(len))?);
                        if !digits[..usize::from(len)].iter().all(u8::is_ascii_digit) {
                            return None;
                        }
                        PutValue::Number { digits, len, pad_to: r.u32()? }
                    }
                    _ => return None,
                };
                Effect::Put { key, flags, expires_at, value, cas, lease }
            }
            1 => {
                let key = r.key()?;
                let prepend = r.u8()? != 0;
                let (base_cas, cas) = (r.u64()?, r.u64()?);
                Effect::Concat { key, data: r.bytes()?, prepend, base_cas, cas }
            }
            2 => Effect::Touch { key: r.key()?, expires_at: r.i64()? },
            3 => Effect::Delete { key: r.key()? },
            4 => {
                let has_at = r.u8()? != 0;
                let at = r.i64()?;
                Effect::Flush { at: has_at.then_some(at) }
            }
            5 => {
                let (key, base_cas) = (r.key()?, r.u64()?);
                let lease = Lease::from_byte(r.u8()?)?;
                let has_expiry = r.u8()? != 0;
                let expires_at = r.i64()?;
                let new_version = r.u8()? != 0;
                Effect::Mark {
                    key,
                    base_cas,
                    lease,
                    expires_at: has_expiry.then_some(expires_at),
                    new_version,
                    cas: r.u64()?,
                }
            }
            _ => return None,
        })
    }
}

impl<'a> Iterator for Effects<'a> {
    type Item = Effect<'a>;
    fn next(&mut self) -> Option<Effect<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.next_effect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Effect<'static>> {
        vec![
            Effect::Put {
                key: b"k",
                flags: 7,
                expires_at: 1_700_000_123,
                value: PutValue::Bytes(b"value"),
                cas: 0,
                lease: Lease::NONE,
            },
            Effect::Put {
                key: b"n",
                flags: 0,
                expires_at: 0,
                value: PutValue::number(42, 5),
                cas: 99,
                lease: Lease { stale: true, win_sent: true },
            },
            Effect::Mark {
                key: b"m",
                base_cas: 5,
                lease: Lease { stale: true, win_sent: false },
                expires_at: Some(1_700_000_000),
                new_version: true,
                cas: 6,
            },
            Effect::Mark { key: b"w", base_cas: 7, lease: Lease::NONE, expires_at: None, new_version: false, cas: 0 },
            Effect::Concat { key: b"a", data: b"tail", prepend: false, base_cas: 12, cas: 100 },
            Effect::Concat { key: b"a", data: b"", prepend: true, base_cas: 13, cas: 0 },
            Effect::Touch { key: b"t", expires_at: -1 },
            Effect::Delete { key: b"d" },
            Effect::Flush { at: None },
            Effect::Flush { at: Some(1_800_000_000) },
        ]
    }

    #[test]
    fn a_batch_round_trips() {
        let mut batch = EffectBatch::default();
        for e in sample() {
            batch.push(&e);
        }
        let mut bytes = Vec::new();
        batch.encode_into(&mut bytes);
        let decoded: Vec<_> = EffectBatch::decode(&bytes).map(Iterator::collect).unwrap_or_default();
        assert_eq!(decoded, sample());
        let mut empty = Vec::new();
        EffectBatch::default().encode_into(&mut empty);
        assert_eq!(EffectBatch::decode(&empty).map(|e| e.count()), Ok(0));
    }

    #[test]
    fn damaged_batches_are_refused_whole() {
        let mut batch = EffectBatch::default();
        for e in sample() {
            batch.push(&e);
        }
        let mut bytes = Vec::new();
        batch.encode_into(&mut bytes);
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x01;
            assert!(EffectBatch::decode(&damaged).is_err(), "byte {i} flipped");
        }
        for cut in 0..bytes.len() {
            assert!(EffectBatch::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut newer = bytes.clone();
        newer[0] = 3;
        assert_eq!(EffectBatch::decode(&newer).map(|_| ()), Err(DecodeError::Version(3)));
    }

    #[test]
    fn numbers_keep_their_padding() {
        let v = PutValue::number(7, 4);
        assert_eq!(v.len(), 4);
        assert_eq!(PutValue::number(u64::MAX, 0).len(), 20);
    }
}
