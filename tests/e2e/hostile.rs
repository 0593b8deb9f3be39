//! Kite against hostile clients: what an attacker sends over TCP, WebSocket and the HTTP API
//! must close (or refuse) that attacker alone, with the reason, while everyone else is served.
//! Each test ends by checking that another client still gets its messages.

use bytes::Bytes;
use kite_gateway::config::Config;
use kite_mqtt::codec::{Connect, Properties, ReasonCode, Unsubscribe};
use kite_mqtt::{Packet, QoS, Version};
use kite_policy::auth::{Auth, Role, User, hash_password};
use kite_tests::client::{TestClient, Via, connect, publish};
use kite_tests::{Gateway, Mosquitto, each_way};

use crate::api::post;

const V3: Version = Version::V3_1_1;
const V5: Version = Version::V5;

/// Another client, unrelated to the attack, subscribes and gets a message.
fn still_serving(via: &Via) {
    serving(via, |id| connect(V5, id));
}

/// [`still_serving`] with users configured: logged in as `user` (password = name).
fn still_serving_as(via: &Via, user: &str) {
    serving(via, |id| Connect {
        username: Some(user.into()),
        password: Some(Bytes::copy_from_slice(user.as_bytes())),
        ..connect(V5, id)
    });
}

/// A subscriber and a publisher, each connected with `login(client id)`, exchange a message.
fn serving(via: &Via, login: impl Fn(&str) -> Connect) {
    let (mut sub, ack) = TestClient::connect(via, login("bystander-sub"));
    assert_eq!(ack.reason, ReasonCode::Success, "{ack:?}");
    sub.subscribe("ok/#", QoS::AtLeastOnce);
    let (mut publ, _) = TestClient::connect(via, login("bystander-pub"));
    assert_eq!(
        publ.publish(publish("ok/1", "fine", QoS::AtLeastOnce, 1)),
        ReasonCode::Success
    );
    assert_eq!(&sub.recv_publish().payload[..], b"fine");
}

pub(crate) fn metric(gw: &Gateway, name: &str) -> u64 {
    let text = ureq::get(&gw.http_url("/metrics"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .parse()
        .unwrap()
}

fn healthy(gw: &Gateway) -> bool {
    ureq::get(&gw.http_url("/healthz"))
        .call()
        .is_ok_and(|r| r.status() == 200)
}

/// The topic limits opened to what the protocol allows, so the deepest topics reach the
/// subscription trie and the retained store.
fn wide_open(c: &mut Config) {
    c.broker.config.max_topic_levels = 65_536;
    c.broker.config.max_topic_length = 65_535;
}

/// The deepest filters 65,535 bytes hold: 65,536 empty levels; 32,767 `+` levels ending with
/// `#`; and a mix.
fn deepest_filters() -> [String; 3] {
    [
        "/".repeat(65_535),
        format!("{}#", "+/".repeat(32_767)),
        format!("{}#", "a/+//".repeat(13_106)),
    ]
}

/// Found attacking 0.9: one SUBSCRIBE of 10,000 levels, then a disconnect, overflowed a worker
/// thread's stack and killed the process (the trie recursed once per level). Subscribing,
/// matching, publishing retained and unsubscribing the deepest filters and names MQTT can
/// carry now leaves the broker serving.
#[test]
fn the_deepest_topics_do_not_stop_the_broker() {
    each_way(wide_open, |gw, via| {
        let filters = deepest_filters();
        let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
        let mut c = TestClient::connected(via, V3, "deep");
        let ack = c.subscribe_all(1, &refs, QoS::AtLeastOnce);
        assert_eq!(ack.reasons, vec![ReasonCode::GrantedQoS1; 3]);
        let name = "/".repeat(65_535);
        let mut p = publish(&name, "deep", QoS::AtLeastOnce, 2);
        p.retain = true;
        assert_eq!(c.publish(p), ReasonCode::Success);
        // One delivery per session, whatever the number of matching filters [MQTT-3.3.4-2].
        let got = c.recv_publish();
        assert!(got.topic.len() == name.len() && &got.payload[..] == b"deep");
        c.ack(&got);
        c.send(&Packet::Unsubscribe(Unsubscribe {
            packet_id: 3,
            filters: refs.iter().map(|f| (*f).into()).collect(),
            properties: Default::default(),
        }));
        assert!(matches!(c.recv(), Packet::UnsubAck(_)));
        // Retained and then cleared (the second of the issue's two API calls did the damage).
        let mut clear = publish(&name, "", QoS::AtLeastOnce, 4);
        clear.retain = true;
        assert_eq!(c.publish(clear), ReasonCode::Success);
        c.disconnect();
        // A second client subscribes the same way and leaves without unsubscribing: its
        // session's filters are dropped with it.
        let mut d = TestClient::connected(via, V5, "deep-2");
        let ack = d.subscribe_all(1, &refs, QoS::AtMostOnce);
        assert_eq!(ack.reasons, vec![ReasonCode::GrantedQoS0; 3]);
        d.drop_connection();
        still_serving(via);
        assert!(healthy(gw));
    });
}

/// The same through `POST /api/v1/publish`: a retained message on `http` and 30,000 empty
/// levels, then cleared, killed the process before.
#[test]
fn the_deepest_retained_topic_through_the_api() {
    let gw = Gateway::start_with(&[], None, wide_open);
    let topic = format!("http{}", "/".repeat(30_000));
    for payload in ["x", ""] {
        let body = serde_json::json!({ "topic": topic, "payload": payload, "retain": true });
        let (status, answer) = post(&gw, &body.to_string(), None);
        assert_eq!(status, 200, "{answer}");
    }
    assert!(healthy(&gw));
    still_serving(&Via::Tcp(gw.mqtt_addr.unwrap()));

    // With the default limits the topic is refused, naming the field and the limit.
    let gw = Gateway::start(&[], None);
    for (topic, said) in [
        (topic.as_str(), "30004 bytes long"),
        (&format!("http{}", "/".repeat(200)), "201 levels"),
    ] {
        let body = serde_json::json!({ "topic": topic, "payload": "x", "retain": true });
        let (status, answer) = post(&gw, &body.to_string(), None);
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["field"], "topic");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains(said) && error.contains("[broker] max_topic_"),
            "{error}"
        );
    }
    assert_eq!(metric(&gw, "kite_broker_topics_refused_total"), 2);
}

