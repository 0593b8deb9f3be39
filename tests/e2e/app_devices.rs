//! The app's Devices and Alarms views (issue #20) in Chromium, against the gateway's embedded
//! broker with a device monitor and alarms: the device table (natural order, filters), an
//! alarm raised by a device, acknowledged in the page, and a rule made with the editor.

use std::time::Duration;

use kite_mqtt::{QoS, Version};
use kite_tests::browser::Browser;
use kite_tests::client::{TestClient, Via, publish};
use kite_tests::{Gateway, TempDir, assets_dir, wait_for};

use crate::app::{click, screenshot, set_input, wait_until_text};

const RULES: &str = "[[devices]]\nstatus_topic = \"plant/{device}/status\"\n\n[[devices]]\nactivity = \"plant/{device}/#\"\nstale_after_secs = 3600\n";

pub(crate) fn gateway(dir: &std::path::Path) -> Gateway {
    let file = dir.join("devices.toml");
    std::fs::write(&file, RULES).unwrap();
    let mut devices = kite_gateway::config::Config::load(Some(&file), Default::default())
        .unwrap()
        .devices
        .unwrap();
    devices.dir = dir.to_owned();
    let dir = dir.to_owned();
    Gateway::start_with(&[], Some(assets_dir()), move |c| {
        c.broker.data_dir = Some(dir.clone());
        c.devices = Some(devices);
        c.alarms = Some(kite_gateway::config::Alarms {
            rules: Vec::new(),
            dir,
            sync: kite_data::Sync::Always,
            username: None,
            password: None,
        });
    })
}

