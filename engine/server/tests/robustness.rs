//! Whole-process robustness test: `ringcache` (2 shards) is attacked by many misbehaving
//! connections at once while a well-behaved connection keeps doing set/get and verifying
//! every result. The abuse, all bounded in bytes, connections and time:
//!
//! * random bytes, and "token soup" (random sequences of command words, keys, huge and
//!   negative numbers, `\r\n`, NULs) in random-sized chunks;
//! * thousands of pipelined malformed commands on one connection, each of which must get
//!   exactly one error line, after which the same connection must still work;
//! * lines over 2048 bytes (up to 1 MB without a newline), over-long keys;
//! * truncated data blocks, data blocks longer than declared, negative and huge lengths
//!   (none of which may store anything);
//! * partial commands followed by a disconnect; connections that send commands and close
//!   without reading the replies;
//! * a slow client that sends a command one byte at a time (its reply must be exact);
//! * a `get` of 10,000 keys (its reply must be exact);
//! * a client that pipelines gets of a 64 KB value and never reads, while another
//!   connection must still be served, then disconnects.
//!
//! Afterwards the server process must still be running and must answer a fresh
//! connection correctly, with the data stored before the abuse intact.

use ringcache_test_support::{start_ringcache, Server};
use ringcache_test_support::{Conn, Rng};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The abuse below runs this many times (with different random data), concurrently
/// with the well-behaved checker.
const ROUNDS: u64 = 3;

/// Read/write timeout on abusive connections: bounds every wait on them.
const ABUSE_IO_TIMEOUT: Duration = Duration::from_secs(3);

const SENTINEL_KEY: &str = "robust:sentinel";
const SENTINEL_FLAGS: u32 = 0xDEAD_BEEF;

fn sentinel_value() -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).collect();
    v.extend_from_slice(b"\r\nEND\r\n");
    v
}

fn abuse_stream(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("abusive client: connect: {e}"));
    s.set_read_timeout(Some(ABUSE_IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(ABUSE_IO_TIMEOUT)).unwrap();
    s
}

/// Sends `chunks` on a fresh connection while a helper thread reads and discards whatever
/// comes back, then half-closes and waits (bounded by the read timeout) for the server to
/// close. Write errors are fine: the server may drop a connection that sends garbage.
/// Returns the number of reply bytes received.
fn blast(addr: &str, chunks: &[Vec<u8>]) -> usize {
    let stream = abuse_stream(addr);
    let mut reader = stream.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut total = 0;
        let mut buf = [0u8; 65536];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let mut writer = stream;
    for chunk in chunks {
        if writer.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Write);
    let received = drain.join().unwrap();
    drop(writer);
    received
}

/// Sends `bytes` and closes the connection at once, without reading anything.
fn hit_and_run(addr: &str, bytes: &[u8]) {
    let mut s = abuse_stream(addr);
    let _ = s.write_all(bytes);
}

fn random_chunks(rng: &mut Rng, data: &[u8]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = (1 + rng.below(4096) as usize).min(rest.len());
        chunks.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    chunks
}

/// Words the token soup is made of. Only `robust:junk*` keys appear, so the soup cannot
/// touch the keys the checks rely on; `flush_all` is deliberately absent.
const SOUP: &[&str] = &[
    "set",
    "get",
    "gets",
    "add",
    "replace",
    "append",
    "prepend",
    "cas",
    "incr",
    "decr",
    "delete",
    "touch",
    "gat",
    "gats",
    "version",
    "verbosity",
    "shutdown",
    "quit",
    "noreply",
    "robust:junk",
    "robust:junk2",
    "0",
    "1",
    "5",
    "-1",
    "-5",
    "65536",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "abc",
    " ",
    "  ",
    "\r\n",
    "\r\n",
    "\r\n",
    "\n",
    "\r",
    "\0",
    "\t",
    "\x7f",
];

