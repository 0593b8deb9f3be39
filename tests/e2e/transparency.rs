//! Transparency (issue #5): clients through the gateway see exactly what they see connected to
//! mosquitto directly — the same packets, in the same order, field by field — in MQTT 3.1.1
//! and 5.0, with every packet whole in its frame, split across frames (down to a byte per
//! frame), and several packets batched in one frame.
//!
//! One scenario (QoS 0/1/2 with downgrade and overlapping subscriptions, retained messages set
//! and deleted, Will on an abnormal close, a persistent session's queued messages, MQTT 5
//! properties, subscription identifiers, topic aliases, DISCONNECT with Will) is played against
//! a fresh mosquitto over TCP, and again through a fresh gateway in front of a fresh mosquitto;
//! every packet each client receives is written down, and the two transcripts must be equal.

use bytes::Bytes;
use kite_mqtt::codec::{
    Connect, Disconnect, Properties, Publish, ReasonCode, Subscription, Unsubscribe, Will,
};
use kite_mqtt::{Packet, QoS, Version};
use kite_tests::client::{TestClient, Via, connect, publish};
use kite_tests::{Gateway, Mosquitto};

/// One play of the scenario: how clients connect, and what they received.
struct Run {
    via: Via,
    version: Version,
    piece: Option<usize>,
    transcript: Vec<String>,
    next_id: u16,
}

impl Run {
    fn new(via: Via, version: Version, piece: Option<usize>) -> Self {
        Self {
            via,
            version,
            piece,
            transcript: Vec::new(),
            next_id: 1,
        }
    }

    fn note(&mut self, who: &str, packet: &Packet) {
        let mut packet = packet.clone();
        // The remaining expiry is counted in whole seconds by the broker as it delivers:
        // whether it is 3600 or 3599 depends on the clock, not on the path.
        if let Packet::Publish(p) = &mut packet
            && p.properties.message_expiry_interval.is_some()
        {
            p.properties.message_expiry_interval = Some(0);
        }
        self.transcript.push(format!("{who}: {packet:?}"));
    }

    fn id(&mut self) -> u16 {
        self.next_id += 1;
        self.next_id
    }

    /// Connects (sending in pieces if this run does); notes the CONNACK.
    fn open(&mut self, who: &str, connect: Connect) -> TestClient {
        let mut c = TestClient::open(&self.via, connect.version);
        if let Some(n) = self.piece {
            c.send_in_pieces(n);
        }
        c.send(&Packet::Connect(Box::new(connect)));
        let ack = c.recv();
        self.note(who, &ack);
        c
    }

    /// Publishes and notes the first acknowledgement's reason.
    fn publish(&mut self, who: &str, c: &mut TestClient, p: Publish) {
        let qos = p.qos;
        let reason = c.publish(p);
        self.transcript
            .push(format!("{who}: published at {qos:?}: {reason:?}"));
    }

    /// Notes everything `c` received before a PINGRESP and acknowledges each PUBLISH.
    fn drain(&mut self, who: &str, c: &mut TestClient) {
        for p in c.barrier() {
            self.note(who, &p);
            if let Packet::Publish(p) = &p {
                c.ack(p);
            }
        }
    }

    fn subscribe(&mut self, who: &str, c: &mut TestClient, filters: Vec<Subscription>, id: u32) {
        let mut props = Properties::default();
        if self.version == Version::V5 {
            props.subscription_identifiers = vec![id];
        }
        let packet_id = self.id();
        let ack = c.subscribe_with(packet_id, filters, props);
        self.note(who, &Packet::SubAck(ack));
    }
}

fn sub(filter: &str, qos: QoS) -> Subscription {
    Subscription::new(filter, qos)
}