/// In front of mosquitto, the gateway passes the deepest filters on (its own checks walk
/// levels without recursing) and keeps serving, whatever the upstream makes of them.
#[test]
fn the_deepest_topics_through_the_gateway_to_mosquitto() {
    let broker = Mosquitto::start();
    let gw = Gateway::start(&[&broker.url()], None);
    let via = Via::Ws(gw.ws_url("/mqtt"));
    let filters = deepest_filters();
    let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
    let mut c = TestClient::connected(&via, V5, "deep");
    c.send(&Packet::Subscribe(kite_mqtt::codec::Subscribe {
        packet_id: 1,
        filters: refs
            .iter()
            .map(|f| kite_mqtt::codec::Subscription::new(*f, QoS::AtMostOnce))
            .collect(),
        properties: Default::default(),
    }));
    // mosquitto answers or closes; either way only this connection is affected.
    let _ = c.try_recv();
    drop(c);
    assert!(healthy(&gw));
    still_serving(&via);
}

/// Beyond `[broker] max_topic_levels` (128) or `max_topic_length` (4096): a filter gets
/// 0x8F Topic Filter invalid in its SUBACK place (3.1.1: 0x80), a QoS 1 PUBLISH gets PUBACK
/// 0x90 Topic Name invalid, a QoS 0 one is dropped; a 3.1.1 client, which cannot be told,
/// is disconnected. Each counted in /metrics.
#[test]
fn topics_beyond_the_limits_are_refused_with_their_reason() {
    each_way(
        |_| {},
        |gw, via| {
            let deep = format!("{}x", "a/".repeat(128));
            let long = "x".repeat(4097);
            let fine = format!("{}x", "a/".repeat(127));
            let mut c = TestClient::connected(via, V5, "limits");
            let ack = c.subscribe_all(1, &[&deep, &long, &fine, "$share/g/a/+"], QoS::AtMostOnce);
            assert_eq!(
                ack.reasons,
                [
                    ReasonCode::TopicFilterInvalid,
                    ReasonCode::TopicFilterInvalid,
                    ReasonCode::GrantedQoS0,
                    ReasonCode::GrantedQoS0
                ]
            );
            for topic in [&deep, &long] {
                assert_eq!(
                    c.publish(publish(topic, "x", QoS::AtLeastOnce, 2)),
                    ReasonCode::TopicNameInvalid
                );
            }
            c.send(&Packet::Publish(publish(&deep, "x", QoS::AtMostOnce, 0)));
            assert_eq!(
                c.publish(publish(&fine, "ok", QoS::AtLeastOnce, 3)),
                ReasonCode::Success
            );
            assert_eq!(&c.recv_publish().payload[..], b"ok");
            assert!(c.barrier().is_empty(), "nothing else was routed");

            // A Will beyond the limits is refused at CONNECT: 0x90 (3.1.1: 3).
            for version in [V5, V3] {
                let mut c = connect(version, "deep-will");
                c.will = Some(kite_mqtt::codec::Will {
                    topic: deep.as_str().into(),
                    payload: Bytes::from_static(b"w"),
                    qos: QoS::AtMostOnce,
                    retain: true,
                    properties: Default::default(),
                });
                let (_, ack) = TestClient::connect(via, c);
                let want = if version == V5 {
                    ReasonCode::TopicNameInvalid
                } else {
                    ReasonCode::ServerUnavailable
                };
                assert_eq!(ack.reason, want, "{version:?}");
            }
            let mut old = TestClient::connected(via, V3, "limits-311");
            let ack = old.subscribe_all(1, &[&deep, "b"], QoS::AtMostOnce);
            assert_eq!(
                ack.reasons,
                [ReasonCode::UnspecifiedError, ReasonCode::GrantedQoS0]
            );
            old.send(&Packet::Publish(publish(&deep, "x", QoS::AtLeastOnce, 2)));
            assert!(old.try_recv().is_none(), "a 3.1.1 client is disconnected");
            assert_eq!(metric(gw, "kite_broker_topics_refused_total"), 9);
            still_serving(via);
        },
    );
}

