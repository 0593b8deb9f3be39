//! `kill -9` loses nothing the broker acknowledged to the history (issue #19): a child `kite`
//! records `crash/#`; a device publishes at QoS 1 (each PUBACKed: queued for the recorder's
//! persistent session, in the broker's store); Kite is killed with SIGKILL while the recorder
//! is still writing, and restarted on the same data — then every message is in the history
//! (at least once: one the recorder had committed but not yet acknowledged comes again).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kite_mqtt::codec::Publish;
use kite_mqtt::{Packet, QoS};

mod common;

use common::{Client, KillOnDrop};

const MESSAGES: u32 = 3_000;

/// `kite serve` recording `crash/#` into `data`; its HTTP and MQTT addresses.
fn start(data: &Path) -> (KillOnDrop, String, String) {
    let (child, line) = common::serve(
        &[
            OsStr::new("--http"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--mqtt"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
        ],
        &[("KITE_HISTORY__RECORD", OsStr::new("[\"crash/#\"]"))],
    );
    let http = common::address(&line, "http://");
    let mqtt = common::address(&line, "mqtt://");
    (KillOnDrop(child), http, mqtt)
}

/// `GET path` over plain HTTP/1.0: the body.
fn get(http: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(http).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {http}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The payloads recorded for `crash/n`.
fn recorded(http: &str) -> Vec<u32> {
    get(http, "/api/v1/history/export?filter=crash/n")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["payload"].as_str().unwrap().parse().unwrap()
        })
        .collect()
}

#[test]
fn sigkill_loses_nothing_acknowledged_to_the_recorder() {
    let data = std::env::temp_dir().join(format!("kite-history-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (mut kite, _http, mqtt) = start(&data);

    let (mut device, _) = Client::connect(&mqtt, "device", true);
    for i in 0..MESSAGES {
        let id = u16::try_from(i % 60_000 + 1).unwrap();
        device.send(&Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            packet_id: id,
            topic: "crash/n".into(),
            payload: Bytes::from(i.to_string()),
            ..Publish::default()
        }));
        match device.recv() {
            Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, id),
            other => panic!("expected the PUBACK of {i}: {other:?}"),
        }
    }
    // Every message is PUBACKed: now SIGKILL, the recorder likely mid-batch.
    kite.0.kill().unwrap();
    let _ = kite.0.wait();

    let (_kite, http, _) = start(&data);
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let got = recorded(&http);
        let distinct: HashSet<u32> = got.iter().copied().collect();
        if distinct.len() == MESSAGES as usize || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let distinct: HashSet<u32> = got.iter().copied().collect();
    let missing: Vec<u32> = (0..MESSAGES).filter(|i| !distinct.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} missing, the first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // At least once, never invented; duplicates only of a batch in flight at the kill.
    assert!(
        got.len() - distinct.len() <= 1_000,
        "{} duplicates",
        got.len() - distinct.len()
    );
    let _ = std::fs::remove_dir_all(&data);
}
