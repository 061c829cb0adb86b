//! The I/O side of replication, kept apart from the sans-IO state machines above it:
//! [`file`] keeps a group's log and snapshots in files; [`transport`] connects a shard
//! to the same shard of its peers over TCP on glommio (authenticated, framed, batched).

pub mod file;
pub mod transport;
