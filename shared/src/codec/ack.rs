//! PUBACK, PUBREC, PUBREL and PUBCOMP (MQTT 5.0 §3.4–3.7, 3.1.1 §3.4–3.7): one shape.

use bytes::BytesMut;

use super::properties::PropertyContext;
use super::wire::{self, Reader};
use super::{Body, DecodeError, EncodeError, PacketType, Props, ReasonCode, Sized, Tail, Version};

/// An acknowledgement in a QoS 1 or QoS 2 flow.
///
/// MQTT 5 may omit the reason code when it is Success and there are no properties
/// (remaining length 2), and the properties when there are none (remaining length 3); Kite
/// reads all forms and writes the shortest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The packet identifier being acknowledged (non-zero).
    pub packet_id: u16,
    /// Success or why not (MQTT 5; always Success in 3.1.1).
    pub reason: ReasonCode,
    /// Properties (MQTT 5).
    pub properties: Props,
}

impl Ack {
    /// A successful acknowledgement of `packet_id`.
    pub fn new(packet_id: u16) -> Self {
        Self {
            packet_id,
            reason: ReasonCode::Success,
            properties: Props::default(),
        }
    }

    #[inline]
    pub(crate) fn decode(
        packet: PacketType,
        r: &mut Reader,
        version: Version,
    ) -> Result<Self, DecodeError> {
        let packet_id = super::read_packet_id(r, packet)?;
        let mut ack = Self::new(packet_id);
        if version.is_v5() && !r.is_empty() {
            let code = r.u8("reason code")?;
            ack.reason = ReasonCode::from_byte(packet, code)
                .ok_or(DecodeError::InvalidReasonCode { packet, code })?;
            if !r.is_empty() {
                ack.properties = Props::decode(r, PropertyContext::Packet(packet))?;
            }
        }
        Ok(ack)
    }

    #[inline]
    pub(crate) fn sized(
        &self,
        packet: PacketType,
        first: u8,
        version: Version,
    ) -> Result<Sized<'_>, EncodeError> {
        super::check_packet_id(self.packet_id, packet)?;
        if !self.reason.allowed_in(packet) {
            return Err(EncodeError::InvalidReasonCode {
                packet,
                code: self.reason,
            });
        }
        let tail = if version.is_v5() {
            Tail::shortest(
                self.reason,
                &self.properties,
                PropertyContext::Packet(packet),
            )?
        } else {
            if self.reason.value() != 0 {
                return Err(EncodeError::NotInVersion {
                    what: "a reason code",
                    version,
                });
            }
            super::no_props(&self.properties, version)?;
            Tail::Nothing
        };
        Ok(Sized {
            first,
            len: 2 + tail.len(),
            body: Body::Ack(self, tail),
        })
    }

    #[inline]
    pub(crate) fn write(&self, tail: Tail, buf: &mut BytesMut) {
        wire::put_u16(buf, self.packet_id);
        tail.write(self.reason, &self.properties, buf);
    }
}
