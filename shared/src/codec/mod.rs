//! The MQTT 3.1.1 and 5.0 codec: every control packet, strict validation, zero-copy decode.
//!
//! - [`decode`] takes bytes as they arrive (a WebSocket frame may hold half a packet or
//!   several) and returns one [`Packet`] at a time, `Ok(None)` when more bytes are needed.
//!   On error **nothing is consumed**: the buffer is as it was, and the error names the rule.
//! - [`Packet::encode`] validates first and writes only when the whole packet is valid: on
//!   error **nothing is written**.
//!
//! CONNECT carries its own protocol version; every other packet is read and written in the
//! version the caller passes (the one the connection negotiated).

use crate::prelude::*;
mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod mqtt_str;
mod properties;
mod publish;
mod reason;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;
pub mod wire;

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

pub use ack::Ack;
pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, Will};
pub use disconnect::Disconnect;
pub use mqtt_str::{INLINE_LEN, MqttStr};
pub use properties::{Properties, PropertyContext, PropertyId, Props};
pub use publish::Publish;
pub use reason::ReasonCode;
pub use suback::SubAck;
pub use subscribe::{RetainHandling, Subscribe, Subscription};
pub use unsuback::UnsubAck;
pub use unsubscribe::Unsubscribe;

use crate::topic::TopicError;
use wire::{Reader, VarInt};

/// The MQTT protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// MQTT 3.1 (protocol name `MQIsdp`, level 3), for old devices.
    V3_1,
    /// MQTT 3.1.1 (level 4).
    V3_1_1,
    /// MQTT 5.0 (level 5).
    V5,
}

impl Version {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Self::V3_1 => 3,
            Self::V3_1_1 => 4,
            Self::V5 => 5,
        }
    }

    /// Whether this is MQTT 5 (properties, reason codes, AUTH).
    pub fn is_v5(self) -> bool {
        self == Self::V5
    }
}

impl core::fmt::Display for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::V3_1 => "MQTT 3.1",
            Self::V3_1_1 => "MQTT 3.1.1",
            Self::V5 => "MQTT 5.0",
        })
    }
}

/// Quality of service of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// QoS 0: at most once.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: at least once.
    AtLeastOnce = 1,
    /// QoS 2: exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS with this value (0, 1 or 2).
    #[inline]
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// The control packet types (§2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    /// The type a packet's first byte announces (flags not checked).
    pub fn from_first_byte(b: u8) -> Option<Self> {
        Self::from_nibble(b >> 4)
    }

    #[inline]
    fn from_nibble(v: u8) -> Option<Self> {
        use PacketType::*;
        Some(match v {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The fixed-header flags this packet type must carry (all but PUBLISH, §2.1.3).
    #[inline]
    fn required_flags(self) -> u8 {
        match self {
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

impl core::fmt::Display for PacketType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Connect => "CONNECT",
            Self::ConnAck => "CONNACK",
            Self::Publish => "PUBLISH",
            Self::PubAck => "PUBACK",
            Self::PubRec => "PUBREC",
            Self::PubRel => "PUBREL",
            Self::PubComp => "PUBCOMP",
            Self::Subscribe => "SUBSCRIBE",
            Self::SubAck => "SUBACK",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::UnsubAck => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect => "DISCONNECT",
            Self::Auth => "AUTH",
        })
    }
}

/// An MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    /// Boxed: CONNECT is rare and the largest packet (two property sets).
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }
}

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest whole packet (fixed header included) accepted, in bytes. Checked from the
    /// fixed header alone, before the body is buffered.
    pub max_packet_size: u32,
    /// User Property pairs one packet may carry (a CONNECT's Will properties included),
    /// counted as they are read: each costs 80 bytes decoded for as few as 5 on the wire, so a
    /// 16 MiB packet of them would take over 270 MB.
    pub max_user_properties: usize,
}

