//! Whole-process tests with real third-party clients: each starts `ringcache` (2 shards)
//! and runs a script from `tests/clients/` that drives it with a maintained client
//! library; the test passes only if the script exits 0. A missing `python3` or library
//! is a failure, not a skip (`ops/install-deps.sh` installs them).
//!
//! - `pymemcache_client.py` (the classic text protocol, `pymemcache`): set/get/gets/cas
//!   (success and conflict), incr/decr, add/replace, append/prepend, delete, get_many
//!   over many keys, touch, noreply variants, binary values with all 256 byte values,
//!   flags round-tripped through a serde, and a ~500 KB value.
//! - `meta_memcache_client.py` (the meta protocol, RevenueCat's `meta-memcache`): values
//!   of every kind, compare-and-set, refill, delete and invalidate, multi_get, counters,
//!   the lease flow, stale-while-revalidate, recache, a base64 key, a large value. The
//!   same script also runs against Debian's memcached, so its expectations are
//!   memcached's, not ours.

use ringcache_test_support::{run_client_script, start_memcached, start_ringcache};
use std::time::Duration;

/// Upper bound for one script; each normally takes well under a second.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);

fn script(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn pymemcache_client_suite_passes() {
    let mut server = start_ringcache!(&["-t", "2"]);
    if let Err(e) = run_client_script(&script("pymemcache_client.py"), server.port, SCRIPT_DEADLINE) {
        panic!("{e}");
    }
    assert!(server.is_running(), "server exited during the pymemcache run");
}

#[test]
fn meta_memcache_client_suite_passes_against_memcached_and_ringcache() {
    let reference = start_memcached(&["-t", "2"]);
    if let Err(e) = run_client_script(&script("meta_memcache_client.py"), reference.port, SCRIPT_DEADLINE) {
        panic!("the script's expectations are wrong: it fails against memcached itself\n{e}");
    }
    let mut server = start_ringcache!(&["-t", "2"]);
    if let Err(e) = run_client_script(&script("meta_memcache_client.py"), server.port, SCRIPT_DEADLINE) {
        panic!("{e}");
    }
    assert!(server.is_running(), "server exited during the meta-memcache run");
}
