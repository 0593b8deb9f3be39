//! Property tests: for every packet type and both versions, an arbitrary valid packet encodes
//! and decodes back to itself; decoding, re-encoding and decoding again is stable (also for
//! mutated bytes); and feeding bytes in arbitrary chunks yields the same packets.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use kite_mqtt::codec::{
    Ack, Auth, ConnAck, Connect, Disconnect, PacketType, Properties, PropertyContext, PropertyId,
    Props, Publish, ReasonCode, RetainHandling, SubAck, Subscribe, Subscription, UnsubAck,
    Unsubscribe, Will,
};
use kite_mqtt::{Limits, MqttStr, Packet, QoS, Version, decode};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Up to 40 characters: short strings (kept inline by `MqttStr`) and long ones.
fn text() -> impl Strategy<Value = MqttStr> {
    "[^\u{0}]{0,40}".prop_map(MqttStr::from)
}

/// Up to 48 bytes of any characters: both sides of `MqttStr`'s inline limit (32 bytes).
fn topic_name() -> impl Strategy<Value = MqttStr> {
    "[^\u{0}+#]{1,48}".prop_map(MqttStr::from)
}

fn topic_filter() -> impl Strategy<Value = MqttStr> {
    let level = prop_oneof![Just("+".to_owned()), "[a-z0-9 é$]{0,12}"];
    (vec(level, 1..5), any::<bool>(), option::of("[a-z]{1,4}")).prop_map(|(levels, hash, share)| {
        let mut f = levels.join("/");
        if hash {
            f.push_str(if f.is_empty() { "#" } else { "/#" });
        }
        if f.is_empty() {
            f.push('a');
        }
        match share {
            Some(group) => MqttStr::from(format!("$share/{group}/{f}")),
            None => MqttStr::from(f),
        }
    })
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn nonzero_u16() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

/// Arbitrary properties holding only what `ctx` allows.
fn properties(ctx: PropertyContext) -> impl Strategy<Value = Properties> {
    let a = (
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(topic_name()),
        option::of(binary()),
        vec(1..=268_435_455u32, 0..3),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(any::<u16>()),
        option::of(text()),
    );
    let b = (
        option::of(binary()),
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(any::<bool>()),
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(nonzero_u16()),
        option::of(any::<u16>()),
        option::of(nonzero_u16()),
    );
    let c = (
        option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        option::of(any::<bool>()),
        vec((text(), text()), 0..3),
        option::of(1..=u32::MAX),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
    );
    (a, b, c).prop_map(move |(a, b, c)| {
        let mut p = Properties {
            payload_format_indicator: a.0,
            message_expiry_interval: a.1,
            content_type: a.2,
            response_topic: a.3,
            correlation_data: a.4,
            subscription_identifiers: a.5,
            session_expiry_interval: a.6,
            assigned_client_identifier: a.7,
            server_keep_alive: a.8,
            authentication_method: a.9,
            authentication_data: b.0,
            request_problem_information: b.1,
            will_delay_interval: b.2,
            request_response_information: b.3,
            response_information: b.4,
            server_reference: b.5,
            reason_string: b.6,
            receive_maximum: b.7,
            topic_alias_maximum: b.8,
            topic_alias: b.9,
            maximum_qos: c.0,
            retain_available: c.1,
            user_properties: c.2,
            maximum_packet_size: c.3,
            wildcard_subscription_available: c.4,
            subscription_identifier_available: c.5,
            shared_subscription_available: c.6,
        };
        keep_allowed(&mut p, ctx);
        p
    })
}

/// Clears every property `ctx` does not allow.
fn keep_allowed(p: &mut Properties, ctx: PropertyContext) {
    use PropertyId as P;
    macro_rules! clear {
        ($($id:ident => $field:ident),* $(,)?) => {
            $(if !P::$id.allowed_in(ctx) { p.$field = Default::default(); })*
        };
    }
    clear!(
        PayloadFormatIndicator => payload_format_indicator,
        MessageExpiryInterval => message_expiry_interval,
        ContentType => content_type,
        ResponseTopic => response_topic,
        CorrelationData => correlation_data,
        SubscriptionIdentifier => subscription_identifiers,
        SessionExpiryInterval => session_expiry_interval,
        AssignedClientIdentifier => assigned_client_identifier,
        ServerKeepAlive => server_keep_alive,
        AuthenticationMethod => authentication_method,
        AuthenticationData => authentication_data,
        RequestProblemInformation => request_problem_information,
        WillDelayInterval => will_delay_interval,
        RequestResponseInformation => request_response_information,
        ResponseInformation => response_information,
        ServerReference => server_reference,
        ReasonString => reason_string,
        ReceiveMaximum => receive_maximum,
        TopicAliasMaximum => topic_alias_maximum,
        TopicAlias => topic_alias,
        MaximumQoS => maximum_qos,
        RetainAvailable => retain_available,
        UserProperty => user_properties,
        MaximumPacketSize => maximum_packet_size,
        WildcardSubscriptionAvailable => wildcard_subscription_available,
        SubscriptionIdentifierAvailable => subscription_identifier_available,
        SharedSubscriptionAvailable => shared_subscription_available,
    );
    if ctx == PropertyContext::Packet(PacketType::Subscribe) {
        p.subscription_identifiers.truncate(1);
    }
}

/// Properties for `ctx` in `v`: none before MQTT 5.
fn props(v: Version, packet: PacketType) -> BoxedStrategy<Props> {
    if v.is_v5() {
        properties(PropertyContext::Packet(packet))
            .prop_map(Props::from)
            .boxed()
    } else {
        Just(Props::default()).boxed()
    }
}

/// The reason codes `packet` may carry in `v`, one variant per byte value.
fn reasons(v: Version, packet: PacketType) -> Vec<ReasonCode> {
    (0..=255u8)
        .filter_map(|b| match (v.is_v5(), packet) {
            (true, _) => ReasonCode::from_byte(packet, b),
            (false, PacketType::ConnAck) => ReasonCode::from_v3_connack(b),
            (false, PacketType::SubAck) => ReasonCode::from_v3_suback(b),
            (false, _) => (b == 0).then(|| ReasonCode::from_byte(packet, 0)).flatten(),
        })
        .collect()
}

fn reason(v: Version, packet: PacketType) -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(reasons(v, packet))
}

