//! The io_uring plumbing of one load thread: a ring built with the set-up flags that keep
//! completions from interrupting the thread where the kernel has them, sockets registered
//! as fixed files, receives and sends tagged with their socket, one `io_uring_enter` per
//! loop turn that also waits for completions or a deadline.

use io_uring::{opcode, squeue, types, IoUring};
use std::io;

/// `IORING_RECVSEND_POLL_FIRST`: a recv is re-armed right after its data was consumed, when
/// the socket is almost always empty, so skip the first (wasted) receive attempt.
const RECVSEND_POLL_FIRST: u16 = 1;

/// What a completion is for: the low two bits of its user data (the socket is above them).
pub(super) const TAG_RECV: u64 = 1;
pub(super) const TAG_SEND: u64 = 2;

/// An errno after which the operation is simply tried again.
pub(super) fn is_transient(errno: i32) -> bool {
    errno == libc::EINTR || errno == libc::EAGAIN || errno == libc::ENOBUFS
}

/// A ring and the completions reaped from it.
pub(super) struct Ring {
    ring: IoUring,
    cqes: Vec<(u64, i32)>,
}

impl Ring {
    /// A ring of `entries` with `fds` registered as fixed files (socket `i` is file `i`).
    pub(super) fn new(entries: u32, fds: &[i32]) -> io::Result<Self> {
        let ring = if let Ok(r) = IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(entries) {
            r
        } else if let Ok(r) = IoUring::builder().setup_coop_taskrun().build(entries) {
            r
        } else {
            IoUring::new(entries)?
        };
        ring.submitter().register_files(fds)?;
        Ok(Ring { ring, cqes: Vec::with_capacity(entries as usize * 2) })
    }

    fn push(&mut self, e: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the callers of `recv` and `send` promise the buffers outlive the
            // operations (see their contracts).
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Queues a receive of up to `len` bytes into `buf` on socket `si`.
    ///
    /// # Safety
    /// `buf..buf+len` must stay valid, and not move, until this operation's completion
    /// has been reaped.
    pub(super) unsafe fn recv(&mut self, si: usize, buf: *mut u8, len: u32) -> io::Result<()> {
        let e = opcode::Recv::new(types::Fixed(si as u32), buf, len)
            .ioprio(RECVSEND_POLL_FIRST)
            .build()
            .user_data(((si as u64) << 2) | TAG_RECV);
        self.push(e)
    }

    /// Queues a send of `len` bytes from `buf` on socket `si`.
    ///
    /// # Safety
    /// As for [`Ring::recv`].
    pub(super) unsafe fn send(&mut self, si: usize, buf: *const u8, len: u32) -> io::Result<()> {
        let e = opcode::Send::new(types::Fixed(si as u32), buf, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(((si as u64) << 2) | TAG_SEND);
        self.push(e)
    }

    /// Submits queued entries and waits up to `wait_ns` for at least one completion.
    pub(super) fn enter(&mut self, wait_ns: u64) -> io::Result<()> {
        let ts = types::Timespec::new().sec(wait_ns / 1_000_000_000).nsec((wait_ns % 1_000_000_000) as u32);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Reaps the completions: `(user data, result)` in order. The vector is lent: give it
    /// back with [`Ring::give_back`] to reuse its memory.
    pub(super) fn completions(&mut self) -> Vec<(u64, i32)> {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(self.ring.completion().map(|e| (e.user_data(), e.result())));
        cqes
    }

    pub(super) fn give_back(&mut self, cqes: Vec<(u64, i32)>) {
        self.cqes = cqes;
    }
}
