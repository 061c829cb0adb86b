//! [`OpBatch`]: the compact byte encoding of [`Op`]s (the protocol's single-key
//! operations) for crossing to another shard. A connection turns each request into ops (a
//! multi-key get becomes one op per key); local ops execute in place, borrowing the read
//! buffer, and remote ones are copied once into the destination's batch.

pub use crate::protocol::Op;

use crate::codec::{Reader, Writer};
use crate::protocol::{MetaCmd, MetaOp};
use crate::store::StoreMode;

fn meta_cmd_tag(cmd: MetaCmd) -> u8 {
    match cmd {
        MetaCmd::Get => 0,
        MetaCmd::Set => 1,
        MetaCmd::SetTooLarge => 2,
        MetaCmd::Delete => 3,
        MetaCmd::Arith => 4,
        MetaCmd::Debug => 5,
    }
}

fn meta_cmd(tag: u8) -> Option<MetaCmd> {
    Some(match tag {
        0 => MetaCmd::Get,
        1 => MetaCmd::Set,
        2 => MetaCmd::SetTooLarge,
        3 => MetaCmd::Delete,
        4 => MetaCmd::Arith,
        5 => MetaCmd::Debug,
        _ => return None,
    })
}

/// Ops encoded back to back: `tag, noreply, fields...` with keys as `u8 len + bytes` and
/// data as `u32 len + bytes`, numbers little-endian.
#[derive(Debug, Default)]
pub struct OpBatch {
    buf: Vec<u8>,
    count: usize,
}

fn store_mode_tag(mode: StoreMode) -> u8 {
    match mode {
        StoreMode::Set => 0,
        StoreMode::Add => 1,
        StoreMode::Replace => 2,
        StoreMode::Append => 3,
        StoreMode::Prepend => 4,
        StoreMode::Cas => 5,
    }
}

fn store_mode(tag: u8) -> Option<StoreMode> {
    Some(match tag {
        0 => StoreMode::Set,
        1 => StoreMode::Add,
        2 => StoreMode::Replace,
        3 => StoreMode::Append,
        4 => StoreMode::Prepend,
        5 => StoreMode::Cas,
        _ => return None,
    })
}

impl OpBatch {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
    }

    /// Gives back memory beyond `bytes` (after a batch that carried large values).
    pub fn shrink_to(&mut self, bytes: usize) {
        self.buf.shrink_to(bytes);
    }

    /// Bytes held (used to bound a round's size).
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends `op`; returns its index in the batch.
    pub fn push(&mut self, op: &Op<'_>, noreply: bool) -> usize {
        let nr = u8::from(noreply);
        let mut w = Writer::new(&mut self.buf);
        match *op {
            Op::Get { key, cas, touch } => {
                w.u8(0).u8(nr).u8(u8::from(cas)).u8(u8::from(touch.is_some()));
                w.u32(touch.unwrap_or(0) as u32).key(key);
            }
            Op::Store { mode, key, flags, exptime, data, cas } => {
                w.u8(1).u8(nr).u8(store_mode_tag(mode));
                w.u32(flags).u32(exptime as u32).u64(cas).key(key).bytes(data);
            }
            Op::TooLarge { mode, key } => {
                w.u8(2).u8(nr).u8(store_mode_tag(mode)).key(key);
            }
            Op::Delete { key } => {
                w.u8(3).u8(nr).key(key);
            }
            Op::Arith { key, incr, delta } => {
                w.u8(4).u8(nr).u8(u8::from(incr)).u64(delta).key(key);
            }
            Op::Touch { key, exptime } => {
                w.u8(5).u8(nr).u32(exptime as u32).key(key);
            }
            Op::FlushAll { delay, reply } => {
                w.u8(6).u8(nr).u8(u8::from(reply)).u32(delay as u32);
            }
            Op::Meta(MetaOp { cmd, key, flags, data }) => {
                w.u8(7).u8(nr).u8(meta_cmd_tag(cmd)).key(key).bytes(flags).bytes(data);
            }
        }
        self.count += 1;
        self.count - 1
    }

    /// The encoded ops (to send to another node, or to keep).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The ops of another batch from byte offset `from` (an [`OpIter::position`]) on.
    pub fn tail(&self, from: usize) -> OpBatch {
        let from = from.min(self.buf.len());
        OpBatch { buf: self.buf[from..].to_vec(), count: self.iter_from(from).count() }
    }

    /// The ops encoded in `bytes` (received from another node), checked whole: None if
    /// any op does not decode.
    pub fn from_bytes(bytes: Vec<u8>) -> Option<OpBatch> {
        let mut it = OpIter { r: Reader::new(&bytes) };
        let mut count = 0;
        while !it.r.is_done() {
            it.decode()?;
            count += 1;
        }
        Some(OpBatch { buf: bytes, count })
    }

    /// Decodes the ops in order, with their `noreply` flags.
    pub fn iter(&self) -> OpIter<'_> {
        self.iter_from(0)
    }

    /// Decodes the ops from byte offset `from` (0, or an [`OpIter::position`] of this
    /// batch).
    pub fn iter_from(&self, from: usize) -> OpIter<'_> {
        OpIter { r: Reader::at(&self.buf, from) }
    }
}

