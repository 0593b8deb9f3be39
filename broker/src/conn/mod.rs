//! One client connection to the embedded broker: CONNECT, then a loop that reads packets,
//! writes what the session has to send, and watches keep-alive — until the connection ends.
//! Then the Will, and the session's expiry.
//!
//! One dispatch (`Conn::handle`), one module per concern, as mosquitto's `read_handle.c` and
//! `handle_*.c`: [`connect`] (CONNECT, admission, CONNACK, and the end of a connection),
//! [`publish`] (the client's PUBLISH), [`subscribe`] (SUBSCRIBE, UNSUBSCRIBE), [`deliver`]
//! (the session's messages to the client and its acknowledgements), [`resume`] (a resumed
//! session's redelivery; releasing the session and the Will), and [`io`] (the transports:
//! bytes over a socket, typed packets in-process). Time is an input of the logic (`now`); the
//! transports read the clock once per event.
//!
//! The socket is split: reading and writing progress independently inside one `select!`, so a
//! client that writes without reading can never deadlock the two. What is waiting to be written
//! is bounded ([`OUT_HIGH_WATER`]): above it, the task neither reads nor takes deliveries from
//! the session's queue until the client has taken the bytes.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kite_mqtt::codec::{Ack, ConnAck, Disconnect, Properties, Props, ReasonCode};
use kite_mqtt::{Limits, MqttStr, Packet, Version};

use crate::out::Out;
use crate::session::{Awaiting, Slot};
use crate::store::Op;
use crate::{Broker, lock};

mod connect;
mod deliver;
mod io;
mod publish;
mod resume;
mod subscribe;

pub(crate) use io::{serve, serve_local};

/// Bytes waiting to be written to one client, at most (plus one packet).
const OUT_HIGH_WATER: usize = 64 * 1024;

/// Packets waiting for a store commit beyond which no more deliveries are taken from the
/// session's queue.
const PENDING_FILL_LIMIT: usize = 1024;

/// Answers held back for the store at most, before the connection stops reading.
const MAX_PENDING: usize = 65_536;

/// Buffer space reserved ahead of a partly read packet at most ([`make_room`]).
const READ_AHEAD: usize = 64 * 1024;

/// Bytes a connection reads (and routes) before it lets the worker thread run other tasks. A
/// publisher that always has input would otherwise keep the thread for tokio's whole budget
/// (128 reads: 2 MB of 16 KiB messages) while its subscribers' tasks wait to write — at 4 → 1
/// with 16 KiB over TCP that filled the subscriber's queue until deliveries were dropped
/// (gateway/BENCHMARKS.md).
const FAIR_SHARE: usize = 64 * 1024;

/// How long the last packets (CONNACK refusal, DISCONNECT) may take to be written.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Who is connecting, and how.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address (for logs).
    pub peer: SocketAddr,
    /// `tcp`, `tls` or `websocket`.
    pub transport: &'static str,
    /// `Some`: the gateway has already checked this client's credentials, and this is the
    /// user's role (whose topic rules apply).
    pub authenticated: Option<kite_policy::auth::Login>,
    /// Bounds of this client's session queue instead of `[broker]`'s, online and offline
    /// alike (a bridge's: what waits for the remote).
    pub queue: Option<crate::session::QueueBounds>,
}

impl ConnInfo {
    /// A device on the TCP listener.
    pub fn tcp(peer: SocketAddr) -> Self {
        Self {
            peer,
            transport: "tcp",
            authenticated: None,
            queue: None,
        }
    }

    /// A device on the TLS listener.
    pub fn tls(peer: SocketAddr) -> Self {
        Self {
            transport: "tls",
            ..Self::tcp(peer)
        }
    }

    /// A client inside the process (the bridge, the history recorder...), named for the
    /// logs; `login`: its role, if its topic rules apply (`None` with users configured: it
    /// must log in with its CONNECT's credentials).
    pub fn internal(login: Option<kite_policy::auth::Login>) -> Self {
        Self {
            peer: SocketAddr::from(([127, 0, 0, 1], 0)),
            transport: "local",
            authenticated: login,
            queue: None,
        }
    }

    /// The same, with its session's queue held to `bounds` rather than `[broker]`'s.
    pub fn with_queue(mut self, bounds: crate::session::QueueBounds) -> Self {
        self.queue = Some(bounds);
        self
    }

