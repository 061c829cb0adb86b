//! What a shard tells memcached's `watch` connections: the events of its keys (a get
//! and what it found, a store and how it went, an eviction), recorded only while some
//! connection watches that kind, into a bounded buffer the server takes and writes out
//! as memcached's log lines (`ts=... gid=... type=item_get key=...`). Recording costs a
//! branch on a byte when nobody watches; while someone does, one copy of the key per
//! event, and nothing once the buffer is full (the events are dropped and counted, as
//! memcached's worker buffer drops them).

use crate::protocol::KEY_MAX_LENGTH;
use crate::store::{StoreMode, StoreOutcome};

/// `watch fetchers`: gets (and the lookups of touch, delete, incr, decr, mg, md).
pub const FETCHERS: u8 = 1;
/// `watch mutations`: stores (set, add, replace, append, prepend, cas, ms).
pub const MUTATIONS: u8 = 2;
/// `watch evictions`: items evicted to make room.
pub const EVICTIONS: u8 = 4;
/// `watch connevents`: connections opened and closed (the server's own).
pub const CONNEVENTS: u8 = 8;

/// Events a shard holds between two takes; beyond it they are dropped and counted.
pub const MAX_EVENTS: usize = 4096;

/// What a get found (memcached's `status=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    NotFound,
    Found,
}

/// A store's outcome as memcached's `item_store` line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreStatus {
    NotStored,
    Stored,
    Exists,
    NotFound,
    TooLarge,
    NoMemory,
}

impl StoreStatus {
    pub fn of(outcome: StoreOutcome) -> StoreStatus {
        match outcome {
            StoreOutcome::Stored => StoreStatus::Stored,
            StoreOutcome::NotStored => StoreStatus::NotStored,
            StoreOutcome::Exists => StoreStatus::Exists,
            StoreOutcome::NotFound => StoreStatus::NotFound,
            StoreOutcome::OutOfMemory => StoreStatus::NoMemory,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StoreStatus::NotStored => "not_stored",
            StoreStatus::Stored => "stored",
            StoreStatus::Exists => "exists",
            StoreStatus::NotFound => "not_found",
            StoreStatus::TooLarge => "too_large",
            StoreStatus::NoMemory => "no_memory",
        }
    }
}

/// memcached's `cmd=` name of a store mode.
pub fn command_name(mode: StoreMode) -> &'static str {
    match mode {
        StoreMode::Set => "set",
        StoreMode::Add => "add",
        StoreMode::Replace => "replace",
        StoreMode::Append => "append",
        StoreMode::Prepend => "prepend",
        StoreMode::Cas => "cas",
    }
}

/// One event of a watched kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `item_get`: the value's size when found.
    Fetch { found: Found, size: u32 },
    /// `item_store`: seconds to live (0: none), the value's size.
    Store { status: StoreStatus, mode: StoreMode, ttl: u32, size: u32 },
    /// `eviction`: whether it was ever read, seconds it had to live (-1: no expiry),
    /// seconds since its last access, the value's size.
    Evict { fetched: bool, ttl: i64, idle: u32, size: u32 },
}

/// An event and its key, with the descriptor of the connection that caused it (-1 for
/// none: an eviction, or a replica applying its log).
#[derive(Clone, Copy)]
pub struct Event {
    pub kind: EventKind,
    pub cfd: i32,
    key: [u8; KEY_MAX_LENGTH],
    key_len: u8,
}

impl Event {
    /// An event of `key` (cut to the longest key, which no stored key exceeds).
    pub fn new(key: &[u8], kind: EventKind, cfd: i32) -> Event {
        let len = key.len().min(KEY_MAX_LENGTH);
        let mut event = Event { kind, cfd, key: [0; KEY_MAX_LENGTH], key_len: len as u8 };
        event.key[..len].copy_from_slice(&key[..len]);
        event
    }

    pub fn key(&self) -> &[u8] {
        &self.key[..usize::from(self.key_len)]
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {:?} cfd={}", String::from_utf8_lossy(self.key()), self.kind, self.cfd)
    }
}

/// A shard's events while watched.
#[derive(Debug, Default)]
pub struct WatchLog {
    /// The kinds watched now (a bit per kind).
    mask: u8,
    /// The connection whose ops run now.
    cfd: i32,
    events: Vec<Event>,
    dropped: u64,
}

impl WatchLog {
    /// Watch these kinds from now on (0: none; the buffer is let go).
    pub fn set_mask(&mut self, mask: u8) {
        self.mask = mask;
        if mask == 0 {
            self.events = Vec::new();
        }
    }

    pub fn mask(&self) -> u8 {
        self.mask
    }

    /// Whether events of `kind` (a bit) are recorded.
    #[inline]
    pub fn wants(&self, kind: u8) -> bool {
        self.mask & kind != 0
    }

    /// The connection the next events are caused by.
    pub fn set_cfd(&mut self, cfd: i32) {
        self.cfd = cfd;
    }

    pub fn record(&mut self, key: &[u8], kind: EventKind) {
        self.record_for(key, kind, self.cfd);
    }

    pub fn record_for(&mut self, key: &[u8], kind: EventKind, cfd: i32) {
        if self.events.len() >= MAX_EVENTS {
            self.dropped += 1;
            return;
        }
        self.events.push(Event::new(key, kind, cfd));
    }

    /// Moves the events recorded so far to `into` (emptied first).
    pub fn take(&mut self, into: &mut Vec<Event>) {
        into.clear();
        std::mem::swap(&mut self.events, into);
    }

    /// Events dropped for a full buffer, ever.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_recorded_unwatched_and_a_full_buffer_drops() {
        let mut log = WatchLog::default();
        assert!(!log.wants(FETCHERS));
        log.set_mask(FETCHERS | MUTATIONS);
        assert!(log.wants(MUTATIONS) && !log.wants(EVICTIONS));
        log.set_cfd(7);
        for _ in 0..MAX_EVENTS + 3 {
            log.record(b"k", EventKind::Fetch { found: Found::Found, size: 1 });
        }
        let mut events = Vec::new();
        log.take(&mut events);
        assert_eq!((events.len(), log.dropped()), (MAX_EVENTS, 3));
        assert_eq!((events[0].key(), events[0].cfd), (b"k".as_slice(), 7));
        log.take(&mut events);
        assert!(events.is_empty(), "taken once");
    }
}