impl Default for Limits {
    /// The protocol's own ceiling: 268,435,455 bytes of remaining length plus a 5-byte header;
    /// user properties without a count limit.
    fn default() -> Self {
        Self {
            max_packet_size: wire::MAX_VAR_INT + 5,
            max_user_properties: usize::MAX,
        }
    }
}

/// Why bytes could not be decoded. Each variant names the rule; the spec clause is in its doc.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Packet type 0 is reserved (§2.1.2); type 15 (AUTH) exists only in MQTT 5.
    #[error("packet type {value} is reserved in {version} (§2.1.2)")]
    ReservedPacketType {
        /// The type nibble.
        value: u8,
        /// The connection's version.
        version: Version,
    },
    /// [MQTT-2.1.3-1] (v5 [MQTT-2.1.3-1], 3.1.1 [MQTT-2.2.2-1]): reserved flag bits must be as the table says.
    #[error(
        "{packet} has fixed-header flags {flags:#06b}; they must be {expected:#06b} [MQTT-2.2.2-1]"
    )]
    InvalidFlags {
        /// The packet type.
        packet: PacketType,
        /// The flags found.
        flags: u8,
        /// The flags required.
        expected: u8,
    },
    /// CONNECT, SUBSCRIBE or UNSUBSCRIBE, which only clients send (§2.1.2's direction column),
    /// read by a client's build: kite-mqtt without its `server` feature (kite.js, the app)
    /// does not carry their decoders. A session treats it as the server breaking the protocol.
    #[error("{packet} is a packet only clients send (§2.1.2)")]
    SentByClients {
        /// The packet type.
        packet: PacketType,
    },
    /// [MQTT-3.3.1-4]: a PUBLISH must not have both QoS bits set.
    #[error("PUBLISH has QoS 3, which does not exist [MQTT-3.3.1-4]")]
    InvalidQoS,
    /// [MQTT-3.3.1-2]: DUP must be 0 for QoS 0 messages.
    #[error("PUBLISH has DUP set with QoS 0 [MQTT-3.3.1-2]")]
    DupWithQoS0,
    /// [MQTT-1.5.5-1]: a variable byte integer has at most 4 bytes.
    #[error("variable byte integer longer than 4 bytes [MQTT-1.5.5-1]")]
    VarIntTooLong,
    /// [MQTT-1.5.5-1]: a variable byte integer uses the fewest bytes possible.
    #[error("variable byte integer not in its shortest form [MQTT-1.5.5-1]")]
    NonMinimalVarInt,
    /// The packet is larger than the limit ([MQTT-3.2.2-?] v5 Maximum Packet Size, §3.1.2.11.4).
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Whole packet size from the fixed header.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// More User Properties than [`Limits::max_user_properties`] in one packet.
    #[error("more than {max} user properties in one packet (the receiver's limit; MQTT sets none)")]
    TooManyUserProperties {
        /// The limit.
        max: usize,
    },
    /// The remaining length ends before a field does (a malformed packet, §4.13).
    #[error("packet ends in the middle of its {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// Bytes are left over after the last field of the packet (a malformed packet, §4.13).
    #[error("{packet} has {count} unexpected bytes after its last field")]
    TrailingBytes {
        /// The packet type.
        packet: PacketType,
        /// How many bytes are left.
        count: usize,
    },
    /// [MQTT-1.5.4-1] (3.1.1 [MQTT-1.5.3-1]): strings are well-formed UTF-8.
    #[error("{what} is not valid UTF-8 [MQTT-1.5.4-1]")]
    InvalidUtf8 {
        /// The field.
        what: &'static str,
    },
    /// [MQTT-1.5.4-2] (3.1.1 [MQTT-1.5.3-2]): strings must not contain U+0000.
    #[error("{what} contains the null character U+0000 [MQTT-1.5.4-2]")]
    NullCharacter {
        /// The field.
        what: &'static str,
    },
    /// [MQTT-3.1.2-1]: the protocol name is "MQTT" (levels 4 and 5) or "MQIsdp" (level 3).
    #[error(
        "protocol name \"{name}\" does not match the protocol level: 3.1.1 and 5.0 use \"MQTT\", 3.1 uses \"MQIsdp\" [MQTT-3.1.2-1]"
    )]
    InvalidProtocolName {
        /// The name found (lossy).
        name: String,
    },
    /// [MQTT-3.1.2-2]: the protocol level is 3, 4 or 5.
    #[error(
        "protocol level {level} is not supported: expected 4 (3.1.1) or 5 (5.0) [MQTT-3.1.2-2]"
    )]
    UnsupportedProtocolLevel {
        /// The level found.
        level: u8,
    },
    /// [MQTT-3.1.2-3]: the reserved CONNECT flag is 0.
    #[error("CONNECT reserved flag is set [MQTT-3.1.2-3]")]
    ConnectReservedFlag,
    /// [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15]: Will QoS and Will Retain are 0 without a Will; Will QoS is not 3.
    #[error(
        "CONNECT Will flags are inconsistent (Will QoS/Retain without Will, or Will QoS 3) [MQTT-3.1.2-11]"
    )]
    InvalidWillFlags,
    /// [MQTT-3.1.2-22] (3.1.1): a password requires a user name.
    #[error("CONNECT has a password but no user name [MQTT-3.1.2-22]")]
    PasswordWithoutUsername,
    /// [MQTT-3.2.2-1]: CONNACK flags bits 7-1 are reserved.
    #[error("CONNACK reserved flags are set: {flags:#04x} [MQTT-3.2.2-1]")]
    InvalidConnAckFlags {
        /// The flags byte.
        flags: u8,
    },
    /// [MQTT-3.2.2-4] (v5 [MQTT-3.2.2-6]): Session Present is 0 when the connection is refused.
    #[error("CONNACK refuses the connection but has Session Present set [MQTT-3.2.2-4]")]
    SessionPresentOnFailure,
    /// [MQTT-2.3.1-1] (v5 [MQTT-2.2.1-3]): packet identifiers are non-zero.
    #[error("{packet} has packet identifier 0 [MQTT-2.3.1-1]")]
    ZeroPacketId {
        /// The packet type.
        packet: PacketType,
    },
    /// A PUBLISH topic name breaks a rule (§4.7).
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A subscription filter breaks a rule (§4.7).
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// [MQTT-3.3.2-1] / v5 §3.3.2.3.4: an empty topic name needs a Topic Alias (v5 only).
    #[error("PUBLISH has an empty topic name without a Topic Alias [MQTT-3.3.2-1]")]
    EmptyTopicWithoutAlias,
    /// [MQTT-3.8.3-3]: SUBSCRIBE has at least one filter.
    #[error("SUBSCRIBE has no topic filter [MQTT-3.8.3-3]")]
    EmptySubscribe,
    /// [MQTT-3.10.3-2]: UNSUBSCRIBE has at least one filter.
    #[error("UNSUBSCRIBE has no topic filter [MQTT-3.10.3-2]")]
    EmptyUnsubscribe,
    /// [MQTT-3.8.3-4] (v5 [MQTT-3.8.3-5]): reserved subscription option bits are 0; QoS and Retain Handling are not 3.
    #[error(
        "subscription options byte {options:#04x} is invalid (reserved bits, QoS 3 or Retain Handling 3) [MQTT-3.8.3-4]"
    )]
    InvalidSubscriptionOptions {
        /// The options byte.
        options: u8,
    },
    /// v5 §3.8.3.1 [MQTT-3.8.3-4]: No Local on a shared subscription is a protocol error.
    #[error("No Local is set on shared subscription \"{filter}\" [MQTT-3.8.3-4]")]
    NoLocalOnSharedSubscription {
        /// The filter.
        filter: String,
    },
    /// A reason or return code this packet may not carry (MQTT 5.0 §2.4, 3.1.1 §3.2.2.3, §3.9.3).
    #[error("{packet} cannot carry reason code {code:#04x}")]
    InvalidReasonCode {
        /// The packet type.
        packet: PacketType,
        /// The code.
        code: u8,
    },
    /// §2.2.2.2: the property identifier is not defined.
    #[error("unknown property identifier {id:#04x} (§2.2.2.2)")]
    UnknownProperty {
        /// The identifier.
        id: u32,
    },
    /// §2.2.2.2: this property may not appear here.
    #[error("property {property} is not allowed in {context} (§2.2.2.2)")]
    PropertyNotAllowed {
        /// The property's name.
        property: &'static str,
        /// Where it appeared.
        context: PropertyContext,
    },
    /// Properties appear at most once, except User Property and (in PUBLISH) Subscription Identifier.
    #[error("property {property} appears more than once")]
    DuplicateProperty {
        /// The property's name.
        property: &'static str,
    },
    /// A property value out of its range: a boolean not 0/1, Maximum QoS not 0/1, or 0 for
    /// Receive Maximum, Topic Alias, Maximum Packet Size or Subscription Identifier.
    #[error("property {property} has the invalid value {value}")]
    InvalidPropertyValue {
        /// The property's name.
        property: &'static str,
        /// The value.
        value: u32,
    },
    /// The property length runs past the end of the packet.
    #[error("property length {length} exceeds the {available} bytes left in the packet")]
    PropertyLengthOverflow {
        /// The declared length.
        length: usize,
        /// What is left.
        available: usize,
    },
}

