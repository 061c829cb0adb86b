//! One shard's replica group on this node: the shard's store driven by a raft-rs
//! `RawNode` whose log carries effect batches.
//!
//! The caller (the shard's executor, or a simulation) owns the loop: it calls
//! [`Group::tick`] on a timer, hands in what peers sent ([`Group::step`],
//! [`Group::receive_chunk`]), proposes the effects its shard decided
//! ([`Group::propose`]), and after any of these calls [`Group::process`], which runs the
//! Ready loop: it writes new entries and hard state to [`Durable`] storage and syncs once
//! (group commit), installs a snapshot from the leader, applies committed entries to the
//! shard (stamping each write's CAS from its index), and fills an [`Output`] with the
//! messages to send and what was applied (so the caller can answer its clients).
//! Nothing here reads a clock: `now` (the shard's relative time) comes in as an argument.
//!
//! Snapshots: once the log has grown by `snapshot_after_bytes` since the last one, the
//! group writes its store as a snapshot (in chunks, to durable storage) and compacts the
//! log behind it. A follower that needs entries the log no longer has is sent that
//! snapshot: [`Outgoing::Snapshot`] asks the caller to stream its chunks
//! ([`Group::read_chunk`]) before the Raft message that announces it.

use std::io;
use std::ops::Range;

use protobuf::Message as _;
use raft::prelude::{
    ConfChange, Entry, EntryType, HardState, Message, MessageType, ReadState, Snapshot, SnapshotMetadata,
};
use raft::{Config, RawNode, ReadOnlyOption, SnapshotStatus};

/// A node's role in its group (raft-rs's), and membership changes (raft-rs's messages).
pub use raft::prelude::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState};
pub use raft::StateRole;
use ringcache_core::effect::{Effect, EffectBatch};
use ringcache_core::shard::Shard;
use ringcache_core::store::Applied;

use crate::durable::{Durable, SnapshotSlot};
use crate::log_store::LogStore;
use crate::snapshot::{self, Accepted, Assembler, Chunk};
use crate::{stamp, MAX_EFFECTS_PER_ENTRY};

/// The index and term of a new group's founding snapshot.
pub const BOOTSTRAP: u64 = 5;

/// How a group runs.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// This node's id in the group (not 0).
    pub node_id: u64,
    /// Ticks without a leader before a follower campaigns (randomised up to twice this).
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// The range `[min, max)` a follower's election timeout is drawn from (raft-rs draws
    /// with its own thread RNG); None: `[election_tick, 2 * election_tick)`. A range of
    /// one value makes the group deterministic (simulations).
    pub election_timeout: Option<(usize, usize)>,
    /// The most entry bytes one append message carries.
    pub max_size_per_msg: u64,
    /// Append messages in flight to one follower (pipelined appends).
    pub max_inflight_msgs: usize,
    /// Reads served under the leader's lease instead of a ReadIndex round.
    pub lease_reads: bool,
    /// Log bytes appended since the last snapshot that make the group take a new one.
    pub snapshot_after_bytes: u64,
    /// Entries kept behind a snapshot, so a follower a little behind gets entries, not
    /// a snapshot.
    pub keep_entries: u64,
}

impl GroupConfig {
    pub fn new(node_id: u64) -> Self {
        GroupConfig {
            node_id,
            election_tick: 10,
            heartbeat_tick: 2,
            election_timeout: None,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            lease_reads: false,
            snapshot_after_bytes: 64 << 20,
            keep_entries: 10_000,
        }
    }
}

/// Something to send to a peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    Raft(Message),
    /// Stream chunks `0..total` of snapshot (index, term) ([`Group::read_chunk`]) to
    /// `message.to`, then send `message`; then report with [`Group::report_snapshot`].
    Snapshot {
        message: Message,
        index: u64,
        term: u64,
        total: u32,
    },
}

/// Where a proposal went in the log: it succeeded if the entry applied at `index` has
/// this `term`, and was lost (a new leader replaced it) if it has another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub index: u64,
    pub term: u64,
}

