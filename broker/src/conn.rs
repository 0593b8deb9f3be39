//! One client connection to the embedded broker: CONNECT, then a loop that reads packets,
//! writes what the session has to send, and watches keep-alive — until the connection ends.
//! Then the Will, and the session's expiry.
//!
//! The socket is split: reading and writing progress independently inside one `select!`, so a
//! client that writes without reading can never deadlock the two. What is waiting to be written
//! is bounded ([`OUT_HIGH_WATER`]): above it, the task neither reads nor takes deliveries from
//! the session's queue until the client has taken the bytes.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kite_mqtt::codec::wire::{VarInt, read_var_int};
use kite_mqtt::codec::{
    Ack, ConnAck, Connect, Disconnect, Properties, Props, Publish, ReasonCode, SubAck, Subscribe,
    UnsubAck, Unsubscribe, Will,
};
use kite_mqtt::topic::parse_shared;
use kite_mqtt::{DecodeError, Limits, MqttStr, Packet, QoS, Version};
use kite_policy::{Admission, Refused};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::out::Out;
use super::session::{Awaiting, Delivery, Inflight, Kind, Slot};
use super::store::{Op, Sent};
use super::{Broker, Message, Stats, SubscribeEntry, lock, stopped};

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

/// Packets taken from a local client's link at once.
const LOCAL_BATCH: usize = 64;

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
}

impl ConnInfo {
    /// A device on the TCP listener.
    pub fn tcp(peer: SocketAddr) -> Self {
        Self {
            peer,
            transport: "tcp",
            authenticated: None,
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
        }
    }

    /// A browser session handed over by the gateway's WebSocket handler: `login` is `Some`
    /// when it checked the credentials (users or `[jwt]` are configured).
    pub fn websocket(peer: SocketAddr, login: Option<kite_policy::auth::Login>) -> Self {
        Self {
            peer,
            transport: "websocket",
            authenticated: login,
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

/// Why the first packet did not start a session.
enum FirstError {
    Closed,
    Io(std::io::Error),
    Decode(DecodeError),
    NotConnect,
}

async fn read_first<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Box<Connect>, FirstError> {
    loop {
        match kite_mqtt::decode(buf, Version::V5, limits) {
            Ok(Some(Packet::Connect(c))) => return Ok(c),
            // The first packet must be CONNECT [MQTT-3.1.0-1].
            Ok(Some(_)) => return Err(FirstError::NotConnect),
            Ok(None) => {}
            Err(e) => return Err(FirstError::Decode(e)),
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Err(FirstError::Closed),
            Ok(_) => {}
            Err(e) => return Err(FirstError::Io(e)),
        }
    }
}

/// Room for the rest of the packet that `inbuf` holds the start of (its size is in its fixed
/// header), at most [`READ_AHEAD`] more. Without it a large packet is read in small steps:
/// `BytesMut` grows by 64 bytes at a time from a fresh small buffer whenever the previous
/// packet's payload still holds the old one (it is queued for subscribers). Capped, so that a
/// size announced in five bytes never makes the broker allocate much.
fn make_room(inbuf: &mut BytesMut) {
    let missing = match inbuf.get(1..).map(read_var_int) {
        Some(Ok(VarInt::Value(remaining, n))) => {
            (1 + n + remaining as usize).saturating_sub(inbuf.len())
        }
        _ => 0,
    };
    if missing > 0 {
        inbuf.reserve(missing.min(READ_AHEAD));
    }
}

/// The protocol level a (possibly malformed) CONNECT in `buf` announces, if it can be read.
fn connect_level(buf: &[u8]) -> Option<u8> {
    let mut i = 1;
    while *buf.get(i)? & 0x80 != 0 {
        i += 1;
    }
    let name_len = usize::from(u16::from_be_bytes([*buf.get(i + 1)?, *buf.get(i + 2)?]));
    buf.get(i + 3 + name_len).copied()
}

/// Writes `out` (bounded by [`CLOSE_TIMEOUT`]) and closes the write side.
async fn flush_and_close<W: AsyncWrite + Unpin>(wr: &mut W, out: &mut Out) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        out.write_all(wr).await?;
        wr.shutdown().await
    })
    .await;
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

pub(super) async fn serve<S>(broker: Broker, stream: S, info: ConnInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let config = broker.config().clone();
    let limits = Limits {
        max_packet_size: config.max_packet_size,
        max_user_properties: config.max_user_properties,
    };
    // Small to start (an idle client costs little); it grows with the packets that come.
    let mut inbuf = BytesMut::with_capacity(512);
    let first = tokio::time::timeout(
        config.connect_timeout,
        read_first(&mut rd, &mut inbuf, &limits),
    )
    .await;
    let connect = match first {
        Ok(Ok(c)) => c,
        Err(_) => {
            tracing::debug!(peer = %info.peer, "no CONNECT in time; closed");
            return flush_and_close(&mut wr, &mut Out::default()).await;
        }
        Ok(Err(FirstError::Closed)) => return,
        Ok(Err(FirstError::Io(e))) => {
            tracing::debug!(peer = %info.peer, "connection failed before CONNECT: {e}");
            return;
        }
        Ok(Err(FirstError::NotConnect)) => {
            tracing::debug!(peer = %info.peer, "first packet was not CONNECT [MQTT-3.1.0-1]; closed");
            return flush_and_close(&mut wr, &mut Out::default()).await;
        }
        Ok(Err(FirstError::Decode(e))) => {
            tracing::debug!(peer = %info.peer, "bad CONNECT: {e}");
            let mut out = Out::default();
            match (e, connect_level(&inbuf)) {
                // Unsupported level: CONNACK return code 1 in the 3.1.1 form [MQTT-3.1.2-2].
                (DecodeError::UnsupportedProtocolLevel { .. }, _) => {
                    let (p, v) =
                        refusal(Version::V3_1_1, ReasonCode::UnsupportedProtocolVersion, "");
                    encode(p, v, &mut out);
                }
                (DecodeError::InvalidProtocolName { .. }, _) => {}
                (e, Some(5)) => {
                    let code = match e {
                        DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
                        DecodeError::TooManyUserProperties { .. } => {
                            Stats::add(&broker.stats().user_properties_refused, 1);
                            ReasonCode::QuotaExceeded
                        }
                        _ => ReasonCode::MalformedPacket,
                    };
                    let (p, v) = refusal(Version::V5, code, &e.to_string());
                    encode(p, v, &mut out);
                }
                _ => {}
            }
            return flush_and_close(&mut wr, &mut out).await;
        }
    };
    let mut out = Out::new(wr.is_write_vectored());
    let Some(mut opened) = open(&broker, *connect, &info, limits, &mut out).await else {
        return flush_and_close(&mut wr, &mut out).await;
    };
    let end = opened
        .conn
        .run(&mut rd, &mut wr, &mut inbuf, &mut out, opened.keep_alive)
        .await;
    let client_id = opened.close(&end, &mut out);
    flush_and_close(&mut wr, &mut out).await;
    closed(&broker, &info, &client_id, &end);
}

/// A client past its CONNECT: the connection's state, its keep-alive and its Will.
struct Opened {
    conn: Conn,
    keep_alive: u16,
    will: Option<Will>,
}

impl Opened {
    /// After the connection's loop: the DISCONNECT that says why (MQTT 5), the session
    /// released and the Will routed — before the transport closes, so a client that sees the
    /// close can rely on both having happened. Returns the client id.
    fn close(self, end: &End, out: &mut Out) -> Arc<str> {
        let Self { conn, will, .. } = self;
        if conn.version.is_v5()
            && let Some((code, detail)) = end.disconnect()
        {
            let mut d = Disconnect::new(code);
            if conn.problem_info || matches!(end, End::Violation(..)) {
                d.properties.reason_string = Some(reason_text(&detail));
            }
            encode(Packet::Disconnect(d), conn.version, out);
        }
        let client_id = conn.client_id.clone();
        conn.finish(end, will);
        client_id
    }
}

/// The connection's last line and count.
fn closed(broker: &Broker, info: &ConnInfo, client_id: &str, end: &End) {
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

/// Serves an in-process client ([`crate::LocalClient`]): the same CONNECT handling, session,
/// rules and bounds as [`serve`], with typed packets instead of bytes.
pub(super) async fn serve_local(
    broker: Broker,
    connect: Connect,
    info: ConnInfo,
    mut rx: tokio::sync::mpsc::Receiver<Packet>,
    tx: tokio::sync::mpsc::Sender<Vec<Packet>>,
) {
    let config = broker.config();
    let limits = Limits {
        max_packet_size: config.max_packet_size,
        max_user_properties: config.max_user_properties,
    };
    let mut out = Out::local();
    let Some(mut opened) = open(&broker, connect, &info, limits, &mut out).await else {
        return flush_local(&tx, &mut out).await;
    };
    let end = opened
        .conn
        .run_local(&mut rx, &tx, &mut out, opened.keep_alive)
        .await;
    let client_id = opened.close(&end, &mut out);
    flush_local(&tx, &mut out).await;
    closed(&broker, &info, &client_id, &end);
}

/// Hands the last packets (a refusal, a DISCONNECT) to a local client, bounded by
/// [`CLOSE_TIMEOUT`]; the link closes when `tx` is dropped.
async fn flush_local(tx: &tokio::sync::mpsc::Sender<Vec<Packet>>, out: &mut Out) {
    let packets = out.take_packets();
    if !packets.is_empty() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, tx.send(packets)).await;
    }
}

