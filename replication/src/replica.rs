//! What one shard of a replicated node executes: *jobs* (the ops a connection, another
//! shard or a peer node sends to this shard, in order, within a reply budget; the same
//! unit as the mesh's op batches) run against the shard's replica [`Group`]. Sans-IO:
//! the server submits jobs and peer traffic, calls [`Replica::poll`], and delivers what
//! comes out (finished jobs, messages, jobs to forward to the leader).
//!
//! Rules (named in ARCHITECTURE.md):
//! - **The leader decides, under a latch.** Only a leader that has applied an entry of
//!   its own term decides ([`Group::can_decide`]). An op holds a latch on its key from
//!   the moment it is decided (or read) until its outcome is final: a write until its
//!   entry applies, a read or a write that changed nothing until a read round confirms
//!   the leadership it was decided under. An op on a latched key waits; ops on other keys
//!   go on, so pipelined writes to different keys share entries and rounds.
//! - **Replies leave in request order** within a job, whatever order their outcomes
//!   become final in.
//! - **One proposal per poll.** The effects decided in one poll, from every job, go in
//!   one log entry (at most [`MAX_EFFECTS_PER_ENTRY`]); the reads of one poll share one
//!   ReadIndex round.
//! - **Unknown is said, never guessed.** A proposal whose leader stepped down (or whose
//!   store the leader's snapshot replaced) before it applied is answered
//!   `SERVER_ERROR replication: outcome unknown` (it may still commit).
//! - Followers forward jobs to the leader (reads too, unless reads are `local`); a job
//!   that finds no leader for `no_leader_ticks` is answered `SERVER_ERROR replication:
//!   no leader`.
//!
//! Cost: a replicated op allocates (its reply part); the standalone path is untouched.

use std::collections::{HashMap, VecDeque};
use std::io;

use ringcache_core::effect::{Effect, EffectBatch};
use ringcache_core::protocol::{reply, KEY_MAX_LENGTH};
use ringcache_core::shard::{Op, OpBatch, Outcome};
use ringcache_core::store::{key_hasher, Applied};

use crate::durable::Durable;
use crate::group::{ConfChangeType, Group, Membership, Outgoing, Output, Refused, Ticket};
use crate::MAX_EFFECTS_PER_ENTRY;

/// Where reads are served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// On the leader, released after a ReadIndex round (a heartbeat quorum) confirms it
    /// still leads.
    Linearizable,
    /// On the leader, under its lease (no round; relies on bounded clock drift).
    Lease,
    /// On any node from its own store: may be stale.
    Local,
}

/// When a write is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// Once its entry is committed on a quorum and applied here (write-through).
    Strong,
    /// Once applied on the leader, replicated behind (write-behind): a write answered
    /// may be lost if the leader fails before it commits; replicas never keep one the
    /// group lost ([`Group::propose_and_apply`]).
    Async,
}

/// A job's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobId(pub u64);

/// A job done: the batch back, each executed op's reply in `out` ending at `ends[i]`,
/// and the offset to resume from (the batch's length when all ran).
#[derive(Debug)]
pub struct Finished {
    pub id: JobId,
    pub batch: OpBatch,
    pub out: Vec<u8>,
    pub ends: Vec<u32>,
    pub resume: usize,
}

/// A job (its ops from `from` on) to run on the leader, `to`; its answer comes back
/// through [`Replica::forwarded`] (or [`Replica::forward_failed`]).
#[derive(Debug)]
pub struct Forward {
    pub id: JobId,
    pub to: u64,
    pub ops: OpBatch,
    pub budget: usize,
}

