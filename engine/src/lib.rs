//! ringcache's engine: a thread-per-core, memcached-compatible cache server.
//!
//! - [`protocol`]: the memcached text protocol, sans-IO (parse requests, encode replies).
//! - [`store`]: one shard's items (index, eviction, expiry), single-threaded.
//! - [`shard`]: what a shard executes: key-addressed [`shard::Op`]s against its store,
//!   their encoding for the cross-shard mesh, and the shard's counters.
//! - [`server`]: executors, listeners, connections, the cross-shard mesh, shutdown.
//! - [`config`] and [`topology`]: the command line and the CPU map.

pub mod config;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod store;
pub mod topology;
