//! A snapshot is a store's export ([`ringcache_core::store::Store::export`]) cut into
//! chunks, each an encoded effect batch of about [`CHUNK_BYTES`]: it is written to
//! durable storage in chunks, streamed to a follower in chunks (never as one message),
//! and installed by applying the chunks, in order, to an emptied shard.
//!
//! [`Assembler`] is the receiving side: chunks of one snapshot, identified by the index
//! and term it was taken at, are accepted in order (a few out-of-order ones are held);
//! a chunk of another snapshot starts over (whichever it is: the leader offering it
//! is the one to follow; a new leader's snapshot can be at a lower index than the
//! last one's).

use ringcache_core::effect::{DecodeError, EffectBatch};
use ringcache_core::shard::Shard;

/// The size a chunk is cut at (a chunk can exceed it by one item).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Out-of-order chunks an [`Assembler`] holds before it gives up on a snapshot.
const MAX_HELD: usize = 64;

/// Calls `each` with the chunks of `shard`'s store at relative time `now`; returns how
/// many there were (at least one: an empty store is one empty chunk).
pub fn chunks_of(shard: &Shard, now: u32, mut each: impl FnMut(&[u8])) -> u32 {
    let mut batch = EffectBatch::default();
    let mut bytes = Vec::new();
    let mut count = 0;
    let mut emit = |batch: &mut EffectBatch, count: &mut u32| {
        bytes.clear();
        batch.encode_into(&mut bytes);
        batch.clear();
        each(&bytes);
        *count += 1;
    };
    shard.store().export(now, |effect| {
        batch.push(effect);
        if batch.encoded_len() >= CHUNK_BYTES {
            emit(&mut batch, &mut count);
        }
    });
    if !batch.is_empty() || count == 0 {
        emit(&mut batch, &mut count);
    }
    count
}

/// Applies one chunk to `shard` (which the caller emptied before the first). An item
/// that does not fit this node's memory is forgotten, never invented.
pub fn restore_chunk(shard: &mut Shard, chunk: &[u8], now: u32) -> Result<(), DecodeError> {
    for effect in EffectBatch::decode(chunk)? {
        shard.apply(&effect, now);
    }
    Ok(())
}

/// A snapshot chunk as it travels between peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The snapshot: the index and term it was taken at.
    pub index: u64,
    pub term: u64,
    /// Position of this chunk, from 0.
    pub seq: u32,
    /// How many chunks the snapshot has.
    pub total: u32,
    pub data: Vec<u8>,
}

/// What an [`Assembler`] made of a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Chunks now in order (the first of a new snapshot begins it): write them, in order.
    InOrder(Vec<Chunk>),
    /// Held until the chunks before it arrive.
    Held,
    /// A chunk already seen, or too far ahead: dropped.
    Dropped,
}

/// Puts the chunks of the newest snapshot seen back in order.
#[derive(Debug, Default)]
pub struct Assembler {
    /// (index, term) of the snapshot being assembled.
    current: Option<(u64, u64)>,
    next_seq: u32,
    total: u32,
    held: Vec<Chunk>,
}

impl Assembler {
    /// Takes a chunk.
    pub fn accept(&mut self, chunk: Chunk) -> Accepted {
        let id = (chunk.index, chunk.term);
        match self.current {
            Some(current) if id == current => {}
            _ => {
                *self = Assembler { current: Some(id), next_seq: 0, total: chunk.total, held: Vec::new() };
            }
        }
        if chunk.seq < self.next_seq || chunk.seq >= self.total || chunk.total != self.total {
            return Accepted::Dropped;
        }
        if chunk.seq > self.next_seq {
            if self.held.len() >= MAX_HELD || self.held.iter().any(|c| c.seq == chunk.seq) {
                return Accepted::Dropped;
            }
            self.held.push(chunk);
            return Accepted::Held;
        }
        let mut ready = vec![chunk];
        self.next_seq += 1;
        while let Some(i) = self.held.iter().position(|c| c.seq == self.next_seq) {
            ready.push(self.held.swap_remove(i));
            self.next_seq += 1;
        }
        Accepted::InOrder(ready)
    }

    /// Whether every chunk of snapshot (index, term) has been accepted.
    pub fn is_complete(&self, index: u64, term: u64) -> bool {
        self.current == Some((index, term)) && self.next_seq == self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(index: u64, seq: u32, total: u32) -> Chunk {
        Chunk { index, term: 1, seq, total, data: vec![seq as u8] }
    }

    fn seqs(a: Accepted) -> Vec<u32> {
        match a {
            Accepted::InOrder(c) => c.iter().map(|c| c.seq).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn chunks_come_out_in_order() {
        let mut a = Assembler::default();
        assert_eq!(seqs(a.accept(chunk(5, 0, 4))), vec![0]);
        assert_eq!(a.accept(chunk(5, 2, 4)), Accepted::Held);
        assert_eq!(a.accept(chunk(5, 3, 4)), Accepted::Held);
        assert_eq!(a.accept(chunk(5, 3, 4)), Accepted::Dropped, "a duplicate");
        assert!(!a.is_complete(5, 1));
        assert_eq!(seqs(a.accept(chunk(5, 1, 4))), vec![1, 2, 3]);
        assert!(a.is_complete(5, 1));
        assert_eq!(a.accept(chunk(5, 1, 4)), Accepted::Dropped, "already seen");
    }

    #[test]
    fn another_snapshot_starts_over_whichever_it_is() {
        let mut a = Assembler::default();
        assert_eq!(seqs(a.accept(chunk(5, 0, 3))), vec![0]);
        assert_eq!(a.accept(chunk(9, 1, 2)), Accepted::Held);
        assert!(!a.is_complete(9, 1) && !a.is_complete(5, 1), "5 was dropped for 9");
        assert_eq!(seqs(a.accept(chunk(9, 0, 2))), vec![0, 1]);
        assert!(a.is_complete(9, 1));
        assert!(!a.is_complete(5, 1));
        // A new leader offers an older one: it is the one to take.
        assert_eq!(seqs(a.accept(chunk(7, 0, 1))), vec![0]);
        assert!(a.is_complete(7, 1));
    }
}
