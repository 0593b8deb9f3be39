//! CONNECT (MQTT 5.0 §3.1, 3.1.1 §3.1).

use crate::prelude::*;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::properties::PropertyContext;
use super::wire::{self, Reader};
use super::{
    Body, DecodeError, EncodeError, MqttStr, PacketType, Props, QoS, Sized, Version, props_total,
};
use crate::topic;

/// A client's request to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol version the client asks for.
    pub version: Version,
    /// Client identifier; may be empty (the server then assigns one, or refuses).
    pub client_id: ByteString,
    /// A broker bridging to another (mosquitto's convention: bit 7 of the protocol level set,
    /// "try_private"). Not in the specification; widely used between brokers.
    pub bridge: bool,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep-alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// User name.
    pub username: Option<ByteString>,
    /// Password (binary data).
    pub password: Option<Bytes>,
    /// The Will message.
    pub will: Option<Will>,
    /// CONNECT properties (MQTT 5).
    pub properties: Props,
}

/// The message the server publishes if the client goes away without DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic name (no wildcards).
    pub topic: MqttStr,
    /// Payload.
    pub payload: Bytes,
    /// QoS of the Will message.
    pub qos: QoS,
    /// Whether the Will message is retained.
    pub retain: bool,
    /// Will properties (MQTT 5).
    pub properties: Props,
}

impl Default for Connect {
    fn default() -> Self {
        Self {
            version: Version::V5,
            client_id: ByteString::new(),
            bridge: false,
            clean_start: true,
            keep_alive: 60,
            username: None,
            password: None,
            will: None,
            properties: Props::default(),
        }
    }
}

/// Encoded lengths computed during validation.
pub(crate) struct Lens {
    props: Option<usize>,
    will_props: Option<usize>,
}

/// A name from the network as it may be shown and logged: lossy UTF-8, control characters
/// (a newline that would fake a log line) as U+FFFD. (Not `{:?}`: its escaping tables would
/// weigh on kite.js's wasm.)
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

impl Connect {
    // Read only by a server's build (`DecodeError::SentByClients`).
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let name = r.binary("protocol name")?;
        let raw_level = r.u8("protocol level")?;
        let bridge = raw_level & 0x80 != 0;
        let level = raw_level & 0x7f;
        let version = match (&name[..], level) {
            (b"MQTT", 4) => Version::V3_1_1,
            (b"MQTT", 5) => Version::V5,
            (b"MQIsdp", 3) => Version::V3_1,
            (b"MQTT", 3..=5) | (b"MQIsdp", 4..=5) => {
                return Err(DecodeError::InvalidProtocolName {
                    name: printable(&name),
                });
            }
            (b"MQTT" | b"MQIsdp", _) => {
                return Err(DecodeError::UnsupportedProtocolLevel { level: raw_level });
            }
            (other, _) => {
                return Err(DecodeError::InvalidProtocolName {
                    name: printable(other),
                });
            }
        };
        let flags = r.u8("connect flags")?;
        if flags & 0x01 != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let has_will = flags & 0x04 != 0;
        let will_qos = (flags >> 3) & 0x03;
        let will_retain = flags & 0x20 != 0;
        if will_qos == 3 || (!has_will && (will_qos != 0 || will_retain)) {
            return Err(DecodeError::InvalidWillFlags);
        }
        let has_username = flags & 0x80 != 0;
        let has_password = flags & 0x40 != 0;
        if has_password && !has_username && !version.is_v5() {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16("keep alive")?;
        let properties = if version.is_v5() {
            Props::decode(r, PropertyContext::Packet(PacketType::Connect))?
        } else {
            Props::default()
        };
        let client_id = r.string("client identifier")?;
        let will = if has_will {
            let properties = if version.is_v5() {
                Props::decode(r, PropertyContext::Will)?
            } else {
                Props::default()
            };
            let topic = r.mqtt_string("will topic")?;
            topic::validate_name(&topic).map_err(DecodeError::InvalidTopicName)?;
            let payload = r.binary("will payload")?;
            Some(Will {
                topic,
                payload,
                qos: QoS::from_u8(will_qos).unwrap_or_default(),
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string("user name")?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary("password")?)
        } else {
            None
        };
        Ok(Self {
            version,
            client_id,
            bridge,
            clean_start: flags & 0x02 != 0,
            keep_alive,
            username,
            password,
            will,
            properties,
        })
    }

    fn protocol_name(&self) -> &'static [u8] {
        if self.version == Version::V3_1 {
            b"MQIsdp"
        } else {
            b"MQTT"
        }
    }

