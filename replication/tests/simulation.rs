//! A deterministic simulation of 3- and 5-node replica groups: real `Group`s over
//! in-memory durable storage, a seeded random network that delays (so reorders), drops
//! and partitions messages, and nodes that crash (losing what they had not synced,
//! sometimes leaving a torn write) and restart from their log and snapshot. Clients
//! propose effect batches decided on the leader, under a per-key latch.
//!
//! Checked throughout: no two nodes apply different entries at the same index (State
//! Machine Safety), and two nodes at the same applied index hold identical stores. At
//! the end, after healing: every node holds exactly the store made by applying the
//! committed log in order, and every acknowledged write is in that log.

#![allow(clippy::field_reassign_with_default)] // raft-rs messages are built field by field

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::{config, digest, seeds, send_snapshot, shard, torn_bytes, victim, Network};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringcache_core::effect::{Effect, EffectBatch, PutValue};
use ringcache_core::shard::{Op, Shard};
use ringcache_core::store::StoreMode;
use ringcache_replication::durable::MemoryDurable;
use ringcache_replication::envelope::Envelope;
use ringcache_replication::group::{ConfChangeType, Group, Outgoing, Output, Ticket};
use ringcache_replication::stamp;

const KEYS: usize = 24;

struct Node {
    id: u64,
    group: Option<Group<MemoryDurable>>,
    /// The storage of a crashed node, until it restarts.
    down: Option<(MemoryDurable, u64)>,
}

struct Sim {
    rng: ChaCha8Rng,
    step: u64,
    nodes: Vec<Node>,
    voters: Vec<u64>,
    net: Network,
    /// Every entry applied anywhere: index -> term.
    applied_terms: BTreeMap<u64, u64>,
    /// Every proposal: (index, term) -> its encoded effect batch.
    proposals: HashMap<(u64, u64), Vec<u8>>,
    /// Store digests seen at an applied index.
    digests: HashMap<u64, (u64, usize)>,
    /// Proposals waiting for their outcome on the leader that made them, with the keys latched.
    pending: Vec<(u64, Ticket, Vec<Vec<u8>>)>,
    acknowledged: Vec<Ticket>,
    /// Proposals lost to a leader change (a new leader's entry at their index), and
    /// those whose outcome the proposer could not learn (it stepped down, crashed or
    /// was replaced by a snapshot).
    lost: usize,
    unknown: usize,
    out: Output,
    crashes: usize,
    restarts: usize,
}

impl Sim {
    fn new(seed: u64, n: u64) -> Self {
        let voters: Vec<u64> = (1..=n).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nodes = voters
            .iter()
            .map(|&id| {
                let group = Group::open(config(id, &mut rng), MemoryDurable::default(), shard(), &voters, 1);
                Node { id, group: Some(group.unwrap_or_else(|e| panic!("open {id}: {e}"))), down: None }
            })
            .collect();
        Sim {
            rng,
            step: 0,
            nodes,
            voters,
            net: Network::new(0.05),
            applied_terms: BTreeMap::new(),
            proposals: HashMap::new(),
            digests: HashMap::new(),
            pending: Vec::new(),
            acknowledged: Vec::new(),
            lost: 0,
            unknown: 0,
            out: Output::default(),
            crashes: 0,
            restarts: 0,
        }
    }

    fn now(&self) -> u32 {
        1 + (self.step / 10) as u32
    }

    fn leader(&self) -> Option<usize> {
        self.nodes.iter().position(|n| n.group.as_ref().is_some_and(|g| g.is_leader()))
    }

    fn send(&mut self, from: u64, to: u64, envelope: Envelope) {
        self.net.send(&mut self.rng, self.step, from, to, &envelope);
    }

