//! One connection of a load thread, sans-IO: its receive buffer (grown to the largest
//! reply unit seen), its send buffers (one in flight, one collecting the next requests),
//! and the queue of replies it expects (*parts*, in send order); how a part's request is
//! encoded, and what each reply unit means for the operation it belongs to. The worker
//! moves bytes (io_uring) and keeps the operations' books.

use std::collections::VecDeque;

use ringcache_client::{self as protocol, DeleteReply, GetItem, IncrReply, Parsed, ProtocolError, StoreReply};

use crate::config::Protocol;
use crate::verify;
use crate::workload::{OpKind, MAX_KEY_LEN};

/// Client flags stored with every set (checked by `--verify`).
pub(super) const SET_FLAGS: u32 = 0;
/// What each `incr` adds to its counter.
pub(super) const INCR_DELTA: u64 = 1;
/// A single reply unit larger than this is treated as a protocol error.
pub(super) const RBUF_MAX: usize = 64 * 1024 * 1024;

/// The request a part's reply answers, which decides how the reply is parsed.
///
/// The meta wires parse meta replies into the same reply types as their classic counterparts
/// (`VA` blocks are values, `EN`/`MN` end a get, `HD`/`EX`/`NF` are store outcomes), so the
/// worker handles both alike; the one difference is where a get's reply ends (see
/// [`Wire::value_ends_reply`]).
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
    /// One `mg <key> v f k`: one `VA` block, or `EN`.
    MetaGet,
    /// `mg <key> v f k q` per key, then `mn`: `VA` blocks for the hits, then `MN`.
    MetaMultiGet,
    /// `ms`.
    MetaSet,
    /// `md`.
    MetaDelete,
    /// `ma <key> D1`.
    MetaIncr,
    /// The `mg <key> v f k c` of a cas operation: one `VA` block, or `EN`.
    MetaGets,
    /// The `ms ... C<unique>` that follows a `MetaGets` hit.
    MetaCas,
}

impl Wire {
    /// The read half of a cas operation.
    pub(super) fn is_cas_read(self) -> bool {
        matches!(self, Wire::Gets | Wire::MetaGets)
    }

    /// The write half of a cas operation.
    fn is_cas_write(self) -> bool {
        matches!(self, Wire::Cas | Wire::MetaCas)
    }

    /// A value ends the reply: a single non-quiet `mg` answers one `VA` block or `EN`, while a
    /// `get` (and a quiet `mg` pipeline) sends values until its terminator.
    pub(super) fn value_ends_reply(self) -> bool {
        matches!(self, Wire::MetaGet | Wire::MetaGets)
    }

    fn is_meta(self) -> bool {
        matches!(
            self,
            Wire::MetaGet
                | Wire::MetaMultiGet
                | Wire::MetaSet
                | Wire::MetaDelete
                | Wire::MetaIncr
                | Wire::MetaGets
                | Wire::MetaCas
        )
    }
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

