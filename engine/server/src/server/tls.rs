//! TLS on the client port (`-Z`, memcached's shape): the certificate and key (loaded at
//! start, reloaded on `refresh_certs` and SIGHUP), and each TLS connection's handshake
//! and proxy.
//!
//! A TLS connection is accepted like any other (the shard ring's multishot accept,
//! counted against `-c` in `admit`); its task then runs the handshake (rustls with the
//! `ring` provider, through futures-rustls over glommio's `TcpStream`), bounded by the
//! request timeout (10 s at most, or 10 s when there is none). On success it makes a
//! Unix socket pair: one end is served by [`connection::serve_for`] exactly like a
//! plain connection (the whole protocol, its bounds and deadlines apply unchanged), the
//! other is copied to and from the TLS stream by [`Proxy`], with one fixed 16 KiB
//! buffer each way. Costs: every byte is copied once more through the pair (one more
//! hop per request each way); kernel TLS would remove both (not done).
//!
//! Bounds: a handshake that does not finish in time closes the connection; writes to
//! the client give up after `write_timeout` without progress; a client that leaves (or
//! breaks the TLS stream) ends the proxy, which closes its end of the pair, so the
//! served connection ends too; a served connection that closes (quit, a bound, shutdown)
//! ends the proxy once its last replies are written. At the end of the shutdown grace
//! period every TLS socket of the shard is shut down ([`TlsSockets::abort_all`]).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncWrite};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use super::connection::{self, ShardContext};
use crate::config::TlsFiles;

/// Bytes each direction of a proxy copies at a time.
const PROXY_BUFFER: usize = 16 * 1024;

/// The longest a handshake may take (less when the request timeout is shorter).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate or key could not be used: memcached's words (`tls.c`), which are
/// also `refresh_certs`'s error line.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Error loading the certificate chain: {path} : {why}")]
    Cert { path: String, why: String },
    #[error("Error loading the key: {path} : {why}")]
    Key { path: String, why: String },
    #[error("Error validating the certificate: {0}")]
    Validate(String),
}

/// One line, whatever an error message holds (it is sent as a protocol line).
fn one_line(why: impl std::fmt::Display) -> String {
    why.to_string().chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Reads the certificate chain and key and builds a server configuration; refuses a key
/// that does not belong to the chain's first certificate.
fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let shown = |p: &Path| p.display().to_string();
    let cert_err = |why: String| TlsError::Cert { path: shown(&files.cert), why };
    let key_err = |why: String| TlsError::Key { path: shown(&files.key), why };
    let pem = std::fs::read(&files.cert).map_err(|e| cert_err(one_line(e)))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(one_line(format!("bad PEM: {e}"))))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE in the file".into()));
    }
    let pem = std::fs::read(&files.key).map_err(|e| key_err(one_line(e)))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| key_err(one_line(format!("no private key: {e}"))))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Validate(one_line(e)))?
        .with_no_client_auth();
    // The key is parsed first so that a key rustls cannot use is the key's error, not
    // the certificate's.
    provider.key_provider.load_private_key(key.clone_key()).map_err(|e| key_err(one_line(e)))?;
    let config = config.with_single_cert(chain, key).map_err(|e| TlsError::Validate(one_line(e)))?;
    Ok(Arc::new(config))
}

/// The process's TLS state: the files, the configuration new handshakes use, its
/// numbers for `stats`.
pub struct Tls {
    files: TlsFiles,
    /// The configuration and when it was loaded.
    current: RwLock<(Arc<ServerConfig>, Instant)>,
    /// Handshakes that failed or did not finish in time (memcached's `ssl_handshake_errors`).
    pub handshake_errors: AtomicU64,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate and key, or says why they cannot serve.
    pub fn open(files: TlsFiles) -> Result<Tls, TlsError> {
        let config = load(&files)?;
        Ok(Tls { files, current: RwLock::new((config, Instant::now())), handshake_errors: AtomicU64::new(0) })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration a new handshake uses.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Seconds since the certificate was last loaded (memcached's
    /// `time_since_server_cert_refresh`).
    pub fn seconds_since_refresh(&self) -> u64 {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1.elapsed().as_secs()
    }

    /// Reads the files again (`refresh_certs`, SIGHUP): new handshakes use the new
    /// certificate, connections already open keep theirs. A failure keeps the old one,
    /// is logged, and is returned.
    pub fn reload(&self, why: &str) -> Result<(), TlsError> {
        match load(&self.files) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (config, Instant::now());
                tracing::info!("{why}: TLS certificate reloaded from {}", self.files.cert.display());
                Ok(())
            }
            Err(e) => {
                tracing::error!("{why}: TLS certificate not reloaded, the previous one stays: {e}");
                Err(e)
            }
        }
    }
}

