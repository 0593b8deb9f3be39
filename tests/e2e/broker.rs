//! The embedded broker, at the level of the MQTT specifications. Each scenario runs twice: as
//! devices over TCP to the broker's listener, and as browsers over the gateway's WebSocket
//! `/mqtt` (the same broker behind the gateway's checks).

use std::time::Duration;

use bytes::Bytes;
use kite_gateway::config::Config;
use kite_mqtt::codec::{
    Ack, Connect, Disconnect, Properties, Publish, ReasonCode, RetainHandling, Subscription, Will,
};
use kite_mqtt::{Packet, QoS, Version};
use kite_tests::client::{TestClient, Via, connect, publish};
use kite_tests::{Gateway, wait_for};

const V3: Version = Version::V3_1_1;
const V5: Version = Version::V5;

/// Runs `scenario` against a fresh embedded broker over TCP, then over WebSocket.
fn both(adjust: impl Fn(&mut Config), scenario: impl Fn(&Via)) {
    kite_tests::each_way(adjust, |_, via| scenario(via));
}

fn defaults(_: &mut Config) {}

fn payloads(packets: &[Packet]) -> Vec<String> {
    packets
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => String::from_utf8_lossy(&p.payload).into_owned(),
            other => panic!("expected only PUBLISH, got {other:?}"),
        })
        .collect()
}

fn v5_connect(client_id: &str, properties: Properties) -> Connect {
    Connect {
        properties: properties.into(),
        ..connect(V5, client_id)
    }
}

fn with_will(mut c: Connect, topic: &str, payload: &str, properties: Properties) -> Connect {
    c.will = Some(Will {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: properties.into(),
    });
    c
}

/// QoS is the lower of the publication's and the subscription's (§3.8.4); a QoS 2 message
/// sent twice before PUBREL is delivered once [MQTT-4.3.3-10].
#[test]
fn qos_downgrade_and_exactly_once() {
    both(defaults, |via| {
        let mut sub = TestClient::connected(via, V5, "sub");
        sub.subscribe("q/1/#", QoS::AtLeastOnce);
        sub.subscribe("q/2/#", QoS::ExactlyOnce);
        let mut publ = TestClient::connected(via, V5, "pub");
        for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            publ.publish(publish("q/1/x", &format!("m{i}"), qos, 10 + i as u16));
        }
        let got: Vec<(String, QoS)> = (0..3)
            .map(|_| {
                let p = sub.recv_publish();
                sub.ack(&p);
                (String::from_utf8_lossy(&p.payload).into_owned(), p.qos)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("m0".to_owned(), QoS::AtMostOnce),
                ("m1".to_owned(), QoS::AtLeastOnce),
                ("m2".to_owned(), QoS::AtLeastOnce),
            ]
        );

        // The same QoS 2 PUBLISH twice (the second with DUP) before PUBREL.
        let mut p = publish("q/2/x", "once", QoS::ExactlyOnce, 7);
        publ.send(&Packet::Publish(p.clone()));
        assert!(matches!(publ.recv(), Packet::PubRec(a) if a.packet_id == 7));
        p.dup = true;
        assert_eq!(publ.publish(p), ReasonCode::Success);
        let first = sub.recv_publish();
        assert_eq!(first.qos, QoS::ExactlyOnce);
        sub.ack(&first);
        assert_eq!(sub.barrier(), vec![], "a QoS 2 message arrived twice");
    });
}

/// Overlapping subscriptions: one copy at the highest QoS (3.1.1 [MQTT-3.3.5-1], 5.0
/// [MQTT-3.3.4-2]) carrying every matching subscription identifier [MQTT-3.3.4-3/4].
#[test]
fn overlapping_subscriptions_give_one_copy() {
    both(defaults, |via| {
        let mut v3 = TestClient::connected(via, V3, "v3");
        let ack = v3.subscribe_with(
            1,
            vec![
                Subscription::new("o/+", QoS::AtMostOnce),
                Subscription::new("o/#", QoS::ExactlyOnce),
            ],
            Properties::default(),
        );
        assert_eq!(
            ack.reasons,
            vec![ReasonCode::GrantedQoS0, ReasonCode::GrantedQoS2]
        );
        let mut v5 = TestClient::connected(via, V5, "v5");
        v5.subscribe_with(
            1,
            vec![Subscription::new("o/+", QoS::AtLeastOnce)],
            Properties {
                subscription_identifiers: vec![1],
                ..Properties::default()
            },
        );
        v5.subscribe_with(
            2,
            vec![Subscription::new("o/#", QoS::AtMostOnce)],
            Properties {
                subscription_identifiers: vec![2],
                ..Properties::default()
            },
        );
        let mut publ = TestClient::connected(via, V5, "pub");
        publ.publish(publish("o/x", "hi", QoS::ExactlyOnce, 1));

        let p = v3.recv_publish();
        assert_eq!(p.qos, QoS::ExactlyOnce);
        v3.ack(&p);
        assert_eq!(v3.barrier(), vec![], "a second copy to the 3.1.1 client");

        let p = v5.recv_publish();
        assert_eq!(p.qos, QoS::AtLeastOnce);
        let mut ids = p.properties.subscription_identifiers.clone();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2]);
        v5.ack(&p);
        assert_eq!(v5.barrier(), vec![], "a second copy to the 5.0 client");
    });
}

/// Retained messages: kept, replaced, deleted by an empty payload; sent with RETAIN 1 to a new
/// subscription ([MQTT-3.3.1-8] in 3.1.1) and with RETAIN 0 on an established one
/// ([MQTT-3.3.1-9]; 5.0 [MQTT-3.3.1-12]) unless Retain As Published [MQTT-3.3.1-13]; Retain
/// Handling 0/1/2 [MQTT-3.3.1-9/10/11] (5.0).
#[test]
fn retained_messages() {
    both(defaults, |via| {
        let mut publ = TestClient::connected(via, V5, "pub");
        let retained = |topic: &str, payload: &str, id| Publish {
            retain: true,
            ..publish(topic, payload, QoS::AtLeastOnce, id)
        };
        publ.publish(retained("r/a", "one", 1));
        publ.publish(retained("r/a", "two", 2));
        publ.publish(retained("r/b", "bee", 3));

        let mut v3 = TestClient::connected(via, V3, "v3");
        v3.subscribe("r/a", QoS::AtLeastOnce);
        let p = v3.recv_publish();
        assert_eq!((&p.payload[..], p.retain), (&b"two"[..], true));
        v3.ack(&p);
        assert_eq!(v3.barrier(), vec![]);

        let mut rap = TestClient::connected(via, V5, "rap");
        let mut opts = Subscription::new("r/#", QoS::AtLeastOnce);
        opts.retain_as_published = true;
        rap.subscribe_with(1, vec![opts], Properties::default());
        let mut first = payloads(&[Packet::Publish(rap.recv_publish())]);
        first.extend(payloads(&[Packet::Publish(rap.recv_publish())]));
        first.sort();
        assert_eq!(first, vec!["bee", "two"]);
        let _ = rap.barrier();

        // A new retained publication to established subscriptions.
        publ.publish(retained("r/a", "three", 4));
        let p = v3.recv_publish();
        assert!(!p.retain, "3.1.1: RETAIN 0 on an established subscription");
        v3.ack(&p);
        let p = rap.recv_publish();
        assert!(p.retain, "Retain As Published keeps RETAIN 1");
        rap.ack(&p);

        // Deleted by an empty retained payload [MQTT-3.3.1-6]; the empty message itself is
        // delivered to the established subscription.
        publ.publish(retained("r/a", "", 5));
        let p = v3.recv_publish();
        assert!(p.payload.is_empty());
        v3.ack(&p);
        let mut late = TestClient::connected(via, V5, "late");
        late.subscribe("r/a", QoS::AtLeastOnce);
        assert_eq!(
            late.barrier(),
            vec![],
            "a deleted retained message was sent"
        );

        // Retain Handling 1: only for a new subscription; 2: never.
        let mut rh = TestClient::connected(via, V5, "rh");
        let mut once = Subscription::new("r/b", QoS::AtMostOnce);
        once.retain_handling = RetainHandling::SendIfNew;
        rh.subscribe_with(1, vec![once.clone()], Properties::default());
        assert_eq!(payloads(&rh.barrier()), vec!["bee"]);
        rh.subscribe_with(2, vec![once], Properties::default());
        assert_eq!(
            rh.barrier(),
            vec![],
            "Retain Handling 1 on an existing subscription"
        );
        let mut never = Subscription::new("r/#", QoS::AtMostOnce);
        never.retain_handling = RetainHandling::DoNotSend;
        rh.subscribe_with(3, vec![never], Properties::default());
        assert_eq!(rh.barrier(), vec![], "Retain Handling 2");
    });
}

