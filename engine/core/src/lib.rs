//! ringcache's core: everything a shard does that needs neither an I/O runtime nor a
//! clock, so it can be tested, fuzzed and (later) driven by a replication log alone.
//!
//! - [`protocol`]: the memcached text protocol, sans-IO (parse requests, encode replies).
//! - [`store`]: one shard's items (index, eviction, expiry), single-threaded.
//! - [`shard`]: what a shard executes: key-addressed [`shard::Op`]s against its store,
//!   their encoding for crossing to another shard, and the shard's counters.
//! - [`time`]: memcached's time rules; `now` always comes in as an argument.
//! - [`numbers`]: memcached's number parsing and formatting, shared by the two above.
//!
//! Dependencies inside: `protocol` uses the store's rules (`StoreMode`, the item-size
//! rule); `store` uses nothing of `protocol`; `shard` joins them.
//!
//! Rule: nothing in this crate reads a clock, opens a socket or depends on the server's
//! runtime (glommio, hwloc, clap); `ops/test.sh` checks it.

pub mod codec;
pub mod effect;
pub mod numbers;
pub mod protocol;
pub mod shard;
pub mod store;
pub mod time;
