//! What the simulations share: a node's store and configuration, a digest of a store,
//! and a seeded network that delays (so reorders), drops and partitions frames. Every
//! frame goes through the real wire format (`envelope`).

#![allow(dead_code)] // Each test binary uses its own part of this.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use raft::prelude::Message;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use ringcache_core::shard::Shard;
use ringcache_core::store::{CasSource, Store, StoreConfig};
use ringcache_replication::durable::MemoryDurable;
use ringcache_replication::envelope::{self, Envelope};
use ringcache_replication::group::{Group, GroupConfig};

pub const CLOCK_BASE: i64 = 1_000_000;

/// A replicated shard's empty store (stamped CAS, 4 MiB: nothing is evicted).
pub fn shard() -> Shard {
    let config =
        StoreConfig { cas: CasSource::Stamped, clock_base_unix: CLOCK_BASE, ..StoreConfig::with_memory(4 << 20) };
    match Store::new(config) {
        Ok(store) => Shard::new(store, true),
        Err(e) => panic!("store: {e}"),
    }
}

/// An order-independent digest of a store's live items, and how many there are.
pub fn digest(shard: &Shard, now: u32) -> (u64, usize) {
    let (mut sum, mut count) = (0u64, 0usize);
    shard.store().export(now, |e| {
        let mut h = std::hash::DefaultHasher::new();
        format!("{e:?}").hash(&mut h);
        sum = sum.wrapping_add(h.finish());
        count += 1;
    });
    (sum, count)
}

/// A node's configuration: small snapshots (so they happen often) and an election
/// timeout drawn from the simulation's RNG (raft-rs would draw it from an unseeded one).
pub fn config(id: u64, rng: &mut ChaCha8Rng) -> GroupConfig {
    let timeout = rng.gen_range(10..20);
    GroupConfig {
        snapshot_after_bytes: 4 << 10,
        keep_entries: 8,
        election_timeout: Some((timeout, timeout + 1)),
        ..GroupConfig::new(id)
    }
}

/// Garbage a crash may leave where an unfinished write was.
pub fn torn_bytes(rng: &mut ChaCha8Rng) -> Vec<u8> {
    (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect()
}

/// A frame on its way.
pub struct InFlight {
    pub at: u64,
    pub from: u64,
    pub to: u64,
    /// The frame's content, as `envelope::decode` takes it.
    pub frame: Vec<u8>,
}

impl InFlight {
    pub fn envelope(&self) -> Envelope {
        match envelope::decode(&self.frame) {
            Ok((_, e)) => e,
            Err(e) => panic!("a frame did not decode: {e:?}"),
        }
    }
}

/// The simulated network.
#[derive(Default)]
pub struct Network {
    in_flight: Vec<InFlight>,
    /// Nodes cut off from the others (both directions) until the step given.
    isolated: HashMap<u64, u64>,
    /// Nodes paused (a stopped process: frames to it wait) until the step given.
    paused: HashMap<u64, u64>,
    pub drop_rate: f64,
}

impl Network {
    pub fn new(drop_rate: f64) -> Self {
        Network { drop_rate, ..Default::default() }
    }

    pub fn cut_off(&self, a: u64, b: u64, step: u64) -> bool {
        let isolated = |n: u64| self.isolated.get(&n).is_some_and(|&until| until > step);
        isolated(a) || isolated(b)
    }

    pub fn isolate(&mut self, node: u64, until: u64) {
        self.isolated.insert(node, until);
    }

    /// Pauses `node` until step `until`: frames to it wait for it.
    pub fn pause(&mut self, node: u64, until: u64) {
        self.paused.insert(node, until);
    }

    pub fn is_paused(&self, node: u64, step: u64) -> bool {
        self.paused.get(&node).is_some_and(|&until| until > step)
    }

    /// No more partitions, pauses or drops.
    pub fn heal(&mut self) {
        self.isolated.clear();
        self.paused.clear();
        self.drop_rate = 0.0;
    }

    /// Sends `envelope` (dropped at the drop rate or across a partition; delayed 1 to
    /// 4 steps otherwise).
    pub fn send(&mut self, rng: &mut ChaCha8Rng, step: u64, from: u64, to: u64, envelope: &Envelope) {
        if self.cut_off(from, to, step) || rng.gen_bool(self.drop_rate) {
            return;
        }
        let mut frame = Vec::new();
        envelope::encode(&mut frame, 0, envelope);
        let at = step + rng.gen_range(1..=4);
        self.in_flight.push(InFlight { at, from, to, frame: frame[4..].to_vec() });
    }

    /// The frames due at `step` that are not cut off on arrival.
    pub fn due(&mut self, step: u64) -> Vec<InFlight> {
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.in_flight).into_iter().partition(|m| m.at <= step && !self.is_paused(m.to, step));
        self.in_flight = later;
        due.into_iter().filter(|m| !self.cut_off(m.from, m.to, step)).collect()
    }
}

/// The node (index) a fault hits: the leader with probability `leader_bias`, else any.
pub fn victim(rng: &mut ChaCha8Rng, leader: Option<usize>, nodes: usize, leader_bias: f64) -> usize {
    match (rng.gen_bool(leader_bias), leader) {
        (true, Some(l)) => l,
        _ => rng.gen_range(0..nodes),
    }
}

/// Sends a snapshot as the server does: its chunks as frames of their own, then the
/// Raft message announcing it; the leader is told it was delivered.
#[allow(clippy::too_many_arguments)]
pub fn send_snapshot(
    group: &mut Group<MemoryDurable>,
    net: &mut Network,
    rng: &mut ChaCha8Rng,
    step: u64,
    from: u64,
    message: Message,
    (index, term, total): (u64, u64, u32),
) {
    let to = message.to;
    for seq in 0..total {
        if let Ok(Some(chunk)) = group.read_chunk(index, term, seq) {
            net.send(rng, step, from, to, &Envelope::Chunk(chunk));
        }
    }
    net.send(rng, step, from, to, &Envelope::Raft(message));
    group.report_snapshot(to, true);
}

/// Seeds to run: `SIM_SEEDS` (a count) runs more for a soak; CI runs the default.
pub fn seeds(first: u64, default: u64) -> std::ops::Range<u64> {
    let count = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    first..first + count
}
