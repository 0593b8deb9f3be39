//! Recorded history (issue #19): the gateway's recorder on the embedded broker, the history
//! API over HTTP, across a restart, with access rules and bad input.

use std::time::Duration;

use kite_gateway::config::{Config, History};
use kite_mqtt::{QoS, Version};
use kite_tests::client::{TestClient, Via, publish};
use kite_tests::{Gateway, Mosquitto, TempDir, wait_for};

/// `[history] record = filters`, kept in `dir` (the broker's data there too).
pub(crate) fn recording(
    dir: &std::path::Path,
    filters: &[&str],
    max_bytes: u64,
) -> impl FnOnce(&mut Config) + use<> {
    let dir = dir.to_owned();
    let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
    move |c: &mut Config| {
        c.broker.data_dir = Some(dir.clone());
        c.history = Some(History {
            record: filters,
            retention: kite_data::Retention {
                max_age: Some(30 * 86_400_000),
                max_bytes,
            },
            dir,
            sync: kite_data::Sync::Always,
            username: None,
            password: None,
        });
    }
}

/// `GET path`: (status, body as text).
fn get(kite: &Gateway, path: &str) -> (u16, String) {
    kite.get_text(path)
}

fn get_json(kite: &Gateway, path: &str) -> (u16, serde_json::Value) {
    let (status, text) = get(kite, path);
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")),
    )
}

fn device(kite: &Gateway, id: &str) -> TestClient {
    TestClient::connected(&Via::Tcp(kite.mqtt_addr.unwrap()), Version::V5, id)
}

/// Publishes `n` QoS 1 messages `{"temp": i}` on `topic` (each acknowledged).
fn publish_temps(c: &mut TestClient, topic: &str, range: std::ops::Range<u32>) {
    for i in range {
        let id = u16::try_from(i % 60_000 + 1).unwrap();
        c.publish(publish(
            topic,
            &format!("{{\"temp\": {i}}}"),
            QoS::AtLeastOnce,
            id,
        ));
    }
}

/// Waits until the history API lists `count` messages for `topic`.
fn until_recorded(kite: &Gateway, topic: &str, count: u64) {
    wait_for(
        &format!("{count} messages of {topic} recorded"),
        Duration::from_secs(10),
        || {
            let (_, v) = get_json(kite, "/api/v1/history/topics");
            v["topics"]
                .as_array()?
                .iter()
                .find(|t| t["topic"] == topic && t["count"].as_u64() == Some(count))
                .map(|_| ())
        },
    );
}