/// One shard's TLS sockets (handshaking or proxied), so that the end of the shutdown
/// grace period can end them.
#[derive(Default)]
pub struct TlsSockets {
    next_id: Cell<u64>,
    open: RefCell<BTreeMap<u64, RawFd>>,
    aborted: Cell<bool>,
}

impl TlsSockets {
    fn add(&self, fd: RawFd) -> u64 {
        if self.aborted.get() {
            shutdown(fd, libc::SHUT_RDWR);
        }
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        self.open.borrow_mut().insert(id, fd);
        id
    }

    fn remove(&self, id: u64) {
        self.open.borrow_mut().remove(&id);
    }

    /// Shuts down every TLS socket of the shard, and every one added later: their
    /// handshakes and proxies end at once.
    pub fn abort_all(&self) {
        self.aborted.set(true);
        for fd in self.open.borrow().values() {
            shutdown(*fd, libc::SHUT_RDWR);
        }
    }
}

fn shutdown(fd: RawFd, how: libc::c_int) {
    // SAFETY: fd is a socket a live TLS task of this shard owns (removed from the list
    // before it is closed); shutdown(2) does not invalidate it.
    unsafe {
        libc::shutdown(fd, how);
    }
}

/// Keeps a socket in its shard's [`TlsSockets`] while its task runs.
struct Listed<'a> {
    sockets: &'a TlsSockets,
    id: u64,
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.sockets.remove(self.id);
    }
}

/// Serves one accepted client socket over TLS: handshake, then the plain connection
/// behind a proxy. The connection was counted in `curr_connections` when it was
/// admitted; the count is given back here if the handshake fails, else by the served
/// connection when it ends.
pub async fn serve(fd: RawFd, ctx: Rc<ShardContext>) {
    let Some(tls) = ctx.shared.tls.as_ref() else {
        // SAFETY: an accepted socket handed to this task alone.
        unsafe { libc::close(fd) };
        ctx.shared.curr_connections.fetch_sub(1, Ordering::Relaxed);
        return;
    };
    let listed = Listed { sockets: &ctx.tls_sockets, id: ctx.tls_sockets.add(fd) };
    // SAFETY: an accepted TCP socket handed to this task alone; the stream owns it now.
    let tcp = unsafe { glommio::net::TcpStream::from_raw_fd(fd) };
    let _ = tcp.set_nodelay(true);
    let limits = &ctx.shared.config.connections;
    let _ = tcp.set_write_timeout(limits.write_timeout);
    let peer = tcp.peer_addr().ok();
    let limit = limits.request_timeout.map_or(HANDSHAKE_TIMEOUT, |t| t.min(HANDSHAKE_TIMEOUT));
    let acceptor = futures_rustls::TlsAcceptor::from(tls.config());
    let handshake = futures_lite::future::or(async { acceptor.accept(tcp).await.map_err(Some) }, async {
        glommio::timer::sleep(limit).await;
        Err(None)
    })
    .await;
    let failed = match handshake {
        Ok(stream) => match std::os::unix::net::UnixStream::pair() {
            Ok(pair) => Ok((stream, pair)),
            Err(e) => Err(format!("no socket pair for it: {e}")),
        },
        Err(e) => {
            tls.handshake_errors.fetch_add(1, Ordering::Relaxed);
            Err(match e {
                Some(e) => format!("TLS handshake failed: {e}"),
                None => format!("TLS handshake did not finish in {limit:?}"),
            })
        }
    };
    let (stream, (served, ours)) = match failed {
        Ok(ok) => ok,
        Err(why) => {
            tracing::debug!(shard = ctx.index, ?peer, "{why}");
            drop(listed);
            ctx.shared.curr_connections.fetch_sub(1, Ordering::Relaxed);
            return;
        }
    };
    // The served end is served as any connection (it gives the connection count back).
    let served = glommio::spawn_local(connection::serve_for(served.into_raw_fd(), ctx.clone(), peer));
    // SAFETY: our end of the pair, owned by the glommio stream from now on.
    let ours = unsafe { glommio::net::UnixStream::from_raw_fd(ours.into_raw_fd()) };
    let mut proxy = Proxy::new(stream, ours);
    if let Err(e) = futures_lite::future::poll_fn(|cx| proxy.poll(cx)).await {
        tracing::debug!(shard = ctx.index, "TLS connection ended: {e}");
    }
    // Closing our end ends the served connection if it still runs; wait for it, so that
    // shutdown's gate covers it.
    drop(proxy);
    drop(listed);
    served.await;
}

