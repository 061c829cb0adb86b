//! ringcache's server: everything that touches the machine, around the core
//! (`ringcache-core`: protocol, store, shard execution).
//!
//! - [`server`]: executors, listeners, connections, the cross-shard mesh, shutdown.
//! - [`config`] and [`topology`]: the command line and the CPU map; [`cluster`]: the
//!   replica-group flags.
//! - [`clock`]: the process's clock; the core gets `now` from it.

pub mod clock;
pub mod cluster;
pub mod config;
pub mod server;
pub mod topology;
