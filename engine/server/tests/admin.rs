//! Whole-process tests of memcached's administration commands and of proactive expiry:
//!
//! * `expired_items_are_reclaimed_without_a_read`: items whose TTL ran out leave
//!   `curr_items` (and their bytes leave `bytes`) within seconds, with no command naming
//!   them, as memcached's LRU crawler makes visible; `crawler_reclaimed` counts them.
//! * `the_lru_crawler_answers_as_memcached_through_disable`: `crawl`, `disable`, `crawl`
//!   again, `enable`, `crawl`, against memcached and ringcache: the same answers (state
//!   that the conformance cases cannot share, as it outlives a case).
//! * `cache_memlimit_shrinks_a_full_cache_and_lets_it_grow_again`: with 48 MB of items
//!   in `-m 64`, `cache_memlimit 16` brings `bytes` under 16 MB (evicting) and
//!   `limit_maxbytes` to 16 MB; `cache_memlimit 128` then lets it hold more than 64 MB.
//! * `shutdown_only_with_dash_a`: without `-A`, `shutdown` is answered and the server
//!   serves on; with `-A`, `shutdown` and `shutdown graceful` stop it with status 0.

use ringcache_test_support::{roundtrip, start_memcached, start_ringcache, Server};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s
}

/// `stats` as (name, value) pairs.
fn stat(s: &mut TcpStream, name: &str) -> u64 {
    let reply = String::from_utf8_lossy(&roundtrip(s, b"stats\r\n", b"END\r\n")).into_owned();
    reply
        .lines()
        .filter_map(|l| l.strip_prefix("STAT "))
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stat {name} in {reply}"))
}

/// Polls `stats` until `done(stat)` holds; panics after `within`.
fn wait_for_stat(s: &mut TcpStream, name: &str, within: Duration, done: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let v = stat(s, name);
        if done(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} still {v} after {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn set_many(s: &mut TcpStream, prefix: &str, n: usize, ttl: u32, value: &[u8]) {
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(format!("set {prefix}{i} 0 {ttl} {} noreply\r\n", value.len()).as_bytes());
        batch.extend_from_slice(value);
        batch.extend_from_slice(b"\r\n");
        if batch.len() > 1 << 20 {
            s.write_all(&batch).expect("send");
            batch.clear();
        }
    }
    batch.extend_from_slice(b"mn\r\n");
    s.write_all(&batch).expect("send");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"MN\r\n") {
        assert_eq!(s.read(&mut byte).expect("read"), 1, "closed while storing");
        line.push(byte[0]);
    }
    assert_eq!(line, b"MN\r\n", "noreply sets answered nothing");
}

#[test]
fn expired_items_are_reclaimed_without_a_read() {
    let server = start_ringcache!(&["-t", "2"]);
    let mut s = connect(&server);
    set_many(&mut s, "short", 5000, 3, b"a value of some thirty bytes..");
    set_many(&mut s, "long", 100, 0, b"kept");
    let bytes_before = stat(&mut s, "bytes");
    assert!(stat(&mut s, "curr_items") > 100, "short-lived items are there before they expire");
    let left = wait_for_stat(&mut s, "curr_items", Duration::from_secs(10), |n| n == 100);
    assert_eq!(left, 100);
    assert!(stat(&mut s, "crawler_reclaimed") >= 5000 - stat(&mut s, "get_expired"));
    assert!(stat(&mut s, "bytes") < bytes_before / 10, "their memory is live no more");
    let reply = roundtrip(&mut s, b"get long7\r\n", b"END\r\n");
    assert_eq!(reply, b"VALUE long7 0 4\r\nkept\r\nEND\r\n");
}

