//! One load thread: owns its connections and drives them with io_uring.
//!
//! I/O model: io_uring used directly (chosen over epoll so that all of a loop turn's sends and
//! receive re-arms go to the kernel in one system call): one ring per thread (single issuer,
//! deferred task running when the kernel supports it), sockets registered as fixed files. Every
//! socket always has one `recv` in flight into its own receive buffer and at
//! most one `send` in flight from its own send buffer; requests made while a send is in flight
//! collect in a second buffer that is swapped in when the send completes. All buffers, slots and
//! queues are allocated when the thread starts and reused, so issuing a request and handling its
//! reply allocate nothing. Everything queued during one loop turn goes out in one
//! `io_uring_enter`, which also waits for the next completions or the next scheduled send.
//!
//! Requests: a *group* is one connection to each server (with one server, a group is one
//! socket). A logical operation occupies one of its group's slots; its keys are split by ketama
//! into one wire request per server involved, and it completes when all of those replies are in.
//! Closed loop keeps `--pipeline` operations in flight per group. Open loop sends operation `i`
//! at `start + i / rate` (per-thread rate) on any group with fewer than `--pipeline` in flight;
//! an operation that cannot go out on time waits in a backlog and keeps its scheduled time, so
//! latency from the scheduled time includes that wait (coordinated-omission correction), while
//! service time runs from the actual send.

use crate::affinity::{self, AffinityError};
use crate::config::{Config, StopAt};
use crate::ketama::Continuum;
use crate::stats::Recorder;
use crate::sync::{PhaseTag, Shared};
use crate::verify;
use crate::workload::{Generator, KeySpace, OpKind, WorkloadError, MAX_KEY_LEN};
use ringcache_client::{GetItem, Parsed, ProtocolError};
mod conn;
mod ring;
mod schedule;

use conn::{CasOutcome, Part, Room, Sent, Sock, Wire, RBUF_MAX, SET_FLAGS};
use ring::{is_transient, Ring, TAG_RECV, TAG_SEND};
use schedule::{unsent, OpenLoop, Phase, Source};
use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Housekeeping period: timeout scan, progress publication, stop-flag check.
const TICK_NS: u64 = 50_000_000;
/// Operations in flight per group while prefilling (at least `--pipeline`).
const PREFILL_DEPTH: usize = 16;
/// Initial receive buffer size per socket; grows to fit the largest reply unit seen.
const RBUF_INITIAL: usize = 16 * 1024;
/// With requests outstanding and no byte received for this many timeouts, the run fails.
const UNRESPONSIVE_TIMEOUTS: u64 = 10;

/// Why a worker could not go on.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot connect to {server}: {source}")]
    Connect { server: String, source: io::Error },
    #[error("server {server} went away: {reason}")]
    ServerGone { server: String, reason: String },
    #[error("bad reply from server {server}: {source}")]
    Protocol { server: String, source: ProtocolError },
    #[error("server {server} sent {bytes} bytes with no request outstanding")]
    Unsolicited { server: String, bytes: usize },
    #[error("server {server} sent a reply unit larger than {RBUF_MAX} bytes")]
    ReplyTooLarge { server: String },
    #[error("server {server} stopped answering: nothing received for {secs:.1} s")]
    Unresponsive { server: String, secs: f64 },
    #[error("prefill did not finish: {0} sets got no reply")]
    PrefillIncomplete(u64),
    #[error("io_uring: {0}")]
    Ring(io::Error),
    #[error(transparent)]
    Affinity(#[from] AffinityError),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
}

/// Outcome of one phase on one thread.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub rec: Recorder,
    /// From the start of measurement to the last measured reply (or the phase end).
    pub elapsed: Duration,
    /// Ended early by the stop flag.
    pub interrupted: bool,
}

/// What a worker thread hands back; partial results are kept when it fails.
#[derive(Debug, Default)]
pub struct ThreadResult {
    pub prefill: Option<PhaseResult>,
    pub measure: Option<PhaseResult>,
    pub error: Option<WorkerError>,
}

#[derive(Debug)]
struct Slot {
    busy: bool,
    kind: OpKind,
    /// (server, key index), grouped by server.
    keys: Vec<(u32, u64)>,
    intended: u64,
    sent: u64,
    parts_left: u32,
    measured: bool,
    timed_out: bool,
    error: bool,
    not_stored: bool,
    hits: u64,
    /// The key is a counter (`ctr:`): incrs, and the prefill's `set ... 0` of counters.
    counter: bool,
    /// The unique from a cas operation's `gets`.
    unique: Option<u64>,
    cas: CasOutcome,
}

