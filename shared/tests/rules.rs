//! Every validation rule of the codec, each with the bytes that break it (spec clause in the
//! test name or comment), the streaming contract, and the mqttbytes 0.6 bugs Kite must not have.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use kite_mqtt::codec::{
    Ack, ConnAck, Connect, Disconnect, PacketType, Properties, Publish, ReasonCode, Subscribe,
    Subscription, Unsubscribe, Will,
};
use kite_mqtt::topic::TopicError;
use kite_mqtt::{DecodeError, EncodeError, Limits, Packet, QoS, Version, decode};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

const V3: Version = Version::V3_1_1;
const V5: Version = Version::V5;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Decodes one whole packet that must be accepted.
fn accepts(v: Version, h: &str) -> Packet {
    let mut buf = BytesMut::from(&hex(h)[..]);
    let p = decode(&mut buf, v, &Limits::default())
        .unwrap()
        .expect("a whole packet");
    assert!(buf.is_empty(), "{h}: {} bytes left", buf.len());
    p
}

/// Decodes bytes that must be refused; checks that nothing was consumed.
fn rejects(v: Version, h: &str) -> DecodeError {
    let bytes = hex(h);
    let mut buf = BytesMut::from(&bytes[..]);
    let err = decode(&mut buf, v, &Limits::default()).expect_err(h);
    assert_eq!(&buf[..], &bytes[..], "{h}: an error must consume nothing");
    err
}

fn encodes(p: &Packet, v: Version) -> Vec<u8> {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf).unwrap();
    buf.to_vec()
}

/// Encoding that must fail and write nothing into a buffer that already holds data.
fn refuses(p: &Packet, v: Version) -> EncodeError {
    let mut buf = BytesMut::from(&b"keep"[..]);
    let err = p.encode(v, &mut buf).expect_err("must refuse");
    assert_eq!(&buf[..], b"keep", "nothing may be written on error");
    if let Packet::Publish(publish) = p {
        // The head alone (for a vectored write) is refused the same way.
        let head = publish
            .encode_head(v, &mut buf)
            .expect_err("head must refuse");
        assert_eq!(head, err);
        assert_eq!(&buf[..], b"keep", "nothing may be written on error");
    }
    err
}

// ---- Fixed header -----------------------------------------------------------------------

#[test]
fn reserved_packet_type_0_and_auth_before_v5() {
    assert!(matches!(
        rejects(V3, "0000"),
        DecodeError::ReservedPacketType { value: 0, .. }
    ));
    assert!(matches!(
        rejects(V5, "0000"),
        DecodeError::ReservedPacketType { value: 0, .. }
    ));
    // AUTH (15) is reserved in 3.1.1.
    assert!(matches!(
        rejects(V3, "f000"),
        DecodeError::ReservedPacketType { value: 15, .. }
    ));
    assert!(matches!(accepts(V5, "f000"), Packet::Auth(_)));
}

#[test]
fn reserved_fixed_header_flags_mqtt_2_2_2_1() {
    for (h, packet) in [
        ("1100", PacketType::Connect),
        ("21020000", PacketType::ConnAck),
        ("41020001", PacketType::PubAck),
        ("60020001", PacketType::PubRel),
        ("8009000100016100", PacketType::Subscribe),
        ("a0050001000161", PacketType::Unsubscribe),
        ("c800", PacketType::PingReq),
        ("d100", PacketType::PingResp),
        ("e200", PacketType::Disconnect),
    ] {
        match rejects(V3, h) {
            DecodeError::InvalidFlags { packet: p, .. } => assert_eq!(p, packet, "{h}"),
            e => panic!("{h}: {e}"),
        }
    }
}

#[test]
fn publish_qos_3_mqtt_3_3_1_4() {
    assert_eq!(rejects(V3, "3606000161000161"), DecodeError::InvalidQoS);
}

