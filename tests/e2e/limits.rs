//! The gateway's rules and limits: each closes only the offending connection, with the right
//! WebSocket close code and (MQTT 5) DISCONNECT reason code.

use std::time::Duration;

use kite_tests::mqtt::{WsClient, connect_v5, connect_v311, publish_v311, subscribe_v311};
use kite_tests::{Gateway, Mosquitto, free_port};
use tokio_tungstenite::tungstenite::Message;

fn gateway_with(
    broker: &Mosquitto,
    adjust: impl FnOnce(&mut kite_gateway::config::Config),
) -> Gateway {
    Gateway::start_with(&[&broker.url()], None, adjust)
}

fn open(gateway: &Gateway) -> WsClient {
    WsClient::connect(&gateway.ws_url("/mqtt"), Some("mqtt")).unwrap()
}

#[test]
fn a_browser_that_sends_no_connect_is_closed_after_the_connect_timeout() {
    let broker = Mosquitto::start();
    let gateway = gateway_with(&broker, |c| {
        c.limits.connect_timeout = Duration::from_secs(1)
    });
    let mut slow = open(&gateway);
    let close = slow.read_close().expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "no CONNECT within 1 s");
}

#[test]
fn the_first_packet_must_be_connect_mqtt_3_1_0_1() {
    let broker = Mosquitto::start();
    let gateway = gateway_with(&broker, |_| {});
    let mut client = open(&gateway);
    client.send(&subscribe_v311(1, "a"));
    let close = client.read_close().expect("a close frame");
    assert_eq!(u16::from(close.code), 1002);
    assert!(close.reason.contains("MQTT-3.1.0-1"), "{}", close.reason);
}

#[test]
fn a_second_connect_closes_the_session_mqtt_3_1_0_2() {
    let broker = Mosquitto::start();
    let gateway = gateway_with(&broker, |_| {});
    let mut client = open(&gateway);
    client.send(&connect_v311("twice"));
    assert_eq!(client.read_packet(), [0x20, 0x02, 0x00, 0x00]);
    client.send(&connect_v311("twice"));
    let close = client.read_close().expect("a close frame");
    assert_eq!(u16::from(close.code), 1002);
    assert!(close.reason.contains("MQTT-3.1.0-2"), "{}", close.reason);
}

#[test]
fn an_oversized_packet_closes_with_1009_and_disconnect_0x95_in_v5() {
    let broker = Mosquitto::start();
    let gateway = gateway_with(&broker, |c| c.limits.max_packet_size = 256);
    let mut client = open(&gateway);
    client.send(&connect_v5("big"));
    assert_eq!(client.read_packet()[0], 0x20);
    // The fixed header alone announces 300 bytes: refused before the body arrives.
    client.send(&[0x30, 0xac, 0x02]);
    assert_eq!(
        client.read_packet(),
        [0xe0, 0x01, 0x95],
        "DISCONNECT Packet too large"
    );
    let close = client.read_close().expect("a close frame");
    assert_eq!(u16::from(close.code), 1009);
}

#[test]
fn a_malformed_packet_closes_only_that_session() {
    let broker = Mosquitto::start();
    let gateway = gateway_with(&broker, |_| {});
    // A good client subscribed before the bad one arrives...
    let mut good = open(&gateway);
    good.send(&connect_v311("good"));
    assert_eq!(good.read_packet(), [0x20, 0x02, 0x00, 0x00]);
    good.send(&subscribe_v311(1, "still/+"));
    assert_eq!(good.read_packet(), [0x90, 0x03, 0x00, 0x01, 0x00]);

    let mut bad = open(&gateway);
    bad.send(&connect_v5("bad"));
    assert_eq!(bad.read_packet()[0], 0x20);
    // PUBLISH with QoS 3.
    bad.send(&[0x36, 0x03, 0x00, 0x01, 0x61]);
    assert_eq!(
        bad.read_packet(),
        [0xe0, 0x01, 0x81],
        "DISCONNECT Malformed Packet"
    );
    let close = bad.read_close().expect("a close frame");
    assert_eq!(u16::from(close.code), 1002);
    assert!(
        close.reason.contains("malformed packet"),
        "{}",
        close.reason
    );

    // ...carries on untouched.
    good.send(&publish_v311("still/here", b"yes"));
    let got = good.read_packet();
    assert!(got.ends_with(b"still/hereyes"), "{got:02x?}");
}

