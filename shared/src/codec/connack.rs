//! CONNACK (MQTT 5.0 §3.2, 3.1.1 §3.2).

use bytes::BytesMut;

use super::properties::PropertyContext;
use super::wire::{self, Reader};
use super::{
    Body, DecodeError, EncodeError, PacketType, Props, ReasonCode, Sized, Version, props_total,
};

/// The server's answer to CONNECT. In 3.1.1 the return code is mapped to the v5 reason code of
/// the same meaning (1 → Unsupported Protocol Version, 2 → Client Identifier not valid,
/// 3 → Server unavailable, 4 → Bad User Name or Password, 5 → Not authorized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed a session.
    pub session_present: bool,
    /// Success, or why the connection is refused.
    pub reason: ReasonCode,
    /// CONNACK properties (MQTT 5).
    pub properties: Props,
}

impl Default for ConnAck {
    fn default() -> Self {
        Self {
            session_present: false,
            reason: ReasonCode::Success,
            properties: Props::default(),
        }
    }
}

impl ConnAck {
    pub(crate) fn decode(r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let flags = r.u8("acknowledge flags")?;
        if flags & 0xfe != 0 {
            return Err(DecodeError::InvalidConnAckFlags { flags });
        }
        let code = r.u8("connect reason code")?;
        // A 3.1.1 server answering a 5.0 CONNECT sends a 3.1.1 CONNACK (two bytes, return
        // code 1 = unacceptable protocol version): read it by its meaning.
        let v3_form = !version.is_v5() || r.is_empty();
        let reason = if v3_form {
            ReasonCode::from_v3_connack(code)
        } else {
            ReasonCode::from_byte(PacketType::ConnAck, code)
        }
        .ok_or(DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code,
        })?;
        let session_present = flags & 0x01 != 0;
        if session_present && reason.is_error() {
            return Err(DecodeError::SessionPresentOnFailure);
        }
        let properties = if v3_form {
            Props::default()
        } else {
            Props::decode(r, PropertyContext::Packet(PacketType::ConnAck))?
        };
        Ok(Self {
            session_present,
            reason,
            properties,
        })
    }

    pub(crate) fn sized(&self, version: Version) -> Result<Sized<'_>, EncodeError> {
        if self.session_present && self.reason.is_error() {
            return Err(EncodeError::SessionPresentOnFailure);
        }
        let invalid = EncodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code: self.reason,
        };
        let (len, props) = if version.is_v5() {
            if !self.reason.allowed_in(PacketType::ConnAck) {
                return Err(invalid);
            }
            let n = self
                .properties
                .encoded_len(PropertyContext::Packet(PacketType::ConnAck))?;
            (2 + props_total(n), n)
        } else {
            if self.reason.to_v3_connack().is_none() {
                return Err(invalid);
            }
            super::no_props(&self.properties, version)?;
            (2, 0)
        };
        Ok(Sized {
            first: 0x20,
            len,
            body: Body::ConnAck(self, props),
        })
    }

    pub(crate) fn write(&self, version: Version, props: usize, buf: &mut BytesMut) {
        wire::put_u8(buf, u8::from(self.session_present));
        if version.is_v5() {
            wire::put_u8(buf, self.reason.value());
            self.properties.write(props, buf);
        } else {
            wire::put_u8(buf, self.reason.to_v3_connack().unwrap_or(0x80));
        }
    }
}
