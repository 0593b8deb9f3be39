//! Reason codes (MQTT 5.0 §2.4) and the 3.1.1 return codes they stand for.
//!
//! One enum for every packet: which codes a packet may carry is checked by
//! [`ReasonCode::allowed_in`] on decode and encode. MQTT 3.1.1 CONNACK return codes and SUBACK
//! return codes are mapped onto the v5 codes of the same meaning (see [`ReasonCode::from_v3_connack`]).

use super::PacketType;

macro_rules! reason_codes {
    ($($name:ident = $value:literal, $text:literal;)*) => {
        /// An MQTT 5 reason code. `Success`, `NormalDisconnection` and `GrantedQoS0` share the
        /// value 0; which one a 0 means depends on the packet.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ReasonCode {
            $(
                #[doc = $text]
                $name,
            )*
        }

        impl ReasonCode {
            /// The byte on the wire.
            pub fn value(self) -> u8 {
                match self {
                    $(Self::$name => $value,)*
                }
            }

            /// What the code means, in the specification's words.
            pub fn description(self) -> &'static str {
                match self {
                    $(Self::$name => $text,)*
                }
            }
        }
    };
}

reason_codes! {
    Success = 0x00, "Success";
    NormalDisconnection = 0x00, "Normal disconnection";
    GrantedQoS0 = 0x00, "Granted QoS 0";
    GrantedQoS1 = 0x01, "Granted QoS 1";
    GrantedQoS2 = 0x02, "Granted QoS 2";
    DisconnectWithWillMessage = 0x04, "Disconnect with Will Message";
    NoMatchingSubscribers = 0x10, "No matching subscribers";
    NoSubscriptionExisted = 0x11, "No subscription existed";
    ContinueAuthentication = 0x18, "Continue authentication";
    ReAuthenticate = 0x19, "Re-authenticate";
    UnspecifiedError = 0x80, "Unspecified error";
    MalformedPacket = 0x81, "Malformed Packet";
    ProtocolError = 0x82, "Protocol Error";
    ImplementationSpecificError = 0x83, "Implementation specific error";
    UnsupportedProtocolVersion = 0x84, "Unsupported Protocol Version";
    ClientIdentifierNotValid = 0x85, "Client Identifier not valid";
    BadUserNameOrPassword = 0x86, "Bad User Name or Password";
    NotAuthorized = 0x87, "Not authorized";
    ServerUnavailable = 0x88, "Server unavailable";
    ServerBusy = 0x89, "Server busy";
    Banned = 0x8A, "Banned";
    ServerShuttingDown = 0x8B, "Server shutting down";
    BadAuthenticationMethod = 0x8C, "Bad authentication method";
    KeepAliveTimeout = 0x8D, "Keep Alive timeout";
    SessionTakenOver = 0x8E, "Session taken over";
    TopicFilterInvalid = 0x8F, "Topic Filter invalid";
    TopicNameInvalid = 0x90, "Topic Name invalid";
    PacketIdentifierInUse = 0x91, "Packet Identifier in use";
    PacketIdentifierNotFound = 0x92, "Packet Identifier not found";
    ReceiveMaximumExceeded = 0x93, "Receive Maximum exceeded";
    TopicAliasInvalid = 0x94, "Topic Alias invalid";
    PacketTooLarge = 0x95, "Packet too large";
    MessageRateTooHigh = 0x96, "Message rate too high";
    QuotaExceeded = 0x97, "Quota exceeded";
    AdministrativeAction = 0x98, "Administrative action";
    PayloadFormatInvalid = 0x99, "Payload format invalid";
    RetainNotSupported = 0x9A, "Retain not supported";
    QoSNotSupported = 0x9B, "QoS not supported";
    UseAnotherServer = 0x9C, "Use another server";
    ServerMoved = 0x9D, "Server moved";
    SharedSubscriptionsNotSupported = 0x9E, "Shared Subscriptions not supported";
    ConnectionRateExceeded = 0x9F, "Connection rate exceeded";
    MaximumConnectTime = 0xA0, "Maximum connect time";
    SubscriptionIdentifiersNotSupported = 0xA1, "Subscription Identifiers not supported";
    WildcardSubscriptionsNotSupported = 0xA2, "Wildcard Subscriptions not supported";
}

use ReasonCode as R;

