//! The client session against a scripted server, with a simulated clock (`step()` jumps to the
//! session's next deadline). Spec clauses in test names or comments.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kite_mqtt::codec::ReasonCode as R;
use kite_mqtt::codec::{
    Ack, ConnAck, Disconnect, Properties, Props, Publish, SubAck, Subscription, UnsubAck,
};
use kite_mqtt::session::{
    CloseReason, ConnectOptions, DropReason, Event, Instant, OutboxLimit, OverflowPolicy, Session,
    SessionError,
};
use kite_mqtt::{Limits, Packet, QoS, Version, decode};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// A client session, the server's view of the wire, and a simulated clock.
struct Pair {
    client: Session,
    now: Instant,
    version: Version,
    /// Bytes the client sent that the server has not read yet.
    wire: BytesMut,
}

impl Pair {
    fn new(opts: ConnectOptions) -> Self {
        let version = opts.version;
        Self {
            client: Session::new(opts),
            now: Instant::now(),
            version,
            wire: BytesMut::new(),
        }
    }

    fn v5() -> Self {
        Self::new(ConnectOptions {
            client_id: "c1".into(),
            keep_alive: 30,
            ..ConnectOptions::default()
        })
    }

    fn v311() -> Self {
        Self::new(ConnectOptions {
            version: Version::V3_1_1,
            client_id: "c1".into(),
            keep_alive: 30,
            ..ConnectOptions::default()
        })
    }

    /// Everything the client sent since the last call, as packets.
    fn server_reads(&mut self) -> Vec<Packet> {
        while let Some(b) = self.client.poll_transmit() {
            self.wire.extend_from_slice(&b);
        }
        let mut out = Vec::new();
        while let Some(p) = decode(&mut self.wire, self.version, &Limits::default()).unwrap() {
            out.push(p);
        }
        out
    }

    fn server_sends(&mut self, p: Packet) {
        let mut buf = BytesMut::new();
        p.encode(self.version, &mut buf).unwrap();
        self.client.handle_bytes(&buf, self.now);
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }

    /// Advances the clock to the next deadline and handles it.
    fn step(&mut self) {
        let at = self.client.poll_timeout().expect("a deadline");
        assert!(at >= self.now, "deadlines never lie in the past");
        self.now = at;
        self.client.handle_timeout(self.now);
    }

