//! `ringcache-ctl`: the operator's tool for a replica group, over the client port.
//!
//! - `status`: every node's view of every shard's group (`stats replication`) as a table:
//!   role, leader, term, commit and applied index, each follower's match index and lag
//!   (on a leader), the batching achieved (writes per entry, entries per fsync, bytes per
//!   append message) and fsyncs in the last second.
//! - `add ID IP:PORT`: adds node ID (started with `--join`, its peer port base at
//!   IP:PORT) to every shard's group as a learner, waits until it has caught up, then
//!   makes it a voter.
//! - `remove ID`: removes node ID from every shard's group (leadership it holds is
//!   handed to another node first).
//! - `transfer SHARD ID`: hands shard SHARD's leadership to node ID.
//!
//! - `stats`, `watch`, `dump`, `metrics`: one node or many, looked at (see `observe`).
//!
//! Membership commands are authorised by a token made with the cluster secret
//! (`--cluster-secret-file`), which never travels.

mod conn;
mod observe;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ringcache_replication::handshake::admin_token;

use conn::ask;

#[derive(Parser)]
#[command(name = "ringcache-ctl", version, about = "Operate and watch ringcache nodes and replica groups")]
struct Cli {
    /// The nodes, as their client addresses (HOST:PORT, comma-separated).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// The cluster secret (needed to change membership).
    #[arg(long = "cluster-secret-file")]
    secret_file: Option<PathBuf>,
    /// How long to wait for a change to complete, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every node's view of every shard's group.
    Status,
    /// Add node ID (its peer port base at ADDR) as a voter, after it catches up.
    Add { id: u64, addr: String },
    /// Remove node ID.
    Remove { id: u64 },
    /// Hand shard SHARD's leadership to node ID.
    Transfer { shard: usize, id: u64 },
    /// Each node's figures as a table (connections, items, memory, gets, sets, hits,
    /// evictions, expirations), and their total.
    Stats,
    /// The stats table again every INTERVAL seconds, counts as rates (COUNT times; 0:
    /// until interrupted).
    Watch {
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Each node's items (key, expiry, last access, CAS, fetched, class, size), at most
    /// LIMIT a node.
    Dump {
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// A node's Prometheus metrics (its --admin address).
    Metrics {
        admin: String,
        #[arg(long)]
        token: Option<String>,
    },
}

/// `stats replication` of a node: shard -> name -> value.
fn replication(node: &str) -> Result<BTreeMap<usize, BTreeMap<String, String>>, String> {
    let mut shards: BTreeMap<usize, BTreeMap<String, String>> = BTreeMap::new();
    for line in ask(node, "stats replication")? {
        let Some(rest) = line.strip_prefix("STAT shard:") else { continue };
        let Some((shard, rest)) = rest.split_once(':') else { continue };
        let Some((name, value)) = rest.split_once(' ') else { continue };
        if let Ok(shard) = shard.parse() {
            shards.entry(shard).or_default().insert(name.to_string(), value.to_string());
        }
    }
    if shards.is_empty() {
        return Err(format!("{node}: not in a replica group"));
    }
    Ok(shards)
}

fn status(cli: &Cli) -> Result<(), String> {
    println!(
        "{:<22} {:>5} {:>4} {:<12} {:>6} {:>6} {:>10} {:>10} {:>8} {:>9} {:>10} {:>9} {:>8} voters",
        "node",
        "shard",
        "id",
        "role",
        "leader",
        "term",
        "commit",
        "applied",
        "max lag",
        "writes/e",
        "entries/fs",
        "bytes/app",
        "fsync/s"
    );
    for node in &cli.nodes {
        match replication(node) {
            Ok(shards) => {
                for (shard, s) in shards {
                    let get = |k: &str| s.get(k).cloned().unwrap_or_default();
                    let lag =
                        s.iter().filter(|(k, _)| k.ends_with(":lag")).filter_map(|(_, v)| v.parse::<u64>().ok()).max();
                    println!(
                        "{:<22} {:>5} {:>4} {:<12} {:>6} {:>6} {:>10} {:>10} {:>8} {:>9} {:>10} {:>9} {:>8} {}",
                        node,
                        shard,
                        get("node"),
                        get("role"),
                        get("leader"),
                        get("term"),
                        get("commit"),
                        get("applied"),
                        lag.map_or("-".into(), |l| l.to_string()),
                        get("writes_per_entry"),
                        get("entries_per_fsync"),
                        get("bytes_per_append"),
                        get("fsyncs_per_second"),
                        get("voters")
                    );
                    // On a leader: each peer's match index and lag.
                    for (k, matched) in s.iter().filter(|(k, _)| k.starts_with("peer:") && k.ends_with(":match")) {
                        let peer = &k["peer:".len()..k.len() - ":match".len()];
                        let lag = s.get(&format!("peer:{peer}:lag")).cloned().unwrap_or_default();
                        println!("{:<22} {:>5}      peer {peer}: match {matched}, lag {lag}", "", shard);
                    }
                }
            }
            Err(e) => println!("{node:<22} unreachable: {e}"),
        }
    }
    Ok(())
}

/// Sends `cluster <command>` to the nodes until every shard answered OK.
fn on_every_shard(cli: &Cli, secret: &[u8], command: &str) -> Result<(), String> {
    let token = admin_token(secret, command);
    let shards = cli.nodes.iter().find_map(|n| replication(n).ok()).ok_or("no node answers")?.len();
    let mut done = vec![false; shards];
    let deadline = Instant::now() + Duration::from_secs(cli.timeout);
    while done.contains(&false) {
        for node in &cli.nodes {
            let Ok(lines) = ask(node, &format!("cluster {command} {token}")) else { continue };
            for line in lines {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["SHARD", s, "OK"] => {
                        if let Ok(s) = s.parse::<usize>() {
                            if s < shards && !done[s] {
                                done[s] = true;
                                println!("shard {s}: {command}: done (through {node})");
                            }
                        }
                    }
                    ["SHARD", s, "ERROR", why @ ..] => {
                        println!("shard {s}: {command}: {} (through {node}); retrying", why.join(" "))
                    }
                    _ => {}
                }
            }
            if !done.contains(&false) {
                break;
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{command}: not done on shards {:?} within {} s",
                (0..shards).filter(|&s| !done[s]).collect::<Vec<_>>(),
                cli.timeout
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Waits until every shard's leader reports node `id` caught up (lag of at most 10).
fn wait_caught_up(cli: &Cli, id: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(cli.timeout);
    loop {
        let mut lagging = Vec::new();
        let mut seen = BTreeMap::new();
        for node in &cli.nodes {
            let Ok(shards) = replication(node) else { continue };
            for (shard, s) in shards {
                if s.get("role").map(String::as_str) == Some("leader") {
                    let matched = s.get(&format!("peer:{id}:match")).and_then(|v| v.parse::<u64>().ok());
                    let lag = s.get(&format!("peer:{id}:lag")).and_then(|v| v.parse::<u64>().ok());
                    // Caught up: it holds entries (a snapshot at least) and is close behind.
                    seen.insert(shard, lag.filter(|_| matched.unwrap_or(0) > 0));
                }
            }
        }
        for (shard, lag) in &seen {
            if lag.is_none_or(|l| l > 10) {
                lagging.push((*shard, *lag));
            }
        }
        if !seen.is_empty() && lagging.is_empty() {
            println!("node {id} has caught up on every shard");
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("node {id} did not catch up within {} s: {lagging:?}", cli.timeout));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Moves every shard's leadership away from node `id` (before it is removed).
fn hand_over_leadership(cli: &Cli, secret: &[u8], id: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(cli.timeout);
    loop {
        let mut led = Vec::new();
        for node in &cli.nodes {
            let Ok(shards) = replication(node) else { continue };
            for (shard, s) in shards {
                let is = |k: &str, v: &str| s.get(k).map(String::as_str) == Some(v);
                if is("role", "leader") && is("node", &id.to_string()) {
                    let other = s
                        .get("voters")
                        .and_then(|v| v.split(',').filter_map(|x| x.parse::<u64>().ok()).find(|&x| x != id));
                    led.push((node.clone(), shard, other));
                }
            }
        }
        if led.is_empty() {
            return Ok(());
        }
        for (node, shard, other) in &led {
            let Some(to) = other else { return Err(format!("shard {shard}: node {id} is its only voter")) };
            let token = admin_token(secret, &format!("transfer {shard} {to}"));
            let _ = ask(node, &format!("cluster transfer {shard} {to} {token}"));
            println!("shard {shard}: handing leadership from node {id} to node {to}");
        }
        if Instant::now() > deadline {
            return Err(format!("node {id} still leads shards {:?}", led.iter().map(|l| l.1).collect::<Vec<_>>()));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let secret = || -> Result<Vec<u8>, String> {
        let path = cli.secret_file.as_ref().ok_or("--cluster-secret-file is needed to change the group")?;
        let s = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(s.trim_ascii().to_vec())
    };
    if cli.nodes.is_empty() && !matches!(cli.command, Cmd::Metrics { .. }) {
        return Err("--nodes is needed: the nodes' client addresses, HOST:PORT, comma-separated".into());
    }
    match &cli.command {
        Cmd::Stats => observe::table(&cli.nodes).map(|t| print!("{t}")),
        Cmd::Watch { interval, count } => {
            let interval = Duration::try_from_secs_f64(*interval).map_err(|_| "--interval: seconds, above 0")?;
            observe::watch(&cli.nodes, interval, *count)
        }
        Cmd::Dump { limit } => observe::dump(&cli.nodes, *limit),
        Cmd::Metrics { admin, token } => observe::metrics(admin, token.as_deref()).map(|t| print!("{t}")),
        Cmd::Status => status(cli),
        Cmd::Add { id, addr } => {
            let secret = secret()?;
            on_every_shard(cli, &secret, &format!("add {id} {addr}"))?;
            wait_caught_up(cli, *id)?;
            on_every_shard(cli, &secret, &format!("promote {id}"))
        }
        Cmd::Remove { id } => {
            let secret = secret()?;
            hand_over_leadership(cli, &secret, *id)?;
            on_every_shard(cli, &secret, &format!("remove {id}"))
        }
        Cmd::Transfer { shard, id } => {
            let secret = secret()?;
            let token = admin_token(&secret, &format!("transfer {shard} {id}"));
            for node in &cli.nodes {
                if let Ok(lines) = ask(node, &format!("cluster transfer {shard} {id} {token}")) {
                    if lines.iter().any(|l| l == &format!("SHARD {shard} OK")) {
                        println!("shard {shard}: leadership handed to node {id} (through {node})");
                        return Ok(());
                    }
                }
            }
            Err(format!("no node leads shard {shard}"))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringcache-ctl: {e}");
            ExitCode::FAILURE
        }
    }
}
