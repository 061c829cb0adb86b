//! Whole-process tests of the `ringcache-bench` binary against Debian's memcached.

mod common;

use common::{describe, roundtrip, run_bench, start_memcached};
use ringcache_bench::ketama::Continuum;
use serde_json::Value;
use std::time::{Duration, Instant};

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or_else(|| panic!("{path} missing in {v:#}"))
}

#[test]
fn closed_loop_with_verify_has_no_mismatches_or_errors() {
    let mc = start_memcached();
    let (out, report) = run_bench(
        "closed",
        &[
            "--servers",
            &mc.addr(),
            "--duration",
            "2",
            "--verify",
            "--prefill",
            "--keys",
            "5000",
            "--connections",
            "8",
            "--pipeline",
            "4",
            "--multiget",
            "3",
            "--value-size",
            "16-300",
            "--ratio",
            "4:1",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let r = report.expect("report written");
    assert_eq!(r["status"], "ok");
    assert_eq!(u(&r, "/prefill/counters/stored"), 5000);
    let ops = u(&r, "/measured/ops");
    assert!(ops > 1000, "only {ops} ops in 2 s");
    assert!(u(&r, "/measured/counters/gets") > 0);
    assert!(u(&r, "/measured/counters/sets") > 0);
    assert_eq!(u(&r, "/measured/counters/verify_mismatches"), 0);
    assert_eq!(u(&r, "/measured/counters/errors"), 0);
    assert_eq!(u(&r, "/measured/counters/timeouts"), 0);
    // Every key was prefilled and nothing expires or is evicted, so every get hits and every
    // hit was checked against what the tool wrote.
    assert_eq!(r["measured"]["hit_ratio"], 1.0);
    assert_eq!(u(&r, "/measured/counters/hits"), u(&r, "/measured/counters/gets") * 3);
    let p50 = r["measured"]["latency"]["p50_us"].as_f64().unwrap();
    assert!(p50 > 0.0);
}

#[test]
fn requests_mode_runs_exactly_that_many() {
    let mc = start_memcached();
    let (out, report) = run_bench(
        "requests",
        &[
            "--servers",
            &mc.addr(),
            "--requests",
            "5001",
            "--threads",
            "2",
            "--connections",
            "3",
            "--pipeline",
            "2",
            "--warmup",
            "0.2",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let r = report.unwrap();
    assert_eq!(u(&r, "/measured/ops"), 5001);
    assert_eq!(u(&r, "/measured/counters/gets") + u(&r, "/measured/counters/sets"), 5001);
}

#[test]
fn open_loop_holds_the_requested_rate() {
    let mc = start_memcached();
    let (out, report) =
        run_bench("rate", &["--servers", &mc.addr(), "--rate", "4000", "--duration", "1.5", "--connections", "4"]);
    assert!(out.status.success(), "{}", describe(&out));
    let r = report.unwrap();
    let ops = u(&r, "/measured/ops") as f64;
    assert!((ops - 6000.0).abs() < 480.0, "{ops} ops at 4000/s for 1.5 s");
    // A loaded 2-core machine can leave a handful of requests unsent at the deadline;
    // a tool that cannot hold the rate leaves hundreds.
    let unsent = u(&r, "/measured/counters/unsent");
    assert!(unsent <= 60, "{unsent} of 6000 scheduled requests were not sent in time");
    assert_eq!(r["config"]["mode"], "open");
}

#[test]
fn verify_catches_values_the_tool_did_not_write() {
    let mc = start_memcached();
    // The one key of a one-key space ("key:0000" at --key-size 8) holds a foreign value.
    let reply = roundtrip(&mc.addr(), b"set key:0000 0 0 19\r\nnot-written-by-tool\r\n", b"\r\n");
    assert_eq!(reply, b"STORED\r\n");
    // Gets only, so the foreign value stays for the second run; meta reads it from `VA`.
    for protocol in ["classic", "meta"] {
        let (out, report) = run_bench(
            &format!("mismatch-{protocol}"),
            &[
                "--servers",
                &mc.addr(),
                "--protocol",
                protocol,
                "--keys",
                "1",
                "--key-size",
                "8",
                "--ratio",
                "1:0",
                "--requests",
                "50",
                "--connections",
                "2",
                "--verify",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let r = report.unwrap();
        assert_eq!(u(&r, "/measured/counters/verify_mismatches"), 50, "{protocol}");
        assert_eq!(u(&r, "/measured/counters/hits"), 50, "{protocol}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("failed verification"));
    }
}

#[test]
fn server_going_away_ends_the_run_with_an_error() {
    let mut mc = start_memcached();
    let addr = mc.addr();
    let started = Instant::now();
    let killer = std::thread::spawn({
        let pid = mc.child.id();
        move || {
            std::thread::sleep(Duration::from_millis(700));
            // SAFETY: plain kill(2) of the child this test started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    });
    let (out, report) = run_bench("gone", &["--servers", &addr, "--duration", "20", "--connections", "4"]);
    killer.join().unwrap();
    let _ = mc.child.wait();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(started.elapsed() < Duration::from_secs(10), "run did not stop promptly");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&addr) && stderr.contains("went away"), "{stderr}");
    let r = report.expect("partial report still written");
    assert_eq!(r["status"], "failed");
    assert!(u(&r, "/measured/ops") > 0);
}

#[test]
fn keys_land_on_their_ketama_server() {
    let a = start_memcached();
    let b = start_memcached();
    let servers = format!("{},{}", a.addr(), b.addr());
    let (out, report) = run_bench(
        "ketama",
        &[
            "--servers",
            &servers,
            "--keys",
            "200",
            "--key-size",
            "10",
            "--prefill",
            "--verify",
            "--multiget",
            "5",
            "--requests",
            "2000",
            "--connections",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let r = report.unwrap();
    assert_eq!(u(&r, "/measured/counters/verify_mismatches"), 0);
    assert_eq!(r["measured"]["hit_ratio"], 1.0);
    let ring = Continuum::new(&[("127.0.0.1", a.port), ("127.0.0.1", b.port)]);
    let addrs = [a.addr(), b.addr()];
    let mut per_server = [0; 2];
    for i in 0..200 {
        let key = format!("key:{i:06}");
        let owner = ring.server_for(key.as_bytes());
        per_server[owner] += 1;
        for (s, addr) in addrs.iter().enumerate() {
            let reply = roundtrip(addr, format!("get {key}\r\n").as_bytes(), b"END\r\n");
            let present = reply.starts_with(b"VALUE ");
            assert_eq!(present, s == owner, "{key} on server {s}");
        }
    }
    assert!(per_server[0] > 40 && per_server[1] > 40, "{per_server:?}");
}

#[test]
fn mixed_ratio_with_verify_counts_every_kind_without_errors() {
    let mc = start_memcached();
    let keys = 5000;
    let (out, report) = run_bench(
        "mixed",
        &[
            "--servers",
            &mc.addr(),
            "--duration",
            "2",
            "--verify",
            "--prefill",
            "--keys",
            &keys.to_string(),
            "--connections",
            "8",
            "--pipeline",
            "4",
            "--ratio",
            "6:2:1:1:1",
            "--value-size",
            "lognormal:100:1:2000",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let r = report.expect("report written");
    assert_eq!(r["status"], "ok");
    assert_eq!(r["config"]["ratio"], "6:2:1:1:1");
    // Keys and counters were both prefilled.
    assert_eq!(u(&r, "/prefill/counters/stored"), 2 * keys);
    let m = |name: &str| u(&r, &format!("/measured/counters/{name}"));
    assert_eq!(m("errors"), 0);
    assert_eq!(m("timeouts"), 0);
    assert_eq!(m("verify_mismatches"), 0);
    for kind in ["gets", "sets", "deletes", "incrs", "cas"] {
        assert!(m(kind) > 0, "no {kind}: {r:#}");
    }
    assert_eq!(m("gets") + m("sets") + m("deletes") + m("incrs") + m("cas"), m("ops"));
    assert_eq!(m("delete_hits") + m("delete_misses"), m("deletes"));
    assert!(m("delete_hits") > 0 && m("delete_misses") > 0, "deletes of present and absent keys");
    assert_eq!(m("cas_stored") + m("cas_exists") + m("cas_not_found") + m("cas_misses"), m("cas"));
    assert!(m("cas_stored") > 0);
    // Deleted keys make gets miss; counters are never deleted, so every incr hits.
    assert!(m("misses") > 0);
    assert_eq!(m("incr_misses"), 0);
    assert_eq!(m("incr_hits"), m("incrs"));
    // Every incr added 1 to a counter that started at 0.
    assert_eq!(counter_total(&mc.addr(), keys), m("incrs"));
}

/// The sum of the counters `ctr:0..keys` (padded to `--key-size 16`) in the server.
fn counter_total(addr: &str, keys: u64) -> u64 {
    let mut total = 0u64;
    for chunk in (0..keys).collect::<Vec<_>>().chunks(100) {
        let mut req = b"get".to_vec();
        for i in chunk {
            req.extend_from_slice(format!(" ctr:{i:012}").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        let reply = roundtrip(addr, &req, b"END\r\n");
        let text = String::from_utf8(reply).expect("ASCII reply");
        let mut lines = text.split("\r\n");
        while let Some(l) = lines.next() {
            if l.starts_with("VALUE ") {
                let v = lines.next().expect("data line").trim();
                total += v.parse::<u64>().unwrap_or_else(|_| panic!("counter value {v:?}"));
            }
        }
    }
    total
}

#[test]
fn meta_protocol_mix_with_verify_counts_every_kind_without_errors() {
    // Single-key gets (`mg k v f k`: a VA block or EN) and 4-key multigets (quiet `mg`s + `mn`),
    // each beside sets, deletes, incrs and cas (`mg ... c`, then `ms ... C<unique>`).
    for multiget in ["1", "4"] {
        let mc = start_memcached();
        let keys = 3000;
        let (out, report) = run_bench(
            &format!("meta-{multiget}"),
            &[
                "--servers",
                &mc.addr(),
                "--protocol",
                "meta",
                "--duration",
                "1.5",
                "--verify",
                "--prefill",
                "--keys",
                &keys.to_string(),
                "--connections",
                "8",
                "--pipeline",
                "4",
                "--multiget",
                multiget,
                "--ratio",
                "6:2:1:1:1",
                "--value-size",
                "lognormal:100:1:2000",
            ],
        );
        assert!(out.status.success(), "{}", describe(&out));
        let r = report.expect("report written");
        assert_eq!(r["status"], "ok");
        assert_eq!(r["config"]["protocol"], "meta");
        assert!(String::from_utf8_lossy(&out.stdout).contains("meta protocol"), "{}", describe(&out));
        assert_eq!(u(&r, "/prefill/counters/stored"), 2 * keys);
        let m = |name: &str| u(&r, &format!("/measured/counters/{name}"));
        assert_eq!(m("errors"), 0, "{r:#}");
        assert_eq!(m("timeouts"), 0);
        assert_eq!(m("verify_mismatches"), 0);
        for kind in ["gets", "sets", "deletes", "incrs", "cas"] {
            assert!(m(kind) > 0, "no {kind}: {r:#}");
        }
        assert_eq!(m("gets") + m("sets") + m("deletes") + m("incrs") + m("cas"), m("ops"));
        let multiget: u64 = multiget.parse().unwrap();
        assert_eq!(m("get_keys"), m("gets") * multiget);
        assert_eq!(m("hits") + m("misses"), m("get_keys"));
        // Values came back (and were verified); deleted keys miss, under `q` as under EN.
        assert!(m("hits") > 0 && m("misses") > 0, "{r:#}");
        assert!(m("delete_hits") > 0 && m("delete_misses") > 0, "deletes of present and absent keys");
        assert_eq!(m("cas_stored") + m("cas_exists") + m("cas_not_found") + m("cas_misses"), m("cas"));
        assert!(m("cas_stored") > 0 && m("cas_misses") > 0, "{r:#}");
        assert_eq!(m("incr_hits"), m("incrs"));
        assert_eq!(counter_total(&mc.addr(), keys), m("incrs"));
    }
}
