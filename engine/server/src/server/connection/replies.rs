//! The replies of one connection, in request order, from the moment they are made until
//! the socket has taken them. Sans-IO: the connection's driver asks what to send to other
//! shards ([`Replies::take_trip`]), hands back their answers ([`Replies::complete`]),
//! gathers what can be written ([`Replies::gather`]) and says how much was written
//! ([`Replies::advance`]).
//!
//! Replies made on the connection's own shard are appended to one buffer (`local`). Ops
//! for keys that other shards own are queued per destination, and their replies come back
//! in buffers of their own. Until the first remote op the output is simply `local`; from
//! then on `pieces` records the order (a range of `local`, or op *i* of shard *s*).
//! Nothing is copied to put a round together: the writer gathers the pieces in order.
//! A large value of this shard's store is not copied at all: its piece points at the
//! value's bytes in their segment, which stays pinned ([`Replies::push_pinned`]) until
//! the connection has written the round and lets the pins go ([`Replies::take_pins`]).
//!
//! Memory: the connection stops making replies once [`Replies::held`] reaches its reply
//! limit. A round trip to other shards carries a budget, the part of the limit not yet
//! used, split between the shards asked; one op per round trip may exceed it (the first
//! unanswered op in request order, so every round trip makes progress). A shard is asked
//! again only once every reply it sent has been written, so its buffer is reused. Pinned
//! values count against the limit too, so one connection pins a bounded amount.

use crate::server::mesh::OpsReply;
use ringcache_core::shard::{Op, OpBatch};
use ringcache_core::store::PinnedValue;

/// Buffers that grew past this many bytes for a large reply are shrunk back after use.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Where one reply (or run of local replies) is, in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Local {
        start: usize,
        end: usize,
    },
    Remote {
        shard: usize,
        index: usize,
    },
    /// A value in a pinned segment of this shard's store.
    Pinned {
        ptr: *const u8,
        len: usize,
    },
}

/// Bytes of one piece to be written: where they start and how many there are. Only
/// the kernel reads through `ptr` (a gathered send).
#[derive(Debug, Clone, Copy)]
struct Span {
    ptr: *const u8,
    len: usize,
}

impl From<&[u8]> for Span {
    fn from(bytes: &[u8]) -> Self {
        Span { ptr: bytes.as_ptr(), len: bytes.len() }
    }
}

/// Ops queued for one other shard, and the replies it has sent back.
#[derive(Default)]
struct Remote {
    batch: OpBatch,
    /// Byte offset in `batch` of the first op not yet executed.
    next: usize,
    /// Index in `batch` of the op whose reply starts `out`.
    base: usize,
    out: Vec<u8>,
    /// End offset in `out` of each reply, for ops `base..`.
    ends: Vec<u32>,
    /// Ops (from the batch's start) whose replies have been written or dropped.
    written: usize,
    in_flight: bool,
}

impl Remote {
    fn executed(&self) -> usize {
        self.base + self.ends.len()
    }

    fn has_unsent(&self) -> bool {
        self.next < self.batch.bytes()
    }

    /// The bytes of op `index`'s reply, if it has come back and is still held.
    fn reply(&self, index: usize) -> Option<&[u8]> {
        if self.in_flight || index < self.base || index >= self.executed() {
            return None;
        }
        let i = index - self.base;
        let from = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.out[from..self.ends[i] as usize])
    }
}

/// One round trip to shard `shard`: the ops from `from` on, with a reply budget.
pub struct Trip {
    pub shard: usize,
    pub batch: OpBatch,
    pub from: usize,
    pub budget: usize,
    pub must_progress: bool,
    pub out: Vec<u8>,
    pub ends: Vec<u32>,
}

/// The position up to which memcached would already have sent its replies: replies
/// after it are dropped when a get names an over-long key (or the line closes the
/// connection). Pieces before `pieces` and local bytes before `local` are before it.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    pieces: usize,
    local: usize,
}

/// Which replies a write covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    All,
    /// Only the replies before the sent mark; those after it are dropped unwritten.
    BeforeMark,
}

