//! The peer transport on glommio: a shard's connections to the same shard of the other
//! nodes of its group. Outbound ([`Links`]): one link per peer, a task that dials it,
//! authenticates with the cluster secret ([`crate::handshake`]), and writes the frames
//! queued for it ([`crate::envelope`]), many per write; it redials with backoff when the
//! connection breaks (Raft resends what matters). Inbound ([`listen`]): a listener on
//! the shard's peer port; a peer is authenticated before a single frame of it is parsed,
//! and one that fails is closed and logged. Frames for the shard's group are handed to
//! its [`Inbound`] (the server's replica driver). Runs on the shard's own executor.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::envelope::{self, Envelope, Frames};
use crate::handshake::{Acceptor, Dialer, Identity, CHALLENGE_LEN, HELLO_LEN, PROOF_LEN};
use futures_channel::mpsc;
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use glommio::net::{TcpListener, TcpStream};

/// Where a shard's inbound peer traffic goes.
pub trait Inbound {
    /// Whether `node` is a member this shard talks to (others are refused).
    fn knows(&self, node: u64) -> bool;
    /// A frame for this shard's group from authenticated node `from`.
    fn receive(&self, from: u64, envelope: Envelope);
}

/// Queued bytes for one peer beyond which frames are dropped (Raft resends; a
/// forwarded job times out) instead of growing without bound.
const MAX_QUEUED: usize = 256 << 20;
/// The largest frame a peer may send (a snapshot chunk is about 1 MiB; a forwarded
/// batch is bounded by the connection's limits).
const MAX_FRAME: usize = 128 << 20;
/// How long a peer has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

fn nonce() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        panic!("no randomness for the peer handshake: {e}");
    }
    bytes
}

struct Link {
    queue: RefCell<Vec<u8>>,
    wake: mpsc::UnboundedSender<()>,
    dropping: RefCell<bool>,
}

/// The outbound links of one shard, by peer node id (nodes join and leave with
/// membership changes).
#[derive(Clone)]
pub struct Links {
    setup: PeerSetup,
    links: Rc<RefCell<HashMap<u64, Peer>>>,
}

/// A peer: where this shard reaches it, and the link to it.
type Peer = (SocketAddr, Rc<Link>);

/// What a shard needs to talk to its peers.
#[derive(Clone)]
pub struct PeerSetup {
    pub node_id: u64,
    pub shard: usize,
    pub nshards: usize,
    /// Every other node's address for this shard.
    pub peers: Vec<(u64, SocketAddr)>,
    pub secret: Rc<Vec<u8>>,
}

impl PeerSetup {
    fn me(&self) -> Identity {
        Identity { node: self.node_id, shards: self.nshards as u32 }
    }
}

impl Links {
    /// Starts a dialing task per peer (on the current executor).
    pub fn start(setup: &PeerSetup) -> Links {
        let links = Links { setup: setup.clone(), links: Rc::new(RefCell::new(HashMap::new())) };
        for &(node, addr) in &setup.peers {
            links.add(node, addr);
        }
        links
    }

    /// Starts talking to `node` at `addr` (this shard's address on it); a node already
    /// known at another address is redialled there.
    pub fn add(&self, node: u64, addr: SocketAddr) {
        if node == self.setup.node_id {
            return;
        }
        if self.links.borrow().get(&node).is_some_and(|(a, _)| *a == addr) {
            return;
        }
        let (wake, woken) = mpsc::unbounded();
        let link = Rc::new(Link { queue: RefCell::new(Vec::new()), wake, dropping: RefCell::new(false) });
        glommio::spawn_local(dial(Rc::downgrade(&link), node, addr, self.setup.clone(), woken)).detach();
        self.links.borrow_mut().insert(node, (addr, link));
    }

    /// Stops talking to `node` (its dialing task ends with the link).
    pub fn remove(&self, node: u64) {
        self.links.borrow_mut().remove(&node);
    }

    /// Every peer this shard talks to.
    pub fn peers(&self) -> Vec<(u64, SocketAddr)> {
        let mut peers: Vec<_> = self.links.borrow().iter().map(|(&id, (addr, _))| (id, *addr)).collect();
        peers.sort_unstable();
        peers
    }

    /// Whether `node` is a known peer.
    pub fn knows(&self, node: u64) -> bool {
        self.links.borrow().contains_key(&node)
    }

    /// Queues `envelope` for node `to`.
    pub fn send(&self, to: u64, envelope: &Envelope) {
        let links = self.links.borrow();
        let Some((_, link)) = links.get(&to) else { return };
        let mut queue = link.queue.borrow_mut();
        if queue.len() > MAX_QUEUED {
            if !link.dropping.replace(true) {
                tracing::warn!(shard = self.setup.shard, peer = to, "peer is not keeping up: dropping frames for it");
            }
            return;
        }
        link.dropping.replace(false);
        envelope::encode(&mut queue, self.setup.shard as u32, envelope);
        let _ = link.wake.unbounded_send(());
    }
}

