//! Every accept loop of the gateway: HTTP and HTTPS (the app, the API, `/mqtt`), and the
//! embedded broker's TCP and TLS listeners for devices. One loop serves them all:
//!
//! 1. a connection permit is taken *before* accepting ([`Permits`]: `[limits] max_connections`
//!    and spare ones for HTTP; the broker's `max_connections` for devices), so a full server
//!    leaves new connections in the kernel's backlog instead of accepting and dropping them;
//! 2. the source address's count is entered ([`PerAddress`]); over its bound the connection
//!    is closed at once;
//! 3. a TLS handshake, if any, runs in the connection's own task with [`HANDSHAKE_TIMEOUT`], so
//!    a client that stalls its handshake holds only its own permit, never the loop;
//! 4. accept errors (out of file descriptors and the like) back off instead of spinning.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

use crate::per_address::{AddressSlot, PerAddress};
use crate::tls::Reloadable;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The wait after an accept error that is not the client's (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Spare connections: taken only when `max_connections` are all open, for short requests.
const SPARE_CONNECTIONS: usize = 16;

/// Connection permits: a main bound, and for HTTP [`SPARE_CONNECTIONS`] more for when those are
/// all held. A spare connection serves plain HTTP requests (each head within the connect
/// timeout, as any) but no MQTT session, so `/healthz`, `/readyz` and `/metrics` answer while
/// sessions hold every permit (200 idle MQTT sessions kept `/healthz` silent for 15 s).
#[derive(Debug, Clone)]
pub struct Permits {
    main: Arc<Semaphore>,
    spare: Option<Arc<Semaphore>>,
}

impl Permits {
    /// `max` permits for anything, and the spare ones (HTTP).
    pub fn new(max: usize) -> Self {
        Self {
            main: Arc::new(Semaphore::new(max)),
            spare: Some(Arc::new(Semaphore::new(SPARE_CONNECTIONS))),
        }
    }

    /// The permits of `main` only, no spare ones (the broker's device connections).
    pub fn only(main: Arc<Semaphore>) -> Self {
        Self { main, spare: None }
    }

    /// A permit for the next connection (a spare one only when all others are held), and
    /// whether it is spare. Waits while there is none; `None` once the semaphores are closed.
    pub async fn acquire(&self) -> Option<(OwnedSemaphorePermit, bool)> {
        if let Ok(p) = self.main.clone().try_acquire_owned() {
            return Some((p, false));
        }
        match &self.spare {
            None => self
                .main
                .clone()
                .acquire_owned()
                .await
                .ok()
                .map(|p| (p, false)),
            Some(spare) => tokio::select! {
                biased;
                p = self.main.clone().acquire_owned() => p.ok().map(|p| (p, false)),
                p = spare.clone().acquire_owned() => p.ok().map(|p| (p, true)),
            },
        }
    }
}

/// Which certificate configuration a TLS listener hands out.
#[derive(Debug, Clone)]
pub enum Tls {
    /// HTTPS: ALPN `http/1.1`.
    Http(Reloadable),
    /// MQTT over TLS: ALPN `mqtt` (or none).
    Mqtt(Reloadable),
}

/// An accepted connection: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS, handshake done.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// "tcp" or "tls".
    pub fn transport(&self) -> &'static str {
        match self {
            Self::Tcp(_) => "tcp",
            Self::Tls(_) => "tls",
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A connection the loop accepted, with what it holds while it lives.
#[derive(Debug)]
pub struct Accepted {
    /// The connection, TLS handshake done.
    pub stream: Stream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Its connection permit.
    pub permit: OwnedSemaphorePermit,
    /// The permit is a spare one (see [`Permits`]).
    pub spare: bool,
    /// Its place in its source address's count.
    pub address: AddressSlot,
}

/// Accepts on `listener` until `stop` completes, and runs `serve` for each connection in a
/// task of its own (after the TLS handshake when `tls` is given).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    permits: Permits,
    per_address: PerAddress,
    tls: Option<Tls>,
    stop: impl Future<Output = ()>,
    serve: F,
) where
    F: Fn(Accepted) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let run = async {
        loop {
            let Some((permit, spare)) = permits.acquire().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::warn!("accept failed: {e}; retrying in {ACCEPT_BACKOFF:?}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            // Over its address's bound: closed now (dropped), its permit given back.
            let Some(address) = per_address.enter(peer.ip()) else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = match &tls {
                None => None,
                Some(Tls::Http(r)) => Some(r.acceptor()),
                Some(Tls::Mqtt(r)) => Some(r.mqtt_acceptor()),
            };
            let serve = serve.clone();
            tokio::spawn(async move {
                let stream = match acceptor {
                    None => Stream::Tcp(tcp),
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, "TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                serve(Accepted {
                    stream,
                    peer,
                    permit,
                    spare,
                    address,
                })
                .await;
            });
        }
    };
    tokio::select! {
        () = run => {}
        () = stop => {}
    }
}

/// Binds the embedded broker's TCP listener for devices, with a clear error when it cannot.
pub async fn bind_mqtt(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::AddrInUse {
            format!(
                "; another broker (mosquitto?) may be running there: pass --mqtt 127.0.0.1:{} for another port, or --upstream mqtt://{addr} to use that broker",
                addr.port().wrapping_add(1)
            )
        } else {
            String::new()
        };
        anyhow::anyhow!("cannot listen for MQTT on {addr}: {e}{hint}")
    })
}

