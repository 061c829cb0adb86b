//! memcached's ASCII authentication (`-Y FILE`), whole-process, against Debian's
//! memcached with the same password file:
//!
//! * `before_logging_in_every_reply_is_memcacheds`: each request on a fresh connection
//!   (commands, `quit`, empty lines, malformed login `set`s, wrong and right credentials,
//!   `noreply`) gets memcached's bytes, and the connection stays open as memcached's
//!   does; junk without a newline and a login too large to hold close it.
//! * `after_a_login_the_connection_is_a_normal_one`: a failed login, then a good one;
//!   sets and gets then work; `stats` counts `auth_cmds` and `auth_errors`, `stats
//!   settings` names the file; a connection that has not logged in still cannot read.
//! * `sighup_rereads_the_file_and_a_bad_one_keeps_the_users`.
//! * `a_password_file_that_cannot_be_used_refuses_the_start`: missing, malformed, and
//!   `-B auto`, with memcached's messages and statuses.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use ringcache_test_support::{roundtrip, start_memcached, start_ringcache, start_ringcache_with, Server};

const USERS: &str = "alice:secret\nbob:hunter2\n";

fn password_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringcache-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the password file");
    path
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s
}

/// What the server sends back for `request` on a fresh connection, up to its first
/// `\r\n`; "<closed>" when it closes the connection instead.
fn answer(server: &Server, request: &[u8]) -> String {
    let mut s = connect(server);
    s.write_all(request).expect("send");
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return "<closed>".into(),
            Ok(_) => reply.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return "<closed>".into(),
            Err(e) => panic!("{:?}: {e} after {:?}", String::from_utf8_lossy(request), String::from_utf8_lossy(&reply)),
        }
    }
    // Still open: a second request is answered too.
    assert_eq!(roundtrip(&mut s, b"get foo\r\n", b"\r\n"), b"CLIENT_ERROR unauthenticated\r\n");
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn before_logging_in_every_reply_is_memcacheds() {
    let file = password_file("users", USERS);
    let file = file.to_str().expect("utf-8 path");
    let ours = start_ringcache!(&["-t", "2", "-Y", file]);
    let theirs = start_memcached(&["-t", "1", "-Y", file]);
    let big_login = [b"set k 0 0 16383\r\n".as_slice(), &[b'a'; 16383], b"\r\n"].concat();
    let cases: &[(&[u8], &str)] = &[
        (b"get foo\r\n", "CLIENT_ERROR unauthenticated\r\n"),
        (b"version\r\n", "CLIENT_ERROR unauthenticated\r\n"),
        (b"stats\r\n", "CLIENT_ERROR unauthenticated\r\n"),
        (b"mn\r\n", "CLIENT_ERROR unauthenticated\r\n"),
        (b"mg foo v\r\n", "CLIENT_ERROR unauthenticated\r\n"),
        (b"bogus\r\n", "CLIENT_ERROR unauthenticated\r\n"),
        (b"\r\n", "CLIENT_ERROR unauthenticated\r\n"),
        (b"quit\r\n", "CLIENT_ERROR unauthenticated\r\n"),
        (b"set k 0 0\r\n", "CLIENT_ERROR unauthenticated\r\n"),
        (b"add k 0 0 12\r\n", "CLIENT_ERROR unauthenticated\r\n"),
        (b"SET k 0 0 12\r\n", "CLIENT_ERROR unauthenticated\r\n"),
        (b"set k 0 0 x\r\n", "CLIENT_ERROR unauthenticated\r\n"),
        (b"set k 0 0 12\r\nalice secret\r\n", "STORED\r\n"),
        (b"set k 0 0 11\r\nbob hunter2\r\n", "STORED\r\n"),
        (b"set k 0 0 12 noreply\r\nalice secret\r\n", "STORED\r\n"),
        (b"set k 0 0 12 noreply\r\nalice wrong!\r\n", "CLIENT_ERROR authentication failure\r\n"),
        (b"set k 0 0 18\r\nalice secret extra\r\n", "STORED\r\n"),
        (b"set k 0 0 14\r\n alice  secret\r\n", "STORED\r\n"),
        (b"set k 0 0 12\nalice secret\r\n", "STORED\r\n"),
        (b"set k 0 0 12\r\nmallo secret\r\n", "CLIENT_ERROR authentication failure\r\n"),
        (b"set k 0 0 12\r\nALICE secret\r\n", "CLIENT_ERROR authentication failure\r\n"),
        (b"set k 0 0 11\r\nalicesecret\r\n", "CLIENT_ERROR bad authentication token format\r\n"),
        (b"set k 0 0 12\r\nalice\tsecret\r\n", "CLIENT_ERROR bad authentication token format\r\n"),
        (b"set k 0 0 12\r\nalice secret\n\n", "CLIENT_ERROR bad command line termination\r\n"),
        (&[b'x'; 2100], "<closed>"),
        (&big_login, "<closed>"),
    ];
    for (request, expected) in cases {
        let shown = String::from_utf8_lossy(&request[..request.len().min(40)]);
        // A login's connection is a normal one afterwards: its `get foo` gets END.
        let (ours, theirs) = if expected.starts_with("STORED") {
            (login_then_get(&ours, request), login_then_get(&theirs, request))
        } else {
            (answer(&ours, request), answer(&theirs, request))
        };
        assert_eq!(theirs, *expected, "memcached, {shown:?}");
        assert_eq!(ours, *expected, "ringcache, {shown:?}");
    }
}

