//! Hostile clients and careless operators, against the real binary. Each attack runs
//! against a fresh server while a well-behaved client (the *checker*) sets and gets its
//! own key on another connection; afterwards the server must be up, every checker
//! request must have been answered correctly within 5 s, and the server's resident
//! memory must have stayed within its documented bound:
//!
//! ```text
//! item memory touched + connections x (32 KiB + 2 x (reply_buffer_limit + -I + 1 KiB))
//!                     + request bytes taken from read_buf_mem_limit + slack
//! ```
//!
//! (per connection: a 16 KiB request buffer and 16 KiB of reply buffer; replies up to
//! the reply limit plus one reply, in the connection's own buffer and as much again in
//! other shards' reply buffers). The slack covers allocator caches and thread stacks.
//!
//! The start-up cases check that settings which cannot work are refused at once with a
//! clear message and memcached's exit status, and the signal cases that a stop always
//! completes.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringcache_test_support::{run_ringcache_to_exit, start_ringcache, start_ringcache_with, wait_child, Server};
use ringcache_test_support::{Conn, Rng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// The server's defaults.
const REPLY_BUFFER_LIMIT: u64 = MIB;
const MAX_ITEM: u64 = MIB;
/// Allocator caches, thread stacks and other noise on top of the documented bound.
const SLACK: u64 = 24 * MIB;

/// What one connection may make the server hold, besides request bytes taken from
/// `read_buf_mem_limit` (see the module documentation).
fn per_connection(max_item: u64) -> u64 {
    32 * KIB + 2 * (REPLY_BUFFER_LIMIT + max_item + KIB)
}

/// Samples the server's RSS every 20 ms and keeps the peak.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(server: &Server) -> RssWatch {
        let pid = server.child.id();
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .map_or(0, |kb| kb * 1024);
                p.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch { peak, stop, thread: Some(thread) }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// A well-behaved client: sets and gets its own key in a loop on its own connection,
/// recording failures (wrong reply, no reply within 5 s, closed) and the slowest round
/// trip.
struct Checker {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Vec<String>, Duration)>,
}

impl Checker {
    fn start(server: &Server) -> Checker {
        let stream = server.connect();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut writer = stream.try_clone().expect("clone socket");
            let mut reader = BufReader::new(stream);
            let (mut ops, mut failures, mut worst) = (0u64, Vec::new(), Duration::ZERO);
            while !s.load(Ordering::Relaxed) && failures.len() < 5 {
                ops += 1;
                let value = format!("checker-{ops}");
                let started = Instant::now();
                let request = format!("set checker 0 0 {}\r\n{value}\r\nget checker\r\n", value.len());
                let want = format!("STORED\r\nVALUE checker 0 {}\r\n{value}\r\nEND\r\n", value.len());
                let mut got = Vec::new();
                let outcome = writer.write_all(request.as_bytes()).and_then(|_| {
                    while !got.ends_with(b"END\r\n") {
                        if reader.read_until(b'\n', &mut got)? == 0 {
                            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
                        }
                    }
                    Ok(())
                });
                worst = worst.max(started.elapsed());
                match outcome {
                    Ok(()) if got == want.as_bytes() => {}
                    Ok(()) => failures.push(format!("op {ops}: got {:?}", String::from_utf8_lossy(&got))),
                    Err(e) => failures.push(format!("op {ops}: {e}")),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (ops, failures, worst)
        });
        Checker { stop, thread }
    }

    /// Stops the checker and fails the test if it was not served throughout.
    fn finish(self, what: &str) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        let (ops, failures, worst) = self.thread.join().expect("checker thread");
        assert!(failures.is_empty(), "{what}: the well-behaved client was not served: {failures:?}");
        assert!(ops > 0, "{what}: the well-behaved client made no request");
        worst
    }
}

/// Runs `attack` against a server started with `args` while a checker runs; checks
/// that the server survives, the checker is served throughout, and RSS grows by at most
/// `allowed` bytes over its idle level.
fn under_attack(what: &str, server: &mut Server, allowed: u64, attack: impl FnOnce(&mut Server)) {
    let base = server.rss();
    let watch = RssWatch::start(server);
    let checker = Checker::start(server);
    attack(server);
    let worst = checker.finish(what);
    let peak = watch.finish();
    assert!(server.is_running(), "{what}: the server died");
    let grew = peak.saturating_sub(base);
    println!(
        "{what}: RSS {:.1} MB idle, {:.1} MB peak (+{:.1} MB, bound +{:.1} MB); checker's slowest round trip {worst:?}",
        base as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        grew as f64 / MIB as f64,
        allowed as f64 / MIB as f64
    );
    assert!(grew <= allowed, "{what}: RSS grew by {} MB, more than the bound of {} MB", grew / MIB, allowed / MIB);
}

