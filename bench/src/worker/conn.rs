//! One connection of a load thread, sans-IO: its receive buffer (grown to the largest
//! reply unit seen), its send buffers (one in flight, one collecting the next requests),
//! and the queue of replies it expects (*parts*, in send order); how a part's request is
//! encoded, and what each reply unit means for the operation it belongs to. The worker
//! moves bytes (io_uring) and keeps the operations' books.

use std::collections::VecDeque;

use ringcache_client::{self as protocol, DeleteReply, IncrReply, StoreReply};

use crate::verify;
use crate::workload::{OpKind, MAX_KEY_LEN};

/// Client flags stored with every set (checked by `--verify`).
pub(super) const SET_FLAGS: u32 = 0;
/// What each `incr` adds to its counter.
pub(super) const INCR_DELTA: u64 = 1;
/// A single reply unit larger than this is treated as a protocol error.
pub(super) const RBUF_MAX: usize = 64 * 1024 * 1024;

/// The request a part's reply answers, which decides how the reply is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
    Get,
    Set,
    Delete,
    Incr,
    /// The `gets` of a cas operation.
    Gets,
    /// The `cas` that follows a `gets` hit.
    Cas,
}

/// How a cas operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CasOutcome {
    Miss,
    Stored,
    Exists,
    NotFound,
}

/// One expected reply on a socket, in send order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Part {
    pub(super) slot: u32,
    pub(super) wire: Wire,
    pub(super) kstart: u16,
    pub(super) kend: u16,
}

pub(super) struct Sock {
    pub(super) server: usize,
    pub(super) group: usize,
    pub(super) rbuf: Vec<u8>,
    pub(super) rstart: usize,
    pub(super) rend: usize,
    pub(super) recv_inflight: bool,
    /// Bytes being sent (stable while `send_inflight`).
    pub(super) obuf: Vec<u8>,
    pub(super) osent: usize,
    pub(super) send_inflight: bool,
    /// Requests queued while a send is in flight.
    pub(super) next: Vec<u8>,
    pub(super) dirty: bool,
    pub(super) parts: VecDeque<Part>,
}

/// Where the receive buffer stands after the complete reply units were consumed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Room {
    Ready,
    /// The unit at the front needs more than [`RBUF_MAX`] bytes.
    TooLarge,
}

/// Where a send stands after `n` more bytes went out.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sent {
    /// Part of the buffer is still to go.
    More,
    /// All of it went; requests are waiting in the next buffer.
    DoneWithMore,
    Done,
}

impl Sock {
    /// Makes room for the next receive once the complete units were consumed: resets an
    /// empty buffer, moves a partial unit to the front, grows for a unit of `need` bytes.
    pub(super) fn make_room(&mut self, need: Option<usize>) -> Room {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
            return Room::Ready;
        }
        let cap = self.rbuf.len();
        let need = need.unwrap_or(0);
        if self.rend == cap || self.rstart + need > cap || self.rstart > cap / 2 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        if self.rend == cap || need > cap {
            let grown = need.max(cap * 2).next_power_of_two();
            if grown > RBUF_MAX {
                return Room::TooLarge;
            }
            self.rbuf.resize(grown, 0);
        }
        Room::Ready
    }

    /// Swaps the collected requests in for sending, if no send is in flight; true when
    /// there is something to send.
    pub(super) fn start_send(&mut self) -> bool {
        if self.send_inflight || self.next.is_empty() {
            return false;
        }
        std::mem::swap(&mut self.obuf, &mut self.next);
        self.next.clear();
        self.osent = 0;
        true
    }

    /// Records `n` bytes of the send buffer as sent.
    pub(super) fn sent(&mut self, n: usize) -> Sent {
        self.osent += n;
        if self.osent < self.obuf.len() {
            return Sent::More;
        }
        self.obuf.clear();
        self.osent = 0;
        if self.next.is_empty() {
            Sent::Done
        } else {
            Sent::DoneWithMore
        }
    }
}