    /// Runs node `i`'s Ready loop and handles what it produced.
    fn process(&mut self, i: usize) {
        let now = self.now();
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let id = self.nodes[i].id;
        let Some(group) = self.nodes[i].group.as_mut() else { return };
        if let Err(e) = group.process(now, &mut out) {
            panic!("node {id} failed: {e}");
        }
        let applied = group.applied();
        for entry in &out.applied {
            if let Some(&term) = self.applied_terms.get(&entry.index) {
                assert_eq!(term, entry.term, "node {id} applied a different entry at index {}", entry.index);
            }
            self.applied_terms.insert(entry.index, entry.term);
        }
        if !out.applied.is_empty() {
            let state = digest(group.shard(), now);
            let seen = *self.digests.entry(applied).or_insert(state);
            assert_eq!(seen, state, "node {id} differs from another replica at applied index {applied}");
        }
        // The leader's clients learn their outcome once their entry applies.
        for entry in &out.applied {
            self.pending.retain(|(leader, ticket, _)| {
                if *leader != id || ticket.index != entry.index {
                    return true;
                }
                if ticket.term == entry.term {
                    self.acknowledged.push(*ticket);
                } else {
                    self.lost += 1;
                }
                false
            });
        }
        if out.stepped_down {
            // No longer the leader: what it proposed and has not applied has an unknown
            // outcome (a real server answers those clients with an error).
            let before = self.pending.len();
            self.pending.retain(|(leader, ..)| *leader != id);
            self.unknown += before - self.pending.len();
        }
        if let Some(index) = out.restored {
            // Replaced by the leader's snapshot: the outcome of what it had proposed up
            // to there is unknown (a real server answers those clients with an error).
            let before = self.pending.len();
            self.pending.retain(|(leader, ticket, _)| *leader != id || ticket.index > index);
            self.unknown += before - self.pending.len();
        }
        let mut snapshots = Vec::new();
        for m in out.messages.drain(..) {
            match m {
                Outgoing::Raft(msg) => self.send(id, msg.to, Envelope::Raft(msg)),
                Outgoing::Snapshot { message, index, term, total } => snapshots.push((message, index, term, total)),
            }
        }
        for (message, index, term, total) in snapshots {
            if let Some(g) = self.nodes[i].group.as_mut() {
                send_snapshot(g, &mut self.net, &mut self.rng, self.step, id, message, (index, term, total));
            }
        }
        self.out = out;
    }

    fn deliver(&mut self) {
        for m in self.net.due(self.step) {
            let Some(node) = self.nodes.iter_mut().find(|n| n.id == m.to) else { continue };
            let Some(group) = node.group.as_mut() else { continue };
            match m.envelope() {
                Envelope::Raft(msg) => group.step(msg),
                Envelope::Chunk(chunk) => {
                    if let Err(e) = group.receive_chunk(chunk) {
                        panic!("node {}: {e}", m.to);
                    }
                }
                other => panic!("no jobs are forwarded here: {other:?}"),
            }
        }
    }

    /// A client batch on the leader: up to 8 ops on keys not latched by a write in
    /// flight, decided against the leader's store.
    fn propose(&mut self) {
        let Some(i) = self.leader() else { return };
        if !self.nodes[i].group.as_ref().is_some_and(|g| g.can_decide()) {
            return;
        }
        let now = self.now();
        let id = self.nodes[i].id;
        let latched: HashSet<Vec<u8>> =
            self.pending.iter().filter(|(l, ..)| *l == id).flat_map(|(_, _, keys)| keys.iter().cloned()).collect();
        let mut batch = EffectBatch::default();
        let mut keys = Vec::new();
        let ops = self.rng.gen_range(1..=8);
        for _ in 0..ops {
            let key = format!("key:{}", self.rng.gen_range(0..KEYS)).into_bytes();
            if latched.contains(&key) || keys.contains(&key) {
                continue;
            }
            let value = format!("v{}-{}", self.step, self.rng.gen_range(0..1000)).into_bytes();
            let choice = self.rng.gen_range(0..10);
            let Some(group) = self.nodes[i].group.as_mut() else { return };
            let cas_now = group.shard().store().peek(&key, now).map_or(0, |(item, _)| item.cas);
            let op = match choice {
                0..=2 => Op::Store { mode: StoreMode::Set, key: &key, flags: 1, exptime: 0, data: &value, cas: 0 },
                3 => Op::Store { mode: StoreMode::Add, key: &key, flags: 2, exptime: 100_000, data: &value, cas: 0 },
                4 => Op::Store { mode: StoreMode::Cas, key: &key, flags: 3, exptime: 0, data: &value, cas: cas_now },
                5 => Op::Store { mode: StoreMode::Append, key: &key, flags: 0, exptime: 0, data: b"+", cas: 0 },
                6 => Op::Delete { key: &key },
                7 => Op::Touch { key: &key, exptime: 200_000 },
                8 => Op::Store { mode: StoreMode::Set, key: &key, flags: 0, exptime: 0, data: b"10", cas: 0 },
                _ => Op::Arith { key: &key, incr: true, delta: 3 },
            };
            let mut key_buf = [0u8; ringcache_core::protocol::KEY_MAX_LENGTH];
            let decision = group.shard_mut().decide(&op, &mut key_buf, now);
            if let Some(effect) = decision.effect {
                batch.push(&effect);
                keys.push(key.clone());
            }
        }
        if batch.is_empty() {
            return;
        }
        let Some(group) = self.nodes[i].group.as_mut() else { return };
        if let Ok(ticket) = group.propose(&batch) {
            let mut bytes = Vec::new();
            batch.encode_into(&mut bytes);
            self.proposals.insert((ticket.index, ticket.term), bytes);
            self.pending.push((id, ticket, keys));
        }
    }