#[test]
fn the_lru_crawler_answers_as_memcached_through_disable() {
    let mut answers = Vec::new();
    for server in [start_memcached(&["-t", "2"]), start_ringcache!(&["-t", "2"])] {
        let mut s = connect(&server);
        let mut steps = vec![roundtrip(&mut s, b"lru_crawler crawl all\r\nmn\r\n", b"MN\r\n")];
        // memcached's crawl runs in its own thread: disabling while it runs would answer
        // differently, so wait until it is done (it answers `BUSY` until then).
        let deadline = Instant::now() + Duration::from_secs(10);
        while roundtrip(&mut s, b"lru_crawler crawl 1\r\n", b"\r\n").starts_with(b"BUSY") {
            assert!(Instant::now() < deadline, "the crawl never ended");
            std::thread::sleep(Duration::from_millis(20));
        }
        steps.push(roundtrip(&mut s, b"lru_crawler disable\r\n", b"\r\n"));
        // memcached's thread stops a moment later; `stats settings` says when.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&roundtrip(&mut s, b"stats settings\r\n", b"END\r\n")).contains("lru_crawler no")
        {
            assert!(Instant::now() < deadline, "the crawler never stopped");
            std::thread::sleep(Duration::from_millis(20));
        }
        steps.push(roundtrip(&mut s, b"lru_crawler crawl all\r\n", b"\r\n"));
        steps.push(roundtrip(&mut s, b"lru_crawler metadump all\r\n", b"\r\n"));
        steps.push(roundtrip(&mut s, b"lru_crawler enable\r\nlru_crawler enable\r\nmn\r\n", b"MN\r\n"));
        answers.push(steps.concat());
    }
    assert_eq!(
        String::from_utf8_lossy(&answers[0]),
        "OK\r\nMN\r\nOK\r\nCLIENT_ERROR lru crawler disabled\r\nCLIENT_ERROR lru crawler disabled\r\nOK\r\nERROR failed to start lru crawler thread\r\nMN\r\n",
        "memcached"
    );
    assert_eq!(String::from_utf8_lossy(&answers[1]), String::from_utf8_lossy(&answers[0]), "ringcache vs memcached");
}

#[test]
fn cache_memlimit_shrinks_a_full_cache_and_lets_it_grow_again() {
    let server = start_ringcache!(&["-t", "1", "-m", "64"]);
    let mut s = connect(&server);
    let value = vec![b'v'; 4000];
    set_many(&mut s, "k", 12_000, 0, &value);
    assert!(stat(&mut s, "bytes") > 40 << 20, "the cache is full enough");
    assert_eq!(roundtrip(&mut s, b"cache_memlimit 16\r\n", b"\r\n"), b"OK\r\n");
    assert_eq!(stat(&mut s, "limit_maxbytes"), 16 << 20);
    wait_for_stat(&mut s, "bytes", Duration::from_secs(10), |b| b <= 16 << 20);
    set_many(&mut s, "more", 5_000, 0, &value);
    assert!(stat(&mut s, "bytes") <= 16 << 20, "and stays under the limit");
    assert_eq!(roundtrip(&mut s, b"cache_memlimit 128\r\n", b"\r\n"), b"OK\r\n");
    set_many(&mut s, "grown", 25_000, 0, &value);
    assert!(stat(&mut s, "bytes") > 64 << 20, "grown past the -m it started with");
}

#[test]
fn shutdown_only_with_dash_a() {
    let mut plain = start_ringcache!(&["-t", "2"]);
    let mut s = connect(&plain);
    assert_eq!(roundtrip(&mut s, b"shutdown\r\n", b"\r\n"), b"ERROR: shutdown not enabled\r\n");
    assert_eq!(roundtrip(&mut s, b"version\r\n", b"\r\n").get(..8), Some(&b"VERSION "[..]));
    assert!(plain.is_running());
    for how in ["shutdown\r\n", "shutdown graceful\r\n"] {
        let mut server = start_ringcache!(&["-t", "2", "-A"]);
        let mut s = connect(&server);
        assert_eq!(roundtrip(&mut s, b"shutdown foo\r\n", b"\r\n"), b"CLIENT_ERROR invalid shutdown mode\r\n");
        s.write_all(how.as_bytes()).expect("send");
        let status = server.wait_for_exit(Duration::from_secs(20));
        assert_eq!(status.map(|s| s.code()), Some(Some(0)), "{how:?} stops the server cleanly");
    }
}

