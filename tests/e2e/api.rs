//! `POST /api/v1/publish`: publishing over HTTP, to the embedded broker and to an upstream.

use kite_mqtt::{QoS, Version};
use kite_tests::client::{TestClient, Via};
use kite_tests::{Gateway, Mosquitto};

/// POSTs `body` as JSON with optional Basic credentials; returns (status, body).
pub(crate) fn post(
    gateway: &Gateway,
    body: &str,
    login: Option<(&str, &str)>,
) -> (u16, serde_json::Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut req = agent
        .post(&gateway.http_url("/api/v1/publish"))
        .header("Content-Type", "application/json");
    if let Some((user, password)) = login {
        use std::io::Write as _;
        let mut raw = Vec::new();
        write!(raw, "{user}:{password}").unwrap();
        let token = base64_encode(&raw);
        req = req.header("Authorization", &format!("Basic {token}"));
    }
    let mut response = req.send(body).unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn publish_over_http_to_the_embedded_broker() {
    let gateway = Gateway::start(&[], None);
    let mut sub = TestClient::connected(&Via::Tcp(gateway.mqtt_addr.unwrap()), Version::V5, "s");
    sub.subscribe("http/#", QoS::AtLeastOnce);

    let (status, body) = post(
        &gateway,
        r#"{"topic": "http/valve", "payload": "open", "qos": 1,
            "properties": {"content_type": "text/plain", "user_properties": [["from", "curl"]]}}"#,
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true);
    assert_eq!(body["matched"], 1);
    let p = sub.recv_publish();
    assert_eq!(
        (&*p.topic, &p.payload[..], p.qos),
        ("http/valve", &b"open"[..], QoS::AtLeastOnce)
    );
    assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.properties.user_properties.len(), 1);
    sub.ack(&p);

    // Binary payloads as base64.
    let (status, _) = post(
        &gateway,
        r#"{"topic": "http/bin", "payload": "AAEC/w==", "encoding": "base64"}"#,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(&sub.recv_publish().payload[..], &[0, 1, 2, 255]);

    // Bad requests say which field is wrong, and nothing is published.
    for (body, needle) in [
        (r#"{"topic": "a/+/b", "payload": "x"}"#, "topic \"a/+/b\""),
        (r#"{"topic": "a", "qos": 2}"#, "qos 2"),
        (
            r#"{"topic": "a", "payload": "%%%", "encoding": "base64"}"#,
            "payload is not valid base64",
        ),
        (
            r#"{"topic": "a", "colour": "red"}"#,
            "unknown field `colour`",
        ),
        ("not json", "invalid JSON body"),
    ] {
        let (status, answer) = post(&gateway, body, None);
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(needle), "{body}: {error:?} lacks {needle:?}");
    }
    assert_eq!(sub.barrier(), vec![]);
}

/// With users configured: HTTP Basic with a user (401 otherwise), and the user's role's
/// publish rules (403 outside them).
#[test]
fn publish_over_http_needs_a_user_and_follows_its_rules() {
    let hash = kite_policy::auth::hash_password(b"pw").unwrap();
    let gateway = Gateway::start_with(&[], None, |c| {
        c.auth = kite_policy::auth::Auth::new(
            vec![kite_policy::auth::User {
                name: "ops".into(),
                password_hash: hash.clone(),
                role: Some("ops".into()),
            }],
            vec![kite_policy::auth::Role {
                name: "ops".into(),
                acl: kite_policy::acl::Acl {
                    publish: Some(vec!["cmd/#".into()]),
                    subscribe: None,
                    ..Default::default()
                },
                ..Default::default()
            }],
        )
        .unwrap();
    });
    let body = r#"{"topic": "cmd/restart", "payload": "now"}"#;
    assert_eq!(post(&gateway, body, None).0, 401);
    assert_eq!(post(&gateway, body, Some(("ops", "wrong"))).0, 401);
    let (status, answer) = post(&gateway, body, Some(("ops", "pw")));
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post(
        &gateway,
        r#"{"topic": "other/topic", "payload": "x"}"#,
        Some(("ops", "pw")),
    );
    assert_eq!(status, 403, "{answer}");
}

/// Without users, `[acl] anonymous_role`'s publish rules apply to the API as to MQTT clients.
#[test]
fn publish_over_http_follows_the_anonymous_role() {
    let gateway = Gateway::start_with(&[], None, |c| {
        c.auth = kite_tests::anonymous_role(kite_policy::acl::Acl {
            deny_publish: vec!["cmd/#".into()],
            ..Default::default()
        });
    });
    let (status, answer) = post(&gateway, r#"{"topic": "cmd/restart"}"#, None);
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = post(&gateway, r#"{"topic": "state/ready"}"#, None);
    assert_eq!(status, 200, "{answer}");
}

/// To an upstream broker: a short MQTT 5 session carries the message; QoS 1 answers after the
/// broker's PUBACK.
#[test]
fn publish_over_http_to_an_upstream() {
    let broker = Mosquitto::start();
    let gateway = Gateway::start(&[&broker.url()], None);
    let (status, answer) = post(
        &gateway,
        r#"{"topic": "up/state", "payload": "ready", "qos": 1, "retain": true}"#,
        None,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ok"], true);
    assert_eq!(broker.receive_one("up/state"), "up/state ready");
    let (status, answer) = post(&gateway, r#"{"topic": "x", "upstream": "nope"}"#, None);
    assert_eq!(status, 404, "{answer}");
}

/// A body trickled too slowly is cut at the CONNECT timeout with 408 (its connection and
/// permit are not held); an oversize one gets 413.
#[test]
fn slow_or_oversize_bodies_are_refused() {
    use std::io::{Read, Write};
    let gateway = Gateway::start_with(&[], None, |c| {
        c.limits.connect_timeout = std::time::Duration::from_secs(1);
    });
    let mut s = std::net::TcpStream::connect(gateway.addr).unwrap();
    // Without the deadline no answer would come: the read would time out, empty.
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(
        b"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"topic\":",
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("connect_timeout_secs"), "{answer}");

    let big = format!(
        "{{\"topic\":\"a\",\"payload\":\"{}\"}}",
        "x".repeat(kite_gateway::publish_api::MAX_BODY)
    );
    let (status, body) = post(&gateway, &big, None);
    assert_eq!(status, 413, "{body}");
}

/// (status, Content-Type, body) of `method path` with `body` sent as `content_type`.
fn raw_call(
    gateway: &Gateway,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> (u16, String, String) {
    let headers: Vec<(&str, &str)> = body
        .map(|(content_type, _)| vec![("Content-Type", content_type)])
        .unwrap_or_default();
    let text = body.map_or("", |(_, b)| b);
    let (status, content_type, text) =
        call_with(gateway, method, path, &headers, text, "content-type");
    (status, content_type.unwrap_or_default(), text)
}

/// Issue #22, item 4: an unknown path under `/api/` is a JSON 404 (it was the app's
/// `index.html` with 200, which a script reads as garbage), and the API's other errors —
/// a wrong method, a body that is not JSON — are JSON too, saying what is wrong.
#[test]
fn every_api_error_is_json_and_an_unknown_path_is_a_404() {
    let gateway = Gateway::start_with(&[], Some(kite_tests::assets_dir()), |_| {});
    let (status, content_type, text) = raw_call(&gateway, "GET", "/api/v1/nope", None);
    assert_eq!(
        (status, content_type.as_str()),
        (404, "application/json"),
        "{text}"
    );
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body["error"],
        "no such API: GET /api/v1/nope; the README's \"HTTP API\" lists them"
    );
    let (status, _, _) = raw_call(&gateway, "POST", "/api/nothing/at/all", None);
    assert_eq!(status, 404);

    // A known path with a method it does not take: 405, in JSON.
    let (status, content_type, text) = raw_call(&gateway, "DELETE", "/api/v1/upstreams", None);
    assert_eq!(
        (status, content_type.as_str()),
        (405, "application/json"),
        "{text}"
    );
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "Method Not Allowed");

    // The app is still the answer elsewhere, and the API's own answers are JSON.
    let (status, content_type, _) = raw_call(&gateway, "GET", "/connections/x", None);
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    for path in ["/api/v1/upstreams", "/api/v1/bridges"] {
        let (status, content_type, text) = raw_call(&gateway, "GET", path, None);
        assert_eq!(
            (status, content_type.as_str()),
            (200, "application/json"),
            "{path}: {text}"
        );
    }
    let (status, content_type, text) = raw_call(
        &gateway,
        "POST",
        "/api/v1/publish",
        Some(("text/plain", "not json")),
    );
    assert!((400..500).contains(&status), "{status} {text}");
    assert_eq!(content_type, "application/json", "{text}");
    assert!(serde_json::from_str::<serde_json::Value>(&text).unwrap()["error"].is_string());
}

/// `method path` with these headers: (status, the named response header, body).
fn call_with(
    gateway: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    wanted: &str,
) -> (u16, Option<String>, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(gateway.http_url(path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut response = agent.run(request.body(body.to_owned()).unwrap()).unwrap();
    let header = response
        .headers()
        .get(wanted)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (response.status().as_u16(), header, text)
}

/// Issue #22, item 5: pages from other origins use the HTTP API only if `[http]
/// allowed_origins` lets them — CORS answers and preflights for those; a `403` in JSON for
/// anything but a `GET` from the others (a foreign page cannot publish through a visitor's
/// browser); scripts (no `Origin`) and the gateway's own pages as before.
#[test]
fn the_api_follows_allowed_origins_for_pages_from_elsewhere() {
    let gateway = Gateway::start_with(&[], None, |c| {
        c.allowed_origins = vec!["https://dash.example.com".into()];
    });
    const ACAO: &str = "access-control-allow-origin";
    let publish = r#"{"topic": "plant/valve/cmd", "payload": "open"}"#;
    let json = ("Content-Type", "application/json");
    let friend = ("Origin", "https://dash.example.com");
    let stranger = ("Origin", "https://evil.example");

    // A preflight from the listed origin.
    let (status, allow, _) = call_with(
        &gateway,
        "OPTIONS",
        "/api/v1/publish",
        &[
            friend,
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "content-type, authorization",
            ),
        ],
        "",
        ACAO,
    );
    assert_eq!(
        (status, allow.as_deref()),
        (204, Some("https://dash.example.com"))
    );
    let (_, headers, _) = call_with(
        &gateway,
        "OPTIONS",
        "/api/v1/events",
        &[friend, ("Access-Control-Request-Method", "GET")],
        "",
        "access-control-allow-headers",
    );
    let headers = headers.unwrap_or_default();
    assert!(
        headers.contains("Authorization") && headers.contains("Last-Event-ID"),
        "{headers}"
    );
    // Its requests, answers and errors alike, carry the header.
    let (status, allow, text) = call_with(
        &gateway,
        "POST",
        "/api/v1/publish",
        &[friend, json],
        publish,
        ACAO,
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(allow.as_deref(), Some("https://dash.example.com"));
    let (status, allow, _) = call_with(&gateway, "GET", "/api/v1/nope", &[friend], "", ACAO);
    assert_eq!(
        (status, allow.as_deref()),
        (404, Some("https://dash.example.com"))
    );

    // Another origin: refused for what changes things, its preflight too; a GET is answered
    // without the header, which keeps the answer from the page.
    let (status, _, text) = call_with(
        &gateway,
        "POST",
        "/api/v1/publish",
        &[stranger, json],
        publish,
        ACAO,
    );
    assert_eq!(status, 403, "{text}");
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["field"], "origin", "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("https://evil.example")
    );
    let (status, _, _) = call_with(
        &gateway,
        "OPTIONS",
        "/api/v1/publish",
        &[stranger, ("Access-Control-Request-Method", "POST")],
        "",
        ACAO,
    );
    assert_eq!(status, 403);
    let (status, allow, _) = call_with(&gateway, "GET", "/api/v1/upstreams", &[stranger], "", ACAO);
    assert_eq!((status, allow), (200, None));

    // The gateway's own pages and scripts without Origin, as before.
    let own = format!("http://{}", gateway.addr);
    let (status, _, text) = call_with(
        &gateway,
        "POST",
        "/api/v1/publish",
        &[("Origin", &own), json],
        publish,
        ACAO,
    );
    assert_eq!(status, 200, "{text}");
    let (status, _, text) = call_with(&gateway, "POST", "/api/v1/publish", &[json], publish, ACAO);
    assert_eq!(status, 200, "{text}");
}
