//! The bridge: this broker linked to another one, as mosquitto's bridge does (`connection` …
//! `topic pattern in|out|both qos local-prefix remote-prefix`).
//!
//! Each bridge is one task holding two clients: an in-process client of this broker
//! ([`Broker::connect_local`]) with a persistent session, and a [`kite_mqtt::Session`] towards
//! the remote broker over a connection its [`Remote`] opens (TCP or TLS: the caller's — this
//! crate opens no sockets and reads no certificates). Its addresses are tried in order; on a
//! later one, the bridge goes back to the first as soon as it answers (checked every longest
//! restart delay).
//!
//! - **Out** (`out`, `both`): the local session subscribes to each topic's local filter
//!   (`local_prefix` + `pattern`). A message delivered to it goes to the remote with its topic
//!   mapped (`remote_prefix` + what follows `local_prefix`), and is acknowledged to this broker
//!   only once the remote acknowledged it (PUBACK; PUBREC at QoS 2). Until then this broker
//!   keeps it: in the session's inflight window, and behind it in the session's queue, which a
//!   persistent session keeps across restarts (the store's crash promise). While the remote is
//!   away, or its window is full, the bridge takes nothing from the local session, so messages
//!   wait there — bounded by the bridge's own `max_queued_messages` and `max_queued_bytes`
//!   (whether connected or not), and counted when dropped.
//! - **In** (`in`, `both`): the remote session subscribes to each topic's remote filter; what
//!   arrives is published here with its topic mapped back.
//! - **Both**: the subscriptions on both sides carry No Local (MQTT 5), so that what the bridge
//!   publishes on one side is not sent back to it: a message crosses once.
//!
//! Retained messages cross with their retain flag (Retain As Published on both sides'
//! subscriptions); MQTT 5 properties cross unchanged (but the subscription identifiers and
//! topic alias, which belong to one connection).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use kite_mqtt::codec::{
    Ack, Connect, Properties, Props, Publish, ReasonCode, RetainHandling, Subscribe, Subscription,
    Will,
};
use kite_mqtt::session::{Backoff, ConnectOptions, Event, Instant, Session};
use kite_mqtt::topic::matches;
use kite_mqtt::{Packet, QoS, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::local::{LocalReceiver, LocalSender};
use crate::{Broker, ConnInfo};

/// Which way a bridge topic's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From this broker to the remote.
    Out,
    /// From the remote to this broker.
    In,
    /// Both ways.
    Both,
}

impl Direction {
    fn outward(self) -> bool {
        matches!(self, Self::Out | Self::Both)
    }

    fn inward(self) -> bool {
        matches!(self, Self::In | Self::Both)
    }
}

/// One `topic` line of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    /// The filter, on each side after its prefix.
    pub pattern: String,
    /// Which way.
    pub direction: Direction,
    /// The bridge's subscription QoS on the source side.
    pub qos: QoS,
    /// Before `pattern` on this broker (no wildcards).
    pub local_prefix: String,
    /// Before `pattern` on the remote (no wildcards).
    pub remote_prefix: String,
}

impl BridgeTopic {
    /// The filter on this broker.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The filter on the remote.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }
}

/// The remote topic of a message published here, by the first `out`/`both` topic it matches.
pub fn remote_topic(topics: &[BridgeTopic], local: &str) -> Option<String> {
    topics
        .iter()
        .filter(|t| t.direction.outward())
        .find(|t| local.starts_with(&t.local_prefix) && matches(&t.local_filter(), local))
        .map(|t| format!("{}{}", t.remote_prefix, &local[t.local_prefix.len()..]))
}

/// The topic here of a message from the remote, by the first `in`/`both` topic it matches.
pub fn local_topic(topics: &[BridgeTopic], remote: &str) -> Option<String> {
    topics
        .iter()
        .filter(|t| t.direction.inward())
        .find(|t| remote.starts_with(&t.remote_prefix) && matches(&t.remote_filter(), remote))
        .map(|t| format!("{}{}", t.local_prefix, &remote[t.remote_prefix.len()..]))
}

