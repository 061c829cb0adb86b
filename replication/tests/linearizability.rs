//! Linearizability of a replica group under faults: clients run memcached commands
//! (gets, set, add, cas, append, delete on registers; set, incr, get, delete on
//! counters) against any node of a simulated 3- or 5-node group, through the real
//! `Replica` (followers forward to the leader; reads wait for ReadIndex rounds), while
//! the seeded network drops, delays and partitions and nodes crash and restart. Every
//! invocation and return is recorded per key and checked by `todc-utils`'s `WGLChecker`
//! (Wing & Gong's search with Lowe's memoisation, as Porcupine does) against a
//! sequential model of the commands. An op answered "outcome unknown" (or "no
//! leader") returns, in the history, after everything else with a result that matches
//! anything: it may have happened at any point after it was invoked, or not at all. At
//! the end every node's store is the same.

mod common;

use std::collections::HashMap;

use common::{config, digest, seeds, send_snapshot, shard, torn_bytes, victim, Network};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringcache_core::shard::{Op, OpBatch};
use ringcache_core::store::StoreMode;
use ringcache_replication::durable::MemoryDurable;
use ringcache_replication::envelope::Envelope;
use ringcache_replication::group::{Group, Outgoing};
use ringcache_replication::replica::{JobId, ReadMode, Replica, ReplicaOutput, Writes};
use ringcache_test_support::history::{parse, Cmd, Fate, KeyHistory, Ret};

const REGISTERS: usize = 8;
const COUNTERS: usize = 2;
const NO_LEADER_TICKS: u32 = 60;

struct Node {
    id: u64,
    replica: Option<Replica<MemoryDurable>>,
    down: Option<(MemoryDurable, u64)>,
    /// Jobs forwarded here: this node's job -> (the follower, its job).
    remote: HashMap<JobId, (u64, u64)>,
}

struct Client {
    /// The process its history is recorded under (a new one after an unknown outcome).
    process: usize,
    /// (node, job, key, the op's place in the key's history).
    busy: Option<(u64, JobId, usize, usize, Cmd)>,
    /// Per key: the last value seen with `gets`, and its CAS token.
    seen: HashMap<usize, (Vec<u8>, u64)>,
    seq: u64,
}

struct Sim {
    rng: ChaCha8Rng,
    step: u64,
    nodes: Vec<Node>,
    voters: Vec<u64>,
    net: Network,
    clients: Vec<Client>,
    next_process: usize,
    histories: Vec<KeyHistory>,
    out: ReplicaOutput,
    writes: Writes,
    completed: usize,
    unknown: usize,
    not_run: usize,
    restarts: u64,
}

fn key_name(key: usize) -> Vec<u8> {
    if key < REGISTERS {
        format!("reg:{key}").into_bytes()
    } else {
        format!("ctr:{}", key - REGISTERS).into_bytes()
    }
}

impl Sim {
    fn new(seed: u64, n: u64, clients: usize, writes: Writes) -> Self {
        let voters: Vec<u64> = (1..=n).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nodes = voters
            .iter()
            .map(|&id| {
                let group = Group::open(config(id, &mut rng), MemoryDurable::default(), shard(), &voters, 1)
                    .unwrap_or_else(|e| panic!("open {id}: {e}"));
                Node {
                    id,
                    replica: Some(Replica::new(group, ReadMode::Linearizable, writes, NO_LEADER_TICKS, 0)),
                    down: None,
                    remote: HashMap::new(),
                }
            })
            .collect();
        Sim {
            rng,
            step: 0,
            nodes,
            voters,
            net: Network::new(0.03),
            clients: (0..clients).map(|c| Client { process: c, busy: None, seen: HashMap::new(), seq: 0 }).collect(),
            next_process: clients,
            histories: (0..REGISTERS + COUNTERS).map(|_| KeyHistory::default()).collect(),
            out: ReplicaOutput::default(),
            writes,
            completed: 0,
            unknown: 0,
            not_run: 0,
            restarts: 0,
        }
    }

    fn now(&self) -> u32 {
        1 + (self.step / 10) as u32
    }

