//! The in-process client (`Broker::connect_local`): the session semantics, rules and bounds of
//! a network client, over typed packets. Each behaviour cites the clause a network client is
//! held to; the network side of the same rules is tested over TCP and WebSocket in
//! `tests/e2e/broker.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use kite_broker::{Broker, BrokerConfig, ConnInfo, LocalClient};
use kite_mqtt::codec::{
    Ack, Connect, Disconnect, Publish, ReasonCode, Subscribe, Subscription, Will,
};
use kite_mqtt::{Packet, QoS, Version};

fn broker(config: BrokerConfig) -> Broker {
    Broker::new(
        BrokerConfig {
            sys_interval: None,
            ..config
        },
        kite_policy::Auth::default(),
        kite_broker::logins::Logins::new(1),
    )
}

fn connect(client_id: &str, clean_start: bool) -> Connect {
    let mut c = Connect {
        client_id: client_id.into(),
        clean_start,
        keep_alive: 0,
        ..Connect::default()
    };
    if !clean_start {
        c.properties.session_expiry_interval = Some(3600);
    }
    c
}

async fn next(client: &mut LocalClient) -> Packet {
    tokio::time::timeout(Duration::from_secs(5), client.recv())
        .await
        .expect("a packet from the broker within 5 s")
        .expect("the link is open")
}

async fn open(broker: &Broker, connect: Connect) -> (LocalClient, bool) {
    let mut client = broker.connect_local(connect, ConnInfo::internal(None));
    match next(&mut client).await {
        Packet::ConnAck(ack) if ack.reason == ReasonCode::Success => (client, ack.session_present),
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

async fn subscribe(client: &mut LocalClient, filter: &str, qos: QoS) {
    client
        .send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![Subscription::new(filter, qos)],
            properties: Default::default(),
        }))
        .await
        .unwrap();
    match next(client).await {
        Packet::SubAck(s) => assert_eq!(s.packet_id, 1),
        other => panic!("expected a SUBACK, got {other:?}"),
    }
}

fn publish(topic: &str, qos: QoS, id: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        packet_id: id,
        payload: Bytes::from_static(payload),
        ..Publish::default()
    })
}

#[tokio::test]
async fn a_local_client_publishes_and_receives_with_qos_1_flows() {
    let b = broker(BrokerConfig::default());
    let (mut sub, present) = open(&b, connect("sub", true)).await;
    assert!(!present);
    subscribe(&mut sub, "plant/+/temp", QoS::AtLeastOnce).await;
    let (mut publisher, _) = open(&b, connect("pub", true)).await;
    publisher
        .send(publish("plant/a/temp", QoS::AtLeastOnce, 7, b"21.5"))
        .await
        .unwrap();
    // A QoS 1 PUBLISH is acknowledged with PUBACK and its packet id (MQTT 5 §4.3.2).
    assert!(matches!(next(&mut publisher).await, Packet::PubAck(a) if a.packet_id == 7));
    let Packet::Publish(p) = next(&mut sub).await else {
        panic!("expected the PUBLISH")
    };
    assert_eq!(
        (&*p.topic, &p.payload[..], p.qos),
        ("plant/a/temp", &b"21.5"[..], QoS::AtLeastOnce)
    );
    sub.send(Packet::PubAck(Ack::new(p.packet_id)))
        .await
        .unwrap();
    // PINGREQ is answered [MQTT-3.12.4-1]: the link is still in order.
    sub.send(Packet::PingReq).await.unwrap();
    assert_eq!(next(&mut sub).await, Packet::PingResp);
}

