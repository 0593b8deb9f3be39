//! Running the gateway on an already-bound listener until a shutdown signal.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::{AppState, router};

/// How long open sessions get to close after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the app, the API and `/mqtt` on `listener` until `shutdown` completes. Then it stops
/// accepting, tells every session to close (MQTT 5: DISCONNECT 0x8B), and waits for them up to
/// [`DRAIN_TIMEOUT`]. At most `max_connections` (from the config) TCP connections are open at
/// once: a permit is taken before each accept.
/// Starts the embedded broker's device listeners (TCP, and TLS with the gateway's certificate
/// when `tls_listener` is given) and its `$SYS` publisher on this runtime (when `state` has an
/// embedded broker). They stop when [`run`] shuts down.
pub fn start_broker(state: &AppState, listener: TcpListener, tls_listener: Option<TcpListener>) {
    if let Some(b) = state.broker() {
        b.start_timers();
        let (l, s) = (b.clone(), b.clone());
        let per_address = state.per_address().clone();
        let tcp_per_address = per_address.clone();
        tokio::spawn(async move { l.listen(listener, None, tcp_per_address).await });
        if let (Some(listener), Some(tls)) = (tls_listener, state.tls().cloned()) {
            let b = b.clone();
            tokio::spawn(async move { b.listen(listener, Some(tls), per_address).await });
        }
        tokio::spawn(async move { s.publish_sys().await });
    }
}

pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Permits::new(state.config().limits.max_connections);
    let per_address = state.per_address().clone();
    let head_timeout = state.config().limits.connect_timeout;
    let sessions = state.sessions().clone();
    let tls = state.tls().cloned();
    let broker = state.broker().cloned();
    let store_owner = broker.clone();
    let signal = {
        let sessions = sessions.clone();
        async move {
            shutdown.await;
            sessions.close_all();
            if let Some(b) = broker {
                b.shutdown();
            }
        }
    };
    let app = router(state).into_make_service_with_connect_info::<Peer>();
    match tls {
        None => {
            let listener = Limited {
                inner: listener,
                permits,
                per_address,
                head_timeout,
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await?;
        }
        Some(tls) => {
            reload_on_sighup(tls.clone());
            let listener =
                crate::tls::TlsListener::spawn(listener, permits, per_address, tls, head_timeout)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await?;
        }
    }
    let left = sessions.drained(DRAIN_TIMEOUT).await;
    if let Some(b) = store_owner {
        // Connections got their DISCONNECT; what they stored is committed, the file closed.
        b.close_store();
    }
    if left > 0 {
        tracing::warn!(
            "{left} sessions still open after {}s; stopping anyway",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

/// Spare connections: taken only when `max_connections` are all open, for short requests.
const SPARE_CONNECTIONS: usize = 16;

/// Connection permits: `[limits] max_connections`, and [`SPARE_CONNECTIONS`] more for when
/// those are all held. A spare connection serves plain HTTP requests (each head within the
/// connect timeout, as any) but no MQTT session, so `/healthz`, `/readyz` and `/metrics` answer
/// while sessions hold every permit (200 idle MQTT sessions kept `/healthz` silent for 15 s).
#[derive(Debug, Clone)]
pub struct Permits {
    main: Arc<Semaphore>,
    spare: Arc<Semaphore>,
}

impl Permits {
    /// `max` permits for anything, and the spare ones.
    pub fn new(max: usize) -> Self {
        Self {
            main: Arc::new(Semaphore::new(max)),
            spare: Arc::new(Semaphore::new(SPARE_CONNECTIONS)),
        }
    }

    /// A permit for the next connection (a spare one only when all others are held), and
    /// whether it is spare. Waits while there is none.
    pub async fn acquire(&self) -> (OwnedSemaphorePermit, bool) {
        loop {
            if let Ok(p) = self.main.clone().try_acquire_owned() {
                return (p, false);
            }
            // Neither semaphore is ever closed, so acquiring only waits.
            let got = tokio::select! {
                biased;
                p = self.main.clone().acquire_owned() => p.map(|p| (p, false)),
                p = self.spare.clone().acquire_owned() => p.map(|p| (p, true)),
            };
            if let Ok(got) = got {
                return got;
            }
        }
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

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Limited>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Limited>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            spare: stream.io().spare,
        }
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            spare: stream.io().spare,
        }
    }
}

/// Reloads the certificate and key when the process gets SIGHUP.
fn reload_on_sighup(tls: crate::tls::Reloadable) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP: the TLS certificate will not be reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!("TLS certificate not reloaded, keeping the current one: {e}")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = tls;
}

/// A listener that holds a connection permit for as long as each accepted connection lives.
pub struct Limited {
    inner: TcpListener,
    permits: Permits,
    per_address: crate::per_address::PerAddress,
    head_timeout: Duration,
}

impl axum::serve::Listener for Limited {
    type Io = Permitted<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (permit, spare) = self.permits.acquire().await;
            let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            // Over its address's bound: closed now (dropped), its permit given back.
            let Some(slot) = self.per_address.enter(addr.ip()) else {
                continue;
            };
            let _ = io.set_nodelay(true);
            let mut io = Permitted::new(io, permit, self.head_timeout);
            io.spare = spare;
            io.address = Some(slot);
            return (io, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
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
    pub address: Option<crate::per_address::AddressSlot>,
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

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
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
