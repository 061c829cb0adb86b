//! Whole-process lifecycle tests for `ringcache` (2 shards), matching memcached 1.6.18:
//!
//! * `sigterm_answers_in_flight_request_then_exits_zero`: requests written before SIGTERM
//!   (a set and 40 gets of its 100 KB value, ~4 MB of replies) are answered in full, then
//!   the process exits with status 0 within a deadline, even with an idle client
//!   connection still open, and its connections are closed.
//! * `connections_beyond_dash_c_get_error_line_and_close`: with `-c 32`, connections well
//!   within the limit work; once the limit is reached, each new connection receives
//!   exactly `ERROR Too many open connections\r\n` unprompted and is closed, while the
//!   accepted ones keep working; after they close, new connections are accepted again.
//!   (memcached keeps some of `-c` for its own descriptors, so the first rejection may
//!   come earlier than the 33rd connection; the test only pins down connections 1-8 as
//!   accepted and the 33rd and later as rejected.)
//! * `listens_only_on_the_given_address_and_port`: `-l 127.0.0.1 -p <port>` (passed by
//!   `start_ringcache`) is honoured: the port answers on 127.0.0.1 and is closed on
//!   127.0.0.2, which a wildcard bind would answer.
//! * `accepts_memcached_flags_that_do_not_apply`: `-U 0 -u root -R 20 -B ascii -b 64 -o
//!   modern` are accepted and the server serves.
//! * `protocols_that_are_not_offered_are_refused`: `-B binary`, `-U <port>` (and bad `-B`,
//!   `-b`, `-R` values) exit 64 with a message saying why.
//! * `dash_r_yields_after_n_requests_and_counts_it`: `-R 5` and 23 pipelined sets: all
//!   answered, `conn_yields` counts the yields.
//! * `log_format_json_writes_one_object_a_line`: `--log-format json` (flag or config
//!   file): a refusal is logged as one JSON object with its level and message; a bad
//!   format is refused (64).
//! * `dash_d_detaches_and_dash_p_writes_the_pid_file`: `-d -P FILE` returns at once, the
//!   daemon serves with its pid in FILE and removes it when `shutdown` stops it.

use ringcache_test_support::Conn;
use ringcache_test_support::{start_ringcache, Server};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// The server under test, with `extra` flags after the 2-shard setting.
fn start_server(extra: &[&str]) -> Server {
    let mut args = vec!["-t", "2"];
    args.extend_from_slice(extra);
    start_ringcache!(&args)
}

/// Checks that the peer closes the connection (EOF or reset) without sending anything
/// more; panics on unexpected bytes or a timeout.
fn expect_closed(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 1024];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => {
            panic!("{what}: expected the server to close the connection, got {:?}", String::from_utf8_lossy(&buf[..n]))
        }
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: expected the server to close the connection: {e}"),
    }
}

/// Gets of a 100 KB value pipelined before SIGTERM.
const IN_FLIGHT_GETS: usize = 40;

#[test]
fn sigterm_answers_in_flight_request_then_exits_zero() {
    let mut server = start_server(&[]);
    let pid = server.child.id().to_string();

    // An idle connection: the server must not wait for it to go away.
    let mut idle = Conn::open(&server, "idle connection");
    idle.send(b"version\r\n");
    let version = idle.line();
    assert!(version.starts_with(b"VERSION "), "version: {version:?}");

    // Requests fully written before the signal, whose ~4 MB of replies cannot all fit in
    // socket buffers, so the server is still answering when the signal arrives; they
    // are read after it.
    let mut busy = Conn::open(&server, "in-flight connection");
    let value: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut request = format!("set lifecycle:k 9 0 {}\r\n", value.len()).into_bytes();
    request.extend_from_slice(&value);
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(&b"get lifecycle:k\r\n".repeat(IN_FLIGHT_GETS));
    busy.send(&request);

    let kill = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
    assert!(kill.success(), "kill -TERM {pid} failed: {kill}");

    busy.expect_line("STORED", "set sent before SIGTERM");
    for i in 0..IN_FLIGHT_GETS {
        let blocks = busy.value_blocks(&format!("get {i} of {IN_FLIGHT_GETS} sent before SIGTERM"));
        assert!(
            blocks.len() == 1 && blocks[0].0 == "lifecycle:k" && blocks[0].1 == 9 && blocks[0].3 == value,
            "get {i} sent before SIGTERM: want the 100,000-byte value just set, got {} blocks",
            blocks.len()
        );
    }

    let status = server
        .wait_for_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("server still running 10 s after SIGTERM"));
    assert!(status.success(), "server exit status after SIGTERM: {status}, want 0");
    // Its connections are gone with it.
    expect_closed(idle.reader.get_mut(), "idle connection after exit");
    expect_closed(busy.reader.get_mut(), "in-flight connection after exit");
}