/// The Will is published when the connection ends without DISCONNECT, and with 5.0's
/// DISCONNECT 0x04; not after a normal DISCONNECT [MQTT-3.1.2-8] [MQTT-3.1.2-10].
#[test]
fn will_messages() {
    both(defaults, |via| {
        let mut watcher = TestClient::connected(via, V5, "watcher");
        watcher.subscribe("will/#", QoS::AtLeastOnce);

        let (gone, _) = TestClient::connect(
            via,
            with_will(
                connect(V3, "gone"),
                "will/gone",
                "lost",
                Properties::default(),
            ),
        );
        gone.drop_connection();
        let p = watcher.recv_publish();
        assert_eq!((&*p.topic, &p.payload[..]), ("will/gone", &b"lost"[..]));
        watcher.ack(&p);

        let (polite, _) = TestClient::connect(
            via,
            with_will(
                connect(V5, "polite"),
                "will/polite",
                "x",
                Properties::default(),
            ),
        );
        polite.disconnect();
        assert_eq!(
            watcher.barrier(),
            vec![],
            "Will sent after a normal DISCONNECT"
        );

        let (asks, _) = TestClient::connect(
            via,
            with_will(
                connect(V5, "asks"),
                "will/asks",
                "please",
                Properties::default(),
            ),
        );
        let mut asks = asks;
        asks.send(&Packet::Disconnect(Disconnect::new(
            ReasonCode::DisconnectWithWillMessage,
        )));
        let p = watcher.recv_publish();
        assert_eq!(&p.payload[..], b"please");
        watcher.ack(&p);
    });
}

/// 5.0 Will Delay Interval: not published if the client is back in time [MQTT-3.1.3-9];
/// published once the delay passes.
#[test]
fn will_delay() {
    both(defaults, |via| {
        let mut watcher = TestClient::connected(via, V5, "watcher");
        watcher.subscribe("wd/#", QoS::AtLeastOnce);
        let delayed = |id: &str| {
            let mut c = with_will(
                v5_connect(
                    id,
                    Properties {
                        session_expiry_interval: Some(60),
                        ..Properties::default()
                    },
                ),
                &format!("wd/{id}"),
                id,
                Properties {
                    will_delay_interval: Some(1),
                    ..Properties::default()
                },
            );
            c.clean_start = false;
            c
        };
        // Comes back within the delay: no Will, even after the delay has passed.
        let (c, _) = TestClient::connect(via, delayed("back"));
        c.drop_connection();
        let (back, ack) = TestClient::connect(via, delayed("back"));
        assert!(ack.session_present);
        // Stays away: the Will comes after the delay, not at once.
        let (c, _) = TestClient::connect(via, delayed("away"));
        c.drop_connection();
        assert_eq!(watcher.barrier(), vec![], "Will sent before its delay");
        let p = watcher.recv_publish();
        assert_eq!(&*p.topic, "wd/away");
        watcher.ack(&p);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            watcher.barrier(),
            vec![],
            "Will sent for a client that came back"
        );
        back.disconnect();
    });
}

/// Persistent sessions: subscriptions and QoS 1 messages kept while offline, Session Present
/// [MQTT-3.2.2-2/3], unacknowledged messages resent with DUP and the same packet id
/// [MQTT-4.4.0-1]; clean start ends the old session.
#[test]
fn persistent_sessions() {
    both(defaults, |via| {
        let persistent = |v: Version, clean: bool| Connect {
            clean_start: clean,
            properties: if v.is_v5() {
                Properties {
                    session_expiry_interval: Some(300),
                    ..Properties::default()
                }
                .into()
            } else {
                Default::default()
            },
            ..connect(v, "keeper")
        };
        let (mut c, ack) = TestClient::connect(via, persistent(V3, false));
        assert!(!ack.session_present);
        c.subscribe("ps/#", QoS::AtLeastOnce);
        c.disconnect();

        let mut publ = TestClient::connected(via, V5, "pub");
        for i in 0..3 {
            publ.publish(publish("ps/x", &format!("m{i}"), QoS::AtLeastOnce, i + 1));
        }
        publ.publish(publish("ps/x", "qos0 not kept", QoS::AtMostOnce, 0));
        // The QoS 0 publish has no answer: wait for the broker to have routed it (the
        // PINGRESP comes after it) so it cannot race the reconnect below.
        assert_eq!(publ.barrier(), vec![]);

        let (mut c, ack) = TestClient::connect(via, persistent(V3, false));
        assert!(ack.session_present, "[MQTT-3.2.2-3]");
        let first = c.recv_publish();
        assert_eq!(&first.payload[..], b"m0");
        // Not acknowledged: after a reconnect it comes again, DUP set, same packet id.
        c.drop_connection();
        let (mut c, ack) = TestClient::connect(via, persistent(V3, false));
        assert!(ack.session_present);
        let again = c.recv_publish();
        assert_eq!(
            (&again.payload[..], again.dup, again.packet_id),
            (&b"m0"[..], true, first.packet_id)
        );
        c.ack(&again);
        let mut rest = Vec::new();
        while rest.len() < 2 {
            let p = c.recv_publish();
            c.ack(&p);
            rest.push(String::from_utf8_lossy(&p.payload).into_owned());
        }
        assert_eq!(rest, vec!["m1", "m2"]);
        assert_eq!(c.barrier(), vec![]);
        c.disconnect();

        // Clean start: no session, and the old subscription is gone [MQTT-3.2.2-2].
        let (mut c, ack) = TestClient::connect(via, persistent(V5, true));
        assert!(!ack.session_present);
        publ.publish(publish("ps/x", "after", QoS::AtLeastOnce, 9));
        assert_eq!(c.barrier(), vec![]);
    });
}

/// A second connection with the same client id takes the session over; the first gets
/// DISCONNECT 0x8E and is closed [MQTT-3.1.4-3].
#[test]
fn session_takeover() {
    both(defaults, |via| {
        let mut first = TestClient::connected(via, V5, "twin");
        first.subscribe("tk/#", QoS::AtMostOnce);
        let mut second = TestClient::connected(via, V5, "twin");
        match first.recv() {
            Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::SessionTakenOver),
            other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
        }
        assert!(first.try_recv().is_none(), "the old connection stays open");
        second.subscribe("tk/#", QoS::AtMostOnce);
        let mut publ = TestClient::connected(via, V3, "pub");
        publ.publish(publish("tk/x", "to the new one", QoS::AtLeastOnce, 1));
        assert_eq!(payloads(&second.barrier()), vec!["to the new one"]);
    });
}

/// CONNACK: an assigned client identifier for an empty one (5.0 §3.2.2.3.7), the broker's
/// limits, Server Keep Alive when the client's is above the cap (§3.2.2.3.14); 3.1.1 refuses an
/// empty client id without clean session [MQTT-3.1.3-8].
#[test]
fn connack_properties() {
    both(
        |c| c.broker.config.max_keep_alive = 30,
        |via| {
            let (_c, ack) = TestClient::connect(
                via,
                Connect {
                    keep_alive: 0,
                    ..connect(V5, "")
                },
            );
            assert_eq!(ack.reason, ReasonCode::Success);
            let id = ack.properties.assigned_client_identifier.clone().unwrap();
            assert!(id.starts_with("kite-"), "{id}");
            assert_eq!(ack.properties.server_keep_alive, Some(30));
            assert!(ack.properties.receive_maximum.is_some());
            assert!(ack.properties.maximum_packet_size.is_some());
            assert_eq!(ack.properties.topic_alias_maximum, Some(64));

            // Kite's encoder refuses to write this CONNECT: the bytes by hand.
            let mut c = TestClient::open(via, V3);
            c.send_raw(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60, 0, 0]);
            match c.recv() {
                Packet::ConnAck(a) => assert_eq!(a.reason, ReasonCode::ClientIdentifierNotValid),
                other => panic!("expected CONNACK 2, got {other:?}"),
            }
        },
    );
}

