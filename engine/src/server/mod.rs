//! The running server: one glommio executor per shard, pinned to its CPU; each binds the
//! listen address itself (glommio sets SO_REUSEPORT, so the kernel spreads connections
//! across shards), serves the connections it accepts, and serves the other shards' ops
//! over a full channel mesh. SIGINT/SIGTERM stop accepting, let every connection finish
//! what it has received, and exit 0.

pub mod connection;
pub mod mesh;
mod stats_reply;

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use futures_channel::oneshot;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use glommio::sync::Gate;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::protocol::{reply, Limits};
use crate::shard::stats::Counters;
use crate::shard::Shard;
use crate::store::clock::Clock;
use crate::store::{Store, StoreConfig};
use crate::topology::ShardCpu;
use connection::ShardContext;
use mesh::{ConnectionRegistry, MeshMsg};

/// The `version` reply.
pub const VERSION_LINE: &str = concat!("VERSION ", env!("CARGO_PKG_VERSION"), "-ringcache\r\n");

/// Process-wide state, touched only when connections open or close and by `stats`.
pub struct Shared {
    pub config: Config,
    pub nshards: usize,
    pub clock: Clock,
    pub curr_connections: AtomicUsize,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    shards_done: AtomicUsize,
    /// Bumped by SIGUSR1: each shard saves its store's metadata when it sees a new value.
    save_epoch: AtomicU64,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("shard {shard}: {source}")]
    Shard { shard: usize, source: io::Error },
    #[error("cannot start executor for shard {shard}: {message}")]
    Executor { shard: usize, message: String },
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
}

enum Event {
    Signal,
    Save,
    ShardExited { shard: usize, result: io::Result<()> },
}

/// Lets the executors lock the io_uring memory they need (glommio wants at least
/// 512 KiB per executor); harmless if the limit cannot be raised.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads a valid rlimit struct.
    unsafe {
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited);
    }
}

