//! A browser that stops reading costs a bounded amount of memory: a child `kite` (embedded
//! broker) carries 1,000 messages/s of 1 KiB to a WebSocket subscriber that reads nothing for
//! 30 s; the process's resident memory stays under the ceiling the bounds give (gateway
//! buffers + the session's queue, `max_queued_messages_online = 1000` here), new messages for the
//! stalled session are dropped and counted, and once it reads again it gets messages again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kite_mqtt::codec::{Connect, Publish, Subscribe, Subscription};
use kite_mqtt::{Limits, Packet, QoS, Version};
use tokio_tungstenite::tungstenite;

const SECONDS: u64 = 30;
const RATE: u64 = 1_000;
const PAYLOAD: usize = 1024;
/// What the bounds allow: the session's queue (1,000 × ~1.1 KiB), the gateway's buffers
/// (64 KiB reads, one WebSocket frame, the 64 KiB pipe to the broker), with room for the
/// allocator. 30 MB flow through meanwhile.
const CEILING_KIB: u64 = 8 * 1024;

struct Kite(Child);

impl Drop for Kite {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn encode(p: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    p.encode(Version::V5, &mut buf).unwrap();
    buf.to_vec()
}

#[test]
fn a_browser_that_stops_reading_costs_bounded_memory() {
    let dir = std::env::temp_dir().join(format!("kite-slow-reader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("kite.toml");
    std::fs::write(
        &config,
        "[broker]\npersistence = false\nmax_queued_messages_online = 1000\nsys_interval_secs = 0\n",
    )
    .unwrap();
    let (child, line) = common::serve_embedded(&[OsStr::new("--config"), config.as_os_str()]);
    let kite = Kite(child);
    let (http, mqtt) = (
        common::address(&line, "http://"),
        common::address(&line, "mqtt://"),
    );

    // The browser: subscribes, then reads nothing.
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{http}/mqtt"))
            .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (mut ws, _) = tungstenite::connect(request).unwrap();
    let send = |ws: &mut tungstenite::WebSocket<_>, p: &Packet| {
        ws.send(tungstenite::Message::Binary(Bytes::from(encode(p))))
            .unwrap();
    };
    send(
        &mut ws,
        &Packet::Connect(Box::new(Connect {
            client_id: "slow".into(),
            keep_alive: 0,
            ..Connect::default()
        })),
    );
    send(
        &mut ws,
        &Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![Subscription::new("load/#", QoS::AtMostOnce)],
            properties: Default::default(),
        }),
    );
    let mut got = BytesMut::new();
    let mut next = |ws: &mut tungstenite::WebSocket<_>| loop {
        let limits = Limits::default();
        if let Some(p) = kite_mqtt::decode(&mut got, Version::V5, &limits).unwrap() {
            return p;
        }
        match ws.read().unwrap() {
            tungstenite::Message::Binary(b) => got.extend_from_slice(&b),
            tungstenite::Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    };
    assert!(matches!(next(&mut ws), Packet::ConnAck(_)));
    assert!(matches!(next(&mut ws), Packet::SubAck(_)));

    // A device publishes 1,000 msgs/s of 1 KiB for 30 s.
    let mut device = TcpStream::connect(&mqtt).unwrap();
    device
        .write_all(&encode(&Packet::Connect(Box::new(Connect {
            client_id: "device".into(),
            keep_alive: 0,
            ..Connect::default()
        }))))
        .unwrap();
    let pid = kite.0.id();
    let baseline = common::status_kib(pid, "VmRSS");
    let message = encode(&Packet::Publish(Publish {
        topic: "load/x".into(),
        payload: Bytes::from(vec![b'x'; PAYLOAD]),
        ..Publish::default()
    }));
    let started = Instant::now();
    let mut peak = baseline;
    for i in 0..SECONDS * RATE {
        device.write_all(&message).unwrap();
        if i % 100 == 99 {
            let due = started + Duration::from_millis((i + 1) * 1000 / RATE);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        if i % RATE == 0 {
            peak = peak.max(common::status_kib(pid, "VmRSS"));
        }
    }
    peak = peak.max(common::status_kib(pid, "VmRSS"));
    eprintln!(
        "{} MB to a browser that reads nothing for {SECONDS} s: RSS {baseline} KiB before, peak {peak} KiB (+{} KiB; ceiling +{CEILING_KIB} KiB)",
        SECONDS * RATE * PAYLOAD as u64 / 1_000_000,
        peak - baseline
    );
    assert!(
        peak - baseline < CEILING_KIB,
        "memory grew by {} KiB",
        peak - baseline
    );

    // Dropped and counted, not buffered without end.
    let metrics = {
        let mut s = TcpStream::connect(&http).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: kite\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut s, &mut text).unwrap();
        text
    };
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kite_broker_messages_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no drop counter in {metrics}"));
    assert!(dropped > 0, "nothing dropped: {metrics}");

    // It reads again: messages flow again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut received = 0u64;
    while received < 1000 {
        assert!(
            Instant::now() < deadline,
            "only {received} messages after resuming"
        );
        if let Packet::Publish(p) = next(&mut ws) {
            assert_eq!(p.payload.len(), PAYLOAD);
            received += 1;
        }
    }
    drop(kite);
    let _ = std::fs::remove_dir_all(&dir);
}