    fn index_of(&self, id: u64) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap_or_else(|| panic!("node {id}"))
    }

    /// A client's op is over (answered or lost): record it, or retire the process.
    fn complete(&mut self, c: usize, reply: Option<&[u8]>) {
        let Some((_, _, key, op, cmd)) = self.clients[c].busy.take() else { return };
        let process = self.clients[c].process;
        match reply.map_or(Fate::Unknown, |r| parse(&cmd, r)) {
            Fate::Answered(ret, cas) => {
                if let (Ret::Value(Some(v)), Some(cas)) = (&ret, cas) {
                    self.clients[c].seen.insert(key, (v.clone(), cas));
                }
                self.histories[key].answer(process, op, ret);
                self.completed += 1;
            }
            Fate::NotRun => {
                self.histories[key].withdraw(op);
                self.not_run += 1;
            }
            Fate::Unknown => {
                // The op stays open in the history; the client goes on as a new process.
                self.clients[c].process = self.next_process;
                self.next_process += 1;
                self.unknown += 1;
            }
        }
    }

    fn issue(&mut self, c: usize) {
        let up: Vec<u64> = self.nodes.iter().filter(|n| n.replica.is_some()).map(|n| n.id).collect();
        if up.is_empty() {
            return;
        }
        let node = up[self.rng.gen_range(0..up.len())];
        let key = self.rng.gen_range(0..REGISTERS + COUNTERS);
        let client = &mut self.clients[c];
        client.seq += 1;
        let unique = format!("v{c}.{}", client.seq).into_bytes();
        let name = key_name(key);
        let roll = self.rng.gen_range(0..10);
        let (cmd, token) = if key < REGISTERS {
            match roll {
                0..=2 => (Cmd::Get, 0),
                3 => (Cmd::Set(unique), 0),
                4 => (Cmd::Add(unique), 0),
                5..=6 => match client.seen.get(&key) {
                    Some((v, cas)) => (Cmd::Cas { new: unique, expected: Some(v.clone()) }, *cas),
                    None => (Cmd::Cas { new: unique, expected: None }, 1),
                },
                7..=8 => (Cmd::Append(format!("+{c}.{}", client.seq).into_bytes()), 0),
                _ => (Cmd::Delete, 0),
            }
        } else {
            match roll {
                0..=2 => (Cmd::Get, 0),
                3 => (Cmd::Set(b"10".to_vec()), 0),
                4 => (Cmd::Delete, 0),
                _ => (Cmd::Incr(roll), 0),
            }
        };
        let op = match &cmd {
            Cmd::Get => Op::Get { key: &name, cas: true, touch: None },
            Cmd::Set(v) => Op::Store { mode: StoreMode::Set, key: &name, flags: 0, exptime: 0, data: v, cas: 0 },
            Cmd::Add(v) => Op::Store { mode: StoreMode::Add, key: &name, flags: 0, exptime: 0, data: v, cas: 0 },
            Cmd::Cas { new, .. } => {
                Op::Store { mode: StoreMode::Cas, key: &name, flags: 0, exptime: 0, data: new, cas: token }
            }
            Cmd::Append(d) => Op::Store { mode: StoreMode::Append, key: &name, flags: 0, exptime: 0, data: d, cas: 0 },
            Cmd::Delete => Op::Delete { key: &name },
            Cmd::Incr(d) => Op::Arith { key: &name, incr: true, delta: *d },
        };
        let mut batch = OpBatch::default();
        batch.push(&op, false);
        let i = self.index_of(node);
        let Some(replica) = self.nodes[i].replica.as_mut() else { return };
        let job = replica.submit(batch, 0, 1 << 20, true);
        let op = self.histories[key].call(self.clients[c].process, cmd.clone());
        self.clients[c].busy = Some((node, job, key, op, cmd));
    }

    fn send(&mut self, from: u64, to: u64, envelope: Envelope) {
        self.net.send(&mut self.rng, self.step, from, to, &envelope);
    }

    fn deliver(&mut self) {
        for m in self.net.due(self.step) {
            let i = self.index_of(m.to);
            let Some(replica) = self.nodes[i].replica.as_mut() else { continue };
            match m.envelope() {
                Envelope::Raft(msg) => replica.group_mut().step(msg),
                Envelope::Chunk(chunk) => {
                    if let Err(e) = replica.group_mut().receive_chunk(chunk) {
                        panic!("node {}: {e}", m.to);
                    }
                }
                Envelope::Forward { id, budget, ops } => {
                    let batch = OpBatch::from_bytes(ops).unwrap_or_else(|| panic!("a forwarded batch decodes"));
                    let job = replica.submit(batch, 0, budget as usize, true);
                    self.nodes[i].remote.insert(job, (m.from, id));
                }
                Envelope::ForwardReply { id, resume, ends, out } => {
                    replica.forwarded(JobId(id), out, ends, resume as usize)
                }
            }
        }
    }

    fn poll(&mut self, i: usize) {
        let now = self.now();
        let id = self.nodes[i].id;
        let mut out = std::mem::take(&mut self.out);
        let Some(replica) = self.nodes[i].replica.as_mut() else { return };
        if let Err(e) = replica.poll(now, &mut out) {
            panic!("node {id} failed: {e}");
        }
        let mut snapshots = Vec::new();
        for m in out.messages.drain(..) {
            match m {
                Outgoing::Raft(msg) => self.send(id, msg.to, Envelope::Raft(msg)),
                Outgoing::Snapshot { message, index, term, total } => snapshots.push((message, index, term, total)),
            }
        }
        for (message, index, term, total) in snapshots {
            if let Some(r) = self.nodes[i].replica.as_mut() {
                let net = &mut self.net;
                send_snapshot(r.group_mut(), net, &mut self.rng, self.step, id, message, (index, term, total));
            }
        }
        for f in out.forwards.drain(..) {
            let ops = f.ops.as_bytes().to_vec();
            self.send(id, f.to, Envelope::Forward { id: f.id.0, budget: f.budget as u32, ops });
        }
        for done in out.finished.drain(..) {
            if let Some((follower, their_id)) = self.nodes[i].remote.remove(&done.id) {
                let reply =
                    Envelope::ForwardReply { id: their_id, resume: done.resume as u32, ends: done.ends, out: done.out };
                self.send(id, follower, reply);
                continue;
            }
            let client =
                self.clients.iter().position(|c| matches!(c.busy, Some((n, job, ..)) if n == id && job == done.id));
            if let Some(c) = client {
                assert_eq!(done.ends.len(), 1, "one op, one reply");
                self.complete(c, Some(&done.out));
            }
        }
        self.out = out;
    }

    fn crash(&mut self, i: usize) {
        let Some(replica) = self.nodes[i].replica.take() else { return };
        let mut durable = replica.into_group().into_durable();
        durable.crash(&torn_bytes(&mut self.rng));
        self.nodes[i].down = Some((durable, self.step + self.rng.gen_range(10..150)));
        self.nodes[i].remote.clear();
        let id = self.nodes[i].id;
        for c in 0..self.clients.len() {
            if matches!(self.clients[c].busy, Some((n, ..)) if n == id) {
                self.complete(c, None);
            }
        }
    }

    fn restart_due(&mut self, all: bool) {
        let now = self.now();
        for i in 0..self.nodes.len() {
            if !self.nodes[i].down.as_ref().is_some_and(|(_, at)| all || *at <= self.step) {
                continue;
            }
            let Some((durable, _)) = self.nodes[i].down.take() else { continue };
            let id = self.nodes[i].id;
            let group = Group::open(config(id, &mut self.rng), durable, shard(), &self.voters, now)
                .unwrap_or_else(|e| panic!("restart {id}: {e}"));
            self.restarts += 1;
            let writes = self.writes;
            self.nodes[i].replica =
                Some(Replica::new(group, ReadMode::Linearizable, writes, NO_LEADER_TICKS, self.restarts));
        }
    }

    fn faults(&mut self) {
        let roll = self.rng.gen_range(0..1000);
        let n = self.nodes.len();
        let leader = self.nodes.iter().position(|n| n.replica.as_ref().is_some_and(|r| r.group().is_leader()));
        if roll < 8 {
            // Mostly the leader: a deposed leader that still believes it leads is where
            // stale reads would come from.
            let who = self.nodes[victim(&mut self.rng, leader, n, 0.8)].id;
            let until = self.step + self.rng.gen_range(20..200);
            self.net.isolate(who, until);
        } else if roll < 12 {
            // A pause (a stopped process, a long GC): the others may elect a new leader
            // while a paused leader still believes it leads.
            let who = self.nodes[victim(&mut self.rng, leader, n, 0.8)].id;
            let until = self.step + self.rng.gen_range(20..100);
            self.net.pause(who, until);
        } else if roll < 15 {
            let down = self.nodes.iter().filter(|n| n.replica.is_none()).count();
            if down + 1 > (n - 1) / 2 {
                return;
            }
            let i = victim(&mut self.rng, leader, n, 0.5);
            self.crash(i);
        }
    }

    fn run_step(&mut self, faults: bool, clients: bool) {
        self.step += 1;
        if faults {
            self.faults();
        }
        self.restart_due(!faults);
        for node in &mut self.nodes {
            if let (Some(r), false) = (node.replica.as_mut(), self.net.is_paused(node.id, self.step)) {
                r.tick();
            }
        }
        self.deliver();
        if clients {
            for c in 0..self.clients.len() {
                if self.clients[c].busy.is_none() && self.rng.gen_bool(0.3) {
                    self.issue(c);
                }
            }
        }
        for i in 0..self.nodes.len() {
            if !self.net.is_paused(self.nodes[i].id, self.step) {
                self.poll(i);
            }
        }
    }

    /// Heals everything and runs until every client has its answer and every node has
    /// applied the same index.
    fn settle(&mut self) {
        self.net.heal();
        for _ in 0..5000 {
            self.run_step(false, false);
            let applied: Vec<u64> =
                self.nodes.iter().filter_map(|n| n.replica.as_ref().map(|r| r.group().applied())).collect();
            let leader = self.nodes.iter().find_map(|n| n.replica.as_ref().filter(|r| r.group().is_leader()));
            // Nothing in flight: the leader's log is all committed (async writes too).
            let commit = leader.map(|r| r.group().status()).filter(|s| s.commit == s.last_index).map(|s| s.commit);
            if self.clients.iter().all(|c| c.busy.is_none()) && applied.iter().all(|&a| Some(a) == commit) {
                return;
            }
        }
        panic!("the group did not settle");
    }
}