    /// A browser session handed over by the gateway's WebSocket handler: `login` is `Some`
    /// when it checked the credentials (users or `[jwt]` are configured).
    pub fn websocket(peer: SocketAddr, login: Option<kite_policy::auth::Login>) -> Self {
        Self {
            peer,
            transport: "websocket",
            authenticated: login,
            queue: None,
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT; `will`: it asked for its Will (MQTT 5, 0x04).
    Disconnect { will: bool },
    /// The client closed the connection without DISCONNECT.
    Closed,
    /// Reading or writing failed.
    Io(String),
    /// The client broke a rule: closed with this reason (MQTT 5: sent in DISCONNECT).
    Violation(ReasonCode, String),
    /// Nothing received for 1.5 × keep-alive [MQTT-3.1.2-22].
    KeepAlive,
    /// Another connection took the session over [MQTT-3.1.4-3].
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
}

impl End {
    fn violation(code: ReasonCode, detail: impl Into<String>) -> Self {
        Self::Violation(code, detail.into())
    }

    /// For the log line.
    fn describe(&self) -> String {
        match self {
            Self::Disconnect { will: false } => "client disconnected".to_owned(),
            Self::Disconnect { will: true } => "client disconnected with its Will".to_owned(),
            Self::Closed => "connection closed without DISCONNECT".to_owned(),
            Self::Io(e) => format!("connection failed: {e}"),
            Self::Violation(code, detail) => format!("protocol violation, {code}: {detail}"),
            Self::KeepAlive => "keep-alive timeout".to_owned(),
            Self::TakenOver => "session taken over".to_owned(),
            Self::Shutdown => "broker shutting down".to_owned(),
        }
    }

    /// The Will is published unless the client disconnected normally [MQTT-3.1.2-8/10].
    fn publishes_will(&self) -> bool {
        match self {
            Self::Disconnect { will } => *will,
            Self::Shutdown => false,
            _ => true,
        }
    }

    /// The DISCONNECT the broker sends (MQTT 5 only), with a reason string.
    fn disconnect(&self) -> Option<(ReasonCode, String)> {
        match self {
            Self::Violation(code, detail) => Some((*code, detail.clone())),
            Self::KeepAlive => Some((
                ReasonCode::KeepAliveTimeout,
                "no packet within 1.5 × keep-alive".to_owned(),
            )),
            Self::TakenOver => Some((
                ReasonCode::SessionTakenOver,
                "another connection with this client id took the session over".to_owned(),
            )),
            Self::Shutdown => Some((
                ReasonCode::ServerShuttingDown,
                "the broker is shutting down".to_owned(),
            )),
            Self::Disconnect { .. } | Self::Closed | Self::Io(_) => None,
        }
    }
}

fn encode(packet: Packet, version: Version, out: &mut Out) {
    let kind = packet.packet_type();
    if let Err(e) = out.push(packet, version) {
        // Only the broker's own packets get here; a failure is a bug, not bad input.
        tracing::error!("broker could not encode its {kind:?}: {e}");
    }
}

/// A reason string for a client: `detail` cut at a character boundary to at most
/// `REASON_MAX` bytes (a detail can quote what the client sent — a 65,535-byte user name made
/// a CONNACK too long to encode, and the connection was dropped without an answer).
pub fn reason_text(detail: &str) -> MqttStr {
    const REASON_MAX: usize = 512;
    if detail.len() <= REASON_MAX {
        return detail.into();
    }
    let mut end = REASON_MAX - '…'.len_utf8();
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &detail[..end]).as_str().into()
}

/// A CONNACK refusing the connection: the 3.1.1 return code of the same meaning when there is
/// one (else 3, Server unavailable), the v5 reason code with a reason string otherwise.
pub fn refusal(version: Version, code: ReasonCode, detail: &str) -> (Packet, Version) {
    if version.is_v5() {
        let properties = Properties {
            reason_string: Some(reason_text(detail)),
            ..Properties::default()
        };
        let ack = ConnAck {
            session_present: false,
            reason: code,
            properties: properties.into(),
        };
        (Packet::ConnAck(ack), Version::V5)
    } else {
        let reason = if code.to_v3_connack().is_some() {
            code
        } else {
            ReasonCode::ServerUnavailable
        };
        let ack = ConnAck {
            session_present: false,
            reason,
            properties: Props::default(),
        };
        (Packet::ConnAck(ack), Version::V3_1_1)
    }
}

/// The connection's last line and count.
fn closed(broker: &Broker, info: &ConnInfo, conn: u64, client_id: &Arc<str>, end: &End) {
    if info.transport != "local" {
        broker.report(crate::events::ClientEvent::Disconnected {
            conn,
            client_id: client_id.clone(),
            reason: end.describe(),
            clean: matches!(end, End::Disconnect { will: false }),
            taken_over: matches!(end, End::TakenOver),
            t: crate::events::now_ms(),
        });
    }
    if info.transport == "websocket" {
        // The gateway logs the session's open and close lines.
        tracing::debug!(peer = %info.peer, client_id = %client_id, "connection ended: {}", end.describe());
    } else {
        tracing::info!(peer = %info.peer, transport = info.transport, client_id = %client_id, "connection ended: {}", end.describe());
    }
    broker
        .stats()
        .clients_connected
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

struct Conn {
    broker: Broker,
    id: u64,
    version: Version,
    slot: Arc<Slot>,
    client_id: Arc<str>,
    limits: Limits,
    /// The CONNECT's session expiry was 0: DISCONNECT may not raise it [MQTT-3.14.2-2].
    connect_expiry_zero: bool,
    client_receive_max: u16,
    client_max_packet: u32,
    client_alias_max: u16,
    problem_info: bool,
    /// Topic aliases the client set [MQTT-3.3.2-8]; never carried to another connection.
    aliases_in: HashMap<u16, MqttStr>,
    /// Topic aliases the broker set towards the client.
    aliases_out: HashMap<MqttStr, u16>,
    /// Acknowledgements held back until the store has committed the writes they confirm
    /// (store ticket, packet), in order.
    pending: VecDeque<(u64, Packet)>,
    committed: Option<tokio::sync::watch::Receiver<u64>>,
    /// The user's role's topic rules (`None`: no restriction) and its user name (for `%u`).
    acl: Option<kite_policy::acl::Acl>,
    /// Topics the role may not read (`deny_subscribe`, substituted): a subscription that only
    /// overlaps them was granted, and their deliveries are dropped here.
    read_denied: Vec<String>,
    /// The role's `subscribe` rules, substituted (`None`: no allow list): a delivery none of
    /// them covers is dropped here, whoever made the subscription it came through.
    read_allowed: Option<Vec<String>>,
    user: Arc<str>,
}

impl Conn {
    fn v5(&self) -> bool {
        self.version.is_v5()
    }

    fn committed_ticket(&self) -> u64 {
        self.committed.as_ref().map_or(u64::MAX, |c| *c.borrow())
    }

    /// Sends an answer once store ticket `ticket` is committed (0: no wait), never before an
    /// answer held back earlier.
    fn answer(&mut self, ticket: u64, packet: Packet, out: &mut Out) {
        let ticket = ticket.max(self.pending.back().map_or(0, |(t, _)| *t));
        if ticket == 0 || (self.pending.is_empty() && ticket <= self.committed_ticket()) {
            encode(packet, self.version, out);
        } else {
            self.pending.push_back((ticket, packet));
        }
    }

    /// Sends the held-back answers whose writes are committed.
    fn release(&mut self, out: &mut Out) {
        let committed = self.committed_ticket();
        while self.pending.front().is_some_and(|(t, _)| *t <= committed) {
            if let Some((_, p)) = self.pending.pop_front() {
                encode(p, self.version, out);
            }
        }
    }

    fn taken_over(&self) -> Option<End> {
        let st = lock(&self.slot.state);
        (st.owner != Some(self.id) || st.ended).then_some(End::TakenOver)
    }

    /// One packet from the client, at `now` (read once per event by the transport).
    fn handle(&mut self, packet: Packet, out: &mut Out, now: Instant) -> Result<(), End> {
        match packet {
            Packet::Publish(p) => self.on_publish(p, out, now),
            Packet::PubAck(a) => {
                self.on_ack(Awaiting::Ack, &a, out, now);
                Ok(())
            }
            Packet::PubRec(a) => {
                self.on_ack(Awaiting::Rec, &a, out, now);
                Ok(())
            }
            Packet::PubComp(a) => {
                self.on_ack(Awaiting::Comp, &a, out, now);
                Ok(())
            }
            Packet::PubRel(a) => {
                let (known, persisted) = {
                    let mut st = lock(&self.slot.state);
                    (st.incoming_qos2.remove(&a.packet_id), st.persisted)
                };
                if known && persisted {
                    let client = self.client_id.to_string();
                    self.broker.persist([Op::DelQos2(client, a.packet_id)]);
                }
                let mut comp = Ack::new(a.packet_id);
                if !known && self.v5() {
                    comp.reason = ReasonCode::PacketIdentifierNotFound;
                }
                self.answer(0, Packet::PubComp(comp), out);
                Ok(())
            }
            Packet::Subscribe(s) => {
                self.on_subscribe(s, out, now);
                Ok(())
            }
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u, out);
                Ok(())
            }
            Packet::PingReq => {
                self.answer(0, Packet::PingResp, out);
                Ok(())
            }
            Packet::Disconnect(d) => Err(self.on_disconnect(&d)),
            Packet::Connect(_) => Err(End::violation(
                ReasonCode::ProtocolError,
                "a second CONNECT on one connection [MQTT-3.1.0-2]",
            )),
            Packet::Auth(_) => Err(End::violation(
                ReasonCode::ProtocolError,
                "AUTH without enhanced authentication",
            )),
            other => Err(End::violation(
                ReasonCode::ProtocolError,
                format!("{} is sent by servers, not clients", other.packet_type()),
            )),
        }
    }

    fn on_disconnect(&mut self, d: &Disconnect) -> End {
        if let Some(expiry) = d.properties.session_expiry_interval {
            if self.connect_expiry_zero && expiry != 0 {
                return End::violation(
                    ReasonCode::ProtocolError,
                    "DISCONNECT may not set a session expiry when CONNECT had 0 [MQTT-3.14.2-2]",
                );
            }
            lock(&self.slot.state).expiry = expiry.min(self.broker.config().max_session_expiry);
        }
        End::Disconnect {
            will: d.reason == ReasonCode::DisconnectWithWillMessage,
        }
    }
}