const LIMIT: usize = 32;
/// Connections that must be accepted under `-c 32` whatever the server reserves.
const SURELY_ACCEPTED: usize = 8;
/// Connections opened beyond the limit.
const BEYOND: usize = 8;
const TOO_MANY: &[u8] = b"ERROR Too many open connections\r\n";

fn connect(server: &Server) -> TcpStream {
    let s = server.connect();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// True if `stream` is served (answers `version`); false if it was rejected: it got the
/// exact rejection line and was closed, or it was reset before anything arrived (the
/// server's close can race with our `version` and turn into a reset that discards the
/// line; memcached's own t/maxconns.t tolerates that too). Anything else fails the test.
fn probe(stream: &mut TcpStream, what: &str) -> bool {
    stream.write_all(b"version\r\n").expect("send version");
    let mut line = Vec::new();
    let mut byte = [0u8];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(0) if line.is_empty() => return false,
            Err(e) if line.is_empty() && e.kind() == ErrorKind::ConnectionReset => return false,
            Ok(0) => panic!("{what}: connection closed after {:?}", String::from_utf8_lossy(&line)),
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("{what}: {e} after receiving {:?}", String::from_utf8_lossy(&line)),
        }
        assert!(line.len() <= 200, "{what}: runaway line {line:?}");
    }
    if line.starts_with(b"VERSION ") {
        return true;
    }
    assert_eq!(
        String::from_utf8_lossy(&line),
        String::from_utf8_lossy(TOO_MANY),
        "{what}: neither a VERSION reply nor the connection-limit error"
    );
    expect_closed(stream, what);
    false
}

#[test]
fn connections_beyond_dash_c_get_error_line_and_close() {
    let server = start_server(&["-c", &LIMIT.to_string()]);
    let mut open = Vec::new();
    for i in 1..=SURELY_ACCEPTED {
        let mut s = connect(&server);
        assert!(
            probe(&mut s, &format!("connection {i} of -c {LIMIT}")),
            "connection {i} was rejected or reset although -c is {LIMIT}"
        );
        open.push(s);
    }

    // Up to the limit: accepted until the first rejection, rejected from then on (no
    // accepted connection closes meanwhile).
    let mut first_rejected = None;
    for i in SURELY_ACCEPTED + 1..=LIMIT {
        let mut s = connect(&server);
        let what = format!("connection {i} of -c {LIMIT}");
        if probe(&mut s, &what) {
            assert!(first_rejected.is_none(), "{what} was accepted after connection {first_rejected:?} was rejected");
            open.push(s);
        } else {
            first_rejected.get_or_insert(i);
        }
    }

    // Beyond the limit: the rejection line arrives unprompted, then the server closes.
    for i in LIMIT + 1..=LIMIT + BEYOND {
        let mut s = connect(&server);
        let what = format!("connection {i} with {} open and -c {LIMIT}", open.len());
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < TOO_MANY.len() {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "{what}: no `ERROR Too many open connections` line ({e}); got {:?}",
                    String::from_utf8_lossy(&got)
                ),
            }
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(TOO_MANY),
            "{what}: what the server sends to a connection over the limit"
        );
        expect_closed(&mut s, &what);
    }

    // The accepted connections were not disturbed.
    for (i, s) in open.iter_mut().enumerate() {
        assert!(
            probe(s, &format!("accepted connection {} after rejections", i + 1)),
            "accepted connection {} was rejected later",
            i + 1
        );
    }

    // Closing them frees the slots: a new connection is served again (the server notices
    // the closes asynchronously, hence the polling).
    let accepted = open.len();
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect(&server);
        if probe(&mut s, "connection after the others closed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new connections still rejected 10 s after all {accepted} accepted ones closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn listens_only_on_the_given_address_and_port() {
    let server = start_server(&[]);
    let mut conn = Conn::open(&server, "connection to -l 127.0.0.1 -p <port>");
    conn.send(b"set lifecycle:l 0 0 2\r\nok\r\nget lifecycle:l\r\n");
    conn.expect_line("STORED", "set");
    assert_eq!(conn.value_blocks("get").len(), 1, "get after set");

    // 127.0.0.2 is also loopback on Linux: a server bound to 0.0.0.0 would answer there.
    let other: SocketAddr = format!("127.0.0.2:{}", server.port).parse().unwrap();
    match TcpStream::connect_timeout(&other, Duration::from_secs(5)) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        Err(e) => panic!("connecting to {other}: expected refusal, got {e}"),
        Ok(_) => panic!("server started with -l 127.0.0.1 also accepts connections on {other}"),
    }
}