#[test]
fn publish_dup_with_qos_0_mqtt_3_3_1_2() {
    assert_eq!(rejects(V3, "380300016161"), DecodeError::DupWithQoS0);
    let p = Packet::Publish(Publish {
        dup: true,
        topic: "a".into(),
        ..Publish::default()
    });
    assert_eq!(refuses(&p, V3), EncodeError::DupWithQoS0);
}

#[test]
fn remaining_length_at_most_4_bytes_mqtt_1_5_5_1() {
    assert_eq!(rejects(V3, "30ffffffff01"), DecodeError::VarIntTooLong);
    assert_eq!(rejects(V3, "30 ff ff ff 80"), DecodeError::VarIntTooLong);
}

#[test]
fn remaining_length_minimal_encoding_mqtt_1_5_5_1() {
    // 0 written in two bytes.
    assert_eq!(rejects(V3, "c08000"), DecodeError::NonMinimalVarInt);
    // 2 written in two bytes.
    assert_eq!(rejects(V3, "d0820000"), DecodeError::NonMinimalVarInt);
}

// ---- Strings ----------------------------------------------------------------------------

#[test]
fn strings_must_be_utf8_mqtt_1_5_4_1() {
    // PUBLISH topic "\xff".
    assert!(matches!(
        rejects(V3, "300300 01ff"),
        DecodeError::InvalidUtf8 { what: "topic name" }
    ));
    // An encoded UTF-16 surrogate (ED A0 80) is not valid UTF-8.
    assert!(matches!(
        rejects(V3, "30050003eda080"),
        DecodeError::InvalidUtf8 { .. }
    ));
    // Client id with an overlong encoding of '/' (C0 AF).
    assert!(matches!(
        rejects(V3, "100e 00044d51545404020000 0002c0af"),
        DecodeError::InvalidUtf8 {
            what: "client identifier"
        }
    ));
}

#[test]
fn strings_must_not_contain_null_mqtt_1_5_4_2() {
    assert!(matches!(
        rejects(V3, "3005000361 0062"),
        DecodeError::NullCharacter { what: "topic name" }
    ));
    let p = Packet::Connect(Box::new(Connect {
        client_id: "a\0b".into(),
        ..Connect::default()
    }));
    assert!(matches!(
        refuses(&p, V5),
        EncodeError::NullCharacter {
            what: "client identifier"
        }
    ));
}

#[test]
fn strings_over_65535_bytes_cannot_be_encoded() {
    let long: ByteString = "x".repeat(65_536).into();
    let p = Packet::Publish(Publish {
        topic: long.clone().into(),
        ..Publish::default()
    });
    assert!(matches!(
        refuses(&p, V3),
        EncodeError::InvalidTopicName(TopicError::TooLong { len: 65_536 })
    ));
    let mut props = Properties::default();
    props.user_properties.push(("k".into(), long.into()));
    let p = Packet::Disconnect(Disconnect {
        reason: ReasonCode::NormalDisconnection,
        properties: props.into(),
    });
    assert!(matches!(
        refuses(&p, V5),
        EncodeError::StringTooLong { len: 65_536, .. }
    ));
    let p = Packet::Connect(Box::new(Connect {
        password: Some(Bytes::from(vec![0; 65_536])),
        username: Some("u".into()),
        ..Connect::default()
    }));
    assert!(matches!(
        refuses(&p, V5),
        EncodeError::StringTooLong {
            what: "password",
            ..
        }
    ));
}

// ---- Packet identifiers -----------------------------------------------------------------