    /// Replaces the part at the front, the read half of a cas operation that hit with
    /// `unique`, by its write half (see [`encode_cas_write`]), queued on this socket so the
    /// operation stays busy until that reply. True when the socket just became dirty (it has
    /// to be put on the worker's send list).
    pub(super) fn queue_cas_write(&mut self, r: Request<'_>, key: &[u8], unique: u64) -> bool {
        let read = self.parts.pop_front().expect("the read half is the front part");
        debug_assert!(read.wire.is_cas_read());
        let wire = encode_cas_write(&mut self.next, r, key, unique);
        self.parts.push_back(Part { wire, ..read });
        !std::mem::replace(&mut self.dirty, true)
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
fn push_value(out: &mut Vec<u8>, key: &[u8], size: usize, verify_values: bool, version: &mut u32, filler: &[u8]) {
    if verify_values {
        let start = out.len();
        out.resize(start + size, 0);
        verify::fill_value(key, *version, &mut out[start..]);
        *version = version.wrapping_add(1);
    } else {
        out.extend_from_slice(&filler[..size]);
    }
}

/// `mg` flags: the value, its client flags and its key (to check which key a value is for).
const MG_FLAGS: &[u8] = b"v f k";
/// The same, quiet: a miss answers nothing (the multiget's `mn` ends the reply).
const MG_FLAGS_QUIET: &[u8] = b"v f k q";
/// The same with the CAS unique, for the read half of a cas operation.
const MG_FLAGS_CAS: &[u8] = b"v f k c";

/// What a request of kind `kind` for one server needs beyond its keys.
pub(super) struct Request<'a> {
    pub(super) protocol: Protocol,
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
    let meta = r.protocol == Protocol::Meta;
    match r.kind {
        OpKind::Get if meta && keys.len() == 1 => {
            protocol::meta_get(out, key, MG_FLAGS);
            Wire::MetaGet
        }
        OpKind::Get if meta => {
            protocol::meta_get(out, key, MG_FLAGS_QUIET);
            for &(_, k) in &keys[1..] {
                write_key(k, key);
                protocol::meta_get(out, key, MG_FLAGS_QUIET);
            }
            protocol::meta_noop(out);
            Wire::MetaMultiGet
        }
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
        OpKind::Delete if meta => {
            protocol::meta_delete(out, key);
            Wire::MetaDelete
        }
        OpKind::Delete => {
            protocol::delete(out, key);
            Wire::Delete
        }
        OpKind::Incr if meta => {
            protocol::meta_incr(out, key, INCR_DELTA);
            Wire::MetaIncr
        }
        OpKind::Incr => {
            protocol::incr(out, key, INCR_DELTA);
            Wire::Incr
        }
        OpKind::Cas if meta => {
            protocol::meta_get(out, key, MG_FLAGS_CAS);
            Wire::MetaGets
        }
        OpKind::Cas => {
            protocol::begin_gets(out);
            protocol::push_get_key(out, key);
            protocol::end_line(out);
            Wire::Gets
        }
        OpKind::Set => {
            // A counter's (prefill) set writes `0`.
            let size = if r.counter { 1 } else { r.value_size };
            if meta {
                protocol::meta_set_header(out, key, size, SET_FLAGS, r.ttl, None);
            } else {
                protocol::set_header(out, key, SET_FLAGS, r.ttl, size);
            }
            if r.counter {
                out.push(b'0');
            } else {
                push_value(out, key, size, r.verify, r.version, r.filler);
            }
            protocol::end_line(out);
            if meta {
                Wire::MetaSet
            } else {
                Wire::Set
            }
        }
    }
}

/// Encodes the write half of a cas operation whose read half (a `gets`, or its meta
/// `mg ... c`) returned `unique` for `key`: a new value of `r.value_size` bytes (a new version
/// under `--verify`), stored only if the item still has that unique: `cas <key> 0 <ttl> <len>
/// <unique>`, or `ms <key> <len> F0 T<ttl> C<unique>`. Returns the write half's wire.
pub(super) fn encode_cas_write(out: &mut Vec<u8>, r: Request<'_>, key: &[u8], unique: u64) -> Wire {
    let meta = r.protocol == Protocol::Meta;
    if meta {
        protocol::meta_set_header(out, key, r.value_size, SET_FLAGS, r.ttl, Some(unique));
    } else {
        protocol::cas_header(out, key, SET_FLAGS, r.ttl, r.value_size, unique);
    }
    push_value(out, key, r.value_size, r.verify, r.version, r.filler);
    protocol::end_line(out);
    if meta {
        Wire::MetaCas
    } else {
        Wire::Cas
    }
}

/// Parses the next unit of a get wire's reply, classic or meta.
pub(super) fn parse_get_item(wire: Wire, buf: &[u8]) -> Result<Parsed<GetItem<'_>>, ProtocolError> {
    if wire.is_meta() {
        protocol::parse_meta_get_item(buf)
    } else {
        protocol::parse_get_item(buf)
    }
}

/// Parses the reply to a set or cas wire (`STORED`... or `HD`...).
pub(super) fn parse_store_reply(wire: Wire, buf: &[u8]) -> Result<Parsed<StoreReply>, ProtocolError> {
    if wire.is_meta() {
        protocol::parse_meta_store_reply(buf)
    } else {
        protocol::parse_store_reply(buf)
    }
}

/// Parses the reply to a delete wire (`DELETED`... or `HD`...).
pub(super) fn parse_delete_reply(wire: Wire, buf: &[u8]) -> Result<Parsed<DeleteReply>, ProtocolError> {
    if wire.is_meta() {
        protocol::parse_meta_delete_reply(buf)
    } else {
        protocol::parse_delete_reply(buf)
    }
}