fn set(server: &Server, key: &str, value: &[u8]) {
    let mut s = server.connect();
    let mut request = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    request.extend_from_slice(value);
    request.extend_from_slice(b"\r\n");
    s.write_all(&request).expect("send set");
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).expect("read STORED");
    assert_eq!(&reply, b"STORED\r\n", "set {key}");
}

/// A value whose bytes depend on `seed`, so a reply can be checked.
fn value_of(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + ((i + usize::from(seed)) % 26) as u8).collect()
}

/// A get of one 1 MB value repeated 1,000 times in one 4 KB request, and a client that
/// never reads: the server holds about one reply limit for it (memcached 1.6.18: 7 MB;
/// ringcache before: 961 MB), and closes it once its replies have made no progress for
/// `write_timeout` (1 s here).
#[test]
fn one_get_of_a_thousand_1mb_values_never_read() {
    let mut server = start_ringcache!(&["-t", "2", "-m", "64", "-o", "write_timeout=1"]);
    set(&server, "big", &value_of(1, 1_000_000));
    under_attack("get of 1,000 x 1 MB, not read", &mut server, MIB + per_connection(MAX_ITEM) + SLACK, |server| {
        let mut s = server.connect();
        let request = format!("get {}\r\n", vec!["big"; 1000].join(" "));
        s.write_all(request.as_bytes()).expect("send get");
        // No progress for a second (glommio gives a blocked write one more try when its
        // timer fires, so allow two): the server gives up on this client, and what is
        // buffered arrives, then the end.
        std::thread::sleep(Duration::from_secs(4));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the server did not close a client that read nothing for 4 s: {e}"),
            }
        }
        assert!(total < 100 * MIB, "the client that never read still received {total} bytes");
    });
}

/// The same with 4,000 keys, under a 3 GiB address-space limit (ringcache before:
/// a 4 GB allocation failed and the process aborted, losing every item).
#[test]
fn four_thousand_1mb_gets_under_a_3gib_address_space_limit() {
    let mut server = start_ringcache_with!(&["-t", "2", "-m", "64"], |command| {
        // SAFETY: setrlimit in the child between fork and exec touches no shared state.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit { rlim_cur: 3 << 30, rlim_max: 3 << 30 };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    set(&server, "big", &value_of(2, 1_000_000));
    under_attack(
        "get of 4,000 x 1 MB under 3 GiB of address space",
        &mut server,
        MIB + per_connection(MAX_ITEM) + SLACK,
        |server| {
            let mut s = server.connect();
            let request = format!("get {}\r\n", vec!["big"; 4000].join(" "));
            s.write_all(request.as_bytes()).expect("send get");
            std::thread::sleep(Duration::from_secs(3));
        },
    );
}

/// Pipelined gets of 1 MB values owned by both shards, the client reading everything:
/// every reply is right and the server holds about one reply limit (ringcache before:
/// 2.9-3.4 GB, as other shards' replies were held for a whole round).
#[test]
fn pipelined_cross_shard_1mb_gets_read_in_full() {
    let mut server = start_ringcache!(&["-t", "2", "-m", "64"]);
    let keys: Vec<String> = (0..4).map(|i| format!("cross-{i}")).collect();
    let values: Vec<Vec<u8>> = (0..4).map(|i| value_of(i, 1_000_000)).collect();
    for (k, v) in keys.iter().zip(&values) {
        set(&server, k, v);
    }
    under_attack(
        "pipelined cross-shard 1 MB gets",
        &mut server,
        4 * MIB + per_connection(MAX_ITEM) + SLACK,
        |server| {
            let mut conn = Conn::open(server, "reader");
            for batch in 0..3 {
                let request: String = (0..100).map(|i| format!("get {}\r\n", keys[i % 4])).collect();
                conn.send(request.as_bytes());
                for i in 0..100 {
                    let blocks = conn.value_blocks(&format!("batch {batch} get {i}"));
                    assert_eq!(blocks.len(), 1, "batch {batch} get {i}");
                    assert_eq!(blocks[0].0, keys[i % 4]);
                    assert!(blocks[0].3 == values[i % 4], "batch {batch} get {i}: wrong value bytes");
                }
            }
        },
    );
}

/// 40 connections each send all but the last byte of a 16 MB set and stop, with
/// `-m 64 -I 16m`: request bytes beyond each connection's base buffer come from
/// read_buf_mem_limit, so the server holds about that much (memcached 1.6.18: 69 MB;
/// ringcache before: 649 MB), and small requests are served meanwhile.
#[test]
fn forty_16mb_sets_stalled_one_byte_short() {
    let mut server = start_ringcache!(&["-t", "2", "-m", "64", "-I", "16m"]);
    // The automatic read_buf_mem_limit for 2 shards and -I 16m: two of the largest
    // requests per shard.
    let read_budget = 2 * 2 * (16 * MIB + 2);
    let allowed = read_budget + 40 * 32 * KIB + SLACK;
    under_attack("40 stalled 16 MB sets", &mut server, allowed, |server| {
        let body = Arc::new(vec![b'x'; 16_000_000 - 1]);
        let addr = server.addr();
        let senders: Vec<_> = (0..40)
            .map(|i| {
                let (body, addr) = (body.clone(), addr.clone());
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(&addr).expect("connect");
                    s.set_write_timeout(Some(Duration::from_secs(4))).unwrap();
                    let _ = s.write_all(format!("set stalled{i} 0 0 16000000\r\n").as_bytes());
                    // The server may stop reading (waiting for budget): the write times out.
                    let _ = s.write_all(&body);
                    s
                })
            })
            .collect();
        let held: Vec<TcpStream> = senders.into_iter().map(|t| t.join().expect("sender")).collect();
        std::thread::sleep(Duration::from_secs(1));
        drop(held);
    });
}