/// Why a proposal was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This node does not lead the group; the leader it knows of, if any.
    NotLeader { leader: Option<u64> },
    /// More effects than one entry can stamp ([`MAX_EFFECTS_PER_ENTRY`]).
    TooManyEffects,
    /// This node leads but has not yet applied an entry of its own term, so its store
    /// may lack writes committed before it took over: deciding now could be wrong.
    CatchingUp,
    /// Raft dropped it (a leadership transfer is under way).
    Dropped,
}

/// An entry applied to the shard: its effects' results are `Output::results[results]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEntry {
    pub index: u64,
    pub term: u64,
    pub results: Range<usize>,
}

/// What [`Group::process`] produced; the caller empties it ([`Output::clear`]).
#[derive(Debug, Default)]
pub struct Output {
    pub messages: Vec<Outgoing>,
    pub applied: Vec<AppliedEntry>,
    pub results: Vec<Applied>,
    /// ReadIndex answers: a read with this context may be served once `applied` reaches
    /// the index.
    pub reads: Vec<ReadState>,
    /// A snapshot from the leader replaced the store, up to this index: proposals of
    /// this node at or below it that were not reported applied have an unknown outcome.
    pub restored: Option<u64>,
    /// This node stopped leading: its proposals not yet reported applied have an
    /// unknown outcome (they may still commit under the new leader, or be replaced).
    pub stepped_down: bool,
    /// Membership changes applied (the caller adds or drops peer links).
    pub membership: Vec<Membership>,
}

/// A membership change applied at `index`: what changed, the context it was proposed
/// with (the server puts the new nodes' addresses there), and the configuration now.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub index: u64,
    pub term: u64,
    pub changes: Vec<(ConfChangeType, u64)>,
    pub context: Vec<u8>,
    pub conf: ConfState,
}

impl Output {
    pub fn clear(&mut self) {
        self.messages.clear();
        self.applied.clear();
        self.results.clear();
        self.reads.clear();
        self.restored = None;
        self.stepped_down = false;
        self.membership.clear();
    }
}

/// Batching and durability figures of a group.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupStats {
    pub proposals: u64,
    pub effects_proposed: u64,
    pub readies: u64,
    pub entries_persisted: u64,
    pub bytes_persisted: u64,
    pub append_messages: u64,
    pub entries_sent: u64,
    pub bytes_sent: u64,
    pub snapshots_taken: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
}

/// Where the group stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub node_id: u64,
    pub role: StateRole,
    /// The leader this node knows of (0: none).
    pub leader: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    /// The index of the current snapshot.
    pub snapshot: u64,
    /// On the leader: each peer's (id, matched index, next index).
    pub peers: Vec<(u64, u64, u64)>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

