//! UNSUBSCRIBE (MQTT 5.0 §3.10, 3.1.1 §3.10).

use super::MqttStr;
use crate::prelude::*;
use bytes::BytesMut;

use super::wire::{self, Reader};
use super::{Body, DecodeError, EncodeError, PacketType, Props, Sized, Version, props_total};
use crate::topic;

/// A request to remove subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// The filters to remove, at least one.
    pub filters: Vec<MqttStr>,
    /// UNSUBSCRIBE properties (MQTT 5: user properties).
    pub properties: Props,
}

impl Unsubscribe {
    // Read only by a server's build (`DecodeError::SentByClients`).
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn decode(r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let packet_id = super::read_packet_id(r, PacketType::Unsubscribe)?;
        let properties = super::read_props(r, version, PacketType::Unsubscribe)?;
        let mut filters = Vec::with_capacity(r.count_strings(0));
        while !r.is_empty() {
            let filter = r.mqtt_string("topic filter")?;
            topic::validate_filter(&filter).map_err(DecodeError::InvalidTopicFilter)?;
            filters.push(filter);
        }
        if filters.is_empty() {
            return Err(DecodeError::EmptyUnsubscribe);
        }
        Ok(Self {
            packet_id,
            filters,
            properties,
        })
    }

    pub(crate) fn sized(&self, version: Version) -> Result<Sized<'_>, EncodeError> {
        super::check_packet_id(self.packet_id, PacketType::Unsubscribe)?;
        if self.filters.is_empty() {
            return Err(EncodeError::Empty {
                packet: PacketType::Unsubscribe,
            });
        }
        let mut len = 2;
        for f in &self.filters {
            topic::validate_filter(f).map_err(EncodeError::InvalidTopicFilter)?;
            // validate_filter has checked the length and U+0000.
            len += 2 + f.len();
        }
        let props = super::props_len(&self.properties, version, PacketType::Unsubscribe)?;
        len += props.map_or(0, props_total);
        Ok(Sized {
            first: 0xa2,
            len,
            body: Body::Unsubscribe(self, props),
        })
    }

    pub(crate) fn write(&self, props: Option<usize>, buf: &mut BytesMut) {
        wire::put_u16(buf, self.packet_id);
        if let Some(n) = props {
            self.properties.write(n, buf);
        }
        for f in &self.filters {
            wire::put_bytes(buf, f.as_bytes());
        }
    }
}
