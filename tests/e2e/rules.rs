//! A role's topic rules enforced by the gateway in front of a real mosquitto, which knows
//! nothing of them: a watcher connected to mosquitto directly sees exactly what got through.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use kite_mqtt::codec::{Connect, Properties, Publish, ReasonCode, Subscription, Will};
use kite_mqtt::{Packet, QoS, Version};
use kite_policy::DeniedPublish;
use kite_policy::auth::{Auth, Role, User, hash_password};
use kite_tests::client::{TestClient, Via, publish};
use kite_tests::{Gateway, Mosquitto};

const V3: Version = Version::V3_1_1;
const V5: Version = Version::V5;

struct Setup {
    broker: Mosquitto,
    gateway: Gateway,
}

impl Setup {
    /// An anonymous mosquitto behind a gateway whose user alice (role operator) may publish to
    /// `plant/+/cmd` and `users/alice/#`, and subscribe within `plant/#` and `users/alice/#`.
    fn start(policy: DeniedPublish) -> Self {
        let broker = Mosquitto::start();
        let gateway = Gateway::start_with(&[&broker.url()], None, |c| {
            c.auth = Auth::new(
                vec![User {
                    name: "alice".into(),
                    password_hash: hash_password(b"s3cret").unwrap(),
                    role: Some("operator".into()),
                }],
                vec![Role {
                    name: "operator".into(),
                    acl: kite_policy::acl::Acl {
                        publish: Some(vec!["plant/+/cmd".into(), "users/%u/#".into()]),
                        subscribe: Some(vec!["plant/#".into(), "users/%u/#".into()]),
                        ..Default::default()
                    },
                    ..Role::default()
                }],
            )
            .unwrap();
            c.v311_denied_publish = policy;
        });
        Self { broker, gateway }
    }

    fn ws(&self) -> Via {
        Via::Ws(self.gateway.ws_url("/mqtt"))
    }

    fn mosquitto(&self) -> Via {
        Via::Tcp(SocketAddr::from(([127, 0, 0, 1], self.broker.port)))
    }

    /// A client connected to mosquitto directly, subscribed to everything.
    fn watcher(&self) -> TestClient {
        let mut w = TestClient::connected(&self.mosquitto(), V5, "watcher");
        w.subscribe("#", QoS::AtLeastOnce);
        w
    }

    fn alice(&self, version: Version) -> TestClient {
        let (c, ack) = TestClient::connect(&self.ws(), alice(version));
        assert_eq!(ack.reason, ReasonCode::Success, "{ack:?}");
        c
    }
}

fn alice(version: Version) -> Connect {
    Connect {
        version,
        client_id: "alice-tab".into(),
        keep_alive: 60,
        username: Some("alice".into()),
        password: Some(Bytes::from_static(b"s3cret")),
        ..Connect::default()
    }
}

/// What reached the watcher: (topic, payload) in order.
fn seen(watcher: &mut TestClient) -> Vec<(String, String)> {
    watcher
        .barrier()
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => {
                watcher.ack(&p);
                (
                    p.topic.to_string(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                )
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        })
        .collect()
}

fn pair(topic: &str, payload: &str) -> (String, String) {
    (topic.to_owned(), payload.to_owned())
}

