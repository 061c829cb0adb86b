//! The command line (memcached's flags, with memcached's meanings), memcached's `-o`
//! extended options, and the optional TOML config file; flags given on the command line
//! override the file. [`Args::resolve`] turns them into a [`Config`] or refuses, with a
//! message saying why, every setting that cannot work (memcached's rules where it has
//! them: `-c 0`, `-I` above half of `-m`, `-o hashpower` above 32, ...).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};
use serde::Deserialize;

/// Command-line flags. Flags memcached has that do not apply here are accepted and
/// ignored with a warning, so scripts written for memcached start ringcache unchanged.
#[derive(Debug, Parser)]
#[command(name = "ringcache", version, about = "A thread-per-core, memcached-compatible cache")]
pub struct Args {
    /// TCP port to listen on (0: one port chosen by the kernel, logged at start).
    #[arg(short = 'p', long = "port")]
    pub port: Option<u16>,
    /// Address to listen on.
    #[arg(short = 'l', long = "listen")]
    pub listen: Option<String>,
    /// Item memory in megabytes, split evenly across shards.
    #[arg(short = 'm', long = "memory-limit")]
    pub memory_limit: Option<u64>,
    /// Maximum simultaneous connections.
    #[arg(short = 'c', long = "conn-limit")]
    pub conn_limit: Option<usize>,
    /// Number of shards (executor threads); default: one per physical core.
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Largest item, with k/m suffixes (default 1m, at most 64m and half of -m).
    #[arg(short = 'I', long = "max-item-size")]
    pub max_item_size: Option<String>,
    /// Return an error instead of evicting items when memory is full.
    #[arg(short = 'M', long = "disable-evictions")]
    pub disable_evictions: bool,
    /// Disable CAS (every CAS value is 0).
    #[arg(short = 'C', long = "disable-cas")]
    pub disable_cas: bool,
    /// Refuse flush_all.
    #[arg(short = 'F', long = "disable-flush-all")]
    pub disable_flush_all: bool,
    /// Verbose logging (repeat for more).
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,
    /// How log lines are written to stderr: text (default) or json (one object a line).
    #[arg(long = "log-format")]
    pub log_format: Option<String>,
    /// Keep item memory in this file (one per shard: PATH.shardN) so that items survive
    /// a restart; metadata is saved whenever the server stops gracefully (memcached's -e).
    #[arg(short = 'e', long = "memory-file")]
    pub memory_file: Option<PathBuf>,
    /// Ask for huge pages for item memory (falls back with a warning).
    #[arg(long = "huge-pages")]
    pub huge_pages: bool,
    /// Expected number of items, to size the hash index up front (it grows anyway).
    #[arg(long = "expected-items")]
    pub expected_items: Option<usize>,
    /// Seconds a stopping server gives its connections to finish before closing them.
    #[arg(long = "shutdown-grace")]
    pub shutdown_grace: Option<u32>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default; keep it on a
    /// trusted address, 127.0.0.1 unless told otherwise).
    #[arg(long = "admin")]
    pub admin: Option<String>,
    /// Require `Authorization: Bearer TOKEN` on the admin listener.
    #[arg(long = "admin-token")]
    pub admin_token: Option<String>,
    /// memcached's ASCII authentication: a file of `user:password` lines; every
    /// connection must first send `set <any> <flags> <exptime> <len>` carrying
    /// `user password` (SIGHUP rereads the file).
    #[arg(short = 'Y', long = "auth-file")]
    pub auth_file: Option<PathBuf>,
    /// Allow the `shutdown` command (memcached's -A).
    #[arg(short = 'A', long = "enable-shutdown")]
    pub enable_shutdown: bool,
    /// TOML config file (keys as the long flag names, with underscores, and the `-o` options).
    #[arg(long = "config")]
    pub config: Option<PathBuf>,
    /// This node's id in its replica group (with --peers).
    #[arg(long = "node-id")]
    pub node_id: Option<u64>,
    /// The replica group: every node's peer address as ID=HOST:PORT, comma-separated,
    /// this node's included (shard i of a node uses PORT+i). Without it the node runs alone.
    #[arg(long = "peers")]
    pub peers: Option<String>,
    /// Where this node keeps its replication log and snapshots (one directory per shard).
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// strong (default): a write is acknowledged once a quorum has it; async: once the
    /// leader applied it (replicated behind; lost if the leader fails before it commits).
    #[arg(long = "replication")]
    pub replication: Option<String>,
    /// linearizable (default), lease, or local (any node's own copy, may be stale).
    #[arg(long = "reads")]
    pub reads: Option<String>,
    /// fsync (default): the log is synced before a write is acknowledged; none: written,
    /// not synced (survives a process crash, not a power loss).
    #[arg(long = "durability")]
    pub durability: Option<String>,
    /// A file holding the secret every node of the group shares (16 bytes or more);
    /// peers prove they hold it before anything else is read from them.
    #[arg(long = "cluster-secret-file")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Join an existing group: start empty and wait to be added (`ringcache-ctl add`)
    /// instead of founding a group with --peers.
    #[arg(long = "join")]
    pub join: bool,
    /// Have every shard's group led by this node whenever it is up and caught up
    /// (default: leadership spreads over the nodes as elections fall).
    #[arg(long = "prefer-leader")]
    pub prefer_leader: Option<u64>,
    /// memcached's extended options, comma-separated `name=value`: `idle_timeout`,
    /// `hashpower`, `read_buf_mem_limit`, and ringcache's `request_timeout`,
    /// `write_timeout`, `reply_buffer_limit`, `shutdown_grace`. Others are ignored.
    #[arg(short = 'o', long = "extended")]
    pub extended: Vec<String>,

