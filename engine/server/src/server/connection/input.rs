//! A connection's request bytes. Requests are parsed where they arrived (a receive
//! buffer, lent as [`Borrowed`]); a request split across receive buffers is gathered in
//! the connection's own buffer, [`Input`]: a base of [`BASE`] bytes, allocated the first
//! time a connection needs it (an idle connection that never split a request holds
//! none). One request that does not fit (a large value, a long multi-get line) grows it, with
//! bytes the connection first takes from its shard's share of `read_buf_mem_limit`, and
//! the buffer shrinks back to its base (returning them) once that request is done, before
//! its reply is written. The grown buffer is then kept by the shard ([`Spares`], at most
//! two and 4 MiB) for the next large request of any of its connections, so a stream of
//! large values does not allocate, zero and fault in a fresh buffer for each; the base
//! buffer is kept aside meanwhile, so going back to it allocates nothing either.
//! Sans-IO: the connection's driver reads into [`Input::spare`] and owns the budget.

/// Bytes of request buffer every connection has.
pub const BASE: usize = 16 * 1024;

/// What the buffer needs before the next read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// There is room to read into.
    Enough,
    /// The buffer must grow to this many bytes first.
    GrowTo(usize),
    /// The pending request needs more than any connection may hold.
    TooLarge,
}

/// Grown request buffers a shard keeps for its connections' next large requests.
#[derive(Default)]
pub struct Spares {
    bufs: Vec<Vec<u8>>,
}

impl Spares {
    /// Buffers kept at most, and bytes kept at most (a shard holds no more than this
    /// beyond its connections' budgets; larger requests are rare enough to allocate).
    const KEEP: usize = 2;
    const KEEP_BYTES: usize = 4 << 20;

    /// The longest buffer kept, if any.
    fn take(&mut self) -> Option<Vec<u8>> {
        let longest = (0..self.bufs.len()).max_by_key(|&i| self.bufs[i].len())?;
        Some(self.bufs.swap_remove(longest))
    }

    /// Keeps `buf` for a later request, unless enough are kept already.
    fn give(&mut self, buf: Vec<u8>) {
        if self.bufs.len() < Self::KEEP && self.bytes() + buf.capacity() <= Self::KEEP_BYTES {
            self.bufs.push(buf);
        }
    }

    /// Bytes kept.
    fn bytes(&self) -> usize {
        self.bufs.iter().map(Vec::capacity).sum()
    }
}

#[derive(Default)]
pub struct Input {
    /// The buffer bytes are read into: the base buffer, or a grown one.
    buf: Vec<u8>,
    /// The base buffer while a grown one is in use (else empty).
    base: Vec<u8>,
    start: usize,
    end: usize,
}

/// Request bytes being parsed: received and not yet consumed.
pub trait Pending {
    fn pending(&self) -> &[u8];
    fn consume(&mut self, n: usize);
    fn is_empty(&self) -> bool {
        self.pending().is_empty()
    }
}

/// Bytes parsed where they lie (in a receive buffer).
pub struct Borrowed<'a> {
    bytes: &'a [u8],
}

impl<'a> Borrowed<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Borrowed { bytes }
    }

    /// What was not consumed.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes
    }
}

impl Pending for Borrowed<'_> {
    fn pending(&self) -> &[u8] {
        self.bytes
    }

    fn consume(&mut self, n: usize) {
        self.bytes = &self.bytes[n..];
    }
}

impl Pending for Input {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
}