/// Why a packet could not be encoded. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Strings and binary values are at most 65,535 bytes ([MQTT-1.5.4], §1.5.6).
    #[error("{what} is {len} bytes; strings and binary data are limited to 65535 bytes")]
    StringTooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// [MQTT-1.5.4-2]: strings must not contain U+0000.
    #[error("{what} contains the null character U+0000 [MQTT-1.5.4-2]")]
    NullCharacter {
        /// The field.
        what: &'static str,
    },
    /// The remaining length would exceed 268,435,455 bytes (§2.1.4).
    #[error("packet body of {size} bytes exceeds the MQTT limit of 268435455")]
    PacketTooLarge {
        /// The size.
        size: usize,
    },
    /// [MQTT-2.2.1-3]: QoS 1/2 PUBLISH, SUBSCRIBE, UNSUBSCRIBE and acknowledgements need a non-zero packet identifier.
    #[error("{packet} needs a non-zero packet identifier [MQTT-2.2.1-3]")]
    ZeroPacketId {
        /// The packet type.
        packet: PacketType,
    },
    /// A topic name that may not be sent.
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A topic filter that may not be sent.
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// An empty topic name needs a Topic Alias (v5 only).
    #[error("PUBLISH with an empty topic name needs a Topic Alias (MQTT 5 only)")]
    EmptyTopicWithoutAlias,
    /// DUP must be 0 for QoS 0 ([MQTT-3.3.1-2]).
    #[error("PUBLISH with QoS 0 cannot have DUP set [MQTT-3.3.1-2]")]
    DupWithQoS0,
    /// SUBSCRIBE / UNSUBSCRIBE need at least one filter; SUBACK at least one code.
    #[error("{packet} needs at least one entry")]
    Empty {
        /// The packet type.
        packet: PacketType,
    },
    /// The property may not appear in this packet.
    #[error("property {property} is not allowed in {context}")]
    PropertyNotAllowed {
        /// The property's name.
        property: &'static str,
        /// Where.
        context: PropertyContext,
    },
    /// A property value out of range (0 where not allowed, Maximum QoS 2, two Subscription Identifiers in SUBSCRIBE).
    #[error("property {property} has a value that cannot be sent")]
    InvalidPropertyValue {
        /// The property's name.
        property: &'static str,
    },
    /// The packet or field exists only in MQTT 5 (properties, reason codes, AUTH, subscription options).
    #[error("{what} cannot be expressed in {version}")]
    NotInVersion {
        /// What.
        what: &'static str,
        /// The connection's version.
        version: Version,
    },
    /// A reason code the packet may not carry.
    #[error("{packet} cannot carry reason code {code}")]
    InvalidReasonCode {
        /// The packet type.
        packet: PacketType,
        /// The code.
        code: ReasonCode,
    },
    /// [MQTT-3.1.2-22] (3.1.1): a password requires a user name.
    #[error("a CONNECT password needs a user name in MQTT 3.1.1 [MQTT-3.1.2-22]")]
    PasswordWithoutUsername,
    /// The Will's QoS must be 0, 1 or 2 and its topic a valid topic name.
    #[error("Will topic is invalid: {0}")]
    InvalidWillTopic(TopicError),
    /// Session Present must be 0 on a refused connection ([MQTT-3.2.2-4]).
    #[error("CONNACK refusing a connection cannot have Session Present [MQTT-3.2.2-4]")]
    SessionPresentOnFailure,
    /// [MQTT-3.1.3-7] (3.1.1): a zero-byte client identifier requires Clean Session.
    #[error("an empty client identifier requires Clean Session in MQTT 3.1.1 [MQTT-3.1.3-7]")]
    EmptyClientIdNeedsCleanStart,
    /// MQTT 3.1: the client identifier has 1 to 23 characters.
    #[error("MQTT 3.1 needs a client identifier of 1 to 23 characters, not {len}")]
    ClientIdInvalidForV31 {
        /// Its length in characters.
        len: usize,
    },
}

