//! The running server: one glommio executor per shard, pinned to its CPU, each serving
//! the connections its listening socket accepts (one SO_REUSEPORT socket per shard, all
//! bound up front by [`listen`]) and the other shards' ops over a full channel mesh.
//! Client sockets are served on each shard's own io_uring ([`uring`]); with `-Z`, each
//! through a TLS proxy on the same shard ([`tls`]).
//!
//! Start-up is two-phase: every shard builds its store first and reports; only when all
//! are ready do they join the mesh and accept. A shard that fails (or panics) makes the
//! whole process stop and exit non-zero instead of leaving the others waiting.
//!
//! Stopping (SIGINT, SIGTERM, or SIGUSR1 as in memcached): stop accepting, let every
//! connection finish what it has received for up to the grace period, then end the rest;
//! a second signal ends them at once. Each shard saves its store (with `-e`) once no
//! shard can send it ops any more. SIGHUP rereads the `-Y` password file and reloads
//! the TLS certificate (`-Z`).

pub mod admin_commands;
pub mod auth;
pub mod conn_figures;
pub mod connection;
pub mod listen;
pub mod mesh;
mod metrics;
pub mod registry;
pub mod replicated;
pub mod shard_cell;
mod shard_report;
mod stats_reply;
pub mod tls;
pub mod uring;
pub mod watch;

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::sync::Gate;
use glommio::{LocalExecutorBuilder, Placement};

use crate::clock::Clock;
use crate::config::Config;
use crate::topology::ShardCpu;
use connection::ShardContext;
use mesh::MeshMsg;
use registry::ConnectionRegistry;
use ringcache_core::protocol::{reply, Limits};
use ringcache_core::shard::Shard;
use ringcache_core::store::{CasSource, Store, StoreConfig};
use shard_cell::ShardCell;

/// The `version` reply.
pub const VERSION_LINE: &str = concat!("VERSION ", env!("CARGO_PKG_VERSION"), "-ringcache\r\n");

/// After the last chance to stop cleanly (the grace period, or a second signal), how
/// long the process waits for its shards before exiting without them.
const HARD_STOP_AFTER: Duration = Duration::from_secs(10);

/// Process-wide state, touched only when connections open or close and by `stats`.
pub struct Shared {
    pub config: Config,
    pub nshards: usize,
    pub clock: Clock,
    pub curr_connections: AtomicUsize,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    /// What memcached's administration commands changed.
    pub admin: admin_commands::AdminState,
    /// `-Y`: who may log in (None: connections need not).
    pub auth: Option<auth::Auth>,
    /// `watch` connections and their lines.
    pub watchers: watch::Watchers,
    /// `-Z`: the client port's TLS certificate and its state (None: plain).
    pub tls: Option<tls::Tls>,
    /// The admin listener's socket (`--admin`), until shard 0 takes it (-1: none).
    admin_listener: std::sync::atomic::AtomicI32,
    /// Shards whose connections are all closed (or which have exited): once every shard
    /// is counted, no shard sends another one ops, and the stores can be saved.
    shards_done: AtomicUsize,
}

/// Why the server could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Listen(#[from] listen::ListenError),
    #[error(
        "-c {conn_limit} needs {need} file descriptors but this process may open only {limit} \
         (raise it with `ulimit -n`, or lower -c)"
    )]
    FdLimit { conn_limit: usize, need: u64, limit: u64 },
    #[error("shard {shard} failed: {message}")]
    Shard { shard: usize, message: String },
    #[error("cannot start executor for shard {shard}: {message}")]
    Executor { shard: usize, message: String },
    #[error("--admin {addr}: cannot listen there: {source}")]
    Admin { addr: std::net::SocketAddr, source: io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("shards {0:?} did not stop in time; exiting without them")]
    Hung(Vec<usize>),
}

