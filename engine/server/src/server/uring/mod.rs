//! A shard's network I/O on its own io_uring (the `io-uring` crate), driven from inside
//! the shard's glommio executor: multishot accept on the listening socket, one multishot
//! receive per connection into the shard's provided buffers, and sends queued on the
//! ring. Every connection task queues its operations; the driver task submits all of
//! them and reaps every completion in one `io_uring_enter` per turn (none at all when
//! the kernel flags no work), then wakes the connections whose operations completed.
//!
//! When turns find nothing to do for [`SPIN_BEFORE_SLEEP`], the driver sleeps (at once, without
//! looking, while the shard shares its CPU: see [`Reactor::tick`]): it turns the ring's eventfd on,
//! looks once more, and waits for either the eventfd (read through glommio's own ring, so
//! glommio's sleep covers ours) or a connection queueing an operation. While it is awake
//! the eventfd is off, so a busy shard is never interrupted by its completions.
//!
//! A connection's socket is also registered in the ring's table of fixed files (one
//! system call when it opens and one when it closes), so its sends and receives name it
//! by index and the kernel does not look the descriptor up and take a reference to its
//! file on every operation. Past the table's size (`-c`), or where the kernel refuses a
//! table, operations name the descriptor as before.
//!
//! A large request (a value of tens of kilobytes or more) does not go through the
//! provided buffers: the connection stops its multishot receive ([`Reactor::pause_recv`])
//! and receives the rest of the request straight into its own buffer with one
//! `MSG_WAITALL` receive ([`Reactor::recv_into`]), as memcached reads a value into its
//! item: one completion and one copy instead of one of each per 4 KiB.
//!
//! Bounds: once a connection holds [`MAX_QUEUED_CHUNKS`] received buffers its receive is
//! cancelled (re-armed once it has parsed them), so a client that sends without reading
//! replies is paused after a few buffers (a burst within one turn can take more before
//! the cancel lands, and a connection waiting for request-buffer budget keeps what it
//! holds). A connection whose receive found no free buffer receives into its own buffer
//! until one is given back, so connections holding the buffers never stall it. Deadlines (request, idle and
//! write timeouts) are checked by a tick every [`TICK`], which shuts the socket down.

pub mod buffers;
pub mod ring;

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types};

use buffers::ProvidedBuffers;
use ring::{Setup, ShardRing};

/// How often deadlines are checked (and the coarse clock they use advances).
pub const TICK: Duration = Duration::from_millis(100);

/// Received buffers one connection may hold before its receive is paused.
pub const MAX_QUEUED_CHUNKS: usize = 8;

/// How long a driver with nothing to do keeps looking before it sleeps. Looking costs
/// no system call (the completion queue and the kernel's TASKRUN flag are shared
/// memory); a sleep and a wake cost several, and tens of microseconds of latency.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(50);
/// CPU pause hints between two looks while spinning.
const SPIN_PAUSES: usize = 16;

/// Involuntary context switches of the shard's thread in one [`TICK`] above which it is
/// taken to share its CPU with other work (a shard on a CPU of its own sees a few per
/// second, from kernel threads; one sharing it with a busy process, thousands).
const PREEMPTED_PER_TICK: i64 = 20;
/// Ticks a shard that shares its CPU goes without looking before it looks again.
const LOOK_OFF_TICKS: u32 = 10;

/// Submission slots of a shard's ring.
const RING_ENTRIES: u32 = 1024;

/// What a completion is for: the low byte of its user data (the connection's slot above).
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_ACCEPT: u64 = 3;
const KIND_CANCEL: u64 = 4;
const KIND_RECV_INTO: u64 = 5;

fn user_data(slot: u32, kind: u64) -> u64 {
    (u64::from(slot) << 8) | kind
}

