//! A tokio driver for `kite_mqtt::session::Session`: owns the socket (TCP, TLS via the
//! upstream connector, or WebSocket), the timers and reconnection with backoff. Used by the
//! tests, and later by bridges and load tools.
//!
//! [`spawn`] returns a [`Client`] to send commands and a bounded receiver of session events:
//! a slow reader of events slows the driver (backpressure), it never grows memory.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use kite_mqtt::MqttStr;
use kite_mqtt::codec::{Props, Publish, ReasonCode, Subscription};
use kite_mqtt::session::{
    Backoff, CloseReason, ConnectOptions, Event, Instant, Session, SessionError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::config::{BrokerUrl, Upstream};
use crate::upstream::{BrokerIo, Connector};

/// Where the client connects.
#[derive(Debug, Clone)]
pub enum Target {
    /// A broker over TCP or TLS (`mqtt://`, `mqtts://`).
    Broker(BrokerUrl),
    /// MQTT over WebSocket (`ws://host:port/path`), e.g. Kite's own gateway.
    WebSocket(String),
    /// A configured upstream: its addresses in order (failover) and its TLS settings.
    Upstream(Upstream),
}

enum Command {
    Publish(Publish, oneshot::Sender<Result<Option<u16>, SessionError>>),
    Subscribe(
        Vec<Subscription>,
        oneshot::Sender<Result<u16, SessionError>>,
    ),
    Unsubscribe(Vec<MqttStr>, oneshot::Sender<Result<u16, SessionError>>),
    Acknowledge(u16),
    Disconnect,
}

/// Why a command did not reach the session.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The session refused it.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The driver has stopped (after `disconnect`, or the events receiver was dropped).
    #[error("the client has stopped")]
    Stopped,
}

/// Commands to a running client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
}

impl Client {
    /// Publishes; QoS 1/2 return the packet id that [`Event::Published`] reports later.
    pub async fn publish(&self, publish: Publish) -> Result<Option<u16>, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Publish(publish, tx))
            .await
            .map_err(|_| ClientError::Stopped)?;
        Ok(rx.await.map_err(|_| ClientError::Stopped)??)
    }

    /// Subscribes; [`Event::Subscribed`] reports the answer.
    pub async fn subscribe(&self, filters: Vec<Subscription>) -> Result<u16, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Subscribe(filters, tx))
            .await
            .map_err(|_| ClientError::Stopped)?;
        Ok(rx.await.map_err(|_| ClientError::Stopped)??)
    }

    /// Unsubscribes; [`Event::Unsubscribed`] reports the answer.
    pub async fn unsubscribe(&self, filters: Vec<MqttStr>) -> Result<u16, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Unsubscribe(filters, tx))
            .await
            .map_err(|_| ClientError::Stopped)?;
        Ok(rx.await.map_err(|_| ClientError::Stopped)??)
    }

    /// With `manual_ack`: acknowledges the QoS 1 message `packet_id` (its PUBACK goes now, if
    /// it came on the connection still open; see `Session::acknowledge`).
    pub async fn acknowledge(&self, packet_id: u16) -> Result<(), ClientError> {
        self.tx
            .send(Command::Acknowledge(packet_id))
            .await
            .map_err(|_| ClientError::Stopped)
    }

    /// Sends DISCONNECT and stops the driver.
    pub async fn disconnect(&self) {
        let _ = self.tx.send(Command::Disconnect).await;
    }
}

/// Starts a client on the current tokio runtime. Events (including every
/// [`Event::Disconnected`] before a reconnect) arrive on the returned receiver.
pub fn spawn(
    opts: ConnectOptions,
    target: Target,
    backoff: Backoff,
) -> (Client, mpsc::Receiver<Event>) {
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (ev_tx, ev_rx) = mpsc::channel(1024);
    tokio::spawn(drive(Session::new(opts), target, backoff, cmd_rx, ev_tx));
    (Client { tx: cmd_tx }, ev_rx)
}

/// A connected byte transport.
enum Transport {
    Stream(Box<dyn BrokerIo>),
    Ws(
        Box<
            tokio_tungstenite::WebSocketStream<
                tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
            >,
        >,
    ),
}

