//! One client connection: read bytes, parse requests, execute each op on the shard that
//! owns its key (in place when that is this shard, batched per destination over the mesh
//! otherwise), and write the replies back in request order, one write per round.
//!
//! A *round* is everything parsed from one read (bounded in size). Replies go straight
//! into the write buffer until the first remote op of the round; from then on local
//! replies are kept aside and the round's reply is assembled in order once the remote
//! shards have answered.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_channel::oneshot;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::channel_mesh::Senders;
use glommio::net::TcpStream;

use super::mesh::{ConnectionRegistry, MeshMsg, OpsReply, ShardReport};
use super::stats_reply;
use super::Shared;
use crate::protocol::{self, reply, Keys, Limits, Parse, Request, KEY_MAX_LENGTH};
use crate::shard::{owner_of, Op, OpBatch, Shard};

const READ_BUFFER_INITIAL: usize = 16 * 1024;
/// A round's replies are written out once they reach this size (huge multi-gets).
const ROUND_OUTPUT_LIMIT: usize = 1 << 20;

/// What every connection of one shard shares.
pub struct ShardContext {
    pub index: usize,
    pub nshards: usize,
    pub shard: Rc<RefCell<Shard>>,
    pub senders: Option<Rc<Senders<MeshMsg>>>,
    pub registry: Rc<RefCell<ConnectionRegistry>>,
    pub shared: Arc<Shared>,
    pub limits: Limits,
}

/// Where a reply of the current round is, once a remote op made order matter.
#[derive(Debug, Clone, Copy)]
enum Piece {
    Local { start: usize, end: usize },
    Remote { shard: usize, index: usize },
}

/// Per-destination batch and its reply buffers, reused from round to round.
#[derive(Default)]
struct RemoteSlot {
    batch: OpBatch,
    out: Vec<u8>,
    ends: Vec<u32>,
}

/// What the connection must do after a request.
enum Next {
    Continue,
    Close,
    Stats,
    /// A get named a key over 250 bytes: memcached drops every reply it has not sent
    /// yet and answers `CLIENT_ERROR bad command line format`.
    BadGetKey,
}

/// Where the replies memcached would already have sent end. memcached sends its queued
/// replies after every get-type command; replies queued after that point are dropped
/// by a get with an over-long key.
#[derive(Debug, Clone, Copy)]
enum SentMark {
    /// A position in the write buffer.
    Wbuf(usize),
    /// The end of the first `n` pieces of the round, resolved when the round is assembled.
    Pieces(usize),
}

/// The output side of a connection: write buffer plus the current round's state.
struct Output {
    wbuf: Vec<u8>,
    scratch: Vec<u8>,
    pieces: Vec<Piece>,
    remote: Vec<RemoteSlot>,
    waiting: Vec<(usize, oneshot::Receiver<OpsReply>)>,
    remote_pending: bool,
    /// Bytes of ops queued for other shards this round.
    remote_bytes: usize,
    sent_mark: SentMark,
}

/// The connection broke (peer gone, or the mesh is shutting down).
struct Broken;

impl Output {
    fn new(nshards: usize) -> Self {
        Output {
            wbuf: Vec::with_capacity(16 * 1024),
            scratch: Vec::new(),
            pieces: Vec::new(),
            remote: (0..nshards).map(|_| RemoteSlot::default()).collect(),
            waiting: Vec::new(),
            remote_pending: false,
            remote_bytes: 0,
            sent_mark: SentMark::Wbuf(0),
        }
    }

    fn size(&self) -> usize {
        self.wbuf.len() + self.scratch.len() + self.remote_bytes
    }

    /// Appends reply bytes produced on this shard, keeping request order.
    fn local(&mut self, bytes: &[u8]) {
        if self.remote_pending {
            let start = self.scratch.len();
            self.scratch.extend_from_slice(bytes);
            self.local_piece(start);
        } else {
            self.wbuf.extend_from_slice(bytes);
        }
    }