#[test]
fn packet_id_0_is_refused_mqtt_2_3_1_1() {
    assert!(matches!(
        rejects(V3, "3205 0001 61 0000"),
        DecodeError::ZeroPacketId {
            packet: PacketType::Publish
        }
    ));
    assert!(matches!(
        rejects(V3, "40020000"),
        DecodeError::ZeroPacketId {
            packet: PacketType::PubAck
        }
    ));
    assert!(matches!(
        rejects(V3, "50020000"),
        DecodeError::ZeroPacketId {
            packet: PacketType::PubRec
        }
    ));
    assert!(matches!(
        rejects(V3, "62020000"),
        DecodeError::ZeroPacketId {
            packet: PacketType::PubRel
        }
    ));
    assert!(matches!(
        rejects(V3, "70020000"),
        DecodeError::ZeroPacketId {
            packet: PacketType::PubComp
        }
    ));
    assert!(matches!(
        rejects(V3, "8206 0000 000161 00"),
        DecodeError::ZeroPacketId {
            packet: PacketType::Subscribe
        }
    ));
    assert!(matches!(
        rejects(V3, "9003000000"),
        DecodeError::ZeroPacketId {
            packet: PacketType::SubAck
        }
    ));
    assert!(matches!(
        rejects(V3, "a205 0000 000161"),
        DecodeError::ZeroPacketId {
            packet: PacketType::Unsubscribe
        }
    ));
    assert!(matches!(
        rejects(V3, "b0020000"),
        DecodeError::ZeroPacketId {
            packet: PacketType::UnsubAck
        }
    ));
}

#[test]
fn packet_id_0_cannot_be_encoded_mqtt_2_2_1_3() {
    let publish = Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "a".into(),
        ..Publish::default()
    });
    assert!(matches!(
        refuses(&publish, V3),
        EncodeError::ZeroPacketId { .. }
    ));
    assert!(matches!(
        refuses(&Packet::PubAck(Ack::new(0)), V5),
        EncodeError::ZeroPacketId { .. }
    ));
    let sub = Packet::Subscribe(Subscribe {
        packet_id: 0,
        filters: vec![Subscription::new("a", QoS::AtMostOnce)],
        properties: Default::default(),
    });
    assert!(matches!(
        refuses(&sub, V3),
        EncodeError::ZeroPacketId { .. }
    ));
}

// ---- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------

#[test]
fn empty_subscribe_mqtt_3_8_3_3_and_unsubscribe_mqtt_3_10_3_2() {
    assert_eq!(rejects(V3, "82020001"), DecodeError::EmptySubscribe);
    assert_eq!(rejects(V5, "8203000100"), DecodeError::EmptySubscribe);
    assert_eq!(rejects(V3, "a2020001"), DecodeError::EmptyUnsubscribe);
    let unsub = Packet::Unsubscribe(Unsubscribe {
        packet_id: 1,
        filters: vec![],
        properties: Default::default(),
    });
    assert!(matches!(refuses(&unsub, V3), EncodeError::Empty { .. }));
}

#[test]
fn subscription_options_reserved_bits_mqtt_3_8_3_4() {
    // 3.1.1: bits 7-2 reserved.
    assert!(matches!(
        rejects(V3, "8206 0001 000161 04"),
        DecodeError::InvalidSubscriptionOptions { options: 0x04 }
    ));
    // 5.0: bits 7-6 reserved, Retain Handling 3, QoS 3.
    assert!(matches!(
        rejects(V5, "8207 0001 00 000161 40"),
        DecodeError::InvalidSubscriptionOptions { .. }
    ));
    assert!(matches!(
        rejects(V5, "8207 0001 00 000161 30"),
        DecodeError::InvalidSubscriptionOptions { .. }
    ));
    assert!(matches!(
        rejects(V5, "8207 0001 00 000161 03"),
        DecodeError::InvalidSubscriptionOptions { .. }
    ));
    // 5.0 options are fine in 5.0.
    match accepts(V5, "8207 0001 00 000161 2e") {
        Packet::Subscribe(s) => {
            let f = &s.filters[0];
            assert!(f.no_local && f.retain_as_published);
            assert_eq!(f.qos, QoS::ExactlyOnce);
        }
        p => panic!("{p:?}"),
    }
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // "$share/g/a" with No Local.
    assert!(matches!(
        rejects(V5, "8210 0001 00 000a247368617265 2f672f61 04"),
        DecodeError::NoLocalOnSharedSubscription { .. }
    ));
}