/// Nothing from the client for 1.5 × keep-alive: DISCONNECT 0x8D (5.0), the connection closes
/// [MQTT-3.1.2-22], and the Will is published.
#[test]
fn keep_alive_timeout() {
    both(defaults, |via| {
        let mut watcher = TestClient::connected(via, V5, "watcher");
        watcher.subscribe("ka/#", QoS::AtMostOnce);
        let (mut quiet, _) = TestClient::connect(
            via,
            with_will(
                Connect {
                    keep_alive: 1,
                    ..connect(V5, "quiet")
                },
                "ka/quiet",
                "timed out",
                Properties::default(),
            ),
        );
        match quiet.recv() {
            Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::KeepAliveTimeout),
            other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
        }
        assert!(quiet.try_recv().is_none());
        assert_eq!(&watcher.recv_publish().payload[..], b"timed out");
    });
}

/// The broker never has more unacknowledged QoS 1/2 messages towards a client than its Receive
/// Maximum [MQTT-3.3.4-9]; the rest wait, in order.
#[test]
fn receive_maximum_towards_the_client() {
    both(defaults, |via| {
        let (mut sub, _) = TestClient::connect(
            via,
            v5_connect(
                "slow",
                Properties {
                    receive_maximum: Some(2),
                    ..Properties::default()
                },
            ),
        );
        sub.subscribe("rm/#", QoS::AtLeastOnce);
        let mut publ = TestClient::connected(via, V5, "pub");
        for i in 0..5 {
            publ.publish(publish("rm/x", &format!("m{i}"), QoS::AtLeastOnce, i + 1));
        }
        let window = sub.barrier();
        assert_eq!(payloads(&window), vec!["m0", "m1"]);
        let mut got = payloads(&window);
        for p in window {
            let Packet::Publish(p) = p else {
                unreachable!()
            };
            sub.ack(&p);
        }
        while got.len() < 5 {
            let p = sub.recv_publish();
            sub.ack(&p);
            got.push(String::from_utf8_lossy(&p.payload).into_owned());
        }
        assert_eq!(got, vec!["m0", "m1", "m2", "m3", "m4"]);
    });
}

/// A message larger than the client's Maximum Packet Size is not sent [MQTT-3.1.2-24] and is
/// dropped as if delivered [MQTT-3.1.2-25].
#[test]
fn maximum_packet_size_towards_the_client() {
    both(defaults, |via| {
        let (mut sub, _) = TestClient::connect(
            via,
            v5_connect(
                "small",
                Properties {
                    maximum_packet_size: Some(64),
                    ..Properties::default()
                },
            ),
        );
        sub.subscribe("mp/#", QoS::AtLeastOnce);
        let mut publ = TestClient::connected(via, V5, "pub");
        publ.publish(publish("mp/x", &"x".repeat(200), QoS::AtLeastOnce, 1));
        publ.publish(publish("mp/x", "fits", QoS::AtLeastOnce, 2));
        assert_eq!(payloads(&sub.barrier()), vec!["fits"]);
    });
}

/// Topic aliases both ways (5.0 §3.3.2.3.4): the client's aliases are resolved; one above the
/// broker's Topic Alias Maximum closes the connection with 0x94 [MQTT-3.3.2-9]; the broker uses
/// aliases towards a client that allows them, within its maximum [MQTT-3.3.2-11].
#[test]
fn topic_aliases() {
    both(defaults, |via| {
        let (mut sub, _) = TestClient::connect(
            via,
            v5_connect(
                "aliased",
                Properties {
                    topic_alias_maximum: Some(1),
                    ..Properties::default()
                },
            ),
        );
        sub.subscribe("al/#", QoS::AtMostOnce);
        let mut publ = TestClient::connected(via, V5, "pub");
        // QoS 1, so that each is routed before its PUBACK comes back.
        let aliased = |topic: &str, payload: &str, alias| {
            let mut p = publish(topic, payload, QoS::AtLeastOnce, alias);
            p.properties.topic_alias = Some(alias);
            p
        };
        publ.publish(aliased("al/x", "set", 3));
        publ.publish(aliased("", "used", 3));
        publ.publish(publish("al/y", "other topic", QoS::AtLeastOnce, 9));
        let got = sub.barrier();
        let seen: Vec<(String, Option<u16>, String)> = got
            .iter()
            .map(|p| match p {
                Packet::Publish(p) => (
                    p.topic.to_string(),
                    p.properties.topic_alias,
                    String::from_utf8_lossy(&p.payload).into_owned(),
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("al/x".to_owned(), Some(1), "set".to_owned()),
                (String::new(), Some(1), "used".to_owned()),
                ("al/y".to_owned(), None, "other topic".to_owned()),
            ]
        );

        publ.send(&Packet::Publish(aliased("al/z", "too high", 65)));
        match publ.recv() {
            Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::TopicAliasInvalid),
            other => panic!("expected DISCONNECT 0x94, got {other:?}"),
        }
    });
}

/// Message expiry: a queued message whose interval passed is not delivered [MQTT-3.3.2-5]; one
/// still alive carries the interval minus the time it waited [MQTT-3.3.2-6].
#[test]
fn message_expiry() {
    both(defaults, |via| {
        let persistent = || {
            let mut c = v5_connect(
                "expiring",
                Properties {
                    session_expiry_interval: Some(60),
                    ..Properties::default()
                },
            );
            c.clean_start = false;
            c
        };
        let (mut c, _) = TestClient::connect(via, persistent());
        c.subscribe("ex/#", QoS::AtLeastOnce);
        c.disconnect();
        let mut publ = TestClient::connected(via, V5, "pub");
        let expiring = |payload: &str, secs, id| {
            let mut p = publish("ex/x", payload, QoS::AtLeastOnce, id);
            p.properties.message_expiry_interval = Some(secs);
            p
        };
        publ.publish(expiring("short", 1, 1));
        publ.publish(expiring("long", 100, 2));
        std::thread::sleep(Duration::from_millis(2100));
        let (mut c, _) = TestClient::connect(via, persistent());
        let p = c.recv_publish();
        assert_eq!(&p.payload[..], b"long");
        let left = p.properties.message_expiry_interval.unwrap();
        assert!(left <= 98, "expiry not reduced by the time waited: {left}");
        c.ack(&p);
        assert_eq!(c.barrier(), vec![]);
    });
}

/// No Local [MQTT-3.8.3-3], and shared subscriptions: each message to one member of the group,
/// in turn (§4.8.2).
#[test]
fn no_local_and_shared_subscriptions() {
    both(defaults, |via| {
        let mut me = TestClient::connected(via, V5, "me");
        let mut opts = Subscription::new("nl/#", QoS::AtMostOnce);
        opts.no_local = true;
        me.subscribe_with(1, vec![opts], Properties::default());
        me.publish(publish("nl/x", "mine", QoS::AtLeastOnce, 1));
        let mut other = TestClient::connected(via, V5, "other");
        other.publish(publish("nl/x", "theirs", QoS::AtLeastOnce, 1));
        assert_eq!(payloads(&me.barrier()), vec!["theirs"]);

        let mut a = TestClient::connected(via, V5, "a");
        let mut b = TestClient::connected(via, V3, "b");
        a.subscribe("$share/g/sh/#", QoS::AtMostOnce);
        b.subscribe("$share/g/sh/#", QoS::AtMostOnce);
        for i in 0..6 {
            other.publish(publish("sh/x", &format!("m{i}"), QoS::AtLeastOnce, i + 2));
        }
        let (ga, gb) = (payloads(&a.barrier()), payloads(&b.barrier()));
        assert_eq!((ga.len(), gb.len()), (3, 3), "a: {ga:?}, b: {gb:?}");
        let mut all: Vec<String> = ga.into_iter().chain(gb).collect();
        all.sort();
        assert_eq!(all, vec!["m0", "m1", "m2", "m3", "m4", "m5"]);
    });
}