#[test]
fn accepts_memcached_flags_that_do_not_apply() {
    let mut server = start_server(&["-U", "0", "-u", "root", "-R", "20", "-B", "ascii", "-b", "64", "-o", "modern"]);
    let mut conn = Conn::open(&server, "connection");
    conn.send(b"set lifecycle:f 1 0 5\r\nhello\r\nget lifecycle:f\r\n");
    conn.expect_line("STORED", "set");
    assert_eq!(
        conn.value_blocks("get"),
        vec![("lifecycle:f".to_string(), 1, None, b"hello".to_vec())],
        "get after set"
    );
    assert!(server.is_running(), "server exited");
}

/// `-B binary` and `-U <port>` are refused at once with a message that says why (the
/// binary protocol and UDP are not offered); `-B` with another word gets memcached's
/// message; `-b 0` and `-R x` are refused. All exit with 64 (EX_USAGE).
#[test]
fn protocols_that_are_not_offered_are_refused() {
    for (args, says) in [
        (&["-B", "binary"][..], "binary protocol is not offered"),
        (&["-B", "foo"][..], "Invalid value for binding protocol: foo"),
        (&["-U", "11211"][..], "UDP is not offered"),
        (&["-b", "0"][..], "-b"),
        (&["-R", "x"][..], "-R"),
    ] {
        let (status, stderr) = ringcache_test_support::run_ringcache_to_exit!(args, Duration::from_secs(10));
        assert_eq!(status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} says {says:?}: {stderr}");
    }
}

