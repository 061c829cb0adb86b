//! Coordinated omission: a tiny in-test server answers every request at once except one, which
//! it holds for 200 ms. An open-loop run must charge that stall to every request that was due
//! during it (latency from the intended send time), while the service time of the requests sent
//! after the stall stays small. The run is driven in-process through the library.

use clap::Parser;
use ringcache_bench::config::{Cli, Config};
use ringcache_bench::runner;
use ringcache_bench::stats::LatencySummary;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const STALL: Duration = Duration::from_millis(200);
const STALL_AT: u64 = 300;

/// Serves one connection: `get` → `END`, `set` → `STORED`; request number `STALL_AT` is
/// answered only after `STALL`.
fn serve(stream: TcpStream, served: Arc<AtomicU64>) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reply: &[u8] = if line.starts_with("get ") {
            b"END\r\n"
        } else if let Some(rest) = line.strip_prefix("set ") {
            let len: usize = rest.split_whitespace().nth(3).and_then(|n| n.parse().ok()).unwrap_or(0);
            let mut data = vec![0u8; len + 2];
            if reader.read_exact(&mut data).is_err() {
                return;
            }
            b"STORED\r\n"
        } else {
            b"ERROR\r\n"
        };
        if served.fetch_add(1, Ordering::SeqCst) + 1 == STALL_AT {
            std::thread::sleep(STALL);
        }
        if writer.write_all(reply).is_err() {
            return;
        }
    }
}

#[test]
fn open_loop_latency_includes_a_server_stall() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let served = Arc::new(AtomicU64::new(0));
    {
        let served = Arc::clone(&served);
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let served = Arc::clone(&served);
                std::thread::spawn(move || serve(s, served));
            }
        });
    }

    let cli = Cli::try_parse_from([
        "ringcache-bench",
        "--servers",
        &addr,
        "--connections",
        "1",
        "--pipeline",
        "1",
        "--rate",
        "1000",
        "--duration",
        "2",
        "--ratio",
        "1:0",
    ])
    .unwrap();
    let cfg = Arc::new(Config::from_cli(&cli).unwrap());
    let outcome = runner::run(cfg, Arc::new(AtomicBool::new(false)), false);
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert!(served.load(Ordering::SeqCst) >= STALL_AT, "the stall happened");
    let m = outcome.measure.expect("measured");
    let c = m.rec.counters;
    // The schedule is not thinned by the stall: about 2000 requests in 2 s.
    assert!((1900..=2100).contains(&c.ops), "{} ops", c.ops);
    assert_eq!(c.unsent, 0);

    let lat = LatencySummary::of(&m.rec.latency);
    let svc = LatencySummary::of(&m.rec.service);
    eprintln!("latency from intended send: {lat:?}");
    eprintln!("service time:               {svc:?}");
    // ~200 requests were due during the stall; their waits spread over 0..200 ms, so the top
    // 1% (20 requests) all waited well over 100 ms and the maximum is the whole stall.
    assert!(lat.max_us >= 190_000.0, "corrected max {} us", lat.max_us);
    assert!(lat.p999_us >= 150_000.0, "corrected p99.9 {} us", lat.p999_us);
    assert!(lat.p99_us >= 100_000.0, "corrected p99 {} us", lat.p99_us);
    // Only the one request that was held saw the stall after it was actually sent.
    assert!(svc.p99_us < 50_000.0, "service p99 {} us", svc.p99_us);
    assert!(svc.p999_us < lat.p999_us / 2.0);
}