impl Input {
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Where the next read goes.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    /// Records `n` bytes read into [`Input::spare`].
    pub fn filled(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.buf.len());
        self.end += n;
    }

    /// Bytes of the buffer beyond [`BASE`] (what it holds of the shard's budget).
    pub fn grown_by(&self) -> usize {
        self.buf.len().saturating_sub(BASE)
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Makes room for the pending request before the next read. `need` is its total
    /// size when known (a storage command whose data is still arriving); otherwise it is
    /// a line, and a full buffer doubles. `max` is the most one request may take.
    pub fn room(&mut self, need: Option<usize>, max: usize) -> Room {
        if self.buf.is_empty() {
            self.buf = vec![0; BASE];
        }
        if let Some(need) = need {
            if need > max {
                return Room::TooLarge;
            }
            if self.start + need <= self.buf.len() {
                return Room::Enough;
            }
            self.compact();
            return if need <= self.buf.len() { Room::Enough } else { Room::GrowTo(need) };
        }
        if self.end < self.buf.len() {
            return Room::Enough;
        }
        if self.start > 0 {
            self.compact();
            return Room::Enough;
        }
        let to = (self.buf.len() * 2).min(max);
        if to <= self.buf.len() {
            Room::TooLarge
        } else {
            Room::GrowTo(to)
        }
    }

    /// Grows the buffer to `to` bytes (the caller holds the budget for it), into a
    /// buffer the shard kept if there is one.
    pub fn grow(&mut self, to: usize, spares: &mut Spares) {
        debug_assert!(to > self.buf.len());
        let mut bigger = match spares.take() {
            // Only bytes it never had are zeroed; its pages are already there.
            Some(mut kept) => {
                kept.resize(to, 0);
                kept
            }
            None => vec![0; to],
        };
        let pending = self.end - self.start;
        bigger[..pending].copy_from_slice(&self.buf[self.start..self.end]);
        let old = std::mem::replace(&mut self.buf, bigger);
        (self.start, self.end) = (0, pending);
        if old.len() > BASE {
            spares.give(old);
        } else {
            self.base = old;
        }
    }

    /// Shrinks a grown buffer back to [`BASE`] once what it holds fits there, leaving
    /// the grown one to `spares`; returns the bytes given up (to return to the budget).
    pub fn shrink(&mut self, spares: &mut Spares) -> usize {
        let grown = self.grown_by();
        if grown == 0 || self.end - self.start > BASE {
            return 0;
        }
        let mut base = std::mem::take(&mut self.base);
        if base.len() != BASE {
            base = vec![0; BASE];
        }
        let pending = self.end - self.start;
        base[..pending].copy_from_slice(&self.buf[self.start..self.end]);
        (self.start, self.end) = (0, pending);
        spares.give(std::mem::replace(&mut self.buf, base));
        grown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(input: &mut Input, bytes: &[u8]) {
        if input.buf.is_empty() {
            assert_eq!(input.room(None, 1 << 20), Room::Enough);
        }
        let spare = input.spare();
        spare[..bytes.len()].copy_from_slice(bytes);
        input.filled(bytes.len());
    }

    #[test]
    fn a_large_value_grows_the_buffer_once_and_it_shrinks_back() {
        let mut input = Input::default();
        fill(&mut input, b"set k 0 0 100000\r\n");
        let base = input.buf.as_ptr();
        let need = 18 + 100_002;
        let mut spares = Spares::default();
        assert_eq!(input.room(Some(need), 1 << 20), Room::GrowTo(need));
        input.grow(need, &mut spares);
        assert_eq!(input.grown_by(), need - BASE);
        assert_eq!(input.spare().len(), 100_002);
        assert_eq!(input.room(Some(need), 1 << 20), Room::Enough);
        assert_eq!(input.room(Some((1 << 20) + 1), 1 << 20), Room::TooLarge);
        input.consume(18);
        assert_eq!(input.shrink(&mut spares), need - BASE, "a small remainder fits the base buffer");
        assert_eq!(input.grown_by(), 0);
        assert_eq!(input.pending(), b"");
        assert_eq!(input.buf.as_ptr(), base, "back in the base buffer it had, kept aside");
        assert_eq!(spares.bytes(), need, "the grown buffer is kept for the next large value");

        // The next large value grows into the kept buffer, keeping what was pending.
        fill(&mut input, b"set k 0 0 5000\r\n");
        let kept = spares.bufs[0].as_ptr();
        input.grow(need, &mut spares);
        assert_eq!(input.buf.as_ptr(), kept);
        assert_eq!(input.pending(), b"set k 0 0 5000\r\n");
        assert_eq!(spares.bytes(), 0);
    }

    #[test]
    fn a_shard_keeps_at_most_two_grown_buffers() {
        let mut spares = Spares::default();
        let mut inputs: Vec<Input> = (0..4).map(|_| Input::default()).collect();
        for input in &mut inputs {
            fill(input, b"get ");
            input.grow(100_000, &mut spares);
        }
        for input in &mut inputs {
            input.consume(4);
            assert_eq!(input.shrink(&mut spares), 100_000 - BASE);
        }
        assert_eq!(spares.bufs.len(), 2);
        assert_eq!(spares.bytes(), 200_000);

        // Nor more than 4 MiB.
        let mut spares = Spares::default();
        for input in &mut inputs[..2] {
            input.grow(3 << 20, &mut spares);
            assert_eq!(input.shrink(&mut spares), (3 << 20) - BASE);
        }
        assert_eq!(spares.bufs.len(), 1);
    }

    #[test]
    fn lines_double_up_to_the_maximum_then_refuse() {
        let mut input = Input::default();
        fill(&mut input, &vec![b'k'; BASE]);
        let mut spares = Spares::default();
        assert_eq!(input.room(None, 40_000), Room::GrowTo(2 * BASE));
        input.grow(2 * BASE, &mut spares);
        fill(&mut input, &vec![b'k'; BASE]);
        assert_eq!(input.room(None, 40_000), Room::GrowTo(40_000));
        input.grow(40_000, &mut spares);
        let rest = input.spare().len();
        fill(&mut input, &vec![b'k'; rest]);
        assert_eq!(input.room(None, 40_000), Room::TooLarge);
        assert_eq!(input.shrink(&mut spares), 0, "still holding more than the base buffer");
    }

    #[test]
    fn consumed_bytes_make_room_without_growing() {
        let mut input = Input::default();
        fill(&mut input, &vec![b'x'; BASE]);
        input.consume(BASE - 10);
        assert_eq!(input.room(None, 1 << 20), Room::Enough);
        assert_eq!(input.pending().len(), 10);
        assert_eq!(input.spare().len(), BASE - 10);
    }

    #[test]
    fn an_idle_connection_holds_no_request_buffer_until_a_request_is_split() {
        let mut input = Input::default();
        assert_eq!(input.buf.capacity(), 0, "nothing allocated before a split request");
        let mut view = Borrowed::new(b"get a\r\nget b");
        view.consume(7);
        assert_eq!(view.rest(), b"get b", "the unparsed tail is what gets copied");
        assert_eq!(input.room(None, 1 << 20), Room::Enough);
        assert_eq!(input.spare().len(), BASE, "the base buffer appears when first needed");
        assert_eq!(input.grown_by(), 0);
    }
}
