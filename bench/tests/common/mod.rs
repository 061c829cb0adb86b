//! Helpers for the load tool's whole-process tests: start Debian's `memcached` (through the
//! shared `ringcache-test-support`; killed when the guard drops), run the
//! `ringcache-bench` binary, and read its `--json` report.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub use ringcache_test_support::Server;

/// Starts Debian's `memcached` with one thread (installed by `.ci/run` through
/// ops/install-deps.sh).
pub fn start_memcached() -> Server {
    ringcache_test_support::start_memcached(&["-t", "1"])
}

/// Sends `request` on a fresh connection and reads until the reply ends with `terminator`.
pub fn roundtrip(addr: &str, request: &[u8], terminator: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ringcache_test_support::roundtrip(&mut s, request, terminator)
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
