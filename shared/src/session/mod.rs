//! A sans-IO MQTT client session (quinn-proto style): bytes and time go in, bytes, events and
//! the next deadline come out. No sockets, no timers, no clock: the driver passes `now`.
//!
//! Driving it:
//! 1. [`Session::connect`], then loop: write [`Session::poll_transmit`] to the socket, feed
//!    what the socket reads to [`Session::handle_bytes`], call [`Session::handle_timeout`] when
//!    [`Session::poll_timeout`] is reached, and act on [`Session::poll_event`].
//! 2. When the socket closes, call [`Session::connection_lost`]; on a new socket, `connect`
//!    again: unacknowledged messages are resent (or re-published) and subscriptions restored.
//!
//! What it does: CONNECT/CONNACK (3.1.1 and 5.0, server-assigned client id, server keep-alive,
//! receive maximum and maximum packet size from the server), keep-alive with PINGRESP timeout,
//! QoS 0/1/2 in both directions (QoS 2 never delivers twice), an inflight window bounded by
//! the server's receive maximum, an outbox for publishes made while disconnected (bounded, with
//! an overflow policy, honouring message expiry), resend on reconnect, incoming topic aliases,
//! and a clear close reason for any misbehaving server.

mod backoff;
// Used as the session's `Instant` only without std; compiled (and tested) always.
#[cfg_attr(feature = "std", allow(dead_code))]
mod clock;
// The session's maps in the browser and without std; compiled (and tested) always.
#[cfg_attr(all(feature = "std", not(target_arch = "wasm32")), allow(dead_code))]
mod vecmap;

use alloc::collections::VecDeque;
use core::fmt;
use core::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::codec::{MqttStr, PacketType};
use crate::prelude::*;
#[cfg(not(feature = "std"))]
pub use clock::Instant;
// In the browser (and without std), sorted vectors (see `vecmap`) stand in for std's hash maps.
#[cfg(any(not(feature = "std"), target_arch = "wasm32"))]
type HashMap<K, V> = vecmap::VecMap<K, V>;
#[cfg(any(not(feature = "std"), target_arch = "wasm32"))]
type HashSet<K> = vecmap::VecSet<K>;
#[cfg(all(feature = "std", not(target_arch = "wasm32")))]
use std::collections::{HashMap, HashSet};
#[cfg(feature = "std")]
pub use web_time::Instant;

pub use backoff::Backoff;

use crate::codec::{
    Ack, Auth, ConnAck, Connect, DecodeError, Disconnect, EncodeError, Limits, Packet, Properties,
    Props, Publish, QoS, ReasonCode, SubAck, Subscribe, Subscription, UnsubAck, Unsubscribe,
    Version, Will, decode,
};

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Protocol version.
    pub version: Version,
    /// Client identifier; empty lets a 5.0 server assign one.
    pub client_id: ByteString,
    /// Start a new session (true) or resume one (false).
    pub clean_start: bool,
    /// Keep-alive in seconds (0: none). A 5.0 server may impose its own.
    pub keep_alive: u16,
    /// User name.
    pub username: Option<ByteString>,
    /// Password.
    pub password: Option<Bytes>,
    /// Last Will.
    pub will: Option<Will>,
    /// CONNECT properties (5.0): session expiry, receive maximum (our inbound window),
    /// maximum packet size, topic alias maximum (aliases the server may use), user properties.
    pub properties: Properties,
    /// How long to wait for CONNACK.
    pub connect_timeout: Duration,
    /// At most this many QoS 1/2 publishes unacknowledged at once (also bounded by the
    /// server's receive maximum).
    pub max_inflight: u16,
    /// Outbox bound: publishes waiting for the connection or the window.
    pub outbox_limit: OutboxLimit,
    /// Replace repeated topic names by aliases when the server allows them (5.0): the first
    /// topics published get alias 1, 2, ... up to the server's Topic Alias Maximum.
    pub outgoing_topic_aliases: bool,
    /// Connect as a bridge (mosquitto's "try_private": bit 7 of the protocol level), so that a
    /// bridge-aware broker does not send this client's own messages back to it.
    pub bridge: bool,
    /// QoS 2 publishes wait for the application between PUBREC and PUBREL: a PUBREC gives
    /// [`Event::Received`], and the PUBREL goes only with [`Session::release`] (a relay, such
    /// as a bridge, that passes each step of the exchange on from another session).
    pub manual_release: bool,
    /// Incoming QoS 1 messages wait for the application's acknowledgement: their PUBACK goes
    /// only with [`Session::acknowledge`] (a recorder that acknowledges once what it received
    /// is on disk). QoS 2 is acknowledged as usual.
    pub manual_ack: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            version: Version::V5,
            client_id: ByteString::new(),
            clean_start: true,
            keep_alive: 60,
            username: None,
            password: None,
            will: None,
            properties: Properties::default(),
            connect_timeout: Duration::from_secs(10),
            max_inflight: 100,
            outbox_limit: OutboxLimit::default(),
            outgoing_topic_aliases: true,
            bridge: false,
            manual_release: false,
            manual_ack: false,
        }
    }
}

/// How many publishes, and how many payload bytes, may wait in the outbox, and what happens to
/// one more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimit {
    /// Most messages.
    pub messages: usize,
    /// Most payload bytes.
    pub bytes: usize,
    /// What to do when full.
    pub policy: OverflowPolicy,
}

impl Default for OutboxLimit {
    fn default() -> Self {
        Self {
            messages: 1_000,
            bytes: 16 * 1024 * 1024,
            policy: OverflowPolicy::RejectNew,
        }
    }
}

/// What a full outbox does with a new publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Refuse it: [`Session::publish`] returns [`SessionError::OutboxFull`].
    RejectNew,
    /// Drop the oldest waiting publishes to make room ([`Event::Dropped`] for each).
    DropOldest,
}

