//! `cargo bench -p kite-mqtt`: Kite's codec against mqttbytes 0.6 on the same bytes, and the
//! subscription trie with 100,000 subscriptions. Figures go to shared/BENCHMARKS.md.
//!
//! Decode: a stream of 1,000 copies of one packet, read packet by packet (as a connection
//! reads). Encode: 1,000 packets into one reused buffer. Both report packets/s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kite_mqtt::codec::{Properties, Publish, Subscribe, Subscription};
use kite_mqtt::topic::SubscriptionTree;
use kite_mqtt::{Limits, Packet, QoS, Version, decode};

const N: usize = 1_000;

struct Case {
    name: &'static str,
    version: Version,
    kite: Packet,
    other_encode: Box<dyn Fn(&mut BytesMut)>,
    other_decode: fn(&mut BytesMut) -> bool,
}

fn mb_v4_decode(buf: &mut BytesMut) -> bool {
    mqttbytes::v4::read(buf, usize::MAX).is_ok()
}

fn mb_v5_decode(buf: &mut BytesMut) -> bool {
    mqttbytes::v5::read(buf, usize::MAX).is_ok()
}

fn cases() -> Vec<Case> {
    // 1. Small QoS 0 PUBLISH: 17 bytes.
    let small = Publish {
        topic: "sensor/t1".into(),
        payload: Bytes::from_static(b"21.5"),
        ..Publish::default()
    };
    let mb_small =
        mqttbytes::v4::Publish::new("sensor/t1", mqttbytes::QoS::AtMostOnce, &b"21.5"[..]);
    // 2. 1 KiB QoS 1 PUBLISH.
    let payload = Bytes::from(vec![b'x'; 1024]);
    let kib = Publish {
        qos: QoS::AtLeastOnce,
        packet_id: 42,
        topic: "plant/line-3/press/telemetry".into(),
        payload: payload.clone(),
        ..Publish::default()
    };
    let mut mb_kib = mqttbytes::v4::Publish::from_bytes(
        "plant/line-3/press/telemetry",
        mqttbytes::QoS::AtLeastOnce,
        payload,
    );
    mb_kib.pkid = 42;
    // 3. SUBSCRIBE with 10 filters.
    let filters: Vec<String> = (0..10).map(|i| format!("site/{i}/+/status/#")).collect();
    let sub = Subscribe {
        packet_id: 7,
        filters: filters
            .iter()
            .map(|f| Subscription::new(f.as_str(), QoS::AtLeastOnce))
            .collect(),
        properties: Default::default(),
    };
    let mut mb_sub = mqttbytes::v4::Subscribe::new_many(
        filters
            .iter()
            .map(|f| mqttbytes::v4::SubscribeFilter::new(f.clone(), mqttbytes::QoS::AtLeastOnce)),
    );
    mb_sub.pkid = 7;
    // 4. MQTT 5 PUBLISH with properties.
    let json =
        Bytes::from_static(br#"{"temperature":21.5,"humidity":40.2,"battery":87,"ts":1763788800}"#);
    let v5 = Publish {
        qos: QoS::AtLeastOnce,
        packet_id: 9,
        topic: "devices/d-17/state".into(),
        properties: Properties {
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(3600),
            content_type: Some("application/json".into()),
            response_topic: Some("reply/d-17".into()),
            correlation_data: Some(Bytes::from_static(b"req-0042")),
            user_properties: vec![("unit".into(), "celsius".into())],
            ..Properties::default()
        }
        .into(),
        payload: json.clone(),
        ..Publish::default()
    };
    let mut mb_v5 =
        mqttbytes::v5::Publish::from_bytes("devices/d-17/state", mqttbytes::QoS::AtLeastOnce, json);
    mb_v5.pkid = 9;
    mb_v5.properties = Some(mqttbytes::v5::PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(3600),
        topic_alias: None,
        response_topic: Some("reply/d-17".into()),
        correlation_data: Some(Bytes::from_static(b"req-0042")),
        user_properties: vec![("unit".into(), "celsius".into())],
        subscription_identifiers: vec![],
        content_type: Some("application/json".into()),
    });
    vec![
        Case {
            name: "small QoS 0 PUBLISH (17 B)",
            version: Version::V3_1_1,
            kite: Packet::Publish(small),
            other_encode: Box::new(move |b| {
                mb_small.write(b).unwrap();
            }),
            other_decode: mb_v4_decode,
        },
        Case {
            name: "1 KiB QoS 1 PUBLISH",
            version: Version::V3_1_1,
            kite: Packet::Publish(kib),
            other_encode: Box::new(move |b| {
                mb_kib.write(b).unwrap();
            }),
            other_decode: mb_v4_decode,
        },
        Case {
            name: "SUBSCRIBE with 10 filters",
            version: Version::V3_1_1,
            kite: Packet::Subscribe(sub),
            other_encode: Box::new(move |b| {
                mb_sub.write(b).unwrap();
            }),
            other_decode: mb_v4_decode,
        },
        Case {
            name: "v5 PUBLISH with properties",
            version: Version::V5,
            kite: Packet::Publish(v5),
            other_encode: Box::new(move |b| {
                mb_v5.write(b).unwrap();
            }),
            other_decode: mb_v5_decode,
        },
    ]
}