/// Appends a value of `size` bytes for `key`: under `--verify` a self-checking one (a new
/// version each time), else the filler.
pub(super) fn push_value(
    out: &mut Vec<u8>,
    key: &[u8],
    size: usize,
    verify_values: bool,
    version: &mut u32,
    filler: &[u8],
) {
    if verify_values {
        let start = out.len();
        out.resize(start + size, 0);
        verify::fill_value(key, *version, &mut out[start..]);
        *version = version.wrapping_add(1);
    } else {
        out.extend_from_slice(&filler[..size]);
    }
}

/// What a request of kind `kind` for one server needs beyond its keys.
pub(super) struct Request<'a> {
    pub(super) kind: OpKind,
    /// The op's key is a counter (its prefill set writes `0`).
    pub(super) counter: bool,
    pub(super) ttl: u32,
    /// A set's value: its size, written by `push_value`.
    pub(super) value_size: usize,
    pub(super) verify: bool,
    pub(super) version: &'a mut u32,
    pub(super) filler: &'a [u8],
}

/// Encodes the request for one server's share of an operation: `keys` (key indexes),
/// each written out by `write_key` into a `key_size`-byte buffer. Returns what its reply
/// answers. Allocates nothing beyond `out`'s growth.
pub(super) fn encode(
    out: &mut Vec<u8>,
    r: Request<'_>,
    keys: &[(u32, u64)],
    key_size: usize,
    write_key: &dyn Fn(u64, &mut [u8]),
) -> Wire {
    let mut kb = [0u8; MAX_KEY_LEN];
    let key = &mut kb[..key_size];
    write_key(keys[0].1, key);
    match r.kind {
        OpKind::Get => {
            protocol::begin_get(out);
            protocol::push_get_key(out, key);
            for &(_, k) in &keys[1..] {
                write_key(k, key);
                protocol::push_get_key(out, key);
            }
            protocol::end_line(out);
            Wire::Get
        }
        OpKind::Set if r.counter => {
            protocol::set_header(out, key, SET_FLAGS, r.ttl, 1);
            out.push(b'0');
            protocol::end_line(out);
            Wire::Set
        }
        OpKind::Delete => {
            protocol::delete(out, key);
            Wire::Delete
        }
        OpKind::Incr => {
            protocol::incr(out, key, INCR_DELTA);
            Wire::Incr
        }
        OpKind::Cas => {
            protocol::begin_gets(out);
            protocol::push_get_key(out, key);
            protocol::end_line(out);
            Wire::Gets
        }
        OpKind::Set => {
            protocol::set_header(out, key, SET_FLAGS, r.ttl, r.value_size);
            push_value(out, key, r.value_size, r.verify, r.version, r.filler);
            protocol::end_line(out);
            Wire::Set
        }
    }
}

/// What a store reply means for a set or cas part: the cas outcome (if it decides one),
/// whether the set was not stored, whether it was an error.
pub(super) fn store_reply(wire: Wire, reply: StoreReply) -> (Option<CasOutcome>, bool, bool) {
    match reply {
        StoreReply::Stored => (Some(CasOutcome::Stored), false, false),
        StoreReply::Exists if wire == Wire::Cas => (Some(CasOutcome::Exists), false, false),
        StoreReply::NotFound if wire == Wire::Cas => (Some(CasOutcome::NotFound), false, false),
        // memcached never answers a cas NOT_STORED; count it as an error.
        StoreReply::NotStored if wire == Wire::Cas => (None, false, true),
        StoreReply::NotStored | StoreReply::Exists | StoreReply::NotFound => (None, true, false),
        StoreReply::Error(_) => (None, false, true),
    }
}

/// What a delete or incr reply means: (hit, error).
pub(super) fn counted_reply<R: Into<CountedReply>>(reply: R) -> (bool, bool) {
    match reply.into() {
        CountedReply::Hit => (true, false),
        CountedReply::Miss => (false, false),
        CountedReply::Error => (false, true),
    }
}

/// A delete's or incr's reply, reduced to what the books count.
pub(super) enum CountedReply {
    Hit,
    Miss,
    Error,
}

impl From<DeleteReply> for CountedReply {
    fn from(r: DeleteReply) -> Self {
        match r {
            DeleteReply::Deleted => CountedReply::Hit,
            DeleteReply::NotFound => CountedReply::Miss,
            DeleteReply::Error(_) => CountedReply::Error,
        }
    }
}

