//! One client connection: read requests, execute each op on the shard that owns its key
//! (in place when that is this shard, batched per destination over the mesh otherwise),
//! and write the replies back in request order.
//!
//! Everything the connection makes the server hold is bounded:
//! - request bytes ([`input`]): a 16 KiB base buffer; one larger request (a value, a
//!   long multi-get line) grows it with bytes taken from the shard's share of
//!   `read_buf_mem_limit`, waiting (not reading) while other connections hold it;
//! - replies ([`replies`]): once the replies held (own shard's, other shards', and ops
//!   queued for other shards) reach `reply_buffer_limit`, the connection stops executing
//!   requests until they are written (back-pressure: it reads nothing meanwhile);
//! - time: a client that does not read its replies is closed after `write_timeout`, a
//!   request trickled in slower than `request_timeout` is closed, and with memcached's
//!   `idle_timeout` a connection without a request for that long is closed.
//!
//! Bytes arrive as the shard ring's receive buffers ([`super::uring`]): requests are
//! parsed in place there, and only a request split across buffers is copied into the
//! connection's own buffer (allocated the first time one is). The rest of a large
//! request (at least [`DIRECT_MIN`] bytes still to come) is received straight into that
//! buffer instead. Writes gather the replies'
//! slices (this shard's buffer and the other shards' reply buffers) into one send queued
//! on the shard's ring, so a remote reply is copied once, by the shard that made it, and
//! a round of requests costs one send and no system call of its own.

mod input;
mod replies;

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;
use glommio::sync::Semaphore;

use super::conn_figures::ConnectionFigures;
use super::mesh::{MeshMsg, OpsReply};
use super::registry::ConnectionRegistry;
use super::shard_cell::ShardCell;
use super::shard_report::ShardReport;
use super::stats_reply;
use super::uring::{Chunk, ConnIo, Next as Received, Reactor};
use super::Shared;
use crate::config::ConnectionLimits;
use input::{Input, Pending, Room, Spares};
use replies::{Replies, Scope, Trip};
use ringcache_core::protocol::{self, reply, Keys, Limits, Parse, ProtocolError, Request, KEY_MAX_LENGTH};
use ringcache_core::shard::{owner_of, Op};

pub use input::BASE as READ_BUFFER_BASE;

/// Most slices one `sendmsg` gathers (the kernel's `IOV_MAX`).
const MAX_SLICES: usize = 1024;

/// A request with at least this many bytes still to come is received straight into the
/// connection's buffer rather than through the shard's 4 KiB receive buffers.
const DIRECT_MIN: usize = 32 * 1024;

/// Values of at least this many bytes are sent from their segment rather than copied
/// into the reply buffer (see `replies`). Below it, a copy costs less than the extra
/// slice and the pin (measured: BENCHMARKS.md).
const IN_PLACE_MIN: usize = 4096;

/// The most request bytes one connection may need beyond its base buffer: the longest
/// multi-get line, or the largest value with a command line that fills the base buffer.
pub fn max_request_bytes(max_item_size: usize) -> usize {
    (protocol::MAX_MULTIGET_LINE + 1).max(READ_BUFFER_BASE + max_item_size + 2)
}

/// What every connection of one shard shares.
pub struct ShardContext {
    pub index: usize,
    pub nshards: usize,
    pub shard: Rc<ShardCell>,
    pub senders: Option<Rc<Senders<MeshMsg>>>,
    pub registry: Rc<RefCell<ConnectionRegistry>>,
    pub shared: Arc<Shared>,
    pub reactor: Rc<Reactor>,
    pub limits: Limits,
    conn: ConnectionLimits,
    max_request: usize,
    /// This shard's share of `read_buf_mem_limit`, in bytes.
    read_budget: Semaphore,
    /// Grown request buffers kept for the next large request (at most two).
    spares: RefCell<Spares>,
    /// What this shard's connections count for the metrics (also in the registry).
    figures: Rc<ConnectionFigures>,
    /// The shard's TLS client sockets (with `-Z`), ended with the rest on abort.
    pub tls_sockets: super::tls::TlsSockets,
}

