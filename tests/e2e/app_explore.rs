//! The explorer as a new user met it (issue #21, part 1): each bug found, fixed and held
//! here by a test in Chromium against mosquitto.

use std::time::Duration;

use kite_tests::wait_for;

use crate::app::{click, connected_app, open_profile_form, set_input, wait_until_text};

const WAIT: Duration = Duration::from_secs(30);

fn rows(browser: &kite_tests::browser::Browser) -> Vec<String> {
    browser
        .eval("return [...document.querySelectorAll('.topic-row')].map(r => r.dataset.topic);")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// "Clear" beside Find clears the search only (bug 2); Esc does too; forgetting what was
/// collected is a separate step. A search with no match says so (bug 4), Find also matches
/// last values, topics sort naturally (`dev-2` before `dev-10`), and "MiB kept in all" =
/// 4096 keeps messages (bug 1: it wrapped to 0 and dropped them all).
#[test]
fn search_clears_alone_and_forgetting_is_a_step_further() {
    let (broker, _gateway, browser, _) = connected_app();
    set_input(&browser, "#filter", "lab/#");
    click(&browser, "#subscribe");
    wait_until_text(&browser, ".subscription", "granted");
    for (topic, payload) in [
        ("lab/dev-10", "20"),
        ("lab/dev-2", "OVERHEAT"),
        ("lab/dev-1", "21"),
    ] {
        broker.publish(topic, payload);
    }
    wait_until_text(&browser, ".count", "3 messages received on 3 topics");
    wait_for("natural order", WAIT, || {
        (rows(&browser) == ["lab", "lab/dev-1", "lab/dev-2", "lab/dev-10"]).then_some(())
    });

    // Bug 1: 4096 MiB is taken as the largest cap, and messages are still kept.
    browser.eval("const i = document.querySelector('#cap-memory'); i.value = '4096'; i.dispatchEvent(new Event('change', {bubbles: true})); return null;");
    wait_until_text(&browser, ".memory", "of 2048 MiB");
    broker.publish("lab/dev-3", "22");
    wait_until_text(&browser, ".count", "4 messages received on 4 topics");
    let memory = browser.text(".memory").unwrap();
    assert!(memory.starts_with("4 kept"), "{memory}");

    // Find matches a last value; no match says so.
    set_input(&browser, "#tree-filter", "overheat");
    wait_for("the value's topic alone", WAIT, || {
        (rows(&browser) == ["lab", "lab/dev-2"]).then_some(())
    });
    set_input(&browser, "#tree-filter", "no such thing");
    wait_until_text(&browser, ".tree-empty", "No topic or value matches");

    // Clear: the search goes, the topics stay.
    click(&browser, "#clear");
    wait_for("every topic back", WAIT, || {
        (rows(&browser).len() == 5).then_some(())
    });
    assert_eq!(
        browser.eval("return document.querySelector('#tree-filter').value;"),
        ""
    );
    assert!(browser.text(".count").unwrap().contains("4 messages"));

    // Esc clears it too.
    set_input(&browser, "#tree-filter", "dev-10");
    wait_for("one device", WAIT, || {
        (rows(&browser).len() == 2).then_some(())
    });
    browser.eval("document.querySelector('#tree-filter').dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true})); return null;");
    wait_for("every topic back after Esc", WAIT, || {
        (rows(&browser).len() == 5).then_some(())
    });

    // Forgetting is its own, labelled step.
    click(&browser, ".forget summary");
    wait_until_text(&browser, ".forget", "4 messages and 4 topics");
    click(&browser, "#forget");
    wait_until_text(&browser, ".tree-empty", "No topics yet");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// Bug 6: the profile form refuses `ws://` with no host and port 99999, naming the field,
/// instead of letting the browser throw.
#[test]
fn the_profile_form_refuses_urls_the_browser_would_throw_on() {
    let (_broker, gateway, browser, _) = connected_app();
    browser.goto(&gateway.http_url("/"));
    open_profile_form(&browser, "Bad");
    for (url, says) in [("ws://", "no host"), ("ws://localhost:99999/mqtt", "99999")] {
        set_input(&browser, "#profile-url", url);
        let e = wait_until_text(&browser, ".field-error[data-field=url]", says);
        assert!(e.contains(url), "{e}");
        assert_eq!(
            browser.eval("return document.querySelector('#save-profile').disabled;"),
            true
        );
    }
    set_input(&browser, "#profile-url", "ws://localhost:9001/mqtt");
    wait_for("the url error to go", WAIT, || {
        (browser.eval("return document.querySelectorAll('.field-error[data-field=url]').length;")
            == 0)
            .then_some(())
    });
}

/// Bug 5: two tabs (here two browsers) with one client id took the session from each other
/// forever (0x8E, then a redial that takes it back). The one taken over stops and says why;
/// the other stays connected.
#[test]
fn two_tabs_with_one_client_id_stop_instead_of_fighting() {
    let broker = kite_tests::Mosquitto::start();
    let gateway = kite_tests::Gateway::start(&[&broker.url()], Some(kite_tests::assets_dir()));
    let open = || {
        let b = kite_tests::browser::Browser::start();
        b.goto(&gateway.http_url("/"));
        b.wait_text("#kite-app h1", WAIT);
        b.eval(r#"localStorage.setItem('kite.profiles', JSON.stringify([{id: "dup", name: "dup", client_id: "kite-same", clean_start: false, session_expiry: "300"}])); return null;"#);
        b.goto(&gateway.http_url("/connections/dup"));
        b.wait_text("#connect", WAIT);
        click(&b, "#connect");
        wait_until_text(&b, ".connection .status", "connected");
        b
    };
    let first = open();
    let second = open();
    let stopped = wait_until_text(&first, ".connection .status", "same client id");
    assert!(stopped.contains("took this session over"), "{stopped}");
    // And it stays that way: the second keeps the session.
    std::thread::sleep(Duration::from_secs(3));
    let status = second.text(".connection .status").unwrap_or_default();
    assert!(
        status.contains("connected") && !status.contains("reconnect"),
        "{status}"
    );
    assert!(
        first
            .text(".connection .status")
            .unwrap_or_default()
            .contains("same client id")
    );
}

/// Bug 7: a topic's URL opened in a new page shows that topic in the tree — its levels
/// opened (they are closed below the second level), its row selected and scrolled to.
#[test]
fn a_topic_url_opens_its_levels_and_selects_it() {
    let (broker, gateway, browser, id) = connected_app();
    set_input(&browser, "#filter", "lab/#");
    click(&browser, "#subscribe");
    wait_until_text(&browser, ".subscription", "granted");
    for i in 0..60 {
        let status = broker
            .client("mosquitto_pub")
            .args(["-t", &format!("lab/g/dev-{i}/temp/x"), "-m", "1", "-r"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let row = r#".topic-row[data-topic="lab/g/dev-57/temp/x"]"#;
    browser.goto(&gateway.http_url(&format!("/connections/{id}/topic/lab/g/dev-57/temp/x")));
    browser.wait_text("#connect", WAIT);
    click(&browser, "#connect");
    let selected = wait_for("the topic's row, selected", WAIT, || {
        browser
            .eval(&format!(
                "const r = document.querySelector({}); return r ? r.getAttribute('aria-selected') : null;",
                serde_json::Value::from(row)
            ))
            .as_str()
            .map(str::to_owned)
    });
    assert_eq!(selected, "true");
}