/// What a poll produced; the caller empties it.
#[derive(Debug, Default)]
pub struct ReplicaOutput {
    pub finished: Vec<Finished>,
    pub messages: Vec<Outgoing>,
    pub forwards: Vec<Forward>,
    /// Every membership change applied (the caller adds or drops peer links).
    pub membership: Vec<Membership>,
    /// Changes proposed here ([`Replica::change_membership`]) now applied (Ok) or lost.
    pub membership_done: Vec<(Ticket, Result<(), &'static str>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The reply is final.
    Released,
    /// The reply is computed; it leaves when read round `n` confirms the leadership.
    Gated(u64),
    /// The effect is in a proposal; the reply is made when it applies.
    Proposed(Outcome),
}

#[derive(Debug)]
struct Part {
    /// Byte offset of the op in the job's batch.
    at: usize,
    noreply: bool,
    /// The latch it holds (a key hash), if any.
    latch: Option<u64>,
    state: State,
    /// Reply bytes; for a run of ops (forwarded, or given up), where each op's reply
    /// ends in them (else the part is one op).
    reply: Vec<u8>,
    run: Option<Vec<u32>>,
}

#[derive(Debug)]
struct Job {
    id: JobId,
    batch: OpBatch,
    from: usize,
    cursor: usize,
    budget: usize,
    must_progress: bool,
    parts: Vec<Part>,
    reply_bytes: usize,
    /// The budget stopped it before the end.
    stopped: bool,
    forwarded: bool,
    /// The node it was forwarded to.
    forwarded_to: u64,
    /// Ticks spent waiting for a leader.
    waited: u32,
}

impl Job {
    fn at_end(&self) -> bool {
        self.stopped || self.cursor >= self.batch.bytes()
    }
}

/// One shard's jobs over its replica group (see the module documentation).
pub struct Replica<D: Durable> {
    group: Group<D>,
    reads: ReadMode,
    writes: Writes,
    /// The latches' key hash (the store's, fixed seeds).
    hasher: ahash::RandomState,
    jobs: Vec<Job>,
    next_job: u64,
    latches: HashMap<u64, u32>,
    /// A flush is proposed: nothing is decided until it applies.
    flushing: bool,
    batch: EffectBatch,
    slots: Vec<(JobId, usize)>,
    proposals: VecDeque<(Ticket, Vec<(JobId, usize)>)>,
    round: u64,
    round_used: bool,
    /// Rounds asked for, oldest first, with the index they must wait for once known.
    rounds: VecDeque<(u64, Option<u64>)>,
    out: Output,
    no_leader_ticks: u32,
    /// Membership changes proposed here, waiting to apply.
    changing: Vec<Ticket>,
    /// The node that should lead this group when it can (`--prefer-leader`).
    preferred: Option<u64>,
    ticks: u64,
}

/// How often (in ticks) a leader checks whether to hand leadership to the preferred node.
const PREFERENCE_TICKS: u64 = 20;

impl<D: Durable> Replica<D> {
    /// A replica over `group`. `incarnation` makes this run's job ids its own (the
    /// process start, a restart count): an answer meant for a job of an earlier run
    /// never lands on one of this run.
    pub fn new(group: Group<D>, reads: ReadMode, writes: Writes, no_leader_ticks: u32, incarnation: u64) -> Self {
        Replica {
            group,
            reads,
            writes,
            hasher: key_hasher(),
            jobs: Vec::new(),
            next_job: incarnation << 32,
            latches: HashMap::new(),
            flushing: false,
            batch: EffectBatch::default(),
            slots: Vec::new(),
            proposals: VecDeque::new(),
            round: 0,
            round_used: false,
            rounds: VecDeque::new(),
            out: Output::default(),
            no_leader_ticks,
            changing: Vec::new(),
            preferred: None,
            ticks: 0,
        }
    }

    pub fn group(&self) -> &Group<D> {
        &self.group
    }

    pub fn group_mut(&mut self) -> &mut Group<D> {
        &mut self.group
    }

    /// Jobs not finished yet.
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Submits the ops of `batch` from byte offset `from`, to run in order while their
    /// replies fit in `budget` bytes (the first regardless with `must_progress`).
    pub fn submit(&mut self, batch: OpBatch, from: usize, budget: usize, must_progress: bool) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        self.jobs.push(Job {
            id,
            batch,
            from,
            cursor: from,
            budget,
            must_progress,
            parts: Vec::new(),
            reply_bytes: 0,
            stopped: false,
            forwarded: false,
            forwarded_to: 0,
            waited: 0,
        });
        id
    }

