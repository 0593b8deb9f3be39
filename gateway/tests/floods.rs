//! Memory under SUBSCRIBE floods, against the real `kite` binary (its peak RSS, VmHWM, is the
//! process's own). Found attacking 0.9: 2,000 filters of 1,000 levels (a 2 MB SUBSCRIBE) grew
//! the process by 1,346 MiB, never given back; a SUBSCRIBE of 10,000 levels killed it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use kite_mqtt::codec::{Connect, Subscribe, Subscription};
use kite_mqtt::{Limits, Packet, QoS, Version};

const V3: Version = Version::V3_1_1;

fn send(s: &mut TcpStream, p: &Packet) {
    let mut buf = BytesMut::new();
    p.encode(V3, &mut buf).unwrap();
    s.write_all(&buf).unwrap();
}

fn recv(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Packet> {
    loop {
        if let Some(p) = kite_mqtt::decode(buf, V3, &Limits::default()).unwrap() {
            return Some(p);
        }
        let mut chunk = [0u8; 64 * 1024];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn client(mqtt: SocketAddr, id: &str) -> (TcpStream, BytesMut) {
    let mut s = TcpStream::connect(mqtt).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    send(
        &mut s,
        &Packet::Connect(Box::new(Connect {
            version: V3,
            client_id: id.into(),
            keep_alive: 60,
            ..Connect::default()
        })),
    );
    let mut buf = BytesMut::new();
    assert!(matches!(recv(&mut s, &mut buf), Some(Packet::ConnAck(_))));
    (s, buf)
}

/// Subscribes to `filters` in one SUBSCRIBE; returns how many were granted.
fn subscribe(mqtt: SocketAddr, id: &str, filters: Vec<String>) -> usize {
    let (mut s, mut buf) = client(mqtt, id);
    let sub = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: filters
            .iter()
            .map(|f| Subscription::new(f.as_str(), QoS::AtMostOnce))
            .collect(),
        properties: Default::default(),
    });
    send(&mut s, &sub);
    match recv(&mut s, &mut buf) {
        Some(Packet::SubAck(a)) => a.reasons.iter().filter(|r| !r.is_error()).count(),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// A client still gets what it subscribed to.
fn still_serving(mqtt: SocketAddr) {
    let (mut sub, mut buf) = client(mqtt, "bystander");
    send(
        &mut sub,
        &Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![Subscription::new("ok/#", QoS::AtMostOnce)],
            properties: Default::default(),
        }),
    );
    assert!(matches!(recv(&mut sub, &mut buf), Some(Packet::SubAck(_))));
    let (mut publ, _) = client(mqtt, "bystander-pub");
    send(
        &mut publ,
        &Packet::Publish(kite_mqtt::codec::Publish {
            topic: "ok/1".into(),
            payload: "fine".into(),
            ..Default::default()
        }),
    );
    match recv(&mut sub, &mut buf) {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"fine"),
        other => panic!("expected the message, got {other:?}"),
    }
}

/// How many filters a flood has: as many as fit in so many bytes, or a count.
#[derive(Clone, Copy)]
enum Size {
    Bytes(usize),
    Count(usize),
}

/// Filters of `levels` levels, made unique by their first level.
fn deep_filters(levels: usize, unit: &str, size: Size) -> Vec<String> {
    let mut out = Vec::new();
    let mut total = 0;
    let mut i = 0;
    while match size {
        Size::Bytes(b) => total < b,
        Size::Count(n) => out.len() < n,
    } {
        let f = format!("{i}{}", unit.repeat(levels - 1));
        total += f.len() + 3;
        out.push(f);
        i += 1;
    }
    out
}

/// With the default limits (128 levels, 4,096 bytes, 1,000 subscriptions per session): four
/// SUBSCRIBEs of nearly 16 MiB each — filters of 128 levels (accepted up to the session's
/// bound), of 1,000 levels, and of 32,767 `+` levels (refused) — from four clients. With the
/// limits opened (65,536 levels, 65,535 bytes, 10,000 subscriptions), the 2,000
/// filters of 1,000 levels. The peak RSS stays under 200 MiB and another client is served.
#[test]
fn subscribe_floods_stay_within_a_memory_bound() {
    let dir = std::env::temp_dir().join(format!("kite-floods-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let open = dir.join("open.toml");
    std::fs::write(
        &open,
        "[broker]\nmax_topic_levels = 65536\nmax_topic_length = 65535\nmax_subscriptions = 10000\n",
    )
    .unwrap();
    let just_under_16_mib = 16 * 1024 * 1024 - 64 * 1024;
    for (config, cases) in [
        (
            None,
            vec![
                ("a/", 128, Size::Bytes(just_under_16_mib), 1_000),
                ("/", 128, Size::Bytes(just_under_16_mib), 1_000),
                ("/a", 1_000, Size::Bytes(just_under_16_mib), 0),
                ("/+", 32_767, Size::Bytes(just_under_16_mib), 0),
            ],
        ),
        (Some(&open), vec![("/", 1_000, Size::Count(2_000), 2_000)]),
    ] {
        let data = dir.join("data");
        let mut args = vec!["--data-dir".as_ref(), data.as_os_str()];
        if let Some(c) = config {
            args.extend(["--config".as_ref(), c.as_os_str()]);
        }
        let (child, line) = common::serve_embedded(&args);
        let mut child = common::KillOnDrop(child);
        let mqtt: SocketAddr = common::address(&line, "mqtt://").parse().unwrap();
        let before = common::status_kib(child.0.id(), "VmHWM") / 1024;
        for (i, (unit, levels, bytes, granted)) in cases.iter().enumerate() {
            let filters = deep_filters(*levels, unit, *bytes);
            let n = filters.len();
            let got = subscribe(mqtt, &format!("flood-{i}"), filters);
            assert_eq!(got, *granted, "{n} filters of {levels} levels ({unit:?})");
        }
        still_serving(mqtt);
        let peak = common::status_kib(child.0.id(), "VmHWM") / 1024;
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let _ = std::fs::remove_dir_all(&data);
        println!(
            "{}: peak RSS {before} MiB before, {peak} MiB through the floods",
            if config.is_some() {
                "limits opened"
            } else {
                "default limits"
            }
        );
        assert!(peak < 200, "peak RSS {peak} MiB");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