/// `[broker] max_subscriptions`: a new filter beyond it gets 0x97 Quota exceeded (3.1.1:
/// 0x80); subscribing again to a filter held is not a new one.
#[test]
fn subscriptions_per_session_are_bounded() {
    each_way(
        |c| c.broker.config.max_subscriptions = 3,
        |gw, via| {
            let mut c = TestClient::connected(via, V5, "many");
            let ack = c.subscribe_all(1, &["a", "b", "c", "d", "a"], QoS::AtMostOnce);
            let g = ReasonCode::GrantedQoS0;
            assert_eq!(ack.reasons, [g, g, g, ReasonCode::QuotaExceeded, g]);
            c.send(&Packet::Unsubscribe(Unsubscribe {
                packet_id: 2,
                filters: vec!["b".into()],
                properties: Default::default(),
            }));
            assert!(matches!(c.recv(), Packet::UnsubAck(_)));
            assert_eq!(c.subscribe_all(3, &["d"], QoS::AtMostOnce).reasons, [g]);
            let mut old = TestClient::connected(via, V3, "many-311");
            let ack = old.subscribe_all(1, &["a", "b", "c", "d"], QoS::AtMostOnce);
            assert_eq!(ack.reasons[3], ReasonCode::UnspecifiedError);
            assert_eq!(metric(gw, "kite_broker_subscriptions_refused_total"), 2);
            still_serving(via);
        },
    );
}

