//! memcached's `watch`: connections that stream log lines of what the server does
//! (`fetchers`, `mutations`, `evictions`, `connevents`), in memcached 1.6's line formats.
//!
//! - [`Watchers`] (shared by the shards) has at most [`WATCHER_LIMIT`] slots, as
//!   memcached. Each slot holds the lines for one watcher, at most [`WATCHER_BUFFER`]
//!   bytes. A line that does not fit is skipped and counted, and the next line that fits
//!   is preceded by `skipped=N`. A slow watcher costs at most its buffer and never holds
//!   up the shards.
//! - Each shard records its keys' events while their kind is watched
//!   (`ringcache_core::shard::watch`). Its [`pump`] task takes them every
//!   [`PUMP_INTERVAL`] while anyone watches, and writes them into the slots as lines.
//!   That is also how a shard learns that nobody watches any more. A new watcher is
//!   told to every shard before its `OK`.
//! - Connection events are written by the connection itself.
//! - The watching connection sends its slot's lines ([`super::connection`]'s watch loop).
//!
//! Lines carry memcached's fields with ringcache's values:
//! - `ts` is when the shard's events were taken (at most a pump interval late).
//! - `gid` counts lines across the server.
//! - `clsid` is 0 (there are no slab classes).
//! - `cfd` is the connection's descriptor, or -1 where there is none (evictions, ops
//!   another shard ran for a connection).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringcache_core::shard::watch::{self, command_name, Event, EventKind, Found};

/// Watchers at most, server-wide (memcached's `WATCHER_LIMIT`).
pub const WATCHER_LIMIT: usize = 20;
/// Bytes of lines one watcher may have waiting (memcached's `watcher_logbuf_size`).
pub const WATCHER_BUFFER: usize = 256 << 10;
/// How often a shard hands its events over while anyone watches.
pub const PUMP_INTERVAL: Duration = Duration::from_millis(2);
/// How often an idle shard looks whether anyone watches.
const IDLE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Slot {
    active: AtomicBool,
    kinds: AtomicU8,
    lines: Mutex<Lines>,
}

#[derive(Default)]
struct Lines {
    bytes: Vec<u8>,
    skipped: u64,
}

/// Every watcher's slot, and the counters of `stats`.
#[derive(Default)]
pub struct Watchers {
    /// The kinds some active watcher wants (a bit per kind).
    mask: AtomicU8,
    slots: [Slot; WATCHER_LIMIT],
    gid: AtomicU64,
    /// Lines written into slots, and skipped for a full one (`log_worker_written`,
    /// `log_watcher_skipped`), and lines sent to watchers (`log_watcher_sent`).
    pub written: AtomicU64,
    pub skipped: AtomicU64,
    pub sent: AtomicU64,
}

/// A watcher's hold on its slot: let go (and its kinds forgotten) when dropped.
pub struct Watching<'w> {
    watchers: &'w Watchers,
    slot: usize,
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        let slot = &self.watchers.slots[self.slot];
        slot.kinds.store(0, Ordering::Relaxed);
        *slot.lines.lock().unwrap_or_else(|e| e.into_inner()) = Lines::default();
        slot.active.store(false, Ordering::Release);
        self.watchers.update_mask();
    }
}

impl Watching<'_> {
    /// Moves the lines waiting for this watcher to `into` (emptied first).
    pub fn take(&self, into: &mut Vec<u8>) {
        into.clear();
        let mut lines = self.watchers.slots[self.slot].lines.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut lines.bytes, into);
    }
}

impl Watchers {
    /// The kinds anyone watches now.
    pub fn mask(&self) -> u8 {
        self.mask.load(Ordering::Acquire)
    }

    /// Watchers now (`log_watchers`).
    pub fn count(&self) -> usize {
        self.slots.iter().filter(|s| s.active.load(Ordering::Relaxed)).count()
    }

    fn update_mask(&self) {
        let mask = self
            .slots
            .iter()
            .filter(|s| s.active.load(Ordering::Acquire))
            .fold(0, |m, s| m | s.kinds.load(Ordering::Relaxed));
        self.mask.store(mask, Ordering::Release);
    }