/// The CONNECT: admission, client id, limits, the session attached (resumed or new), and the
/// CONNACK in `out` — or a refusal in `out` and `None`.
async fn open(
    broker: &Broker,
    connect: Connect,
    info: &ConnInfo,
    limits: Limits,
    out: &mut Out,
) -> Option<Opened> {
    let broker = broker.clone();
    let config = broker.config().clone();
    let version = connect.version;

    let (client_id, assigned) = if connect.client_id.is_empty() {
        (broker.assign_client_id(), true)
    } else {
        (Arc::<str>::from(&*connect.client_id), false)
    };
    let admission = match admit(&broker, &connect, &client_id, info).await {
        Ok(admitted) => admitted,
        Err(refused) => {
            tracing::info!(peer = %info.peer, client_id = %connect.client_id, "connection refused: {}", refused.detail);
            let (p, v) = refusal(version, refused.code, &refused.detail);
            encode(p, v, out);
            return None;
        }
    };
    // 3.1.1: an empty client id needs a clean session [MQTT-3.1.3-8].
    if assigned && !version.is_v5() && !connect.clean_start {
        let (p, v) = refusal(
            version,
            ReasonCode::ClientIdentifierNotValid,
            "an empty client id needs clean session",
        );
        encode(p, v, out);
        return None;
    }
    // The login's user name: a token's `sub` with JWT.
    let login_user = admission.user().map(str::to_owned);
    let user: Arc<str> = login_user
        .as_deref()
        .or(connect.username.as_deref())
        .unwrap_or("")
        .into();
    let acl = admission.acl().cloned();
    if let Some(why) = connect
        .will
        .as_ref()
        .and_then(|w| config.topic_beyond_limits(&w.topic))
    {
        Stats::add(&broker.stats().topics_refused, 1);
        let detail = format!("the Will topic is refused: {why}");
        tracing::info!(peer = %info.peer, "connection refused: {detail}");
        // 0x90 Topic Name invalid (3.1.1: 3, Server unavailable — it has no closer code).
        let (p, v) = refusal(version, ReasonCode::TopicNameInvalid, &detail);
        encode(p, v, out);
        return None;
    }
    let expiry = if version.is_v5() {
        connect
            .properties
            .session_expiry_interval
            .unwrap_or(0)
            .min(config.max_session_expiry)
    } else if connect.clean_start {
        0
    } else {
        config.max_session_expiry
    };
    // Only an MQTT 5 client can be told (Server Keep Alive, which it must then use
    // [MQTT-3.2.2-21]); a 3.1.1 client keeps what it asked for — held to a shorter one it
    // cannot know of, it would be cut off between its pings.
    let (keep_alive, server_keep_alive) = if version.is_v5()
        && config.max_keep_alive > 0
        && (connect.keep_alive == 0 || connect.keep_alive > config.max_keep_alive)
    {
        (config.max_keep_alive, true)
    } else {
        (connect.keep_alive, false)
    };
    let id = broker.next_id();
    let owner: Option<Arc<str>> = login_user.as_deref().map(Arc::from);
    let Ok((slot, present)) =
        broker.attach(&client_id, owner.as_ref(), connect.clean_start, id, expiry)
    else {
        // Neither resumed nor ended: a session is its login's, and another user must not take
        // its subscriptions and queue, nor cut its connection off.
        let detail =
            "this client id holds a session of another user; connect with another client id";
        tracing::info!(peer = %info.peer, client_id = %client_id.escape_debug(), "connection refused: {detail}");
        let (p, v) = refusal(version, ReasonCode::NotAuthorized, detail);
        encode(p, v, out);
        return None;
    };
    if present && let Some(acl) = &acl {
        // Resumed under rules that may differ from those it subscribed under (a role changed,
        // or a token with another role claim): what they no longer grant is dropped.
        let refused: Vec<MqttStr> = lock(&slot.state)
            .subscriptions
            .keys()
            .filter(|f| acl.subscribe_refusal(f, &user, &client_id).is_some())
            .cloned()
            .collect();
        for f in refused {
            lock(&slot.state).subscriptions.remove(&f);
            broker.unsubscribe(slot.id, &f);
        }
    }
    Stats::add(&broker.stats().clients_connected, 1);
    tracing::debug!(peer = %info.peer, transport = info.transport, client_id = %client_id, present, "client connected");

    let mut ack = ConnAck {
        session_present: present,
        reason: ReasonCode::Success,
        properties: Props::default(),
    };
    if version.is_v5() {
        let p = &mut ack.properties;
        if assigned {
            p.assigned_client_identifier = Some(MqttStr::from(&*client_id));
        }
        if server_keep_alive {
            p.server_keep_alive = Some(keep_alive);
        }
        p.receive_maximum = Some(config.receive_maximum);
        p.maximum_packet_size = Some(config.max_packet_size);
        p.topic_alias_maximum = Some(config.topic_alias_maximum);
    }
    let props = &connect.properties;
    let read_denied = acl
        .as_ref()
        .map(|a| a.read_denials(&user, &client_id))
        .unwrap_or_default();
    let read_allowed = acl
        .as_ref()
        .and_then(|a| a.read_allowances(&user, &client_id));
    let mut conn = Conn {
        broker: broker.clone(),
        id,
        version,
        slot,
        client_id,
        limits,
        connect_expiry_zero: expiry == 0,
        client_receive_max: props.receive_maximum.unwrap_or(u16::MAX),
        client_max_packet: props.maximum_packet_size.unwrap_or(u32::MAX),
        client_alias_max: props.topic_alias_maximum.unwrap_or(0),
        problem_info: props.request_problem_information.unwrap_or(true),
        aliases_in: HashMap::new(),
        aliases_out: HashMap::new(),
        pending: VecDeque::new(),
        committed: broker.committed(),
        acl,
        read_denied,
        read_allowed,
        user,
    };
    // A persistent session is stored before the CONNACK that confirms it.
    let ticket = broker.persist_session(&conn.slot, 0);
    if ticket > 0
        && let Some(mut committed) = broker.committed()
    {
        // Nothing may go out before the CONNACK [MQTT-3.2.0-1]: wait here, not in `pending`.
        let _ = committed.wait_for(|c| *c >= ticket).await.is_ok();
    }
    encode(Packet::ConnAck(ack), version, out);
    let will = connect.will.clone();
    drop(connect);
    if present {
        conn.resend(out);
    }
    Some(Opened {
        conn,
        keep_alive,
        will,
    })
}