struct Group {
    first_sock: usize,
    slots: Vec<Slot>,
    free: Vec<u32>,
    busy: usize,
}

/// Runs one worker thread to completion.
pub fn run_worker(index: usize, cfg: Arc<Config>, shared: Arc<Shared>) -> ThreadResult {
    let mut result = ThreadResult::default();
    let fail = |result: &mut ThreadResult, e: WorkerError| {
        shared.request_stop();
        result.error = Some(e);
    };
    if let Some(Some(cpu)) = cfg.cpus.get(index) {
        if let Err(e) = affinity::pin_current_thread(*cpu) {
            fail(&mut result, e.into());
            return result;
        }
    }
    // Open-loop sends wake on timers; the default 50 us timer slack would delay them.
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    let mut w = match Worker::new(index, Arc::clone(&cfg), Arc::clone(&shared)) {
        Ok(w) => w,
        Err(e) => {
            fail(&mut result, e);
            return result;
        }
    };
    if !shared.rendezvous(1) {
        return result;
    }
    if cfg.prefill {
        let threads = cfg.threads() as u128;
        let n = cfg.workload.keys.count() as u128;
        let begin = (n * index as u128 / threads) as u64;
        let end = (n * (index as u128 + 1) / threads) as u64;
        let mut phase = w.prefill_phase(begin, end);
        let r = w.run_phase(&mut phase);
        let outstanding = w.busy_slots();
        result.prefill = Some(w.phase_result(&phase));
        if let Err(e) = r {
            fail(&mut result, e);
            return result;
        }
        if !phase.interrupted && outstanding > 0 {
            fail(&mut result, WorkerError::PrefillIncomplete(outstanding as u64));
            return result;
        }
    }
    if !shared.rendezvous(2) {
        return result;
    }
    let mut phase = w.measure_phase();
    let r = w.run_phase(&mut phase);
    result.measure = Some(w.phase_result(&phase));
    if let Err(e) = r {
        fail(&mut result, e);
    }
    result
}

struct Worker {
    index: usize,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    ring: Ring,
    socks: Vec<Sock>,
    /// The sockets, by the same index as `socks` (and as their fixed files).
    streams: Vec<TcpStream>,
    groups: Vec<Group>,
    continuum: Continuum,
    keys: KeySpace,
    gen: Generator,
    filler: Vec<u8>,
    version: u32,
    epoch: Instant,
    dirty: Vec<usize>,
    reissue: Vec<usize>,
    interval: Recorder,
    last_rx: u64,
}

/// Counts a finished delete or incr as a hit or a miss (errors are counted elsewhere).
fn count_hit(slot: &Slot, hits: &mut u64, misses: &mut u64) {
    if !slot.error {
        if slot.hits > 0 {
            *hits += 1;
        } else {
            *misses += 1;
        }
    }
}

fn record_op(rec: &mut Recorder, slot: &Slot, now: u64) {
    let c = &mut rec.counters;
    c.ops += 1;
    match slot.kind {
        OpKind::Get => {
            let n = slot.keys.len() as u64;
            let hits = slot.hits.min(n);
            c.gets += 1;
            c.get_keys += n;
            c.hits += hits;
            c.misses += n - hits;
        }
        OpKind::Set => {
            c.sets += 1;
            if !slot.error {
                if slot.not_stored {
                    c.not_stored += 1;
                } else {
                    c.stored += 1;
                }
            }
        }
        OpKind::Delete => {
            c.deletes += 1;
            count_hit(slot, &mut c.delete_hits, &mut c.delete_misses);
        }
        OpKind::Incr => {
            c.incrs += 1;
            count_hit(slot, &mut c.incr_hits, &mut c.incr_misses);
        }
        OpKind::Cas => {
            c.cas += 1;
            if !slot.error {
                match slot.cas {
                    CasOutcome::Miss => c.cas_misses += 1,
                    CasOutcome::Stored => c.cas_stored += 1,
                    CasOutcome::Exists => c.cas_exists += 1,
                    CasOutcome::NotFound => c.cas_not_found += 1,
                }
            }
        }
    }
    if slot.error {
        c.errors += 1;
    }
    rec.record(now.saturating_sub(slot.intended), now.saturating_sub(slot.sent));
}