fn will(v: Version) -> impl Strategy<Value = Will> {
    let props = if v.is_v5() {
        properties(PropertyContext::Will)
            .prop_map(Props::from)
            .boxed()
    } else {
        Just(Props::default()).boxed()
    };
    (topic_name(), binary(), qos(), any::<bool>(), props).prop_map(
        |(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        },
    )
}

fn connect(v: Version) -> impl Strategy<Value = Packet> {
    (
        "[^\u{0}]{1,10}",
        any::<bool>(),
        any::<u16>(),
        option::of(text()),
        option::of(binary()),
        option::of(will(v)),
        props(v, PacketType::Connect),
        any::<bool>(),
    )
        .prop_map(
            move |(
                client_id,
                clean_start,
                keep_alive,
                username,
                password,
                will,
                properties,
                bridge,
            )| {
                // 3.1.1: a password needs a user name [MQTT-3.1.2-22].
                let username = if password.is_some() && !v.is_v5() {
                    Some(username.map_or_else(|| "u".into(), ByteString::from))
                } else {
                    username.map(ByteString::from)
                };
                Packet::Connect(Box::new(Connect {
                    version: v,
                    client_id: client_id.into(),
                    bridge,
                    clean_start,
                    keep_alive,
                    username,
                    password,
                    will,
                    properties,
                }))
            },
        )
}

fn ack(v: Version, packet: PacketType) -> impl Strategy<Value = Ack> {
    (nonzero_u16(), reason(v, packet), props(v, packet)).prop_map(
        |(packet_id, reason, properties)| Ack {
            packet_id,
            reason,
            properties,
        },
    )
}

