//! The app's connections in Chromium: profiles kept in the browser, several open at once, the
//! publish form with MQTT 5 properties and payload formats, deleting retained messages, and
//! the outbox through a broker restart and a page reload.

use std::process::Stdio;
use std::time::Duration;

use kite_tests::browser::Browser;
use kite_tests::{Gateway, Mosquitto, assets_dir, wait_for};

use crate::app::{
    click, connected_app, count, new_profile, open_profile_form, screenshot, set_input,
    wait_until_text,
};

const WAIT: Duration = Duration::from_secs(30);

/// Changes a `<select>` the way a person does.
fn choose(browser: &Browser, selector: &str, value: &str) {
    browser.eval(&format!(
        "const s = document.querySelector({}); s.value = {}; s.dispatchEvent(new Event('change', {{bubbles: true}})); return null;",
        serde_json::Value::from(selector),
        serde_json::Value::from(value)
    ));
}

fn value(browser: &Browser, selector: &str) -> String {
    browser
        .eval(&format!(
            "return document.querySelector({}).value;",
            serde_json::Value::from(selector)
        ))
        .as_str()
        .unwrap()
        .to_owned()
}

/// The retained messages mosquitto holds under `filter`, as `mosquitto_sub -F` prints them
/// (`%t|%p` unless told), sorted.
fn retained(broker: &Mosquitto, filter: &str, format: &str) -> Vec<String> {
    let out = broker
        .client("mosquitto_sub")
        .args([
            "-V",
            "5",
            "-t",
            filter,
            "--retained-only",
            "-W",
            "2",
            "-F",
            format,
        ])
        .output()
        .unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// Clicks Publish once the form has no mistake left.
fn publish_when_valid(browser: &Browser) {
    wait_for("the form to be valid", WAIT, || {
        (browser.eval("return document.querySelector('#publish').disabled;") == false).then_some(())
    });
    click(browser, "#publish");
}

fn no_console_errors(browser: &Browser) {
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// A profile is checked as it is typed, saved in the browser (the password only when asked),
/// gets its own colour, and is there after a reload; two connections are open at once; the
/// Last Will set in the form is the one the broker publishes when the browser goes away.
#[test]
fn profiles_are_checked_saved_coloured_and_open_at_once() {
    let broker = Mosquitto::start();
    let gateway = Gateway::start(&[&broker.url()], Some(assets_dir()));
    let browser = Browser::start();
    browser.goto(&gateway.http_url("/"));
    open_profile_form(&browser, "Line 1");
    // Mistakes are named on their field and saving waits until they are fixed.
    set_input(&browser, "#profile-will-topic", "status/+");
    set_input(&browser, "#profile-keep-alive", "soon");
    let will = wait_until_text(
        &browser,
        ".field-error[data-field=will_topic]",
        "Will topic",
    );
    assert!(will.contains("wildcard"), "{will}");
    wait_until_text(
        &browser,
        ".field-error[data-field=keep_alive]",
        "not a whole number",
    );
    assert_eq!(
        browser.eval("return document.querySelector('#save-profile').disabled;"),
        true
    );
    set_input(&browser, "#profile-will-topic", "status/line-1");
    set_input(&browser, "#profile-will-payload", "offline");
    set_input(&browser, "#profile-keep-alive", "20");
    set_input(&browser, "#profile-username", "alice");
    set_input(&browser, "#profile-password", "pw-not-kept");
    set_input(&browser, "#profile-user-properties", "site: lyon");
    wait_for("the errors to go", WAIT, || {
        (count(&browser, ".field-error") == 0).then_some(())
    });
    screenshot(&browser, "editor");
    click(&browser, "#save-profile");
    let first = wait_for("the connection page", WAIT, || {
        browser
            .eval("const c = document.querySelector('.connection'); return c ? c.dataset.profile : null;")
            .as_str()
            .map(str::to_owned)
    });
    let second = new_profile(&browser, "Line 2");
    assert_ne!(first, second);

    // Kept across a reload; the password was not saved (not asked to).
    browser.goto(&gateway.http_url("/"));
    wait_for("both profiles listed", WAIT, || {
        (count(&browser, ".profile") == 2).then_some(())
    });
    let colours = browser.eval(
        "return [...document.querySelectorAll('.profile')].map(p => p.style.getPropertyValue('--conn'));",
    );
    assert_ne!(
        colours[0], colours[1],
        "each connection has its colour: {colours}"
    );
    let saved = browser.eval("return localStorage.getItem('kite.profiles');");
    let saved = saved.as_str().unwrap();
    assert!(
        saved.contains("status/line-1") && saved.contains("alice"),
        "{saved}"
    );
    assert!(
        !saved.contains("pw-not-kept"),
        "the password was saved: {saved}"
    );
    browser.goto(&gateway.http_url(&format!("/connections/{first}/edit")));
    browser.wait_text("#profile-will-topic", WAIT);
    assert_eq!(value(&browser, "#profile-will-topic"), "status/line-1");
    assert_eq!(value(&browser, "#profile-keep-alive"), "20");

    // Both connected at once, each with its status in the list.
    for id in [&first, &second] {
        click(&browser, &format!(".profile[data-profile={id}] a"));
        wait_until_text(&browser, "#conn-title", "Line");
        click(&browser, "#connect");
        wait_until_text(&browser, ".connection .status", "connected");
    }
    for id in [&first, &second] {
        wait_until_text(
            &browser,
            &format!(".profile[data-profile={id}] .profile-status"),
            "connected",
        );
    }
    screenshot(&browser, "connections");
    no_console_errors(&browser);

    // The browser goes away without DISCONNECT: the broker publishes the Will from the form.
    let mut watcher = broker
        .client("mosquitto_sub")
        .args(["-t", "status/line-1", "-C", "1", "-W", "30", "-v"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(browser);
    let out = wait_output(&mut watcher);
    assert_eq!(out.trim(), "status/line-1 offline");
}

fn wait_output(child: &mut std::process::Child) -> String {
    let status = child.wait().unwrap();
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    }
    assert!(status.success(), "mosquitto_sub: {status}, printed {out:?}");
    out
}

/// The publish form: JSON checked before it is sent, MQTT 5 properties set as typed and read
/// back by mosquitto_sub, a hex payload sent as bytes, and the sent history to send again.
#[test]
fn the_publish_form_sends_properties_and_formats() {
    let (broker, _gateway, browser, _) = connected_app();
    set_input(&browser, "#pub-topic", "cmd/pump-1");
    choose(&browser, "#pub-format", "JSON");
    set_input(&browser, "#pub-payload", "{\"on\": tru}");
    let error = wait_until_text(
        &browser,
        ".field-error[data-field=payload]",
        "not valid JSON",
    );
    assert!(error.contains("line 1, column 8"), "{error}");
    assert_eq!(
        browser.eval("return document.querySelector('#publish').disabled;"),
        true
    );
    set_input(&browser, "#pub-payload", "{\"on\": true}");
    click(&browser, "#pub-retain");
    set_input(&browser, "#pub-content-type", "application/json");
    click(&browser, "#pub-utf8");
    set_input(&browser, "#pub-expiry", "300");
    set_input(&browser, "#pub-response-topic", "reply/kite");
    set_input(&browser, "#pub-correlation", "req-7");
    set_input(&browser, "#pub-user-properties", "origin: kite");
    publish_when_valid(&browser);
    wait_until_text(&browser, ".publish-result", "acknowledged by the broker");
    // [MQTT-3.3.2-15]..[MQTT-3.3.2-20]: the broker passes the properties on unchanged.
    let got = retained(&broker, "cmd/pump-1", "%t|%p|%C|%F|%R|%D|%P");
    assert_eq!(
        got,
        ["cmd/pump-1|{\"on\": true}|application/json|1|reply/kite|req-7|origin:kite"]
    );
    let expiry = retained(&broker, "cmd/pump-1", "%E");
    let left: u32 = expiry[0].trim().parse().unwrap();
    assert!((290..=300).contains(&left), "message expiry left: {left}");

    // Bytes typed as hex go as bytes.
    set_input(&browser, "#pub-topic", "raw/frame");
    choose(&browser, "#pub-format", "hex");
    set_input(&browser, "#pub-payload", "00 ff 10 4b");
    set_input(&browser, "#pub-content-type", "");
    click(&browser, "#pub-utf8");
    set_input(&browser, "#pub-expiry", "");
    set_input(&browser, "#pub-response-topic", "");
    set_input(&browser, "#pub-correlation", "");
    set_input(&browser, "#pub-user-properties", "");
    publish_when_valid(&browser);
    // (The result line may still show the first message's acknowledgement: ask the broker.)
    wait_for("the bytes at the broker", WAIT, || {
        (retained(&broker, "raw/frame", "%x") == ["00ff104b"]).then_some(())
    });

    // The history: both, newest first; "Edit" puts one back in the form.
    assert_eq!(count(&browser, ".sent-entry"), 2);
    let first = browser.text(".sent-entry").unwrap();
    assert!(first.starts_with("raw/frame"), "{first}");
    click(&browser, ".sent-entry:nth-child(2) .reuse");
    wait_for("the draft back in the form", WAIT, || {
        (value(&browser, "#pub-topic") == "cmd/pump-1").then_some(())
    });
    assert_eq!(value(&browser, "#pub-response-topic"), "reply/kite");
    assert_eq!(value(&browser, "#pub-format"), "JSON");
    no_console_errors(&browser);
}

/// A retained message deleted from the topic's detail, then every retained message under a
/// level, after a confirmation that can be declined ([MQTT-3.3.1-6]: an empty retained
/// message removes it).
#[test]
fn retained_messages_are_deleted_one_or_a_whole_subtree() {
    let (broker, _gateway, browser, _) = connected_app();
    for (topic, payload) in [
        ("plant/a/temp", "21"),
        ("plant/a/hum", "40"),
        ("plant/b/temp", "19"),
    ] {
        let status = broker
            .client("mosquitto_pub")
            .args(["-t", topic, "-m", payload, "-r", "-q", "1"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    set_input(&browser, "#filter", "plant/#");
    click(&browser, "#subscribe");
    wait_until_text(&browser, ".count", "3 messages received on 3 topics");
    click(&browser, r#".topic-row[data-topic="plant/a/temp"]"#);
    wait_until_text(&browser, "#delete-retained", "Delete retained");
    click(&browser, "#delete-retained");
    wait_until_text(&browser, ".confirm", "Delete 1 retained message");
    click(&browser, "#confirm-delete");
    wait_for("plant/a/temp gone from the broker", WAIT, || {
        (retained(&broker, "plant/#", "%t|%p") == ["plant/a/hum|40", "plant/b/temp|19"])
            .then_some(())
    });

    click(&browser, r#".topic-row[data-topic="plant"]"#);
    wait_until_text(&browser, "#delete-subtree", "Delete 2 retained below");
    click(&browser, "#delete-subtree");
    wait_until_text(&browser, ".confirm", "Delete 2 retained messages");
    click(&browser, "#cancel-delete");
    assert_eq!(browser.text(".confirm"), None);
    assert_eq!(
        retained(&broker, "plant/#", "%t|%p").len(),
        2,
        "declined: nothing deleted"
    );
    click(&browser, "#delete-subtree");
    wait_until_text(&browser, ".confirm", "Delete 2");
    click(&browser, "#confirm-delete");
    wait_for("no retained message left under plant", WAIT, || {
        retained(&broker, "plant/#", "%t|%p")
            .is_empty()
            .then_some(())
    });
    no_console_errors(&browser);
}

/// The broker goes away: the app says it is reconnecting, publishes wait in a visible outbox
/// (one cancelled), the outbox survives a page reload, and when the broker is back every
/// waiting QoS 1 message arrives, the cancelled one never.
#[test]
fn the_outbox_holds_messages_through_a_broker_restart_and_a_reload() {
    let (mut broker, gateway, browser, id) = connected_app();
    set_input(&browser, "#filter", "cmd/#");
    click(&browser, "#subscribe");
    wait_until_text(&browser, ".subscription", "granted QoS 1");
    click(&browser, "#pub-retain");

    // 1. The broker restarts; the app reconnects by itself and sends what waited.
    broker.stop();
    wait_until_text(&browser, ".connection .status", "reconnecting");
    set_input(&browser, "#pub-topic", "cmd/0");
    set_input(&browser, "#pub-payload", "zero");
    click(&browser, "#publish");
    wait_until_text(&browser, ".outbox-count", "1 waiting to be sent");
    broker.run();
    wait_until_text(&browser, ".connection .status", "connected");
    wait_for("the outbox to empty", WAIT, || {
        browser.text(".outbox-count").is_none().then_some(())
    });
    // Subscriptions were restored on the new session: the app hears its own message.
    wait_until_text(&browser, r#".topic-row[data-topic="cmd/0"]"#, "zero");
    assert_eq!(retained(&broker, "cmd/#", "%t|%p"), ["cmd/0|zero"]);

    // 2. Down again: three wait, one is cancelled, the page is reloaded.
    broker.stop();
    wait_until_text(&browser, ".connection .status", "reconnecting");
    for n in 1..=3 {
        set_input(&browser, "#pub-topic", &format!("cmd/{n}"));
        set_input(&browser, "#pub-payload", &format!("message {n}"));
        click(&browser, "#publish");
        wait_until_text(&browser, ".outbox-count", &format!("{n} waiting"));
    }
    screenshot(&browser, "outbox");
    click(&browser, r#".waiting[data-topic="cmd/2"] .cancel"#);
    wait_until_text(&browser, ".outbox-count", "2 waiting");
    browser.goto(&gateway.http_url(&format!("/connections/{id}")));
    wait_until_text(&browser, ".outbox-count", "2 waiting");
    assert_eq!(count(&browser, ".waiting"), 2);
    wait_until_text(
        &browser,
        &format!(".profile[data-profile={id}] .badge"),
        "2",
    );

    // It was connected when the page was left: after the reload it reconnects by itself.
    wait_until_text(&browser, ".connection .status", "reconnecting");
    broker.run();
    wait_until_text(&browser, ".connection .status", "connected");
    wait_for("the outbox to empty", WAIT, || {
        browser.text(".outbox-count").is_none().then_some(())
    });
    // (mosquitto keeps no retained messages across its restart: cmd/0 is gone with it.)
    let got = wait_for("both at the broker", WAIT, || {
        let got = retained(&broker, "cmd/#", "%t|%p");
        (got.len() == 2).then_some(got)
    });
    assert_eq!(
        got,
        ["cmd/1|message 1", "cmd/3|message 3"],
        "the cancelled message never went"
    );
    assert_eq!(
        browser
            .eval("return localStorage.getItem('kite.outbox.' + location.pathname.split('/')[2]);"),
        serde_json::Value::Null,
        "nothing left saved"
    );
    no_console_errors(&browser);
}

/// A broker that refuses the login: the reason is shown and the app does not hammer it with
/// retries; with the right password from the form it connects.
#[test]
fn a_refused_login_stops_with_the_brokers_reason() {
    let broker = Mosquitto::start_with_password("alice", "wonderland");
    let gateway = Gateway::start(&[&broker.url()], Some(assets_dir()));
    let browser = Browser::start();
    browser.goto(&gateway.http_url("/"));
    let id = new_profile(&browser, "Locked");
    click(&browser, "#connect");
    let status = wait_until_text(&browser, ".connection .status", "error:");
    assert!(
        status.contains("the server refused the connection"),
        "{status}"
    );
    assert!(
        status.contains("Not authorized") || status.contains("Bad User Name or Password"),
        "{status}"
    );
    // Not retrying: the button offers to connect again.
    assert_eq!(browser.text("#connect").as_deref(), Some("Connect"));
    wait_until_text(
        &browser,
        &format!(".profile[data-profile={id}] .profile-status"),
        "error:",
    );

    click(&browser, ".edit");
    browser.wait_text("#profile-username", WAIT);
    set_input(&browser, "#profile-username", "alice");
    set_input(&browser, "#profile-password", "wonderland");
    click(&browser, "#save-profile");
    wait_until_text(&browser, "#conn-title", "Locked");
    click(&browser, "#connect");
    wait_until_text(&browser, ".connection .status", "connected");
    no_console_errors(&browser);
}

/// SUBACK failures are shown per filter (here the gateway's topic rules refuse one, 0x87);
/// a removed subscription is unsubscribed at the broker (checked in order: a message
/// published after the removal does not come, one on a filter subscribed after it does).
#[test]
fn subscriptions_show_refusals_and_removal_unsubscribes() {
    use kite_policy::auth::{Auth, Role, User, hash_password};
    let broker = Mosquitto::start();
    let gateway = Gateway::start_with(&[&broker.url()], Some(assets_dir()), |c| {
        c.auth = Auth::new(
            vec![User {
                name: "alice".into(),
                password_hash: hash_password(b"s3cret").unwrap(),
                role: Some("viewer".into()),
            }],
            vec![Role {
                name: "viewer".into(),
                acl: kite_policy::acl::Acl {
                    publish: Some(vec![]),
                    subscribe: Some(vec!["public/#".into(), "other/#".into()]),
                    ..Default::default()
                },
                ..Role::default()
            }],
        )
        .unwrap();
    });
    let browser = Browser::start();
    browser.goto(&gateway.http_url("/"));
    open_profile_form(&browser, "Viewer");
    set_input(&browser, "#profile-username", "alice");
    set_input(&browser, "#profile-password", "s3cret");
    click(&browser, "#save-profile");
    wait_until_text(&browser, "#conn-title", "Viewer");
    click(&browser, "#connect");
    wait_until_text(&browser, ".connection .status", "connected");
    for filter in ["public/#", "secret/#"] {
        set_input(&browser, "#filter", filter);
        click(&browser, "#subscribe");
    }
    wait_until_text(
        &browser,
        r#".subscription[data-filter="public/#"]"#,
        "granted QoS 1",
    );
    let refused = wait_until_text(
        &browser,
        r#".subscription[data-filter="secret/#"]"#,
        "refused",
    );
    assert!(refused.contains("Not authorized"), "{refused}");

    broker.publish("public/a", "1");
    wait_until_text(&browser, ".count", "1 message received");
    click(
        &browser,
        r#".subscription[data-filter="public/#"] .unsubscribe"#,
    );
    wait_for("the subscription gone from the list", WAIT, || {
        (count(&browser, r#".subscription[data-filter="public/#"]"#) == 0).then_some(())
    });
    set_input(&browser, "#filter", "other/#");
    click(&browser, "#subscribe");
    wait_until_text(
        &browser,
        r#".subscription[data-filter="other/#"]"#,
        "granted",
    );
    broker.publish("public/b", "2");
    broker.publish("other/x", "3");
    wait_until_text(&browser, r#".topic-row[data-topic="other/x"]"#, "3");
    assert_eq!(count(&browser, r#".topic-row[data-topic="public/b"]"#), 0);
    wait_until_text(&browser, ".count", "2 messages received");
    no_console_errors(&browser);
}

/// On a phone-sized screen the pages fit the width (no sideways scrolling).
#[test]
fn the_app_fits_a_phone_screen() {
    let (broker, _gateway, browser, _) = connected_app();
    browser.resize(390, 844);
    broker.publish("plant/line-1/temp", "{\"t\": 21.5}");
    set_input(&browser, "#filter", "plant/#");
    click(&browser, "#subscribe");
    broker.publish("plant/line-1/temp", "{\"t\": 21.5}");
    click_when_there(&browser, r#".topic-row[data-topic="plant/line-1/temp"]"#);
    wait_until_text(&browser, ".detail-topic", "plant/line-1/temp");
    let fits = browser.eval("return [document.documentElement.scrollWidth, window.innerWidth];");
    let (content, window) = (fits[0].as_u64().unwrap(), fits[1].as_u64().unwrap());
    assert!(
        content <= window,
        "content {content} px wide in a {window} px window"
    );
    screenshot(&browser, "phone");
    click(&browser, ".new-connection");
    browser.wait_text("#profile-name", WAIT);
    let fits = browser.eval("return [document.documentElement.scrollWidth, window.innerWidth];");
    assert!(fits[0].as_u64() <= fits[1].as_u64(), "the form: {fits}");
    no_console_errors(&browser);
}

fn click_when_there(browser: &Browser, selector: &str) {
    browser.wait_text(selector, WAIT);
    click(browser, selector);
}

/// A profile without clean start and with a session expiry: after a disconnect, QoS 1
/// messages published meanwhile are waiting at the broker and arrive on reconnect, and the
/// page says the session was resumed ([MQTT-3.2.2-2], [MQTT-4.4.0-1]).
#[test]
fn a_persistent_session_resumes_with_what_was_queued() {
    let broker = Mosquitto::start();
    let gateway = Gateway::start(&[&broker.url()], Some(assets_dir()));
    let browser = Browser::start();
    browser.goto(&gateway.http_url("/"));
    open_profile_form(&browser, "Persistent");
    set_input(&browser, "#profile-client-id", "kite-persistent-1");
    click(&browser, "#profile-clean-start");
    set_input(&browser, "#profile-session-expiry", "3600");
    click(&browser, "#save-profile");
    wait_until_text(&browser, "#conn-title", "Persistent");
    click(&browser, "#connect");
    wait_until_text(&browser, ".connection .status", "connected");
    set_input(&browser, "#filter", "plant/#");
    click(&browser, "#subscribe");
    wait_until_text(&browser, ".subscription", "granted QoS 1");
    click(&browser, "#connect");
    wait_until_text(&browser, ".connection .status", "disconnected");

    let status = broker
        .client("mosquitto_pub")
        .args(["-t", "plant/a", "-m", "queued", "-q", "1"])
        .status()
        .unwrap();
    assert!(status.success());
    click(&browser, "#connect");
    wait_until_text(&browser, ".endpoint-line", "session resumed");
    wait_until_text(&browser, r#".topic-row[data-topic="plant/a"]"#, "queued");
    no_console_errors(&browser);
}
