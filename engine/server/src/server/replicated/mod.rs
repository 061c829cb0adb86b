//! A shard of a node in a replica group: its [`Replica`] (the shard's store inside its
//! Raft group, `ringcache-replication`), the task that drives it on the shard's own
//! executor (ticks, polls, hands out what it produced), and its peer links
//! ([`peers`]). Connections and other shards submit jobs (op batches, the mesh's unit)
//! and get the replies back on a oneshot channel, in the shape of the mesh's
//! [`OpsReply`]. Nothing here crosses a core: shard *i* talks only to shard *i* of the
//! other nodes.

pub mod admin;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_lite::StreamExt;
use ringcache_core::shard::OpBatch;
use ringcache_replication::drivers::file::FileDurable;
pub use ringcache_replication::drivers::transport as peers;
use ringcache_replication::drivers::transport::Inbound;
use ringcache_replication::envelope::Envelope;
use ringcache_replication::group::{ConfChangeType, Outgoing, Refused, Ticket};
use ringcache_replication::replica::{JobId, Replica, ReplicaOutput};

use admin::Admin;

use super::mesh::OpsReply;
use crate::clock::Clock;

/// How often a group's logical clock ticks: elections take 10 to 20 ticks without a
/// leader, heartbeats go out every 2.
pub const TICK: Duration = Duration::from_millis(50);
/// Ticks a job may wait for a leader (or a forwarded job for its answer): 5 s.
pub const NO_LEADER_TICKS: u32 = 100;

/// One shard's replica and what it owes to whom.
pub struct Replicated {
    pub node_id: u64,
    pub shard: usize,
    pub replica: RefCell<Replica<FileDurable>>,
    /// Local jobs (this shard's connections, other shards): who waits for the reply.
    waiters: RefCell<HashMap<JobId, oneshot::Sender<OpsReply>>>,
    /// Jobs forwarded here by followers: (node, their job id).
    remote: RefCell<HashMap<JobId, (u64, u64)>>,
    wake: mpsc::UnboundedSender<()>,
    pub links: peers::Links,
    clock: Clock,
    /// This shard's replication directory (its learnt peers are kept there).
    dir: std::path::PathBuf,
    /// Membership changes proposed here, and who waits for them.
    changing: RefCell<HashMap<Ticket, oneshot::Sender<Result<(), &'static str>>>>,
    /// fsyncs in the last whole second (for `stats replication`).
    pub fsyncs_per_second: std::cell::Cell<u64>,
    /// The server is stopping: the driver applies nothing more.
    stopped: std::cell::Cell<bool>,
}

/// Where a stopped replica records the applied index its saved store is at.
fn applied_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("applied")
}

