//! MQTT 5 properties (§2.2.2): every property, which packets may carry it, no duplicates
//! except User Property (and Subscription Identifier in PUBLISH), and value rules.

use crate::prelude::*;
use bytes::{Bytes, BytesMut};

use super::wire::{self, Reader};
use super::{DecodeError, EncodeError, MqttStr, PacketType, QoS};

/// Where a property list stands: a packet type, or the Will properties of CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    /// The properties of this packet.
    Packet(PacketType),
    /// The Will Properties in the CONNECT payload.
    Will,
}

impl core::fmt::Display for PropertyContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Packet(p) => write!(f, "{p}"),
            Self::Will => f.write_str("Will properties"),
        }
    }
}

macro_rules! property_ids {
    ($($name:ident = $value:literal, $text:literal, [$($ctx:ident),*];)*) => {
        /// A property identifier (MQTT 5.0 §2.2.2.2).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum PropertyId {
            $(
                #[doc = $text]
                $name = $value,
            )*
        }

        impl PropertyId {
            fn from_byte(b: u8) -> Option<Self> {
                match b {
                    $($value => Some(Self::$name),)*
                    _ => None,
                }
            }

            /// The property's name in the specification.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$name => $text,)*
                }
            }

            /// Whether the property may appear in `ctx` (§2.2.2.2 table).
            pub fn allowed_in(self, ctx: PropertyContext) -> bool {
                use PacketType::*;
                match self {
                    $(Self::$name => matches!(ctx, $(property_ids!(@ctx $ctx))|*),)*
                }
            }
        }
    };
    (@ctx Will) => { PropertyContext::Will };
    (@ctx $p:ident) => { PropertyContext::Packet($p) };
}

property_ids! {
    PayloadFormatIndicator = 0x01, "Payload Format Indicator", [Publish, Will];
    MessageExpiryInterval = 0x02, "Message Expiry Interval", [Publish, Will];
    ContentType = 0x03, "Content Type", [Publish, Will];
    ResponseTopic = 0x08, "Response Topic", [Publish, Will];
    CorrelationData = 0x09, "Correlation Data", [Publish, Will];
    SubscriptionIdentifier = 0x0B, "Subscription Identifier", [Publish, Subscribe];
    SessionExpiryInterval = 0x11, "Session Expiry Interval", [Connect, ConnAck, Disconnect];
    AssignedClientIdentifier = 0x12, "Assigned Client Identifier", [ConnAck];
    ServerKeepAlive = 0x13, "Server Keep Alive", [ConnAck];
    AuthenticationMethod = 0x15, "Authentication Method", [Connect, ConnAck, Auth];
    AuthenticationData = 0x16, "Authentication Data", [Connect, ConnAck, Auth];
    RequestProblemInformation = 0x17, "Request Problem Information", [Connect];
    WillDelayInterval = 0x18, "Will Delay Interval", [Will];
    RequestResponseInformation = 0x19, "Request Response Information", [Connect];
    ResponseInformation = 0x1A, "Response Information", [ConnAck];
    ServerReference = 0x1C, "Server Reference", [ConnAck, Disconnect];
    ReasonString = 0x1F, "Reason String", [ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth];
    ReceiveMaximum = 0x21, "Receive Maximum", [Connect, ConnAck];
    TopicAliasMaximum = 0x22, "Topic Alias Maximum", [Connect, ConnAck];
    TopicAlias = 0x23, "Topic Alias", [Publish];
    MaximumQoS = 0x24, "Maximum QoS", [ConnAck];
    RetainAvailable = 0x25, "Retain Available", [ConnAck];
    UserProperty = 0x26, "User Property", [Connect, ConnAck, Publish, Will, PubAck, PubRec, PubRel, PubComp, Subscribe, SubAck, Unsubscribe, UnsubAck, Disconnect, Auth];
    MaximumPacketSize = 0x27, "Maximum Packet Size", [Connect, ConnAck];
    WildcardSubscriptionAvailable = 0x28, "Wildcard Subscription Available", [ConnAck];
    SubscriptionIdentifierAvailable = 0x29, "Subscription Identifier Available", [ConnAck];
    SharedSubscriptionAvailable = 0x2A, "Shared Subscription Available", [ConnAck];
}

