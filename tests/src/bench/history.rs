//! `kite-bench history`: the history store's own figures (ingest, series queries, export,
//! bytes on disk), then ingest through the embedded broker with the recorder on and off.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// `kite serve` (the embedded broker, its data in `dir`), recording `bench/#` when `record`.
fn start_recording_kite(kite: &Path, dir: &Path, record: bool) -> super::Running {
    let history = if record {
        "[history]\nrecord = [\"bench/#\"]\n"
    } else {
        ""
    };
    super::start_kite_configured(kite, dir, history).0
}

/// A metric's value from `/metrics` at `http` (`ws` holds the HTTP base URL here).
fn metric(http: &str, name: &str) -> u64 {
    let text = ureq::get(&format!("{http}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// One run: `publishers` × `per` QoS 0 publishes of 64-byte numeric payloads over 1,000
/// topics, as fast as the broker takes them, to one subscriber of `bench/#`. Returns the
/// broker's rate (deliveries to the subscriber per second) and, when recording, the recorded
/// rate (messages committed to the history per second, from the first publish until the last
/// was committed) and the broker's drops.
async fn ingest_run(
    target: &super::Target,
    publishers: usize,
    per: usize,
    record: bool,
    reader: bool,
) -> (f64, f64, u64) {
    use kite_mqtt::codec::{Publish, Subscribe, Subscription};
    use kite_mqtt::{Packet, QoS};
    let total = publishers * per;
    let (mut rd, mut wr) = super::open(target, super::Transport::Tcp, "history-bench-sub").await;
    let mut b = bytes::BytesMut::new();
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![Subscription::new("bench/#", QoS::AtMostOnce)],
        properties: Default::default(),
    })
    .encode(super::V, &mut b)
    .unwrap();
    wr.send(b.freeze()).await;
    assert!(matches!(rd.recv().await, Some(Packet::SubAck(_))));
    // For comparison: a second reader of everything that only reads (what any second
    // subscriber costs the broker), instead of the recorder.
    let second = if reader {
        let (mut rd2, mut wr2) =
            super::open(target, super::Transport::Tcp, "history-bench-second").await;
        let mut b = bytes::BytesMut::new();
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![Subscription::new("bench/#", QoS::AtMostOnce)],
            properties: Default::default(),
        })
        .encode(super::V, &mut b)
        .unwrap();
        wr2.send(b.freeze()).await;
        assert!(matches!(rd2.recv().await, Some(Packet::SubAck(_))));
        Some(tokio::spawn(async move {
            let _keep = wr2;
            loop {
                while rd2.buffered().is_some() {}
                match tokio::time::timeout(std::time::Duration::from_secs(2), rd2.fill()).await {
                    Ok(true) => {}
                    _ => break,
                }
            }
        }))
    } else {
        None
    };
    let recorded_before = if record {
        metric(&target.ws, "kite_history_recorded_total")
    } else {
        0
    };
    let start = Instant::now();
    for p in 0..publishers {
        let target = target.clone();
        super::PUBLISHERS.spawn(async move {
            let (_rd, mut wr) = super::open(
                &target,
                super::Transport::Tcp,
                &format!("history-bench-pub-{p}"),
            )
            .await;
            let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
            for i in 0..per {
                let k = p * per + i;
                let mut payload = format!("{}.{}", 15 + k % 20, k % 100);
                while payload.len() < 64 {
                    payload.push(' ');
                }
                Packet::Publish(Publish {
                    qos: QoS::AtMostOnce,
                    topic: format!("bench/dev-{}/temp", k % 1_000).as_str().into(),
                    payload: payload.into(),
                    ..Publish::default()
                })
                .encode(super::V, &mut buf)
                .unwrap();
                if buf.len() >= 32 * 1024 {
                    wr.send(buf.split().freeze()).await;
                }
            }
            wr.send(buf.split().freeze()).await;
            // Keep the connection until the subscriber is done (a closed one may lose the tail).
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        });
    }
    // Until all arrived, or none for 2 s (the broker dropped the rest for a slow reader:
    // counted in its metrics); the rate is up to the last delivery.
    let (got, last_at) = receive(&mut rd, total, start).await;
    let broker_rate = got as f64 / (last_at - start).as_secs_f64();
    if let Some(second) = second {
        second.abort();
    }
    if got < total {
        println!("  the subscriber got {got} of {total}");
    }
    if !record {
        return (broker_rate, 0.0, 0);
    }
    let goal = recorded_before + total as u64;
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let mut last = recorded_before;
    let mut last_change = Instant::now();
    loop {
        let now = metric(&target.ws, "kite_history_recorded_total");
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        // Done, or nothing more for 2 s (the broker dropped the rest: counted below).
        if now >= goal
            || last_change.elapsed() > std::time::Duration::from_secs(2)
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let recorded = last - recorded_before;
    let secs = (last_change - start).as_secs_f64();
    let dropped = metric(&target.ws, "kite_broker_messages_dropped_total");
    (broker_rate, recorded as f64 / secs, dropped)
}