/// The names of `stats <which>`'s fields, in order.
fn stat_names(server: &Server, which: &str) -> Vec<String> {
    let mut s = connect(server);
    let reply = roundtrip(&mut s, format!("stats {which}\r\n").as_bytes(), b"END\r\n");
    String::from_utf8_lossy(&reply)
        .lines()
        .filter_map(|l| l.strip_prefix("STAT "))
        .filter_map(|l| l.split(' ').next().map(str::to_string))
        .collect()
}

/// Scripts read `stats settings` by name: every field memcached prints is there, in
/// memcached's order (ringcache's own come after them).
#[test]
fn stats_settings_has_every_field_memcached_prints_in_its_order() {
    let memcached = stat_names(&start_memcached(&["-t", "2"]), "settings");
    let ringcache = stat_names(&start_ringcache!(&["-t", "2"]), "settings");
    assert!(memcached.len() > 50, "memcached printed {memcached:?}");
    let missing: Vec<_> = memcached.iter().filter(|n| !ringcache.contains(n)).collect();
    assert!(missing.is_empty(), "missing from ringcache's stats settings: {missing:?}");
    assert_eq!(&ringcache[..memcached.len()], &memcached[..], "in memcached's order");
}

/// The state the administration commands change shows in `stats settings`.
#[test]
fn stats_settings_show_what_admin_commands_changed() {
    let server = start_ringcache!(&["-t", "2", "-m", "64"]);
    let mut s = connect(&server);
    let setting = |s: &mut TcpStream, name: &str| -> String {
        let reply = String::from_utf8_lossy(&roundtrip(s, b"stats settings\r\n", b"END\r\n")).into_owned();
        reply
            .lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {name} in {reply}"))
    };
    assert_eq!(setting(&mut s, "maxbytes"), (64u64 << 20).to_string());
    assert_eq!(
        roundtrip(
            &mut s,
            b"cache_memlimit 32\r\nverbosity 5\r\nslabs automove 2\r\nlru_crawler disable\r\n",
            b"OK\r\nOK\r\nOK\r\nOK\r\n"
        ),
        b"OK\r\nOK\r\nOK\r\nOK\r\n"
    );
    assert_eq!(setting(&mut s, "maxbytes"), (32u64 << 20).to_string());
    assert_eq!(setting(&mut s, "verbosity"), "2", "memcached keeps at most 2");
    assert_eq!(setting(&mut s, "slab_automove"), "2");
    assert_eq!(setting(&mut s, "lru_crawler"), "no");
}

/// `stats` has every field memcached prints, in memcached's relative order (ringcache's
/// own, such as its io_uring counters, come between them), except `libevent` (ringcache
/// does not use it).
#[test]
fn stats_has_every_field_memcached_prints_in_its_order() {
    let memcached = stat_names(&start_memcached(&["-t", "2"]), "");
    let ringcache = stat_names(&start_ringcache!(&["-t", "2"]), "");
    assert!(memcached.len() > 80, "memcached printed {memcached:?}");
    let mut at = 0;
    for name in memcached.iter().filter(|n| *n != "libevent") {
        match ringcache[at..].iter().position(|n| n == name) {
            Some(i) => at += i + 1,
            None => panic!("`{name}` missing from ringcache's stats, or out of memcached's order: {ringcache:?}"),
        }
    }
}

