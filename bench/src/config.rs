//! The command line (clap derive) and its validation into a [`Config`] that the rest of the
//! tool runs from.

use crate::affinity;
use crate::verify;
use crate::workload::{KeyDist, KeySpace, Ratio, SizeDist, ValueSize, WorkloadError, WorkloadSpec};
use clap::Parser;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Load generator for memcached text-protocol servers (ringcache, memcached).
#[derive(Debug, Clone, Parser)]
#[command(name = "ringcache-bench", version, about, long_about = None)]
pub struct Cli {
    /// Servers as host:port, comma separated; keys are spread with libmemcached-compatible ketama.
    #[arg(long, default_value = "127.0.0.1:11211", value_delimiter = ',')]
    pub servers: Vec<String>,

    /// CPUs to pin worker threads to, one thread per CPU: "1", "0,1", "0-3".
    #[arg(long)]
    pub cpus: Option<String>,

    /// Worker threads when --cpus is not given (unpinned).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Connections per thread (to each server).
    #[arg(short = 'c', long, default_value_t = 50)]
    pub connections: usize,

    /// Requests in flight per connection (closed loop), or at most in flight (open loop).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,

    /// Open loop: total requests per second over all threads, sent at scheduled times; latency is
    /// then measured from the scheduled time (coordinated-omission corrected).
    #[arg(long)]
    pub rate: Option<f64>,

    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,

    /// Key length in bytes: "key:" followed by the zero-padded key index.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,

    /// Key popularity: uniform, zipf:S (e.g. zipf:0.99) or sequential.
    #[arg(long, default_value = "uniform")]
    pub key_dist: KeyDist,

    /// Operation weights GET:SET[:DELETE[:INCR[:CAS]]], e.g. 10:1 or 6:2:1:1:1 (missing ones are 0).
    #[arg(long, default_value = "10:1")]
    pub ratio: Ratio,

    /// Keys fetched by each get.
    #[arg(long, default_value_t = 1)]
    pub multiget: usize,

    /// Commands to send: classic (get/set/delete/incr/gets+cas) or meta (mg/ms/md/ma; a
    /// multiget is quiet mg lines ended by mn).
    #[arg(long, value_enum, default_value_t = Protocol::Classic)]
    pub protocol: Protocol,

    /// Value size in bytes: N, MIN-MAX (uniform), or lognormal:MEDIAN:SIGMA[:MAX] (heavy-tailed,
    /// clamped to 1..=MAX, MAX 65536 by default; the lower clamp is 16 with --verify).
    #[arg(long, default_value = "32")]
    pub value_size: ValueSize,

    /// Expiry time for sets, seconds (0 = never).
    #[arg(long, default_value_t = 0)]
    pub ttl: u32,

    /// Seed for key, operation and size choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Set every key once before measuring.
    #[arg(long)]
    pub prefill: bool,

    /// Measure for this many seconds (default 10 unless --requests is given).
    #[arg(long, conflicts_with = "requests")]
    pub duration: Option<f64>,

    /// Measure this many requests in total instead of a duration.
    #[arg(long)]
    pub requests: Option<u64>,

    /// Run this many seconds of load before measuring.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,

    /// Write verifiable values and check every value read; exit non-zero on any mismatch.
    #[arg(long)]
    pub verify: bool,

    /// A reply later than this (milliseconds) counts as a timeout; with no reply at all for ten
    /// times this, the run stops with an error.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,

    /// Write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Draw the measured phase's latency percentile spectrum into this PNG file.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,

    /// Never show the progress bars and per-second status line (they are shown only when stderr
    /// is a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// Which memcached text commands the operations are sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// `get`, `set`, `delete`, `incr`, `gets` + `cas`.
    Classic,
    /// `mg`, `ms`, `md`, `ma`, `mg ... c` + `ms ... C<unique>`; quiet `mg`s and `mn` for a
    /// multiget.
    Meta,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Classic => "classic",
            Protocol::Meta => "meta",
        }
    }
}