/// Parses the reply to an incr wire (a number... or `HD`...).
pub(super) fn parse_incr_reply(wire: Wire, buf: &[u8]) -> Result<Parsed<IncrReply>, ProtocolError> {
    if wire.is_meta() {
        protocol::parse_meta_incr_reply(buf)
    } else {
        protocol::parse_incr_reply(buf)
    }
}

/// What a store reply means for a set or cas part: the cas outcome (if it decides one),
/// whether the set was not stored, whether it was an error.
pub(super) fn store_reply(wire: Wire, reply: StoreReply) -> (Option<CasOutcome>, bool, bool) {
    match reply {
        StoreReply::Stored => (Some(CasOutcome::Stored), false, false),
        StoreReply::Exists if wire.is_cas_write() => (Some(CasOutcome::Exists), false, false),
        StoreReply::NotFound if wire.is_cas_write() => (Some(CasOutcome::NotFound), false, false),
        // memcached never answers a cas NOT_STORED (nor a `ms ... C` NS); count it as an error.
        StoreReply::NotStored if wire.is_cas_write() => (None, false, true),
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

    /// (kind, counter, value size, keys) of one request.
    type Spec = (OpKind, bool, usize, &'static [(u32, u64)]);

    /// Encodes one request per [`Spec`] in `protocol` into one buffer; returns the wires and
    /// the bytes.
    fn encode_all(protocol: Protocol, requests: &[Spec]) -> (Vec<Wire>, String) {
        let write_key = |i: u64, out: &mut [u8]| out.copy_from_slice(format!("k{i}").as_bytes());
        let mut version = 0;
        let mut out = Vec::new();
        let wires = requests
            .iter()
            .map(|&(kind, counter, value_size, keys)| {
                let r = Request {
                    protocol,
                    kind,
                    counter,
                    ttl: 7,
                    value_size,
                    verify: false,
                    version: &mut version,
                    filler: b"xyz",
                };
                encode(&mut out, r, keys, 2, &write_key)
            })
            .collect();
        (wires, String::from_utf8(out).unwrap())
    }

    /// One of each kind: a 2-key get, a 1-key get, a set, a counter's set, delete, incr, cas.
    const EVERY_KIND: &[Spec] = &[
        (OpKind::Get, false, 0, &[(0, 1), (0, 2)]),
        (OpKind::Get, false, 0, &[(0, 8)]),
        (OpKind::Set, false, 3, &[(0, 3)]),
        (OpKind::Set, true, 0, &[(0, 4)]),
        (OpKind::Delete, false, 0, &[(0, 5)]),
        (OpKind::Incr, false, 0, &[(0, 6)]),
        (OpKind::Cas, false, 0, &[(0, 7)]),
    ];

    #[test]
    fn requests_are_encoded_per_kind() {
        let (wires, out) = encode_all(Protocol::Classic, EVERY_KIND);
        use Wire::*;
        assert_eq!(wires, [Get, Get, Set, Set, Delete, Incr, Gets]);
        assert_eq!(
            out,
            "get k1 k2\r\nget k8\r\nset k3 0 7 3\r\nxyz\r\nset k4 0 7 1\r\n0\r\ndelete k5\r\nincr k6 1\r\ngets k7\r\n"
        );
    }

    #[test]
    fn meta_requests_are_encoded_per_kind() {
        let (wires, out) = encode_all(Protocol::Meta, EVERY_KIND);
        use Wire::*;
        assert_eq!(wires, [MetaMultiGet, MetaGet, MetaSet, MetaSet, MetaDelete, MetaIncr, MetaGets]);
        assert_eq!(
            out,
            "mg k1 v f k q\r\nmg k2 v f k q\r\nmn\r\nmg k8 v f k\r\n\
             ms k3 3 F0 T7\r\nxyz\r\nms k4 1 F0 T7\r\n0\r\nmd k5\r\nma k6 D1\r\nmg k7 v f k c\r\n"
        );
        for w in &wires {
            assert!(w.is_meta());
        }
        assert!(MetaGet.value_ends_reply() && MetaGets.value_ends_reply());
        assert!(!MetaMultiGet.value_ends_reply() && !Get.value_ends_reply() && !Gets.value_ends_reply());
    }

    #[test]
    fn a_cas_hit_queues_its_write_half_in_the_same_protocol() {
        let mut version = 0;
        let mut s = sock();
        for (protocol, read, write) in
            [(Protocol::Classic, Wire::Gets, Wire::Cas), (Protocol::Meta, Wire::MetaGets, Wire::MetaCas)]
        {
            s.parts.push_back(Part { slot: 3, wire: read, kstart: 0, kend: 1 });
            s.parts.push_back(Part { slot: 4, wire: Wire::Get, kstart: 0, kend: 1 });
            let r = Request {
                protocol,
                kind: OpKind::Cas,
                counter: false,
                ttl: 7,
                value_size: 3,
                verify: false,
                version: &mut version,
                filler: b"xyz",
            };
            let newly_dirty = protocol == Protocol::Classic;
            assert_eq!(s.queue_cas_write(r, b"k9", 12345), newly_dirty, "dirty once");
            let parts: Vec<(u32, Wire)> = s.parts.drain(..).map(|p| (p.slot, p.wire)).collect();
            assert_eq!(parts, [(4, Wire::Get), (3, write)], "the write half waits behind what was sent");
        }
        assert_eq!(String::from_utf8_lossy(&s.next), "cas k9 0 7 3 12345\r\nxyz\r\nms k9 3 F0 T7 C12345\r\nxyz\r\n");
    }

    #[test]
    fn meta_replies_mean_what_their_classic_counterparts_mean() {
        let store = |wire, reply: &[u8]| match parse_store_reply(wire, reply).unwrap() {
            Parsed::Done { item, .. } => store_reply(wire, item),
            Parsed::Incomplete { .. } => panic!("incomplete"),
        };
        for (classic, meta) in [
            (&b"STORED\r\n"[..], &b"HD\r\n"[..]),
            (b"NOT_STORED\r\n", b"NS\r\n"),
            (b"EXISTS\r\n", b"EX\r\n"),
            (b"NOT_FOUND\r\n", b"NF\r\n"),
            (b"SERVER_ERROR out of memory\r\n", b"SERVER_ERROR out of memory\r\n"),
        ] {
            assert_eq!(store(Wire::Set, classic), store(Wire::MetaSet, meta));
            assert_eq!(store(Wire::Cas, classic), store(Wire::MetaCas, meta));
        }
        assert_eq!(store(Wire::MetaCas, b"EX\r\n"), (Some(CasOutcome::Exists), false, false));
        assert_eq!(store(Wire::MetaCas, b"NF\r\n"), (Some(CasOutcome::NotFound), false, false));
        assert_eq!(store(Wire::MetaSet, b"NS\r\n"), (None, true, false));
        let counted = |wire, reply: &[u8]| match wire {
            Wire::Delete | Wire::MetaDelete => match parse_delete_reply(wire, reply).unwrap() {
                Parsed::Done { item, .. } => counted_reply(item),
                Parsed::Incomplete { .. } => panic!("incomplete"),
            },
            _ => match parse_incr_reply(wire, reply).unwrap() {
                Parsed::Done { item, .. } => counted_reply(item),
                Parsed::Incomplete { .. } => panic!("incomplete"),
            },
        };
        assert_eq!(counted(Wire::MetaDelete, b"HD\r\n"), counted(Wire::Delete, b"DELETED\r\n"));
        assert_eq!(counted(Wire::MetaDelete, b"NF\r\n"), counted(Wire::Delete, b"NOT_FOUND\r\n"));
        assert_eq!(counted(Wire::MetaIncr, b"HD\r\n"), counted(Wire::Incr, b"5\r\n"));
        assert_eq!(counted(Wire::MetaIncr, b"NF\r\n"), counted(Wire::Incr, b"NOT_FOUND\r\n"));
        assert_eq!(counted(Wire::MetaIncr, b"CLIENT_ERROR x\r\n"), (false, true));
        assert!(matches!(
            parse_get_item(Wire::MetaGet, b"VA 1 f0 kk1\r\nx\r\n").unwrap(),
            Parsed::Done { item: GetItem::Value { key: b"k1", .. }, .. }
        ));
        assert!(parse_get_item(Wire::Get, b"VA 1 f0 kk1\r\nx\r\n").is_err());
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
