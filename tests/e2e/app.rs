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
    if let Some(path) = std::env::var_os("KITE_SCREENSHOT") {
        browser.screenshot(&path.into());
    }
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
    let wasm = html
        .split('"')
        .find(|s| s.ends_with("_bg.wasm"))
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

fn set_input(browser: &Browser, selector: &str, value: &str) {
    browser.eval(&format!(
        "const i = document.querySelector({}); i.value = {}; i.dispatchEvent(new InputEvent('input', {{bubbles: true}})); return null;",
        serde_json::Value::from(selector),
        serde_json::Value::from(value)
    ));
}

fn click(browser: &Browser, selector: &str) {
    browser.eval(&format!(
        "document.querySelector({}).click(); return null;",
        serde_json::Value::from(selector)
    ));
}

fn wait_until_text(browser: &Browser, selector: &str, needle: &str) -> String {
    kite_tests::wait_for(
        &format!("{selector} to contain {needle:?}"),
        Duration::from_secs(30),
        || browser.text(selector).filter(|t| t.contains(needle)),
    )
}

/// The whole path a person takes: open the app, connect, subscribe, and see what a device
/// publishes to mosquitto arrive in the page (device → mosquitto → gateway → browser).
#[test]
fn the_app_connects_subscribes_and_shows_a_device_message() {
    let broker = Mosquitto::start();
    let gateway = Gateway::start(&[&broker.url()], Some(assets_dir()));
    let browser = Browser::start();
    browser.goto(&gateway.http_url("/"));
    browser.wait_text("#connect", Duration::from_secs(30));

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
    let message = wait_until_text(&browser, ".message", "plant/line-1/temp");
    assert!(message.contains("21.5"), "{message}");
    wait_until_text(&browser, ".count", "1 message received");
    if let Some(path) = std::env::var_os("KITE_SCREENSHOT_LIVE") {
        broker.publish("plant/line-2/pressure", "{\"bar\": 3.2, \"ok\": true}");
        wait_until_text(&browser, ".count", "2 messages received");
        browser.screenshot(&path.into());
    }

    click(&browser, "#connect");
    wait_until_text(&browser, ".status", "disconnected");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// Publishing from the page: the topic is checked as you type, the broker's acknowledgement
/// is shown, and the message is really at the broker (retained, read back with mosquitto_sub).
#[test]
fn the_app_publishes_and_shows_the_brokers_acknowledgement() {
    let broker = Mosquitto::start();
    let gateway = Gateway::start(&[&broker.url()], Some(assets_dir()));
    let browser = Browser::start();
    browser.goto(&gateway.http_url("/"));
    browser.wait_text("#connect", Duration::from_secs(30));
    click(&browser, "#connect");
    wait_until_text(&browser, ".status", "connected");

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