/// A command line that parses but cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error("server {0:?} is not host:port")]
    BadServer(String),
    #[error("cannot resolve server {0:?}: {1}")]
    Resolve(String, std::io::Error),
    #[error(transparent)]
    Cpus(#[from] affinity::AffinityError),
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("--rate must be a positive number of requests per second")]
    BadRate,
    #[error("{0} must be a finite, non-negative number of seconds")]
    BadSeconds(&'static str),
    #[error("--verify needs values of at least {0} bytes (--value-size)")]
    ValueTooSmallForVerify(usize),
    #[error("--multiget {0} is too large (at most 1000)")]
    MultigetTooLarge(usize),
}

/// One server: the name used for ketama and messages, and the address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
}

impl Server {
    pub fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopAt {
    Duration(Duration),
    Requests(u64),
}

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub servers: Vec<Server>,
    /// One entry per worker thread: the CPU it is pinned to, if any.
    pub cpus: Vec<Option<usize>>,
    pub connections: usize,
    pub pipeline: usize,
    pub rate: Option<f64>,
    pub protocol: Protocol,
    pub workload: WorkloadSpec,
    pub ttl: u32,
    pub seed: u64,
    pub prefill: bool,
    pub stop: StopAt,
    pub warmup: Duration,
    pub verify: bool,
    pub timeout: Duration,
}

fn seconds(v: f64, what: &'static str) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(v).map_err(|_| ConfigError::BadSeconds(what))
}

fn parse_server(s: &str) -> Result<Server, ConfigError> {
    let s = s.trim();
    let (host, port) = s.rsplit_once(':').ok_or_else(|| ConfigError::BadServer(s.to_string()))?;
    let port: u16 = port.parse().map_err(|_| ConfigError::BadServer(s.to_string()))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() {
        return Err(ConfigError::BadServer(s.to_string()));
    }
    let addr = (bare, port)
        .to_socket_addrs()
        .map_err(|e| ConfigError::Resolve(s.to_string(), e))?
        .next()
        .ok_or_else(|| ConfigError::Resolve(s.to_string(), std::io::Error::other("no addresses")))?;
    Ok(Server { host: host.to_string(), port, addr })
}

