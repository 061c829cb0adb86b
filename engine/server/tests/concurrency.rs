//! Whole-process concurrency tests against `ringcache` started with 2 shards, so the
//! keys of one connection live on different shards:
//!
//! * `overlapping_keys_never_show_torn_or_foreign_values`: 16 connections (one thread
//!   each) hammer the same 64 keys with set/get/multi-get/gets+cas/add/delete; 4 of them
//!   send pipelined batches of mixed commands. Every value encodes (key, writer, sequence)
//!   with a length and a checksum, and its flags are derived from the checksum, so a
//!   reader verifies that every value it reads was written whole for that very key. Each
//!   reader also checks that, per (key, writer), sequence numbers never go backwards and
//!   that it reads its own latest write when the value is its own; multi-get replies must
//!   come back in request order, and each pipelined batch is checked reply by reply
//!   (including a private counter and a private key whose exact values are known).
//! * `cas_retry_loops_lose_no_increment`: threads increment a decimal counter with
//!   gets + cas retry loops; every number 1..=total must be written by exactly one
//!   successful cas, and the final value must equal the number of successful cas.
//! * `concurrent_incr_sums_exactly`: threads `incr` one counter by different amounts; the
//!   final value is the exact sum and every returned value is distinct.
//!
//! Everything is bounded by operation counts (and socket read timeouts), not by time.

use ringcache_test_support::{fnv1a, Block, Conn, Rng};
use ringcache_test_support::{start_ringcache, Server};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------
// Self-verifying values.
// ---------------------------------------------------------------------------------------

const KEYS: usize = 64;

fn key_name(i: usize) -> String {
    // Varying lengths and shapes so that keys hash to both shards.
    format!("conc:{i}:{}", "k".repeat(i % 7))
}

fn body(key: &str, writer: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(fnv1a(&[key.as_bytes()]) ^ (writer << 40) ^ seq);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `key|writer|seq|len|<len bytes>|<checksum hex>`; flags are derived from the checksum.
fn make_value(key: &str, writer: u64, seq: u64, rng: &mut Rng) -> (u32, Vec<u8>) {
    let len = if rng.chance(3) { 20_000 + rng.below(60_000) as usize } else { rng.below(3_000) as usize };
    let header = format!("{key}|{writer}|{seq}|{len}|");
    let data = body(key, writer, seq, len);
    let sum = fnv1a(&[header.as_bytes(), &data]);
    let mut value = header.into_bytes();
    value.extend_from_slice(&data);
    value.extend_from_slice(format!("|{sum:016x}").as_bytes());
    (flags_of(sum), value)
}

fn flags_of(sum: u64) -> u32 {
    (sum >> 32) as u32 ^ sum as u32
}

/// Checks that `value` (with `flags`) is a whole value written for `key`; returns
/// (writer, seq).
fn verify_value(key: &str, flags: u32, value: &[u8]) -> Result<(u64, u64), String> {
    let show = |v: &[u8]| String::from_utf8_lossy(&v[..v.len().min(80)]).into_owned();
    let mut fields = value.splitn(5, |&b| b == b'|');
    let (Some(k), Some(w), Some(s), Some(l), Some(rest)) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(format!("value for {key} is not in the written format: {:?}", show(value)));
    };
    if k != key.as_bytes() {
        return Err(format!("value read for key {key} was written for key {:?}", String::from_utf8_lossy(k)));
    }
    let parse = |f: &[u8]| std::str::from_utf8(f).ok().and_then(|s| s.parse::<u64>().ok());
    let (Some(writer), Some(seq), Some(len)) = (parse(w), parse(s), parse(l)) else {
        return Err(format!("value for {key} has a garbled header: {:?}", show(value)));
    };
    let len = len as usize;
    if rest.len() != len + 17 {
        return Err(format!(
            "value for {key} (writer {writer}, seq {seq}) has {} bytes after the header, want {}",
            rest.len(),
            len + 17
        ));
    }
    let (data, trailer) = rest.split_at(len);
    let header_len = value.len() - rest.len();
    let sum = fnv1a(&[&value[..header_len], data]);
    if trailer != format!("|{sum:016x}").as_bytes() {
        return Err(format!(
            "value for {key} (writer {writer}, seq {seq}, {len} bytes) fails its checksum: torn or corrupted"
        ));
    }
    if data != body(key, writer, seq, len) {
        return Err(format!("value for {key} (writer {writer}, seq {seq}) has the wrong body"));
    }
    if flags != flags_of(sum) {
        return Err(format!(
            "value for {key} (writer {writer}, seq {seq}) came back with flags {flags}, written with {}",
            flags_of(sum)
        ));
    }
    Ok((writer, seq))
}

