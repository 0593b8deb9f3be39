//! `kite.js` (issue #22, item 1) in a real Chromium: a plain page of another origin imports
//! the module from the gateway, connects, subscribes and publishes through the embedded broker
//! — allowed by `[http] allowed_origins`, and refused without it.

use std::time::Duration;

use kite_mqtt::{QoS, Version};
use kite_tests::browser::Browser;
use kite_tests::client::{TestClient, Via, publish};
use kite_tests::{Gateway, wait_for};

const WAIT: Duration = Duration::from_secs(20);

/// A page that loads kite.js from `gateway` and records what happens in `window.log`.
pub(crate) fn page(gateway: &Gateway, script: &str) -> String {
    let base = gateway.http_url("");
    let ws = gateway.ws_url("/mqtt");
    format!(
        r#"<!doctype html><meta charset="utf-8"><title>kite.js test</title>
<script type="module">
window.log = [];
const say = (line) => window.log.push(line);
try {{
  const {{ Kite }} = await import("{base}/kite.js");
  const url = "{ws}";
  {script}
}} catch (e) {{ say("error " + e.message); }}
</script>"#
    )
}

pub(crate) fn log(browser: &Browser) -> Vec<String> {
    browser
        .eval("return window.log || [];")
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn wait_for_line(browser: &Browser, line: &str) -> Vec<String> {
    wait_for(&format!("{line:?} in the page's log"), WAIT, || {
        let l = log(browser);
        l.iter().any(|x| x == line).then_some(l)
    })
}

/// The module from another origin: the retained value first, then live messages; a publish
/// that resolves on PUBACK with its properties; two parts of the page on one filter make one
/// SUBSCRIBE, the second given the retained value at once; a publish the broker refuses
/// rejects with its reason.
#[test]
fn a_page_of_another_origin_publishes_and_subscribes_with_kite_js() {
    let acl = kite_policy::acl::Acl {
        publish: Some(vec!["plant/#".into()]),
        subscribe: Some(vec!["#".into()]),
        deny_publish: vec![],
        deny_subscribe: vec![],
    };
    // The page's origin is known only once its server runs: allow the loopback pages.
    let kite = Gateway::start_with(&[], Some(kite_tests::assets_dir()), move |c| {
        c.auth = kite_tests::anonymous_role(acl);
        c.allowed_origins = vec!["*".into()];
    });
    let device = Via::Tcp(kite.mqtt_addr.unwrap());
    let mut d = TestClient::connected(&device, Version::V5, "device");
    let mut retained = publish("plant/a/temp", "21.5", QoS::AtLeastOnce, 1);
    retained.retain = true;
    d.publish(retained);
    d.subscribe("plant/valve/cmd", QoS::AtLeastOnce);

    let script = r#"
      const kite = await Kite.connect(url, { clientId: "page-1" });
      window.kite = kite;
      say("connected " + kite.state);
      kite.subscribe("plant/+/temp", (m) => say(`one ${m.topic} ${m.text()} ${m.retain}`));
      await kite.publish("plant/valve/cmd", "open", { qos: 1, properties: { contentType: "text/plain", userProperties: { by: "page" } } });
      say("published");
      try { await kite.publish("secret/x", "no", { qos: 1 }); say("secret published?"); }
      catch (e) { say("refused " + e.message); }
    "#;
    let url = kite_tests::page_server(page(&kite, script));
    let browser = Browser::start();
    browser.goto(&url);
    wait_for_line(&browser, "connected connected");
    wait_for_line(&browser, "one plant/a/temp 21.5 true");
    wait_for_line(&browser, "published");
    let cmd = d.recv_publish();
    assert_eq!(
        (cmd.topic.as_str(), &cmd.payload[..]),
        ("plant/valve/cmd", &b"open"[..])
    );
    assert_eq!(cmd.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(cmd.properties.user_properties.len(), 1);
    let refused = wait_for("the refusal", WAIT, || {
        log(&browser)
            .into_iter()
            .find(|l| l.starts_with("refused ") || l == "secret published?")
    });
    assert!(
        refused.contains("Not authorized"),
        "a publish outside the role's rules rejects with the broker's reason: {refused}"
    );

    // Live messages, and a second part of the page on the same filter.
    d.publish(publish("plant/b/temp", "22", QoS::AtLeastOnce, 2));
    wait_for_line(&browser, "one plant/b/temp 22 false");
    let subscriptions = kite.metric("kite_broker_subscriptions");
    browser.eval(
        "window.kite.subscribe('plant/+/temp', (m) => window.log.push(`two ${m.topic} ${m.text()}`)); return null;",
    );
    wait_for_line(&browser, "two plant/a/temp 21.5");
    wait_for_line(&browser, "two plant/b/temp 22");
    assert_eq!(
        kite.metric("kite_broker_subscriptions"),
        subscriptions,
        "one SUBSCRIBE for the page"
    );
    d.publish(publish("plant/c/temp", "23", QoS::AtLeastOnce, 3));
    wait_for_line(&browser, "one plant/c/temp 23 false");
    wait_for_line(&browser, "two plant/c/temp 23");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// Without the page's origin in `[http] allowed_origins` the module does not load (no CORS
/// header) and the WebSocket is refused (403).
#[test]
fn a_page_of_an_origin_not_allowed_gets_nothing() {
    let kite = Gateway::start_with(&[], Some(kite_tests::assets_dir()), |c| {
        c.allowed_origins = vec!["https://dash.example.com".into()];
    });
    let url = kite_tests::page_server(page(&kite, r#"say("loaded");"#));
    let browser = Browser::start();
    browser.goto(&url);
    let line = wait_for("the page's verdict", WAIT, || {
        log(&browser).into_iter().next()
    });
    assert!(line.starts_with("error "), "{line}");
    // And a page that has the module some other way still cannot open the WebSocket.
    browser.eval(&format!(
        "const ws = new WebSocket({:?}, 'mqtt'); ws.onerror = () => window.log.push('ws refused'); ws.onopen = () => window.log.push('ws open'); return null;",
        kite.ws_url("/mqtt")
    ));
    wait_for_line(&browser, "ws refused");
}

/// The classic script: `<script src=".../kite.iife.js">` defines `window.Kite`, the same API;
/// its TypeScript declarations are served beside it.
#[test]
fn a_classic_script_page_uses_window_kite() {
    let kite = Gateway::start_with(&[], Some(kite_tests::assets_dir()), |c| {
        c.allowed_origins = vec!["*".into()];
    });
    let base = kite.http_url("");
    let ws = kite.ws_url("/mqtt");
    let html = format!(
        r#"<!doctype html><meta charset="utf-8"><title>classic</title>
<script src="{base}/kite.iife.js"></script>
<script>
window.log = [];
Kite.connect("{ws}", {{ clientId: "classic-1", version: 4 }})
  .then((kite) => {{
    kite.subscribe("lab/#", (m) => window.log.push(m.topic + " " + m.text()));
    return kite.publish("lab/hello", "from a classic script", {{ qos: 1 }});
  }})
  .then(() => window.log.push("published"))
  .catch((e) => window.log.push("error " + e.message));
</script>"#
    );
    let url = kite_tests::page_server(html);
    let browser = Browser::start();
    browser.goto(&url);
    wait_for_line(&browser, "published");
    wait_for_line(&browser, "lab/hello from a classic script");
    let (status, text) = kite.get_text("/kite.d.ts");
    assert_eq!(status, 200);
    assert!(text.contains("export class Kite"), "{text}");
}

/// Text of `part` in the shadow root of `selector`.
fn part(browser: &Browser, selector: &str, part: &str) -> String {
    browser
        .eval(&format!(
            "const e = document.querySelector({}); const p = e && e.shadowRoot && e.shadowRoot.querySelector('[part~={part}]'); return p ? p.textContent : null;",
            serde_json::Value::from(selector)
        ))
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn wait_part(browser: &Browser, selector: &str, name: &str, want: &str) {
    wait_for(
        &format!("{selector}::part({name}) = {want:?}"),
        WAIT,
        || (part(browser, selector, name) == want).then_some(()),
    );
}

/// The web components on a plain page, with no script of its own but the module: the
/// retained value first (a JSON field, decimals, unit, a gauge), a switch that follows the
/// device's state rather than its own press, a button and a slider that publish, DOM events,
/// and "not authorized" for a topic the role may not read.
#[test]
fn web_components_show_follow_and_publish() {
    // Outside the role's subscribe rules: 0x87 Not authorized [MQTT-3.9.3].
    let acl = kite_policy::acl::Acl {
        publish: Some(vec!["plant/#".into()]),
        subscribe: Some(vec!["plant/#".into()]),
        deny_publish: vec![],
        deny_subscribe: vec![],
    };
    let kite = Gateway::start_with(&[], Some(kite_tests::assets_dir()), move |c| {
        c.auth = kite_tests::anonymous_role(acl);
        c.allowed_origins = vec!["*".into()];
    });
    let device = Via::Tcp(kite.mqtt_addr.unwrap());
    let mut d = TestClient::connected(&device, Version::V5, "device");
    for (topic, payload) in [
        ("plant/a/temp", r#"{"temp": 21.46}"#),
        ("plant/valve/state", "closed"),
    ] {
        let mut p = publish(topic, payload, QoS::AtLeastOnce, 1);
        p.retain = true;
        d.publish(p);
    }
    d.subscribe("plant/valve/set", QoS::AtLeastOnce);
    d.subscribe("plant/cmd", QoS::AtLeastOnce);
    d.subscribe("plant/speed", QoS::AtLeastOnce);
    let html = format!(
        r#"<!doctype html><html data-kite-url="{ws}"><meta charset="utf-8"><title>components</title>
<kite-value id="v" topic="plant/a/temp" field="/temp" unit="°C" decimals="1"></kite-value>
<kite-gauge id="g" topic="plant/a/temp" field="/temp" max="50" unit="°"></kite-gauge>
<kite-switch id="s" topic="plant/valve/set" state-topic="plant/valve/state" on="open" off="closed"></kite-switch>
<kite-button id="b" topic="plant/cmd" payload="restart">Restart</kite-button>
<kite-slider id="l" topic="plant/speed" min="0" max="100"></kite-slider>
<kite-value id="denied" topic="secret/x"></kite-value>
<script>window.log = []; document.addEventListener("kite-publish", (e) => window.log.push("publish " + e.detail.topic + " " + e.detail.payload));</script>
<script type="module" src="{base}/kite.js"></script></html>"#,
        ws = kite.ws_url("/mqtt"),
        base = kite.http_url(""),
    );
    let url = kite_tests::page_server(html);
    let browser = Browser::start();
    browser.goto(&url);
    wait_part(&browser, "#v", "value", "21.5");
    assert_eq!(part(&browser, "#v", "unit"), "°C");
    wait_part(&browser, "#g", "value", "21.46°");
    wait_part(&browser, "#s", "switch", "off");

    // The switch publishes "open" but shows what the device says.
    browser.eval("document.querySelector('#s').shadowRoot.querySelector('[part~=switch]').click(); return null;");
    let set = d.recv_publish();
    assert_eq!(
        (set.topic.as_str(), &set.payload[..]),
        ("plant/valve/set", &b"open"[..])
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(part(&browser, "#s", "switch"), "off", "not its own state");
    d.publish(publish("plant/valve/state", "open", QoS::AtLeastOnce, 2));
    wait_part(&browser, "#s", "switch", "on");
    assert_eq!(
        browser.eval("return document.querySelector('#s').hasAttribute('checked');"),
        true
    );
    // A state that is neither "open" nor "closed" is shown as it is, not as "off".
    d.publish(publish("plant/valve/state", "stuck", QoS::AtLeastOnce, 3));
    wait_part(&browser, "#s", "switch", "stuck");
    assert_eq!(
        browser.eval("const s = document.querySelector('#s'); return [s.hasAttribute('checked'), s.hasAttribute('unknown'), s.shadowRoot.querySelector('[part~=switch]').title];"),
        serde_json::json!([false, true, "\"stuck\" is neither on (\"open\") nor off (\"closed\"): set the on and off attributes"])
    );
    d.publish(publish("plant/valve/state", "closed", QoS::AtLeastOnce, 4));
    wait_part(&browser, "#s", "switch", "off");
    assert_eq!(
        browser.eval("return document.querySelector('#s').hasAttribute('unknown');"),
        false
    );

    browser.eval("document.querySelector('#b').shadowRoot.querySelector('[part~=button]').click(); return null;");
    let cmd = d.recv_publish();
    assert_eq!(
        (cmd.topic.as_str(), &cmd.payload[..]),
        ("plant/cmd", &b"restart"[..])
    );
    wait_for_line(&browser, "publish plant/cmd restart");

    browser.eval("const i = document.querySelector('#l').shadowRoot.querySelector('[part~=slider]'); i.value = '42'; i.dispatchEvent(new Event('change')); return null;");
    let speed = d.recv_publish();
    assert_eq!(
        (speed.topic.as_str(), &speed.payload[..]),
        ("plant/speed", &b"42"[..])
    );

    wait_part(&browser, "#denied", "status", "not authorized");
    assert_eq!(
        browser.eval("return document.querySelector('#denied').getAttribute('state');"),
        "denied"
    );
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// `<kite-status>` reads the device monitor (and follows a device going offline);
/// `<kite-chart>` starts from the recorded history and adds live points.
#[test]
fn status_and_chart_components_read_the_gateways_monitor_and_history() {
    let dir = kite_tests::TempDir::new("embed-status-chart");
    let record = crate::history::recording(dir.path(), &["plant/#"], 1 << 30);
    let watch = crate::devices::monitoring(
        dir.path(),
        "[[devices]]\nstatus_topic = \"plant/{device}/status\"\n",
    );
    let kite = Gateway::start_with(&[], Some(kite_tests::assets_dir()), move |c| {
        record(c);
        watch(c);
        c.allowed_origins = vec!["*".into()];
    });
    let device = Via::Tcp(kite.mqtt_addr.unwrap());
    let mut d = TestClient::connected(&device, Version::V5, "pump-1");
    let mut online = publish("plant/pump-1/status", "online", QoS::AtLeastOnce, 1);
    online.retain = true;
    d.publish(online);
    for i in 0..20u16 {
        d.publish(publish(
            "plant/pump-1/temp",
            &format!("{{\"temp\": {}}}", 20 + i % 5),
            QoS::AtLeastOnce,
            i + 2,
        ));
    }
    wait_for("recorded", WAIT, || {
        (kite.state().history().unwrap().usage().messages >= 21).then_some(())
    });
    let html = format!(
        r#"<!doctype html><html data-kite-url="{ws}"><meta charset="utf-8"><title>status and chart</title>
<kite-status id="st" device="pump-1"></kite-status>
<kite-chart id="ch" topic="plant/pump-1/temp" field="/temp" window="1h"></kite-chart>
<kite-chart id="short" topic="plant/pump-1/temp" field="/temp" window="30s"></kite-chart>
<script type="module" src="{base}/kite.js"></script></html>"#,
        ws = kite.ws_url("/mqtt"),
        base = kite.http_url(""),
    );
    let url = kite_tests::page_server(html);
    let browser = Browser::start();
    browser.goto(&url);
    wait_part(&browser, "#st", "state", "online");
    let points = |b: &Browser| {
        b.eval("return Number(document.querySelector('#ch').getAttribute('points'));")
            .as_u64()
            .unwrap_or(0)
    };
    // The recorded messages, in buckets (one per pixel column at most).
    let recorded = wait_for("the recorded series", WAIT, || {
        let n = points(&browser);
        (n > 0).then_some(n)
    });
    d.publish(publish(
        "plant/pump-1/temp",
        r#"{"temp": 30}"#,
        QoS::AtLeastOnce,
        40,
    ));
    wait_for("a live point", WAIT, || {
        (points(&browser) == recorded + 1).then_some(())
    });
    // A hole in the data breaks the line: on a 30 s chart (100 ms a pixel), five points
    // 100 ms apart are one line; after 1.5 s of silence, five more are a line of their own.
    let runs = |b: &Browser| {
        b.eval("return Number(document.querySelector('#short').getAttribute('runs'));")
            .as_u64()
            .unwrap_or(0)
    };
    let mut id = 50;
    let mut five = |d: &mut TestClient| {
        for _ in 0..5 {
            id += 1;
            d.publish(publish(
                "plant/pump-1/temp",
                r#"{"temp": 25}"#,
                QoS::AtLeastOnce,
                id,
            ));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    five(&mut d);
    std::thread::sleep(Duration::from_millis(300));
    let before = runs(&browser);
    assert!(before >= 1, "{before}");
    std::thread::sleep(Duration::from_millis(1_200));
    five(&mut d);
    wait_for("a second line after the hole", WAIT, || {
        (runs(&browser) == before + 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        runs(&browser),
        before + 1,
        "one more line, not one per point"
    );
    // Offline: the next poll (5 s) says so.
    d.publish(publish(
        "plant/pump-1/status",
        "offline",
        QoS::AtLeastOnce,
        41,
    ));
    wait_part(&browser, "#st", "state", "offline");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// docs/embed-example.html as `cargo xtask serve` serves it: the `$SYS` values show, and the
/// switch turns on once the page's own script, acting as the lamp, reports the new state.
#[test]
fn the_example_page_works() {
    let kite = Gateway::start_with(&[], Some(kite_tests::assets_dir()), |_| {});
    let browser = Browser::start();
    browser.goto(&kite.http_url("/embed-example.html"));
    wait_for("the connected clients", WAIT, || {
        part(&browser, "#clients", "value")
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
    });
    wait_part(&browser, "#lamp", "switch", "off");
    browser.eval("document.querySelector('#lamp').shadowRoot.querySelector('[part~=switch]').click(); return null;");
    wait_part(&browser, "#lamp", "switch", "on");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// A gateway in front of `broker` that lets pages of any origin in, and a browser on a page
/// running `script` (which says "ready" when it has subscribed).
fn page_in_front_of(broker: &kite_tests::Mosquitto, script: &str) -> (Gateway, Browser) {
    let kite = Gateway::start_with(&[&broker.url()], Some(kite_tests::assets_dir()), |c| {
        c.allowed_origins = vec!["*".into()];
    });
    let browser = Browser::start();
    browser.goto(&kite_tests::page_server(page(&kite, script)));
    wait_for_line(&browser, "ready");
    (kite, browser)
}

/// Publishes `payload` on `topic` with `mosquitto_pub` until the page logs `line` (its
/// subscription may still be on its way).
fn until_heard(
    browser: &Browser,
    broker: &kite_tests::Mosquitto,
    topic: &str,
    payload: &str,
    line: &str,
) {
    wait_for(&format!("{line:?} in the page's log"), WAIT, || {
        broker.publish(topic, payload);
        log(browser).iter().any(|l| l == line).then_some(())
    });
}

/// In front of mosquitto: a value from `mosquitto_pub`; while mosquitto is down, publishes
/// wait in the outbox and are acknowledged once it is back (read back with `mosquitto_sub`),
/// and the page's subscription is there again.
#[test]
fn through_mosquitto_publishes_wait_out_a_broker_restart() {
    let mut broker = kite_tests::Mosquitto::start();
    let script = r#"
      const kite = await Kite.connect(url, { clientId: "page-outbox", clean: false, sessionExpiry: 300 });
      window.kite = kite;
      kite.on("status", (s) => say("status " + s.state));
      kite.subscribe("lab/in/#", (m) => say(`in ${m.topic} ${m.text()}`));
      say("ready");
    "#;
    let (_kite, browser) = page_in_front_of(&broker, script);
    until_heard(&browser, &broker, "lab/in/x", "hello", "in lab/in/x hello");

    broker.stop();
    wait_for_line(&browser, "status reconnecting");
    browser.eval(
        "for (const n of [1, 2, 3]) window.kite.publish(`lab/out/${n}`, `kept ${n}`, { qos: 1, retain: true }).then(() => window.log.push(`acked ${n}`), (e) => window.log.push(`failed ${n} ${e.message}`)); return null;",
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !log(&browser)
            .iter()
            .any(|l| l.starts_with("acked") || l.starts_with("failed")),
        "nothing is acknowledged while the broker is down: {:?}",
        log(&browser)
    );
    broker.run();
    for n in 1..=3 {
        wait_for_line(&browser, &format!("acked {n}"));
    }
    let out = broker
        .client("mosquitto_sub")
        .args(["-t", "lab/out/#", "-C", "3", "-W", "10", "-v"])
        .output()
        .unwrap();
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    assert_eq!(
        got,
        ["lab/out/1 kept 1", "lab/out/2 kept 2", "lab/out/3 kept 3"]
    );
    until_heard(&browser, &broker, "lab/in/y", "again", "in lab/in/y again");
}

/// A session the broker kept (mosquitto with persistence, `clean: false`): after a restart the
/// page's acknowledged subscription is still the broker's, and one made while the broker was
/// away is sent when it is back.
#[test]
fn a_kept_session_gets_the_subscriptions_made_while_away() {
    let mut broker = kite_tests::Mosquitto::start_persistent();
    let script = r#"
      const kite = await Kite.connect(url, { clientId: "page-kept", clean: false, sessionExpiry: 300 });
      window.kite = kite;
      kite.on("status", (s) => say("status " + s.state));
      kite.subscribe("lab/a/#", (m) => say(`a ${m.topic} ${m.text()}`));
      say("ready");
    "#;
    let (_kite, browser) = page_in_front_of(&broker, script);
    until_heard(&browser, &broker, "lab/a/x", "one", "a lab/a/x one");
    broker.stop();
    wait_for_line(&browser, "status reconnecting");
    browser.eval(
        "window.kite.subscribe('lab/b/#', (m) => window.log.push(`b ${m.topic} ${m.text()}`)); return null;",
    );
    broker.run();
    wait_for_line(&browser, "status connected");
    // The subscription made while away, then the kept one.
    until_heard(&browser, &broker, "lab/b/y", "two", "b lab/b/y two");
    until_heard(&browser, &broker, "lab/a/z", "three", "a lab/a/z three");
}