fn packet(v: Version) -> impl Strategy<Value = Packet> {
    use PacketType as T;
    let connack = (any::<bool>(), reason(v, T::ConnAck), props(v, T::ConnAck)).prop_map(
        |(sp, reason, properties)| {
            Packet::ConnAck(ConnAck {
                session_present: sp && !reason.is_error(),
                reason,
                properties,
            })
        },
    );
    let publish = (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        nonzero_u16(),
        props(v, T::Publish),
        binary(),
    )
        .prop_map(|(dup, qos, retain, topic, id, properties, payload)| {
            let qos0 = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                packet_id: if qos0 { 0 } else { id },
                properties,
                payload,
            })
        });
    let sub_options = (topic_filter(), qos(), any::<bool>(), any::<bool>(), 0..3u8).prop_map(
        move |(f, q, nl, rap, rh)| {
            let mut s = Subscription::new(f, q);
            if v.is_v5() {
                s.no_local = nl && !s.filter.starts_with("$share/");
                s.retain_as_published = rap;
                s.retain_handling = [
                    RetainHandling::SendAtSubscribe,
                    RetainHandling::SendIfNew,
                    RetainHandling::DoNotSend,
                ][usize::from(rh)];
            }
            s
        },
    );
    let subscribe = (
        nonzero_u16(),
        vec(sub_options, 1..4),
        props(v, T::Subscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        });
    let suback = (
        nonzero_u16(),
        vec(reason(v, T::SubAck), 1..4),
        props(v, T::SubAck),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reasons,
                properties,
            })
        });
    let unsubscribe = (
        nonzero_u16(),
        vec(topic_filter(), 1..4),
        props(v, T::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        });
    let unsuback_reasons = if v.is_v5() {
        vec(reason(v, T::UnsubAck), 1..4).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    let unsuback = (nonzero_u16(), unsuback_reasons, props(v, T::UnsubAck)).prop_map(
        |(packet_id, reasons, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reasons,
                properties,
            })
        },
    );
    let disconnect = (reason(v, T::Disconnect), props(v, T::Disconnect))
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }));
    let mut all = vec![
        connect(v).boxed(),
        connack.boxed(),
        publish.boxed(),
        ack(v, T::PubAck).prop_map(Packet::PubAck).boxed(),
        ack(v, T::PubRec).prop_map(Packet::PubRec).boxed(),
        ack(v, T::PubRel).prop_map(Packet::PubRel).boxed(),
        ack(v, T::PubComp).prop_map(Packet::PubComp).boxed(),
        subscribe.boxed(),
        suback.boxed(),
        unsubscribe.boxed(),
        unsuback.boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect.boxed(),
    ];
    if v.is_v5() {
        let auth = (reason(v, T::Auth), props(v, T::Auth))
            .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }));
        all.push(auth.boxed());
    }
    proptest::strategy::Union::new(all)
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V3_1_1), Just(Version::V5)]
}

fn encode(p: &Packet, v: Version) -> BytesMut {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf)
        .unwrap_or_else(|e| panic!("{e}: {p:?}"));
    buf
}

fn versioned_packets() -> impl Strategy<Value = (Version, Vec<Packet>)> {
    version().prop_flat_map(|v| (Just(v), vec(packet(v), 1..6)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_gives_the_packet_back((v, packets) in versioned_packets()) {
        for p in packets {
            let mut buf = encode(&p, v);
            prop_assert_eq!(p.encoded_len(v).unwrap(), buf.len());
            let back = decode(&mut buf, v, &Limits::default()).unwrap();
            prop_assert_eq!(back.as_ref(), Some(&p));
            prop_assert!(buf.is_empty());
        }
    }

    /// A PUBLISH written as its head and then its payload (for a vectored write) is the
    /// same bytes as the whole packet written at once.
    #[test]
    fn a_publish_head_and_payload_are_the_whole_packet((v, packets) in versioned_packets()) {
        for p in packets {
            if let Packet::Publish(publish) = &p {
                let mut head = BytesMut::from(&b"before"[..]);
                publish.encode_head(v, &mut head).unwrap();
                head.extend_from_slice(&publish.payload);
                let mut whole = BytesMut::from(&b"before"[..]);
                whole.extend_from_slice(&encode(&p, v));
                prop_assert_eq!(head, whole);
            }
        }
    }

    #[test]
    fn any_chunking_gives_the_same_packets((v, packets) in versioned_packets(), cuts in vec(1usize..40, 1..64)) {
        let mut stream = BytesMut::new();
        for p in &packets {
            stream.extend_from_slice(&encode(p, v));
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut cuts = cuts.into_iter().cycle();
        while !stream.is_empty() {
            let n = cuts.next().unwrap().min(stream.len());
            buf.extend_from_slice(&stream.split_to(n));
            while let Some(p) = decode(&mut buf, v, &Limits::default()).unwrap() {
                got.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, packets);
    }

    #[test]
    fn decode_encode_decode_is_stable_even_for_mutated_bytes(
        (v, packets) in versioned_packets(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut bytes = encode(&packets[0], v).to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(first)) = decode(&mut buf, v, &Limits::default()) {
            let mut again = BytesMut::new();
            match first.encode(v, &mut again) {
                Ok(()) => {}
                // A server must read this CONNECT (to answer 0x02), a client may not send it.
                Err(kite_mqtt::EncodeError::EmptyClientIdNeedsCleanStart) => return Ok(()),
                Err(e) => panic!("decoded but cannot re-encode: {e}: {first:?}"),
            }
            let second = decode(&mut again, v, &Limits::default()).unwrap();
            prop_assert_eq!(second, Some(first));
        }
    }
}