fn token_soup(rng: &mut Rng, bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 64);
    while out.len() < bytes {
        match rng.below(50) {
            0 => out.extend(std::iter::repeat_n(b'k', 200 + rng.below(400) as usize)),
            1 => out.extend((0..rng.below(64)).map(|_| rng.next_u64() as u8)),
            _ => out.extend_from_slice(SOUP[rng.below(SOUP.len() as u64) as usize].as_bytes()),
        }
        if rng.chance(60) {
            out.push(b' ');
        }
    }
    out
}

/// Random bytes and token soup on several connections.
fn random_garbage(addr: &str, seed: u64) {
    let mut rng = Rng(seed);
    for i in 0..8 {
        let data: Vec<u8> = if i % 2 == 0 {
            (0..48 * 1024).map(|_| rng.next_u64() as u8).collect()
        } else {
            token_soup(&mut rng, 48 * 1024)
        };
        let chunks = random_chunks(&mut rng, &data);
        blast(addr, &chunks);
    }
}

/// Malformed commands that memcached answers with exactly one error line each (`ERROR`,
/// `CLIENT_ERROR ...` or `SERVER_ERROR ...`) without swallowing what follows.
const RECOVERABLE_JUNK: &[&[u8]] = &[
    b"foo",
    b"",
    b"   ",
    b"\x00\x01\x02",
    b"\xff\xfe",
    b"GET robust:junk",
    b"get",
    b"gets",
    b"set",
    b"set robust:junk",
    b"set robust:junk 0 0",
    b"set robust:junk 0 0 abc",
    b"set robust:junk 0 0 -1",
    b"set robust:junk abc 0 1",
    b"set robust:junk 0 abc 1",
    b"set robust:junk 0 0 99999999999999999999",
    b"append robust:junk 0 0 -5",
    b"cas robust:junk 0 0 1",
    b"cas robust:junk 0 0 1 abc",
    b"incr",
    b"incr robust:junk",
    b"incr robust:junk abc",
    b"incr robust:junk -1",
    b"incr robust:junk 18446744073709551616",
    b"decr",
    b"touch robust:junk",
    b"touch robust:junk abc",
    b"delete",
    b"delete robust:junk 0 extra",
    b"verbosity",
    b"gat",
    b"gat abc robust:junk",
    b"shutdown",
];

/// Many pipelined malformed commands on one connection: one error line each, in order,
/// and then the connection still works.
fn pipelined_junk(server: &Server) {
    let mut conn = Conn::open(server, "pipelined-junk connection");
    // (Not included: `get` of a key over 250 bytes. memcached 1.6.18 answers it with
    // CLIENT_ERROR but then drops replies to other commands pipelined with it; over-long
    // keys are sent by `long_lines` instead.)
    let lines: Vec<&[u8]> = RECOVERABLE_JUNK.repeat(200);
    let mut batch = Vec::new();
    for line in &lines {
        batch.extend_from_slice(line);
        batch.extend_from_slice(b"\r\n");
    }
    batch.extend_from_slice(b"set robust:after-junk 7 0 2\r\nok\r\nget robust:after-junk\r\n");
    let mut writer = conn.writer.try_clone().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || writer.write_all(&batch).expect("send pipelined junk"));
        for (i, line) in lines.iter().enumerate() {
            let reply = conn.line();
            assert!(
                reply.starts_with(b"ERROR") || reply.starts_with(b"CLIENT_ERROR") || reply.starts_with(b"SERVER_ERROR"),
                "pipelined junk line {i} {:?} got reply {:?}; every malformed line must get \
                 exactly one error line",
                String::from_utf8_lossy(line),
                String::from_utf8_lossy(&reply)
            );
        }
        conn.expect_line("STORED", &format!("set after {} junk lines", lines.len()));
        let blocks = conn.value_blocks(&format!("get after {} junk lines", lines.len()));
        assert_eq!(
            blocks,
            vec![("robust:after-junk".to_string(), 7, None, b"ok".to_vec())],
            "get after pipelined junk"
        );
    });
}