/// Builds an operation on `io`'s socket, naming it as `$t`: its fixed file if it has
/// one, else its descriptor.
macro_rules! on_socket {
    ($io:expr, |$t:ident| $build:expr) => {
        match $io.fixed {
            Some(index) => {
                let $t = types::Fixed(index);
                $build
            }
            None => {
                let $t = types::Fd($io.fd);
                $build
            }
        }
    };
}

/// The receive of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// Not armed: armed again when the connection wants bytes.
    Off,
    Armed,
    /// A cancel is on its way (too many buffers held, or the connection is closing).
    Cancelling,
}

/// A one-shot operation of a connection (a send, a receive into its own buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OneShot {
    Idle,
    InFlight,
    Done(i32),
}

/// One connection's I/O state, shared by its task and the driver.
pub struct ConnIo {
    pub fd: RawFd,
    slot: u32,
    /// The socket's index in the ring's fixed files (the slot), when registered there.
    fixed: Option<u32>,
    /// Received buffers, in order: (buffer id, length).
    chunks: RefCell<VecDeque<(u16, u32)>>,
    recv: Cell<Recv>,
    /// The byte stream ended: 0 at end of file, else the negated errno.
    ended: Cell<Option<i32>>,
    /// The last receive found no free buffer: re-armed when one is given back.
    starved: Cell<bool>,
    send: Cell<OneShot>,
    /// A receive into the connection's own buffer ([`Reactor::recv_into`]).
    recv_into: Cell<OneShot>,
    /// The gathered send of a `sendmsg` (stable: the ConnIo lives in an Rc).
    msg: UnsafeCell<libc::msghdr>,
    waker: RefCell<Option<Waker>>,
    /// When the operation the connection awaits has taken too long.
    deadline: Cell<Option<Instant>>,
}

/// What [`Reactor::next_chunk`] found.
pub enum Next<'r> {
    Chunk(Chunk<'r>),
    Ended,
    Starved,
}

/// One received buffer, lent to the connection until it is dropped.
pub struct Chunk<'r> {
    reactor: &'r Reactor,
    bid: u16,
    len: usize,
}

impl Chunk<'_> {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the buffer is not recycled before this Chunk is dropped.
        unsafe { self.reactor.buffers.borrow().bytes(self.bid, self.len) }
    }
}

impl Drop for Chunk<'_> {
    fn drop(&mut self) {
        self.reactor.recycle(self.bid);
    }
}

/// The multishot accept of the shard's listening socket.
struct Accepting {
    fd: RawFd,
    armed: bool,
    stopped: bool,
    handler: Box<dyn Fn(RawFd)>,
    failures: u64,
    last_log: Option<Instant>,
}

/// Counters of the shard's ring (for `stats`).
#[derive(Debug, Default, Clone, Copy)]
pub struct RingCounters {
    pub enters: u64,
    pub completions: u64,
    pub sleeps: u64,
    pub recv_paused: u64,
    pub recv_starved: u64,
    /// Receives straight into a connection's buffer (large requests).
    pub recv_direct: u64,
    /// Connections shut down at a deadline (idle, a slow request, unread replies).
    pub timed_out: u64,
    /// Connections whose socket was registered as a fixed file.
    pub fixed_file_conns: u64,
    /// Nanoseconds the driver spent looking for work and finding none before it found
    /// some or slept ([`SPIN_BEFORE_SLEEP`]): CPU time the shard burns for latency, not
    /// for requests.
    pub idle_spin_ns: u64,
    /// Times the shard found it shares its CPU and stopped looking for work before it
    /// sleeps (for [`LOOK_OFF_TICKS`] ticks, extended while it still does).
    pub look_backoffs: u64,
}

impl RingCounters {
    pub fn sum(&self, other: &RingCounters) -> RingCounters {
        RingCounters {
            enters: self.enters + other.enters,
            completions: self.completions + other.completions,
            sleeps: self.sleeps + other.sleeps,
            recv_paused: self.recv_paused + other.recv_paused,
            recv_starved: self.recv_starved + other.recv_starved,
            recv_direct: self.recv_direct + other.recv_direct,
            timed_out: self.timed_out + other.timed_out,
            fixed_file_conns: self.fixed_file_conns + other.fixed_file_conns,
            idle_spin_ns: self.idle_spin_ns + other.idle_spin_ns,
            look_backoffs: self.look_backoffs + other.look_backoffs,
        }
    }
}

