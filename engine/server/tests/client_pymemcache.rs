//! Whole-process test with a real third-party client: starts `ringcache` (2 shards) and
//! runs `tests/clients/pymemcache_client.py`, which drives it with the `pymemcache`
//! library and checks set/get/gets/cas (success and conflict), incr/decr, add/replace,
//! append/prepend, delete, get_many over many keys, touch, noreply variants, binary
//! values with all 256 byte values, flags round-tripped through a serde, and a ~500 KB
//! value. The test passes only if the script exits 0; a missing `python3` or
//! `pymemcache` is a failure, not a skip (CI runs `pip install pymemcache`).

use ringcache_test_support::start_ringcache;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for the whole script; it normally takes well under a second.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn pymemcache_client_suite_passes() {
    let mut server = start_ringcache!(&["-t", "2"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/pymemcache_client.py");

    let mut child = Command::new("python3")
        .arg(script)
        .arg(server.port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3 (is Python 3 installed?)");

    // Drain both pipes on their own threads so a chatty script cannot block on a full
    // pipe while this thread polls for its exit.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });

    let deadline = Instant::now() + SCRIPT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll python3") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    let err = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    let transcript = format!("--- script stdout ---\n{out}--- script stderr ---\n{err}");

    match status {
        None => {
            panic!("pymemcache_client.py did not finish within {SCRIPT_DEADLINE:?}\n{transcript}")
        }
        Some(status) => assert!(
            status.success(),
            "pymemcache_client.py failed ({status}) against the server on port {}\n{transcript}",
            server.port
        ),
    }
    assert!(server.is_running(), "server exited during the pymemcache run\n{transcript}");
}