/// `[broker] max_retained_messages`: a retained PUBLISH to a new topic beyond it is refused
/// whole (PUBACK 0x97, not routed); replacing or deleting a retained message is not refused,
/// and deleting one makes room. The API answers 507 naming `retain`.
#[test]
fn retained_messages_are_bounded() {
    each_way(
        |c| {
            c.broker.config.max_retained_messages = 2;
            // Its retained $SYS statistics count too: none here.
            c.broker.config.sys_interval = None;
        },
        |gw, via| {
            let mut watcher = TestClient::connected(via, V5, "watcher");
            watcher.subscribe("r/#", QoS::AtMostOnce);
            let mut c = TestClient::connected(via, V5, "retainer");
            let retained = |topic: &str, payload: &str, id| {
                let mut p = publish(topic, payload, QoS::AtLeastOnce, id);
                p.retain = true;
                p
            };
            assert_eq!(c.publish(retained("r/1", "a", 1)), ReasonCode::Success);
            assert_eq!(c.publish(retained("r/2", "b", 2)), ReasonCode::Success);
            assert_eq!(
                c.publish(retained("r/3", "c", 3)),
                ReasonCode::QuotaExceeded
            );
            assert_eq!(c.publish(retained("r/1", "a2", 4)), ReasonCode::Success);
            let seen: Vec<Bytes> = watcher
                .barrier()
                .into_iter()
                .map(|p| match p {
                    Packet::Publish(p) => p.payload,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(seen, ["a", "b", "a2"]);
            let (status, answer) = post(gw, r#"{"topic":"r/4","payload":"d","retain":true}"#, None);
            assert_eq!(status, 507, "{answer}");
            assert_eq!(answer["field"], "retain");
            assert_eq!(c.publish(retained("r/2", "", 5)), ReasonCode::Success);
            assert_eq!(c.publish(retained("r/3", "c", 6)), ReasonCode::Success);
            assert_eq!(metric(gw, "kite_broker_retained_refused_total"), 2);
            still_serving(via);
        },
    );
}

/// Users `admin` (no topic rules) and `alice` (only `plant/#`).
fn two_users(c: &mut Config) {
    two_users_with_prefix(c, "");
}

/// [`two_users`], alice's role with this `client_id_prefix`.
fn two_users_with_prefix(c: &mut Config, alice_prefix: &str) {
    let user = |name: &str, role: &str| User {
        name: name.into(),
        password_hash: hash_password(name.as_bytes()).unwrap(),
        role: Some(role.into()),
    };
    c.auth = Auth::new(
        vec![user("admin", "all"), user("alice", "operator")],
        vec![
            Role {
                name: "all".into(),
                ..Role::default()
            },
            Role {
                name: "operator".into(),
                client_id_prefix: alice_prefix.into(),
                acl: kite_policy::acl::Acl {
                    publish: Some(vec!["plant/#".into()]),
                    subscribe: Some(vec!["plant/#".into()]),
                    ..Default::default()
                },
                ..Role::default()
            },
        ],
    )
    .unwrap();
}

fn login(version: Version, user: &str, clean_start: bool) -> Connect {
    let mut c = Connect {
        username: Some(user.into()),
        password: Some(Bytes::copy_from_slice(user.as_bytes())),
        clean_start,
        ..connect(version, "shared-id")
    };
    if version == V5 {
        c.properties = Properties {
            session_expiry_interval: Some(3600),
            ..Properties::default()
        }
        .into();
    }
    c
}

/// Found attacking 0.9: alice, connecting with the client id of the admin's persistent
/// session, got session present = 1 and the admin's deliveries, topics outside her rules
/// included. A session belongs to the login that made it: another login with its client id
/// is refused (0x87; 3.1.1: return code 5) whether it resumes or starts clean, and the
/// admin's session, its subscriptions and what was queued for it stay untouched.
#[test]
fn another_user_cannot_take_over_a_session() {
    each_way(two_users, |_, via| {
        for version in [V3, V5] {
            let (mut admin, ack) = TestClient::connect(via, login(version, "admin", false));
            assert_eq!(ack.reason, ReasonCode::Success);
            admin.subscribe("#", QoS::AtLeastOnce);
            admin.disconnect();
            let (mut publ, _) = TestClient::connect(
                via,
                Connect {
                    client_id: "plant-publisher".into(),
                    ..login(V5, "admin", true)
                },
            );
            publ.publish(publish("plant/secret/x", "queued", QoS::AtLeastOnce, 1));
            for clean_start in [false, true] {
                let (mut alice, ack) =
                    TestClient::connect(via, login(version, "alice", clean_start));
                assert_eq!(ack.reason, ReasonCode::NotAuthorized, "{ack:?}");
                assert!(!ack.session_present);
                assert!(alice.try_recv().is_none(), "refused and closed");
            }
            let (mut admin, ack) = TestClient::connect(via, login(version, "admin", false));
            assert_eq!(
                (ack.reason, ack.session_present),
                (ReasonCode::Success, true)
            );
            let p = admin.recv_publish();
            assert_eq!(&p.payload[..], b"queued");
            admin.ack(&p);
            // Ended by its own user (clean start, no expiry): the client id is free again.
            drop(admin);
            let ended = Connect {
                properties: Default::default(),
                ..login(version, "admin", true)
            };
            let (admin, ack) = TestClient::connect(via, ended);
            assert_eq!(ack.reason, ReasonCode::Success);
            admin.disconnect();
            let (alice, ack) = TestClient::connect(via, login(version, "alice", true));
            assert_eq!(ack.reason, ReasonCode::Success);
            alice.disconnect();
        }
    });
}

/// A WebSocket client that writes frames byte by byte, legal or not.
struct RawWs(std::net::TcpStream);

impl RawWs {
    /// Sends an upgrade request to `/mqtt`; returns the stream and a reader at its answer.
    fn request(
        gw: &Gateway,
        timeout: std::time::Duration,
    ) -> (std::net::TcpStream, std::io::BufReader<std::net::TcpStream>) {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        write!(
            s,
            "GET /mqtt HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
            gw.addr
        )
        .unwrap();
        let reader = std::io::BufReader::new(s.try_clone().unwrap());
        (s, reader)
    }

    /// The status line of an upgrade request to `/mqtt`.
    fn try_open(gw: &Gateway) -> String {
        use std::io::BufRead;
        let (_s, mut reader) = Self::request(gw, std::time::Duration::from_secs(5));
        let mut status = String::new();
        let _ = reader.read_line(&mut status);
        status
    }

    fn open(gw: &Gateway) -> Self {
        use std::io::BufRead;
        let (s, mut reader) = Self::request(gw, std::time::Duration::from_secs(15));
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 101 "), "{status}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        assert!(reader.buffer().is_empty());
        Self(s)
    }

    /// A masked frame (mask 0: the payload as it is) with this first byte and payload, or
    /// only a header claiming `claimed` bytes.
    fn frame(&mut self, first: u8, payload: &[u8], claimed: Option<u64>) {
        use std::io::Write;
        let len = claimed.unwrap_or(payload.len() as u64);
        let mut f = vec![first];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&len.to_be_bytes());
            }
        }
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(payload);
        // The server may close before reading it all.
        let _ = self.0.write_all(&f);
    }

    /// The frames the server sends until it closes: (opcode, payload) each.
    fn frames_until_close(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((opcode, payload)) = self.next_frame() {
            out.push((opcode, payload));
            if opcode == 8 {
                break;
            }
        }
        out
    }

    /// The next frame from the server, `None` once the connection is closed.
    fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        let mut head = [0u8; 2];
        if self.0.read_exact(&mut head).is_err() {
            return None;
        }
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.0.read_exact(&mut b).unwrap();
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.0.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        self.0.read_exact(&mut payload).unwrap();
        Some((head[0] & 0x0f, payload))
    }

    /// The close code the server ended with, and the MQTT 5 DISCONNECT reason it sent first.
    fn closed(mut self) -> (u16, Option<u8>) {
        let frames = self.frames_until_close();
        let (opcode, payload) = frames.last().expect("a close frame");
        assert_eq!(*opcode, 8, "{frames:?}");
        let code = u16::from_be_bytes([payload[0], payload[1]]);
        // DISCONNECT: 0xE0, remaining length, reason code.
        let disconnect = frames
            .iter()
            .find(|(op, p)| *op == 2 && p.first() == Some(&0xe0))
            .map(|(_, p)| p[2]);
        (code, disconnect)
    }
}

