//! `kite-bench devices`: the device monitor with 10,000 devices — the devices API's answer
//! times (the goal: the whole list in ≤ 50 ms), the memory a device costs the gateway, and
//! how fast the monitor takes messages (the broker's deliveries to a subscriber of the same
//! topics, with and without the monitor).

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kite_mqtt::codec::{Connect, Publish};
use kite_mqtt::{Packet, QoS};

/// `kite serve` with its data in `dir`, monitoring `bench/{device}/#` when `monitor`; and
/// its HTTP port.
fn start_kite(kite: &Path, dir: &Path, monitor: bool) -> (super::Running, u16) {
    let devices = if monitor {
        "[[devices]]\nactivity = \"bench/{device}/#\"\nstale_after_secs = 3600\n[[devices]]\nstatus_topic = \"bench/{device}/status\"\n"
    } else {
        ""
    };
    super::start_kite_configured(kite, dir, devices)
}

/// A connected MQTT client on `port` (blocking).
fn client(port: u16, id: &str) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut buf = BytesMut::new();
    Packet::Connect(Box::new(Connect {
        version: super::V,
        client_id: id.into(),
        keep_alive: 0,
        ..Connect::default()
    }))
    .encode(super::V, &mut buf)
    .unwrap();
    s.write_all(&buf).unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    s
}

/// `n` QoS 0 messages over `devices` device ids under `bench/dev-N/temp`.
fn messages(n: usize, devices: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for k in 0..n {
        Packet::Publish(Publish {
            qos: QoS::AtMostOnce,
            topic: format!("bench/dev-{}/temp", k % devices).as_str().into(),
            payload: format!("{}.{}", 15 + k % 20, k % 10).into(),
            ..Publish::default()
        })
        .encode(super::V, &mut buf)
        .unwrap();
    }
    buf
}

fn get(http: u16, path: &str) -> String {
    ureq::get(&format!("http://127.0.0.1:{http}{path}"))
        .call()
        .unwrap()
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap()
}

/// Median and longest of `runs` timings of `f`, in ms.
fn timings(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

/// A subscriber of `bench/#` (QoS 0) on `port`, its SUBACK read.
fn subscriber(port: u16, id: &str) -> std::net::TcpStream {
    let mut sub = client(port, id);
    let mut buf = BytesMut::new();
    Packet::Subscribe(kite_mqtt::codec::Subscribe {
        packet_id: 1,
        filters: vec![kite_mqtt::codec::Subscription::new(
            "bench/#",
            QoS::AtMostOnce,
        )],
        properties: Default::default(),
    })
    .encode(super::V, &mut buf)
    .unwrap();
    sub.write_all(&buf).unwrap();
    let mut suback = [0u8; 5];
    sub.read_exact(&mut suback).unwrap();
    sub
}

/// The broker's deliveries per second to one subscriber of `bench/#` while a publisher
/// sends `n` QoS 0 messages over `devices` ids as fast as it can; with `second`, another
/// subscriber of `bench/#` takes them too (the reference for the monitor's cost).
fn delivery_rate(port: u16, n: usize, devices: usize, second: bool) -> f64 {
    let mut sub = subscriber(port, "bench-sub");
    let other = second.then(|| {
        let mut s = subscriber(port, "bench-sub-2");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        std::thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            while let Ok(k) = s.read(&mut chunk) {
                if k == 0 {
                    break;
                }
            }
        })
    });
    let load = messages(n, devices);
    let one = load.len() / n;
    let mut publisher = client(port, "bench-pub");
    let start = Instant::now();
    let sender = std::thread::spawn(move || publisher.write_all(&load).unwrap());
    // Each delivery is about as long as its publish (same topic, payload, QoS 0).
    let want = one * n * 95 / 100;
    let mut got = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while got < want {
        match sub.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = sender.join();
    if let Some(t) = other {
        let _ = t.join();
    }
    (got / one) as f64 / secs
}

/// The figures, as table rows.
pub fn figures(kite: &Path, dir: &Path, scale: usize) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();
    let devices = 10_000;
    let (running, http) = start_kite(kite, dir, true);
    let pid = running.target.pid;
    std::thread::sleep(Duration::from_millis(500));
    let before = super::rss_kib(pid);
    let mut c = client(running.target.tcp, "bench-devices");
    c.write_all(&messages(devices, devices)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = get(http, "/metrics");
        if text.contains(&format!("kite_devices{{state=\"online\"}} {devices}")) {
            break;
        }
        assert!(Instant::now() < deadline, "10,000 devices not seen in 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1_500));
    let after = super::rss_kib(pid);
    rows.push((
        "memory per device (10,000 devices, gateway RSS)".into(),
        format!(
            "{:.0} bytes",
            (after.saturating_sub(before) * 1024) as f64 / devices as f64
        ),
        "—".into(),
    ));
    let runs = 30 / scale.min(3);
    let (median, max) = timings(runs, || {
        let body = get(http, "/api/v1/devices?limit=10000");
        assert!(body.len() > devices * 50, "a short answer: {}", body.len());
    });
    rows.push((
        format!("GET /api/v1/devices?limit=10000 (10,000 devices, {runs} runs)"),
        format!("median {median:.1} ms, longest {max:.1} ms"),
        "≤ 50 ms".into(),
    ));
    let (median, max) = timings(runs, || {
        get(http, "/api/v1/devices?state=stale");
    });
    rows.push((
        "GET /api/v1/devices?state=stale (none of 10,000)".into(),
        format!("median {median:.1} ms, longest {max:.1} ms"),
        "—".into(),
    ));
    let (median, max) = timings(runs, || {
        get(http, "/api/v1/devices/dev-5000");
    });
    rows.push((
        "GET /api/v1/devices/dev-5000".into(),
        format!("median {median:.2} ms, longest {max:.2} ms"),
        "—".into(),
    ));
    drop(c);
    drop(running);

    // The monitor's cost to the broker: deliveries alone, beside a second plain subscriber
    // of the same topics, and beside the monitor (medians of 3).
    let n = 1_000_000 / scale;
    let mut rates = Vec::new();
    for (monitor, second) in [(false, false), (false, true), (true, false)] {
        let mut runs: Vec<f64> = (0..3)
            .map(|_| {
                let (running, _) = start_kite(kite, dir, monitor);
                let rate = delivery_rate(running.target.tcp, n, devices, second);
                drop(running);
                rate
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        rates.push(runs[1]);
    }
    let change = |r: f64| (r / rates[0] - 1.0) * 100.0;
    rows.push((
        format!("broker deliveries/s to a subscriber of bench/# ({n} QoS 0 msgs over 10,000 devices): alone / beside a second plain subscriber / beside the monitor"),
        format!(
            "{:.0} / {:.0} ({:+.0} %) / {:.0} ({:+.0} %)",
            rates[0],
            rates[1],
            change(rates[1]),
            rates[2],
            change(rates[2])
        ),
        "—".into(),
    ));
    let _ = std::fs::remove_dir_all(dir);
    rows
}
