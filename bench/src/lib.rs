//! ringcache-bench: a load generator for memcached text-protocol servers. The library holds
//! everything but argument parsing so tests can drive runs in-process.

pub mod ketama;
pub mod verify;
pub mod workload;
