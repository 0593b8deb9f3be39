//! Carrying one browser session between its WebSocket and its broker connection.
//!
//! Browser → broker is packet-aware: bytes are decoded with `kite-mqtt` as they arrive (a
//! packet may span frames, a frame may hold several), checked (CONNECT first and once,
//! well-formed, within the maximum packet size), and each packet's *original* bytes are
//! forwarded (zero-copy). The upstream is contacted only after a valid CONNECT arrived. With
//! a role's topic rules in front of an upstream, each packet is also checked by
//! [`crate::rules`], which may answer it instead of forwarding it.
//!
//! Broker → browser is cut at packet boundaries without copying ([`Downstream`]): only fixed
//! headers are read, so the gateway's own packets (its answers, a DISCONNECT when it closes
//! the session) never land in the middle of one of the broker's.
//!
//! Backpressure is end to end: frames are read only after the previous packets were written to
//! the broker, and the broker is read (64 KiB at most) only after the previous frame reached
//! the browser. The frames already waiting (up to 64 KiB) are taken together and their small
//! packets written to the broker in one write: on loopback, a write costs the gateway more
//! than parsing the packet (with 4 QoS 1 publishers: half the `sendto` calls, 12 % less CPU
//! per message). Memory per session: the inbound buffer (at most one packet, bounded by the
//! maximum packet size), one 64 KiB read buffer, the coalesced writes (under 80 KiB, released
//! after a burst) and one frame in flight each way.

use axum::extract::ws::{CloseFrame, Message, close_code};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use kite_mqtt::codec::{Disconnect, PacketType, ReasonCode};
use kite_mqtt::{Limits, Packet, Version, decode_raw};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::metrics::{Direction, EndKind, Metrics};
use crate::rules::{DownCmd, Downstream, Step, TopicRules};
pub use crate::violation::Violation;

/// Bytes read from the broker at most per WebSocket frame sent to the browser.
pub const READ_CHUNK: usize = 64 * 1024;

/// The smallest read from the broker (what an idle session holds).
const MIN_READ_CHUNK: usize = 4 * 1024;

/// Per-session limits beyond packet size (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionLimits {
    /// Topic filters one session may hold subscribed at once; 0: no limit.
    pub max_subscriptions: usize,
    /// PUBLISH packets per second a session may send (bursts of one second's worth); 0: no
    /// limit. Beyond, the gateway stops reading from the browser until the rate is back.
    pub publish_rate: u32,
    /// PUBLISH bytes per second, the same way; 0: no limit.
    pub publish_bytes_rate: u64,
    /// A session that sends nothing for this long is closed; `None`: never.
    pub idle_timeout: Option<std::time::Duration>,
}

