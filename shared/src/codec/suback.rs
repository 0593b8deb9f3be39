//! SUBACK (MQTT 5.0 §3.9, 3.1.1 §3.9).

use crate::prelude::*;
use bytes::BytesMut;

use super::wire::{self, Reader};
use super::{
    Body, DecodeError, EncodeError, PacketType, Props, ReasonCode, Sized, Version, props_total,
};

/// The answer to SUBSCRIBE: one code per filter, in order. In 3.1.1 the return codes are
/// Granted QoS 0/1/2 or 0x80 (read as Unspecified error; every v5 failure is written as 0x80).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The SUBSCRIBE's packet identifier.
    pub packet_id: u16,
    /// One code per filter.
    pub reasons: Vec<ReasonCode>,
    /// SUBACK properties (MQTT 5).
    pub properties: Props,
}

impl SubAck {
    pub(crate) fn decode(r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let packet_id = super::read_packet_id(r, PacketType::SubAck)?;
        let properties = super::read_props(r, version, PacketType::SubAck)?;
        let mut reasons = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let code = r.u8("reason code")?;
            let reason = if version.is_v5() {
                ReasonCode::from_byte(PacketType::SubAck, code)
            } else {
                ReasonCode::from_v3_suback(code)
            };
            reasons.push(reason.ok_or(DecodeError::InvalidReasonCode {
                packet: PacketType::SubAck,
                code,
            })?);
        }
        if reasons.is_empty() {
            return Err(DecodeError::Truncated {
                what: "reason codes",
            });
        }
        Ok(Self {
            packet_id,
            reasons,
            properties,
        })
    }

    pub(crate) fn sized(&self, version: Version) -> Result<Sized<'_>, EncodeError> {
        super::check_packet_id(self.packet_id, PacketType::SubAck)?;
        if self.reasons.is_empty() {
            return Err(EncodeError::Empty {
                packet: PacketType::SubAck,
            });
        }
        if let Some(&code) = self
            .reasons
            .iter()
            .find(|c| !c.allowed_in(PacketType::SubAck))
        {
            return Err(EncodeError::InvalidReasonCode {
                packet: PacketType::SubAck,
                code,
            });
        }
        let mut len = 2 + self.reasons.len();
        let props = super::props_len(&self.properties, version, PacketType::SubAck)?;
        len += props.map_or(0, props_total);
        Ok(Sized {
            first: 0x90,
            len,
            body: Body::SubAck(self, props),
        })
    }

    pub(crate) fn write(&self, version: Version, props: Option<usize>, buf: &mut BytesMut) {
        wire::put_u16(buf, self.packet_id);
        if let Some(n) = props {
            self.properties.write(n, buf);
        }
        for c in &self.reasons {
            wire::put_u8(
                buf,
                if version.is_v5() {
                    c.value()
                } else {
                    c.to_v3_suback()
                },
            );
        }
    }
}
