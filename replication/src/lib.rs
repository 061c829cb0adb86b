//! ringcache's replica groups. Shard *i* of every node in a group forms Raft group *i*;
//! this crate is what one shard runs for its group, with no I/O of its own (as raft-rs,
//! which it drives, has none): the caller hands it ticks, peer messages and the time,
//! and performs what it asks for (write these log records, send these messages).
//!
//! - [`group`]: [`group::Group`], a shard's store driven by its raft-rs `RawNode`: proposals of
//!   effect batches, the Ready loop (persist, send, apply), snapshots, membership.
//! - [`replica`]: a shard's jobs (ops from connections, shards and peers) over its group:
//!   decide under per-key latches on the leader, batch effects into proposals, gate
//!   reads on ReadIndex rounds, forward from followers, answer in request order.
//! - [`log_store`]: the in-memory Raft log (entries since the last compaction, hard state,
//!   configuration) that raft-rs reads through its `Storage` trait.
//! - [`wal`]: the byte format of the write-ahead log and of snapshot files: checksummed
//!   records (crc32c), torn-tail detection.
//! - [`durable`]: what a group needs from durable storage ([`durable::Durable`]), and an
//!   in-memory implementation with crash semantics for tests and simulations.
//! - [`snapshot`]: a store as a stream of chunks (effect batches of `Put`s), and their
//!   assembly on the receiving side.
//! - [`handshake`]: peer authentication with the cluster secret (HMAC challenge-response).
//! - [`envelope`]: the peer wire format: Raft messages and snapshot chunks, framed, per group.
//! - [`drivers`]: the I/O side: [`drivers::file::FileDurable`] keeps a group's log and
//!   snapshots in files.
//!
//! Rules (named in ARCHITECTURE.md):
//! - **Effects, not commands**: the log carries the core's effect batches; applying one
//!   needs no condition and no clock, so every replica applies the same change.
//! - **The log stamps the version**: the CAS of a write is `index << 16 | position` of the
//!   effect in its entry, the same on every replica.
//! - **Durable before acknowledged**: entries and hard state are written (and, with
//!   fsync durability, synced) before any message that acknowledges them is sent.

// raft-rs messages are protobuf structs, built field by field after `default()`.
#![allow(clippy::field_reassign_with_default)]

pub mod drivers;
pub mod durable;
pub mod envelope;
pub mod group;
pub mod handshake;
pub mod log_store;
pub mod replica;
pub mod snapshot;
pub mod wal;

/// The CAS (version) a replicated write gives its item: the log index of its entry and
/// its position in the entry's batch.
pub fn stamp(index: u64, position: usize) -> u64 {
    debug_assert!(position < MAX_EFFECTS_PER_ENTRY);
    (index << 16) | position as u64
}

/// The most effects one log entry can carry (the stamp has 16 bits for the position).
pub const MAX_EFFECTS_PER_ENTRY: usize = 1 << 16;