#[test]
fn invalid_filters_are_refused() {
    // "a#" in SUBSCRIBE, "a+" in UNSUBSCRIBE.
    assert!(matches!(
        rejects(V3, "8207 0001 00026123 00"),
        DecodeError::InvalidTopicFilter(TopicError::MisplacedHash { at: 1 })
    ));
    assert!(matches!(
        rejects(V3, "a206 0001 0002612b"),
        DecodeError::InvalidTopicFilter(TopicError::MisplacedPlus { at: 1 })
    ));
}

// ---- PUBLISH topic names ----------------------------------------------------------------

#[test]
fn wildcards_in_publish_topic_mqtt_3_3_2_2() {
    assert!(matches!(
        rejects(V3, "3003 0001 2b"),
        DecodeError::InvalidTopicName(TopicError::WildcardInName { wildcard: '+', .. })
    ));
    assert!(matches!(
        rejects(V3, "3005 0003 612f23"),
        DecodeError::InvalidTopicName(TopicError::WildcardInName {
            wildcard: '#',
            at: 2
        })
    ));
    let p = Packet::Publish(Publish {
        topic: "a/+".into(),
        ..Publish::default()
    });
    assert!(matches!(refuses(&p, V5), EncodeError::InvalidTopicName(_)));
}

#[test]
fn empty_topic_needs_a_topic_alias() {
    // 3.1.1 [MQTT-4.7.3-1] and 5.0 without alias.
    assert_eq!(rejects(V3, "30020000"), DecodeError::EmptyTopicWithoutAlias);
    assert_eq!(
        rejects(V5, "3003000000"),
        DecodeError::EmptyTopicWithoutAlias
    );
    // 5.0 with Topic Alias 1.
    match accepts(V5, "3006 0000 03 230001") {
        Packet::Publish(p) => assert_eq!(p.properties.topic_alias, Some(1)),
        p => panic!("{p:?}"),
    }
}

// ---- Properties -------------------------------------------------------------------------

#[test]
fn property_not_allowed_in_this_packet() {
    // Topic Alias (0x23) in PUBACK.
    assert!(matches!(
        rejects(V5, "4007 0001 00 03 230001"),
        DecodeError::PropertyNotAllowed {
            property: "Topic Alias",
            ..
        }
    ));
    // Will Delay Interval (0x18) in CONNECT's own properties (it belongs to the Will).
    assert!(matches!(
        rejects(V5, "1010 00044d515454 05 02 0000 05 1800000001 0000"),
        DecodeError::PropertyNotAllowed {
            property: "Will Delay Interval",
            ..
        }
    ));
    let props = Properties {
        topic_alias: Some(1),
        ..Properties::default()
    };
    let p = Packet::PubAck(Ack {
        packet_id: 1,
        reason: ReasonCode::Success,
        properties: props.into(),
    });
    assert!(matches!(
        refuses(&p, V5),
        EncodeError::PropertyNotAllowed { .. }
    ));
}

#[test]
fn duplicate_properties_are_refused_except_user_properties_and_subscription_ids() {
    // Message Expiry Interval twice in PUBLISH.
    assert!(matches!(
        rejects(V5, "300e 0001 61 0a 0200000001 0200000002"),
        DecodeError::DuplicateProperty {
            property: "Message Expiry Interval"
        }
    ));
    // Two Subscription Identifiers in SUBSCRIBE.
    assert!(matches!(
        rejects(V5, "820a 0001 04 0b01 0b02 000161 00"),
        DecodeError::DuplicateProperty {
            property: "Subscription Identifier"
        }
    ));
    // ...but several are fine in PUBLISH, and user properties may repeat.
    match accepts(
        V5,
        "3016 0001 61 12 0b01 0b02 2600016b000176 2600016b000177",
    ) {
        Packet::Publish(p) => {
            assert_eq!(p.properties.subscription_identifiers, [1, 2]);
            assert_eq!(p.properties.user_properties.len(), 2);
        }
        p => panic!("{p:?}"),
    }
}

