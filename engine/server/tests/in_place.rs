//! Large values are sent from their segments without a copy, the segment pinned until
//! the send ends. These whole-process tests attack that: a client stops reading in the
//! middle of a large value while other clients flush and overwrite the whole store, and
//! many clients read large values while writers force eviction after eviction. Every
//! byte a client receives must be the value it asked for, and every pin must be let go
//! of when the sends end (`stats slabs`: `segments_pinned`, `segments_parked`).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ringcache_test_support::{fnv1a, start_ringcache, Conn, Rng, Server};

type Stats = std::collections::HashMap<String, u64>;

/// `stats slabs` as name -> number.
fn slab_stats(server: &Server) -> Stats {
    stats(server, "stats slabs")
}

/// The numbers of a `stats` command (asked on a connection of its own).
fn stats(server: &Server, command: &str) -> Stats {
    let mut conn = Conn::open(server, "stats");
    conn.send(format!("{command}\r\n").as_bytes());
    let mut stats = std::collections::HashMap::new();
    loop {
        let line = String::from_utf8_lossy(&conn.line()).into_owned();
        if line == "END" {
            return stats;
        }
        let mut fields = line.split(' ').skip(1);
        if let (Some(name), Some(Ok(value))) = (fields.next(), fields.next().map(str::parse)) {
            stats.insert(name.to_string(), value);
        }
    }
}

/// Polls `stats slabs` until `done` holds for it (the server acts on its own time: a
/// closed connection's pins go when the server sees the close); fails after 10 s.
fn wait_for_stats(server: &Server, what: &str, mut done: impl FnMut(&Stats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = slab_stats(server);
        if done(&stats) {
            return;
        }
        assert!(Instant::now() < deadline, "waiting for {what}: stats slabs {stats:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A value that names its key and version, with a checksum at the end.
fn value_for(key: &str, version: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(fnv1a(&[key.as_bytes()]) ^ version);
    let mut v = format!("{key}|{version}|").into_bytes();
    while v.len() < len - 16 {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(len - 16);
    let sum = fnv1a(&[&v]);
    v.extend_from_slice(format!("{sum:016x}").as_bytes());
    v
}

/// Checks a value made by [`value_for`] for `key`.
fn verify(key: &str, value: &[u8]) -> Result<(), String> {
    let (body, sum) = value.split_at(value.len().saturating_sub(16));
    let prefix = format!("{key}|");
    if !body.starts_with(prefix.as_bytes()) {
        return Err(format!("value for {key} starts {:?}", String::from_utf8_lossy(&body[..body.len().min(40)])));
    }
    if sum != format!("{:016x}", fnv1a(&[body])).as_bytes() {
        return Err(format!("value for {key} ({} bytes) fails its checksum: torn or overwritten", value.len()));
    }
    Ok(())
}

fn set(conn: &mut Conn, key: &str, value: &[u8]) {
    let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    conn.send(&req);
    conn.expect_line("STORED", &format!("set {key}"));
}

/// A client asks for one large value many times and stops reading; meanwhile the store
/// is flushed and every segment written over. The value being sent stays intact (its
/// segment is parked, not reused), and once the client reads everything, no pin is left.
#[test]
fn a_value_being_sent_survives_flush_and_overwrite() {
    let server = start_ringcache!(&["-t", "1", "-m", "16"]);
    let len = 900_000;
    let original = value_for("big", 1, len);
    let mut writer = Conn::open(&server, "writer");
    set(&mut writer, "big", &original);

    // 40 copies (36 MB) cannot all fit in the sockets' buffers: the server blocks in
    // the middle of a send.
    let mut reader = Conn::open(&server, "slow reader");
    reader.send(format!("get{}\r\n", " big".repeat(40)).as_bytes());
    // From the first copy's execution to the last one's send, the reader holds a pin
    // (the next copy is pinned before the connection can yield to another), so the
    // flush below always finds one.
    wait_for_stats(&server, "the value's segment pinned by the send", |s| s["segments_pinned"] >= 1);

    writer.send(b"flush_all\r\n");
    writer.expect_line("OK", "flush_all");
    let parked = slab_stats(&server)["segments_parked"];
    assert!(parked >= 1, "the flushed segment a send is using is parked, not freed: {parked}");
    for i in 0..40 {
        set(&mut writer, &format!("new{i}"), &value_for(&format!("new{i}"), 2, len));
    }

    // Everything the slow reader gets is the original value, whole.
    let blocks = reader.value_blocks("40 gets of big");
    assert!(!blocks.is_empty(), "the first copy was already being sent before the flush");
    for (i, (key, _, _, data)) in blocks.iter().enumerate() {
        assert_eq!(key, "big");
        assert!(data == &original, "copy {i} of {} differs from the value that was set", blocks.len());
    }
    wait_for_stats(&server, "every pin let go of", |s| s["segments_pinned"] == 0 && s["segments_parked"] == 0);
    writer.send(b"get new39\r\n");
    let blocks = writer.value_blocks("get new39");
    assert_eq!(blocks.len(), 1, "the store works normally afterwards");
    verify("new39", &blocks[0].3).unwrap_or_else(|e| panic!("{e}"));
}

/// Readers fetch large values (some of them slowly, a few bytes at a time) while
/// writers overwrite them and force evictions; a reader that leaves in the middle of a
/// value lets its pins go. No value is ever torn or foreign, and no pin is left.
#[test]
fn large_values_read_under_eviction_are_never_torn() {
    let server = start_ringcache!(&["-t", "2", "-m", "8"]);
    let keys: Vec<String> = (0..64).map(|i| format!("large{i}")).collect();
    std::thread::scope(|s| {
        for w in 0..2u64 {
            let (server, keys) = (&server, &keys);
            s.spawn(move || {
                let mut conn = Conn::open(server, format!("writer {w}"));
                let mut rng = Rng(w + 1);
                for version in 0..300u64 {
                    let key = &keys[rng.below(keys.len() as u64) as usize];
                    let len = 5_000 + rng.below(250_000) as usize;
                    set(&mut conn, key, &value_for(key, version * 2 + w, len));
                }
            });
        }
        for r in 0..4u64 {
            let (server, keys) = (&server, &keys);
            s.spawn(move || {
                let mut rng = Rng(100 + r);
                let mut conn = Conn::open(server, format!("reader {r}"));
                for round in 0..150 {
                    let asked: Vec<&str> =
                        (0..4).map(|_| keys[rng.below(keys.len() as u64) as usize].as_str()).collect();
                    if r == 3 && round % 10 == 9 {
                        // Ask, read a little, and leave in the middle of a value.
                        let mut quitter = server.connect();
                        quitter.write_all(format!("get {}\r\n", asked.join(" ")).as_bytes()).expect("send");
                        let mut some = [0u8; 100];
                        let _ = quitter.read(&mut some);
                        continue;
                    }
                    conn.send(format!("get {}\r\n", asked.join(" ")).as_bytes());
                    for (key, _, _, data) in conn.value_blocks("multi-get of large values") {
                        assert!(asked.contains(&key.as_str()), "{key} was not asked for");
                        verify(&key, &data).unwrap_or_else(|e| panic!("reader {r}: {e}"));
                    }
                }
            });
        }
    });
    let general = stats(&server, "stats");
    assert!(general["evictions"] > 0, "the writers forced evictions while values were being sent");
    assert!(general["recv_direct"] > 0, "large sets were received straight into request buffers");
    assert!(general["io_uring_fixed_file_conns"] > 0, "the ring named sockets by their fixed-file index");
    wait_for_stats(&server, "every pin let go of", |s| s["segments_pinned"] == 0 && s["segments_parked"] == 0);
}