impl Worker {
    fn new(index: usize, cfg: Arc<Config>, shared: Arc<Shared>) -> Result<Self, WorkerError> {
        let nservers = cfg.servers.len();
        let ngroups = cfg.connections;
        let depth = cfg.pipeline.max(if cfg.prefill { PREFILL_DEPTH } else { 1 });
        let mut socks = Vec::with_capacity(ngroups * nservers);
        let mut streams = Vec::with_capacity(ngroups * nservers);
        let mut groups = Vec::with_capacity(ngroups);
        let connect_timeout = cfg.timeout.max(Duration::from_secs(5));
        let multiget = cfg.workload.multiget;
        let vmax = cfg.workload.value_size.max;
        let key_size = cfg.workload.keys.key_size();
        // Room for a pipeline's worth of requests without growing (a multiget's key costs up to
        // 16 bytes beyond itself: `mg <key> v f k q\r\n`).
        let out_cap = depth * (key_size + 48 + vmax.max((key_size + 16) * multiget)) + 64;
        for g in 0..ngroups {
            groups.push(Group {
                first_sock: socks.len(),
                slots: (0..depth)
                    .map(|_| Slot {
                        busy: false,
                        kind: OpKind::Get,
                        keys: Vec::with_capacity(multiget.max(1)),
                        intended: 0,
                        sent: 0,
                        parts_left: 0,
                        measured: false,
                        timed_out: false,
                        error: false,
                        not_stored: false,
                        hits: 0,
                        counter: false,
                        unique: None,
                        cas: CasOutcome::Miss,
                    })
                    .collect(),
                free: (0..depth as u32).rev().collect(),
                busy: 0,
            });
            for (s, server) in cfg.servers.iter().enumerate() {
                let stream = TcpStream::connect_timeout(&server.addr, connect_timeout)
                    .map_err(|source| WorkerError::Connect { server: server.name(), source })?;
                stream.set_nodelay(true).map_err(|source| WorkerError::Connect { server: server.name(), source })?;
                streams.push(stream);
                socks.push(Sock {
                    server: s,
                    group: g,
                    rbuf: vec![0; RBUF_INITIAL.max((vmax + 64).next_power_of_two())],
                    rstart: 0,
                    rend: 0,
                    recv_inflight: false,
                    obuf: Vec::with_capacity(out_cap),
                    osent: 0,
                    send_inflight: false,
                    next: Vec::with_capacity(out_cap),
                    dirty: false,
                    parts: VecDeque::with_capacity(depth * 2),
                });
            }
        }
        let entries = (2 * socks.len() + 16).next_power_of_two().clamp(64, 32768) as u32;
        // Registered descriptors: socket `si` is fixed file `si` (saves a lookup per request).
        let fds: Vec<i32> = streams.iter().map(|s| s.as_raw_fd()).collect();
        let ring = Ring::new(entries, &fds).map_err(WorkerError::Ring)?;
        let hosts: Vec<(&str, u16)> = cfg.servers.iter().map(|s| (s.host.as_str(), s.port)).collect();
        let continuum = Continuum::new(&hosts);
        let gen = Generator::new(cfg.workload, cfg.seed, index, cfg.threads())?;
        let mut filler = vec![b'x'; vmax.max(verify::HEADER_LEN)];
        verify::fill_value(b"ringcache-bench filler", 0, &mut filler);
        let mut w = Worker {
            index,
            keys: cfg.workload.keys,
            cfg,
            shared,
            ring,
            socks,
            streams,
            groups,
            continuum,
            gen,
            filler,
            version: (index as u32) << 24,
            epoch: Instant::now(),
            dirty: Vec::new(),
            reissue: Vec::new(),
            interval: Recorder::default(),
            last_rx: 0,
        };
        w.dirty.reserve(w.socks.len());
        w.reissue.reserve(w.socks.len() * depth);
        for si in 0..w.socks.len() {
            w.submit_recv(si)?;
        }
        Ok(w)
    }

    #[inline]
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn busy_slots(&self) -> usize {
        self.groups.iter().map(|g| g.busy).sum()
    }

    fn prefill_phase(&mut self, begin: u64, end: u64) -> Phase {
        let now = self.now();
        // Counters are set to 0 only when the mix increments them.
        let ctr_end = if self.cfg.workload.ratio.incr > 0 { end } else { begin };
        let depth = self.groups.first().map_or(1, |g| g.slots.len());
        let source = Source::Prefill { next: begin, end, ctr_next: begin, ctr_end };
        let mut phase = Phase::new(PhaseTag::Prefill, source, depth, now);
        phase.quota = Some((end - begin) + (ctr_end - begin));
        phase
    }