    /// UDP port: 0 (off, memcached's default too) is the only one; UDP is not offered.
    #[arg(short = 'U', long = "udp-port")]
    pub udp_port: Option<String>,
    /// Requests a connection is served in a row before it lets the others run (counted
    /// in `stats` as conn_yields); default: no limit.
    #[arg(short = 'R', long = "max-reqs-per-event")]
    pub max_reqs_per_event: Option<String>,
    /// auto or ascii (the text protocol, classic and meta); binary is not offered.
    #[arg(short = 'B', long = "protocol")]
    pub protocol: Option<String>,
    /// The listen backlog (default 1024).
    #[arg(short = 'b', long = "listen-backlog")]
    pub listen_backlog: Option<String>,
    /// Listen on this Unix socket instead of TCP (memcached's -s).
    #[arg(short = 's', long = "unix-socket")]
    pub unix_socket: Option<PathBuf>,
    /// Permissions of the Unix socket, in octal (memcached's -a).
    #[arg(short = 'a', long = "unix-mask")]
    pub unix_mask: Option<String>,
    /// Run as a daemon (detached, in the background).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Write the process id to this file (removed when the server stops).
    #[arg(short = 'P', long = "pidfile")]
    pub pidfile: Option<PathBuf>,
    /// Serve the client port over TLS only (memcached's -Z); needs --tls-cert and --tls-key
    /// (or memcached's `-o ssl_chain_cert=FILE,ssl_key=FILE`).
    #[arg(short = 'Z', long = "tls", visible_alias = "enable-ssl")]
    pub tls: bool,
    /// The certificate chain TLS serves, PEM, the server's own certificate first.
    #[arg(long = "tls-cert")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of that certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long = "tls-key")]
    pub tls_key: Option<PathBuf>,

    // memcached flags accepted for compatibility and ignored.
    #[arg(short = 'u', long = "user", hide = true)]
    pub user: Option<String>,
    #[arg(short = 'n', long = "slab-min-size", hide = true)]
    pub slab_min_size: Option<String>,
    #[arg(short = 'f', long = "slab-growth-factor", hide = true)]
    pub slab_growth_factor: Option<String>,
    #[arg(short = 'D', hide = true)]
    pub delimiter: Option<String>,
    #[arg(short = 'k', long = "lock-memory", hide = true)]
    pub lock_memory: bool,
    #[arg(short = 'L', long = "enable-largepages", hide = true)]
    pub large_pages: bool,
}

/// Settings from a `--config` TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub port: Option<u16>,
    pub listen: Option<String>,
    pub memory_limit: Option<u64>,
    pub conn_limit: Option<usize>,
    pub threads: Option<usize>,
    pub max_item_size: Option<String>,
    pub disable_evictions: Option<bool>,
    pub disable_cas: Option<bool>,
    pub disable_flush_all: Option<bool>,
    pub enable_shutdown: Option<bool>,
    pub memory_file: Option<PathBuf>,
    pub huge_pages: Option<bool>,
    pub expected_items: Option<usize>,
    pub hashpower: Option<u32>,
    pub idle_timeout: Option<u32>,
    pub request_timeout: Option<u32>,
    pub write_timeout: Option<u32>,
    pub reply_buffer_limit: Option<String>,
    pub read_buf_mem_limit: Option<u64>,
    pub shutdown_grace: Option<u32>,
    pub verbose: Option<u8>,
    pub log_format: Option<String>,
    pub listen_backlog: Option<i64>,
    pub protocol: Option<String>,
    pub udp_port: Option<u16>,
    pub max_reqs_per_event: Option<i64>,
    pub daemon: Option<bool>,
    pub pidfile: Option<PathBuf>,
    pub unix_socket: Option<PathBuf>,
    pub unix_mask: Option<String>,
    pub node_id: Option<u64>,
    pub peers: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub replication: Option<String>,
    pub reads: Option<String>,
    pub durability: Option<String>,
    pub cluster_secret_file: Option<PathBuf>,
    pub join: Option<bool>,
    pub prefer_leader: Option<u64>,
    pub admin: Option<String>,
    pub admin_token: Option<String>,
    pub auth_file: Option<PathBuf>,
    pub tls: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// The files of the TLS certificate and key (`-Z`); read at start and again on
/// `refresh_certs` or SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Bounds on what one connection may make the server hold, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// memcached's `idle_timeout`: a connection with no complete request for this long
    /// is closed. None: never.
    pub idle_timeout: Option<Duration>,
    /// A request (command line and data block) must arrive whole within this long of
    /// its first byte, else the connection is closed. None: no bound.
    pub request_timeout: Option<Duration>,
    /// A connection whose replies make no progress (the client does not read) for this
    /// long is closed. None: no bound.
    pub write_timeout: Option<Duration>,
    /// Reply bytes a connection may hold unsent (its own shard's and other shards')
    /// before it stops reading requests; a single reply may exceed it by up to `-I`.
    pub reply_buffer_limit: usize,
    /// memcached's `read_buf_mem_limit`, in bytes: request bytes all connections together
    /// may hold beyond each connection's base read buffer (large values, long multi-get
    /// lines). A connection that needs more waits for others to release theirs.
    pub read_buf_mem_limit: usize,
}

