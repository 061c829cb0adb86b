//! The admin listener (`--admin`): Prometheus text at `/metrics`.
//!
//! * `metrics_count_what_clients_did`: after sets, hits and misses over the client port,
//!   a scrape shows those counts summed over the shards, the items per shard, memory by
//!   state and connections, in the OpenMetrics text format; the service-time histogram
//!   counts every request once; cross-shard trips are counted.
//! * `closed_and_timed_out_connections_are_counted`: with `-o idle_timeout=1`, a client
//!   left idle is closed by the server and the scrape counts it closed and timed out.
//! * `a_token_is_required_when_set_and_other_paths_are_not_served`: `--admin-token`
//!   answers 401 without `Authorization: Bearer TOKEN`; a path other than `/metrics` is
//!   404.
//! * `an_admin_address_in_use_refuses_to_start`: status 71 and a message naming `--admin`.

use ringcache_test_support::{reserve_port, roundtrip, start_ringcache, PortReservation, Server};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A port for `--admin`, held (bound, not listening) until the server has started, so
/// that no other test is handed it meanwhile: the server binds it beside the
/// reservation (see `reserve_port`). Let go once the server listens.
fn admin_port() -> PortReservation {
    reserve_port()
}

fn http_get(port: u16, path: &str, token: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the admin listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes()).expect("send");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read to the end");
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

fn value(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{series}` in\n{body}"))
}

fn client(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s
}

#[test]
fn metrics_count_what_clients_did() {
    let reservation = admin_port();
    let port = reservation.port;
    let server = start_ringcache!(&["-t", "2", "--admin", &format!("127.0.0.1:{port}")]);
    drop(reservation);
    let mut c = client(&server);
    let mut batch = Vec::new();
    for i in 0..40 {
        batch.extend_from_slice(format!("set k{i} 0 0 1 noreply\r\nv\r\n").as_bytes());
    }
    batch.extend_from_slice(b"get k1 k2 k3 nope1 nope2\r\n");
    roundtrip(&mut c, &batch, b"END\r\n");
    let (status, body) = http_get(port, "/metrics", None);
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF:\n{body}");
    assert_eq!(value(&body, "ringcache_requests_total{command=\"get\",outcome=\"hit\"}"), 3);
    assert_eq!(value(&body, "ringcache_requests_total{command=\"get\",outcome=\"miss\"}"), 2);
    assert_eq!(value(&body, "ringcache_requests_total{command=\"set\",outcome=\"done\"}"), 40);
    let items = value(&body, "ringcache_items{shard=\"0\"}") + value(&body, "ringcache_items{shard=\"1\"}");
    assert_eq!(items, 40, "items per shard add up");
    assert!(value(&body, "ringcache_item_memory_bytes{shard=\"0\",state=\"live\"}") > 0);
    assert_eq!(value(&body, "ringcache_connections_open"), 1, "the client connection (the scrape is not one)");
    assert_eq!(value(&body, "ringcache_get_hit_ratio_permille"), 600);
    // One more round: the first one's service time is in once this one is answered.
    roundtrip(&mut c, b"version\r\n", b"\r\n");
    let (_, body) = http_get(port, "/metrics", None);
    let shards = ["0", "1"];
    let count: u64 = shards
        .iter()
        .map(|s| value(&body, &format!("ringcache_request_duration_seconds_count{{shard=\"{s}\"}}")))
        .sum();
    assert!(
        (41..=42).contains(&count),
        "40 sets and a get counted once each (and perhaps the version): {count}\n{body}"
    );
    let inf: u64 = shards
        .iter()
        .map(|s| value(&body, &format!("ringcache_request_duration_seconds_bucket{{le=\"+Inf\",shard=\"{s}\"}}")))
        .sum();
    assert_eq!(inf, count, "the +Inf bucket holds every request");
    let trips: u64 =
        shards.iter().map(|s| value(&body, &format!("ringcache_cross_shard_trips_total{{shard=\"{s}\"}}"))).sum();
    assert!(trips > 0, "40 keys over 2 shards: some went to the other shard\n{body}");
}

#[test]
fn closed_and_timed_out_connections_are_counted() {
    let reservation = admin_port();
    let port = reservation.port;
    let server = start_ringcache!(&["-t", "1", "-o", "idle_timeout=1", "--admin", &format!("127.0.0.1:{port}")]);
    drop(reservation);
    let mut idle = client(&server);
    roundtrip(&mut idle, b"version\r\n", b"\r\n");
    let mut buf = [0u8; 64];
    // The server closes the idle connection (EOF, or a reset).
    assert!(matches!(idle.read(&mut buf), Ok(0) | Err(_)), "closed for idleness");
    // The count lands when the connection's task ends, just after the close: scrape
    // until it shows (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http_get(port, "/metrics", None);
        // (The start-up probe's connection was accepted and closed too.)
        let accepted = value(&body, "ringcache_connections_total{outcome=\"accepted\"}");
        let closed = value(&body, "ringcache_connections_total{outcome=\"closed\"}");
        let timed_out = value(&body, "ringcache_connections_total{outcome=\"timed_out\"}");
        assert_eq!(timed_out, 1, "one connection closed at its deadline\n{body}");
        assert!(closed <= accepted, "{body}");
        if closed == accepted {
            assert_eq!(value(&body, "ringcache_connections_open"), 0, "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the closed connection was never counted\n{body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_token_is_required_when_set_and_other_paths_are_not_served() {
    let reservation = admin_port();
    let port = reservation.port;
    let _server = start_ringcache!(&["-t", "1", "--admin", &format!("127.0.0.1:{port}"), "--admin-token", "s3cret"]);
    drop(reservation);
    assert_eq!(http_get(port, "/metrics", None).0, "HTTP/1.1 401 Unauthorized");
    assert_eq!(http_get(port, "/metrics", Some("wrong")).0, "HTTP/1.1 401 Unauthorized");
    assert_eq!(http_get(port, "/metrics", Some("s3cret")).0, "HTTP/1.1 200 OK");
    assert_eq!(http_get(port, "/other", Some("s3cret")).0, "HTTP/1.1 404 Not Found");
}

#[test]
fn an_admin_address_in_use_refuses_to_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (status, stderr) = ringcache_test_support::run_ringcache_to_exit!(
        &["-l", "127.0.0.1", "-p", "0", "--admin", &addr],
        Duration::from_secs(10)
    );
    assert_eq!(status.code(), Some(71), "{stderr}");
    assert!(stderr.contains("--admin"), "{stderr}");
}
