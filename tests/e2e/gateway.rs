//! MQTT over WebSocket through the gateway to a real mosquitto.

use kite_tests::mqtt::{WsClient, connect_v5, connect_v311, subscribe_v311};
use kite_tests::{Gateway, Mosquitto, free_port};

fn setup() -> (Mosquitto, Gateway) {
    let broker = Mosquitto::start();
    let gateway = Gateway::start(&[&broker.url()], None);
    (broker, gateway)
}

#[test]
fn v311_session_through_the_gateway_receives_a_device_message() {
    let (broker, gateway) = setup();
    let mut client = WsClient::connect(&gateway.ws_url("/mqtt"), Some("mqtt")).unwrap();
    client.send(&connect_v311("kite-e2e-311"));
    // CONNACK: session present 0, return code 0 (accepted).
    assert_eq!(client.read_packet(), [0x20, 0x02, 0x00, 0x00]);
    client.send(&subscribe_v311(1, "kite/e2e/#"));
    // SUBACK for packet id 1, granted QoS 0.
    assert_eq!(client.read_packet(), [0x90, 0x03, 0x00, 0x01, 0x00]);
    broker.publish("kite/e2e/temp", "21.5");
    let publish = client.read_packet();
    let mut expected = vec![0x30, 2 + 13 + 4, 0x00, 13];
    expected.extend_from_slice(b"kite/e2e/temp21.5");
    assert_eq!(publish, expected);
}

#[test]
fn v5_connect_is_carried_and_answered() {
    let (_broker, gateway) = setup();
    let mut client = WsClient::connect(&gateway.ws_url("/mqtt"), Some("mqtt")).unwrap();
    client.send(&connect_v5("kite-e2e-5"));
    let connack = client.read_packet();
    // CONNACK, flags 0, reason code 0x00 Success (mosquitto adds v5 properties after it).
    assert_eq!(connack[0], 0x20, "{connack:02x?}");
    assert_eq!(&connack[2..4], &[0x00, 0x00], "{connack:02x?}");
}

#[test]
fn a_packet_split_across_frames_and_two_packets_in_one_frame_both_work() {
    let (_broker, gateway) = setup();
    let mut client = WsClient::connect(&gateway.ws_url("/mqtt"), Some("mqtt")).unwrap();
    let connect = connect_v311("kite-e2e-split");
    let (a, b) = connect.split_at(5);
    client.send(a);
    client.send(b);
    assert_eq!(client.read_packet(), [0x20, 0x02, 0x00, 0x00]);
    // SUBSCRIBE and PINGREQ in one frame.
    let mut both = subscribe_v311(7, "x/y");
    both.extend_from_slice(&[0xC0, 0x00]);
    client.send(&both);
    assert_eq!(client.read_packet(), [0x90, 0x03, 0x00, 0x07, 0x00]);
    assert_eq!(client.read_packet(), [0xD0, 0x00]);
}

#[test]
fn the_legacy_mqttv31_subprotocol_is_accepted() {
    let (_broker, gateway) = setup();
    let mut client = WsClient::connect(&gateway.ws_url("/mqtt"), Some("mqttv3.1")).unwrap();
    client.send(&connect_v311("kite-e2e-legacy"));
    assert_eq!(client.read_packet(), [0x20, 0x02, 0x00, 0x00]);
}

#[test]
fn a_named_upstream_is_reachable_at_its_path() {
    let broker = Mosquitto::start();
    let dead = free_port();
    let gateway = Gateway::start(
        &[
            &format!("mqtt://127.0.0.1:{dead}"),
            &format!("lab={}", broker.url()),
        ],
        None,
    );
    let mut client = WsClient::connect(&gateway.ws_url("/mqtt/lab"), Some("mqtt")).unwrap();
    client.send(&connect_v311("kite-e2e-named"));
    assert_eq!(client.read_packet(), [0x20, 0x02, 0x00, 0x00]);
    let err = WsClient::connect(&gateway.ws_url("/mqtt/nope"), Some("mqtt"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("404"), "{err}");
    // Asked without a WebSocket (as the app's probe after a failed one asks): the unknown
    // upstream is a 404 that says so, a known one a 426.
    let (status, text) = gateway.get_text("/mqtt/nope");
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("no upstream named \"nope\""), "{text}");
    let (status, text) = gateway.get_text("/mqtt/lab");
    assert_eq!(status, 426, "{text}");
    assert!(text.contains("WebSocket"), "{text}");
}

#[test]
fn a_text_frame_closes_the_connection_mqtt_6_0_0_1() {
    let (_broker, gateway) = setup();
    let mut client = WsClient::connect(&gateway.ws_url("/mqtt"), Some("mqtt")).unwrap();
    client.send_text("CONNECT");
    let close = client.read_close().expect("a close frame with a reason");
    assert_eq!(u16::from(close.code), 1003);
    assert!(close.reason.contains("MQTT-6.0.0-1"), "{}", close.reason);
}

#[test]
fn a_client_without_the_mqtt_subprotocol_is_refused_mqtt_6_0_0_3() {
    let (_broker, gateway) = setup();
    let err = WsClient::connect(&gateway.ws_url("/mqtt"), None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("400"), "{err}");
}