#[test]
fn recorded_messages_outlive_the_gateway_and_come_back_as_sent() {
    let dir = TempDir::new("history-restart");
    {
        let kite = Gateway::start_with(&[], None, recording(dir.path(), &["plant/#"], 1 << 30));
        let mut d = device(&kite, "sensor-1");
        publish_temps(&mut d, "plant/a/temp", 0..300);
        // Not recorded: outside the filters.
        d.publish(publish("office/temp", "1", QoS::AtLeastOnce, 1));
        until_recorded(&kite, "plant/a/temp", 300);
        d.disconnect();
    }
    // A new gateway on the same data directory: everything is there before anything new.
    let kite = Gateway::start_with(&[], None, recording(dir.path(), &["plant/#"], 1 << 30));
    let (status, v) = get_json(&kite, "/api/v1/history?topic=plant/a/temp&limit=1000");
    assert_eq!(status, 200, "{v}");
    let messages = v["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 300);
    assert_eq!(v["more"], false);
    // Newest first, whole: payload, QoS, RETAIN, times in order.
    assert_eq!(messages[0]["payload"], "{\"temp\": 299}");
    assert_eq!(messages[299]["payload"], "{\"temp\": 0}");
    assert_eq!(messages[0]["qos"], 1);
    assert_eq!(messages[0]["retain"], false);
    assert_eq!(messages[0]["encoding"], "text");
    let times: Vec<u64> = messages.iter().map(|m| m["t"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]));
    let (_, topics) = get_json(&kite, "/api/v1/history/topics");
    assert_eq!(
        topics["topics"].as_array().unwrap().len(),
        1,
        "office/temp is not recorded: {topics}"
    );
    assert_eq!(topics["topics"][0]["fields"], serde_json::json!(["/temp"]));
    // The app learns from the upstreams list that this gateway records its default broker.
    let (_, upstreams) = get_json(&kite, "/api/v1/upstreams");
    assert_eq!(upstreams["history"], true);
    assert_eq!(upstreams["default"], "embedded");
    let (_, some) = get_json(&kite, "/api/v1/history/topics?filter=plant/%2B/temp");
    assert_eq!(some["topics"].as_array().unwrap().len(), 1);
    let (_, none) = get_json(&kite, "/api/v1/history/topics?filter=plant/b/%23");
    assert_eq!(none["topics"], serde_json::json!([]));

    // More after the restart, into the same topic; MQTT 5 properties kept.
    let mut d = device(&kite, "sensor-1");
    publish_temps(&mut d, "plant/a/temp", 300..310);
    let mut with_props = publish("plant/a/state", "", QoS::AtLeastOnce, 7);
    with_props.payload = bytes::Bytes::from_static(&[0xff, 0x00]);
    with_props.retain = true;
    with_props.properties.content_type = Some("application/octet-stream".into());
    with_props.properties.user_properties = vec![("line".into(), "1".into())];
    d.publish(with_props);
    until_recorded(&kite, "plant/a/temp", 310);
    until_recorded(&kite, "plant/a/state", 1);
    let (_, v) = get_json(&kite, "/api/v1/history?topic=plant/a/state");
    let m = &v["messages"][0];
    assert_eq!(m["encoding"], "base64");
    assert_eq!(m["payload"], "/wA=");
    assert_eq!(m["retain"], true);
    assert_eq!(
        m["properties"],
        serde_json::json!({"content_type": "application/octet-stream", "user_properties": [["line", "1"]]})
    );

    // The series: every point in M4 buckets, over a span given in RFC 3339 and in ms.
    let (status, v) = get_json(
        &kite,
        "/api/v1/history/series?topic=plant/%2B/temp&field=/temp&from=2020-01-01T00:00:00Z&points=5",
    );
    assert_eq!(status, 200, "{v}");
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), 1);
    let buckets = series[0]["buckets"].as_array().unwrap();
    assert!(buckets.len() <= 5);
    let count: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(count, 310);
    let min = buckets
        .iter()
        .map(|b| b["min"].as_f64().unwrap())
        .fold(f64::MAX, f64::min);
    let max = buckets
        .iter()
        .map(|b| b["max"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!((min, max), (0.0, 309.0));
    assert_eq!(buckets[0]["first"], 0.0);
    assert_eq!(buckets[buckets.len() - 1]["last"], 309.0);

    // `more` and paging with `to`.
    let (_, v) = get_json(&kite, "/api/v1/history?topic=plant/a/temp&limit=10");
    assert_eq!(v["more"], true);
    assert_eq!(v["messages"].as_array().unwrap().len(), 10);
}

#[test]
fn export_streams_every_line_as_ndjson_or_csv() {
    let dir = TempDir::new("history-export");
    let kite = Gateway::start_with(&[], None, recording(dir.path(), &["site/#"], 1 << 30));
    let mut d = device(&kite, "exporter");
    for (i, topic) in ["site/1/v", "site/2/v", "site/3/v"].iter().enumerate() {
        let start = u32::try_from(i).unwrap() * 1_000;
        publish_temps(&mut d, topic, start..start + 1_000);
    }
    // A payload CSV must quote.
    d.publish(publish("site/4/note", "a,\"b\"\nc", QoS::AtLeastOnce, 9));
    for topic in ["site/1/v", "site/2/v", "site/3/v"] {
        until_recorded(&kite, topic, 1_000);
    }
    until_recorded(&kite, "site/4/note", 1);
    let (status, text) = get(&kite, "/api/v1/history/export?filter=site/%23");
    assert_eq!(status, 200);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3_001);
    assert_eq!(lines[0]["topic"], "site/1/v");
    assert_eq!(lines[0]["payload"], "{\"temp\": 0}");
    assert_eq!(lines[2_999]["payload"], "{\"temp\": 2999}");
    assert_eq!(lines[3_000]["payload"], "a,\"b\"\nc");

    let (status, text) = get(&kite, "/api/v1/history/export?filter=site/%2B/v&format=csv");
    assert_eq!(status, 200);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3_001, "a header and 3,000 rows");
    assert_eq!(rows[0], "t,topic,qos,retain,encoding,payload");
    assert!(
        rows[1].ends_with(",site/1/v,1,false,text,\"{\"\"temp\"\": 0}\""),
        "{}",
        rows[1]
    );
    let (_, text) = get(
        &kite,
        "/api/v1/history/export?filter=site/4/note&format=csv",
    );
    assert!(
        text.ends_with(",site/4/note,1,false,text,\"a,\"\"b\"\"\nc\"\n"),
        "{text}"
    );
}