impl Transport {
    async fn open(target: &Target, connector: &Connector) -> Result<Self, String> {
        match target {
            Target::Broker(url) => {
                let upstream = Upstream::new("client", vec![url.clone()]);
                connector
                    .connect(&upstream)
                    .await
                    .map(Transport::Stream)
                    .map_err(|e| e.to_string())
            }
            Target::Upstream(upstream) => connector
                .connect(upstream)
                .await
                .map(Transport::Stream)
                .map_err(|e| e.to_string()),
            Target::WebSocket(url) => {
                let mut request = url
                    .as_str()
                    .into_client_request()
                    .map_err(|e| e.to_string())?;
                request
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", http_value("mqtt"));
                let (ws, _) = tokio_tungstenite::connect_async(request)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Transport::Ws(Box::new(ws)))
            }
        }
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), String> {
        match self {
            Self::Stream(s) => s.write_all(&bytes).await.map_err(|e| e.to_string()),
            Self::Ws(ws) => ws
                .send(Message::Binary(bytes))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// The next bytes, or `None` when the transport closed.
    async fn recv(&mut self, buf: &mut BytesMut) -> Option<Bytes> {
        match self {
            Self::Stream(s) => {
                buf.reserve(16 * 1024);
                match s.read_buf(buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(_) => Some(buf.split().freeze()),
                }
            }
            Self::Ws(ws) => loop {
                match ws.next().await? {
                    Ok(Message::Binary(b)) => return Some(b),
                    Ok(Message::Close(_)) | Err(_) => return None,
                    Ok(_) => {}
                }
            },
        }
    }
}

fn http_value(s: &'static str) -> tokio_tungstenite::tungstenite::http::HeaderValue {
    tokio_tungstenite::tungstenite::http::HeaderValue::from_static(s)
}

/// A small xorshift for backoff jitter: no dependency, seeded from the clock.
fn jitter(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

async fn drive(
    mut session: Session,
    target: Target,
    backoff: Backoff,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let connector = match &target {
        Target::Broker(url) => Connector::new(&[Upstream::new("client", vec![url.clone()])]),
        Target::WebSocket(_) => Connector::new(&[]),
        Target::Upstream(u) => Connector::new(std::slice::from_ref(u)),
    };
    let connector = match connector {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("client cannot start: {e:#}");
            return;
        }
    };
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15 | 1;
    let mut attempt = 0u32;
    loop {
        let mut transport = match Transport::open(&target, &connector).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!("client connect failed: {e}");
                tokio::time::sleep(backoff.delay(attempt, jitter(&mut seed))).await;
                attempt = attempt.saturating_add(1);
                continue;
            }
        };
        let started = Instant::now();
        session.connect(started);
        let stop = run_connection(&mut session, &mut transport, &mut commands, &events).await;
        if stop {
            return;
        }
        attempt = backoff.next_attempt(attempt, started.elapsed());
        tokio::time::sleep(backoff.delay(attempt, jitter(&mut seed))).await;
    }
}

/// Runs one connection; returns whether the driver should stop.
async fn run_connection(
    session: &mut Session,
    transport: &mut Transport,
    commands: &mut mpsc::Receiver<Command>,
    events: &mpsc::Sender<Event>,
) -> bool {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        while let Some(bytes) = session.poll_transmit() {
            if transport.send(bytes).await.is_err() {
                session.connection_lost(Instant::now());
            }
        }
        let mut ended = None;
        while let Some(event) = session.poll_event() {
            if let Event::Disconnected(reason) = &event {
                ended = Some(reason.clone());
            }
            if events.send(event).await.is_err() {
                return true;
            }
        }
        if let Some(reason) = ended {
            return reason == CloseReason::Requested;
        }
        let deadline = session.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    tokio::time::sleep(wait).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            read = transport.recv(&mut buf) => match read {
                Some(bytes) => session.handle_bytes(&bytes, Instant::now()),
                None => session.connection_lost(Instant::now()),
            },
            cmd = commands.recv() => match cmd {
                Some(Command::Publish(p, reply)) => {
                    let _ = reply.send(session.publish(p, Instant::now()));
                }
                Some(Command::Subscribe(f, reply)) => {
                    let _ = reply.send(session.subscribe(f, Props::default(), Instant::now()));
                }
                Some(Command::Unsubscribe(f, reply)) => {
                    let _ = reply.send(session.unsubscribe(f, Instant::now()));
                }
                Some(Command::Acknowledge(id)) => session.acknowledge(id, Instant::now()),
                Some(Command::Disconnect) | None => {
                    let _ = session.disconnect(ReasonCode::NormalDisconnection, Instant::now());
                }
            },
            () = sleep => session.handle_timeout(Instant::now()),
        }
    }
}

/// How long a test may wait for one event before giving up (used by [`next_event`]).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The next event, or `None` after [`EVENT_TIMEOUT`].
pub async fn next_event(events: &mut mpsc::Receiver<Event>) -> Option<Event> {
    tokio::time::timeout(EVENT_TIMEOUT, events.recv())
        .await
        .ok()
        .flatten()
}