/// One bridge, checked (the gateway's config pass checks the file's `[[bridge]]`).
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Its name: letters, digits, '-', '_'.
    pub name: String,
    /// The protocol towards the remote.
    pub version: Version,
    /// The client id on the remote (`kite-bridge-<name>` by default); the local session is
    /// `local.<client_id>`.
    pub client_id: String,
    /// User name on the remote.
    pub username: Option<String>,
    /// Password on the remote.
    pub password: Option<Bytes>,
    /// Start a new session on the remote at each connection (else it is kept across them).
    pub clean_start: bool,
    /// Keep-alive towards the remote, in seconds.
    pub keep_alive: u16,
    /// With MQTT 3.1.1, connect as a bridge (mosquitto's `try_private`) so that a
    /// bridge-aware remote does not send the bridge's own messages back; MQTT 5 has No Local
    /// on the `both` subscriptions instead.
    pub try_private: bool,
    /// Reconnect backoff: from the first to the second, doubling, with jitter.
    pub restart: (Duration, Duration),
    /// What may wait here for the remote (the local session's queue): beyond it new messages
    /// are dropped and counted (`kite_broker_messages_dropped_total`).
    pub max_queued: crate::QueueBounds,
    /// Where the bridge's state goes, retained: "1" when connected, "0" when not — here, and on
    /// the remote ("1" after connecting; "0" is the bridge's Will there).
    pub notification_topic: String,
    /// The topics.
    pub topics: Vec<BridgeTopic>,
}

/// A byte stream to the remote broker.
pub trait BridgeIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> BridgeIo for T {}

/// A future a [`Remote`] returns.
pub type RemoteFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connection to the remote and the index of the address that answered, or why none did.
pub type Dialed = Result<(Box<dyn BridgeIo>, usize), String>;

/// How a bridge reaches its remote broker: the caller's sockets (TCP or TLS), not this
/// crate's.
pub trait Remote: Send + Sync + 'static {
    /// Opens a connection: the addresses in order, the first that answers, with its index —
    /// or why none did.
    fn dial(&self) -> RemoteFuture<'_, Dialed>;

    /// Whether the first address answers now (a connection opened, then closed): a bridge on a
    /// later address goes back to the first when it does.
    fn first_answers(&self) -> RemoteFuture<'_, bool>;

    /// Whether any address answers now (a connection opened, then closed): a bridge waiting
    /// out its backoff reconnects at once when one does.
    fn any_answers(&self) -> RemoteFuture<'_, bool>;
}

/// What a bridge is doing, for `/metrics` and the API.
#[derive(Debug, Default)]
pub struct BridgeState {
    up: AtomicBool,
    messages_out: AtomicU64,
    messages_in: AtomicU64,
    reconnects: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl BridgeState {
    /// Whether the remote is connected.
    pub fn up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Messages sent to the remote (and, at QoS 1/2, acknowledged by it).
    pub fn messages_out(&self) -> u64 {
        self.messages_out.load(Relaxed)
    }

    /// Messages from the remote published here.
    pub fn messages_in(&self) -> u64 {
        self.messages_in.load(Relaxed)
    }

    /// Connections to the remote lost or refused.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Relaxed)
    }

    /// Messages the bridge could not forward (too large for the remote, refused by it, or
    /// with no topic to map to).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Why the remote was last lost or refused, if it was.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn error(&self, e: impl Into<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.into());
        }
    }
}

/// A started bridge, as the broker lists it.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub(crate) name: String,
    /// Its session here.
    pub(crate) local_id: String,
    pub(crate) notification_topic: String,
    pub(crate) state: Arc<BridgeState>,
}

