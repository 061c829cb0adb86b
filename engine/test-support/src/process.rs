//! Server processes for tests: start `ringcache` or Debian's `memcached` on a reserved
//! loopback port, wait until it accepts connections, and stop it when the guard drops;
//! run `ringcache` expecting it to exit; run a client-library script against a server;
//! RSS and signals.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
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

    /// A new client connection with a read timeout, so a missing reply fails the test
    /// instead of hanging it.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr()).expect("connect to server");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Polls until the process exits; `None` if it is still running at the deadline.
    pub fn wait_for_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, within)
    }

    /// The process's resident memory in bytes (0 once it is gone).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Sends `signal` (e.g. "-TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// Polls until `child` exits; `None` if it is still running at the deadline.
pub fn wait_child(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("poll child process") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the `ringcache` at `binary` with `args` (no port or address added) expecting it to exit by
/// itself within `within`: its exit status and what it wrote to stderr. Panics if it
/// is still running then (it is killed).
pub fn run_ringcache_to_exit_at(binary: &str, args: &[&str], within: Duration) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringcache");
    let Some(status) = wait_child(&mut child, within) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("ringcache {args:?} was still running after {within:?}");
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (status, stderr)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port held for a server about to start. The socket stays bound (never
/// listening) with SO_REUSEADDR and SO_REUSEPORT: the server can bind the port too (both
/// ringcache, which uses SO_REUSEPORT, and memcached, which uses SO_REUSEADDR), while no
/// other test can be handed the same port meanwhile. Drop it once the server listens.
pub struct PortReservation {
    fd: i32,
    pub port: u16,
}

impl Drop for PortReservation {
    fn drop(&mut self) {
        // SAFETY: fd is this reservation's own socket.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// Reserves a free loopback port (see [`PortReservation`]).
pub fn reserve_port() -> PortReservation {
    // SAFETY: plain socket calls on a socket this function owns; the sockaddr structs are
    // fully initialised and their sizes passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            let size = std::mem::size_of_val(&one) as libc::socklen_t;
            libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&one as *const libc::c_int).cast(), size);
        }
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bound = libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), len);
        assert!(bound == 0, "bind: {}", std::io::Error::last_os_error());
        let mut out: libc::sockaddr_in = std::mem::zeroed();
        let mut out_len = len;
        libc::getsockname(fd, (&mut out as *mut libc::sockaddr_in).cast(), &mut out_len);
        PortReservation { fd, port: u16::from_be(out.sin_port) }
    }
}

/// True if a real connection to `addr` can be made. A connect to a loopback port nobody
/// listens on can still "succeed" when the kernel picks that same port as the source
/// (a TCP self-connect); that is not a server.
fn connects(addr: &str) -> bool {
    match TcpStream::connect(addr) {
        Ok(s) => match (s.local_addr(), s.peer_addr()) {
            (Ok(local), Ok(peer)) => local != peer,
            _ => false,
        },
        Err(_) => false,
    }
}

fn wait_until_accepting(server: &mut Server, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Check our own process first: if it failed to bind (someone else took the port),
        // a successful connect would be to the wrong server.
        if !server.is_running() {
            panic!("{what} exited before accepting connections");
        }
        if connects(&server.addr()) && server.is_running() {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not start accepting within 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts the `ringcache` binary at `binary` with `extra` flags (see the crate's
/// `start_ringcache!`).
pub fn start_ringcache_at(binary: &str, extra: &[&str]) -> Server {
    start_ringcache_with_at(binary, extra, |_| {})
}

/// As [`start_ringcache_at`], letting `configure` adjust the command first (resource
/// limits, environment).
pub fn start_ringcache_with_at(binary: &str, extra: &[&str], configure: impl FnOnce(&mut Command)) -> Server {
    let reservation = reserve_port();
    let port = reservation.port;
    let mut command = Command::new(binary);
    command
        .args(["-l", "127.0.0.1", "-p", &port.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    configure(&mut command);
    let child = command.spawn().expect("spawn ringcache");
    let mut server = Server { port, child };
    wait_until_accepting(&mut server, "ringcache");
    server
}

/// Starts Debian's `memcached` (the reference) with `extra` flags. Panics if it is not
/// installed: `.ci/run` installs it.
pub fn start_memcached(extra: &[&str]) -> Server {
    let reservation = reserve_port();
    let port = reservation.port;
    let child = Command::new("memcached")
        .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-u", "root"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn memcached (is the Debian package installed?)");
    let mut server = Server { port, child };
    wait_until_accepting(&mut server, "memcached");
    server
}

/// Sends `request` and reads until the reply ends with `terminator` (or EOF).
pub fn roundtrip(stream: &mut TcpStream, request: &[u8], terminator: &[u8]) -> Vec<u8> {
    stream.write_all(request).expect("send request");
    let mut reply = Vec::new();
    let mut chunk = [0u8; 65536];
    while !reply.ends_with(terminator) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) => panic!(
                "reading reply to {:?}: {e}; got so far {:?}",
                String::from_utf8_lossy(&request[..request.len().min(200)]),
                String::from_utf8_lossy(&reply)
            ),
        }
    }
    reply
}

/// Runs `python3 <script> <port>` (a client-library suite against a server) to its end
/// or `within`, draining its output on threads so a chatty script cannot block. Returns
/// Ok(transcript) when it exited 0, Err(why and transcript) otherwise; a missing
/// `python3` is an error, not a skip.
pub fn run_client_script(script: &str, port: u16, within: Duration) -> Result<String, String> {
    let mut child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn python3 {script}: {e} (is Python 3 installed?)"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = wait_child(&mut child, within);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let transcript = format!(
        "--- script stdout ---\n{}--- script stderr ---\n{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    match status {
        Some(s) if s.success() => Ok(transcript),
        Some(s) => Err(format!("{script} failed ({s}) against port {port}\n{transcript}")),
        None => Err(format!("{script} did not finish within {within:?}\n{transcript}")),
    }
}
