//! Helpers shared by every whole-process test (ringcache-server's and ringcache-bench's):
//! start `ringcache` or Debian's `memcached` on a reserved loopback port and wait until
//! it listens (killed when the guard drops), run `ringcache` expecting it to exit, read a
//! process's RSS, send it signals ([`process`]); a small text-protocol client that fails
//! with a message instead of hanging, a deterministic RNG and a checksum ([`client`]);
//! per-key histories of memcached commands checked for linearizability ([`history`]).
//!
//! The `ringcache` binary is the one cargo builds for the calling crate's tests: the
//! macros [`start_ringcache!`], [`start_ringcache_with!`] and [`run_ringcache_to_exit!`]
//! pass `env!("CARGO_BIN_EXE_ringcache")` from the call site.

pub mod client;
pub mod history;
pub mod process;

pub use client::{fnv1a, Block, Conn, Rng};
pub use process::{
    reserve_port, roundtrip, run_client_script, run_ringcache_to_exit_at, start_memcached, start_ringcache_at,
    start_ringcache_with_at, wait_child, PortReservation, Server,
};

/// Starts the `ringcache` built for this crate's tests with these extra flags
/// (`-l 127.0.0.1 -p <reserved port>` come first).
#[macro_export]
macro_rules! start_ringcache {
    ($extra:expr $(,)?) => {
        $crate::start_ringcache_at(env!("CARGO_BIN_EXE_ringcache"), $extra)
    };
}

/// As [`start_ringcache!`], letting a closure adjust the command first.
#[macro_export]
macro_rules! start_ringcache_with {
    ($extra:expr, $configure:expr $(,)?) => {
        $crate::start_ringcache_with_at(env!("CARGO_BIN_EXE_ringcache"), $extra, $configure)
    };
}

/// Runs the `ringcache` built for this crate's tests with exactly these arguments,
/// expecting it to exit within the duration: `(status, stderr)`.
#[macro_export]
macro_rules! run_ringcache_to_exit {
    ($args:expr, $within:expr $(,)?) => {
        $crate::run_ringcache_to_exit_at(env!("CARGO_BIN_EXE_ringcache"), $args, $within)
    };
}