/// A token bucket: `rate` per second, at most one second's worth saved up.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl Bucket {
    fn new(rate: f64) -> Option<Self> {
        (rate > 0.0).then(|| Self {
            rate,
            tokens: rate,
            last: std::time::Instant::now(),
        })
    }

    fn take(&mut self, n: f64) {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate) - n;
        self.last = now;
    }

    /// How long until the bucket is no longer in debt.
    fn wait(&self) -> Option<std::time::Duration> {
        (self.tokens < 0.0).then(|| std::time::Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

/// Wake-ups of one direction of a session. Each costs the gateway a readiness wait, a read, a
/// write and often a context switch — far more than the bytes — so a session that wakes more
/// than [`HOT_WAKEUPS`] times in [`PACE_WINDOW`] is *hot*: its next read waits for the next
/// timer tick (at most 1 ms), and what arrived meanwhile goes in one read and one write. It
/// stays hot while its paced reads keep finding data ([`WARM_WAKEUPS`] in a window).
#[derive(Debug)]
struct Pacer {
    since: tokio::time::Instant,
    wakeups: u32,
    hot: bool,
}

/// The window over which wake-ups are counted.
const PACE_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);
/// Wake-ups in a window that make a session hot (5,000 a second).
const HOT_WAKEUPS: u32 = 500;
/// Wake-ups in a window that keep it hot (400 a second; paced, it wakes at most 1,000).
const WARM_WAKEUPS: u32 = 40;

impl Pacer {
    fn new() -> Self {
        Self {
            since: tokio::time::Instant::now(),
            wakeups: 0,
            hot: false,
        }
    }

    /// Before a read: when hot, waits for the next timer tick (counted in `metrics`).
    async fn pace(&self, metrics: &Metrics, direction: Direction) {
        if self.hot {
            metrics.paced(direction);
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// A read found data.
    fn woke(&mut self) {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.since) >= PACE_WINDOW {
            let threshold = if self.hot { WARM_WAKEUPS } else { HOT_WAKEUPS };
            self.hot = self.wakeups >= threshold;
            self.wakeups = 0;
            self.since = now;
        }
        self.wakeups += 1;
    }
}

/// The browser → broker direction: a streaming parser enforcing the session rules.
#[derive(Debug)]
pub struct Inbound {
    buf: BytesMut,
    limits: Limits,
    /// Set by the CONNECT.
    version: Option<Version>,
    connect: Option<Box<kite_mqtt::codec::Connect>>,
    metrics: Arc<Metrics>,
    session: SessionLimits,
    subscriptions: std::collections::HashSet<kite_mqtt::MqttStr>,
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
    rules: Option<TopicRules>,
    /// Packets after the CONNECT go out as [`Step::Typed`] (to the embedded broker's
    /// in-process link), not as bytes.
    typed: bool,
}

impl Inbound {
    /// A parser for a new session, counting what it forwards in `metrics`.
    pub fn new(max_packet_size: u32, metrics: Arc<Metrics>) -> Self {
        Self {
            buf: BytesMut::new(),
            limits: Limits {
                max_packet_size,
                ..Limits::default()
            },
            version: None,
            connect: None,
            metrics,
            session: SessionLimits::default(),
            subscriptions: std::collections::HashSet::new(),
            messages: None,
            bytes: None,
            rules: None,
            typed: false,
        }
    }

    /// Hands out packets, not bytes, after the CONNECT (see [`Step::Typed`]).
    pub fn set_typed(&mut self) {
        self.typed = true;
    }

    /// Checks every packet after the CONNECT against these topic rules.
    pub fn set_rules(&mut self, rules: TopicRules) {
        self.rules = Some(rules);
    }

    /// At most `max` User Properties per packet from the browser.
    pub fn with_max_user_properties(mut self, max: usize) -> Self {
        self.limits.max_user_properties = max;
        self
    }

    /// The largest packet the session accepts.
    pub fn max_packet_size(&self) -> u32 {
        self.limits.max_packet_size
    }

    /// With these per-session limits.
    pub fn with_session_limits(mut self, limits: SessionLimits) -> Self {
        self.messages = Bucket::new(f64::from(limits.publish_rate));
        self.bytes = Bucket::new(limits.publish_bytes_rate as f64);
        self.session = limits;
        self
    }

    /// How long to stop reading from the browser before its publish rate is back within the
    /// limits; `None`: not over.
    pub fn throttle(&self) -> Option<std::time::Duration> {
        let m = self.messages.as_ref().and_then(Bucket::wait);
        let b = self.bytes.as_ref().and_then(Bucket::wait);
        m.max(b)
    }

    /// The idle timeout, if any.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        self.session.idle_timeout
    }

    /// Checks a packet against the per-session limits (subscriptions, publish rate).
    fn account(&mut self, packet: &Packet, len: usize) -> Result<(), Violation> {
        match packet {
            Packet::Publish(p) => {
                if !p.properties.subscription_identifiers.is_empty() {
                    // The embedded broker refuses it too; an upstream might pass it on.
                    return Err(Violation::protocol(
                        "a client PUBLISH may not carry a Subscription Identifier [MQTT-3.3.4-6]",
                    ));
                }
                if let Some(b) = &mut self.messages {
                    b.take(1.0);
                }
                if let Some(b) = &mut self.bytes {
                    b.take(len as f64);
                }
            }
            Packet::Subscribe(s) => {
                for f in &s.filters {
                    self.subscriptions.insert(f.filter.clone());
                }
                let max = self.session.max_subscriptions;
                if max > 0 && self.subscriptions.len() > max {
                    return Err(Violation {
                        ws_code: close_code::POLICY,
                        reason: ReasonCode::QuotaExceeded,
                        detail: format!(
                            "more than {max} subscriptions on one session ([limits] max_subscriptions)"
                        ),
                    });
                }
            }
            Packet::Unsubscribe(u) => {
                for f in &u.filters {
                    self.subscriptions.remove(f);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The browser's CONNECT, once read; handed over once (it holds the password).
    pub fn take_connect(&mut self) -> Option<Box<kite_mqtt::codec::Connect>> {
        self.connect.take()
    }

    /// The session's protocol version, once CONNECT was read.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// Takes bytes from the browser; `out` gets what to do with each whole packet (usually:
    /// forward its original bytes). Stops after the CONNECT, so the session's rules (known
    /// once the user is) apply to every packet after it: call again with no bytes to go on.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Step>) -> Result<(), Violation> {
        self.buf.extend_from_slice(bytes);
        loop {
            // Before CONNECT the version is unknown, so only the first byte is judged.
            if self.version.is_none()
                && let Some(&first) = self.buf.first()
                && first >> 4 != PacketType::Connect as u8
            {
                let kind = PacketType::from_first_byte(first)
                    .map_or_else(|| format!("type {}", first >> 4), |t| t.to_string());
                return Err(Violation::protocol(format!(
                    "the first packet must be CONNECT, not {kind} [MQTT-3.1.0-1]"
                )));
            }
            // CONNECT carries its own version.
            let version = self.version.unwrap_or(Version::V5);
            match decode_raw(&mut self.buf, version, &self.limits) {
                Ok(Some((packet, raw))) => {
                    self.account(&packet, raw.len())?;
                    self.metrics.packet_in(packet.packet_type(), raw.len());
                    match (&packet, self.version, &mut self.rules) {
                        (Packet::Connect(c), None, _) => {
                            self.version = Some(c.version);
                            self.connect = Some(c.clone());
                            out.push(Step::Up(raw));
                            return Ok(());
                        }
                        (Packet::Connect(_), Some(_), _) => {
                            return Err(Violation::protocol("a second CONNECT [MQTT-3.1.0-2]"));
                        }
                        (_, _, Some(rules)) => rules.check(&packet, raw, out)?,
                        (_, _, None) if self.typed => out.push(Step::Typed(packet)),
                        (_, _, None) => out.push(Step::Up(raw)),
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(Violation::from_decode(&e)),
            }
        }
    }
}

impl End {
    /// What happened, for the log.
    pub fn detail(&self) -> String {
        match self {
            Self::Violation(v) => v.detail.clone(),
            Self::Error(e) => e.clone(),
            other => format!("{other:?}"),
        }
    }

    /// The counted kind.
    pub fn kind(&self) -> EndKind {
        match self {
            Self::Browser => EndKind::Browser,
            Self::Broker => EndKind::Broker,
            Self::Violation(_) => EndKind::Violation,
            Self::Error(_) => EndKind::Error,
            Self::Shutdown => EndKind::Shutdown,
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The browser closed the WebSocket (or it dropped).
    Browser,
    /// The broker closed the TCP connection.
    Broker,
    /// The browser broke a rule; the session was closed with this.
    Violation(Violation),
    /// Reading or writing failed.
    Error(String),
    /// The gateway is shutting down.
    Shutdown,
}

/// Reads the browser's first bytes until a CONNECT is whole. Returns its original bytes
/// (what follows it stays in `inbound` for [`pump`]). `None` if the browser went away.
pub async fn read_connect<Rx, E>(
    ws_rx: &mut Rx,
    inbound: &mut Inbound,
) -> Result<Option<Bytes>, Violation>
where
    Rx: Stream<Item = Result<Message, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let mut out = Vec::new();
    while let Some(msg) = ws_rx.next().await {
        match msg {
            Ok(Message::Binary(bytes)) => {
                inbound.feed(&bytes, &mut out)?;
                if let Some(Step::Up(connect)) = out.pop() {
                    return Ok(Some(connect));
                }
            }
            Ok(Message::Text(_)) => return Err(Violation::text_frame()),
            Ok(Message::Close(_)) => return Ok(None),
            Err(e) => return Violation::from_ws_error(&e).map_or(Ok(None), Err),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
        }
    }
    Ok(None)
}

/// Forwards both ways until one side ends, then closes the other side with a reason.
pub async fn pump<Tx, Rx, E, B>(
    mut ws_tx: Tx,
    mut ws_rx: Rx,
    broker: B,
    mut inbound: Inbound,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> End
where
    Tx: Sink<Message> + Unpin,
    Tx::Error: std::fmt::Display,
    Rx: Stream<Item = Result<Message, E>> + Unpin,
    E: std::error::Error + 'static,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut broker_rd, mut broker_wr) = tokio::io::split(broker);
    let metrics = inbound.metrics.clone();
    let version = inbound.version().unwrap_or(Version::V5);
    let mut downstream = Downstream::new(version, inbound.max_packet_size() as usize);
    // The browser side's answers and SUBACK splices for the broker → browser side. Bounded:
    // a browser whose answers pile up is read no further until they are sent.
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::channel::<DownCmd>(ANSWERS_QUEUED);
    let end = {
        let up = async {
            let mut steps = Vec::new();
            let mut coalesced = BytesMut::new();
            // What came after the CONNECT in its frame.
            let after_connect = inbound.feed(&[], &mut steps);
            if let Err(end) = carry_out(&mut steps, &mut broker_wr, &cmd_tx, &mut coalesced).await {
                return end;
            }
            if let Err(v) = after_connect {
                return End::Violation(v);
            }
            let mut pacer = Pacer::new();
            loop {
                pacer.pace(&inbound.metrics, Direction::Up).await;
                let Some((received, taken)) =
                    next_frames(&mut ws_rx, &mut inbound, &mut steps).await
                else {
                    break;
                };
                pacer.woke();
                // What came before a violation or a close is still carried.
                let forwarded = !steps.is_empty();
                if let Err(end) =
                    carry_out(&mut steps, &mut broker_wr, &cmd_tx, &mut coalesced).await
                {
                    return end;
                }
                if forwarded {
                    inbound.metrics.forwarded(Direction::Up, received.elapsed());
                }
                if let Err(end) = taken {
                    return end;
                }
                slow_down(&inbound).await;
            }
            End::Browser
        };
        let down = async {
            // The read size adapts: small while the broker sends little (an idle session holds
            // 4 KiB, not 64), doubling up to READ_CHUNK while reads fill it.
            let mut chunk = MIN_READ_CHUNK;
            let mut buf = BytesMut::new();
            let mut segments = Vec::new();
            let mut pacer = Pacer::new();
            loop {
                pacer.pace(&metrics, Direction::Down).await;
                buf.reserve(chunk);
                tokio::select! {
                    biased;
                    Some(cmd) = cmd_rx.recv(), if downstream.queued() < ANSWERS_QUEUED => {
                        downstream.command(cmd);
                        downstream.take_answers(&mut segments);
                    }
                    read = broker_rd.read_buf(&mut buf) => match read {
                        Ok(0) => return End::Broker,
                        Ok(n) => {
                            pacer.woke();
                            chunk = if n >= chunk {
                                (chunk * 2).min(READ_CHUNK)
                            } else {
                                MIN_READ_CHUNK.max(chunk / 2)
                            };
                            metrics.bytes_out(n);
                            // A SUBACK's splice is sent before its SUBSCRIBE is written to the
                            // broker, so it is here by the time the SUBACK is.
                            while let Ok(cmd) = cmd_rx.try_recv() {
                                downstream.command(cmd);
                            }
                            let bytes = buf.split().freeze();
                            if let Err(e) = downstream.process(&bytes, &mut segments) {
                                return End::Error(e.to_string());
                            }
                        }
                        Err(e) => return End::Error(format!("reading from the broker: {e}")),
                    },
                }
                if segments.is_empty() {
                    continue;
                }
                let received = std::time::Instant::now();
                let frame = if segments.len() == 1 {
                    segments.pop().unwrap_or_default()
                } else {
                    let mut joined = BytesMut::with_capacity(segments.iter().map(Bytes::len).sum());
                    for s in segments.drain(..) {
                        joined.extend_from_slice(&s);
                    }
                    joined.freeze()
                };
                if let Err(e) = ws_tx.send(Message::Binary(frame)).await {
                    return End::Error(format!("writing to the browser: {e}"));
                }
                metrics.forwarded(Direction::Down, received.elapsed());
            }
        };
        tokio::select! {
            end = up => end,
            end = down => end,
            () = shutting_down(&mut shutdown) => End::Shutdown,
        }
    };
    // The gateway's DISCONNECT only between two of the broker's packets.
    let version = downstream.at_boundary().then_some(version);
    close_browser(&mut ws_tx, version, &end).await;
    linger(&mut ws_rx).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, broker_wr.shutdown()).await;
    end
}

/// [`pump`] for the embedded broker's in-process link ([`kite_broker::LocalClient`]): the
/// browser's frames are decoded and checked as for an upstream, and their packets handed over
/// as they are; the broker's packets are encoded once, for the browser, and the ones that are
/// ready go in one WebSocket frame ([MQTT-6.0.0-2] allows several MQTT packets in one frame),
/// up to [`READ_CHUNK`] bytes each. Nothing is encoded for the broker nor decoded from it.
pub async fn pump_local<Tx, Rx, E>(
    mut ws_tx: Tx,
    mut ws_rx: Rx,
    client: kite_broker::LocalClient,
    mut inbound: Inbound,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> End
where
    Tx: Sink<Message> + Unpin,
    Tx::Error: std::fmt::Display,
    Rx: Stream<Item = Result<Message, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let (sender, mut receiver) = client.split();
    let metrics = inbound.metrics.clone();
    let version = inbound.version().unwrap_or(Version::V5);
    inbound.set_typed();
    let end = {
        let up = async {
            let mut steps = Vec::new();
            // What came after the CONNECT in its frame.
            let after_connect = inbound.feed(&[], &mut steps);
            if let Err(end) = hand_over(&mut steps, &sender).await {
                return end;
            }
            if let Err(v) = after_connect {
                return End::Violation(v);
            }
            loop {
                let Some((received, taken)) =
                    next_frames(&mut ws_rx, &mut inbound, &mut steps).await
                else {
                    break;
                };
                // What came before a violation or a close is still carried.
                let forwarded = !steps.is_empty();
                if let Err(end) = hand_over(&mut steps, &sender).await {
                    return end;
                }
                if forwarded {
                    inbound.metrics.forwarded(Direction::Up, received.elapsed());
                }
                if let Err(end) = taken {
                    return end;
                }
                slow_down(&inbound).await;
            }
            End::Browser
        };
        let down = async {
            let mut packets = Vec::new();
            let mut frame = BytesMut::new();
            loop {
                if !receiver.recv_many(&mut packets).await {
                    return End::Broker;
                }
                let received = std::time::Instant::now();
                for p in packets.drain(..) {
                    if let Err(e) = p.encode(version, &mut frame) {
                        // The broker checked it could be encoded; a failure is a bug.
                        tracing::error!("cannot encode the broker's {:?}: {e}", p.packet_type());
                        continue;
                    }
                    if frame.len() >= READ_CHUNK
                        && let Err(end) = send_frame(&mut ws_tx, &mut frame, &metrics).await
                    {
                        return end;
                    }
                }
                if !frame.is_empty()
                    && let Err(end) = send_frame(&mut ws_tx, &mut frame, &metrics).await
                {
                    return end;
                }
                metrics.forwarded(Direction::Down, received.elapsed());
                // An idle session does not keep a burst's buffers.
                if frame.capacity() > READ_CHUNK {
                    frame = BytesMut::new();
                }
                if packets.capacity() > 1024 {
                    packets = Vec::new();
                }
            }
        };
        tokio::pin!(down);
        tokio::select! {
            // The link closed under the browser's packets: the broker ended the connection,
            // and what it sent before (a DISCONNECT with the reason) still goes out.
            end = up => match end {
                End::Broker => tokio::time::timeout(CLOSE_TIMEOUT, &mut down)
                    .await
                    .unwrap_or(End::Broker),
                other => other,
            },
            end = &mut down => end,
            () = shutting_down(&mut shutdown) => End::Shutdown,
        }
    };
    // Packets are whole on this link: the gateway's DISCONNECT can always go in.
    close_browser(&mut ws_tx, Some(version), &end).await;
    linger(&mut ws_rx).await;
    end
}

/// One WebSocket frame of the broker's packets, `frame` emptied.
async fn send_frame<Tx>(ws_tx: &mut Tx, frame: &mut BytesMut, metrics: &Metrics) -> Result<(), End>
where
    Tx: Sink<Message> + Unpin,
    Tx::Error: std::fmt::Display,
{
    metrics.bytes_out(frame.len());
    ws_tx
        .send(Message::Binary(frame.split().freeze()))
        .await
        .map_err(|e| End::Error(format!("writing to the browser: {e}")))
}

/// Hands the checked packets to the in-process link, in order.
async fn hand_over(steps: &mut Vec<Step>, sender: &kite_broker::LocalSender) -> Result<(), End> {
    let mut packets = Vec::with_capacity(steps.len());
    for step in steps.drain(..) {
        match step {
            Step::Typed(p) => packets.push(p),
            // The embedded broker enforces the topic rules itself: the gateway has none to
            // answer with, and `set_typed` leaves no bytes to forward.
            other => {
                return Err(End::Error(format!(
                    "{other:?} has no place on the in-process link"
                )));
            }
        }
    }
    sender.send_all(packets).await.map_err(|_| End::Broker)
}

/// The session was silent for `idle` (`[limits] idle_timeout_secs`).
fn idle_violation(idle: std::time::Duration) -> Violation {
    Violation {
        ws_code: close_code::POLICY,
        reason: ReasonCode::KeepAliveTimeout,
        detail: format!(
            "nothing from the browser for {} s ([limits] idle_timeout_secs)",
            idle.as_secs()
        ),
    }
}

/// Closes the browser's side as `end` says (`version`: the session's, when a DISCONNECT may
/// go in now).
async fn close_browser<Tx>(ws_tx: &mut Tx, version: Option<Version>, end: &End)
where
    Tx: Sink<Message> + Unpin,
{
    match end {
        End::Browser => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws_tx.close()).await;
        }
        End::Broker => {
            close(
                ws_tx,
                close_code::NORMAL,
                "the broker closed the connection",
            )
            .await
        }
        End::Violation(v) => refuse_with(ws_tx, version, v).await,
        End::Error(_) => close(ws_tx, close_code::ERROR, "connection to the broker failed").await,
        End::Shutdown => {
            let v = Violation {
                ws_code: close_code::AWAY,
                reason: ReasonCode::ServerShuttingDown,
                detail: "the gateway is shutting down".into(),
            };
            refuse_with(ws_tx, version, &v).await;
        }
    }
}

/// Answers the gateway may hold for one session while the broker's stream is mid-packet.
const ANSWERS_QUEUED: usize = 64;

/// Waits for the browser's next message (within the idle timeout) and takes it and the ones
/// already here behind it, up to [`READ_CHUNK`] bytes, into `steps` — so that a busy browser's
/// packets reach the broker together, not one write each (on loopback each write costs the
/// gateway far more than the parsing). `None`: the browser's stream ended. Else when it
/// arrived, and how taking ended: an error comes after what was taken before it, which the
/// caller still carries.
async fn next_frames<Rx, E>(
    ws_rx: &mut Rx,
    inbound: &mut Inbound,
    steps: &mut Vec<Step>,
) -> Option<(std::time::Instant, Result<(), End>)>
where
    Rx: Stream<Item = Result<Message, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let next = match inbound.idle_timeout() {
        None => ws_rx.next().await,
        Some(idle) => match tokio::time::timeout(idle, ws_rx.next()).await {
            Ok(next) => next,
            Err(_) => {
                let end = End::Violation(idle_violation(idle));
                return Some((std::time::Instant::now(), Err(end)));
            }
        },
    };
    let msg = next?;
    let received = std::time::Instant::now();
    let mut taken = take(inbound, msg, steps);
    let mut fed = 0;
    while let Ok(n) = taken {
        fed += n;
        if fed >= READ_CHUNK || inbound.throttle().is_some() {
            break;
        }
        match ws_rx.next().now_or_never() {
            Some(Some(msg)) => taken = take(inbound, msg, steps),
            Some(None) => taken = Err(End::Browser),
            None => break,
        }
    }
    Some((received, taken.map(|_| ())))
}

/// Over the publish rate: stops reading the browser until it is back (its sends back up;
/// nothing is dropped).
async fn slow_down(inbound: &Inbound) {
    if let Some(wait) = inbound.throttle() {
        inbound.metrics.throttled();
        tokio::time::sleep(wait).await;
    }
}

/// One message from the browser into `steps`; the bytes it held, or how the session ends.
fn take<E: std::error::Error + 'static>(
    inbound: &mut Inbound,
    msg: Result<Message, E>,
    steps: &mut Vec<Step>,
) -> Result<usize, End> {
    match msg {
        Ok(Message::Binary(bytes)) => {
            inbound.feed(&bytes, steps).map_err(End::Violation)?;
            Ok(bytes.len())
        }
        Ok(Message::Text(_)) => Err(End::Violation(Violation::text_frame())),
        Ok(Message::Close(_)) => Err(End::Browser),
        Ok(Message::Ping(_) | Message::Pong(_)) => Ok(0),
        Err(e) => Err(match Violation::from_ws_error(&e) {
            Some(v) => End::Violation(v),
            // The browser's connection broke: it is gone, there is no one to tell.
            None => End::Browser,
        }),
    }
}

/// Packets at least this large are written on their own rather than copied into one write.
const COALESCE_BELOW: usize = 16 * 1024;

/// Does what the checks said: bytes to the broker (small packets gathered into one write in
/// `coalesced`), answers and splices to the browser side, in order.
async fn carry_out<W: AsyncWrite + Unpin>(
    steps: &mut Vec<Step>,
    broker_wr: &mut W,
    cmd_tx: &tokio::sync::mpsc::Sender<DownCmd>,
    coalesced: &mut BytesMut,
) -> Result<(), End> {
    async fn write<W: AsyncWrite + Unpin>(broker_wr: &mut W, bytes: &[u8]) -> Result<(), End> {
        broker_wr
            .write_all(bytes)
            .await
            .map_err(|e| End::Error(format!("writing to the broker: {e}")))
    }
    async fn flush<W: AsyncWrite + Unpin>(
        broker_wr: &mut W,
        coalesced: &mut BytesMut,
    ) -> Result<(), End> {
        if !coalesced.is_empty() {
            write(broker_wr, coalesced).await?;
            coalesced.clear();
        }
        Ok(())
    }
    let single = steps.len() == 1;
    for step in steps.drain(..) {
        // A closed channel means the broker side ended; the session is ending anyway.
        match step {
            Step::Up(raw) if single || raw.len() >= COALESCE_BELOW => {
                flush(broker_wr, coalesced).await?;
                write(broker_wr, &raw).await?;
            }
            Step::Up(raw) => coalesced.extend_from_slice(&raw),
            // Only the embedded broker's in-process link takes packets (`pump_local`).
            Step::Typed(p) => {
                return Err(End::Error(format!(
                    "a {} for the in-process link reached a byte link",
                    p.packet_type()
                )));
            }
            // A SUBACK's splice reaches the broker → browser side before its SUBSCRIBE is
            // written; answers keep their place among the forwarded packets.
            Step::Answer(bytes) => {
                flush(broker_wr, coalesced).await?;
                let _ = cmd_tx.send(DownCmd::Answer(bytes)).await;
            }
            Step::Splice(s) => {
                flush(broker_wr, coalesced).await?;
                let _ = cmd_tx.send(DownCmd::Splice(s)).await;
            }
        }
    }
    flush(broker_wr, coalesced).await?;
    // An idle session does not keep a burst's buffer.
    if coalesced.capacity() > READ_CHUNK {
        *coalesced = BytesMut::new();
    }
    Ok(())
}

/// Completes when the gateway starts shutting down (the guard `wait_for` returns is not
/// `Send`, so it is dropped here).
pub async fn shutting_down(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// How long closing may take: a browser that neither reads nor answers must not hold its
/// session (and its connection permit) open.
pub const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Closes a WebSocket with a code and a reason (cut to the 123 bytes a close frame allows).
/// The Close frame is sent and flushed; the caller then drops the socket, which ends the TCP
/// connection. It does not wait for the browser's Close reply.
pub async fn close<Tx>(ws_tx: &mut Tx, code: u16, reason: &str)
where
    Tx: Sink<Message> + Unpin,
{
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws_tx.send(Message::Close(Some(frame)))).await;
}

/// After the gateway's Close frame: reads (and drops) what the browser still sends until its
/// Close comes back (the WebSocket closing handshake), within [`CLOSE_TIMEOUT`]. Dropping a
/// socket with unread input resets the connection, and the reset throws away what the browser
/// had not read yet — the DISCONNECT or CONNACK that says why.
pub async fn linger<Rx, E>(ws_rx: &mut Rx)
where
    Rx: Stream<Item = Result<Message, E>> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = ws_rx.next().await {}
    })
    .await;
}