/// One bridge now, for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeStatus {
    /// Its name.
    pub name: String,
    /// Whether the remote is connected.
    pub up: bool,
    /// Messages waiting here for the remote, or sent and not yet acknowledged by it.
    pub queued: usize,
    /// Messages carried to the remote.
    pub messages_out: u64,
    /// Messages from the remote published here.
    pub messages_in: u64,
    /// Connections to the remote lost or refused.
    pub reconnects: u64,
    /// Messages dropped: those it could not forward, and those its full queue refused
    /// (beyond `max_queued_messages` or `max_queued_bytes`).
    pub dropped: u64,
    /// Why the remote was last lost or refused.
    pub last_error: Option<String>,
    /// Where its state is published.
    pub notification_topic: String,
}

/// The local session's client id of the bridge whose remote client id is `client_id`.
fn local_id(client_id: &str) -> String {
    format!("local.{client_id}")
}

/// At most this many of the local session's messages are on their way to the remote at once.
const WINDOW: usize = 100;

impl Broker {
    /// Starts `config`'s bridge on this runtime: it runs until the broker shuts down. Its state
    /// is what the returned handle shows.
    pub fn start_bridge(&self, config: BridgeConfig, remote: Arc<dyn Remote>) -> Arc<BridgeState> {
        let state = Arc::new(BridgeState::default());
        crate::lock(&self.inner.bridges).push(Registered {
            name: config.name.clone(),
            local_id: local_id(&config.client_id),
            notification_topic: config.notification_topic.clone(),
            state: state.clone(),
        });
        let (broker, shown) = (self.clone(), state.clone());
        tokio::spawn(async move {
            let name = config.name.clone();
            tokio::select! {
                end = run(&broker, config, remote.as_ref(), &state) => {
                    tracing::error!(bridge = %name, "the bridge stopped: {end}");
                    state.error(end);
                }
                () = broker.stopped() => {}
            }
            state.up.store(false, Relaxed);
        });
        shown
    }
}

/// The local side: the in-process client's two halves, its packet ids, and what is to be
/// sent to it (acknowledgements, messages from the remote) — handed over in one batch per turn.
struct Local {
    sender: LocalSender,
    receiver: LocalReceiver,
    next_id: u16,
    out: Vec<Packet>,
}

impl Local {
    fn next_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }
}

/// The local session's deliveries on their way to the remote. A delivery keeps its packet id
/// there, so that one sent again after a restart (with DUP, under the same id) is taken once by
/// a remote that kept the bridge's session; QoS 2 is relayed step by step: PUBREC here on the
/// remote's PUBREC, PUBREL there on the PUBREL from here, PUBCOMP here on the remote's PUBCOMP.
#[derive(Debug, Default)]
struct Carrying {
    /// Sent to the remote, by packet id: their QoS.
    sent: HashMap<u16, QoS>,
    /// QoS 2 deliveries the remote will not take (refused, unmappable, too large): PUBREC'd
    /// here, completed here on their PUBREL without the remote.
    refused: std::collections::HashSet<u16>,
    /// QoS 2 deliveries released to the remote (PUBREL from here passed on).
    released: std::collections::HashSet<u16>,
}