/// What one thread has seen and written, for ordering checks.
struct History {
    me: u64,
    name: String,
    /// (key, writer) -> highest seq seen.
    seen: HashMap<(String, u64), u64>,
    /// key -> seq of my last write the server acknowledged as stored.
    mine: HashMap<String, u64>,
    /// Writes whose outcome is not known (noreply): reads of them are fine.
    unacked: HashMap<String, Vec<u64>>,
    values_checked: u64,
}

impl History {
    fn new(me: u64, name: String) -> History {
        History { me, name, seen: HashMap::new(), mine: HashMap::new(), unacked: HashMap::new(), values_checked: 0 }
    }

    fn observe(&mut self, key: &str, flags: u32, value: &[u8]) {
        let (writer, seq) = verify_value(key, flags, value).unwrap_or_else(|e| panic!("{}: {e}", self.name));
        self.values_checked += 1;
        let last = self.seen.entry((key.to_string(), writer)).or_insert(0);
        assert!(
            seq >= *last,
            "{}: read {key} from writer {writer} with seq {seq} after having read seq {last}: \
             an older value came back",
            self.name
        );
        *last = seq;
        if writer == self.me {
            let acked = self.mine.get(key).copied();
            let pending = self.unacked.get(key).is_some_and(|seqs| seqs.contains(&seq));
            assert!(
                acked == Some(seq) || pending,
                "{}: read my own value of {key} with seq {seq}, but my last acknowledged \
                 write of it was {acked:?}",
                self.name
            );
        }
    }

    fn stored(&mut self, key: &str, seq: u64) {
        self.mine.insert(key.to_string(), seq);
        // Unacknowledged writes sent before this one can no longer be current.
        if let Some(seqs) = self.unacked.get_mut(key) {
            seqs.retain(|&s| s > seq);
        }
    }

    fn sent_noreply(&mut self, key: &str, seq: u64) {
        self.unacked.entry(key.to_string()).or_default().push(seq);
    }
}