/// All MQTT 5 properties of one packet (or of a Will). Absent properties are `None` / empty.
///
/// Value rules are enforced on decode and encode: booleans are 0 or 1, Maximum QoS is 0 or 1,
/// Receive Maximum, Topic Alias, Maximum Packet Size and Subscription Identifier are not 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01: the payload is UTF-8 (`true`) or unspecified bytes (`false`).
    pub payload_format_indicator: Option<bool>,
    /// 0x02: seconds until the message expires.
    pub message_expiry_interval: Option<u32>,
    /// 0x03: MIME type of the payload.
    pub content_type: Option<MqttStr>,
    /// 0x08: topic for a response.
    pub response_topic: Option<MqttStr>,
    /// 0x09: correlates a response with its request.
    pub correlation_data: Option<Bytes>,
    /// 0x0B: one per matching subscription in PUBLISH (server → client); at most one in SUBSCRIBE.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11: seconds the session outlives the connection.
    pub session_expiry_interval: Option<u32>,
    /// 0x12: the client id the server chose.
    pub assigned_client_identifier: Option<MqttStr>,
    /// 0x13: keep-alive the server imposes.
    pub server_keep_alive: Option<u16>,
    /// 0x15: the enhanced authentication method.
    pub authentication_method: Option<MqttStr>,
    /// 0x16: authentication data of that method.
    pub authentication_data: Option<Bytes>,
    /// 0x17: whether the server may send reason strings and user properties on failures.
    pub request_problem_information: Option<bool>,
    /// 0x18: seconds to delay the Will.
    pub will_delay_interval: Option<u32>,
    /// 0x19: whether the client asks for response information.
    pub request_response_information: Option<bool>,
    /// 0x1A: basis for response topics.
    pub response_information: Option<MqttStr>,
    /// 0x1C: another server to use.
    pub server_reference: Option<MqttStr>,
    /// 0x1F: human-readable reason.
    pub reason_string: Option<MqttStr>,
    /// 0x21: how many QoS 1/2 messages may be unacknowledged at once (not 0).
    pub receive_maximum: Option<u16>,
    /// 0x22: highest topic alias accepted.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23: a topic alias (not 0).
    pub topic_alias: Option<u16>,
    /// 0x24: highest QoS the server supports (0 or 1; absent means 2).
    pub maximum_qos: Option<QoS>,
    /// 0x25: whether retained messages are supported.
    pub retain_available: Option<bool>,
    /// 0x26: name/value pairs, in order; names may repeat.
    pub user_properties: Vec<(MqttStr, MqttStr)>,
    /// 0x27: largest packet accepted (not 0).
    pub maximum_packet_size: Option<u32>,
    /// 0x28: whether wildcard subscriptions are supported.
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29: whether subscription identifiers are supported.
    pub subscription_identifier_available: Option<bool>,
    /// 0x2A: whether shared subscriptions are supported.
    pub shared_subscription_available: Option<bool>,
}

impl Properties {
    /// No property set (usable in `const` and `static` contexts).
    pub const EMPTY: Properties = Properties {
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        subscription_identifiers: Vec::new(),
        session_expiry_interval: None,
        assigned_client_identifier: None,
        server_keep_alive: None,
        authentication_method: None,
        authentication_data: None,
        request_problem_information: None,
        will_delay_interval: None,
        request_response_information: None,
        response_information: None,
        server_reference: None,
        reason_string: None,
        receive_maximum: None,
        topic_alias_maximum: None,
        topic_alias: None,
        maximum_qos: None,
        retain_available: None,
        user_properties: Vec::new(),
        maximum_packet_size: None,
        wildcard_subscription_available: None,
        subscription_identifier_available: None,
        shared_subscription_available: None,
    };
}