    fn measure_phase(&mut self) -> Phase {
        let now = self.now();
        let threads = self.cfg.threads() as u64;
        let measure_start = now + self.cfg.warmup.as_nanos() as u64;
        let (deadline, quota) = match self.cfg.stop {
            StopAt::Duration(d) => (Some(measure_start + d.as_nanos() as u64), None),
            StopAt::Requests(n) => {
                let extra = u64::from((self.index as u64) < n % threads);
                (None, Some(n / threads + extra))
            }
        };
        let open = self.cfg.rate.map(|rate| OpenLoop { start: now, interval_ns: 1e9 * threads as f64 / rate, next: 0 });
        let tag = if self.cfg.warmup.is_zero() { PhaseTag::Measure } else { PhaseTag::Warmup };
        let mut phase = Phase::new(tag, Source::Workload, self.cfg.pipeline, measure_start);
        phase.open = open;
        phase.deadline = deadline;
        phase.quota = quota;
        phase.drain_limit = Some(self.cfg.timeout.as_nanos() as u64);
        phase
    }

    fn phase_result(&self, p: &Phase) -> PhaseResult {
        let end = p.last_measured_done.unwrap_or_else(|| self.now());
        PhaseResult {
            rec: p.rec.clone(),
            elapsed: Duration::from_nanos(end.saturating_sub(p.measure_start)),
            interrupted: p.interrupted,
        }
    }

    // ---- io_uring plumbing -------------------------------------------------------------

    fn submit_recv(&mut self, si: usize) -> Result<(), WorkerError> {
        let s = &mut self.socks[si];
        debug_assert!(!s.recv_inflight && s.rend < s.rbuf.len());
        let len = (s.rbuf.len() - s.rend).min(u32::MAX as usize) as u32;
        s.recv_inflight = true;
        // SAFETY: rend < rbuf.len(), so the pointer stays inside the buffer, which is
        // neither moved, resized nor dropped until the completion is reaped (see `Drop`;
        // `on_recv` resizes only after it).
        unsafe { self.ring.recv(si, s.rbuf.as_mut_ptr().add(s.rend), len) }.map_err(WorkerError::Ring)
    }

    fn submit_send(&mut self, si: usize) -> Result<(), WorkerError> {
        let s = &mut self.socks[si];
        debug_assert!(!s.send_inflight && s.osent < s.obuf.len());
        let len = (s.obuf.len() - s.osent).min(u32::MAX as usize) as u32;
        s.send_inflight = true;
        // SAFETY: osent < obuf.len(); `obuf` is left alone while `send_inflight`.
        unsafe { self.ring.send(si, s.obuf.as_ptr().add(s.osent), len) }.map_err(WorkerError::Ring)
    }

    fn enter(&mut self, wait_ns: u64) -> Result<(), WorkerError> {
        self.ring.enter(wait_ns).map_err(WorkerError::Ring)
    }

    /// Records that the operation `ud` is no longer in flight, without acting on its result.
    fn mark_completed(&mut self, ud: u64) {
        if let Some(s) = self.socks.get_mut((ud >> 2) as usize) {
            match ud & 3 {
                TAG_RECV => s.recv_inflight = false,
                TAG_SEND => s.send_inflight = false,
                _ => {}
            }
        }
    }

    fn server_name(&self, si: usize) -> String {
        self.cfg.servers[self.socks[si].server].name()
    }

    fn gone(&self, si: usize, errno: i32) -> WorkerError {
        WorkerError::ServerGone {
            server: self.server_name(si),
            reason: io::Error::from_raw_os_error(errno).to_string(),
        }
    }

    // ---- the phase loop ----------------------------------------------------------------