/// Checks credentials (unless the gateway did, for its sessions) on the login workers, then
/// admits the CONNECT by the policy (role, Will topic rules), and refuses what the broker does
/// not support.
async fn admit(
    broker: &Broker,
    connect: &Connect,
    client_id: &str,
    info: &ConnInfo,
) -> Result<Admission, Refused> {
    let checked = match &info.authenticated {
        Some(login) => Some(login.clone()),
        None if broker.auth().required() => {
            let auth = broker.auth().clone();
            let deadline = broker.config().connect_timeout;
            let checking = broker
                .logins()
                .check_connect(connect, info.peer.ip(), deadline, {
                    move |user, password| auth.check(user, password)
                });
            Some(checking.await?)
        }
        None => None,
    };
    if connect.properties.authentication_method.is_some() {
        return Err(Refused::new(
            ReasonCode::BadAuthenticationMethod,
            "enhanced authentication (AUTH) is not supported; use a user name and password",
        ));
    }
    broker.auth().admit(connect, client_id, checked)
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

    async fn run<R, W>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        inbuf: &mut BytesMut,
        out: &mut Out,
        keep_alive: u16,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut shutdown = self.broker.shutdown_signal();
        let grace = Duration::from_millis(u64::from(keep_alive) * 1500);
        let mut deadline = tokio::time::Instant::now() + grace;
        let slot = self.slot.clone();
        let mut committed = self.committed.clone();
        // Packets already buffered behind the CONNECT.
        if let Err(end) = self.handle_buffered(inbuf, out) {
            return end;
        }
        // Bytes read since this task last let others run.
        let mut turn = 0;
        loop {
            if turn >= FAIR_SHARE {
                turn = 0;
                tokio::task::yield_now().await;
            }
            if let Some(end) = self.taken_over() {
                return end;
            }
            self.release(out);
            self.fill(out, Instant::now());
            let reading = out.len() < OUT_HIGH_WATER && self.pending.len() < MAX_PENDING;
            let waiting = !self.pending.is_empty();
            let slices = out.slices();
            tokio::select! {
                r = rd.read_buf(inbuf), if reading => match r {
                    Ok(0) => return End::Closed,
                    Ok(n) => {
                        turn += n;
                        Stats::add(&self.broker.stats().bytes_received, n as u64);
                        deadline = tokio::time::Instant::now() + grace;
                        if let Err(end) = self.handle_buffered(inbuf, out) {
                            return end;
                        }
                    }
                    Err(e) => return End::Io(e.to_string()),
                },
                w = wr.write_vectored(&slices), if !slices.is_empty() => match w {
                    Ok(0) => return End::Closed,
                    Ok(n) => {
                        Stats::add(&self.broker.stats().bytes_sent, n as u64);
                        out.advance(n);
                    }
                    Err(e) => return End::Io(e.to_string()),
                },
                () = slot.notify.notified() => {}
                c = async { committed.as_mut()?.changed().await.ok() }, if waiting => {
                    if c.is_none() {
                        return End::Io("the broker's store stopped".to_owned());
                    }
                }
                () = tokio::time::sleep_until(deadline), if keep_alive > 0 => return End::KeepAlive,
                () = stopped(&mut shutdown) => return End::Shutdown,
            }
        }
    }

    /// [`Conn::run`] for an in-process client: packets come from `rx` (the same limits as
    /// decoding bytes would apply: maximum packet size, User Properties), and go to `tx` in
    /// batches — what `out` holds when the link has room.
    async fn run_local(
        &mut self,
        rx: &mut tokio::sync::mpsc::Receiver<Packet>,
        tx: &tokio::sync::mpsc::Sender<Vec<Packet>>,
        out: &mut Out,
        keep_alive: u16,
    ) -> End {
        let mut shutdown = self.broker.shutdown_signal();
        let grace = Duration::from_millis(u64::from(keep_alive) * 1500);
        let mut deadline = tokio::time::Instant::now() + grace;
        let slot = self.slot.clone();
        let mut committed = self.committed.clone();
        let mut batch = Vec::with_capacity(LOCAL_BATCH);
        let mut turn = 0;
        loop {
            if turn >= FAIR_SHARE {
                turn = 0;
                tokio::task::yield_now().await;
            }
            if let Some(end) = self.taken_over() {
                return end;
            }
            self.release(out);
            self.fill(out, Instant::now());
            let reading = out.len() < OUT_HIGH_WATER && self.pending.len() < MAX_PENDING;
            let waiting = !self.pending.is_empty();
            let sending = !out.is_empty();
            tokio::select! {
                n = rx.recv_many(&mut batch, LOCAL_BATCH), if reading => {
                    if n == 0 {
                        return End::Closed;
                    }
                    deadline = tokio::time::Instant::now() + grace;
                    // What was routed to this session before these packets arrived goes out
                    // before the answers to them, as for bytes.
                    self.fill(out, Instant::now());
                    for packet in batch.drain(..) {
                        let len = match self.within_limits(&packet) {
                            Ok(len) => len,
                            Err(end) => return end,
                        };
                        turn += len;
                        Stats::add(&self.broker.stats().bytes_received, len as u64);
                        if let Err(end) = self.handle(packet, out) {
                            return end;
                        }
                    }
                }
                permit = tx.reserve(), if sending => match permit {
                    Ok(permit) => {
                        Stats::add(&self.broker.stats().bytes_sent, out.len() as u64);
                        permit.send(out.take_packets());
                    }
                    Err(_) => return End::Closed,
                },
                () = slot.notify.notified() => {}
                c = async { committed.as_mut()?.changed().await.ok() }, if waiting => {
                    if c.is_none() {
                        return End::Io("the broker's store stopped".to_owned());
                    }
                }
                () = tokio::time::sleep_until(deadline), if keep_alive > 0 => return End::KeepAlive,
                () = stopped(&mut shutdown) => return End::Shutdown,
            }
        }
    }

    /// The checks decoding applies to bytes, for a typed packet: its encoded size within the
    /// Maximum Packet Size, its User Properties within the limit. Returns the size.
    fn within_limits(&self, packet: &Packet) -> Result<usize, End> {
        let len = packet.encoded_len(self.version).map_err(|e| {
            End::violation(
                ReasonCode::MalformedPacket,
                format!("malformed packet: {e}"),
            )
        })?;
        if len as u64 > u64::from(self.limits.max_packet_size) {
            return Err(End::violation(
                ReasonCode::PacketTooLarge,
                format!(
                    "a packet of {len} bytes is over the maximum packet size {}",
                    self.limits.max_packet_size
                ),
            ));
        }
        let properties = match packet {
            Packet::Publish(p) => p.properties.user_properties.len(),
            Packet::Subscribe(p) => p.properties.user_properties.len(),
            Packet::Unsubscribe(p) => p.properties.user_properties.len(),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.properties.user_properties.len()
            }
            Packet::Disconnect(d) => d.properties.user_properties.len(),
            _ => 0,
        };
        if properties > self.limits.max_user_properties {
            Stats::add(&self.broker.stats().user_properties_refused, 1);
            return Err(End::violation(
                ReasonCode::QuotaExceeded,
                format!(
                    "{properties} User Properties in one packet, more than {} ([limits] max_user_properties)",
                    self.limits.max_user_properties
                ),
            ));
        }
        Ok(len)
    }

    fn taken_over(&self) -> Option<End> {
        let st = lock(&self.slot.state);
        (st.owner != Some(self.id) || st.ended).then_some(End::TakenOver)
    }

    fn handle_buffered(&mut self, inbuf: &mut BytesMut, out: &mut Out) -> Result<(), End> {
        // What was routed to this session before these packets arrived goes out before the
        // answers to them (a PINGRESP is a barrier a client can rely on).
        self.fill(out, Instant::now());
        loop {
            match kite_mqtt::decode(inbuf, self.version, &self.limits) {
                Ok(Some(p)) => self.handle(p, out)?,
                Ok(None) => {
                    make_room(inbuf);
                    return Ok(());
                }
                Err(e @ DecodeError::PacketTooLarge { .. }) => {
                    return Err(End::violation(ReasonCode::PacketTooLarge, e.to_string()));
                }
                Err(e @ DecodeError::TooManyUserProperties { .. }) => {
                    Stats::add(&self.broker.stats().user_properties_refused, 1);
                    return Err(End::violation(
                        ReasonCode::QuotaExceeded,
                        format!("{e} ([limits] max_user_properties)"),
                    ));
                }
                Err(e) => {
                    return Err(End::violation(
                        ReasonCode::MalformedPacket,
                        format!("malformed packet: {e}"),
                    ));
                }
            }
        }
    }

    fn handle(&mut self, packet: Packet, out: &mut Out) -> Result<(), End> {
        match packet {
            Packet::Publish(p) => self.on_publish(p, out),
            Packet::PubAck(a) => {
                self.on_ack(Awaiting::Ack, &a, out);
                Ok(())
            }
            Packet::PubRec(a) => {
                self.on_ack(Awaiting::Rec, &a, out);
                Ok(())
            }
            Packet::PubComp(a) => {
                self.on_ack(Awaiting::Comp, &a, out);
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
                self.on_subscribe(s, out);
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

    fn on_publish(&mut self, mut p: Publish, out: &mut Out) -> Result<(), End> {
        if let Some(alias) = p.properties.topic_alias {
            if alias == 0 || alias > self.broker.config().topic_alias_maximum {
                return Err(End::violation(
                    ReasonCode::TopicAliasInvalid,
                    format!(
                        "topic alias {alias} is above the Topic Alias Maximum {} [MQTT-3.3.2-9]",
                        self.broker.config().topic_alias_maximum
                    ),
                ));
            }
            if p.topic.is_empty() {
                match self.aliases_in.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return Err(End::violation(
                            ReasonCode::ProtocolError,
                            format!("topic alias {alias} was never set on this connection"),
                        ));
                    }
                }
            } else {
                self.aliases_in.insert(alias, p.topic.clone());
            }
        }
        if !p.properties.subscription_identifiers.is_empty() {
            return Err(End::violation(
                ReasonCode::ProtocolError,
                "a client PUBLISH may not carry a Subscription Identifier [MQTT-3.3.4-6]",
            ));
        }
        let now = Instant::now();
        let (qos, packet_id) = (p.qos, p.packet_id);
        if let Some(why) = self.broker.config().topic_beyond_limits(&p.topic) {
            Stats::add(&self.broker.stats().topics_refused, 1);
            tracing::debug!(client_id = %self.client_id.escape_debug(), "PUBLISH refused: {why}");
            return self.refuse_publish(qos, packet_id, ReasonCode::TopicNameInvalid, why, out);
        }
        if let Some(refusal) = self
            .acl
            .as_ref()
            .and_then(|acl| acl.publish_refusal(&p.topic, &self.user, &self.client_id))
        {
            Stats::add(&self.broker.stats().publishes_denied, 1);
            tracing::debug!(client_id = %self.client_id, topic = %p.topic, "PUBLISH denied by the role's rules");
            if !self.v5()
                && self.broker.config().v311_denied_publish
                    == kite_policy::DeniedPublish::Disconnect
            {
                return Err(End::violation(
                    ReasonCode::NotAuthorized,
                    format!(
                        "PUBLISH to {:?} is not allowed for this user ([acl] v311_denied_publish = \"disconnect\")",
                        &*p.topic
                    ),
                ));
            }
            // 5.0: PUBACK/PUBREC 0x87 Not authorized tells the client; 3.1.1 has no way to say
            // no, so the message is acknowledged and dropped (or the session closed, above).
            let mut ack = Ack::new(packet_id);
            if self.v5() {
                ack.reason = refusal.reason();
            }
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.answer(0, Packet::PubAck(ack), out),
                QoS::ExactlyOnce => {
                    if !self.v5() {
                        // The PUBREL that follows gets its PUBCOMP.
                        lock(&self.slot.state).incoming_qos2.insert(packet_id);
                    }
                    self.answer(0, Packet::PubRec(ack), out);
                }
            }
            return Ok(());
        }
        let mut ticket = 0;
        let fresh = match qos {
            QoS::ExactlyOnce => {
                let mut st = lock(&self.slot.state);
                if st.incoming_qos2.contains(&packet_id) {
                    // A resend before PUBREL: acknowledged again, not routed again
                    // [MQTT-4.3.3-10].
                    false
                } else if st.incoming_qos2.len()
                    >= usize::from(self.broker.config().receive_maximum)
                {
                    return Err(End::violation(
                        ReasonCode::ReceiveMaximumExceeded,
                        format!(
                            "more than {} QoS 2 messages awaiting PUBREL [MQTT-3.3.4-7]",
                            self.broker.config().receive_maximum
                        ),
                    ));
                } else {
                    st.incoming_qos2.insert(packet_id);
                    if st.persisted {
                        let client = self.client_id.to_string();
                        ticket = self.broker.persist([Op::PutQos2(client, packet_id)]);
                    }
                    true
                }
            }
            _ => true,
        };
        let mut matched = 1;
        if fresh {
            Stats::add(&self.broker.stats().messages_received, 1);
            p.properties.topic_alias = None;
            let msg = Arc::new(Message::from_publish(p, Some(self.client_id.clone()), now));
            match self.broker.publish(msg, now) {
                Ok(routed) => {
                    matched = routed.matched;
                    ticket = ticket.max(routed.ticket);
                }
                Err(full) => {
                    if qos == QoS::ExactlyOnce {
                        // A PUBREC with an error ends the flow (5.0 §4.3.3): no PUBREL follows.
                        let persisted = {
                            let mut st = lock(&self.slot.state);
                            st.incoming_qos2.remove(&packet_id);
                            st.persisted
                        };
                        if persisted {
                            let client = self.client_id.to_string();
                            self.broker.persist([Op::DelQos2(client, packet_id)]);
                        }
                    }
                    tracing::debug!(client_id = %self.client_id.escape_debug(), "PUBLISH refused: {full}");
                    return self.refuse_publish(
                        qos,
                        packet_id,
                        ReasonCode::QuotaExceeded,
                        full.to_string(),
                        out,
                    );
                }
            }
        }
        let mut ack = Ack::new(packet_id);
        if matched == 0 && self.v5() {
            ack.reason = ReasonCode::NoMatchingSubscribers;
        }
        // Acknowledged once stored where it must survive a crash (persistent subscribers'
        // queues, retained messages, the QoS 2 id).
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.answer(ticket, Packet::PubAck(ack), out),
            QoS::ExactlyOnce => self.answer(ticket, Packet::PubRec(ack), out),
        }
        Ok(())
    }

    /// A PUBLISH beyond a limit of the broker's: MQTT 5 gets the reason in its PUBACK or PUBREC
    /// (a QoS 0 message is dropped); MQTT 3.1.1 cannot be told, so its connection is closed
    /// rather than the message silently lost.
    fn refuse_publish(
        &mut self,
        qos: QoS,
        packet_id: u16,
        reason: ReasonCode,
        why: String,
        out: &mut Out,
    ) -> Result<(), End> {
        if !self.v5() {
            return Err(End::violation(reason, why));
        }
        let mut ack = Ack::new(packet_id);
        ack.reason = reason;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.answer(0, Packet::PubAck(ack), out),
            QoS::ExactlyOnce => self.answer(0, Packet::PubRec(ack), out),
        }
        Ok(())
    }

    fn on_ack(&mut self, kind: Awaiting, ack: &Ack, out: &mut Out) {
        let mut st = lock(&self.slot.state);
        let Some(i) = st
            .inflight
            .iter()
            .position(|f| f.packet_id == ack.packet_id && f.awaiting == kind)
        else {
            // Unknown or out of step: nothing to do (e.g. a late acknowledgement after a
            // resend).
            return;
        };
        if kind == Awaiting::Rec && !(self.v5() && ack.reason.is_error()) {
            st.inflight[i].awaiting = Awaiting::Comp;
            // Stored before the PUBREL leaves: after a crash, PUBREL is resent, not PUBLISH.
            let ticket = if st.inflight[i].delivery.seq != 0 {
                let d = st.inflight[i].delivery.clone();
                drop(st);
                self.store_step(&d, ack.packet_id, Sent::AwaitingComp, Instant::now())
            } else {
                drop(st);
                0
            };
            self.answer(ticket, Packet::PubRel(Ack::new(ack.packet_id)), out);
        } else if let Some(done) = st.inflight.remove(i) {
            drop(st);
            self.broker
                .forget_delivery(&self.client_id, done.delivery.seq);
        }
    }

    fn on_subscribe(&mut self, s: Subscribe, out: &mut Out) {
        let id = s.properties.subscription_identifiers.first().copied();
        let now = Instant::now();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let broker = self.broker.clone();
        let config = broker.config();
        for f in s.filters {
            let inner = parse_shared(&f.filter)
                .ok()
                .flatten()
                .map_or(&*f.filter, |s| s.filter);
            if let Some(why) = config.topic_beyond_limits(inner) {
                Stats::add(&self.broker.stats().topics_refused, 1);
                tracing::debug!(client_id = %self.client_id.escape_debug(), "subscription refused: {why}");
                // 0x8F Topic Filter invalid (3.1.1: 0x80 Failure).
                reasons.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            if let Some(refusal) = self
                .acl
                .as_ref()
                .and_then(|acl| acl.subscribe_refusal(&f.filter, &self.user, &self.client_id))
            {
                Stats::add(&self.broker.stats().subscriptions_denied, 1);
                // 0x87 or 0x80 in 5.0; 0x80 in 3.1.1.
                reasons.push(refusal.reason());
                continue;
            }
            let entry = SubscribeEntry {
                qos: f.qos,
                no_local: f.no_local,
                retain_as_published: f.retain_as_published,
                id,
            };
            let existed = {
                let mut st = lock(&self.slot.state);
                let existed = st.subscriptions.contains_key(&f.filter);
                if !existed && st.subscriptions.len() >= config.max_subscriptions {
                    drop(st);
                    Stats::add(&self.broker.stats().subscriptions_refused, 1);
                    tracing::debug!(
                        client_id = %self.client_id.escape_debug(),
                        "subscription refused: more than {} on one session ([broker] max_subscriptions)",
                        config.max_subscriptions
                    );
                    reasons.push(ReasonCode::QuotaExceeded);
                    continue;
                }
                st.subscriptions.insert(f.filter.clone(), entry);
                existed
            };
            self.broker.subscribe(&self.slot, &f.filter, entry);
            reasons.push(match f.qos {
                QoS::AtMostOnce => ReasonCode::GrantedQoS0,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
            // Retained messages: not for shared subscriptions; per Retain Handling otherwise
            // [MQTT-3.3.1-9/10/11]. Sent with RETAIN set [MQTT-3.3.1-8].
            use kite_mqtt::codec::RetainHandling as R;
            let send = !f.filter.starts_with("$share/")
                && match f.retain_handling {
                    R::SendAtSubscribe => true,
                    R::SendIfNew => !existed,
                    R::DoNotSend => false,
                };
            if send {
                for msg in self.broker.retained_for(&f.filter, now) {
                    retained.push(Delivery {
                        seq: 0,
                        live: false,
                        qos: msg.qos.min(f.qos),
                        retain: true,
                        ids: id.into_iter().collect(),
                        msg,
                    });
                }
            }
        }
        let ack = SubAck {
            packet_id: s.packet_id,
            reasons,
            properties: Props::default(),
        };
        // The subscription is stored before it is acknowledged.
        let ticket = self.broker.persist_session(&self.slot, 0);
        self.answer(ticket, Packet::SubAck(ack), out);
        let persist = self.broker.persist_handle();
        for d in retained {
            let pushed = self.slot.push(
                d,
                Kind::Retained,
                self.broker.config(),
                persist.as_ref(),
                now,
            );
            if pushed.is_none() {
                Stats::add(&self.broker.stats().messages_dropped, 1);
            }
        }
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe, out: &mut Out) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        for f in &u.filters {
            let existed = lock(&self.slot.state).subscriptions.remove(f).is_some();
            self.broker.unsubscribe(self.slot.id, f);
            reasons.push(if existed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        if !self.v5() {
            reasons.clear();
        }
        let ack = UnsubAck {
            packet_id: u.packet_id,
            reasons,
            properties: Props::default(),
        };
        let ticket = self.broker.persist_session(&self.slot, 0);
        self.answer(ticket, Packet::UnsubAck(ack), out);
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

    /// Moves deliveries from the session's queue to `out`, within the client's receive window.
    fn fill(&mut self, out: &mut Out, now: Instant) {
        let window = usize::from(
            self.client_receive_max
                .min(self.broker.config().max_inflight),
        );
        let slot = self.slot.clone();
        let mut st = lock(&slot.state);
        // Deliveries held behind an uncommitted answer stay in the (bounded) session queue.
        while out.len() < OUT_HIGH_WATER && self.pending.len() < PENDING_FILL_LIMIT {
            let Some(front) = st.queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && st.inflight.len() >= window {
                break;
            }
            let Some(d) = st.pop() else {
                break;
            };
            if d.msg.expired(now) {
                Stats::add(&self.broker.stats().messages_expired, 1);
                self.broker.forget_delivery(&self.client_id, d.seq);
                continue;
            }
            // Checked here, where every delivery passes (live, retained, queued offline, restored
            // after a restart), not when routing.
            let topic = &*d.msg.topic;
            if self
                .read_denied
                .iter()
                .any(|f| kite_mqtt::topic::matches(f, topic))
                || self
                    .read_allowed
                    .as_ref()
                    .is_some_and(|rules| !rules.iter().any(|r| kite_policy::acl::covers(r, topic)))
            {
                Stats::add(&self.broker.stats().deliveries_denied, 1);
                self.broker.forget_delivery(&self.client_id, d.seq);
                continue;
            }
            if d.qos == QoS::AtMostOnce {
                self.send_publish(&d, 0, false, 0, now, out);
                continue;
            }
            let packet_id = st.next_packet_id();
            // A stored QoS 2 delivery: its packet id is stored before the PUBLISH leaves, so
            // that after a crash it is resent under the same id and delivered once.
            let ticket = if d.qos == QoS::ExactlyOnce && d.seq != 0 {
                self.store_step(&d, packet_id, Sent::AwaitingRec, now)
            } else {
                0
            };
            if !self.send_publish(&d, packet_id, false, ticket, now, out) {
                self.broker.forget_delivery(&self.client_id, d.seq);
            } else {
                let awaiting = if d.qos == QoS::AtLeastOnce {
                    Awaiting::Ack
                } else {
                    Awaiting::Rec
                };
                st.inflight.push_back(Inflight {
                    packet_id,
                    delivery: d,
                    awaiting,
                });
            }
        }
    }

    /// On a resumed session: everything in flight again, in order — PUBLISH with DUP, or
    /// PUBREL where the PUBREC had come [MQTT-4.4.0-1].
    fn resend(&mut self, out: &mut Out) {
        let now = Instant::now();
        let slot = self.slot.clone();
        let mut st = lock(&slot.state);
        let inflight = std::mem::take(&mut st.inflight);
        for f in inflight {
            let keep = match f.awaiting {
                Awaiting::Comp => {
                    encode(Packet::PubRel(Ack::new(f.packet_id)), self.version, out);
                    true
                }
                _ => self.send_publish(&f.delivery, f.packet_id, true, 0, now, out),
            };
            if keep {
                st.inflight.push_back(f);
            } else {
                self.broker.forget_delivery(&self.client_id, f.delivery.seq);
            }
        }
    }

    /// Stores where a QoS 2 delivery stands (its packet id and step); returns the ticket.
    fn store_step(&self, d: &Delivery, packet_id: u16, step: Sent, now: Instant) -> u64 {
        let record = super::store::encode_message(
            &d.msg,
            d.qos,
            d.retain,
            &d.ids,
            Some((packet_id, step)),
            now,
        );
        self.broker
            .persist([Op::PutQueued(self.client_id.to_string(), d.seq, record)])
    }

    /// Encodes a delivery for this client. `false`: not sent — larger than the client's
    /// Maximum Packet Size (dropped as if delivered [MQTT-3.1.2-25]), or not encodable.
    /// Sent once store ticket `ticket` is committed (0: no wait).
    fn send_publish(
        &mut self,
        d: &Delivery,
        packet_id: u16,
        dup: bool,
        ticket: u64,
        now: Instant,
        out: &mut Out,
    ) -> bool {
        let mut properties = Props::default();
        let mut alias = None;
        if self.v5() {
            if !d.msg.properties.is_empty() {
                properties = d.msg.properties.clone();
            }
            if let Some(left) = d.msg.remaining_expiry(now) {
                properties.message_expiry_interval = Some(left);
            }
            if !d.ids.is_empty() {
                properties.subscription_identifiers = d.ids.clone();
            }
            if self.client_alias_max > 0 {
                alias = match self.aliases_out.get(&d.msg.topic) {
                    Some(&a) => Some((a, true)),
                    None if self.aliases_out.len() < usize::from(self.client_alias_max) => {
                        Some((self.aliases_out.len() as u16 + 1, false))
                    }
                    None => None,
                };
            }
        }
        let mut topic = d.msg.topic.clone();
        if let Some((a, known)) = alias {
            properties.topic_alias = Some(a);
            if known {
                topic = MqttStr::new();
            }
        }
        let packet = Packet::Publish(Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic,
            packet_id,
            properties,
            payload: d.msg.payload.clone(),
        });
        match packet.encoded_len(self.version) {
            Ok(n) if n as u64 <= u64::from(self.client_max_packet) => {}
            Ok(_) => {
                Stats::add(&self.broker.stats().messages_dropped, 1);
                return false;
            }
            Err(e) => {
                tracing::warn!(client_id = %self.client_id, "cannot deliver a message: {e}");
                Stats::add(&self.broker.stats().messages_dropped, 1);
                return false;
            }
        }
        if let Some((a, false)) = alias {
            self.aliases_out.insert(d.msg.topic.clone(), a);
        }
        self.answer(ticket, packet, out);
        Stats::add(&self.broker.stats().messages_sent, 1);
        true
    }

    /// After the connection: release the session (it expires, or ends now), and the Will.
    fn finish(self, end: &End, will: Option<Will>) {
        let (owned, generation, expiry) = {
            let mut st = lock(&self.slot.state);
            let owned = st.owner == Some(self.id);
            if owned {
                st.owner = None;
            }
            (owned, st.generation, st.expiry)
        };
        if owned {
            self.slot.set_online(false);
            // The disconnect time, so that a restarted broker knows how long is left.
            self.broker
                .persist_session(&self.slot, super::store::unix_now().as_secs());
            if expiry == 0 {
                self.broker.end_session(&self.slot, generation);
            } else if expiry != u32::MAX {
                let broker = self.broker.clone();
                let slot = self.slot.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(expiry))).await;
                    broker.end_session(&slot, generation);
                });
            }
        }
        let Some(will) = will.filter(|_| end.publishes_will()) else {
            return;
        };
        let delay = will.properties.will_delay_interval.unwrap_or(0);
        let msg = Arc::new(Message::from_publish(
            Publish {
                dup: false,
                qos: will.qos,
                retain: will.retain,
                topic: will.topic,
                packet_id: 0,
                properties: will.properties,
                payload: will.payload,
            },
            Some(self.client_id.clone()),
            Instant::now(),
        ));
        if delay == 0 || expiry == 0 {
            if let Err(full) = self.broker.publish(msg, Instant::now()) {
                tracing::warn!(client_id = %self.client_id.escape_debug(), "Will not published: {full}");
            }
        } else if owned {
            // Published when the delay or the session ends, whichever is first — unless the
            // client came back before [MQTT-3.1.3-9].
            let wait = Duration::from_secs(u64::from(delay.min(expiry)));
            let broker = self.broker;
            let slot = self.slot;
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let resumed = {
                    let st = lock(&slot.state);
                    st.owner.is_some() || st.generation != generation
                };
                if !resumed && let Err(full) = broker.publish(msg, Instant::now()) {
                    tracing::warn!("a delayed Will was not published: {full}");
                }
            });
        }
        // Taken over with a will delay: the session was resumed at once; no Will.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_made_for_the_rest_of_a_packet_and_never_much_more() {
        // Nothing buffered (an idle client): nothing reserved.
        let mut idle = BytesMut::with_capacity(512);
        make_room(&mut idle);
        assert_eq!(idle.capacity(), 512);
        // The start of a 16 KiB PUBLISH whose buffer a queued payload still shares.
        let mut whole = BytesMut::new();
        Packet::Publish(Publish {
            topic: "a/b".into(),
            payload: vec![7u8; 16 * 1024].into(),
            ..Publish::default()
        })
        .encode(Version::V3_1_1, &mut whole)
        .unwrap();
        let mut inbuf = BytesMut::with_capacity(600);
        inbuf.extend_from_slice(&[0u8; 100]);
        inbuf.extend_from_slice(&whole[..200]);
        let earlier_payload = inbuf.split_to(100).freeze();
        make_room(&mut inbuf);
        assert!(inbuf.capacity() >= whole.len(), "{}", inbuf.capacity());
        drop(earlier_payload);
        // A fixed header announcing 256 MB reserves READ_AHEAD at most.
        let mut huge = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0x7f, 0, 1][..]);
        make_room(&mut huge);
        assert!(
            huge.capacity() <= huge.len() + 2 * READ_AHEAD,
            "{}",
            huge.capacity()
        );
        assert!(huge.capacity() >= READ_AHEAD);
    }
}