impl ServerError {
    /// The process exit status: memcached's `EX_OSERR` (71) when it cannot listen or
    /// open enough files, 1 for everything else.
    pub fn exit_status(&self) -> u8 {
        match self {
            ServerError::Listen(_) => listen::ListenError::EXIT_STATUS,
            ServerError::FdLimit { .. } | ServerError::Admin { .. } => 71,
            _ => 1,
        }
    }
}

/// What the shards and the signal thread tell the main thread.
enum Event {
    /// The shard built its store and waits for the go.
    Ready,
    /// A stop signal (SIGINT, SIGTERM, SIGUSR1).
    Stop(&'static str),
    /// The shard's thread ended: Ok, or why not.
    Exited { shard: usize, result: Result<(), String> },
}

/// What the main thread tells one shard.
struct ShardControl {
    /// true: serve; false: start-up was abandoned, stop at once.
    start: oneshot::Receiver<bool>,
    /// Stop accepting; connections get the grace period.
    stop: oneshot::Receiver<()>,
    /// End every connection now.
    now: oneshot::Receiver<()>,
}

/// The main thread's end of one shard's [`ShardControl`].
struct ShardHandle {
    start: Option<oneshot::Sender<bool>>,
    stop: Option<oneshot::Sender<()>>,
    now: Option<oneshot::Sender<()>>,
    exited: bool,
}

impl ShardHandle {
    fn send_start(&mut self, go: bool) {
        if let Some(tx) = self.start.take() {
            let _ = tx.send(go);
        }
    }
    fn send_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
    fn send_now(&mut self) {
        if let Some(tx) = self.now.take() {
            let _ = tx.send(());
        }
    }
}

/// Reports a shard's end to the main thread however it ends, a panic included, and
/// counts it as done so that the other shards do not wait for it.
struct ExitReport {
    shard: usize,
    events: mpsc::Sender<Event>,
    shared: Arc<Shared>,
    counted_done: Cell<bool>,
    result: RefCell<Option<Result<(), String>>>,
}

impl ExitReport {
    fn count_done(&self) {
        if !self.counted_done.replace(true) {
            self.shared.shards_done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for ExitReport {
    fn drop(&mut self) {
        self.count_done();
        let result = self.result.borrow_mut().take().unwrap_or_else(|| Err("panicked".to_string()));
        let _ = self.events.send(Event::Exited { shard: self.shard, result });
    }
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

/// Makes sure `-c` connections (plus the server's own descriptors) can be open at
/// once, raising the file-descriptor limit as memcached does, or refuses. A TLS
/// connection holds three: its socket and a socket pair.
fn ensure_fd_limit(conn_limit: usize, tls: bool, nshards: usize) -> Result<(), ServerError> {
    // Listeners, io_uring rings and eventfds, memory files, the mesh, logging.
    let per_connection = if tls { 3 } else { 1 };
    let need = (conn_limit.saturating_mul(per_connection) + 64 + 16 * nshards) as u64;
    let mut current = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write a valid rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } != 0 {
        return Ok(());
    }
    if current.rlim_cur >= need {
        return Ok(());
    }
    let raised = libc::rlimit { rlim_cur: need, rlim_max: current.rlim_max.max(need) };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(());
    }
    if current.rlim_max >= need {
        let within = libc::rlimit { rlim_cur: need, rlim_max: current.rlim_max };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &within) } == 0 {
            return Ok(());
        }
    }
    Err(ServerError::FdLimit { conn_limit, need, limit: current.rlim_max })
}

/// Runs the server on the given CPU map until it is told to stop; `tls` is the loaded
/// certificate when the config asks for TLS (`tls::Tls::open`).
pub fn run(config: Config, plan: Vec<ShardCpu>, tls: Option<tls::Tls>) -> Result<(), ServerError> {
    raise_memlock_limit();
    let nshards = plan.len();
    ensure_fd_limit(config.conn_limit, tls.is_some(), nshards)?;
    let (fds, _guard) = match &config.unix_socket {
        Some(path) => {
            let fds = listen::bind_unix(path, nshards, config.backlog, config.unix_mask)?;
            tracing::info!("listening on unix:{} with {} shards", path.display(), nshards);
            (fds, None)
        }
        None => {
            let addr = listen::resolve(&config.listen, config.port)?;
            let listeners = listen::bind(addr, nshards, config.backlog)?;
            tracing::info!("listening on {} with {} shards", listeners.addr, nshards);
            listeners.into_fds()
        }
    };

    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1, SIGHUP]).map_err(ServerError::Signals)?;
    let signals_handle = signals.handle();
    let admin = admin_commands::AdminState::new(config.verbose);
    let admin_listener = match config.admin {
        None => -1,
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr).map_err(|source| ServerError::Admin { addr, source })?;
            listener.set_nonblocking(true).map_err(|source| ServerError::Admin { addr, source })?;
            tracing::info!("metrics at http://{}/metrics", listener.local_addr().map_or(addr, |a| a));
            std::os::fd::IntoRawFd::into_raw_fd(listener)
        }
    };
    let auth = config.auth.clone().map(|(path, users)| auth::Auth::new(path, users));
    let shared = Arc::new(Shared {
        auth,
        watchers: watch::Watchers::default(),
        config,
        nshards,
        clock: Clock::new(),
        curr_connections: AtomicUsize::new(0),
        total_connections: AtomicU64::new(0),
        rejected_connections: AtomicU64::new(0),
        admin,
        tls,
        admin_listener: std::sync::atomic::AtomicI32::new(admin_listener),
        shards_done: AtomicUsize::new(0),
    });
    let mesh: MeshBuilder<MeshMsg, Full> = MeshBuilder::full(nshards, 1024);
    let (events, event_rx) = mpsc::channel::<Event>();
    let signal_events = events.clone();
    let signal_shared = shared.clone();
    let signal_thread = std::thread::spawn(move || {
        for signal in signals.forever() {
            let name = match signal {
                SIGHUP => {
                    if let Some(auth) = &signal_shared.auth {
                        auth.reload();
                    }
                    if let Some(tls) = &signal_shared.tls {
                        // A failure is logged and keeps the certificate in use.
                        let _ = tls.reload("SIGHUP");
                    }
                    if signal_shared.auth.is_none() && signal_shared.tls.is_none() {
                        tracing::info!("SIGHUP: nothing to reload");
                    }
                    continue;
                }
                SIGINT => "SIGINT",
                SIGUSR1 => "SIGUSR1",
                _ => "SIGTERM",
            };
            if signal_events.send(Event::Stop(name)).is_err() {
                return;
            }
        }
    });

    let mut shards: Vec<ShardHandle> = Vec::with_capacity(nshards);
    let mut threads = Vec::with_capacity(nshards);
    let mut failure: Option<ServerError> = None;
    for (slot, fd) in plan.iter().zip(fds) {
        let (start_tx, start) = oneshot::channel();
        let (stop_tx, stop) = oneshot::channel();
        let (now_tx, now) = oneshot::channel();
        let control = ShardControl { start, stop, now };
        let (shared, mesh, events) = (shared.clone(), mesh.clone(), events.clone());
        let shard = slot.shard;
        let spawned = LocalExecutorBuilder::new(Placement::Fixed(slot.cpu))
            .name(&format!("shard-{shard}"))
            .io_memory(1 << 20)
            .spawn(move || async move {
                let report = ExitReport {
                    shard,
                    events: events.clone(),
                    shared: shared.clone(),
                    counted_done: Cell::new(false),
                    result: RefCell::new(None),
                };
                let result = shard_main(shard, shared, mesh, fd, control, &events, &report).await;
                *report.result.borrow_mut() = Some(result.map_err(|e| e.to_string()));
            });
        match spawned {
            Ok(handle) => {
                threads.push(handle);
                shards.push(ShardHandle {
                    start: Some(start_tx),
                    stop: Some(stop_tx),
                    now: Some(now_tx),
                    exited: false,
                });
            }
            Err(e) => {
                // SAFETY: the fd was not handed to a shard; close it here.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                failure = Some(ServerError::Executor { shard, message: e.to_string() });
                break;
            }
        }
    }
    drop(events);

    let mut ready = 0;
    let mut started = false;
    let mut stopping = false;
    let mut now_sent = false;
    let mut deadline: Option<Instant> = None;
    let grace = shared.config.shutdown_grace;
    if failure.is_some() {
        for s in &mut shards {
            s.send_start(false);
        }
    }
    while shards.iter().any(|s| !s.exited) {
        let event = match deadline {
            Some(d) => match event_rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(e) => Some(e),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match event_rx.recv() {
                Ok(e) => Some(e),
                Err(_) => break,
            },
        };
        match event {
            Some(Event::Ready) => {
                ready += 1;
                if ready == shards.len() && failure.is_none() && !started && !stopping {
                    started = true;
                    for s in &mut shards {
                        s.send_start(true);
                    }
                }
            }
            Some(Event::Exited { shard, result }) => {
                if let Some(s) = shards.get_mut(shard) {
                    s.exited = true;
                }
                if let Err(message) = result {
                    tracing::error!(shard, "shard failed: {message}");
                    failure.get_or_insert(ServerError::Shard { shard, message });
                }
                if !started {
                    for s in &mut shards {
                        s.send_start(false);
                    }
                } else if !stopping {
                    stopping = true;
                    deadline = Some(Instant::now() + grace + HARD_STOP_AFTER);
                    for s in &mut shards {
                        s.send_stop();
                    }
                }
            }
            Some(Event::Stop(signal)) => {
                if !started {
                    tracing::info!("{signal}: abandoning start-up");
                    stopping = true;
                    for s in &mut shards {
                        s.send_start(false);
                    }
                } else if !stopping {
                    let save = if shared.config.memory_file.is_some() {
                        "then the store is saved for a warm restart"
                    } else {
                        "nothing is saved (no -e/--memory-file)"
                    };
                    tracing::info!(
                        "{signal}: stopping; connections have {grace:?} to finish (a second signal ends them now); {save}"
                    );
                    stopping = true;
                    deadline = Some(Instant::now() + grace + HARD_STOP_AFTER);
                    for s in &mut shards {
                        s.send_stop();
                    }
                } else if !now_sent {
                    tracing::info!("{signal}: ending every connection now");
                    now_sent = true;
                    deadline = Some(Instant::now() + HARD_STOP_AFTER);
                    for s in &mut shards {
                        s.send_now();
                    }
                }
            }
            None => {
                // Past the deadline: first end the connections, then give up on the shards.
                if !now_sent {
                    now_sent = true;
                    deadline = Some(Instant::now() + HARD_STOP_AFTER);
                    for s in &mut shards {
                        s.send_now();
                    }
                } else {
                    let hung = shards.iter().enumerate().filter(|(_, s)| !s.exited).map(|(i, _)| i).collect();
                    return Err(ServerError::Hung(hung));
                }
            }
        }
    }
    for handle in threads {
        let _ = handle.join();
    }
    signals_handle.close();
    let _ = signal_thread.join();
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Opens shard `index`'s replica group: recovers its log and snapshot from the data
/// directory, binds its peer port, starts its peer links and its driver.
fn join_group(
    cluster: &crate::cluster::ClusterConfig,
    index: usize,
    nshards: usize,
    shard: Shard,
    shared: &Arc<Shared>,
) -> io::Result<Rc<replicated::Replicated>> {
    use crate::cluster::ClusterConfig;
    use ringcache_replication::drivers::file::FileDurable;
    use ringcache_replication::group::{Group, GroupConfig};
    use ringcache_replication::replica::Replica;

    let dir = cluster.data_dir.join(format!("shard-{index}"));
    let durable = FileDurable::open(&dir, cluster.durability)?;
    // A joining node founds nothing: it waits for the group's leader to add it.
    let bootstrap = if cluster.join { Vec::new() } else { cluster.voters() };
    // A store brought back by a warm restart is kept if the log vouches for the applied
    // index saved with it (the file is consumed either way).
    let saved = replicated::take_saved_applied(&dir);
    let store_applied = saved.filter(|_| shard.store().recovered());
    let group = Group::open_warm(
        GroupConfig::new(cluster.node_id),
        durable,
        shard,
        &bootstrap,
        shared.clock.now(),
        store_applied,
    )
    .map_err(|e| io::Error::new(e.kind(), format!("shard {index}: replication log in {}: {e}", dir.display())))?;
    // Job ids of this run differ from any earlier run's (answers for those may still arrive).
    let incarnation = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut replica = Replica::new(group, cluster.reads, cluster.writes, replicated::NO_LEADER_TICKS, incarnation);
    replica.prefer_leader(cluster.prefer_leader);
    let base = cluster.own_address();
    if usize::from(base.port()) + nshards > usize::from(u16::MAX) {
        return Err(io::Error::other(format!("peer ports from {base} run past 65535 for {nshards} shards")));
    }
    let own = ClusterConfig::shard_address(base, index);
    let listener = glommio::net::TcpListener::bind(own)
        .map_err(|e| io::Error::other(format!("shard {index}: cannot listen for peers on {own}: {e}")))?;
    let setup = replicated::peers::PeerSetup {
        node_id: cluster.node_id,
        shard: index,
        nshards,
        peers: {
            // --peers, and the nodes this shard's group added since (their addresses win).
            let mut peers: Vec<_> = cluster
                .peers
                .iter()
                .filter(|(id, _)| *id != cluster.node_id)
                .map(|&(id, addr)| (id, ClusterConfig::shard_address(addr, index)))
                .collect();
            for (id, addr) in crate::cluster::known_peers(&dir) {
                peers.retain(|(p, _)| *p != id);
                peers.push((id, addr));
            }
            peers
        },
        secret: Rc::new(cluster.secret.clone()),
    };
    let links = replicated::peers::Links::start(&setup);
    let (replica, woken) = replicated::Replicated::new(cluster.node_id, index, replica, links, shared.clock, dir);
    glommio::spawn_local(replica.clone().drive(woken)).detach();
    let inbound: Rc<dyn replicated::peers::Inbound> = replica.clone();
    glommio::spawn_local(replicated::peers::listen(listener, Rc::downgrade(&inbound), setup)).detach();
    tracing::info!(shard = index, node = cluster.node_id, peers = %own, "joined replica group {index}");
    Ok(replica)
}