/// Reads one packet from the front of `buf`.
///
/// - `Ok(Some(packet))`: the packet's bytes were removed from `buf`.
/// - `Ok(None)`: `buf` holds only part of a packet; nothing was removed. Feed more bytes.
/// - `Err(e)`: the bytes break a rule; nothing was removed. The connection should be closed
///   (MQTT 5: with DISCONNECT 0x81 Malformed Packet or 0x82 Protocol Error).
///
/// `version` is the connection's protocol version; a CONNECT is read by its own level.
#[inline]
pub fn decode(
    buf: &mut BytesMut,
    version: Version,
    limits: &Limits,
) -> Result<Option<Packet>, DecodeError> {
    let Some(frame) = frame_header(buf, version, limits)? else {
        return Ok(None);
    };
    if frame.packet_type == PacketType::Publish
        && let Some(p) =
            Publish::decode_frame(buf, frame.flags, frame.header_len, frame.size, version)?
    {
        return Ok(Some(Packet::Publish(p)));
    }
    decode_split(buf, &frame, version, limits, false).map(|(p, _)| Some(p))
}

/// Like [`decode`], and also returns the packet's original bytes (fixed header included,
/// zero-copy), for a proxy that checks packets but forwards exactly what it received.
pub fn decode_raw(
    buf: &mut BytesMut,
    version: Version,
    limits: &Limits,
) -> Result<Option<(Packet, Bytes)>, DecodeError> {
    let Some(frame) = frame_header(buf, version, limits)? else {
        return Ok(None);
    };
    decode_split(buf, &frame, version, limits, true).map(Some)
}

