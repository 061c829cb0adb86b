//! One shard's numbers for `stats`: its counters, its store's statistics and its open
//! connections, gathered on the shard itself (for its own connection, or for a peer's
//! `stats` request over the mesh) and summed by `stats_reply`.

use super::registry::ConnectionRegistry;
use ringcache_core::shard::stats::Counters;
use ringcache_core::shard::Shard;
use ringcache_core::store::StoreStats;

/// One shard's numbers for `stats`.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    pub counters: Counters,
    pub store: StoreStats,
    pub memory_limit: usize,
    /// `(fd, peer address)` of this shard's open connections, for `stats conns`.
    pub connections: Vec<(i32, String)>,
}

impl ShardReport {
    /// Gathers this shard's report (resetting its counters first if `reset`: `stats reset`).
    pub fn gather(shard: &mut Shard, registry: &ConnectionRegistry, reset: bool) -> ShardReport {
        if reset {
            shard.reset_stats();
        }
        ShardReport {
            counters: *shard.counters(),
            store: shard.store().stats(),
            memory_limit: shard.store().memory_limit(),
            connections: registry.list(),
        }
    }
}