/// The resolved settings the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub listen: String,
    pub memory_limit_bytes: usize,
    pub conn_limit: usize,
    pub threads: Option<usize>,
    pub max_item_size: usize,
    pub evictions: bool,
    pub cas_enabled: bool,
    pub flush_enabled: bool,
    /// `shutdown` is allowed (`-A`).
    pub shutdown_command: bool,
    /// The listen backlog (`-b`).
    pub backlog: i32,
    /// `-B`: `auto-negotiate` or `ascii`, as `stats settings` names it.
    pub binding_protocol: &'static str,
    /// `-R`: requests a connection is served in a row before it yields (None: no limit).
    pub reqs_per_event: Option<usize>,
    /// `-d`: detach and run in the background.
    pub daemon: bool,
    /// `--admin`: where the Prometheus `/metrics` listener binds (None: off), and the
    /// bearer token it requires (`--admin-token`).
    pub admin: Option<std::net::SocketAddr>,
    pub admin_token: Option<String>,
    /// `-Y`: the password file, as given, and its users when the server started.
    pub auth: Option<(PathBuf, ringcache_core::protocol::auth::Users)>,
    /// `-s`: the Unix socket to listen on instead of TCP, and its permissions (`-a`).
    pub unix_socket: Option<PathBuf>,
    pub unix_mask: u32,
    /// `-P`: where to write the process id.
    pub pidfile: Option<PathBuf>,
    pub verbose: u8,
    /// `--log-format json`: log lines are JSON objects.
    pub log_json: bool,
    pub memory_file: Option<PathBuf>,
    pub huge_pages: bool,
    pub expected_items: Option<usize>,
    pub connections: ConnectionLimits,
    /// How long a stopping server lets connections finish before closing them.
    pub shutdown_grace: Duration,
    /// Whether `read_buf_mem_limit` was given (else it is sized from the shard count).
    pub read_buf_mem_limit_given: bool,
    /// The replica group this node belongs to (None: it runs alone).
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// `-Z`: the client port speaks TLS with this certificate and key (None: plain).
    pub tls: Option<TlsFiles>,
}

/// A configuration error: the server refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("bad config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("bad size {0:?}: expected a number with an optional k or m suffix")]
    Size(String),
    #[error("item size {0} is out of range (1k to 64m)")]
    ItemSizeRange(usize),
    #[error("Cannot set item size limit higher than 1/2 of memory max (-I {item} with -m {memory_mb})")]
    ItemSizeOverHalfMemory { item: usize, memory_mb: u64 },
    #[error("-m/--memory-limit must be at least 1 (megabyte)")]
    MemoryZero,
    #[error("-t/--threads must be at least 1")]
    Threads,
    #[error("Maximum connections must be greater than 0 (-c/--conn-limit)")]
    ConnLimit,
    #[error("-o {name}: bad value {value:?} ({expected})")]
    Extended { name: String, value: String, expected: &'static str },
    #[error("Initial hashtable multiplier of {0} is too high (-o hashpower: at most 32)")]
    HashpowerTooHigh(u32),
    #[error("an index for {items} expected items needs {need_mb} MB, more than this machine's {have_mb} MB of memory")]
    IndexTooLarge { items: usize, need_mb: usize, have_mb: usize },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("the binary protocol is not offered: ringcache speaks memcached's text protocol, classic and meta (-B ascii or -B auto)")]
    BinaryProtocol,
    #[error("Invalid value for binding protocol: {0}\n -- should be one of auto, binary, or ascii")]
    BindingProtocol(String),
    #[error("-U {0}: UDP is not offered (memcached's UDP is off by default too); use -U 0 or leave it out")]
    Udp(String),
    #[error("--admin {0:?}: expected HOST:PORT (an address to bind, such as 127.0.0.1:9150)")]
    Admin(String),
    #[error("Could not open authfile [{}] for reading, error {source}", path.display())]
    AuthFileRead { path: PathBuf, source: std::io::Error },
    #[error("Authfile [{}] has a malformed entry. Should be 'user:password'", path.display())]
    AuthFileMalformed { path: PathBuf },
    #[error("ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens.")]
    AuthNotAscii,
    #[error("--log-format {0:?}: expected text or json")]
    LogFormat(String),
    #[error("-a {0:?}: expected permissions in octal, such as 0700")]
    UnixMask(String),
    #[error("{flag} {value:?}: expected a whole number from 1 to {max}")]
    Count { flag: &'static str, value: String, max: i64 },
    #[error(
        "-Z (TLS) needs a certificate and its key: --tls-cert FILE --tls-key FILE \
         (or -o ssl_chain_cert=FILE,ssl_key=FILE)"
    )]
    TlsFiles,
    #[error("-Z (TLS) serves the TCP port; it cannot be used with -s (a Unix socket)")]
    TlsUnix,
    #[error("-o {name}={value}: not offered by ringcache's TLS ({why})")]
    TlsOption { name: String, value: String, why: &'static str },
    #[error("reply_buffer_limit {0} is out of range (1k to 1g)")]
    ReplyBufferRange(usize),
    #[error(
        "-m {memory_mb} is too small for {shards} shards with -I {item}: each shard needs at least {per_shard_mb} MB \
         (2 segments that hold the largest item); use at least -m {need_mb} or fewer shards (-t)"
    )]
    MemoryPerShard { memory_mb: usize, shards: usize, item: usize, per_shard_mb: usize, need_mb: usize },
    #[error(
        "-o read_buf_mem_limit={given_mb} is too small for {shards} shards: each shard's share must hold one \
         request of {per_shard_mb} MB (a value of -I plus its command line, or a long multi-get line); \
         use at least {need_mb}"
    )]
    ReadBufTooSmall { given_mb: usize, shards: usize, per_shard_mb: usize, need_mb: usize },
}

impl ConfigError {
    /// memcached's exit status for a bad setting (`EX_USAGE`).
    pub const EXIT_STATUS: u8 = 64;

