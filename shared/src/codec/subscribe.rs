//! SUBSCRIBE (MQTT 5.0 §3.8, 3.1.1 §3.8).

use super::MqttStr;
use crate::prelude::*;
use bytes::BytesMut;

use super::wire::{self, Reader};
use super::{Body, DecodeError, EncodeError, PacketType, Props, QoS, Sized, Version, props_total};
use crate::topic;

/// When the server sends retained messages for a new subscription (MQTT 5 §3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist yet.
    SendIfNew = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

/// One topic filter with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The topic filter, possibly `$share/<group>/<filter>`.
    pub filter: MqttStr,
    /// Maximum QoS the client accepts.
    pub qos: QoS,
    /// MQTT 5: do not send the client its own publications.
    pub no_local: bool,
    /// MQTT 5: keep the RETAIN flag as published.
    pub retain_as_published: bool,
    /// MQTT 5: when to send retained messages.
    pub retain_handling: RetainHandling,
}

impl Subscription {
    /// A subscription to `filter` at `qos` with default options.
    pub fn new(filter: impl Into<MqttStr>, qos: QoS) -> Self {
        Self {
            filter: filter.into(),
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }

    fn options(&self) -> u8 {
        self.qos as u8
            | u8::from(self.no_local) << 2
            | u8::from(self.retain_as_published) << 3
            | (self.retain_handling as u8) << 4
    }
}

/// A request to subscribe to one or more topic filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// The filters, at least one.
    pub filters: Vec<Subscription>,
    /// SUBSCRIBE properties (MQTT 5): a Subscription Identifier and user properties.
    pub properties: Props,
}

impl Subscribe {
    // Read only by a server's build (`DecodeError::SentByClients`).
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn decode(r: &mut Reader, version: Version) -> Result<Self, DecodeError> {
        let packet_id = super::read_packet_id(r, PacketType::Subscribe)?;
        let properties = super::read_props(r, version, PacketType::Subscribe)?;
        // One allocation for the list, not one per doubling.
        let mut filters = Vec::with_capacity(r.count_strings(1));
        while !r.is_empty() {
            let filter = r.mqtt_string("topic filter")?;
            topic::validate_filter(&filter).map_err(DecodeError::InvalidTopicFilter)?;
            let options = r.u8("subscription options")?;
            let reserved = if version.is_v5() { 0xc0 } else { 0xfc };
            let qos = QoS::from_u8(options & 0x03);
            let retain_handling = match (options >> 4) & 0x03 {
                0 => Some(RetainHandling::SendAtSubscribe),
                1 => Some(RetainHandling::SendIfNew),
                2 => Some(RetainHandling::DoNotSend),
                _ => None,
            };
            let (Some(qos), Some(retain_handling), 0) = (qos, retain_handling, options & reserved)
            else {
                return Err(DecodeError::InvalidSubscriptionOptions { options });
            };
            let no_local = options & 0x04 != 0;
            if no_local && filter.starts_with("$share/") {
                return Err(DecodeError::NoLocalOnSharedSubscription {
                    filter: filter.to_string(),
                });
            }
            filters.push(Subscription {
                filter,
                qos,
                no_local,
                retain_as_published: options & 0x08 != 0,
                retain_handling,
            });
        }
        if filters.is_empty() {
            return Err(DecodeError::EmptySubscribe);
        }
        Ok(Self {
            packet_id,
            filters,
            properties,
        })
    }

    pub(crate) fn sized(&self, version: Version) -> Result<Sized<'_>, EncodeError> {
        super::check_packet_id(self.packet_id, PacketType::Subscribe)?;
        if self.filters.is_empty() {
            return Err(EncodeError::Empty {
                packet: PacketType::Subscribe,
            });
        }
        let mut len = 2;
        for s in &self.filters {
            topic::validate_filter(&s.filter).map_err(EncodeError::InvalidTopicFilter)?;
            if !version.is_v5() && s.options() > 2 {
                return Err(EncodeError::NotInVersion {
                    what: "subscription options other than QoS",
                    version,
                });
            }
            // validate_filter has checked the length and U+0000.
            len += 2 + s.filter.len() + 1;
        }
        let props = super::props_len(&self.properties, version, PacketType::Subscribe)?;
        len += props.map_or(0, props_total);
        Ok(Sized {
            first: 0x82,
            len,
            body: Body::Subscribe(self, props),
        })
    }

    pub(crate) fn write(&self, _version: Version, props: Option<usize>, buf: &mut BytesMut) {
        wire::put_u16(buf, self.packet_id);
        if let Some(n) = props {
            self.properties.write(n, buf);
        }
        for s in &self.filters {
            wire::put_bytes(buf, s.filter.as_bytes());
            wire::put_u8(buf, s.options());
        }
    }
}