#[tokio::test]
async fn a_persistent_local_session_keeps_its_messages_while_away() {
    let b = broker(BrokerConfig::default());
    let (mut sub, _) = open(&b, connect("keeper", false)).await;
    subscribe(&mut sub, "q/#", QoS::AtLeastOnce).await;
    sub.send(Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await
        .unwrap();
    // After the client's DISCONNECT the broker closes the link.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap()
            .is_none()
    );
    let (publisher, _) = open(&b, connect("p", true)).await;
    publisher
        .send(publish("q/1", QoS::AtLeastOnce, 1, b"while away"))
        .await
        .unwrap();
    // Session present when the session was resumed [MQTT-3.2.2-3]; the QoS 1 message
    // published meanwhile is delivered.
    let mut back = loop {
        let (mut c, present) = open(&b, connect("keeper", false)).await;
        assert!(present);
        // The publish may not be routed yet when the session is resumed: wait for it.
        match tokio::time::timeout(Duration::from_millis(500), c.recv()).await {
            Ok(Some(Packet::Publish(p))) => {
                assert_eq!(&p.payload[..], b"while away");
                break c;
            }
            Ok(other) => panic!("expected the queued PUBLISH, got {other:?}"),
            Err(_) => continue,
        }
    };
    back.send(Packet::PingReq).await.unwrap();
    assert_eq!(next(&mut back).await, Packet::PingResp);
}

#[tokio::test]
async fn dropping_a_local_client_publishes_its_will() {
    let b = broker(BrokerConfig::default());
    let (mut watcher, _) = open(&b, connect("watcher", true)).await;
    subscribe(&mut watcher, "status/#", QoS::AtMostOnce).await;
    let mut c = connect("device", true);
    c.will = Some(Will {
        topic: "status/device".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    let (device, _) = open(&b, c).await;
    // Closed without DISCONNECT: the Will is published [MQTT-3.1.2-8].
    drop(device);
    let Packet::Publish(p) = next(&mut watcher).await else {
        panic!("expected the Will")
    };
    assert_eq!(
        (&*p.topic, &p.payload[..]),
        ("status/device", &b"offline"[..])
    );
}

#[tokio::test]
async fn a_local_client_is_held_to_the_maximum_packet_size() {
    let b = broker(BrokerConfig {
        max_packet_size: 64,
        ..BrokerConfig::default()
    });
    let (mut c, _) = open(&b, connect("big", true)).await;
    c.send(publish("t", QoS::AtMostOnce, 0, &[b'x'; 100]))
        .await
        .unwrap();
    // A packet above the Maximum Packet Size the broker announced is not processed:
    // DISCONNECT 0x95 Packet too large (MQTT 5 §4.13), then the link closes.
    match next(&mut c).await {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::PacketTooLarge),
        other => panic!("expected DISCONNECT 0x95, got {other:?}"),
    }
    assert!(c.recv().await.is_none());
}

#[tokio::test]
async fn a_local_client_that_does_not_read_loses_deliveries_beyond_the_online_bound() {
    let b = broker(BrokerConfig {
        max_queued_messages_online: 10,
        ..BrokerConfig::default()
    });
    let (mut slow, _) = open(&b, connect("slow", true)).await;
    subscribe(&mut slow, "flood", QoS::AtLeastOnce).await;
    let (publisher, _) = open(&b, connect("fast", true)).await;
    // 1 KiB each: the link's batches, the connection's 64 KiB buffer and its in-flight
    // window fill, then the session's queue up to its bound; beyond, deliveries are dropped
    // and counted — the publisher is never held up by the slow subscriber.
    static PAYLOAD: [u8; 1024] = [b'x'; 1024];
    for i in 0..2_000u16 {
        publisher
            .send(publish("flood", QoS::AtMostOnce, i, &PAYLOAD))
            .await
            .unwrap();
    }
    let dropped = || {
        b.stats()
            .messages_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dropped() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        dropped() > 0,
        "the slow client's deliveries were never dropped"
    );
    // What it was sent is still there, in order, and the session still answers.
    let mut last = None;
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(200), slow.recv()).await {
        if let Packet::Publish(p) = p {
            if p.qos == QoS::AtLeastOnce {
                slow.send(Packet::PubAck(Ack::new(p.packet_id)))
                    .await
                    .unwrap();
            }
            last = Some(p);
        }
    }
    assert!(last.is_some());
}