    fn run_phase(&mut self, p: &mut Phase) -> Result<(), WorkerError> {
        let mut now = self.now();
        self.last_rx = now;
        self.shared.set_progress(self.index, p.tag, 0);
        if p.open.is_none() {
            for g in 0..self.groups.len() {
                for _ in 0..p.depth {
                    if !self.issue_op(p, g, now, now) {
                        break;
                    }
                }
            }
        }
        self.flush_sends()?;
        let mut next_tick = now + TICK_NS;
        loop {
            let wait = self.wait_ns(p, now, next_tick);
            self.enter(wait)?;
            now = self.now();
            let cqes = self.ring.completions();
            let mut r = Ok(());
            for &(ud, res) in &cqes {
                let si = (ud >> 2) as usize;
                if r.is_err() {
                    // Failing anyway: only keep the in-flight bookkeeping right for `Drop`.
                    self.mark_completed(ud);
                    continue;
                }
                r = match ud & 3 {
                    TAG_RECV => self.on_recv(p, si, res, now),
                    TAG_SEND => self.on_send(si, res),
                    _ => Ok(()),
                };
            }
            self.ring.give_back(cqes);
            r?;
            self.reissue_closed(p, now);
            self.issue_due(p, now);
            self.flush_sends()?;
            if now >= next_tick {
                next_tick = now + TICK_NS;
                self.housekeeping(p, now)?;
                if self.shared.stopped() {
                    p.interrupted = true;
                    return Ok(());
                }
            }
            if self.phase_over(p, now) {
                self.shared.publish(self.index, &mut self.interval, p.tag);
                self.shared.set_progress(self.index, p.tag, p.rec.counters.ops);
                return Ok(());
            }
        }
    }

    /// True while an operation scheduled for `intended` may still start at `now`.
    fn may_issue(&self, p: &Phase, intended: u64, now: u64) -> bool {
        if p.quota == Some(0) && intended >= p.measure_start {
            return false;
        }
        if let Some(d) = p.deadline {
            if intended >= d || now >= d {
                return false;
            }
        }
        match p.source {
            Source::Prefill { next, end, ctr_next, ctr_end } => next < end || ctr_next < ctr_end,
            Source::Workload => true,
        }
    }

    fn wait_ns(&self, p: &Phase, now: u64, next_tick: u64) -> u64 {
        let mut until = next_tick;
        if let Some(o) = &p.open {
            let due = o.due(o.next);
            if self.may_issue(p, due, now) && self.groups.iter().any(|g| g.busy < p.depth) {
                until = until.min(due);
            }
        }
        if let Some(d) = p.deadline {
            if now < d {
                until = until.min(d);
            }
        }
        if let (Some(ds), Some(lim)) = (p.drain_start, p.drain_limit) {
            until = until.min(ds + lim);
        }
        if p.tag == PhaseTag::Warmup && now < p.measure_start {
            until = until.min(p.measure_start);
        }
        until.saturating_sub(now)
    }

    /// Once nothing more may be issued, waits for outstanding replies (at most the drain
    /// limit), then closes the phase's books.
    fn phase_over(&mut self, p: &mut Phase, now: u64) -> bool {
        if p.tag == PhaseTag::Warmup && now >= p.measure_start {
            p.tag = PhaseTag::Measure;
        }
        let next_intended = match &p.open {
            Some(o) => o.due(o.next),
            None => now,
        };
        if self.may_issue(p, next_intended, now) {
            return false;
        }
        let ds = *p.drain_start.get_or_insert(now);
        let over = if self.busy_slots() == 0 {
            true
        } else if p.drain_limit.is_some_and(|lim| now >= ds + lim) {
            self.give_up_outstanding(p);
            true
        } else {
            false
        };
        if over {
            p.rec.counters.unsent += unsent(p);
        }
        over
    }

    /// At the end of the drain, requests still outstanding count as timeouts.
    fn give_up_outstanding(&mut self, p: &mut Phase) {
        for g in &mut self.groups {
            for s in &mut g.slots {
                if s.busy && !s.timed_out {
                    s.timed_out = true;
                    if s.measured {
                        p.rec.counters.timeouts += 1;
                    }
                }
            }
        }
    }

    fn housekeeping(&mut self, p: &mut Phase, now: u64) -> Result<(), WorkerError> {
        let timeout = self.cfg.timeout.as_nanos() as u64;
        let mut oldest: Option<(u64, usize)> = None;
        for g in &mut self.groups {
            for s in &mut g.slots {
                if !s.busy {
                    continue;
                }
                if !s.timed_out && now.saturating_sub(s.sent) > timeout {
                    s.timed_out = true;
                    self.interval.counters.timeouts += 1;
                    if s.measured {
                        p.rec.counters.timeouts += 1;
                    }
                }
                if oldest.is_none_or(|(t, _)| s.sent < t) {
                    oldest = Some((s.sent, g.first_sock));
                }
            }
        }
        let silent = now.saturating_sub(self.last_rx);
        if let Some((_, first_sock)) = oldest {
            if silent > timeout.saturating_mul(UNRESPONSIVE_TIMEOUTS) {
                // Name the server of the oldest outstanding part in that group.
                let si = (first_sock..first_sock + self.cfg.servers.len())
                    .find(|&si| !self.socks[si].parts.is_empty())
                    .unwrap_or(first_sock);
                return Err(WorkerError::Unresponsive { server: self.server_name(si), secs: silent as f64 / 1e9 });
            }
        }
        self.shared.publish(self.index, &mut self.interval, p.tag);
        self.shared.set_progress(self.index, p.tag, p.rec.counters.ops);
        Ok(())
    }