/// Ends a session the browser broke: an MQTT 5 DISCONNECT with the reason code (when the
/// session speaks 5.0), then the WebSocket close.
pub async fn refuse_with<Tx>(ws_tx: &mut Tx, version: Option<Version>, v: &Violation)
where
    Tx: Sink<Message> + Unpin,
{
    tracing::info!(code = v.ws_code, "closing a browser session: {}", v.detail);
    if version == Some(Version::V5) {
        let mut bytes = BytesMut::new();
        if Packet::Disconnect(Disconnect::new(v.reason))
            .encode(Version::V5, &mut bytes)
            .is_ok()
        {
            let _ =
                tokio::time::timeout(CLOSE_TIMEOUT, ws_tx.send(Message::Binary(bytes.freeze())))
                    .await;
        }
    }
    close(ws_tx, v.ws_code, &v.detail).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session becomes hot past 5,000 wake-ups a second, stays hot while its paced reads
    /// keep finding data, and is paced to the timer's tick only while hot.
    #[tokio::test(start_paused = true)]
    async fn a_busy_session_is_paced_and_a_quiet_one_is_not() {
        let mut pacer = Pacer::new();
        let wake = |pacer: &mut Pacer, n: u32| {
            for _ in 0..n {
                pacer.woke();
            }
        };
        // One short of the threshold: not hot after the window.
        wake(&mut pacer, HOT_WAKEUPS - 1);
        tokio::time::advance(PACE_WINDOW).await;
        pacer.woke();
        assert!(!pacer.hot);
        let metrics = Metrics::default();
        let before = tokio::time::Instant::now();
        pacer.pace(&metrics, Direction::Down).await;
        assert_eq!(
            before.elapsed(),
            std::time::Duration::ZERO,
            "a cold session waits for nothing"
        );
        // At the threshold: hot once the window ends.
        wake(&mut pacer, HOT_WAKEUPS - 1);
        tokio::time::advance(PACE_WINDOW).await;
        pacer.woke();
        assert!(pacer.hot);
        let before = tokio::time::Instant::now();
        pacer.pace(&metrics, Direction::Down).await;
        assert!(before.elapsed() >= std::time::Duration::from_millis(1));
        assert!(
            metrics
                .render()
                .contains("kite_paced_reads_total{direction=\"down\"} 1")
        );
        // Stays hot while it keeps waking...
        wake(&mut pacer, WARM_WAKEUPS - 1);
        tokio::time::advance(PACE_WINDOW).await;
        pacer.woke();
        assert!(pacer.hot);
        // ... and cools when it does not.
        wake(&mut pacer, WARM_WAKEUPS - 2);
        tokio::time::advance(PACE_WINDOW).await;
        pacer.woke();
        assert!(!pacer.hot);
    }

    fn connect(version: u8) -> Vec<u8> {
        let mut v = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', version, 0x02, 0, 30];
        if version == 5 {
            v.push(0);
        }
        v.extend_from_slice(&[0, 1, b'c']);
        v[1] = (v.len() - 2) as u8;
        v
    }

    #[test]
    fn forwards_original_bytes_across_frames() {
        let mut inbound = Inbound::new(1024, Arc::default());
        let c = connect(4);
        let mut out = Vec::new();
        inbound.feed(&c[..3], &mut out).unwrap();
        assert!(out.is_empty());
        let mut rest = c[3..].to_vec();
        rest.extend_from_slice(&[0xc0, 0x00]);
        // The CONNECT alone: what follows waits for the session's rules.
        inbound.feed(&rest, &mut out).unwrap();
        assert_eq!(out, [Step::Up(Bytes::from(c))]);
        inbound.feed(&[], &mut out).unwrap();
        assert_eq!(out[1], Step::Up(Bytes::from_static(&[0xc0, 0x00])));
        assert_eq!(inbound.version(), Some(Version::V3_1_1));
    }

    /// Feeds `bytes` and then what stayed after the CONNECT; the violation.
    fn refused(max: u32, bytes: &[u8]) -> Violation {
        let mut inbound = Inbound::new(max, Arc::default());
        let mut out = Vec::new();
        inbound
            .feed(bytes, &mut out)
            .and_then(|()| inbound.feed(&[], &mut out))
            .unwrap_err()
    }

    #[test]
    fn session_rules() {
        let v = refused(1024, &[0xc0, 0x00]);
        assert!(v.detail.contains("MQTT-3.1.0-1"), "{v:?}");
        let mut twice = connect(5);
        twice.extend(connect(5));
        let v = refused(1024, &twice);
        assert!(v.detail.contains("MQTT-3.1.0-2"), "{v:?}");
        let mut malformed = connect(4);
        malformed.extend_from_slice(&[0x36, 0x00]);
        let v = refused(1024, &malformed);
        assert_eq!(
            (v.ws_code, v.reason),
            (close_code::PROTOCOL, ReasonCode::MalformedPacket)
        );
        // Refused from the fixed header alone: a CONNECT announcing 1,000,000 bytes, 100 allowed.
        let v = refused(100, &[0x10, 0xc0, 0x84, 0x3d]);
        assert_eq!(
            (v.ws_code, v.reason),
            (close_code::SIZE, ReasonCode::PacketTooLarge)
        );
    }
}