/// Topics starting with `$` are not matched by wildcards at the first level [MQTT-4.7.2-1];
/// the broker publishes its statistics under `$SYS/broker/`.
#[test]
fn dollar_topics_and_sys() {
    both(
        |c| c.broker.config.sys_interval = Some(Duration::from_millis(200)),
        |via| {
            let mut all = TestClient::connected(via, V5, "all");
            all.subscribe("#", QoS::AtMostOnce);
            all.subscribe("+/broker/#", QoS::AtMostOnce);
            let mut publ = TestClient::connected(via, V5, "pub");
            publ.publish(publish("$app/x", "hidden", QoS::AtLeastOnce, 1));
            publ.publish(publish("plain", "seen", QoS::AtLeastOnce, 2));
            let got = all.barrier();
            assert!(
                got.iter()
                    .all(|p| matches!(p, Packet::Publish(p) if !p.topic.starts_with('$'))),
                "{got:?}"
            );
            assert!(payloads(&got).contains(&"seen".to_owned()));

            let mut sys = TestClient::connected(via, V5, "sys");
            sys.subscribe("$SYS/broker/clients/connected", QoS::AtMostOnce);
            let p = sys.recv_publish();
            assert!(p.retain, "a new subscription gets the retained statistic");
            // Published every 200 ms: soon it counts these three clients.
            wait_for("$SYS to count the clients", Duration::from_secs(10), || {
                let p = sys.recv_publish();
                let n: u64 = String::from_utf8_lossy(&p.payload).parse().unwrap();
                (n >= 3).then_some(())
            });
        },
    );
}

/// Connects with `persistent`, subscribes to `<prefix>/#` at QoS 1 and disconnects; then `n`
/// QoS 1 messages `m0`, `m1`... are published to `<prefix>/x` for the offline session. The
/// publisher, still connected.
fn queue_offline(via: &Via, persistent: Connect, prefix: &str, n: u16) -> TestClient {
    let (mut c, _) = TestClient::connect(via, persistent);
    c.subscribe(&format!("{prefix}/#"), QoS::AtLeastOnce);
    c.disconnect();
    let mut publ = TestClient::connected(via, V5, "pub");
    let topic = format!("{prefix}/x");
    for i in 0..n {
        publ.publish(publish(&topic, &format!("m{i}"), QoS::AtLeastOnce, i + 1));
    }
    publ
}

/// A session's queue is bounded: beyond `max_queued_messages`, new deliveries are dropped and
/// counted; the oldest are kept, in order.
#[test]
fn offline_queue_is_bounded() {
    both(
        |c| c.broker.config.max_queued_messages = 3,
        |via| {
            let persistent = || Connect {
                clean_start: false,
                ..connect(V3, "offline")
            };
            queue_offline(via, persistent(), "oq", 5);
            let (mut c, _) = TestClient::connect(via, persistent());
            let mut got = Vec::new();
            for p in c.barrier() {
                let Packet::Publish(p) = p else { panic!() };
                c.ack(&p);
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            assert_eq!(got, vec!["m0", "m1", "m2"]);
        },
    );
}

/// Acknowledges `first` and the next PUBLISHes up to `n` in all, then checks that nothing
/// more comes; their payloads, in order. Two barriers: a PUBACK read together with the first
/// PINGREQ frees the window only after that PINGRESP is written; the second comes after the
/// broker refilled the window.
fn acknowledge(c: &mut TestClient, first: Publish, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let mut p = first;
    loop {
        c.ack(&p);
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
        if got.len() == n {
            break;
        }
        p = c.recv_publish();
    }
    let more: Vec<Packet> = [c.barrier(), c.barrier()].concat();
    assert!(more.is_empty(), "nothing after {got:?}, got {more:?}");
    got
}

/// A connected session's queue beyond what is in flight is bounded too
/// (`max_queued_messages_online`): a client whose Receive Maximum [MQTT-3.3.4-9] holds the
/// rest back gets the oldest, in order; newer deliveries are dropped and counted.
#[test]
fn online_queue_is_bounded() {
    both(
        |c| c.broker.config.max_queued_messages_online = 3,
        |via| {
            let one_at_a_time = Properties {
                receive_maximum: Some(1),
                ..Properties::default()
            };
            let (mut sub, _) = TestClient::connect(via, v5_connect("behind", one_at_a_time));
            sub.subscribe("bq/#", QoS::AtLeastOnce);
            let mut publ = TestClient::connected(via, V5, "pub");
            publ.publish(publish("bq/x", "m0", QoS::AtLeastOnce, 1));
            let first = sub.recv_publish(); // in flight, not acknowledged
            for i in 1..6 {
                publ.publish(publish("bq/x", &format!("m{i}"), QoS::AtLeastOnce, i + 1));
            }
            // m4 and m5 are dropped.
            assert_eq!(
                acknowledge(&mut sub, first, 4),
                vec!["m0", "m1", "m2", "m3"]
            );
        },
    );
}

/// What a persistent session queued while offline is delivered whole on reconnect, and does
/// not count towards the online bound: live messages are queued beside it up to that bound.
#[test]
fn offline_backlog_does_not_count_towards_the_online_bound() {
    both(
        |c| {
            c.broker.config.max_queued_messages = 10;
            c.broker.config.max_queued_messages_online = 2;
        },
        |via| {
            let persistent = || Connect {
                clean_start: false,
                properties: Properties {
                    receive_maximum: Some(1),
                    session_expiry_interval: Some(600),
                    ..Properties::default()
                }
                .into(),
                ..connect(V5, "backlog")
            };
            let mut publ = queue_offline(via, persistent(), "bl", 5);
            let (mut c, ack) = TestClient::connect(via, persistent());
            assert!(ack.session_present);
            let first = c.recv_publish(); // m0 in flight; m1..m4 queued from before
            for i in 0..3 {
                publ.publish(publish("bl/x", &format!("l{i}"), QoS::AtLeastOnce, i + 10));
            }
            // l2 is dropped.
            let got = acknowledge(&mut c, first, 7);
            assert_eq!(got, vec!["m0", "m1", "m2", "m3", "m4", "l0", "l1"]);
        },
    );
}

/// A new subscription gets the retained message of every matching topic (3.1.1
/// [MQTT-3.3.1-6], 5.0 [MQTT-3.3.1-9]), however many there are: they are what the client asked
/// for, not traffic it fell behind on, so they do not count towards the online bound — and
/// live messages are queued behind them up to that bound. (mosquitto's `max_queued_messages`
/// cuts them off: a `#` subscription there gets about 1,000 retained messages.)
#[test]
fn retained_messages_on_subscribe_do_not_count_towards_the_online_bound() {
    both(
        |c| c.broker.config.max_queued_messages_online = 3,
        |via| {
            let mut publ = TestClient::connected(via, V5, "pub");
            for i in 0..8 {
                publ.publish(Publish {
                    retain: true,
                    ..publish(
                        &format!("rs/{i}"),
                        &format!("r{i}"),
                        QoS::AtLeastOnce,
                        i + 1,
                    )
                });
            }
            let one_at_a_time = Properties {
                receive_maximum: Some(1),
                ..Properties::default()
            };
            let (mut sub, _) = TestClient::connect(via, v5_connect("explorer", one_at_a_time));
            sub.subscribe("rs/#", QoS::AtLeastOnce);
            let first = sub.recv_publish(); // one retained message in flight, 7 queued
            for i in 0..4 {
                publ.publish(publish(
                    "rs/live",
                    &format!("l{i}"),
                    QoS::AtLeastOnce,
                    i + 20,
                ));
            }
            // l3 is dropped: three live messages wait beside the retained ones.
            let got = acknowledge(&mut sub, first, 11);
            let mut snapshot = got[..8].to_vec();
            snapshot.sort();
            assert_eq!(
                snapshot,
                (0..8).map(|i| format!("r{i}")).collect::<Vec<_>>()
            );
            assert_eq!(got[8..], ["l0", "l1", "l2"]);
        },
    );
}

/// The first packet must be CONNECT [MQTT-3.1.0-1]; an unsupported protocol level gets CONNACK
/// return code 1 [MQTT-3.1.2-2]; a malformed 5.0 CONNECT gets 0x81 with a reason string; a
/// second CONNECT is a protocol error [MQTT-3.1.0-2].
#[test]
fn bad_connects() {
    both(defaults, |via| {
        let mut c = TestClient::open(via, V5);
        c.send(&Packet::PingReq);
        assert!(c.try_recv().is_none());

        // Protocol level 6.
        let mut c = TestClient::open(via, V3);
        c.send_raw(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 60, 0, 0]);
        match c.try_recv() {
            Some(Packet::ConnAck(a)) => {
                assert_eq!(a.reason, ReasonCode::UnsupportedProtocolVersion)
            }
            None => {} // the gateway refuses it before the broker (close frame only)
            other => panic!("expected CONNACK 1, got {other:?}"),
        }

        let mut good = TestClient::connected(via, V5, "twice");
        good.send(&Packet::Connect(Box::new(connect(V5, "twice"))));
        match good.try_recv() {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::ProtocolError),
            None => {} // the gateway closes it first
            other => panic!("expected DISCONNECT 0x82, got {other:?}"),
        }
    });
}