fn scenario(run: &mut Run) {
    let v = run.version;
    let v5 = v == Version::V5;
    const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

    // A subscriber at each QoS, one filter overlapping the others [MQTT-3.3.5-1].
    let mut s = run.open("sub", connect(v, "tr-sub"));
    run.subscribe(
        "sub",
        &mut s,
        vec![
            sub("tr/q0", QoS::AtMostOnce),
            sub("tr/q1", QoS::AtLeastOnce),
            sub("tr/q2", QoS::ExactlyOnce),
            sub("tr/+/x", QoS::AtLeastOnce),
            sub("tr/q2/#", QoS::AtMostOnce),
        ],
        7,
    );
    let mut p = run.open("pub", connect(v, "tr-pub"));
    // QoS 0 publishes batched in one write (one frame), each to every subscription QoS.
    let batch: Vec<Packet> = ["tr/q0", "tr/q1", "tr/q2", "tr/a/x"]
        .iter()
        .map(|t| Packet::Publish(publish(t, "zero", QoS::AtMostOnce, 0)))
        .collect();
    p.send_all(&batch);
    // QoS 1 and 2, downgraded to the subscription's QoS [MQTT-3.8.4-6].
    for qos in &QOS[1..] {
        for topic in ["tr/q0", "tr/q1", "tr/q2", "tr/a/x"] {
            let id = run.id();
            run.publish("pub", &mut p, publish(topic, &format!("{qos:?}"), *qos, id));
        }
    }
    run.drain("pub", &mut p);
    run.drain("sub", &mut s);

    // Retained: set, seen by a late subscriber with the RETAIN flag, deleted [MQTT-3.3.1-5..11].
    for (payload, qos) in [("on", QoS::AtLeastOnce), ("off", QoS::ExactlyOnce)] {
        let id = run.id();
        let mut m = publish("tr/r/x", payload, qos, id);
        m.retain = true;
        run.publish("pub", &mut p, m);
    }
    let mut late = run.open("late", connect(v, "tr-late"));
    let mut keep_flag = sub("tr/r/#", QoS::ExactlyOnce);
    keep_flag.retain_as_published = v5;
    run.subscribe("late", &mut late, vec![keep_flag], 9);
    run.drain("late", &mut late);
    let id = run.id();
    let mut delete = publish("tr/r/x", "", QoS::AtLeastOnce, id);
    delete.retain = true;
    run.publish("pub", &mut p, delete);
    run.drain("late", &mut late);
    run.drain("sub", &mut s);
    let mut later = run.open("later", connect(v, "tr-later"));
    run.subscribe(
        "later",
        &mut later,
        vec![sub("tr/r/#", QoS::AtLeastOnce)],
        10,
    );
    run.drain("later", &mut later);

    // A Will, published when its client goes away without DISCONNECT [MQTT-3.1.2-8].
    let mut with_will = connect(v, "tr-will");
    let mut will = Will {
        topic: "tr/will/x".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    if v5 {
        will.properties.content_type = Some("text/plain".into());
        will.properties.user_properties = vec![("why".into(), "test".into())];
    }
    with_will.will = Some(will.clone());
    let w = run.open("will", with_will);
    w.drop_connection();
    let got = Packet::Publish(s.recv_publish());
    run.note("sub", &got);
    if let Packet::Publish(m) = &got {
        s.ack(m);
    }

    // A persistent session: subscriptions kept, QoS 1 messages queued while it is offline
    // and delivered when it comes back, with Session Present [MQTT-3.2.2-2].
    let mut keep_connect = connect(v, "tr-keep");
    keep_connect.clean_start = false;
    if v5 {
        keep_connect.properties.session_expiry_interval = Some(300);
    }
    let mut keep = run.open("keep", keep_connect.clone());
    run.subscribe(
        "keep",
        &mut keep,
        vec![sub("tr/keep", QoS::AtLeastOnce)],
        11,
    );
    keep.disconnect();
    for i in 0..3 {
        let id = run.id();
        run.publish(
            "pub",
            &mut p,
            publish("tr/keep", &format!("queued {i}"), QoS::AtLeastOnce, id),
        );
    }
    let mut keep = run.open("keep", keep_connect);
    run.drain("keep", &mut keep);

    if v5 {
        // Properties carried end to end, a topic alias set and then used alone [MQTT-3.3.2-12].
        let id = run.id();
        let mut m = publish("tr/props/x", "{\"t\":21.5}", QoS::AtLeastOnce, id);
        m.properties.payload_format_indicator = Some(true);
        m.properties.content_type = Some("application/json".into());
        m.properties.response_topic = Some("tr/reply".into());
        m.properties.correlation_data = Some(Bytes::from_static(b"\x00\x01corr"));
        m.properties.message_expiry_interval = Some(3600);
        m.properties.user_properties = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
        m.properties.topic_alias = Some(1);
        run.publish("pub", &mut p, m);
        let id = run.id();
        let mut aliased = publish("", "by alias", QoS::ExactlyOnce, id);
        aliased.properties.topic_alias = Some(1);
        run.publish("pub", &mut p, aliased);
        run.drain("sub", &mut s);

        // DISCONNECT with Will Message (0x04) still publishes the Will.
        let mut leaving = connect(v, "tr-leaving");
        let mut will = will.clone();
        will.topic = "tr/leaving/x".into();
        leaving.will = Some(will);
        let mut l = run.open("leaving", leaving);
        l.send(&Packet::Disconnect(Disconnect::new(
            ReasonCode::DisconnectWithWillMessage,
        )));
        let got = Packet::Publish(s.recv_publish());
        run.note("sub", &got);
        if let Packet::Publish(m) = &got {
            s.ack(m);
        }
    }

    // Unsubscribe, then nothing more arrives there.
    let id = run.id();
    s.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: id,
        filters: vec!["tr/q1".into(), "tr/never".into()],
        properties: Default::default(),
    }));
    let unsuback = s.recv();
    run.note("sub", &unsuback);
    let id = run.id();
    run.publish(
        "pub",
        &mut p,
        publish("tr/q1", "after", QoS::AtLeastOnce, id),
    );
    run.drain("sub", &mut s);
    p.disconnect();
    s.disconnect();
}

/// Plays the scenario directly and through the gateway (with each framing); the transcripts
/// must be equal.
fn transparent(version: Version) {
    let mosquitto = Mosquitto::start();
    let mut direct = Run::new(
        Via::Tcp(format!("127.0.0.1:{}", mosquitto.port).parse().unwrap()),
        version,
        None,
    );
    scenario(&mut direct);
    drop(mosquitto);
    assert!(direct.transcript.len() > 20, "{:#?}", direct.transcript);

    for piece in [None, Some(1), Some(7)] {
        let mosquitto = Mosquitto::start();
        let gateway = Gateway::start(&[&mosquitto.url()], None);
        let mut through = Run::new(Via::Ws(gateway.ws_url("/mqtt")), version, piece);
        scenario(&mut through);
        for (i, (a, b)) in direct
            .transcript
            .iter()
            .zip(&through.transcript)
            .enumerate()
        {
            assert_eq!(
                a, b,
                "{version:?}, pieces {piece:?}: packet {i} differs (direct, then through the gateway)"
            );
        }
        assert_eq!(
            direct.transcript.len(),
            through.transcript.len(),
            "{version:?}, pieces {piece:?}: {:#?}\nvs\n{:#?}",
            direct.transcript,
            through.transcript
        );
    }
}

#[test]
fn mqtt_3_1_1_through_the_gateway_is_what_mosquitto_sends() {
    transparent(Version::V3_1_1);
}

#[test]
fn mqtt_5_through_the_gateway_is_what_mosquitto_sends() {
    transparent(Version::V5);
}