/// A refused PUBLISH never reaches the broker. 5.0: PUBACK/PUBREC 0x87 Not authorized
/// (MQTT 5 §3.4.2.1, §3.5.2.1); 3.1.1 cannot refuse, so it is acknowledged and dropped, and
/// a refused QoS 2 PUBLISH completes with PUBCOMP [MQTT-4.3.3-1]. Wildcards in a topic name
/// are malformed and close the session [MQTT-3.3.2-2].
#[test]
fn refused_publishes_never_reach_the_broker() {
    let s = Setup::start(DeniedPublish::Drop);
    let mut watcher = s.watcher();
    for v in [V3, V5] {
        let mut c = s.alice(v);
        let no = if v.is_v5() {
            ReasonCode::NotAuthorized
        } else {
            ReasonCode::Success
        };
        assert_eq!(
            c.publish(publish("plant/valve/cmd", "open", QoS::AtLeastOnce, 1)),
            ReasonCode::Success
        );
        assert_eq!(
            c.publish(publish("plant/valve/temp", "99", QoS::AtLeastOnce, 2)),
            no
        );
        assert_eq!(
            c.publish(publish("users/bob/inbox", "hi", QoS::AtLeastOnce, 3)),
            no
        );
        assert_eq!(
            c.publish(publish("$SYS/broker/fake", "x", QoS::AtLeastOnce, 4)),
            no
        );
        c.publish(publish("plant/valve/temp", "qos0", QoS::AtMostOnce, 0));
        if v.is_v5() {
            // A QoS 2 refusal ends the exchange at PUBREC 0x87 (no PUBREL follows).
            c.send(&Packet::Publish(publish(
                "plant/valve/temp",
                "qos2",
                QoS::ExactlyOnce,
                5,
            )));
            match c.recv() {
                Packet::PubRec(a) => {
                    assert_eq!((a.packet_id, a.reason), (5, ReasonCode::NotAuthorized))
                }
                other => panic!("expected PUBREC 0x87, got {other:?}"),
            }
        } else {
            // PUBREC, then the gateway answers the PUBREL with PUBCOMP itself.
            assert_eq!(
                c.publish(publish("plant/valve/temp", "qos2", QoS::ExactlyOnce, 5)),
                ReasonCode::Success
            );
        }
        assert_eq!(
            c.publish(publish("users/alice/notes", "mine", QoS::ExactlyOnce, 6)),
            ReasonCode::Success
        );
        assert_eq!(c.barrier(), vec![], "nothing else came back");
        assert_eq!(
            seen(&mut watcher),
            vec![
                pair("plant/valve/cmd", "open"),
                pair("users/alice/notes", "mine")
            ],
            "{v:?}"
        );
    }
    let metrics = ureq::get(&s.gateway.http_url("/metrics"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("kite_denied_total{what=\"publish\"} 10"),
        "{metrics}"
    );
}

/// A CONNECT and a refused PUBLISH in one WebSocket frame: the PUBLISH is checked like any
/// other (the rules apply from the first packet after CONNECT).
#[test]
fn a_publish_in_the_connect_frame_is_checked_too() {
    let s = Setup::start(DeniedPublish::Drop);
    let mut watcher = s.watcher();
    let mut bytes = BytesMut::new();
    Packet::Connect(Box::new(alice(V5)))
        .encode(V5, &mut bytes)
        .unwrap();
    Packet::Publish(publish("secret/x", "sneaky", QoS::AtLeastOnce, 1))
        .encode(V5, &mut bytes)
        .unwrap();
    Packet::Publish(publish("plant/a/cmd", "fine", QoS::AtMostOnce, 0))
        .encode(V5, &mut bytes)
        .unwrap();
    let mut c = TestClient::open(&s.ws(), V5);
    c.send_raw(&bytes);
    assert!(matches!(c.recv(), Packet::ConnAck(a) if a.reason == ReasonCode::Success));
    match c.recv() {
        Packet::PubAck(a) => assert_eq!(a.reason, ReasonCode::NotAuthorized),
        other => panic!("expected PUBACK 0x87, got {other:?}"),
    }
    assert_eq!(c.barrier(), vec![]);
    assert_eq!(seen(&mut watcher), vec![pair("plant/a/cmd", "fine")]);
}

/// MQTT 5 topic aliases: an alias set by a refused PUBLISH is not set (the broker never saw
/// it), so a later PUBLISH by alias goes where the broker's mapping says and is checked
/// against that topic; an alias never set is a Protocol Error (MQTT 5 §3.3.2.3.4).
#[test]
fn a_topic_alias_cannot_carry_a_message_past_the_rules() {
    let s = Setup::start(DeniedPublish::Drop);
    let mut watcher = s.watcher();
    let mut c = s.alice(V5);
    let aliased = |topic: &str, payload: &str, alias: u16, id: u16| Publish {
        properties: Properties {
            topic_alias: Some(alias),
            ..Properties::default()
        }
        .into(),
        ..publish(topic, payload, QoS::AtLeastOnce, id)
    };
    assert_eq!(
        c.publish(aliased("plant/a/cmd", "one", 1, 1)),
        ReasonCode::Success
    );
    assert_eq!(
        c.publish(aliased("secret/x", "two", 1, 2)),
        ReasonCode::NotAuthorized
    );
    assert_eq!(c.publish(aliased("", "three", 1, 3)), ReasonCode::Success);
    assert_eq!(
        seen(&mut watcher),
        vec![pair("plant/a/cmd", "one"), pair("plant/a/cmd", "three")]
    );
    c.send(&Packet::Publish(aliased("", "four", 2, 4)));
    match c.try_recv() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::ProtocolError),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    assert!(c.try_recv().is_none(), "the session is closed");
    assert_eq!(seen(&mut watcher), vec![]);
}

