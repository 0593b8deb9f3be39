//! `kill -9` of the embedded broker mid-stream loses no acknowledged message: a child `kite`
//! takes 10,000 QoS 1 publishes for an offline persistent subscriber, is killed with SIGKILL
//! after some thousands were PUBACKed, and restarted on the same data; the subscriber then gets
//! every message that was PUBACKed, in publish order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kite_mqtt::codec::{Ack, Publish, Subscribe, Subscription};
use kite_mqtt::{Packet, QoS, Version};

const MESSAGES: u32 = 10_000;
/// QoS 1 messages the publisher keeps unacknowledged at most.
const WINDOW: usize = 64;

mod common;

use common::Client;

/// `kite serve` with the embedded broker on a free port; returns it and the broker's address.
fn start_kite(data: &Path) -> (Child, String) {
    let (child, line) = common::serve_embedded(&[OsStr::new("--data-dir"), data.as_os_str()]);
    (child, common::address(&line, "mqtt://"))
}

#[test]
fn sigkill_loses_no_acknowledged_message() {
    let data = std::env::temp_dir().join(format!("kite-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);

    let (mut kite, addr) = start_kite(&data);
    let (mut sub, _) = Client::connect(&addr, "subscriber", true);
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![Subscription::new("crash/#", QoS::AtLeastOnce)],
        properties: Default::default(),
    }));
    assert!(matches!(sub.recv(), Some(Packet::SubAck(_))));
    sub.send(&Packet::Disconnect(Default::default()));
    drop(sub);

    // The publisher: a writer thread keeps WINDOW messages in flight; this thread reads the
    // PUBACKs and records which messages were acknowledged.
    let (publ, _) = Client::connect(&addr, "publisher", true);
    let mut reader = Client {
        stream: publ.stream.try_clone().unwrap(),
        buf: BytesMut::new(),
    };
    let mut writer = publ;
    let in_flight: Arc<Mutex<HashMap<u16, u32>>> = Arc::default();
    let slots = Arc::new(std::sync::Condvar::new());
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer_thread = {
        let (in_flight, slots, gone) = (in_flight.clone(), slots.clone(), gone.clone());
        std::thread::spawn(move || {
            for i in 0..MESSAGES {
                let id = (i % 60_000 + 1) as u16;
                {
                    let mut f = in_flight.lock().unwrap();
                    while f.len() >= WINDOW {
                        if gone.load(std::sync::atomic::Ordering::SeqCst) {
                            return; // the broker was killed
                        }
                        let (g, timeout) = slots.wait_timeout(f, Duration::from_secs(5)).unwrap();
                        f = g;
                        if timeout.timed_out() {
                            return; // the broker is gone
                        }
                    }
                    f.insert(id, i);
                }
                let p = Packet::Publish(Publish {
                    qos: QoS::AtLeastOnce,
                    topic: "crash/data".into(),
                    packet_id: id,
                    payload: Bytes::from(i.to_string()),
                    ..Publish::default()
                });
                let mut b = BytesMut::new();
                p.encode(Version::V5, &mut b).unwrap();
                if writer.stream.write_all(&b).is_err() {
                    return;
                }
            }
        })
    };
    let kill_after = 3_000;
    let mut acked: Vec<u32> = Vec::new();
    let started = Instant::now();
    while let Some(p) = reader.recv() {
        let Packet::PubAck(a) = p else {
            panic!("expected PUBACK, got {p:?}")
        };
        let i = in_flight.lock().unwrap().remove(&a.packet_id).unwrap();
        slots.notify_one();
        acked.push(i);
        if acked.len() == kill_after {
            // SIGKILL: no shutdown, no flush.
            kite.kill().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "publishing stalled"
        );
    }
    let publish_time = started.elapsed();
    // Wake the writer if it waits for a window slot that will never come.
    {
        let _guard = in_flight.lock().unwrap();
        gone.store(true, std::sync::atomic::Ordering::SeqCst);
        slots.notify_all();
    }
    kite.wait().unwrap();
    writer_thread.join().unwrap();
    assert!(
        acked.len() >= kill_after && acked.len() < MESSAGES as usize,
        "killed mid-stream: {} acknowledged",
        acked.len()
    );

    let (mut kite, addr) = start_kite(&data);
    let (mut sub, present) = Client::connect(&addr, "subscriber", false);
    assert!(present, "the subscriber's session did not survive");
    let mut received: Vec<u32> = Vec::new();
    let highest_acked = *acked.iter().max().unwrap();
    while received.last().is_none_or(|&last| last < highest_acked) {
        match sub.recv() {
            Some(Packet::Publish(p)) => {
                sub.send(&Packet::PubAck(Ack::new(p.packet_id)));
                received.push(std::str::from_utf8(&p.payload).unwrap().parse().unwrap());
            }
            other => panic!(
                "after {} messages (highest acknowledged {highest_acked}): {other:?}",
                received.len()
            ),
        }
    }
    kite.kill().unwrap();
    kite.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);

    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "not in publish order"
    );
    let got: std::collections::HashSet<u32> = received.iter().copied().collect();
    let missing: Vec<u32> = acked.iter().copied().filter(|i| !got.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "crash test: {} PUBACKed before SIGKILL (in {:.2} s), {} delivered after restart, 0 lost",
        acked.len(),
        publish_time.as_secs_f64(),
        received.len()
    );
}