#[test]
fn zero_values_that_the_spec_forbids() {
    // Subscription Identifier 0 [MQTT-3.8.2.1.2], Topic Alias 0 [MQTT-3.3.2-8],
    // Receive Maximum 0 (§3.1.2.11.3), Maximum Packet Size 0 (§3.1.2.11.4).
    for (h, property) in [
        ("3006 0001 61 02 0b00", "Subscription Identifier"),
        ("3007 0001 61 03 230000", "Topic Alias"),
        (
            "100f 00044d515454 05 02 0000 03 210000 0000",
            "Receive Maximum",
        ),
        (
            "1011 00044d515454 05 02 0000 05 2700000000 0000",
            "Maximum Packet Size",
        ),
    ] {
        match rejects(V5, h) {
            DecodeError::InvalidPropertyValue {
                property: p,
                value: 0,
            } => assert_eq!(p, property),
            e => panic!("{h}: {e}"),
        }
    }
}

#[test]
fn boolean_properties_are_0_or_1() {
    assert!(matches!(
        rejects(V5, "3006 0001 61 02 0102"),
        DecodeError::InvalidPropertyValue {
            property: "Payload Format Indicator",
            value: 2
        }
    ));
}

#[test]
fn unknown_property_identifier() {
    assert!(matches!(
        rejects(V5, "3006 0001 61 02 7f00"),
        DecodeError::UnknownProperty { id: 0x7f }
    ));
}

#[test]
fn property_length_boundaries() {
    // Property length 5 with only 2 bytes left in the packet.
    assert!(matches!(
        rejects(V5, "3006 0001 61 05 0101"),
        DecodeError::PropertyLengthOverflow {
            length: 5,
            available: 2
        }
    ));
    // Property length 1 cuts a 2-byte property in half.
    assert!(matches!(
        rejects(V5, "3007 0001 61 01 0101 00"),
        DecodeError::Truncated { .. }
    ));
    // Exactly at the boundary: fine, the rest is payload.
    match accepts(V5, "3007 0001 61 02 0101 ff") {
        Packet::Publish(p) => assert_eq!(&p.payload[..], [0xff]),
        p => panic!("{p:?}"),
    }
}

// ---- Whole packets ----------------------------------------------------------------------

#[test]
fn trailing_bytes_are_refused() {
    assert!(matches!(
        rejects(V3, "c00100"),
        DecodeError::TrailingBytes {
            packet: PacketType::PingReq,
            count: 1
        }
    ));
    assert!(matches!(
        rejects(V3, "e00100"),
        DecodeError::TrailingBytes {
            packet: PacketType::Disconnect,
            ..
        }
    ));
    assert!(matches!(
        rejects(V3, "4003000100"),
        DecodeError::TrailingBytes { .. }
    ));
    assert!(matches!(
        rejects(V3, "20030000ff"),
        DecodeError::TrailingBytes { .. }
    ));
}