/// Lines longer than 2048 bytes, with and without a newline.
fn long_lines(addr: &str) {
    let big_key_set = format!("set robust:{} 0 0 1\r\nx\r\nversion\r\n", "a".repeat(5000));
    blast(addr, &[big_key_set.into_bytes()]);
    blast(addr, &[format!("set {}", "a".repeat(5000)).into_bytes()]);
    blast(addr, &[vec![b'x'; 1 << 20]]);
    let mut line = vec![b'y'; 100_000];
    line.extend_from_slice(b"\r\nversion\r\n");
    blast(addr, &[line]);
    blast(addr, &[format!("get {}\r\nversion\r\n", "a".repeat(3000)).into_bytes()]);
    blast(addr, &[format!("{}\r\nversion\r\n", " ".repeat(5000)).into_bytes()]);
}

/// Keys written by malformed storage commands; none of them may exist afterwards.
const MUST_NOT_EXIST: &[&str] =
    &["robust:truncated", "robust:truncated-2", "robust:overlong", "robust:negative", "robust:huge"];

/// Data blocks that are truncated, longer than declared, or of impossible length.
fn bad_data_blocks(addr: &str) {
    // Truncated, then the client goes away.
    hit_and_run(addr, &[b"set robust:truncated 0 0 100\r\n" as &[u8], &[b'z'; 50]].concat());
    // Truncated, then a half-close.
    blast(addr, &[b"set robust:truncated-2 0 0 100000\r\npartial".to_vec()]);
    // Longer than declared: must not store "hello" (memcached: CLIENT_ERROR bad data chunk).
    blast(addr, &[b"set robust:overlong 0 0 5\r\nhelloworld\r\nversion\r\n".to_vec()]);
    // Negative length, then what looks like a data block.
    blast(addr, &[b"set robust:negative 0 0 -1\r\nhello\r\nversion\r\n".to_vec()]);
    // A length far beyond any item size, followed by some of that data.
    blast(addr, &[b"set robust:huge 0 0 4294967295\r\n".to_vec(), vec![b'h'; 100_000], b"\r\nversion\r\n".to_vec()]);
}

/// Prefixes of valid commands, then a disconnect (some by drop, some by half-close).
fn partial_commands(addr: &str, seed: u64) {
    let mut rng = Rng(seed);
    let full: &[&[u8]] = &[
        b"get robust:junk robust:junk2\r\n",
        b"set robust:junk 0 0 10\r\n0123456789\r\n",
        b"cas robust:junk 0 0 3 12345\r\nabc\r\n",
        b"incr robust:junk 5\r\n",
        b"gets robust:junk\r\n",
        b"touch robust:junk 10\r\n",
        b"delete robust:junk noreply\r\n",
    ];
    for i in 0..40 {
        let cmd = full[rng.below(full.len() as u64) as usize];
        let cut = 1 + rng.below(cmd.len() as u64 - 1) as usize;
        if i % 2 == 0 {
            hit_and_run(addr, &cmd[..cut]);
        } else {
            blast(addr, &[cmd[..cut].to_vec()]);
        }
    }
}

/// Connections that send real commands and close without reading the replies.
fn abrupt_closes(addr: &str) {
    for i in 0..60 {
        let req = format!(
            "get {SENTINEL_KEY}\r\nset robust:junk 0 0 2\r\nab\r\nget robust:junk {SENTINEL_KEY}\r\n{}",
            "version\r\n".repeat(i % 7)
        );
        hit_and_run(addr, req.as_bytes());
    }
    // And some that connect and close without sending anything.
    for _ in 0..20 {
        drop(abuse_stream(addr));
    }
}