    fn faults(&mut self) {
        let roll = self.rng.gen_range(0..1000);
        let n = self.nodes.len();
        if roll < 6 {
            // Partition a node away (the leader half of the time) for a while.
            let leader = self.leader();
            let who = self.nodes[victim(&mut self.rng, leader, n, 0.5)].id;
            let until = self.step + self.rng.gen_range(20..200);
            self.net.isolate(who, until);
        } else if roll < 10 {
            // Crash a node (never more than a minority at once).
            let down = self.nodes.iter().filter(|n| n.group.is_none()).count();
            if down + 1 > (n - 1) / 2 {
                return;
            }
            let leader = self.leader();
            let i = victim(&mut self.rng, leader, n, 0.5);
            self.crash(i);
        }
    }

    fn crash(&mut self, i: usize) {
        let Some(group) = self.nodes[i].group.take() else { return };
        let mut durable = group.into_durable();
        durable.crash(&torn_bytes(&mut self.rng));
        let back_at = self.step + self.rng.gen_range(10..150);
        self.nodes[i].down = Some((durable, back_at));
        let id = self.nodes[i].id;
        let before = self.pending.len();
        self.pending.retain(|(leader, ..)| *leader != id);
        self.unknown += before - self.pending.len();
        self.crashes += 1;
    }

    fn restart_due(&mut self, all: bool) {
        let now = self.now();
        for i in 0..self.nodes.len() {
            let due = self.nodes[i].down.as_ref().is_some_and(|(_, at)| all || *at <= self.step);
            if !due {
                continue;
            }
            let Some((durable, _)) = self.nodes[i].down.take() else { continue };
            let id = self.nodes[i].id;
            let group = Group::open(config(id, &mut self.rng), durable, shard(), &self.voters, now);
            self.nodes[i].group = Some(group.unwrap_or_else(|e| panic!("restart {id}: {e}")));
            self.restarts += 1;
        }
    }

    fn run_step(&mut self, faults: bool, propose: bool) {
        self.step += 1;
        if faults {
            self.faults();
        }
        self.restart_due(!faults);
        for node in &mut self.nodes {
            if let Some(g) = node.group.as_mut() {
                g.tick();
            }
        }
        self.deliver();
        if propose && self.rng.gen_bool(0.5) {
            self.propose();
        }
        for i in 0..self.nodes.len() {
            self.process(i);
        }
    }

    /// Heals everything and runs until every node has applied the same index as the
    /// leader's commit.
    fn settle(&mut self) {
        self.net.heal();
        for _ in 0..3000 {
            self.run_step(false, false);
            let statuses: Vec<_> = self.nodes.iter().filter_map(|n| n.group.as_ref().map(|g| g.status())).collect();
            let Some(leader) = statuses.iter().find(|s| s.role == raft::StateRole::Leader) else { continue };
            let done = leader.commit == leader.last_index
                && statuses.iter().all(|s| s.applied == leader.commit && s.leader == leader.node_id);
            if self.pending.is_empty() && done {
                return;
            }
        }
        let statuses: Vec<_> = self.nodes.iter().map(|n| n.group.as_ref().map(|g| g.status())).collect();
        panic!("the group did not settle: pending {:?}\n{statuses:#?}", self.pending);
    }

    /// The store made by applying the committed log in index order.
    fn model(&self) -> Shard {
        let mut model = shard();
        let now = self.now();
        for (&index, &term) in &self.applied_terms {
            let Some(bytes) = self.proposals.get(&(index, term)) else { continue };
            let effects = EffectBatch::decode(bytes).unwrap_or_else(|e| panic!("entry {index}: {e:?}"));
            for (position, effect) in effects.enumerate() {
                model.apply(&effect.stamped(stamp(index, position)), now);
            }
        }
        model
    }
}