/// A shard's ring, its buffers, and the connections using them.
pub struct Reactor {
    // Field order matters: the ring (which holds the buffer registration) is dropped
    // before the buffers' memory.
    ring: RefCell<ShardRing>,
    buffers: RefCell<ProvidedBuffers>,
    conns: RefCell<Vec<Option<Rc<ConnIo>>>>,
    free_slots: RefCell<Vec<u32>>,
    accepting: RefCell<Option<Accepting>>,
    /// Connections waiting for a free buffer.
    starved: RefCell<Vec<Rc<ConnIo>>>,
    /// Set when an operation is queued: the driver must take a turn.
    wake: Cell<bool>,
    parked: RefCell<Option<Waker>>,
    /// The time of the last tick (deadlines are coarse).
    coarse_now: Cell<Instant>,
    counters: Cell<RingCounters>,
    /// Size of the ring's table of fixed files (0: none).
    fixed_files: u32,
    /// Ticks left during which the driver sleeps without looking first.
    look_off: Cell<u32>,
    /// The shard thread's involuntary context switches at the last tick.
    preempted: Cell<i64>,
}

impl Reactor {
    /// A ring and `buffers` receive buffers (a power of two) for this shard, with a
    /// table of `fixed_files` registered sockets (none if the kernel refuses it).
    pub fn new(buffers: u16, fixed_files: u32) -> io::Result<Rc<Reactor>> {
        let ring = ShardRing::new(RING_ENTRIES)?;
        let provided = ProvidedBuffers::new(&ring.submitter(), buffers)
            .map_err(|e| io::Error::new(e.kind(), format!("provided-buffer rings need Linux 5.19 or later: {e}")))?;
        let fixed_files = match ring.submitter().register_files_sparse(fixed_files) {
            Ok(()) => fixed_files,
            Err(e) => {
                tracing::warn!("no table of fixed files ({fixed_files} entries): {e}; sockets are named by descriptor");
                0
            }
        };
        Ok(Rc::new(Reactor {
            ring: RefCell::new(ring),
            buffers: RefCell::new(provided),
            conns: RefCell::new(Vec::new()),
            free_slots: RefCell::new(Vec::new()),
            accepting: RefCell::new(None),
            starved: RefCell::new(Vec::new()),
            wake: Cell::new(false),
            parked: RefCell::new(None),
            coarse_now: Cell::new(Instant::now()),
            counters: Cell::new(RingCounters::default()),
            fixed_files,
            look_off: Cell::new(0),
            preempted: Cell::new(0),
        }))
    }

    /// Receive buffers for a shard that may hold `connections` connections: two each,
    /// between 256 and 4096 (1 to 16 MiB).
    pub fn buffers_for(connections: usize) -> u16 {
        (connections.saturating_mul(2)).next_power_of_two().clamp(256, 4096) as u16
    }

    pub fn setup(&self) -> Setup {
        self.ring.borrow().setup()
    }

    /// Size of the ring's table of fixed files (0: sockets are named by descriptor).
    pub fn fixed_files(&self) -> u32 {
        self.fixed_files
    }

    pub fn counters(&self) -> RingCounters {
        let mut c = self.counters.get();
        c.enters = self.ring.borrow().enters;
        c
    }

