//! memcached's administration commands on a running server (`protocol::admin` parses
//! them): what each one does across the shards, and its answer. `lru_crawler crawl`
//! reclaims every shard's expired items now; `cache_memlimit` gives every shard its share
//! of the new limit; `shutdown` (with `-A`) stops the server as SIGINT or SIGUSR1 do; the
//! crawler's on/off state is the process's; `refresh_certs` reloads the TLS certificate. Commands that only tune memcached's slab
//! rebalancer or LRU threads are answered as memcached answers them.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use futures_channel::oneshot;
use ringcache_core::protocol::admin::{self, Admin, ShutdownMode};

use super::connection::ShardContext;
use super::mesh::MeshMsg;

/// The process-wide state administration commands change.
#[derive(Debug)]
pub struct AdminState {
    /// memcached's LRU crawler is on (`lru_crawler disable|enable`).
    crawler_running: AtomicBool,
    /// `verbosity N` (memcached keeps at most 2).
    verbosity: AtomicU8,
    /// `slabs automove 0|1|2` (memcached's default is 1).
    slab_automove: AtomicU8,
    /// `stats detail on`.
    detail: AtomicBool,
}

impl AdminState {
    /// State at start: `verbose` is the `-v` count.
    pub fn new(verbose: u8) -> Self {
        AdminState {
            crawler_running: AtomicBool::new(true),
            verbosity: AtomicU8::new(verbose.min(MAX_VERBOSITY)),
            slab_automove: AtomicU8::new(1),
            detail: AtomicBool::new(false),
        }
    }

    pub fn detail(&self) -> bool {
        self.detail.load(Ordering::Relaxed)
    }

    pub fn crawler_running(&self) -> bool {
        self.crawler_running.load(Ordering::Relaxed)
    }

    pub fn verbosity(&self) -> u8 {
        self.verbosity.load(Ordering::Relaxed)
    }

    pub fn slab_automove(&self) -> u8 {
        self.slab_automove.load(Ordering::Relaxed)
    }

    /// `verbosity N`.
    pub fn set_verbosity(&self, level: u32) {
        self.verbosity.store(level.min(u32::from(MAX_VERBOSITY)) as u8, Ordering::Relaxed);
    }
}

/// memcached's `MAX_VERBOSITY_LEVEL`.
const MAX_VERBOSITY: u8 = 2;

/// What one shard is asked to do.
#[derive(Debug, Clone, Copy)]
pub enum ShardAdmin {
    /// Reclaim every expired item now.
    Crawl,
    /// Whether this many bytes of item memory would be taken (changing nothing).
    MemoryLimitFits(usize),
    /// Use at most this many bytes of item memory.
    MemoryLimit(usize),
    /// Count by key prefix (`stats detail on`), or stop.
    Detail(bool),
    /// Record the events of these kinds for `watch` connections (a bit per kind).
    Watch(u8),
}

/// Carries `cmd` out on this shard.
pub fn on_shard(shard: &super::shard_cell::ShardCell, cmd: ShardAdmin, now: u32) -> bool {
    match cmd {
        ShardAdmin::Crawl => {
            shard.borrow_mut().crawl_all(now);
            true
        }
        ShardAdmin::MemoryLimitFits(bytes) => shard.borrow().store().memory_limit_fits(bytes),
        ShardAdmin::MemoryLimit(bytes) => shard.borrow_mut().set_memory_limit(bytes),
        ShardAdmin::Detail(on) => {
            shard.borrow_mut().set_detail(on);
            true
        }
        ShardAdmin::Watch(kinds) => {
            shard.borrow_mut().set_watch(kinds);
            true
        }
    }
}

/// Carries `cmd` out on every shard (this one directly, the others over the mesh); true
/// when every shard did.
pub async fn every_shard(ctx: &ShardContext, cmd: ShardAdmin, now: u32) -> Result<bool, ()> {
    let mut all = on_shard(&ctx.shard, cmd, now);
    if let Some(senders) = &ctx.senders {
        for shard in (0..ctx.nshards).filter(|&s| s != ctx.index) {
            let (tx, rx) = oneshot::channel();
            senders.send_to(shard, MeshMsg::Admin { cmd, now, reply: tx }).await.map_err(|_| ())?;
            all &= rx.await.map_err(|_| ())?;
        }
    }
    Ok(all)
}