/// The memory file of shard `index` (`PATH.shardN`).
fn shard_memory_file(config: &Config, index: usize) -> Option<std::path::PathBuf> {
    config.memory_file.as_ref().map(|p| {
        let mut name = p.as_os_str().to_owned();
        name.push(format!(".shard{index}"));
        std::path::PathBuf::from(name)
    })
}

async fn shard_main(
    index: usize,
    shared: Arc<Shared>,
    mesh: MeshBuilder<MeshMsg, Full>,
    listener_fd: RawFd,
    control: ShardControl,
    events: &mpsc::Sender<Event>,
    report: &ExitReport,
) -> io::Result<()> {
    // SAFETY: the fd is a bound, listening socket (TCP, or a descriptor of the Unix
    // socket) handed to this shard alone.
    let listener = unsafe { OwnedFd::from_raw_fd(listener_fd) };
    let config = &shared.config;
    // A table of fixed files as large as `-c` (a shard may get most connections; at most
    // 64k entries, 512 KiB of kernel memory).
    let fixed_files = config.conn_limit.min(1 << 16) as u32;
    let reactor =
        uring::Reactor::new(uring::Reactor::buffers_for(config.conn_limit.div_ceil(shared.nshards)), fixed_files)
            .map_err(|e| io::Error::new(e.kind(), format!("shard {index}: cannot set up its io_uring: {e}")))?;
    tracing::debug!(
        shard = index,
        setup = reactor.setup().name(),
        fixed_files = reactor.fixed_files(),
        "io_uring ready"
    );
    let nshards = shared.nshards;
    let limits = Limits { max_item_size: config.max_item_size, cas_enabled: config.cas_enabled };
    let store = Store::new(StoreConfig {
        memory_limit: config.memory_limit_bytes / nshards,
        // Room to grow into with `cache_memlimit`: as much as the machine has (address
        // space only, until used).
        memory_reserve: Some(crate::config::physical_memory().max(config.memory_limit_bytes) / nshards),
        evictions: config.evictions,
        // A replicated store keeps the CAS its log stamps (the same on every replica).
        cas: match (&config.cluster, config.cas_enabled) {
            (Some(_), _) => CasSource::Stamped,
            (None, true) => CasSource::Derived,
            (None, false) => CasSource::Off,
        },
        shard: index,
        nshards,
        limits,
        expected_items: config.expected_items.map(|n| n.div_ceil(nshards)),
        memory_file: shard_memory_file(config, index),
        huge_pages: config.huge_pages,
        clock_base_unix: shared.clock.base().unix_at_zero,
    })?;
    let shard = Shard::new(store, config.flush_enabled);
    let shard = match &config.cluster {
        None => Rc::new(ShardCell::Alone(RefCell::new(shard))),
        Some(cluster) => Rc::new(ShardCell::Replicated(join_group(cluster, index, nshards, shard, &shared)?)),
    };
    let _ = events.send(Event::Ready);
    // The go comes from the main thread (a foreign wake for glommio). Nothing else wakes
    // this executor yet, so tick while waiting: if the wake-up is lost where glommio's
    // sleep barrier is unavailable (under valgrind), the next tick picks it up.
    let ticking = async {
        loop {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    };
    if futures_lite::future::or(control.start, ticking).await != Ok(true) {
        // Start-up abandoned: keep what the store recovered for the next start.
        save_shard(index, &shard);
        return Ok(());
    }

    let registry = Rc::new(RefCell::new(ConnectionRegistry::default()));
    registry.borrow_mut().reactor = Some(reactor.clone());
    let senders = if nshards > 1 {
        let (senders, mut receivers) = mesh.join().await.map_err(|_| io::Error::other("cannot join the shard mesh"))?;
        for (_, receiver) in receivers.streams() {
            glommio::spawn_local(mesh::serve_peer(receiver, shard.clone(), registry.clone())).detach();
        }
        Some(Rc::new(senders))
    } else {
        None
    };
    let ctx = Rc::new(ShardContext::new(
        index,
        nshards,
        shard.clone(),
        senders,
        registry.clone(),
        shared.clone(),
        reactor.clone(),
    ));
    let admin_fd = shared.admin_listener.swap(-1, Ordering::Relaxed);
    if admin_fd >= 0 {
        // SAFETY: the admin socket, bound and listening, taken by this shard alone.
        let listener = unsafe { glommio::net::TcpListener::from_raw_fd(admin_fd) };
        let token = shared.config.admin_token.as_deref().map(Rc::from);
        glommio::spawn_local(metrics::serve(listener, ctx.clone(), token)).detach();
    }
    glommio::spawn_local(reactor.clone().drive()).detach();
    glommio::spawn_local(reactor.clone().tick()).detach();
    let watcher = reactor.clone();
    glommio::spawn_local(async move {
        if let Err(e) = watcher.watch_eventfd().await {
            tracing::error!(shard = index, "io_uring eventfd watch ended: {e}");
        }
    })
    .detach();

    // Log lines for `watch` connections, while anyone watches.
    glommio::spawn_local(watch::pump(shard.clone(), shared.clone())).detach();

    // Background expiry: reclaim expired and flushed items a slice at a time.
    let (sweeper, clock) = (shard.clone(), shared.clock);
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(Duration::from_millis(250)).await;
            let now = clock.now();
            sweeper.borrow_mut().sweep(now);
        }
    })
    .detach();

    let gate = Rc::new(Gate::new());
    let (accept_ctx, accept_gate) = (ctx.clone(), gate.clone());
    reactor.start_accept(listener.as_raw_fd(), Box::new(move |fd| admit(fd, &accept_ctx, &accept_gate)));
    let ShardControl { stop, now, .. } = control;
    let _ = stop.await;
    // Every connection, open or admitted from now on, finishes what it has received.
    registry.borrow_mut().shutdown_reads();
    // Let the ring hand over connections whose accept has already completed, then stop
    // accepting, and admit those still waiting in the backlog: their requests were sent
    // before the signal.
    glommio::timer::sleep(Duration::from_millis(2)).await;
    reactor.stop_accept();
    glommio::timer::sleep(Duration::from_millis(2)).await;
    // SAFETY: fcntl on this shard's listening socket: accepts no longer wait.
    let nonblocking = unsafe {
        let flags = libc::fcntl(listener.as_raw_fd(), libc::F_GETFL);
        flags >= 0 && libc::fcntl(listener.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if nonblocking {
        loop {
            // SAFETY: a non-blocking accept on this shard's listening socket; a socket
            // it returns is handed to `admit`, which owns it.
            let fd = unsafe {
                libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC)
            };
            if fd < 0 {
                break;
            }
            admit(fd, &ctx, &gate);
        }
    }
    drop(listener);
    // Connections get the grace period to finish, unless told to end now.
    let closing = gate.close();
    futures_lite::pin!(closing);
    let grace = glommio::timer::sleep(config.shutdown_grace);
    let drained = futures_lite::future::or(async { (&mut closing).await.is_ok() }, async {
        futures_lite::future::or(grace, async {
            let _ = now.await;
        })
        .await;
        false
    })
    .await;
    if !drained {
        let open = registry.borrow().len();
        if open > 0 {
            tracing::info!(shard = index, "closing {open} connections that did not finish in time");
        }
        registry.borrow_mut().abort_all();
        ctx.abort();
        let _ = closing.await;
    }
    // Keep serving other shards' ops until every shard's connections are done.
    report.count_done();
    while shared.shards_done.load(Ordering::SeqCst) < nshards {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    // No shard sends ops any more: the store is quiet, save it for a warm restart.
    save_shard(index, &shard);
    Ok(())
}

/// Saves a stopped shard's store for a warm restart (file-backed stores only); a
/// replica first stops applying and records the applied index the store is at.
fn save_shard(index: usize, shard: &ShardCell) {
    if let Some(replicated) = shard.replicated() {
        if !replicated.stop_for_save() {
            return;
        }
    }
    if let Err(e) = shard.borrow().store().save() {
        tracing::error!(shard = index, "saving the store's metadata failed: {e}");
    }
}

/// Serves an accepted connection, or refuses it as memcached does over the `-c` limit.
fn admit(fd: RawFd, ctx: &Rc<ShardContext>, gate: &Gate) {
    let shared = &ctx.shared;
    let open = shared.curr_connections.fetch_add(1, Ordering::Relaxed) + 1;
    if open > shared.config.conn_limit {
        shared.curr_connections.fetch_sub(1, Ordering::Relaxed);
        shared.rejected_connections.fetch_add(1, Ordering::Relaxed);
        reject(fd);
        return;
    }
    shared.total_connections.fetch_add(1, Ordering::Relaxed);
    let spawned = if shared.tls.is_some() {
        gate.spawn(tls::serve(fd, ctx.clone())).map(|t| t.detach())
    } else {
        gate.spawn(connection::serve(fd, ctx.clone())).map(|t| t.detach())
    };
    if spawned.is_err() {
        shared.curr_connections.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the socket was handed to no connection.
        unsafe { libc::close(fd) };
    }
}

/// Over the connection limit: memcached's reply (if the socket takes it at once), then close.
fn reject(fd: RawFd) {
    let answer = reply::TOO_MANY_CONNECTIONS;
    // SAFETY: a freshly accepted socket this function owns and closes.
    unsafe {
        libc::send(fd, answer.as_ptr().cast(), answer.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        libc::close(fd);
    }
}