/// The applied index saved with the store at the last clean stop, if any; the record
/// is removed (it describes the store of that one stop).
pub fn take_saved_applied(dir: &std::path::Path) -> Option<u64> {
    let path = applied_path(dir);
    let text = std::fs::read_to_string(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    text.trim().parse().ok()
}

/// How a shard answered an administrative command.
pub enum AdminAnswer {
    Now(String),
    /// A membership change proposed: its outcome comes later.
    Later(oneshot::Receiver<Result<(), &'static str>>),
}

impl Replicated {
    /// A shard's replica; `drive` must then run on the shard's executor.
    pub fn new(
        node_id: u64,
        shard: usize,
        replica: Replica<FileDurable>,
        links: peers::Links,
        clock: Clock,
        dir: std::path::PathBuf,
    ) -> (Rc<Self>, mpsc::UnboundedReceiver<()>) {
        let (wake, woken) = mpsc::unbounded();
        let r = Replicated {
            node_id,
            shard,
            replica: RefCell::new(replica),
            waiters: RefCell::new(HashMap::new()),
            remote: RefCell::new(HashMap::new()),
            wake,
            links,
            clock,
            dir,
            changing: RefCell::new(HashMap::new()),
            fsyncs_per_second: std::cell::Cell::new(0),
            stopped: std::cell::Cell::new(false),
        };
        (Rc::new(r), woken)
    }

    /// Asks the driver to poll soon.
    pub fn wake(&self) {
        let _ = self.wake.unbounded_send(());
    }

    /// Runs the ops of `batch` from `from` through the group; the reply comes back
    /// when every one of them is final.
    pub fn submit(
        &self,
        batch: OpBatch,
        from: usize,
        budget: usize,
        must_progress: bool,
    ) -> oneshot::Receiver<OpsReply> {
        let (tx, rx) = oneshot::channel();
        let job = self.replica.borrow_mut().submit(batch, from, budget, must_progress);
        self.waiters.borrow_mut().insert(job, tx);
        self.wake();
        rx
    }

    /// Stops applying (for good) and records the applied index the store is at, synced,
    /// so the store can be saved for a warm restart: false when it must not be (it
    /// holds writes applied ahead that did not commit, or the record failed).
    pub fn stop_for_save(&self) -> bool {
        self.stopped.set(true);
        let closed = self.replica.borrow_mut().group_mut().close();
        let applied = match closed {
            Ok(Some(applied)) => applied,
            Ok(None) => return false,
            Err(e) => {
                tracing::error!(shard = self.shard, "cannot sync the replication log at stop: {e}");
                return false;
            }
        };
        let path = applied_path(&self.dir);
        let tmp = path.with_extension("tmp");
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(f, "{applied}")?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| std::fs::File::open(&self.dir)?.sync_all());
        if let Err(e) = written {
            tracing::error!(shard = self.shard, "cannot record the applied index at stop: {e}");
            return false;
        }
        true
    }

    /// Acts on an administrative command for this shard's group.
    pub fn admin(&self, cmd: &Admin) -> AdminAnswer {
        let mut replica = self.replica.borrow_mut();
        let (changes, context) = match *cmd {
            Admin::Add { node, addr } => (vec![(ConfChangeType::AddLearnerNode, node)], format!("{node}={addr}")),
            Admin::Promote { node } => (vec![(ConfChangeType::AddNode, node)], String::new()),
            Admin::Remove { node } => (vec![(ConfChangeType::RemoveNode, node)], String::new()),
            Admin::Transfer { shard, to } => {
                if shard != self.shard {
                    return AdminAnswer::Now(String::new());
                }
                let group = replica.group_mut();
                if !group.is_leader() {
                    return AdminAnswer::Now(format!("NOT_LEADER {}", group.leader().unwrap_or(0)));
                }
                group.transfer_leader(to);
                drop(replica);
                self.wake();
                return AdminAnswer::Now("OK".into());
            }
        };
        match replica.change_membership(&changes, context.into_bytes()) {
            Ok(ticket) => {
                let (tx, rx) = oneshot::channel();
                self.changing.borrow_mut().insert(ticket, tx);
                drop(replica);
                self.wake();
                AdminAnswer::Later(rx)
            }
            Err(Refused::NotLeader { leader }) => AdminAnswer::Now(format!("NOT_LEADER {}", leader.unwrap_or(0))),
            Err(e) => AdminAnswer::Now(format!("ERROR {e:?}")),
        }
    }

    /// A membership change applied: peer links follow it, and the peers are remembered.
    fn membership_applied(&self, m: &ringcache_replication::group::Membership) {
        for &(kind, node) in &m.changes {
            match kind {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    let addr = std::str::from_utf8(&m.context)
                        .ok()
                        .and_then(|c| c.split_once('='))
                        .filter(|(id, _)| id.parse() == Ok(node))
                        .and_then(|(_, a)| a.parse::<std::net::SocketAddr>().ok());
                    if let Some(base) = addr {
                        self.links.add(node, crate::cluster::ClusterConfig::shard_address(base, self.shard));
                    }
                }
                ConfChangeType::RemoveNode => {
                    if node == self.node_id {
                        tracing::warn!(shard = self.shard, "this node was removed from replica group {}", self.shard);
                    }
                    self.links.remove(node);
                }
            }
        }
        if let Err(e) = crate::cluster::remember_peers(&self.dir, &self.links.peers()) {
            tracing::warn!(shard = self.shard, "cannot record the group's peers in {}: {e}", self.dir.display());
        }
    }
}

impl Inbound for Replicated {
    fn knows(&self, node: u64) -> bool {
        self.links.knows(node)
    }

