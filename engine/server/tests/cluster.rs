//! Replica groups, whole processes on loopback: a group elects a leader and every node
//! serves every command; killing the leader (kill -9) under write load loses no
//! acknowledged write and writes resume through the others; a node killed and restarted
//! recovers from its log and catches up; a node started with `--join` is added (it
//! catches up by snapshot) and a node is removed, with `cluster` commands authorised
//! by the secret; a node with the wrong cluster secret is refused by its peers (and
//! says why) while the others go on; a follower, then the leader, cut off by proxies
//! on the peer links fall behind (the leader steps down) and catch up when healed; and
//! clients' histories (gets, set, add, cas, append, delete, incr) through every node
//! stay linearizable (per key, a WGL checker) while the leader is cut off and then
//! killed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringcache_test_support::history::{parse, Cmd, Fate, KeyHistory, Ret};
use ringcache_test_support::{reserve_port, Rng, Server};

const SECRET: &str = "a-cluster-secret-for-tests-0123456789";

struct Node {
    id: u64,
    join: bool,
    /// More flags for this node.
    extra: Vec<String>,
    port: u16,
    dir: PathBuf,
    secret: PathBuf,
    peers: String,
    log: PathBuf,
    server: Option<Server>,
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ringcache"))
            .args(["-l", "127.0.0.1", "-p", &self.port.to_string(), "-t", "1", "-m", "64"])
            .args(["--node-id", &self.id.to_string(), "--peers", &self.peers])
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--cluster-secret-file")
            .arg(&self.secret)
            .args(if self.join { &["--join"][..] } else { &[][..] })
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ringcache");
        let mut server = Server { port: self.port, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(server.addr()).is_err() {
            assert!(server.is_running(), "node {} exited at start: {}", self.id, self.log_text());
            assert!(Instant::now() < deadline, "node {} did not listen", self.id);
            std::thread::sleep(Duration::from_millis(20));
        }
        self.server = Some(server);
    }

    fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.signal("-KILL");
            s.wait_for_exit(Duration::from_secs(10));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).ok();
        s
    }

    /// `stats replication` (or `stats`) as name -> value.
    fn stats(&self, which: &str) -> Vec<(String, String)> {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return Vec::new() };
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let reply = request(&mut s, format!("stats {which}\r\n").as_bytes(), b"END\r\n");
        String::from_utf8_lossy(&reply)
            .lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect()
    }

    fn stat(&self, which: &str, name: &str) -> Option<String> {
        self.stats(which).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

fn request(s: &mut TcpStream, bytes: &[u8], until: &[u8]) -> Vec<u8> {
    s.write_all(bytes).expect("send");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.ends_with(until) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    reply
}

/// One line of reply (for storage commands).
fn command(s: &mut TcpStream, bytes: &[u8]) -> String {
    String::from_utf8_lossy(&request(s, bytes, b"\r\n")).into_owned()
}

struct Group {
    nodes: Vec<Node>,
    root: PathBuf,
    /// Every node's peer address, by index.
    peer_addrs: Vec<String>,
}

impl Drop for Group {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A group of `n` nodes, one shard each; node ids from 1. `secret_of` gives each
/// node's secret.
fn group(name: &str, n: u64, secret_of: impl Fn(u64) -> &'static str) -> Group {
    group_with(name, n, 0, secret_of, &[])
}

/// As [`group`], with `joiners` more nodes (ids after the founders') known to every
/// node's `--peers` but started with `--join`, not yet members.
fn group_with(name: &str, n: u64, joiners: u64, secret_of: impl Fn(u64) -> &'static str, extra: &[&str]) -> Group {
    let root = std::env::temp_dir().join(format!("ringcache-cluster-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    // Ports: reserved, then released just before the nodes bind them.
    let all = n + joiners;
    let client: Vec<_> = (0..all).map(|_| reserve_port()).collect();
    let peer: Vec<_> = (0..all).map(|_| reserve_port()).collect();
    let founders =
        (1..=n).map(|i| format!("{i}=127.0.0.1:{}", peer[i as usize - 1].port)).collect::<Vec<_>>().join(",");
    let everyone =
        (1..=all).map(|i| format!("{i}=127.0.0.1:{}", peer[i as usize - 1].port)).collect::<Vec<_>>().join(",");
    let mut nodes = Vec::new();
    for i in 1..=all {
        let secret = root.join(format!("secret{i}"));
        std::fs::write(&secret, secret_of(i)).expect("secret");
        nodes.push(Node {
            id: i,
            join: i > n,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            port: client[i as usize - 1].port,
            dir: root.join(format!("node{i}")),
            secret,
            // A joiner knows everyone; the founders know each other (they learn of a
            // joiner when it is added).
            peers: if i > n { everyone.clone() } else { founders.clone() },
            log: root.join(format!("node{i}.log")),
            server: None,
        });
    }
    drop(client);
    drop(peer);
    for node in &mut nodes {
        node.start();
    }
    let peer_addrs = everyone.split(',').filter_map(|p| p.split_once('=')).map(|(_, a)| a.to_string()).collect();
    Group { nodes, root, peer_addrs }
}

impl Group {
    /// Waits until some node leads shard 0 and the others follow it; its index.
    fn leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                if n.server.is_some() && n.stat("replication", "shard:0:role").as_deref() == Some("leader") {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no leader within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_group_elects_a_leader_and_every_node_serves_every_command() {
    let g = group("serve", 3, |_| SECRET);
    let leader = g.leader(Duration::from_secs(20));
    for (i, node) in g.nodes.iter().enumerate() {
        let mut c = node.connect();
        let key = format!("key{i}");
        assert_eq!(
            command(&mut c, format!("set {key} 5 0 5\r\nhello\r\n").as_bytes()),
            "STORED\r\n",
            "node {}",
            node.id
        );
        assert_eq!(command(&mut c, format!("add {key} 0 0 1\r\nx\r\n").as_bytes()), "NOT_STORED\r\n");
        assert_eq!(command(&mut c, format!("append {key} 0 0 3\r\n!!!\r\n").as_bytes()), "STORED\r\n");
        assert_eq!(command(&mut c, b"set n 0 0 2\r\n40\r\n"), "STORED\r\n");
        assert_eq!(command(&mut c, b"incr n 2\r\n"), "42\r\n");
    }
    // Every node answers reads with what any node wrote, with the same CAS.
    let mut seen = Vec::new();
    for node in &g.nodes {
        let mut c = node.connect();
        let reply = String::from_utf8_lossy(&request(&mut c, b"gets key0 key1 key2 n\r\n", b"END\r\n")).into_owned();
        for i in 0..3 {
            assert!(reply.contains(&format!("VALUE key{i} 5 8 ")), "node {}: {reply}", node.id);
        }
        assert!(reply.contains("hello!!!\r\n") && reply.contains("\r\n42\r\n"), "node {}: {reply}", node.id);
        seen.push(reply);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "the same versions everywhere: {seen:?}");
    // A cas with the version read elsewhere succeeds once.
    let cas = seen[0]
        .lines()
        .find(|l| l.starts_with("VALUE key0"))
        .and_then(|l| l.split(' ').nth(4))
        .unwrap_or("0")
        .to_string();
    let mut c = g.nodes[(leader + 1) % 3].connect();
    assert_eq!(command(&mut c, format!("cas key0 0 0 1 {cas}\r\nz\r\n").as_bytes()), "STORED\r\n");
    assert_eq!(command(&mut c, format!("cas key0 0 0 1 {cas}\r\ny\r\n").as_bytes()), "EXISTS\r\n");
    // The leader reports its followers caught up.
    let stats = g.nodes[leader].stats("replication");
    let get = |k: &str| stats.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let commit = get("shard:0:commit");
    assert_eq!(get("shard:0:applied"), commit);
    assert_eq!(get("shard:0:voters"), "1,2,3");
}

#[test]
fn killing_the_leader_loses_no_acknowledged_write_and_writes_resume() {
    let mut g = group("failover", 3, |_| SECRET);
    let leader = g.leader(Duration::from_secs(20));
    let through = (leader + 1) % 3;
    let mut c = g.nodes[through].connect();
    let mut acked = Vec::new();
    for i in 0..200 {
        if command(&mut c, format!("set k{i} 0 0 4\r\nv{i:03}\r\n").as_bytes()) == "STORED\r\n" {
            acked.push(i);
        }
    }
    assert_eq!(acked.len(), 200, "all writes acknowledged before the fault");
    let killed_at = Instant::now();
    g.nodes[leader].kill();
    // Keep writing through the surviving follower until writes are acknowledged again.
    let mut first_ack = None;
    let mut i = 200;
    while first_ack.is_none() || i < 400 {
        let reply = command(&mut c, format!("set k{i} 0 0 4\r\nv{i:03}\r\n").as_bytes());
        if reply == "STORED\r\n" {
            acked.push(i);
            first_ack.get_or_insert_with(|| killed_at.elapsed());
        } else {
            assert!(reply.starts_with("SERVER_ERROR replication"), "only replication errors during failover: {reply}");
        }
        i += 1;
        assert!(killed_at.elapsed() < Duration::from_secs(30), "writes did not resume");
    }
    eprintln!("failover: first acknowledged write {:?} after kill -9 of the leader", first_ack);
    // Every acknowledged write is there, read through both survivors.
    for node in g.nodes.iter().filter(|n| n.server.is_some()) {
        let mut r = node.connect();
        for &k in &acked {
            let reply = request(&mut r, format!("get k{k}\r\n").as_bytes(), b"END\r\n");
            let want = format!("VALUE k{k} 0 4\r\nv{k:03}\r\nEND\r\n");
            assert_eq!(String::from_utf8_lossy(&reply), want, "node {} lost an acknowledged write", node.id);
        }
    }
}

/// The meta protocol's lease state is part of what the log replicates: a win token handed
/// out by the old leader (`W`), and an invalidation (`X`), are still there after it is
/// killed, so a second client is told `Z` by the new leader instead of also winning.
#[test]
fn meta_leases_and_invalidations_survive_the_loss_of_the_leader() {
    let mut g = group("leases", 3, |_| SECRET);
    let leader = g.leader(Duration::from_secs(20));
    let through = (leader + 1) % 3;
    let mut c = g.nodes[through].connect();
    let meta = |c: &mut TcpStream, line: &str, until: &[u8]| -> String {
        String::from_utf8_lossy(&request(c, line.as_bytes(), until)).into_owned()
    };
    assert_eq!(meta(&mut c, "mg lease N30 v\r\n", b"\r\n\r\n"), "VA 0 W\r\n\r\n", "the first reader wins");
    assert_eq!(command(&mut c, b"ms swr 3 T100\r\nold\r\n"), "HD\r\n");
    assert_eq!(command(&mut c, b"md swr I\r\n"), "HD\r\n");
    assert_eq!(meta(&mut c, "mg swr v\r\n", b"old\r\n"), "VA 3 X W\r\nold\r\n", "the stale value's first reader wins");
    // A CAS the client names (E) is the one every replica keeps, not the log's stamp.
    assert_eq!(command(&mut c, b"ms named 1 E123456789 c\r\nv\r\n"), "HD c123456789\r\n");
    g.nodes[leader].kill();
    // Ask through the survivor until a leader answers (replication errors meanwhile).
    let killed_at = Instant::now();
    let answer = |c: &mut TcpStream, line: &str| loop {
        let reply = command(c, line.as_bytes());
        if !reply.starts_with("SERVER_ERROR replication") {
            return reply;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(30), "no leader after the kill");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(answer(&mut c, "mg lease N30\r\n"), "HD Z\r\n", "the win token was replicated: no second winner");
    assert_eq!(answer(&mut c, "mg swr\r\n"), "HD Z X\r\n", "still stale, its token still out");
    assert_eq!(answer(&mut c, "mg other N30\r\n"), "HD W\r\n", "a new key still hands out its token");
    assert_eq!(answer(&mut c, "mg named c\r\n"), "HD c123456789\r\n", "the named CAS survived the leader");
    // The winner's write makes the value fresh on the new leader.
    assert_eq!(answer(&mut c, "ms swr 3 T100\r\nnew\r\n"), "HD\r\n");
    assert_eq!(meta(&mut c, "mg swr v\r\n", b"new\r\n"), "VA 3\r\nnew\r\n");
}

#[test]
fn a_restarted_node_recovers_from_its_log_and_catches_up() {
    let mut g = group("restart", 3, |_| SECRET);
    let leader = g.leader(Duration::from_secs(20));
    let victim = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut c = g.nodes[leader].connect();
    for i in 0..100 {
        assert_eq!(command(&mut c, format!("set a{i} 0 0 1\r\nx\r\n").as_bytes()), "STORED\r\n");
    }
    g.nodes[victim].kill();
    for i in 0..100 {
        assert_eq!(command(&mut c, format!("set b{i} 0 0 1\r\ny\r\n").as_bytes()), "STORED\r\n");
    }
    g.nodes[victim].start();
    // Its own store catches up: the same items as the others, at the same applied index.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let items = |n: &Node| n.stat("", "curr_items");
        let applied = |n: &Node| n.stat("replication", "shard:0:applied");
        if items(&g.nodes[victim]).as_deref() == Some("200") && applied(&g.nodes[victim]) == applied(&g.nodes[other]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node did not catch up: {:?}",
            g.nodes[victim].stats("replication")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(g.nodes[victim].log_text().contains("joined replica group 0"));
}

#[test]
fn a_node_with_the_wrong_secret_is_refused_and_the_others_go_on() {
    let g = group("secret", 3, |i| if i == 3 { "not-the-cluster-secret-at-all-000" } else { SECRET });
    let leader = g.leader(Duration::from_secs(20));
    assert_ne!(g.nodes[leader].id, 3, "the outsider cannot lead");
    let mut c = g.nodes[leader].connect();
    assert_eq!(command(&mut c, b"set k 0 0 1\r\nv\r\n"), "STORED\r\n", "two of three are a quorum");
    // Both sides say why, and the outsider never learns of a leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !g.nodes[2].log_text().contains("cannot authenticate with peer") {
        assert!(Instant::now() < deadline, "the outsider's log: {}", g.nodes[2].log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let insiders = g.nodes[0].log_text() + &g.nodes[1].log_text();
    assert!(insiders.contains("refused a peer connection"), "{insiders}");
    assert_eq!(g.nodes[2].stat("replication", "shard:0:leader").as_deref(), Some("0"));
    assert_eq!(g.nodes[2].stat("", "curr_items").as_deref(), Some("0"), "nothing reached it");
}

/// Sends `cluster <command> <token>` to `node`: its lines, up to END.
fn cluster(node: &Node, command: &str) -> Vec<String> {
    let token = ringcache_replication::handshake::admin_token(SECRET.as_bytes(), command);
    let mut c = node.connect();
    let reply = request(&mut c, format!("cluster {command} {token}\r\n").as_bytes(), b"END\r\n");
    String::from_utf8_lossy(&reply).lines().map(str::to_string).filter(|l| l != "END").collect()
}

/// Runs `command` on the group until shard 0 answers OK.
fn cluster_until_ok(g: &Group, command: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for node in g.nodes.iter().filter(|n| n.server.is_some()) {
            if cluster(node, command).iter().any(|l| l == "SHARD 0 OK") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "cluster {command} did not succeed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_joining_node_is_added_by_snapshot_and_a_node_is_removed() {
    let mut g = group_with("membership", 3, 1, |_| SECRET, &[]);
    let leader = g.leader(Duration::from_secs(20));
    let mut c = g.nodes[leader].connect();
    for i in 0..300 {
        assert_eq!(command(&mut c, format!("set m{i} 0 0 3\r\nabc\r\n").as_bytes()), "STORED\r\n");
    }
    // The joiner is not a member yet: the group does not talk to it.
    assert_eq!(g.nodes[3].stat("", "curr_items").as_deref(), Some("0"));
    // A command without the right token changes nothing.
    let mut plain = g.nodes[leader].connect();
    let refused = command(&mut plain, format!("cluster add 4 {} 0011\r\n", g.peer_addrs[3]).as_bytes());
    assert!(refused.starts_with("CLIENT_ERROR not authorised"), "{refused}");
    cluster_until_ok(&g, &format!("add 4 {}", g.peer_addrs[3]));
    // It catches up by snapshot: every item, and the membership.
    let deadline = Instant::now() + Duration::from_secs(20);
    while g.nodes[3].stat("", "curr_items").as_deref() != Some("300") {
        assert!(Instant::now() < deadline, "node 4 did not catch up: {:?}", g.nodes[3].stats("replication"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(g.nodes[3].stat("replication", "shard:0:snapshots_installed").as_deref(), Some("0"));
    cluster_until_ok(&g, "promote 4");
    assert_eq!(g.nodes[3].stat("replication", "shard:0:voters").as_deref(), Some("1,2,3,4"));
    // Node 1 leaves (its leadership handed over first if it has it); node 1 stops.
    if g.nodes[0].stat("replication", "shard:0:role").as_deref() == Some("leader") {
        cluster_until_ok(&g, "transfer 0 2");
        let deadline = Instant::now() + Duration::from_secs(20);
        while g.nodes[0].stat("replication", "shard:0:role").as_deref() == Some("leader") {
            assert!(Instant::now() < deadline, "leadership did not move");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    cluster_until_ok(&g, "remove 1");
    g.nodes[0].kill();
    // Three voters remain (2, 3, 4); with 3 also gone, 2 and 4 are still a quorum of 3.
    g.nodes[2].kill();
    let mut w = g.nodes[3].connect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while command(&mut w, b"set after 0 0 1\r\nx\r\n") != "STORED\r\n" {
        assert!(Instant::now() < deadline, "the remaining voters did not take writes");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(g.nodes[1].stat("replication", "shard:0:voters").as_deref(), Some("2,3,4"));
}

/// A TCP proxy in front of one node's peer port, which can cut the link: while blocked
/// it closes what goes through it and refuses new connections.
struct Proxy {
    port: u16,
    blocked: std::sync::Arc<std::sync::atomic::AtomicBool>,
    streams: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: String) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().map(|a| a.port()).expect("proxy port");
        let blocked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let streams = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (b, st) = (blocked.clone(), streams.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if b.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let Ok(server) = TcpStream::connect(&target) else { continue };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                    if let Ok(mut list) = st.lock() {
                        list.push(c2);
                        list.push(s2);
                    }
                    pipe(client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                    pipe(server, client);
                }
            }
        });
        Proxy { port, blocked, streams }
    }

    fn block(&self) {
        self.blocked.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut list) = self.streams.lock() {
            for s in list.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    fn heal(&self) {
        self.blocked.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Proxies on the peer links of a group: `[i][j]` carries node i's connections to j.
type Proxies = Vec<Vec<Option<Proxy>>>;

/// Three nodes whose peer traffic goes through proxies.
fn proxied_group(name: &str) -> (Group, Proxies) {
    let root = std::env::temp_dir().join(format!("ringcache-cluster-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    let client: Vec<_> = (0..3).map(|_| reserve_port()).collect();
    let peer: Vec<_> = (0..3).map(|_| reserve_port()).collect();
    let real = |j: usize| format!("127.0.0.1:{}", peer[j].port);
    let proxies: Proxies = (0..3).map(|i| (0..3).map(|j| (i != j).then(|| Proxy::start(real(j)))).collect()).collect();
    let mut nodes = Vec::new();
    for i in 0..3usize {
        let peers = (0..3)
            .map(|j| match &proxies[i][j] {
                None => format!("{}={}", j + 1, real(j)),
                Some(p) => format!("{}=127.0.0.1:{}", j + 1, p.port),
            })
            .collect::<Vec<_>>()
            .join(",");
        let secret = root.join("secret");
        std::fs::write(&secret, SECRET).expect("secret");
        nodes.push(Node {
            id: i as u64 + 1,
            join: false,
            extra: Vec::new(),
            port: client[i].port,
            dir: root.join(format!("node{}", i + 1)),
            secret,
            peers,
            log: root.join(format!("node{}.log", i + 1)),
            server: None,
        });
    }
    drop(client);
    drop(peer);
    for n in &mut nodes {
        n.start();
    }
    (Group { nodes, root, peer_addrs: Vec::new() }, proxies)
}

/// Cuts node `k` off from the others (both ways), or heals it.
fn cut(proxies: &Proxies, k: usize, on: bool) {
    for (i, row) in proxies.iter().enumerate() {
        for (j, proxy) in row.iter().enumerate() {
            match proxy {
                Some(p) if (i == k || j == k) && on => p.block(),
                Some(p) if i == k || j == k => p.heal(),
                _ => {}
            }
        }
    }
}

#[test]
fn a_partitioned_node_falls_behind_and_catches_up_when_healed() {
    let (g, proxies) = proxied_group("partition");
    let cut = |k: usize, on: bool| cut(&proxies, k, on);
    let applied = |n: &Node| n.stat("replication", "shard:0:applied").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let wait = |what: &str, mut done: Box<dyn FnMut() -> bool + '_>| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // A follower cut off: the other two go on; healed, it catches up.
    let leader = g.leader(Duration::from_secs(20));
    let follower = (leader + 1) % 3;
    cut(follower, true);
    let mut c = g.nodes[leader].connect();
    for i in 0..100 {
        assert_eq!(command(&mut c, format!("set p{i} 0 0 1\r\na\r\n").as_bytes()), "STORED\r\n");
    }
    assert!(applied(&g.nodes[follower]) < applied(&g.nodes[leader]), "the cut-off follower is behind");
    assert_eq!(g.nodes[follower].stat("", "curr_items").as_deref(), Some("0"));
    cut(follower, false);
    wait(
        "the healed follower catches up",
        Box::new(|| g.nodes[follower].stat("", "curr_items").as_deref() == Some("100")),
    );

    // The leader cut off: the others elect a new one and take writes; the old leader
    // steps down, and once healed follows and serves the new values.
    cut(leader, true);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    wait(
        "a new leader among the others",
        Box::new(|| {
            others.iter().any(|&i| g.nodes[i].stat("replication", "shard:0:role").as_deref() == Some("leader"))
        }),
    );
    let mut w = g.nodes[others[0]].connect();
    wait("writes resume", Box::new(|| command(&mut w, b"set p0 0 0 1\r\nb\r\n") == "STORED\r\n"));
    wait(
        "the cut-off leader steps down",
        Box::new(|| g.nodes[leader].stat("replication", "shard:0:role").as_deref() != Some("leader")),
    );
    cut(leader, false);
    wait("the old leader catches up", Box::new(|| applied(&g.nodes[leader]) >= applied(&g.nodes[others[0]])));
    let mut r = g.nodes[leader].connect();
    let reply = request(&mut r, b"get p0\r\n", b"END\r\n");
    assert_eq!(String::from_utf8_lossy(&reply), "VALUE p0 0 1\r\nb\r\nEND\r\n", "no stale read after the heal");
}

#[test]
fn an_async_group_answers_after_the_leaders_apply_and_converges() {
    let g = group_with("async", 3, 0, |_| SECRET, &["--replication", "async", "--durability", "none"]);
    let leader = g.leader(Duration::from_secs(20));
    let mut c = g.nodes[(leader + 1) % 3].connect();
    for i in 0..200 {
        assert_eq!(command(&mut c, format!("set w{i} 0 0 2\r\nok\r\n").as_bytes()), "STORED\r\n");
    }
    assert_eq!(command(&mut c, b"incr counter 1\r\n"), "NOT_FOUND\r\n");
    // Replicated behind: every node gets there.
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in &g.nodes {
        while node.stat("", "curr_items").as_deref() != Some("200") {
            assert!(Instant::now() < deadline, "node {} did not get every write", node.id);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut r = g.nodes[leader].connect();
    assert_eq!(
        String::from_utf8_lossy(&request(&mut r, b"get w199\r\n", b"END\r\n")),
        "VALUE w199 0 2\r\nok\r\nEND\r\n"
    );
}

/// One client of the linearizability test: random commands on random keys through
/// random nodes, each call and return recorded as it happens.
fn linearizability_client(
    c: u64,
    ports: Vec<u16>,
    histories: std::sync::Arc<std::sync::Mutex<Vec<KeyHistory>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    next_process: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> (usize, usize) {
    use std::sync::atomic::Ordering;
    let mut rng = Rng(c + 1);
    let mut process = c as usize;
    let mut seen: std::collections::HashMap<usize, (Vec<u8>, u64)> = std::collections::HashMap::new();
    let mut conns: std::collections::HashMap<u16, TcpStream> = std::collections::HashMap::new();
    let (mut answered, mut unknown) = (0, 0);
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        let port = ports[rng.below(ports.len() as u64) as usize];
        let key = rng.below(5) as usize;
        seq += 1;
        let value = format!("v{c}.{seq}").into_bytes();
        let roll = rng.below(10);
        let (cmd, line) = if key == 4 {
            // A counter: set, incr, get, delete.
            match roll {
                0..=2 => (Cmd::Get, b"gets k4\r\n".to_vec()),
                3 => (Cmd::Set(b"10".to_vec()), b"set k4 0 0 2\r\n10\r\n".to_vec()),
                4 => (Cmd::Delete, b"delete k4\r\n".to_vec()),
                _ => (Cmd::Incr(roll), format!("incr k4 {roll}\r\n").into_bytes()),
            }
        } else {
            match roll {
                0..=3 => (Cmd::Get, format!("gets k{key}\r\n").into_bytes()),
                4 => (
                    Cmd::Set(value.clone()),
                    [format!("set k{key} 0 0 {}\r\n", value.len()).as_bytes(), &value, b"\r\n"].concat(),
                ),
                5 => (
                    Cmd::Add(value.clone()),
                    [format!("add k{key} 0 0 {}\r\n", value.len()).as_bytes(), &value, b"\r\n"].concat(),
                ),
                6 | 7 => {
                    let (expected, token) = match seen.get(&key) {
                        Some((v, cas)) => (Some(v.clone()), *cas),
                        None => (None, 1),
                    };
                    let line =
                        [format!("cas k{key} 0 0 {} {token}\r\n", value.len()).as_bytes(), &value, b"\r\n"].concat();
                    (Cmd::Cas { new: value.clone(), expected }, line)
                }
                8 => {
                    let data = format!("+{c}.{seq}").into_bytes();
                    (
                        Cmd::Append(data.clone()),
                        [format!("append k{key} 0 0 {}\r\n", data.len()).as_bytes(), &data, b"\r\n"].concat(),
                    )
                }
                _ => (Cmd::Delete, format!("delete k{key}\r\n").into_bytes()),
            }
        };
        let op = histories.lock().map(|mut h| h[key].call(process, cmd.clone())).unwrap_or(0);
        let until: &[u8] = if cmd == Cmd::Get { b"END\r\n" } else { b"\r\n" };
        let reply = conns
            .remove(&port)
            .or_else(|| {
                let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                Some(s)
            })
            .and_then(|mut s| {
                s.write_all(&line).ok()?;
                let mut reply = Vec::new();
                let mut buf = [0u8; 4096];
                while !(reply.ends_with(until)
                    || (cmd == Cmd::Get && reply.starts_with(b"SERVER_ERROR") && reply.ends_with(b"\r\n")))
                {
                    let n = s.read(&mut buf).ok().filter(|&n| n > 0)?;
                    reply.extend_from_slice(&buf[..n]);
                }
                conns.insert(port, s);
                Some(reply)
            });
        let fate = reply.map_or(Fate::Unknown, |r| parse(&cmd, &r));
        let Ok(mut h) = histories.lock() else { break };
        match fate {
            Fate::Answered(ret, cas) => {
                if let (Ret::Value(Some(v)), Some(cas)) = (&ret, cas) {
                    seen.insert(key, (v.clone(), cas));
                }
                h[key].answer(process, op, ret);
                answered += 1;
            }
            Fate::NotRun => h[key].withdraw(op),
            Fate::Unknown => {
                // Open for ever in the history; this client goes on as a new process.
                process = next_process.fetch_add(1, Ordering::SeqCst);
                unknown += 1;
            }
        }
    }
    (answered, unknown)
}

#[test]
fn histories_stay_linearizable_while_the_leader_is_cut_off_and_killed() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let (mut g, proxies) = proxied_group("linearizable");
    g.leader(Duration::from_secs(20));
    let ports: Vec<u16> = g.nodes.iter().map(|n| n.port).collect();
    let histories = Arc::new(Mutex::new((0..5).map(|_| KeyHistory::default()).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = 4;
    let next_process = Arc::new(AtomicUsize::new(clients));
    let threads: Vec<_> = (0..clients as u64)
        .map(|c| {
            let (p, h, s, n) = (ports.clone(), histories.clone(), stop.clone(), next_process.clone());
            std::thread::spawn(move || linearizability_client(c, p, h, s, n))
        })
        .collect();
    // Faults while they run: the leader cut off, healed; then the leader killed, restarted.
    std::thread::sleep(Duration::from_millis(1500));
    let leader = g.leader(Duration::from_secs(20));
    cut(&proxies, leader, true);
    std::thread::sleep(Duration::from_millis(2500));
    cut(&proxies, leader, false);
    std::thread::sleep(Duration::from_millis(1500));
    let leader = g.leader(Duration::from_secs(20));
    g.nodes[leader].kill();
    std::thread::sleep(Duration::from_millis(1500));
    g.nodes[leader].start();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    let (mut answered, mut unknown) = (0, 0);
    for t in threads {
        let (a, u) = t.join().unwrap_or((0, 0));
        answered += a;
        unknown += u;
    }
    eprintln!("linearizability: {answered} ops answered, {unknown} with an unknown outcome");
    assert!(answered > 100, "the clients made progress: {answered}");
    let histories = histories.lock().unwrap_or_else(|e| e.into_inner());
    for (key, h) in histories.iter().enumerate() {
        assert!(h.is_linearizable(), "the history of k{key} is not linearizable");
    }
}

#[test]
fn leadership_goes_back_to_the_preferred_node() {
    let mut g = group_with("prefer", 3, 0, |_| SECRET, &["--prefer-leader", "3"]);
    let leads_3 = |g: &Group| g.nodes[2].stat("replication", "shard:0:role").as_deref() == Some("leader");
    let wait = |g: &Group, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !leads_3(g) {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait(&g, "node 3 did not come to lead");
    g.nodes[2].kill();
    let other = g.leader(Duration::from_secs(20));
    assert_ne!(g.nodes[other].id, 3);
    g.nodes[2].start();
    wait(&g, "node 3 did not lead again once back");
    let mut c = g.nodes[0].connect();
    assert_eq!(command(&mut c, b"set k 0 0 1\r\nv\r\n"), "STORED\r\n");
}

#[test]
fn a_replica_stopped_cleanly_comes_back_with_its_memory_file_and_catches_up() {
    let mut g = group("warm", 3, |_| SECRET);
    let leader = g.leader(Duration::from_secs(20));
    let victim = (leader + 1) % 3;
    let items = |n: &Node| n.stat("", "curr_items").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let wait_items = |n: &Node, want: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while items(n) != want {
            assert!(Instant::now() < deadline, "node {} holds {} items, not {want}", n.id, items(n));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let stop = |n: &mut Node| {
        if let Some(mut s) = n.server.take() {
            s.signal("-TERM");
            assert!(
                s.wait_for_exit(Duration::from_secs(20)).is_some_and(|st| st.success()),
                "node {} stops cleanly",
                n.id
            );
        }
    };
    let mut c = g.nodes[leader].connect();
    let mut write = |from: u64, to: u64| {
        for i in from..to {
            assert_eq!(command(&mut c, format!("set w{i} 0 0 2\r\nok\r\n").as_bytes()), "STORED\r\n");
        }
    };
    write(0, 100);
    // Restart the victim with a memory file (it starts empty and rebuilds from its log).
    stop(&mut g.nodes[victim]);
    let memory = g.root.join("victim.mem");
    g.nodes[victim].extra = vec!["-e".into(), memory.display().to_string()];
    g.nodes[victim].start();
    write(100, 200);
    wait_items(&g.nodes[victim], 200);
    // A clean stop saves the store and the applied index it is at.
    stop(&mut g.nodes[victim]);
    assert!(g.nodes[victim].dir.join("shard-0").join("applied").exists());
    write(200, 300);
    g.nodes[victim].start();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !g.nodes[victim].log_text().contains("kept the store a warm restart brought back") {
        assert!(Instant::now() < deadline, "the saved store was not kept: {}", g.nodes[victim].log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_items(&g.nodes[victim], 300);
    // A crash loses the saved state: the next start rebuilds from the log, never older.
    g.nodes[victim].kill();
    write(300, 310);
    g.nodes[victim].start();
    wait_items(&g.nodes[victim], 310);
    let mut r = g.nodes[victim].connect();
    assert_eq!(
        String::from_utf8_lossy(&request(&mut r, b"get w305\r\n", b"END\r\n")),
        "VALUE w305 0 2\r\nok\r\nEND\r\n"
    );
}