/// Why a session ended. Shown to people: each says what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The server refused the connection (CONNACK reason code).
    Refused {
        /// The code.
        reason: ReasonCode,
        /// The server's reason string, if any.
        reason_string: Option<MqttStr>,
    },
    /// The server sent DISCONNECT.
    ServerDisconnect {
        /// The code.
        reason: ReasonCode,
        /// The server's reason string, if any.
        reason_string: Option<MqttStr>,
    },
    /// The server sent bytes that are not MQTT.
    Malformed(DecodeError),
    /// The server broke the protocol.
    ProtocolViolation {
        /// The reason code sent to the server (5.0).
        code: ReasonCode,
        /// What it did.
        detail: String,
    },
    /// No CONNACK in time.
    ConnectTimeout,
    /// No PINGRESP in time.
    KeepAliveTimeout,
    /// The transport closed ([`Session::connection_lost`]).
    ConnectionLost,
    /// This side called [`Session::disconnect`].
    Requested,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with = |f: &mut fmt::Formatter<'_>, s: &Option<MqttStr>| match s {
            Some(s) => write!(f, ": {s}"),
            None => Ok(()),
        };
        match self {
            Self::Refused {
                reason,
                reason_string,
            } => {
                write!(f, "the server refused the connection: {reason}")?;
                with(f, reason_string)
            }
            Self::ServerDisconnect {
                reason,
                reason_string,
            } => {
                write!(f, "the server disconnected: {reason}")?;
                with(f, reason_string)
            }
            Self::Malformed(e) => write!(f, "the server sent a malformed packet: {e}"),
            Self::ProtocolViolation { detail, .. } => {
                write!(f, "the server broke the protocol: {detail}")
            }
            Self::ConnectTimeout => f.write_str("no answer to CONNECT in time"),
            Self::KeepAliveTimeout => {
                f.write_str("no answer to PINGREQ in time (keep-alive timeout)")
            }
            Self::ConnectionLost => f.write_str("the connection was lost"),
            Self::Requested => f.write_str("disconnected"),
        }
    }
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// CONNACK accepted the connection.
    Connected {
        /// Whether the server resumed a session.
        session_present: bool,
        /// The client id in use (the server's choice if it assigned one).
        client_id: ByteString,
        /// The whole CONNACK, for its properties.
        connack: ConnAck,
    },
    /// A message arrived (once, even at QoS 2).
    Message(Publish),
    /// With `manual_release`: the server has one of our QoS 2 publishes (PUBREC); release it
    /// with [`Session::release`] to complete it.
    Received {
        /// Its packet id.
        packet_id: u16,
    },
    /// One of our QoS 1/2 publishes is complete (PUBACK, or PUBCOMP), or the server refused it.
    Published {
        /// The id [`Session::publish`] returned.
        packet_id: u16,
        /// Success, or the server's reason (5.0).
        reason: ReasonCode,
    },
    /// The answer to [`Session::subscribe`].
    Subscribed {
        /// The id `subscribe` returned.
        packet_id: u16,
        /// One per filter: granted QoS or failure.
        reasons: Vec<ReasonCode>,
    },
    /// The answer to [`Session::unsubscribe`].
    Unsubscribed {
        /// The id `unsubscribe` returned.
        packet_id: u16,
        /// One per filter (5.0; empty in 3.1.1).
        reasons: Vec<ReasonCode>,
    },
    /// A waiting publish was dropped: outbox overflow (drop-oldest) or message expiry.
    Dropped {
        /// Its topic.
        topic: MqttStr,
        /// Why.
        why: DropReason,
    },
    /// An AUTH packet (5.0 enhanced authentication); answer with [`Session::auth`].
    Auth(Auth),
    /// The connection is over. Close the transport after sending what `poll_transmit` holds.
    Disconnected(CloseReason),
}

/// Why a waiting publish was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The outbox was full and the policy drops the oldest.
    OutboxFull,
    /// Its Message Expiry Interval passed while it waited.
    Expired,
}

/// Why a command was refused. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The packet cannot be encoded (invalid topic, too long, ...).
    #[error("{0}")]
    Invalid(#[from] EncodeError),
    /// The outbox is full and the policy rejects new publishes.
    #[error(
        "the outbox is full ({messages} messages, {bytes} bytes); wait for the connection or raise the limit"
    )]
    OutboxFull {
        /// Messages waiting.
        messages: usize,
        /// Payload bytes waiting.
        bytes: usize,
    },
    /// All 65,535 packet identifiers are in use.
    #[error("all 65535 packet identifiers are in use")]
    NoPacketId,
    /// The packet is larger than the server accepts (its Maximum Packet Size).
    #[error("the packet is {size} bytes; the server accepts at most {max}")]
    TooLarge {
        /// The packet's size.
        size: usize,
        /// The server's limit.
        max: u32,
    },
    /// The command needs a connection (AUTH, DISCONNECT).
    #[error("not connected")]
    NotConnected,
    /// Exported outbox data that cannot be read back.
    #[error("the saved outbox cannot be read: {0}")]
    BadOutbox(String),
}

/// The first bytes of [`Session::export_outbox`] data (a format version).
const OUTBOX_MAGIC: &[u8; 8] = b"KITEOBX1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected (never, or the connection ended).
    Idle,
    /// CONNECT sent, waiting for CONNACK until the deadline.
    Connecting { deadline: Instant },
    /// Connected.
    Connected,
}

#[derive(Debug, Clone)]
enum Flight {
    /// PUBLISH sent (QoS 1: waiting for PUBACK; QoS 2: for PUBREC).
    Publish(Publish),
    /// PUBREC received, waiting for [`Session::release`] (`manual_release`).
    Received,
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Debug, Clone)]
struct Queued {
    /// Names it for [`Session::cancel`]: unique for the session's life.
    key: u64,
    publish: Publish,
    since: Instant,
}