/// Each filter of a SUBSCRIBE is checked; refused ones are left out of what mosquitto gets and
/// come back in the SUBACK as 0x87 (3.1.1: 0x80) in their places [MQTT-3.9.3-1]; when all
/// are refused the gateway answers alone. `#` does not cover `$SYS` [MQTT-4.7.2-1].
#[test]
fn refused_filters_come_back_in_the_suback_in_their_places() {
    let s = Setup::start(DeniedPublish::Drop);
    let device = || TestClient::connected(&s.mosquitto(), V5, "device");
    for v in [V3, V5] {
        let mut c = s.alice(v);
        let filters = ["plant/+/temp", "#", "users/alice/#", "$SYS/#", "$share/g/#"];
        let ack = c.subscribe_all(7, &filters, QoS::AtLeastOnce);
        assert_eq!(ack.packet_id, 7);
        let codes: Vec<u8> = ack
            .reasons
            .iter()
            .map(|r| {
                if v.is_v5() {
                    r.value()
                } else {
                    r.to_v3_suback()
                }
            })
            .collect();
        let no = if v.is_v5() { 0x87 } else { 0x80 };
        assert_eq!(codes, vec![1, no, 1, no, no], "{v:?}");
        let all_refused = c.subscribe_with(
            8,
            vec![Subscription::new("secret/#", QoS::AtMostOnce)],
            Properties::default(),
        );
        assert_eq!(all_refused.packet_id, 8);
        assert_ne!(all_refused.reasons[0], ReasonCode::GrantedQoS0);
        let mut d = device();
        for topic in ["plant/a/temp", "secret/x", "users/alice/y", "other"] {
            d.publish(publish(topic, topic, QoS::AtLeastOnce, 1));
        }
        let got: Vec<String> = c
            .barrier()
            .into_iter()
            .map(|p| match p {
                Packet::Publish(p) => {
                    c.ack(&p);
                    p.topic.to_string()
                }
                other => panic!("expected PUBLISH, got {other:?}"),
            })
            .collect();
        assert_eq!(got, vec!["plant/a/temp", "users/alice/y"], "{v:?}");
        d.disconnect();
        c.disconnect();
    }
}

/// `[acl] anonymous_role` in front of an upstream: sessions without a login get the role's
/// rules. mosquitto cannot be told what not to deliver, so a filter that could match a
/// `deny_subscribe` topic is refused here (0x80, which does not tell why), not only one it
/// covers; a `deny_publish` topic never reaches mosquitto (5.0: PUBACK 0x80).
#[test]
fn anonymous_role_and_deny_rules_in_front_of_an_upstream() {
    let broker = Mosquitto::start();
    let gateway = Gateway::start_with(&[&broker.url()], None, |c| {
        c.auth = kite_tests::anonymous_role(kite_policy::acl::Acl {
            deny_publish: vec!["plant/+/cmd".into()],
            deny_subscribe: vec!["test/nosubscribe".into()],
            ..Default::default()
        });
    });
    let ws = Via::Ws(gateway.ws_url("/mqtt"));
    let mut watcher = TestClient::connected(
        &Via::Tcp(SocketAddr::from(([127, 0, 0, 1], broker.port))),
        V5,
        "watcher",
    );
    watcher.subscribe("#", QoS::AtLeastOnce);
    for v in [V3, V5] {
        let mut c = TestClient::connected(&ws, v, "guest-tab");
        let filters = ["test/nosubscribe", "#", "test/+", "test/other", "open/#"];
        let ack = c.subscribe_all(3, &filters, QoS::AtLeastOnce);
        // 0x80 in both versions: a deny rule does not say the topic is guarded.
        let (no, ok) = (ReasonCode::UnspecifiedError, ReasonCode::GrantedQoS1);
        assert_eq!(ack.reasons, vec![no, no, no, ok, ok], "{v:?}");
        let refused = c.publish(publish("plant/a/cmd", "reboot", QoS::AtLeastOnce, 1));
        let expected = if v.is_v5() { no } else { ReasonCode::Success };
        assert_eq!(refused, expected, "{v:?}");
        c.publish(publish("plant/a/temp", "21", QoS::AtLeastOnce, 2));
        c.disconnect();
    }
    assert_eq!(
        seen(&mut watcher),
        vec![pair("plant/a/temp", "21"), pair("plant/a/temp", "21")]
    );
}