/// Codes allowed per packet, from the tables of MQTT 5.0 §3.x.2.1.
const CONNACK: &[ReasonCode] = &[
    R::Success,
    R::UnspecifiedError,
    R::MalformedPacket,
    R::ProtocolError,
    R::ImplementationSpecificError,
    R::UnsupportedProtocolVersion,
    R::ClientIdentifierNotValid,
    R::BadUserNameOrPassword,
    R::NotAuthorized,
    R::ServerUnavailable,
    R::ServerBusy,
    R::Banned,
    R::BadAuthenticationMethod,
    R::TopicNameInvalid,
    R::PacketTooLarge,
    R::QuotaExceeded,
    R::PayloadFormatInvalid,
    R::RetainNotSupported,
    R::QoSNotSupported,
    R::UseAnotherServer,
    R::ServerMoved,
    R::ConnectionRateExceeded,
];
const PUBACK: &[ReasonCode] = &[
    R::Success,
    R::NoMatchingSubscribers,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicNameInvalid,
    R::PacketIdentifierInUse,
    R::QuotaExceeded,
    R::PayloadFormatInvalid,
];
const PUBREL: &[ReasonCode] = &[R::Success, R::PacketIdentifierNotFound];
const SUBACK: &[ReasonCode] = &[
    R::GrantedQoS0,
    R::GrantedQoS1,
    R::GrantedQoS2,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicFilterInvalid,
    R::PacketIdentifierInUse,
    R::QuotaExceeded,
    R::SharedSubscriptionsNotSupported,
    R::SubscriptionIdentifiersNotSupported,
    R::WildcardSubscriptionsNotSupported,
];
const UNSUBACK: &[ReasonCode] = &[
    R::Success,
    R::NoSubscriptionExisted,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicFilterInvalid,
    R::PacketIdentifierInUse,
];
const DISCONNECT: &[ReasonCode] = &[
    R::NormalDisconnection,
    R::DisconnectWithWillMessage,
    R::UnspecifiedError,
    R::MalformedPacket,
    R::ProtocolError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::ServerBusy,
    R::ServerShuttingDown,
    R::KeepAliveTimeout,
    R::SessionTakenOver,
    R::TopicFilterInvalid,
    R::TopicNameInvalid,
    R::ReceiveMaximumExceeded,
    R::TopicAliasInvalid,
    R::PacketTooLarge,
    R::MessageRateTooHigh,
    R::QuotaExceeded,
    R::AdministrativeAction,
    R::PayloadFormatInvalid,
    R::RetainNotSupported,
    R::QoSNotSupported,
    R::UseAnotherServer,
    R::ServerMoved,
    R::SharedSubscriptionsNotSupported,
    R::ConnectionRateExceeded,
    R::MaximumConnectTime,
    R::SubscriptionIdentifiersNotSupported,
    R::WildcardSubscriptionsNotSupported,
];
const AUTH: &[ReasonCode] = &[R::Success, R::ContinueAuthentication, R::ReAuthenticate];

impl ReasonCode {
    fn table(packet: PacketType) -> &'static [ReasonCode] {
        match packet {
            PacketType::ConnAck => CONNACK,
            PacketType::PubAck | PacketType::PubRec => PUBACK,
            PacketType::PubRel | PacketType::PubComp => PUBREL,
            PacketType::SubAck => SUBACK,
            PacketType::UnsubAck => UNSUBACK,
            PacketType::Disconnect => DISCONNECT,
            PacketType::Auth => AUTH,
            _ => &[],
        }
    }

    /// The code with this value in this packet, if the packet allows it.
    pub fn from_byte(packet: PacketType, value: u8) -> Option<Self> {
        Self::table(packet)
            .iter()
            .copied()
            .find(|c| c.value() == value)
    }

    /// Whether `packet` may carry this code (the 0x00 variants are interchangeable).
    pub fn allowed_in(self, packet: PacketType) -> bool {
        Self::table(packet)
            .iter()
            .any(|c| c.value() == self.value())
    }

    /// Whether the code reports a failure (0x80 and above, [MQTT-2.4]).
    pub fn is_error(self) -> bool {
        self.value() >= 0x80
    }

    /// An MQTT 3.1.1 CONNACK return code (§3.2.2.3) as the v5 code of the same meaning.
    pub fn from_v3_connack(code: u8) -> Option<Self> {
        Some(match code {
            0 => R::Success,
            1 => R::UnsupportedProtocolVersion,
            2 => R::ClientIdentifierNotValid,
            3 => R::ServerUnavailable,
            4 => R::BadUserNameOrPassword,
            5 => R::NotAuthorized,
            _ => return None,
        })
    }

    /// The MQTT 3.1.1 CONNACK return code of the same meaning, if there is one.
    pub fn to_v3_connack(self) -> Option<u8> {
        Some(match self {
            R::Success => 0,
            R::UnsupportedProtocolVersion => 1,
            R::ClientIdentifierNotValid => 2,
            R::ServerUnavailable => 3,
            R::BadUserNameOrPassword => 4,
            R::NotAuthorized => 5,
            _ => return None,
        })
    }

    /// An MQTT 3.1.1 SUBACK return code (§3.9.3): 0, 1, 2 or 0x80 (failure).
    pub fn from_v3_suback(code: u8) -> Option<Self> {
        Some(match code {
            0 => R::GrantedQoS0,
            1 => R::GrantedQoS1,
            2 => R::GrantedQoS2,
            0x80 => R::UnspecifiedError,
            _ => return None,
        })
    }

    /// The MQTT 3.1.1 SUBACK return code: granted QoS, or 0x80 for every failure.
    pub fn to_v3_suback(self) -> u8 {
        match self.value() {
            v @ 0..=2 => v,
            _ => 0x80,
        }
    }
}

impl core::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (0x{:02X})", self.description(), self.value())
    }
}
