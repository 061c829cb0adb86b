//! `watch`, whole-process (2 shards, so keys land on both): log lines in memcached
//! 1.6's formats, streamed to the watching connection.
//!
//! * `fetches_and_stores_stream_as_memcached_formats_them`: `watch fetchers mutations`,
//!   then another client's classic and meta gets and stores: one line each, in order
//!   per key, with memcached's fields (keys URI-encoded, statuses and commands named as
//!   memcached names them); what the watcher sends is ignored.
//! * `connections_and_evictions_are_watched`: `watch connevents evictions`: a client's
//!   `conn_new` and `conn_close` (normal), and the items evicted under a small `-m`.
//! * `twenty_watchers_at_most`: the 21st gets memcached's refusal and stays a normal
//!   connection; `stats` counts `log_watchers`; once one leaves, a new one is taken.
//! * `a_slow_watcher_skips_lines_and_says_so`: a watcher that does not read while
//!   megabytes of lines are made holds a bounded buffer; reading again, it finds
//!   `skipped=N` before the next line, and `stats` counts `log_watcher_skipped`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringcache_test_support::{roundtrip, start_ringcache, Server};

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s
}

/// A watching connection: `watch <args>` answered `OK`.
fn watcher(server: &Server, args: &str) -> BufReader<TcpStream> {
    let mut s = connect(server);
    assert_eq!(roundtrip(&mut s, format!("watch {args}\r\n").as_bytes(), b"\r\n"), b"OK\r\n");
    BufReader::new(s)
}

/// The next `n` lines the watcher receives (each within the read timeout).
fn lines(w: &mut BufReader<TcpStream>, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut line = String::new();
            match w.read_line(&mut line) {
                Ok(0) => panic!("the watcher was closed after {i} lines"),
                Ok(_) => line,
                Err(e) => panic!("line {i} of {n}: {e}"),
            }
        })
        .collect()
}

/// `line` without its `ts=` and `gid=` fields (checked for shape), the rest as sent.
fn fields(line: &str) -> String {
    let rest = line.strip_suffix('\n').unwrap_or_else(|| panic!("ends in \\n: {line:?}"));
    let mut parts = rest.splitn(3, ' ');
    let ts = parts.next().and_then(|t| t.strip_prefix("ts=")).unwrap_or_else(|| panic!("ts first: {line:?}"));
    let (secs, micros) = ts.split_once('.').unwrap_or_else(|| panic!("ts=S.U: {line:?}"));
    assert!(secs.parse::<u64>().is_ok() && micros.parse::<u32>().is_ok_and(|u| u < 1_000_000), "{line:?}");
    let gid = parts.next().and_then(|g| g.strip_prefix("gid=")).unwrap_or_else(|| panic!("gid second: {line:?}"));
    assert!(gid.parse::<u64>().is_ok(), "{line:?}");
    parts.next().unwrap_or_default().to_string()
}

/// Drops `cfd=N` (the server's descriptor numbers), keeping the field's place.
fn without_cfd(line: &str) -> String {
    line.split(' ').map(|f| if f.starts_with("cfd=") { "cfd=_" } else { f }).collect::<Vec<_>>().join(" ")
}

#[test]
fn fetches_and_stores_stream_as_memcached_formats_them() {
    let server = start_ringcache!(&["-t", "2"]);
    let mut w = watcher(&server, "fetchers mutations");
    let mut c = connect(&server);
    let script: &[(&[u8], &[u8], &[&str])] = &[
        (
            b"set foo 0 100 3\r\nbar\r\n",
            b"STORED\r\n",
            &["type=item_store key=foo status=stored cmd=set ttl=100 clsid=0 cfd=_ size=3"],
        ),
        (b"get foo\r\n", b"END\r\n", &["type=item_get key=foo status=found clsid=0 cfd=_ size=3"]),
        (b"get nope\r\n", b"END\r\n", &["type=item_get key=nope status=not_found clsid=0 cfd=_ size=0"]),
        (
            b"add foo 0 0 1\r\nx\r\n",
            b"NOT_STORED\r\n",
            &["type=item_store key=foo status=not_stored cmd=add ttl=0 clsid=0 cfd=_ size=1"],
        ),
        (
            b"set a/b:c%d 0 0 2\r\nhi\r\n",
            b"STORED\r\n",
            &["type=item_store key=a%2Fb%3Ac%25d status=stored cmd=set ttl=0 clsid=0 cfd=_ size=2"],
        ),
        (
            b"ms m1 2 T50 MR\r\nhi\r\n",
            b"NS\r\n",
            &["type=item_store key=m1 status=not_stored cmd=replace ttl=50 clsid=0 cfd=_ size=2"],
        ),
        (b"mg foo v\r\n", b"bar\r\n", &["type=item_get key=foo status=found clsid=0 cfd=_ size=3"]),
        (b"delete foo\r\n", b"DELETED\r\n", &["type=item_get key=foo status=found clsid=0 cfd=_ size=0"]),
        (b"incr foo 1\r\n", b"NOT_FOUND\r\n", &["type=item_get key=foo status=not_found clsid=0 cfd=_ size=0"]),
    ];
    for (request, ends, expected) in script {
        roundtrip(&mut c, request, ends);
        for (line, want) in lines(&mut w, expected.len()).iter().zip(expected.iter()) {
            assert_eq!(without_cfd(&fields(line)), *want, "{:?}", String::from_utf8_lossy(request));
        }
    }
    // What the watcher sends is not answered, and it goes on streaming.
    w.get_mut().write_all(b"version\r\nquit\r\nwatch evictions\r\n").expect("send");
    roundtrip(&mut c, b"get nope2\r\n", b"END\r\n");
    let line = &lines(&mut w, 1)[0];
    assert_eq!(without_cfd(&fields(line)), "type=item_get key=nope2 status=not_found clsid=0 cfd=_ size=0", "{line}");
}