/// Iterator over an [`OpBatch`].
pub struct OpIter<'a> {
    r: Reader<'a>,
}

impl<'a> OpIter<'a> {
    /// Byte offset of the next op (where [`OpBatch::iter_from`] resumes).
    pub fn position(&self) -> usize {
        self.r.position()
    }

    fn decode(&mut self) -> Option<(Op<'a>, bool)> {
        let r = &mut self.r;
        let tag = r.u8()?;
        let noreply = r.u8()? != 0;
        let op = match tag {
            0 => {
                let cas = r.u8()? != 0;
                let has_touch = r.u8()? != 0;
                let exptime = r.u32()? as i32;
                Op::Get { key: r.key()?, cas, touch: has_touch.then_some(exptime) }
            }
            1 => {
                let mode = store_mode(r.u8()?)?;
                let (flags, exptime, cas) = (r.u32()?, r.u32()? as i32, r.u64()?);
                Op::Store { mode, key: r.key()?, flags, exptime, data: r.bytes()?, cas }
            }
            2 => Op::TooLarge { mode: store_mode(r.u8()?)?, key: r.key()? },
            3 => Op::Delete { key: r.key()? },
            4 => {
                let incr = r.u8()? != 0;
                let delta = r.u64()?;
                Op::Arith { key: r.key()?, incr, delta }
            }
            5 => {
                let exptime = r.u32()? as i32;
                Op::Touch { key: r.key()?, exptime }
            }
            6 => {
                let reply = r.u8()? != 0;
                Op::FlushAll { delay: r.u32()? as i32, reply }
            }
            7 => {
                let cmd = meta_cmd(r.u8()?)?;
                Op::Meta(MetaOp { cmd, key: r.key()?, flags: r.bytes()?, data: r.bytes()? })
            }
            _ => return None,
        };
        Some((op, noreply))
    }
}

impl<'a> Iterator for OpIter<'a> {
    type Item = (Op<'a>, bool);
    fn next(&mut self) -> Option<Self::Item> {
        if self.r.is_done() {
            return None;
        }
        let decoded = self.decode();
        debug_assert!(decoded.is_some(), "an OpBatch only holds what push encoded");
        if decoded.is_none() {
            // Stop at a damaged op (an OpBatch only holds what push encoded).
            self.r = Reader::at(&[], 0);
        }
        decoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_op() {
        let ops = [
            Op::Get { key: b"a", cas: true, touch: Some(-5) },
            Op::Get { key: b"b", cas: false, touch: None },
            Op::Store { mode: StoreMode::Cas, key: b"k", flags: 7, exptime: -1, data: b"xyz", cas: 99 },
            Op::TooLarge { mode: StoreMode::Set, key: b"big" },
            Op::Delete { key: b"d" },
            Op::Arith { key: b"n", incr: false, delta: u64::MAX },
            Op::Touch { key: b"t", exptime: 30 },
            Op::FlushAll { delay: 10, reply: false },
            Op::Meta(MetaOp { cmd: MetaCmd::Set, key: b"m", flags: b" T10 c", data: b"val" }),
            Op::Meta(MetaOp { cmd: MetaCmd::Debug, key: b"a2V5", flags: b" b", data: b"" }),
        ];
        let mut batch = OpBatch::default();
        for (i, op) in ops.iter().enumerate() {
            assert_eq!(batch.push(op, i % 2 == 0), i);
        }
        let decoded: Vec<_> = batch.iter().collect();
        assert_eq!(decoded.len(), ops.len());
        // Resuming at any op's position decodes the rest.
        let mut it = batch.iter();
        for skip in 0..ops.len() {
            let rest: Vec<_> = batch.iter_from(it.position()).map(|(op, _)| format!("{op:?}")).collect();
            let want: Vec<_> = ops[skip..].iter().map(|op| format!("{op:?}")).collect();
            assert_eq!(rest, want, "resuming after {skip} ops");
            it.next();
        }
        assert_eq!(batch.iter_from(it.position()).count(), 0);
        // Bytes round-trip, checked; a tail is the ops from a position on.
        let copy = OpBatch::from_bytes(batch.as_bytes().to_vec());
        assert_eq!(copy.as_ref().map(|b| (b.len(), b.as_bytes() == batch.as_bytes())), Some((ops.len(), true)));
        let mut second = batch.iter();
        second.next();
        assert_eq!(batch.tail(second.position()).len(), ops.len() - 1);
        let mut damaged = batch.as_bytes().to_vec();
        damaged.truncate(damaged.len() - 1);
        assert!(OpBatch::from_bytes(damaged).is_none());
        assert!(OpBatch::from_bytes(vec![9, 0]).is_none());
        for (i, ((op, noreply), original)) in decoded.iter().zip(ops.iter()).enumerate() {
            assert_eq!(*noreply, i % 2 == 0);
            assert_eq!(format!("{op:?}"), format!("{original:?}"));
        }
    }
}
