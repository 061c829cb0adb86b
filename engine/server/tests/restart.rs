//! Warm restart of a file-backed server (`--memory-file`): a graceful stop (SIGTERM, or
//! SIGUSR1 as in memcached) brings back every item with its flags, CAS and TTL, exactly
//! as last acknowledged; after a kill -9 the server restarts empty, never with older
//! data; other settings start empty.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringcache_test_support::Conn;
use ringcache_test_support::{start_ringcache, Server};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringcache-restart-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn start(file: &Path, threads: &str) -> Server {
    let file = file.to_str().expect("utf-8 path");
    start_ringcache!(&["-t", threads, "-m", "16", "--memory-file", file])
}

/// Waits for the server to exit (20 s at most).
fn wait_exit(server: &mut Server) -> std::process::ExitStatus {
    server.wait_for_exit(Duration::from_secs(20)).unwrap_or_else(|| panic!("server did not exit"))
}

fn meta_files(file: &Path, shards: usize) -> Vec<PathBuf> {
    (0..shards).map(|i| PathBuf::from(format!("{}.shard{i}.meta", file.display()))).collect()
}

fn set(conn: &mut Conn, key: &str, flags: u32, exptime: u32, value: &str) {
    conn.send(format!("set {key} {flags} {exptime} {}\r\n{value}\r\n", value.len()).as_bytes());
    conn.expect_line("STORED", key);
}

/// (flags, cas, value) of `key`, if present.
fn gets(conn: &mut Conn, key: &str) -> Option<(u32, u64, String)> {
    conn.send(format!("gets {key}\r\n").as_bytes());
    let blocks = conn.value_blocks(key);
    blocks.first().map(|(_, flags, cas, data)| (*flags, cas.unwrap_or(0), String::from_utf8_lossy(data).into_owned()))
}

