//! ringcache-bench: a load generator for memcached text-protocol servers. The library holds
//! everything but the process entry point so tests can drive runs in-process.

pub mod affinity;
pub mod config;
pub mod ketama;
pub mod plot;
pub mod progress;
pub mod report;
pub mod runner;
pub mod stats;
pub mod sync;
pub mod verify;
pub mod worker;
pub mod workload;