/// `store_too_large` and `cmd_meta` count what memcached counts (the same requests, the
/// same figures), and `store_no_memory` counts sets refused under `-M`.
#[test]
fn store_failures_and_meta_debug_are_counted_as_memcached_counts_them() {
    let requests = format!(
        "set big 0 0 2000000 noreply\r\n{}\r\nms big2 2000000 q\r\n{}\r\nset k 0 0 1\r\nx\r\nme k\r\nme nothing\r\nmg k v\r\nmn\r\n",
        "v".repeat(2_000_000),
        "v".repeat(2_000_000)
    );
    let mut figures = Vec::new();
    for server in [start_memcached(&["-t", "2"]), start_ringcache!(&["-t", "2"])] {
        let mut s = connect(&server);
        roundtrip(&mut s, requests.as_bytes(), b"MN\r\n");
        figures.push([stat(&mut s, "store_too_large"), stat(&mut s, "cmd_meta"), stat(&mut s, "cmd_set")]);
    }
    assert_eq!(figures[0], [2, 2, 1], "memcached (a value too large is not a set)");
    assert_eq!(figures[1], figures[0], "ringcache vs memcached");
    let server = start_ringcache!(&["-t", "1", "-m", "2", "-M"]);
    let mut s = connect(&server);
    let value = "v".repeat(100_000);
    let mut refused = 0;
    for i in 0..40 {
        let reply = roundtrip(&mut s, format!("set k{i} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(), b"\r\n");
        refused += u64::from(reply == b"SERVER_ERROR out of memory storing object\r\n");
    }
    assert!(refused > 0, "-m 2 -M holds fewer than 40 values of 100 KB");
    assert_eq!(stat(&mut s, "store_no_memory"), refused);
}

/// The per-class fields of `stats items` and `stats slabs` (`items:<id>:<name>`,
/// `<id>:<name>`).
fn class_fields(server: &Server, which: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in stat_names(server, which) {
        let field = match which {
            "items" => name.splitn(3, ':').nth(2).map(str::to_string),
            _ => name.split_once(':').map(|(_, f)| f.to_string()),
        };
        if let Some(f) = field.filter(|f| !names.contains(f)) {
            names.push(f);
        }
    }
    names
}

/// `stats items` and `stats slabs` name every per-class field memcached does, in its
/// order, and carry ringcache's figures: items per TTL class, evictions and expiries
/// where they happened.
#[test]
fn stats_items_and_slabs_name_memcacheds_fields_with_ringcaches_figures() {
    let setup = b"set a 0 0 5\r\nhello\r\nget a\r\nmn\r\n";
    let memcached = start_memcached(&["-t", "1"]);
    let ringcache = start_ringcache!(&["-t", "1", "-m", "4"]);
    for server in [&memcached, &ringcache] {
        roundtrip(&mut connect(server), setup, b"MN\r\n");
    }
    for which in ["items", "slabs"] {
        let want = class_fields(&memcached, which);
        let got = class_fields(&ringcache, which);
        assert!(want.len() > 10, "memcached's {which}: {want:?}");
        assert_eq!(&got[..want.len()], &want[..], "stats {which}: memcached's fields in its order");
    }
    let mut s = connect(&ringcache);
    set_many(&mut s, "ttl", 50, 1000, b"x");
    let value = vec![b'v'; 1000];
    set_many(&mut s, "big", 6000, 0, &value);
    let items = String::from_utf8_lossy(&roundtrip(&mut s, b"stats items\r\n", b"END\r\n")).into_owned();
    let field = |name: &str| -> Vec<u64> {
        items
            .lines()
            .filter_map(|l| l.strip_prefix("STAT items:"))
            .filter_map(|l| l.split_once(' ').filter(|(k, _)| k.ends_with(&format!(":{name}"))))
            .filter_map(|(_, v)| v.parse().ok())
            .collect()
    };
    let evicted: u64 = field("evicted").iter().sum();
    assert!(evicted > 0 && evicted == stat(&mut s, "evictions"), "evictions by class add up: {items}");
    assert!(field("number").contains(&50), "the 50 items with a TTL are a class of their own: {items}");
    assert_eq!(field("number").iter().sum::<u64>(), stat(&mut s, "curr_items"));
}

/// `lru_crawler metadump all`: one line per live item with memcached's fields; the same
/// keys (URI-encoded), expiry state and fetched flags as memcached's (times, CAS, class
/// and size are each server's own), then `END`. Expired and deleted items are left out.
#[test]
fn metadump_lists_the_live_items_as_memcached_does() {
    let setup = b"set a:b 0 100 5\r\nhello\r\nset c%20d 0 0 1\r\nx\r\nget c%20d\r\nset gone 0 0 1\r\ny\r\ndelete gone\r\nmn\r\n";
    let mut dumps = Vec::new();
    for server in [start_memcached(&["-t", "2"]), start_ringcache!(&["-t", "2"])] {
        let mut s = connect(&server);
        roundtrip(&mut s, setup, b"MN\r\n");
        let dump =
            String::from_utf8_lossy(&roundtrip(&mut s, b"lru_crawler metadump all\r\n", b"END\r\n")).into_owned();
        assert!(dump.ends_with("\nEND\r\n"), "{dump}");
        let mut lines: Vec<String> = dump
            .lines()
            .filter(|l| l.starts_with("key="))
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 7, "{l}");
                let names: Vec<&str> = f.iter().map(|x| x.split('=').next().unwrap_or("")).collect();
                assert_eq!(names, ["key", "exp", "la", "cas", "fetch", "cls", "size"], "{l}");
                format!("{} never-expires={} {}", f[0], f[1] == "exp=-1", f[4])
            })
            .collect();
        lines.sort();
        dumps.push(lines);
    }
    assert_eq!(dumps[0], ["key=a%3Ab never-expires=false fetch=no", "key=c%2520d never-expires=true fetch=yes"]);
    assert_eq!(dumps[1], dumps[0], "ringcache vs memcached");
}