static EMPTY: Properties = Properties::EMPTY;

/// The properties of a packet as it carries them: nothing (no allocation) or a boxed
/// [`Properties`]. Read and write fields through it as if it were a `Properties`
/// (`packet.properties.topic_alias = Some(1)`); build one with `Properties { .. }.into()`.
///
/// Why: `Properties` holds every MQTT 5 property (about 400 bytes). Inline, it made every
/// packet — 3.1.1 ones included — that large to build and to move.
#[derive(Clone, Default)]
pub struct Props(Option<Box<Properties>>);

impl Props {
    /// Whether no property is set.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|p| p.is_empty())
    }

    /// Validates for `ctx` and returns the encoded length of the contents.
    #[inline]
    pub(crate) fn encoded_len(&self, ctx: PropertyContext) -> Result<usize, EncodeError> {
        match &self.0 {
            None => Ok(0),
            Some(p) => p.encoded_len(ctx),
        }
    }

    /// Writes the property length and the properties.
    pub(crate) fn write(&self, len: usize, buf: &mut BytesMut) {
        match &self.0 {
            None => wire::put_u8(buf, 0),
            Some(p) => p.write(len, buf),
        }
    }
}

impl Props {
    /// Reads a property length and that many bytes of properties.
    pub(crate) fn decode(r: &mut Reader, ctx: PropertyContext) -> Result<Self, DecodeError> {
        Properties::decode(r, ctx)
    }

    /// Appends the properties as a packet carries them for `ctx` (property length, then the
    /// properties) — for stores that keep a packet's properties apart from the packet, such as
    /// the gateway's history. Nothing is written when they are not allowed in `ctx`.
    pub fn encode_to(&self, ctx: PropertyContext, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let len = self.encoded_len(ctx)?;
        self.write(len, buf);
        Ok(())
    }

    /// Reads back what [`Props::encode_to`] wrote, which must be all of `bytes`.
    pub fn decode_from(bytes: Bytes, ctx: PropertyContext) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let props = Properties::decode(&mut r, ctx)?;
        if r.is_empty() {
            Ok(props)
        } else {
            Err(DecodeError::PropertyLengthOverflow {
                length: r.remaining(),
                available: 0,
            })
        }
    }
}

impl core::ops::Deref for Props {
    type Target = Properties;

    #[inline]
    fn deref(&self) -> &Properties {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl core::ops::DerefMut for Props {
    #[inline]
    fn deref_mut(&mut self) -> &mut Properties {
        self.0.get_or_insert_with(Box::default)
    }
}

impl From<Properties> for Props {
    fn from(p: Properties) -> Self {
        if p.is_empty() {
            Self(None)
        } else {
            Self(Some(Box::new(p)))
        }
    }
}

impl PartialEq for Props {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Props {}

impl core::fmt::Debug for Props {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(&**self, f)
    }
}

fn set<T>(slot: &mut Option<T>, id: PropertyId, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty {
            property: id.name(),
        });
    }
    *slot = Some(value);
    Ok(())
}

fn flag(r: &mut Reader, id: PropertyId) -> Result<bool, DecodeError> {
    match r.u8(id.name())? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(DecodeError::InvalidPropertyValue {
            property: id.name(),
            value: u32::from(v),
        }),
    }
}

fn nonzero<T: Into<u32> + Copy + PartialEq + Default>(
    v: T,
    id: PropertyId,
) -> Result<T, DecodeError> {
    if v == T::default() {
        Err(DecodeError::InvalidPropertyValue {
            property: id.name(),
            value: 0,
        })
    } else {
        Ok(v)
    }
}

fn strp(s: &Option<MqttStr>) -> Option<&[u8]> {
    s.as_ref().map(|s| s.as_bytes())
}