impl ShardContext {
    pub fn new(
        index: usize,
        nshards: usize,
        shard: Rc<ShardCell>,
        senders: Option<Rc<Senders<MeshMsg>>>,
        registry: Rc<RefCell<ConnectionRegistry>>,
        shared: Arc<Shared>,
        reactor: Rc<Reactor>,
    ) -> Self {
        let config = &shared.config;
        let limits = Limits { max_item_size: config.max_item_size, cas_enabled: config.cas_enabled };
        let conn = config.connections;
        let share = conn.read_buf_mem_limit / nshards;
        let figures = registry.borrow().figures.clone();
        ShardContext {
            figures,
            index,
            nshards,
            shard,
            senders,
            registry,
            reactor,
            limits,
            conn,
            max_request: max_request_bytes(config.max_item_size),
            read_budget: Semaphore::new(share as u64),
            spares: RefCell::default(),
            tls_sockets: Default::default(),
            shared,
        }
    }

    /// Shutdown is past its grace period: connections waiting for request buffer
    /// memory stop waiting (and close).
    pub fn abort(&self) {
        self.read_budget.close();
        self.tls_sockets.abort_all();
    }
}

/// What the connection must do after a request.
enum Next<'r> {
    Continue,
    Close,
    Stats,
    /// One of memcached's administration commands (see `admin_commands`).
    Admin(ringcache_core::protocol::admin::Admin),
    /// `cluster ...`: the replica group's administration (see `replicated::admin`).
    Cluster,
    /// A get named a key over 250 bytes: memcached drops every reply it has not sent
    /// yet and answers `CLIENT_ERROR bad command line format`.
    BadGetKey,
    /// A get reached the reply limit: write what it has, then run these keys.
    MoreKeys {
        keys: Keys<'r>,
        cas: bool,
        touch: Option<i32>,
    },
}

/// The connection broke: the peer left, a bound was exceeded, or the server is
/// shutting down. It is closed.
struct Broken;

/// The state of one connection between reads.
struct Connection<'c> {
    ctx: &'c ShardContext,
    io: &'c ConnIo,
    replies: Replies,
    iov: Vec<libc::iovec>,
    trips: Vec<Trip>,
    waiting: Vec<(usize, usize, oneshot::Receiver<OpsReply>)>,
    /// Bytes of a too-large value still to be skipped.
    swallow: usize,
    /// Total size of the pending request, when its command line said.
    need: Option<usize>,
    /// Bytes of the shard's read budget this connection holds.
    granted: usize,
    /// When the last complete request was read (for `idle_timeout`).
    last_request: Instant,
    /// Since when a partial request has been waiting for the rest (for `request_timeout`).
    partial_since: Option<Instant>,
    /// When the bytes of the round being served arrived, and its requests so far (for
    /// the service-time histogram).
    round_start: Option<Instant>,
    round_requests: u64,
    /// Whether the client may send commands (always, without `-Y`).
    authenticated: bool,
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.ctx.read_budget.signal(self.granted as u64);
        // No send is in flight: the connection's task awaits each one to its end.
        self.release_pins();
    }
}

impl<'c> Connection<'c> {
    fn new(ctx: &'c ShardContext, io: &'c ConnIo) -> Self {
        Connection {
            ctx,
            io,
            replies: Replies::new(ctx.nshards),
            iov: Vec::new(),
            trips: Vec::new(),
            waiting: Vec::new(),
            swallow: 0,
            need: None,
            granted: 0,
            last_request: Instant::now(),
            partial_since: None,
            round_start: None,
            round_requests: 0,
            authenticated: ctx.shared.auth.is_none(),
        }
    }