    /// The exit status for this refusal: memcached's 1 for a password file it cannot
    /// read or parse, `EX_USAGE` for the rest.
    pub fn exit_status(&self) -> u8 {
        match self {
            ConfigError::AuthFileRead { .. } | ConfigError::AuthFileMalformed { .. } => 1,
            _ => Self::EXIT_STATUS,
        }
    }
}

/// Reads and parses a `-Y` password file.
pub fn load_auth_file(path: &std::path::Path) -> Result<ringcache_core::protocol::auth::Users, ConfigError> {
    let text = std::fs::read(path).map_err(|source| ConfigError::AuthFileRead { path: path.to_path_buf(), source })?;
    ringcache_core::protocol::auth::Users::parse(&text)
        .map_err(|_| ConfigError::AuthFileMalformed { path: path.to_path_buf() })
}

/// Parses `1048576`, `512k`, `2m`, `1g` (case-insensitive).
pub fn parse_size(s: &str) -> Result<usize, ConfigError> {
    let t = s.trim();
    let (digits, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1usize << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: usize = digits.parse().map_err(|_| ConfigError::Size(s.to_string()))?;
    n.checked_mul(mult).ok_or_else(|| ConfigError::Size(s.to_string()))
}

/// The `-o` options ringcache understands, as given (last one wins).
#[derive(Debug, Default)]
struct Extended {
    hashpower: Option<u32>,
    idle_timeout: Option<u32>,
    request_timeout: Option<u32>,
    write_timeout: Option<u32>,
    reply_buffer_limit: Option<String>,
    read_buf_mem_limit: Option<u64>,
    shutdown_grace: Option<u32>,
    ssl_chain_cert: Option<PathBuf>,
    ssl_key: Option<PathBuf>,
    /// Names of options memcached has that do not apply here.
    ignored: Vec<String>,
}

fn number<T: std::str::FromStr>(name: &str, value: &str, expected: &'static str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::Extended { name: name.into(), value: value.into(), expected })
}

impl Extended {
    fn parse(options: &[String]) -> Result<Self, ConfigError> {
        let mut e = Extended::default();
        for option in options.iter().flat_map(|o| o.split(',')).filter(|o| !o.is_empty()) {
            let (name, value) = option.split_once('=').unwrap_or((option, ""));
            const SECONDS: &str = "whole seconds, 0 for none";
            match name {
                "hashpower" => e.hashpower = Some(number(name, value, "a power of two, 12 to 32")?),
                "idle_timeout" => e.idle_timeout = Some(number(name, value, SECONDS)?),
                "request_timeout" => e.request_timeout = Some(number(name, value, SECONDS)?),
                "write_timeout" => e.write_timeout = Some(number(name, value, SECONDS)?),
                "shutdown_grace" => e.shutdown_grace = Some(number(name, value, "whole seconds")?),
                "read_buf_mem_limit" => e.read_buf_mem_limit = Some(number(name, value, "megabytes")?),
                "reply_buffer_limit" => {
                    parse_size(value)?;
                    e.reply_buffer_limit = Some(value.to_string());
                }
                "ssl_chain_cert" => e.ssl_chain_cert = Some(PathBuf::from(value)),
                "ssl_key" => e.ssl_key = Some(PathBuf::from(value)),
                // memcached's defaults, which are what ringcache's TLS does.
                "ssl_verify_mode" if value.trim() == "0" => {}
                "ssl_keyformat" if value.trim() == "1" => {}
                "ssl_min_version" if value.trim() == "tlsv1.2" => {}
                // Settings that would change who may connect or how: refused rather than
                // ignored, so that a setting meant to protect is never silently dropped.
                "ssl_verify_mode" | "ssl_ca_cert" | "ssl_keyformat" | "ssl_ciphers" | "ssl_min_version"
                | "ssl_kernel_tls" => {
                    let why = match name {
                        "ssl_verify_mode" | "ssl_ca_cert" => "client certificates are not checked",
                        "ssl_keyformat" => "keys are read as PEM only",
                        "ssl_ciphers" => "rustls's safe default cipher suites are used",
                        "ssl_min_version" => "TLS 1.2 and 1.3 are offered",
                        _ => "kernel TLS is not used",
                    };
                    return Err(ConfigError::TlsOption { name: name.into(), value: value.into(), why });
                }
                _ => e.ignored.push(name.to_string()),
            }
        }
        Ok(e)
    }
}

/// Defaults of the connection bounds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u32 = 30;
pub const DEFAULT_WRITE_TIMEOUT_SECS: u32 = 30;
pub const DEFAULT_REPLY_BUFFER_LIMIT: usize = 1 << 20;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u32 = 5;

fn seconds(s: u32) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(u64::from(s)))
}

/// Physical memory of this machine in bytes (0 if unknown).
pub fn physical_memory() -> usize {
    // SAFETY: sysconf reads system constants.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    if pages <= 0 || page <= 0 {
        return 0;
    }
    (pages as usize).saturating_mul(page as usize)
}

fn mb_up(bytes: usize) -> usize {
    bytes.div_ceil(1 << 20)
}

impl Config {
    /// How many shards `-m` can feed (each needs two segments that hold the largest item).
    pub fn max_shards_for_memory(&self) -> usize {
        (self.memory_limit_bytes / ringcache_core::store::min_memory_per_shard(self.max_item_size)).max(1)
    }