/// A metadump of many items arrives whole, a chunk at a time, with memory bounded.
#[test]
fn metadump_of_many_items_streams_every_one() {
    let server = start_ringcache!(&["-t", "2", "-m", "128"]);
    let mut s = connect(&server);
    set_many(&mut s, "many:", 50_000, 0, b"v");
    let dump = roundtrip(&mut s, b"lru_crawler metadump all\r\n", b"END\r\n");
    let lines = dump.split(|&b| b == b'\n').filter(|l| l.starts_with(b"key=many%3A")).count();
    assert_eq!(lines, 50_000);
}

/// CAS values differ between servers: `VALUE k f n <cas>` and meta `c<cas>` become `<cas>`.
fn without_cas(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply)
        .split("\r\n")
        .map(|line| {
            let mut t: Vec<String> = line.split(' ').map(str::to_string).collect();
            if t.len() == 5 && t[0] == "VALUE" {
                t[4] = "<cas>".into();
            }
            for x in t.iter_mut().skip(1) {
                if x.len() > 1 && x.starts_with('c') && x[1..].bytes().all(|b| b.is_ascii_digit()) && line.len() < 40 {
                    *x = "c<cas>".into();
                }
            }
            t.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Settings that change answers answer as memcached's do: `-C` (every CAS is 0, and a
/// CAS of 0 never matches), `-I 2m` with a small `-m` (a 1.5 MB value is stored), and
/// `-M` (a full cache refuses with memcached's error and counts `store_no_memory`).
#[test]
fn settings_that_change_answers_answer_as_memcached() {
    let script = format!(
        "set a 0 0 1\r\nx\r\ngets a\r\nmg a c v\r\nms b 1 c\r\ny\r\ncas a 0 0 1 0\r\nz\r\nflush_all\r\ngets a\r\n\
         ms c 1 C0\r\nq\r\nmg c c v\r\nset big 0 0 1500000\r\n{}\r\nget big\r\nmn\r\n",
        "v".repeat(1_500_000)
    );
    for args in [&["-C"][..], &["-I", "2m", "-m", "8"][..]] {
        let mut replies = Vec::new();
        for server in
            [start_memcached(&[&["-t", "2"][..], args].concat()), start_ringcache!(&[&["-t", "2"][..], args].concat())]
        {
            replies.push(without_cas(&roundtrip(&mut connect(&server), script.as_bytes(), b"MN\r\n")));
        }
        assert_eq!(replies[1], replies[0], "{args:?}: ringcache vs memcached");
    }
    for server in [start_memcached(&["-t", "1", "-m", "4", "-M"]), start_ringcache!(&["-t", "1", "-m", "4", "-M"])] {
        let mut s = connect(&server);
        let value = "v".repeat(100_000);
        let mut refusal = None;
        for i in 0..100 {
            let reply = roundtrip(&mut s, format!("set k{i} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(), b"\r\n");
            if reply != b"STORED\r\n" {
                refusal = Some(String::from_utf8_lossy(&reply).into_owned());
                break;
            }
        }
        assert_eq!(refusal.as_deref(), Some("SERVER_ERROR out of memory storing object\r\n"), "-M -m 4 fills up");
        assert_eq!(stat(&mut s, "store_no_memory"), 1);
        assert_eq!(stat(&mut s, "evictions"), 0);
    }
}