#[test]
fn cross_site_pages_are_refused_and_the_gateways_own_origin_allowed() {
    let broker = Mosquitto::start();
    let gateway = gateway_with(&broker, |c| {
        c.allowed_origins = vec!["https://dash.example.com".into()]
    });
    let url = gateway.ws_url("/mqtt");
    let evil = WsClient::connect_with(&url, Some("mqtt"), &[("Origin", "https://evil.example")])
        .err()
        .unwrap();
    assert!(evil.to_string().contains("403"), "{evil}");
    let own = format!("http://{}", gateway.addr);
    for origin in [own.as_str(), "https://dash.example.com"] {
        let mut c = WsClient::connect_with(&url, Some("mqtt"), &[("Origin", origin)]).unwrap();
        c.send(&connect_v311("origin-ok"));
        assert_eq!(c.read_packet(), [0x20, 0x02, 0x00, 0x00], "{origin}");
    }
}

/// Beyond `max_connections`, a connection is taken on a spare permit: plain requests are
/// served, an MQTT session gets 503 at once (it used to wait unseen in the listen backlog);
/// once a permit is free, sessions are served again.
#[test]
fn connections_over_the_limit_are_told_503_until_a_permit_is_free() {
    let broker = Mosquitto::start();
    let gateway = gateway_with(&broker, |c| c.limits.max_connections = 1);
    let mut first = open(&gateway);
    first.send(&connect_v311("first"));
    assert_eq!(first.read_packet(), [0x20, 0x02, 0x00, 0x00]);
    let url = gateway.ws_url("/mqtt");
    let refused = WsClient::connect(&url, Some("mqtt")).err().unwrap();
    assert!(refused.to_string().contains("503"), "{refused}");
    drop(first);
    kite_tests::wait_for(
        "a session once the permit is free",
        Duration::from_secs(10),
        || WsClient::connect(&url, Some("mqtt")).ok(),
    );
}

