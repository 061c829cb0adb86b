//! Binding the listen address, once, before any shard starts: one SO_REUSEPORT socket
//! per shard (the kernel spreads connections across them), all on the same port (with
//! `-p 0`, the one the kernel picks for the first). A bad `-l` or a port in use refuses
//! the start with a clear message instead of failing inside every shard.
//!
//! SO_REUSEPORT lets any process of the same user join a port, so two ringcaches (or a
//! ringcache and another SO_REUSEPORT server) could silently split one port's clients.
//! Two guards refuse that: an abstract Unix socket named after the address (held for the
//! life of the process; a second ringcache cannot bind the same name), and a look at
//! `/proc/net/tcp{,6}` for listening sockets on the port that are not ours.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixDatagram;

use socket2::{Domain, Protocol, Socket, Type};

/// Why the listen address cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("-l: an empty address cannot be listened on")]
    EmptyAddress,
    #[error("-l {address}: cannot resolve it: {source}")]
    Resolve { address: String, source: io::Error },
    #[error("-l {address}: resolves to no address")]
    NoAddress { address: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("{addr} is already served by another ringcache")]
    OtherRingcache { addr: SocketAddr },
    #[error("port {port} is already served by another process (listening socket inode {inode})")]
    OtherProcess { port: u16, inode: u64 },
    #[error("-s {path}: cannot listen there: {source}")]
    Unix { path: String, source: io::Error },
    #[error("-s {path}: another process serves that socket")]
    UnixInUse { path: String },
}

impl ListenError {
    /// memcached's exit status when it cannot listen (`EX_OSERR`).
    pub const EXIT_STATUS: u8 = 71;
}

/// The bound, listening sockets (one per shard) and the guard that keeps other
/// ringcaches off the address while this process runs.
pub struct Listeners {
    pub addr: SocketAddr,
    sockets: Vec<Socket>,
    _guard: UnixDatagram,
}

impl Listeners {
    /// Hands out the sockets as raw fds (one per shard, in shard order); each shard
    /// owns its own from then on.
    pub fn into_fds(self) -> (Vec<RawFd>, Option<UnixDatagram>) {
        (self.sockets.into_iter().map(IntoRawFd::into_raw_fd).collect(), Some(self._guard))
    }
}

/// memcached's `-s PATH -a MASK`: one Unix stream socket at `path` with permissions
/// `mask`, listened on by every shard (one listening socket, a descriptor of it for each
/// shard: the kernel hands each connection to one of the shards' accepts). A stale
/// socket file is replaced, as memcached does, but not one a live process still serves.
pub fn bind_unix(path: &std::path::Path, count: usize, backlog: i32, mask: u32) -> Result<Vec<RawFd>, ListenError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let shown = path.display().to_string();
    let err = |source| ListenError::Unix { path: shown.clone(), source };
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ListenError::UnixInUse { path: shown });
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(err)?;
    socket.bind(&socket2::SockAddr::unix(path).map_err(err)?).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mask & 0o777)).map_err(err)?;
    socket.listen(backlog).map_err(err)?;
    let mut fds = Vec::with_capacity(count);
    for _ in 1..count {
        fds.push(socket.try_clone().map_err(err)?.into_raw_fd());
    }
    fds.insert(0, socket.into_raw_fd());
    Ok(fds)
}

/// Resolves `listen` (the first address it names) with `port`.
pub fn resolve(listen: &str, port: u16) -> Result<SocketAddr, ListenError> {
    if listen.trim().is_empty() {
        return Err(ListenError::EmptyAddress);
    }
    (listen, port)
        .to_socket_addrs()
        .map_err(|source| ListenError::Resolve { address: listen.to_string(), source })?
        .next()
        .ok_or_else(|| ListenError::NoAddress { address: listen.to_string() })
}

fn bind_one(addr: SocketAddr) -> Result<Socket, ListenError> {
    let err = |source| ListenError::Bind { addr, source };
    let domain = if addr.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_reuse_port(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    Ok(socket)
}

/// Binds `count` sockets to `addr` (all on one port) and starts listening with `backlog`
/// (`-b`), refusing a port that another process already serves.
pub fn bind(addr: SocketAddr, count: usize, backlog: i32) -> Result<Listeners, ListenError> {
    let first = bind_one(addr)?;
    let addr = first
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| ListenError::Bind { addr, source: io::Error::other("no local address after bind") })?;
    let guard = take_guard(addr)?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(bind_one(addr)?);
    }
    let ours: Vec<u64> = sockets.iter().filter_map(|s| inode(s.as_raw_fd())).collect();
    if let Some(inode) = foreign_listener(addr, &ours) {
        return Err(ListenError::OtherProcess { port: addr.port(), inode });
    }
    for socket in &sockets {
        socket.listen(backlog).map_err(|source| ListenError::Bind { addr, source })?;
    }
    Ok(Listeners { addr, sockets, _guard: guard })
}

