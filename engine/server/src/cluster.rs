//! The replica-group flags: `--node-id`, `--peers`, `--data-dir`, `--replication`,
//! `--reads`, `--durability`, `--cluster-secret-file`. Without `--peers` a node runs
//! alone, exactly as before; with it, every setting a group needs must be there and make
//! sense, or the node refuses to start (exit status 64) saying which.
//!
//! A node's peer address is a port base: shard *i* listens for its peers on
//! `HOST:PORT+i`, and talks to shard *i* of every other node (Raft group *i*).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use ringcache_replication::drivers::file::Durability;
use ringcache_replication::replica::ReadMode;

pub use ringcache_replication::replica::Writes as WriteMode;

/// A node's place in its replica group.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: u64,
    /// Every node's peer port base, this one's included, by node id.
    pub peers: Vec<(u64, SocketAddr)>,
    pub data_dir: PathBuf,
    pub writes: WriteMode,
    pub reads: ReadMode,
    pub durability: Durability,
    pub secret: Vec<u8>,
    /// Join an existing group (wait to be added) instead of founding one with `peers`.
    pub join: bool,
    /// The node every shard's group should be led by when it can (`--prefer-leader`).
    pub prefer_leader: Option<u64>,
}

impl ClusterConfig {
    /// This node's own peer port base.
    pub fn own_address(&self) -> SocketAddr {
        self.peers.iter().find(|(id, _)| *id == self.node_id).map(|(_, a)| *a).unwrap_or_else(|| unreachable!())
    }

    /// Shard `shard`'s peer address on node `addr`.
    pub fn shard_address(addr: SocketAddr, shard: usize) -> SocketAddr {
        SocketAddr::new(addr.ip(), addr.port() + shard as u16)
    }

    pub fn voters(&self) -> Vec<u64> {
        self.peers.iter().map(|(id, _)| *id).collect()
    }
}

/// Why the group flags were refused.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--peers needs {0} as well")]
    Missing(&'static str),
    #[error("{0} is only meaningful with --peers")]
    WithoutPeers(&'static str),
    #[error("--peers {0:?}: expected ID=HOST:PORT,ID=HOST:PORT,... with ids from 1")]
    BadPeers(String),
    #[error("--peers names node {0} twice")]
    DuplicatePeer(u64),
    #[error("node {0} (--node-id or --prefer-leader) is not one of --peers")]
    NotAPeer(u64),
    #[error("--{flag} {value:?}: expected one of {expected}")]
    Choice { flag: &'static str, value: String, expected: &'static str },
    #[error("cannot read --cluster-secret-file {path}: {source}")]
    Secret { path: PathBuf, source: std::io::Error },
    #[error("--cluster-secret-file {0} holds fewer than 16 bytes: use a long random secret")]
    ShortSecret(PathBuf),
    #[error("peer ports of {0} run past 65535 for this many shards")]
    PortRange(SocketAddr),
}

/// The group flags as given.
#[derive(Debug, Default, Clone)]
pub struct ClusterArgs {
    pub node_id: Option<u64>,
    pub peers: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub replication: Option<String>,
    pub reads: Option<String>,
    pub durability: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub join: bool,
    pub prefer_leader: Option<u64>,
}

fn parse_peers(list: &str) -> Result<Vec<(u64, SocketAddr)>, ClusterError> {
    let bad = || ClusterError::BadPeers(list.to_string());
    let mut peers: Vec<(u64, SocketAddr)> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item.split_once('=').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        let addr = addr.trim().to_socket_addrs().map_err(|_| bad())?.next().ok_or_else(bad)?;
        if id == 0 {
            return Err(bad());
        }
        if peers.iter().any(|(p, _)| *p == id) {
            return Err(ClusterError::DuplicatePeer(id));
        }
        peers.push((id, addr));
    }
    if peers.is_empty() {
        return Err(bad());
    }
    Ok(peers)
}

impl ClusterArgs {
    /// The group settings, None for a node on its own.
    pub fn resolve(&self) -> Result<Option<ClusterConfig>, ClusterError> {
        let Some(list) = &self.peers else {
            let given = [
                (self.node_id.is_some(), "--node-id"),
                (self.data_dir.is_some(), "--data-dir"),
                (self.replication.is_some(), "--replication"),
                (self.reads.is_some(), "--reads"),
                (self.durability.is_some(), "--durability"),
                (self.secret_file.is_some(), "--cluster-secret-file"),
                (self.join, "--join"),
                (self.prefer_leader.is_some(), "--prefer-leader"),
            ];
            return match given.iter().find(|(g, _)| *g) {
                Some((_, flag)) => Err(ClusterError::WithoutPeers(flag)),
                None => Ok(None),
            };
        };
        let peers = parse_peers(list)?;
        let node_id = self.node_id.ok_or(ClusterError::Missing("--node-id"))?;
        if !peers.iter().any(|(id, _)| *id == node_id) {
            return Err(ClusterError::NotAPeer(node_id));
        }
        let data_dir = self.data_dir.clone().ok_or(ClusterError::Missing("--data-dir"))?;
        let path = self.secret_file.clone().ok_or(ClusterError::Missing("--cluster-secret-file"))?;
        let secret = std::fs::read(&path).map_err(|source| ClusterError::Secret { path: path.clone(), source })?;
        let secret = secret.trim_ascii().to_vec();
        if secret.len() < 16 {
            return Err(ClusterError::ShortSecret(path));
        }
        let writes = match self.replication.as_deref().unwrap_or("strong") {
            "strong" => WriteMode::Strong,
            "async" => WriteMode::Async,
            other => {
                return Err(ClusterError::Choice {
                    flag: "replication",
                    value: other.into(),
                    expected: "strong, async",
                })
            }
        };
        let reads = match self.reads.as_deref().unwrap_or("linearizable") {
            "linearizable" => ReadMode::Linearizable,
            "lease" => ReadMode::Lease,
            "local" => ReadMode::Local,
            other => {
                return Err(ClusterError::Choice {
                    flag: "reads",
                    value: other.into(),
                    expected: "linearizable, lease, local",
                })
            }
        };
        let durability = match self.durability.as_deref().unwrap_or("fsync") {
            "fsync" => Durability::Fsync,
            "none" => Durability::None,
            other => {
                return Err(ClusterError::Choice { flag: "durability", value: other.into(), expected: "fsync, none" })
            }
        };
        if let Some(p) = self.prefer_leader.filter(|p| !peers.iter().any(|(id, _)| id == p)) {
            return Err(ClusterError::NotAPeer(p));
        }
        Ok(Some(ClusterConfig {
            node_id,
            peers,
            data_dir,
            writes,
            reads,
            durability,
            secret,
            join: self.join,
            prefer_leader: self.prefer_leader,
        }))
    }
}