    /// Until when the next read may wait: the idle or the partial-request deadline.
    fn read_deadline(&self) -> Option<Instant> {
        let limits = &self.ctx.conn;
        let idle = limits.idle_timeout.map(|t| self.last_request + t);
        let partial = limits.request_timeout.zip(self.partial_since).map(|(t, since)| since + t);
        match (idle, partial) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes `bytes` more of the shard's read budget, waiting while other connections
    /// hold it. The wait is the server's, not the client's: it does not count against
    /// the request's time.
    async fn acquire(&mut self, bytes: usize) -> Result<(), Broken> {
        self.ctx.read_budget.acquire(bytes as u64).await.map_err(|_| Broken)?;
        self.granted += bytes;
        if self.partial_since.is_some() {
            self.partial_since = Some(Instant::now());
        }
        Ok(())
    }

    fn release(&mut self, bytes: usize) {
        self.granted -= bytes;
        self.ctx.read_budget.signal(bytes as u64);
    }

    /// Runs `op` on its owner shard: here, or queued for the mesh. (A flush goes to
    /// every shard: see `request`.)
    fn op(&mut self, op: Op<'_>, noreply: bool, now: u32) {
        let owner = op.with_key(|key| owner_of(key, self.ctx.nshards)).unwrap_or(self.ctx.index);
        // A replicated shard's own ops go to its replica too, as a job.
        if owner == self.ctx.index && self.ctx.shard.replicated().is_none() {
            self.execute_here(&op, noreply, now);
        } else {
            self.replies.push_remote(owner, &op, noreply);
        }
    }

    /// Executes `op` on this shard, in order with the other replies. A large value is
    /// sent from where it lies (pinned), not copied.
    fn execute_here(&mut self, op: &Op<'_>, noreply: bool, now: u32) {
        let out = self.replies.local_mut();
        let start = out.len();
        let mut shard = self.ctx.shard.borrow_mut();
        if shard.watch_mut().mask() != 0 {
            shard.watch_mut().set_cfd(self.io.fd);
        }
        let pinned = match *op {
            Op::Get { key, cas, touch } => shard.get_in_place(key, cas, touch, now, out, IN_PLACE_MIN),
            _ => {
                shard.execute(op, noreply, now, out);
                None
            }
        };
        drop(shard);
        self.replies.commit_local(start);
        if let Some(value) = pinned {
            self.replies.push_pinned(value);
            self.replies.push_local(reply::VALUE_END);
        }
    }

    /// Lets go of the pins of the replies written so far (none of them is being sent).
    fn release_pins(&mut self) {
        let mut pins = self.replies.take_pins().peekable();
        if pins.peek().is_some() {
            let mut shard = self.ctx.shard.borrow_mut();
            for value in pins {
                shard.unpin(&value);
            }
        }
    }

    fn over_limit(&self) -> bool {
        self.replies.held() >= self.ctx.conn.reply_buffer_limit
    }

    /// `-Y`, before the client has logged in: answers what `pending` starts with, as
    /// memcached does (see `protocol::auth`), and returns the bytes it took; None when
    /// more are needed. Junk, or a login too large to hold, closes the connection (with
    /// nothing more sent, as memcached).
    fn log_in(&mut self, pending: &[u8]) -> Result<Option<usize>, Broken> {
        use protocol::auth::{self, Step};
        let figures = &self.ctx.figures;
        let (reply, consumed) = match auth::step(pending) {
            Step::Incomplete => return Ok(None),
            Step::Close => {
                ConnectionFigures::count(&figures.over_bound);
                return Err(Broken);
            }
            Step::Reply { reply, consumed } => (reply, consumed),
            Step::Credentials { user, pass, consumed } => {
                ConnectionFigures::count(&figures.auth_cmds);
                if self.ctx.shared.auth.as_ref().is_some_and(|a| a.check(user, pass)) {
                    self.authenticated = true;
                    (auth::STORED, consumed)
                } else {
                    ConnectionFigures::count(&figures.auth_errors);
                    (auth::FAILURE, consumed)
                }
            }
        };
        self.replies.push_local(reply);
        Ok(Some(consumed))
    }

    /// Handles one parsed request.
    fn request<'r>(&mut self, request: &Request<'r>, noreply: bool, now: u32) -> Next<'r> {
        match *request {
            Request::Get { keys, cas, touch } => {
                if keys.iter().any(|k| k.len() > KEY_MAX_LENGTH) {
                    return Next::BadGetKey;
                }
                if let Some(keys) = self.get(keys, cas, touch, now) {
                    return Next::MoreKeys { keys, cas, touch };
                }
            }
            Request::Op(op) => self.op(op, noreply, now),
            Request::FlushAll { delay } => {
                // Every shard flushes, in order with this connection's other requests;
                // only this shard answers.
                for shard in 0..self.ctx.nshards {
                    if shard == self.ctx.index && self.ctx.shard.replicated().is_none() {
                        self.execute_here(&Op::FlushAll { delay, reply: true }, noreply, now);
                    } else {
                        let reply = shard == self.ctx.index;
                        self.replies.push_remote(shard, &Op::FlushAll { delay, reply }, noreply);
                    }
                }
            }
            Request::Version => self.replies.push_local(super::VERSION_LINE.as_bytes()),
            Request::Verbosity { level } => {
                self.ctx.shared.admin.set_verbosity(level);
                if !noreply {
                    self.replies.push_local(reply::OK);
                }
            }
            Request::Quit => return Next::Close,
            Request::Stats { .. } => return Next::Stats,
            Request::Cluster { .. } => return Next::Cluster,
            Request::Error(e) => {
                if !noreply {
                    self.replies.push_local(reply::error(e));
                }
            }
            Request::MetaNoop => self.replies.push_local(reply::META_NOOP),
            Request::Answer(line) => {
                if !noreply {
                    self.replies.push_local(line);
                }
            }
            Request::Admin(cmd) => return Next::Admin(cmd),
        }
        Next::Continue
    }

    /// `watch`: from its `OK` on, the connection only streams log lines of `kinds`,
    /// until the client leaves; what it sends is read and ignored, as memcached does.
    /// With 20 watchers already, memcached's refusal, and the connection goes on
    /// (false); true once a watcher has left.
    async fn watch(&mut self, kinds: u8, now: u32) -> Result<bool, Broken> {
        let ctx = self.ctx;
        let watchers = &ctx.shared.watchers;
        let Some(watching) = watchers.add(kinds) else {
            self.replies.push_local(ringcache_core::protocol::admin::WATCHER_TOO_MANY);
            return Ok(false);
        };
        // Every shard records these kinds before the client hears OK.
        super::admin_commands::every_shard(ctx, super::admin_commands::ShardAdmin::Watch(watchers.mask()), now)
            .await
            .map_err(|()| Broken)?;
        self.replies.push_local(ringcache_core::protocol::admin::OK);
        self.drain(Scope::All).await?;
        let mut lines = Vec::new();
        let mut scratch = [0u8; 512];
        loop {
            watching.take(&mut lines);
            if !lines.is_empty() {
                let count = lines.iter().filter(|&&b| b == b'\n').count() as u64;
                self.replies.push_local(&lines);
                self.drain(Scope::All).await?;
                watchers.sent.fetch_add(count, Ordering::Relaxed);
                continue;
            }
            let tick = async {
                glommio::timer::sleep(super::watch::PUMP_INTERVAL).await;
                None
            };
            let input = async { Some(ctx.reactor.next_chunk(self.io).await) };
            match futures_lite::future::or(input, tick).await {
                None | Some(Received::Chunk(_)) => {}
                Some(Received::Ended) => return Ok(true),
                Some(Received::Starved) => {
                    // No receive buffer to spare: take what came into a scratch one.
                    let n = ctx.reactor.recv_into(self.io, &mut scratch, false).await.map_err(|_| Broken)?;
                    if n == 0 {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// `lru_crawler metadump`: every shard's items, a chunk at a time (each written out
    /// before the next is asked for), then `END`.
    async fn metadump(&mut self, classes: u64, now: u32) -> Result<(), Broken> {
        let ctx = self.ctx;
        let mut buf = Vec::new();
        for shard in 0..ctx.nshards {
            let mut from = Some(ringcache_core::store::DumpCursor::default());
            while let Some(cursor) = from {
                buf.clear();
                let (chunk, next) = super::admin_commands::dump_chunk(ctx, shard, cursor, classes, now, buf)
                    .await
                    .map_err(|()| Broken)?;
                self.replies.push_local(&chunk);
                self.drain(Scope::All).await?;
                (buf, from) = (chunk, next);
            }
        }
        self.replies.push_local(b"END\r\n");
        Ok(())
    }

    /// Runs the keys of a get, one op each, until the reply limit is reached: returns
    /// the keys left then (to run once the replies so far are written), or None when
    /// the get is done.
    fn get<'k>(&mut self, mut keys: Keys<'k>, cas: bool, touch: Option<i32>, now: u32) -> Option<Keys<'k>> {
        while let Some((key, rest)) = keys.split_first() {
            if self.over_limit() {
                return Some(keys);
            }
            self.op(Op::Get { key, cas, touch }, false, now);
            keys = rest;
        }
        self.replies.push_local(reply::END);
        self.replies.set_mark();
        None
    }

    /// Runs every op queued for other shards and writes the replies (all of them, or
    /// only those before the sent mark, dropping the rest), round trip by round trip
    /// within the reply limit.
    async fn drain(&mut self, scope: Scope) -> Result<(), Broken> {
        loop {
            if self.replies.has_unsent() {
                let trips = &mut self.trips;
                self.replies.take_trips(self.ctx.conn.reply_buffer_limit, |trip| trips.push(trip));
                if self.trips.is_empty() {
                    // Cannot happen (the first unanswered shard is always asked); a
                    // connection that could not progress is closed rather than spun.
                    debug_assert!(false, "queued ops but no round trip to make");
                    return Err(Broken);
                }
                let now = self.ctx.shared.clock.now();
                for Trip { shard, batch, from, budget, must_progress, out, ends } in self.trips.drain(..) {
                    if shard == self.ctx.index {
                        // Only a replicated shard sends its own ops round: to its replica.
                        let replicated = self.ctx.shard.replicated().ok_or(Broken)?;
                        self.waiting.push((shard, from, replicated.submit(batch, from, budget, must_progress)));
                        continue;
                    }
                    let senders = self.ctx.senders.as_ref().ok_or(Broken)?;
                    ConnectionFigures::count(&self.ctx.figures.cross_shard_trips);
                    let (reply, answer) = oneshot::channel();
                    let msg = MeshMsg::Ops { batch, from, budget, must_progress, now, out, ends, reply };
                    senders.send_to(shard, msg).await.map_err(|_| Broken)?;
                    self.waiting.push((shard, from, answer));
                }
                for (shard, from, answer) in self.waiting.drain(..) {
                    let reply = answer.await.map_err(|_| Broken)?;
                    self.replies.complete(shard, from, reply);
                }
            }
            self.write(scope).await?;
            if scope == Scope::BeforeMark {
                self.replies.drop_after_mark();
            }
            if self.replies.is_done() {
                self.replies.reset();
                self.release_pins();
                return Ok(());
            }
        }
    }

    /// Writes every reply (of `scope`) through the shard's ring, waiting for the socket
    /// to take them (bounded by the write timeout, which the ring's tick enforces).
    async fn write(&mut self, scope: Scope) -> Result<(), Broken> {
        loop {
            self.iov.clear();
            if self.replies.gather(&mut self.iov, scope, MAX_SLICES) == 0 {
                self.replies.advance(0);
                return Ok(());
            }
            let timeout = self.ctx.conn.write_timeout;
            self.io.set_deadline(timeout.map(|t| self.ctx.reactor.coarse_now() + t + super::uring::TICK));
            let sent = self.ctx.reactor.send(self.io, &self.iov).await;
            self.io.set_deadline(None);
            let sent = sent.map_err(|_| Broken)?;
            if sent == 0 {
                return Err(Broken);
            }
            self.ctx.shard.borrow_mut().count_bytes_written(sent as u64);
            self.replies.advance(sent);
        }
    }

    /// Handles every complete request in `input`. Returns true when the connection is
    /// to be closed once its replies are written.
    async fn process(&mut self, input: &mut impl Pending) -> Result<bool, Broken> {
        let ctx = self.ctx;
        let now = ctx.shared.clock.now();
        if self.round_start.is_none() {
            self.round_start = Some(Instant::now());
        }
        let mut handled = false;
        self.need = None;
        let mut close = false;
        // Requests served in a row (for `-R`).
        let mut in_a_row = 0usize;
        loop {
            if ctx.shared.config.reqs_per_event.is_some_and(|limit| in_a_row >= limit) && !input.pending().is_empty() {
                // memcached's -R: let the shard's other connections run before more of
                // this one's requests (the replies so far go out meanwhile).
                in_a_row = 0;
                self.ctx.shard.borrow_mut().count_conn_yield();
                self.drain(Scope::All).await?;
                futures_lite::future::yield_now().await;
            }
            if !self.authenticated {
                match self.log_in(input.pending())? {
                    Some(consumed) => {
                        handled = true;
                        input.consume(consumed);
                        continue;
                    }
                    None => break,
                }
            }
            if self.swallow > 0 {
                let skip = self.swallow.min(input.pending().len());
                input.consume(skip);
                self.swallow -= skip;
                if self.swallow > 0 {
                    break;
                }
            }
            let (request, noreply, consumed) = match protocol::parse(input.pending(), &ctx.limits) {
                Parse::Incomplete => break,
                Parse::NeedData { total } => {
                    self.need = Some(total);
                    break;
                }
                Parse::Close => {
                    // memcached closes without sending the replies it still holds.
                    self.drain(Scope::BeforeMark).await?;
                    return Ok(true);
                }
                Parse::Request { request, noreply, consumed, swallow } => {
                    self.swallow = swallow;
                    (request, noreply, consumed)
                }
            };
            handled = true;
            in_a_row += 1;
            self.round_requests += 1;
            let mut next = self.request(&request, noreply, now);
            while let Next::MoreKeys { keys, cas, touch } = next {
                self.drain(Scope::All).await?;
                next = match self.get(keys, cas, touch, now) {
                    Some(keys) => Next::MoreKeys { keys, cas, touch },
                    None => Next::Continue,
                };
            }
            match next {
                Next::Continue | Next::MoreKeys { .. } => {}
                Next::Close => close = true,
                Next::BadGetKey => {
                    self.drain(Scope::BeforeMark).await?;
                    self.replies.push_local(reply::error(ProtocolError::BadFormat));
                }
                Next::Cluster => {
                    self.drain(Scope::All).await?;
                    let args = match request {
                        Request::Cluster { args } => args,
                        _ => &[],
                    };
                    let answer = cluster_command(ctx, args).await?;
                    self.replies.push_local(&answer);
                }
                Next::Admin(cmd) => {
                    if matches!(cmd, ringcache_core::protocol::admin::Admin::CrawlerMetadump { .. })
                        && self.replies.held() > 0
                    {
                        // memcached streams a metadump to a connection with nothing else
                        // to answer.
                        self.replies.push_local(ringcache_core::protocol::admin::METADUMP_PIPELINED);
                        input.consume(consumed);
                        continue;
                    }
                    self.drain(Scope::All).await?;
                    match super::admin_commands::run(ctx, cmd, now).await.map_err(|()| Broken)? {
                        super::admin_commands::AdminOutcome::Metadump { classes } => {
                            self.metadump(classes, now).await?;
                        }
                        super::admin_commands::AdminOutcome::Answer(line) => {
                            if !noreply {
                                self.replies.push_local(line);
                            }
                        }
                        super::admin_commands::AdminOutcome::Error(line) => {
                            self.replies.push_local(&line);
                        }
                        super::admin_commands::AdminOutcome::Close => {
                            close = true;
                        }
                        super::admin_commands::AdminOutcome::Watch { kinds } => {
                            if noreply {
                                // Unreachable: `noreply` is no kind and refuses the watch.
                                input.consume(consumed);
                                continue;
                            }
                            if self.watch(kinds, now).await? {
                                return Ok(true);
                            }
                        }
                    }
                }
                Next::Stats => {
                    self.drain(Scope::All).await?;
                    let args = match request {
                        Request::Stats { args } => args,
                        _ => &[],
                    };
                    let reset = stats_reply::is_reset(args);
                    let reports = collect_reports(ctx, reset).await?;
                    let out = self.replies.local_mut();
                    let start = out.len();
                    stats_reply::write(out, args, &reports, &ctx.shared);
                    self.replies.commit_local(start);
                }
            }
            input.consume(consumed);
            if close {
                break;
            }
            if self.over_limit() {
                self.drain(Scope::All).await?;
            }
        }
        // Deadlines: idle counts from the last request, a partial request from when it
        // (or what is left of it after the last complete one) began.
        // (The clock is read only when a deadline needs it: not in the common case of
        // whole requests and no idle timeout.)
        let limits = &ctx.conn;
        if handled && limits.idle_timeout.is_some() {
            self.last_request = Instant::now();
        }
        let partial = !input.is_empty() || self.swallow > 0;
        self.partial_since = match (partial, self.partial_since) {
            (false, _) => None,
            (true, Some(since)) if !handled => Some(since),
            (true, _) if limits.request_timeout.is_some() => Some(Instant::now()),
            (true, _) => None,
        };
        Ok(close)
    }
}

/// Runs `cluster <args>` on every shard (this one directly, the others over the mesh):
/// one line per shard that acted, then `END`; `ERROR` on a node alone, as memcached.
async fn cluster_command(ctx: &ShardContext, args: &[u8]) -> Result<Vec<u8>, Broken> {
    use super::replicated::admin;
    let Some(cluster) = &ctx.shared.config.cluster else { return Ok(reply::ERROR.to_vec()) };
    let cmd = match admin::parse(args, &cluster.secret) {
        Ok(cmd) => cmd,
        Err(why) => return Ok(format!("CLIENT_ERROR {why}\r\n").into_bytes()),
    };
    let mut lines = vec![String::new(); ctx.nshards];
    lines[ctx.index] = admin::answer(&ctx.shard, &cmd).await;
    if let Some(senders) = &ctx.senders {
        for shard in (0..ctx.nshards).filter(|&s| s != ctx.index) {
            let (tx, rx) = oneshot::channel();
            senders.send_to(shard, MeshMsg::Cluster { cmd: cmd.clone(), reply: tx }).await.map_err(|_| Broken)?;
            lines[shard] = rx.await.map_err(|_| Broken)?;
        }
    }
    let mut out = lines.concat().into_bytes();
    out.extend_from_slice(reply::END);
    Ok(out)
}

/// Collects every shard's report (this one directly, the others over the mesh).
/// Every shard's report, for the admin listener's `/metrics` (None: the mesh is closing).
pub(crate) async fn every_report(ctx: &ShardContext) -> Option<Vec<ShardReport>> {
    collect_reports(ctx, false).await.ok()
}

async fn collect_reports(ctx: &ShardContext, reset: bool) -> Result<Vec<ShardReport>, Broken> {
    let mut reports = Vec::with_capacity(ctx.nshards);
    let now = ctx.shared.clock.now();
    reports.push(ShardReport::gather(&ctx.shard, &ctx.registry.borrow(), reset, now));
    if let Some(senders) = &ctx.senders {
        for shard in (0..ctx.nshards).filter(|&s| s != ctx.index) {
            let (tx, rx) = oneshot::channel();
            if senders.send_to(shard, MeshMsg::Stats { reset, now, reply: tx }).await.is_err() {
                return Err(Broken);
            }
            reports.push(rx.await.map_err(|_| Broken)?);
        }
    }
    Ok(reports)
}

/// The peer's address (for `stats conns` and `watch connevents`; None on a Unix socket).
fn peer_addr(fd: RawFd) -> Option<std::net::SocketAddr> {
    socket2::SockRef::from(&BorrowedSocket(fd)).peer_addr().ok().and_then(|a| a.as_socket())
}

/// A socket fd lent to socket2 for one call.
struct BorrowedSocket(RawFd);

impl std::os::fd::AsRawFd for BorrowedSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Serves one accepted connection until the client leaves, sends `quit`, breaks the
/// protocol or a bound, or the server shuts down; then closes its socket.
pub async fn serve(fd: RawFd, ctx: Rc<ShardContext>) {
    serve_for(fd, ctx, peer_addr(fd)).await;
}

/// [`serve`] for a stream that carries a client's bytes on its behalf (TLS: one end of
/// a socket pair); `peer` is the client's address, for `stats conns` and `watch`.
pub async fn serve_for(fd: RawFd, ctx: Rc<ShardContext>, peer: Option<std::net::SocketAddr>) {
    let id = ctx.registry.borrow_mut().add(fd, peer.map(|a| a.to_string()).unwrap_or_default());
    let _ = socket2::SockRef::from(&BorrowedSocket(fd)).set_nodelay(true);
    let io = ctx.reactor.register(fd);
    let watchers = &ctx.shared.watchers;
    if watchers.mask() & ringcache_core::shard::watch::CONNEVENTS != 0 {
        watchers.publish_conn(fd, peer, None, &mut Vec::new());
    }
    let ended = run(&io, &ctx).await;
    if watchers.mask() & ringcache_core::shard::watch::CONNEVENTS != 0 {
        watchers.publish_conn(fd, peer, Some(ended.is_ok()), &mut Vec::new());
    }
    ConnectionFigures::count(&ctx.figures.closed);
    ctx.reactor.close(io).await;
    ctx.registry.borrow_mut().remove(id);
    ctx.shared.curr_connections.fetch_sub(1, Ordering::Relaxed);
}

async fn run(io: &ConnIo, ctx: &ShardContext) -> Result<(), Broken> {
    let mut input = Input::default();
    let mut conn = Connection::new(ctx, io);
    loop {
        let close = if conn.wants_direct(&input) {
            conn.receive_direct(&mut input).await?
        } else {
            io.set_deadline(conn.read_deadline());
            let received = ctx.reactor.next_chunk(io).await;
            io.set_deadline(None);
            match received {
                Received::Chunk(chunk) => conn.feed_all(&mut input, chunk).await?,
                Received::Ended => return Ok(()),
                Received::Starved => conn.receive_own(&mut input).await?,
            }
        };
        // A large request is done: its grown buffer goes back to the shard before the
        // replies are written, for another connection's large request meanwhile.
        let released = input.shrink(&mut ctx.spares.borrow_mut());
        if released > 0 {
            conn.release(released);
        }
        // Like memcached, hold the replies while a too-large value is being swallowed.
        if conn.swallow == 0 || close {
            conn.drain(Scope::All).await?;
            conn.end_round();
        }
        if close {
            return Ok(());
        }
    }
}

impl Connection<'_> {
    /// The round's replies are written: its requests' service time is counted.
    fn end_round(&mut self) {
        if let Some(start) = self.round_start.take() {
            if self.round_requests > 0 {
                self.ctx.figures.service_time.record(start.elapsed(), self.round_requests);
                self.round_requests = 0;
            }
        }
    }

    /// Handles `chunk` and every buffer received after it already, before the replies
    /// are written: a pipelining client gets one send per round. True when the
    /// connection is to be closed.
    async fn feed_all(&mut self, input: &mut Input, mut chunk: Chunk<'_>) -> Result<bool, Broken> {
        loop {
            if self.feed(input, &chunk).await? {
                return Ok(true);
            }
            drop(chunk);
            match self.ctx.reactor.try_chunk(self.io) {
                Some(next) => chunk = next,
                None => return Ok(false),
            }
        }
    }

    /// Bytes of the pending request still to come, when it is large enough to be
    /// received straight into `input`.
    fn direct_missing(&self, input: &Input) -> Option<usize> {
        let missing = self.need?.checked_sub(input.pending().len())?;
        (self.swallow == 0 && missing >= DIRECT_MIN).then_some(missing)
    }

    fn wants_direct(&self, input: &Input) -> bool {
        self.direct_missing(input).is_some()
    }

    /// Makes room in `input` for the pending request before a read, growing it with
    /// budget taken from the shard's share (waiting for it if need be).
    async fn make_room(&mut self, input: &mut Input) -> Result<(), Broken> {
        let ctx = self.ctx;
        match input.room(self.need, ctx.max_request) {
            Room::Enough => {}
            Room::TooLarge => {
                ConnectionFigures::count(&ctx.figures.over_bound);
                return Err(Broken);
            }
            Room::GrowTo(to) => {
                self.acquire(to - (READ_BUFFER_BASE + input.grown_by())).await?;
                input.grow(to, &mut ctx.spares.borrow_mut());
            }
        }
        Ok(())
    }

    /// Receives the rest of a large request straight into `input` (see
    /// [`super::uring::Reactor::recv_into`]) and handles it. True when the connection is
    /// to be closed.
    async fn receive_direct(&mut self, input: &mut Input) -> Result<bool, Broken> {
        let ctx = self.ctx;
        ctx.reactor.pause_recv(self.io).await;
        // What the multishot receive got before it stopped comes first.
        if let Some(chunk) = ctx.reactor.try_chunk(self.io) {
            if self.feed_all(input, chunk).await? {
                return Ok(true);
            }
        }
        let Some(missing) = self.direct_missing(input) else { return Ok(false) };
        self.make_room(input).await?;
        self.receive_into(input, missing, true).await
    }

    /// Receives what arrives next straight into `input` (the shard had no free receive
    /// buffer for this connection) and handles it. True when the connection is to be
    /// closed.
    async fn receive_own(&mut self, input: &mut Input) -> Result<bool, Broken> {
        self.make_room(input).await?;
        let room = input.spare().len();
        self.receive_into(input, room, false).await
    }

    /// Receives up to `len` bytes (exactly `len` with `all`) into `input`'s spare room
    /// and handles what is complete. True when the connection is to be closed.
    async fn receive_into(&mut self, input: &mut Input, len: usize, all: bool) -> Result<bool, Broken> {
        let ctx = self.ctx;
        self.io.set_deadline(self.read_deadline());
        let received = ctx.reactor.recv_into(self.io, &mut input.spare()[..len], all).await;
        self.io.set_deadline(None);
        let received = received.map_err(|_| Broken)?;
        if received == 0 {
            // The client left (or the request's deadline passed).
            return Err(Broken);
        }
        ctx.shard.borrow_mut().count_bytes_read(received as u64);
        input.filled(received);
        self.process(input).await
    }

    /// Handles the bytes of one received buffer: requests whole in it are parsed where
    /// they lie; a request split across buffers is gathered in `input`. True when the
    /// connection is to be closed.
    async fn feed(&mut self, input: &mut Input, chunk: &Chunk<'_>) -> Result<bool, Broken> {
        let ctx = self.ctx;
        let mut data = chunk.bytes();
        ctx.shard.borrow_mut().count_bytes_read(data.len() as u64);
        while !data.is_empty() {
            if input.is_empty() {
                let mut view = input::Borrowed::new(data);
                if self.process(&mut view).await? {
                    return Ok(true);
                }
                data = view.rest();
                if data.is_empty() {
                    break;
                }
            }
            self.make_room(input).await?;
            let spare = input.spare();
            let n = data.len().min(spare.len());
            spare[..n].copy_from_slice(&data[..n]);
            input.filled(n);
            data = &data[n..];
            if self.need.is_some_and(|need| input.pending().len() < need) {
                // The rest of a value still to come: nothing to parse yet.
                continue;
            }
            if self.process(input).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