    /// What an authenticated peer, node `from`, sent for this shard's group.
    fn receive(&self, from: u64, envelope: Envelope) {
        let mut replica = self.replica.borrow_mut();
        match envelope {
            Envelope::Raft(msg) => {
                if msg.from != from {
                    tracing::warn!(
                        shard = self.shard,
                        peer = from,
                        claimed = msg.from,
                        "a peer sent a message as another node: dropped"
                    );
                    return;
                }
                replica.group_mut().step(msg);
            }
            Envelope::Chunk(chunk) => {
                if let Err(e) = replica.group_mut().receive_chunk(chunk) {
                    panic!("shard {}: cannot write a snapshot chunk: {e}", self.shard);
                }
            }
            Envelope::Forward { id, budget, ops } => match OpBatch::from_bytes(ops) {
                Some(batch) => {
                    let job = replica.submit(batch, 0, budget as usize, true);
                    self.remote.borrow_mut().insert(job, (from, id));
                }
                None => tracing::warn!(shard = self.shard, peer = from, "a forwarded batch did not decode: dropped"),
            },
            Envelope::ForwardReply { id, resume, ends, out } => {
                replica.forwarded(JobId(id), out, ends, resume as usize)
            }
        }
        drop(replica);
        self.wake();
    }
}

impl Replicated {
    /// Polls the replica and hands out what it produced.
    fn poll(&self, out: &mut ReplicaOutput) {
        let now = self.clock.now();
        let mut replica = self.replica.borrow_mut();
        if let Err(e) = replica.poll(now, out) {
            // The log could not be written: this node can no longer promise anything.
            panic!("shard {}: the replication log failed: {e}", self.shard);
        }
        for m in out.messages.drain(..) {
            match m {
                Outgoing::Raft(msg) => {
                    let to = msg.to;
                    self.links.send(to, &Envelope::Raft(msg));
                }
                Outgoing::Snapshot { message, index, term, total } => {
                    let to = message.to;
                    let mut delivered = true;
                    for seq in 0..total {
                        match replica.group().read_chunk(index, term, seq) {
                            Ok(Some(chunk)) => self.links.send(to, &Envelope::Chunk(chunk)),
                            _ => {
                                delivered = false;
                                break;
                            }
                        }
                    }
                    if delivered {
                        self.links.send(to, &Envelope::Raft(message));
                    }
                    replica.group_mut().report_snapshot(to, delivered);
                }
            }
        }
        for f in out.forwards.drain(..) {
            let ops = f.ops.as_bytes().to_vec();
            self.links
                .send(f.to, &Envelope::Forward { id: f.id.0, budget: f.budget.min(u32::MAX as usize) as u32, ops });
        }
        drop(replica);
        for m in out.membership.drain(..) {
            self.membership_applied(&m);
        }
        for (ticket, result) in out.membership_done.drain(..) {
            if let Some(tx) = self.changing.borrow_mut().remove(&ticket) {
                let _ = tx.send(result);
            }
        }
        for done in out.finished.drain(..) {
            if let Some((node, their_id)) = self.remote.borrow_mut().remove(&done.id) {
                let reply =
                    Envelope::ForwardReply { id: their_id, resume: done.resume as u32, ends: done.ends, out: done.out };
                self.links.send(node, &reply);
                continue;
            }
            if let Some(tx) = self.waiters.borrow_mut().remove(&done.id) {
                let _ = tx.send(OpsReply { batch: done.batch, out: done.out, ends: done.ends, resume: done.resume });
            }
        }
    }

    /// The shard's replication loop: ticks, and polls whenever woken (a job, a peer's
    /// message) or ticked.
    pub async fn drive(self: Rc<Self>, mut woken: mpsc::UnboundedReceiver<()>) {
        let mut out = ReplicaOutput::default();
        let mut next_tick = Instant::now() + TICK;
        let mut second = (Instant::now(), 0u64);
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let stop = futures_lite::future::or(async { woken.next().await.is_none() }, async {
                glommio::timer::sleep(wait).await;
                false
            })
            .await;
            if stop || self.stopped.get() {
                return;
            }
            while woken.try_recv().is_ok() {}
            let now = Instant::now();
            if now >= next_tick {
                self.replica.borrow_mut().tick();
                next_tick = (next_tick + TICK).max(now);
                if now.duration_since(second.0) >= Duration::from_secs(1) {
                    let syncs = {
                        use ringcache_replication::durable::Durable;
                        self.replica.borrow().group().durable().syncs()
                    };
                    let secs = now.duration_since(second.0).as_secs_f64();
                    self.fsyncs_per_second.set(((syncs - second.1) as f64 / secs).round() as u64);
                    second = (now, syncs);
                }
            }
            self.poll(&mut out);
        }
    }
}