/// An abstract Unix socket named after `addr`: only one process can hold it.
fn take_guard(addr: SocketAddr) -> Result<UnixDatagram, ListenError> {
    let name = format!("ringcache/{addr}");
    let bind_err = |source| ListenError::Bind { addr, source };
    let unix = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(bind_err)?;
    UnixDatagram::bind_addr(&unix).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => ListenError::OtherRingcache { addr },
        _ => bind_err(e),
    })
}

/// The inode of a socket (how `/proc/net/tcp` names it).
fn inode(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat on an fd this process owns, into a zeroed stat struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino)
}

/// A listening socket on `addr`'s port, overlapping its address, that is not one of
/// `ours`: its inode.
fn foreign_listener(addr: SocketAddr, ours: &[u64]) -> Option<u64> {
    let mut found = None;
    for (path, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(table) = std::fs::read_to_string(path) else { continue };
        for line in table.lines().skip(1) {
            let Some(entry) = ProcEntry::parse(line, v6) else { continue };
            let theirs = entry.listening && entry.port == addr.port() && !ours.contains(&entry.inode);
            if theirs && overlaps(entry.addr, addr.ip()) {
                found = Some(entry.inode);
            }
        }
    }
    found
}

/// One line of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, PartialEq, Eq)]
struct ProcEntry {
    addr: IpAddr,
    port: u16,
    listening: bool,
    inode: u64,
}

impl ProcEntry {
    fn parse(line: &str, v6: bool) -> Option<ProcEntry> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        let (addr_hex, port_hex) = local.split_once(':')?;
        let port = u16::from_str_radix(port_hex, 16).ok()?;
        // The kernel prints each 32-bit word of the address as a host-order integer.
        let words: Vec<[u8; 4]> = (0..addr_hex.len() / 8)
            .map(|i| addr_hex.get(i * 8..i * 8 + 8).and_then(|h| u32::from_str_radix(h, 16).ok()).map(u32::to_ne_bytes))
            .collect::<Option<_>>()?;
        let addr = match (v6, words.as_slice()) {
            (false, [w]) => IpAddr::from(*w),
            (true, [_, _, _, _]) => {
                let mut bytes = [0u8; 16];
                for (i, w) in words.iter().enumerate() {
                    bytes[i * 4..i * 4 + 4].copy_from_slice(w);
                }
                IpAddr::from(bytes)
            }
            _ => return None,
        };
        Some(ProcEntry { addr, port, listening: *state == "0A", inode: inode.parse().ok()? })
    }
}

/// True if a listener on `theirs` would take connections meant for `ours`.
fn overlaps(theirs: IpAddr, ours: IpAddr) -> bool {
    theirs == ours || theirs.is_unspecified() || ours.is_unspecified()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_addresses_are_refused() {
        assert!(matches!(resolve("", 1), Err(ListenError::EmptyAddress)));
        assert!(matches!(resolve("  ", 1), Err(ListenError::EmptyAddress)));
        assert!(matches!(resolve("256.1.1.1", 1), Err(ListenError::Resolve { .. } | ListenError::NoAddress { .. })));
        assert_eq!(resolve("127.0.0.1", 7).ok(), Some("127.0.0.1:7".parse().unwrap_or_else(|_| unreachable!())));
    }

    #[test]
    fn proc_net_tcp_lines() {
        let v4 = "   0: 0100007F:2BCB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0";
        let e = ProcEntry::parse(v4, false);
        assert_eq!(
            e,
            Some(ProcEntry {
                addr: "127.0.0.1".parse().unwrap_or_else(|_| unreachable!()),
                port: 11211,
                listening: true,
                inode: 123456
            })
        );
        let v6 = "   1: 00000000000000000000000001000000:2BCB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0";
        let e = ProcEntry::parse(v6, true).map(|e| (e.addr, e.port, e.inode));
        assert_eq!(e, Some(("::1".parse().unwrap_or_else(|_| unreachable!()), 11211, 99)));
    }

    #[test]
    fn a_second_bind_of_the_same_address_is_refused() {
        let addr = resolve("127.0.0.1", 0).unwrap_or_else(|e| panic!("{e}"));
        let first = bind(addr, 2, 1024).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(first.addr.port(), 0, "-p 0 gets a real port, the same for every socket");
        match bind(first.addr, 1, 1024) {
            Err(ListenError::OtherRingcache { .. }) => {}
            Err(e) => panic!("wrong refusal: {e}"),
            Ok(_) => panic!("a second set of listeners shared {}", first.addr),
        }
    }

    #[test]
    fn a_foreign_reuseport_listener_is_refused() {
        // Another process's SO_REUSEPORT listener, played by a socket we do not count
        // as ours; the guard does not know it, /proc/net/tcp does.
        let foreign =
            bind_one("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!())).unwrap_or_else(|e| panic!("{e}"));
        foreign.listen(1).unwrap_or_else(|e| panic!("{e}"));
        let addr = foreign.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or_else(|| unreachable!());
        let inode_of_foreign = inode(foreign.as_raw_fd());
        match bind(addr, 1, 1024) {
            Err(ListenError::OtherProcess { inode, .. }) => assert_eq!(Some(inode), inode_of_foreign),
            Err(e) => panic!("wrong refusal: {e}"),
            Ok(_) => panic!("shared a port with a foreign listener"),
        }
    }
}