/// Found attacking 0.9: a frame over `max_packet_size`, a header claiming 2^63 bytes or a
/// reserved opcode closed the session with 1011 "connection to the broker failed". README
/// promises what RFC 6455 §7.4.1 says: 1009 for too big, 1002 for a protocol error — and an
/// MQTT 5 session gets DISCONNECT 0x95 / 0x81 first. Before the CONNECT too.
#[test]
fn broken_websocket_frames_close_with_their_codes() {
    let gw = Gateway::start_with(&[], None, |c| c.limits.max_packet_size = 64 * 1024);
    let mut connect = bytes::BytesMut::new();
    Packet::Connect(Box::new(connect_v5("frames")))
        .encode(V5, &mut connect)
        .unwrap();
    let big = vec![0u8; 64 * 1024 + 1];
    // What, the frame's first byte, its payload, the length its header claims, and the close
    // code and MQTT 5 reason expected.
    type Case<'a> = (&'a str, u8, &'a [u8], Option<u64>, u16, u8);
    let cases: [Case; 4] = [
        ("a frame over max_packet_size", 0x82, &big, None, 1009, 0x95),
        (
            "a header claiming 2^63 bytes",
            0x82,
            &[],
            Some(1 << 63),
            1009,
            0x95,
        ),
        ("a reserved opcode", 0x83, b"x", None, 1002, 0x81),
        (
            "a continuation with nothing to continue",
            0x80,
            b"x",
            None,
            1002,
            0x81,
        ),
    ];
    for (what, first, payload, claimed, code, reason) in cases {
        for after_connect in [false, true] {
            let mut ws = RawWs::open(&gw);
            if after_connect {
                ws.frame(0x82, &connect, None);
                // The gateway's DISCONNECT never goes before the broker's CONNACK.
                let (opcode, packet) = ws.next_frame().unwrap();
                assert_eq!((opcode, packet[0]), (2, 0x20), "CONNACK");
            }
            ws.frame(first, payload, claimed);
            let (got, disconnect) = ws.closed();
            assert_eq!(got, code, "{what} (after CONNECT: {after_connect})");
            let want = after_connect.then_some(reason);
            assert_eq!(disconnect, want, "{what} (after CONNECT: {after_connect})");
        }
    }
    // A message whose fragments never end: closed with 1009 once they pass the size limit.
    let mut ws = RawWs::open(&gw);
    ws.frame(0x02, &[0u8; 1024], None);
    for _ in 0..80 {
        ws.frame(0x00, &[0u8; 1024], None);
    }
    assert_eq!(ws.closed().0, 1009, "endless fragments");
    still_serving(&Via::Ws(gw.ws_url("/mqtt")));
}

fn connect_v5(client_id: &str) -> Connect {
    connect(V5, client_id)
}

/// Found attacking 0.9: a 65,535-byte user name (with users configured) made the MQTT 5
/// CONNACK refusing it too long to encode — it quoted the name — and the connection was
/// dropped without an answer. Now the refusal comes, its reason string cut short.
#[test]
fn a_huge_user_name_gets_its_refusal() {
    each_way(two_users, |_, via| {
        for version in [V3, V5] {
            let c = Connect {
                username: Some("u".repeat(65_535).as_str().into()),
                password: Some(Bytes::from_static(b"wrong")),
                ..connect(version, "huge-name")
            };
            let (mut client, ack) = TestClient::connect(via, c);
            assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword, "{version:?}");
            let why = ack.properties.reason_string.as_deref().unwrap_or("");
            assert!(why.len() <= 512, "{} bytes", why.len());
            if version == V5 {
                assert!(why.contains("unknown user or wrong password"), "{why}");
            }
            assert!(client.try_recv().is_none());
        }
        still_serving_as(via, "admin");
    });
}