/// What the fixed header says of the packet at the front of a buffer that holds all of it.
struct FrameHeader {
    packet_type: PacketType,
    /// The low nibble of the first byte.
    flags: u8,
    /// The fixed header's length (first byte and remaining length).
    header_len: usize,
    /// The whole packet's length.
    size: usize,
}

/// Reads and checks the fixed header: `Ok(None)` until the buffer holds the whole packet. The
/// size limit is checked from the header alone, before the body is buffered.
#[inline]
fn frame_header(
    buf: &BytesMut,
    version: Version,
    limits: &Limits,
) -> Result<Option<FrameHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = check_first_byte(first, version)?;
    let (remaining, header_len) = match wire::read_var_int(&buf[1..])? {
        VarInt::Value(v, n) => (v as usize, n + 1),
        VarInt::Incomplete => return Ok(None),
    };
    let size = header_len + remaining;
    if size > limits.max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: limits.max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    Ok(Some(FrameHeader {
        packet_type,
        flags: first & 0x0f,
        header_len,
        size,
    }))
}

/// Splits the packet's frame off `buf` and reads it; on error puts it back, so that nothing
/// is consumed. With `keep_raw`, also returns the frame's bytes (else an empty `Bytes`).
fn decode_split(
    buf: &mut BytesMut,
    frame: &FrameHeader,
    version: Version,
    limits: &Limits,
    keep_raw: bool,
) -> Result<(Packet, Bytes), DecodeError> {
    let header: [u8; 5] = {
        let mut h = [0u8; 5];
        h[..frame.header_len].copy_from_slice(&buf[..frame.header_len]);
        h
    };
    let mut bytes = buf.split_to(frame.size).freeze();
    let raw = if keep_raw {
        bytes.clone()
    } else {
        Bytes::new()
    };
    bytes.advance(frame.header_len);
    let mut body = Reader::new(bytes);
    body.limit_user_properties(limits.max_user_properties);
    match decode_body(frame.packet_type, frame.flags, &mut body, version) {
        Ok(packet) => Ok((packet, raw)),
        Err(e) => {
            // Put the frame back: an error consumes nothing.
            let body = body.into_body();
            let mut restored = BytesMut::with_capacity(frame.size + buf.len());
            restored.extend_from_slice(&header[..frame.header_len]);
            restored.extend_from_slice(&body);
            restored.extend_from_slice(buf);
            *buf = restored;
            Err(e)
        }
    }
}