#[test]
fn a_role_reads_only_the_history_it_may_subscribe_to() {
    let dir = TempDir::new("history-acl");
    let acl = kite_policy::acl::Acl {
        publish: Some(vec!["#".into()]),
        subscribe: Some(vec!["plant/a/#".into()]),
        deny_publish: vec![],
        deny_subscribe: vec!["plant/a/secret".into()],
    };
    let record = recording(dir.path(), &["plant/#"], 1 << 30);
    let kite = Gateway::start_with(&[], None, move |c| {
        record(c);
        c.auth = kite_tests::anonymous_role(acl);
    });
    let mut d = device(&kite, "mixed");
    publish_temps(&mut d, "plant/a/temp", 0..5);
    publish_temps(&mut d, "plant/a/secret", 0..5);
    publish_temps(&mut d, "plant/b/temp", 0..5);
    // The topics list shows the recorder saw all three once they are in; the role sees one.
    wait_for("recorded", Duration::from_secs(10), || {
        let usage = kite.state().history().unwrap().usage();
        (usage.messages == 15).then_some(())
    });
    let (status, v) = get_json(&kite, "/api/v1/history/topics");
    assert_eq!(status, 200);
    let names: Vec<&str> = v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["plant/a/temp"]);
    for path in [
        "/api/v1/history?topic=plant/b/temp",
        "/api/v1/history?topic=plant/a/secret",
        "/api/v1/history/series?topic=plant/%23&field=/temp",
        "/api/v1/history/export?filter=%23",
    ] {
        let (status, v) = get_json(&kite, path);
        assert_eq!(status, 403, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("may not"), "{v}");
        assert!(v["field"] == "topic" || v["field"] == "filter", "{v}");
    }
    // A filter the role may read that overlaps a deny rule: the denied topic is left out.
    let (status, text) = get(&kite, "/api/v1/history/export?filter=plant/a/%23");
    assert_eq!(status, 200);
    assert_eq!(text.lines().count(), 5);
    assert!(!text.contains("secret"));
    let (_, v) = get_json(
        &kite,
        "/api/v1/history/series?topic=plant/a/%2B&field=/temp",
    );
    assert_eq!(v["series"].as_array().unwrap().len(), 1, "{v}");
}

#[test]
fn bad_queries_get_a_400_naming_the_problem() {
    let dir = TempDir::new("history-bad");
    let kite = Gateway::start_with(&[], None, recording(dir.path(), &["plant/#"], 1 << 30));
    let mut d = device(&kite, "bad");
    publish_temps(&mut d, "plant/a/temp", 0..3);
    until_recorded(&kite, "plant/a/temp", 3);
    for (path, field, says) in [
        (
            "/api/v1/history?topic=plant/a/temp&from=10&to=5",
            "from",
            "after",
        ),
        ("/api/v1/history?topic=plant/%2B/temp", "topic", "wildcard"),
        ("/api/v1/history", "topic", "required"),
        (
            "/api/v1/history?topic=plant/a/temp&limit=0",
            "limit",
            "1 to 10000",
        ),
        (
            "/api/v1/history?topic=plant/a/temp&from=yesterday",
            "from",
            "RFC 3339",
        ),
        (
            "/api/v1/history?topic=plant/a/temp&colour=red",
            "colour",
            "unknown parameter",
        ),
        (
            "/api/v1/history/series?topic=plant/a/temp&field=/hum",
            "field",
            "recorded fields: \"/temp\"",
        ),
        (
            "/api/v1/history/series?topic=plant/a/temp&field=temp",
            "field",
            "JSON Pointer",
        ),
        (
            "/api/v1/history/series?topic=plant/a/temp&field=/temp&points=10001",
            "points",
            "1 to 10000",
        ),
        (
            "/api/v1/history/series?topic=plant/a/temp&field=/temp&points=0",
            "points",
            "1 to 10000",
        ),
        (
            "/api/v1/history/export?filter=plant/%23&format=xml",
            "format",
            "ndjson",
        ),
        ("/api/v1/history/export?filter=plant/%23/x", "filter", "#"),
    ] {
        let (status, v) = get_json(&kite, path);
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["field"], field, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{path}: {v}");
    }
    // Without [history]: a 404 that says how to turn it on.
    let plain = Gateway::start(&[], None);
    let (status, v) = get_json(&plain, "/api/v1/history/topics");
    assert_eq!(status, 404);
    assert!(
        v["error"].as_str().unwrap().contains("[history] record"),
        "{v}"
    );
}