/// Found attacking 0.9: in front of an upstream, a browser's PUBLISH carrying a Subscription
/// Identifier was passed on, where the embedded broker refuses it [MQTT-3.3.4-6]. The
/// gateway refuses it itself now (DISCONNECT 0x82 Protocol error, close 1002), and mosquitto
/// never sees it.
#[test]
fn a_publish_with_a_subscription_identifier_is_refused_at_the_gateway() {
    let broker = Mosquitto::start();
    let gw = Gateway::start(&[&broker.url()], None);
    let mut watcher = TestClient::connected(
        &Via::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], broker.port))),
        V5,
        "watcher",
    );
    watcher.subscribe("#", QoS::AtMostOnce);
    let via = Via::Ws(gw.ws_url("/mqtt"));
    let mut c = TestClient::connected(&via, V5, "subid");
    let mut p = publish("a/b", "x", QoS::AtMostOnce, 0);
    p.properties = Properties {
        subscription_identifiers: vec![5],
        ..Properties::default()
    }
    .into();
    c.send(&Packet::Publish(p));
    match c.try_recv() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::ProtocolError),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    assert!(c.try_recv().is_none());
    assert!(watcher.barrier().is_empty(), "mosquitto never saw it");
    still_serving(&via);
}

/// Found attacking 0.9: idle MQTT sessions holding every connection permit kept `/healthz`
/// from answering (15 s with 200 of them). Spare connections serve plain requests while the
/// permits are all held: health and metrics answer, a new MQTT session gets 503.
#[test]
fn health_and_metrics_answer_while_sessions_hold_every_permit() {
    let gw = Gateway::start_with(&[], None, |c| c.limits.max_connections = 5);
    let via = Via::Ws(gw.ws_url("/mqtt"));
    let sessions: Vec<TestClient> = (0..5)
        .map(|i| TestClient::connected(&via, V5, &format!("idle-{i}")))
        .collect();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .build()
        .new_agent();
    for path in ["/healthz", "/metrics", "/readyz"] {
        let status = agent
            .get(&gw.http_url(path))
            .call()
            .map(|r| r.status().as_u16());
        assert_eq!(status.ok(), Some(200), "{path}");
    }
    let upgrade = RawWs::try_open(&gw);
    assert!(upgrade.contains(" 503 "), "{upgrade}");
    drop(sessions);
    // Once a permit is free again, sessions are accepted (the closes take a moment).
    kite_tests::wait_for(
        "a session to be accepted",
        std::time::Duration::from_secs(10),
        || RawWs::try_open(&gw).contains(" 101 ").then_some(()),
    );
}

/// The session-takeover finding in front of mosquitto, which cannot be asked whose a session
/// is: the client id the gateway sends upstream carries the user (`<prefix><user>:<id>`), so
/// alice with the admin's client id gets a fresh session there, never the admin's
/// subscriptions or queue — with and without a role's `client_id_prefix`.
#[test]
fn another_user_cannot_take_over_a_session_upstream() {
    for prefix in ["", "web-"] {
        take_over_upstream(prefix);
    }
}

/// alice's role with `prefix`, the admin's with none.
fn take_over_upstream(prefix: &str) {
    let broker = Mosquitto::start();
    let gw = Gateway::start_with(&[&broker.url()], None, |c| {
        two_users_with_prefix(c, prefix);
    });
    let via = Via::Ws(gw.ws_url("/mqtt"));
    let mut watcher = TestClient::connected(
        &Via::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], broker.port))),
        V5,
        "watcher",
    );
    for version in [V3, V5] {
        let (mut admin, ack) = TestClient::connect(&via, login(version, "admin", false));
        assert_eq!(ack.reason, ReasonCode::Success);
        admin.subscribe("#", QoS::AtLeastOnce);
        admin.disconnect();
        watcher.publish(publish("plant/secret/x", "queued", QoS::AtLeastOnce, 1));
        let (mut alice, ack) = TestClient::connect(&via, login(version, "alice", false));
        assert_eq!(
            (ack.reason, ack.session_present),
            (ReasonCode::Success, false),
            "a fresh session of alice's own ({version:?}, prefix {prefix:?})"
        );
        assert!(alice.barrier().is_empty(), "none of the admin's queue");
        watcher.publish(publish("plant/secret/y", "live", QoS::AtLeastOnce, 2));
        assert!(
            alice.barrier().is_empty(),
            "none of the admin's subscriptions"
        );
        alice.disconnect();
        // alice's own session ends too (the next round starts with none).
        let ended = Connect {
            properties: Default::default(),
            ..login(version, "alice", true)
        };
        TestClient::connect(&via, ended).0.disconnect();
        let (mut admin, ack) = TestClient::connect(&via, login(version, "admin", false));
        assert_eq!(
            (ack.reason, ack.session_present),
            (ReasonCode::Success, true)
        );
        let got: Vec<Bytes> = (0..2)
            .map(|_| {
                let p = admin.recv_publish();
                admin.ack(&p);
                p.payload
            })
            .collect();
        assert_eq!(got, ["queued", "live"]);
        // Ended by its owner.
        let ended = Connect {
            properties: Default::default(),
            ..login(version, "admin", true)
        };
        TestClient::connect(&via, ended).0.disconnect();
    }
}