    // ---- issuing -----------------------------------------------------------------------

    fn reissue_closed(&mut self, p: &mut Phase, now: u64) {
        if p.open.is_some() {
            self.reissue.clear();
            return;
        }
        let mut list = std::mem::take(&mut self.reissue);
        for &g in &list {
            if self.groups[g].busy < p.depth && !self.issue_op(p, g, now, now) {
                break;
            }
        }
        list.clear();
        self.reissue = list;
    }

    fn issue_due(&mut self, p: &mut Phase, now: u64) {
        let n = self.groups.len();
        loop {
            let Some(o) = &p.open else { return };
            let due = o.due(o.next);
            if due > now || !self.may_issue(p, due, now) {
                return;
            }
            let Some(g) = (0..n).map(|k| (p.rr + k) % n).find(|&g| self.groups[g].busy < p.depth) else {
                return;
            };
            p.rr = (g + 1) % n;
            if !self.issue_op(p, g, due, now) {
                return;
            }
            if let Some(o) = &mut p.open {
                o.next += 1;
            }
        }
    }

    /// Starts one operation on group `g`; false if the phase has nothing left to issue.
    fn issue_op(&mut self, p: &mut Phase, g: usize, intended: u64, now: u64) -> bool {
        if !self.may_issue(p, intended, now) {
            return false;
        }
        let measured = intended >= p.measure_start;
        let key_size = self.keys.key_size();
        let nservers = self.cfg.servers.len();
        let verify_values = self.cfg.verify;
        let ttl = self.cfg.ttl;
        let group = &mut self.groups[g];
        let Some(slot_id) = group.free.pop() else {
            return false;
        };
        group.busy += 1;
        let slot = &mut group.slots[slot_id as usize];
        slot.keys.clear();
        let (kind, counter) = match &mut p.source {
            Source::Prefill { next, end, ctr_next, .. } => {
                if next < end {
                    slot.keys.push((0, *next));
                    *next += 1;
                    (OpKind::Set, false)
                } else {
                    slot.keys.push((0, *ctr_next));
                    *ctr_next += 1;
                    (OpKind::Set, true)
                }
            }
            Source::Workload => {
                let kind = self.gen.next_kind();
                let n = match kind {
                    OpKind::Get => self.gen.multiget(),
                    OpKind::Set | OpKind::Delete | OpKind::Incr | OpKind::Cas => 1,
                };
                for _ in 0..n {
                    slot.keys.push((0, self.gen.next_key()));
                }
                (kind, kind == OpKind::Incr)
            }
        };
        let keys = self.keys;
        let write_key = |idx: u64, out: &mut [u8]| {
            if counter {
                keys.write_counter_key(idx, out);
            } else {
                keys.write_key(idx, out);
            }
        };
        if measured {
            if let Some(q) = &mut p.quota {
                *q = q.saturating_sub(1);
            }
        }
        let mut kb = [0u8; MAX_KEY_LEN];
        let key = &mut kb[..key_size];
        if nservers > 1 {
            for e in slot.keys.iter_mut() {
                write_key(e.1, key);
                e.0 = self.continuum.server_for(key) as u32;
            }
            slot.keys.sort_unstable_by_key(|e| e.0);
        }
        slot.busy = true;
        slot.kind = kind;
        slot.intended = intended;
        slot.sent = now;
        slot.measured = measured;
        slot.timed_out = false;
        slot.error = false;
        slot.not_stored = false;
        slot.hits = 0;
        slot.counter = counter;
        slot.unique = None;
        slot.cas = CasOutcome::Miss;
        let mut parts = 0;
        let mut i = 0;
        while i < slot.keys.len() {
            let server = slot.keys[i].0;
            let mut j = i + 1;
            while j < slot.keys.len() && slot.keys[j].0 == server {
                j += 1;
            }
            let si = group.first_sock + server as usize;
            let sock = &mut self.socks[si];
            let value_size = if kind == OpKind::Set && !counter { self.gen.next_value_size() } else { 0 };
            let request = conn::Request {
                protocol: self.cfg.protocol,
                kind,
                counter,
                ttl,
                value_size,
                verify: verify_values,
                version: &mut self.version,
                filler: &self.filler,
            };
            let wire = conn::encode(&mut sock.next, request, &slot.keys[i..j], key_size, &write_key);
            sock.parts.push_back(Part { slot: slot_id, wire, kstart: i as u16, kend: j as u16 });
            if !sock.dirty {
                sock.dirty = true;
                self.dirty.push(si);
            }
            parts += 1;
            i = j;
        }
        slot.parts_left = parts;
        true
    }