/// The replies of one connection (see the module documentation).
pub struct Replies {
    local: Vec<u8>,
    pieces: Vec<Piece>,
    remote: Vec<Remote>,
    /// The next byte to write: a piece index and the bytes of it already written.
    cursor: (usize, usize),
    mark: Mark,
    /// Bytes of `local` already written.
    local_written: usize,
    /// Bytes of remote replies held and not yet written.
    remote_unwritten: usize,
    /// Bytes of pinned values not yet written.
    pinned_unwritten: usize,
    /// The pins this round holds, let go of once it is written ([`Replies::take_pins`]).
    pins: Vec<PinnedValue>,
    /// Bytes of ops queued for other shards and not yet executed.
    queued: usize,
    /// `pieces` is in use (some op went to another shard, or a value was pinned) since
    /// the last reset.
    used_pieces: bool,
}

impl Replies {
    pub fn new(nshards: usize) -> Self {
        Replies {
            local: Vec::new(),
            pieces: Vec::new(),
            remote: (0..nshards).map(|_| Remote::default()).collect(),
            cursor: (0, 0),
            mark: Mark::default(),
            local_written: 0,
            remote_unwritten: 0,
            pinned_unwritten: 0,
            pins: Vec::new(),
            queued: 0,
            used_pieces: false,
        }
    }

    /// Bytes this connection holds for its replies: unwritten replies, and ops queued
    /// for other shards (whose replies are still to come).
    pub fn held(&self) -> usize {
        self.local.len() - self.local_written + self.remote_unwritten + self.pinned_unwritten + self.queued
    }

