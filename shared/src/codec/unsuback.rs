//! UNSUBACK (MQTT 5.0 §3.11, 3.1.1 §3.11).

use crate::prelude::*;
use bytes::BytesMut;

use super::properties::PropertyContext;
use super::wire::{self, Reader};
use super::{
    Body, DecodeError, EncodeError, PacketType, Props, ReasonCode, Sized, Version, props_total,
};

/// The answer to UNSUBSCRIBE. MQTT 5 has one reason code per filter; 3.1.1 has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The UNSUBSCRIBE's packet identifier.
    pub packet_id: u16,
    /// One code per filter (MQTT 5); empty in 3.1.1.
    pub reasons: Vec<ReasonCode>,
    /// UNSUBACK properties (MQTT 5).
    pub properties: Props,
}

impl UnsubAck {
    pub(crate) fn decode(r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let packet_id = super::read_packet_id(r, PacketType::UnsubAck)?;
        if !version.is_v5() {
            return Ok(Self {
                packet_id,
                reasons: Vec::new(),
                properties: Props::default(),
            });
        }
        let properties = Props::decode(r, PropertyContext::Packet(PacketType::UnsubAck))?;
        let mut reasons = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let code = r.u8("reason code")?;
            reasons.push(ReasonCode::from_byte(PacketType::UnsubAck, code).ok_or(
                DecodeError::InvalidReasonCode {
                    packet: PacketType::UnsubAck,
                    code,
                },
            )?);
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
        super::check_packet_id(self.packet_id, PacketType::UnsubAck)?;
        let props = if version.is_v5() {
            if self.reasons.is_empty() {
                return Err(EncodeError::Empty {
                    packet: PacketType::UnsubAck,
                });
            }
            if let Some(&code) = self
                .reasons
                .iter()
                .find(|c| !c.allowed_in(PacketType::UnsubAck))
            {
                return Err(EncodeError::InvalidReasonCode {
                    packet: PacketType::UnsubAck,
                    code,
                });
            }
            Some(
                self.properties
                    .encoded_len(PropertyContext::Packet(PacketType::UnsubAck))?,
            )
        } else {
            if !self.reasons.is_empty() {
                return Err(EncodeError::NotInVersion {
                    what: "UNSUBACK reason codes",
                    version,
                });
            }
            super::no_props(&self.properties, version)?;
            None
        };
        let len = 2 + props.map_or(0, |n| props_total(n) + self.reasons.len());
        Ok(Sized {
            first: 0xb0,
            len,
            body: Body::UnsubAck(self, props),
        })
    }

    pub(crate) fn write(&self, props: Option<usize>, buf: &mut BytesMut) {
        wire::put_u16(buf, self.packet_id);
        if let Some(n) = props {
            self.properties.write(n, buf);
            for c in &self.reasons {
                wire::put_u8(buf, c.value());
            }
        }
    }
}