/// Errors of one incoming connection (it went away before being accepted), not of the
/// listener: the next accept may succeed at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The HTTP side of [`accept_loop`]: the connections it accepted, for `axum::serve` (each
/// wrapped in [`Permitted`], with its head deadline).
pub struct Incoming {
    ready: mpsc::Receiver<(Permitted<Stream>, SocketAddr)>,
    local: SocketAddr,
}

impl Incoming {
    /// Accepts on `listener` (HTTPS when `tls` is given) in a task of its own until the
    /// returned listener is dropped.
    pub fn spawn(
        listener: TcpListener,
        permits: Permits,
        per_address: PerAddress,
        tls: Option<Reloadable>,
        head_timeout: Duration,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let closed = tx.clone();
        tokio::spawn(accept_loop(
            listener,
            permits,
            per_address,
            tls.map(Tls::Http),
            async move { closed.closed().await },
            move |a: Accepted| {
                let tx = tx.clone();
                async move {
                    let mut io = Permitted::new(a.stream, a.permit, head_timeout);
                    io.spare = a.spare;
                    io.address = Some(a.address);
                    let _ = tx.send((io, a.peer)).await;
                }
            },
        ));
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Permitted<Stream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The remote address of a connection, and whether it holds a spare permit (see [`Permits`]),
/// for handlers (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Accepted on a spare permit: no MQTT session on it.
    pub spare: bool,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Incoming>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Incoming>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            spare: stream.io().spare,
        }
    }
}

/// A connection and the permit it holds, with a deadline for each HTTP request head.
///
/// A connection that does not send a whole request head (up to its blank line) within
/// `head_timeout` of being accepted — or of the previous response, while kept alive — is
/// closed: slow or silent clients (slowloris) cannot hold permits forever. After a WebSocket
/// upgrade (a `101` response) there is no deadline: MQTT keep-alive and the idle timeout rule.
pub struct Permitted<S> {
    io: S,
    _permit: OwnedSemaphorePermit,
    /// Holds a spare permit (see [`Permits`]).
    pub spare: bool,
    /// Its place in its source address's count.
    pub address: Option<AddressSlot>,
    head: Head,
    head_timeout: Duration,
}

enum Head {
    /// Waiting for a request head; `matched` bytes of `\r\n\r\n` seen.
    Awaiting {
        deadline: Pin<Box<tokio::time::Sleep>>,
        matched: u8,
    },
    /// A request is being handled.
    Handling,
    /// Upgraded to WebSocket: no deadline.
    Upgraded,
}

impl<S> Permitted<S> {
    /// Ties `io` to `permit`: the permit is released when the connection is dropped.
    pub fn new(io: S, permit: OwnedSemaphorePermit, head_timeout: Duration) -> Self {
        Self {
            io,
            _permit: permit,
            spare: false,
            address: None,
            head: Head::Awaiting {
                deadline: Box::pin(tokio::time::sleep(head_timeout)),
                matched: 0,
            },
            head_timeout,
        }
    }

    /// The server is writing: a `101` ends the deadlines, any other response re-arms the
    /// deadline for the next request head.
    fn on_write(&mut self, first: &[u8]) {
        if first.is_empty() || matches!(self.head, Head::Upgraded) {
            return;
        }
        if first.starts_with(b"HTTP/1.1 101") {
            self.head = Head::Upgraded;
            return;
        }
        let at = tokio::time::Instant::now() + self.head_timeout;
        match &mut self.head {
            Head::Awaiting { deadline, .. } => deadline.as_mut().reset(at),
            _ => {
                self.head = Head::Awaiting {
                    deadline: Box::pin(tokio::time::sleep_until(at)),
                    matched: 0,
                }
            }
        }
    }
}

/// Advances a match of `\r\n\r\n` over `bytes`; 4: the head is complete.
fn scan_head(mut matched: u8, bytes: &[u8]) -> u8 {
    for &b in bytes {
        matched = match (matched, b) {
            (0 | 2, b'\r') => matched + 1,
            (1 | 3, b'\n') => matched + 1,
            (_, b'\r') => 1,
            _ => 0,
        };
        if matched == 4 {
            break;
        }
    }
    matched
}

impl<S: AsyncRead + Unpin> AsyncRead for Permitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Head::Awaiting { deadline, .. } = &mut this.head
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete HTTP request within [limits] connect_timeout_secs",
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Head::Awaiting { matched, .. }) = (&read, &mut this.head) {
            *matched = scan_head(*matched, &buf.filled()[before..]);
            if *matched == 4 {
                this.head = Head::Handling;
            }
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Permitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.on_write(buf);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            self.on_write(first);
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_end_of_a_request_head_across_reads() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..head.len() {
            let m = super::scan_head(super::scan_head(0, &head[..cut]), &head[cut..]);
            assert_eq!(m, 4, "cut at {cut}");
        }
        assert_ne!(super::scan_head(0, b"GET / HTTP/1.1\r\nHost: x\r\n\r"), 4);
        assert_ne!(super::scan_head(0, b"a\n\n\r\r\n"), 4);
    }
}
