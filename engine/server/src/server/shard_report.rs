//! One shard's numbers for `stats`: its counters, its store's statistics and its open
//! connections, gathered on the shard itself (for its own connection, or for a peer's
//! `stats` request over the mesh) and summed by `stats_reply`.

use super::registry::ConnectionRegistry;
use super::shard_cell::ShardCell;
use ringcache_core::shard::stats::Counters;
use ringcache_core::store::StoreStats;
use ringcache_replication::durable::Durable;
use ringcache_replication::group::{GroupStats, GroupStatus};

/// A replicated shard's group: where it stands, and the batching it achieved.
#[derive(Debug, Clone)]
pub struct ReplicationReport {
    pub shard: usize,
    pub status: GroupStatus,
    pub stats: GroupStats,
    pub syncs: u64,
    pub syncs_per_second: u64,
    /// Jobs waiting for their outcome.
    pub jobs: usize,
}

/// One shard's numbers for `stats`.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    pub counters: Counters,
    pub store: StoreStats,
    /// Per TTL class (`stats items`, `stats slabs`).
    pub classes: Vec<ringcache_core::store::ClassReport>,
    /// Counts by key prefix while `stats detail` is on (`stats detail dump`).
    pub prefixes: Vec<(Vec<u8>, ringcache_core::shard::detail::PrefixCounts)>,
    pub memory_limit: usize,
    /// `(fd, peer address)` of this shard's open connections, for `stats conns`.
    pub connections: Vec<(i32, String)>,
    pub replication: Option<ReplicationReport>,
    /// The shard's io_uring: its counters.
    pub ring: super::uring::RingCounters,
    /// The shard's connections: service time, closings, cross-shard trips.
    pub conns: super::conn_figures::ConnectionSnapshot,
    /// `watch` events dropped for a full buffer (`log_worker_dropped`).
    pub watch_dropped: u64,
}

impl ShardReport {
    /// Gathers this shard's report (resetting its counters first if `reset`: `stats reset`).
    pub fn gather(cell: &ShardCell, registry: &ConnectionRegistry, reset: bool, now: u32) -> ShardReport {
        let replication = cell.replicated().map(|r| {
            let replica = r.replica.borrow();
            let group = replica.group();
            ReplicationReport {
                shard: r.shard,
                status: group.status(),
                stats: group.stats(),
                syncs: group.durable().syncs(),
                syncs_per_second: r.fsyncs_per_second.get(),
                jobs: replica.jobs(),
            }
        });
        let mut shard = cell.borrow_mut();
        if reset {
            shard.reset_stats();
        }
        ShardReport {
            counters: *shard.counters(),
            store: shard.store().stats(),
            classes: shard.store().class_reports(now),
            prefixes: shard.detail().map(|d| d.iter().map(|(p, c)| (p.to_vec(), *c)).collect()).unwrap_or_default(),
            memory_limit: shard.store().memory_limit(),
            connections: registry.list(),
            replication,
            ring: registry.reactor.as_ref().map(|r| r.counters()).unwrap_or_default(),
            conns: registry.figures.snapshot(),
            watch_dropped: shard.watch_mut().dropped(),
        }
    }
}