/// A command sent one byte at a time; the reply must be exact.
fn slow_client(server: &Server) {
    let mut conn = Conn::open(server, "slow client");
    let req = b"set robust:slow 5 0 11\r\nhello world\r\nget robust:slow\r\n";
    for &b in req.iter() {
        conn.send(&[b]);
        // Pacing, not synchronisation: make each byte arrive in its own segment.
        std::thread::sleep(Duration::from_millis(2));
    }
    conn.expect_line("STORED", "set sent one byte at a time");
    let blocks = conn.value_blocks("get sent one byte at a time");
    assert_eq!(
        blocks,
        vec![("robust:slow".to_string(), 5, None, b"hello world".to_vec())],
        "reply to commands sent one byte at a time"
    );
}

/// A single `get` of 10,000 keys, ten of which exist.
fn huge_get(server: &Server) {
    let mut conn = Conn::open(server, "10,000-key get");
    let present: Vec<usize> = (0..10).map(|i| i * 1000 + 7).collect();
    for &i in &present {
        let v = format!("many-{i}");
        conn.send(format!("set robust:many:{i} {i} 0 {}\r\n{v}\r\n", v.len()).as_bytes());
        conn.expect_line("STORED", "set a key for the 10,000-key get");
    }
    let keys: Vec<String> = (0..10_000).map(|i| format!("robust:many:{i}")).collect();
    conn.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let blocks = conn.value_blocks("get of 10,000 keys");
    let want: Vec<_> = present
        .iter()
        .map(|&i| (format!("robust:many:{i}"), i as u32, None, format!("many-{i}").into_bytes()))
        .collect();
    assert_eq!(blocks, want, "reply to a get of 10,000 keys (10 present)");
}

/// A client pipelines gets of a 64 KB value and never reads; while it is stuck another
/// connection must still be served; then it disconnects without reading.
fn unread_replies(server: &Server) {
    let mut other = Conn::open(server, "connection beside a stuck reader");
    let big = vec![b'B'; 64 * 1024];
    other.send(format!("set robust:bulk 0 0 {}\r\n", big.len()).as_bytes());
    other.send(&big);
    other.send(b"\r\n");
    other.expect_line("STORED", "set the 64 KB value");

    let mut stuck = abuse_stream(&server.addr());
    // 4,000 gets ask for ~256 MB of replies, far more than socket buffers hold, so the
    // server's writes to this connection stall. The request itself (~68 KB) fits in the
    // buffers, or the write times out; either way it returns.
    let _ = stuck.write_all(&b"get robust:bulk\r\n".repeat(4_000));
    for i in 0..20 {
        let v = format!("still-served-{i}");
        other.send(format!("set robust:beside 0 0 {}\r\n{v}\r\nget robust:beside\r\n", v.len()).as_bytes());
        other.expect_line("STORED", "set while another client does not read its replies");
        let blocks = other.value_blocks("get while another client does not read its replies");
        assert_eq!(
            blocks,
            vec![("robust:beside".to_string(), 0, None, v.into_bytes())],
            "get while another client does not read its replies"
        );
    }
    drop(stuck);
}