#[test]
fn connect_rules_mqtt_3_1_2() {
    // [MQTT-3.1.2-1] protocol name.
    assert!(matches!(
        rejects(V3, "100c 0004 4d515458 04 02 0000 0000"),
        DecodeError::InvalidProtocolName { .. }
    ));
    // The name is shown as found, but a control character in it cannot start a fake log line.
    let e = rejects(V3, "100c 0004 4d510a54 04 02 0000 0000");
    assert_eq!(
        e,
        DecodeError::InvalidProtocolName {
            name: "MQ\u{FFFD}T".into()
        }
    );
    assert!(
        e.to_string()
            .starts_with("protocol name \"MQ\u{FFFD}T\" does not match"),
        "{e}"
    );
    // [MQTT-3.1.2-2] level 6.
    assert!(matches!(
        rejects(V3, "100c 0004 4d515454 06 02 0000 0000"),
        DecodeError::UnsupportedProtocolLevel { level: 6 }
    ));
    // [MQTT-3.1.2-3] reserved flag.
    assert_eq!(
        rejects(V3, "100c 0004 4d515454 04 03 0000 0000"),
        DecodeError::ConnectReservedFlag
    );
    // [MQTT-3.1.2-11] Will QoS without Will; Will QoS 3.
    assert_eq!(
        rejects(V3, "100c 0004 4d515454 04 0a 0000 0000"),
        DecodeError::InvalidWillFlags
    );
    assert_eq!(
        rejects(V3, "100c 0004 4d515454 04 1e 0000 0000"),
        DecodeError::InvalidWillFlags
    );
    // [MQTT-3.1.2-22] password without user name, in 3.1.1 only.
    assert_eq!(
        rejects(V3, "100f 0004 4d515454 04 42 0000 0000 000170"),
        DecodeError::PasswordWithoutUsername
    );
    match accepts(V5, "1010 0004 4d515454 05 42 0000 00 0000 000170") {
        Packet::Connect(c) => assert_eq!(c.password.as_deref(), Some(&b"p"[..])),
        p => panic!("{p:?}"),
    }
    // Will topic with a wildcard.
    assert!(matches!(
        rejects(V3, "1011 0004 4d515454 04 06 0000 0000 0001 23 0000"),
        DecodeError::InvalidTopicName(_)
    ));
}

#[test]
fn connack_rules_mqtt_3_2_2() {
    assert!(matches!(
        rejects(V3, "20020200"),
        DecodeError::InvalidConnAckFlags { flags: 2 }
    ));
    assert_eq!(
        rejects(V3, "20020105"),
        DecodeError::SessionPresentOnFailure
    );
    assert!(matches!(
        rejects(V3, "20020006"),
        DecodeError::InvalidReasonCode { code: 6, .. }
    ));
    // v5: 0x10 is not a CONNACK reason code.
    assert!(matches!(
        rejects(V5, "2003001000"),
        DecodeError::InvalidReasonCode { code: 0x10, .. }
    ));
    // A 3.1.1 server refusing a 5.0 CONNECT: read by meaning.
    match accepts(V5, "20020001") {
        Packet::ConnAck(c) => assert_eq!(c.reason, ReasonCode::UnsupportedProtocolVersion),
        p => panic!("{p:?}"),
    }
    // Encoding a v5-only reason in 3.1.1 is refused, not truncated.
    let p = Packet::ConnAck(ConnAck {
        reason: ReasonCode::Banned,
        ..ConnAck::default()
    });
    assert!(matches!(
        refuses(&p, V3),
        EncodeError::InvalidReasonCode { .. }
    ));
}

#[test]
fn v5_only_content_cannot_be_sent_in_3_1_1() {
    let props = Properties {
        message_expiry_interval: Some(1),
        ..Properties::default()
    };
    let p = Packet::Publish(Publish {
        topic: "a".into(),
        properties: props.into(),
        ..Publish::default()
    });
    assert!(matches!(
        refuses(&p, V3),
        EncodeError::NotInVersion {
            what: "properties",
            ..
        }
    ));
    let auth = Packet::Auth(kite_mqtt::codec::Auth {
        reason: ReasonCode::Success,
        properties: Default::default(),
    });
    assert!(matches!(
        refuses(&auth, V3),
        EncodeError::NotInVersion { what: "AUTH", .. }
    ));
}

// 268 MB: too much for a browser tab's test run.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn remaining_length_over_the_protocol_limit_cannot_be_encoded() {
    let p = Packet::Publish(Publish {
        topic: "t".into(),
        payload: Bytes::from(vec![0u8; 268_435_455]),
        ..Publish::default()
    });
    assert!(matches!(
        refuses(&p, V3),
        EncodeError::PacketTooLarge { .. }
    ));
}

// ---- Streaming --------------------------------------------------------------------------