fn storage_command(cmd: &str, key: &str, flags: u32, value: &[u8], extra: &str) -> Vec<u8> {
    let mut out = format!("{cmd} {key} {flags} 0 {}{extra}\r\n", value.len()).into_bytes();
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

/// Checks a multi-get reply: hits must be the requested keys, in request order.
fn check_multi_get(hist: &mut History, requested: &[String], blocks: &[Block]) {
    let mut next = 0;
    for (key, flags, _cas, data) in blocks {
        match requested[next..].iter().position(|k| k == key) {
            Some(offset) => next += offset + 1,
            None => panic!(
                "{}: multi-get of {requested:?} returned {key:?} out of order or unrequested \
                 (returned keys: {:?})",
                hist.name,
                blocks.iter().map(|b| &b.0).collect::<Vec<_>>()
            ),
        }
        hist.observe(key, *flags, data);
    }
}

// ---------------------------------------------------------------------------------------
// Test 1: overlapping keys, request/response and pipelined connections.
// ---------------------------------------------------------------------------------------

const RANDOM_THREADS: u64 = 12;
const PIPELINE_THREADS: u64 = 4;
const OPS_PER_RANDOM_THREAD: u64 = 1_200;
const BATCHES_PER_PIPELINE_THREAD: u64 = 60;

fn random_worker(server: &Server, me: u64) -> u64 {
    let mut conn = Conn::open(server, format!("connection {me}"));
    let mut hist = History::new(me, conn.name.clone());
    let mut rng = Rng(0x5EED_0000 + me);
    let mut seq = 0u64;
    for op in 0..OPS_PER_RANDOM_THREAD {
        let key = key_name(rng.below(KEYS as u64) as usize);
        let dice = rng.below(100);
        if dice < 38 {
            seq += 1;
            let (flags, value) = make_value(&key, me, seq, &mut rng);
            conn.send(&storage_command("set", &key, flags, &value, ""));
            conn.expect_line("STORED", &format!("op {op}: set {key}"));
            hist.stored(&key, seq);
        } else if dice < 70 {
            conn.send(format!("get {key}\r\n").as_bytes());
            let blocks = conn.value_blocks(&format!("op {op}: get {key}"));
            check_multi_get(&mut hist, std::slice::from_ref(&key), &blocks);
        } else if dice < 82 {
            let n = 2 + rng.below(12) as usize;
            let keys: Vec<String> = (0..n).map(|_| key_name(rng.below(KEYS as u64) as usize)).collect();
            let cmd = if rng.chance(50) { "get" } else { "gets" };
            conn.send(format!("{cmd} {}\r\n", keys.join(" ")).as_bytes());
            let blocks = conn.value_blocks(&format!("op {op}: {cmd} of {n} keys"));
            check_multi_get(&mut hist, &keys, &blocks);
        } else if dice < 92 {
            conn.send(format!("gets {key}\r\n").as_bytes());
            let blocks = conn.value_blocks(&format!("op {op}: gets {key}"));
            check_multi_get(&mut hist, std::slice::from_ref(&key), &blocks);
            if let Some((_, _, cas, _)) = blocks.first() {
                let cas = cas.unwrap_or_else(|| panic!("{}: gets without a cas value", conn.name));
                seq += 1;
                let (flags, value) = make_value(&key, me, seq, &mut rng);
                conn.send(&storage_command("cas", &key, flags, &value, &format!(" {cas}")));
                let reply = conn.line();
                match reply.as_slice() {
                    b"STORED" => hist.stored(&key, seq),
                    b"EXISTS" | b"NOT_FOUND" => {}
                    other => panic!("{}: op {op}: cas {key} replied {:?}", conn.name, String::from_utf8_lossy(other)),
                }
            }
        } else if dice < 96 {
            seq += 1;
            let (flags, value) = make_value(&key, me, seq, &mut rng);
            conn.send(&storage_command("add", &key, flags, &value, ""));
            let reply = conn.line();
            match reply.as_slice() {
                b"STORED" => hist.stored(&key, seq),
                b"NOT_STORED" => {}
                other => panic!("{}: op {op}: add {key} replied {:?}", conn.name, String::from_utf8_lossy(other)),
            }
        } else {
            conn.send(format!("delete {key}\r\n").as_bytes());
            let reply = conn.line();
            assert!(
                reply == b"DELETED" || reply == b"NOT_FOUND",
                "{}: op {op}: delete {key} replied {:?}",
                conn.name,
                String::from_utf8_lossy(&reply)
            );
            hist.mine.remove(&key);
        }
    }
    hist.values_checked
}

/// What the reply to one pipelined command must look like.
enum Expect {
    Stored { key: String, seq: u64 },
    StoredOrNotStored { key: String, seq: u64 },
    DeletedOrNotFound { key: String },
    TouchedOrNotFound,
    Counter(u64),
    Values(Vec<String>),
    Exact { key: String, flags: u32, value: Vec<u8> },
    Version,
}

fn pipeline_worker(server: &Server, me: u64) -> u64 {
    let mut conn = Conn::open(server, format!("pipelined connection {me}"));
    let mut hist = History::new(me, conn.name.clone());
    let mut rng = Rng(0xB47C_0000 + me);
    let mut seq = 0u64;
    let counter_key = format!("conc:private:{me}:counter");
    let private_key = format!("conc:private:{me}:value");
    let mut counter = 0u64;
    conn.send(format!("set {counter_key} 0 0 1\r\n0\r\n").as_bytes());
    conn.expect_line("STORED", "set private counter");

    for batch_no in 0..BATCHES_PER_PIPELINE_THREAD {
        let mut batch = Vec::new();
        let mut expects = Vec::new();
        let commands = 10 + rng.below(30);
        for _ in 0..commands {
            let key = key_name(rng.below(KEYS as u64) as usize);
            match rng.below(100) {
                0..=24 => {
                    seq += 1;
                    let (flags, value) = make_value(&key, me, seq, &mut rng);
                    batch.extend(storage_command("set", &key, flags, &value, ""));
                    expects.push(Expect::Stored { key, seq });
                }
                25..=34 => {
                    seq += 1;
                    let (flags, value) = make_value(&key, me, seq, &mut rng);
                    batch.extend(storage_command("set", &key, flags, &value, " noreply"));
                    hist.sent_noreply(&key, seq);
                }
                35..=54 => {
                    batch.extend(format!("get {key}\r\n").as_bytes());
                    expects.push(Expect::Values(vec![key]));
                }
                55..=64 => {
                    let keys: Vec<String> =
                        (0..2 + rng.below(8)).map(|_| key_name(rng.below(KEYS as u64) as usize)).collect();
                    batch.extend(format!("gets {}\r\n", keys.join(" ")).as_bytes());
                    expects.push(Expect::Values(keys));
                }
                65..=69 => {
                    batch.extend(format!("delete {key}\r\n").as_bytes());
                    expects.push(Expect::DeletedOrNotFound { key });
                }
                70..=74 => {
                    seq += 1;
                    let (flags, value) = make_value(&key, me, seq, &mut rng);
                    batch.extend(storage_command("add", &key, flags, &value, ""));
                    expects.push(Expect::StoredOrNotStored { key, seq });
                }
                75..=79 => {
                    batch.extend(format!("touch {key} 0\r\n").as_bytes());
                    expects.push(Expect::TouchedOrNotFound);
                }
                80..=89 => {
                    let delta = 1 + rng.below(1000);
                    counter += delta;
                    batch.extend(format!("incr {counter_key} {delta}\r\n").as_bytes());
                    expects.push(Expect::Counter(counter));
                }
                90..=97 => {
                    let flags = rng.next_u64() as u32;
                    let value: Vec<u8> = (0..rng.below(200)).map(|_| rng.next_u64() as u8).collect();
                    batch.extend(storage_command("set", &private_key, flags, &value, ""));
                    expects.push(Expect::Stored { key: private_key.clone(), seq: 0 });
                    batch.extend(format!("get {private_key}\r\n").as_bytes());
                    expects.push(Expect::Exact { key: private_key.clone(), flags, value });
                }
                _ => {
                    batch.extend(b"version\r\n");
                    expects.push(Expect::Version);
                }
            }
        }

        // Write the whole batch from a helper thread while this one reads the replies, so
        // neither side can stall on full socket buffers.
        let mut writer = conn.writer.try_clone().expect("clone socket");
        let name = conn.name.clone();
        std::thread::scope(|s| {
            s.spawn(move || {
                if let Err(e) = writer.write_all(&batch) {
                    panic!("{name}: writing batch {batch_no}: {e}");
                }
            });
            for (i, expect) in expects.into_iter().enumerate() {
                let context = format!("batch {batch_no}, reply {i}");
                match expect {
                    Expect::Stored { key, seq } => {
                        conn.expect_line("STORED", &format!("{context}: set {key}"));
                        if key != private_key {
                            hist.stored(&key, seq);
                        }
                    }
                    Expect::StoredOrNotStored { key, seq } => {
                        let reply = conn.line();
                        match reply.as_slice() {
                            b"STORED" => hist.stored(&key, seq),
                            b"NOT_STORED" => {}
                            other => panic!(
                                "{}: {context}: add {key} replied {:?}",
                                conn.name,
                                String::from_utf8_lossy(other)
                            ),
                        }
                    }
                    Expect::DeletedOrNotFound { key } => {
                        let reply = conn.line();
                        assert!(
                            reply == b"DELETED" || reply == b"NOT_FOUND",
                            "{}: {context}: delete {key} replied {:?}",
                            conn.name,
                            String::from_utf8_lossy(&reply)
                        );
                        hist.mine.remove(&key);
                    }
                    Expect::TouchedOrNotFound => {
                        let reply = conn.line();
                        assert!(
                            reply == b"TOUCHED" || reply == b"NOT_FOUND",
                            "{}: {context}: touch replied {:?}",
                            conn.name,
                            String::from_utf8_lossy(&reply)
                        );
                    }
                    Expect::Counter(want) => {
                        conn.expect_line(&want.to_string(), &format!("{context}: incr private counter"));
                    }
                    Expect::Values(keys) => {
                        let blocks = conn.value_blocks(&context);
                        check_multi_get(&mut hist, &keys, &blocks);
                    }
                    Expect::Exact { key, flags, value } => {
                        let blocks = conn.value_blocks(&context);
                        assert!(
                            blocks.len() == 1 && blocks[0].0 == key && blocks[0].1 == flags && blocks[0].3 == value,
                            "{}: {context}: get {key} right after setting it in the same batch \
                             returned {:?}, want flags {flags} and {} bytes {:?}",
                            conn.name,
                            blocks.iter().map(|b| (&b.0, b.1, String::from_utf8_lossy(&b.3))).collect::<Vec<_>>(),
                            value.len(),
                            String::from_utf8_lossy(&value)
                        );
                    }
                    Expect::Version => {
                        let reply = conn.line();
                        assert!(
                            reply.starts_with(b"VERSION "),
                            "{}: {context}: version replied {:?}",
                            conn.name,
                            String::from_utf8_lossy(&reply)
                        );
                    }
                }
            }
        });
    }
    hist.values_checked
}

#[test]
fn overlapping_keys_never_show_torn_or_foreign_values() {
    let mut server = start_ringcache!(&["-t", "2"]);
    let checked = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        let server = &server;
        for me in 0..RANDOM_THREADS + PIPELINE_THREADS {
            let checked = checked.clone();
            s.spawn(move || {
                let n =
                    if me < RANDOM_THREADS { random_worker(server, me + 1) } else { pipeline_worker(server, me + 1) };
                checked.fetch_add(n, Ordering::Relaxed);
            });
        }
    });

    // Afterwards every key holds either nothing or one whole value written for it.
    let mut conn = Conn::open(&server, "final check");
    let mut hist = History::new(0, conn.name.clone());
    let keys: Vec<String> = (0..KEYS).map(key_name).collect();
    conn.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let blocks = conn.value_blocks("final multi-get of all keys");
    check_multi_get(&mut hist, &keys, &blocks);
    assert!(
        blocks.len() > KEYS / 2,
        "only {} of {KEYS} keys hold a value at the end; deletes are rare, so most should",
        blocks.len()
    );

    let checked = checked.load(Ordering::Relaxed);
    assert!(checked > 5_000, "only {checked} values were read and verified; the test did not exercise reads");
    assert!(server.is_running(), "server exited during the test");
}