/// Runs the server on the given CPU map until SIGINT/SIGTERM.
pub fn run(config: Config, plan: Vec<ShardCpu>) -> Result<(), ServerError> {
    raise_memlock_limit();
    let nshards = plan.len();
    let shared = Arc::new(Shared {
        config,
        nshards,
        clock: Clock::new(),
        curr_connections: AtomicUsize::new(0),
        total_connections: AtomicU64::new(0),
        rejected_connections: AtomicU64::new(0),
        shards_done: AtomicUsize::new(0),
        save_epoch: AtomicU64::new(0),
    });
    let mesh: MeshBuilder<MeshMsg, Full> = MeshBuilder::full(nshards, 1024);
    let (events, event_rx) = mpsc::channel::<Event>();
    let mut stops = Vec::with_capacity(nshards);
    let mut handles = Vec::with_capacity(nshards);
    for slot in &plan {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        stops.push(stop_tx);
        let (shared, mesh, events) = (shared.clone(), mesh.clone(), events.clone());
        let shard = slot.shard;
        let handle = LocalExecutorBuilder::new(Placement::Fixed(slot.cpu))
            .name(&format!("shard-{shard}"))
            .io_memory(1 << 20)
            .spawn(move || async move {
                let result = shard_main(shard, shared, mesh, stop_rx).await;
                let _ = events.send(Event::ShardExited { shard, result });
            })
            .map_err(|e| ServerError::Executor { shard, message: e.to_string() })?;
        handles.push(handle);
    }
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1]).map_err(ServerError::Signals)?;
    let signal_events = events.clone();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            let event = if signal == SIGUSR1 { Event::Save } else { Event::Signal };
            if signal_events.send(event).is_err() {
                return;
            }
        }
    });
    drop(events);

    let mut failure = None;
    loop {
        match event_rx.recv() {
            Ok(Event::Save) => {
                tracing::info!("SIGUSR1: saving store metadata");
                shared.save_epoch.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(Event::Signal) => tracing::info!("signal received: shutting down"),
            Ok(Event::ShardExited { shard, result }) => {
                if let Err(source) = result {
                    failure = Some(ServerError::Shard { shard, source });
                }
            }
            Err(_) => {}
        }
        break;
    }
    for stop in stops {
        let _ = stop.send(());
    }
    for handle in handles {
        let _ = handle.join();
    }
    // Report the first shard failure, if any shard failed.
    while let Ok(event) = event_rx.try_recv() {
        if let Event::ShardExited { shard, result: Err(source) } = event {
            failure.get_or_insert(ServerError::Shard { shard, source });
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn shard_main(
    index: usize,
    shared: Arc<Shared>,
    mesh: MeshBuilder<MeshMsg, Full>,
    stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    let config = &shared.config;
    let nshards = shared.nshards;
    let per_shard_memory = config.memory_limit_bytes / nshards;
    let shard = Rc::new(RefCell::new(Shard {
        store: Store::new(StoreConfig {
            memory_limit: per_shard_memory,
            evictions: config.evictions,
            cas_enabled: config.cas_enabled,
            shard: index,
            nshards,
            limits: Limits { max_item_size: config.max_item_size, cas_enabled: config.cas_enabled },
            expected_items: config.expected_items.map(|n| n.div_ceil(nshards)),
            memory_file: config.memory_file.as_ref().map(|p| {
                let mut name = p.as_os_str().to_owned();
                name.push(format!(".shard{index}"));
                std::path::PathBuf::from(name)
            }),
            huge_pages: config.huge_pages,
            clock_base_unix: shared.clock.base_unix(),
        })?,
        clock: shared.clock,
        counters: Counters::default(),
        flush_enabled: config.flush_enabled,
    }));
    let registry = Rc::new(RefCell::new(ConnectionRegistry::default()));

    // Bind before joining the mesh so that a bad address fails every shard quickly.
    let listener = TcpListener::bind((config.listen.as_str(), config.port))?;
    let senders = if nshards > 1 {
        let (senders, mut receivers) = mesh.join().await.map_err(|_| io::Error::other("cannot join the shard mesh"))?;
        for (_, receiver) in receivers.streams() {
            glommio::spawn_local(mesh::serve_peer(receiver, shard.clone(), registry.clone())).detach();
        }
        Some(Rc::new(senders))
    } else {
        None
    };
    let ctx = Rc::new(ShardContext {
        index,
        nshards,
        shard: shard.clone(),
        senders,
        registry: registry.clone(),
        shared: shared.clone(),
        limits: Limits { max_item_size: config.max_item_size, cas_enabled: config.cas_enabled },
    });

    // Background expiry: reclaim expired and flushed items a slice at a time.
    // SIGUSR1 asks every shard to save its store's metadata (warm restart).
    let sweeper = shard.clone();
    let saver = shared.clone();
    glommio::spawn_local(async move {
        let mut saved_epoch = 0;
        loop {
            glommio::timer::sleep(Duration::from_millis(250)).await;
            let mut s = sweeper.borrow_mut();
            let now = s.clock.now();
            s.store.sweep(now, 64);
            let epoch = saver.save_epoch.load(Ordering::Relaxed);
            if epoch != saved_epoch {
                saved_epoch = epoch;
                save_store(index, &s.store);
            }
        }
    })
    .detach();

    let gate = Rc::new(Gate::new());
    let listener = Rc::new(listener);
    let acceptor = glommio::spawn_local(accept_loop(listener.clone(), ctx.clone(), gate.clone()));
    let _ = stop.await;
    // Every connection, open or admitted from now on, finishes what it has received.
    registry.borrow_mut().shutdown_reads();
    // Let the accept loop admit connections whose accept has already completed, then stop
    // it, and admit those still waiting in the backlog: their requests were sent before
    // the signal. (glommio's accept tries a non-blocking accept first, so a pending
    // connection is ready on the first poll.)
    glommio::timer::sleep(Duration::from_millis(2)).await;
    drop(acceptor);
    while let Some(Ok(stream)) = futures_lite::future::poll_once(listener.accept()).await {
        admit(stream, &ctx, &gate);
    }
    drop(listener);
    let _ = gate.close().await;
    // Keep serving other shards' ops until every shard's connections are done.
    shared.shards_done.fetch_add(1, Ordering::SeqCst);
    while shared.shards_done.load(Ordering::SeqCst) < nshards {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    // No shard sends ops any more: the store is quiet, save it for a warm restart.
    save_store(index, &shard.borrow().store);
    Ok(())
}

fn save_store(shard: usize, store: &Store) {
    if let Err(e) = store.save() {
        tracing::error!(shard, "saving the store's metadata failed: {e}");
    }
}

async fn accept_loop(listener: Rc<TcpListener>, ctx: Rc<ShardContext>, gate: Rc<Gate>) {
    loop {
        match listener.accept().await {
            Ok(stream) => admit(stream, &ctx, &gate),
            Err(e) => {
                tracing::warn!(shard = ctx.index, "accept failed: {e}");
                // Out of file descriptors and the like: back off briefly instead of spinning.
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves an accepted connection, or refuses it as memcached does over the `-c` limit.
fn admit(stream: glommio::net::TcpStream, ctx: &Rc<ShardContext>, gate: &Gate) {
    let shared = &ctx.shared;
    let open = shared.curr_connections.fetch_add(1, Ordering::Relaxed) + 1;
    if open > shared.config.conn_limit {
        shared.curr_connections.fetch_sub(1, Ordering::Relaxed);
        shared.rejected_connections.fetch_add(1, Ordering::Relaxed);
        glommio::spawn_local(reject(stream)).detach();
        return;
    }
    shared.total_connections.fetch_add(1, Ordering::Relaxed);
    if gate.spawn(connection::serve(stream, ctx.clone())).map(|t| t.detach()).is_err() {
        shared.curr_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Over the connection limit: memcached's reply, then close.
async fn reject(mut stream: glommio::net::TcpStream) {
    use futures_lite::AsyncWriteExt;
    let _ = stream.write_all(reply::TOO_MANY_CONNECTIONS).await;
    let _ = stream.close().await;
}