    /// Nothing is queued, held or waiting to be written.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.pieces.is_empty()
    }

    /// The buffer a reply made on this shard is appended to; call
    /// [`Replies::commit_local`] with its length from before the append.
    pub fn local_mut(&mut self) -> &mut Vec<u8> {
        debug_assert_eq!(self.cursor, (0, 0), "replies are made only between writes");
        &mut self.local
    }

    /// Records the local replies appended since `start` in request order.
    pub fn commit_local(&mut self, start: usize) {
        let end = self.local.len();
        if self.pieces.is_empty() || start == end {
            return;
        }
        if let Some(Piece::Local { end: last_end, .. }) = self.pieces.last_mut() {
            if *last_end == start {
                *last_end = end;
                return;
            }
        }
        self.pieces.push(Piece::Local { start, end });
    }

    /// Appends reply bytes made on this shard.
    pub fn push_local(&mut self, bytes: &[u8]) {
        let start = self.local.len();
        self.local_mut().extend_from_slice(bytes);
        self.commit_local(start);
    }

    /// Starts recording the order in `pieces` (the local bytes so far are its first).
    fn use_pieces(&mut self) {
        debug_assert_eq!(self.cursor, (0, 0), "replies are made only between writes");
        if self.pieces.is_empty() && !self.local.is_empty() {
            self.pieces.push(Piece::Local { start: 0, end: self.local.len() });
        }
        self.used_pieces = true;
    }

    /// Queues `op` for shard `shard`; its reply takes its place in request order.
    pub fn push_remote(&mut self, shard: usize, op: &Op<'_>, noreply: bool) {
        self.use_pieces();
        let r = &mut self.remote[shard];
        let before = r.batch.bytes();
        let index = r.batch.push(op, noreply);
        self.queued += r.batch.bytes() - before;
        self.pieces.push(Piece::Remote { shard, index });
    }

    /// Appends a value's bytes, sent from where they lie: `value` is pinned, and stays
    /// so until [`Replies::take_pins`] hands it back after the round is written.
    pub fn push_pinned(&mut self, value: PinnedValue) {
        self.use_pieces();
        self.pieces.push(Piece::Pinned { ptr: value.ptr, len: value.len });
        self.pinned_unwritten += value.len;
        self.pins.push(value);
    }

    /// The pins of the replies written (or dropped) so far, for the connection to let
    /// go of: call it only once no send of them is in flight (after a reset, or when
    /// the connection ends).
    pub fn take_pins(&mut self) -> std::vec::Drain<'_, PinnedValue> {
        self.pins.drain(..)
    }

    /// Replies made so far count as sent: a later over-long get key does not drop them.
    pub fn set_mark(&mut self) {
        self.mark = Mark { pieces: self.pieces.len(), local: self.local.len() };
    }

    fn piece(&self, i: usize) -> Option<Piece> {
        if self.pieces.is_empty() {
            return (i == 0 && !self.local.is_empty()).then_some(Piece::Local { start: 0, end: self.local.len() });
        }
        self.pieces.get(i).copied()
    }

    /// The part of piece `piece` before the sent mark, as a range of its bytes (all of
    /// it, part of a local run, or nothing).
    fn before_mark(&self, i: usize, piece: Piece, len: usize) -> usize {
        match piece {
            Piece::Local { start, end } => end.min(self.mark.local).saturating_sub(start),
            Piece::Remote { .. } | Piece::Pinned { .. } if i < self.mark.pieces => len,
            Piece::Remote { .. } | Piece::Pinned { .. } => 0,
        }
    }

    /// The bytes of piece `i`, if they are here (a remote reply may not have come yet).
    fn piece_span(&self, piece: Piece) -> Option<Span> {
        match piece {
            Piece::Local { start, end } => Some(Span::from(&self.local[start..end])),
            Piece::Remote { shard, index } => self.remote[shard].reply(index).map(Span::from),
            Piece::Pinned { ptr, len } => Some(Span { ptr, len }),
        }
    }

    /// Counts `n` more bytes of `piece` as written (or dropped).
    fn count_written(&mut self, piece: Piece, n: usize) {
        match piece {
            Piece::Local { .. } => self.local_written += n,
            Piece::Remote { .. } => self.remote_unwritten -= n,
            Piece::Pinned { .. } => self.pinned_unwritten -= n,
        }
    }

    /// The shard whose reply the writer waits for first, if any.
    fn first_unanswered(&self) -> Option<usize> {
        let mut i = self.cursor.0;
        while let Some(piece) = self.piece(i) {
            if let Piece::Remote { shard, index } = piece {
                if index >= self.remote[shard].written && self.remote[shard].reply(index).is_none() {
                    return Some(shard);
                }
            }
            i += 1;
        }
        None
    }

    /// Ops are queued for other shards that have not executed them yet.
    pub fn has_unsent(&self) -> bool {
        self.queued > 0
    }

    /// Plans the next round trips: one per shard with queued ops whose earlier replies
    /// are all written, sharing what is left of `limit` as their budget. The shard the
    /// writer waits for first may exceed its budget by one op. Call [`Replies::complete`]
    /// with each answer.
    pub fn take_trips(&mut self, limit: usize, mut send: impl FnMut(Trip)) {
        let eligible = |r: &Remote| r.has_unsent() && !r.in_flight && r.written == r.executed();
        let count = self.remote.iter().filter(|r| eligible(r)).count();
        if count == 0 {
            return;
        }
        let budget = limit.saturating_sub(self.held()) / count;
        let first = self.first_unanswered();
        for (shard, r) in self.remote.iter_mut().enumerate() {
            if !eligible(r) {
                continue;
            }
            r.base = r.executed();
            r.ends.clear();
            r.out.clear();
            r.in_flight = true;
            send(Trip {
                shard,
                batch: std::mem::take(&mut r.batch),
                from: r.next,
                budget,
                must_progress: first == Some(shard),
                out: std::mem::take(&mut r.out),
                ends: std::mem::take(&mut r.ends),
            });
        }
    }

    /// Takes back a shard's answer to a [`Trip`] that started at `from`.
    pub fn complete(&mut self, shard: usize, from: usize, reply: OpsReply) {
        let r = &mut self.remote[shard];
        debug_assert!(r.in_flight && reply.resume >= from);
        self.queued -= reply.resume - from;
        self.remote_unwritten += reply.out.len();
        r.batch = reply.batch;
        r.out = reply.out;
        r.ends = reply.ends;
        r.next = reply.resume;
        r.in_flight = false;
    }

    /// Calls `f` with each span that can be written now, in order from the cursor: up
    /// to the first reply that has not come back (and, for [`Scope::BeforeMark`], up to
    /// the mark), until `f` returns false.
    fn walk(&self, scope: Scope, mut f: impl FnMut(Span) -> bool) {
        let (mut i, mut skip) = self.cursor;
        while let Some(piece) = self.piece(i) {
            let Some(span) = self.piece_span(piece) else { return };
            let len = match scope {
                Scope::All => span.len,
                Scope::BeforeMark => self.before_mark(i, piece, span.len),
            };
            if skip < len && !f(Span { ptr: span.ptr.wrapping_add(skip), len: len - skip }) {
                return;
            }
            if len < span.len {
                return;
            }
            i += 1;
            skip = 0;
        }
    }

    /// Appends to `iov` (up to `max_slices` entries) the slices that can be written now
    /// (see [`Replies::walk`]); returns their total length. The pointers stay valid
    /// until `self` is next changed (and pinned values until their pins are let go).
    pub fn gather(&self, iov: &mut Vec<libc::iovec>, scope: Scope, max_slices: usize) -> usize {
        let mut total = 0;
        self.walk(scope, |span| {
            iov.push(libc::iovec { iov_base: span.ptr as *mut libc::c_void, iov_len: span.len });
            total += span.len;
            iov.len() < max_slices
        });
        total
    }

    /// Moves the cursor past `written` bytes (from the slices [`Replies::gather`] gave),
    /// and past replies that came back empty (call it with 0 when nothing was gathered).
    pub fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let Some(piece) = self.piece(self.cursor.0) else { break };
            // Only what `gather` gave is written, and it stops before a missing reply.
            let Some(span) = self.piece_span(piece) else { break };
            let step = written.min(span.len - self.cursor.1);
            self.cursor.1 += step;
            written -= step;
            self.count_written(piece, step);
            if self.cursor.1 == span.len {
                self.finish_piece(piece);
            }
        }
        // Empty replies (a get miss from another shard) are passed over at once.
        while let Some(piece) = self.piece(self.cursor.0) {
            match self.piece_span(piece) {
                Some(Span { len: 0, .. }) if self.cursor.1 == 0 => self.finish_piece(piece),
                _ => break,
            }
        }
    }

    fn finish_piece(&mut self, piece: Piece) {
        if let Piece::Remote { shard, index } = piece {
            self.remote[shard].written = index + 1;
        }
        self.cursor = (self.cursor.0 + 1, 0);
    }

    /// Drops the replies after the sent mark that have come back (they are not to be
    /// written), once the cursor has reached the mark.
    pub fn drop_after_mark(&mut self) {
        while let Some(piece) = self.piece(self.cursor.0) {
            let Some(Span { len, .. }) = self.piece_span(piece) else { break };
            let before = self.before_mark(self.cursor.0, piece, len);
            if self.cursor.1 < before {
                break;
            }
            self.count_written(piece, len - self.cursor.1);
            self.finish_piece(piece);
        }
    }

    /// Everything queued has been executed and written (or dropped).
    pub fn is_done(&self) -> bool {
        !self.has_unsent() && self.piece(self.cursor.0).is_none()
    }

    /// Starts afresh once [`Replies::is_done`]: buffers are emptied (and shrunk if a large
    /// reply grew them) and the mark is reset. The pins stay for [`Replies::take_pins`].
    pub fn reset(&mut self) {
        debug_assert!(self.is_done());
        fn clear<T>(v: &mut Vec<T>) {
            v.clear();
            if v.capacity() * std::mem::size_of::<T>() > KEEP_CAPACITY {
                v.shrink_to(KEEP_CAPACITY / std::mem::size_of::<T>().max(1));
            }
        }
        clear(&mut self.local);
        if self.used_pieces {
            clear(&mut self.pieces);
            for r in &mut self.remote {
                r.batch.clear();
                r.batch.shrink_to(KEEP_CAPACITY);
                clear(&mut r.out);
                clear(&mut r.ends);
                r.next = 0;
                r.base = 0;
                r.written = 0;
            }
            self.used_pieces = false;
        }
        self.cursor = (0, 0);
        self.mark = Mark::default();
        self.local_written = 0;
        self.remote_unwritten = 0;
        debug_assert_eq!(self.pinned_unwritten, 0);
        self.queued = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the other shards: op `k` of shard `s` replies `s:k;` (or nothing for a
    /// delete), one op at a time past the budget only when it must progress.
    fn answer(trip: Trip) -> (usize, usize, OpsReply) {
        let Trip { shard, batch, from, budget, must_progress, mut out, mut ends } = trip;
        // The index of the first op to run: the number of ops before `from`.
        let mut k = 0;
        let mut it = batch.iter();
        while it.position() < from {
            it.next();
            k += 1;
        }
        let mut ops = batch.iter_from(from);
        let resume = loop {
            let pos = ops.position();
            let Some((op, _)) = ops.next() else { break pos };
            let reply = match op {
                Op::Delete { .. } => String::new(),
                _ => format!("{shard}:{k};"),
            };
            let first = ends.is_empty();
            if !(first && must_progress) && out.len() + reply.len() > budget {
                break pos;
            }
            out.extend_from_slice(reply.as_bytes());
            ends.push(out.len() as u32);
            k += 1;
        };
        (shard, from, OpsReply { batch, out, ends, resume })
    }

    /// Drains `r` completely with `limit`, writing at most `chunk` bytes per write;
    /// returns the output and the most bytes held at any point.
    fn drain(r: &mut Replies, limit: usize, chunk: usize, scope: Scope) -> (String, usize) {
        let mut written = Vec::new();
        let mut peak = r.held();
        let mut iov = Vec::new();
        for _ in 0..10_000 {
            let mut trips = Vec::new();
            r.take_trips(limit, |t| trips.push(t));
            for t in trips {
                let (shard, from, reply) = answer(t);
                r.complete(shard, from, reply);
                peak = peak.max(r.held());
            }
            loop {
                iov.clear();
                let n = r.gather(&mut iov, scope, 64);
                if n == 0 {
                    r.advance(0);
                    break;
                }
                let mut take = n.min(chunk);
                let mut done = 0;
                for v in &iov {
                    let len = v.iov_len.min(take);
                    // SAFETY (test): the slices point into `r`, unchanged since gather.
                    let s = unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, len) };
                    written.extend_from_slice(s);
                    take -= len;
                    done += len;
                    if take == 0 {
                        break;
                    }
                }
                r.advance(done);
            }
            if scope == Scope::BeforeMark {
                r.drop_after_mark();
            }
            if r.is_done() {
                r.reset();
                return (String::from_utf8_lossy(&written).into_owned(), peak);
            }
        }
        panic!("no progress: wrote {:?}", String::from_utf8_lossy(&written));
    }

    fn get(key: &[u8]) -> Op<'_> {
        Op::Get { key, cas: false, touch: None }
    }

    #[test]
    fn local_only_output_is_one_slice() {
        let mut r = Replies::new(2);
        r.push_local(b"A");
        r.push_local(b"B");
        let mut iov = Vec::new();
        assert_eq!(r.gather(&mut iov, Scope::All, 64), 2);
        assert_eq!(iov.len(), 1);
        assert_eq!(drain(&mut r, 1 << 20, usize::MAX, Scope::All).0, "AB");
        assert!(r.is_empty());
    }

    #[test]
    fn remote_replies_take_their_place_in_request_order() {
        let mut r = Replies::new(3);
        r.push_local(b"a;");
        r.push_remote(1, &get(b"x"), false);
        r.push_local(b"b;");
        r.push_remote(2, &get(b"y"), false);
        r.push_remote(1, &get(b"z"), false);
        r.push_remote(2, &Op::Delete { key: b"d" }, false);
        r.push_local(b"c;");
        assert_eq!(drain(&mut r, 1 << 20, 3, Scope::All).0, "a;1:0;b;2:0;1:1;c;");
    }

    #[test]
    fn a_small_limit_bounds_what_is_held_and_still_answers_everything() {
        let mut r = Replies::new(3);
        let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("k{i}").into_bytes()).collect();
        let mut want = String::new();
        let mut counts = [0usize; 3];
        for (i, key) in keys.iter().enumerate() {
            let shard = i % 3;
            if shard == 0 {
                r.push_local(b"L;");
                want.push_str("L;");
            } else {
                r.push_remote(shard, &get(key), false);
                want.push_str(&format!("{shard}:{};", counts[shard]));
                counts[shard] += 1;
            }
        }
        let queued_and_local = r.held();
        let limit = 16;
        let (out, peak) = drain(&mut r, limit, 5, Scope::All);
        assert_eq!(out, want);
        // What was held before the drain, plus at most the limit and one reply beyond it.
        assert!(peak <= queued_and_local + limit + 8, "peak {peak}");
    }

    /// One step of the property test: a local reply, an op for shard 1 or 2 (a get, or a
    /// delete that replies nothing), or a sent mark.
    #[derive(Debug, Clone)]
    enum Step {
        Local(u8),
        Remote(usize, bool),
        /// A value sent from where it lies (here, a buffer the test owns).
        Pinned(u8),
        Mark,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            any::<u8>().prop_map(Step::Local),
            (1usize..3, any::<bool>()).prop_map(|(s, get)| Step::Remote(s, get)),
            any::<u8>().prop_map(Step::Pinned),
            Just(Step::Mark),
        ]
    }

    proptest::proptest! {
        /// Whatever the interleaving, limit and write sizes: the output is every reply in
        /// request order (or, up to the mark, those before it), and what is held never
        /// exceeds what was queued plus the limit plus one reply.
        #[test]
        fn any_interleaving_comes_out_in_order(
            steps in proptest::collection::vec(step(), 0..120),
            limit in 0usize..64,
            chunk in 1usize..40,
            before_mark in proptest::bool::ANY,
        ) {
            let mut r = Replies::new(3);
            let (mut want, mut marked) = (String::new(), String::new());
            let mut counts = [0usize; 3];
            let key = b"k".to_vec();
            // The pinned values' bytes, which stay where they are for the whole test.
            let values: Vec<Vec<u8>> = steps.iter().map(|st| match st {
                Step::Pinned(b) => format!("P{b}:{}.", "v".repeat(usize::from(*b % 50))).into_bytes(),
                _ => Vec::new(),
            }).collect();
            let mut pinned = 0;
            for (i, st) in steps.iter().enumerate() {
                match *st {
                    Step::Local(b) => {
                        let text = format!("L{b};");
                        r.push_local(text.as_bytes());
                        want.push_str(&text);
                    }
                    Step::Remote(shard, get) => {
                        if get {
                            r.push_remote(shard, &Op::Get { key: &key, cas: false, touch: None }, false);
                            want.push_str(&format!("{shard}:{};", counts[shard]));
                        } else {
                            r.push_remote(shard, &Op::Delete { key: &key }, false);
                        }
                        counts[shard] += 1;
                    }
                    Step::Pinned(_) => {
                        let v = &values[i];
                        r.push_pinned(PinnedValue { ptr: v.as_ptr(), len: v.len(), segment: i as u32 });
                        want.push_str(std::str::from_utf8(v).unwrap_or_default());
                        pinned += 1;
                    }
                    Step::Mark => {
                        r.set_mark();
                        marked = want.clone();
                    }
                }
            }
            let queued = r.held();
            let scope = if before_mark { Scope::BeforeMark } else { Scope::All };
            let (out, peak) = drain(&mut r, limit, chunk, scope);
            proptest::prop_assert_eq!(&out, if before_mark { &marked } else { &want });
            // Every pin comes back once the round is done, written or dropped.
            proptest::prop_assert_eq!(r.take_pins().count(), pinned);
            proptest::prop_assert_eq!(r.held(), 0);
            proptest::prop_assert!(peak <= queued + limit + 8, "held {} > {} queued + {} limit + a reply", peak, queued, limit);
        }
    }

    #[test]
    fn replies_after_the_mark_are_dropped() {
        let mut r = Replies::new(2);
        r.push_local(b"VALUE;");
        r.push_remote(1, &get(b"x"), false);
        r.push_local(b"END;");
        r.set_mark();
        r.push_local(b"STORED;");
        r.push_remote(1, &Op::Delete { key: b"q" }, false);
        r.push_remote(1, &get(b"w"), false);
        assert_eq!(drain(&mut r, 1 << 20, 4, Scope::BeforeMark).0, "VALUE;1:0;END;");
        // The mark before any remote op: only local bytes before it are written.
        r.push_local(b"one;");
        r.set_mark();
        r.push_local(b"two;");
        r.push_remote(1, &get(b"x"), false);
        assert_eq!(drain(&mut r, 1 << 20, 2, Scope::BeforeMark).0, "one;");
    }
}