// ---------------------------------------------------------------------------------------
// Test 2: gets + cas retry loops.
// ---------------------------------------------------------------------------------------

const CAS_THREADS: u64 = 8;
const CAS_INCREMENTS_PER_THREAD: u64 = 150;

#[test]
fn cas_retry_loops_lose_no_increment() {
    let mut server = start_ringcache!(&["-t", "2"]);
    let key = "conc:cas-counter";
    let mut setup = Conn::open(&server, "cas setup");
    setup.send(format!("set {key} 0 0 1\r\n0\r\n").as_bytes());
    setup.expect_line("STORED", "set counter to 0");

    let conflicts = AtomicU64::new(0);
    let written: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CAS_THREADS)
            .map(|me| {
                let server = &server;
                let conflicts = &conflicts;
                s.spawn(move || {
                    let mut conn = Conn::open(server, format!("cas thread {me}"));
                    let mut written = Vec::new();
                    while (written.len() as u64) < CAS_INCREMENTS_PER_THREAD {
                        conn.send(format!("gets {key}\r\n").as_bytes());
                        let blocks = conn.value_blocks("gets counter");
                        assert_eq!(blocks.len(), 1, "{}: counter vanished", conn.name);
                        let (_, _, cas, data) = &blocks[0];
                        let cas = cas.expect("gets returns a cas value");
                        let current: u64 =
                            std::str::from_utf8(data).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                                panic!("{}: counter is not a decimal: {:?}", conn.name, String::from_utf8_lossy(data))
                            });
                        let next = (current + 1).to_string();
                        conn.send(format!("cas {key} 0 0 {} {cas}\r\n{next}\r\n", next.len()).as_bytes());
                        let reply = conn.line();
                        match reply.as_slice() {
                            b"STORED" => written.push(current + 1),
                            b"EXISTS" => {
                                conflicts.fetch_add(1, Ordering::Relaxed);
                            }
                            other => panic!("{}: cas replied {:?}", conn.name, String::from_utf8_lossy(other)),
                        }
                    }
                    written
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let total = CAS_THREADS * CAS_INCREMENTS_PER_THREAD;
    let mut all: Vec<u64> = written.into_iter().flatten().collect();
    all.sort_unstable();
    let expected: Vec<u64> = (1..=total).collect();
    if all != expected {
        let dups: Vec<_> = all.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).take(10).collect();
        panic!(
            "successful cas operations did not write each of 1..={total} exactly once \
             (a cas with a stale token was accepted?); duplicates include {dups:?}"
        );
    }
    setup.send(format!("get {key}\r\n").as_bytes());
    let blocks = setup.value_blocks("final get of counter");
    assert_eq!(blocks.len(), 1, "counter vanished");
    assert_eq!(
        String::from_utf8_lossy(&blocks[0].3),
        total.to_string(),
        "final counter after {total} successful cas increments"
    );
    // Conflicts are what this test is about, but whether they happen depends on
    // scheduling, so they are reported rather than required.
    eprintln!("cas test: {total} successful cas, {} EXISTS conflicts retried", conflicts.load(Ordering::Relaxed));
    assert!(server.is_running(), "server exited during the test");
}