#[test]
fn half_a_packet_consumes_nothing_then_completes() {
    let bytes = hex("3007 0001 61 02 0101 ff");
    let mut buf = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let got = decode(&mut buf, V5, &Limits::default()).unwrap();
        if i + 1 < bytes.len() {
            assert!(got.is_none(), "byte {i}");
            assert_eq!(buf.len(), i + 1, "nothing consumed while incomplete");
        } else {
            assert!(matches!(got, Some(Packet::Publish(_))));
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn several_packets_in_one_buffer() {
    let mut buf = BytesMut::from(&hex("c000 d000 40020001 e000")[..]);
    let mut types = Vec::new();
    while let Some(p) = decode(&mut buf, V3, &Limits::default()).unwrap() {
        types.push(p.packet_type());
    }
    assert_eq!(
        types,
        [
            PacketType::PingReq,
            PacketType::PingResp,
            PacketType::PubAck,
            PacketType::Disconnect
        ]
    );
}

/// A receiver's bound on User Properties (`Limits::max_user_properties`), counted across the
/// packet (a CONNECT's Will properties included) as they are read: a packet over it is
/// refused and nothing is consumed.
#[test]
fn user_properties_are_bounded_by_the_receivers_limit() {
    use kite_mqtt::codec::{Properties, Publish};
    let publish = |n: usize| {
        let p = Publish {
            topic: "t".into(),
            properties: Properties {
                user_properties: (0..n)
                    .map(|i| (format!("k{i}").as_str().into(), "".into()))
                    .collect(),
                ..Properties::default()
            }
            .into(),
            ..Publish::default()
        };
        let mut b = BytesMut::new();
        kite_mqtt::Packet::Publish(p).encode(V5, &mut b).unwrap();
        b
    };
    let limits = Limits {
        max_user_properties: 3,
        ..Limits::default()
    };
    assert!(matches!(decode(&mut publish(3), V5, &limits), Ok(Some(_))));
    let mut four = publish(4);
    let len = four.len();
    assert_eq!(
        decode(&mut four, V5, &limits),
        Err(DecodeError::TooManyUserProperties { max: 3 })
    );
    assert_eq!(four.len(), len, "nothing consumed");
    assert!(matches!(
        decode(&mut four, V5, &Limits::default()),
        Ok(Some(_))
    ));
}

#[test]
fn maximum_packet_size_is_enforced_from_the_fixed_header() {
    // A PUBLISH announcing 1,000,000 bytes: refused after the 4 header bytes, without waiting
    // for (or buffering) the body.
    let limits = Limits {
        max_packet_size: 1024,
        ..Limits::default()
    };
    let mut buf = BytesMut::from(&hex("30c0843d")[..]);
    let err = decode(&mut buf, V3, &limits).unwrap_err();
    assert_eq!(
        err,
        DecodeError::PacketTooLarge {
            size: 1_000_004,
            max: 1024
        }
    );
    assert_eq!(buf.len(), 4);
    // Exactly at the limit: accepted.
    let limits = Limits {
        max_packet_size: 5,
        ..Limits::default()
    };
    assert!(
        decode(&mut BytesMut::from(&hex("3003000161")[..]), V3, &limits)
            .unwrap()
            .is_some()
    );
}

#[test]
fn payloads_are_zero_copy() {
    let frame = BytesMut::from(&hex("3007 0001 61 000102 03")[..]);
    let start = frame.as_ptr() as usize;
    let mut buf = frame;
    match decode(&mut buf, V3, &Limits::default()).unwrap().unwrap() {
        Packet::Publish(p) => {
            let at = p.payload.as_ptr() as usize;
            assert_eq!(at, start + 5, "the payload points into the read buffer");
        }
        p => panic!("{p:?}"),
    }
}

// ---- mqttbytes 0.6 regressions (issue #3) -----------------------------------------------

#[test]
fn v5_disconnect_with_no_body_is_normal_disconnection() {
    match accepts(V5, "e000") {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::NormalDisconnection),
        p => panic!("{p:?}"),
    }
}

#[test]
fn v5_disconnect_with_only_a_reason_code_keeps_it() {
    match accepts(V5, "e0018e") {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::SessionTakenOver),
        p => panic!("{p:?}"),
    }
    // And the next packet in the buffer is still there.
    let mut buf = BytesMut::from(&hex("e0018e c000")[..]);
    assert!(matches!(
        decode(&mut buf, V5, &Limits::default()),
        Ok(Some(Packet::Disconnect(_)))
    ));
    assert_eq!(
        decode(&mut buf, V5, &Limits::default()),
        Ok(Some(Packet::PingReq))
    );
}