/// The reserved CONNECT flag set in a 5.0 CONNECT: CONNACK 0x81 Malformed Packet with the rule
/// broken as the reason string (TCP: the gateway checks WebSocket clients itself).
#[test]
fn malformed_v5_connect_gets_a_reason() {
    let gw = Gateway::start(&[], None);
    let via = Via::Tcp(gw.mqtt_addr.unwrap());
    let mut c = TestClient::open(&via, V5);
    c.send_raw(&[
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x03, 0, 60, 0, 0, 1, b'x',
    ]);
    match c.recv() {
        Packet::ConnAck(a) => {
            assert_eq!(a.reason, ReasonCode::MalformedPacket);
            let why = a.properties.reason_string.clone().unwrap();
            assert!(why.contains("reserved"), "{why}");
        }
        other => panic!("expected CONNACK 0x81, got {other:?}"),
    }
}

/// Devices log in with the same users as browsers; without credentials or with a wrong
/// password they are refused (5.0 0x87 / 0x86, 3.1.1 return codes 5 / 4).
#[test]
fn device_authentication() {
    let hash = kite_policy::auth::hash_password(b"s3cret").unwrap();
    let gw = Gateway::start_with(&[], None, |c| {
        c.auth = kite_policy::auth::Auth::new(
            vec![kite_policy::auth::User {
                name: "dev".into(),
                password_hash: hash.clone(),
                role: None,
            }],
            vec![],
        )
        .unwrap();
    });
    for via in [Via::Tcp(gw.mqtt_addr.unwrap()), Via::Ws(gw.ws_url("/mqtt"))] {
        for (v, user, password, expected) in [
            (V5, None, None, ReasonCode::NotAuthorized),
            (
                V5,
                Some("dev"),
                Some("wrong"),
                ReasonCode::BadUserNameOrPassword,
            ),
            (
                V3,
                Some("dev"),
                Some("wrong"),
                ReasonCode::BadUserNameOrPassword,
            ),
            (V3, Some("dev"), Some("s3cret"), ReasonCode::Success),
            (V5, Some("dev"), Some("s3cret"), ReasonCode::Success),
        ] {
            let (_c, ack) = TestClient::connect(
                &via,
                Connect {
                    username: user.map(Into::into),
                    password: password.map(|p| Bytes::copy_from_slice(p.as_bytes())),
                    ..connect(v, "auth")
                },
            );
            assert_eq!(ack.reason, expected, "{via:?} {v:?} {user:?} {password:?}");
        }
    }
}