fn simulate(seed: u64, nodes: u64, steps: u64) {
    let mut sim = Sim::new(seed, nodes);
    for _ in 0..steps {
        sim.run_step(true, true);
    }
    sim.settle();
    let now = sim.now();
    let model = digest(&sim.model(), now);
    assert!(model.1 > 0, "seed {seed}: the workload left items");
    for node in &sim.nodes {
        let group = node.group.as_ref().unwrap_or_else(|| panic!("node {} is up after settling", node.id));
        assert_eq!(digest(group.shard(), now), model, "seed {seed}: node {} differs from the committed log", node.id);
    }
    for ticket in &sim.acknowledged {
        assert_eq!(
            sim.applied_terms.get(&ticket.index),
            Some(&ticket.term),
            "seed {seed}: acknowledged {ticket:?} lost"
        );
    }
    let taken: u64 = sim.nodes.iter().filter_map(|n| n.group.as_ref()).map(|g| g.stats().snapshots_taken).sum();
    let installed: u64 = sim.nodes.iter().filter_map(|n| n.group.as_ref()).map(|g| g.stats().snapshots_installed).sum();
    eprintln!(
        "seed {seed}, {nodes} nodes: {} entries, {} acknowledged, {} lost to leader changes, {} unknown, {} crashes, {} snapshots taken, {} installed (since the last restarts)",
        sim.applied_terms.len(),
        sim.acknowledged.len(),
        sim.lost,
        sim.unknown,
        sim.crashes,
        taken,
        installed
    );
    assert!(sim.acknowledged.len() > 100, "seed {seed}: the workload made progress");
}

#[test]
fn three_nodes_under_drops_partitions_and_crashes() {
    for seed in seeds(0, 6) {
        simulate(seed, 3, 3000);
    }
}

#[test]
fn five_nodes_under_drops_partitions_and_crashes() {
    for seed in seeds(100, 4) {
        simulate(seed, 5, 3000);
    }
}

#[test]
fn a_restarted_node_recovers_from_its_log_and_snapshot_alone() {
    // No network after the crash: what the node holds comes from its own storage.
    let mut sim = Sim::new(7, 3);
    sim.net.drop_rate = 0.0;
    for _ in 0..600 {
        sim.run_step(false, true);
    }
    sim.settle();
    let now = sim.now();
    let i = sim.leader().unwrap_or(0);
    let before = sim.nodes[i].group.as_ref().map_or(0, |g| g.applied());
    assert!(before > 50);
    assert!(sim.nodes[i].group.as_ref().is_some_and(|g| g.stats().snapshots_taken > 0), "the log was compacted");
    sim.crash(i);
    let (durable, _) = sim.nodes[i].down.take().unwrap_or_else(|| panic!("crashed"));
    let reopened = Group::open(config(sim.nodes[i].id, &mut sim.rng), durable, shard(), &sim.voters, now);
    let mut group = reopened.unwrap_or_else(|e| panic!("reopen: {e}"));
    let mut out = Output::default();
    // Alone, it can apply what its log says was committed.
    group.process(now, &mut out).unwrap_or_else(|e| panic!("{e}"));
    // It knows the commit index it last synced (commit-only changes are not synced on
    // their own), so it may be a little behind; at the index it reached, its store is
    // what every replica held there.
    let applied = group.applied();
    assert!(applied > 50 && applied <= before, "applied {applied} of {before}");
    assert_eq!(sim.digests.get(&applied), Some(&digest(group.shard(), now)), "rebuilt from the snapshot and the log");
}

#[test]
fn puts_carry_the_stamp_of_their_log_position() {
    let mut sim = Sim::new(11, 3);
    sim.net.drop_rate = 0.0;
    for _ in 0..100 {
        sim.run_step(false, false);
    }
    sim.settle();
    let i = sim.leader().unwrap_or_else(|| panic!("a leader was elected"));
    let mut batch = EffectBatch::default();
    for key in [&b"a"[..], b"b"] {
        let lease = ringcache_core::store::item::Lease::NONE;
        batch.push(&Effect::Put { key, flags: 0, expires_at: 0, value: PutValue::Bytes(b"v"), cas: 0, lease });
    }
    let ticket = sim.nodes[i].group.as_mut().and_then(|g| g.propose(&batch).ok());
    let ticket = ticket.unwrap_or_else(|| panic!("the leader takes proposals"));
    sim.settle();
    let now = sim.now();
    for node in &sim.nodes {
        let shard = node.group.as_ref().map(|g| g.shard());
        let cas = |key: &[u8]| shard.and_then(|s| s.store().peek(key, now)).map(|(item, _)| item.cas);
        assert_eq!(cas(b"a"), Some(stamp(ticket.index, 0)), "node {}", node.id);
        assert_eq!(cas(b"b"), Some(stamp(ticket.index, 1)), "node {}", node.id);
    }
}