/// What a hostile client sends, and how the broker must answer it.
enum Expect {
    /// The connection is closed; an MQTT 5 client gets DISCONNECT with this reason first.
    Closed(Option<ReasonCode>),
    /// This packet comes back and the connection stays open.
    Answer(Packet),
}

/// Attacks at the MQTT level, each over TCP and over WebSocket, each after a good CONNECT
/// (MQTT 5): only the attacker's connection is affected, with the reason the specification
/// gives, and another client is served after each.
#[test]
fn hostile_packets_close_only_their_connection() {
    // Written by hand: Kite's codec will not encode an alias of 0.
    let alias = |alias: u16, topic: &str| {
        let mut body = vec![0, topic.len() as u8];
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&[3, 0x23]);
        body.extend_from_slice(&alias.to_be_bytes());
        body.push(b'x');
        let mut p = vec![0x30, body.len() as u8];
        p.extend(body);
        p
    };
    let with_user_properties = |n: usize| {
        let mut p = publish("props", "x", QoS::AtLeastOnce, 9);
        p.properties = Properties {
            user_properties: (0..n).map(|_| ("".into(), "".into())).collect(),
            ..Properties::default()
        }
        .into();
        let mut b = bytes::BytesMut::new();
        Packet::Publish(p).encode(V5, &mut b).unwrap();
        b.to_vec()
    };
    let mut second_connect = bytes::BytesMut::new();
    Packet::Connect(Box::new(connect(V5, "again")))
        .encode(V5, &mut second_connect)
        .unwrap();
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "a remaining length of five bytes",
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
            Expect::Closed(Some(ReasonCode::MalformedPacket)),
        ),
        (
            "a reserved packet type",
            vec![0x00, 0x00],
            Expect::Closed(Some(ReasonCode::MalformedPacket)),
        ),
        (
            "a second CONNECT [MQTT-3.1.0-2]",
            second_connect.to_vec(),
            Expect::Closed(Some(ReasonCode::ProtocolError)),
        ),
        // A value the protocol forbids: the decoder calls the packet malformed (0x94 is
        // defined for an alias above the maximum, next).
        (
            "topic alias 0 [MQTT-3.3.2-8]",
            alias(0, "a"),
            Expect::Closed(Some(ReasonCode::MalformedPacket)),
        ),
        (
            "a topic alias above the maximum [MQTT-3.3.2-9]",
            alias(65_535, "a"),
            Expect::Closed(Some(ReasonCode::TopicAliasInvalid)),
        ),
        (
            "a topic alias used before it was set",
            alias(1, ""),
            Expect::Closed(Some(ReasonCode::ProtocolError)),
        ),
        (
            "64 user properties ([limits] max_user_properties)",
            with_user_properties(64),
            Expect::Answer(Packet::PubAck({
                let mut a = kite_mqtt::codec::Ack::new(9);
                a.reason = ReasonCode::NoMatchingSubscribers;
                a
            })),
        ),
        // Each pair costs 80 bytes decoded for 5 on the wire: a 16 MiB packet of them would
        // have taken 270 MB.
        (
            "65 user properties",
            with_user_properties(65),
            Expect::Closed(Some(ReasonCode::QuotaExceeded)),
        ),
        (
            "PUBREL for an unknown packet id",
            vec![0x62, 2, 0x12, 0x34],
            Expect::Answer(Packet::PubComp({
                let mut a = kite_mqtt::codec::Ack::new(0x1234);
                a.reason = ReasonCode::PacketIdentifierNotFound;
                a
            })),
        ),
    ];
    each_way(
        |_| {},
        |gw, via| {
            for (what, bytes, expect) in &cases {
                let mut c = TestClient::connected(via, V5, "attacker");
                c.send_raw(bytes);
                match expect {
                    Expect::Closed(reason) => {
                        let mut got = None;
                        while let Some(p) = c.try_recv() {
                            if let Packet::Disconnect(d) = p {
                                got = Some(d.reason);
                            }
                        }
                        assert_eq!(got, *reason, "{what} ({via:?})");
                    }
                    Expect::Answer(packet) => {
                        assert_eq!(&c.recv(), packet, "{what} ({via:?})");
                        assert!(c.barrier().is_empty(), "{what}: still open");
                    }
                }
                still_serving(via);
            }
            // The 65 user properties, counted (the WebSocket path's by the gateway, which
            // closes the session before the broker reads the packet).
            if let Via::Tcp(_) = via {
                assert_eq!(metric(gw, "kite_broker_user_properties_refused_total"), 1);
            }
        },
    );
}

