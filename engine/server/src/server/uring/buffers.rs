//! The shard's provided-buffer ring: receive buffers the kernel picks from when data
//! arrives on any connection (multishot receive), so a connection holds a buffer only
//! from the moment its bytes arrive until it has parsed them, and an idle connection
//! holds none. One mmap holds the ring of buffer descriptors and the buffers.

use std::io;
use std::ptr::NonNull;

use io_uring::types::BufRingEntry;

/// The buffer group every receive of a shard selects from.
pub const GROUP: u16 = 0;

/// Bytes per receive buffer.
pub const BUFFER_SIZE: usize = 4096;

pub struct ProvidedBuffers {
    /// Start of the mapping: `count` descriptors, then (page-aligned) the buffers.
    base: NonNull<u8>,
    map_len: usize,
    buffers_at: usize,
    count: u16,
    /// The ring's tail as this side last published it.
    tail: u16,
}

impl Drop for ProvidedBuffers {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours; the ring unregisters the group when it is dropped
        // (the ShardRing outlives no ProvidedBuffers: see the Reactor's field order).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}

impl ProvidedBuffers {
    /// `count` (a power of two, at most 32768) buffers registered with `submitter`.
    pub fn new(submitter: &io_uring::Submitter<'_>, count: u16) -> io::Result<Self> {
        assert!(count.is_power_of_two(), "a buffer ring holds a power of two buffers");
        let page = 4096;
        let ring_bytes = (usize::from(count) * std::mem::size_of::<BufRingEntry>()).next_multiple_of(page);
        let map_len = ring_bytes + usize::from(count) * BUFFER_SIZE;
        // SAFETY: an anonymous private mapping; checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        let mut buffers = ProvidedBuffers { base, map_len, buffers_at: ring_bytes, count, tail: 0 };
        // SAFETY: the descriptor ring lies in the mapping, which lives as long as `self`,
        // and the ring (which owns the registration) is dropped first.
        unsafe { submitter.register_buf_ring_with_flags(addr as u64, count, GROUP, 0)? };
        for bid in 0..count {
            buffers.put(bid);
        }
        buffers.publish();
        Ok(buffers)
    }

    fn entries(&self) -> *mut BufRingEntry {
        self.base.as_ptr().cast()
    }

    /// The bytes the kernel put in buffer `bid`.
    ///
    /// # Safety
    /// `bid` came from a completion and has not been recycled; the slice must not
    /// outlive that (see [`ProvidedBuffers::recycle`]).
    pub unsafe fn bytes<'a>(&self, bid: u16, len: usize) -> &'a [u8] {
        debug_assert!(bid < self.count && len <= BUFFER_SIZE);
        let at = self.buffers_at + usize::from(bid) * BUFFER_SIZE;
        std::slice::from_raw_parts(self.base.as_ptr().add(at), len)
    }

    fn put(&mut self, bid: u16) {
        let mask = self.count - 1;
        // SAFETY: the slot index is masked into the ring, which lies in our mapping.
        unsafe {
            let entry = &mut *self.entries().add(usize::from(self.tail & mask));
            entry.set_addr(self.base.as_ptr().add(self.buffers_at + usize::from(bid) * BUFFER_SIZE) as u64);
            entry.set_len(BUFFER_SIZE as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&mut self) {
        // SAFETY: the tail field is the first descriptor's reserved half-word; the
        // kernel reads it with acquire ordering.
        unsafe {
            let tail = BufRingEntry::tail(self.entries()) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    /// Gives buffer `bid` back to the kernel (every slice of it is dead by now).
    pub fn recycle(&mut self, bid: u16) {
        self.put(bid);
        self.publish();
    }
}