/// Opens the local session (persistent) and subscribes to the outward topics.
async fn open_local(broker: &Broker, config: &BridgeConfig) -> Result<Local, String> {
    let connect = Connect {
        version: Version::V5,
        client_id: ByteString::from(local_id(&config.client_id)),
        bridge: false,
        clean_start: false,
        keep_alive: 0,
        username: None,
        password: None,
        will: None,
        properties: Properties {
            // The session outlives restarts: what waits for the remote is kept.
            session_expiry_interval: Some(u32::MAX),
            ..Properties::default()
        }
        .into(),
    };
    let login = kite_policy::auth::Login {
        user: format!("bridge:{}", config.name),
        role: None,
    };
    let info = ConnInfo::internal(Some(login)).with_queue(config.max_queued);
    let (sender, mut receiver) = broker.connect_local(connect, info).split();
    match receiver.recv().await {
        Some(Packet::ConnAck(a)) if !a.reason.is_error() => {}
        other => {
            return Err(format!(
                "this broker refused the bridge's session: {other:?}"
            ));
        }
    }
    let filters: Vec<Subscription> = config
        .topics
        .iter()
        .filter(|t| t.direction.outward())
        .map(|t| Subscription {
            filter: t.local_filter().into(),
            qos: t.qos,
            no_local: t.direction == Direction::Both,
            retain_as_published: true,
            // A resumed session keeps its subscriptions: their retained messages went then.
            retain_handling: RetainHandling::SendIfNew,
        })
        .collect();
    if !filters.is_empty() {
        let count = filters.len();
        sender
            .send(Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters,
                properties: Props::default(),
            }))
            .await
            .map_err(|e| e.to_string())?;
        // Deliveries of a resumed session may come before the SUBACK: they wait in the link.
        let mut early = Vec::new();
        loop {
            match receiver.recv().await {
                Some(Packet::SubAck(a)) => {
                    if let Some(bad) = a.reasons.iter().find(|r| r.is_error()) {
                        return Err(format!(
                            "this broker refused the bridge's subscriptions: {bad} ({count} filters)"
                        ));
                    }
                    break;
                }
                Some(p) => early.push(p),
                None => return Err("this broker closed the bridge's session".into()),
            }
        }
        receiver.put_back(early);
    }
    Ok(Local {
        sender,
        receiver,
        next_id: 1,
        out: Vec::new(),
    })
}

/// The bridge's life: the local session, then connections to the remote, one after another
/// with backoff. Returns only when the local side ends (the broker shutting down).
async fn run(
    broker: &Broker,
    config: BridgeConfig,
    remote: &dyn Remote,
    state: &BridgeState,
) -> String {
    let mut local = match open_local(broker, &config).await {
        Ok(l) => l,
        Err(e) => return e,
    };
    let mut session = Session::new(ConnectOptions {
        version: config.version,
        client_id: ByteString::from(config.client_id.clone()),
        clean_start: config.clean_start,
        keep_alive: config.keep_alive,
        username: config.username.clone().map(ByteString::from),
        password: config.password.clone(),
        // 3.1.1 has no properties: its session lasts until a clean start.
        properties: Properties {
            session_expiry_interval: (!config.clean_start && config.version == Version::V5)
                .then_some(u32::MAX),
            ..Properties::default()
        },
        max_inflight: WINDOW as u16,
        bridge: config.try_private && config.version != Version::V5,
        // QoS 2 is relayed step by step (see `Carrying`).
        manual_release: true,
        // The remote says "0" for the bridge when the connection dies without a DISCONNECT.
        will: Some(Will {
            topic: config.notification_topic.clone().into(),
            payload: Bytes::from_static(b"0"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Props::default(),
        }),
        ..ConnectOptions::default()
    });
    // Subscription options are MQTT 5's; a 3.1.1 remote gets the filter and QoS.
    let v5 = config.version == Version::V5;
    let inward: Vec<Subscription> = config
        .topics
        .iter()
        .filter(|t| t.direction.inward())
        .map(|t| Subscription {
            filter: t.remote_filter().into(),
            qos: t.qos,
            no_local: v5 && t.direction == Direction::Both,
            retain_as_published: v5,
            retain_handling: RetainHandling::SendAtSubscribe,
        })
        .collect();
    let backoff = Backoff {
        min: config.restart.0,
        max: config.restart.1,
        stable_after: Duration::from_secs(60),
    };
    let mut attempt = 0u32;
    // The local deliveries on their way, by packet id — the same on both sides — and QoS;
    // each step of the remote's acknowledgement is passed on here.
    let mut carrying = Carrying::default();
    let mut subscribed = false;
    notify(broker, &config, false);
    // No address answered (else the remote did, and ended or refused the session: then the
    // backoff alone spaces the next try).
    let mut unreachable = false;
    loop {
        let connected_at = std::time::Instant::now();
        let was_unreachable = std::mem::take(&mut unreachable);
        match remote.dial().await {
            Err(e) => {
                tracing::warn!(bridge = %config.name, "cannot reach the remote broker: {e}");
                state.error(e);
                unreachable = true;
            }
            Ok((io, index)) => {
                // Back after none answered: the tries made while it was away say nothing of
                // the remote itself, so a session it now fails (a broker still starting)
                // backs off from the first step, not from the outage's grown delay.
                if was_unreachable {
                    attempt = 0;
                }
                let link = Link {
                    broker,
                    config: &config,
                    state,
                    session: &mut session,
                    local: &mut local,
                    carrying: &mut carrying,
                    inward: &inward,
                    subscribed: &mut subscribed,
                };
                match link.run(io, index, remote).await {
                    Ok(Ended::Lost(reason)) => {
                        tracing::warn!(bridge = %config.name, "the remote broker was lost: {reason}");
                        state.error(reason);
                    }
                    Ok(Ended::ToFirst) => {
                        tracing::info!(bridge = %config.name, "the first address answers again: going back to it");
                        if state.up.swap(false, Relaxed) {
                            notify(broker, &config, false);
                        }
                        state.reconnects.fetch_add(1, Relaxed);
                        continue;
                    }
                    // The local side ended: so does the bridge.
                    Err(fatal) => return fatal,
                }
            }
        }
        if state.up.swap(false, Relaxed) {
            notify(broker, &config, false);
        }
        state.reconnects.fetch_add(1, Relaxed);
        attempt = backoff.next_attempt(attempt, connected_at.elapsed());
        let jitter = jitter();
        // The backoff spaces the MQTT connections; meanwhile, when no address answered, a
        // plain connection every first step tells when one does again, so that forwarding
        // resumes within a step of the remote's return rather than after the whole delay.
        let wait = tokio::time::sleep(backoff.delay(attempt, jitter));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                () = tokio::time::sleep(config.restart.0), if unreachable => {
                    if remote.any_answers().await {
                        break;
                    }
                }
            }
        }
    }
}