/// The well-behaved client: set/get with verification until told to stop.
fn checker(server: &Server, stop: &AtomicBool, ops: &AtomicU64) {
    let mut conn = Conn::open(server, "well-behaved checker");
    let sentinel = sentinel_value();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let key = format!("robust:good:{}", i % 50);
        let value = format!("good-{i}-{}", "v".repeat((i % 300) as usize));
        conn.send(format!("set {key} {i} 0 {}\r\n{value}\r\n", value.len()).as_bytes());
        conn.expect_line("STORED", &format!("checker set #{i}"));
        conn.send(format!("get {key} {SENTINEL_KEY}\r\n").as_bytes());
        let blocks = conn.value_blocks(&format!("checker get #{i}"));
        assert_eq!(
            blocks,
            vec![
                (key.clone(), i as u32, None, value.into_bytes()),
                (SENTINEL_KEY.to_string(), SENTINEL_FLAGS, None, sentinel.clone()),
            ],
            "checker get #{i} during the abuse"
        );
        ops.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn survives_garbage_and_misbehaving_clients() {
    let mut server = start_ringcache!(&["-t", "2"]);
    let addr = server.addr();
    let started = Instant::now();

    let mut setup = Conn::open(&server, "setup");
    let sentinel = sentinel_value();
    setup.send(format!("set {SENTINEL_KEY} {SENTINEL_FLAGS} 0 {}\r\n", sentinel.len()).as_bytes());
    setup.send(&sentinel);
    setup.send(b"\r\n");
    setup.expect_line("STORED", "set sentinel");

    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let ops_during_abuse = std::thread::scope(|s| {
        let checker_thread = s.spawn(|| checker(&server, &stop, &ops));
        let before = ops.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for round in 0..ROUNDS {
            let seed = 100 * round;
            let (addr, server) = (&addr, &server);
            let abusers = vec![
                ("random garbage", s.spawn(move || random_garbage(addr, seed + 1))),
                ("random garbage", s.spawn(move || random_garbage(addr, seed + 2))),
                ("random garbage", s.spawn(move || random_garbage(addr, seed + 3))),
                ("pipelined junk", s.spawn(move || pipelined_junk(server))),
                ("long lines", s.spawn(move || long_lines(addr))),
                ("bad data blocks", s.spawn(move || bad_data_blocks(addr))),
                ("partial commands", s.spawn(move || partial_commands(addr, seed + 4))),
                ("partial commands", s.spawn(move || partial_commands(addr, seed + 5))),
                ("abrupt closes", s.spawn(move || abrupt_closes(addr))),
                ("abrupt closes", s.spawn(move || abrupt_closes(addr))),
                ("slow client", s.spawn(move || slow_client(server))),
                ("10,000-key get", s.spawn(move || huge_get(server))),
                ("unread replies", s.spawn(move || unread_replies(server))),
            ];
            for (what, a) in abusers {
                if let Err(e) = a.join() {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.push(format!("round {round}, {what}: {msg}"));
                }
            }
        }
        let during = ops.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        if checker_thread.join().is_err() {
            failures.push("the well-behaved checker failed (see its panic above)".into());
        }
        assert!(failures.is_empty(), "while under abuse:\n{}", failures.join("\n"));
        during
    });
    assert!(
        ops_during_abuse >= 20,
        "the well-behaved client completed only {ops_during_abuse} set+get rounds while the \
         abuse ran; it should be served throughout"
    );

    assert!(server.is_running(), "server exited during the abuse");

    // A fresh connection is served correctly and the data from before is intact.
    let mut fresh = Conn::open(&server, "fresh connection after the abuse");
    fresh.send(b"version\r\n");
    let version = fresh.line();
    assert!(version.starts_with(b"VERSION "), "version after the abuse: {:?}", String::from_utf8_lossy(&version));
    fresh.send(b"set robust:final 3 0 5\r\nfinal\r\n");
    fresh.expect_line("STORED", "set after the abuse");
    fresh.send(format!("get robust:final {SENTINEL_KEY}\r\n").as_bytes());
    assert_eq!(
        fresh.value_blocks("get after the abuse"),
        vec![
            ("robust:final".to_string(), 3, None, b"final".to_vec()),
            (SENTINEL_KEY.to_string(), SENTINEL_FLAGS, None, sentinel),
        ],
        "get after the abuse"
    );
    fresh.send(format!("get {}\r\n", MUST_NOT_EXIST.join(" ")).as_bytes());
    let stored: Vec<String> =
        fresh.value_blocks("get of keys written only by malformed commands").into_iter().map(|b| b.0).collect();
    assert!(stored.is_empty(), "truncated, over-long or impossible data blocks stored something: {stored:?}");
    assert!(server.is_running(), "server exited after the abuse");
    eprintln!(
        "robustness: {} checker rounds, {ops_during_abuse} during the abuse, {:?} in all",
        ops.load(Ordering::Relaxed),
        started.elapsed()
    );
}