impl Properties {
    /// Whether no property is set. (Field by field, not `== Self::EMPTY`: that compared the
    /// strings and lists too, at twice the code in kite.js's wasm. Destructured, so that a new
    /// property cannot be left out.)
    pub fn is_empty(&self) -> bool {
        let Self {
            payload_format_indicator,
            message_expiry_interval,
            content_type,
            response_topic,
            correlation_data,
            subscription_identifiers,
            session_expiry_interval,
            assigned_client_identifier,
            server_keep_alive,
            authentication_method,
            authentication_data,
            request_problem_information,
            will_delay_interval,
            request_response_information,
            response_information,
            server_reference,
            reason_string,
            receive_maximum,
            topic_alias_maximum,
            topic_alias,
            maximum_qos,
            retain_available,
            user_properties,
            maximum_packet_size,
            wildcard_subscription_available,
            subscription_identifier_available,
            shared_subscription_available,
        } = self;
        payload_format_indicator.is_none()
            && message_expiry_interval.is_none()
            && content_type.is_none()
            && response_topic.is_none()
            && correlation_data.is_none()
            && subscription_identifiers.is_empty()
            && session_expiry_interval.is_none()
            && assigned_client_identifier.is_none()
            && server_keep_alive.is_none()
            && authentication_method.is_none()
            && authentication_data.is_none()
            && request_problem_information.is_none()
            && will_delay_interval.is_none()
            && request_response_information.is_none()
            && response_information.is_none()
            && server_reference.is_none()
            && reason_string.is_none()
            && receive_maximum.is_none()
            && topic_alias_maximum.is_none()
            && topic_alias.is_none()
            && maximum_qos.is_none()
            && retain_available.is_none()
            && user_properties.is_empty()
            && maximum_packet_size.is_none()
            && wildcard_subscription_available.is_none()
            && subscription_identifier_available.is_none()
            && shared_subscription_available.is_none()
    }

    /// Reads a property length and that many bytes of properties (allocating only if there
    /// are any).
    fn decode(r: &mut Reader, ctx: PropertyContext) -> Result<Props, DecodeError> {
        let len = r.var_int("property length")? as usize;
        if len > r.remaining() {
            return Err(DecodeError::PropertyLengthOverflow {
                length: len,
                available: r.remaining(),
            });
        }
        if len == 0 {
            return Ok(Props::default());
        }
        r.block(len, "properties", |r| Self::read_block(r, ctx))
            .map(|p| Props(Some(p)))
    }