/// How a connection to the remote ended (the local side ending is an `Err`).
enum Ended {
    /// Lost or refused, with why.
    Lost(String),
    /// Closed by the bridge: connected to a later address, it found the first answering.
    ToFirst,
}

/// Publishes the bridge's state here, retained: "1" up, "0" down.
fn notify(broker: &Broker, config: &BridgeConfig, up: bool) {
    let msg = Arc::new(crate::Message {
        topic: config.notification_topic.clone().into(),
        payload: Bytes::from_static(if up { b"1" } else { b"0" }),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Props::default(),
        received: std::time::Instant::now(),
        publisher: None,
    });
    if broker.publish(msg, std::time::Instant::now()).is_err() {
        tracing::warn!(bridge = %config.name, "the retained store is full: the bridge's state is not kept");
    }
}

/// A number in [0, 1) for the backoff's jitter, from the clock's low bits.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}

/// One connection to the remote, with everything it works on.
struct Link<'a> {
    broker: &'a Broker,
    config: &'a BridgeConfig,
    state: &'a BridgeState,
    session: &'a mut Session,
    local: &'a mut Local,
    carrying: &'a mut Carrying,
    inward: &'a [Subscription],
    subscribed: &'a mut bool,
}

impl Link<'_> {
    /// Runs the connection until it ends: `Ok(why)` when the remote side ended, `Err(why)` when
    /// the local side did.
    async fn run(
        mut self,
        io: Box<dyn BridgeIo>,
        index: usize,
        remote: &dyn Remote,
    ) -> Result<Ended, String> {
        let (mut rd, mut wr) = tokio::io::split(io);
        self.session.connect(Instant::now());
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut batch = Vec::new();
        // On a later address: every longest restart delay, whether the first answers again.
        let every = self.config.restart.1;
        let back = async {
            if index == 0 {
                return std::future::pending().await;
            }
            loop {
                tokio::time::sleep(every).await;
                if remote.first_answers().await {
                    return;
                }
            }
        };
        tokio::pin!(back);
        loop {
            // Everything the session has to send, and every event (which may add to both),
            // before waiting again.
            loop {
                while let Some(bytes) = self.session.poll_transmit() {
                    if let Err(e) = wr.write_all(&bytes).await {
                        self.session.connection_lost(Instant::now());
                        return Ok(Ended::Lost(format!("writing to the remote broker: {e}")));
                    }
                }
                let Some(event) = self.session.poll_event() else {
                    break;
                };
                if let Some(end) = self.on_event(event)? {
                    // What the session still had to say (a DISCONNECT) goes first.
                    while let Some(bytes) = self.session.poll_transmit() {
                        let _ = wr.write_all(&bytes).await;
                    }
                    return Ok(Ended::Lost(end));
                }
            }
            if !self.local.out.is_empty() {
                let batch = std::mem::take(&mut self.local.out);
                self.local
                    .sender
                    .send_all(batch)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let deadline = self.session.poll_timeout();
            let room = self.session.is_connected()
                && self.session.inflight_len() + self.session.outbox_len() < WINDOW;
            tokio::select! {
                read = rd.read_buf(&mut buf) => match read {
                    Ok(n) if n > 0 => {
                        self.session.handle_bytes(&buf, Instant::now());
                        buf.clear();
                    }
                    Ok(_) => self.session.connection_lost(Instant::now()),
                    Err(e) => {
                        self.session.connection_lost(Instant::now());
                        return Ok(Ended::Lost(format!("reading from the remote broker: {e}")));
                    }
                },
                // Everything ready, then one write to the remote (a batch may go past the
                // window: the session holds the rest until acknowledgements make room).
                open = self.local.receiver.recv_many(&mut batch), if room => {
                    if !open {
                        return Err("this broker closed the bridge's session".into());
                    }
                    for p in batch.drain(..) {
                        self.on_local(p)?;
                    }
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    self.session.handle_timeout(Instant::now());
                }
                () = &mut back => {
                    // A clean end: what was sent and not acknowledged is resent there.
                    let _ = self
                        .session
                        .disconnect(kite_mqtt::codec::ReasonCode::Success, Instant::now());
                    while let Some(bytes) = self.session.poll_transmit() {
                        let _ = wr.write_all(&bytes).await;
                    }
                    let _ = wr.shutdown().await;
                    // Its `Disconnected(Requested)` belongs to this connection, not the next.
                    while self.session.poll_event().is_some() {}
                    return Ok(Ended::ToFirst);
                }
            }
        }
    }

    /// What the remote session says. `Some(why)`: the connection is over.
    fn on_event(&mut self, event: Event) -> Result<Option<String>, String> {
        match event {
            Event::Connected { .. } => {
                tracing::info!(bridge = %self.config.name, "connected to the remote broker");
                self.state.up.store(true, Relaxed);
                notify(self.broker, self.config, true);
                // And on the remote, over the Will's "0".
                // At QoS 0: every packet id there is a delivery's from here.
                let up = Publish {
                    qos: QoS::AtMostOnce,
                    retain: true,
                    topic: self.config.notification_topic.clone().into(),
                    payload: Bytes::from_static(b"1"),
                    ..Publish::default()
                };
                if let Err(e) = self.session.publish(up, Instant::now()) {
                    self.state.error(format!(
                        "cannot publish the bridge's state on the remote: {e}"
                    ));
                }
                if !*self.subscribed && !self.inward.is_empty() {
                    // The session restores them on later connections.
                    match self.session.subscribe(
                        self.inward.to_vec(),
                        Props::default(),
                        Instant::now(),
                    ) {
                        Ok(_) => *self.subscribed = true,
                        Err(e) => self
                            .state
                            .error(format!("cannot subscribe on the remote: {e}")),
                    }
                }
            }
            Event::Subscribed { reasons, .. } => {
                for (sub, reason) in self.inward.iter().zip(&reasons) {
                    if reason.is_error() {
                        let e = format!(
                            "the remote refused the subscription {}: {reason}",
                            sub.filter
                        );
                        tracing::warn!(bridge = %self.config.name, "{e}");
                        self.state.error(e);
                    }
                }
            }
            Event::Message(p) => self.inward_message(p)?,
            // The remote has a QoS 2 message: PUBREC here, so that its PUBREL comes back.
            Event::Received { packet_id } => {
                self.send_local(Packet::PubRec(Ack::new(packet_id)))?;
            }
            Event::Published { packet_id, reason } => {
                // A delivery from here (the bridge's own state goes at QoS 0).
                let Some(qos) = self.carrying.sent.remove(&packet_id) else {
                    return Ok(None);
                };
                // 0x92 to a PUBREL: an id the remote no longer holds, completed before (a
                // release sent again after a restart).
                if reason.is_error() && reason != ReasonCode::PacketIdentifierNotFound {
                    // Refused by the remote: completed here anyway, or it would be offered
                    // again forever; counted.
                    self.state.dropped.fetch_add(1, Relaxed);
                    self.state
                        .error(format!("the remote refused a message: {reason}"));
                } else {
                    self.state.messages_out.fetch_add(1, Relaxed);
                }
                match qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => self.send_local(Packet::PubAck(Ack::new(packet_id)))?,
                    // Refused at PUBLISH (its PUBREC here not sent yet), or completed.
                    QoS::ExactlyOnce if self.carrying.released.remove(&packet_id) => {
                        self.send_local(Packet::PubComp(Ack::new(packet_id)))?;
                    }
                    QoS::ExactlyOnce => self.acknowledge(packet_id, qos)?,
                }
            }
            Event::Dropped { .. } => {
                self.state.dropped.fetch_add(1, Relaxed);
            }
            // `run` marks it down (and says so) once the connection is over.
            Event::Disconnected(reason) => {
                return Ok(Some(reason.to_string()));
            }
            Event::Unsubscribed { .. } | Event::Auth(_) => {}
        }
        Ok(None)
    }

    /// A message from the remote, published here under its mapped topic.
    fn inward_message(&mut self, p: Publish) -> Result<(), String> {
        let Some(topic) = local_topic(&self.config.topics, &p.topic) else {
            self.state.dropped.fetch_add(1, Relaxed);
            return Ok(());
        };
        let mut properties = p.properties;
        properties.subscription_identifiers.clear();
        properties.topic_alias = None;
        let packet_id = if p.qos == QoS::AtMostOnce {
            0
        } else {
            self.local.next_id()
        };
        let publish = Publish {
            dup: false,
            qos: p.qos,
            retain: p.retain,
            topic: topic.into(),
            packet_id,
            properties,
            payload: p.payload,
        };
        self.state.messages_in.fetch_add(1, Relaxed);
        self.send_local(Packet::Publish(publish))
    }

    /// A packet from the local session.
    fn on_local(&mut self, packet: Packet) -> Result<(), String> {
        match packet {
            Packet::Publish(p) => self.outward_message(p),
            // The second half of a QoS 2 delivery we received (PUBREC sent once the remote had
            // it).
            Packet::PubRel(a) => {
                if self.carrying.refused.remove(&a.packet_id) {
                    return self.send_local(Packet::PubComp(Ack::new(a.packet_id)));
                }
                // Released there; its PUBCOMP completes it here. Also for a delivery PUBREC'd
                // before a restart, which this session never saw.
                self.carrying.sent.insert(a.packet_id, QoS::ExactlyOnce);
                self.carrying.released.insert(a.packet_id);
                self.session.release(a.packet_id, Instant::now());
                Ok(())
            }
            // Our QoS 2 publish here: release it.
            Packet::PubRec(a) => self.send_local(Packet::PubRel(Ack::new(a.packet_id))),
            Packet::Disconnect(d) => Err(format!(
                "this broker closed the bridge's session: {}",
                d.reason
            )),
            // PUBACK, PUBCOMP of our publishes here; nothing else comes.
            _ => Ok(()),
        }
    }

    /// A message delivered here, sent to the remote under its mapped topic.
    fn outward_message(&mut self, p: Publish) -> Result<(), String> {
        let (id, qos) = (p.packet_id, p.qos);
        let Some(topic) = remote_topic(&self.config.topics, &p.topic) else {
            self.state.dropped.fetch_add(1, Relaxed);
            return self.acknowledge(id, qos);
        };
        let mut properties = p.properties;
        properties.subscription_identifiers.clear();
        properties.topic_alias = None;
        let publish = Publish {
            // A delivery sent again here goes again there: same id, DUP.
            dup: p.dup,
            qos,
            retain: p.retain,
            topic: topic.into(),
            packet_id: 0,
            properties,
            payload: p.payload,
        };
        let sent = if qos == QoS::AtMostOnce {
            self.session.publish(publish, Instant::now()).map(|_| ())
        } else {
            self.session.publish_with_id(publish, id, Instant::now())
        };
        match sent {
            Ok(()) if qos == QoS::AtMostOnce => {
                self.state.messages_out.fetch_add(1, Relaxed);
                Ok(())
            }
            Ok(()) => {
                self.carrying.sent.insert(id, qos);
                Ok(())
            }
            Err(e) => {
                // Cannot be sent (too large for the remote): counted, and acknowledged here
                // so that it does not block the ones behind it.
                tracing::warn!(bridge = %self.config.name, "a message cannot go to the remote: {e}");
                self.state.dropped.fetch_add(1, Relaxed);
                self.state
                    .error(format!("a message cannot go to the remote: {e}"));
                self.acknowledge(id, qos)
            }
        }
    }

    /// Completes here a delivery the remote will not take: PUBACK, or at QoS 2 PUBREC (its
    /// PUBREL is then answered here).
    fn acknowledge(&mut self, id: u16, qos: QoS) -> Result<(), String> {
        match qos {
            QoS::AtMostOnce => Ok(()),
            QoS::AtLeastOnce => self.send_local(Packet::PubAck(Ack::new(id))),
            QoS::ExactlyOnce => {
                self.carrying.refused.insert(id);
                self.send_local(Packet::PubRec(Ack::new(id)))
            }
        }
    }

    /// Queues `packet` for the local session (sent before the next wait).
    fn send_local(&mut self, packet: Packet) -> Result<(), String> {
        self.local.out.push(packet);
        Ok(())
    }
}