#[test]
fn log_format_json_writes_one_object_a_line() {
    let dir = std::env::temp_dir().join(format!("ringcache-logjson-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("ringcache.toml");
    std::fs::write(&file, "log_format = \"json\"\n").expect("config file");
    let file = file.to_string_lossy().into_owned();
    for args in [&["--log-format", "json", "-m", "0"][..], &["--config", &file, "-m", "0"][..]] {
        let (status, stderr) = ringcache_test_support::run_ringcache_to_exit!(args, Duration::from_secs(10));
        assert_eq!(status.code(), Some(64), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {stderr}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {stderr}"));
        assert_eq!(line["level"], "ERROR", "{stderr}");
        let message = line["fields"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("-m/--memory-limit must be at least 1"), "{stderr}");
    }
    let (status, stderr) =
        ringcache_test_support::run_ringcache_to_exit!(&["--log-format", "xml"], Duration::from_secs(10));
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--log-format \"xml\": expected text or json"), "{stderr}");
    assert!(!stderr.starts_with('{'), "a bad format logs as text: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `-R N`: a connection that pipelines more than N requests is served N at a time,
/// letting the others run in between; `stats` counts each time as `conn_yields`.
#[test]
fn dash_r_yields_after_n_requests_and_counts_it() {
    let server = start_server(&["-R", "5"]);
    let mut conn = Conn::open(&server, "pipeliner");
    let mut burst = Vec::new();
    for i in 0..23 {
        burst.extend_from_slice(format!("set r{i} 0 0 1\r\nx\r\n").as_bytes());
    }
    conn.send(&burst);
    for _ in 0..23 {
        conn.expect_line("STORED", "pipelined set");
    }
    conn.send(b"stats\r\n");
    let mut yields = None;
    loop {
        let line = String::from_utf8_lossy(&conn.line()).into_owned();
        if line == "END" {
            break;
        }
        if let Some(v) = line.strip_prefix("STAT conn_yields ") {
            yields = v.trim().parse::<u64>().ok();
        }
    }
    // 23 requests arrive together (a receive may split them): at least 23 / 5 - 1 yields
    // when they come in one piece, never more than 4.
    let yields = yields.expect("stats has conn_yields");
    assert!((1..=4).contains(&yields), "conn_yields {yields}");
}

/// `-d -P FILE`: the command returns at once (status 0), the server runs on in the
/// background with its pid in FILE, serves, and removes FILE when it stops.
#[test]
fn dash_d_detaches_and_dash_p_writes_the_pid_file() {
    let port = ringcache_test_support::reserve_port();
    let pidfile = std::env::temp_dir().join(format!("ringcache-test-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let status = Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args(["-d", "-A", "-t", "1", "-l", "127.0.0.1", "-p", &port.port.to_string()])
        .arg("-P")
        .arg(&pidfile)
        .status()
        .expect("run ringcache -d");
    assert!(status.success(), "the foreground part exits 0: {status}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port.port)) {
            break s;
        }
        assert!(Instant::now() < deadline, "the daemon does not listen");
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid: u32 = std::fs::read_to_string(&pidfile).expect("pid file").trim().parse().expect("a pid");
    // Running: its /proc entry exists and it is not a zombie waiting to be reaped.
    let running = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
    };
    assert!(running(pid), "the pid file names the running server");
    stream.write_all(b"shutdown\r\n").expect("send");
    while running(pid) || pidfile.exists() {
        assert!(Instant::now() < deadline, "the daemon did not stop and remove its pid file");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `-s PATH -a 0660`: the server listens on the Unix socket (not on TCP), with those
/// permissions, serves every shard's keys through it, and shows it in `stats settings`;
/// a second server on the same path is refused (status 71) while the first serves.
#[test]
fn dash_s_serves_on_a_unix_socket_with_dash_a_permissions() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    let path = std::env::temp_dir().join(format!("ringcache-test-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args(["-t", "2", "-a", "0660", "-s"])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ringcache -s");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        if let Ok(s) = UnixStream::connect(&path) {
            break s;
        }
        assert!(child.try_wait().ok().flatten().is_none(), "ringcache -s exited");
        assert!(Instant::now() < deadline, "no Unix socket at {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    };
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mode = std::fs::metadata(&path).expect("socket file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "-a 0660");
    let mut sets = Vec::new();
    for i in 0..20 {
        sets.extend_from_slice(format!("set u{i} 0 0 2\r\nv{}\r\n", i % 10).as_bytes());
    }
    sets.extend_from_slice(b"get u3 u17\r\nstats settings\r\n");
    stream.write_all(&sets).expect("send");
    let mut reply = Vec::new();
    let mut buf = [0u8; 65536];
    // The gets' END, then the settings' END: the reply is whole.
    while String::from_utf8_lossy(&reply).matches("END\r\n").count() < 2 {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "closed");
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains("VALUE u3 0 2\r\nv3\r\nVALUE u17 0 2\r\nv7\r\nEND\r\n"), "{text}");
    assert!(text.contains(&format!("STAT domain_socket {}\r\n", path.display())), "{text}");
    assert!(text.contains("STAT umask 660\r\n"), "{text}");
    let (status, stderr) = ringcache_test_support::run_ringcache_to_exit!(
        &["-s", path.to_str().expect("utf-8 path")],
        Duration::from_secs(10)
    );
    assert_eq!(status.code(), Some(71), "{stderr}");
    assert!(stderr.contains("another process serves that socket"), "{stderr}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
}