#[test]
fn graceful_restart_keeps_every_item_with_flags_cas_and_ttl() {
    let dir = temp_dir("graceful");
    let file = dir.join("mem");
    let mut server = start(&file, "2");
    let mut conn = Conn::open(&server, "before");
    for i in 0..2000u32 {
        set(&mut conn, &format!("key{i}"), i, if i % 3 == 0 { 3600 } else { 0 }, &format!("value-{i}"));
    }
    set(&mut conn, "short", 0, 1, "expires");
    let before: Vec<_> = (0..2000u32).map(|i| gets(&mut conn, &format!("key{i}"))).collect();
    drop(conn);
    server.signal("-TERM");
    assert!(wait_exit(&mut server).success());
    for meta in meta_files(&file, 2) {
        assert!(meta.exists(), "graceful stop saved {}", meta.display());
    }

    let server = start(&file, "2");
    let mut conn = Conn::open(&server, "after");
    for (i, want) in before.iter().enumerate() {
        assert!(want.is_some());
        assert_eq!(&gets(&mut conn, &format!("key{i}")), want, "key{i} after restart");
    }
    // The 1-second item expires on the new run's clock too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gets(&mut conn, "short").is_some() {
        assert!(Instant::now() < deadline, "the 1 s TTL survived the restart");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last acknowledged state of each key: a value, or deleted.
type Acked = std::collections::BTreeMap<String, Option<String>>;

fn delete(conn: &mut Conn, key: &str) {
    conn.send(format!("delete {key}\r\n").as_bytes());
    let reply = conn.line();
    assert!(reply == b"DELETED" || reply == b"NOT_FOUND", "delete {key}: {:?}", String::from_utf8_lossy(&reply));
}

/// Every key is exactly as last acknowledged (`exact`), or, after a crash, absent.
fn check_against(conn: &mut Conn, acked: &Acked, exact: bool, when: &str) -> usize {
    let mut present = 0;
    for (key, want) in acked {
        let got = gets(conn, key).map(|(_, _, v)| v);
        if exact || got.is_some() {
            assert_eq!(&got, want, "{key} {when}: must be its last acknowledged state");
        }
        present += usize::from(got.is_some());
    }
    present
}

/// memcached's `-e` contract: SIGUSR1 stops the server gracefully and the restart
/// brings back exactly what was acknowledged. A crash of the restarted server (no save
/// since) restarts empty: never the older saved state, never a deleted key.
#[test]
fn sigusr1_saves_and_a_crash_never_brings_back_older_data() {
    let dir = temp_dir("usr1");
    let file = dir.join("mem");
    let mut server = start(&file, "2");
    let mut conn = Conn::open(&server, "first run");
    let mut acked = Acked::new();
    for i in 0..1000u32 {
        let (key, value) = (format!("k{i}"), format!("old-{i}"));
        set(&mut conn, &key, 1, 0, &value);
        acked.insert(key, Some(value));
    }
    for i in (0..1000u32).step_by(7) {
        delete(&mut conn, &format!("k{i}"));
        acked.insert(format!("k{i}"), None);
    }
    drop(conn);
    server.signal("-USR1");
    assert!(wait_exit(&mut server).success(), "SIGUSR1 is a graceful stop, as in memcached");
    assert!(meta_files(&file, 2).iter().all(|m| m.exists()), "the stop saved every shard");

    let mut server = start(&file, "2");
    let mut conn = Conn::open(&server, "second run");
    assert_eq!(check_against(&mut conn, &acked, true, "after the graceful restart"), 1000 - 143);
    assert!(meta_files(&file, 2).iter().all(|m| !m.exists()), "the metadata is consumed before serving");
    // Acknowledged changes after the restart, then a crash.
    for i in 0..1000u32 {
        if i % 2 == 0 {
            let (key, value) = (format!("k{i}"), format!("new-{i}"));
            set(&mut conn, &key, 2, 0, &value);
            acked.insert(key, Some(value));
        } else if i % 3 == 0 {
            delete(&mut conn, &format!("k{i}"));
            acked.insert(format!("k{i}"), None);
        }
    }
    drop(conn);
    server.signal("-KILL");
    wait_exit(&mut server);

    let server = start(&file, "2");
    let mut conn = Conn::open(&server, "after the crash");
    let present = check_against(&mut conn, &acked, false, "after kill -9");
    assert_eq!(present, 0, "no save since the restart: nothing can be proven current, so nothing comes back");
}

/// A write storm with SIGUSR1 in the middle: whatever the stop acknowledged comes back
/// exactly; a write that was sent but not acknowledged may come back or not, but no key
/// comes back older than its last acknowledged write.
#[test]
fn sigusr1_during_a_write_storm_loses_no_acknowledged_write() {
    let dir = temp_dir("storm");
    let file = dir.join("mem");
    let mut server = start(&file, "2");
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut conn = Conn::open(&server, format!("writer {w}"));
            std::thread::spawn(move || {
                // (key, last acknowledged value, value sent but not acknowledged)
                let mut state: Vec<(String, Option<String>, Option<String>)> = Vec::new();
                for round in 0u32.. {
                    for k in 0..50u32 {
                        let key = format!("w{w}-k{k}");
                        let value = format!("{round}");
                        let request = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
                        if state.len() <= k as usize {
                            state.push((key.clone(), None, None));
                        }
                        state[k as usize].2 = Some(value.clone());
                        if conn.writer.write_all(request.as_bytes()).is_err() {
                            return state;
                        }
                        let mut line = Vec::new();
                        match std::io::BufRead::read_until(&mut conn.reader, b'\n', &mut line) {
                            Ok(n) if n > 0 && line == b"STORED\r\n" => {
                                state[k as usize].1 = Some(value);
                                state[k as usize].2 = None;
                            }
                            _ => return state,
                        }
                    }
                }
                state
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    server.signal("-USR1");
    assert!(wait_exit(&mut server).success());
    let states: Vec<_> = writers.into_iter().map(|w| w.join().expect("writer thread")).collect();

    let server = start(&file, "2");
    let mut conn = Conn::open(&server, "after the stop");
    for (key, acked, unacked) in states.iter().flatten() {
        let got = gets(&mut conn, key).map(|(_, _, v)| v);
        assert!(
            got == *acked || (got.is_some() && got == *unacked),
            "{key}: came back as {got:?}; last acknowledged {acked:?}, sent after it {unacked:?}"
        );
    }
}

#[test]
fn other_settings_start_empty() {
    let dir = temp_dir("settings");
    let file = dir.join("mem");
    let mut server = start(&file, "2");
    let mut conn = Conn::open(&server, "two shards");
    set(&mut conn, "k", 0, 0, "v");
    drop(conn);
    server.signal("-TERM");
    assert!(wait_exit(&mut server).success());
    // One shard: shard 0's file exists but was made for two shards.
    let server = start(&file, "1");
    let mut conn = Conn::open(&server, "one shard");
    assert!(gets(&mut conn, "k").is_none());
    set(&mut conn, "k2", 0, 0, "v2");
    assert_eq!(gets(&mut conn, "k2").map(|g| g.2), Some("v2".to_string()));
}