/// The peers a shard has learnt of from membership changes (`DIR/shard-N/peers`, one
/// `ID=HOST:PORT` per line): added to `--peers` at start, so a restarted node still
/// reaches a node added after its flags were written.
pub fn known_peers(shard_dir: &std::path::Path) -> Vec<(u64, SocketAddr)> {
    let text = std::fs::read_to_string(shard_dir.join("peers")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter_map(|(id, addr)| Some((id.trim().parse().ok()?, addr.trim().parse().ok()?)))
        .collect()
}

/// Records the peers of a shard (written to a temporary file, synced, renamed).
pub fn remember_peers(shard_dir: &std::path::Path, peers: &[(u64, SocketAddr)]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = shard_dir.join("peers.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    for (id, addr) in peers {
        writeln!(f, "{id}={addr}")?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, shard_dir.join("peers"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(peers: &str) -> ClusterArgs {
        // A file of its own per call: tests run in parallel.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let secret = std::env::temp_dir().join(format!("ringcache-cluster-secret-{}-{n}", std::process::id()));
        std::fs::write(&secret, "0123456789abcdef0123\n").ok();
        ClusterArgs {
            node_id: Some(2),
            peers: Some(peers.into()),
            data_dir: Some("/tmp/x".into()),
            secret_file: Some(secret),
            ..Default::default()
        }
    }

    #[test]
    fn a_group_needs_every_setting_and_a_node_alone_none() {
        assert!(matches!(ClusterArgs::default().resolve(), Ok(None)));
        let alone = ClusterArgs { data_dir: Some("/tmp".into()), ..Default::default() };
        assert!(matches!(alone.resolve(), Err(ClusterError::WithoutPeers("--data-dir"))));
        let ok = args("1=127.0.0.1:7000, 2=127.0.0.1:7100,3=127.0.0.1:7200").resolve();
        let c = ok.ok().flatten();
        assert_eq!(c.as_ref().map(|c| (c.node_id, c.voters(), c.own_address().port())), Some((2, vec![1, 2, 3], 7100)));
        assert_eq!(
            c.map(|c| (c.writes, c.reads, c.durability)),
            Some((WriteMode::Strong, ReadMode::Linearizable, Durability::Fsync))
        );
        assert!(matches!(args("1=127.0.0.1:7000").resolve(), Err(ClusterError::NotAPeer(2))));
        assert!(matches!(args("2=127.0.0.1:7000,2=127.0.0.1:7001").resolve(), Err(ClusterError::DuplicatePeer(2))));
        for bad in ["", "x=127.0.0.1:1", "0=127.0.0.1:1", "2=nowhere", "2:127.0.0.1:1"] {
            assert!(matches!(args(bad).resolve(), Err(ClusterError::BadPeers(_))), "{bad:?}");
        }
        let no_dir = ClusterArgs { data_dir: None, ..args("2=127.0.0.1:7000") };
        assert!(matches!(no_dir.resolve(), Err(ClusterError::Missing("--data-dir"))));
        let lease =
            ClusterArgs { reads: Some("lease".into()), durability: Some("none".into()), ..args("2=127.0.0.1:7000") };
        assert_eq!(
            lease.resolve().ok().flatten().map(|c| (c.reads, c.durability)),
            Some((ReadMode::Lease, Durability::None))
        );
        let wrong = ClusterArgs { reads: Some("fast".into()), ..args("2=127.0.0.1:7000") };
        assert!(wrong.resolve().err().is_some_and(|e| e.to_string().contains("linearizable, lease, local")));
        let asynchronous = ClusterArgs { replication: Some("async".into()), ..args("2=127.0.0.1:7000") };
        assert_eq!(asynchronous.resolve().ok().flatten().map(|c| c.writes), Some(WriteMode::Async));
    }

    #[test]
    fn a_short_or_missing_secret_is_refused() {
        let short = std::env::temp_dir().join(format!("ringcache-cluster-short-{}", std::process::id()));
        std::fs::write(&short, "abc").ok();
        let a = ClusterArgs { secret_file: Some(short), ..args("2=127.0.0.1:7000") };
        assert!(matches!(a.resolve(), Err(ClusterError::ShortSecret(_))));
        let missing = ClusterArgs { secret_file: Some("/nonexistent/secret".into()), ..args("2=127.0.0.1:7000") };
        assert!(matches!(missing.resolve(), Err(ClusterError::Secret { .. })));
    }
}