/// A publish waiting in the outbox, as [`Session::outbox`] shows it.
#[derive(Debug, Clone, Copy)]
pub struct Waiting<'a> {
    /// What [`Session::cancel`] takes.
    pub key: u64,
    /// The message (its packet id, for QoS 1/2, is the one [`Session::publish`] returned).
    pub publish: &'a Publish,
    /// When it was queued.
    pub since: Instant,
}

/// One MQTT client session. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Session {
    opts: ConnectOptions,
    state: State,
    client_id: ByteString,
    read: BytesMut,
    out: BytesMut,
    events: VecDeque<Event>,
    limits: Limits,
    next_id: u16,
    /// Our QoS 1/2 publishes in flight, in the order they were sent.
    outgoing: VecDeque<(u16, Flight)>,
    /// Publishes waiting for the connection or the window (the outbox).
    outbox: VecDeque<Queued>,
    outbox_bytes: usize,
    next_key: u64,
    /// Incoming QoS 2 packet ids between PUBREC and PUBREL.
    incoming_qos2: HashSet<u16>,
    /// With `manual_ack`: QoS 1 messages of this connection not yet acknowledged.
    unacked: Vec<u16>,
    pending_subscribe: HashMap<u16, Subscribe>,
    pending_unsubscribe: HashMap<u16, Unsubscribe>,
    /// Subscriptions the server granted, to restore when it lost the session.
    subscriptions: Vec<Subscription>,
    /// Incoming topic aliases (5.0).
    aliases: HashMap<u16, MqttStr>,
    /// Outgoing topic aliases on this connection, and how many the server allows.
    out_aliases: HashMap<MqttStr, u16>,
    out_alias_max: u16,
    /// Send window: the server's receive maximum, or ours for 3.1.1.
    send_window: u16,
    server_max_packet: Option<u32>,
    keep_alive: Duration,
    last_sent: Option<Instant>,
    ping_deadline: Option<Instant>,
}

impl Session {
    /// A session that will connect with these options.
    pub fn new(opts: ConnectOptions) -> Self {
        let limits = Limits {
            max_packet_size: opts
                .properties
                .maximum_packet_size
                .unwrap_or(Limits::default().max_packet_size),
            ..Limits::default()
        };
        Self {
            client_id: opts.client_id.clone(),
            state: State::Idle,
            read: BytesMut::new(),
            out: BytesMut::new(),
            events: VecDeque::new(),
            limits,
            next_id: 1,
            outgoing: VecDeque::new(),
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            next_key: 0,
            incoming_qos2: HashSet::default(),
            unacked: Vec::new(),
            pending_subscribe: HashMap::default(),
            pending_unsubscribe: HashMap::default(),
            subscriptions: Vec::new(),
            aliases: HashMap::default(),
            out_aliases: HashMap::default(),
            out_alias_max: 0,
            send_window: opts.max_inflight.max(1),
            server_max_packet: None,
            keep_alive: Duration::from_secs(u64::from(opts.keep_alive)),
            last_sent: None,
            ping_deadline: None,
            opts,
        }
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.opts.version
    }

    /// Whether CONNACK accepted the connection and it has not ended.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Publishes waiting in the outbox (for the connection or the inflight window).
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// QoS 1/2 publishes sent and not yet complete.
    pub fn inflight_len(&self) -> usize {
        self.outgoing.len()
    }

    /// The publishes waiting in the outbox, oldest first (they go in this order).
    pub fn outbox(&self) -> impl ExactSizeIterator<Item = Waiting<'_>> + '_ {
        self.outbox.iter().map(|q| Waiting {
            key: q.key,
            publish: &q.publish,
            since: q.since,
        })
    }

    /// Takes a publish out of the outbox before it is sent: it will not go, and its packet
    /// id is free again. `None` if it is no longer waiting (sent, dropped, or cancelled) —
    /// a message already sent cannot be called back.
    pub fn cancel(&mut self, key: u64) -> Option<Publish> {
        let at = self.outbox.iter().position(|q| q.key == key)?;
        let q = self.outbox.remove(at)?;
        self.outbox_bytes -= q.publish.payload.len();
        Some(q.publish)
    }

    /// Starts a connection on a fresh transport: queues CONNECT.
    pub fn connect(&mut self, now: Instant) {
        self.read.clear();
        self.out.clear();
        self.aliases.clear();
        // Topic aliases belong to one connection ([MQTT-3.3.2-7]).
        self.out_aliases.clear();
        self.out_alias_max = 0;
        self.ping_deadline = None;
        let o = &self.opts;
        let connect = Connect {
            version: o.version,
            client_id: self.client_id.clone(),
            bridge: o.bridge,
            clean_start: o.clean_start,
            keep_alive: o.keep_alive,
            username: o.username.clone(),
            password: o.password.clone(),
            will: o.will.clone(),
            properties: o.properties.clone().into(),
        };
        // Only the first connection may start clean: later ones resume what we hold.
        self.opts.clean_start = false;
        self.state = State::Connecting {
            deadline: now + self.opts.connect_timeout,
        };
        self.send(&Packet::Connect(Box::new(connect)), now);
    }

    /// Bytes to write to the transport, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Idle => None,
            State::Connecting { deadline } => Some(deadline),
            State::Connected => {
                let ping = (self.keep_alive > Duration::ZERO)
                    .then(|| self.last_sent.map(|t| t + self.keep_alive))
                    .flatten();
                match (ping, self.ping_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Acts on time passing: keep-alive pings and the CONNACK / PINGRESP deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Idle => {}
            State::Connecting { deadline } => {
                if now >= deadline {
                    self.close(CloseReason::ConnectTimeout);
                }
            }
            State::Connected => {
                if self.ping_deadline.is_some_and(|d| now >= d) {
                    self.close(CloseReason::KeepAliveTimeout);
                    return;
                }
                if self.keep_alive > Duration::ZERO
                    && self.ping_deadline.is_none()
                    && self.last_sent.is_some_and(|t| now >= t + self.keep_alive)
                {
                    // [MQTT-3.1.2-23]: something must be sent within each keep-alive period.
                    self.send(&Packet::PingReq, now);
                    self.ping_deadline = Some(now + self.keep_alive);
                }
            }
        }
    }

