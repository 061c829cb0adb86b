//! TLS on the client port (`-Z`), against the built binary with an in-process rustls
//! client that trusts only a CA made here (rcgen).
//!
//! * `tls_clients_are_served_and_plaintext_is_refused`: set/get of a 100 KB value,
//!   a multi-get over both shards, meta commands, `stats settings`' ssl fields, through
//!   TLS; a plaintext client gets no memcached reply and is closed (counted in
//!   `ssl_handshake_errors`).
//! * `refresh_certs_and_sighup_reload_the_certificate`: `refresh_certs` answers OK and a
//!   new connection is served the new certificate while an old one keeps working; a bad
//!   certificate or a key of another certificate answers memcached's error and keeps the
//!   one in use; `noreply` silences only OK; SIGHUP reloads too.
//! * `memcached_flags_and_the_config_file_turn_tls_on`: `-Z -o ssl_chain_cert=..,ssl_key=..`
//!   and a `--config` file with `tls`, `tls_cert`, `tls_key`.
//! * `tls_connections_are_bounded`: they count against `-c`; a silent client is closed
//!   once the handshake time is up; a client that vanishes frees its slot; a graceful stop
//!   closes a TLS client after its replies.
//! * `tls_settings_that_cannot_serve_refuse_to_start`: status 64 with a clear message for
//!   `-Z` without files, unreadable or bad files, a key of another certificate, `-Z -s`,
//!   and memcached's TLS options ringcache does not offer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use ringcache_test_support::{run_ringcache_to_exit, start_ringcache, Server};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A CA, the client's trust in it, and a directory for the server's files.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    client: Arc<ClientConfig>,
    dir: PathBuf,
}