    /// Reads properties until the end of the reader's block.
    fn read_block(r: &mut Reader, ctx: PropertyContext) -> Result<Box<Properties>, DecodeError> {
        let mut p = Box::<Properties>::default();
        while !r.is_empty() {
            let byte = r.var_int("property identifier")?;
            let id = u8::try_from(byte)
                .ok()
                .and_then(PropertyId::from_byte)
                .ok_or(DecodeError::UnknownProperty { id: byte })?;
            if !id.allowed_in(ctx) {
                return Err(DecodeError::PropertyNotAllowed {
                    property: id.name(),
                    context: ctx,
                });
            }
            use PropertyId as P;
            match id {
                P::PayloadFormatIndicator => {
                    set(&mut p.payload_format_indicator, id, flag(r, id)?)?
                }
                P::MessageExpiryInterval => {
                    set(&mut p.message_expiry_interval, id, r.u32(id.name())?)?
                }
                P::ContentType => set(&mut p.content_type, id, r.mqtt_string(id.name())?)?,
                P::ResponseTopic => {
                    let topic = r.mqtt_string(id.name())?;
                    // [MQTT-3.3.2-14]: the Response Topic is a Topic Name.
                    crate::topic::validate_name(&topic).map_err(DecodeError::InvalidTopicName)?;
                    set(&mut p.response_topic, id, topic)?;
                }
                P::CorrelationData => set(&mut p.correlation_data, id, r.binary(id.name())?)?,
                P::SubscriptionIdentifier => {
                    let v = nonzero(r.var_int(id.name())?, id)?;
                    // Several in PUBLISH (one per matching subscription), one in SUBSCRIBE.
                    if ctx == PropertyContext::Packet(PacketType::Subscribe)
                        && !p.subscription_identifiers.is_empty()
                    {
                        return Err(DecodeError::DuplicateProperty {
                            property: id.name(),
                        });
                    }
                    p.subscription_identifiers.push(v);
                }
                P::SessionExpiryInterval => {
                    set(&mut p.session_expiry_interval, id, r.u32(id.name())?)?
                }
                P::AssignedClientIdentifier => set(
                    &mut p.assigned_client_identifier,
                    id,
                    r.mqtt_string(id.name())?,
                )?,
                P::ServerKeepAlive => set(&mut p.server_keep_alive, id, r.u16(id.name())?)?,
                P::AuthenticationMethod => {
                    set(&mut p.authentication_method, id, r.mqtt_string(id.name())?)?
                }
                P::AuthenticationData => set(&mut p.authentication_data, id, r.binary(id.name())?)?,
                P::RequestProblemInformation => {
                    set(&mut p.request_problem_information, id, flag(r, id)?)?
                }
                P::WillDelayInterval => set(&mut p.will_delay_interval, id, r.u32(id.name())?)?,
                P::RequestResponseInformation => {
                    set(&mut p.request_response_information, id, flag(r, id)?)?
                }
                P::ResponseInformation => {
                    set(&mut p.response_information, id, r.mqtt_string(id.name())?)?
                }
                P::ServerReference => set(&mut p.server_reference, id, r.mqtt_string(id.name())?)?,
                P::ReasonString => set(&mut p.reason_string, id, r.mqtt_string(id.name())?)?,
                P::ReceiveMaximum => {
                    set(&mut p.receive_maximum, id, nonzero(r.u16(id.name())?, id)?)?
                }
                P::TopicAliasMaximum => set(&mut p.topic_alias_maximum, id, r.u16(id.name())?)?,
                P::TopicAlias => set(&mut p.topic_alias, id, nonzero(r.u16(id.name())?, id)?)?,
                P::MaximumQoS => {
                    let qos = match r.u8(id.name())? {
                        0 => QoS::AtMostOnce,
                        1 => QoS::AtLeastOnce,
                        v => {
                            return Err(DecodeError::InvalidPropertyValue {
                                property: id.name(),
                                value: u32::from(v),
                            });
                        }
                    };
                    set(&mut p.maximum_qos, id, qos)?;
                }
                P::RetainAvailable => set(&mut p.retain_available, id, flag(r, id)?)?,
                P::UserProperty => {
                    r.user_property()?;
                    let name = r.mqtt_string(id.name())?;
                    let value = r.mqtt_string(id.name())?;
                    p.user_properties.push((name, value));
                }
                P::MaximumPacketSize => set(
                    &mut p.maximum_packet_size,
                    id,
                    nonzero(r.u32(id.name())?, id)?,
                )?,
                P::WildcardSubscriptionAvailable => {
                    set(&mut p.wildcard_subscription_available, id, flag(r, id)?)?
                }
                P::SubscriptionIdentifierAvailable => {
                    set(&mut p.subscription_identifier_available, id, flag(r, id)?)?;
                }
                P::SharedSubscriptionAvailable => {
                    set(&mut p.shared_subscription_available, id, flag(r, id)?)?
                }
            }
        }
        Ok(p)
    }