async fn with_timeout<T>(what: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    futures_lite::future::or(what, async {
        glommio::timer::sleep(HANDSHAKE_TIMEOUT).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))
    })
    .await
}

/// Connects to a peer and authenticates both ways.
async fn connect(addr: SocketAddr, setup: &PeerSetup) -> io::Result<(TcpStream, Identity)> {
    let mut stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let dialer = Dialer::new(&setup.secret, setup.me(), nonce());
    let them = with_timeout(async {
        stream.write_all(&dialer.hello()).await?;
        let mut challenge = [0u8; CHALLENGE_LEN];
        stream.read_exact(&mut challenge).await?;
        let (them, proof) = dialer
            .on_challenge(&challenge)
            .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
        stream.write_all(&proof).await?;
        Ok(them)
    })
    .await?;
    Ok((stream, them))
}

/// Keeps one outbound link up and writes what is queued for it.
async fn dial(link: Weak<Link>, node: u64, addr: SocketAddr, setup: PeerSetup, mut woken: mpsc::UnboundedReceiver<()>) {
    let mut backoff = Duration::from_millis(50);
    let mut complained = false;
    loop {
        if link.strong_count() == 0 {
            return;
        }
        match connect(addr, &setup).await {
            Ok((mut stream, them)) if them.node == node => {
                tracing::info!(shard = setup.shard, peer = node, %addr, "connected to peer");
                backoff = Duration::from_millis(50);
                complained = false;
                loop {
                    let bytes = match link.upgrade() {
                        Some(l) => std::mem::take(&mut *l.queue.borrow_mut()),
                        None => return,
                    };
                    if bytes.is_empty() {
                        if woken.next().await.is_none() {
                            return;
                        }
                        continue;
                    }
                    if let Err(e) = stream.write_all(&bytes).await {
                        tracing::info!(shard = setup.shard, peer = node, "peer link broke: {e}");
                        break;
                    }
                }
            }
            Ok((_, them)) => {
                tracing::warn!(shard = setup.shard, peer = node, %addr, answered = them.node, "another node answered at this peer's address");
            }
            Err(e) => {
                // Frames queued for a peer that cannot be reached are stale by the time it can.
                if let Some(l) = link.upgrade() {
                    l.queue.borrow_mut().clear();
                }
                let refused = e.kind() == io::ErrorKind::PermissionDenied;
                if refused || !complained {
                    let level_warn = refused;
                    if level_warn {
                        tracing::warn!(shard = setup.shard, peer = node, %addr, "cannot authenticate with peer: {e}");
                    } else {
                        tracing::info!(shard = setup.shard, peer = node, %addr, "cannot reach peer yet: {e}");
                    }
                    complained = true;
                }
            }
        }
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Accepts this shard's peers for as long as the replica lives.
pub async fn listen(listener: TcpListener, inbound: Weak<dyn Inbound>, setup: PeerSetup) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(shard = setup.shard, "peer accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if inbound.strong_count() == 0 {
            return;
        }
        glommio::spawn_local(serve(stream, inbound.clone(), setup.clone())).detach();
    }
}

/// Authenticates an inbound peer, then hands its frames to the replica.
async fn serve(mut stream: TcpStream, inbound: Weak<dyn Inbound>, setup: PeerSetup) {
    let from = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut acceptor = Acceptor::new(&setup.secret, setup.me(), nonce());
    let authenticated = with_timeout(async {
        let mut hello = [0u8; HELLO_LEN];
        stream.read_exact(&mut hello).await?;
        let challenge =
            acceptor.on_hello(&hello).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        stream.write_all(&challenge).await?;
        let mut proof = [0u8; PROOF_LEN];
        stream.read_exact(&mut proof).await?;
        acceptor.on_proof(&proof).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))
    })
    .await;
    let known = |node: u64| inbound.upgrade().is_some_and(|r| r.knows(node));
    let them = match authenticated {
        Ok(them) if known(them.node) => them,
        Ok(them) => {
            tracing::warn!(shard = setup.shard, %from, node = them.node, "refused a peer that is not a member (not in --peers, not added)");
            return;
        }
        Err(e) => {
            tracing::warn!(shard = setup.shard, %from, "refused a peer connection: {e}");
            return;
        }
    };
    let mut frames = Frames::new(MAX_FRAME);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        frames.extend(&buf[..n]);
        let Some(r) = inbound.upgrade() else { return };
        loop {
            match frames.next_frame() {
                Ok(Some(frame)) => match envelope::decode(frame) {
                    Ok((group, env)) if group as usize == setup.shard => r.receive(them.node, env),
                    Ok((group, _)) => tracing::warn!(
                        shard = setup.shard,
                        peer = them.node,
                        group,
                        "a frame for another shard: dropped"
                    ),
                    Err(e) => {
                        tracing::warn!(shard = setup.shard, peer = them.node, "malformed frame ({e:?}): closing");
                        return;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(shard = setup.shard, peer = them.node, "frame refused ({e:?}): closing");
                    return;
                }
            }
        }
        frames.compact();
    }
}