// ---------------------------------------------------------------------------------------
// Test 3: concurrent incr.
// ---------------------------------------------------------------------------------------

const INCR_THREADS: u64 = 8;
const INCRS_PER_THREAD: u64 = 400;

#[test]
fn concurrent_incr_sums_exactly() {
    let mut server = start_ringcache!(&["-t", "2"]);
    let key = "conc:incr-counter";
    let mut setup = Conn::open(&server, "incr setup");
    setup.send(format!("set {key} 0 0 1\r\n0\r\n").as_bytes());
    setup.expect_line("STORED", "set counter to 0");

    let returned: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..INCR_THREADS)
            .map(|me| {
                let server = &server;
                s.spawn(move || {
                    let mut conn = Conn::open(server, format!("incr thread {me}"));
                    let mut seen = Vec::new();
                    for i in 0..INCRS_PER_THREAD {
                        let delta = 1 + (me + i) % 5;
                        conn.send(format!("incr {key} {delta}\r\n").as_bytes());
                        let reply = conn.line();
                        let value: u64 =
                            std::str::from_utf8(&reply).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                                panic!("{}: incr replied {:?}", conn.name, String::from_utf8_lossy(&reply))
                            });
                        if let Some(&prev) = seen.last() {
                            assert!(
                                value >= prev + delta,
                                "{}: incr by {delta} returned {value} after {prev}: went backwards",
                                conn.name
                            );
                        }
                        seen.push(value);
                    }
                    seen
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let sum: u64 = (0..INCR_THREADS).flat_map(|me| (0..INCRS_PER_THREAD).map(move |i| 1 + (me + i) % 5)).sum();
    let mut all: Vec<u64> = returned.into_iter().flatten().collect();
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!(all.len(), before, "two incr operations returned the same value: an increment was lost");
    assert_eq!(all.last().copied(), Some(sum), "largest value returned by incr");

    setup.send(format!("get {key}\r\n").as_bytes());
    let blocks = setup.value_blocks("final get of counter");
    assert_eq!(blocks.len(), 1, "counter vanished");
    assert_eq!(
        String::from_utf8_lossy(&blocks[0].3),
        sum.to_string(),
        "final counter after {} incr operations",
        INCR_THREADS * INCRS_PER_THREAD
    );
    assert!(server.is_running(), "server exited during the test");
}
