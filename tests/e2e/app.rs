//! The built app, served by the gateway, loaded in headless Chromium.

use std::time::Duration;

use kite_tests::browser::Browser;
use kite_tests::{Gateway, Mosquitto, assets_dir};

#[test]
fn the_app_renders_in_chromium_and_lists_the_gateways_brokers() {
    let broker = Mosquitto::start();
    let gateway = Gateway::start(
        &[&broker.url(), &format!("lab={}", broker.url())],
        Some(assets_dir()),
    );
    let browser = Browser::start();
    browser.goto(&gateway.http_url("/"));
    let first = browser.wait_text(".upstream[data-name=default]", Duration::from_secs(30));
    assert!(first.contains("default"), "{first}");
    assert_eq!(
        browser.text(".upstream[data-name=lab]").as_deref(),
        Some("lab")
    );
    assert_eq!(browser.text("#kite-app h1").as_deref(), Some("Kite"));
    let endpoint = browser.text(".endpoint").unwrap();
    assert_eq!(endpoint, format!("ws://{}/mqtt", gateway.addr));
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    screenshot(&browser, "home");
}

#[test]
fn static_files_have_the_right_types_and_cache_rules() {
    let broker = Mosquitto::start();
    let gateway = Gateway::start(&[&broker.url()], Some(assets_dir()));
    let index = ureq::get(gateway.http_url("/")).call().unwrap();
    assert_eq!(index.headers()["cache-control"], "no-cache");
    assert!(
        index.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = ureq::get(gateway.http_url("/"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    // Minified (Trunk.toml), index.html leaves attributes unquoted (`href=/…_bg.wasm`) and
    // names the module in a template literal.
    let wasm = html
        .split(['"', '`', '=', ' ', '>'])
        .find(|s| s.starts_with('/') && s.ends_with("_bg.wasm"))
        .unwrap_or_else(|| panic!("no wasm referenced in index.html: {html}"))
        .to_owned();
    let response = ureq::get(gateway.http_url(&wasm)).call().unwrap();
    assert_eq!(response.headers()["content-type"], "application/wasm");
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    // A client-side route falls back to the app.
    let route = ureq::get(gateway.http_url("/connections/x"))
        .call()
        .unwrap();
    assert!(
        route.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

/// Guards the assertion above: the console check must see an error when there is one.
#[test]
fn console_error_detection_sees_errors() {
    let browser = Browser::start();
    browser.goto("about:blank");
    browser.eval("console.error('kite-canary-error'); return null;");
    let errors = browser.console_errors();
    assert!(
        errors.iter().any(|e| e.contains("kite-canary-error")),
        "{errors:#?}"
    );
}

pub(crate) fn set_input(browser: &Browser, selector: &str, value: &str) {
    browser.eval(&format!(
        "const i = document.querySelector({}); i.value = {}; i.dispatchEvent(new InputEvent('input', {{bubbles: true}})); return null;",
        serde_json::Value::from(selector),
        serde_json::Value::from(value)
    ));
}

/// How many elements `selector` finds.
pub(crate) fn count(browser: &Browser, selector: &str) -> u64 {
    browser
        .eval(&format!(
            "return document.querySelectorAll({}).length;",
            serde_json::Value::from(selector)
        ))
        .as_u64()
        .unwrap()
}

pub(crate) fn click(browser: &Browser, selector: &str) {
    browser.eval(&format!(
        "document.querySelector({}).click(); return null;",
        serde_json::Value::from(selector)
    ));
}

pub(crate) fn wait_until_text(browser: &Browser, selector: &str, needle: &str) -> String {
    kite_tests::wait_for(
        &format!("{selector} to contain {needle:?}"),
        Duration::from_secs(30),
        || browser.text(selector).filter(|t| t.contains(needle)),
    )
}

/// Opens the new-connection form and types the name (the rest left at its defaults).
pub(crate) fn open_profile_form(browser: &Browser, name: &str) {
    browser.wait_text(".new-connection", Duration::from_secs(30));
    click(browser, ".new-connection");
    browser.wait_text("#profile-name", Duration::from_secs(30));
    set_input(browser, "#profile-name", name);
}

/// Makes a connection profile through the form (defaults, this name) and returns its id,
/// with its page open.
pub(crate) fn new_profile(browser: &Browser, name: &str) -> String {
    open_profile_form(browser, name);
    click(browser, "#save-profile");
    let id = kite_tests::wait_for("the connection page", Duration::from_secs(30), || {
        browser
            .eval("const c = document.querySelector('.connection'); return c ? c.dataset.profile : null;")
            .as_str()
            .map(str::to_owned)
    });
    assert_eq!(browser.text("#conn-title").as_deref(), Some(name));
    id
}

/// Saves a PNG of the page under `target/screenshots/` (a test artifact), and to
/// `$KITE_SCREENSHOT_<NAME>` when that is set (the README's pictures).
pub(crate) fn screenshot(browser: &Browser, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    let _ = std::fs::create_dir_all(&dir);
    browser.screenshot(&dir.join(format!("{name}.png")));
    if let Some(path) = std::env::var_os(format!("KITE_SCREENSHOT_{}", name.to_uppercase())) {
        browser.screenshot(&path.into());
    }
}

/// The whole path a person takes: open the app, make a connection, connect, subscribe, and
/// see what a device publishes to mosquitto arrive in the page (device → mosquitto → gateway
/// → browser).
#[test]
fn the_app_connects_subscribes_and_shows_a_device_message() {
    let broker = Mosquitto::start();
    let gateway = Gateway::start(&[&broker.url()], Some(assets_dir()));
    let browser = Browser::start();
    browser.goto(&gateway.http_url("/"));
    let id = new_profile(&browser, "Plant");

    // Filter validation as you type: the rule broken is shown and Subscribe is disabled.
    set_input(&browser, "#filter", "plant/#/temp");
    let error = wait_until_text(&browser, ".filter-error", "MQTT-4.7.1-2");
    assert!(error.contains("'#'"), "{error}");
    assert_eq!(
        browser.eval("return document.querySelector('#subscribe').disabled;"),
        true
    );

    click(&browser, "#connect");
    wait_until_text(&browser, ".status", "connected");
    set_input(&browser, "#filter", "plant/#");
    assert_eq!(browser.text(".filter-error"), None);
    click(&browser, "#subscribe");
    wait_until_text(&browser, ".subscription", "granted QoS 1");

    broker.publish("plant/line-1/temp", "21.5");
    // In the tree (first two levels open), with its value; selected, in the detail.
    let row = r#".topic-row[data-topic="plant/line-1/temp"]"#;
    let shown = wait_until_text(&browser, row, "temp");
    assert!(shown.contains("21.5"), "{shown}");
    wait_until_text(&browser, ".count", "1 message received on 1 topic");
    click(&browser, row);
    wait_until_text(&browser, ".detail-topic", "plant/line-1/temp");
    // The URL names the topic: opening it elsewhere selects it.
    assert_eq!(
        browser.eval("return location.pathname;"),
        format!("/connections/{id}/topic/plant/line-1/temp")
    );
    let payload = wait_until_text(&browser, ".detail .payload", "21.5");
    assert_eq!(payload.trim(), "21.5");
    assert!(
        browser
            .text(".detail .entry .meta")
            .unwrap()
            .contains("QoS 0")
    );
    broker.publish("plant/line-1/temp", "22.5");
    // The newest entry says what changed since the one before.
    wait_until_text(&browser, ".detail .entry .diff", "changed:");
    let diff = browser.eval(
        "const d = document.querySelector('.detail .entry .diff'); return [d.querySelector('del').textContent, d.querySelector('ins').textContent];",
    );
    assert_eq!(diff, serde_json::json!(["1", "2"]), "21.5 → 22.5");
    screenshot(&browser, "topic");

    // A link to the topic opens the page with it selected (a reload, as from a bookmark):
    // once connected, the saved subscription is made again and the topic shows when it
    // speaks.
    click(&browser, "#connect");
    wait_until_text(&browser, ".status", "disconnected");
    browser.goto(&gateway.http_url(&format!("/connections/{id}/topic/plant/line-1/temp")));
    browser.wait_text("#connect", Duration::from_secs(30));
    click(&browser, "#connect");
    wait_until_text(&browser, ".subscription", "granted QoS 1");
    broker.publish("plant/line-1/temp", "23");
    let payload = wait_until_text(&browser, ".detail .payload", "23");
    assert_eq!(payload.trim(), "23");
    click(&browser, "#connect");
    wait_until_text(&browser, ".status", "disconnected");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// mosquitto, the gateway with the built app in front of it, and Chromium showing the app
/// with one connection profile, connected; returns the profile id too.
pub(crate) fn connected_app() -> (Mosquitto, Gateway, Browser, String) {
    let broker = Mosquitto::start();
    let gateway = Gateway::start(&[&broker.url()], Some(assets_dir()));
    let browser = Browser::start();
    browser.goto(&gateway.http_url("/"));
    let id = new_profile(&browser, "Lab");
    click(&browser, "#connect");
    wait_until_text(&browser, ".status", "connected");
    (broker, gateway, browser, id)
}

/// Publishing from the page: the topic is checked as you type, the broker's acknowledgement
/// is shown, and the message is really at the broker (retained, read back with mosquitto_sub).
#[test]
fn the_app_publishes_and_shows_the_brokers_acknowledgement() {
    let (broker, _gateway, browser, _) = connected_app();

    set_input(&browser, "#pub-topic", "cmd/+/power");
    wait_until_text(&browser, ".topic-error", "wildcard");
    assert_eq!(
        browser.eval("return document.querySelector('#publish').disabled;"),
        true
    );

    set_input(&browser, "#pub-topic", "cmd/pump-1/power");
    set_input(&browser, "#pub-payload", "on");
    click(&browser, "#pub-retain");
    click(&browser, "#publish");
    wait_until_text(&browser, ".publish-result", "acknowledged by the broker");
    assert_eq!(
        broker.receive_one("cmd/pump-1/power"),
        "cmd/pump-1/power on"
    );
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// Thousands of topics: every message counted, the tree virtualized (only the rows in view
/// are in the DOM), found by a filter, a JSON payload shown pretty with its sparkline, the
/// keyboard moves the selection.
#[test]
fn the_tree_stays_small_in_the_dom_with_thousands_of_topics() {
    use kite_mqtt::codec::Packet;
    use kite_tests::client::{TestClient, Via, publish};
    let (broker, _gateway, browser, _) = connected_app();
    set_input(&browser, "#filter", "site/#");
    click(&browser, "#subscribe");
    wait_until_text(&browser, ".subscription", "granted QoS 1");

    // 2,000 devices under 20 groups, 3 messages each (the last as JSON).
    let device = Via::Tcp(format!("127.0.0.1:{}", broker.port).parse().unwrap());
    let mut d = TestClient::connected(&device, kite_mqtt::Version::V3_1_1, "load");
    for round in 0..3 {
        let batch: Vec<Packet> = (0..2000)
            .map(|i| {
                let payload = if round == 2 {
                    format!("{{\"temp\": {}.5, \"ok\": true}}", 20 + i % 7)
                } else {
                    format!("{}", 10 + round * 5 + i % 3)
                };
                let topic = format!("site/group-{:02}/dev-{i:04}", i % 20);
                Packet::Publish(publish(&topic, &payload, kite_mqtt::QoS::AtMostOnce, 0))
            })
            .collect();
        d.send_all(&batch);
    }
    d.barrier();
    wait_until_text(&browser, ".count", "6000 messages received on 2000 topics");
    let rows = browser.eval(
        "return [document.querySelector('.tree').dataset.rows, document.querySelectorAll('.topic-row').length];",
    );
    // site, 20 groups (open), 2,000 devices: all scrollable, about 40 in the DOM.
    assert_eq!(rows[0], "2021", "{rows}");
    let in_dom = rows[1].as_u64().unwrap();
    assert!(
        in_dom < 60,
        "{in_dom} rows in the DOM for 2,021: not virtualized"
    );
    // Scrolled to the end, the last device is rendered.
    browser.eval("const t = document.querySelector('.tree'); t.scrollTop = t.scrollHeight; t.dispatchEvent(new Event('scroll')); return null;");
    wait_until_text(
        &browser,
        r#".topic-row[data-topic="site/group-19/dev-1999"]"#,
        "dev-1999",
    );

    set_input(&browser, "#tree-filter", "dev-0042");
    let row = r#".topic-row[data-topic="site/group-02/dev-0042"]"#;
    wait_until_text(&browser, row, "dev-0042");
    assert_eq!(
        browser.eval("return document.querySelectorAll('.topic-row').length;"),
        3,
        "site, group-02, dev-0042"
    );
    click(&browser, row);
    // JSON as a tree that folds: the object's fields as its children.
    wait_until_text(&browser, ".detail .payload.json", "\"temp\": 20.5");
    let fields = browser.eval(
        "return [...document.querySelectorAll('.detail .entry:first-child .payload.json > details > .j')].map(e => e.textContent);",
    );
    assert_eq!(
        fields,
        serde_json::json!(["\"temp\": 20.5", "\"ok\": true"])
    );
    assert!(
        browser
            .text(".detail-meta")
            .unwrap()
            .contains("3 messages here, 3 kept"),
        "{:?}",
        browser.text(".detail-meta")
    );
    // 10, 15 and the JSON's 20.5: a sparkline.
    let spark = wait_until_text(&browser, ".spark", "last 20.5");
    assert!(spark.contains("min 10"), "{spark}");
    set_input(&browser, "#tree-filter", "");
    browser.eval("document.querySelector('#topics-title').scrollIntoView(); return null;");
    std::thread::sleep(Duration::from_millis(300));
    screenshot(&browser, "tree");
    // A click folds the object.
    browser.eval(
        "document.querySelector('.detail .payload.json > details > summary').click(); return null;",
    );
    assert_eq!(
        browser.eval("return document.querySelector('.detail .payload.json > details').open;"),
        false,
        "folded"
    );
    // An MQTT filter works too; the keyboard moves the selection up the tree.
    set_input(&browser, "#tree-filter", "site/+/dev-0001");
    wait_until_text(
        &browser,
        r#".topic-row[data-topic="site/group-01/dev-0001"]"#,
        "dev-0001",
    );
    click(
        &browser,
        r#".topic-row[data-topic="site/group-01/dev-0001"]"#,
    );
    browser.eval("const t = document.querySelector('.tree'); t.focus(); t.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowUp', bubbles: true})); return null;");
    kite_tests::wait_for("the parent selected", Duration::from_secs(30), || {
        browser
            .text(".detail-topic code")
            .filter(|t| t == "site/group-01")
    });
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