#[test]
fn v5_connack_is_written_with_its_property_length() {
    assert_eq!(
        encodes(&Packet::ConnAck(ConnAck::default()), V5),
        hex("2003 00 00 00")
    );
    assert_eq!(
        encodes(&Packet::ConnAck(ConnAck::default()), V3),
        hex("2002 00 00")
    );
}

#[test]
fn subscription_identifiers_of_every_width_decode_in_place() {
    // Identifiers of 1, 2, 3 and 4 bytes followed by a user property: a cursor that counts
    // wrongly would misread the user property.
    match accepts(
        V5,
        "301a 0001 61 15 0b01 0b8001 0b808001 0b80808001 2600016b000176 ff",
    ) {
        Packet::Publish(p) => {
            assert_eq!(
                p.properties.subscription_identifiers,
                [1, 128, 16_384, 2_097_152]
            );
            assert_eq!(p.properties.user_properties[0].0, "k");
            assert_eq!(&p.payload[..], [0xff]);
        }
        p => panic!("{p:?}"),
    }
}

#[test]
fn connect_written_into_a_non_empty_buffer_keeps_its_flags() {
    let connect = Packet::Connect(Box::new(Connect {
        version: V3,
        client_id: "c".into(),
        clean_start: true,
        keep_alive: 10,
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        will: Some(Will {
            topic: "w".into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Default::default(),
        }),
        ..Connect::default()
    }));
    let mut buf = BytesMut::from(&b"earlier bytes"[..]);
    connect.encode(V3, &mut buf).unwrap();
    let mut tail = buf.split_off(13);
    assert_eq!(&buf[..], b"earlier bytes");
    // Flags: user name, password, will retain, will QoS 1, will, clean session.
    assert_eq!(tail[9], 0b1110_1110);
    assert_eq!(
        decode(&mut tail, V3, &Limits::default()).unwrap(),
        Some(connect)
    );
}

#[test]
fn encode_then_decode_every_packet_in_both_versions() {
    let sub = Packet::Subscribe(Subscribe {
        packet_id: 9,
        filters: vec![
            Subscription::new("a/+", QoS::ExactlyOnce),
            Subscription::new("$share/g/#", QoS::AtMostOnce),
        ],
        properties: Default::default(),
    });
    for v in [V3, V5] {
        for p in [
            Packet::PingReq,
            Packet::PingResp,
            Packet::Disconnect(Disconnect::default()),
            Packet::PubAck(Ack::new(1)),
            Packet::PubRec(Ack::new(2)),
            Packet::PubRel(Ack::new(3)),
            Packet::PubComp(Ack::new(4)),
            sub.clone(),
        ] {
            let bytes = encodes(&p, v);
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(
                decode(&mut buf, v, &Limits::default()).unwrap(),
                Some(p.clone()),
                "{v}"
            );
            assert_eq!(p.encoded_len(v).unwrap(), bytes.len());
        }
    }
}

#[test]
fn decode_raw_returns_the_original_bytes_of_each_packet() {
    let bytes = hex("c000 3007 0001 61 02 0101 ff");
    let mut buf = BytesMut::from(&bytes[..]);
    let (p1, raw1) = kite_mqtt::decode_raw(&mut buf, V5, &Limits::default())
        .unwrap()
        .unwrap();
    let (p2, raw2) = kite_mqtt::decode_raw(&mut buf, V5, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!((p1, &raw1[..]), (Packet::PingReq, &bytes[..2]));
    assert!(matches!(p2, Packet::Publish(_)));
    assert_eq!(&raw2[..], &bytes[2..]);
    assert!(buf.is_empty());
}
