//! `cargo xtask bench dashboard` (issue #21): a dashboard of 20 widgets — 10 charts and 10
//! values — in headless Chromium, each series fed 100 messages/s through the embedded
//! broker for a while; every animation frame's interval is recorded by the page
//! (`requestAnimationFrame`), with the main thread's long tasks (over 50 ms). A frame whose
//! work took more than 16 ms shows as an interval of two frames (33 ms) or more.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use kite_mqtt::{Packet, QoS};

/// The figures, as a Markdown table.
pub fn figures(kite: &Path, dir: &Path, assets: &Path, secs: u64) -> String {
    let (charts, values, rate) = (10u64, 10u64, 100u64);
    let (_kite, http) =
        super::start_kite_serving(kite, dir, "", &["--assets".as_ref(), assets.as_os_str()]);
    let base = format!("http://127.0.0.1:{http}");
    let mut widgets: Vec<String> = (0..charts)
        .map(|i| {
            format!("{{\"kind\": \"chart\", \"topic\": \"bench/chart-{i}\", \"windowSecs\": 60}}")
        })
        .collect();
    widgets.extend((0..values).map(|i| {
        format!("{{\"kind\": \"value\", \"topic\": \"bench/value-{i}\", \"decimals\": 1}}")
    }));
    let body = format!(
        "{{\"schemaVersion\": 1, \"title\": \"Bench\", \"widgets\": [{}]}}",
        widgets.join(",")
    );
    let made = ureq::post(&format!("{base}/api/v1/dashboards"))
        .content_type("application/json")
        .send(body.as_str())
        .expect("the dashboard is made")
        .into_body()
        .read_to_string()
        .unwrap_or_default();
    let id = serde_json::from_str::<serde_json::Value>(&made).unwrap_or_default()["id"]
        .as_str()
        .unwrap_or("bench")
        .to_owned();

    let browser = kite_tests::browser::Browser::start();
    browser.goto(&format!("{base}/"));
    kite_tests::wait_for("the app", Duration::from_secs(30), || {
        browser.text("#kite-app h1")
    });
    browser.eval(
        r#"localStorage.setItem('kite.profiles', JSON.stringify([{id: "bench", name: "bench", client_id: "kite-bench-dashboard"}])); return null;"#,
    );
    browser.goto(&format!("{base}/dashboards/{id}?kiosk"));
    kite_tests::wait_for("the tiles", Duration::from_secs(30), || {
        (browser.eval("return document.querySelectorAll('.tile').length;") == 20).then_some(())
    });
    // The connection up and subscribed: a first value shown.
    let mqtt =
        kite_tests::client::Via::Tcp(format!("127.0.0.1:{}", _kite.target.tcp).parse().unwrap());
    let mut device =
        kite_tests::client::TestClient::connected(&mqtt, super::V, "kite-bench-device");
    kite_tests::wait_for("the page to receive", Duration::from_secs(30), || {
        device.publish(kite_tests::client::publish(
            "bench/value-0",
            "1",
            QoS::AtMostOnce,
            0,
        ));
        std::thread::sleep(Duration::from_millis(200));
        browser
            .eval("const t = document.querySelector('.tile[data-kind=value] .big'); return t ? t.textContent : null;")
            .as_str()
            .map(str::to_owned)
    });
    super::watch_frames(&browser);
    // 20 series × 100 msgs/s, in 10 ms batches (one message per series per batch).
    let topics: Vec<String> = (0..charts)
        .map(|i| format!("bench/chart-{i}"))
        .chain((0..values).map(|i| format!("bench/value-{i}")))
        .collect();
    let start = Instant::now();
    let ticks = secs * rate;
    for tick in 0..ticks {
        let v = 20.0 + 5.0 * ((tick as f64) / 50.0).sin();
        let batch: Vec<Packet> = topics
            .iter()
            .map(|t| {
                Packet::Publish(kite_tests::client::publish(
                    t,
                    &format!("{v:.2}"),
                    QoS::AtMostOnce,
                    0,
                ))
            })
            .collect();
        device.send_all(&batch);
        let next = start + Duration::from_millis(10 * (tick + 1));
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let sent_secs = start.elapsed().as_secs_f64();
    device.barrier();
    std::thread::sleep(Duration::from_millis(300));
    // The page really drew the load: the last value sent is the one shown.
    let last = 20.0 + 5.0 * (((ticks - 1) as f64) / 50.0).sin();
    let shown = browser
        .eval("return document.querySelector('.tile[data-kind=value] .big').textContent;")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(shown, format!("{last:.1}"), "the dashboard did not keep up");
    let (frames, long) = super::frames_and_long_tasks(&browser);
    let mut sorted = frames.clone();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let missed = frames.iter().filter(|f| **f > 25.0).count();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "Dashboard: {charts} charts and {values} values, each series fed {rate} msgs/s ({} msgs/s in all) for {secs} s through the embedded broker, headless Chromium 1280×800\n",
        (charts + values) * rate
    );
    let _ = writeln!(table, "| | |\n|---|---|");
    let _ = writeln!(
        table,
        "| messages sent | {} in {sent_secs:.1} s |",
        ticks * (charts + values)
    );
    let _ = writeln!(table, "| last value shown / sent | {shown} / {last:.2} |");
    let _ = writeln!(
        table,
        "| animation frames | {} ({:.1}/s) |",
        frames.len(),
        frames.len() as f64 / sent_secs
    );
    let _ = writeln!(
        table,
        "| frame interval median / p99 / longest | {:.1} / {:.1} / {:.1} ms |",
        at(0.5),
        at(0.99),
        sorted.last().copied().unwrap_or(0.0)
    );
    let _ = writeln!(
        table,
        "| frames late (interval over 25 ms: work over one 16.7 ms frame) | {missed} |"
    );
    let _ = writeln!(
        table,
        "| main-thread tasks over 50 ms | {} (longest {:.0} ms) |",
        long.len(),
        long.iter().copied().fold(0.0, f64::max)
    );
    table
}