/// Ingest through the embedded broker, with and without the recorder (3 runs each, on fresh
/// servers, alternating; medians).
pub fn through_broker(
    kite: &Path,
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    scale: usize,
) -> Vec<(String, String, String)> {
    let (publishers, per) = (2, 250_000 / scale);
    let mut off = Vec::new();
    let mut on = Vec::new();
    let mut second = Vec::new();
    let mut recorded = Vec::new();
    let mut drops = Vec::new();
    for run in 0..3 {
        for (mode, record, reader) in [
            ("alone", false, false),
            ("second reader", false, true),
            ("recorder", true, false),
        ] {
            let running = start_recording_kite(
                kite,
                &dir.join(format!("ingest-{run}-{record}-{reader}")),
                record,
            );
            let (rate, rec, dropped) =
                rt.block_on(ingest_run(&running.target, publishers, per, record, reader));
            println!(
                "run {run} {mode}: broker {rate:.0} msgs/s, recorded {rec:.0} msgs/s, dropped {dropped}"
            );
            match (record, reader) {
                (true, _) => {
                    on.push(rate);
                    recorded.push(rec);
                    drops.push(dropped);
                }
                (false, true) => second.push(rate),
                (false, false) => off.push(rate),
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off, on, two, rec) = (
        median(&mut off),
        median(&mut on),
        median(&mut second),
        median(&mut recorded),
    );
    let total = publishers * per;
    vec![
        (
            format!("broker throughput, {total} QoS 0 msgs (64 B numbers, 1,000 topics) to a `bench/#` subscriber: alone → with a second plain subscriber → with the recorder instead (median of 3)"),
            format!(
                "{off:.0} → {two:.0} ({:+.0} %) → {on:.0} msgs/s ({:+.0} %)",
                (two / off - 1.0) * 100.0,
                (on / off - 1.0) * 100.0
            ),
            "falls by at most 20 %".into(),
        ),
        (
            "recorded through the broker (first publish → last commit, fsync per batch; broker drops in the runs)".into(),
            format!("{rec:.0} msgs/s (drops: {drops:?})"),
            "≥ 50,000 msgs/s".into(),
        ),
    ]
}

/// The chart in headless Chromium: a topic with `points` recorded numbers, opened in the app;
/// then 4 s of zooming (wheel) and panning (drags) while `requestAnimationFrame` timestamps
/// every frame. Returns the table rows: the longest frame, frames over 20 ms, long tasks, and
/// how many series requests the gateway answered meanwhile.
pub fn chart(kite: &Path, dir: &Path, assets: &Path, points: u64) -> Vec<(String, String, String)> {
    use kite_mqtt::{Packet, QoS};
    let data = dir.join("chart");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("kite.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_connections_per_address = 0\n[broker]\ndata_dir = \"{}\"\nsys_interval_secs = 0\n[history]\nrecord = [\"bench/#\"]\n",
            data.join("data").display()
        ),
    )
    .unwrap();
    let (http, mqtt) = (super::free_port(), super::free_port());
    let child = std::process::Command::new(kite)
        .args(["serve", "--http", &format!("127.0.0.1:{http}")])
        .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
        .arg("--config")
        .arg(&config)
        .arg("--assets")
        .arg(assets)
        .env("KITE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _kite = super::Running {
        target: super::Target {
            name: "Kite",
            tcp: mqtt,
            ws: String::new(),
            ws_protocol: "mqtt",
            pid: child.id(),
        },
        child,
    };
    super::wait_port(mqtt);
    super::wait_port(http);
    let base = format!("http://127.0.0.1:{http}");

    // The recorded points: a wave with noise, in batches of 1,000 publishes per write.
    let device = kite_tests::client::Via::Tcp(format!("127.0.0.1:{mqtt}").parse().unwrap());
    let mut d = kite_tests::client::TestClient::connected(&device, super::V, "chart-device");
    let started = Instant::now();
    let mut sent = 0;
    while sent < points {
        let batch: Vec<Packet> = (sent..(sent + 1_000).min(points))
            .map(|i| {
                let v = 20.0 + 5.0 * ((i as f64) / 5_000.0).sin() + (i % 7) as f64 * 0.1;
                Packet::Publish(kite_tests::client::publish(
                    "bench/chart",
                    &format!("{v:.2}"),
                    QoS::AtMostOnce,
                    0,
                ))
            })
            .collect();
        sent += batch.len() as u64;
        d.send_all(&batch);
    }
    kite_tests::wait_for("the points recorded", Duration::from_secs(120), || {
        (metric(&base, "kite_history_recorded_total") >= points).then_some(())
    });
    println!(
        "chart: {points} points recorded in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let browser = kite_tests::browser::Browser::start();
    browser.resize(1280, 800);
    browser.goto(&format!("{base}/"));
    kite_tests::wait_for("the app", Duration::from_secs(30), || {
        browser.text("#kite-app h1")
    });
    browser.eval(
        r#"localStorage.setItem('kite.profiles', JSON.stringify([{id: "bench", name: "bench", client_id: "kite-bench-chart", subscriptions: [{filter: "bench/#", qos: 0}]}])); return null;"#,
    );
    browser.goto(&format!("{base}/connections/bench/topic/bench/chart"));
    kite_tests::wait_for("the connection page", Duration::from_secs(30), || {
        browser.text("#connect")
    });
    browser.eval("document.querySelector('#connect').click(); return null;");
    kite_tests::wait_for("the subscription", Duration::from_secs(30), || {
        browser
            .text(".subscription")
            .filter(|t| t.contains("granted"))
    });
    d.send_all(&[Packet::Publish(kite_tests::client::publish(
        "bench/chart",
        "20",
        QoS::AtMostOnce,
        0,
    ))]);
    kite_tests::wait_for("the recorded history", Duration::from_secs(30), || {
        browser
            .text(".recorded h4")
            .filter(|t| t.contains("Recorded on the gateway"))
    });
    let drawn = "const c = document.querySelector('canvas.chart'); if (!c) return 0; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 0; i < d.length; i += 4) { if (d[i + 3] > 0 && d[i + 2] > d[i] + 40) n++; } return n;";
    kite_tests::wait_for("the chart drawn", Duration::from_secs(30), || {
        (browser.eval(drawn).as_u64()? > 500).then_some(())
    });
    let buckets = browser.eval("return performance.getEntriesByType('resource').filter(e => e.name.includes('/series')).length;");
    // 4 s of interaction: a wheel step or a drag move every 25 ms, from a timer (as a
    // person's input arrives between frames), frames timed by requestAnimationFrame.
    browser.eval(
        r#"
        window.__frames = []; window.__long = []; window.__done = false;
        new PerformanceObserver(l => { for (const e of l.getEntries()) window.__long.push(e.duration); }).observe({type: 'longtask'});
        let last = performance.now();
        const frame = t => { window.__frames.push(t - last); last = t; if (!window.__done) requestAnimationFrame(frame); };
        requestAnimationFrame(frame);
        const c = document.querySelector('canvas.chart');
        const r = c.getBoundingClientRect();
        const series0 = performance.getEntriesByType('resource').filter(e => e.name.includes('/series')).length;
        let step = 0; let dragging = false; let x = 0;
        const timer = setInterval(() => {
          step++;
          const phase = Math.floor(step / 20) % 4;
          if (phase === 0 || phase === 2) {
            if (dragging) { c.dispatchEvent(new PointerEvent('pointerup', {pointerId: 1, clientX: x, clientY: r.top + 100, bubbles: true})); dragging = false; }
            const at = r.left + r.width * (0.2 + 0.6 * ((step * 7) % 10) / 10);
            c.dispatchEvent(new WheelEvent('wheel', {deltaY: phase === 0 ? -100 : 100, clientX: at, clientY: r.top + 100, bubbles: true, cancelable: true}));
          } else {
            if (!dragging) { x = r.left + r.width / 2; c.dispatchEvent(new PointerEvent('pointerdown', {pointerId: 1, clientX: x, clientY: r.top + 100, bubbles: true})); dragging = true; }
            x += phase === 1 ? 15 : -15;
            c.dispatchEvent(new PointerEvent('pointermove', {pointerId: 1, clientX: x, clientY: r.top + 100, bubbles: true}));
          }
          if (step >= 160) {
            clearInterval(timer);
            if (dragging) c.dispatchEvent(new PointerEvent('pointerup', {pointerId: 1, clientX: x, clientY: r.top + 100, bubbles: true}));
            setTimeout(() => { window.__done = true; window.__series = performance.getEntriesByType('resource').filter(e => e.name.includes('/series')).length - series0; }, 500);
          }
        }, 25);
        return null;
        "#,
    );
    kite_tests::wait_for("the interaction", Duration::from_secs(30), || {
        browser
            .eval("return window.__done ? true : null;")
            .as_bool()
    });
    let frames: Vec<f64> = browser
        .eval("return window.__frames.slice(1);")
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    let long: Vec<f64> = browser
        .eval("return window.__long;")
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    let requests = browser
        .eval("return window.__series;")
        .as_u64()
        .unwrap_or(0);
    let max = frames.iter().copied().fold(0.0, f64::max);
    let over = frames.iter().filter(|f| **f > 20.0).count();
    let still_drawn = browser.eval(drawn).as_u64().unwrap_or(0);
    println!(
        "chart: {} frames, longest {max:.1} ms, {over} over 20 ms, long tasks {long:?}, {requests} series requests during, {buckets} before; {still_drawn} pixels drawn after",
        frames.len()
    );
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    vec![(
        format!(
            "the app's chart over {points} recorded points: 4 s of wheel zoom and drag pan in headless Chromium ({} frames by requestAnimationFrame; {requests} series requests answered meanwhile)",
            frames.len()
        ),
        format!(
            "longest frame {max:.1} ms, {over} over 20 ms; long tasks: {}",
            long.len()
        ),
        "no frame over 20 ms".into(),
    )]
}

/// Counts the PUBLISHes `rd` receives until `total` arrived, or none for 2 s (the broker
/// dropped the rest for a slow reader: counted in its metrics); returns how many and when the
/// last arrived (`start` if none), for a rate up to the last delivery.
async fn receive(rd: &mut super::Reader, total: usize, start: Instant) -> (usize, Instant) {
    use kite_mqtt::Packet;
    let mut got = 0;
    let mut last_at = start;
    while got < total {
        while let Some(p) = rd.buffered() {
            if matches!(p, Packet::Publish(_)) {
                got += 1;
                last_at = Instant::now();
            }
        }
        if got >= total {
            break;
        }
        match tokio::time::timeout(std::time::Duration::from_secs(2), rd.fill()).await {
            Ok(true) => {}
            _ => break,
        }
    }
    (got, last_at)
}

/// Encodes `count` QoS 0 publishes of 64-byte numeric payloads under `prefix/dev-N/temp`
/// (1,000 topics), numbered from `first`, into `buf`.
fn encode_numbers(prefix: &str, first: usize, count: usize, buf: &mut bytes::BytesMut) {
    use kite_mqtt::codec::Publish;
    use kite_mqtt::{Packet, QoS};
    for k in first..first + count {
        let mut payload = format!("{}.{}", 15 + k % 20, k % 100);
        while payload.len() < 64 {
            payload.push(' ');
        }
        Packet::Publish(Publish {
            qos: QoS::AtMostOnce,
            topic: format!("{prefix}/dev-{}/temp", k % 1_000).as_str().into(),
            payload: payload.into(),
            ..Publish::default()
        })
        .encode(super::V, buf)
        .unwrap();
    }
}

/// The broker's headroom while the history records a sustained rate: `rate` msgs/s published
/// (paced, in 10 ms steps) on recorded topics (`bench/...`), and meanwhile 2 × `per`
/// publishes as fast as the broker takes them on other topics (`load/...`) to one subscriber
/// of `load/#`. Returns the load's rate (deliveries to its subscriber per second) and, when
/// recording, the paced messages sent and recorded and the paced rate achieved.
async fn paced_run(
    target: &super::Target,
    rate: usize,
    per: usize,
    record: bool,
) -> (f64, usize, u64, f64, f64) {
    use kite_mqtt::codec::{Subscribe, Subscription};
    use kite_mqtt::{Packet, QoS};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let total = 2 * per;
    let (mut rd, mut wr) = super::open(target, super::Transport::Tcp, "paced-sub").await;
    let mut b = bytes::BytesMut::new();
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![Subscription::new("load/#", QoS::AtMostOnce)],
        properties: Default::default(),
    })
    .encode(super::V, &mut b)
    .unwrap();
    wr.send(b.freeze()).await;
    assert!(matches!(rd.recv().await, Some(Packet::SubAck(_))));
    let recorded_before = if record {
        metric(&target.ws, "kite_history_recorded_total")
    } else {
        0
    };
    // The paced publisher: `rate` msgs/s until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let paced = {
        let (target, stop, sent) = (target.clone(), stop.clone(), sent.clone());
        super::PUBLISHERS.spawn(async move {
            let (_rd, mut wr) = super::open(&target, super::Transport::Tcp, "paced-pub").await;
            let start = Instant::now();
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
            let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
            let mut n = 0;
            let began = loop {
                tick.tick().await;
                // Catch up on what the schedule says by now (a late tick sends more).
                let due = (start.elapsed().as_secs_f64() * rate as f64) as usize;
                encode_numbers("bench", n, due - n, &mut buf);
                n = due;
                wr.send(buf.split().freeze()).await;
                sent.store(n, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    break start.elapsed();
                }
            };
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            began
        })
    };
    // Two seconds of the paced load alone (the broker's CPU time meanwhile measured over the
    // second one), then the measured load.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (cpu0, sent0) = (super::cpu_secs(target.pid), sent.load(Ordering::Relaxed));
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let cpu_us = (super::cpu_secs(target.pid) - cpu0) * 1e6
        / (sent.load(Ordering::Relaxed) - sent0).max(1) as f64;
    let start = Instant::now();
    for p in 0..2 {
        let target = target.clone();
        super::PUBLISHERS.spawn(async move {
            let (_rd, mut wr) =
                super::open(&target, super::Transport::Tcp, &format!("paced-load-{p}")).await;
            let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
            let mut i = 0;
            while i < per {
                let n = 500.min(per - i);
                encode_numbers("load", p * per + i, n, &mut buf);
                i += n;
                wr.send(buf.split().freeze()).await;
            }
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        });
    }
    let (got, last_at) = receive(&mut rd, total, start).await;
    let load_rate = got as f64 / (last_at - start).as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if got < total {
        println!("  the load's subscriber got {got} of {total}");
    }
    // Let the paced publisher's last step go out.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let sent = sent.load(Ordering::Relaxed);
    let paced_secs = (start.elapsed() + std::time::Duration::from_secs(2)).as_secs_f64();
    drop(paced);
    if !record {
        return (load_rate, sent, 0, sent as f64 / paced_secs, cpu_us);
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let mut recorded = 0;
    while Instant::now() < deadline {
        recorded = metric(&target.ws, "kite_history_recorded_total") - recorded_before;
        if recorded >= sent as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (load_rate, sent, recorded, sent as f64 / paced_secs, cpu_us)
}

/// The broker's throughput on other topics while the recorder takes a sustained 50,000
/// msgs/s, against the same publishing unrecorded (3 runs each on fresh servers,
/// alternating; medians).
pub fn paced(
    kite: &Path,
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    scale: usize,
) -> Vec<(String, String, String)> {
    let (rate, per) = (50_000 / scale, 500_000 / scale);
    let (mut off, mut on, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    let mut achieved = Vec::new();
    let (mut cpu_off, mut cpu_on) = (Vec::new(), Vec::new());
    for run in 0..3 {
        for record in [false, true] {
            let running =
                start_recording_kite(kite, &dir.join(format!("paced-{run}-{record}")), record);
            let (load, sent, recorded, paced_rate, cpu_us) =
                rt.block_on(paced_run(&running.target, rate, per, record));
            println!(
                "paced run {run} recorder {record}: load {load:.0} msgs/s, paced {paced_rate:.0} msgs/s, sent {sent}, recorded {recorded}; the paced load alone: {cpu_us:.2} µs of the broker's CPU per message"
            );
            if record {
                cpu_on.push(cpu_us);
            } else {
                cpu_off.push(cpu_us);
            }
            if record {
                on.push(load);
                kept.push(format!("{recorded}/{sent}"));
                achieved.push(paced_rate);
            } else {
                off.push(load);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off, on, paced_rate) = (median(&mut off), median(&mut on), median(&mut achieved));
    let (cpu_off, cpu_on) = (median(&mut cpu_off), median(&mut cpu_on));
    vec![
        (
            format!(
                "the broker's CPU time per message of the paced {rate} msgs/s alone: unrecorded (no subscriber) → recorded (median of 3)"
            ),
            format!("{cpu_off:.2} → {cpu_on:.2} µs"),
            "—".into(),
        ),
        (
            format!(
                "the broker's throughput on other topics (2 × {per} QoS 0 msgs to a `load/#` subscriber) while {rate} msgs/s are published on `bench/...`: unrecorded → recorded (median of 3; paced rate achieved {paced_rate:.0} msgs/s; recorded/sent per run)"
            ),
            format!(
                "{off:.0} → {on:.0} msgs/s ({:+.0} %); {}",
                (on / off - 1.0) * 100.0,
                kept.join(", ")
            ),
            "≥ 50,000 recorded msgs/s with the broker's throughput falling by at most 20 %".into(),
        ),
    ]
}
