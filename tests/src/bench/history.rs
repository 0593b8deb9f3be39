//! `kite-bench history`: the history store's own figures (ingest, series queries, export,
//! bytes on disk), then ingest through the embedded broker with the recorder on and off.

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use kite_data::{Record, RedbStorage, Retention, Span, Storage, Stored, Sync};
use kite_mqtt::QoS;

const FOREVER: Retention = Retention {
    max_age: None,
    max_bytes: u64::MAX,
};

fn message(t: u64, payload: Bytes) -> Stored {
    Stored {
        t,
        payload,
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    }
}

/// A 64-byte JSON payload with two numbers.
fn payload64(i: u64) -> Bytes {
    let mut s = format!(
        "{{\"temp\": {}.{}, \"hum\": {}, \"seq\": {i}",
        15 + i % 20,
        i % 10,
        40 + i % 30
    );
    while s.len() < 63 {
        s.push(' ');
    }
    s.push('}');
    Bytes::from(s)
}

/// Median of `runs` timings of `f`, in ms.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The store's figures, as table rows.
pub fn storage(dir: &Path, scale: u64) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();

    // Ingest: 1,000 topics, 64-byte JSON payloads, batches of 500 (as the recorder commits),
    // fsync on every commit.
    let d = dir.join("ingest");
    let s = RedbStorage::open(&d, Sync::Always, FOREVER).unwrap();
    let total = 1_000_000 / scale;
    let topics: Vec<String> = (0..1_000)
        .map(|i| format!("plant/line-{}/sensor-{i}", i % 10))
        .collect();
    let start = Instant::now();
    let mut batch = Vec::with_capacity(500);
    for i in 0..total {
        batch.push(Record {
            topic: topics[(i % 1_000) as usize].clone(),
            message: message(1_700_000_000_000 + i, payload64(i)),
        });
        if batch.len() == 500 {
            s.record(&batch).unwrap();
            batch.clear();
        }
    }
    s.record(&batch).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let rate = total as f64 / secs;
    let file = std::fs::metadata(s.path()).unwrap().len();
    println!("ingest: {total} msgs in {secs:.2} s = {rate:.0} msgs/s; file {file} bytes");
    rows.push((
        "ingest into the store (1,000 topics, 64 B JSON with 2 numbers, batches of 500, fsync each)".into(),
        format!("{rate:.0} msgs/s"),
        "≥ 50,000 msgs/s".into(),
    ));

    // Export of what was just recorded, as NDJSON lines into memory that is reused.
    let mut line = Vec::with_capacity(256);
    let mut lines = 0u64;
    let start = Instant::now();
    s.export("#", Span::ALL, &mut |topic, m| {
        line.clear();
        serde_json::to_writer(
            &mut line,
            &serde_json::json!({"topic": topic, "t": m.t, "payload": std::str::from_utf8(&m.payload).unwrap_or(""), "qos": m.qos as u8, "retain": m.retain}),
        )
        .unwrap();
        line.push(b'\n');
        lines += 1;
        true
    })
    .unwrap();
    let rate = lines as f64 / start.elapsed().as_secs_f64();
    println!("export: {lines} lines at {rate:.0} lines/s");
    rows.push((
        "export as NDJSON (formatting included)".into(),
        format!("{rate:.0} lines/s"),
        "≥ 200,000 lines/s".into(),
    ));
    drop(s);
    let _ = std::fs::remove_dir_all(&d);

    // Series: 1,000,000 points (1 Hz) and a day of them, to 1,000 buckets.
    let d = dir.join("series");
    let s = RedbStorage::open(&d, Sync::Periodic, FOREVER).unwrap();
    let points = 1_000_000 / scale;
    let t0 = 1_700_000_000_000;
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..points {
        batch.push(Record {
            topic: "plant/line-1/temp-01".into(),
            message: message(
                t0 + i * 1_000,
                Bytes::from(format!("{:.5}", 20.0 + (i % 1000) as f64 / 100.0)),
            ),
        });
        if batch.len() == 10_000 {
            s.record(&batch).unwrap();
            batch.clear();
        }
    }
    s.record(&batch).unwrap();
    s.prune(0).unwrap();
    // Bytes on disk per message: the file after compaction-free recording.
    let file = std::fs::metadata(s.path()).unwrap().len();
    let per = file as f64 / points as f64;
    println!(
        "disk: {points} 8-byte payloads on a 20-byte topic: file {file} bytes = {per:.1} B/message"
    );
    rows.push((
        "disk per recorded 8-byte number on a 20-byte topic (message + its number)".into(),
        format!("{per:.1} B"),
        "≤ 40 B".into(),
    ));
    let all = Span {
        from: t0,
        to: t0 + points * 1_000,
    };
    let ms = median_ms(15, || {
        let r = s.series("plant/line-1/temp-01", None, all, 1_000).unwrap();
        assert_eq!(r[0].buckets.iter().map(|b| b.count).sum::<u64>(), points);
    });
    println!("series: {points} points to 1,000 buckets: {ms:.1} ms");
    rows.push((
        format!("series query, {points} points → 1,000 buckets (median of 15)"),
        format!("{ms:.1} ms"),
        "≤ 50 ms".into(),
    ));
    let day = Span {
        from: t0,
        to: t0 + 86_399_000,
    };
    let ms = median_ms(15, || {
        let r = s.series("plant/line-1/temp-01", None, day, 1_000).unwrap();
        assert_eq!(
            r[0].buckets.iter().map(|b| b.count).sum::<u64>(),
            86_400.min(points)
        );
    });
    println!("series: a day at 1 Hz to 1,000 buckets: {ms:.2} ms");
    rows.push((
        "series query, a day at 1 Hz (86,400 points) → 1,000 buckets (median of 15)".into(),
        format!("{ms:.2} ms"),
        "≤ 10 ms".into(),
    ));
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
    rows
}