    /// Feeds bytes read from the transport.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Instant) {
        if self.state == State::Idle {
            return;
        }
        self.read.extend_from_slice(bytes);
        loop {
            match decode(&mut self.read, self.opts.version, &self.limits) {
                Ok(Some(packet)) => {
                    self.handle_packet(packet, now);
                    if self.state == State::Idle {
                        return;
                    }
                }
                Ok(None) => return,
                // Only a client's build (no `server` feature) reads these as an error; the
                // same violation as when they are decoded (`handle_packet`).
                Err(DecodeError::SentByClients { packet }) => {
                    self.sent_by_clients(packet, now);
                    return;
                }
                Err(e) => {
                    let code = match e {
                        DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
                        _ => ReasonCode::MalformedPacket,
                    };
                    self.send_disconnect(code, now);
                    self.close(CloseReason::Malformed(e));
                    return;
                }
            }
        }
    }

    /// The transport closed. Messages in flight are kept for the next [`Session::connect`].
    pub fn connection_lost(&mut self, _now: Instant) {
        if self.state != State::Idle {
            self.close(CloseReason::ConnectionLost);
        }
    }

    /// Publishes a message; returns its packet id for QoS 1/2 (reported again by
    /// [`Event::Published`]). Sent now if connected and the window allows, else queued.
    pub fn publish(
        &mut self,
        mut publish: Publish,
        now: Instant,
    ) -> Result<Option<u16>, SessionError> {
        publish.dup = false;
        publish.packet_id = if publish.qos == QoS::AtMostOnce { 0 } else { 1 };
        // Aliases are the session's business: they are chosen per connection when sending.
        publish.properties.topic_alias = None;
        // Validate now, so that a bad publish is refused here and not on the wire later.
        let size = Packet::Publish(publish.clone()).encoded_len(self.opts.version)?;
        if let Some(max) = self.server_max_packet
            && size > max as usize
        {
            return Err(SessionError::TooLarge { size, max });
        }
        let id = if publish.qos == QoS::AtMostOnce {
            None
        } else {
            let id = self.allocate_id()?;
            publish.packet_id = id;
            Some(id)
        };
        if self.is_connected() && self.outbox.is_empty() && self.window_open(&publish) {
            self.send_publish(publish, now);
        } else {
            self.enqueue(publish, now)?;
        }
        Ok(id)
    }

    /// Publishes at QoS 1 or 2 under `packet_id`, chosen by the caller — a relay that passes
    /// on another session's messages under their own ids, so that a message sent again after a
    /// restart carries the same id (and DUP) and a server that kept the session takes it once.
    /// The caller keeps its ids apart from the session's own (use only this for QoS 1/2
    /// publishes). A publish already in flight under that id is left as it is.
    pub fn publish_with_id(
        &mut self,
        mut publish: Publish,
        packet_id: u16,
        now: Instant,
    ) -> Result<(), SessionError> {
        if publish.qos == QoS::AtMostOnce || packet_id == 0 {
            return self.publish(publish, now).map(|_| ());
        }
        if self.position(packet_id).is_some()
            || self.outbox.iter().any(|q| q.publish.packet_id == packet_id)
        {
            return Ok(());
        }
        publish.packet_id = packet_id;
        publish.properties.topic_alias = None;
        let size = Packet::Publish(publish.clone()).encoded_len(self.opts.version)?;
        if let Some(max) = self.server_max_packet
            && size > max as usize
        {
            return Err(SessionError::TooLarge { size, max });
        }
        if self.is_connected() && self.outbox.is_empty() && self.window_open(&publish) {
            self.send_publish(publish, now);
        } else {
            self.enqueue(publish, now)?;
        }
        Ok(())
    }

    /// With `manual_release`: sends PUBREL for the QoS 2 publish `packet_id` (after its
    /// [`Event::Received`]); PUBCOMP then completes it ([`Event::Published`]). An id this
    /// session does not know (it was received before a restart) is released all the same: the
    /// server that holds it completes it.
    pub fn release(&mut self, packet_id: u16, now: Instant) {
        match self.position(packet_id) {
            Some(i) => self.outgoing[i].1 = Flight::Released,
            None => self.outgoing.push_back((packet_id, Flight::Released)),
        }
        if self.is_connected() {
            self.send(&Packet::PubRel(Ack::new(packet_id)), now);
        }
    }

    /// With `manual_ack`: sends the PUBACK of the QoS 1 message `packet_id` received on this
    /// connection. An id not waiting (already acknowledged, or received on a connection that
    /// has since been lost — the server sends that message again) is ignored.
    pub fn acknowledge(&mut self, packet_id: u16, now: Instant) {
        if let Some(i) = self.unacked.iter().position(|id| *id == packet_id) {
            self.unacked.remove(i);
            self.send(&Packet::PubAck(Ack::new(packet_id)), now);
        }
    }

    /// Subscribes; returns the packet id reported again by [`Event::Subscribed`].
    pub fn subscribe(
        &mut self,
        filters: Vec<Subscription>,
        properties: Props,
        now: Instant,
    ) -> Result<u16, SessionError> {
        let mut subscribe = Subscribe {
            packet_id: 1,
            filters,
            properties,
        };
        Packet::Subscribe(subscribe.clone()).encoded_len(self.opts.version)?;
        subscribe.packet_id = self.allocate_id()?;
        let id = subscribe.packet_id;
        if self.is_connected() {
            self.send(&Packet::Subscribe(subscribe.clone()), now);
        }
        self.pending_subscribe.insert(id, subscribe);
        Ok(id)
    }

    /// Unsubscribes; returns the packet id reported again by [`Event::Unsubscribed`].
    pub fn unsubscribe(
        &mut self,
        filters: Vec<MqttStr>,
        now: Instant,
    ) -> Result<u16, SessionError> {
        let mut unsubscribe = Unsubscribe {
            packet_id: 1,
            filters,
            properties: Props::default(),
        };
        Packet::Unsubscribe(unsubscribe.clone()).encoded_len(self.opts.version)?;
        unsubscribe.packet_id = self.allocate_id()?;
        let id = unsubscribe.packet_id;
        if self.is_connected() {
            self.send(&Packet::Unsubscribe(unsubscribe.clone()), now);
        }
        self.pending_unsubscribe.insert(id, unsubscribe);
        Ok(id)
    }

    /// Sends an AUTH packet (5.0 enhanced authentication).
    pub fn auth(&mut self, auth: Auth, now: Instant) -> Result<(), SessionError> {
        if self.state == State::Idle {
            return Err(SessionError::NotConnected);
        }
        Packet::Auth(auth.clone()).encoded_len(self.opts.version)?;
        self.send(&Packet::Auth(auth), now);
        Ok(())
    }

    /// Ends the connection politely: DISCONNECT (5.0: with `reason`). The session keeps its
    /// state for a later [`Session::connect`].
    pub fn disconnect(&mut self, reason: ReasonCode, now: Instant) -> Result<(), SessionError> {
        if self.state == State::Idle {
            return Err(SessionError::NotConnected);
        }
        let d = Disconnect::new(if self.opts.version.is_v5() {
            reason
        } else {
            ReasonCode::NormalDisconnection
        });
        Packet::Disconnect(d.clone()).encoded_len(self.opts.version)?;
        self.send(&Packet::Disconnect(d), now);
        self.close(CloseReason::Requested);
        Ok(())
    }

    /// The messages not yet acknowledged — the outbox, then QoS 1/2 publishes in flight — as
    /// bytes to keep elsewhere (a browser keeps them across a page reload). Message expiry
    /// intervals are what is left of them at `now`.
    pub fn export_outbox(&self, now: Instant) -> Bytes {
        let mut out = BytesMut::from(&OUTBOX_MAGIC[..]);
        let inflight = self.outgoing.iter().filter_map(|(_, f)| match f {
            Flight::Publish(p) => Some((p, now)),
            Flight::Received | Flight::Released => None,
        });
        let queued = self.outbox.iter().map(|q| (&q.publish, q.since));
        for (p, since) in inflight.chain(queued) {
            let mut p = p.clone();
            p.dup = false;
            if p.qos != QoS::AtMostOnce {
                p.packet_id = 1;
            }
            if let Some(expiry) = p.properties.message_expiry_interval {
                let waited = u32::try_from(now.saturating_duration_since(since).as_secs())
                    .unwrap_or(u32::MAX);
                if waited >= expiry {
                    continue; // expired: nothing to keep
                }
                p.properties.message_expiry_interval = Some(expiry - waited);
            }
            // Written as MQTT 5 PUBLISH packets; a message that cannot be encoded was refused
            // when it was published, so this never skips one.
            let _ = Packet::Publish(p).encode(Version::V5, &mut out);
        }
        out.freeze()
    }

    /// Queues messages saved by [`Session::export_outbox`] (they go out as new publishes).
    /// All or nothing: if the data is damaged, nothing is queued. Returns how many were queued.
    pub fn import_outbox(&mut self, data: &[u8], now: Instant) -> Result<usize, SessionError> {
        let Some(body) = data.strip_prefix(&OUTBOX_MAGIC[..]) else {
            return Err(SessionError::BadOutbox(
                "it does not start with KITEOBX1".into(),
            ));
        };
        let mut buf = BytesMut::from(body);
        let mut messages = Vec::new();
        loop {
            match decode(&mut buf, Version::V5, &Limits::default()) {
                Ok(Some(Packet::Publish(p))) => messages.push(p),
                Ok(Some(other)) => {
                    return Err(SessionError::BadOutbox(format!(
                        "it holds a {} packet",
                        other.packet_type()
                    )));
                }
                Ok(None) if buf.is_empty() => break,
                Ok(None) => {
                    return Err(SessionError::BadOutbox(
                        "it ends in the middle of a message".into(),
                    ));
                }
                Err(e) => return Err(SessionError::BadOutbox(e.to_string())),
            }
        }
        // Check everything before queueing anything.
        for p in &messages {
            Packet::Publish(p.clone()).encoded_len(self.opts.version)?;
        }
        let limit = self.opts.outbox_limit;
        let bytes: usize = messages.iter().map(|p| p.payload.len()).sum();
        if limit.policy == OverflowPolicy::RejectNew
            && (self.outbox.len() + messages.len() > limit.messages
                || self.outbox_bytes + bytes > limit.bytes)
        {
            return Err(SessionError::OutboxFull {
                messages: self.outbox.len(),
                bytes: self.outbox_bytes,
            });
        }
        let n = messages.len();
        for p in messages {
            self.publish(p, now)?;
        }
        Ok(n)
    }

    // ---- internals ------------------------------------------------------------------

    fn send(&mut self, packet: &Packet, now: Instant) {
        // Packets built here are valid by construction; if one were not, closing beats
        // sending half of it.
        if let Err(e) = packet.encode(self.opts.version, &mut self.out) {
            self.close(CloseReason::ProtocolViolation {
                code: ReasonCode::ImplementationSpecificError,
                detail: format!(
                    "internal error: could not encode {}: {e}",
                    packet.packet_type()
                ),
            });
            return;
        }
        self.last_sent = Some(now);
    }

    fn send_disconnect(&mut self, code: ReasonCode, now: Instant) {
        if self.opts.version.is_v5() {
            self.send(&Packet::Disconnect(Disconnect::new(code)), now);
        }
    }

    fn close(&mut self, reason: CloseReason) {
        self.state = State::Idle;
        // The server sends them again on the next connection (with DUP), under ids of that
        // connection: an acknowledgement now would be for another message.
        self.unacked.clear();
        self.ping_deadline = None;
        self.events.push_back(Event::Disconnected(reason));
    }

    fn violation(&mut self, code: ReasonCode, detail: String, now: Instant) {
        self.send_disconnect(code, now);
        self.close(CloseReason::ProtocolViolation { code, detail });
    }

    /// The server sent a packet only clients send (§2.1.2).
    fn sent_by_clients(&mut self, packet: PacketType, now: Instant) {
        self.violation(
            ReasonCode::ProtocolError,
            format!("the server sent {packet}, which only clients send"),
            now,
        );
    }

    fn allocate_id(&mut self) -> Result<u16, SessionError> {
        for _ in 0..u16::MAX {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            let used = self.outgoing.iter().any(|(i, _)| *i == id)
                || self.outbox.iter().any(|q| q.publish.packet_id == id)
                || self.pending_subscribe.contains_key(&id)
                || self.pending_unsubscribe.contains_key(&id);
            if !used {
                return Ok(id);
            }
        }
        Err(SessionError::NoPacketId)
    }

    fn window_open(&self, publish: &Publish) -> bool {
        publish.qos == QoS::AtMostOnce || self.outgoing.len() < usize::from(self.send_window)
    }

    fn send_publish(&mut self, publish: Publish, now: Instant) {
        self.send_aliased(&publish, now);
        if publish.qos != QoS::AtMostOnce {
            self.outgoing
                .push_back((publish.packet_id, Flight::Publish(publish)));
        }
    }

    /// Sends a PUBLISH, replacing its topic by an alias when one is set up (5.0 §3.3.2.3.4):
    /// the first publish to a topic carries topic and new alias, later ones the alias alone.
    /// The stored message keeps its topic, so a resend on another connection is whole.
    fn send_aliased(&mut self, publish: &Publish, now: Instant) {
        if self.out_alias_max == 0 || !self.opts.version.is_v5() {
            return self.send(&Packet::Publish(publish.clone()), now);
        }
        let mut wire = publish.clone();
        match self.out_aliases.get(&publish.topic) {
            Some(&alias) => {
                wire.topic = MqttStr::new();
                wire.properties.topic_alias = Some(alias);
            }
            None => {
                let next = self.out_aliases.len() + 1;
                if let Ok(alias) = u16::try_from(next)
                    && alias <= self.out_alias_max
                {
                    self.out_aliases.insert(publish.topic.clone(), alias);
                    wire.properties.topic_alias = Some(alias);
                }
            }
        }
        self.send(&Packet::Publish(wire), now);
    }

    fn enqueue(&mut self, publish: Publish, now: Instant) -> Result<(), SessionError> {
        let limit = self.opts.outbox_limit;
        let size = publish.payload.len();
        let full =
            |s: &Self| s.outbox.len() >= limit.messages || s.outbox_bytes + size > limit.bytes;
        if full(self) {
            match limit.policy {
                OverflowPolicy::RejectNew => {
                    return Err(SessionError::OutboxFull {
                        messages: self.outbox.len(),
                        bytes: self.outbox_bytes,
                    });
                }
                OverflowPolicy::DropOldest => {
                    while full(self) {
                        let Some(old) = self.outbox.pop_front() else {
                            break;
                        };
                        self.outbox_bytes -= old.publish.payload.len();
                        self.events.push_back(Event::Dropped {
                            topic: old.publish.topic,
                            why: DropReason::OutboxFull,
                        });
                    }
                }
            }
        }
        self.outbox_bytes += size;
        self.next_key += 1;
        self.outbox.push_back(Queued {
            key: self.next_key,
            publish,
            since: now,
        });
        Ok(())
    }

    /// Sends what the outbox holds, as far as the window allows, dropping expired messages
    /// and counting the time waited off the others' expiry ([MQTT-3.3.2-6]).
    fn flush_outbox(&mut self, now: Instant) {
        while self.is_connected() {
            let Some(front) = self.outbox.front() else {
                return;
            };
            if !self.window_open(&front.publish) {
                return;
            }
            let Some(Queued {
                mut publish, since, ..
            }) = self.outbox.pop_front()
            else {
                return;
            };
            self.outbox_bytes -= publish.payload.len();
            if let Some(expiry) = publish.properties.message_expiry_interval {
                let waited = u32::try_from(now.saturating_duration_since(since).as_secs())
                    .unwrap_or(u32::MAX);
                if waited >= expiry {
                    self.events.push_back(Event::Dropped {
                        topic: publish.topic,
                        why: DropReason::Expired,
                    });
                    continue;
                }
                publish.properties.message_expiry_interval = Some(expiry - waited);
            }
            self.send_publish(publish, now);
        }
    }

    fn handle_packet(&mut self, packet: Packet, now: Instant) {
        if let State::Connecting { .. } = self.state {
            match packet {
                Packet::ConnAck(connack) => self.on_connack(connack, now),
                Packet::Auth(auth) => self.events.push_back(Event::Auth(auth)),
                other => self.violation(
                    ReasonCode::ProtocolError,
                    format!("{} before CONNACK [MQTT-3.2.0-1]", other.packet_type()),
                    now,
                ),
            }
            return;
        }
        match packet {
            Packet::ConnAck(_) => {
                self.violation(ReasonCode::ProtocolError, "a second CONNACK".into(), now)
            }
            Packet::Publish(p) => self.on_publish(p, now),
            Packet::PubAck(ack) => self.on_puback(ack, now),
            Packet::PubRec(ack) => self.on_pubrec(ack, now),
            Packet::PubRel(ack) => {
                // [MQTT-4.3.3-11]: PUBCOMP for the PUBREL; the message was delivered at PUBLISH.
                let known = self.incoming_qos2.remove(&ack.packet_id);
                let mut comp = Ack::new(ack.packet_id);
                if !known && self.opts.version.is_v5() {
                    comp.reason = ReasonCode::PacketIdentifierNotFound;
                }
                self.send(&Packet::PubComp(comp), now);
            }
            Packet::PubComp(ack) => self.on_pubcomp(ack, now),
            Packet::SubAck(ack) => self.on_suback(ack, now),
            Packet::UnsubAck(ack) => self.on_unsuback(ack, now),
            Packet::PingResp => self.ping_deadline = None,
            Packet::Disconnect(d) => self.close(CloseReason::ServerDisconnect {
                reason: d.reason,
                reason_string: d.properties.reason_string.clone(),
            }),
            Packet::Auth(auth) => self.events.push_back(Event::Auth(auth)),
            other @ (Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq) => self.sent_by_clients(other.packet_type(), now),
        }
    }

    fn on_connack(&mut self, connack: ConnAck, now: Instant) {
        if connack.reason.is_error() {
            self.close(CloseReason::Refused {
                reason: connack.reason,
                reason_string: connack.properties.reason_string.clone(),
            });
            return;
        }
        self.state = State::Connected;
        let p = &connack.properties;
        if let Some(id) = &p.assigned_client_identifier {
            self.client_id = id.clone().into();
        }
        if let Some(ka) = p.server_keep_alive {
            // [MQTT-3.2.2-21]: the server's keep-alive replaces ours.
            self.keep_alive = Duration::from_secs(u64::from(ka));
        }
        self.send_window = p
            .receive_maximum
            .unwrap_or(u16::MAX)
            .min(self.opts.max_inflight)
            .max(1);
        self.server_max_packet = p.maximum_packet_size;
        if self.opts.outgoing_topic_aliases {
            self.out_alias_max = p.topic_alias_maximum.unwrap_or(0);
        }
        let session_present = connack.session_present;
        self.events.push_back(Event::Connected {
            session_present,
            client_id: self.client_id.clone(),
            connack,
        });
        self.resume(session_present, now);
        self.flush_outbox(now);
    }

    /// After CONNACK: resend what is in flight (session present), or re-publish it and
    /// restore subscriptions (the server lost the session).
    fn resume(&mut self, session_present: bool, now: Instant) {
        let inflight: Vec<(u16, Flight)> = self.outgoing.drain(..).collect();
        if session_present {
            // [MQTT-4.4.0-1]: resend unacknowledged PUBLISH (DUP=1) and PUBREL, in order.
            for (id, flight) in inflight {
                match flight {
                    Flight::Publish(mut p) => {
                        p.dup = true;
                        self.send_aliased(&p, now);
                        self.outgoing.push_back((id, Flight::Publish(p)));
                    }
                    Flight::Released => {
                        self.send(&Packet::PubRel(Ack::new(id)), now);
                        self.outgoing.push_back((id, Flight::Released));
                    }
                    // The server holds it, waiting for our PUBREL: nothing is owed yet.
                    Flight::Received => self.outgoing.push_back((id, Flight::Received)),
                }
            }
        } else {
            self.incoming_qos2.clear();
            // The server lost the session: publishes not acknowledged go again as new messages
            // (ahead of the outbox, in order); PUBREL-stage ones were received by the server.
            for (id, flight) in inflight.into_iter().rev() {
                match flight {
                    Flight::Publish(p) => {
                        self.outbox_bytes += p.payload.len();
                        self.next_key += 1;
                        self.outbox.push_front(Queued {
                            key: self.next_key,
                            publish: p,
                            since: now,
                        });
                    }
                    Flight::Released | Flight::Received => {
                        self.events.push_back(Event::Published {
                            packet_id: id,
                            reason: ReasonCode::Success,
                        });
                    }
                }
            }
        }
        // Requests the server never answered go again, SUBSCRIBEs and UNSUBSCRIBEs together in
        // the order they were made (the server applies them in the order it reads them). Ids
        // are allocated one after another from `next_id`, wrapping from 65535 to 1 and skipping
        // those in use, so the oldest waiting request is the first at or after `next_id`: one
        // walk around the ids, only when something waits (and no sort in kite.js's wasm).
        if !(self.pending_subscribe.is_empty() && self.pending_unsubscribe.is_empty()) {
            let mut id = self.next_id;
            for _ in 0..u16::MAX {
                let packet = match self.pending_subscribe.get(&id) {
                    Some(s) => Some(Packet::Subscribe(s.clone())),
                    None => self
                        .pending_unsubscribe
                        .get(&id)
                        .map(|u| Packet::Unsubscribe(u.clone())),
                };
                if let Some(p) = packet {
                    self.send(&p, now);
                }
                id = id.checked_add(1).unwrap_or(1);
            }
        }
        // The server lost the session: subscribe again to what it had granted.
        if !session_present
            && !self.subscriptions.is_empty()
            && let Ok(id) = self.allocate_id()
        {
            let s = Subscribe {
                packet_id: id,
                filters: self.subscriptions.clone(),
                properties: Props::default(),
            };
            self.send(&Packet::Subscribe(s.clone()), now);
            self.pending_subscribe.insert(id, s);
        }
    }

    fn on_publish(&mut self, mut p: Publish, now: Instant) {
        // Incoming topic aliases (5.0 §3.3.2.3.4).
        if let Some(alias) = p.properties.topic_alias {
            let max = self.opts.properties.topic_alias_maximum.unwrap_or(0);
            if alias > max {
                return self.violation(
                    ReasonCode::TopicAliasInvalid,
                    format!("topic alias {alias} is above our maximum of {max} [MQTT-3.3.2-9]"),
                    now,
                );
            }
            if p.topic.is_empty() {
                match self.aliases.get(&alias) {
                    Some(topic) => p.topic = topic.clone(),
                    None => {
                        return self.violation(
                            ReasonCode::TopicAliasInvalid,
                            format!("topic alias {alias} was never set"),
                            now,
                        );
                    }
                }
            } else {
                self.aliases.insert(alias, p.topic.clone());
            }
            p.properties.topic_alias = None;
        }
        match p.qos {
            QoS::AtMostOnce => self.events.push_back(Event::Message(p)),
            QoS::AtLeastOnce => {
                let id = p.packet_id;
                self.events.push_back(Event::Message(p));
                if self.opts.manual_ack {
                    if !self.unacked.contains(&id) {
                        self.unacked.push(id);
                    }
                } else {
                    self.send(&Packet::PubAck(Ack::new(id)), now);
                }
            }
            QoS::ExactlyOnce => {
                let id = p.packet_id;
                // [MQTT-4.3.3-9]: deliver once; a repeat before PUBREL is only acknowledged.
                if self.incoming_qos2.insert(id) {
                    let max = self.opts.properties.receive_maximum.unwrap_or(u16::MAX);
                    if self.incoming_qos2.len() > usize::from(max) {
                        return self.violation(
                            ReasonCode::ReceiveMaximumExceeded,
                            format!("more than our receive maximum of {max} QoS 2 messages unacknowledged"),
                            now,
                        );
                    }
                    self.events.push_back(Event::Message(p));
                }
                self.send(&Packet::PubRec(Ack::new(id)), now);
            }
        }
    }

    fn position(&self, id: u16) -> Option<usize> {
        self.outgoing.iter().position(|(i, _)| *i == id)
    }

    fn on_puback(&mut self, ack: Ack, now: Instant) {
        match self.position(ack.packet_id) {
            Some(i) if matches!(&self.outgoing[i].1, Flight::Publish(p) if p.qos == QoS::AtLeastOnce) =>
            {
                self.outgoing.remove(i);
                self.events.push_back(Event::Published {
                    packet_id: ack.packet_id,
                    reason: ack.reason,
                });
                self.flush_outbox(now);
            }
            _ => self.violation(
                ReasonCode::ProtocolError,
                format!(
                    "PUBACK for packet id {}, which has no QoS 1 publish in flight",
                    ack.packet_id
                ),
                now,
            ),
        }
    }

    fn on_pubrec(&mut self, ack: Ack, now: Instant) {
        match self.position(ack.packet_id) {
            Some(i) if matches!(&self.outgoing[i].1, Flight::Publish(p) if p.qos == QoS::ExactlyOnce) =>
            {
                if ack.reason.is_error() {
                    // 5.0 §4.3.3: a failed PUBREC ends the flow.
                    self.outgoing.remove(i);
                    self.events.push_back(Event::Published {
                        packet_id: ack.packet_id,
                        reason: ack.reason,
                    });
                    self.flush_outbox(now);
                } else if self.opts.manual_release {
                    self.outgoing[i].1 = Flight::Received;
                    self.events.push_back(Event::Received {
                        packet_id: ack.packet_id,
                    });
                } else {
                    self.outgoing[i].1 = Flight::Released;
                    self.send(&Packet::PubRel(Ack::new(ack.packet_id)), now);
                }
            }
            // A repeated PUBREC: PUBREL again (or, not released yet, nothing more to do).
            Some(i) if matches!(self.outgoing[i].1, Flight::Released) => {
                self.send(&Packet::PubRel(Ack::new(ack.packet_id)), now);
            }
            Some(i) if matches!(self.outgoing[i].1, Flight::Received) => {}
            _ => self.violation(
                ReasonCode::ProtocolError,
                format!(
                    "PUBREC for packet id {}, which has no QoS 2 publish in flight",
                    ack.packet_id
                ),
                now,
            ),
        }
    }

    fn on_pubcomp(&mut self, ack: Ack, now: Instant) {
        match self.position(ack.packet_id) {
            Some(i) if matches!(self.outgoing[i].1, Flight::Released) => {
                self.outgoing.remove(i);
                self.events.push_back(Event::Published {
                    packet_id: ack.packet_id,
                    reason: ack.reason,
                });
                self.flush_outbox(now);
            }
            _ => self.violation(
                ReasonCode::ProtocolError,
                format!(
                    "PUBCOMP for packet id {}, which has no PUBREL outstanding",
                    ack.packet_id
                ),
                now,
            ),
        }
    }

    fn on_suback(&mut self, ack: SubAck, now: Instant) {
        let Some(sub) = self.pending_subscribe.remove(&ack.packet_id) else {
            return self.violation(
                ReasonCode::ProtocolError,
                format!(
                    "SUBACK for packet id {}, which has no SUBSCRIBE outstanding",
                    ack.packet_id
                ),
                now,
            );
        };
        if ack.reasons.len() != sub.filters.len() {
            return self.violation(
                ReasonCode::ProtocolError,
                format!(
                    "SUBACK has {} codes for {} filters [MQTT-3.8.4-6]",
                    ack.reasons.len(),
                    sub.filters.len()
                ),
                now,
            );
        }
        for (filter, reason) in sub.filters.into_iter().zip(&ack.reasons) {
            if !reason.is_error() {
                self.subscriptions.retain(|s| s.filter != filter.filter);
                self.subscriptions.push(filter);
            }
        }
        self.events.push_back(Event::Subscribed {
            packet_id: ack.packet_id,
            reasons: ack.reasons,
        });
    }

    fn on_unsuback(&mut self, ack: UnsubAck, now: Instant) {
        let Some(unsub) = self.pending_unsubscribe.remove(&ack.packet_id) else {
            return self.violation(
                ReasonCode::ProtocolError,
                format!(
                    "UNSUBACK for packet id {}, which has no UNSUBSCRIBE outstanding",
                    ack.packet_id
                ),
                now,
            );
        };
        self.subscriptions
            .retain(|s| !unsub.filters.contains(&s.filter));
        self.events.push_back(Event::Unsubscribed {
            packet_id: ack.packet_id,
            reasons: ack.reasons,
        });
    }
}