#[test]
fn a_flooding_topic_cannot_grow_the_history_past_max_bytes() {
    let dir = TempDir::new("history-flood");
    let max = 2 << 20;
    let kite = Gateway::start_with(&[], None, recording(dir.path(), &["#"], max));
    let mut d = device(&kite, "flooder");
    let payload = "x".repeat(1_000);
    for i in 0..6_000u32 {
        let id = u16::try_from(i % 60_000 + 1).unwrap();
        d.publish(publish("flood", &payload, QoS::AtLeastOnce, id));
    }
    wait_for("the flood recorded", Duration::from_secs(20), || {
        let u = kite.state().history().unwrap().usage();
        (u.messages + u.dropped == 6_000).then_some(u)
    });
    let u = kite.state().history().unwrap().usage();
    assert!(u.bytes <= max, "{u:?}");
    assert!(u.dropped > 3_000, "{u:?}");
    // The newest are kept.
    let (_, v) = get_json(&kite, "/api/v1/history?topic=flood&limit=1");
    assert_eq!(v["more"], true);
    let (_, metrics) = get(&kite, "/metrics");
    assert!(
        metrics.contains(&format!("kite_history_dropped_total {}", u.dropped)),
        "{metrics}"
    );
}

/// In front of a real mosquitto: the gateway's own persistent session there
/// (`kite-history-<hostname>`) records, also what was published while the gateway was down.
#[test]
fn in_front_of_mosquitto_the_recorder_keeps_its_own_session_there() {
    let mosquitto = Mosquitto::start();
    let dir = TempDir::new("history-upstream");
    let url = mosquitto.url();
    let start = || {
        Gateway::start_with(
            &[url.as_str()],
            None,
            recording(dir.path(), &["plant/#"], 1 << 30),
        )
    };
    let kite = start();
    wait_for("the recorder connected", Duration::from_secs(10), || {
        get(&kite, "/metrics")
            .1
            .contains("kite_history_up 1")
            .then_some(())
    });
    // Its subscription is in place once a probe is recorded.
    wait_for("a probe recorded", Duration::from_secs(10), || {
        mosquitto.publish("plant/probe", "1");
        let (_, v) = get_json(&kite, "/api/v1/history/topics");
        (!v["topics"].as_array()?.is_empty()).then_some(())
    });
    let device = Via::Tcp(format!("127.0.0.1:{}", mosquitto.port).parse().unwrap());
    let mut d = TestClient::connected(&device, Version::V5, "upstream-device");
    publish_temps(&mut d, "plant/a/temp", 0..200);
    until_recorded(&kite, "plant/a/temp", 200);
    drop(kite);
    // While the gateway is down, mosquitto keeps the recorder's messages (QoS 1, persistent).
    publish_temps(&mut d, "plant/a/temp", 200..300);
    let kite = start();
    until_recorded(&kite, "plant/a/temp", 300);
    let (_, v) = get_json(&kite, "/api/v1/history?topic=plant/a/temp&limit=1");
    assert_eq!(v["messages"][0]["payload"], "{\"temp\": 299}");
    let (_, v) = get_json(
        &kite,
        "/api/v1/history/series?topic=plant/a/temp&field=/temp&points=1&from=0",
    );
    assert_eq!(v["series"][0]["buckets"][0]["count"], 300, "{v}");
}