    /// One tick of the group's clock. A job that made no progress for
    /// `no_leader_ticks` ticks is answered: "outcome unknown" for ops forwarded to a
    /// leader that did not answer, "no leader" for ops that found none.
    pub fn tick(&mut self) {
        self.group.tick();
        self.ticks += 1;
        if self.ticks % PREFERENCE_TICKS == 0 {
            self.hand_to_preferred();
        }
        for i in 0..self.jobs.len() {
            let job = &mut self.jobs[i];
            job.waited += 1;
            if job.waited <= self.no_leader_ticks || job.parts.iter().any(|p| p.state != State::Released) {
                continue;
            }
            let unknown = job.forwarded;
            job.forwarded = false;
            self.give_up(i, if unknown { reply::OUTCOME_UNKNOWN } else { reply::NO_LEADER });
        }
    }

    /// Makes `node` the group's preferred leader: a leader that is not it hands over
    /// leadership once `node` is a voter that has caught up (None: leadership stays
    /// wherever elections put it).
    pub fn prefer_leader(&mut self, node: Option<u64>) {
        self.preferred = node;
    }

    fn hand_to_preferred(&mut self) {
        let Some(preferred) = self.preferred else { return };
        if !self.group.is_leader() {
            return;
        }
        let status = self.group.status();
        let caught_up = status.peers.iter().any(|&(id, matched, _)| id == preferred && matched >= status.commit);
        if preferred != status.node_id && status.voters.contains(&preferred) && caught_up {
            tracing::info!(node = status.node_id, to = preferred, "handing leadership to the preferred node");
            self.group.transfer_leader(preferred);
        }
    }

    /// Gives up the group (a simulated crash keeps its storage).
    pub fn into_group(self) -> Group<D> {
        self.group
    }

    /// Proposes a membership change (this node must lead and be caught up); its fate
    /// comes in [`ReplicaOutput::membership_done`].
    pub fn change_membership(
        &mut self,
        changes: &[(ConfChangeType, u64)],
        context: Vec<u8>,
    ) -> Result<Ticket, Refused> {
        if !self.group.can_decide() {
            return Err(match self.group.leader() {
                Some(l) if l == self.group.status().node_id => Refused::CatchingUp,
                leader => Refused::NotLeader { leader },
            });
        }
        let ticket = self.group.change_membership(changes, context)?;
        self.changing.push(ticket);
        Ok(ticket)
    }

    /// The leader's answer to a forwarded job: the replies of the ops it ran from the
    /// forwarded batch's start up to `resume` (an offset in the forwarded batch).
    pub fn forwarded(&mut self, id: JobId, out: Vec<u8>, ends: Vec<u32>, resume: usize) {
        let Some(job) = self.jobs.iter_mut().find(|j| j.id == id) else { return };
        if !job.forwarded {
            return; // Given up on already.
        }
        let whole = job.batch.bytes() - job.cursor;
        job.cursor += resume.min(whole);
        job.stopped |= resume < whole;
        job.forwarded = false;
        job.waited = 0;
        job.reply_bytes += out.len();
        job.parts.push(Part {
            at: job.cursor,
            noreply: false,
            latch: None,
            state: State::Released,
            reply: out,
            run: Some(ends),
        });
    }

    /// A forwarded job could not be delivered: it waits for a leader again.
    pub fn forward_failed(&mut self, id: JobId) {
        if let Some(job) = self.jobs.iter_mut().find(|j| j.id == id) {
            job.forwarded = false;
        }
    }

    fn latched(&self, hash: u64) -> bool {
        self.latches.contains_key(&hash)
    }

    fn latch(&mut self, hash: u64) {
        *self.latches.entry(hash).or_insert(0) += 1;
    }

    fn unlatch(&mut self, hash: Option<u64>) {
        let Some(hash) = hash else { return };
        if let Some(n) = self.latches.get_mut(&hash) {
            *n -= 1;
            if *n == 0 {
                self.latches.remove(&hash);
            }
        }
    }