    fn flush_sends(&mut self) -> Result<(), WorkerError> {
        let mut list = std::mem::take(&mut self.dirty);
        let mut r = Ok(());
        for &si in &list {
            let s = &mut self.socks[si];
            s.dirty = false;
            if r.is_ok() && s.start_send() {
                r = self.submit_send(si);
            }
        }
        list.clear();
        self.dirty = list;
        r
    }

    // ---- completions -------------------------------------------------------------------

    fn on_send(&mut self, si: usize, res: i32) -> Result<(), WorkerError> {
        let s = &mut self.socks[si];
        s.send_inflight = false;
        if res < 0 {
            if is_transient(-res) {
                return self.submit_send(si);
            }
            return Err(self.gone(si, -res));
        }
        match s.sent(res as usize) {
            Sent::More => self.submit_send(si),
            Sent::DoneWithMore if !s.dirty => {
                s.dirty = true;
                self.dirty.push(si);
                Ok(())
            }
            Sent::DoneWithMore | Sent::Done => Ok(()),
        }
    }

    fn on_recv(&mut self, p: &mut Phase, si: usize, res: i32, now: u64) -> Result<(), WorkerError> {
        self.socks[si].recv_inflight = false;
        if res < 0 {
            if is_transient(-res) {
                return self.submit_recv(si);
            }
            return Err(self.gone(si, -res));
        }
        if res == 0 {
            return Err(WorkerError::ServerGone {
                server: self.server_name(si),
                reason: "it closed the connection".into(),
            });
        }
        self.last_rx = now;
        self.socks[si].rend += res as usize;
        let need = self.parse_replies(p, si, now)?;
        if self.socks[si].make_room(need) == Room::TooLarge {
            return Err(WorkerError::ReplyTooLarge { server: self.server_name(si) });
        }
        self.submit_recv(si)
    }

