//! The cross-shard mesh: messages one shard sends another (a batch of ops for keys the
//! other shard owns, or a request for its counters), and the task on each shard that
//! serves one peer's messages. Replies travel back on a oneshot channel carried in the
//! message, together with the buffers, so a connection reuses them round after round.

use std::cell::RefCell;
use std::rc::Rc;

use futures_channel::oneshot;
use glommio::channels::shared_channel::ConnectedReceiver;

use crate::shard::stats::Counters;
use crate::shard::{OpBatch, Shard};
use crate::store::StoreStats;

/// A message to another shard.
pub enum MeshMsg {
    /// Execute `batch` in order; reply with each op's reply bytes in `out`, ending at
    /// `ends[i]` for op `i`. `out` and `ends` arrive empty and are reused.
    Ops { batch: OpBatch, out: Vec<u8>, ends: Vec<u32>, reply: oneshot::Sender<OpsReply> },
    /// Report counters (and reset them first if `reset`).
    Stats { reset: bool, reply: oneshot::Sender<ShardReport> },
}

/// The answer to [`MeshMsg::Ops`]: the buffers back, filled.
pub struct OpsReply {
    pub batch: OpBatch,
    pub out: Vec<u8>,
    pub ends: Vec<u32>,
}

/// One shard's numbers for `stats`.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    pub counters: Counters,
    pub store: StoreStats,
    pub memory_limit: usize,
    /// `(fd, peer address)` of this shard's open connections, for `stats conns`.
    pub connections: Vec<(i32, String)>,
}

/// Live connections of one shard: their socket fds (to end their reads at shutdown) and
/// peer addresses (for `stats conns`).
#[derive(Default)]
pub struct ConnectionRegistry {
    next_id: u64,
    open: std::collections::BTreeMap<u64, (i32, String)>,
    /// Shutting down: connections registered from now on stop reading at once.
    closing: bool,
}

/// Ends the input of a connection's socket: it finishes what it has received, then closes.
fn shut_reads(fd: i32) {
    // SAFETY: fd belongs to a live connection of this shard; shutdown(2) does not
    // invalidate it, it only ends its input.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RD);
    }
}

impl ConnectionRegistry {
    pub fn add(&mut self, fd: i32, peer: String) -> u64 {
        if self.closing {
            shut_reads(fd);
        }
        self.next_id += 1;
        self.open.insert(self.next_id, (fd, peer));
        self.next_id
    }

    pub fn remove(&mut self, id: u64) {
        self.open.remove(&id);
    }

    pub fn list(&self) -> Vec<(i32, String)> {
        self.open.values().cloned().collect()
    }

    /// Stops reading on every connection, and on every one registered later: each
    /// finishes what it has received, then closes.
    pub fn shutdown_reads(&mut self) {
        self.closing = true;
        for (fd, _) in self.open.values() {
            shut_reads(*fd);
        }
    }
}

/// Builds this shard's report.
pub fn report(shard: &mut Shard, registry: &ConnectionRegistry, reset: bool) -> ShardReport {
    if reset {
        shard.counters = Counters::default();
        shard.store.reset_stats();
    }
    ShardReport {
        counters: shard.counters,
        store: shard.store.stats(),
        memory_limit: shard.store.memory_limit(),
        connections: registry.list(),
    }
}

/// Serves one peer's messages until the mesh closes.
pub async fn serve_peer(
    receiver: ConnectedReceiver<MeshMsg>,
    shard: Rc<RefCell<Shard>>,
    registry: Rc<RefCell<ConnectionRegistry>>,
) {
    while let Some(msg) = receiver.recv().await {
        match msg {
            MeshMsg::Ops { batch, mut out, mut ends, reply } => {
                shard.borrow_mut().execute_batch(&batch, &mut out, &mut ends);
                // The requester may have gone away (connection closed); nothing to do then.
                let _ = reply.send(OpsReply { batch, out, ends });
            }
            MeshMsg::Stats { reset, reply } => {
                let r = report(&mut shard.borrow_mut(), &registry.borrow(), reset);
                let _ = reply.send(r);
            }
        }
    }
}