/// Validates the first byte alone: the type exists in this version and the flags are legal.
#[inline]
fn check_first_byte(first: u8, version: Version) -> Result<PacketType, DecodeError> {
    let nibble = first >> 4;
    let packet_type = match PacketType::from_nibble(nibble) {
        Some(PacketType::Auth) if !version.is_v5() => None,
        other => other,
    }
    .ok_or(DecodeError::ReservedPacketType {
        value: nibble,
        version,
    })?;
    let flags = first & 0x0f;
    if packet_type == PacketType::Publish {
        if flags & 0b0110 == 0b0110 {
            return Err(DecodeError::InvalidQoS);
        }
        if flags & 0b1000 != 0 && flags & 0b0110 == 0 {
            return Err(DecodeError::DupWithQoS0);
        }
    } else if flags != packet_type.required_flags() {
        return Err(DecodeError::InvalidFlags {
            packet: packet_type,
            flags,
            expected: packet_type.required_flags(),
        });
    }
    Ok(packet_type)
}

fn decode_body(
    packet_type: PacketType,
    flags: u8,
    r: &mut Reader,
    version: Version,
) -> Result<Packet, DecodeError> {
    let packet = match packet_type {
        #[cfg(feature = "server")]
        PacketType::Connect => Packet::Connect(Box::new(Connect::decode(r)?)),
        PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(r, version)?),
        PacketType::Publish => Packet::Publish(Publish::decode(flags, r, version)?),
        PacketType::PubAck => Packet::PubAck(Ack::decode(PacketType::PubAck, r, version)?),
        PacketType::PubRec => Packet::PubRec(Ack::decode(PacketType::PubRec, r, version)?),
        PacketType::PubRel => Packet::PubRel(Ack::decode(PacketType::PubRel, r, version)?),
        PacketType::PubComp => Packet::PubComp(Ack::decode(PacketType::PubComp, r, version)?),
        #[cfg(feature = "server")]
        PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(r, version)?),
        PacketType::SubAck => Packet::SubAck(SubAck::decode(r, version)?),
        #[cfg(feature = "server")]
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(r, version)?),
        // A client's build reads only what servers send (see `DecodeError::SentByClients`).
        #[cfg(not(feature = "server"))]
        PacketType::Connect | PacketType::Subscribe | PacketType::Unsubscribe => {
            return Err(DecodeError::SentByClients {
                packet: packet_type,
            });
        }
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(r, version)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(r, version)?),
        PacketType::Auth => Packet::Auth(Auth::decode(r)?),
    };
    if !r.is_empty() {
        return Err(DecodeError::TrailingBytes {
            packet: packet_type,
            count: r.remaining(),
        });
    }
    Ok(packet)
}

