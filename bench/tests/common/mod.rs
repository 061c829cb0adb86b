//! Helpers for whole-process tests: start Debian's `memcached` on a free loopback port (killed
//! when the guard drops), run the `ringcache-bench` binary, and read its `--json` report.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A server process started by a test; killed (and reaped) on drop.
pub struct Server {
    pub port: u16,
    pub child: Child,
}

impl Server {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("pick a free port")
}

/// Starts Debian's `memcached` (installed by `.ci/run` through ops/install-deps.sh).
pub fn start_memcached() -> Server {
    let port = free_port();
    let child = Command::new("memcached")
        .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-u", "root", "-t", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn memcached (is the Debian package installed?)");
    let mut server = Server { port, child };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(server.addr()).is_err() {
        assert!(matches!(server.child.try_wait(), Ok(None)), "memcached exited before accepting connections");
        assert!(Instant::now() < deadline, "memcached did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    server
}

/// Sends `request` on a fresh connection and reads until the reply ends with `terminator`.
pub fn roundtrip(addr: &str, request: &[u8], terminator: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).expect("send");
    let mut reply = Vec::new();
    let mut chunk = [0u8; 65536];
    while !reply.ends_with(terminator) {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading reply: {e}"),
        }
    }
    reply
}

/// A JSON report path unique to this test.
pub fn json_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ringcache-bench-{}-{name}.json", std::process::id()))
}

/// Runs the tool with `args` plus `--json <path> --quiet`; returns its output and report.
pub fn run_bench(name: &str, args: &[&str]) -> (Output, Option<serde_json::Value>) {
    let path = json_path(name);
    let _ = std::fs::remove_file(&path);
    let out = Command::new(env!("CARGO_BIN_EXE_ringcache-bench"))
        .args(args)
        .arg("--json")
        .arg(&path)
        .arg("--quiet")
        .stdin(Stdio::null())
        .output()
        .expect("run ringcache-bench");
    let report = std::fs::read_to_string(&path).ok().map(|s| serde_json::from_str(&s).expect("report is JSON"));
    let _ = std::fs::remove_file(&path);
    (out, report)
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