/// A server certificate signed by the CA: its PEM, its key's PEM, its DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).expect("trust the CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let dir = std::env::temp_dir().join(format!("ringcache-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Pki { ca, client: Arc::new(client), dir }
    }

    fn leaf(&self) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .signed_by(&key, &self.ca)
            .expect("sign");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// Writes the files the server reads (replacing them whole, as an operator's
    /// rename would).
    fn install(&self, cert_pem: &str, key_pem: &str) {
        for (path, text) in [(self.cert_path(), cert_pem), (self.key_path(), key_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, &path).expect("rename");
        }
    }

    fn flags(&self) -> Vec<String> {
        let (cert, key) = (self.cert_path(), self.key_path());
        vec!["-Z".into(), "--tls-cert".into(), path(&cert), "--tls-key".into(), path(&key)]
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

fn start(flags: &[String]) -> Server {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    start_ringcache!(&flags)
}

/// A TLS connection, handshake done; with the server's end-entity certificate.
fn connect(server: &Server, pki: &Pki) -> (Tls, Vec<u8>) {
    let tcp = TcpStream::connect(server.addr()).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    tcp.set_write_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let name = ServerName::try_from("localhost").expect("name");
    let conn = ClientConnection::new(pki.client.clone(), name).expect("client");
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    let certs: &[CertificateDer<'_>] = tls.conn.peer_certificates().expect("server certificates");
    let der = certs.first().expect("an end-entity certificate").to_vec();
    (tls, der)
}

/// Sends `request` and reads until the reply ends with `end`.
fn ask(tls: &mut Tls, request: &[u8], end: &[u8]) -> Vec<u8> {
    tls.write_all(request).expect("send");
    tls.flush().expect("flush");
    let mut reply = Vec::new();
    let mut buf = [0u8; 65536];
    while !reply.ends_with(end) {
        match tls.read(&mut buf) {
            Ok(0) => panic!("closed; got {:?}", String::from_utf8_lossy(&reply)),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading: {e}; got {:?}", String::from_utf8_lossy(&reply)),
        }
    }
    reply
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn stat(tls: &mut Tls, args: &str, name: &str) -> String {
    let reply = text(&ask(tls, format!("stats{args}\r\n").as_bytes(), b"END\r\n"));
    reply
        .lines()
        .find_map(|l| l.strip_prefix(&format!("STAT {name} ")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {name} in {reply}"))
}

/// Polls `stats` until `curr_connections` is `want` (connections end asynchronously).
fn wait_connections(tls: &mut Tls, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: usize = stat(tls, "", "curr_connections").parse().expect("number");
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "curr_connections stays {now}, expected {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a plain socket to its end (a read error counts as the end); panics if it stays
/// open for 10 s.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("still open after 10 s; got {:?}", text(&got))
            }
            Err(_) => return got,
        }
    }
}

#[test]
fn tls_clients_are_served_and_plaintext_is_refused() {
    let pki = Pki::new("serve");
    let leaf = pki.leaf();
    pki.install(&leaf.cert_pem, &leaf.key_pem);
    let server = start(&[&["-t".to_string(), "2".to_string()][..], &pki.flags()].concat());
    let (mut c, der) = connect(&server, &pki);
    assert_eq!(der, leaf.der, "the server serves the certificate it was given");

    // A 100 KB value, through 16 KiB proxy buffers and TLS records both ways.
    let value: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut set = b"set big 7 0 100000\r\n".to_vec();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    assert_eq!(ask(&mut c, &set, b"\r\n"), b"STORED\r\n");
    let mut want = b"VALUE big 7 100000\r\n".to_vec();
    want.extend_from_slice(&value);
    want.extend_from_slice(b"\r\nEND\r\n");
    assert_eq!(ask(&mut c, b"get big\r\n", b"END\r\n"), want);

    // Many keys (both shards own some), pipelined, then one multi-get.
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend_from_slice(format!("set k{i} {i} 0 {}\r\nv{i}\r\n", format!("v{i}").len()).as_bytes());
    }
    let stored = ask(&mut c, &batch, &b"STORED\r\n".repeat(200));
    assert_eq!(stored, b"STORED\r\n".repeat(200));
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let reply = ask(&mut c, format!("get {}\r\n", keys.join(" ")).as_bytes(), b"END\r\n");
    let mut want = String::new();
    for i in 0..200 {
        want.push_str(&format!("VALUE k{i} {i} {}\r\nv{i}\r\n", format!("v{i}").len()));
    }
    want.push_str("END\r\n");
    assert_eq!(text(&reply), want);

    // Meta commands.
    assert_eq!(ask(&mut c, b"ms mk 2 T0 F5\r\nhi\r\n", b"\r\n"), b"HD\r\n");
    assert_eq!(ask(&mut c, b"mg mk v f\r\n", b"hi\r\n"), b"VA 2 f5\r\nhi\r\n");
    assert_eq!(ask(&mut c, b"md mk q\r\nmn\r\n", b"MN\r\n"), b"MN\r\n");
    assert_eq!(ask(&mut c, b"mg mk v\r\n", b"\r\n"), b"EN\r\n");

    // `stats settings` as memcached prints it with TLS on.
    assert_eq!(stat(&mut c, " settings", "ssl_enabled"), "yes");
    assert_eq!(stat(&mut c, " settings", "ssl_chain_cert"), path(&pki.cert_path()));
    assert_eq!(stat(&mut c, " settings", "ssl_key"), path(&pki.key_path()));

    // A plaintext client: no memcached reply (at most a TLS alert), then closed.
    let before: u64 = stat(&mut c, "", "ssl_handshake_errors").parse().expect("number");
    let mut plain = TcpStream::connect(server.addr()).expect("connect");
    plain.write_all(b"version\r\nget big\r\n").expect("send");
    let got = read_to_close(&mut plain);
    assert!(!text(&got).contains("VERSION") && !text(&got).contains("VALUE"), "plaintext was served: {got:?}");
    assert!(got.is_empty() || got[0] == 0x15, "only a TLS alert may come back: {got:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(&mut c, "", "ssl_handshake_errors").parse::<u64>().expect("number") <= before {
        assert!(Instant::now() < deadline, "the refused handshake is not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The TLS client is still served.
    assert_eq!(text(&ask(&mut c, b"get k7\r\n", b"END\r\n")), "VALUE k7 7 2\r\nv7\r\nEND\r\n");
}

#[test]
fn refresh_certs_and_sighup_reload_the_certificate() {
    let pki = Pki::new("reload");
    let first = pki.leaf();
    pki.install(&first.cert_pem, &first.key_pem);
    let server = start(&[&["-t".to_string(), "1".to_string()][..], &pki.flags()].concat());
    let (mut old, der) = connect(&server, &pki);
    assert_eq!(der, first.der);
    assert_eq!(ask(&mut old, b"set a 0 0 1\r\nx\r\n", b"\r\n"), b"STORED\r\n");

    // A new certificate: OK, new connections get it, the old one goes on.
    let second = pki.leaf();
    pki.install(&second.cert_pem, &second.key_pem);
    assert_eq!(ask(&mut old, b"refresh_certs\r\n", b"\r\n"), b"OK\r\n");
    let (mut new, der) = connect(&server, &pki);
    assert_eq!(der, second.der, "a new connection is served the new certificate");
    assert_eq!(ask(&mut new, b"get a\r\n", b"END\r\n"), b"VALUE a 0 1\r\nx\r\nEND\r\n");
    assert_eq!(ask(&mut old, b"set b 0 0 1\r\ny\r\nget b\r\n", b"END\r\n"), b"STORED\r\nVALUE b 0 1\r\ny\r\nEND\r\n");
    // noreply silences OK (only the `mn` answers).
    assert_eq!(ask(&mut old, b"refresh_certs noreply\r\nmn\r\n", b"MN\r\n"), b"MN\r\n");

    // A file that holds no certificate: memcached's error, noreply or not; the certificate
    // in use stays.
    pki.install("not a certificate\n", &second.key_pem);
    let reply = text(&ask(&mut old, b"refresh_certs\r\n", b"\r\n"));
    let prefix = format!("Error loading the certificate chain: {} : ", path(&pki.cert_path()));
    assert!(reply.starts_with(&prefix) && reply.ends_with("\r\n"), "{reply:?}");
    assert_eq!(reply.matches("\r\n").count(), 1, "one line: {reply:?}");
    let reply = text(&ask(&mut old, b"refresh_certs noreply\r\n", b"\r\n"));
    assert!(reply.starts_with(&prefix), "{reply:?}");
    // A key of another certificate.
    let third = pki.leaf();
    pki.install(&third.cert_pem, &second.key_pem);
    let reply = text(&ask(&mut new, b"refresh_certs\r\n", b"\r\n"));
    assert!(reply.starts_with("Error validating the certificate: ") && reply.ends_with("\r\n"), "{reply:?}");
    // A key file without a key.
    pki.install(&third.cert_pem, "nothing here\n");
    let reply = text(&ask(&mut new, b"refresh_certs\r\n", b"\r\n"));
    let prefix = format!("Error loading the key: {} : ", path(&pki.key_path()));
    assert!(reply.starts_with(&prefix), "{reply:?}");
    let (mut still, der) = connect(&server, &pki);
    assert_eq!(der, second.der, "a failed reload keeps the certificate in use");
    assert_eq!(ask(&mut still, b"get a\r\n", b"END\r\n"), b"VALUE a 0 1\r\nx\r\nEND\r\n");

    // SIGHUP reloads too (asynchronously: new connections are tried until one is served
    // the new certificate).
    pki.install(&third.cert_pem, &third.key_pem);
    server.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (mut c, der) = connect(&server, &pki);
        if der == third.der {
            assert_eq!(ask(&mut c, b"get b\r\n", b"END\r\n"), b"VALUE b 0 1\r\ny\r\nEND\r\n");
            break;
        }
        assert_eq!(der, second.der, "either certificate, nothing else");
        assert!(Instant::now() < deadline, "SIGHUP did not reload the certificate");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ask(&mut old, b"get a\r\n", b"END\r\n"), b"VALUE a 0 1\r\nx\r\nEND\r\n");
    let secs: u64 = stat(&mut old, "", "time_since_server_cert_refresh").parse().expect("number");
    assert!(secs < 10, "{secs}");
}

#[test]
fn memcached_flags_and_the_config_file_turn_tls_on() {
    let pki = Pki::new("forms");
    let leaf = pki.leaf();
    pki.install(&leaf.cert_pem, &leaf.key_pem);
    let (cert, key) = (path(&pki.cert_path()), path(&pki.key_path()));
    let server = start(&["-Z".into(), "-o".into(), format!("ssl_chain_cert={cert},ssl_key={key}")]);
    let (mut c, der) = connect(&server, &pki);
    assert_eq!(der, leaf.der);
    assert_eq!(ask(&mut c, b"version\r\n", b"\r\n")[..8], *b"VERSION ");
    drop(server);

    let config = pki.dir.join("ringcache.toml");
    std::fs::write(&config, format!("tls = true\ntls_cert = {cert:?}\ntls_key = {key:?}\n")).expect("write");
    let server = start(&["--config".into(), path(&config)]);
    let (mut c, der) = connect(&server, &pki);
    assert_eq!(der, leaf.der);
    assert_eq!(ask(&mut c, b"mn\r\n", b"\r\n"), b"MN\r\n");
}

#[test]
fn tls_connections_are_bounded() {
    let pki = Pki::new("bounds");
    let leaf = pki.leaf();
    pki.install(&leaf.cert_pem, &leaf.key_pem);
    let flags = [&["-t", "1", "-c", "3", "-o", "request_timeout=1"].map(String::from)[..], &pki.flags()].concat();
    let server = start(&flags);
    let (mut a, _) = connect(&server, &pki);
    // The start-up probe's connection has ended.
    wait_connections(&mut a, 1);

    // A client that vanishes (no close_notify, no timeout pending: its connection is
    // idle) frees its slot: the proxy sees it go and ends the served side.
    let (mut gone, _) = connect(&server, &pki);
    assert_eq!(ask(&mut gone, b"mn\r\n", b"\r\n"), b"MN\r\n");
    wait_connections(&mut a, 2);
    drop(gone);
    wait_connections(&mut a, 1);

    // TLS connections count against -c: the fourth is refused as memcached refuses.
    let (mut b, _) = connect(&server, &pki);
    let (mut c, _) = connect(&server, &pki);
    wait_connections(&mut a, 3);
    let mut over = TcpStream::connect(server.addr()).expect("connect");
    assert_eq!(text(&read_to_close(&mut over)), "ERROR Too many open connections\r\n");
    assert_eq!(ask(&mut b, b"mn\r\n", b"\r\n"), b"MN\r\n");
    drop(b);
    wait_connections(&mut a, 2);

    // A client that never finishes its handshake is closed once the handshake's time
    // (here the 1 s request timeout) is up.
    let mut silent = TcpStream::connect(server.addr()).expect("connect");
    let started = Instant::now();
    assert!(read_to_close(&mut silent).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before its time: {:?}", started.elapsed());
    wait_connections(&mut a, 2);

    // A graceful stop ends a TLS client cleanly (close_notify after its last reply).
    assert_eq!(ask(&mut c, b"get nothing\r\n", b"END\r\n"), b"END\r\n");
    let mut server = server;
    server.signal("-TERM");
    let mut buf = [0u8; 1024];
    match c.read(&mut buf) {
        Ok(0) => {}
        other => panic!("expected the end of the TLS stream (close_notify), got {other:?}"),
    }
    let status = server.wait_for_exit(Duration::from_secs(20)).expect("the server stops");
    assert!(status.success(), "{status:?}");
}

#[test]
fn tls_settings_that_cannot_serve_refuse_to_start() {
    let pki = Pki::new("refuse");
    let leaf = pki.leaf();
    let other = pki.leaf();
    let (cert, key) = (path(&pki.cert_path()), path(&pki.key_path()));
    let refused = |args: &[&str], says: &str| {
        let mut all = vec!["-l", "127.0.0.1", "-p", "0", "-t", "1"];
        all.extend_from_slice(args);
        let (status, stderr) = run_ringcache_to_exit!(&all, Duration::from_secs(10));
        assert_eq!(status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} should say {says:?}: {stderr}");
    };
    refused(&["-Z"], "-Z (TLS) needs a certificate and its key");
    refused(&["-Z", "--tls-cert", &cert], "-Z (TLS) needs a certificate and its key");
    refused(&["-Z", "--tls-cert", &cert, "--tls-key", &key], "Error loading the certificate chain");
    pki.install(&leaf.cert_pem, "garbage\n");
    refused(&["-Z", "--tls-cert", &cert, "--tls-key", &key], "Error loading the key");
    pki.install(&leaf.cert_pem, &other.key_pem);
    refused(&["-Z", "--tls-cert", &cert, "--tls-key", &key], "Error validating the certificate");
    pki.install(&leaf.cert_pem, &leaf.key_pem);
    let socket = path(&pki.dir.join("sock"));
    refused(&["-Z", "--tls-cert", &cert, "--tls-key", &key, "-s", &socket], "cannot be used with -s");
    refused(&["-Z", "--tls-cert", &cert, "--tls-key", &key, "-o", "ssl_ca_cert=/x"], "-o ssl_ca_cert=/x");
    refused(&["-Z", "--tls-cert", &cert, "--tls-key", &key, "-o", "ssl_verify_mode=2"], "ssl_verify_mode");
    refused(&["-Z", "--tls-cert", &cert, "--tls-key", &key, "-o", "ssl_kernel_tls"], "ssl_kernel_tls");
}