    /// Validates the properties for `ctx` and returns the encoded length of their contents
    /// (without the property length prefix).
    #[inline]
    pub(crate) fn encoded_len(&self, ctx: PropertyContext) -> Result<usize, EncodeError> {
        let mut len = 0usize;
        let mut check = |id: PropertyId, present: bool, size: usize| -> Result<(), EncodeError> {
            if !present {
                return Ok(());
            }
            if !id.allowed_in(ctx) {
                return Err(EncodeError::PropertyNotAllowed {
                    property: id.name(),
                    context: ctx,
                });
            }
            len += size;
            Ok(())
        };
        use PropertyId as P;
        let s = |v: &Option<MqttStr>, id: PropertyId| -> Result<usize, EncodeError> {
            v.as_ref()
                .map_or(Ok(0), |s| wire::check_str(s, id.name()).map(|n| n + 1))
        };
        let b = |v: &Option<Bytes>, id: PropertyId| -> Result<usize, EncodeError> {
            v.as_ref()
                .map_or(Ok(0), |s| wire::check_bin(s, id.name()).map(|n| n + 1))
        };
        let nz = |v: Option<u32>, id: PropertyId| -> Result<(), EncodeError> {
            if v == Some(0) {
                Err(EncodeError::InvalidPropertyValue {
                    property: id.name(),
                })
            } else {
                Ok(())
            }
        };
        nz(self.receive_maximum.map(u32::from), P::ReceiveMaximum)?;
        nz(self.topic_alias.map(u32::from), P::TopicAlias)?;
        nz(self.maximum_packet_size, P::MaximumPacketSize)?;
        if self.maximum_qos == Some(QoS::ExactlyOnce) {
            return Err(EncodeError::InvalidPropertyValue {
                property: P::MaximumQoS.name(),
            });
        }
        check(
            P::PayloadFormatIndicator,
            self.payload_format_indicator.is_some(),
            2,
        )?;
        check(
            P::MessageExpiryInterval,
            self.message_expiry_interval.is_some(),
            5,
        )?;
        check(
            P::ContentType,
            self.content_type.is_some(),
            s(&self.content_type, P::ContentType)?,
        )?;
        if let Some(topic) = &self.response_topic {
            crate::topic::validate_name(topic).map_err(EncodeError::InvalidTopicName)?;
        }
        check(
            P::ResponseTopic,
            self.response_topic.is_some(),
            s(&self.response_topic, P::ResponseTopic)?,
        )?;
        check(
            P::CorrelationData,
            self.correlation_data.is_some(),
            b(&self.correlation_data, P::CorrelationData)?,
        )?;
        if ctx == PropertyContext::Packet(PacketType::Subscribe)
            && self.subscription_identifiers.len() > 1
        {
            return Err(EncodeError::InvalidPropertyValue {
                property: P::SubscriptionIdentifier.name(),
            });
        }
        for &id in &self.subscription_identifiers {
            if id == 0 || id > wire::MAX_VAR_INT {
                return Err(EncodeError::InvalidPropertyValue {
                    property: P::SubscriptionIdentifier.name(),
                });
            }
            check(P::SubscriptionIdentifier, true, 1 + wire::var_int_len(id))?;
        }
        check(
            P::SessionExpiryInterval,
            self.session_expiry_interval.is_some(),
            5,
        )?;
        check(
            P::AssignedClientIdentifier,
            self.assigned_client_identifier.is_some(),
            s(
                &self.assigned_client_identifier,
                P::AssignedClientIdentifier,
            )?,
        )?;
        check(P::ServerKeepAlive, self.server_keep_alive.is_some(), 3)?;
        check(
            P::AuthenticationMethod,
            self.authentication_method.is_some(),
            s(&self.authentication_method, P::AuthenticationMethod)?,
        )?;
        check(
            P::AuthenticationData,
            self.authentication_data.is_some(),
            b(&self.authentication_data, P::AuthenticationData)?,
        )?;
        check(
            P::RequestProblemInformation,
            self.request_problem_information.is_some(),
            2,
        )?;
        check(P::WillDelayInterval, self.will_delay_interval.is_some(), 5)?;
        check(
            P::RequestResponseInformation,
            self.request_response_information.is_some(),
            2,
        )?;
        check(
            P::ResponseInformation,
            self.response_information.is_some(),
            s(&self.response_information, P::ResponseInformation)?,
        )?;
        check(
            P::ServerReference,
            self.server_reference.is_some(),
            s(&self.server_reference, P::ServerReference)?,
        )?;
        check(
            P::ReasonString,
            self.reason_string.is_some(),
            s(&self.reason_string, P::ReasonString)?,
        )?;
        check(P::ReceiveMaximum, self.receive_maximum.is_some(), 3)?;
        check(P::TopicAliasMaximum, self.topic_alias_maximum.is_some(), 3)?;
        check(P::TopicAlias, self.topic_alias.is_some(), 3)?;
        check(P::MaximumQoS, self.maximum_qos.is_some(), 2)?;
        check(P::RetainAvailable, self.retain_available.is_some(), 2)?;
        for (name, value) in &self.user_properties {
            let size = 1
                + wire::check_str(name, P::UserProperty.name())?
                + wire::check_str(value, P::UserProperty.name())?;
            check(P::UserProperty, true, size)?;
        }
        check(P::MaximumPacketSize, self.maximum_packet_size.is_some(), 5)?;
        check(
            P::WildcardSubscriptionAvailable,
            self.wildcard_subscription_available.is_some(),
            2,
        )?;
        check(
            P::SubscriptionIdentifierAvailable,
            self.subscription_identifier_available.is_some(),
            2,
        )?;
        check(
            P::SharedSubscriptionAvailable,
            self.shared_subscription_available.is_some(),
            2,
        )?;
        if len > wire::MAX_VAR_INT as usize {
            return Err(EncodeError::PacketTooLarge { size: len });
        }
        Ok(len)
    }