/// A SUBSCRIBE of 10,000 filters: a device over TCP gets its first 1,000 granted and 0x97 for
/// the rest (`[broker] max_subscriptions`); a browser session is closed with 0x97 (the
/// gateway's `[limits] max_subscriptions`). Either way the others are served.
#[test]
fn ten_thousand_filters_in_one_subscribe() {
    each_way(
        |_| {},
        |_, via| {
            let filters: Vec<String> = (0..10_000).map(|i| format!("many/{i}")).collect();
            let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
            let mut c = TestClient::connected(via, V5, "many");
            c.send(&Packet::Subscribe(kite_mqtt::codec::Subscribe {
                packet_id: 1,
                filters: refs
                    .iter()
                    .map(|f| kite_mqtt::codec::Subscription::new(*f, QoS::AtMostOnce))
                    .collect(),
                properties: Default::default(),
            }));
            match (via, c.try_recv()) {
                (Via::Tcp(_), Some(Packet::SubAck(a))) => {
                    let granted = a.reasons.iter().filter(|r| !r.is_error()).count();
                    assert_eq!(granted, 1_000);
                    assert!(
                        a.reasons[1_000..]
                            .iter()
                            .all(|r| *r == ReasonCode::QuotaExceeded)
                    );
                }
                (Via::Ws(_), Some(Packet::Disconnect(d))) => {
                    assert_eq!(d.reason, ReasonCode::QuotaExceeded);
                }
                (via, other) => panic!("{via:?}: {other:?}"),
            }
            still_serving(via);
        },
    );
}

/// Slowloris: a CONNECT one byte per 100 ms over TCP, and an HTTP request head one byte per
/// 100 ms, are both cut off at the connect timeout (1 s here); others are served meanwhile.
#[test]
fn slow_senders_are_cut_off_at_the_connect_timeout() {
    use std::io::{Read, Write};
    let gw = Gateway::start_with(&[], None, |c| {
        c.limits.connect_timeout = std::time::Duration::from_secs(1);
        c.broker.config.connect_timeout = std::time::Duration::from_secs(1);
    });
    let mut connect_bytes = bytes::BytesMut::new();
    Packet::Connect(Box::new(connect(V5, "slow")))
        .encode(V5, &mut connect_bytes)
        .unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Slow: {}\r\n\r\n",
        gw.addr,
        "a".repeat(40)
    );
    for (addr, bytes) in [
        (gw.mqtt_addr.unwrap(), connect_bytes.to_vec()),
        (gw.addr, head.into_bytes()),
    ] {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let started = std::time::Instant::now();
        let mut cut_off = false;
        for b in &bytes {
            if s.write_all(&[*b]).is_err() {
                cut_off = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            if started.elapsed() > std::time::Duration::from_secs(3) {
                break;
            }
        }
        // Closed: the read ends (0 bytes or a reset), with nothing but a refusal before it.
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut answer = Vec::new();
        let closed = match s.read_to_end(&mut answer) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(cut_off || closed, "{addr}: still open");
        assert!(
            !String::from_utf8_lossy(&answer).contains("200 OK") && answer.len() < 512,
            "{addr}: answered {answer:?}"
        );
        still_serving(&Via::Tcp(gw.mqtt_addr.unwrap()));
    }
}

/// `[limits] max_connections_per_address` (3 here): one address cannot take every permit.
/// Its fourth connection — to the broker's TCP listener or to the gateway's HTTP one, the
/// count is shared — is closed at accept, and counted; once one closes, it gets in again.
#[test]
fn connections_per_source_address_are_bounded() {
    use std::io::Read;
    let gw = Gateway::start_with(&[], None, |c| c.limits.max_connections_per_address = 3);
    let tcp = Via::Tcp(gw.mqtt_addr.unwrap());
    let held: Vec<TestClient> = (0..2)
        .map(|i| TestClient::connected(&tcp, V5, &format!("held-{i}")))
        .collect();
    let ws = TestClient::connected(&Via::Ws(gw.ws_url("/mqtt")), V5, "held-ws");
    for addr in [gw.mqtt_addr.unwrap(), gw.addr] {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let closed = match s.read(&mut [0u8; 16]) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        assert!(closed, "{addr}: a fourth connection is closed at accept");
    }
    drop(ws);
    drop(held);
    kite_tests::wait_for(
        "the places given back",
        std::time::Duration::from_secs(10),
        || {
            std::net::TcpStream::connect(gw.mqtt_addr.unwrap())
                .ok()
                .and_then(|mut s| {
                    s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                        .ok()?;
                    // Open (not closed at accept): the read times out instead of ending.
                    match s.read(&mut [0u8; 1]) {
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut =>
                        {
                            Some(())
                        }
                        _ => None,
                    }
                })
        },
    );
    still_serving(&tcp);
    // /metrics through an HTTP connection of its own: counted.
    assert!(metric(&gw, "kite_connections_per_address_refused_total") >= 2);
}