    /// Runs what can run: decides and reads on the leader, forwards from a follower,
    /// proposes, handles Raft's output, and finishes jobs whose replies are all final.
    pub fn poll(&mut self, now: u32, output: &mut ReplicaOutput) -> io::Result<()> {
        for _ in 0..4 {
            self.advance_jobs(now, output);
            self.propose(now);
            if self.round_used {
                self.group.read_index(self.round.to_le_bytes().to_vec());
                self.rounds.push_back((self.round, None));
                self.round += 1;
                self.round_used = false;
            }
            self.out.clear();
            self.group.process(now, &mut self.out)?;
            output.messages.append(&mut self.out.messages);
            let resolved = self.resolve(now, output);
            self.finish(output);
            if !resolved {
                break;
            }
        }
        Ok(())
    }

    fn advance_jobs(&mut self, now: u32, output: &mut ReplicaOutput) {
        let leads = self.group.can_decide();
        let leader = self.group.leader().filter(|&l| l != self.group.status().node_id);
        for i in 0..self.jobs.len() {
            let job = &mut self.jobs[i];
            if job.forwarded && (leads || leader.is_some_and(|l| l != job.forwarded_to)) {
                // Leadership moved while the job was away: its answer may never come (the
                // old leader may be gone), so say so now and let the client go on.
                job.forwarded = false;
                self.give_up(i, reply::OUTCOME_UNKNOWN);
                continue;
            }
            if self.jobs[i].forwarded || self.jobs[i].at_end() {
                continue;
            }
            if leads {
                self.advance(i, now, true);
                continue;
            }
            if self.reads == ReadMode::Local {
                // Gets are served here; the rest goes to the leader.
                self.advance(i, now, false);
            }
            let job = &mut self.jobs[i];
            if job.at_end() {
                continue;
            }
            let unresolved = job.parts.iter().any(|p| p.state != State::Released);
            match leader {
                Some(to) if !unresolved => {
                    job.forwarded = true;
                    job.forwarded_to = to;
                    job.waited = 0;
                    let ops = job.batch.tail(job.cursor);
                    let budget = job.budget.saturating_sub(job.reply_bytes);
                    output.forwards.push(Forward { id: job.id, to, ops, budget });
                }
                _ => {}
            }
        }
    }

    /// Answers the rest of job `i` with `error`.
    fn give_up(&mut self, i: usize, error: &[u8]) {
        let job = &mut self.jobs[i];
        let mut reply = Vec::new();
        let mut ends = Vec::new();
        for (_, noreply) in job.batch.iter_from(job.cursor) {
            if !noreply {
                reply.extend_from_slice(error);
            }
            ends.push(reply.len() as u32);
        }
        job.parts.push(Part {
            at: job.cursor,
            noreply: false,
            latch: None,
            state: State::Released,
            reply,
            run: Some(ends),
        });
        job.cursor = job.batch.bytes();
    }

    /// Runs job `i`'s ops in order until one must wait (or, with `decide` false, until
    /// the first op that is not a get).
    fn advance(&mut self, i: usize, now: u32, decide: bool) {
        loop {
            let job = &self.jobs[i];
            if job.at_end() || self.flushing || self.batch.len() >= MAX_EFFECTS_PER_ENTRY {
                return;
            }
            let mut ops = job.batch.iter_from(job.cursor);
            let at = ops.position();
            let Some((op, noreply)) = ops.next() else { return };
            let next = ops.position();
            let is_get = matches!(op, Op::Get { touch: None, .. });
            if !decide && !is_get {
                return;
            }
            let shard = self.group.shard();
            let bound = shard.reply_size_bound(&op, noreply, now);
            if !(job.parts.is_empty() && job.must_progress) && job.reply_bytes + bound > job.budget {
                self.jobs[i].stopped = true;
                return;
            }
            let latch = op.with_key(|key| self.hasher.hash_one(key));
            match latch {
                Some(hash) if self.latched(hash) => return,
                None if !self.latches.is_empty() || !self.batch.is_empty() => return,
                _ => {}
            }
            let mut part = Part { at, noreply, latch, state: State::Released, reply: Vec::new(), run: None };
            let gate = decide && self.reads != ReadMode::Local;
            let shard = self.group.shard_mut();
            if is_get {
                shard.execute(&op, noreply, now, &mut part.reply);
                if gate {
                    part.state = State::Gated(self.round);
                    self.round_used = true;
                }
            } else {
                let mut key_buf = [0u8; KEY_MAX_LENGTH];
                let decision = shard.decide(&op, &mut key_buf, now);
                match decision.effect {
                    Some(effect) => {
                        self.flushing |= matches!(effect, Effect::Flush { .. });
                        self.batch.push(&effect);
                        self.slots.push((self.jobs[i].id, self.jobs[i].parts.len()));
                        part.state = State::Proposed(decision.outcome);
                    }
                    None => {
                        shard.reply(&op, decision.outcome, noreply, now, &mut part.reply);
                        if gate {
                            part.state = State::Gated(self.round);
                            self.round_used = true;
                        }
                    }
                }
            }
            if part.state == State::Released {
                part.latch = None;
            } else if let Some(hash) = part.latch {
                self.latch(hash);
            }
            let job = &mut self.jobs[i];
            job.reply_bytes += bound;
            job.cursor = next;
            job.waited = 0;
            job.parts.push(part);
        }
    }