impl Config {
    pub fn from_cli(cli: &Cli) -> Result<Config, ConfigError> {
        let servers = cli.servers.iter().map(|s| parse_server(s)).collect::<Result<Vec<_>, _>>()?;
        let cpus = match &cli.cpus {
            Some(list) => affinity::parse_cpu_list(list)?.into_iter().map(Some).collect(),
            None => {
                if cli.threads == 0 {
                    return Err(ConfigError::Zero("--threads"));
                }
                vec![None; cli.threads]
            }
        };
        for (v, name) in
            [(cli.connections, "--connections"), (cli.pipeline, "--pipeline"), (cli.multiget, "--multiget")]
        {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if cli.multiget > 1000 {
            return Err(ConfigError::MultigetTooLarge(cli.multiget));
        }
        if let Some(r) = cli.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(ConfigError::BadRate);
            }
        }
        let stop = match (cli.requests, cli.duration) {
            (Some(0), _) => return Err(ConfigError::Zero("--requests")),
            (Some(n), _) => StopAt::Requests(n),
            (None, Some(d)) => StopAt::Duration(seconds(d, "--duration")?),
            (None, None) => StopAt::Duration(Duration::from_secs(10)),
        };
        let mut value_size = cli.value_size;
        if cli.verify {
            // A log-normal's lower clamp rises to the verify header; its upper one must fit it.
            if matches!(value_size.dist, SizeDist::LogNormal { .. }) {
                value_size.min = value_size.min.max(verify::HEADER_LEN);
            }
            if value_size.min < verify::HEADER_LEN || value_size.max < verify::HEADER_LEN {
                return Err(ConfigError::ValueTooSmallForVerify(verify::HEADER_LEN));
            }
        }
        Ok(Config {
            servers,
            cpus,
            connections: cli.connections,
            pipeline: cli.pipeline,
            rate: cli.rate,
            protocol: cli.protocol,
            workload: WorkloadSpec {
                keys: KeySpace::new(cli.keys, cli.key_size)?,
                dist: cli.key_dist,
                ratio: cli.ratio,
                multiget: cli.multiget,
                value_size,
            },
            ttl: cli.ttl,
            seed: cli.seed,
            prefill: cli.prefill,
            stop,
            warmup: seconds(cli.warmup, "--warmup")?,
            verify: cli.verify,
            timeout: Duration::from_millis(cli.timeout_ms.max(1)),
        })
    }

    pub fn threads(&self) -> usize {
        self.cpus.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<Config, ConfigError> {
        let mut v = vec!["ringcache-bench"];
        v.extend_from_slice(args);
        Config::from_cli(&Cli::try_parse_from(v).expect("clap accepts"))
    }

    #[test]
    fn defaults_are_runnable() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.servers.len(), 1);
        assert_eq!(c.servers[0].name(), "127.0.0.1:11211");
        assert_eq!(c.cpus, vec![None]);
        assert_eq!(c.stop, StopAt::Duration(Duration::from_secs(10)));
        assert_eq!(c.workload.ratio, Ratio::get_set(10, 1));
        assert_eq!(c.protocol, Protocol::Classic);
    }

    #[test]
    fn parses_the_full_surface() {
        let c = cfg(&[
            "--servers",
            "127.0.0.1:1,localhost:2",
            "--cpus",
            "0,1",
            "--connections",
            "4",
            "--pipeline",
            "8",
            "--rate",
            "5000",
            "--keys",
            "1000",
            "--key-size",
            "10",
            "--key-dist",
            "zipf:0.99",
            "--ratio",
            "1:1",
            "--multiget",
            "4",
            "--value-size",
            "20-40",
            "--ttl",
            "60",
            "--seed",
            "9",
            "--prefill",
            "--requests",
            "100",
            "--warmup",
            "0.5",
            "--verify",
            "--protocol",
            "meta",
        ])
        .unwrap();
        assert_eq!(c.servers[1].host, "localhost");
        assert_eq!(c.cpus, vec![Some(0), Some(1)]);
        assert_eq!(c.rate, Some(5000.0));
        assert_eq!(c.workload.dist, KeyDist::Zipf(0.99));
        assert_eq!(c.workload.value_size, ValueSize::uniform(20, 40));
        assert_eq!(c.stop, StopAt::Requests(100));
        assert_eq!(c.warmup, Duration::from_millis(500));
        assert!(c.prefill && c.verify);
        assert_eq!(c.protocol, Protocol::Meta);
    }

    #[test]
    fn rejects_bad_combinations() {
        assert!(matches!(cfg(&["--verify", "--value-size", "8"]), Err(ConfigError::ValueTooSmallForVerify(_))));
        assert!(matches!(cfg(&["--servers", "nohost"]), Err(ConfigError::BadServer(_))));
        assert!(matches!(cfg(&["--pipeline", "0"]), Err(ConfigError::Zero(_))));
        assert!(matches!(cfg(&["--rate", "0"]), Err(ConfigError::BadRate)));
        assert!(matches!(
            cfg(&["--keys", "100000", "--key-size", "6"]),
            Err(ConfigError::Workload(WorkloadError::KeySizeTooSmall { .. }))
        ));
        assert!(Cli::try_parse_from(["x", "--duration", "1", "--requests", "5"]).is_err());
        assert!(Cli::try_parse_from(["x", "--ratio", "abc"]).is_err());
        assert!(Cli::try_parse_from(["x", "--protocol", "binary"]).is_err());
        assert!(matches!(
            cfg(&["--verify", "--value-size", "lognormal:4:1:8"]),
            Err(ConfigError::ValueTooSmallForVerify(_))
        ));
    }

    #[test]
    fn verify_raises_the_lognormal_lower_clamp() {
        let c = cfg(&["--verify", "--value-size", "lognormal:100:1.5:4096", "--ratio", "6:2:1:1:1"]).unwrap();
        assert_eq!(c.workload.value_size.min, verify::HEADER_LEN);
        assert_eq!(c.workload.value_size.max, 4096);
        assert_eq!(c.workload.ratio, Ratio { get: 6, set: 2, delete: 1, incr: 1, cas: 1 });
        let plain = cfg(&["--value-size", "lognormal:100:1.5"]).unwrap();
        assert_eq!(plain.workload.value_size.min, 1);
    }
}