/// A packet checked for encoding: its first byte, body length and how to write the body.
pub(crate) struct Sized<'a> {
    pub first: u8,
    pub len: usize,
    pub body: Body<'a>,
}

/// What to write after the fixed header.
pub(crate) enum Body<'a> {
    Empty,
    Connect(&'a Connect, connect::Lens),
    ConnAck(&'a ConnAck, usize),
    Publish(&'a Publish, Option<usize>),
    Ack(&'a Ack, Tail),
    Subscribe(&'a Subscribe, Option<usize>),
    SubAck(&'a SubAck, Option<usize>),
    Unsubscribe(&'a Unsubscribe, Option<usize>),
    UnsubAck(&'a UnsubAck, Option<usize>),
    Disconnect(&'a Disconnect, Tail),
    Auth(&'a Auth, Tail),
}

/// The optional end of PUBACK/PUBREC/PUBREL/PUBCOMP, DISCONNECT and AUTH in MQTT 5: the
/// reason code may be left out when it is 0 with no properties, and the properties when empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Nothing after the fixed part.
    Nothing,
    /// The reason code only.
    Reason,
    /// The reason code and `n` bytes of properties.
    ReasonAndProps(usize),
}

impl Tail {
    /// The shortest legal form for this reason code and these properties.
    #[inline]
    pub(crate) fn shortest(
        reason: ReasonCode,
        props: &Properties,
        ctx: PropertyContext,
    ) -> Result<Self, EncodeError> {
        let n = props.encoded_len(ctx)?;
        Ok(match (reason.value(), n) {
            (0, 0) => Self::Nothing,
            (_, 0) => Self::Reason,
            _ => Self::ReasonAndProps(n),
        })
    }

    #[inline]
    pub(crate) fn len(self) -> usize {
        match self {
            Self::Nothing => 0,
            Self::Reason => 1,
            Self::ReasonAndProps(n) => 1 + props_total(n),
        }
    }

    #[inline]
    pub(crate) fn write(self, reason: ReasonCode, props: &Props, buf: &mut BytesMut) {
        match self {
            Self::Nothing => {}
            Self::Reason => wire::put_u8(buf, reason.value()),
            Self::ReasonAndProps(n) => {
                wire::put_u8(buf, reason.value());
                props.write(n, buf);
            }
        }
    }
}

/// Reads a packet identifier, which must not be 0 ([MQTT-2.3.1-1]).
pub(crate) fn read_packet_id(r: &mut Reader, packet: PacketType) -> Result<u16, DecodeError> {
    match r.u16("packet identifier")? {
        0 => Err(DecodeError::ZeroPacketId { packet }),
        id => Ok(id),
    }
}

/// Reads the packet's properties in MQTT 5; none before.
pub(crate) fn read_props(
    r: &mut Reader,
    version: Version,
    packet: PacketType,
) -> Result<Props, DecodeError> {
    if version.is_v5() {
        Props::decode(r, PropertyContext::Packet(packet))
    } else {
        Ok(Props::default())
    }
}

/// Refuses packet identifier 0 on encode ([MQTT-2.2.1-3]).
pub(crate) fn check_packet_id(id: u16, packet: PacketType) -> Result<(), EncodeError> {
    if id == 0 {
        Err(EncodeError::ZeroPacketId { packet })
    } else {
        Ok(())
    }
}

/// Validates the properties for `packet` in `version`: their encoded length in MQTT 5 (`Some`),
/// or `None` before MQTT 5, where any property is an error.
pub(crate) fn props_len(
    props: &Props,
    version: Version,
    packet: PacketType,
) -> Result<Option<usize>, EncodeError> {
    if version.is_v5() {
        props.encoded_len(PropertyContext::Packet(packet)).map(Some)
    } else {
        no_props(props, version).map(|()| None)
    }
}

/// The length of a property block with its length prefix.
#[inline]
pub(crate) fn props_total(len: usize) -> usize {
    wire::var_int_len(len as u32) + len
}

/// Errors if `props` is not empty in a pre-5 version.
#[inline]
pub(crate) fn no_props(props: &Props, version: Version) -> Result<(), EncodeError> {
    if props.is_empty() {
        Ok(())
    } else {
        Err(EncodeError::NotInVersion {
            what: "properties",
            version,
        })
    }
}

impl Packet {
    /// Validates the packet for `version` and appends its bytes to `buf` (which may already
    /// hold data). On error nothing is written. A CONNECT is written in its own version.
    pub fn encode(&self, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let sized = self.sized(version)?;
        if sized.len > wire::MAX_VAR_INT as usize {
            return Err(EncodeError::PacketTooLarge { size: sized.len });
        }
        buf.reserve(1 + wire::var_int_len(sized.len as u32) + sized.len);
        wire::put_u8(buf, sized.first);
        wire::put_var_int(buf, sized.len as u32);
        match sized.body {
            Body::Empty => {}
            Body::Connect(p, lens) => p.write(&lens, buf),
            Body::ConnAck(p, props) => p.write(version, props, buf),
            Body::Publish(p, props) => p.write(props, buf),
            Body::Ack(p, props) => p.write(props, buf),
            Body::Subscribe(p, props) => p.write(version, props, buf),
            Body::SubAck(p, props) => p.write(version, props, buf),
            Body::Unsubscribe(p, props) => p.write(props, buf),
            Body::UnsubAck(p, props) => p.write(props, buf),
            Body::Disconnect(p, props) => p.write(props, buf),
            Body::Auth(p, props) => p.write(props, buf),
        }
        Ok(())
    }

    /// The encoded size of the whole packet in `version`, after validation.
    pub fn encoded_len(&self, version: Version) -> Result<usize, EncodeError> {
        let sized = self.sized(version)?;
        Ok(1 + wire::var_int_len(sized.len as u32) + sized.len)
    }

    fn sized(&self, version: Version) -> Result<Sized<'_>, EncodeError> {
        let t = self.packet_type();
        let first = ((t as u8) << 4) | t.required_flags();
        Ok(match self {
            Self::Connect(p) => p.sized()?,
            Self::ConnAck(p) => p.sized(version)?,
            Self::Publish(p) => p.sized(version)?,
            Self::PubAck(p) | Self::PubRec(p) | Self::PubRel(p) | Self::PubComp(p) => {
                p.sized(t, first, version)?
            }
            Self::Subscribe(p) => p.sized(version)?,
            Self::SubAck(p) => p.sized(version)?,
            Self::Unsubscribe(p) => p.sized(version)?,
            Self::UnsubAck(p) => p.sized(version)?,
            Self::PingReq | Self::PingResp => Sized {
                first,
                len: 0,
                body: Body::Empty,
            },
            Self::Disconnect(p) => p.sized(version)?,
            Self::Auth(p) => p.sized(version)?,
        })
    }
}
#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Guards the `Props` design: with ~400 bytes of properties inline, every packet was 464
    /// bytes to build and move.
    #[test]
    fn packets_stay_small() {
        assert!(
            size_of::<super::Packet>() <= 96,
            "Packet is {} bytes",
            size_of::<super::Packet>()
        );
    }
}