    fn propose(&mut self, now: u32) {
        if self.batch.is_empty() {
            return;
        }
        let slots = std::mem::take(&mut self.slots);
        let proposed = match self.writes {
            Writes::Strong => self.group.propose(&self.batch),
            Writes::Async => {
                let mut results = Vec::with_capacity(slots.len());
                let proposed = self.group.propose_and_apply(&self.batch, now, &mut results);
                if proposed.is_ok() {
                    // Answered now: the entry replicates behind.
                    for ((job, part), result) in slots.iter().zip(results) {
                        self.applied(*job, *part, result, now);
                    }
                    self.flushing = false;
                    self.batch.clear();
                    return;
                }
                proposed
            }
        };
        match proposed {
            Ok(ticket) => self.proposals.push_back((ticket, slots)),
            Err(refused) => {
                tracing::debug!("proposal refused: {refused:?}");
                debug_assert!(!matches!(refused, Refused::TooManyEffects));
                for (job, part) in slots {
                    self.settle(job, part, reply::OUTCOME_UNKNOWN);
                }
                self.flushing = false;
            }
        }
        self.batch.clear();
    }

    /// Finalises part `part` of job `job` with a fixed reply (an error), releasing its latch.
    fn settle(&mut self, job: JobId, part: usize, bytes: &[u8]) {
        let Some(job) = self.jobs.iter_mut().find(|j| j.id == job) else { return };
        let Some(p) = job.parts.get_mut(part) else { return };
        if !p.noreply {
            p.reply.clear();
            p.reply.extend_from_slice(bytes);
        }
        p.state = State::Released;
        let latch = p.latch.take();
        self.unlatch(latch);
    }

