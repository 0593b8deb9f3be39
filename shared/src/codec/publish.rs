//! PUBLISH (MQTT 5.0 §3.3, 3.1.1 §3.3).

use crate::prelude::*;
use bytes::{Buf, Bytes, BytesMut};

use super::wire::{self, Reader};
use super::{
    Body, DecodeError, EncodeError, MqttStr, PacketType, Props, QoS, Sized, Version, props_total,
};
use crate::topic;

/// The topic rules of a received PUBLISH: a name without wildcards or U+0000, or empty with a
/// Topic Alias (MQTT 5 §3.3.2.1).
#[inline]
fn check_topic(topic: &str, has_alias: bool) -> Result<(), DecodeError> {
    if topic.is_empty() {
        if has_alias {
            return Ok(());
        }
        return Err(DecodeError::EmptyTopicWithoutAlias);
    }
    topic::validate_name(topic).map_err(|e| match e {
        topic::TopicError::NullChar { .. } => DecodeError::NullCharacter { what: "topic name" },
        e => DecodeError::InvalidTopicName(e),
    })
}

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
    pub topic: MqttStr,
    /// Packet identifier for QoS 1/2 (non-zero); ignored at QoS 0.
    pub packet_id: u16,
    /// PUBLISH properties (MQTT 5).
    pub properties: Props,
    /// The payload, zero-copy.
    pub payload: Bytes,
}

impl Publish {
    /// Reads a PUBLISH without properties (3.1.1, or MQTT 5 with a property length of 0)
    /// whose whole frame (`size` bytes, the fixed header's `header_len` included) is at the
    /// front of `buf`. `Ok(Some(..))`: exactly the frame was removed. `Err`: nothing was.
    /// `Ok(None)`: the packet has properties; nothing was removed, read it with [`decode`].
    ///
    /// The variable header is read in place and a short topic is copied inline, so that the
    /// payload is the packet's only reference to the buffer: one reference count to raise and
    /// drop instead of two (the topic's slice).
    ///
    /// [`decode`]: Self::decode
    #[inline]
    pub(crate) fn decode_frame(
        buf: &mut BytesMut,
        flags: u8,
        header_len: usize,
        size: usize,
        version: Version,
    ) -> Result<Option<Self>, DecodeError> {
        let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::InvalidQoS)?;
        let body = &buf[header_len..size];
        let truncated = DecodeError::Truncated { what: "topic name" };
        let [l0, l1, after_len @ ..] = body else {
            return Err(truncated);
        };
        let topic_len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let Some(topic_bytes) = after_len.get(..topic_len) else {
            return Err(truncated);
        };
        let Some(topic_str) = wire::utf8(topic_bytes) else {
            return Err(DecodeError::InvalidUtf8 { what: "topic name" });
        };
        let mut pos = 2 + topic_len;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            let [h, l, ..] = body[pos..] else {
                return Err(DecodeError::Truncated {
                    what: "packet identifier",
                });
            };
            pos += 2;
            match u16::from_be_bytes([h, l]) {
                0 => {
                    return Err(DecodeError::ZeroPacketId {
                        packet: PacketType::Publish,
                    });
                }
                id => id,
            }
        };
        if version.is_v5() {
            if body.get(pos) != Some(&0) {
                // Properties (or a malformed length): the general path reads them.
                return Ok(None);
            }
            pos += 1;
        }
        let inline = MqttStr::inline(topic_str);
        check_topic(topic_str, false)?;
        let start = header_len + pos;
        let mut frame = buf.split_to(size).freeze();
        let topic = match inline {
            Some(topic) => topic,
            None => {
                let at = header_len + 2;
                let bytes = frame.slice(at..at + topic_len);
                // Checked as UTF-8 above: the lossy branch is never taken.
                MqttStr::from_utf8_bytes(bytes.clone())
                    .unwrap_or_else(|| MqttStr::from(String::from_utf8_lossy(&bytes).into_owned()))
            }
        };
        frame.advance(start);
        Ok(Some(Self::from_parts(
            flags,
            qos,
            topic,
            packet_id,
            Props::default(),
            frame,
        )))
    }

    #[inline]
    fn from_parts(
        flags: u8,
        qos: QoS,
        topic: MqttStr,
        packet_id: u16,
        properties: Props,
        payload: Bytes,
    ) -> Self {
        Self {
            dup: flags & 0x08 != 0,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            packet_id,
            properties,
            payload,
        }
    }

    #[inline]
    pub(crate) fn decode(flags: u8, r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::InvalidQoS)?;
        let topic = r.mqtt_str("topic name")?;
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
        check_topic(&topic, properties.topic_alias.is_some())?;
        Ok(Self::from_parts(
            flags,
            qos,
            topic,
            packet_id,
            properties,
            r.rest(),
        ))
    }

    #[inline]
    pub(crate) fn sized(&self, version: Version) -> Result<Sized<'_>, EncodeError> {
        let (first, len, props) = self.checked(version)?;
        Ok(Sized {
            first,
            len,
            body: Body::Publish(self, props),
        })
    }

    /// Checks the packet for `version`: its first byte, remaining length and properties'
    /// length.
    #[inline]
    fn checked(&self, version: Version) -> Result<(u8, usize, Option<usize>), EncodeError> {
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
        Ok((first, len, props))
    }

    /// Writes the packet up to its payload — the fixed header (with the whole packet's
    /// length), topic, packet identifier, properties — so that the payload can follow from its
    /// own buffer (a vectored write) instead of being copied. Checked as [`Packet::encode`]
    /// checks; on error nothing is written. The head and then [`Publish::payload`] are exactly
    /// the bytes `Packet::encode` writes.
    ///
    /// [`Packet::encode`]: super::Packet::encode
    pub fn encode_head(&self, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let (first, len, props) = self.checked(version)?;
        if len > wire::MAX_VAR_INT as usize {
            return Err(EncodeError::PacketTooLarge { size: len });
        }
        buf.reserve(1 + wire::var_int_len(len as u32) + len - self.payload.len());
        wire::put_u8(buf, first);
        wire::put_var_int(buf, len as u32);
        self.write_head(props, buf);
        Ok(())
    }

    #[inline]
    pub(crate) fn write(&self, props: Option<usize>, buf: &mut BytesMut) {
        self.write_head(props, buf);
        buf.extend_from_slice(&self.payload);
    }

    #[inline]
    fn write_head(&self, props: Option<usize>, buf: &mut BytesMut) {
        wire::put_bytes(buf, self.topic.as_bytes());
        if self.qos != QoS::AtMostOnce {
            wire::put_u16(buf, self.packet_id);
        }
        if let Some(n) = props {
            self.properties.write(n, buf);
        }
    }
}
