//! The app, mounted in a real browser (wasm-bindgen-test-runner + headless Chromium).
#![cfg(target_arch = "wasm32")]
// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn mount() -> web_sys::Element {
    let document = web_sys::window().unwrap().document().unwrap();
    let root = document.create_element("div").unwrap();
    document.body().unwrap().append_child(&root).unwrap();
    yew::Renderer::<kite_frontend::app::App>::with_root(root.clone()).render();
    root
}

async fn sleep(duration: Duration) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                &resolve,
                duration.as_millis() as i32,
            )
            .unwrap();
    });
    wasm_bindgen_futures::JsFuture::from(promise).await.unwrap();
}

/// Polls until `f` holds, up to five seconds.
async fn eventually(root: &web_sys::Element, f: impl Fn(&str) -> bool) -> String {
    for _ in 0..100 {
        let text = root.text_content().unwrap_or_default();
        if f(&text) {
            return text;
        }
        sleep(Duration::from_millis(50)).await;
    }
    panic!("condition never held; page text: {:?}", root.text_content());
}

#[wasm_bindgen_test]
async fn renders_the_shell_with_the_mqtt_endpoint() {
    let root = mount();
    let text = eventually(&root, |t| t.contains("Kite")).await;
    assert!(text.contains("MQTT in the browser"), "{text}");
    let endpoint = root.query_selector(".endpoint").unwrap().unwrap();
    let endpoint = endpoint
        .dyn_into::<web_sys::HtmlElement>()
        .unwrap()
        .inner_text();
    assert!(
        endpoint.starts_with("ws://") && endpoint.ends_with("/mqtt"),
        "{endpoint}"
    );
}

#[wasm_bindgen_test]
async fn a_gateway_without_the_api_shows_a_clear_error() {
    // The test runner's server has no /api/v1/upstreams: the app must say so, not crash.
    let root = mount();
    let text = eventually(&root, |t| t.contains("Could not read")).await;
    assert!(
        text.contains("/api/v1/upstreams answered HTTP 404"),
        "{text}"
    );
}

/// However many messages arrive between two frames, the view renders once.
#[wasm_bindgen_test]
async fn frames_coalesce_requests_into_one_render_per_animation_frame() {
    use std::cell::Cell;
    use std::rc::Rc;
    let renders = Rc::new(Cell::new(0u32));
    let counted = renders.clone();
    let frames = kite_frontend::explorer::Frames::new(move || counted.set(counted.get() + 1));
    for _ in 0..10_000 {
        frames.request();
    }
    sleep(Duration::from_millis(100)).await;
    assert_eq!(renders.get(), 1);
    assert_eq!(frames.frame(), 1);
    frames.request();
    sleep(Duration::from_millis(100)).await;
    assert_eq!(renders.get(), 2);
}

/// The store in wasm: 100,000 topics, bounded history, a filter.
#[wasm_bindgen_test]
fn the_store_holds_a_hundred_thousand_topics_in_wasm() {
    use kite_frontend::store::{Caps, Store};
    let mut store = Store::new(Caps {
        history_per_topic: 5,
        memory_bytes: 4 * 1024 * 1024,
    });
    let payload = [b'x'; 64];
    for i in 0..100_000u32 {
        store.ingest(
            &format!("site/{}/dev-{i}", i % 100),
            &payload,
            1,
            false,
            Default::default(),
            f64::from(i),
        );
    }
    assert_eq!(store.topics(), 100_000);
    assert!(store.memory().0 <= 4 * 1024 * 1024);
    assert!(store.evicted() > 0);
    store.set_filter("dev-99999");
    assert_eq!(store.rows().len(), 3);
}

