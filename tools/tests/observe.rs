//! `ringcache-ctl stats|watch|dump|metrics` against running nodes (the `ringcache` built
//! beside this test, in the same target directory):
//!
//! * `stats_is_a_table_of_every_node_and_their_total`: two nodes with known traffic: one
//!   row each with their items and gets, a total row, the hit percentage.
//! * `watch_shows_rates_count_times`, `dump_lists_items_up_to_the_limit`,
//!   `metrics_prints_the_admin_listener`; an unreachable node is said, not hidden.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use ringcache_test_support::{reserve_port, roundtrip, start_ringcache_at, Server};

/// The `ringcache` binary of this build (`cargo test --workspace` builds it beside us).
fn ringcache() -> String {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    dir.join("ringcache").to_string_lossy().into_owned()
}

fn ctl(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcache-ctl")).args(args).output().expect("run ringcache-ctl");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn load(server: &Server, keys: usize, gets: &str) {
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut batch = Vec::new();
    for i in 0..keys {
        batch.extend_from_slice(format!("set key:{i} 0 0 2 noreply\r\nv{}\r\n", i % 10).as_bytes());
    }
    batch.extend_from_slice(format!("get {gets}\r\n").as_bytes());
    roundtrip(&mut s, &batch, b"END\r\n");
}

#[test]
fn stats_is_a_table_of_every_node_and_their_total() {
    let (a, b) = (start_ringcache_at(&ringcache(), &["-t", "1"]), start_ringcache_at(&ringcache(), &["-t", "2"]));
    load(&a, 10, "key:1 key:2 nope");
    load(&b, 30, "key:1");
    let nodes = format!("{},{}", a.addr(), b.addr());
    let (ok, out) = ctl(&["--nodes", &nodes, "stats"]);
    assert!(ok, "{out}");
    let rows: Vec<Vec<&str>> = out.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 3, "two nodes and the total:\n{out}");
    // Columns: node conns items bytes limit gets sets hits evictions expired hit%.
    assert_eq!((rows[0][2], rows[0][5], rows[0][7]), ("10", "3", "2"), "{out}");
    assert_eq!((rows[1][2], rows[1][5], rows[1][7]), ("30", "1", "1"), "{out}");
    assert_eq!((rows[2][0], rows[2][2], rows[2][5]), ("total", "40", "4"), "{out}");
    assert_eq!(rows[2][10], "75.0", "hit% of the total: {out}");
    let (ok, out) = ctl(&["--nodes", &format!("{},127.0.0.1:1", a.addr()), "stats"]);
    assert!(ok && out.contains("127.0.0.1:1") && out.contains("unreachable"), "{out}");
    let (ok, out) = ctl(&["stats"]);
    assert!(!ok && out.contains("--nodes is needed"), "{out}");
}

#[test]
fn watch_shows_rates_count_times() {
    let a = start_ringcache_at(&ringcache(), &["-t", "1"]);
    load(&a, 5, "key:1");
    let (ok, out) = ctl(&["--nodes", &a.addr(), "watch", "--interval", "0.2", "--count", "2"]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("gets/s").count(), 2, "two tables, counts as rates:\n{out}");
    // Columns: node conns items bytes limit gets/s sets/s hits/s evictions/s expired/s hit%.
    let rows: Vec<Vec<&str>> =
        out.lines().filter(|l| l.starts_with("127.")).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!((rows[0][2], rows[0][5], rows[0][10]), ("5", "-", "-"), "no rate before a second sample: {out}");
    assert_eq!((rows[1][2], rows[1][5], rows[1][10]), ("5", "0", "-"), "no gets in the interval: {out}");
}

#[test]
fn dump_lists_items_up_to_the_limit() {
    let a = start_ringcache_at(&ringcache(), &["-t", "2"]);
    load(&a, 25, "key:1");
    let (ok, out) = ctl(&["--nodes", &a.addr(), "dump", "--limit", "10"]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 10, "{out}");
    assert!(lines.iter().all(|l| l.contains(" key=key%3A") && l.contains(" exp=-1 ")), "{out}");
    let (ok, out) = ctl(&["--nodes", &a.addr(), "dump"]);
    assert!(ok && out.lines().count() == 25, "every item under the default limit:\n{out}");
}

#[test]
fn metrics_prints_the_admin_listener() {
    // Held until the server listens, so no other test is handed the port meanwhile.
    let reservation = reserve_port();
    let port = reservation.port;
    let a = start_ringcache_at(&ringcache(), &["-t", "1", "--admin", &format!("127.0.0.1:{port}")]);
    drop(reservation);
    load(&a, 3, "key:1");
    let (ok, out) = ctl(&["metrics", &format!("127.0.0.1:{port}")]);
    assert!(ok, "{out}");
    assert!(out.contains("ringcache_requests_total{command=\"get\",outcome=\"hit\"} 1"), "{out}");
    assert!(out.ends_with("# EOF\n"), "{out}");
}