fn check(seed: u64, nodes: u64, steps: u64) {
    let mut sim = Sim::new(seed, nodes, 6, Writes::Strong);
    for _ in 0..steps {
        sim.run_step(true, true);
    }
    sim.settle();
    for (key, history) in sim.histories.iter().enumerate() {
        assert!(
            history.is_linearizable(),
            "seed {seed}: the history of {} is not linearizable",
            String::from_utf8_lossy(&key_name(key))
        );
    }
    let now = sim.now();
    let stores: Vec<_> =
        sim.nodes.iter().filter_map(|n| n.replica.as_ref().map(|r| digest(r.group().shard(), now))).collect();
    assert!(stores.windows(2).all(|w| w[0] == w[1]), "seed {seed}: replicas differ: {stores:?}");
    eprintln!(
        "seed {seed}, {nodes} nodes: {} ops answered, {} with an unknown outcome, {} found no leader",
        sim.completed, sim.unknown, sim.not_run
    );
    assert!(sim.completed > 50, "seed {seed}: the clients made progress");
}

#[test]
fn three_nodes_are_linearizable_under_faults() {
    for seed in seeds(0, 40) {
        check(seed, 3, 2000);
    }
}

#[test]
fn five_nodes_are_linearizable_under_faults() {
    for seed in seeds(200, 20) {
        check(seed, 5, 2000);
    }
}

#[test]
fn async_replicas_never_keep_a_write_the_group_lost() {
    // Write-behind: answers may be lost with a leader (so no linearizability), but a
    // leader that applied writes that then did not commit rebuilds its store, and every
    // replica ends with the same store.
    for seed in seeds(500, 30) {
        let mut sim = Sim::new(seed, 3, 6, Writes::Async);
        for _ in 0..2000 {
            sim.run_step(true, true);
        }
        sim.settle();
        let now = sim.now();
        let stores: Vec<_> =
            sim.nodes.iter().filter_map(|n| n.replica.as_ref().map(|r| digest(r.group().shard(), now))).collect();
        assert!(stores.windows(2).all(|w| w[0] == w[1]), "seed {seed}: replicas differ: {stores:?}");
        assert!(sim.completed > 50, "seed {seed}: the clients made progress");
    }
}