/// A memory-file path (`-e`) in a fresh temporary directory of this test run.
fn memory_file(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("ringcache-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("mem").to_str().expect("utf-8 path").to_string()
}

/// SIGTERM while a client has 100 MB of replies unread: the stop completes after the
/// grace period (ringcache before: never), exits 0, and with `-e` the store is saved.
#[test]
fn sigterm_with_unread_replies_stops_after_the_grace_period_and_saves() {
    let file = memory_file("grace");
    let file = file.as_str();
    let args = ["-t", "2", "-m", "64", "-e", file, "--shutdown-grace", "2"];
    let mut server = start_ringcache!(&args);
    set(&server, "big", &value_of(3, 1_000_000));
    for i in 0..100 {
        set(&server, &format!("small{i}"), format!("v{i}").as_bytes());
    }
    let mut stuck = server.connect();
    stuck.write_all(b"get big\r\n".repeat(100).as_slice()).expect("send gets");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    server.signal("-TERM");
    let status = server.wait_for_exit(Duration::from_secs(2 + 5));
    let status =
        status.unwrap_or_else(|| panic!("still running {:?} after SIGTERM with a 2 s grace", started.elapsed()));
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() >= Duration::from_millis(1900), "the stuck client got its grace period");
    drop(stuck);

    let server = start_ringcache!(&args);
    let mut conn = Conn::open(&server, "after restart");
    for i in 0..100 {
        conn.send(format!("get small{i}\r\n").as_bytes());
        let blocks = conn.value_blocks("get after restart");
        assert_eq!(blocks.first().map(|b| b.3.clone()), Some(format!("v{i}").into_bytes()), "small{i} was saved");
    }
}

/// A second signal ends the connections at once instead of waiting out the grace
/// period, and the store is still saved.
#[test]
fn a_second_signal_stops_at_once() {
    let file = memory_file("second");
    let file = file.as_str();
    let mut server = start_ringcache!(&["-t", "2", "-e", file, "--shutdown-grace", "60"]);
    set(&server, "big", &value_of(4, 1_000_000));
    let mut stuck = server.connect();
    stuck.write_all(b"get big\r\n".repeat(100).as_slice()).expect("send gets");
    std::thread::sleep(Duration::from_millis(300));
    server.signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.is_running(), "the first signal waits for the grace period");
    server.signal("-INT");
    let status = server.wait_for_exit(Duration::from_secs(5)).expect("stopped after the second signal");
    assert!(status.success(), "exit status {status}");
    for shard in 0..2 {
        let meta = format!("{file}.shard{shard}.meta");
        assert!(std::path::Path::new(&meta).exists(), "{meta}: saved after the second signal too");
    }
}