/// The app shows a topic's recorded history — older than the tab — as a chart drawn from the
/// series API (several fields, zoom), the recorded messages, and export links.
#[test]
fn the_app_charts_a_topics_recorded_history() {
    use crate::app::{click, new_profile, screenshot, set_input, wait_until_text};
    let dir = TempDir::new("history-app");
    let kite = Gateway::start_with(
        &[],
        Some(kite_tests::assets_dir()),
        recording(dir.path(), &["plant/#"], 1 << 30),
    );
    // Recorded before any tab was open.
    let mut d = device(&kite, "env-sensor");
    for i in 0..600u32 {
        let id = u16::try_from(i + 1).unwrap();
        let payload = format!(
            "{{\"temp\": {}.{}, \"hum\": {}}}",
            20 + (i / 20) % 6,
            i % 10,
            40 + (i * 7) % 13
        );
        d.publish(publish("plant/a/env", &payload, QoS::AtLeastOnce, id));
    }
    until_recorded(&kite, "plant/a/env", 600);

    let browser = kite_tests::browser::Browser::start();
    browser.resize(1280, 800);
    browser.goto(&kite.http_url("/"));
    new_profile(&browser, "Plant");
    click(&browser, "#connect");
    wait_until_text(&browser, ".status", "connected");
    set_input(&browser, "#filter", "plant/#");
    click(&browser, "#subscribe");
    wait_until_text(&browser, ".subscription", "granted");
    d.publish(publish(
        "plant/a/env",
        "{\"temp\": 23.5, \"hum\": 44}",
        QoS::AtLeastOnce,
        700,
    ));
    let row = r#".topic-row[data-topic="plant/a/env"]"#;
    wait_until_text(&browser, row, "env");
    click(&browser, row);
    wait_until_text(
        &browser,
        ".recorded h4",
        "Recorded on the gateway: 601 messages",
    );
    // The chart is drawn: its plot has coloured pixels.
    let drawn = "const c = document.querySelector('canvas.chart'); if (!c) return 0; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 0; i < d.length; i += 4) { if (d[i + 3] > 0 && d[i + 2] > d[i] + 40) n++; } return n;";
    wait_for("the chart drawn", Duration::from_secs(20), || {
        (browser.eval(drawn).as_u64()? > 200).then_some(())
    });
    // Both fields can be shown on one chart.
    let fields = browser.eval(
        "return [...document.querySelectorAll('.chart-controls .field')].map(b => [b.textContent, b.getAttribute('aria-pressed')]);",
    );
    // Fields in the order first recorded (serde_json's map order: by key, or as written).
    let names: std::collections::BTreeSet<&str> = fields
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f[0].as_str().unwrap())
        .collect();
    assert_eq!(names, ["/hum", "/temp"].into_iter().collect(), "{fields}");
    assert_eq!(fields[0][1], "true", "the first field is shown: {fields}");
    assert_eq!(fields[1][1], "false", "{fields}");
    browser.eval("document.querySelectorAll('.chart-controls .field')[1].click(); return null;");
    wait_for("two fields shown", Duration::from_secs(10), || {
        let on =
            browser.eval("return document.querySelectorAll('.chart-controls .field.on').length;");
        (on == 2).then_some(())
    });
    // Zooming with the wheel changes the span shown (and asks for it again).
    let span = "return document.querySelector('canvas.chart').dataset.span;";
    let before = browser.eval(span);
    browser.eval(
        "const c = document.querySelector('canvas.chart'); const r = c.getBoundingClientRect(); c.dispatchEvent(new WheelEvent('wheel', {deltaY: -100, clientX: r.left + r.width * 0.9, clientY: r.top + 50, bubbles: true, cancelable: true})); return null;",
    );
    wait_for("the span zoomed", Duration::from_secs(10), || {
        (browser.eval(span) != before).then_some(())
    });
    // The recorded messages, newest first, and the export links.
    let recent = browser.text(".recorded-list").unwrap();
    assert!(recent.contains("{\"temp\": 23.5, \"hum\": 44}"), "{recent}");
    let links = browser.eval(
        "return [...document.querySelectorAll('.export a')].map(a => a.getAttribute('href'));",
    );
    assert_eq!(
        links,
        serde_json::json!([
            "/api/v1/history/export?filter=plant%2Fa%2Fenv&format=csv",
            "/api/v1/history/export?filter=plant%2Fa%2Fenv&format=ndjson",
            "/api/v1/history/export?filter=plant%2Fa%2Fenv%2F%23&format=csv"
        ])
    );
    // The second field is drawn too (red, the second colour), once its series arrived.
    let red = "const c = document.querySelector('canvas.chart'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 0; i < d.length; i += 4) { if (d[i + 3] > 0 && d[i] > d[i + 2] + 60) n++; } return n;";
    wait_for("the second field drawn", Duration::from_secs(10), || {
        (browser.eval(red).as_u64()? > 100).then_some(())
    });
    browser.eval("document.querySelector('.detail').scrollIntoView(); return null;");
    screenshot(&browser, "history");
    browser.resize(390, 844);
    browser.eval("document.querySelector('.recorded').scrollIntoView(); return null;");
    wait_for(
        "the chart redrawn at phone width",
        Duration::from_secs(10),
        || (browser.eval(drawn).as_u64()? > 100).then_some(()),
    );
    screenshot(&browser, "history-phone");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