    /// Takes a slot for a watcher of `kinds`; None when all are taken.
    pub fn add(&self, kinds: u8) -> Option<Watching<'_>> {
        let slot = self
            .slots
            .iter()
            .position(|s| s.active.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok())?;
        self.slots[slot].kinds.store(kinds, Ordering::Relaxed);
        self.update_mask();
        Some(Watching { watchers: self, slot })
    }

    /// Writes a line of `kind` (made by `line`, given `ts=... gid=... ` already) into
    /// the slot of every watcher of that kind.
    pub fn publish(&self, kind: u8, scratch: &mut Vec<u8>, line: impl FnOnce(&mut Vec<u8>)) {
        if self.mask() & kind == 0 {
            return;
        }
        scratch.clear();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let gid = self.gid.fetch_add(1, Ordering::Relaxed) + 1;
        // memcached's `ts=%lld.%d`: the microseconds are not zero-padded.
        scratch.extend_from_slice(format!("ts={}.{} gid={gid} ", now.as_secs(), now.subsec_micros()).as_bytes());
        line(scratch);
        for slot in &self.slots {
            if !slot.active.load(Ordering::Acquire) || slot.kinds.load(Ordering::Relaxed) & kind == 0 {
                continue;
            }
            let mut lines = slot.lines.lock().unwrap_or_else(|e| e.into_inner());
            let marker = (lines.skipped > 0).then(|| format!("skipped={}\n", lines.skipped));
            let need = scratch.len() + marker.as_ref().map_or(0, String::len);
            if lines.bytes.len() + need > WATCHER_BUFFER {
                lines.skipped += 1;
                self.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Some(marker) = marker {
                lines.bytes.extend_from_slice(marker.as_bytes());
                lines.skipped = 0;
            }
            lines.bytes.extend_from_slice(scratch);
            self.written.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes a shard's event as memcached's line.
    pub fn publish_event(&self, event: &Event, scratch: &mut Vec<u8>) {
        let kind = match event.kind {
            EventKind::Fetch { .. } => watch::FETCHERS,
            EventKind::Store { .. } => watch::MUTATIONS,
            EventKind::Evict { .. } => watch::EVICTIONS,
        };
        self.publish(kind, scratch, |out| {
            let line = match event.kind {
                EventKind::Fetch { found, size } => {
                    let status = if found == Found::Found { "found" } else { "not_found" };
                    format!(
                        "type=item_get key={} status={status} clsid=0 cfd={} size={size}\n",
                        uri(event.key()),
                        event.cfd
                    )
                }
                EventKind::Store { status, mode, ttl, size } => format!(
                    "type=item_store key={} status={} cmd={} ttl={ttl} clsid=0 cfd={} size={size}\n",
                    uri(event.key()),
                    status.name(),
                    command_name(mode),
                    event.cfd
                ),
                EventKind::Evict { fetched, ttl, idle, size } => format!(
                    "type=eviction key={} fetch={} ttl={ttl} la={idle} clsid=0 size={size}\n",
                    uri(event.key()),
                    if fetched { "yes" } else { "no" }
                ),
            };
            out.extend_from_slice(line.as_bytes());
        });
    }

    /// `conn_new` / `conn_close` of a connection (`peer`: its address, or None for a
    /// Unix socket; `closed`: None when it opens, else whether it ended normally).
    pub fn publish_conn(
        &self,
        fd: i32,
        peer: Option<std::net::SocketAddr>,
        closed: Option<bool>,
        scratch: &mut Vec<u8>,
    ) {
        self.publish(watch::CONNEVENTS, scratch, |out| {
            let (rip, rport, transport) = match peer {
                Some(a) => (a.ip().to_string(), a.port(), "tcp"),
                None => ("unix".to_string(), 0, "local"),
            };
            let line = match closed {
                None => format!("type=conn_new rip={rip} rport={rport} transport={transport} cfd={fd}\n"),
                Some(normal) => {
                    let reason = if normal { "normal" } else { "error" };
                    format!("type=conn_close rip={rip} rport={rport} transport={transport} reason={reason} cfd={fd}\n")
                }
            };
            out.extend_from_slice(line.as_bytes());
        });
    }
}

/// memcached's `uriencode`: every byte but `A-Z a-z 0-9 - . _ ~` as `%XX`.
fn uri(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A shard's pump: while anyone watches, hands the shard's events over as lines every
/// [`PUMP_INTERVAL`]; keeps the shard's watched kinds in step with the watchers (a
/// watcher that left is forgotten here within an idle interval).
pub async fn pump(shard: std::rc::Rc<super::shard_cell::ShardCell>, shared: std::sync::Arc<super::Shared>) {
    let watchers = &shared.watchers;
    let mut events = Vec::new();
    let mut scratch = Vec::new();
    loop {
        let mask = watchers.mask();
        glommio::timer::sleep(if mask == 0 { IDLE_INTERVAL } else { PUMP_INTERVAL }).await;
        let mut cell = shard.borrow_mut();
        cell.set_watch(watchers.mask());
        if mask == 0 {
            continue;
        }
        cell.take_watch_events(&mut events);
        drop(cell);
        for event in &events {
            watchers.publish_event(event, &mut scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringcache_core::shard::watch::StoreStatus;
    use ringcache_core::store::StoreMode;

    fn lines(w: &Watching<'_>) -> String {
        let mut out = Vec::new();
        w.take(&mut out);
        String::from_utf8(out).expect("text")
    }

    #[test]
    fn lines_go_to_watchers_of_their_kind_in_memcacheds_format() {
        let hub = Watchers::default();
        let fetchers = hub.add(watch::FETCHERS).expect("a slot");
        let mutations = hub.add(watch::MUTATIONS | watch::CONNEVENTS).expect("a slot");
        assert_eq!(hub.mask(), watch::FETCHERS | watch::MUTATIONS | watch::CONNEVENTS);
        let mut scratch = Vec::new();
        let get = Event::new(b"a/b c", EventKind::Fetch { found: Found::Found, size: 3 }, 11);
        hub.publish_event(&get, &mut scratch);
        let kind = EventKind::Store { status: StoreStatus::Stored, mode: StoreMode::Append, ttl: 100, size: 5 };
        hub.publish_event(&Event::new(b"k", kind, 12), &mut scratch);
        hub.publish_conn(13, Some("127.0.0.1:4000".parse().expect("addr")), Some(true), &mut scratch);
        let got = lines(&fetchers);
        assert!(got.starts_with("ts="), "{got}");
        assert!(got.ends_with(" gid=1 type=item_get key=a%2Fb%20c status=found clsid=0 cfd=11 size=3\n"), "{got}");
        let got = lines(&mutations);
        let want = [
            " gid=2 type=item_store key=k status=stored cmd=append ttl=100 clsid=0 cfd=12 size=5\n",
            " gid=3 type=conn_close rip=127.0.0.1 rport=4000 transport=tcp reason=normal cfd=13\n",
        ];
        let got: Vec<&str> = got.split_inclusive('\n').collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].ends_with(want[0]) && got[1].ends_with(want[1]), "{got:?}");
        drop(fetchers);
        assert_eq!(hub.mask(), watch::MUTATIONS | watch::CONNEVENTS, "a watcher gone is forgotten");
    }

    #[test]
    fn at_most_twenty_watchers() {
        let hub = Watchers::default();
        let held: Vec<_> = (0..WATCHER_LIMIT).map(|_| hub.add(watch::FETCHERS).expect("a slot")).collect();
        assert!(hub.add(watch::FETCHERS).is_none());
        assert_eq!(hub.count(), WATCHER_LIMIT);
        drop(held);
        assert_eq!((hub.count(), hub.mask()), (0, 0));
        assert!(hub.add(watch::FETCHERS).is_some());
    }

    #[test]
    fn a_full_buffer_skips_lines_and_says_so_before_the_next() {
        let hub = Watchers::default();
        let w = hub.add(watch::FETCHERS).expect("a slot");
        let mut scratch = Vec::new();
        let event = Event::new(&[b'k'; 200], EventKind::Fetch { found: Found::NotFound, size: 0 }, 1);
        let mut published = 0u64;
        while hub.skipped.load(Ordering::Relaxed) < 5 {
            hub.publish_event(&event, &mut scratch);
            published += 1;
        }
        let held = lines(&w);
        assert!(held.len() <= WATCHER_BUFFER, "bounded: {}", held.len());
        assert_eq!(held.lines().count() as u64, published - 5);
        hub.publish_event(&event, &mut scratch);
        let after = lines(&w);
        assert!(after.starts_with("skipped=5\nts="), "{}", &after[..40]);
        assert_eq!(after.lines().count(), 2);
    }
}