    /// Checks the settings that depend on the shard count, and sizes the automatic
    /// `read_buf_mem_limit`: `max_request` is the most request bytes one connection may
    /// hold beyond its base buffer.
    pub fn fit_to_shards(&mut self, shards: usize, max_request: usize) -> Result<(), ConfigError> {
        let per_shard = ringcache_core::store::min_memory_per_shard(self.max_item_size);
        if self.memory_limit_bytes / shards < per_shard {
            return Err(ConfigError::MemoryPerShard {
                memory_mb: self.memory_limit_bytes >> 20,
                shards,
                item: self.max_item_size,
                per_shard_mb: mb_up(per_shard),
                need_mb: mb_up(per_shard * shards),
            });
        }
        let limit = &mut self.connections.read_buf_mem_limit;
        if self.read_buf_mem_limit_given {
            if *limit / shards < max_request {
                return Err(ConfigError::ReadBufTooSmall {
                    given_mb: *limit >> 20,
                    shards,
                    per_shard_mb: mb_up(max_request),
                    need_mb: mb_up(max_request * shards),
                });
            }
        } else {
            // Room for two of the largest requests per shard, and at least 64 MB in all.
            *limit = (shards * 2 * max_request).max(DEFAULT_READ_BUF_MEM_LIMIT);
        }
        Ok(())
    }
}

/// The least automatic `read_buf_mem_limit`.
pub const DEFAULT_READ_BUF_MEM_LIMIT: usize = 64 << 20;

