//! One shard's io_uring: built with the set-up flags that keep completions from
//! interrupting the shard (`SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`, else
//! `COOP_TASKRUN | TASKRUN_FLAG`, else none), an eventfd the kernel signals when the ring
//! has work while the shard sleeps, and one `io_uring_enter` per turn, skipped when
//! there is nothing to submit and the kernel says no completion is waiting.

use std::io;
use std::os::fd::RawFd;

use io_uring::{squeue, IoUring};

/// `IORING_ENTER_GETEVENTS` (the crate keeps its constants private).
const ENTER_GETEVENTS: u32 = 1;

/// Which set-up the kernel accepted, most capable first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Completions are posted only when the shard asks (no task-work interrupts).
    DeferTaskrun,
    /// Task work runs at the shard's next kernel entry, not by interrupt.
    CoopTaskrun,
    /// A plain ring (completions may interrupt the shard).
    Plain,
}

impl Setup {
    pub fn name(self) -> &'static str {
        match self {
            Setup::DeferTaskrun => "single_issuer+defer_taskrun",
            Setup::CoopTaskrun => "coop_taskrun",
            Setup::Plain => "plain",
        }
    }
}

/// The ring and the completions of the last turn.
pub struct ShardRing {
    ring: IoUring,
    setup: Setup,
    eventfd: RawFd,
    /// Entries pushed since the last submission.
    unsubmitted: usize,
    /// Calls to `io_uring_enter` (for `stats`: syscalls the data path made).
    pub enters: u64,
}

impl Drop for ShardRing {
    fn drop(&mut self) {
        // SAFETY: the eventfd is this ring's own.
        unsafe {
            libc::close(self.eventfd);
        }
    }
}

impl ShardRing {
    /// A ring of `entries` submission slots (completions: twice that), with an eventfd
    /// registered and its notifications off until [`ShardRing::arm_eventfd`].
    pub fn new(entries: u32) -> io::Result<Self> {
        type Configure = fn(&mut io_uring::Builder);
        let attempts: [(Setup, Configure); 3] = [
            (Setup::DeferTaskrun, |b| {
                b.setup_single_issuer().setup_defer_taskrun().setup_taskrun_flag();
            }),
            (Setup::CoopTaskrun, |b| {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }),
            (Setup::Plain, |_| {}),
        ];
        let mut last = None;
        for (setup, configure) in attempts {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(entries * 2);
            configure(&mut builder);
            match builder.build(entries) {
                Ok(ring) => return Self::finish(ring, setup),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no io_uring set-up accepted")))
    }

    fn finish(ring: IoUring, setup: Setup) -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned by the ShardRing from here on.
        let eventfd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if eventfd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ring = ShardRing { ring, setup, eventfd, unsubmitted: 0, enters: 0 };
        ring.ring.submitter().register_eventfd(eventfd)?;
        ring.disarm_eventfd();
        Ok(ring)
    }

    pub fn setup(&self) -> Setup {
        self.setup
    }

    pub fn eventfd(&self) -> RawFd {
        self.eventfd
    }

    pub fn submitter(&self) -> io_uring::Submitter<'_> {
        self.ring.submitter()
    }

    /// Queues one entry (submitting first if the queue is full).
    ///
    /// # Safety
    /// Whatever the entry points to must stay valid until its completion is reaped.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            if self.ring.submission().push(entry).is_ok() {
                self.unsubmitted += 1;
                return Ok(());
            }
            self.enter()?;
        }
    }

    /// True when a turn has something to do: entries to submit, completions posted, or
    /// (deferred task work) the kernel flags work waiting for the next entry.
    pub fn has_work(&mut self) -> bool {
        if self.unsubmitted > 0 {
            return true;
        }
        let posted = {
            let mut cq = self.ring.completion();
            cq.sync();
            !cq.is_empty()
        };
        if posted {
            return true;
        }
        match self.setup {
            Setup::Plain => false,
            _ => self.ring.submission().taskrun(),
        }
    }

    /// Submits what is queued and runs the kernel's pending task work (so its
    /// completions are posted), without waiting.
    pub fn enter(&mut self) -> io::Result<()> {
        let to_submit = self.unsubmitted as u32;
        self.enters += 1;
        // SAFETY: the entries queued were pushed under `push`'s contract.
        let r = unsafe { self.ring.submitter().enter::<libc::sigset_t>(to_submit, 0, ENTER_GETEVENTS, None) };
        match r {
            Ok(n) => {
                self.unsubmitted -= n.min(self.unsubmitted);
                Ok(())
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Takes the posted completions: `(user data, result, flags)`, appended to `out`.
    pub fn reap(&mut self, out: &mut Vec<(u64, i32, u32)>) {
        out.extend(self.ring.completion().map(|e| (e.user_data(), e.result(), e.flags())));
    }

    /// The kernel signals the eventfd from now on when the ring gets work.
    pub fn arm_eventfd(&mut self) {
        self.ring.completion().enable_eventfd();
    }

    /// No eventfd signals (the shard is awake and looks at the ring anyway).
    pub fn disarm_eventfd(&mut self) {
        self.ring.completion().disable_eventfd();
    }
}