#[test]
fn healthz_and_readyz() {
    let broker = Mosquitto::start();
    let up = gateway_with(&broker, |_| {});
    assert_eq!(
        ureq::get(up.http_url("/healthz"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
        "ok\n"
    );
    assert_eq!(
        ureq::get(up.http_url("/readyz")).call().unwrap().status(),
        200
    );
    let dead = free_port();
    let down = Gateway::start(&[&format!("mqtt://127.0.0.1:{dead}")], None);
    let err = ureq::get(down.http_url("/readyz")).call().err().unwrap();
    assert!(err.to_string().contains("503"), "{err}");
    let body = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .get(down.http_url("/readyz"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        !body.contains(&dead.to_string()),
        "never the address: {body}"
    );
}

#[test]
fn a_text_frame_after_connect_closes_with_1003() {
    let broker = Mosquitto::start();
    let gateway = gateway_with(&broker, |_| {});
    let mut c = open(&gateway);
    c.send(&connect_v311("text"));
    assert_eq!(c.read_packet(), [0x20, 0x02, 0x00, 0x00]);
    c.send_text("hello");
    match c.next_message() {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1003),
        other => panic!("{other:?}"),
    }
}

#[test]
fn shutdown_closes_every_session_cleanly() {
    let broker = Mosquitto::start();
    let gateway = gateway_with(&broker, |_| {});
    let mut v5 = open(&gateway);
    v5.send(&connect_v5("bye-5"));
    assert_eq!(v5.read_packet()[0], 0x20);
    let mut v3 = open(&gateway);
    v3.send(&connect_v311("bye-3"));
    assert_eq!(v3.read_packet(), [0x20, 0x02, 0x00, 0x00]);
    let mut waiting = open(&gateway);

    // Dropping the gateway sends the shutdown signal and waits for the server to finish.
    let stopped = std::thread::spawn(move || drop(gateway));
    assert_eq!(
        v5.read_packet(),
        [0xe0, 0x01, 0x8b],
        "DISCONNECT Server shutting down (MQTT 5)"
    );
    for c in [&mut v5, &mut v3, &mut waiting] {
        let close = c.read_close().expect("a close frame");
        assert_eq!(u16::from(close.code), 1001);
        assert_eq!(close.reason.as_str(), "the gateway is shutting down");
    }
    stopped.join().unwrap();
}

#[test]
fn metrics_count_sessions_packets_and_closes() {
    let broker = Mosquitto::start();
    let gateway = gateway_with(&broker, |_| {});
    let mut good = open(&gateway);
    good.send(&connect_v311("metrics-good"));
    assert_eq!(good.read_packet(), [0x20, 0x02, 0x00, 0x00]);
    for _ in 0..2 {
        good.send(&publish_v311("m/t", b"1"));
    }
    let mut bad = open(&gateway);
    bad.send(&subscribe_v311(1, "x"));
    bad.read_close();
    let url = gateway.http_url("/metrics");
    let expected = [
        "kite_sessions_total 2",
        "kite_sessions_open 1",
        "kite_packets_in_total{type=\"CONNECT\"} 1",
        "kite_packets_in_total{type=\"PUBLISH\"} 2",
        "kite_sessions_closed_total{reason=\"violation\"} 1",
    ];
    let text = kite_tests::wait_for("the metrics", Duration::from_secs(10), || {
        let text = ureq::get(&url)
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        expected
            .iter()
            .all(|e| text.lines().any(|l| l == *e))
            .then_some(text)
    });
    assert!(
        text.contains("# TYPE kite_bytes_in_total counter"),
        "{text}"
    );
}

/// `[limits] max_subscriptions`: a session over it is closed with 1008 and, in MQTT 5,
/// DISCONNECT 0x97 Quota exceeded; unsubscribing makes room.
#[test]
fn too_many_subscriptions_close_with_quota_exceeded() {
    use kite_mqtt::codec::{Properties, ReasonCode, Subscription, Unsubscribe};
    use kite_mqtt::{Packet, QoS, Version};
    use kite_tests::client::{TestClient, Via};
    let gateway = Gateway::start_with(&[], None, |c| c.limits.session.max_subscriptions = 2);
    let via = Via::Ws(gateway.ws_url("/mqtt"));
    let mut c = TestClient::connected(&via, Version::V5, "subs");
    c.subscribe("a", QoS::AtMostOnce);
    c.subscribe("b", QoS::AtMostOnce);
    c.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: 2,
        filters: vec!["a".into()],
        properties: Default::default(),
    }));
    assert!(matches!(c.recv(), Packet::UnsubAck(_)));
    c.subscribe("c", QoS::AtMostOnce);
    c.send(&Packet::Subscribe(kite_mqtt::codec::Subscribe {
        packet_id: 3,
        filters: vec![Subscription::new("d", QoS::AtMostOnce)],
        properties: Properties::default().into(),
    }));
    match c.recv() {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::QuotaExceeded),
        other => panic!("expected DISCONNECT 0x97, got {other:?}"),
    }
    assert!(c.try_recv().is_none());
}

/// `[limits] publish_rate`: a page publishing faster is slowed down (the gateway stops reading
/// it for a while), not cut off, and nothing is lost.
#[test]
fn a_fast_publisher_is_throttled_not_dropped() {
    use kite_mqtt::{Packet, QoS, Version};
    use kite_tests::client::{TestClient, Via, publish};
    let gateway = Gateway::start_with(&[], None, |c| c.limits.session.publish_rate = 50);
    let via = Via::Ws(gateway.ws_url("/mqtt"));
    let mut sub = TestClient::connected(&via, Version::V5, "sub");
    sub.subscribe("rate/#", QoS::AtMostOnce);
    let mut fast = TestClient::connected(&via, Version::V5, "fast");
    for i in 0..120 {
        fast.send(&Packet::Publish(publish(
            "rate/x",
            &i.to_string(),
            QoS::AtMostOnce,
            0,
        )));
    }
    for i in 0..120 {
        let p = sub.recv_publish();
        assert_eq!(String::from_utf8_lossy(&p.payload), i.to_string());
    }
    let metrics = ureq::get(&gateway.http_url("/metrics"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let throttled: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kite_publish_throttled_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(throttled > 0, "never throttled:\n{metrics}");
    // The forwarding latency histogram counted both ways.
    for direction in ["up", "down"] {
        let count: u64 = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "kite_forward_seconds_count{{direction=\"{direction}\"}} "
                ))
            })
            .unwrap()
            .parse()
            .unwrap();
        assert!(count > 0, "no {direction} latency recorded:\n{metrics}");
    }
}