/// What a connection does after an administration command.
pub enum AdminOutcome {
    /// Answer this (unless `noreply`).
    Answer(&'static [u8]),
    /// Answer this error line, `noreply` or not (`refresh_certs` failed).
    Error(Vec<u8>),
    /// Close the connection without an answer (`shutdown`: the server is stopping).
    Close,
    /// Stream every shard's items of these TTL classes (`lru_crawler metadump`).
    Metadump { classes: u64 },
    /// Become a log watcher of these kinds (`watch`).
    Watch { kinds: u8 },
}

/// Bytes of metadump lines one chunk carries.
pub const DUMP_CHUNK: usize = 64 << 10;

/// The next chunk of a metadump of shard `shard` from `from`, appended to `out`; where
/// it goes on (None: that shard is done).
pub async fn dump_chunk(
    ctx: &ShardContext,
    shard: usize,
    from: ringcache_core::store::DumpCursor,
    classes: u64,
    now: u32,
    out: Vec<u8>,
) -> Result<(Vec<u8>, Option<ringcache_core::store::DumpCursor>), ()> {
    if shard == ctx.index {
        let mut out = out;
        let next = ctx.shard.borrow().store().dump(from, classes, now, &mut out, DUMP_CHUNK);
        return Ok((out, next));
    }
    let senders = ctx.senders.as_ref().ok_or(())?;
    let (tx, rx) = oneshot::channel();
    let msg = MeshMsg::Dump { from, classes, now, budget: DUMP_CHUNK, out, reply: tx };
    senders.send_to(shard, msg).await.map_err(|_| ())?;
    rx.await.map_err(|_| ())
}

/// Runs `cmd` for a connection on shard `ctx` at relative time `now`.
pub async fn run(ctx: &ShardContext, cmd: Admin, now: u32) -> Result<AdminOutcome, ()> {
    let state = &ctx.shared.admin;
    let answer = match cmd {
        Admin::SlabsAutomove { level } => {
            if let Some(level) = level {
                state.slab_automove.store(level, Ordering::Relaxed);
            }
            admin::OK
        }
        Admin::Accepted => admin::OK,
        Admin::Watch { kinds } => return Ok(AdminOutcome::Watch { kinds }),
        // ringcache has no slab pages to move between classes.
        Admin::SlabsReassign => admin::NOSPARE,
        // memcached answers as its crawler thread stands once a `disable` has stopped it
        // (for a moment after `disable` it is still flagged on and refuses both).
        Admin::CrawlerEnable => {
            if state.crawler_running.swap(true, Ordering::Relaxed) {
                admin::CRAWLER_START_FAILED
            } else {
                admin::OK
            }
        }
        Admin::CrawlerDisable => {
            state.crawler_running.store(false, Ordering::Relaxed);
            admin::OK
        }
        Admin::CrawlerMetadump { classes } => match (state.crawler_running(), classes) {
            (false, _) => admin::CRAWLER_DISABLED,
            (true, None) => admin::BADCLASS,
            (true, Some(classes)) => return Ok(AdminOutcome::Metadump { classes }),
        },
        Admin::CrawlerCrawl => {
            if !state.crawler_running() {
                admin::CRAWLER_DISABLED
            } else {
                every_shard(ctx, ShardAdmin::Crawl, now).await?;
                admin::OK
            }
        }
        Admin::CacheMemlimit { megabytes } => {
            let share = (megabytes as usize).saturating_mul(1 << 20) / ctx.nshards;
            // Checked on every shard first, so that no shard changes when one cannot (a
            // shard may have less room to grow: see `Store::new`).
            if every_shard(ctx, ShardAdmin::MemoryLimitFits(share), now).await?
                && every_shard(ctx, ShardAdmin::MemoryLimit(share), now).await?
            {
                admin::OK
            } else {
                admin::MEMLIMIT_FAILED
            }
        }
        Admin::Detail(on) => {
            every_shard(ctx, ShardAdmin::Detail(on), now).await?;
            state.detail.store(on, Ordering::Relaxed);
            admin::OK
        }
        // Reads two files on this shard's thread: rare, and an operator's command.
        Admin::RefreshCerts => match &ctx.shared.tls {
            None => return Ok(AdminOutcome::Error(admin::TLS_NOT_ENABLED.to_vec())),
            Some(tls) => match tls.reload("refresh_certs") {
                Ok(()) => admin::OK,
                Err(e) => return Ok(AdminOutcome::Error(format!("{e}\r\n").into_bytes())),
            },
        },
        Admin::Shutdown(mode) => {
            if !ctx.shared.config.shutdown_command {
                admin::SHUTDOWN_DISABLED
            } else {
                let signal = match mode {
                    ShutdownMode::Invalid => return Ok(AdminOutcome::Answer(admin::INVALID_SHUTDOWN_MODE)),
                    ShutdownMode::Now => libc::SIGINT,
                    ShutdownMode::Graceful => libc::SIGUSR1,
                };
                // SAFETY: raise() sends a signal to this process; the signal thread handles it.
                unsafe { libc::raise(signal) };
                return Ok(AdminOutcome::Close);
            }
        }
    };
    Ok(AdminOutcome::Answer(answer))
}