fn codec(c: &mut Criterion) {
    for case in cases() {
        let mut one = BytesMut::new();
        case.kite.encode(case.version, &mut one).unwrap();
        // Both decoders must accept the same bytes.
        assert!(
            (case.other_decode)(&mut one.clone()),
            "{}: mqttbytes cannot read Kite's bytes",
            case.name
        );
        let stream: Vec<u8> = one.iter().copied().cycle().take(one.len() * N).collect();

        let mut g = c.benchmark_group(format!("decode/{}", case.name));
        g.throughput(Throughput::Elements(N as u64));
        let limits = Limits::default();
        g.bench_function("kite", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&stream[..]),
                |buf| {
                    while let Some(p) = decode(buf, case.version, &limits).unwrap() {
                        black_box(p);
                    }
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_function("mqttbytes", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&stream[..]),
                |buf| while (case.other_decode)(buf) {},
                BatchSize::SmallInput,
            )
        });
        if case.name.starts_with("small") {
            // What the `bytes` crate alone costs for one zero-copy handle per packet: split
            // each frame off and drop it, no parsing (the floor under any decoder whose
            // payloads are `Bytes`; see BENCHMARKS.md).
            let len = one.len();
            g.bench_function("bytes floor", |b| {
                b.iter_batched_ref(
                    || BytesMut::from(&stream[..]),
                    |buf| {
                        while buf.len() >= len {
                            black_box(buf.split_to(len).freeze());
                        }
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();

        let mut g = c.benchmark_group(format!("encode/{}", case.name));
        g.throughput(Throughput::Elements(N as u64));
        let mut buf = BytesMut::with_capacity(one.len() * N);
        g.bench_function("kite", |b| {
            b.iter(|| {
                buf.clear();
                for _ in 0..N {
                    case.kite.encode(case.version, &mut buf).unwrap();
                }
                black_box(&buf);
            })
        });
        g.bench_function("mqttbytes", |b| {
            b.iter(|| {
                buf.clear();
                for _ in 0..N {
                    (case.other_encode)(&mut buf);
                }
                black_box(&buf);
            })
        });
        g.finish();
    }
}

/// 100,000 subscriptions of a fleet: per-device filters, per-site wildcards, fleet-wide alarms.
fn topic_tree(c: &mut Criterion) {
    let mut tree = SubscriptionTree::new();
    for i in 0..100_000u32 {
        let site = i % 100;
        let filter = match i % 4 {
            0 => format!("site/{site}/dev/{i}/temp"),
            1 => format!("site/{site}/dev/{i}/+"),
            2 => format!("site/+/dev/{i}/#"),
            _ => format!("site/{site}/dev/+/alarm"),
        };
        tree.insert(&filter, i, QoS::AtLeastOnce).unwrap();
    }
    assert_eq!(tree.len(), 100_000);
    let mut g = c.benchmark_group("topic_tree (100,000 subscriptions)");
    g.throughput(Throughput::Elements(1));
    // One device's reading (1 match), an alarm every subscriber of site 43 gets (1,000
    // matches: fan-out), and a topic nobody wants (0).
    for topic in [
        "site/40/dev/4240/temp",
        "site/43/dev/4243/alarm",
        "site/7/dev/999999/none",
    ] {
        let mut n = 0;
        tree.for_each_match(topic, |_, _| n += 1);
        g.bench_function(format!("match {topic} ({n} matches)"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                tree.for_each_match(black_box(topic), |_, _| n += 1);
                black_box(n)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codec, topic_tree);
criterion_main!(benches);