/// Completes at `deadline` (never without one).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(pattern: &str, direction: Direction, local: &str, remote: &str) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.into(),
            direction,
            qos: QoS::AtLeastOnce,
            local_prefix: local.into(),
            remote_prefix: remote.into(),
        }
    }

    /// Topics map as mosquitto's `topic pattern direction qos local-prefix remote-prefix`.
    #[test]
    fn topics_map_by_prefix() {
        let topics = [
            topic("plant/#", Direction::Out, "", "site-a/"),
            topic("cmd/#", Direction::In, "local/", "cloud/"),
            topic("sync/+", Direction::Both, "", ""),
        ];
        assert_eq!(
            remote_topic(&topics, "plant/line1/temp").as_deref(),
            Some("site-a/plant/line1/temp")
        );
        assert_eq!(remote_topic(&topics, "cmd/x"), None, "an in topic");
        assert_eq!(remote_topic(&topics, "sync/a").as_deref(), Some("sync/a"));
        assert_eq!(
            local_topic(&topics, "cloud/cmd/valve").as_deref(),
            Some("local/cmd/valve")
        );
        assert_eq!(
            local_topic(&topics, "cmd/valve"),
            None,
            "without the prefix"
        );
        assert_eq!(local_topic(&topics, "site-a/plant/x"), None, "an out topic");
        assert_eq!(local_topic(&topics, "sync/b").as_deref(), Some("sync/b"));
        assert_eq!(local_topic(&topics, "sync/b/c"), None);
    }
}
