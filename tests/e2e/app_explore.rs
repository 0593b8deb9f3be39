//! The explorer as a new user met it (issue #21, part 1): each bug found, fixed and held
//! here by a test in Chromium against mosquitto.

use std::time::Duration;

use kite_tests::wait_for;

use crate::app::{click, connected_app, count, open_profile_form, set_input, wait_until_text};

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

/// Whether `selector` is laid out (not hidden, not inside something hidden).
fn shown(browser: &kite_tests::browser::Browser, selector: &str) -> bool {
    browser.eval(&format!(
        "const e = document.querySelector({}); return !!e && e.getClientRects().length > 0;",
        serde_json::Value::from(selector)
    )) == true
}

/// Part 1's layout: the topics fill the window beside the chosen topic; subscribe and publish
/// are panels opened on demand (a new connection opens with its subscribe panel; publish comes
/// prefilled with the chosen topic); the live stream pauses and resumes; a topic's path is
/// copied; on a phone one pane shows at a time, with a way back.
#[test]
fn explore_fills_the_window_and_opens_its_panels_on_demand() {
    let (broker, _gateway, browser, _) = connected_app();
    browser.resize(1280, 800);
    assert!(
        shown(&browser, "#filter"),
        "no subscription yet: the subscribe panel is open"
    );
    assert!(
        !shown(&browser, "#pub-topic"),
        "the publish panel waits to be asked for"
    );
    set_input(&browser, "#filter", "lab/#");
    click(&browser, "#subscribe");
    wait_until_text(&browser, ".subscription", "granted");
    wait_until_text(&browser, "#show-subs", "Subscriptions (1)");
    click(&browser, "#show-subs");
    assert!(!shown(&browser, "#filter"), "closed on demand");
    for i in 0..30 {
        broker.publish("lab/a", &format!("{{\"n\": {i}, \"ok\": true}}"));
    }
    broker.publish("lab/b", "2");
    wait_until_text(&browser, ".count", "31 messages received on 2 topics");

    // The tree and the chosen topic (30 messages: longer than the window) reach down to the
    // window's bottom, less the card's padding — neither 432 px nor the page growing.
    click(&browser, "[data-topic='lab/a']");
    wait_until_text(&browser, ".detail-topic", "lab/a");
    wait_until_text(&browser, ".detail-meta", "30 messages here");
    for pane in [".tree", ".detail-pane"] {
        let gap = browser.eval(&format!(
            "return window.innerHeight - document.querySelector('{pane}').getBoundingClientRect().bottom;"
        ));
        let gap = gap.as_f64().unwrap();
        assert!(
            (0.0..80.0).contains(&gap),
            "{pane} ends {gap} px above the window's bottom"
        );
    }
    assert_eq!(
        browser.eval(
            "const m = document.querySelector('main'); return m.scrollHeight <= m.clientHeight;"
        ),
        true,
        "the page itself does not scroll"
    );

    // Publish, prefilled with the chosen topic.
    click(&browser, "#show-publish");
    assert!(shown(&browser, "#pub-topic"));
    assert_eq!(
        browser.eval("return document.querySelector('#pub-topic').value;"),
        "lab/a"
    );

    // Copy the path.
    browser.eval("window.copied = null; navigator.clipboard.writeText = t => { window.copied = t; return Promise.resolve(); }; return null;");
    click(&browser, "#copy-topic");
    assert_eq!(browser.eval("return window.copied;"), "lab/a");

    // Pause: what arrives is held, not shown; Resume shows it.
    click(&browser, "#pause");
    wait_until_text(&browser, "#pause", "Resume");
    broker.publish("lab/c", "3");
    wait_until_text(&browser, ".paused", "Paused: 1 new message held");
    assert_eq!(count(&browser, "[data-topic='lab/c']"), 0);
    assert!(browser.text(".count").unwrap().starts_with("31 messages"));
    click(&browser, "#pause");
    wait_until_text(&browser, ".count", "32 messages received on 3 topics");
    assert_eq!(count(&browser, ".paused"), 0);
    wait_for("lab/c in the tree", WAIT, || {
        (count(&browser, "[data-topic='lab/c']") == 1).then_some(())
    });
    crate::app::screenshot(&browser, "explore");

    // A phone: the chosen topic alone, and back to the tree.
    browser.resize(390, 844);
    assert!(shown(&browser, ".detail-topic") && !shown(&browser, ".tree"));
    click(&browser, ".detail-pane .back");
    wait_for("the tree again", WAIT, || {
        shown(&browser, ".tree").then_some(())
    });
    assert_eq!(count(&browser, ".detail-topic"), 0);
    crate::app::screenshot(&browser, "explore-phone");
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

/// Bug 8: a connection that fails no longer reads "cannot reach the gateway" whatever the
/// cause. An unknown upstream is the gateway's 404 with its words; a port nobody listens on
/// is "cannot reach" with the causes the browser cannot tell apart.
#[test]
fn a_failed_connection_says_why() {
    let broker = kite_tests::Mosquitto::start();
    let gateway = kite_tests::Gateway::start(&[&broker.url()], Some(kite_tests::assets_dir()));
    let browser = kite_tests::browser::Browser::start();
    browser.goto(&gateway.http_url("/"));
    browser.wait_text("#kite-app h1", WAIT);
    let port = gateway.addr.port();
    let dead = kite_tests::free_port();
    browser.eval(&format!(
        r#"localStorage.setItem('kite.profiles', JSON.stringify([
            {{id: "lost", name: "lost", url: "ws://127.0.0.1:{port}/mqtt/nope"}},
            {{id: "dead", name: "dead", url: "ws://127.0.0.1:{dead}/mqtt"}}])); return null;"#
    ));
    browser.goto(&gateway.http_url("/connections/lost"));
    browser.wait_text("#connect", WAIT);
    click(&browser, "#connect");
    let said = wait_until_text(&browser, ".connection .status", "HTTP 404");
    assert!(
        said.contains(&format!("nothing at ws://127.0.0.1:{port}/mqtt/nope"))
            && said.contains("no upstream named \"nope\""),
        "{said}"
    );
    browser.goto(&gateway.http_url("/connections/dead"));
    browser.wait_text("#connect", WAIT);
    click(&browser, "#connect");
    let said = wait_until_text(&browser, ".connection .status", "cannot reach");
    wait_until_text(
        &browser,
        ".connection .status",
        &format!(
            "cannot reach 127.0.0.1:{dead}: the connection was refused or the name does not resolve"
        ),
    );
    assert!(said.starts_with("reconnecting in"), "{said}");
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
    let (first, second) = (open(), open());
    // One of them stops and says why (0x8E, or — mosquitto closes the older connection
    // without a word — the broker closing it again and again); the other keeps the session.
    let status =
        |b: &kite_tests::browser::Browser| b.text(".connection .status").unwrap_or_default();
    let (stopped, kept) = wait_for("one to stop", Duration::from_secs(60), || {
        if status(&first).contains("same client id") {
            Some((&first, &second))
        } else if status(&second).contains("same client id") {
            Some((&second, &first))
        } else {
            None
        }
    });
    assert!(
        status(stopped).contains("took this session over"),
        "{}",
        status(stopped)
    );
    let connected = |s: String| s.contains("connected") && !s.contains("reconnect");
    wait_for("the other to keep it", WAIT, || {
        connected(status(kept)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(connected(status(kept)), "{}", status(kept));
    assert!(status(stopped).contains("same client id"));
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
    // (Connected before, it connects again by itself after the page loads.)
    browser.goto(&gateway.http_url(&format!("/connections/{id}/topic/lab/g/dev-57/temp/x")));
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

/// Bug 3: the retained marker (R) and "Delete retained" followed only the last delivery:
/// a retained message published from the app, or by another client while subscribed (a
/// retained Will too), came back live with RETAIN 0 [MQTT-3.3.1-9] and showed no R although
/// the broker held it. Subscriptions now keep the flag as published (5.0), and the app
/// marks what it publishes retained itself.
#[test]
fn retained_messages_show_as_retained_when_they_arrive_live() {
    let (broker, _gateway, browser, _) = connected_app();
    set_input(&browser, "#filter", "cmd/#");
    click(&browser, "#subscribe");
    wait_until_text(&browser, ".subscription", "granted");
    // From the app.
    set_input(&browser, "#pub-topic", "cmd/pump");
    set_input(&browser, "#pub-payload", "on");
    click(&browser, "#pub-retain");
    click(&browser, "#publish");
    wait_until_text(&browser, ".publish-result", "acknowledged");
    let marker = |topic: &str| format!(r#".topic-row[data-topic="{topic}"] .retained"#);
    wait_until_text(&browser, &marker("cmd/pump"), "R");
    // From another client, live.
    let status = broker
        .client("mosquitto_pub")
        .args(["-V", "5", "-t", "cmd/valve", "-m", "open", "-r"])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until_text(&browser, &marker("cmd/valve"), "R");
    // A later message without RETAIN does not hide it; the broker still holds it.
    broker.publish("cmd/valve", "closed");
    wait_for("the live message", WAIT, || {
        browser
            .text(r#".topic-row[data-topic="cmd/valve"] .value"#)
            .filter(|v| v.contains("closed"))
    });
    assert_eq!(browser.text(&marker("cmd/valve")).as_deref(), Some("R"));
}

/// A connection that was connected comes back connected after a reload, with its
/// subscriptions; one disconnected stays so. A reconnect delay counts down.
#[test]
fn a_reload_keeps_a_connection_connected_and_the_delay_counts_down() {
    let (mut broker, gateway, browser, id) = connected_app();
    set_input(&browser, "#filter", "lab/#");
    click(&browser, "#subscribe");
    wait_until_text(&browser, ".subscription", "granted");
    browser.goto(&gateway.http_url(&format!("/connections/{id}")));
    wait_until_text(&browser, ".connection .status", "connected");
    wait_until_text(&browser, ".subscription", "granted");
    broker.publish("lab/after-reload", "1");
    wait_until_text(&browser, ".count", "1 message");
    // The broker goes away: the delay before the next attempt counts down, in whole seconds.
    broker.stop();
    let seconds = |s: &str| -> Option<u32> {
        s.split("reconnecting in ")
            .nth(1)?
            .split(' ')
            .next()?
            .parse()
            .ok()
    };
    let status = || browser.text(".connection .status").unwrap_or_default();
    // The delays grow while the broker is away: one of 2 s or more, then less of it.
    let start = wait_for("a delay of 2 s or more", WAIT, || {
        seconds(&status()).filter(|s| *s >= 2)
    });
    wait_for("the delay to count down", WAIT, || {
        seconds(&status()).filter(|s| *s < start)
    });
    broker.run();
    wait_until_text(&browser, ".connection .status", "connected");
    // Disconnected by the person: stays so after a reload.
    click(&browser, "#connect");
    wait_until_text(&browser, ".connection .status", "disconnected");
    browser.goto(&gateway.http_url(&format!("/connections/{id}")));
    browser.wait_text("#connect", WAIT);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        browser
            .text(".connection .status")
            .unwrap_or_default()
            .contains("disconnected")
    );
}