#[test]
fn an_unreachable_broker_closes_with_a_reason_and_hides_the_address() {
    let dead = free_port();
    let gateway = Gateway::start(&[&format!("mqtt://127.0.0.1:{dead}")], None);
    let mut client = WsClient::connect(&gateway.ws_url("/mqtt"), Some("mqtt")).unwrap();
    // The upstream is contacted once the browser's CONNECT is in.
    client.send(&connect_v311("kite-e2e-dead"));
    let close = client.read_close().expect("a close frame with a reason");
    assert_eq!(u16::from(close.code), 1011);
    assert!(
        close.reason.contains("cannot reach the upstream broker"),
        "{}",
        close.reason
    );
    assert!(!close.reason.contains("127.0.0.1"), "{}", close.reason);
}

#[test]
fn the_broker_closing_closes_the_websocket() {
    let (_broker, gateway) = setup();
    let mut client = WsClient::connect(&gateway.ws_url("/mqtt"), Some("mqtt")).unwrap();
    client.send(&connect_v311("kite-e2e-close"));
    assert_eq!(client.read_packet(), [0x20, 0x02, 0x00, 0x00]);
    // DISCONNECT: mosquitto closes the TCP connection; the gateway passes that on.
    client.send(&[0xe0, 0x00]);
    let close = client.read_close().expect("a close frame");
    assert_eq!(u16::from(close.code), 1000);
}

#[test]
fn api_lists_upstream_names_never_addresses() {
    let (broker, gateway) = setup();
    let mut response = ureq::get(gateway.http_url("/api/v1/upstreams"))
        .call()
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let body = response.body_mut().read_to_string().unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"default": "default", "upstreams": ["default"], "history": false, "devices": false, "alarms": false, "dashboards": false})
    );
    assert!(!body.contains(&broker.port.to_string()));
}

/// `kite_paced_reads_total{direction="…"}` of the gateway.
fn paced_reads(gateway: &Gateway, direction: &str) -> u64 {
    let text = ureq::get(&gateway.http_url("/metrics"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let name = format!("kite_paced_reads_total{{direction=\"{direction}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(name.as_str()))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .parse()
        .unwrap()
}

/// Sends `topic` messages `0`, `1`, ... one write (one WebSocket frame) each at about 20,000
/// a second — a session that wakes the gateway more than 5,000 times a second is paced — until
/// the gateway says it paced this `direction`'s reads (bounded: 100,000 messages). Returns how
/// many went.
fn send_until_paced(
    sender: &mut kite_tests::client::TestClient,
    gateway: &Gateway,
    direction: &str,
    topic: &str,
) -> usize {
    use kite_mqtt::{Packet, QoS};
    let mut sent = 0;
    while sent < 100_000 {
        for _ in 0..2_000 {
            let p = kite_tests::client::publish(topic, &sent.to_string(), QoS::AtMostOnce, 0);
            sender.send(&Packet::Publish(p));
            sent += 1;
            let until = std::time::Instant::now() + std::time::Duration::from_micros(50);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        if paced_reads(gateway, direction) > 0 {
            break;
        }
    }
    sent
}

/// A busy session is paced: past 5,000 wake-ups a second its reads wait for the next 1 ms
/// tick, so that what arrived meanwhile goes in one read and one write (counted in
/// `kite_paced_reads_total`) — and nothing is lost or reordered, either way [MQTT-4.6.0-6]
/// (messages of one topic from one publisher arrive in the order sent).
#[test]
fn a_busy_session_is_paced_and_loses_nothing() {
    use kite_mqtt::{Packet, QoS, Version};
    use kite_tests::client::{TestClient, Via};
    let broker = Mosquitto::start_with("persistence false\nmax_queued_messages 1000000\n");
    let gateway = Gateway::start(&[&broker.url()], None);
    let ws = Via::Ws(gateway.ws_url("/mqtt"));
    let mut sub = TestClient::connected(&ws, Version::V3_1_1, "busy-sub");
    sub.subscribe("busy/#", QoS::AtMostOnce);
    // Read while the others send: what the subscriber got, per topic.
    let reader = std::thread::spawn(move || {
        let mut got: std::collections::HashMap<String, Vec<usize>> = Default::default();
        while let Some(p) = sub.try_recv() {
            let Packet::Publish(p) = p else { continue };
            let n: usize = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
            if p.topic.as_str() == "busy/end" {
                break;
            }
            got.entry(p.topic.to_string()).or_default().push(n);
        }
        got
    });
    // Broker → browser: a device on mosquitto's TCP listener, one write per message.
    let device_addr: std::net::SocketAddr = format!("127.0.0.1:{}", broker.port).parse().unwrap();
    let mut device = TestClient::connected(&Via::Tcp(device_addr), Version::V3_1_1, "busy-device");
    let down = send_until_paced(&mut device, &gateway, "down", "busy/device");
    // mosquitto has routed all of them once it answers the PINGREQ behind them.
    device.barrier();
    // Browser → broker: a browser through the gateway, one frame per message.
    let mut browser = TestClient::connected(&ws, Version::V3_1_1, "busy-browser");
    let up = send_until_paced(&mut browser, &gateway, "up", "busy/browser");
    // The end marker goes after both, on the browser's session (ordered after its messages).
    browser.send(&Packet::Publish(kite_tests::client::publish(
        "busy/end",
        "0",
        QoS::AtMostOnce,
        0,
    )));
    let got = reader.join().unwrap();
    assert!(paced_reads(&gateway, "down") > 0 && paced_reads(&gateway, "up") > 0);
    for (topic, sent) in [("busy/device", down), ("busy/browser", up)] {
        let list = got.get(topic).map_or(&[][..], Vec::as_slice);
        assert_eq!(list.len(), sent, "{topic}: every message arrives");
        assert!(
            list.iter().enumerate().all(|(i, n)| i == *n),
            "{topic}: in the order sent"
        );
    }
}