impl Args {
    /// Flags memcached has that ringcache ignores, as they were given (with `-o`
    /// options, by name).
    pub fn ignored_flags(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        let checks: [(&'static str, bool); 5] = [
            ("-u", self.user.is_some()),
            ("-n", self.slab_min_size.is_some()),
            ("-f", self.slab_growth_factor.is_some()),
            ("-D", self.delimiter.is_some()),
            ("-k", self.lock_memory),
        ];
        for (flag, given) in checks {
            if given {
                v.push(flag.to_string());
            }
        }
        if let Ok(e) = Extended::parse(&self.extended) {
            v.extend(e.ignored.into_iter().map(|name| format!("-o {name}")));
        }
        v
    }

    /// Resolves flags over the config file over defaults, refusing settings that
    /// cannot work.
    /// The logging settings (the `-v` count, and whether lines are JSON), needed before
    /// the other settings are checked so that refusals are logged as asked. A config
    /// file that cannot be read counts for nothing here (`resolve` refuses it), and a
    /// format other than json means text here (`resolve` refuses a bad one).
    pub fn logging(&self) -> (u8, bool) {
        let file: FileConfig = self
            .config
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| toml::from_str(&text).ok())
            .unwrap_or_default();
        let format = self.log_format.clone().or(file.log_format);
        (self.verbose.max(file.verbose.unwrap_or(0)), format.as_deref() == Some("json"))
    }

    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.clone(), source })?
            }
            None => FileConfig::default(),
        };
        let ext = Extended::parse(&self.extended)?;
        let log_json = match self.log_format.clone().or(file.log_format.clone()).as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => return Err(ConfigError::LogFormat(other.to_string())),
        };
        let auth = match self.auth_file.clone().or(file.auth_file.clone()) {
            Some(path) => {
                let users = load_auth_file(&path)?;
                Some((path, users))
            }
            None => None,
        };
        let item = self.max_item_size.clone().or(file.max_item_size).unwrap_or_else(|| "1m".into());
        let max_item_size = parse_size(&item)?;
        if !(1024..=64 << 20).contains(&max_item_size) {
            return Err(ConfigError::ItemSizeRange(max_item_size));
        }
        let memory_mb = self.memory_limit.or(file.memory_limit).unwrap_or(64);
        if memory_mb == 0 {
            return Err(ConfigError::MemoryZero);
        }
        let memory_limit_bytes = usize::try_from(memory_mb).unwrap_or(usize::MAX).saturating_mul(1 << 20);
        if max_item_size > memory_limit_bytes / 2 {
            return Err(ConfigError::ItemSizeOverHalfMemory { item: max_item_size, memory_mb });
        }
        let threads = self.threads.or(file.threads);
        if threads == Some(0) {
            return Err(ConfigError::Threads);
        }
        let conn_limit = self.conn_limit.or(file.conn_limit).unwrap_or(1024);
        if conn_limit == 0 {
            return Err(ConfigError::ConnLimit);
        }
        let hashpower = ext.hashpower.or(file.hashpower);
        if let Some(p) = hashpower.filter(|&p| p > 32) {
            return Err(ConfigError::HashpowerTooHigh(p));
        }
        let expected_items = self.expected_items.or(file.expected_items).or_else(|| hashpower.map(|p| 1usize << p));
        if let Some(items) = expected_items {
            let need = ringcache_core::store::index::Index::bytes_for_expected_items(items);
            let have = physical_memory();
            if have > 0 && need > have {
                return Err(ConfigError::IndexTooLarge { items, need_mb: need >> 20, have_mb: have >> 20 });
            }
        }
        let reply_buffer_limit = match ext.reply_buffer_limit.or(file.reply_buffer_limit) {
            Some(s) => parse_size(&s)?,
            None => DEFAULT_REPLY_BUFFER_LIMIT,
        };
        if !(1024..=1 << 30).contains(&reply_buffer_limit) {
            return Err(ConfigError::ReplyBufferRange(reply_buffer_limit));
        }
        let read_buf_mem_limit = ext.read_buf_mem_limit.or(file.read_buf_mem_limit);
        let protocol = self.protocol.clone().or(file.protocol.clone());
        let binding_protocol = match protocol.as_deref() {
            // As memcached: -Y means ascii, and refuses any other protocol.
            None if auth.is_some() => "ascii",
            Some("auto") if auth.is_some() => return Err(ConfigError::AuthNotAscii),
            None | Some("auto") => "auto-negotiate",
            Some("ascii") => "ascii",
            Some("binary") => return Err(ConfigError::BinaryProtocol),
            Some(other) => return Err(ConfigError::BindingProtocol(other.to_string())),
        };
        let udp_port = self.udp_port.clone().or(file.udp_port.map(|p| p.to_string()));
        match udp_port.as_deref().map(str::trim) {
            None | Some("0") => {}
            Some(other) => return Err(ConfigError::Udp(other.to_string())),
        }
        let count = |flag: &'static str, value: &Option<String>, max: i64| -> Result<Option<i64>, ConfigError> {
            value
                .as_deref()
                .map(|v| match v.trim().parse::<i64>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(ConfigError::Count { flag, value: v.to_string(), max }),
                })
                .transpose()
        };
        let backlog_given = self.listen_backlog.clone().or(file.listen_backlog.map(|n| n.to_string()));
        let backlog = count("-b", &backlog_given, i64::from(i32::MAX))?.unwrap_or(1024) as i32;
        let reqs_given = self.max_reqs_per_event.clone().or(file.max_reqs_per_event.map(|n| n.to_string()));
        let reqs_per_event = count("-R", &reqs_given, i64::from(u32::MAX))?.map(|n| n as usize);
        let admin = match self.admin.clone().or(file.admin.clone()) {
            None => None,
            // A bare port (`9150` or `:9150`) binds the loopback address only.
            Some(a) => match a.trim_start_matches(':').parse::<u16>() {
                Ok(port) => Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
                Err(_) => Some(
                    std::net::ToSocketAddrs::to_socket_addrs(a.as_str())
                        .ok()
                        .and_then(|mut addrs| addrs.next())
                        .ok_or(ConfigError::Admin(a))?,
                ),
            },
        };
        let unix_mask = match self.unix_mask.clone().or(file.unix_mask.clone()).as_deref() {
            None => 0o700,
            Some(m) => match u32::from_str_radix(m.trim(), 8) {
                Ok(mask) if mask <= 0o777 => mask,
                _ => return Err(ConfigError::UnixMask(m.to_string())),
            },
        };
        let cluster = crate::cluster::ClusterArgs {
            node_id: self.node_id.or(file.node_id),
            peers: self.peers.clone().or(file.peers.clone()),
            data_dir: self.data_dir.clone().or(file.data_dir.clone()),
            replication: self.replication.clone().or(file.replication.clone()),
            reads: self.reads.clone().or(file.reads.clone()),
            durability: self.durability.clone().or(file.durability.clone()),
            secret_file: self.cluster_secret_file.clone().or(file.cluster_secret_file.clone()),
            join: self.join || file.join.unwrap_or(false),
            prefer_leader: self.prefer_leader.or(file.prefer_leader),
        }
        .resolve()?;
        let unix_socket = self.unix_socket.clone().or(file.unix_socket.clone());
        let tls = if self.tls || file.tls.unwrap_or(false) {
            let cert = self.tls_cert.clone().or(ext.ssl_chain_cert.clone()).or(file.tls_cert.clone());
            let key = self.tls_key.clone().or(ext.ssl_key.clone()).or(file.tls_key.clone());
            match (cert, key) {
                _ if unix_socket.is_some() => return Err(ConfigError::TlsUnix),
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                _ => return Err(ConfigError::TlsFiles),
            }
        } else {
            // As memcached: certificate settings without -Z are not used.
            None
        };
        Ok(Config {
            cluster,
            tls,
            port: self.port.or(file.port).unwrap_or(11211),
            listen: self.listen.clone().or(file.listen).unwrap_or_else(|| "127.0.0.1".into()),
            memory_limit_bytes,
            conn_limit,
            threads,
            max_item_size,
            evictions: !(self.disable_evictions || file.disable_evictions.unwrap_or(false)),
            cas_enabled: !(self.disable_cas || file.disable_cas.unwrap_or(false)),
            flush_enabled: !(self.disable_flush_all || file.disable_flush_all.unwrap_or(false)),
            shutdown_command: self.enable_shutdown || file.enable_shutdown.unwrap_or(false),
            backlog,
            binding_protocol,
            reqs_per_event,
            daemon: self.daemon || file.daemon.unwrap_or(false),
            pidfile: self.pidfile.clone().or(file.pidfile.clone()),
            admin,
            admin_token: self.admin_token.clone().or(file.admin_token.clone()),
            unix_socket,
            unix_mask,
            verbose: self.verbose.max(file.verbose.unwrap_or(0)),
            log_json,
            auth,
            memory_file: self.memory_file.clone().or(file.memory_file),
            huge_pages: self.huge_pages || self.large_pages || file.huge_pages.unwrap_or(false),
            expected_items,
            connections: ConnectionLimits {
                idle_timeout: seconds(ext.idle_timeout.or(file.idle_timeout).unwrap_or(0)),
                request_timeout: seconds(
                    ext.request_timeout.or(file.request_timeout).unwrap_or(DEFAULT_REQUEST_TIMEOUT_SECS),
                ),
                write_timeout: seconds(ext.write_timeout.or(file.write_timeout).unwrap_or(DEFAULT_WRITE_TIMEOUT_SECS)),
                reply_buffer_limit,
                read_buf_mem_limit: read_buf_mem_limit
                    .map_or(0, |mb| usize::try_from(mb).unwrap_or(usize::MAX).saturating_mul(1 << 20)),
            },
            shutdown_grace: Duration::from_secs(u64::from(
                self.shutdown_grace
                    .or(ext.shutdown_grace)
                    .or(file.shutdown_grace)
                    .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS),
            )),
            read_buf_mem_limit_given: read_buf_mem_limit.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["ringcache"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).map_err(|e| e.to_string())?.resolve().map_err(|e| e.to_string())
    }

    fn ok(args: &[&str]) -> Config {
        match resolve(args) {
            Ok(c) => c,
            Err(e) => panic!("{args:?} refused: {e}"),
        }
    }

    fn refused(args: &[&str]) -> String {
        match resolve(args) {
            Ok(c) => panic!("{args:?} accepted: {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("1m").ok(), Some(1 << 20));
        assert_eq!(parse_size("512k").ok(), Some(512 << 10));
        assert_eq!(parse_size("2048").ok(), Some(2048));
        assert_eq!(parse_size("1g").ok(), Some(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999k").is_err());
    }

    /// `ops/ringcache.toml` documents every key a config file takes (set, or commented
    /// out at its default), and the server takes it as it is.
    #[test]
    fn the_example_config_names_every_setting_and_is_taken() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ops/ringcache.toml");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let file: Result<FileConfig, _> = toml::from_str(&text);
        assert!(file.is_ok(), "{file:?}");
        let keys = [
            "port",
            "listen",
            "memory_limit",
            "conn_limit",
            "threads",
            "max_item_size",
            "disable_evictions",
            "disable_cas",
            "disable_flush_all",
            "enable_shutdown",
            "memory_file",
            "huge_pages",
            "expected_items",
            "hashpower",
            "idle_timeout",
            "request_timeout",
            "write_timeout",
            "reply_buffer_limit",
            "read_buf_mem_limit",
            "shutdown_grace",
            "verbose",
            "log_format",
            "auth_file",
            "listen_backlog",
            "protocol",
            "udp_port",
            "max_reqs_per_event",
            "daemon",
            "pidfile",
            "unix_socket",
            "unix_mask",
            "node_id",
            "peers",
            "data_dir",
            "replication",
            "reads",
            "durability",
            "cluster_secret_file",
            "join",
            "prefer_leader",
            "tls",
            "tls_cert",
            "tls_key",
        ];
        for key in keys {
            let named = text.lines().any(|l| l.trim_start_matches(['#', ' ']).starts_with(&format!("{key} =")));
            assert!(named, "ops/ringcache.toml does not document `{key}`");
            // Each key is one the file format takes (an unknown key is refused).
            let probe = format!("{key} = {}", if key == "listen" { "\"x\"" } else { "0" });
            let refused =
                toml::from_str::<FileConfig>(&probe).err().is_some_and(|e| e.to_string().contains("unknown field"));
            assert!(!refused, "`{key}` is not a config file key");
        }
        let c = resolve(&["--config", path]);
        assert!(c.is_ok(), "the example is taken as it is: {c:?}");
        // Keys that are flags take effect, and a flag wins over the file.
        let custom = std::env::temp_dir().join(format!("ringcache-config-{}.toml", std::process::id()));
        std::fs::write(
            &custom,
            "max_reqs_per_event = 5\nlisten_backlog = 64\nenable_shutdown = true\nprotocol = \"ascii\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = ok(&["--config", custom.to_str().unwrap_or_default(), "-b", "128"]);
        assert_eq!(
            (c.reqs_per_event, c.backlog, c.shutdown_command, c.binding_protocol),
            (Some(5), 128, true, "ascii")
        );
        let _ = std::fs::remove_file(&custom);
    }

    #[test]
    fn memcached_flags_are_accepted() {
        let args = Args::try_parse_from([
            "ringcache",
            "-p",
            "1234",
            "-U",
            "0",
            "-u",
            "root",
            "-R",
            "20",
            "-B",
            "ascii",
            "-o",
            "modern",
            "-m",
            "8",
            "-c",
            "10",
            "-t",
            "2",
            "-I",
            "2m",
            "-M",
            "-C",
            "-F",
            "-vv",
        ])
        .map_err(|e| e.to_string());
        let args = match args {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(args.ignored_flags(), vec!["-u", "-o modern"]);
        let c = args.resolve().map_err(|e| e.to_string());
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!((c.port, c.memory_limit_bytes, c.conn_limit, c.threads), (1234, 8 << 20, 10, Some(2)));
        assert_eq!(c.max_item_size, 2 << 20);
        assert!(!c.evictions && !c.cas_enabled && !c.flush_enabled);
        assert_eq!(c.verbose, 2);
        assert_eq!((c.binding_protocol, c.reqs_per_event, c.backlog), ("ascii", Some(20), 1024));
    }

    #[test]
    fn config_file_under_flags() {
        let dir = std::env::temp_dir().join(format!("ringcache-config-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("c.toml");
        let _ = std::fs::write(&path, "port = 4000\nmemory_limit = 16\nthreads = 3\nidle_timeout = 7\n");
        let c = ok(&["--config", path.to_str().unwrap_or(""), "-t", "1"]);
        assert_eq!((c.port, c.memory_limit_bytes, c.threads), (4000, 16 << 20, Some(1)));
        assert_eq!(c.connections.idle_timeout, Some(Duration::from_secs(7)));
    }

    #[test]
    fn extended_options_set_connection_bounds() {
        let c = ok(&["-o", "idle_timeout=3,request_timeout=0", "-o", "write_timeout=9,reply_buffer_limit=64k"]);
        let l = c.connections;
        assert_eq!(l.idle_timeout, Some(Duration::from_secs(3)));
        assert_eq!(l.request_timeout, None, "0 turns the bound off");
        assert_eq!(l.write_timeout, Some(Duration::from_secs(9)));
        assert_eq!(l.reply_buffer_limit, 64 << 10);
        let d = ok(&[]).connections;
        assert_eq!(d.idle_timeout, None, "memcached's default: no idle timeout");
        assert_eq!(d.request_timeout, Some(Duration::from_secs(u64::from(DEFAULT_REQUEST_TIMEOUT_SECS))));
        assert_eq!(ok(&["-o", "read_buf_mem_limit=32"]).connections.read_buf_mem_limit, 32 << 20);
        assert_eq!(ok(&["-o", "hashpower=20"]).expected_items, Some(1 << 20));
        assert_eq!(ok(&["--shutdown-grace", "2"]).shutdown_grace, Duration::from_secs(2));
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert!(refused(&["-c", "0"]).contains("Maximum connections must be greater than 0"));
        assert!(refused(&["-m", "0"]).contains("at least 1"));
        assert!(refused(&["-t", "0"]).contains("at least 1"));
        assert!(refused(&["-m", "64", "-I", "64m"]).contains("higher than 1/2 of memory max"));
        assert!(refused(&["-m", "64", "-I", "33m"]).contains("higher than 1/2 of memory max"));
        ok(&["-m", "64", "-I", "32m"]);
        assert!(refused(&["-I", "65m"]).contains("out of range"));
        assert!(refused(&["-o", "hashpower=40"]).contains("too high"));
        assert!(refused(&["--expected-items", "1000000000000"]).contains("more than this machine"));
        assert!(refused(&["-o", "idle_timeout=soon"]).contains("idle_timeout"));
        assert!(refused(&["-o", "idle_timeout=-1"]).contains("idle_timeout"));
        assert!(refused(&["-o", "reply_buffer_limit=1"]).contains("out of range"));
        assert!(refused(&["-o", "read_buf_mem_limit=lots"]).contains("read_buf_mem_limit"));
    }

    #[test]
    fn tls_takes_its_files_from_flags_options_or_the_file() {
        assert_eq!(ok(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).tls, None, "off without -Z, as memcached");
        let files = |c: &str, k: &str| Some(TlsFiles { cert: c.into(), key: k.into() });
        assert_eq!(ok(&["-Z", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).tls, files("c.pem", "k.pem"));
        assert_eq!(ok(&["--enable-ssl", "-o", "ssl_chain_cert=a,ssl_key=b"]).tls, files("a", "b"));
        assert_eq!(ok(&["-Z", "-o", "ssl_chain_cert=a,ssl_key=b", "--tls-key", "k"]).tls, files("a", "k"));
        ok(&["-Z", "-o", "ssl_chain_cert=a,ssl_key=b,ssl_verify_mode=0,ssl_keyformat=1,ssl_min_version=tlsv1.2"]);
        assert!(refused(&["-Z"]).contains("needs a certificate and its key"));
        assert!(refused(&["-Z", "--tls-key", "k"]).contains("needs a certificate and its key"));
        assert!(refused(&["-Z", "--tls-cert", "c", "--tls-key", "k", "-s", "/tmp/x"]).contains("-s"));
        assert!(refused(&["-o", "ssl_verify_mode=1"]).contains("client certificates are not checked"));
        assert!(refused(&["-o", "ssl_ciphers=HIGH"]).contains("ssl_ciphers"));
        let path = std::env::temp_dir().join(format!("ringcache-tls-config-{}.toml", std::process::id()));
        std::fs::write(&path, "tls = true\ntls_cert = \"f.pem\"\ntls_key = \"g.pem\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let config = path.to_str().unwrap_or_default();
        assert_eq!(ok(&["--config", config]).tls, files("f.pem", "g.pem"));
        assert_eq!(ok(&["--config", config, "--tls-cert", "h.pem"]).tls, files("h.pem", "g.pem"), "a flag wins");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_admin_listener_binds_loopback_unless_told_otherwise() {
        let loopback: std::net::SocketAddr = "127.0.0.1:9150".parse().expect("addr");
        assert_eq!(ok(&["--admin", "9150"]).admin, Some(loopback));
        assert_eq!(ok(&["--admin", ":9150"]).admin, Some(loopback));
        assert_eq!(ok(&["--admin", "0.0.0.0:9150"]).admin, Some("0.0.0.0:9150".parse().expect("addr")));
        assert_eq!(ok(&[]).admin, None, "off by default");
        assert!(refused(&["--admin", "no such host"]).contains("--admin"));
    }

    #[test]
    fn shard_count_must_fit_the_memory() {
        let mut c = ok(&["-m", "64", "-I", "16m"]);
        // 16 MiB segments, two per shard: 64 MB feeds two shards, not three.
        assert_eq!(c.max_shards_for_memory(), 2);
        assert!(c.fit_to_shards(2, 17 << 20).is_ok());
        assert!(c.connections.read_buf_mem_limit >= 2 * 2 * (17 << 20), "automatic read_buf_mem_limit");
        let e = c.fit_to_shards(3, 17 << 20).map_err(|e| e.to_string());
        assert!(matches!(&e, Err(m) if m.contains("too small for 3 shards")), "{e:?}");
        let mut c = ok(&["-m", "64", "-o", "read_buf_mem_limit=8"]);
        let e = c.fit_to_shards(2, 8 << 20).map_err(|e| e.to_string());
        assert!(matches!(&e, Err(m) if m.contains("read_buf_mem_limit=8 is too small")), "{e:?}");
        let mut c = ok(&["-m", "64", "-o", "read_buf_mem_limit=16"]);
        assert!(c.fit_to_shards(2, 8 << 20).is_ok());
        assert_eq!(c.connections.read_buf_mem_limit, 16 << 20, "a given limit is kept");
    }
}