    /// Writes the property length (`len` from [`Self::encoded_len`]) and the properties, in
    /// identifier order.
    pub(crate) fn write(&self, len: usize, buf: &mut BytesMut) {
        use PropertyId as P;
        wire::put_var_int(buf, len as u32);
        let flag = |buf: &mut BytesMut, id: P, v: Option<bool>| {
            if let Some(v) = v {
                wire::put_u8(buf, id as u8);
                wire::put_u8(buf, u8::from(v));
            }
        };
        let u32p = |buf: &mut BytesMut, id: P, v: Option<u32>| {
            if let Some(v) = v {
                wire::put_u8(buf, id as u8);
                wire::put_u32(buf, v);
            }
        };
        let u16p = |buf: &mut BytesMut, id: P, v: Option<u16>| {
            if let Some(v) = v {
                wire::put_u8(buf, id as u8);
                wire::put_u16(buf, v);
            }
        };
        let bytesp = |buf: &mut BytesMut, id: P, v: Option<&[u8]>| {
            if let Some(v) = v {
                wire::put_u8(buf, id as u8);
                wire::put_bytes(buf, v);
            }
        };
        flag(
            buf,
            P::PayloadFormatIndicator,
            self.payload_format_indicator,
        );
        u32p(buf, P::MessageExpiryInterval, self.message_expiry_interval);
        bytesp(buf, P::ContentType, strp(&self.content_type));
        bytesp(buf, P::ResponseTopic, strp(&self.response_topic));
        bytesp(buf, P::CorrelationData, self.correlation_data.as_deref());
        for &id in &self.subscription_identifiers {
            wire::put_u8(buf, P::SubscriptionIdentifier as u8);
            wire::put_var_int(buf, id);
        }
        u32p(buf, P::SessionExpiryInterval, self.session_expiry_interval);
        bytesp(
            buf,
            P::AssignedClientIdentifier,
            strp(&self.assigned_client_identifier),
        );
        u16p(buf, P::ServerKeepAlive, self.server_keep_alive);
        bytesp(
            buf,
            P::AuthenticationMethod,
            strp(&self.authentication_method),
        );
        bytesp(
            buf,
            P::AuthenticationData,
            self.authentication_data.as_deref(),
        );
        flag(
            buf,
            P::RequestProblemInformation,
            self.request_problem_information,
        );
        u32p(buf, P::WillDelayInterval, self.will_delay_interval);
        flag(
            buf,
            P::RequestResponseInformation,
            self.request_response_information,
        );
        bytesp(
            buf,
            P::ResponseInformation,
            strp(&self.response_information),
        );
        bytesp(buf, P::ServerReference, strp(&self.server_reference));
        bytesp(buf, P::ReasonString, strp(&self.reason_string));
        u16p(buf, P::ReceiveMaximum, self.receive_maximum);
        u16p(buf, P::TopicAliasMaximum, self.topic_alias_maximum);
        u16p(buf, P::TopicAlias, self.topic_alias);
        if let Some(q) = self.maximum_qos {
            wire::put_u8(buf, P::MaximumQoS as u8);
            wire::put_u8(buf, q as u8);
        }
        flag(buf, P::RetainAvailable, self.retain_available);
        for (name, value) in &self.user_properties {
            wire::put_u8(buf, P::UserProperty as u8);
            wire::put_bytes(buf, name.as_bytes());
            wire::put_bytes(buf, value.as_bytes());
        }
        u32p(buf, P::MaximumPacketSize, self.maximum_packet_size);
        flag(
            buf,
            P::WildcardSubscriptionAvailable,
            self.wildcard_subscription_available,
        );
        flag(
            buf,
            P::SubscriptionIdentifierAvailable,
            self.subscription_identifier_available,
        );
        flag(
            buf,
            P::SharedSubscriptionAvailable,
            self.shared_subscription_available,
        );
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::{Properties, QoS};
    use bytes::Bytes;

    /// `is_empty` looks at every property: each one set alone makes the list non-empty.
    #[test]
    fn each_property_alone_is_not_empty() {
        assert!(Properties::default().is_empty() && Properties::EMPTY.is_empty());
        let e = Properties::default;
        let s = || Some("x".into());
        let b = || Some(Bytes::from_static(b"x"));
        let one: [Properties; 27] = [
            Properties {
                payload_format_indicator: Some(false),
                ..e()
            },
            Properties {
                message_expiry_interval: Some(0),
                ..e()
            },
            Properties {
                content_type: s(),
                ..e()
            },
            Properties {
                response_topic: s(),
                ..e()
            },
            Properties {
                correlation_data: b(),
                ..e()
            },
            Properties {
                subscription_identifiers: vec![1],
                ..e()
            },
            Properties {
                session_expiry_interval: Some(0),
                ..e()
            },
            Properties {
                assigned_client_identifier: s(),
                ..e()
            },
            Properties {
                server_keep_alive: Some(0),
                ..e()
            },
            Properties {
                authentication_method: s(),
                ..e()
            },
            Properties {
                authentication_data: b(),
                ..e()
            },
            Properties {
                request_problem_information: Some(false),
                ..e()
            },
            Properties {
                will_delay_interval: Some(0),
                ..e()
            },
            Properties {
                request_response_information: Some(false),
                ..e()
            },
            Properties {
                response_information: s(),
                ..e()
            },
            Properties {
                server_reference: s(),
                ..e()
            },
            Properties {
                reason_string: s(),
                ..e()
            },
            Properties {
                receive_maximum: Some(1),
                ..e()
            },
            Properties {
                topic_alias_maximum: Some(0),
                ..e()
            },
            Properties {
                topic_alias: Some(1),
                ..e()
            },
            Properties {
                maximum_qos: Some(QoS::AtMostOnce),
                ..e()
            },
            Properties {
                retain_available: Some(false),
                ..e()
            },
            Properties {
                user_properties: vec![("k".into(), "v".into())],
                ..e()
            },
            Properties {
                maximum_packet_size: Some(1),
                ..e()
            },
            Properties {
                wildcard_subscription_available: Some(false),
                ..e()
            },
            Properties {
                subscription_identifier_available: Some(false),
                ..e()
            },
            Properties {
                shared_subscription_available: Some(false),
                ..e()
            },
        ];
        for (i, p) in one.iter().enumerate() {
            assert!(!p.is_empty(), "property #{i} alone: {p:?}");
            assert_ne!(*p, Properties::EMPTY, "property #{i} alone");
        }
    }
}
