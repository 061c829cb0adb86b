//! The live connections of one shard: their socket fds, so that shutdown can end their
//! input (each finishes what it has received) and, once the grace period is over, end
//! them outright; their peer addresses, for `stats conns`; and what the shard's
//! connections counted ([`super::conn_figures`]), for the metrics.

use std::collections::BTreeMap;

/// Live connections of one shard.
#[derive(Default)]
pub struct ConnectionRegistry {
    /// The shard's ring (its counters go into `stats`).
    pub reactor: Option<std::rc::Rc<super::uring::Reactor>>,
    /// Service time, closings and cross-shard trips of this shard's connections.
    pub figures: std::rc::Rc<super::conn_figures::ConnectionFigures>,
    next_id: u64,
    open: BTreeMap<u64, (i32, String)>,
    /// Shutting down: connections registered from now on stop reading at once.
    closing: bool,
    /// Past the grace period: connections registered from now on are ended at once.
    aborted: bool,
}

/// Shuts down one or both directions of a connection's socket.
fn shutdown(fd: i32, how: libc::c_int) {
    // SAFETY: fd belongs to a live connection of this shard; shutdown(2) does not
    // invalidate it, it only ends the socket's input (and output).
    unsafe {
        libc::shutdown(fd, how);
    }
}

impl ConnectionRegistry {
    pub fn add(&mut self, fd: i32, peer: String) -> u64 {
        if self.aborted {
            shutdown(fd, libc::SHUT_RDWR);
        } else if self.closing {
            shutdown(fd, libc::SHUT_RD);
        }
        self.next_id += 1;
        self.open.insert(self.next_id, (fd, peer));
        self.next_id
    }

    pub fn remove(&mut self, id: u64) {
        self.open.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn list(&self) -> Vec<(i32, String)> {
        self.open.values().cloned().collect()
    }

    /// Stops reading on every connection, and on every one registered later: each
    /// finishes what it has received, writes its replies, then closes.
    pub fn shutdown_reads(&mut self) {
        self.closing = true;
        for (fd, _) in self.open.values() {
            shutdown(*fd, libc::SHUT_RD);
        }
    }

    /// Ends every connection now, and every one registered later: pending writes fail,
    /// so each connection's task finishes at once.
    pub fn abort_all(&mut self) {
        self.aborted = true;
        for (fd, _) in self.open.values() {
            shutdown(*fd, libc::SHUT_RDWR);
        }
    }
}