/// A device publishing over TCP with mosquitto_pub reaches a browser-side client on the
/// gateway's WebSocket, and mosquitto_sub (TCP) hears a WebSocket client's publication.
#[test]
fn devices_and_browsers_meet() {
    let gw = Gateway::start(&[], None);
    let mqtt = gw.mqtt_addr.unwrap();
    let mut browser = TestClient::connected(&Via::Ws(gw.ws_url("/mqtt")), V5, "browser");
    browser.subscribe("plant/#", QoS::AtLeastOnce);
    let status = kite_tests::mosquitto_client("mosquitto_pub", mqtt.port())
        .args([
            "-t",
            "plant/temp",
            "-m",
            "21.5",
            "-q",
            "1",
            "-V",
            "mqttv311",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let p = browser.recv_publish();
    assert_eq!((&*p.topic, &p.payload[..]), ("plant/temp", &b"21.5"[..]));
    browser.ack(&p);

    let child = kite_tests::mosquitto_client("mosquitto_sub", mqtt.port())
        .args([
            "-t", "cmd/#", "-C", "1", "-q", "1", "-V", "mqttv5", "-W", "10",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // mosquitto_sub is subscribed once the broker counts its subscription.
    let broker = gw.state().broker().unwrap();
    wait_for(
        "mosquitto_sub to subscribe",
        Duration::from_secs(10),
        || (broker.subscription_count() >= 2).then_some(()),
    );
    browser.publish(publish("cmd/valve", "open", QoS::AtLeastOnce, 1));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "open");
}

/// Retained messages, persistent sessions (subscriptions with their identifiers, queued QoS 1
/// and 2 messages in order) and received QoS 2 packet ids survive a restart of the broker; a
/// QoS 2 message resent after the restart is still delivered once [MQTT-4.3.3-10].
#[test]
fn persistence_across_restart() {
    let dir = kite_tests::TempDir::new("broker-data");
    let data = dir.path().to_owned();
    let start = || {
        let data = data.clone();
        Gateway::start_with(&[], None, move |c| c.broker.data_dir = Some(data))
    };
    let persistent = |id: &str, clean: bool| Connect {
        clean_start: clean,
        ..v5_connect(
            id,
            Properties {
                session_expiry_interval: Some(3600),
                ..Properties::default()
            },
        )
    };
    let gw = start();
    let via = Via::Tcp(gw.mqtt_addr.unwrap());
    let (mut sub, _) = TestClient::connect(&via, persistent("keeper", true));
    sub.subscribe_with(
        1,
        vec![
            Subscription::new("pr/#", QoS::AtLeastOnce),
            Subscription::new("q2/#", QoS::ExactlyOnce),
        ],
        Properties {
            subscription_identifiers: vec![5],
            ..Properties::default()
        },
    );
    sub.disconnect();
    let (mut publ, _) = TestClient::connect(&via, persistent("publisher", true));
    publ.publish(Publish {
        retain: true,
        ..publish("pr/ret", "kept", QoS::AtLeastOnce, 1)
    });
    for i in 0..3 {
        publ.publish(publish("pr/a", &format!("m{i}"), QoS::AtLeastOnce, i + 2));
    }
    publ.publish(publish("q2/x", "two", QoS::ExactlyOnce, 9));
    // A QoS 2 message received (PUBREC sent), PUBREL not yet sent when the broker stops.
    publ.send(&Packet::Publish(publish(
        "q2/x",
        "once",
        QoS::ExactlyOnce,
        42,
    )));
    assert!(matches!(publ.recv(), Packet::PubRec(a) if a.packet_id == 42));
    publ.drop_connection();
    drop(gw);

    let gw = start();
    let via = Via::Tcp(gw.mqtt_addr.unwrap());
    let (mut publ, ack) = TestClient::connect(&via, persistent("publisher", false));
    assert!(ack.session_present, "the publisher's session is gone");
    let mut again = publish("q2/x", "once", QoS::ExactlyOnce, 42);
    again.dup = true;
    publ.publish(again);

    let (mut sub, ack) = TestClient::connect(&via, persistent("keeper", false));
    assert!(ack.session_present, "the subscriber's session is gone");
    let mut got = Vec::new();
    while got.len() < 6 {
        let p = sub.recv_publish();
        assert_eq!(p.properties.subscription_identifiers, vec![5]);
        sub.ack(&p);
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    assert_eq!(got, vec!["kept", "m0", "m1", "m2", "two", "once"]);
    assert_eq!(sub.barrier(), vec![], "a message came twice");
    // The subscription itself survived.
    publ.publish(publish("pr/a", "live", QoS::AtLeastOnce, 50));
    assert_eq!(payloads(&sub.barrier()), vec!["live"]);

    let mut late = TestClient::connected(&via, V5, "late");
    late.subscribe("pr/ret", QoS::AtMostOnce);
    assert_eq!(payloads(&late.barrier()), vec!["kept"]);
}

/// Topic rules per role, for devices and browsers alike: a denied SUBSCRIBE gets 0x87 (3.1.1:
/// 0x80), a denied PUBLISH gets PUBACK 0x87 in 5.0 and is dropped in 3.1.1, a Will topic
/// outside the rules refuses the connection; `%u` stands for the user name.
#[test]
fn topic_permissions() {
    let hash = kite_policy::auth::hash_password(b"pw").unwrap();
    let user = |name: &str| kite_policy::auth::User {
        name: name.into(),
        password_hash: hash.clone(),
        role: Some("operator".into()),
    };
    let role = kite_policy::auth::Role {
        name: "operator".into(),
        acl: kite_policy::acl::Acl {
            publish: Some(vec!["plant/+/cmd".into(), "users/%u/#".into()]),
            subscribe: Some(vec!["plant/#".into(), "users/%u/#".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let adjust = |c: &mut Config| {
        c.auth = kite_policy::auth::Auth::new(vec![user("alice"), user("bob")], vec![role.clone()])
            .unwrap();
    };
    let login = |v: Version, name: &str| Connect {
        username: Some(name.into()),
        password: Some(Bytes::from_static(b"pw")),
        ..connect(v, name)
    };
    both(adjust, |via| {
        let (mut alice, ack) = TestClient::connect(via, login(V5, "alice"));
        assert_eq!(ack.reason, ReasonCode::Success);
        let ack = alice.subscribe_with(
            1,
            vec![
                Subscription::new("#", QoS::AtLeastOnce),
                Subscription::new("plant/+/temp", QoS::AtLeastOnce),
                Subscription::new("users/alice/#", QoS::AtLeastOnce),
                Subscription::new("users/bob/#", QoS::AtLeastOnce),
                Subscription::new("plant/+/cmd", QoS::AtLeastOnce),
            ],
            Properties::default(),
        );
        assert_eq!(
            ack.reasons,
            vec![
                ReasonCode::NotAuthorized,
                ReasonCode::GrantedQoS1,
                ReasonCode::GrantedQoS1,
                ReasonCode::NotAuthorized,
                ReasonCode::GrantedQoS1,
            ]
        );
        assert_eq!(
            alice.publish(publish("plant/a/temp", "spoofed", QoS::AtLeastOnce, 1)),
            ReasonCode::NotAuthorized
        );
        assert_eq!(
            alice.publish(publish("plant/a/cmd", "open", QoS::AtLeastOnce, 2)),
            ReasonCode::Success
        );
        let p = alice.recv_publish();
        assert_eq!(&p.payload[..], b"open");
        alice.ack(&p);

        // 3.1.1: acknowledged, not delivered; SUBACK 0x80.
        let (mut bob, ack) = TestClient::connect(via, login(V3, "bob"));
        assert_eq!(ack.reason, ReasonCode::Success);
        let ack = bob.subscribe_with(
            1,
            vec![Subscription::new("users/alice/#", QoS::AtMostOnce)],
            Properties::default(),
        );
        assert_eq!(ack.reasons, vec![ReasonCode::UnspecifiedError]);
        bob.publish(publish("plant/b/temp", "spoofed", QoS::AtLeastOnce, 1));
        bob.publish(publish("users/bob/x", "own topic", QoS::AtLeastOnce, 2));
        assert_eq!(
            alice.barrier(),
            vec![],
            "a denied publication was delivered"
        );

        // A Will outside the rules: no connection.
        let (_c, ack) = TestClient::connect(
            via,
            with_will(login(V5, "bob"), "plant/b/temp", "x", Properties::default()),
        );
        assert_eq!(ack.reason, ReasonCode::NotAuthorized);
    });
}

/// `[acl] anonymous_role`: clients without a login get that role's rules, and no user name
/// (`%u` matches nobody, whatever the CONNECT claims: 0x87 outside the `publish` list).
/// `deny_subscribe`: a filter it covers is refused with 0x80 (§3.9.3: the reason is not told),
/// and one that only overlaps it is granted without the denied topics, retained or live.
/// `deny_publish` refuses where `publish` allows (PUBACK 0x80).
#[test]
fn anonymous_role_and_deny_rules() {
    let acl = kite_policy::acl::Acl {
        publish: Some(vec![
            "open/#".into(),
            "private/#".into(),
            "test/#".into(),
            "plant/#".into(),
            "users/%u/#".into(),
        ]),
        subscribe: None,
        deny_publish: vec!["plant/+/cmd".into()],
        deny_subscribe: vec!["test/nosubscribe".into(), "private/#".into()],
    };
    let adjust = |c: &mut Config| c.auth = kite_tests::anonymous_role(acl.clone());
    both(adjust, |via| {
        let mut publ = TestClient::connected(via, V5, "pub");
        for (topic, payload, id) in [("private/x", "secret", 1), ("open/x", "hello", 2)] {
            let mut p = publish(topic, payload, QoS::AtLeastOnce, id);
            p.retain = true;
            assert_eq!(publ.publish(p), ReasonCode::NoMatchingSubscribers);
        }
        let mut sub = TestClient::connected(via, V5, "sub");
        let ack = sub.subscribe_with(
            1,
            vec![
                Subscription::new("test/nosubscribe", QoS::ExactlyOnce),
                Subscription::new("private/+", QoS::AtLeastOnce),
                Subscription::new("#", QoS::AtMostOnce),
            ],
            Properties::default(),
        );
        // A deny rule's refusal does not say the topic is guarded: 0x80, not 0x87.
        assert_eq!(
            ack.reasons,
            vec![
                ReasonCode::UnspecifiedError,
                ReasonCode::UnspecifiedError,
                ReasonCode::GrantedQoS0
            ]
        );
        // Through `#`: the retained message on the open topic only, then the live one.
        assert_eq!(payloads(&sub.barrier()), vec!["hello"]);
        publ.publish(publish("private/y", "secret 2", QoS::AtLeastOnce, 3));
        publ.publish(publish("test/nosubscribe", "hidden", QoS::AtLeastOnce, 4));
        publ.publish(publish("open/y", "visible", QoS::AtLeastOnce, 5));
        assert_eq!(payloads(&sub.barrier()), vec!["visible"]);

        assert_eq!(
            publ.publish(publish("plant/a/cmd", "reboot", QoS::AtLeastOnce, 6)),
            ReasonCode::UnspecifiedError
        );
        assert_eq!(
            publ.publish(publish("plant/a/temp", "21", QoS::AtLeastOnce, 7)),
            ReasonCode::Success
        );
        // A user name without a login is not a user: `users/%u/#` is nobody's.
        let (mut claimed, ack) = TestClient::connect(
            via,
            Connect {
                username: Some("mallory".into()),
                ..connect(V5, "claimed")
            },
        );
        assert_eq!(ack.reason, ReasonCode::Success);
        assert_eq!(
            claimed.publish(publish("users/mallory/x", "x", QoS::AtLeastOnce, 1)),
            ReasonCode::NotAuthorized
        );

        let mut old = TestClient::connected(via, V3, "old");
        let ack = old.subscribe_with(
            1,
            vec![Subscription::new("test/nosubscribe", QoS::ExactlyOnce)],
            Properties::default(),
        );
        assert_eq!(ack.reasons, vec![ReasonCode::UnspecifiedError]);
    });
}

/// Server Keep Alive by default (§3.2.2.3.14): an MQTT 5 client asking for more than 60 s, or
/// for none, is told 60 and held to it [MQTT-3.2.2-21]; one asking for less keeps its own. An
/// MQTT 3.1.1 client cannot be told, so a cap never cuts it off between its pings.
#[test]
fn server_keep_alive() {
    both(defaults, |via| {
        for (asked, told) in [(120, Some(60)), (0, Some(60)), (30, None), (60, None)] {
            let (_c, ack) = TestClient::connect(
                via,
                Connect {
                    keep_alive: asked,
                    ..connect(V5, "ka")
                },
            );
            assert_eq!(
                ack.properties.server_keep_alive, told,
                "asked for {asked} s"
            );
        }
    });
    both(
        |c| c.broker.config.max_keep_alive = 1,
        |via| {
            let (mut v5, ack) = TestClient::connect(
                via,
                Connect {
                    keep_alive: 0,
                    ..connect(V5, "told")
                },
            );
            assert_eq!(ack.properties.server_keep_alive, Some(1));
            let (mut v3, _) = TestClient::connect(
                via,
                Connect {
                    keep_alive: 0,
                    ..connect(V3, "untold")
                },
            );
            std::thread::sleep(Duration::from_millis(2500));
            // 1.5 × 1 s of silence: the 5.0 client is gone [MQTT-3.1.2-22] ...
            match v5.try_recv() {
                Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::KeepAliveTimeout),
                other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
            }
            // ... the 3.1.1 one, which asked for no keep-alive, is not.
            assert_eq!(v3.barrier(), vec![]);
        },
    );
}

/// `[acl] v311_denied_publish = "disconnect"`: a 3.1.1 PUBLISH outside the rules closes the
/// session instead of being acknowledged and dropped; 5.0 still gets PUBACK 0x87.
#[test]
fn v311_refusals_can_close_the_session() {
    let role = kite_policy::auth::Role {
        name: "operator".into(),
        acl: kite_policy::acl::Acl {
            publish: Some(vec!["plant/+/cmd".into()]),
            subscribe: None,
            ..Default::default()
        },
        ..Default::default()
    };
    let user = kite_policy::auth::User {
        name: "alice".into(),
        password_hash: kite_policy::auth::hash_password(b"pw").unwrap(),
        role: Some("operator".into()),
    };
    let adjust = |c: &mut Config| {
        c.auth = kite_policy::auth::Auth::new(vec![user.clone()], vec![role.clone()]).unwrap();
        c.v311_denied_publish = kite_policy::DeniedPublish::Disconnect;
    };
    let login = |v: Version| Connect {
        username: Some("alice".into()),
        password: Some(Bytes::from_static(b"pw")),
        ..connect(v, "alice")
    };
    both(adjust, |via| {
        let (mut watcher, _) = TestClient::connect(via, login(V5));
        watcher.subscribe("#", QoS::AtLeastOnce);
        let (mut v3, ack) = TestClient::connect(
            via,
            Connect {
                client_id: "v3".into(),
                ..login(V3)
            },
        );
        assert_eq!(ack.reason, ReasonCode::Success);
        v3.send(&Packet::Publish(publish(
            "secret/x",
            "no",
            QoS::AtLeastOnce,
            1,
        )));
        assert!(v3.try_recv().is_none(), "closed, no PUBACK");
        let (mut v5, _) = TestClient::connect(
            via,
            Connect {
                client_id: "v5".into(),
                ..login(V5)
            },
        );
        assert_eq!(
            v5.publish(publish("secret/x", "no", QoS::AtLeastOnce, 1)),
            ReasonCode::NotAuthorized
        );
        assert_eq!(watcher.barrier(), vec![]);
    });
}

/// A topic explorer's `#` subscription gets every retained message with the default bounds:
/// mosquitto_sub (a real device-side client) subscribes to 5,000 retained topics and prints
/// all 5,000 (3.1.1 [MQTT-3.3.1-6]). mosquitto 2.0 sends about 1,000 here
/// (`max_queued_messages`, its issue #2196).
#[test]
fn a_wildcard_subscription_gets_every_retained_message() {
    const N: usize = 5_000;
    let gw = Gateway::start(&[], None);
    let mqtt = gw.mqtt_addr.unwrap();
    let mut publ = TestClient::connected(&Via::Tcp(mqtt), V3, "fleet");
    let batch: Vec<Packet> = (0..N)
        .map(|i| {
            Packet::Publish(Publish {
                retain: true,
                ..publish(
                    &format!("fleet/{i}/state"),
                    &format!("s{i}"),
                    QoS::AtMostOnce,
                    0,
                )
            })
        })
        .collect();
    let broker = gw.state().broker().unwrap();
    let sys = broker.retained_count(); // the broker's own `$SYS/...`
    publ.send_all(&batch);
    wait_for("the retained messages", Duration::from_secs(20), || {
        (broker.retained_count() >= sys + N).then_some(())
    });
    let n = N.to_string();
    let out = kite_tests::mosquitto_client("mosquitto_sub", mqtt.port())
        .args(["-t", "fleet/#", "-C", &n, "-q", "1", "-W", "20"])
        .output()
        .unwrap();
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        out.status.success(),
        "mosquitto_sub: {}, {} of {N} messages",
        out.status,
        got.len()
    );
    got.sort();
    let mut want: Vec<String> = (0..N).map(|i| format!("s{i}")).collect();
    want.sort();
    assert_eq!(got, want);
}

/// Devices over TLS (`[broker] tls_listen`, the gateway's certificate): mosquitto's clients
/// publish and subscribe through it, and reach browser-side subscribers.
#[test]
fn devices_over_tls() {
    let dir = kite_tests::TempDir::new("broker-tls");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let files = kite_gateway::tls::TlsFiles {
        cert: dir.path().join("broker.crt"),
        key: dir.path().join("broker.key"),
    };
    std::fs::write(&files.cert, ck.cert.pem()).unwrap();
    std::fs::write(&files.key, ck.signing_key.serialize_pem()).unwrap();
    let gw = Gateway::start_with(&[], None, |c| {
        c.tls = Some(files.clone());
        c.broker.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let port = gw.mqtts_addr.unwrap().port();
    let tls_args = |cmd: &mut std::process::Command| {
        // The certificate names localhost; the connection goes to 127.0.0.1.
        cmd.arg("--cafile").arg(&files.cert).arg("--insecure");
    };
    let mut sub = kite_tests::mosquitto_client("mosquitto_sub", port);
    tls_args(&mut sub);
    let child = sub
        .args(["-t", "secure/#", "-C", "1", "-q", "1", "-W", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let broker = gw.state().broker().unwrap();
    wait_for(
        "mosquitto_sub over TLS to subscribe",
        Duration::from_secs(10),
        || (broker.subscription_count() >= 1).then_some(()),
    );
    let mut publ = kite_tests::mosquitto_client("mosquitto_pub", port);
    tls_args(&mut publ);
    let status = publ
        .args(["-t", "secure/door", "-m", "locked", "-q", "1"])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "mosquitto_sub over TLS failed");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "locked");

    // Plain MQTT to the TLS port gets no CONNACK (at most a TLS alert), then the close.
    use std::io::{Read, Write};
    let mut plain = std::net::TcpStream::connect(gw.mqtts_addr.unwrap()).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(&kite_tests::mqtt::connect_v311("plain"))
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert_ne!(answer.first(), Some(&0x20), "a CONNACK without TLS");
}

/// MQTT 5 properties pass through to subscribers unchanged: payload format indicator, content
/// type, response topic and correlation data (request/response, §4.10), user properties in
/// order [MQTT-3.3.2-17/18]; a 3.1.1 subscriber gets the same message without them.
#[test]
fn v5_properties_pass_through() {
    both(defaults, |via| {
        let mut v5 = TestClient::connected(via, V5, "responder");
        v5.subscribe("rr/request", QoS::AtLeastOnce);
        let mut v3 = TestClient::connected(via, V3, "old");
        v3.subscribe("rr/request", QoS::AtLeastOnce);
        let mut requester = TestClient::connected(via, V5, "requester");
        let mut p = publish("rr/request", "{\"on\":true}", QoS::AtLeastOnce, 1);
        p.properties = Properties {
            payload_format_indicator: Some(true),
            content_type: Some("application/json".into()),
            response_topic: Some("rr/response/requester".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
            user_properties: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
            ..Properties::default()
        }
        .into();
        requester.publish(p);
        let got = v5.recv_publish();
        v5.ack(&got);
        let props = &got.properties;
        assert_eq!(props.payload_format_indicator, Some(true));
        assert_eq!(props.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            props.response_topic.as_deref(),
            Some("rr/response/requester")
        );
        assert_eq!(
            props.correlation_data.as_deref(),
            Some(&b"\x00\x01corr"[..])
        );
        let users: Vec<(String, String)> = props
            .user_properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            users,
            vec![("b".into(), "2".into()), ("a".into(), "1".into())]
        );
        let old = v3.recv_publish();
        assert_eq!(&old.payload[..], b"{\"on\":true}");
        v3.ack(&old);
    });
}

/// The broker's own limits towards a client: a PUBLISH over the Maximum Packet Size it
/// announced closes with 0x95, more QoS 2 messages awaiting PUBREL than its Receive Maximum
/// with 0x93 [MQTT-3.3.4-7] (TCP: the gateway checks WebSocket sizes itself).
#[test]
fn client_over_the_brokers_limits() {
    let gw = Gateway::start_with(&[], None, |c| {
        c.broker.config.max_packet_size = 1024;
        c.broker.config.receive_maximum = 2;
    });
    let via = Via::Tcp(gw.mqtt_addr.unwrap());
    let (mut big, ack) = TestClient::connect(&via, connect(V5, "big"));
    assert_eq!(ack.properties.maximum_packet_size, Some(1024));
    big.send(&Packet::Publish(publish(
        "x",
        &"y".repeat(2000),
        QoS::AtMostOnce,
        0,
    )));
    match big.recv() {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::PacketTooLarge),
        other => panic!("expected DISCONNECT 0x95, got {other:?}"),
    }
    let (mut eager, ack) = TestClient::connect(&via, connect(V5, "eager"));
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for id in 1..=3 {
        eager.send(&Packet::Publish(publish("x", "q2", QoS::ExactlyOnce, id)));
    }
    let mut reasons = Vec::new();
    while let Some(p) = eager.try_recv() {
        match p {
            Packet::PubRec(_) => {}
            Packet::Disconnect(d) => reasons.push(d.reason),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(reasons, vec![ReasonCode::ReceiveMaximumExceeded]);
}

/// Device interop: Eclipse Paho's Python client (paho-mqtt 2.1, from PyPI) — QoS 0/1/2,
/// retained, Will, overlapping subscriptions, a refused subscription; in 5.0 also
/// subscription identifiers, server topic aliases, Server Keep Alive and Will Delay — in 3.1.1
/// and 5.0, over TCP and over the gateway's WebSocket. Everyone is anonymous, with a role that
/// denies `test/nosubscribe` (`[acl] anonymous_role`).
#[test]
fn paho_clients() {
    let gw = Gateway::start_with(&[], None, |c| {
        c.auth = kite_tests::anonymous_role(kite_policy::acl::Acl {
            deny_subscribe: vec!["test/nosubscribe".into()],
            ..Default::default()
        });
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/paho_interop.py");
    for transport in ["tcp", "websockets"] {
        for version in ["3.1.1", "5"] {
            let port = match transport {
                "tcp" => gw.mqtt_addr.unwrap().port(),
                _ => gw.addr.port(),
            };
            let out = kite_tests::python_with_paho()
                .arg(script)
                .args(["127.0.0.1", &port.to_string(), version, transport])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("all ok"),
                "paho {version} over {transport}:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// QoS 2 deliveries in flight when the broker stops are resent under the same packet id after
/// the restart — PUBLISH with DUP before its PUBREC, PUBREL after it [MQTT-4.4.0-1] — so the
/// subscriber can deliver each once [MQTT-4.3.3-10].
#[test]
fn qos2_in_flight_survives_restart() {
    let dir = kite_tests::TempDir::new("broker-qos2");
    let data = dir.path().to_owned();
    let start = || {
        let data = data.clone();
        Gateway::start_with(&[], None, move |c| c.broker.data_dir = Some(data))
    };
    let persistent = |clean: bool| Connect {
        clean_start: clean,
        ..v5_connect(
            "q2sub",
            Properties {
                session_expiry_interval: Some(3600),
                ..Properties::default()
            },
        )
    };
    let gw = start();
    let via = Via::Tcp(gw.mqtt_addr.unwrap());
    let (mut sub, _) = TestClient::connect(&via, persistent(true));
    sub.subscribe("x/#", QoS::ExactlyOnce);
    let mut publ = TestClient::connected(&via, V5, "pub");
    publ.publish(publish("x/1", "a", QoS::ExactlyOnce, 1));
    publ.publish(publish("x/2", "b", QoS::ExactlyOnce, 2));
    let a = sub.recv_publish();
    let b = sub.recv_publish();
    assert_eq!((&a.payload[..], &b.payload[..]), (&b"a"[..], &b"b"[..]));
    // b gets its PUBREC (and the broker's PUBREL); a does not. No PUBCOMP.
    sub.send(&Packet::PubRec(kite_mqtt::codec::Ack::new(b.packet_id)));
    match sub.recv() {
        Packet::PubRel(r) => assert_eq!(r.packet_id, b.packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    sub.drop_connection();
    drop(publ);
    drop(gw);

    let gw = start();
    let via = Via::Tcp(gw.mqtt_addr.unwrap());
    let (mut sub, ack) = TestClient::connect(&via, persistent(false));
    assert!(ack.session_present);
    let again = sub.recv_publish();
    assert_eq!(
        (&again.payload[..], again.dup, again.packet_id),
        (&b"a"[..], true, a.packet_id),
        "the unacknowledged QoS 2 PUBLISH comes again with DUP and its packet id"
    );
    match sub.recv() {
        Packet::PubRel(r) => assert_eq!(r.packet_id, b.packet_id, "PUBREL again, not PUBLISH"),
        other => panic!("expected PUBREL for b, got {other:?}"),
    }
    sub.send(&Packet::PubComp(kite_mqtt::codec::Ack::new(b.packet_id)));
    sub.ack(&again);
    assert_eq!(sub.barrier(), vec![]);
}

/// A lingering close: when the broker closes a connection with a reason, the client reads
/// the reason — not a reset that throws it away. This client sends 1,025 unacknowledged QoS 2
/// PUBLISHes (one more than the Receive Maximum of 1,024 the broker announced), then answers
/// every PUBREC it reads with PUBREL, so it is still sending when the broker closes with
/// DISCONNECT 0x93 Receive Maximum exceeded [MQTT-3.3.4-7]. Closing a socket with unread
/// input resets the connection, and a reset discards what the client had not read yet; so
/// the broker half-closes and reads (and discards) for up to 2 s before it closes.
#[test]
fn a_closing_reason_reaches_a_client_that_is_still_sending() {
    both(defaults, |via| {
        let (mut eager, ack) = TestClient::connect(via, connect(V5, "eager"));
        assert_eq!(ack.properties.receive_maximum, Some(1024));
        let publishes: Vec<Packet> = (1..=1025)
            .map(|id| Packet::Publish(publish("flood/q2", "x", QoS::ExactlyOnce, id)))
            .collect();
        eager.send_all(&publishes);
        let mut recs = 0;
        let reason = loop {
            match eager.try_recv() {
                Some(Packet::PubRec(r)) => {
                    recs += 1;
                    eager.send(&Packet::PubRel(Ack::new(r.packet_id)));
                }
                Some(Packet::Disconnect(d)) => break d.reason,
                Some(other) => panic!("{other:?}"),
                None => panic!(
                    "{via:?}: closed (or reset) without DISCONNECT 0x93, after {recs} PUBRECs"
                ),
            }
        };
        assert_eq!(
            reason,
            ReasonCode::ReceiveMaximumExceeded,
            "after {recs} PUBRECs"
        );
    });
}
