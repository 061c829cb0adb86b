//! The I/O side of replication, kept apart from the sans-IO state machines above it:
//! [`file`] keeps a group's log and snapshots in files.

pub mod file;
