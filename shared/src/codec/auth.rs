//! AUTH (MQTT 5.0 §3.15): enhanced authentication exchanges. MQTT 5 only.

use bytes::BytesMut;

use super::properties::PropertyContext;
use super::wire::Reader;
use super::{Body, DecodeError, EncodeError, PacketType, Props, ReasonCode, Sized, Tail, Version};

/// One step of an enhanced authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason: ReasonCode,
    /// Authentication Method, Authentication Data, Reason String, user properties.
    pub properties: Props,
}

impl Auth {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut a = Self {
            reason: ReasonCode::Success,
            properties: Props::default(),
        };
        // §3.15.2.1: a remaining length of 0 means Success with no properties.
        if !r.is_empty() {
            let code = r.u8("reason code")?;
            a.reason = ReasonCode::from_byte(PacketType::Auth, code).ok_or(
                DecodeError::InvalidReasonCode {
                    packet: PacketType::Auth,
                    code,
                },
            )?;
            if !r.is_empty() {
                a.properties = Props::decode(r, PropertyContext::Packet(PacketType::Auth))?;
            }
        }
        Ok(a)
    }

    pub(crate) fn sized(&self, version: Version) -> Result<Sized<'_>, EncodeError> {
        if !version.is_v5() {
            return Err(EncodeError::NotInVersion {
                what: "AUTH",
                version,
            });
        }
        if !self.reason.allowed_in(PacketType::Auth) {
            return Err(EncodeError::InvalidReasonCode {
                packet: PacketType::Auth,
                code: self.reason,
            });
        }
        let tail = Tail::shortest(
            self.reason,
            &self.properties,
            PropertyContext::Packet(PacketType::Auth),
        )?;
        Ok(Sized {
            first: 0xf0,
            len: tail.len(),
            body: Body::Auth(self, tail),
        })
    }

    pub(crate) fn write(&self, tail: Tail, buf: &mut BytesMut) {
        tail.write(self.reason, &self.properties, buf);
    }
}