#[test]
fn connections_and_evictions_are_watched() {
    let server = start_ringcache!(&["-t", "1", "-m", "8"]);
    let mut w = watcher(&server, "connevents evictions");
    let mut c = connect(&server);
    let port = c.local_addr().expect("addr").port();
    let new = fields(&lines(&mut w, 1)[0]);
    assert!(new.starts_with(&format!("type=conn_new rip=127.0.0.1 rport={port} transport=tcp cfd=")), "{new}");
    // 200 values of 100 KB do not fit in 8 MB: the first ones are evicted.
    let value = vec![b'v'; 100_000];
    for i in 0..200 {
        let mut request = format!("set big{i} 0 0 {}\r\n", value.len()).into_bytes();
        request.extend_from_slice(&value);
        request.extend_from_slice(b"\r\n");
        roundtrip(&mut c, &request, b"STORED\r\n");
    }
    let evicted = fields(&lines(&mut w, 1)[0]);
    assert!(evicted.starts_with("type=eviction key=big"), "{evicted}");
    assert!(evicted.ends_with(" fetch=no ttl=-1 la=0 clsid=0 size=100000"), "{evicted}");
    drop(c);
    let closed = loop {
        let line = fields(&lines(&mut w, 1)[0]);
        if !line.starts_with("type=eviction") {
            break line;
        }
    };
    assert!(
        closed.starts_with(&format!("type=conn_close rip=127.0.0.1 rport={port} transport=tcp reason=normal cfd=")),
        "{closed}"
    );
}

fn stat(server: &Server, name: &str) -> u64 {
    let mut s = connect(server);
    let text = String::from_utf8_lossy(&roundtrip(&mut s, b"stats\r\n", b"END\r\n")).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("STAT {name} ")).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn twenty_watchers_at_most() {
    let server = start_ringcache!(&["-t", "2"]);
    let mut watchers: Vec<_> = (0..20).map(|_| watcher(&server, "fetchers")).collect();
    let mut extra = connect(&server);
    assert_eq!(roundtrip(&mut extra, b"watch\r\n", b"\r\n"), b"WATCHER_TOO_MANY log watcher limit reached\r\n");
    assert!(roundtrip(&mut extra, b"version\r\n", b"\r\n").starts_with(b"VERSION "), "still a normal connection");
    assert_eq!(stat(&server, "log_watchers"), 20);
    drop(watchers.pop());
    // The slot is let go when the server sees the watcher leave: ask until it has.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(&server, "log_watchers") != 19 {
        assert!(Instant::now() < deadline, "the watcher that left still holds its slot");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(roundtrip(&mut extra, b"watch\r\n", b"\r\n"), b"OK\r\n");
}

#[test]
fn a_slow_watcher_skips_lines_and_says_so() {
    let server = start_ringcache!(&["-t", "1"]);
    let mut w = watcher(&server, "fetchers");
    let mut c = connect(&server);
    // 100 000 misses with 200-byte keys: over 25 MB of lines, far more than the
    // watcher's buffer and the sockets' together.
    let key = "k".repeat(200);
    let batch = format!("get {}\r\n", vec![key.as_str(); 100].join(" "));
    for _ in 0..1000 {
        roundtrip(&mut c, batch.as_bytes(), b"END\r\n");
    }
    assert!(server.rss() < 512 << 20, "bounded while the watcher does not read");
    // Read what is there, then one more event: the skipped lines are said before it.
    roundtrip(&mut c, b"get after\r\n", b"END\r\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut skipped = None;
    while skipped.is_none() {
        assert!(Instant::now() < deadline, "no skipped= line");
        let line = &lines(&mut w, 1)[0];
        if let Some(n) = line.strip_prefix("skipped=") {
            skipped = Some(n.trim().parse::<u64>().expect("a count"));
            let next = fields(&lines(&mut w, 1)[0]);
            assert!(next.starts_with("type=item_get key="), "a line follows the marker: {next}");
        } else {
            fields(line);
            if line.contains("key=after ") {
                // Caught up without a marker yet: one more event brings it.
                roundtrip(&mut c, b"get after2\r\n", b"END\r\n");
            }
        }
    }
    let skipped = skipped.expect("counted");
    assert!(skipped > 0);
    assert!(stat(&server, "log_watcher_skipped") >= skipped);
}