/// A shard that cannot start (here: its memory file cannot be created) stops the whole
/// process with a message and a non-zero status, instead of leaving the other shards
/// waiting for it.
#[test]
fn a_shard_that_cannot_start_stops_the_process() {
    let (status, stderr) = run_ringcache_to_exit!(
        &["-l", "127.0.0.1", "-p", "0", "-t", "2", "-e", "/nonexistent-ringcache-dir/mem"],
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("shard") && stderr.contains("failed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// SIGUSR1 stops gracefully, as in memcached (without -e there is nothing to save);
/// SIGHUP is ignored (ringcache before: SIGHUP killed the process).
#[test]
fn sighup_is_ignored_and_sigusr1_stops_gracefully() {
    let mut server = start_ringcache!(&["-t", "2"]);
    let mut conn = Conn::open(&server, "client");
    server.signal("-HUP");
    std::thread::sleep(Duration::from_millis(200));
    conn.send(b"version\r\n");
    assert!(conn.line().starts_with(b"VERSION "), "served after SIGHUP");
    assert!(server.is_running(), "SIGHUP killed the server");
    server.signal("-USR1");
    let status = server.wait_for_exit(Duration::from_secs(10)).expect("stopped after SIGUSR1");
    assert!(status.success(), "exit status {status}");
}

/// `-l` that cannot be listened on: a clear message and exit 71 at once, as memcached
/// (ringcache before: every shard thread panicked and the process stayed up).
#[test]
fn bad_listen_addresses_refuse_to_start() {
    for address in ["fooble", "256.1.1.1", ""] {
        let (status, stderr) = run_ringcache_to_exit!(&["-l", address, "-p", "0"], Duration::from_secs(10));
        assert_eq!(status.code(), Some(71), "-l {address:?}: {stderr}");
        assert!(stderr.contains("-l"), "-l {address:?}: the message names the flag: {stderr}");
        assert!(!stderr.contains("panicked"), "-l {address:?}: {stderr}");
    }
}

/// A second ringcache on a port already served is refused (SO_REUSEPORT would have let
/// the kernel split clients between the two), and the first keeps every client.
#[test]
fn a_second_ringcache_on_the_same_port_is_refused() {
    let server = start_ringcache!(&["-t", "2"]);
    let port = server.port.to_string();
    let (status, stderr) =
        run_ringcache_to_exit!(&["-l", "127.0.0.1", "-p", &port, "-t", "2"], Duration::from_secs(10));
    assert_eq!(status.code(), Some(71), "{stderr}");
    assert!(stderr.contains("already served"), "{stderr}");
    for i in 0..40 {
        let mut conn = Conn::open(&server, format!("client {i}"));
        conn.send(format!("set shared{i} 0 0 1\r\nx\r\nget shared{i}\r\n").as_bytes());
        conn.expect_line("STORED", "set");
        assert_eq!(conn.value_blocks("get after set").len(), 1, "client {i}: a get after its set missed");
    }
}

/// More shards than CPUs, impossible sizes and limits: refused at once with a clear
/// message and exit 64 (EX_USAGE), never a panic or an abort.
#[test]
fn settings_that_cannot_work_refuse_to_start() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()).to_string();
    let too_many = (cpus.parse::<usize>().unwrap_or(1) + 1).to_string();
    let cases: [(&[&str], &str); 9] = [
        (&["-t", &too_many], "CPUs"),
        (&["-t", "1000"], "CPUs"),
        (&["--expected-items", "1000000000000"], "index"),
        (&["-o", "hashpower=40"], "too high"),
        (&["-m", "64", "-I", "64m"], "1/2 of memory"),
        (&["-m", "0"], "-m"),
        (&["-c", "0"], "Maximum connections"),
        (&["-m", "4", "-I", "2m", "-t", "2"], "too small"),
        (&["-o", "idle_timeout=forever"], "idle_timeout"),
    ];
    for (args, message) in cases {
        let mut all = vec!["-l", "127.0.0.1", "-p", "0"];
        all.extend_from_slice(args);
        let (status, stderr) = run_ringcache_to_exit!(&all, Duration::from_secs(10));
        assert_eq!(status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: expected {message:?} in {stderr}");
    }
}

/// `-c` above the file-descriptor limit: raised when the hard limit allows, refused
/// (exit 71) when it does not (ringcache before: started, then failed every accept).
#[test]
fn conn_limit_above_the_file_limit_is_raised_or_refused() {
    let with_nofile = |soft: u64, hard: u64| {
        move |command: &mut Command| {
            // SAFETY: setrlimit in the child between fork and exec touches no shared state.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    };
    // Hard limit 256 (a root process could raise it; drop the capability by asking for
    // more than the kernel's fs.nr_open instead when running as root).
    let nr_open: u64 =
        std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1 << 20);
    let conns = (nr_open + 1).to_string();
    let binary = env!("CARGO_BIN_EXE_ringcache");
    let mut command = Command::new(binary);
    command.args(["-l", "127.0.0.1", "-p", "0", "-t", "1", "-c", &conns]).stdout(Stdio::null()).stderr(Stdio::piped());
    with_nofile(256, 256)(&mut command);
    let mut child = command.spawn().expect("spawn");
    let status = wait_child(&mut child, Duration::from_secs(10)).expect("refused at once");
    let mut stderr = String::new();
    let _ = child.stderr.take().map(|mut p| p.read_to_string(&mut stderr));
    assert_eq!(status.code(), Some(71), "{stderr}");
    assert!(stderr.contains("file descriptors"), "{stderr}");

    // A soft limit below -c with a hard limit above it: raised, and the server serves.
    let server = start_ringcache_with!(&["-t", "1", "-c", "1024"], with_nofile(256, 4096));
    let status = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap_or_default();
    let soft: u64 = status
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(soft >= 1024, "the soft file limit was raised for -c 1024: {soft}");
    let mut conn = Conn::open(&server, "client");
    conn.send(b"version\r\n");
    assert!(conn.line().starts_with(b"VERSION "));
}

/// `-p 0`: one port chosen by the kernel, the same for every shard (ringcache before:
/// each shard listened on a different random port).
#[test]
fn port_zero_listens_on_one_port_for_every_shard() {
    let binary = env!("CARGO_BIN_EXE_ringcache");
    let mut child = Command::new(binary)
        .args(["-l", "127.0.0.1", "-p", "0", "-t", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let port = loop {
        let found = lines.lock().unwrap_or_else(|e| e.into_inner()).iter().find_map(|l| {
            l.split("listening on 127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u16>().ok())
        });
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline, "no 'listening on' line: {:?}", lines.lock().map(|l| l.clone()));
        std::thread::sleep(Duration::from_millis(20));
    };
    let server = Server { port, child };
    for i in 0..20 {
        let mut conn = Conn::open(&server, format!("client {i}"));
        conn.send(format!("set p0-{i} 0 0 1\r\nx\r\nget p0-{i}\r\n").as_bytes());
        conn.expect_line("STORED", "set");
        assert_eq!(conn.value_blocks("get").len(), 1, "client {i}");
    }
}

/// Opens up to `n` connections that send `first` and then one byte a second of `rest`
/// (for `seconds`), in the background, once the server has exactly `open` connections
/// besides (the start-up probe's connection must be gone, or the attack fills -c short).
fn trickle(
    server: &Server,
    open: u64,
    n: usize,
    first: &'static [u8],
    rest: u8,
    seconds: u64,
) -> std::thread::JoinHandle<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    // `stats` counts the connection that asks.
    while stat(server, "curr_connections") != Some(open + 1) {
        assert!(Instant::now() < deadline, "the server never had exactly {open} other connections");
        std::thread::sleep(Duration::from_millis(20));
    }
    // And the connection that asked is gone too (its close is handled in microseconds;
    // there is no signal for it short of asking again).
    std::thread::sleep(Duration::from_millis(200));
    let conns: Vec<TcpStream> = (0..n).filter_map(|_| TcpStream::connect(server.addr()).ok()).collect();
    std::thread::spawn(move || {
        let mut conns = conns;
        for c in &mut conns {
            let _ = c.write_all(first);
        }
        for _ in 0..seconds {
            std::thread::sleep(Duration::from_secs(1));
            conns.retain_mut(|c| c.write_all(&[rest]).is_ok());
        }
    })
}

/// One number from `stats` (asked on a connection of its own, counted in it).
fn stat(server: &Server, name: &str) -> Option<u64> {
    let mut s = server.connect();
    s.write_all(b"stats\r\n").ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.ends_with(b"END\r\n") {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply);
    let prefix = format!("STAT {name} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

/// Seconds until a new connection is served (`version` answered), polling.
fn seconds_until_served(server: &Server, within: Duration) -> Option<f64> {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Ok(mut s) = TcpStream::connect(server.addr()) {
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut reply = [0u8; 8];
            if s.write_all(b"version\r\n").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"VERSION " {
                return Some(started.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// 60 slow-loris connections against `-c 50 -o idle_timeout=2`: the slow ones are
/// closed and new clients are served again after about the idle timeout (memcached
/// 1.6.18 with idle_timeout=3: 6 s; ringcache before: never, idle_timeout was ignored).
#[test]
fn slow_loris_with_idle_timeout_frees_the_connection_limit() {
    let server = start_ringcache!(&["-t", "2", "-c", "50", "-o", "idle_timeout=2"]);
    let attack = trickle(&server, 0, 60, b"g", b'e', 10);
    std::thread::sleep(Duration::from_millis(300));
    let served = seconds_until_served(&server, Duration::from_secs(10));
    let served = served.unwrap_or_else(|| panic!("new clients still refused 10 s into the attack"));
    println!("slow loris vs idle_timeout=2: a new client was served after {served:.1} s");
    assert!(served >= 1.0, "the attack did not fill -c 50 (served after {served:.1} s)");
    let _ = attack.join();
}

/// Without idle_timeout (memcached's default: idle connections stay), a request trickled
/// in slower than `request_timeout` is closed, while an idle connection is not.
#[test]
fn a_trickled_request_is_closed_after_request_timeout() {
    let server = start_ringcache!(&["-t", "2", "-c", "20", "-o", "request_timeout=2"]);
    let mut idle = Conn::open(&server, "idle connection");
    let attack = trickle(&server, 1, 30, b"set k 0 0 100\r\n", b'v', 8);
    std::thread::sleep(Duration::from_millis(300));
    let served = seconds_until_served(&server, Duration::from_secs(8));
    let served = served.unwrap_or_else(|| panic!("new clients still refused 8 s into the attack"));
    println!("trickled requests vs request_timeout=2: a new client was served after {served:.1} s");
    assert!(served >= 1.0, "the attack did not fill -c 20 (served after {served:.1} s)");
    idle.send(b"version\r\n");
    assert!(idle.line().starts_with(b"VERSION "), "an idle connection is not a slow request");
    let _ = attack.join();
}

/// 10,000 connections at once against the default `-c 1024`: beyond the limit they are
/// refused, memory stays within the per-connection bound, the checker is served.
#[test]
fn ten_thousand_connections() {
    // Room for 10,000 sockets in this process.
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let want = 10_500u64.max(limit.rlim_cur);
        let raised = libc::rlimit { rlim_cur: want, rlim_max: limit.rlim_max.max(want) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            let within = libc::rlimit { rlim_cur: limit.rlim_max.min(want), rlim_max: limit.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &within);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    let count = 10_000.min(limit.rlim_cur.saturating_sub(200) as usize);
    let mut server = start_ringcache!(&["-t", "2"]);
    under_attack(&format!("{count} connections"), &mut server, 1024 * 32 * KIB + SLACK, |server| {
        let mut open = Vec::with_capacity(count);
        let mut failed = 0;
        for _ in 0..count {
            match TcpStream::connect(server.addr()) {
                Ok(s) => open.push(s),
                Err(_) => failed += 1,
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        // Each one is either served or was told the limit and closed.
        let mut served = 0;
        for s in open.iter_mut().step_by(50) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"version\r\n");
            let mut reply = [0u8; 8];
            if s.read_exact(&mut reply).is_ok() && &reply == b"VERSION " {
                served += 1;
            }
        }
        println!("{count} connections: {failed} connects failed, {served} of every 50th served");
        assert!(served > 0 && served < open.len().div_ceil(50), "some served, the rest refused");
    });
}

/// A get of 100,000 keys (ten of them set): answered with exactly those ten values.
#[test]
fn multiget_of_100000_keys() {
    let mut server = start_ringcache!(&["-t", "2"]);
    for i in 0..10 {
        set(&server, &format!("mk{}", i * 9_999), format!("value{i}").as_bytes());
    }
    // The line (~700 KB) takes request buffer from read_buf_mem_limit.
    under_attack("get of 100,000 keys", &mut server, 8 * MIB + per_connection(MAX_ITEM) + SLACK, |server| {
        let mut conn = Conn::open(server, "multiget");
        let keys: Vec<String> = (0..100_000).map(|i| format!("mk{i}")).collect();
        conn.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
        let blocks = conn.value_blocks("get of 100,000 keys");
        let got: Vec<(String, Vec<u8>)> = blocks.into_iter().map(|b| (b.0, b.3)).collect();
        let want: Vec<(String, Vec<u8>)> =
            (0..10).map(|i| (format!("mk{}", i * 9_999), format!("value{i}").into_bytes())).collect();
        assert_eq!(got, want);
    });
}

/// Binary garbage on 8 connections and absurd numbers: the server answers or closes,
/// stays within its bound, and serves the checker throughout.
#[test]
fn binary_garbage_and_extreme_numbers() {
    let mut server = start_ringcache!(&["-t", "2"]);
    under_attack("binary garbage and extreme numbers", &mut server, 8 * per_connection(MAX_ITEM) + SLACK, |server| {
        let addr = server.addr();
        let garbage: Vec<_> = (0..8u64)
            .map(|seed| {
                let addr = addr.clone();
                std::thread::spawn(move || {
                    let mut rng = Rng(seed);
                    let bytes: Vec<u8> =
                        (0..1 << 20).map(|_| if rng.chance(2) { b'\n' } else { rng.below(256) as u8 }).collect();
                    if let Ok(mut s) = TcpStream::connect(&addr) {
                        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                        let _ = s.write_all(&bytes);
                        let _ = s.shutdown(Shutdown::Write);
                        let mut sink = Vec::new();
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let _ = s.read_to_end(&mut sink);
                    }
                })
            })
            .collect();
        let mut conn = Conn::open(server, "numbers");
        let absurd = [
            "set n 4294967296 0 1\r\nx\r\n",
            "set n 99999999999999999999 0 1\r\nx\r\n",
            "set n 0 -99999999999999999999 1\r\nx\r\n",
            "set n 0 0 -1\r\n",
            "set n 0 0 4294967295\r\n",
            "set n 0 0 99999999999999999999\r\n",
            "incr n 18446744073709551616\r\n",
            "incr n -1\r\n",
            "touch n 99999999999999999999\r\n",
            "gat -99999999999999999999 n\r\n",
            "flush_all 99999999999999999999\r\n",
            "verbosity 99999999999999999999\r\n",
            "cas n 0 0 1 18446744073709551616\r\nx\r\n",
        ];
        for request in absurd {
            conn.send(request.as_bytes());
            let line = conn.line();
            assert!(!line.is_empty(), "{request:?}: an empty reply line");
        }
        for g in garbage {
            let _ = g.join();
        }
    });
}

/// A client that pipelines gets and never reads a reply: once its replies fill the reply
/// limit the server stops parsing, and its receive is paused after a few buffers (the
/// shard's receive buffers are shared by every connection), so it holds no more of
/// them; a well-behaved client is served meanwhile, and the hostile one is closed after
/// `write_timeout`.
#[test]
fn a_pipelining_client_that_never_reads_holds_few_receive_buffers() {
    let mut server = start_ringcache!(&["-t", "1", "-m", "64", "-o", "write_timeout=2"]);
    set(&server, "k", b"v");
    under_attack(
        "16 MB of pipelined gets, replies never read",
        &mut server,
        per_connection(MAX_ITEM) + SLACK,
        |server| {
            let mut s = server.connect();
            s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
            let requests = b"get k\r\n".repeat(16 * 1024 * 1024 / 7);
            // The write stops when the server stops taking bytes; its error is expected.
            let _ = s.write_all(&requests);
            let paused = stat(server, "recv_paused").expect("stats answered");
            assert!(paused >= 1, "the hostile connection's receive was never paused (recv_paused {paused})");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                    Err(e) => panic!("the server did not close a client that read nothing: {e}"),
                }
            }
        },
    );
}
