//! The command line (memcached's flags, with memcached's meanings) and the optional TOML
//! config file; flags given on the command line override the file.

use std::path::PathBuf;

use clap::{ArgAction, Parser};
use serde::Deserialize;

/// Command-line flags. Flags memcached has that do not apply here are accepted and
/// ignored with a warning, so scripts written for memcached start ringcache unchanged.
#[derive(Debug, Parser)]
#[command(name = "ringcache", version, about = "A thread-per-core, memcached-compatible cache")]
pub struct Args {
    /// TCP port to listen on.
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
    /// Largest item, with k/m suffixes (default 1m, at most 64m).
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
    /// Keep item memory in this file (one per shard: PATH.shardN) so that items survive
    /// a restart; metadata is saved on SIGUSR1 and on a graceful stop (memcached's -e).
    #[arg(short = 'e', long = "memory-file")]
    pub memory_file: Option<PathBuf>,
    /// Ask for huge pages for item memory (falls back with a warning).
    #[arg(long = "huge-pages")]
    pub huge_pages: bool,
    /// Expected number of items, to size the hash index up front (it grows anyway).
    #[arg(long = "expected-items")]
    pub expected_items: Option<usize>,
    /// TOML config file (keys as the long flag names, with underscores).
    #[arg(long = "config")]
    pub config: Option<PathBuf>,

    // memcached flags accepted for compatibility and ignored.
    #[arg(short = 'U', long = "udp-port", hide = true)]
    pub udp_port: Option<String>,
    #[arg(short = 'u', long = "user", hide = true)]
    pub user: Option<String>,
    #[arg(short = 'R', long = "max-reqs-per-event", hide = true)]
    pub max_reqs_per_event: Option<String>,
    #[arg(short = 'B', long = "protocol", hide = true)]
    pub protocol: Option<String>,
    #[arg(short = 'o', long = "extended", hide = true)]
    pub extended: Vec<String>,
    #[arg(short = 'b', long = "listen-backlog", hide = true)]
    pub listen_backlog: Option<String>,
    #[arg(short = 'n', long = "slab-min-size", hide = true)]
    pub slab_min_size: Option<String>,
    #[arg(short = 'f', long = "slab-growth-factor", hide = true)]
    pub slab_growth_factor: Option<String>,
    #[arg(short = 'D', hide = true)]
    pub delimiter: Option<String>,
    #[arg(short = 'P', long = "pidfile", hide = true)]
    pub pidfile: Option<String>,
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
    pub memory_file: Option<PathBuf>,
    pub huge_pages: Option<bool>,
    pub expected_items: Option<usize>,
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
    pub verbose: u8,
    pub memory_file: Option<PathBuf>,
    pub huge_pages: bool,
    pub expected_items: Option<usize>,
}

/// A configuration error.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("bad config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("bad item size {0:?}: expected a number with an optional k or m suffix")]
    ItemSize(String),
    #[error("item size {0} is out of range (1k to 64m)")]
    ItemSizeRange(usize),
    #[error("-t/--threads must be at least 1")]
    Threads,
}

/// memcached's `-o hashpower=N` (possibly among other comma-separated options).
fn hashpower(option: &str) -> Option<u32> {
    option.split(',').find_map(|o| o.strip_prefix("hashpower=")).and_then(|n| n.parse().ok())
}

/// Parses `1048576`, `512k`, `2m` (case-insensitive).
pub fn parse_size(s: &str) -> Result<usize, ConfigError> {
    let t = s.trim();
    let (digits, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1024),
        Some('m' | 'M') => (&t[..t.len() - 1], 1024 * 1024),
        _ => (t, 1),
    };
    let n: usize = digits.parse().map_err(|_| ConfigError::ItemSize(s.to_string()))?;
    n.checked_mul(mult).ok_or_else(|| ConfigError::ItemSize(s.to_string()))
}

impl Args {
    /// Flags memcached has that ringcache ignores, as they were given.
    pub fn ignored_flags(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let checks: [(&'static str, bool); 11] = [
            ("-U", self.udp_port.is_some()),
            ("-u", self.user.is_some()),
            ("-R", self.max_reqs_per_event.is_some()),
            ("-B", self.protocol.is_some()),
            ("-o", self.extended.iter().any(|o| hashpower(o).is_none())),
            ("-b", self.listen_backlog.is_some()),
            ("-n", self.slab_min_size.is_some()),
            ("-f", self.slab_growth_factor.is_some()),
            ("-D", self.delimiter.is_some()),
            ("-P", self.pidfile.is_some()),
            ("-k", self.lock_memory),
        ];
        for (flag, given) in checks {
            if given {
                v.push(flag);
            }
        }
        v
    }

    /// Resolves flags over the config file over defaults.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.clone(), source })?
            }
            None => FileConfig::default(),
        };
        let item = self.max_item_size.clone().or(file.max_item_size).unwrap_or_else(|| "1m".into());
        let max_item_size = parse_size(&item)?;
        if !(1024..=64 << 20).contains(&max_item_size) {
            return Err(ConfigError::ItemSizeRange(max_item_size));
        }
        let threads = self.threads.or(file.threads);
        if threads == Some(0) {
            return Err(ConfigError::Threads);
        }
        Ok(Config {
            port: self.port.or(file.port).unwrap_or(11211),
            listen: self.listen.clone().or(file.listen).unwrap_or_else(|| "127.0.0.1".into()),
            memory_limit_bytes: (self.memory_limit.or(file.memory_limit).unwrap_or(64) as usize)
                .saturating_mul(1 << 20),
            conn_limit: self.conn_limit.or(file.conn_limit).unwrap_or(1024),
            threads,
            max_item_size,
            evictions: !(self.disable_evictions || file.disable_evictions.unwrap_or(false)),
            cas_enabled: !(self.disable_cas || file.disable_cas.unwrap_or(false)),
            flush_enabled: !(self.disable_flush_all || file.disable_flush_all.unwrap_or(false)),
            verbose: self.verbose,
            memory_file: self.memory_file.clone().or(file.memory_file),
            huge_pages: self.huge_pages || self.large_pages || file.huge_pages.unwrap_or(false),
            expected_items: self
                .expected_items
                .or(file.expected_items)
                .or_else(|| self.extended.iter().find_map(|o| hashpower(o)).map(|p| 1usize << p.min(40))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("1m").ok(), Some(1 << 20));
        assert_eq!(parse_size("512k").ok(), Some(512 << 10));
        assert_eq!(parse_size("2048").ok(), Some(2048));
        assert!(parse_size("lots").is_err());
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
        assert_eq!(args.ignored_flags(), vec!["-U", "-u", "-R", "-B", "-o"]);
        let c = args.resolve().map_err(|e| e.to_string());
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!((c.port, c.memory_limit_bytes, c.conn_limit, c.threads), (1234, 8 << 20, 10, Some(2)));
        assert_eq!(c.max_item_size, 2 << 20);
        assert!(!c.evictions && !c.cas_enabled && !c.flush_enabled);
        assert_eq!(c.verbose, 2);
    }

    #[test]
    fn config_file_under_flags() {
        let dir = std::env::temp_dir().join(format!("ringcache-config-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("c.toml");
        let _ = std::fs::write(&path, "port = 4000\nmemory_limit = 16\nthreads = 3\n");
        let args = Args::try_parse_from(["ringcache", "--config", path.to_str().unwrap_or(""), "-t", "1"]);
        let c = args.map_err(|e| e.to_string()).and_then(|a| a.resolve().map_err(|e| e.to_string()));
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!((c.port, c.memory_limit_bytes, c.threads), (4000, 16 << 20, Some(1)));
    }
}