    pub(crate) fn sized(&self) -> Result<Sized<'_>, EncodeError> {
        let v5 = self.version.is_v5();
        let mut len = 2 + self.protocol_name().len() + 1 + 1 + 2;
        let props = if v5 {
            let n = self
                .properties
                .encoded_len(PropertyContext::Packet(PacketType::Connect))?;
            len += props_total(n);
            Some(n)
        } else {
            super::no_props(&self.properties, self.version)?;
            None
        };
        len += wire::check_str(&self.client_id, "client identifier")?;
        match self.version {
            // [MQTT-3.1.3-7]: a zero-byte client id requires Clean Session.
            Version::V3_1_1 if self.client_id.is_empty() && !self.clean_start => {
                return Err(EncodeError::EmptyClientIdNeedsCleanStart);
            }
            // MQTT 3.1 §3.1: the client identifier is 1 to 23 characters.
            Version::V3_1 if self.client_id.is_empty() || self.client_id.chars().count() > 23 => {
                return Err(EncodeError::ClientIdInvalidForV31 {
                    len: self.client_id.chars().count(),
                });
            }
            _ => {}
        }
        let mut will_props = None;
        if let Some(will) = &self.will {
            if v5 {
                let n = will.properties.encoded_len(PropertyContext::Will)?;
                len += props_total(n);
                will_props = Some(n);
            } else {
                super::no_props(&will.properties, self.version)?;
            }
            topic::validate_name(&will.topic).map_err(EncodeError::InvalidWillTopic)?;
            len += wire::check_str(&will.topic, "will topic")?;
            len += wire::check_bin(&will.payload, "will payload")?;
        }
        if let Some(u) = &self.username {
            len += wire::check_str(u, "user name")?;
        }
        if let Some(p) = &self.password {
            if self.username.is_none() && !v5 {
                return Err(EncodeError::PasswordWithoutUsername);
            }
            len += wire::check_bin(p, "password")?;
        }
        Ok(Sized {
            first: 0x10,
            len,
            body: Body::Connect(self, Lens { props, will_props }),
        })
    }

    pub(crate) fn write(&self, lens: &Lens, buf: &mut BytesMut) {
        wire::put_bytes(buf, self.protocol_name());
        wire::put_u8(
            buf,
            self.version.level() | if self.bridge { 0x80 } else { 0 },
        );
        let mut flags = 0u8;
        if self.username.is_some() {
            flags |= 0x80;
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if let Some(will) = &self.will {
            flags |= 0x04 | ((will.qos as u8) << 3);
            if will.retain {
                flags |= 0x20;
            }
        }
        if self.clean_start {
            flags |= 0x02;
        }
        wire::put_u8(buf, flags);
        wire::put_u16(buf, self.keep_alive);
        if let Some(n) = lens.props {
            self.properties.write(n, buf);
        }
        wire::put_bytes(buf, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            if let Some(n) = lens.will_props {
                will.properties.write(n, buf);
            }
            wire::put_bytes(buf, will.topic.as_bytes());
            wire::put_bytes(buf, &will.payload);
        }
        if let Some(u) = &self.username {
            wire::put_bytes(buf, u.as_bytes());
        }
        if let Some(p) = &self.password {
            wire::put_bytes(buf, p);
        }
    }
}