    fn local_piece(&mut self, start: usize) {
        let end = self.scratch.len();
        if start == end {
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

    /// Runs `op` on its owner shard: here, or queued for the mesh.
    fn op(&mut self, ctx: &ShardContext, op: Op<'_>, key: &[u8], noreply: bool, now: u32) {
        let owner = owner_of(key, ctx.nshards);
        if owner == ctx.index {
            self.execute_here(ctx, &op, noreply, now);
        } else {
            self.send_to(owner, &op, noreply);
        }
    }

    /// Executes `op` on this shard, in order with the round's other replies.
    fn execute_here(&mut self, ctx: &ShardContext, op: &Op<'_>, noreply: bool, now: u32) {
        if self.remote_pending {
            let start = self.scratch.len();
            ctx.shard.borrow_mut().execute(op, noreply, now, &mut self.scratch);
            self.local_piece(start);
        } else {
            ctx.shard.borrow_mut().execute(op, noreply, now, &mut self.wbuf);
        }
    }

    /// Queues `op` for shard `owner`; its reply takes its place at the end of the round.
    fn send_to(&mut self, owner: usize, op: &Op<'_>, noreply: bool) {
        let batch = &mut self.remote[owner].batch;
        let before = batch.bytes();
        let index = batch.push(op, noreply);
        self.remote_bytes += batch.bytes() - before;
        self.pieces.push(Piece::Remote { shard: owner, index });
        self.remote_pending = true;
    }

    /// Handles one parsed request.
    fn request(&mut self, ctx: &ShardContext, request: &Request<'_>, noreply: bool, now: u32) -> Next {
        match *request {
            Request::Get { keys, cas, touch } => {
                if keys.iter().any(|k| k.len() > KEY_MAX_LENGTH) {
                    return Next::BadGetKey;
                }
                self.get(ctx, keys, cas, touch, now);
            }
            Request::Store { mode, key, flags, exptime, data, cas } => {
                self.op(ctx, Op::Store { mode, key, flags, exptime, data, cas }, key, noreply, now)
            }
            Request::TooLarge { mode, key, .. } => self.op(ctx, Op::TooLarge { mode, key }, key, noreply, now),
            Request::Delete { key } => self.op(ctx, Op::Delete { key }, key, noreply, now),
            Request::Arith { key, incr, delta } => self.op(ctx, Op::Arith { key, incr, delta }, key, noreply, now),
            Request::Touch { key, exptime } => self.op(ctx, Op::Touch { key, exptime }, key, noreply, now),
            Request::FlushAll { delay } => {
                // Every shard flushes, in order with this connection's other requests;
                // only this shard answers.
                for shard in 0..ctx.nshards {
                    let is_local = shard == ctx.index;
                    let op = Op::FlushAll { delay, reply: is_local };
                    if is_local {
                        self.execute_here(ctx, &op, noreply, now);
                    } else {
                        self.send_to(shard, &op, noreply);
                    }
                }
            }
            Request::Version => self.local(super::VERSION_LINE.as_bytes()),
            Request::Verbosity => {
                if !noreply {
                    self.local(reply::OK);
                }
            }
            Request::Quit => return Next::Close,
            Request::Stats { .. } => return Next::Stats,
            Request::Error(e) => {
                if !noreply {
                    self.local(reply::error(e));
                }
            }
        }
        Next::Continue
    }

    fn get(&mut self, ctx: &ShardContext, keys: Keys<'_>, cas: bool, touch: Option<i32>, now: u32) {
        for key in keys.iter() {
            self.op(ctx, Op::Get { key, cas, touch }, key, false, now);
        }
        self.local(reply::END);
        self.sent_mark =
            if self.remote_pending { SentMark::Pieces(self.pieces.len()) } else { SentMark::Wbuf(self.wbuf.len()) };
    }

    /// memcached's answer to a get with an over-long key (see [`Next::BadGetKey`]).
    async fn bad_get_key(&mut self, ctx: &ShardContext) -> Result<(), Broken> {
        self.finish_round(ctx).await?;
        self.drop_unsent();
        self.local(reply::error(protocol::ProtocolError::BadFormat));
        Ok(())
    }

    /// Drops the replies memcached would not have sent yet (see [`SentMark`]). Only
    /// valid between rounds.
    fn drop_unsent(&mut self) {
        debug_assert!(!self.remote_pending);
        if let SentMark::Wbuf(sent) = self.sent_mark {
            self.wbuf.truncate(sent);
        }
    }

    /// Sends the round's remote batches, waits for them, and assembles the replies in
    /// request order into the write buffer.
    async fn finish_round(&mut self, ctx: &ShardContext) -> Result<(), Broken> {
        if !self.remote_pending {
            return Ok(());
        }
        let Some(senders) = &ctx.senders else {
            return Err(Broken);
        };
        for (shard, slot) in self.remote.iter_mut().enumerate() {
            if slot.batch.is_empty() {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let msg = MeshMsg::Ops {
                batch: std::mem::take(&mut slot.batch),
                out: std::mem::take(&mut slot.out),
                ends: std::mem::take(&mut slot.ends),
                reply: tx,
            };
            if senders.send_to(shard, msg).await.is_err() {
                return Err(Broken);
            }
            self.waiting.push((shard, rx));
        }
        for (shard, rx) in self.waiting.drain(..) {
            let reply = rx.await.map_err(|_| Broken)?;
            self.remote[shard] = RemoteSlot { batch: reply.batch, out: reply.out, ends: reply.ends };
        }
        for (i, piece) in self.pieces.drain(..).enumerate() {
            if let SentMark::Pieces(n) = self.sent_mark {
                if n == i {
                    self.sent_mark = SentMark::Wbuf(self.wbuf.len());
                }
            }
            match piece {
                Piece::Local { start, end } => self.wbuf.extend_from_slice(&self.scratch[start..end]),
                Piece::Remote { shard, index } => {
                    let slot = &self.remote[shard];
                    let from = if index == 0 { 0 } else { slot.ends[index - 1] as usize };
                    let to = slot.ends[index] as usize;
                    self.wbuf.extend_from_slice(&slot.out[from..to]);
                }
            }
        }
        if let SentMark::Pieces(_) = self.sent_mark {
            self.sent_mark = SentMark::Wbuf(self.wbuf.len());
        }
        self.scratch.clear();
        for slot in &mut self.remote {
            slot.batch.clear();
            slot.out.clear();
            slot.ends.clear();
        }
        self.remote_pending = false;
        self.remote_bytes = 0;
        Ok(())
    }

    async fn write(&mut self, stream: &mut TcpStream, ctx: &ShardContext) -> Result<(), Broken> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        stream.write_all(&self.wbuf).await.map_err(|_| Broken)?;
        ctx.shard.borrow_mut().counters.bytes_written += self.wbuf.len() as u64;
        self.wbuf.clear();
        self.sent_mark = SentMark::Wbuf(0);
        if self.wbuf.capacity() > 4 * ROUND_OUTPUT_LIMIT {
            self.wbuf.shrink_to(16 * 1024);
        }
        Ok(())
    }
}

/// Collects every shard's report (this one directly, the others over the mesh).
async fn collect_reports(ctx: &ShardContext, reset: bool) -> Result<Vec<ShardReport>, Broken> {
    let mut reports = Vec::with_capacity(ctx.nshards);
    reports.push(super::mesh::report(&mut ctx.shard.borrow_mut(), &ctx.registry.borrow(), reset));
    if let Some(senders) = &ctx.senders {
        for shard in (0..ctx.nshards).filter(|&s| s != ctx.index) {
            let (tx, rx) = oneshot::channel();
            if senders.send_to(shard, MeshMsg::Stats { reset, reply: tx }).await.is_err() {
                return Err(Broken);
            }
            reports.push(rx.await.map_err(|_| Broken)?);
        }
    }
    Ok(reports)
}

/// Serves one accepted connection until the client leaves, sends `quit`, breaks the
/// protocol, or the server shuts down.
pub async fn serve(mut stream: TcpStream, ctx: Rc<ShardContext>) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let id = ctx.registry.borrow_mut().add(stream.as_raw_fd(), peer);
    let _ = stream.set_nodelay(true);
    let _ = run(&mut stream, &ctx).await;
    ctx.registry.borrow_mut().remove(id);
    ctx.shared.curr_connections.fetch_sub(1, Ordering::Relaxed);
}

async fn run(stream: &mut TcpStream, ctx: &ShardContext) -> Result<(), Broken> {
    let mut rbuf = vec![0u8; READ_BUFFER_INITIAL];
    let (mut start, mut end) = (0usize, 0usize);
    let mut swallow = 0usize;
    let mut out = Output::new(ctx.nshards);
    let clock = ctx.shard.borrow().clock;
    loop {
        // Make room: compact, or grow when a single request does not fit.
        if end == rbuf.len() {
            if start > 0 {
                rbuf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            } else {
                let grown = (rbuf.len() * 2).min(ctx.limits.max_item_size + protocol::MAX_MULTIGET_LINE);
                if grown <= rbuf.len() {
                    return Err(Broken);
                }
                rbuf.resize(grown, 0);
            }
        }
        let n = stream.read(&mut rbuf[end..]).await.map_err(|_| Broken)?;
        if n == 0 {
            return Ok(());
        }
        ctx.shard.borrow_mut().counters.bytes_read += n as u64;
        end += n;
        let now = clock.now();
        let mut close = false;
        loop {
            if swallow > 0 {
                let skip = swallow.min(end - start);
                start += skip;
                swallow -= skip;
                if swallow > 0 {
                    break;
                }
            }
            match protocol::parse(&rbuf[start..end], &ctx.limits) {
                Parse::Incomplete => break,
                Parse::Close => {
                    // memcached closes without sending the replies it still holds.
                    out.finish_round(ctx).await?;
                    out.drop_unsent();
                    close = true;
                    break;
                }
                Parse::Request { request, noreply, consumed } => {
                    match out.request(ctx, &request, noreply, now) {
                        Next::Continue => {}
                        Next::Close => close = true,
                        Next::BadGetKey => out.bad_get_key(ctx).await?,
                        Next::Stats => {
                            out.finish_round(ctx).await?;
                            let args = match request {
                                Request::Stats { args } => args,
                                _ => &[],
                            };
                            let reset = stats_reply::is_reset(args);
                            let reports = collect_reports(ctx, reset).await?;
                            stats_reply::write(&mut out.wbuf, args, &reports, ctx);
                        }
                    }
                    if let Request::TooLarge { swallow: s, .. } = request {
                        swallow = s;
                    }
                    start += consumed;
                    if close {
                        break;
                    }
                    if out.size() >= ROUND_OUTPUT_LIMIT {
                        out.finish_round(ctx).await?;
                        out.write(stream, ctx).await?;
                    }
                }
            }
        }
        out.finish_round(ctx).await?;
        // Like memcached, hold the replies while a too-large value is being swallowed.
        if swallow == 0 || close {
            out.write(stream, ctx).await?;
        }
        if close {
            return Ok(());
        }
        if start == end {
            start = 0;
            end = 0;
            if rbuf.len() > 4 * READ_BUFFER_INITIAL {
                rbuf.truncate(READ_BUFFER_INITIAL);
                rbuf.shrink_to_fit();
            }
        }
    }
}