    /// Consumes every complete reply unit in socket `si`'s buffer. Returns the total size of
    /// the incomplete unit at the front, when known.
    ///
    /// A cas operation's `gets` hit queues its `cas` on the same socket here (in meta, the
    /// `mg ... c` hit its `ms ... C<unique>`), so the operation stays busy (and its latency
    /// runs) until the write half's reply.
    fn parse_replies(&mut self, p: &mut Phase, si: usize, now: u64) -> Result<Option<usize>, WorkerError> {
        let verify_values = self.cfg.verify;
        let ttl = self.cfg.ttl;
        let Worker { socks, groups, keys, reissue, interval, cfg, gen, filler, version, dirty, .. } = self;
        let sock = &mut socks[si];
        let server_idx = sock.server;
        let server = || cfg.servers[server_idx].name();
        loop {
            if sock.rstart == sock.rend {
                return Ok(None);
            }
            let Some(part) = sock.parts.front().copied() else {
                return Err(WorkerError::Unsolicited { server: server(), bytes: sock.rend - sock.rstart });
            };
            let group = &mut groups[sock.group];
            let slot = &mut group.slots[part.slot as usize];
            let buf = &sock.rbuf[sock.rstart..sock.rend];
            let proto = |source| WorkerError::Protocol { server: server(), source };
            // Some(error) when the part's reply is complete.
            let (consumed, done) = match part.wire {
                w @ (Wire::Get | Wire::Gets | Wire::MetaGet | Wire::MetaMultiGet | Wire::MetaGets) => {
                    match conn::parse_get_item(w, buf).map_err(proto)? {
                        Parsed::Incomplete { need } => return Ok(need),
                        Parsed::Done { consumed, item } => {
                            let done = match item {
                                GetItem::Value { key, flags, data, cas } => {
                                    slot.hits += 1;
                                    // Only --verify and a cas's read half need to know the key was
                                    // asked for.
                                    let asked = (verify_values || w.is_cas_read())
                                        && keys.parse_key(key).is_some_and(|k| {
                                            slot.keys[part.kstart as usize..part.kend as usize].iter().any(|e| e.1 == k)
                                        });
                                    if verify_values
                                        && (!asked || flags != SET_FLAGS || verify::check_value(key, data).is_err())
                                    {
                                        p.rec.counters.verify_mismatches += 1;
                                        interval.counters.verify_mismatches += 1;
                                    }
                                    if w.is_cas_read() && asked {
                                        slot.unique = cas;
                                    }
                                    // A single mg's VA block is its whole reply.
                                    w.value_ends_reply().then_some(false)
                                }
                                GetItem::End => Some(false),
                                GetItem::Error(_) => Some(true),
                            };
                            let hit_unique = if w.is_cas_read() && done == Some(false) { slot.unique } else { None };
                            if let Some(unique) = hit_unique {
                                // The read half of a cas hit is over: queue the write half.
                                let mut kb = [0u8; MAX_KEY_LEN];
                                let key = &mut kb[..keys.key_size()];
                                keys.write_key(slot.keys[part.kstart as usize].1, key);
                                let request = conn::Request {
                                    protocol: cfg.protocol,
                                    kind: OpKind::Cas,
                                    counter: false,
                                    ttl,
                                    value_size: gen.next_value_size(),
                                    verify: verify_values,
                                    version,
                                    filler,
                                };
                                if sock.queue_cas_write(request, key, unique) {
                                    dirty.push(si);
                                }
                                sock.rstart += consumed;
                                continue;
                            }
                            (consumed, done)
                        }
                    }
                }
                Wire::Set | Wire::Cas | Wire::MetaSet | Wire::MetaCas => {
                    match conn::parse_store_reply(part.wire, buf).map_err(proto)? {
                        Parsed::Incomplete { need } => return Ok(need),
                        Parsed::Done { consumed, item } => {
                            let (cas, not_stored, error) = conn::store_reply(part.wire, item);
                            if let Some(cas) = cas {
                                slot.cas = cas;
                            }
                            slot.not_stored |= not_stored;
                            (consumed, Some(error))
                        }
                    }
                }
                Wire::Delete | Wire::MetaDelete => match conn::parse_delete_reply(part.wire, buf).map_err(proto)? {
                    Parsed::Incomplete { need } => return Ok(need),
                    Parsed::Done { consumed, item } => {
                        let (hit, error) = conn::counted_reply(item);
                        slot.hits = slot.hits.max(u64::from(hit));
                        (consumed, Some(error))
                    }
                },
                Wire::Incr | Wire::MetaIncr => match conn::parse_incr_reply(part.wire, buf).map_err(proto)? {
                    Parsed::Incomplete { need } => return Ok(need),
                    Parsed::Done { consumed, item } => {
                        let (hit, error) = conn::counted_reply(item);
                        slot.hits = slot.hits.max(u64::from(hit));
                        (consumed, Some(error))
                    }
                },
            };
            sock.rstart += consumed;
            let Some(error) = done else { continue };
            sock.parts.pop_front();
            slot.error |= error;
            slot.parts_left = slot.parts_left.saturating_sub(1);
            if slot.parts_left > 0 {
                continue;
            }
            if slot.measured {
                record_op(&mut p.rec, slot, now);
                p.last_measured_done = Some(now);
            }
            record_op(interval, slot, now);
            slot.busy = false;
            group.free.push(part.slot);
            group.busy -= 1;
            reissue.push(sock.group);
        }
    }
}

impl Drop for Worker {
    /// Makes sure the kernel is done with every buffer before they are freed: shuts the
    /// sockets down so in-flight operations complete, then reaps them. If that does not happen
    /// within two seconds the buffers are leaked rather than freed under the kernel's feet.
    fn drop(&mut self) {
        let inflight = |w: &Worker| w.socks.iter().any(|s| s.recv_inflight || s.send_inflight);
        for (s, stream) in self.socks.iter().zip(&self.streams) {
            if s.recv_inflight || s.send_inflight {
                // SAFETY: plain syscall on a descriptor this socket owns.
                unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while inflight(self) && Instant::now() < deadline {
            if self.enter(10_000_000).is_err() {
                break;
            }
            let cqes = self.ring.completions();
            for &(ud, _) in &cqes {
                self.mark_completed(ud);
            }
            self.ring.give_back(cqes);
        }
        if inflight(self) {
            std::mem::forget(std::mem::take(&mut self.socks));
        }
    }
}