    fn count(&self, f: impl FnOnce(&mut RingCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// The coarse clock deadlines are measured against.
    pub fn coarse_now(&self) -> Instant {
        self.coarse_now.get()
    }

    fn push(&self, entry: io_uring::squeue::Entry) {
        // SAFETY: every entry queued here points only at memory that outlives its
        // completion: the provided buffers, a ConnIo's msghdr, iovecs the connection
        // keeps untouched until its send completes (see `send`; they point into its own
        // buffers, other shards' reply buffers, or segments pinned until then), or a
        // connection's request buffer, untouched until its receive completes (see
        // `recv_into`).
        if let Err(e) = unsafe { self.ring.borrow_mut().push(&entry) } {
            tracing::error!("io_uring submission failed: {e}");
        }
        self.wake.set(true);
        if let Some(waker) = self.parked.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Starts accepting on `fd`, handing each new socket to `handler`.
    pub fn start_accept(&self, fd: RawFd, handler: Box<dyn Fn(RawFd)>) {
        *self.accepting.borrow_mut() =
            Some(Accepting { fd, armed: false, stopped: false, handler, failures: 0, last_log: None });
        self.arm_accept();
    }

    fn arm_accept(&self) {
        let fd = {
            let mut accepting = self.accepting.borrow_mut();
            let Some(a) = accepting.as_mut().filter(|a| !a.armed && !a.stopped) else { return };
            a.armed = true;
            a.fd
        };
        let entry = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(0, KIND_ACCEPT));
        self.push(entry);
    }

    /// Stops accepting; what completed already is still handed over on the next turn.
    pub fn stop_accept(&self) {
        let armed = match self.accepting.borrow_mut().as_mut() {
            Some(a) => {
                a.stopped = true;
                a.armed
            }
            None => false,
        };
        if armed {
            self.push(opcode::AsyncCancel::new(user_data(0, KIND_ACCEPT)).build().user_data(user_data(0, KIND_CANCEL)));
        }
    }

    /// A new connection's I/O state (its receive is armed when it first wants bytes).
    pub fn register(&self, fd: RawFd) -> Rc<ConnIo> {
        let slot = self.free_slots.borrow_mut().pop().unwrap_or_else(|| {
            let mut conns = self.conns.borrow_mut();
            conns.push(None);
            (conns.len() - 1) as u32
        });
        // The slot is free, so is its entry in the table (cleared when it was freed).
        let fixed = (slot < self.fixed_files)
            .then(|| self.ring.borrow().submitter().register_files_update(slot, &[fd]))
            .and_then(|registered| match registered {
                Ok(1) => Some(slot),
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!("socket not registered as a fixed file: {e}");
                    None
                }
            });
        if fixed.is_some() {
            self.count(|c| c.fixed_file_conns += 1);
        }
        let io = Rc::new(ConnIo {
            fd,
            slot,
            fixed,
            chunks: RefCell::new(VecDeque::new()),
            recv: Cell::new(Recv::Off),
            ended: Cell::new(None),
            starved: Cell::new(false),
            send: Cell::new(OneShot::Idle),
            recv_into: Cell::new(OneShot::Idle),
            // SAFETY: an all-zero msghdr is valid.
            msg: UnsafeCell::new(unsafe { std::mem::zeroed() }),
            waker: RefCell::new(None),
            deadline: Cell::new(None),
        });
        self.conns.borrow_mut()[slot as usize] = Some(io.clone());
        io
    }

    fn arm_recv(&self, io: &ConnIo) {
        io.recv.set(Recv::Armed);
        let entry = on_socket!(io, |socket| opcode::RecvMulti::new(socket, buffers::GROUP).build())
            .user_data(user_data(io.slot, KIND_RECV));
        self.push(entry);
    }

    fn cancel_recv(&self, io: &ConnIo) {
        io.recv.set(Recv::Cancelling);
        self.push(
            opcode::AsyncCancel::new(user_data(io.slot, KIND_RECV)).build().user_data(user_data(io.slot, KIND_CANCEL)),
        );
    }

    fn recycle(&self, bid: u16) {
        self.buffers.borrow_mut().recycle(bid);
        if !self.starved.borrow().is_empty() {
            for io in self.starved.borrow_mut().drain(..) {
                io.starved.set(false);
                io.wake();
            }
        }
    }

    /// The next received buffer of `io`, waiting for one; [`Next::Ended`] once the
    /// client's stream ended (it closed, or the socket failed or was shut down), and
    /// [`Next::Starved`] when its receive found no free buffer: then the connection
    /// receives into its own buffer ([`Reactor::recv_into`]) until one is given back, so
    /// other connections holding the shard's buffers cannot stall it.
    pub async fn next_chunk<'r>(&'r self, io: &ConnIo) -> Next<'r> {
        poll_fn(|cx| {
            if let Some(chunk) = self.try_chunk(io) {
                return Poll::Ready(Next::Chunk(chunk));
            }
            if io.ended.get().is_some() {
                return Poll::Ready(Next::Ended);
            }
            if io.starved.get() && io.recv.get() == Recv::Off {
                return Poll::Ready(Next::Starved);
            }
            if io.recv.get() == Recv::Off {
                self.arm_recv(io);
            }
            *io.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// A buffer `io` has received already, if any.
    pub fn try_chunk<'r>(&'r self, io: &ConnIo) -> Option<Chunk<'r>> {
        let (bid, len) = io.chunks.borrow_mut().pop_front()?;
        Some(Chunk { reactor: self, bid, len: len as usize })
    }