    /// Applies what Raft reported: applied entries, read rounds, leadership lost.
    /// Returns whether any part became final.
    fn resolve(&mut self, now: u32, output: &mut ReplicaOutput) -> bool {
        let mut resolved = false;
        let out = std::mem::take(&mut self.out);
        for entry in &out.applied {
            if let Some(at) = self.changing.iter().position(|t| t.index == entry.index) {
                let ticket = self.changing.swap_remove(at);
                let applied = out.membership.iter().any(|m| m.index == entry.index && m.term == ticket.term);
                let result = if applied {
                    Ok(())
                } else {
                    Err("not applied: the leader changed, or another change was under way")
                };
                output.membership_done.push((ticket, result));
            }
        }
        if out.stepped_down {
            for ticket in self.changing.drain(..) {
                output
                    .membership_done
                    .push((ticket, Err("the leader changed before it applied; check the membership")));
            }
        }
        output.membership.extend(out.membership.iter().cloned());
        for entry in &out.applied {
            while self.proposals.front().is_some_and(|(t, _)| t.index < entry.index) {
                // Replaced by a snapshot before it was reported (see `restored`).
                if let Some((_, slots)) = self.proposals.pop_front() {
                    for (job, part) in slots {
                        self.settle(job, part, reply::OUTCOME_UNKNOWN);
                    }
                }
            }
            let Some((ticket, _)) = self.proposals.front() else { continue };
            if ticket.index != entry.index {
                continue;
            }
            let Some((ticket, slots)) = self.proposals.pop_front() else { continue };
            resolved = true;
            if ticket.term != entry.term {
                for (job, part) in slots {
                    self.settle(job, part, reply::OUTCOME_UNKNOWN);
                }
                continue;
            }
            for ((job, part), result) in slots.into_iter().zip(&out.results[entry.results.clone()]) {
                self.applied(job, part, *result, now);
            }
        }
        // A flush is decided only with nothing else in flight, so it is over once no
        // proposal is left.
        self.flushing &= !self.proposals.is_empty();
        for read in &out.reads {
            let Ok(bytes) = <[u8; 8]>::try_from(&read.request_ctx[..]) else { continue };
            let round = u64::from_le_bytes(bytes);
            if let Some(r) = self.rounds.iter_mut().find(|(n, _)| *n == round) {
                r.1 = Some(read.index);
            }
        }
        while let Some(&(round, Some(index))) = self.rounds.front() {
            if index > self.group.applied() {
                break;
            }
            self.rounds.pop_front();
            self.release_round(round);
            resolved = true;
        }
        if out.stepped_down || out.restored.is_some() {
            let limit = out.restored.filter(|_| !out.stepped_down).unwrap_or(u64::MAX);
            while self.proposals.front().is_some_and(|(t, _)| t.index <= limit) {
                if let Some((_, slots)) = self.proposals.pop_front() {
                    for (job, part) in slots {
                        self.settle(job, part, reply::OUTCOME_UNKNOWN);
                    }
                }
            }
            if out.stepped_down {
                // Rounds asked as leader will not confirm anything now.
                while let Some((round, _)) = self.rounds.pop_front() {
                    self.fail_round(round);
                }
                self.flushing = false;
            }
            resolved = true;
        }
        self.out = out;
        resolved
    }

    /// Part `part` of job `job` applied with `result`: its reply, its latch released.
    fn applied(&mut self, job: JobId, part: usize, result: Applied, now: u32) {
        let Some(j) = self.jobs.iter_mut().find(|j| j.id == job) else { return };
        let Some(p) = j.parts.get_mut(part) else { return };
        let State::Proposed(outcome) = p.state else { return };
        if let Some((op, noreply)) = j.batch.iter_from(p.at).next() {
            self.group.shard_mut().reply(&op, outcome.after(Some(result)), noreply, now, &mut p.reply);
        }
        p.state = State::Released;
        let latch = p.latch.take();
        self.unlatch(latch);
    }

    fn release_round(&mut self, round: u64) {
        let mut latches = Vec::new();
        for job in &mut self.jobs {
            for p in job.parts.iter_mut().filter(|p| p.state == State::Gated(round)) {
                p.state = State::Released;
                latches.push(p.latch.take());
            }
        }
        for l in latches {
            self.unlatch(l);
        }
    }

    fn fail_round(&mut self, round: u64) {
        let mut gated = Vec::new();
        for job in &self.jobs {
            for (i, p) in job.parts.iter().enumerate() {
                if p.state == State::Gated(round) {
                    gated.push((job.id, i));
                }
            }
        }
        for (job, part) in gated {
            self.settle(job, part, reply::OUTCOME_UNKNOWN);
        }
    }

    /// Moves jobs whose replies are all final, and that ran to their end, to `output`.
    fn finish(&mut self, output: &mut ReplicaOutput) {
        let mut i = 0;
        while i < self.jobs.len() {
            let job = &self.jobs[i];
            let done = !job.forwarded && job.at_end() && job.parts.iter().all(|p| p.state == State::Released);
            if !done {
                i += 1;
                continue;
            }
            let job = self.jobs.remove(i);
            let mut out = Vec::with_capacity(job.parts.iter().map(|p| p.reply.len()).sum());
            let mut ends = Vec::with_capacity(job.parts.len());
            for p in &job.parts {
                let base = out.len() as u32;
                out.extend_from_slice(&p.reply);
                match &p.run {
                    None => ends.push(out.len() as u32),
                    Some(run) => ends.extend(run.iter().map(|e| base + e)),
                }
            }
            let resume = job.cursor;
            debug_assert!(resume >= job.from);
            output.finished.push(Finished { id: job.id, batch: job.batch, out, ends, resume });
        }
    }
}