/// Numbers for charts, converted by JavaScript in the browser: as strict as the native path.
#[wasm_bindgen_test]
fn payload_numbers_are_read_strictly_in_the_browser() {
    use kite_frontend::payload::number;
    assert_eq!(number(b" 21.5 "), Some(21.5));
    assert_eq!(number(b"-2.5e3"), Some(-2500.0));
    assert_eq!(number(br#"{"unit": "C", "temp": 19.25}"#), Some(19.25));
    for bad in [
        &b"1-2"[..],
        b"1e",
        b".",
        b"0x10",
        b"",
        b"Infinity",
        b"1e999",
        b"on",
        b"[1]",
    ] {
        assert_eq!(number(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

/// URLs name connections and topics; levels are percent-encoded and come back whole.
#[wasm_bindgen_test]
fn routes_read_and_write_paths() {
    use kite_frontend::route::Route;
    assert_eq!(Route::parse("/"), Route::Home);
    assert_eq!(Route::parse("/connections/new"), Route::New);
    for (path, route) in [("/devices", Route::Devices), ("/alarms", Route::Alarms)] {
        assert_eq!(Route::parse(path), route);
        assert_eq!(route.path(), path);
    }
    let id = "p0a1b2c3d".to_owned();
    assert_eq!(
        Route::parse("/connections/p0a1b2c3d"),
        Route::Connection { id: id.clone() }
    );
    assert_eq!(
        Route::parse("/connections/p0a1b2c3d/edit"),
        Route::Edit { id: id.clone() }
    );
    let topic = Route::Topic {
        id: id.clone(),
        topic: "plant/line 1/temp ✓/%/".into(),
    };
    let path = topic.path();
    assert_eq!(
        path,
        "/connections/p0a1b2c3d/topic/plant/line%201/temp%20%E2%9C%93/%25/"
    );
    assert_eq!(Route::parse(&path), topic);
    for bad in [
        "/elsewhere",
        "/connections/NOT-AN-ID",
        "/connections/p1/topic/%E2%28",
    ] {
        assert_eq!(Route::parse(bad), Route::NotFound, "{bad}");
    }
}

/// The driver against a gateway that is not there: it says it is reconnecting and why, a
/// publish meanwhile waits in the outbox (and can be cancelled) — and does not cancel the
/// next attempt (it once did: the app then never reconnected by itself).
#[wasm_bindgen_test]
async fn the_driver_keeps_redialing_and_holds_publishes_while_down() {
    use std::cell::RefCell;
    use std::rc::Rc;

    use kite_frontend::mqtt::{Connection, Notice, Status};
    use kite_mqtt::QoS;
    use kite_mqtt::codec::Publish;
    use kite_mqtt::session::ConnectOptions;

    let seen: Rc<RefCell<Vec<Status>>> = Rc::default();
    let log = seen.clone();
    // Port 9 (discard) on loopback: nothing listens, the socket fails at once.
    let conn = Connection::new(
        "ws://127.0.0.1:9/mqtt",
        ConnectOptions {
            client_id: "driver-test".into(),
            ..ConnectOptions::default()
        },
        move |n| {
            if let Notice::Status(s) = n {
                log.borrow_mut().push(s);
            }
        },
    );
    conn.connect();
    let reconnecting = |seen: &[Status]| {
        seen.iter()
            .filter(|s| matches!(s, Status::Reconnecting { .. }))
            .count()
    };
    for _ in 0..100 {
        if reconnecting(&seen.borrow()) >= 1 {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    assert!(
        // "cannot reach ws://127.0.0.1:9/mqtt (asking why…)", then the probe's answer:
        // "cannot reach 127.0.0.1:9: the connection was refused or …".
        matches!(seen.borrow().last(), Some(Status::Reconnecting { reason, .. }) if reason.contains("cannot reach") && reason.contains("127.0.0.1:9")),
        "{:?}",
        seen.borrow()
    );
    let publish = |topic: &str| Publish {
        qos: QoS::AtLeastOnce,
        topic: topic.into(),
        payload: bytes::Bytes::from_static(b"x"),
        ..Default::default()
    };
    conn.publish(publish("a/1")).unwrap();
    conn.publish(publish("a/2")).unwrap();
    let waiting = conn.outbox();
    assert_eq!(waiting.len(), 2);
    assert!(conn.cancel(waiting[0].key).is_some());
    assert_eq!(conn.outbox().len(), 1);
    // The next attempt still comes (the first delay is at most a second).
    for _ in 0..100 {
        if reconnecting(&seen.borrow()) >= 2 {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reconnecting(&seen.borrow()) >= 2,
        "no second attempt: {:?}",
        seen.borrow()
    );
    assert!(seen.borrow().contains(&Status::Connecting));
    conn.close();
    assert_eq!(seen.borrow().last(), Some(&Status::Closed));
    // Closing keeps what waits.
    assert_eq!(conn.outbox()[0].topic, "a/2");
}