/// `[limits] idle_timeout_secs`: a session that sends nothing (keep-alive 0) is closed with
/// 1008 and, in MQTT 5, DISCONNECT 0x8D.
#[test]
fn an_idle_session_is_closed() {
    use kite_mqtt::codec::ReasonCode;
    use kite_mqtt::{Packet, Version};
    use kite_tests::client::{TestClient, Via, connect};
    let gateway = Gateway::start_with(&[], None, |c| {
        c.limits.session.idle_timeout = Some(Duration::from_secs(1))
    });
    let via = Via::Ws(gateway.ws_url("/mqtt"));
    let (mut c, _) = TestClient::connect(
        &via,
        kite_mqtt::codec::Connect {
            keep_alive: 0,
            ..connect(Version::V5, "idle")
        },
    );
    match c.recv() {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::KeepAliveTimeout),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    assert!(c.try_recv().is_none());
}

/// 1,000 hostile connections at once — 250 silent TCP connections, 250 half-sent HTTP
/// requests, 250 WebSockets that never send CONNECT, 250 that send garbage — while a good
/// publisher and subscriber go through the same gateway: every one of 1,000 QoS 1 messages
/// arrives, in order; the garbage senders are closed at once (1002 [MQTT-3.1.0-1]), the
/// silent WebSockets at the CONNECT timeout (1008), and the silent and half-sent HTTP
/// connections at the same timeout (no permit is held forever).
#[test]
fn a_thousand_hostile_connections_do_not_stop_good_clients() {
    use kite_mqtt::{QoS, Version};
    use kite_tests::client::{TestClient, Via, publish};
    use std::io::Write as _;
    // Both ends of 1,000 connections live in this process.
    let _ = rlimit::increase_nofile_limit(8192);
    let broker = Mosquitto::start();
    let gateway = gateway_with(&broker, |c| {
        c.limits.connect_timeout = Duration::from_secs(5);
        // Every connection here comes from 127.0.0.1: the bound per address (1,000 by
        // default, tested in hostile.rs) would count the hostile ones against the good —
        // and the closed ones linger up to 2 s to deliver their close reason.
        c.limits.max_connections_per_address = 2_000;
    });
    let started = std::time::Instant::now();
    let (mut silent, mut half_http, mut no_connect, mut garbage) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..250 {
        silent.push(std::net::TcpStream::connect(gateway.addr).unwrap());
        let mut s = std::net::TcpStream::connect(gateway.addr).unwrap();
        s.write_all(b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
            .unwrap();
        half_http.push(s);
        no_connect.push(open(&gateway));
        let mut g = open(&gateway);
        g.send(&[0xff; 64]);
        garbage.push(g);
    }
    let via = Via::Ws(gateway.ws_url("/mqtt"));
    let mut sub = TestClient::connected(&via, Version::V5, "good-sub");
    sub.subscribe("good/#", QoS::AtLeastOnce);
    let mut publ = TestClient::connected(&via, Version::V5, "good-pub");
    let good = std::thread::spawn(move || {
        for i in 1..=1000u16 {
            let reason = publ.publish(publish("good/x", &i.to_string(), QoS::AtLeastOnce, i));
            assert!(!reason.is_error(), "message {i}: {reason:?}");
        }
    });
    for i in 1..=1000 {
        let p = sub.recv_publish();
        assert_eq!(String::from_utf8_lossy(&p.payload), i.to_string());
        sub.ack(&p);
    }
    good.join().unwrap();
    let carried = started.elapsed();
    for mut g in garbage {
        assert_eq!(u16::from(g.read_close().expect("a close frame").code), 1002);
    }
    for mut n in no_connect {
        assert_eq!(u16::from(n.read_close().expect("a close frame").code), 1008);
    }
    eprintln!(
        "1,000 hostile connections open, 1,000 QoS 1 messages carried in {carried:?}; silent ones closed by {:?}",
        started.elapsed()
    );
    for s in silent.iter_mut().chain(half_http.iter_mut()) {
        use std::io::Read as _;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a silent HTTP connection is still open: {other:?}"),
        }
    }
    eprintln!(
        "silent and half-sent HTTP connections closed by {:?}",
        started.elapsed()
    );
}