fn rows(browser: &Browser) -> Vec<String> {
    browser
        .eval("return [...document.querySelectorAll('.device')].sort((a, b) => parseInt(a.style.top) - parseInt(b.style.top)).map(r => r.dataset.device);")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn select(browser: &Browser, selector: &str, value: &str) {
    browser.eval(&format!(
        "const s = document.querySelector({}); s.value = {}; s.dispatchEvent(new Event('change', {{bubbles: true}})); return null;",
        serde_json::Value::from(selector),
        serde_json::Value::from(value)
    ));
}

#[test]
fn the_app_lists_devices_and_acknowledges_an_alarm() {
    let dir = TempDir::new("app-devices");
    let kite = gateway(dir.path());
    let via = Via::Tcp(kite.mqtt_addr.unwrap());
    let mut d = TestClient::connected(&via, Version::V5, "devices");
    for i in 1..=24u16 {
        d.publish(publish(
            &format!("plant/dev-{i}/temp"),
            "21.5",
            QoS::AtLeastOnce,
            i,
        ));
    }
    let mut down = publish("plant/dev-3/status", "offline", QoS::AtLeastOnce, 100);
    down.retain = true;
    d.publish(down);
    // An alarm rule (through the API), and a device above it.
    let rule = r#"{"name": "hot", "topic": "plant/+/temp", "op": ">", "value": 30, "severity": "critical", "notify": {"browser": true}}"#;
    let status = ureq::post(&kite.http_url("/api/v1/alarms/rules"))
        .content_type("application/json")
        .send(rule)
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 201);
    wait_for("the alarm's subscription", Duration::from_secs(10), || {
        d.publish(publish("plant/dev-7/temp", "35", QoS::AtLeastOnce, 200));
        let text = ureq::get(&kite.http_url("/api/v1/alarms?state=active"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        text.contains("\"id\"").then_some(())
    });

    let browser = Browser::start();
    browser.resize(1280, 800);
    browser.goto(&kite.http_url("/devices"));
    wait_until_text(&browser, ".filters", "All 24");
    wait_until_text(&browser, ".filters", "Offline 1");
    // Natural order: dev-2 before dev-10.
    let shown = rows(&browser);
    assert_eq!(
        &shown[..4],
        ["dev-1", "dev-2", "dev-3", "dev-4"],
        "{shown:?}"
    );
    // The side bar's badge counts the open alarm.
    wait_until_text(&browser, ".alarm-badge", "1");
    screenshot(&browser, "devices");
    click(&browser, ".chip.offline");
    wait_for("only offline devices", Duration::from_secs(10), || {
        (rows(&browser) == ["dev-3"]).then_some(())
    });
    assert!(browser.text(".device.offline").unwrap().contains("offline"));
    click(
        &browser,
        ".chip:not(.online):not(.offline):not(.stale):not(.unknown)",
    );
    set_input(&browser, ".device-find", "dev-2");
    wait_for("found by text", Duration::from_secs(10), || {
        (rows(&browser) == ["dev-2", "dev-20", "dev-21", "dev-22", "dev-23", "dev-24"])
            .then_some(())
    });
    browser.resize(390, 844);
    screenshot(&browser, "devices-phone");
    browser.resize(1280, 800);

    // The alarm, acknowledged in the page.
    click(&browser, ".view a[href='/alarms']");
    let alarm = wait_until_text(&browser, ".alarm[data-state='active']", "plant/dev-7/temp");
    assert!(alarm.contains("critical"), "{alarm}");
    screenshot(&browser, "alarms");
    click(&browser, ".alarm[data-state='active'] .ack");
    wait_until_text(
        &browser,
        ".alarm[data-state='acknowledged']",
        "acknowledged by anonymous",
    );

    // The rule editor checks as typed, then the gateway takes the rule.
    set_input(&browser, ".rule-form input[name='name']", "bad name");
    wait_until_text(&browser, "[data-problem='name']", "letters, digits");
    assert_eq!(
        browser.eval("return document.querySelector('.rule-form button[type=submit]').disabled;"),
        true
    );
    set_input(&browser, ".rule-form input[name='name']", "quiet");
    select(&browser, ".rule-form select[name='op']", "silent_for");
    set_input(&browser, ".rule-form input[name='topic']", "plant/#/x");
    wait_until_text(&browser, "[data-problem='topic']", "filter");
    set_input(&browser, ".rule-form input[name='topic']", "plant/+/temp");
    set_input(&browser, ".rule-form input[name='value']", "600");
    assert_eq!(
        browser.eval("return document.querySelector('.rule-form button[type=submit]').disabled;"),
        false
    );
    click(&browser, ".rule-form button[type=submit]");
    wait_until_text(&browser, ".rule[data-rule='quiet']", "silent_for 600");

    // A rule is changed in the same editor: its fields as saved, the name kept; the
    // gateway replaces it (PUT), and the editor is for a new rule again.
    click(&browser, ".rule[data-rule='hot'] .change");
    wait_until_text(&browser, ".rules h3", "Change rule hot");
    let typed = browser.eval(
        "const f = document.querySelector('.rule-form');
         return [f.querySelector('[name=name]') === null, f.topic.value, f.value.value, f.op.value, f.severity.value, f.browser.checked];",
    );
    assert_eq!(
        typed,
        serde_json::json!([true, "plant/+/temp", "30", ">", "critical", true])
    );
    set_input(&browser, ".rule-form input[name='value']", "40");
    set_input(&browser, ".rule-form input[name='clear_value']", "38");
    click(&browser, ".rule-form button[type=submit]");
    wait_until_text(&browser, ".rule[data-rule='hot']", "> 40, clears past 38");
    wait_until_text(&browser, ".rules h3", "New rule");
    let (status, listed) = kite.get_json("/api/v1/alarms/rules");
    assert_eq!(status, 200);
    let hot: Vec<&serde_json::Value> = listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == "hot")
        .collect();
    assert_eq!(hot.len(), 1, "{listed}");
    assert_eq!(
        (
            hot[0]["value"].as_f64(),
            hot[0]["clear_value"].as_f64(),
            hot[0]["severity"].as_str()
        ),
        (Some(40.0), Some(38.0), Some("critical")),
        "{listed}"
    );
    // Cancel leaves the rule as it is.
    click(&browser, ".rule[data-rule='quiet'] .change");
    wait_until_text(&browser, ".rules h3", "Change rule quiet");
    set_input(&browser, ".rule-form input[name='value']", "5");
    click(&browser, ".rule-form button[type=button]");
    wait_until_text(&browser, ".rules h3", "New rule");
    assert!(
        browser
            .text(".rule[data-rule='quiet']")
            .unwrap()
            .contains("silent_for 600")
    );
    browser.resize(390, 844);
    screenshot(&browser, "alarms-phone");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