/// A Will whose topic the role may not publish to is refused at CONNECT: 0x87 in 5.0, return
/// code 5 (not authorized) in 3.1.1 [MQTT-3.2.2-6]; an allowed one connects.
#[test]
fn a_will_outside_the_rules_is_refused_at_connect() {
    let s = Setup::start(DeniedPublish::Drop);
    for v in [V3, V5] {
        let with_will = |topic: &str| Connect {
            will: Some(Will {
                topic: topic.into(),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Default::default(),
            }),
            ..alice(v)
        };
        let (mut c, ack) = TestClient::connect(&s.ws(), with_will("secret/will"));
        assert_eq!(ack.reason, ReasonCode::NotAuthorized, "{v:?}");
        assert!(c.try_recv().is_none(), "closed after the refusal");
        let (_c, ack) = TestClient::connect(&s.ws(), with_will("plant/tab/cmd"));
        assert_eq!(ack.reason, ReasonCode::Success, "{v:?}");
    }
}

/// `[acl] v311_denied_publish = "disconnect"`: a refused 3.1.1 PUBLISH closes the session
/// (3.1.1 has no refusal code); 5.0 still gets PUBACK 0x87.
#[test]
fn v311_refusals_can_close_the_session() {
    let s = Setup::start(DeniedPublish::Disconnect);
    let mut watcher = s.watcher();
    let mut c = s.alice(V3);
    c.send(&Packet::Publish(publish(
        "secret/x",
        "no",
        QoS::AtLeastOnce,
        1,
    )));
    assert!(c.try_recv().is_none(), "closed, no PUBACK");
    let mut c = s.alice(V5);
    assert_eq!(
        c.publish(publish("secret/x", "no", QoS::AtLeastOnce, 1)),
        ReasonCode::NotAuthorized
    );
    assert_eq!(seen(&mut watcher), vec![]);
}

/// Topics that are not well-formed never reach the broker, whatever the rules would say of
/// their text: a non-UTF-8 topic [MQTT-1.5.4-1], a topic with U+0000 [MQTT-1.5.4-2], and a
/// topic whose length runs past the packet (overlong). Each closes only that session, with
/// DISCONNECT 0x81 Malformed Packet (MQTT 5) before the close.
#[test]
fn malformed_topics_never_reach_the_broker() {
    let s = Setup::start(DeniedPublish::Drop);
    let mut watcher = s.watcher();
    // Each would be "plant/1/cmd" (allowed) but for one byte; QoS 0 PUBLISH, MQTT 5.
    let well_formed = |topic: &[u8]| {
        let mut body = Vec::new();
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic);
        body.push(0); // no properties
        body.extend_from_slice(b"payload");
        body
    };
    let mut overlong = well_formed(b"plant/1/cmd");
    overlong[1] = 200; // the topic length claims 200 bytes; the packet has 21
    for body in [
        well_formed(b"plant/\xff/cmd"),
        well_formed(b"plant/\x00/cmd"),
        overlong,
    ] {
        let mut alice = s.alice(V5);
        let mut packet = vec![0x30, body.len() as u8];
        packet.extend_from_slice(&body);
        alice.send_raw(&packet);
        match alice.try_recv() {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::MalformedPacket),
            other => panic!("expected DISCONNECT 0x81, got {other:?}"),
        }
        assert!(alice.try_recv().is_none(), "the session is closed");
    }
    // The watcher's own publish arrives, alone: nothing malformed got through before it.
    watcher.send(&Packet::Publish(publish(
        "plant/9/cmd",
        "marker",
        QoS::AtMostOnce,
        0,
    )));
    let seen: Vec<_> = watcher
        .barrier()
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => String::from_utf8_lossy(&p.payload).into_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seen, ["marker"]);
}
