//! The operator's files in `ops/`, checked as an operator would use them:
//!
//! * `the_systemd_unit_and_drop_in_verify`: `systemd-analyze verify` accepts
//!   `ops/systemd/ringcache.service` and the replica drop-in, with `ExecStart` pointed at
//!   the ringcache built for these tests.
//! * `tune_host_dry_run_changes_nothing_and_refuses_what_it_cannot_tell`: `--dry-run`
//!   prints a line per setting it looks at, exits 0 and changes nothing; a CPU or a NIC
//!   that does not exist, or an unknown argument, is refused with status 2.
//! * `the_example_config_starts_a_server`: `ringcache --config ops/ringcache.toml` (the
//!   port given on the command line, which wins) serves.

use std::process::Command;
use std::time::Duration;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

#[test]
fn the_systemd_unit_and_drop_in_verify() {
    let dir = std::env::temp_dir().join(format!("ringcache-unit-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("ringcache.service.d")).expect("temp dir");
    let binary = env!("CARGO_BIN_EXE_ringcache");
    let unit = std::fs::read_to_string(format!("{ROOT}/ops/systemd/ringcache.service")).expect("unit");
    let drop_in = std::fs::read_to_string(format!("{ROOT}/ops/systemd/replica.conf")).expect("drop-in");
    std::fs::write(dir.join("ringcache.service"), unit.replace("/usr/local/bin/ringcache", binary)).expect("write");
    std::fs::write(dir.join("ringcache.service.d/replica.conf"), drop_in.replace("/usr/local/bin/ringcache", binary))
        .expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("ringcache.service"))
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .output()
        .expect("systemd-analyze (ops/install-deps.sh --test installs systemd)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success() && !said.contains("ringcache.service:"), "systemd-analyze verify:\n{said}");
}

#[test]
fn tune_host_dry_run_changes_nothing_and_refuses_what_it_cannot_tell() {
    let script = format!("{ROOT}/ops/tune-host.sh");
    let somaxconn = || std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap_or_default();
    let before = somaxconn();
    let out =
        Command::new("bash").args([&script, "--dry-run", "--shard-cpus", "0", "--nic", "lo"]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for setting in ["net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_rmem", "cpu0 governor"] {
        assert!(text.contains(setting), "the dry run looks at {setting}:\n{text}");
    }
    assert!(text.contains("# dry run: nothing changed"), "{text}");
    assert_eq!(somaxconn(), before, "a dry run changes nothing");
    for (args, says) in [
        (vec!["--dry-run", "--shard-cpus", "4096"], "does not exist"),
        (vec!["--dry-run", "--shard-cpus", "0", "--nic", "no-such-nic0"], "no network interface"),
        (vec!["--dry-run", "--nic", "lo"], "needs --shard-cpus"),
        (vec!["--dry-run", "--bogus"], "unknown argument"),
    ] {
        let out = Command::new("bash").arg(&script).args(&args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_example_config_starts_a_server() {
    let mut server = ringcache_test_support::start_ringcache!(&["--config", &format!("{ROOT}/ops/ringcache.toml")]);
    let mut stream = std::net::TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let reply = ringcache_test_support::roundtrip(&mut stream, b"set k 0 0 1\r\nv\r\nget k\r\n", b"END\r\n");
    assert_eq!(reply, b"STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n");
    assert!(server.is_running());
}