#[tokio::test]
async fn a_local_client_of_another_version_gets_packets_for_its_version() {
    let b = broker(BrokerConfig::default());
    let mut c = connect("old", true);
    c.version = Version::V3_1_1;
    let (mut old, _) = open(&b, c).await;
    subscribe(&mut old, "v/#", QoS::AtMostOnce).await;
    let (publisher, _) = open(&b, connect("new", true)).await;
    let mut p = Publish {
        topic: "v/1".into(),
        payload: Bytes::from_static(b"x"),
        ..Publish::default()
    };
    p.properties.content_type = Some("text/plain".into());
    publisher.send(Packet::Publish(p)).await.unwrap();
    // A 3.1.1 client gets no MQTT 5 properties: the broker builds its packets for its
    // version, as it would encode them.
    let Packet::Publish(got) = next(&mut old).await else {
        panic!("expected the PUBLISH")
    };
    assert!(got.properties.is_empty(), "{got:?}");
}

#[tokio::test]
async fn a_refused_local_login_gets_its_connack_and_the_link_closes() {
    let auth = kite_policy::Auth::new(
        vec![kite_policy::User {
            name: "alice".into(),
            password_hash: kite_policy::auth::hash_password(b"right").unwrap(),
            role: None,
        }],
        vec![],
    )
    .unwrap();
    let b = Broker::new(
        BrokerConfig {
            sys_interval: None,
            ..BrokerConfig::default()
        },
        auth,
        kite_broker::logins::Logins::new(1),
    );
    let mut c = connect("x", true);
    c.username = Some("alice".into());
    c.password = Some(Bytes::from_static(b"wrong"));
    let mut client = b.connect_local(c, ConnInfo::internal(None));
    // A CONNACK with a non-zero reason code, then the connection closes (MQTT 5 §3.2.2.2).
    match next(&mut client).await {
        Packet::ConnAck(ack) => assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword),
        other => panic!("expected a refusing CONNACK, got {other:?}"),
    }
    assert!(client.recv().await.is_none());
}

/// The device monitor's source: a client's connection opening and closing is reported with
/// why it ended — a take-over [MQTT-3.1.4-3] says the client is still connected — and the
/// broker's own in-process clients are not reported.
#[tokio::test]
async fn client_connections_are_reported_with_why_they_ended() {
    use kite_broker::events::ClientEvent;
    let b = broker(BrokerConfig::default());
    let mut events = b.client_events();
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 5000));
    let _internal = open(&b, connect("kite-internal", true)).await;
    let device = |c| b.connect_local(c, ConnInfo::websocket(peer, None));
    let mut first = device(connect("dev-a", true));
    assert!(matches!(next(&mut first).await, Packet::ConnAck(_)));
    let mut next_event = async || {
        tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event within 5 s")
            .expect("no lag")
    };
    let ClientEvent::Connected {
        conn: a, client_id, ..
    } = next_event().await
    else {
        panic!("expected Connected");
    };
    assert_eq!(&*client_id, "dev-a");
    let mut second = device(connect("dev-a", true));
    assert!(matches!(next(&mut second).await, Packet::ConnAck(_)));
    let mut seen = [next_event().await, next_event().await];
    seen.sort_by_key(|e| matches!(e, ClientEvent::Connected { .. }));
    match &seen[..] {
        [
            ClientEvent::Disconnected {
                conn,
                taken_over: true,
                clean: false,
                ..
            },
            ClientEvent::Connected { conn: b2, .. },
        ] => {
            assert_eq!(*conn, a);
            assert!(*b2 > a);
        }
        other => panic!("expected a take-over and a new connection, got {other:?}"),
    }
    drop(second);
    match next_event().await {
        ClientEvent::Disconnected {
            client_id,
            clean: false,
            taken_over: false,
            reason,
            ..
        } => {
            assert_eq!(&*client_id, "dev-a");
            assert!(reason.contains("without DISCONNECT"), "{reason}");
        }
        other => panic!("expected the connection's end, got {other:?}"),
    }
    let mut third = device(connect("dev-b", true));
    assert!(matches!(next(&mut third).await, Packet::ConnAck(_)));
    assert!(matches!(next_event().await, ClientEvent::Connected { .. }));
    third
        .send(Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await
        .unwrap();
    assert!(matches!(
        next_event().await,
        ClientEvent::Disconnected { clean: true, .. }
    ));
}