/// Logs in with `request` on a fresh connection; the reply, after checking that the
/// connection then serves (a get of a missing key ends with END).
fn login_then_get(server: &Server, request: &[u8]) -> String {
    let mut s = connect(server);
    let reply = roundtrip(&mut s, request, b"\r\n");
    assert_eq!(roundtrip(&mut s, b"get missing-key\r\n", b"\r\n"), b"END\r\n", "logged in");
    String::from_utf8_lossy(&reply).into_owned()
}

fn stat(server: &Server, login: &[u8], args: &str, name: &str) -> String {
    let mut s = connect(server);
    roundtrip(&mut s, login, b"\r\n");
    let text =
        String::from_utf8_lossy(&roundtrip(&mut s, format!("stats {args}\r\n").as_bytes(), b"END\r\n")).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("STAT {name} ")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn after_a_login_the_connection_is_a_normal_one() {
    let file = password_file("users2", USERS);
    let file = file.to_str().expect("utf-8 path");
    let server = start_ringcache!(&["-t", "2", "-Y", file]);
    let mut s = connect(&server);
    let failed = roundtrip(&mut s, b"set k 0 0 11\r\nbob hunter3\r\n", b"\r\n");
    assert_eq!(failed, b"CLIENT_ERROR authentication failure\r\n");
    assert_eq!(roundtrip(&mut s, b"set k 0 0 11\r\nbob hunter2\r\n", b"\r\n"), b"STORED\r\n");
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.extend_from_slice(format!("set key{i} 0 0 2\r\nv{}\r\n", i % 10).as_bytes());
    }
    let stored = roundtrip(&mut s, &batch, b"STORED\r\n".repeat(20).as_slice());
    assert_eq!(stored, b"STORED\r\n".repeat(20), "real sets now");
    assert_eq!(
        roundtrip(&mut s, b"get key3 k\r\n", b"END\r\n"),
        b"VALUE key3 0 2\r\nv3\r\nEND\r\n",
        "the login stored nothing"
    );
    // Another connection has not logged in.
    let mut other = connect(&server);
    assert_eq!(roundtrip(&mut other, b"get key3\r\n", b"\r\n"), b"CLIENT_ERROR unauthenticated\r\n");
    let login = b"set x 0 0 12\r\nalice secret\r\n";
    // Two logins here, one of them refused, and the stat connection's own.
    assert_eq!(stat(&server, login, "", "auth_cmds"), "3");
    assert_eq!(stat(&server, login, "", "auth_errors"), "1");
    assert_eq!(stat(&server, login, "settings", "auth_enabled_ascii"), file);
    assert_eq!(stat(&server, login, "settings", "binding_protocol"), "ascii");
}

#[test]
fn sighup_rereads_the_file_and_a_bad_one_keeps_the_users() {
    let path = password_file("users3", "alice:secret\n");
    let file = path.to_str().expect("utf-8 path").to_string();
    let mut server = start_ringcache_with!(&["-t", "1", "-Y", &file], |c: &mut std::process::Command| {
        c.stderr(Stdio::piped());
    });
    // The server's log lines, to know when a reread is done.
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stderr = server.child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let wait_for = |what: &str| loop {
        let line = lines.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("no log line with {what:?}"));
        if line.contains(what) {
            return;
        }
    };
    let carol = b"set k 0 0 10\r\ncarol pass\r\n".as_slice();
    let alice = b"set k 0 0 12\r\nalice secret\r\n".as_slice();
    assert_eq!(answer(&server, carol), "CLIENT_ERROR authentication failure\r\n");
    std::fs::write(&path, "carol:pass\n").expect("rewrite");
    server.signal("-HUP");
    wait_for("1 users");
    assert_eq!(login_then_get(&server, carol), "STORED\r\n", "the new user");
    assert_eq!(answer(&server, alice), "CLIENT_ERROR authentication failure\r\n", "the old one is gone");
    std::fs::write(&path, "carol:pass\nno colon here\n").expect("rewrite");
    server.signal("-HUP");
    wait_for("the users stay as they were");
    assert_eq!(login_then_get(&server, carol), "STORED\r\n", "a malformed file keeps the users");
    assert!(server.is_running());
}

#[test]
fn a_password_file_that_cannot_be_used_refuses_the_start() {
    let missing = std::env::temp_dir().join("ringcache-no-such-users-file");
    let missing = missing.to_str().expect("utf-8 path");
    let malformed = password_file("malformed", "alice:secret\n\n");
    let malformed = malformed.to_str().expect("utf-8 path");
    let good = password_file("good", USERS);
    let good = good.to_str().expect("utf-8 path");
    for (args, status, says) in [
        (vec!["-Y", missing], 1, format!("Could not open authfile [{missing}] for reading")),
        (vec!["-Y", malformed], 1, format!("Authfile [{malformed}] has a malformed entry. Should be 'user:password'")),
        (
            vec!["-Y", good, "-B", "auto"],
            64,
            "You cannot allow the BINARY protocol while using ascii authentication tokens".to_string(),
        ),
    ] {
        let (exit, stderr) = ringcache_test_support::run_ringcache_to_exit!(&args, Duration::from_secs(10));
        assert_eq!(exit.code(), Some(status), "{args:?}: {stderr}");
        assert!(stderr.contains(&says), "{args:?}: {stderr}");
    }
}