    /// Stops `io`'s multishot receive and waits until it has stopped: every byte it
    /// received is then among `io`'s chunks ([`Reactor::try_chunk`]), and the rest is
    /// still in the socket. It is armed again by the next [`Reactor::next_chunk`].
    pub async fn pause_recv(&self, io: &ConnIo) {
        if io.recv.get() == Recv::Armed {
            self.cancel_recv(io);
        }
        poll_fn(|cx| {
            if io.recv.get() == Recv::Off {
                return Poll::Ready(());
            }
            *io.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// Receives into `buf`, with `io`'s multishot receive paused
    /// ([`Reactor::pause_recv`]) and its chunks taken: exactly `buf.len()` bytes with
    /// `all` (fewer only when the stream ends or fails first), else whatever arrives
    /// first. `buf` must stay untouched until this returns.
    pub async fn recv_into(&self, io: &ConnIo, buf: &mut [u8], all: bool) -> io::Result<usize> {
        debug_assert!(io.recv.get() == Recv::Off && io.chunks.borrow().is_empty());
        debug_assert_eq!(io.recv_into.get(), OneShot::Idle);
        let len = buf.len().min(u32::MAX as usize) as u32;
        let flags = if all { libc::MSG_WAITALL } else { 0 };
        let entry = on_socket!(io, |socket| opcode::Recv::new(socket, buf.as_mut_ptr(), len).flags(flags).build())
            .user_data(user_data(io.slot, KIND_RECV_INTO));
        io.recv_into.set(OneShot::InFlight);
        self.count(|c| c.recv_direct += 1);
        self.push(entry);
        // As with `send`, the connection's task awaits this to the end.
        completion(io, &io.recv_into).await
    }

    /// Sends `iov` (which must stay untouched until this returns) and waits for the
    /// kernel to take (some of) it: the bytes sent.
    pub async fn send(&self, io: &ConnIo, iov: &[libc::iovec]) -> io::Result<usize> {
        debug_assert_eq!(io.send.get(), OneShot::Idle);
        let entry = if let [one] = iov {
            let (at, len) = (one.iov_base as *const u8, one.iov_len.min(u32::MAX as usize) as u32);
            on_socket!(io, |socket| opcode::Send::new(socket, at, len).flags(libc::MSG_NOSIGNAL).build())
        } else {
            // SAFETY: the msghdr is this connection's, and no send of it is in flight.
            let msg = unsafe { &mut *io.msg.get() };
            msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = iov.len();
            on_socket!(io, |socket| opcode::SendMsg::new(socket, msg).flags(libc::MSG_NOSIGNAL as u32).build())
        };
        io.send.set(OneShot::InFlight);
        self.push(entry.user_data(user_data(io.slot, KIND_SEND)));
        // The future is not cancelled while the send is in flight: the connection's
        // task awaits it to the end (the tick shuts a stuck socket down instead).
        completion(io, &io.send).await
    }

    /// Ends a connection's I/O: cancels its receive, waits for every operation of it
    /// to complete, gives its buffers back and closes the socket.
    pub async fn close(&self, io: Rc<ConnIo>) {
        if io.recv.get() == Recv::Armed {
            self.cancel_recv(&io);
        }
        poll_fn(|cx| {
            if io.recv.get() == Recv::Off
                && io.send.get() != OneShot::InFlight
                && io.recv_into.get() != OneShot::InFlight
            {
                return Poll::Ready(());
            }
            *io.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        while let Some(chunk) = self.try_chunk(&io) {
            drop(chunk);
        }
        self.starved.borrow_mut().retain(|s| !Rc::ptr_eq(s, &io));
        if let Some(index) = io.fixed {
            // The table's reference to the socket goes before the descriptor.
            if let Err(e) = self.ring.borrow().submitter().register_files_update(index, &[-1]) {
                tracing::error!("a closed socket stays in the fixed-file table: {e}");
            }
        }
        self.conns.borrow_mut()[io.slot as usize] = None;
        self.free_slots.borrow_mut().push(io.slot);
        // SAFETY: the socket is this connection's and no operation uses it any more.
        unsafe {
            libc::close(io.fd);
        }
    }

    /// One turn: submit, reap, dispatch. False when there was nothing to do.
    fn turn(&self, cqes: &mut Vec<(u64, i32, u32)>) -> bool {
        self.wake.set(false);
        {
            let mut ring = self.ring.borrow_mut();
            if !ring.has_work() {
                return false;
            }
            if let Err(e) = ring.enter() {
                tracing::error!("io_uring_enter failed: {e}");
            }
            ring.reap(cqes);
        }
        let n = cqes.len() as u64;
        self.count(|c| c.completions += n);
        for (data, res, flags) in cqes.drain(..) {
            self.dispatch(data, res, flags);
        }
        true
    }

    fn conn(&self, slot: u32) -> Option<Rc<ConnIo>> {
        self.conns.borrow().get(slot as usize).and_then(Clone::clone)
    }

    fn dispatch(&self, data: u64, res: i32, flags: u32) {
        let slot = (data >> 8) as u32;
        match data & 0xff {
            KIND_RECV => {
                let bid = cqueue::buffer_select(flags);
                let Some(io) = self.conn(slot) else {
                    debug_assert!(false, "a receive completed for a closed connection");
                    if let Some(bid) = bid {
                        self.buffers.borrow_mut().recycle(bid);
                    }
                    return;
                };
                let more = cqueue::more(flags);
                if res > 0 {
                    if let Some(bid) = bid {
                        io.chunks.borrow_mut().push_back((bid, res as u32));
                    }
                } else if res == 0 {
                    io.ended.set(Some(0));
                } else if res == -libc::ENOBUFS {
                    self.count(|c| c.recv_starved += 1);
                    io.starved.set(true);
                    self.starved.borrow_mut().push(io.clone());
                } else if res != -libc::ECANCELED {
                    io.ended.set(Some(res));
                }
                if !more {
                    io.recv.set(Recv::Off);
                } else if io.recv.get() == Recv::Armed && io.chunks.borrow().len() >= MAX_QUEUED_CHUNKS {
                    self.count(|c| c.recv_paused += 1);
                    self.cancel_recv(&io);
                }
                io.wake();
            }
            KIND_SEND => {
                if let Some(io) = self.conn(slot) {
                    io.send.set(OneShot::Done(res));
                    io.wake();
                }
            }
            KIND_RECV_INTO => {
                if let Some(io) = self.conn(slot) {
                    io.recv_into.set(OneShot::Done(res));
                    io.wake();
                }
            }
            KIND_ACCEPT => self.accepted(res, cqueue::more(flags)),
            _ => {}
        }
    }

    fn accepted(&self, res: i32, more: bool) {
        let mut accepting = self.accepting.borrow_mut();
        let Some(a) = accepting.as_mut() else {
            if res >= 0 {
                // SAFETY: a socket nobody will serve.
                unsafe { libc::close(res) };
            }
            return;
        };
        if !more {
            a.armed = false;
        }
        if res >= 0 {
            (a.handler)(res);
        } else if res != -libc::ECANCELED {
            a.failures += 1;
            if a.last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                let e = io::Error::from_raw_os_error(-res);
                tracing::warn!("accept failed ({} times so far): {e}", a.failures);
                a.last_log = Some(Instant::now());
            }
        }
        // A failed accept (out of descriptors) is re-armed by the next tick, not at once.
        let rearm = !more && !a.stopped && res >= 0;
        drop(accepting);
        if rearm {
            self.arm_accept();
        }
    }

    /// The driver: turns while there is work, sleeps when there is none.
    pub async fn drive(self: Rc<Self>) {
        let mut cqes = Vec::with_capacity(RING_ENTRIES as usize * 2);
        let mut idle_since: Option<Instant> = None;
        loop {
            if self.turn(&mut cqes) {
                if let Some(since) = idle_since.take() {
                    self.count_spin(since.elapsed());
                }
                futures_lite::future::yield_now().await;
                continue;
            }
            // Nothing to do: look again (other tasks running in between) for a while
            // before sleeping, as the next request is usually microseconds away.
            let since = *idle_since.get_or_insert_with(Instant::now);
            if self.look_off.get() == 0 && since.elapsed() < SPIN_BEFORE_SLEEP {
                // A short pause between looks: fewer clock reads and task switches, and
                // kinder to a hyperthread sibling, for well under a microsecond.
                for _ in 0..SPIN_PAUSES {
                    std::hint::spin_loop();
                }
                futures_lite::future::yield_now().await;
                continue;
            }
            idle_since = None;
            self.count_spin(since.elapsed());
            self.ring.borrow_mut().arm_eventfd();
            if self.turn(&mut cqes) || self.wake.get() {
                self.ring.borrow_mut().disarm_eventfd();
                futures_lite::future::yield_now().await;
                continue;
            }
            self.count(|c| c.sleeps += 1);
            poll_fn(|cx| {
                if self.wake.replace(false) {
                    return Poll::Ready(());
                }
                *self.parked.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            self.ring.borrow_mut().disarm_eventfd();
        }
    }

    fn count_spin(&self, spun: Duration) {
        self.count(|c| c.idle_spin_ns += spun.as_nanos() as u64);
    }

    /// Wakes the driver whenever the kernel signals the ring's eventfd (read through
    /// glommio's ring, so that glommio's sleep ends when this ring has work).
    pub async fn watch_eventfd(self: Rc<Self>) -> io::Result<()> {
        use std::os::fd::FromRawFd;
        // SAFETY: a duplicate of the ring's eventfd, owned by the file from here on.
        let fd = unsafe { libc::dup(self.ring.borrow().eventfd()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let file = unsafe { glommio::io::BufferedFile::from_raw_fd(fd) };
        loop {
            file.read_at(0, 8).await.map_err(|e| io::Error::other(e.to_string()))?;
            self.wake.set(true);
            if let Some(waker) = self.parked.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    /// Every [`TICK`]: advances the coarse clock, shuts down connections past their
    /// deadline, re-arms a failed accept, and decides whether the driver may look for
    /// work before it sleeps. Looking pays when the shard has its CPU to itself; when
    /// the thread is preempted often (more than [`PREEMPTED_PER_TICK`] involuntary
    /// switches in a tick), something else wants that CPU (a client or load generator
    /// on the same machine), and every microsecond spent looking is taken from it: the
    /// driver then sleeps as soon as it is idle, for [`LOOK_OFF_TICKS`].
    pub async fn tick(self: Rc<Self>) {
        self.preempted.set(involuntary_switches());
        loop {
            glommio::timer::sleep(TICK).await;
            let now = Instant::now();
            self.coarse_now.set(now);
            let switches = involuntary_switches();
            let (look_off, backed_off) =
                look_off_after_tick(self.look_off.get(), switches - self.preempted.replace(switches));
            self.look_off.set(look_off);
            if backed_off {
                self.count(|c| c.look_backoffs += 1);
            }
            let late: Vec<RawFd> = self
                .conns
                .borrow()
                .iter()
                .flatten()
                .filter(|io| io.deadline.get().is_some_and(|d| d <= now))
                .map(|io| {
                    io.deadline.set(None);
                    io.fd
                })
                .collect();
            for fd in late {
                self.count(|c| c.timed_out += 1);
                // SAFETY: the socket of a live connection; shutting it down ends its
                // receive and any send in flight, and the connection closes.
                unsafe {
                    libc::shutdown(fd, libc::SHUT_RDWR);
                }
            }
            self.arm_accept();
        }
    }
}

/// The ticks the driver goes on without looking, after a tick in which its thread was
/// preempted `preempted` times while `look_off` ticks were left; true when looking
/// stops at this tick.
fn look_off_after_tick(look_off: u32, preempted: i64) -> (u32, bool) {
    if preempted > PREEMPTED_PER_TICK {
        (LOOK_OFF_TICKS, look_off == 0)
    } else {
        (look_off.saturating_sub(1), false)
    }
}

/// Involuntary context switches of the calling thread so far (0 if unknown).
fn involuntary_switches() -> i64 {
    // SAFETY: getrusage writes a valid rusage struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_nivcsw
}

/// Waits for the one-shot operation of `io` tracked by `op` to complete: the bytes it
/// moved, or its error.
async fn completion(io: &ConnIo, op: &Cell<OneShot>) -> io::Result<usize> {
    let result = poll_fn(|cx| match op.get() {
        OneShot::Done(res) => {
            op.set(OneShot::Idle);
            Poll::Ready(res)
        }
        _ => {
            *io.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await;
    if result < 0 {
        Err(io::Error::from_raw_os_error(-result))
    } else {
        Ok(result as usize)
    }
}

impl ConnIo {
    fn wake(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// The connection is closed if what it awaits next has not happened by `deadline`.
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        self.deadline.set(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_preempted_often_stops_looking_until_it_has_its_cpu_again() {
        // A shard on a CPU of its own keeps looking.
        assert_eq!(look_off_after_tick(0, 2), (0, false));
        // Preempted often: looking stops, counted once.
        assert_eq!(look_off_after_tick(0, PREEMPTED_PER_TICK + 1), (LOOK_OFF_TICKS, true));
        // Still preempted: it stays off, not counted again.
        assert_eq!(look_off_after_tick(3, 500), (LOOK_OFF_TICKS, false));
        // Quiet ticks count down, and looking resumes after LOOK_OFF_TICKS of them.
        let mut off = LOOK_OFF_TICKS;
        for _ in 0..LOOK_OFF_TICKS {
            assert!(off > 0);
            off = look_off_after_tick(off, PREEMPTED_PER_TICK).0;
        }
        assert_eq!(off, 0);
    }

    /// The thread's involuntary switches as /proc reports them.
    fn from_proc() -> i64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("/proc/thread-self/status");
        let line = status.lines().find(|l| l.starts_with("nonvoluntary_ctxt_switches:")).expect("the field");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number")
    }

    #[test]
    fn the_count_is_the_threads_involuntary_switches() {
        // Yield often so the counts move (voluntary ones, which must not be counted, move
        // the most).
        for _ in 0..1000 {
            std::thread::yield_now();
        }
        let before = from_proc();
        let counted = involuntary_switches();
        let after = from_proc();
        assert!(before <= counted && counted <= after, "{before} <= {counted} <= {after}");
    }
}
