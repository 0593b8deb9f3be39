//! kite.js's session reads only what servers send: kite-embed builds kite-mqtt without its
//! `server` feature, so CONNECT, SUBSCRIBE and UNSUBSCRIBE have no decoders here and arrive as
//! `DecodeError::SentByClients`. The session must answer them as it does in a server's build,
//! where they are decoded: DISCONNECT with Protocol Error (0x82) and a closed session that
//! says what the server sent (§2.1.2: these packets flow only from client to server).
//!
//! `cargo xtask test` runs this file twice: within `cargo test --workspace` (the broker's
//! crates switch `server` on for every member) and alone as `cargo test -p kite-embed` (the
//! client build kite.js ships).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::BytesMut;
use kite_mqtt::codec::{ConnAck, ReasonCode, RetainHandling, Subscribe, Subscription, Unsubscribe};
use kite_mqtt::session::{CloseReason, ConnectOptions, Event, Instant, Session};
use kite_mqtt::{Limits, Packet, QoS, Version, decode};

/// A v5 session that the "server" has accepted.
fn connected() -> (Session, Instant) {
    let now = Instant::now();
    let mut s = Session::new(ConnectOptions {
        client_id: "page".into(),
        ..ConnectOptions::default()
    });
    s.connect(now);
    while s.poll_transmit().is_some() {}
    s.handle_bytes(&bytes(Packet::ConnAck(ConnAck::default())), now);
    assert!(s.is_connected());
    while s.poll_event().is_some() {}
    (s, now)
}

fn bytes(p: Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    p.encode(Version::V5, &mut buf).unwrap();
    buf
}

#[test]
fn a_server_sending_what_only_clients_send_breaks_the_protocol() {
    let subscribe = Subscribe {
        packet_id: 7,
        filters: vec![Subscription {
            filter: "a/#".into(),
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }],
        properties: Default::default(),
    };
    let unsubscribe = Unsubscribe {
        packet_id: 8,
        filters: vec!["a/#".into()],
        properties: Default::default(),
    };
    for (name, packet) in [
        ("CONNECT", Packet::Connect(Box::default())),
        ("SUBSCRIBE", Packet::Subscribe(subscribe)),
        ("UNSUBSCRIBE", Packet::Unsubscribe(unsubscribe)),
        ("PINGREQ", Packet::PingReq),
    ] {
        let (mut s, now) = connected();
        s.handle_bytes(&bytes(packet), now);
        assert!(!s.is_connected(), "{name}: still connected");

        // The DISCONNECT the session sends says Protocol Error [MQTT-4.13.1-1].
        let mut wire = BytesMut::new();
        while let Some(b) = s.poll_transmit() {
            wire.extend_from_slice(&b);
        }
        let sent = decode(&mut wire, Version::V5, &Limits::default()).unwrap();
        match sent {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason, ReasonCode::ProtocolError, "{name}");
            }
            other => panic!("{name}: expected DISCONNECT 0x82, the session sent {other:?}"),
        }

        // And the page is told why, in the same words in both builds.
        let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
        match events.as_slice() {
            [Event::Disconnected(CloseReason::ProtocolViolation { code, detail })] => {
                assert_eq!(*code, ReasonCode::ProtocolError, "{name}");
                assert_eq!(
                    detail,
                    &format!("the server sent {name}, which only clients send")
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}