/// One direction's buffer: bytes `[start, end)` are still to be written.
struct Buffer {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
    /// The source ended (no more bytes will come).
    ended: bool,
}

impl Buffer {
    fn new() -> Self {
        Buffer { bytes: vec![0; PROXY_BUFFER].into_boxed_slice(), start: 0, end: 0, ended: false }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Copies between a TLS stream (the client) and the served end of a socket pair, one
/// fixed buffer each way, polled as one future (no split, no lock).
struct Proxy<T, U> {
    tls: T,
    unix: U,
    /// Client to server.
    up: Buffer,
    /// Server to client.
    down: Buffer,
    /// Written to the TLS stream since its last flush.
    unflushed: bool,
    /// Our end's write side is shut (the client ended its input).
    up_closed: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin, U: AsyncRead + AsyncWrite + Unpin> Proxy<T, U> {
    fn new(tls: T, unix: U) -> Self {
        Proxy { tls, unix, up: Buffer::new(), down: Buffer::new(), unflushed: false, up_closed: false }
    }

    /// Moves whatever can move; ready once the server side has ended and everything it
    /// sent is written to the client (or either side failed).
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut progress = false;
            // Client to server.
            if self.up.is_empty() && !self.up.ended {
                match Pin::new(&mut self.tls).poll_read(cx, &mut self.up.bytes) {
                    Poll::Ready(Ok(0)) => {
                        self.up.ended = true;
                        progress = true;
                    }
                    Poll::Ready(Ok(n)) => {
                        (self.up.start, self.up.end) = (0, n);
                        progress = true;
                    }
                    // The client is gone: nothing more can be written to it either.
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if !self.up.is_empty() {
                match Pin::new(&mut self.unix).poll_write(cx, &self.up.bytes[self.up.start..self.up.end]) {
                    Poll::Ready(Ok(n)) => {
                        self.up.start += n;
                        progress = true;
                    }
                    // The served connection closed: send what it wrote, then end.
                    Poll::Ready(Err(_)) => {
                        (self.up.start, self.up.end, self.up.ended) = (0, 0, true);
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            } else if self.up.ended && !self.up_closed {
                // The client's input ended: the served connection sees its end of input.
                let _ = Pin::new(&mut self.unix).poll_close(cx);
                self.up_closed = true;
                progress = true;
            }
            // Server to client.
            if self.down.is_empty() && !self.down.ended {
                match Pin::new(&mut self.unix).poll_read(cx, &mut self.down.bytes) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        self.down.ended = true;
                        progress = true;
                    }
                    Poll::Ready(Ok(n)) => {
                        (self.down.start, self.down.end) = (0, n);
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if !self.down.is_empty() {
                match Pin::new(&mut self.tls).poll_write(cx, &self.down.bytes[self.down.start..self.down.end]) {
                    Poll::Ready(Ok(n)) => {
                        self.down.start += n;
                        self.unflushed = true;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if self.down.is_empty() && self.unflushed {
                match Pin::new(&mut self.tls).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        self.unflushed = false;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if self.down.ended && self.down.is_empty() && !self.unflushed {
                // The served connection is done and all it said is written: say goodbye
                // (close_notify) and end.
                return Pin::new(&mut self.tls).poll_close(cx);
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }
}
