//! The cross-shard mesh: messages one shard sends another (a batch of ops for keys the
//! other shard owns, or a request for its counters), and the task on each shard that
//! serves one peer's messages. Replies travel back on a oneshot channel carried in the
//! message, together with the buffers, so a connection reuses them round after round.

use std::cell::RefCell;
use std::rc::Rc;

use futures_channel::oneshot;
use glommio::channels::shared_channel::ConnectedReceiver;

use super::registry::ConnectionRegistry;
use super::shard_report::ShardReport;
use ringcache_core::shard::OpBatch;

use super::shard_cell::ShardCell;

/// A message to another shard.
pub enum MeshMsg {
    /// Execute the ops of `batch` from byte offset `from`, in order, while their replies
    /// fit in `budget` bytes (the first one regardless when `must_progress`); reply with
    /// each executed op's reply bytes in `out`, ending at `ends[i]`, and the offset to
    /// resume from. `out` and `ends` arrive empty and are reused.
    Ops {
        batch: OpBatch,
        from: usize,
        budget: usize,
        must_progress: bool,
        /// The sender's clock (relative seconds), so one round sees one time.
        now: u32,
        out: Vec<u8>,
        ends: Vec<u32>,
        reply: oneshot::Sender<OpsReply>,
    },
    /// Report counters (and reset them first if `reset`), at the sender's time `now`.
    Stats { reset: bool, now: u32, reply: oneshot::Sender<ShardReport> },
    /// An administrative command for this shard's replica group: its answer line.
    Cluster { cmd: super::replicated::admin::Admin, reply: oneshot::Sender<String> },
    /// One of memcached's administration commands, this shard's part (at the sender's
    /// time `now`): whether it was done.
    Admin { cmd: super::admin_commands::ShardAdmin, now: u32, reply: oneshot::Sender<bool> },
    /// The next chunk of `lru_crawler metadump` from `from` (at most about `budget`
    /// bytes, appended to `out`, which travels back with where to go on).
    Dump {
        from: ringcache_core::store::DumpCursor,
        classes: u64,
        now: u32,
        budget: usize,
        out: Vec<u8>,
        reply: oneshot::Sender<(Vec<u8>, Option<ringcache_core::store::DumpCursor>)>,
    },
}

/// The answer to [`MeshMsg::Ops`]: the buffers back, filled, and where to resume.
pub struct OpsReply {
    pub batch: OpBatch,
    pub out: Vec<u8>,
    pub ends: Vec<u32>,
    /// Byte offset of the first op not executed (`batch.bytes()` when all were).
    pub resume: usize,
}

/// Serves one peer's messages until the mesh closes.
pub async fn serve_peer(
    receiver: ConnectedReceiver<MeshMsg>,
    shard: Rc<ShardCell>,
    registry: Rc<RefCell<ConnectionRegistry>>,
) {
    while let Some(msg) = receiver.recv().await {
        match msg {
            MeshMsg::Ops { batch, from, budget, must_progress, now, mut out, mut ends, reply } => {
                if let Some(replicated) = shard.replicated() {
                    // The replica answers when the ops are final; this task does not wait
                    // for it (it never waits for anything but its own receiver).
                    let answer = replicated.submit(batch, from, budget, must_progress);
                    glommio::spawn_local(async move {
                        if let Ok(r) = answer.await {
                            let _ = reply.send(r);
                        }
                    })
                    .detach();
                    continue;
                }
                let mut cell = shard.borrow_mut();
                // `watch` lines of these ops name no connection (it is another shard's).
                cell.watch_mut().set_cfd(-1);
                let resume = cell.execute_batch(&batch, from, budget, must_progress, now, &mut out, &mut ends);
                drop(cell);
                // The requester may have gone away (connection closed); nothing to do then.
                let _ = reply.send(OpsReply { batch, out, ends, resume });
            }
            MeshMsg::Cluster { cmd, reply } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(super::replicated::admin::answer(&shard, &cmd).await);
                })
                .detach();
            }
            MeshMsg::Dump { from, classes, now, budget, mut out, reply } => {
                let next = shard.borrow().store().dump(from, classes, now, &mut out, budget);
                let _ = reply.send((out, next));
            }
            MeshMsg::Admin { cmd, now, reply } => {
                let _ = reply.send(super::admin_commands::on_shard(&shard, cmd, now));
            }
            MeshMsg::Stats { reset, now, reply } => {
                let r = ShardReport::gather(&shard, &registry.borrow(), reset, now);
                let _ = reply.send(r);
            }
        }
    }
}