    /// Handles a deadline if there is one.
    fn step_if_due(&mut self) {
        if self.client.poll_timeout().is_some() {
            self.step();
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
    }

    /// CONNECT, CONNACK with these properties; returns the CONNECT and the events.
    fn connect_with(&mut self, session_present: bool, props: Properties) -> (Packet, Vec<Event>) {
        self.client.connect(self.now);
        let connect = self.server_reads().remove(0);
        self.server_sends(Packet::ConnAck(ConnAck {
            session_present,
            reason: R::Success,
            properties: props.into(),
        }));
        (connect, self.events())
    }

    fn connect(&mut self) {
        let (_, events) = self.connect_with(false, Properties::default());
        assert!(matches!(events[0], Event::Connected { .. }), "{events:?}");
    }
}

fn publish(topic: &str, qos: QoS, payload: &'static [u8]) -> Publish {
    Publish {
        qos,
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        ..Publish::default()
    }
}

fn closed_with(events: &[Event]) -> &CloseReason {
    match events.iter().find(|e| matches!(e, Event::Disconnected(_))) {
        Some(Event::Disconnected(r)) => r,
        _ => panic!("no Disconnected event in {events:?}"),
    }
}

// ---- CONNECT / CONNACK ------------------------------------------------------------------

#[test]
fn connect_sends_the_options_and_connack_connects() {
    let mut pair = Pair::new(ConnectOptions {
        client_id: "dev-1".into(),
        keep_alive: 15,
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        properties: Properties {
            session_expiry_interval: Some(300),
            ..Properties::default()
        },
        ..ConnectOptions::default()
    });
    let (connect, events) = pair.connect_with(false, Properties::default());
    let Packet::Connect(c) = connect else {
        panic!("{connect:?}")
    };
    assert_eq!(
        (c.client_id.as_ref(), c.keep_alive, c.clean_start),
        ("dev-1", 15, true)
    );
    assert_eq!(c.properties.session_expiry_interval, Some(300));
    assert!(!c.bridge, "not a bridge unless asked");
    assert!(matches!(
        &events[..],
        [Event::Connected {
            session_present: false,
            ..
        }]
    ));
    assert!(pair.client.is_connected());
}

/// A bridge connects with bit 7 of the protocol level set (mosquitto's "try_private"):
/// 0x84 for 3.1.1.
#[test]
fn a_bridge_says_so_in_the_protocol_level() {
    let mut client = Session::new(ConnectOptions {
        version: Version::V3_1_1,
        client_id: "b".into(),
        bridge: true,
        ..ConnectOptions::default()
    });
    client.connect(Instant::now());
    let bytes = client.poll_transmit().unwrap();
    // Fixed header (2), protocol name (2 + 4), then the level.
    assert_eq!(bytes[8], 0x84, "{bytes:02x?}");
}

#[test]
fn server_assigned_client_id_and_keep_alive_are_used_mqtt_3_2_2_21() {
    let mut pair = Pair::new(ConnectOptions {
        keep_alive: 30,
        ..ConnectOptions::default()
    });
    let (_, events) = pair.connect_with(
        false,
        Properties {
            assigned_client_identifier: Some("auto-7".into()),
            server_keep_alive: Some(5),
            ..Properties::default()
        },
    );
    assert!(matches!(&events[0], Event::Connected { client_id, .. } if client_id == "auto-7"));
    // The next ping is due after the server's 5 s, not our 30 s.
    assert_eq!(
        pair.client.poll_timeout(),
        Some(pair.now + Duration::from_secs(5))
    );
}

#[test]
fn refused_connack_ends_with_its_reason() {
    let mut pair = Pair::v5();
    pair.client.connect(pair.now);
    pair.server_reads();
    pair.server_sends(Packet::ConnAck(ConnAck {
        session_present: false,
        reason: R::BadUserNameOrPassword,
        properties: Properties {
            reason_string: Some("wrong password".into()),
            ..Properties::default()
        }
        .into(),
    }));
    let events = pair.events();
    let reason = closed_with(&events);
    assert_eq!(
        reason.to_string(),
        "the server refused the connection: Bad User Name or Password (0x86): wrong password"
    );
    assert!(!pair.client.is_connected());
}

#[test]
fn a_3_1_1_server_refusing_a_5_0_connect_is_understood() {
    let mut pair = Pair::v5();
    pair.client.connect(pair.now);
    pair.server_reads();
    pair.client
        .handle_bytes(&[0x20, 0x02, 0x00, 0x01], pair.now);
    let events = pair.events();
    assert!(matches!(
        closed_with(&events),
        CloseReason::Refused {
            reason: R::UnsupportedProtocolVersion,
            ..
        }
    ));
}

#[test]
fn no_connack_in_time_is_a_connect_timeout() {
    let mut pair = Pair::v5();
    pair.client.connect(pair.now);
    pair.server_reads();
    pair.step();
    let events = pair.events();
    assert_eq!(closed_with(&events), &CloseReason::ConnectTimeout);
}

// ---- Keep-alive -------------------------------------------------------------------------

#[test]
fn keep_alive_sends_pingreq_when_idle_mqtt_3_1_2_23() {
    let mut pair = Pair::v5();
    pair.connect();
    pair.step();
    assert_eq!(pair.server_reads(), [Packet::PingReq]);
    pair.server_sends(Packet::PingResp);
    // Activity moves the next ping.
    pair.advance(Duration::from_secs(10));
    pair.client
        .publish(publish("t", QoS::AtMostOnce, b"x"), pair.now)
        .unwrap();
    assert_eq!(
        pair.client.poll_timeout(),
        Some(pair.now + Duration::from_secs(30))
    );
    assert!(pair.events().is_empty());
}

#[test]
fn no_pingresp_is_a_keep_alive_timeout() {
    let mut pair = Pair::v5();
    pair.connect();
    pair.step();
    assert_eq!(pair.server_reads(), [Packet::PingReq]);
    pair.step();
    let events = pair.events();
    assert_eq!(closed_with(&events), &CloseReason::KeepAliveTimeout);
}

// ---- QoS flows --------------------------------------------------------------------------

#[test]
fn qos0_publish_is_sent_once() {
    let mut pair = Pair::v311();
    pair.connect();
    assert_eq!(
        pair.client
            .publish(publish("a/b", QoS::AtMostOnce, b"1"), pair.now),
        Ok(None)
    );
    assert_eq!(
        pair.server_reads(),
        [Packet::Publish(publish("a/b", QoS::AtMostOnce, b"1"))]
    );
    assert_eq!(pair.client.inflight_len(), 0);
}

#[test]
fn qos1_publish_completes_on_puback_mqtt_4_3_2() {
    let mut pair = Pair::v311();
    pair.connect();
    let id = pair
        .client
        .publish(publish("a", QoS::AtLeastOnce, b"1"), pair.now)
        .unwrap()
        .unwrap();
    let sent = pair.server_reads();
    assert!(matches!(&sent[..], [Packet::Publish(p)] if p.packet_id == id && !p.dup));
    pair.server_sends(Packet::PubAck(Ack::new(id)));
    assert_eq!(
        pair.events(),
        [Event::Published {
            packet_id: id,
            reason: R::Success
        }]
    );
    assert_eq!(pair.client.inflight_len(), 0);
}

#[test]
fn qos2_publish_runs_pubrec_pubrel_pubcomp_mqtt_4_3_3() {
    let mut pair = Pair::v5();
    pair.connect();
    let id = pair
        .client
        .publish(publish("a", QoS::ExactlyOnce, b"1"), pair.now)
        .unwrap()
        .unwrap();
    pair.server_reads();
    pair.server_sends(Packet::PubRec(Ack::new(id)));
    assert_eq!(pair.server_reads(), [Packet::PubRel(Ack::new(id))]);
    assert!(pair.events().is_empty(), "not complete before PUBCOMP");
    // A repeated PUBREC gets PUBREL again.
    pair.server_sends(Packet::PubRec(Ack::new(id)));
    assert_eq!(pair.server_reads(), [Packet::PubRel(Ack::new(id))]);
    pair.server_sends(Packet::PubComp(Ack::new(id)));
    assert_eq!(
        pair.events(),
        [Event::Published {
            packet_id: id,
            reason: R::Success
        }]
    );
}

/// A relay's QoS 2: its own packet id, PUBREC reported and PUBREL only when released, the
/// same id and DUP again after a reconnect, and a release of an id from before a restart
/// completed by the server [MQTT-4.3.3].
#[test]
fn manual_release_relays_each_step_of_qos2() {
    let mut pair = Pair::new(ConnectOptions {
        client_id: "relay".into(),
        manual_release: true,
        clean_start: false,
        ..ConnectOptions::default()
    });
    pair.connect();
    let mut m = publish("a", QoS::ExactlyOnce, b"1");
    m.dup = true;
    pair.client
        .publish_with_id(m.clone(), 700, pair.now)
        .unwrap();
    let sent = pair.server_reads();
    assert!(
        matches!(&sent[..], [Packet::Publish(p)] if p.packet_id == 700 && p.dup),
        "{sent:?}"
    );
    // The same id again while in flight: nothing more is sent.
    pair.client.publish_with_id(m, 700, pair.now).unwrap();
    assert!(pair.server_reads().is_empty());
    pair.server_sends(Packet::PubRec(Ack::new(700)));
    assert_eq!(pair.events(), [Event::Received { packet_id: 700 }]);
    assert!(pair.server_reads().is_empty(), "no PUBREL before release");
    // A reconnect with the session present owes the server nothing for it yet.
    pair.client.connection_lost(pair.now);
    pair.events();
    let (_, _) = pair.connect_with(true, Properties::default());
    assert!(pair.server_reads().is_empty());
    pair.client.release(700, pair.now);
    assert_eq!(pair.server_reads(), [Packet::PubRel(Ack::new(700))]);
    pair.server_sends(Packet::PubComp(Ack::new(700)));
    assert_eq!(
        pair.events(),
        [Event::Published {
            packet_id: 700,
            reason: R::Success
        }]
    );
    // A release of an id received before a restart (this session never saw it).
    pair.client.release(9, pair.now);
    assert_eq!(pair.server_reads(), [Packet::PubRel(Ack::new(9))]);
    pair.server_sends(Packet::PubComp(Ack::new(9)));
    assert_eq!(
        pair.events(),
        [Event::Published {
            packet_id: 9,
            reason: R::Success
        }]
    );
}

#[test]
fn a_refused_qos1_or_qos2_publish_reports_the_reason() {
    let mut pair = Pair::v5();
    pair.connect();
    let a = pair
        .client
        .publish(publish("a", QoS::AtLeastOnce, b"1"), pair.now)
        .unwrap()
        .unwrap();
    let b = pair
        .client
        .publish(publish("b", QoS::ExactlyOnce, b"1"), pair.now)
        .unwrap()
        .unwrap();
    pair.server_reads();
    let refuse = |id| Ack {
        packet_id: id,
        reason: R::NotAuthorized,
        properties: Props::default(),
    };
    pair.server_sends(Packet::PubAck(refuse(a)));
    pair.server_sends(Packet::PubRec(refuse(b)));
    assert_eq!(
        pair.events(),
        [
            Event::Published {
                packet_id: a,
                reason: R::NotAuthorized
            },
            Event::Published {
                packet_id: b,
                reason: R::NotAuthorized
            }
        ]
    );
    assert!(
        pair.server_reads().is_empty(),
        "no PUBREL after a failed PUBREC"
    );
}

#[test]
fn incoming_qos1_is_delivered_and_acknowledged() {
    let mut pair = Pair::v311();
    pair.connect();
    let mut p = publish("x", QoS::AtLeastOnce, b"hi");
    p.packet_id = 9;
    pair.server_sends(Packet::Publish(p.clone()));
    assert_eq!(pair.events(), [Event::Message(p)]);
    assert_eq!(pair.server_reads(), [Packet::PubAck(Ack::new(9))]);
}

/// A recorder's QoS 1: the PUBACK goes when the application acknowledges, in any order;
/// after a lost connection the old ids are void — the server sends those messages again
/// (with DUP) under the new connection's ids [MQTT-4.4.0-1], and those are acknowledged.
#[test]
fn manual_ack_sends_puback_only_when_acknowledged() {
    let mut pair = Pair::new(ConnectOptions {
        client_id: "recorder".into(),
        manual_ack: true,
        clean_start: false,
        ..ConnectOptions::default()
    });
    pair.connect();
    for id in [3, 4] {
        let mut p = publish("x", QoS::AtLeastOnce, b"hi");
        p.packet_id = id;
        pair.server_sends(Packet::Publish(p.clone()));
        assert_eq!(pair.events(), [Event::Message(p)]);
    }
    assert!(
        pair.server_reads().is_empty(),
        "no PUBACK before the application's"
    );
    pair.client.acknowledge(4, pair.now);
    pair.client.acknowledge(4, pair.now);
    pair.client.acknowledge(77, pair.now);
    assert_eq!(pair.server_reads(), [Packet::PubAck(Ack::new(4))]);
    // Lost before 3 was acknowledged: acknowledging it now sends nothing.
    pair.client.connection_lost(pair.now);
    pair.events();
    pair.connect_with(true, Properties::default());
    pair.server_reads();
    pair.client.acknowledge(3, pair.now);
    assert!(pair.server_reads().is_empty());
    let mut again = publish("x", QoS::AtLeastOnce, b"hi");
    again.packet_id = 3;
    again.dup = true;
    pair.server_sends(Packet::Publish(again.clone()));
    assert_eq!(pair.events(), [Event::Message(again)]);
    pair.client.acknowledge(3, pair.now);
    assert_eq!(pair.server_reads(), [Packet::PubAck(Ack::new(3))]);
}

#[test]
fn incoming_qos2_is_delivered_once_even_when_resent_mqtt_4_3_3_9() {
    let mut pair = Pair::v5();
    pair.connect();
    let mut p = publish("x", QoS::ExactlyOnce, b"once");
    p.packet_id = 5;
    pair.server_sends(Packet::Publish(p.clone()));
    let mut again = p.clone();
    again.dup = true;
    pair.server_sends(Packet::Publish(again));
    assert_eq!(pair.events(), [Event::Message(p)]);
    assert_eq!(
        pair.server_reads(),
        [Packet::PubRec(Ack::new(5)), Packet::PubRec(Ack::new(5))]
    );
    pair.server_sends(Packet::PubRel(Ack::new(5)));
    assert_eq!(pair.server_reads(), [Packet::PubComp(Ack::new(5))]);
    // After PUBREL the id is free: the same id is a new message.
    let mut next = publish("x", QoS::ExactlyOnce, b"twice");
    next.packet_id = 5;
    pair.server_sends(Packet::Publish(next.clone()));
    assert_eq!(pair.events(), [Event::Message(next)]);
}

#[test]
fn unknown_pubrel_gets_pubcomp_with_packet_identifier_not_found() {
    let mut pair = Pair::v5();
    pair.connect();
    pair.server_sends(Packet::PubRel(Ack::new(77)));
    let comp = pair.server_reads();
    assert!(matches!(&comp[..], [Packet::PubComp(a)] if a.reason == R::PacketIdentifierNotFound));
    assert!(pair.client.is_connected());
}

// ---- Flow control -----------------------------------------------------------------------

#[test]
fn inflight_window_is_the_servers_receive_maximum() {
    let mut pair = Pair::v5();
    pair.connect_with(
        false,
        Properties {
            receive_maximum: Some(2),
            ..Properties::default()
        },
    );
    let ids: Vec<u16> = (0..3)
        .map(|_| {
            pair.client
                .publish(publish("a", QoS::AtLeastOnce, b"1"), pair.now)
                .unwrap()
                .unwrap()
        })
        .collect();
    assert_eq!(
        pair.server_reads().len(),
        2,
        "only two in flight [MQTT-4.9.0-2]"
    );
    assert_eq!(pair.client.outbox_len(), 1);
    pair.server_sends(Packet::PubAck(Ack::new(ids[0])));
    let next = pair.server_reads();
    assert!(matches!(&next[..], [Packet::Publish(p)] if p.packet_id == ids[2]));
}

#[test]
fn exceeding_our_receive_maximum_is_a_protocol_error() {
    let mut pair = Pair::new(ConnectOptions {
        properties: Properties {
            receive_maximum: Some(1),
            ..Properties::default()
        },
        ..ConnectOptions::default()
    });
    pair.connect();
    for id in [1, 2] {
        let mut p = publish("x", QoS::ExactlyOnce, b"1");
        p.packet_id = id;
        pair.server_sends(Packet::Publish(p));
    }
    let events = pair.events();
    assert!(matches!(
        closed_with(&events),
        CloseReason::ProtocolViolation {
            code: R::ReceiveMaximumExceeded,
            ..
        }
    ));
    let sent = pair.server_reads();
    assert!(
        matches!(sent.last(), Some(Packet::Disconnect(d)) if d.reason == R::ReceiveMaximumExceeded)
    );
}

// ---- Reconnect and resend ---------------------------------------------------------------

#[test]
fn session_present_resends_publish_with_dup_and_pubrel_in_order_mqtt_4_4_0_1() {
    let mut pair = Pair::v5();
    pair.connect();
    let a = pair
        .client
        .publish(publish("a", QoS::AtLeastOnce, b"1"), pair.now)
        .unwrap()
        .unwrap();
    let b = pair
        .client
        .publish(publish("b", QoS::ExactlyOnce, b"2"), pair.now)
        .unwrap()
        .unwrap();
    pair.server_reads();
    pair.server_sends(Packet::PubRec(Ack::new(b)));
    pair.server_reads();
    pair.client.connection_lost(pair.now);
    assert_eq!(closed_with(&pair.events()), &CloseReason::ConnectionLost);

    let (connect, _) = pair.connect_with(true, Properties::default());
    let Packet::Connect(c) = connect else {
        panic!()
    };
    assert!(!c.clean_start, "a reconnect resumes the session");
    let resent = pair.server_reads();
    assert!(
        matches!(&resent[0], Packet::Publish(p) if p.packet_id == a && p.dup),
        "{resent:?}"
    );
    assert_eq!(resent[1], Packet::PubRel(Ack::new(b)));
    pair.server_sends(Packet::PubAck(Ack::new(a)));
    pair.server_sends(Packet::PubComp(Ack::new(b)));
    assert_eq!(
        pair.events(),
        [
            Event::Published {
                packet_id: a,
                reason: R::Success
            },
            Event::Published {
                packet_id: b,
                reason: R::Success
            }
        ]
    );
}

#[test]
fn without_session_present_subscriptions_are_restored_and_publishes_sent_again() {
    let mut pair = Pair::v311();
    pair.connect();
    let sid = pair
        .client
        .subscribe(
            vec![
                Subscription::new("a/#", QoS::AtLeastOnce),
                Subscription::new("b", QoS::AtMostOnce),
            ],
            Props::default(),
            pair.now,
        )
        .unwrap();
    pair.server_reads();
    pair.server_sends(Packet::SubAck(SubAck {
        packet_id: sid,
        reasons: vec![R::GrantedQoS1, R::UnspecifiedError],
        properties: Props::default(),
    }));
    let id = pair
        .client
        .publish(publish("t", QoS::AtLeastOnce, b"1"), pair.now)
        .unwrap()
        .unwrap();
    pair.server_reads();
    pair.client.connection_lost(pair.now);
    pair.events();

    pair.connect_with(false, Properties::default());
    let sent = pair.server_reads();
    // The granted subscription (only "a/#": "b" was refused) is restored first, then the
    // unacknowledged publish goes again as a new message (DUP 0).
    assert!(
        matches!(&sent[0], Packet::Subscribe(s) if s.filters.len() == 1 && s.filters[0].filter == "a/#"),
        "{sent:?}"
    );
    assert!(
        matches!(&sent[1], Packet::Publish(p) if p.packet_id == id && !p.dup),
        "{sent:?}"
    );
}

// ---- Outbox -----------------------------------------------------------------------------

#[test]
fn publishes_made_offline_wait_in_the_outbox_and_go_after_connack() {
    let mut pair = Pair::v5();
    pair.client
        .publish(publish("a", QoS::AtMostOnce, b"1"), pair.now)
        .unwrap();
    pair.client
        .publish(publish("b", QoS::AtLeastOnce, b"2"), pair.now)
        .unwrap();
    assert_eq!(pair.client.outbox_len(), 2);
    pair.client.connect(pair.now);
    let connect = pair.server_reads();
    assert_eq!(connect.len(), 1, "nothing before CONNACK [MQTT-3.1.4-?]");
    pair.server_sends(Packet::ConnAck(ConnAck::default()));
    let sent = pair.server_reads();
    let topics: Vec<&str> = sent
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => p.topic.as_ref(),
            p => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(topics, ["a", "b"]);
    assert_eq!(pair.client.outbox_len(), 0);
}

#[test]
fn a_waiting_publish_can_be_listed_and_cancelled_until_it_is_sent() {
    let mut pair = Pair::v5();
    let a = pair
        .client
        .publish(publish("a", QoS::AtLeastOnce, b"1"), pair.now)
        .unwrap();
    pair.client
        .publish(publish("b", QoS::AtMostOnce, b"22"), pair.now)
        .unwrap();
    pair.client
        .publish(publish("c", QoS::ExactlyOnce, b"333"), pair.now)
        .unwrap();
    let waiting: Vec<(u64, String, u16)> = pair
        .client
        .outbox()
        .map(|w| (w.key, w.publish.topic.to_string(), w.publish.packet_id))
        .collect();
    assert_eq!(
        waiting.iter().map(|w| w.1.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(waiting[0].2, a.unwrap());
    // Cancelling the first frees its packet id; cancelling twice finds nothing.
    let cancelled = pair.client.cancel(waiting[0].0).unwrap();
    assert_eq!(cancelled.topic, "a");
    assert!(pair.client.cancel(waiting[0].0).is_none());
    assert_eq!(pair.client.outbox_len(), 2);
    pair.client.connect(pair.now);
    pair.server_reads();
    pair.server_sends(Packet::ConnAck(ConnAck::default()));
    let sent: Vec<String> = pair
        .server_reads()
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => p.topic.to_string(),
            p => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(sent, ["b", "c"], "the cancelled message never went");
    // Sent: no longer waiting, so no longer cancellable.
    assert!(pair.client.cancel(waiting[2].0).is_none());
    assert_eq!(pair.client.outbox().len(), 0);
}

#[test]
fn outbox_overflow_rejects_or_drops_the_oldest() {
    let limit = |policy| OutboxLimit {
        messages: 2,
        bytes: 1_000,
        policy,
    };
    let mut reject = Pair::new(ConnectOptions {
        outbox_limit: limit(OverflowPolicy::RejectNew),
        ..ConnectOptions::default()
    });
    for t in ["a", "b"] {
        reject
            .client
            .publish(publish(t, QoS::AtMostOnce, b"1"), reject.now)
            .unwrap();
    }
    assert!(matches!(
        reject
            .client
            .publish(publish("c", QoS::AtMostOnce, b"1"), reject.now),
        Err(SessionError::OutboxFull { messages: 2, .. })
    ));

    let mut drop = Pair::new(ConnectOptions {
        outbox_limit: limit(OverflowPolicy::DropOldest),
        ..ConnectOptions::default()
    });
    for t in ["a", "b", "c"] {
        drop.client
            .publish(publish(t, QoS::AtMostOnce, b"1"), drop.now)
            .unwrap();
    }
    assert_eq!(
        drop.events(),
        [Event::Dropped {
            topic: "a".into(),
            why: DropReason::OutboxFull
        }]
    );
    assert_eq!(drop.client.outbox_len(), 2);
    // The byte bound counts too.
    let mut bytes = Pair::new(ConnectOptions {
        outbox_limit: OutboxLimit {
            messages: 100,
            bytes: 3,
            policy: OverflowPolicy::RejectNew,
        },
        ..ConnectOptions::default()
    });
    bytes
        .client
        .publish(publish("a", QoS::AtMostOnce, b"12"), bytes.now)
        .unwrap();
    assert!(
        bytes
            .client
            .publish(publish("a", QoS::AtMostOnce, b"34"), bytes.now)
            .is_err()
    );
}

#[test]
fn message_expiry_is_honoured_while_queued_mqtt_3_3_2_6() {
    let mut pair = Pair::v5();
    let mut short = publish("short", QoS::AtMostOnce, b"1");
    short.properties.message_expiry_interval = Some(5);
    let mut long = publish("long", QoS::AtMostOnce, b"2");
    long.properties.message_expiry_interval = Some(60);
    pair.client.publish(short, pair.now).unwrap();
    pair.client.publish(long, pair.now).unwrap();
    pair.now += Duration::from_secs(10);
    let (_, events) = pair.connect_with(false, Properties::default());
    assert!(events.contains(&Event::Dropped {
        topic: "short".into(),
        why: DropReason::Expired
    }));
    let sent = pair.server_reads();
    // The survivor's expiry is what is left of it.
    assert!(
        matches!(&sent[..], [Packet::Publish(p)] if p.topic == "long" && p.properties.message_expiry_interval == Some(50))
    );
}

// ---- Subscriptions ----------------------------------------------------------------------

#[test]
fn subscribe_and_unsubscribe_report_their_answers() {
    let mut pair = Pair::v5();
    pair.connect();
    let id = pair
        .client
        .subscribe(
            vec![Subscription::new("s/+", QoS::ExactlyOnce)],
            Props::default(),
            pair.now,
        )
        .unwrap();
    pair.server_reads();
    pair.server_sends(Packet::SubAck(SubAck {
        packet_id: id,
        reasons: vec![R::GrantedQoS1],
        properties: Props::default(),
    }));
    assert_eq!(
        pair.events(),
        [Event::Subscribed {
            packet_id: id,
            reasons: vec![R::GrantedQoS1]
        }]
    );
    let uid = pair
        .client
        .unsubscribe(vec!["s/+".into()], pair.now)
        .unwrap();
    pair.server_reads();
    pair.server_sends(Packet::UnsubAck(UnsubAck {
        packet_id: uid,
        reasons: vec![R::Success],
        properties: Props::default(),
    }));
    assert_eq!(
        pair.events(),
        [Event::Unsubscribed {
            packet_id: uid,
            reasons: vec![R::Success]
        }]
    );
}

/// What a SUBSCRIBE or UNSUBSCRIBE left unanswered (or made offline) is sent again on the next
/// connection in the order it was made — the server applies them in the order it reads them,
/// so "unsubscribe x, then subscribe x again" must not arrive as the reverse and end
/// unsubscribed (kite.js does exactly this when the last widget on a filter goes and a new
/// one comes while the connection is down). Also across the wrap of packet ids (65535 → 1,
/// [MQTT-2.2.1-3]: ids are non-zero).
#[test]
fn unanswered_subscribes_and_unsubscribes_go_again_in_the_order_they_were_made() {
    let mut pair = Pair::v5();
    pair.connect();
    // Use up ids 1..=65533 with answered subscribes, so the next ids are 65534, 65535, 1, 2.
    for _ in 1..=65533u32 {
        let id = pair
            .client
            .subscribe(
                vec![Subscription::new("warm", QoS::AtMostOnce)],
                Props::default(),
                pair.now,
            )
            .unwrap();
        pair.server_sends(Packet::SubAck(SubAck {
            packet_id: id,
            reasons: vec![R::GrantedQoS0],
            properties: Props::default(),
        }));
    }
    pair.server_reads();
    pair.events();
    pair.client.connection_lost(pair.now);
    pair.events();

    let made = [
        pair.client.unsubscribe(vec!["x".into()], pair.now).unwrap(),
        pair.client
            .subscribe(
                vec![Subscription::new("x", QoS::AtLeastOnce)],
                Props::default(),
                pair.now,
            )
            .unwrap(),
        pair.client.unsubscribe(vec!["y".into()], pair.now).unwrap(),
        pair.client
            .subscribe(
                vec![Subscription::new("y", QoS::AtLeastOnce)],
                Props::default(),
                pair.now,
            )
            .unwrap(),
    ];
    assert_eq!(
        made,
        [65534, 65535, 1, 2],
        "the ids wrap as the test means them to"
    );

    // session_present: only what waits goes (no re-subscription of what was granted).
    pair.connect_with(true, Properties::default());
    let sent: Vec<(u16, &str, String)> = pair
        .server_reads()
        .into_iter()
        .map(|p| match p {
            Packet::Subscribe(s) => (s.packet_id, "SUBSCRIBE", s.filters[0].filter.to_string()),
            Packet::Unsubscribe(u) => (u.packet_id, "UNSUBSCRIBE", u.filters[0].to_string()),
            p => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(
        sent,
        [
            (65534, "UNSUBSCRIBE", "x".to_string()),
            (65535, "SUBSCRIBE", "x".to_string()),
            (1, "UNSUBSCRIBE", "y".to_string()),
            (2, "SUBSCRIBE", "y".to_string()),
        ]
    );
}

#[test]
fn invalid_commands_are_refused_before_anything_is_sent() {
    let mut pair = Pair::v5();
    pair.connect();
    assert!(matches!(
        pair.client
            .publish(publish("a/+", QoS::AtMostOnce, b""), pair.now),
        Err(SessionError::Invalid(_))
    ));
    assert!(matches!(
        pair.client.subscribe(
            vec![Subscription::new("a#", QoS::AtMostOnce)],
            Props::default(),
            pair.now
        ),
        Err(SessionError::Invalid(_))
    ));
    assert!(pair.server_reads().is_empty());
}

#[test]
fn the_servers_maximum_packet_size_is_respected_mqtt_3_1_2_24() {
    let mut pair = Pair::v5();
    pair.connect_with(
        false,
        Properties {
            maximum_packet_size: Some(20),
            ..Properties::default()
        },
    );
    let big = publish("topic", QoS::AtMostOnce, b"this payload is too long");
    assert!(matches!(
        pair.client.publish(big, pair.now),
        Err(SessionError::TooLarge { max: 20, .. })
    ));
}

// ---- Topic aliases ----------------------------------------------------------------------

#[test]
fn incoming_topic_aliases_are_resolved() {
    let mut pair = Pair::new(ConnectOptions {
        properties: Properties {
            topic_alias_maximum: Some(10),
            ..Properties::default()
        },
        ..ConnectOptions::default()
    });
    pair.connect();
    let mut first = publish("long/topic/name", QoS::AtMostOnce, b"1");
    first.properties.topic_alias = Some(3);
    let mut second = publish("", QoS::AtMostOnce, b"2");
    second.properties.topic_alias = Some(3);
    pair.server_sends(Packet::Publish(first));
    pair.server_sends(Packet::Publish(second));
    let topics: Vec<kite_mqtt::MqttStr> = pair
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Message(p) => {
                assert_eq!(
                    p.properties.topic_alias, None,
                    "the alias is resolved, not passed on"
                );
                p.topic
            }
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(topics, ["long/topic/name", "long/topic/name"]);
}

#[test]
fn unknown_or_too_high_topic_alias_is_a_protocol_error() {
    for (alias, max) in [(4, 10), (11, 10), (1, 0)] {
        let mut pair = Pair::new(ConnectOptions {
            properties: Properties {
                topic_alias_maximum: Some(max),
                ..Properties::default()
            },
            ..ConnectOptions::default()
        });
        pair.connect();
        let mut p = publish("", QoS::AtMostOnce, b"1");
        p.properties.topic_alias = Some(alias);
        pair.server_sends(Packet::Publish(p));
        let events = pair.events();
        assert!(
            matches!(
                closed_with(&events),
                CloseReason::ProtocolViolation {
                    code: R::TopicAliasInvalid,
                    ..
                }
            ),
            "alias {alias} max {max}: {events:?}"
        );
    }
}

// ---- Misbehaving servers ----------------------------------------------------------------

#[test]
fn a_second_connack_closes_the_session() {
    let mut pair = Pair::v5();
    pair.connect();
    pair.server_sends(Packet::ConnAck(ConnAck::default()));
    let events = pair.events();
    let reason = closed_with(&events);
    assert!(reason.to_string().contains("a second CONNACK"), "{reason}");
    assert!(
        matches!(pair.server_reads().last(), Some(Packet::Disconnect(d)) if d.reason == R::ProtocolError)
    );
}

#[test]
fn acks_for_unknown_ids_close_the_session() {
    for ack in [
        Packet::PubAck(Ack::new(42)),
        Packet::PubRec(Ack::new(42)),
        Packet::PubComp(Ack::new(42)),
        Packet::SubAck(SubAck {
            packet_id: 42,
            reasons: vec![R::GrantedQoS0],
            properties: Props::default(),
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 42,
            reasons: vec![R::Success],
            properties: Props::default(),
        }),
    ] {
        let mut pair = Pair::v5();
        pair.connect();
        let kind = ack.packet_type();
        pair.server_sends(ack);
        let events = pair.events();
        let reason = closed_with(&events).to_string();
        assert!(reason.contains("packet id 42"), "{kind}: {reason}");
    }
}

#[test]
fn packets_only_clients_send_close_the_session() {
    let mut pair = Pair::v5();
    pair.connect();
    pair.server_sends(Packet::PingReq);
    let events = pair.events();
    assert!(closed_with(&events).to_string().contains("PINGREQ"));
}

#[test]
fn anything_before_connack_closes_the_session_mqtt_3_2_0_1() {
    let mut pair = Pair::v5();
    pair.client.connect(pair.now);
    pair.server_reads();
    pair.server_sends(Packet::PingResp);
    let events = pair.events();
    assert!(closed_with(&events).to_string().contains("before CONNACK"));
}

#[test]
fn malformed_bytes_close_with_malformed_packet() {
    let mut pair = Pair::v5();
    pair.connect();
    // PUBLISH with QoS 3.
    pair.client
        .handle_bytes(&[0x36, 0x03, 0x00, 0x01, 0x61], pair.now);
    let events = pair.events();
    assert!(matches!(closed_with(&events), CloseReason::Malformed(_)));
    assert!(
        matches!(pair.server_reads().last(), Some(Packet::Disconnect(d)) if d.reason == R::MalformedPacket)
    );
    // Nothing after the close is processed.
    pair.client.handle_bytes(&[0xd0, 0x00], pair.now);
    assert!(pair.events().is_empty());
}

#[test]
fn server_disconnect_is_reported_with_its_reason() {
    let mut pair = Pair::v5();
    pair.connect();
    let mut d = Disconnect::new(R::SessionTakenOver);
    d.properties.reason_string = Some("another client connected with your id".into());
    pair.server_sends(Packet::Disconnect(d));
    let events = pair.events();
    assert_eq!(
        closed_with(&events).to_string(),
        "the server disconnected: Session taken over (0x8E): another client connected with your id"
    );
}

#[test]
fn bytes_in_any_chunking_give_the_same_events() {
    // CONNACK and two PUBLISHes, fed one byte at a time.
    let mut pair = Pair::v311();
    pair.client.connect(pair.now);
    pair.server_reads();
    let mut wire = BytesMut::new();
    Packet::ConnAck(ConnAck::default())
        .encode(Version::V3_1_1, &mut wire)
        .unwrap();
    for t in ["a", "b"] {
        Packet::Publish(publish(t, QoS::AtMostOnce, b"x"))
            .encode(Version::V3_1_1, &mut wire)
            .unwrap();
    }
    for b in wire.iter() {
        pair.client.handle_bytes(&[*b], pair.now);
    }
    let events = pair.events();
    assert_eq!(events.len(), 3, "{events:?}");
}

#[test]
fn disconnect_sends_disconnect_and_keeps_the_session_for_later() {
    let mut pair = Pair::v5();
    pair.connect();
    let id = pair
        .client
        .publish(publish("a", QoS::AtLeastOnce, b"1"), pair.now)
        .unwrap()
        .unwrap();
    pair.server_reads();
    pair.client
        .disconnect(R::NormalDisconnection, pair.now)
        .unwrap();
    assert!(matches!(&pair.server_reads()[..], [Packet::Disconnect(_)]));
    assert_eq!(closed_with(&pair.events()), &CloseReason::Requested);
    assert_eq!(
        pair.client.inflight_len(),
        1,
        "kept for the next connection"
    );
    assert_eq!(
        pair.client.disconnect(R::NormalDisconnection, pair.now),
        Err(SessionError::NotConnected)
    );
    pair.connect_with(true, Properties::default());
    assert!(matches!(&pair.server_reads()[..], [Packet::Publish(p)] if p.packet_id == id && p.dup));
}

// ---- Outgoing topic aliases -------------------------------------------------------------

#[test]
fn outgoing_topic_aliases_replace_repeated_topics_and_reset_per_connection() {
    let mut pair = Pair::v5();
    pair.connect_with(
        false,
        Properties {
            topic_alias_maximum: Some(1),
            ..Properties::default()
        },
    );
    for (topic, payload) in [
        ("plant/line-1/temp", &b"1"[..]),
        ("plant/line-1/temp", b"2"),
        ("other", b"3"),
    ] {
        let mut p = publish(topic, QoS::AtMostOnce, b"");
        p.payload = Bytes::copy_from_slice(payload);
        pair.client.publish(p, pair.now).unwrap();
    }
    let wire: Vec<(String, Option<u16>)> = pair
        .server_reads()
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.topic.to_string(), p.properties.topic_alias),
            p => panic!("{p:?}"),
        })
        .collect();
    // First use sets alias 1, the repeat sends the alias alone, and with the server's maximum
    // of 1 reached, "other" goes by name.
    assert_eq!(
        wire,
        [
            ("plant/line-1/temp".to_owned(), Some(1)),
            (String::new(), Some(1)),
            ("other".to_owned(), None)
        ]
    );
    // A resend on a new connection carries the topic again: aliases do not survive it.
    let id = pair
        .client
        .publish(
            publish("plant/line-1/temp", QoS::AtLeastOnce, b"4"),
            pair.now,
        )
        .unwrap()
        .unwrap();
    pair.server_reads();
    pair.client.connection_lost(pair.now);
    pair.connect_with(true, Properties::default());
    assert!(
        matches!(&pair.server_reads()[..], [Packet::Publish(p)] if p.packet_id == id && p.topic == "plant/line-1/temp" && p.properties.topic_alias.is_none())
    );
}

#[test]
fn no_outgoing_aliases_when_the_server_allows_none() {
    let mut pair = Pair::v5();
    pair.connect();
    for _ in 0..2 {
        pair.client
            .publish(publish("t", QoS::AtMostOnce, b"x"), pair.now)
            .unwrap();
    }
    for p in pair.server_reads() {
        assert!(
            matches!(p, Packet::Publish(p) if p.topic == "t" && p.properties.topic_alias.is_none())
        );
    }
}

// ---- Outbox export / import -------------------------------------------------------------

#[test]
fn the_outbox_survives_an_export_and_import() {
    let mut before = Pair::v5();
    before
        .client
        .publish(publish("a", QoS::AtMostOnce, b"1"), before.now)
        .unwrap();
    let mut b = publish("b", QoS::ExactlyOnce, b"2");
    b.properties.message_expiry_interval = Some(100);
    b.properties.content_type = Some("text/plain".into());
    before.client.publish(b, before.now).unwrap();
    let mut gone = publish("gone", QoS::AtMostOnce, b"3");
    gone.properties.message_expiry_interval = Some(5);
    before.client.publish(gone, before.now).unwrap();
    let saved = before
        .client
        .export_outbox(before.now + Duration::from_secs(10));

    // A new page, a new session: import, connect, and the messages go out in order.
    let mut after = Pair::v5();
    assert_eq!(after.client.import_outbox(&saved, after.now), Ok(2));
    after.connect();
    let sent = after.server_reads();
    assert!(matches!(&sent[0], Packet::Publish(p) if p.topic == "a" && p.qos == QoS::AtMostOnce));
    assert!(matches!(&sent[1], Packet::Publish(p)
        if p.topic == "b" && p.qos == QoS::ExactlyOnce
        && p.properties.message_expiry_interval == Some(90)
        && p.properties.content_type.as_deref() == Some("text/plain")));
    assert_eq!(sent.len(), 2, "the expired message was not kept");
}

#[test]
fn damaged_or_oversized_outbox_data_is_refused_whole() {
    let mut pair = Pair::v5();
    for bad in [
        &b"not an outbox"[..],
        b"KITEOBX1\x30",
        b"KITEOBX1\xc0\x00",
        b"KITEOBX1\x36\x03\x00\x01\x61",
    ] {
        assert!(
            matches!(
                pair.client.import_outbox(bad, pair.now),
                Err(SessionError::BadOutbox(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(pair.client.outbox_len(), 0);

    let mut big = Pair::v5();
    for _ in 0..3 {
        big.client
            .publish(publish("x", QoS::AtMostOnce, b"1"), big.now)
            .unwrap();
    }
    let saved = big.client.export_outbox(big.now);
    let mut small = Pair::new(ConnectOptions {
        outbox_limit: OutboxLimit {
            messages: 2,
            bytes: 100,
            policy: OverflowPolicy::RejectNew,
        },
        ..ConnectOptions::default()
    });
    assert!(matches!(
        small.client.import_outbox(&saved, small.now),
        Err(SessionError::OutboxFull { .. })
    ));
    assert_eq!(
        small.client.outbox_len(),
        0,
        "nothing queued when it does not all fit"
    );
}

// ---- Enhanced authentication ------------------------------------------------------------

#[test]
fn auth_exchange_reaches_the_application_and_its_answer_is_sent() {
    let mut pair = Pair::new(ConnectOptions {
        properties: Properties {
            authentication_method: Some("SCRAM-SHA-1".into()),
            ..Properties::default()
        },
        ..ConnectOptions::default()
    });
    pair.client.connect(pair.now);
    pair.server_reads();
    let challenge = kite_mqtt::codec::Auth {
        reason: R::ContinueAuthentication,
        properties: Properties {
            authentication_method: Some("SCRAM-SHA-1".into()),
            authentication_data: Some(Bytes::from_static(b"server-first")),
            ..Properties::default()
        }
        .into(),
    };
    pair.server_sends(Packet::Auth(challenge.clone()));
    assert_eq!(pair.events(), [Event::Auth(challenge)]);
    let answer = kite_mqtt::codec::Auth {
        reason: R::ContinueAuthentication,
        properties: Properties {
            authentication_method: Some("SCRAM-SHA-1".into()),
            authentication_data: Some(Bytes::from_static(b"client-final")),
            ..Properties::default()
        }
        .into(),
    };
    pair.client.auth(answer.clone(), pair.now).unwrap();
    assert_eq!(pair.server_reads(), [Packet::Auth(answer)]);
    pair.server_sends(Packet::ConnAck(ConnAck::default()));
    assert!(matches!(&pair.events()[..], [Event::Connected { .. }]));
}

// ---- Robustness -------------------------------------------------------------------------

/// Random server bytes after CONNACK (10,000 inputs, fixed seed): never a panic, and a
/// session that ends says why.
#[test]
fn random_server_bytes_never_panic() {
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..10_000 {
        let mut pair = if i % 2 == 0 { Pair::v5() } else { Pair::v311() };
        pair.connect();
        let len = (next() % 40) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(first) = bytes.first_mut() {
            // Mostly plausible packet types.
            *first = (*first & 0x0f) | ((1 + next() % 15) as u8) << 4;
        }
        pair.client.handle_bytes(&bytes, pair.now);
        pair.step_if_due();
        for e in pair.events() {
            if let Event::Disconnected(reason) = e {
                assert!(!reason.to_string().is_empty());
            }
        }
    }
}