/// Proposes `changes` on the leader (retrying while a leadership change or another
/// change is under way) and runs until every node has the configuration wanted.
fn change_membership(sim: &mut Sim, changes: &[(ConfChangeType, u64)], want_voters: &[u64], want_learners: &[u64]) {
    for _ in 0..200 {
        if let Some(i) = sim.leader() {
            if let Some(group) = sim.nodes[i].group.as_mut() {
                let _ = group.change_membership(changes, Vec::new());
            }
        }
        for _ in 0..50 {
            sim.run_step(false, true);
        }
        let done = sim.nodes.iter().filter_map(|n| n.group.as_ref()).all(|g| {
            let s = g.status();
            let (mut voters, mut learners) = (s.voters.clone(), s.learners.clone());
            voters.sort_unstable();
            learners.sort_unstable();
            voters == want_voters && learners == want_learners
        });
        if done {
            return;
        }
    }
    panic!("membership change {changes:?} did not complete");
}

#[test]
fn nodes_join_by_snapshot_and_leave_while_writes_go_on() {
    let mut sim = Sim::new(21, 3);
    sim.net.drop_rate = 0.02;
    for _ in 0..800 {
        sim.run_step(false, true);
    }
    // Node 4 starts empty, knowing no one; the leader adds it as a learner.
    let group = Group::open(config(4, &mut sim.rng), MemoryDurable::default(), shard(), &[], sim.now());
    sim.nodes.push(Node { id: 4, group: Some(group.unwrap_or_else(|e| panic!("open 4: {e}"))), down: None });
    change_membership(&mut sim, &[(ConfChangeType::AddLearnerNode, 4)], &[1, 2, 3], &[4]);
    // Then a voter; then 5 replaces 1 in one joint change.
    change_membership(&mut sim, &[(ConfChangeType::AddNode, 4)], &[1, 2, 3, 4], &[]);
    let group = Group::open(config(5, &mut sim.rng), MemoryDurable::default(), shard(), &[], sim.now());
    sim.nodes.push(Node { id: 5, group: Some(group.unwrap_or_else(|e| panic!("open 5: {e}"))), down: None });
    change_membership(&mut sim, &[(ConfChangeType::AddNode, 5), (ConfChangeType::RemoveNode, 1)], &[2, 3, 4, 5], &[]);
    // Node 1 has left the group: stop it; the others go on, and can lose one more.
    sim.nodes.retain(|n| n.id != 1);
    for _ in 0..300 {
        sim.run_step(false, true);
    }
    let i = sim.nodes.iter().position(|n| n.id == 2).unwrap_or(0);
    sim.crash(i);
    for _ in 0..300 {
        sim.run_step(false, true);
    }
    sim.settle();
    let now = sim.now();
    let model = digest(&sim.model(), now);
    for node in &sim.nodes {
        let group = node.group.as_ref().unwrap_or_else(|| panic!("node {} is up", node.id));
        assert_eq!(digest(group.shard(), now), model, "node {} differs from the committed log", node.id);
    }
    let installed: u64 = sim
        .nodes
        .iter()
        .filter(|n| n.id >= 4)
        .filter_map(|n| n.group.as_ref())
        .map(|g| g.stats().snapshots_installed)
        .sum();
    assert!(installed >= 2, "the new nodes caught up by snapshot ({installed} installed)");
    for ticket in &sim.acknowledged {
        assert_eq!(sim.applied_terms.get(&ticket.index), Some(&ticket.term), "acknowledged {ticket:?} lost");
    }
}

#[test]
fn a_node_added_to_a_young_group_learns_the_whole_membership() {
    // No snapshot has been taken yet: the founding voters must reach the new node anyway
    // (from the founding snapshot), or it would count itself alone.
    let mut sim = Sim::new(33, 3);
    for _ in 0..60 {
        sim.run_step(false, false);
    }
    let group = Group::open(config(4, &mut sim.rng), MemoryDurable::default(), shard(), &[], sim.now());
    sim.nodes.push(Node { id: 4, group: Some(group.unwrap_or_else(|e| panic!("open 4: {e}"))), down: None });
    change_membership(&mut sim, &[(ConfChangeType::AddLearnerNode, 4)], &[1, 2, 3], &[4]);
    change_membership(&mut sim, &[(ConfChangeType::AddNode, 4)], &[1, 2, 3, 4], &[]);
    sim.settle();
}
