//! Dashboards in Chromium (issue #21): one built through the app with every widget kind,
//! saved on the gateway and there after a reload and for a second browser, fed by a device
//! through the embedded broker; a switch that publishes, shows the broker's acknowledgement
//! and follows the device's real state; export and import; the kiosk view.

use std::time::Duration;

use kite_mqtt::{QoS, Version};
use kite_tests::browser::Browser;
use kite_tests::client::{TestClient, Via, publish};
use kite_tests::{TempDir, wait_for};

use crate::app::{click, count, new_profile, screenshot, set_input, wait_until_text};

const WAIT: Duration = Duration::from_secs(30);

/// A sensor's whole JSON document, as a value tile with no field shows it.
const LONG_JSON: &str =
    r#"{"temp": 21.5, "humidity": 40.25, "battery": 97, "firmware": "2.4.1-rc3"}"#;

/// Adds a widget with the editor's form.
fn add(browser: &Browser, kind: &str, topic: &str) {
    browser.eval(&format!(
        "const f = document.querySelector('.add-widget'); f.kind.value = {}; f.topic.value = {}; f.requestSubmit(); return null;",
        serde_json::Value::from(kind),
        serde_json::Value::from(topic)
    ));
}

fn tile_text(browser: &Browser, kind: &str) -> String {
    browser
        .eval(&format!(
            "const t = document.querySelector('.tile[data-kind={kind}] .tile-body'); return t ? t.innerText : '';"
        ))
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_dashboard_built_in_the_app_is_shared_fed_and_controls_a_device() {
    let dir = TempDir::new("app-dashboards");
    let kite = crate::app_devices::gateway(dir.path());
    let via = Via::Tcp(kite.mqtt_addr.unwrap());
    let browser = Browser::start();
    browser.goto(&kite.http_url("/"));
    new_profile(&browser, "Lab");
    click(&browser, "#connect");
    wait_until_text(&browser, ".status", "connected");

    // The list: the examples, then a new one.
    browser.goto(&kite.http_url("/dashboards"));
    wait_until_text(&browser, ".dashboards", "Traffic");
    set_input(&browser, "#new-dashboard", "Line 1");
    browser.eval("document.querySelector('#new-dashboard').form.requestSubmit(); return null;");
    wait_until_text(&browser, ".dashboard-name", "Line 1");
    // A new dashboard says what to do rather than showing nothing.
    wait_until_text(&browser, ".empty-dashboard", "Edit adds them");
    click(&browser, "#edit-dashboard");
    wait_for("the editor", WAIT, || {
        (count(&browser, ".add-widget") == 1).then_some(())
    });
    wait_until_text(&browser, ".empty-dashboard", "Add widget");
    let kinds = [
        ("value", "plant/dev-a/temp"),
        ("gauge", "plant/dev-a/temp"),
        ("chart", "plant/dev-a/temp"),
        ("bar", "plant/+/temp"),
        ("timeline", "plant/dev-a/pump"),
        ("table", "plant/+/temp"),
        ("text", "# Line 1\nThe **north** line."),
        ("switch", "plant/dev-a/valve"),
        ("button", "plant/dev-a/reset"),
        ("slider", "plant/dev-a/speed"),
        ("input", "plant/dev-a/setpoint"),
        ("device", "dev-a"),
        ("alarms", ""),
    ];
    for (i, (kind, topic)) in kinds.iter().enumerate() {
        add(&browser, kind, topic);
        wait_for(&format!("{kind} added"), WAIT, || {
            (count(&browser, ".tile") == i as u64 + 1).then_some(())
        });
    }
    assert_eq!(count(&browser, ".empty-dashboard"), 0);
    // A widget the gateway would refuse is refused as it is added, by its key, and is not
    // added (a wildcard where one topic is needed [MQTT-4.7.1-1]).
    add(&browser, "value", "plant/+/temp");
    wait_until_text(&browser, ".dashboard > .error", "widgets[13].topic");
    assert_eq!(count(&browser, ".tile"), 13);
    // Each widget is shown where, and as big as, it will be kept.
    let places = |b: &Browser| {
        b.eval("return [...document.querySelectorAll('.tile')].map(t => t.getAttribute('style'));")
    };
    let edited = places(&browser);
    click(&browser, "#save-dashboard");
    wait_for("saved", WAIT, || {
        (count(&browser, "#edit-dashboard") == 1).then_some(())
    });
    // (Saving reloads the dashboard from the gateway: its tiles come back as it keeps them.)
    wait_for("the saved dashboard's tiles", WAIT, || {
        (count(&browser, ".tile") == 13).then_some(())
    });
    assert_eq!(places(&browser), edited, "tiles moved when saved");
    let (status, saved) = kite.get_json("/api/v1/dashboards/line-1");
    assert_eq!(status, 200, "{saved}");
    let saved_kinds: Vec<&str> = saved["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    assert_eq!(saved_kinds, kinds.map(|k| k.0));
    assert!(
        saved["widgets"][12]["layout"]["w"].as_u64().is_some(),
        "{saved}"
    );

    // Fed by a device through the embedded broker.
    let mut device = TestClient::connected(&via, Version::V5, "dev-a");
    device.subscribe("plant/dev-a/valve", QoS::AtLeastOnce);
    // Retained, as devices publish their state: a page opened later shows it at once.
    for (topic, payload) in [
        ("plant/dev-a/temp", "21.5"),
        ("plant/dev-b/temp", "{\"x\": 1}"),
        ("plant/dev-b/temp", "19"),
        ("plant/dev-a/pump", "on"),
    ] {
        let mut p = publish(topic, payload, QoS::AtLeastOnce, 1);
        p.retain = true;
        device.publish(p);
    }
    let mut state = publish("plant/dev-a/valve", "off", QoS::AtLeastOnce, 2);
    state.retain = true;
    device.publish(state);
    wait_for("the value", WAIT, || {
        tile_text(&browser, "value").contains("21.5").then_some(())
    });
    wait_for("two bars", WAIT, || {
        (count(&browser, ".bar-row") == 2).then_some(())
    });
    wait_for("the table's rows", WAIT, || {
        (count(&browser, ".tile-table tbody tr") == 2).then_some(())
    });
    assert!(tile_text(&browser, "gauge").contains("21.5"));
    assert!(tile_text(&browser, "text").contains("The north line."));
    wait_for("the device", WAIT, || {
        tile_text(&browser, "device")
            .contains("online")
            .then_some(())
    });
    wait_for("the switch off", WAIT, || {
        (browser.eval("return document.querySelector('.switch').getAttribute('aria-checked');")
            == "false")
            .then_some(())
    });

    // The switch publishes, shows the acknowledgement, and follows the device's state.
    click(&browser, ".switch");
    // (The device hears its own "off" too: the first "on" is the switch's.)
    let got = loop {
        let p = device.recv_publish();
        if &p.payload[..] != b"off" {
            break p;
        }
    };
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("plant/dev-a/valve", &b"on"[..])
    );
    wait_until_text(&browser, ".tile[data-kind=switch] .outcome", "acknowledged");
    let mut off = publish("plant/dev-a/valve", "off", QoS::AtLeastOnce, 3);
    off.retain = true;
    device.publish(off);
    wait_for("the switch back off (the device's state)", WAIT, || {
        (browser.eval("return document.querySelector('.switch').getAttribute('aria-checked');")
            == "false")
            .then_some(())
    });
    // A state that is neither payload is shown as it is — not as "off" — and says why.
    // (From another client: the device hears the valve topic, and its publishes wait for
    // their PUBACK.)
    let mut feed = TestClient::connected(&via, Version::V5, "dev-a-feed");
    let mut odd = publish("plant/dev-a/valve", "1", QoS::AtLeastOnce, 4);
    odd.retain = true;
    feed.publish(odd);
    wait_for("the switch in neither position", WAIT, || {
        (count(&browser, ".switch.unknown") == 1).then_some(())
    });
    let title = browser.eval("return document.querySelector('.switch').title;");
    assert!(
        title
            .as_str()
            .is_some_and(|t| t.contains("\"1\" is neither on")),
        "{title}"
    );
    let mut off = publish("plant/dev-a/valve", "off", QoS::AtLeastOnce, 5);
    off.retain = true;
    feed.publish(off);
    wait_for("the switch off again", WAIT, || {
        (count(&browser, ".switch.unknown") == 0).then_some(())
    });

    // A whole JSON document in a value tile (no field chosen) is shown in a smaller type.
    feed.publish(publish("plant/dev-a/temp", LONG_JSON, QoS::AtLeastOnce, 6));
    wait_for("the long value in a smaller type", WAIT, || {
        (count(&browser, ".tile[data-kind=value] .value.long") == 1).then_some(())
    });
    feed.publish(publish("plant/dev-a/temp", "21.5", QoS::AtLeastOnce, 7));
    wait_for("the value back", WAIT, || {
        let t = tile_text(&browser, "value");
        (t.contains("21.5") && !t.contains("humidity")).then_some(())
    });
    screenshot(&browser, "dashboard");

    // After a reload, and for a second browser, the same dashboard.
    for b in [&browser, &Browser::start()] {
        b.goto(&kite.http_url("/dashboards/line-1"));
        wait_for("the tiles", WAIT, || {
            (count(b, ".tile") == 13).then_some(())
        });
    }

    // Export, then import as a new dashboard.
    let export = browser
        .eval("return document.querySelector('.export-json').value;")
        .as_str()
        .unwrap()
        .to_owned();
    assert!(export.contains("\"schemaVersion\": 1"), "{export}");
    browser.goto(&kite.http_url("/dashboards"));
    wait_until_text(&browser, ".dashboards", "Line 1");
    browser.eval(&format!(
        "const t = document.querySelector('#import-json'); t.value = {}; t.form.requestSubmit(); return null;",
        serde_json::Value::from(export)
    ));
    wait_for("the imported dashboard", WAIT, || {
        browser
            .eval("return location.pathname;")
            .as_str()
            .is_some_and(|p| p == "/dashboards/line-1-2")
            .then_some(())
    });
    wait_for("its tiles", WAIT, || {
        (count(&browser, ".tile") == 13).then_some(())
    });

    // Kiosk: the dashboard alone.
    browser.goto(&kite.http_url("/dashboards/line-1?kiosk"));
    wait_for("the kiosk view", WAIT, || {
        (count(&browser, ".dashboard.kiosk .tile") == 13).then_some(())
    });
    assert_eq!(count(&browser, ".sidebar"), 0);
    assert_eq!(count(&browser, "#edit-dashboard"), 0);
    wait_for("the value in kiosk mode", WAIT, || {
        tile_text(&browser, "value").contains("21.5").then_some(())
    });
    screenshot(&browser, "dashboard-kiosk");
    // The device widget asked for dev-a before the device was seen: the gateway's 404 is
    // what it showed ("no device"), and the browser logs it; so is the 400 of the widget
    // refused as it was added.
    let errors: Vec<String> = browser
        .console_errors()
        .into_iter()
        .filter(|e| !e.contains("/api/v1/devices/dev-a - Failed to load resource"))
        .filter(|e| !e.contains("/api/v1/dashboards?check=true - Failed to load resource: the server responded with a status of 400"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// Tiles one row high, smaller than what they show: each keeps its title readable — the
/// content scrolls or is cut below it, never over it (a table, a chart or a long value had
/// squeezed the title to nothing and covered it) — and a long value gets a smaller type.
#[test]
fn small_tiles_keep_their_titles() {
    let dir = TempDir::new("app-dashboards-small");
    let kite = crate::app_devices::gateway(dir.path());
    let mut device = TestClient::connected(&Via::Tcp(kite.mqtt_addr.unwrap()), Version::V5, "d");
    for (i, (topic, payload)) in [
        ("plant/dev-a/temp", LONG_JSON),
        ("plant/dev-b/temp", "19"),
        ("plant/dev-c/temp", "20.5"),
        ("plant/dev-d/temp", "18"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut p = publish(topic, payload, QoS::AtLeastOnce, i as u16 + 1);
        p.retain = true;
        device.publish(p);
    }
    let one_row = |x: u32, kind: &str, topic: &str| serde_json::json!({"kind": kind, "topic": topic, "layout": {"x": x, "y": 0, "w": 3, "h": 1}});
    let doc = serde_json::json!({"schemaVersion": 1, "title": "Small", "widgets": [
        one_row(0, "value", "plant/dev-a/temp"),
        one_row(3, "table", "plant/+/temp"),
        one_row(6, "chart", "plant/dev-b/temp"),
        one_row(9, "bar", "plant/+/temp"),
    ]});
    let (status, made) = kite.call("POST", "/api/v1/dashboards", Some(&doc.to_string()));
    assert_eq!(status, 201, "{made}");

    let browser = Browser::start();
    browser.goto(&kite.http_url("/"));
    new_profile(&browser, "Lab");
    click(&browser, "#connect");
    wait_until_text(&browser, ".status", "connected");
    browser.goto(&kite.http_url("/dashboards/small"));
    wait_for("the long value in a smaller type", WAIT, || {
        (count(&browser, ".tile[data-kind=value] .value.long") == 1).then_some(())
    });
    wait_for("the table's rows", WAIT, || {
        (count(&browser, ".tile-table tbody tr") == 4).then_some(())
    });
    wait_for("the bars", WAIT, || {
        (count(&browser, ".bar-row") >= 3).then_some(())
    });
    let covered = browser.eval(
        "return [...document.querySelectorAll('.tile')].flatMap(t => {
           const h = t.querySelector('.tile-title');
           if (!h) return [t.dataset.kind + ' (no title)'];
           h.scrollIntoView({block: 'center'});
           const r = h.getBoundingClientRect();
           const hit = document.elementFromPoint(r.left + 4, r.top + r.height / 2);
           return r.height >= 10 && h.contains(hit) ? [] : [t.dataset.kind];
         });",
    );
    assert_eq!(
        covered,
        serde_json::json!([]),
        "tiles whose title is covered or squeezed"
    );
    screenshot(&browser, "dashboard-small-tiles");
}