impl From<IncrReply> for CountedReply {
    fn from(r: IncrReply) -> Self {
        match r {
            IncrReply::Value(_) => CountedReply::Hit,
            IncrReply::NotFound => CountedReply::Miss,
            IncrReply::Error(_) => CountedReply::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock() -> Sock {
        Sock {
            server: 0,
            group: 0,
            rbuf: vec![0; 16],
            rstart: 0,
            rend: 0,
            recv_inflight: false,
            obuf: Vec::new(),
            osent: 0,
            send_inflight: false,
            next: Vec::new(),
            dirty: false,
            parts: VecDeque::new(),
        }
    }

    #[test]
    fn requests_are_encoded_per_kind() {
        let write_key = |i: u64, out: &mut [u8]| out.copy_from_slice(format!("k{i}").as_bytes());
        let mut version = 0;
        let mut out = Vec::new();
        let mut request = |kind, counter, value_size, out: &mut Vec<u8>, keys: &[(u32, u64)]| {
            let r = Request { kind, counter, ttl: 7, value_size, verify: false, version: &mut version, filler: b"xyz" };
            encode(out, r, keys, 2, &write_key)
        };
        assert_eq!(request(OpKind::Get, false, 0, &mut out, &[(0, 1), (0, 2)]), Wire::Get);
        assert_eq!(request(OpKind::Set, false, 3, &mut out, &[(0, 3)]), Wire::Set);
        assert_eq!(request(OpKind::Set, true, 0, &mut out, &[(0, 4)]), Wire::Set);
        assert_eq!(request(OpKind::Delete, false, 0, &mut out, &[(0, 5)]), Wire::Delete);
        assert_eq!(request(OpKind::Incr, false, 0, &mut out, &[(0, 6)]), Wire::Incr);
        assert_eq!(request(OpKind::Cas, false, 0, &mut out, &[(0, 7)]), Wire::Gets);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "get k1 k2\r\nset k3 0 7 3\r\nxyz\r\nset k4 0 7 1\r\n0\r\ndelete k5\r\nincr k6 1\r\ngets k7\r\n"
        );
    }

    #[test]
    fn the_receive_buffer_keeps_a_partial_unit_and_grows_for_a_large_one() {
        let mut s = sock();
        s.rbuf.copy_from_slice(b"END\r\nEND\r\nVALUEk");
        // A partial unit in the first half stays where it is.
        (s.rstart, s.rend) = (5, 12);
        assert_eq!(s.make_room(None), Room::Ready);
        assert_eq!((s.rstart, s.rend), (5, 12));
        // A full buffer moves the partial unit to the front.
        (s.rstart, s.rend) = (10, 16);
        assert_eq!(s.make_room(None), Room::Ready);
        assert_eq!((s.rstart, s.rend, &s.rbuf[..6]), (0, 6, &b"VALUEk"[..]));
        s.rend = 16;
        assert_eq!(s.make_room(Some(100)), Room::Ready);
        assert_eq!(s.rbuf.len(), 128, "grown to the unit, rounded up");
        s.rstart = 16;
        assert_eq!(s.make_room(None), Room::Ready);
        assert_eq!((s.rstart, s.rend), (0, 0), "an emptied buffer starts over");
        s.rend = 3;
        assert_eq!(s.make_room(Some(RBUF_MAX + 1)), Room::TooLarge);
    }

    #[test]
    fn a_send_swaps_buffers_and_reports_what_waits() {
        let mut s = sock();
        assert!(!s.start_send(), "nothing to send");
        s.next.extend_from_slice(b"get a\r\n");
        assert!(s.start_send());
        s.send_inflight = true;
        s.next.extend_from_slice(b"get b\r\n");
        assert!(!s.start_send(), "one send in flight at a time");
        assert_eq!(s.sent(3), Sent::More);
        assert_eq!(s.sent(4), Sent::DoneWithMore);
        s.send_inflight = false;
        assert!(s.start_send());
        assert_eq!(s.sent(7), Sent::Done);
    }
}
