//! DISCONNECT (MQTT 5.0 §3.14, 3.1.1 §3.14).

use bytes::BytesMut;

use super::properties::PropertyContext;
use super::wire::Reader;
use super::{Body, DecodeError, EncodeError, PacketType, Props, ReasonCode, Sized, Tail, Version};

/// The end of a connection. In 3.1.1 it has no content and only the client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Why (MQTT 5); Normal disconnection in 3.1.1.
    pub reason: ReasonCode,
    /// DISCONNECT properties (MQTT 5).
    pub properties: Props,
}

impl Default for Disconnect {
    fn default() -> Self {
        Self {
            reason: ReasonCode::NormalDisconnection,
            properties: Props::default(),
        }
    }
}

impl Disconnect {
    /// A DISCONNECT with this reason and no properties.
    pub fn new(reason: ReasonCode) -> Self {
        Self {
            reason,
            properties: Props::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let mut d = Self::default();
        // MQTT 5 §3.14.2.1: a remaining length of 0 means Normal disconnection; the
        // properties may be left out when the remaining length is 1.
        if version.is_v5() && !r.is_empty() {
            let code = r.u8("reason code")?;
            d.reason = ReasonCode::from_byte(PacketType::Disconnect, code).ok_or(
                DecodeError::InvalidReasonCode {
                    packet: PacketType::Disconnect,
                    code,
                },
            )?;
            if !r.is_empty() {
                d.properties = Props::decode(r, PropertyContext::Packet(PacketType::Disconnect))?;
            }
        }
        Ok(d)
    }

    pub(crate) fn sized(&self, version: Version) -> Result<Sized<'_>, EncodeError> {
        if !self.reason.allowed_in(PacketType::Disconnect) {
            return Err(EncodeError::InvalidReasonCode {
                packet: PacketType::Disconnect,
                code: self.reason,
            });
        }
        let tail = if version.is_v5() {
            Tail::shortest(
                self.reason,
                &self.properties,
                PropertyContext::Packet(PacketType::Disconnect),
            )?
        } else {
            if self.reason.value() != 0 {
                return Err(EncodeError::NotInVersion {
                    what: "a DISCONNECT reason code",
                    version,
                });
            }
            super::no_props(&self.properties, version)?;
            Tail::Nothing
        };
        Ok(Sized {
            first: 0xe0,
            len: tail.len(),
            body: Body::Disconnect(self, tail),
        })
    }

    pub(crate) fn write(&self, tail: Tail, buf: &mut BytesMut) {
        tail.write(self.reason, &self.properties, buf);
    }
}
