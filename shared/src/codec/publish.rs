//! PUBLISH (MQTT 5.0 §3.3, 3.1.1 §3.3).

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::wire::{self, Reader};
use super::{Body, DecodeError, EncodeError, PacketType, Props, QoS, Sized, Version, props_total};
use crate::topic;

/// An application message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    /// Re-delivery of an earlier attempt (QoS 1/2 only).
    pub dup: bool,
    /// Quality of service.
    pub qos: QoS,
    /// Whether the server keeps the message for future subscribers.
    pub retain: bool,
    /// Topic name; empty only in MQTT 5 with a Topic Alias.
    pub topic: ByteString,
    /// Packet identifier for QoS 1/2 (non-zero); ignored at QoS 0.
    pub packet_id: u16,
    /// PUBLISH properties (MQTT 5).
    pub properties: Props,
    /// The payload, zero-copy.
    pub payload: Bytes,
}

impl Publish {
    #[inline]
    pub(crate) fn decode(flags: u8, r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::InvalidQoS)?;
        let topic = r.utf8("topic name")?;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            let id = r.u16("packet identifier")?;
            if id == 0 {
                return Err(DecodeError::ZeroPacketId {
                    packet: PacketType::Publish,
                });
            }
            id
        };
        let properties = super::read_props(r, version, PacketType::Publish)?;
        if topic.is_empty() {
            // v5 §3.3.2.1: a zero-length topic name needs a Topic Alias.
            if properties.topic_alias.is_none() {
                return Err(DecodeError::EmptyTopicWithoutAlias);
            }
        } else {
            topic::validate_name(&topic).map_err(|e| match e {
                topic::TopicError::NullChar { .. } => {
                    DecodeError::NullCharacter { what: "topic name" }
                }
                e => DecodeError::InvalidTopicName(e),
            })?;
        }
        Ok(Self {
            dup: flags & 0x08 != 0,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    #[inline]
    pub(crate) fn sized(&self, version: Version) -> Result<Sized<'_>, EncodeError> {
        if self.dup && self.qos == QoS::AtMostOnce {
            return Err(EncodeError::DupWithQoS0);
        }
        if self.qos != QoS::AtMostOnce && self.packet_id == 0 {
            return Err(EncodeError::ZeroPacketId {
                packet: PacketType::Publish,
            });
        }
        if self.topic.is_empty() {
            if !version.is_v5() || self.properties.topic_alias.is_none() {
                return Err(EncodeError::EmptyTopicWithoutAlias);
            }
        } else {
            topic::validate_name(&self.topic).map_err(EncodeError::InvalidTopicName)?;
        }
        // validate_name has checked the length and U+0000 (an empty topic is 2 bytes).
        let mut len = 2 + self.topic.len() + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            len += 2;
        }
        let props = super::props_len(&self.properties, version, PacketType::Publish)?;
        len += props.map_or(0, props_total);
        let first =
            0x30 | (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain);
        Ok(Sized {
            first,
            len,
            body: Body::Publish(self, props),
        })
    }

    #[inline]
    pub(crate) fn write(&self, props: Option<usize>, buf: &mut BytesMut) {
        wire::put_bytes(buf, self.topic.as_bytes());
        if self.qos != QoS::AtMostOnce {
            wire::put_u16(buf, self.packet_id);
        }
        if let Some(n) = props {
            self.properties.write(n, buf);
        }
        buf.extend_from_slice(&self.payload);
    }
}