/// One shard's replica group (see the module documentation).
pub struct Group<D: Durable> {
    node: RawNode<LogStore>,
    durable: D,
    shard: Shard,
    config: GroupConfig,
    applied: u64,
    bytes_since_snapshot: u64,
    assembler: Assembler,
    stats: GroupStats,
    /// Whether this node led at the last Ready (to report stepping down).
    leading: bool,
    /// A snapshot handed to raft whose chunks must stay staged until the next
    /// [`Group::process`] installs it (chunks of another one are dropped meanwhile).
    stepped_snapshot: Option<(u64, u64)>,
    /// Write-behind: this leader applied its own proposals of term `.0` up to index `.1`
    /// before they committed ([`Group::propose_and_apply`]).
    ahead: Option<(u64, u64)>,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl<D: Durable> Group<D> {
    /// Opens the group on `durable`: recovers its log and snapshot (restoring the
    /// snapshot into `shard`, which must be empty), or, when `durable` is empty and
    /// `bootstrap` names the first voters, starts a new group with them. A node added
    /// later starts with an empty `bootstrap` and gets the leader's snapshot.
    pub fn open(config: GroupConfig, durable: D, shard: Shard, bootstrap: &[u64], now: u32) -> io::Result<Self> {
        Self::open_warm(config, durable, shard, bootstrap, now, None)
    }

    /// As [`Group::open`], with a store that a warm restart brought back as it was at
    /// applied index `store_applied` (what [`Group::close`] answered when it was saved).
    /// The store is kept, and the log applies from there, if the log vouches for that
    /// index (at or after its snapshot, committed); otherwise, and whenever
    /// `store_applied` is None, the store is emptied and rebuilt from the snapshot and
    /// the log: a store the log cannot vouch for is never served.
    pub fn open_warm(
        config: GroupConfig,
        mut durable: D,
        mut shard: Shard,
        bootstrap: &[u64],
        now: u32,
        store_applied: Option<u64>,
    ) -> io::Result<Self> {
        let recovered = durable.recover()?;
        // A store is kept only if it is vouched for by an existing log (below).
        let store_applied = store_applied.filter(|_| recovered.existing);
        if store_applied.is_none() {
            shard.apply(&Effect::Flush { at: None }, now);
        }
        if recovered.torn_bytes > 0 {
            tracing::warn!(
                node = config.node_id,
                bytes = recovered.torn_bytes,
                "dropped a torn write at the end of the log"
            );
        }
        let mut log = recovered.log;
        if !recovered.existing && !bootstrap.is_empty() {
            // A new group: an empty snapshot that names its first voters, at index and
            // term BOOTSTRAP (as TiKV does), so the log starts after it: a node added
            // later, whose log is empty, is sent this (or a later) snapshot and learns
            // the membership from it, never from an entry it could not have.
            let mut meta = SnapshotMetadata::default();
            meta.index = BOOTSTRAP;
            meta.term = BOOTSTRAP;
            meta.mut_conf_state().voters = bootstrap.to_vec();
            let mut hs = HardState::default();
            hs.term = BOOTSTRAP;
            hs.commit = BOOTSTRAP;
            let total = write_snapshot(&mut durable, &shard, &meta, &hs, &[], now)?;
            log.set_hard_state(hs);
            log.set_snapshot(meta, total);
        }
        let mut applied = log.snapshot_metadata().map_or(0, |(meta, _)| meta.index);
        let vouched = store_applied.filter(|&a| a >= applied && a <= log.hard_state().commit && a <= log.last_index());
        match (vouched, log.snapshot_metadata()) {
            (Some(a), _) => {
                tracing::info!(node = config.node_id, applied = a, "kept the store a warm restart brought back");
                applied = a;
            }
            (None, Some((meta, total))) if recovered.existing => {
                let (index, term) = (meta.index, meta.term);
                restore(&mut shard, &durable, index, term, total, now)?;
            }
            _ => {}
        }
        let raft_config = Config {
            id: config.node_id,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            min_election_tick: config.election_timeout.map_or(0, |(min, _)| min),
            max_election_tick: config.election_timeout.map_or(0, |(_, max)| max),
            applied,
            max_size_per_msg: config.max_size_per_msg,
            max_inflight_msgs: config.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            read_only_option: if config.lease_reads { ReadOnlyOption::LeaseBased } else { ReadOnlyOption::Safe },
            ..Default::default()
        };
        raft_config.validate().map_err(|e| io::Error::other(format!("raft configuration: {e}")))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = RawNode::new(&raft_config, log, &logger).map_err(|e| io::Error::other(format!("raft: {e}")))?;
        Ok(Group {
            node,
            durable,
            shard,
            config,
            applied,
            bytes_since_snapshot: 0,
            assembler: Assembler::default(),
            stats: GroupStats::default(),
            leading: false,
            stepped_snapshot: None,
            ahead: None,
        })
    }

    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// The shard, to decide commands against (a leader) and serve reads from. Changes
    /// to the store must go through the log: apply nothing here.
    pub fn shard_mut(&mut self) -> &mut Shard {
        &mut self.shard
    }

    pub fn durable(&self) -> &D {
        &self.durable
    }

    /// Gives up the group, returning its storage (a simulated crash keeps it).
    pub fn into_durable(self) -> D {
        self.durable
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// Whether this node may decide commands against its store: it leads, and it has
    /// applied an entry of its own term (so every write committed before it took over
    /// is in the store). Rule: decide only when this holds, and keep a key latched from
    /// deciding a write to it until that write's entry is applied.
    pub fn can_decide(&self) -> bool {
        self.is_leader() && self.node.store().term_of(self.applied) == Some(self.node.raft.term)
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        Some(self.node.raft.leader_id).filter(|&id| id != 0)
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn stats(&self) -> GroupStats {
        self.stats
    }

    pub fn status(&self) -> GroupStatus {
        let raft = &self.node.raft;
        let mut peers: Vec<(u64, u64, u64)> = if raft.state == StateRole::Leader {
            raft.prs().iter().map(|(&id, pr)| (id, pr.matched, pr.next_idx)).collect()
        } else {
            Vec::new()
        };
        peers.sort_unstable();
        let store = self.node.store();
        let conf = store.conf_state();
        GroupStatus {
            node_id: self.config.node_id,
            role: raft.state,
            leader: raft.leader_id,
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: self.applied,
            first_index: store.first_index(),
            last_index: raft.raft_log.last_index(),
            snapshot: store.snapshot_metadata().map_or(0, |(m, _)| m.index),
            peers,
            voters: sorted(&conf.voters),
            learners: sorted(&conf.learners),
        }
    }

    /// One tick of the group's logical clock (elections and heartbeats count ticks).
    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// Starts an election now (tests, and leadership transfer by hand).
    pub fn campaign(&mut self) {
        if let Err(e) = self.node.campaign() {
            tracing::debug!(node = self.config.node_id, "campaign refused: {e}");
        }
    }

    /// Proposes a batch of effects (decided by this node, the leader).
    pub fn propose(&mut self, batch: &EffectBatch) -> Result<Ticket, Refused> {
        if batch.len() > MAX_EFFECTS_PER_ENTRY {
            return Err(Refused::TooManyEffects);
        }
        if !self.is_leader() {
            return Err(Refused::NotLeader { leader: self.leader() });
        }
        if !self.can_decide() {
            return Err(Refused::CatchingUp);
        }
        let mut data = Vec::with_capacity(batch.encoded_len());
        batch.encode_into(&mut data);
        self.node.propose(Vec::new(), data).map_err(|_| Refused::Dropped)?;
        self.stats.proposals += 1;
        self.stats.effects_proposed += batch.len() as u64;
        Ok(Ticket { index: self.node.raft.raft_log.last_index(), term: self.node.raft.term })
    }

    /// Write-behind (`async` replication): proposes `batch` and applies it to this
    /// leader's store at once, stamped as the log will stamp it; `results` gets each
    /// effect's result. When the entry commits it is not applied again. If it never
    /// commits (this node stops leading first, or a new leader replaces it), the store
    /// is rebuilt from the snapshot and the committed log, so no replica keeps a write
    /// the group lost.
    pub fn propose_and_apply(
        &mut self,
        batch: &EffectBatch,
        now: u32,
        results: &mut Vec<Applied>,
    ) -> Result<Ticket, Refused> {
        if self.ahead.is_some_and(|(term, upto)| term != self.node.raft.term && upto > self.applied) {
            // Not yet dropped (no Ready since the term changed): cannot decide on it.
            return Err(Refused::CatchingUp);
        }
        let ticket = self.propose(batch)?;
        let mut data = Vec::with_capacity(batch.encoded_len());
        batch.encode_into(&mut data);
        if let Ok(effects) = EffectBatch::decode(&data) {
            for (position, effect) in effects.enumerate() {
                results.push(self.shard.apply(&effect.stamped(stamp(ticket.index, position)), now));
            }
        }
        self.ahead = Some((ticket.term, ticket.index));
        Ok(ticket)
    }

    /// A clean stop: the hard state (with the latest commit index) is synced, and the
    /// applied index the store is at comes back, to save with the store for a warm
    /// restart ([`Group::open_warm`]); None when the store must not be saved (it holds
    /// writes applied ahead that have not committed).
    pub fn close(&mut self) -> io::Result<Option<u64>> {
        let mut hs = self.node.store().hard_state().clone();
        hs.commit = hs.commit.max(self.node.raft.raft_log.committed);
        self.durable.set_hard_state(&hs)?;
        self.durable.sync()?;
        self.node.mut_store().set_hard_state(hs);
        Ok((!self.is_ahead()).then_some(self.applied))
    }

    /// Whether the store holds writes applied ahead of the log that have not committed.
    pub fn is_ahead(&self) -> bool {
        self.ahead.is_some_and(|(_, upto)| upto > self.applied)
    }

    /// Writes applied ahead in an earlier term that have not committed by now never
    /// will under this node's hand: throw them away (the term moved on, whether or not
    /// this node was seen stepping down in between).
    fn drop_stale_ahead(&mut self, now: u32) -> io::Result<()> {
        match self.ahead {
            Some((term, upto)) if term != self.node.raft.term && upto > self.applied => self.rebuild(now),
            Some((term, _)) if term != self.node.raft.term => {
                self.ahead = None;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Throws away writes applied ahead that did not commit: the store becomes the
    /// snapshot plus the log up to the applied index again.
    fn rebuild(&mut self, now: u32) -> io::Result<()> {
        self.ahead = None;
        let store = self.node.store();
        let Some((meta, total)) = store.snapshot_metadata() else { return Ok(()) };
        let (index, term) = (meta.index, meta.term);
        let entries = if self.applied > index {
            raft::Storage::entries(store, index + 1, self.applied + 1, None, raft::GetEntriesContext::empty(false))
                .map_err(|e| io::Error::other(format!("rebuilding from the log: {e}")))?
        } else {
            Vec::new()
        };
        tracing::warn!(
            node = self.config.node_id,
            from = index,
            to = self.applied,
            "writes applied ahead did not commit: rebuilding the store from the log"
        );
        restore(&mut self.shard, &self.durable, index, term, total, now)?;
        for entry in entries.iter().filter(|e| e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty()) {
            let effects = EffectBatch::decode(&entry.data)
                .map_err(|e| invalid(format!("entry {} holds a damaged effect batch: {e:?}", entry.index)))?;
            for (position, effect) in effects.enumerate() {
                self.shard.apply(&effect.stamped(stamp(entry.index, position)), now);
            }
        }
        Ok(())
    }

    /// Proposes the membership changes `changes` (joint consensus when more than one
    /// voter changes, left automatically), with `context` (the server's: the new
    /// nodes' addresses) for every node to see when it applies.
    pub fn change_membership(
        &mut self,
        changes: &[(ConfChangeType, u64)],
        context: Vec<u8>,
    ) -> Result<Ticket, Refused> {
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Auto);
        cc.context = context.into();
        cc.changes = changes
            .iter()
            .map(|&(kind, node)| {
                let mut c = ConfChangeSingle::default();
                c.set_change_type(kind);
                c.node_id = node;
                c
            })
            .collect::<Vec<_>>()
            .into();
        self.propose_conf_change(cc)
    }

    /// Proposes a membership change (joint consensus when it changes more than one
    /// voter).
    pub fn propose_conf_change(&mut self, change: ConfChangeV2) -> Result<Ticket, Refused> {
        if !self.is_leader() {
            return Err(Refused::NotLeader { leader: self.leader() });
        }
        self.node.propose_conf_change(Vec::new(), change).map_err(|_| Refused::Dropped)?;
        Ok(Ticket { index: self.node.raft.raft_log.last_index(), term: self.node.raft.term })
    }

    /// Asks for the index a linearizable read must wait for; the answer comes in
    /// [`Output::reads`] with `context`.
    pub fn read_index(&mut self, context: Vec<u8>) {
        self.node.read_index(context);
    }

    pub fn transfer_leader(&mut self, to: u64) {
        self.node.transfer_leader(to);
    }

    /// A message from a peer. A snapshot message is taken only once all of its chunks
    /// have arrived (otherwise the leader will send it again).
    pub fn step(&mut self, msg: Message) {
        if msg.get_msg_type() == MessageType::MsgSnapshot {
            let meta = msg.get_snapshot().get_metadata();
            if !self.assembler.is_complete(meta.index, meta.term) {
                tracing::debug!(node = self.config.node_id, index = meta.index, "snapshot announced before its chunks");
                return;
            }
            self.stepped_snapshot = Some((meta.index, meta.term));
        }
        if let Err(e) = self.node.step(msg) {
            tracing::debug!(node = self.config.node_id, "message refused: {e}");
        }
    }

    /// A snapshot chunk from the leader: checked, then written to durable storage in
    /// order.
    pub fn receive_chunk(&mut self, chunk: Chunk) -> io::Result<()> {
        if self.stepped_snapshot.is_some_and(|id| id != (chunk.index, chunk.term)) {
            return Ok(());
        }
        if EffectBatch::decode(&chunk.data).is_err() {
            tracing::warn!(
                node = self.config.node_id,
                index = chunk.index,
                seq = chunk.seq,
                "damaged snapshot chunk dropped"
            );
            return Ok(());
        }
        if let Accepted::InOrder(chunks) = self.assembler.accept(chunk) {
            for c in chunks {
                if c.seq == 0 {
                    tracing::info!(
                        node = self.config.node_id,
                        index = c.index,
                        chunks = c.total,
                        "receiving a snapshot"
                    );
                    self.durable.snapshot_begin(SnapshotSlot::Incoming, c.index, c.term)?;
                }
                self.durable.snapshot_chunk(SnapshotSlot::Incoming, &c.data)?;
            }
        }
        Ok(())
    }

    /// Chunk `seq` of snapshot (index, term), to stream to a follower.
    pub fn read_chunk(&self, index: u64, term: u64, seq: u32) -> io::Result<Option<Chunk>> {
        let total = match self.node.store().snapshot_metadata() {
            Some((meta, total)) if (meta.index, meta.term) == (index, term) => total,
            _ => return Ok(None),
        };
        let data = self.durable.read_chunk(index, term, seq)?;
        Ok(data.map(|data| Chunk { index, term, seq, total, data }))
    }

    /// Whether streaming a snapshot to `to` finished (true) or failed.
    pub fn report_snapshot(&mut self, to: u64, delivered: bool) {
        let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
        self.node.report_snapshot(to, status);
    }

    /// A peer could not be reached (its messages were dropped).
    pub fn report_unreachable(&mut self, to: u64) {
        self.node.report_unreachable(to);
    }

    /// Runs the Ready loop until raft has nothing more to hand out (see the module
    /// documentation), then takes a snapshot if the log has grown enough.
    pub fn process(&mut self, now: u32, out: &mut Output) -> io::Result<()> {
        while self.node.has_ready() {
            self.stats.readies += 1;
            self.drop_stale_ahead(now)?;
            let mut rd = self.node.ready();
            if let Some(ss) = rd.ss() {
                tracing::debug!(node = self.config.node_id, leader = ss.leader_id, role = ?ss.raft_state, "role");
                let stepped_down = self.leading && ss.raft_state != StateRole::Leader;
                out.stepped_down |= stepped_down;
                if stepped_down && self.is_ahead() {
                    self.rebuild(now)?;
                }
                self.leading = ss.raft_state == StateRole::Leader;
            }
            // A leader may send appends before its own write: they are not acknowledgements.
            self.send(rd.take_messages(), out);
            if !rd.snapshot().is_empty() {
                self.install_snapshot(rd.snapshot(), now)?;
                out.restored = Some(self.applied);
            }
            self.apply_entries(rd.take_committed_entries(), now, out)?;
            out.reads.extend(rd.take_read_states());
            if !rd.entries().is_empty() {
                self.durable.append_entries(rd.entries())?;
                let bytes: u64 = rd.entries().iter().map(|e| e.data.len() as u64).sum();
                self.stats.entries_persisted += rd.entries().len() as u64;
                self.stats.bytes_persisted += bytes;
                self.bytes_since_snapshot += bytes;
                self.node.mut_store().append(rd.entries());
            }
            if let Some(hs) = rd.hs() {
                self.durable.set_hard_state(hs)?;
                self.node.mut_store().set_hard_state(hs.clone());
            }
            if rd.must_sync() {
                self.durable.sync()?;
            }
            // Votes and append responses: only now that what they acknowledge is durable.
            self.send(rd.take_persisted_messages(), out);
            let mut light = self.node.advance(rd);
            if let Some(commit) = light.commit_index() {
                self.node.mut_store().set_commit(commit);
            }
            self.send(light.take_messages(), out);
            self.apply_entries(light.take_committed_entries(), now, out)?;
            self.node.advance_apply_to(self.applied);
        }
        // Raft has installed the snapshot it was handed, or dropped it.
        self.stepped_snapshot = None;
        self.maybe_snapshot(now)
    }

    fn send(&mut self, messages: Vec<Message>, out: &mut Output) {
        for m in messages {
            match m.get_msg_type() {
                MessageType::MsgAppend => {
                    self.stats.append_messages += 1;
                    self.stats.entries_sent += m.entries.len() as u64;
                    self.stats.bytes_sent += m.entries.iter().map(|e| e.data.len() as u64).sum::<u64>();
                }
                MessageType::MsgSnapshot => {
                    let snap = m.get_snapshot();
                    let (index, term) = (snap.get_metadata().index, snap.get_metadata().term);
                    let total = chunk_count(snap);
                    self.stats.snapshots_sent += 1;
                    out.messages.push(Outgoing::Snapshot { message: m, index, term, total });
                    continue;
                }
                _ => {}
            }
            out.messages.push(Outgoing::Raft(m));
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, now: u32, out: &mut Output) -> io::Result<()> {
        for entry in entries {
            let start = out.results.len();
            if self.ahead.is_some_and(|(term, upto)| entry.index <= upto && entry.term != term) {
                // Another term's entry (even a new leader's empty one) where one of ours
                // was: what we applied ahead from there on never committed.
                self.rebuild(now)?;
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {}
                EntryType::EntryNormal
                    if self.ahead.is_some_and(|(term, upto)| entry.index <= upto && entry.term == term) =>
                {
                    // Applied ahead by this leader when it was proposed.
                }
                EntryType::EntryNormal => {
                    let effects = EffectBatch::decode(&entry.data)
                        .map_err(|e| invalid(format!("entry {} holds a damaged effect batch: {e:?}", entry.index)))?;
                    for (position, effect) in effects.enumerate() {
                        out.results.push(self.shard.apply(&effect.stamped(stamp(entry.index, position)), now));
                    }
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|e| invalid(format!("entry {}: {e}", entry.index)))?;
                    let v2 = raft_proto::ConfChangeI::into_v2(cc);
                    self.apply_conf_change(v2, &entry, out);
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|e| invalid(format!("entry {}: {e}", entry.index)))?;
                    self.apply_conf_change(cc, &entry, out);
                }
            }
            self.applied = entry.index;
            out.applied.push(AppliedEntry { index: entry.index, term: entry.term, results: start..out.results.len() });
        }
        Ok(())
    }

    fn apply_conf_change(&mut self, cc: ConfChangeV2, entry: &Entry, out: &mut Output) {
        // Every node applies the same committed change and gets the same answer.
        let index = entry.index;
        match self.node.apply_conf_change(&cc) {
            Ok(cs) => {
                tracing::info!(node = self.config.node_id, index, voters = ?cs.voters, learners = ?cs.learners, "membership");
                self.node.mut_store().set_conf_state(cs.clone());
                let changes = cc.changes.iter().map(|c| (c.get_change_type(), c.node_id)).collect();
                out.membership.push(Membership {
                    index,
                    term: entry.term,
                    changes,
                    context: cc.context.to_vec(),
                    conf: cs,
                });
            }
            Err(e) => tracing::warn!(node = self.config.node_id, index, "membership change refused: {e}"),
        }
    }

    fn install_snapshot(&mut self, snap: &Snapshot, now: u32) -> io::Result<()> {
        let meta = snap.get_metadata().clone();
        let total = chunk_count(snap);
        let store = self.node.mut_store();
        store.set_snapshot(meta.clone(), total);
        store.compact(meta.index);
        let (hard_state, tail) = (store.hard_state().clone(), store.tail());
        self.durable.snapshot_commit(SnapshotSlot::Incoming, &meta, &hard_state, &tail)?;
        restore(&mut self.shard, &self.durable, meta.index, meta.term, total, now)?;
        self.applied = meta.index;
        self.bytes_since_snapshot = 0;
        self.stats.snapshots_installed += 1;
        tracing::info!(
            node = self.config.node_id,
            index = meta.index,
            chunks = total,
            "installed the leader's snapshot"
        );
        Ok(())
    }

    fn maybe_snapshot(&mut self, now: u32) -> io::Result<()> {
        let store = self.node.store();
        let current = store.snapshot_metadata().map_or(0, |(m, _)| m.index);
        let wanted = store.take_snapshot_wish();
        if (self.bytes_since_snapshot < self.config.snapshot_after_bytes && !wanted) || self.applied <= current {
            return Ok(());
        }
        if self.is_ahead() {
            // The store holds uncommitted writes: a snapshot now would carry them. Later.
            if wanted {
                self.node.store().wish_snapshot();
            }
            return Ok(());
        }
        let Some(term) = store.term_of(self.applied) else { return Ok(()) };
        let mut meta = SnapshotMetadata::default();
        meta.index = self.applied;
        meta.term = term;
        meta.set_conf_state(store.conf_state().clone());
        let (hard_state, tail) = (store.hard_state().clone(), store.tail());
        tracing::info!(node = self.config.node_id, index = self.applied, wanted, "taking a snapshot");
        let total = write_snapshot(&mut self.durable, &self.shard, &meta, &hard_state, &tail, now)?;
        tracing::info!(node = self.config.node_id, index = self.applied, chunks = total, "took a snapshot");
        let keep_from = self.applied.saturating_sub(self.config.keep_entries);
        let store = self.node.mut_store();
        store.set_snapshot(meta, total);
        store.compact(keep_from);
        self.bytes_since_snapshot = 0;
        self.stats.snapshots_taken += 1;
        Ok(())
    }
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

/// The chunk count a snapshot message carries.
fn chunk_count(snap: &Snapshot) -> u32 {
    snap.data.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Writes `shard`'s store as snapshot `meta` and makes it the current one; the log
/// restarts from it with `hard_state` and the entries `tail`.
fn write_snapshot<D: Durable>(
    durable: &mut D,
    shard: &Shard,
    meta: &SnapshotMetadata,
    hard_state: &HardState,
    tail: &[Entry],
    now: u32,
) -> io::Result<u32> {
    durable.snapshot_begin(SnapshotSlot::Local, meta.index, meta.term)?;
    let mut written = Ok(());
    let total = snapshot::chunks_of(shard, now, |chunk| {
        if written.is_ok() {
            written = durable.snapshot_chunk(SnapshotSlot::Local, chunk);
        }
    });
    written?;
    durable.snapshot_commit(SnapshotSlot::Local, meta, hard_state, tail)?;
    Ok(total)
}

/// Empties `shard` and fills it from the current snapshot.
fn restore<D: Durable>(shard: &mut Shard, durable: &D, index: u64, term: u64, total: u32, now: u32) -> io::Result<()> {
    shard.apply(&Effect::Flush { at: None }, now);
    for seq in 0..total {
        let chunk = durable
            .read_chunk(index, term, seq)?
            .ok_or_else(|| invalid(format!("snapshot {index}/{term} lacks chunk {seq} of {total}")))?;
        snapshot::restore_chunk(shard, &chunk, now)
            .map_err(|e| invalid(format!("snapshot {index}/{term} chunk {seq}: {e:?}")))?;
    }
    Ok(())
}
