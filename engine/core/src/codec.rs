//! The byte format of everything the core encodes (mesh op batches, warm-restart
//! metadata, effect batches): little-endian fixed-width numbers, keys as a `u8` length
//! and their bytes, values as a `u32` length and their bytes. [`Writer`] appends fields
//! to a buffer; [`Reader`] takes them back in order and answers `None` as soon as the
//! bytes run out or a length is impossible, so a damaged or hostile input is refused,
//! never trusted. Nothing here allocates beyond the writer's buffer.

/// Appends fields to a byte buffer.
pub struct Writer<'b> {
    buf: &'b mut Vec<u8>,
}

impl<'b> Writer<'b> {
    pub fn new(buf: &'b mut Vec<u8>) -> Self {
        Writer { buf }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Raw bytes, no length (the reader must know how many).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// A key: at most 255 bytes, length first.
    pub fn key(&mut self, key: &[u8]) -> &mut Self {
        debug_assert!(key.len() <= usize::from(u8::MAX));
        self.u8(key.len() as u8).raw(key)
    }

    /// A value: a `u32` length, then the bytes.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        debug_assert!(bytes.len() <= u32::MAX as usize);
        self.u32(bytes.len() as u32).raw(bytes)
    }

    /// Bytes written to the buffer so far (all of it, not only by this writer).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Takes fields back from bytes, in the order a [`Writer`] put them.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    /// A reader positioned at byte `at` (clamped to the end).
    pub fn at(buf: &'a [u8], at: usize) -> Self {
        Reader { buf, at: at.min(buf.len()) }
    }

    /// Byte offset of the next field.
    pub fn position(&self) -> usize {
        self.at
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    pub fn is_done(&self) -> bool {
        self.at == self.buf.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|b| b[0])
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    pub fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    /// A key written by [`Writer::key`].
    pub fn key(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// A value written by [`Writer::bytes`].
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()?;
        self.take(len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_back_in_order() {
        let mut buf = Vec::new();
        Writer::new(&mut buf).u8(7).u32(0xdead_beef).u64(u64::MAX).i64(-5).key(b"key").bytes(b"value").raw(b"!");
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8(), Some(7));
        assert_eq!(r.u32(), Some(0xdead_beef));
        assert_eq!(r.u64(), Some(u64::MAX));
        assert_eq!(r.i64(), Some(-5));
        assert_eq!(r.key(), Some(&b"key"[..]));
        assert_eq!(r.bytes(), Some(&b"value"[..]));
        assert_eq!(r.take(1), Some(&b"!"[..]));
        assert!(r.is_done());
        assert_eq!(r.u8(), None, "past the end");
    }

    #[test]
    fn short_or_impossible_input_is_refused() {
        let mut buf = Vec::new();
        Writer::new(&mut buf).bytes(b"abcdef");
        for cut in 0..buf.len() {
            assert_eq!(Reader::new(&buf[..cut]).bytes(), None, "cut at {cut}");
        }
        // A length far beyond the input, and one that would overflow the position.
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.push(1);
        assert_eq!(Reader::new(&huge).bytes(), None);
        let mut r = Reader::at(&buf, 3);
        assert_eq!(r.take(usize::MAX), None);
        assert_eq!(r.position(), 3, "a refused read does not move the reader");
    }
}
