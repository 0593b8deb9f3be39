//! Dashboards on the gateway (issue #21): the API stores, checks, completes, versions and
//! deletes them; examples for the embedded broker's `$SYS` topics come once with a new data
//! directory; everything survives a restart; roles view or edit per `dashboards`.

use kite_gateway::config::Config;
use kite_tests::{Gateway, TempDir};
use serde_json::{Value, json};

/// The gateway keeps its data (and dashboards) in `dir`.
fn in_dir(dir: &std::path::Path) -> impl Fn(&mut Config) + use<> {
    let dir = dir.to_owned();
    move |c: &mut Config| {
        c.broker.data_dir = Some(dir.clone());
        c.alarms = Some(kite_gateway::config::Alarms {
            rules: Vec::new(),
            dir: dir.clone(),
            sync: kite_data::Sync::Always,
            username: None,
            password: None,
        });
    }
}

/// A gateway keeping its data in `dir`, with a user per `(name, access)` (password "pw")
/// whose role, of the same name, has that dashboards access.
fn with_roles(
    dir: &std::path::Path,
    users: &'static [(&'static str, kite_policy::auth::DashboardAccess)],
) -> Gateway {
    use kite_policy::auth::{Auth, Role, User};
    let hash = kite_policy::auth::hash_password(b"pw").unwrap();
    let adjust = in_dir(dir);
    Gateway::start_with(&[], None, move |c| {
        adjust(c);
        c.auth = Auth::new(
            users
                .iter()
                .map(|(name, _)| User {
                    name: (*name).into(),
                    password_hash: hash.clone(),
                    role: Some((*name).into()),
                })
                .collect(),
            users
                .iter()
                .map(|(name, dashboards)| Role {
                    name: (*name).into(),
                    dashboards: *dashboards,
                    ..Role::default()
                })
                .collect(),
        )
        .unwrap();
    })
}

fn titles(kite: &Gateway) -> Vec<String> {
    let (status, v) = kite.get_json("/api/v1/dashboards");
    assert_eq!(status, 200, "{v}");
    v["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["title"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn dashboards_are_made_checked_versioned_exported_and_kept() {
    let dir = TempDir::new("dashboards");
    let kite = Gateway::start_with(&[], None, in_dir(dir.path()));
    // The examples of a new data directory.
    assert_eq!(titles(&kite), ["Broker", "Traffic"]);
    let (status, broker) = kite.get_json("/api/v1/dashboards/broker");
    assert_eq!(status, 200, "{broker}");
    assert_eq!(broker["widgets"][0]["topic"], "$SYS/broker/version");

    // The issue's example: what it omits gets defaults.
    let line = r#"{"schemaVersion": 1, "title": "Line 1", "widgets": [{"kind": "value", "topic": "plant/a/temp"}]}"#;
    let (status, made) = kite.call("POST", "/api/v1/dashboards", Some(line));
    assert_eq!(
        (status, &made["id"], &made["version"]),
        (201, &json!("line-1"), &json!(1)),
        "{made}"
    );
    let (_, d) = kite.get_json("/api/v1/dashboards/line-1");
    assert_eq!(d["widgets"][0]["id"], "w1", "{d}");
    assert_eq!(
        d["widgets"][0]["layout"],
        json!({"x": 0, "y": 0, "w": 3, "h": 2})
    );
    assert_eq!((&d["columns"], &d["version"]), (&json!(12), &json!(1)));
    let (status, second) = kite.call("POST", "/api/v1/dashboards", Some(line));
    assert_eq!(
        (status, &second["id"]),
        (201, &json!("line-1-2")),
        "{second}"
    );

    // A change from the version opened; a second change from that same version is refused.
    let mut changed = d.clone();
    changed["title"] = json!("Line 1 (north)");
    changed["widgets"][0]["unit"] = json!("°C");
    let body = changed.to_string();
    let (status, v) = kite.call("PUT", "/api/v1/dashboards/line-1", Some(&body));
    assert_eq!((status, &v["version"]), (200, &json!(2)), "{v}");
    let (status, v) = kite.call("PUT", "/api/v1/dashboards/line-1", Some(&body));
    assert_eq!((status, v["field"].as_str()), (409, Some("version")), "{v}");
    let (_, d) = kite.get_json("/api/v1/dashboards/line-1");
    assert_eq!(
        (&d["title"], &d["widgets"][0]["unit"]),
        (&json!("Line 1 (north)"), &json!("°C"))
    );

    // The export imported: a new dashboard, the same widgets.
    let (status, copy) = kite.call("POST", "/api/v1/dashboards", Some(&d.to_string()));
    assert_eq!(
        (status, &copy["id"]),
        (201, &json!("line-1-north")),
        "{copy}"
    );
    let (_, c) = kite.get_json("/api/v1/dashboards/line-1-north");
    assert_eq!(c["widgets"], d["widgets"]);
    assert_eq!(c["version"], 1);

    // Bad input: named, and nothing kept.
    for (method, path, body, status, field) in [
        ("POST", "/api/v1/dashboards", "not json", 400, "body"),
        (
            "POST",
            "/api/v1/dashboards",
            r#"{"schemaVersion": 1, "title": "x", "widgets": [{"kind": "gauge"}]}"#,
            400,
            "widgets[0].topic",
        ),
        (
            "POST",
            "/api/v1/dashboards",
            r#"{"schemaVersion": 9, "title": "x"}"#,
            400,
            "schemaVersion",
        ),
        ("PUT", "/api/v1/dashboards/nothing", line, 404, "id"),
        ("GET", "/api/v1/dashboards/nothing", "", 404, "id"),
        ("DELETE", "/api/v1/dashboards/nothing", "", 404, "id"),
    ] {
        let (got, v) = kite.call(method, path, (!body.is_empty()).then_some(body));
        assert_eq!(
            (got, v["field"].as_str()),
            (status, Some(field)),
            "{method} {path}: {v}"
        );
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let huge = json!({"schemaVersion": 1, "title": "x", "description": "a".repeat(300_000)});
    let (status, v) = kite.call("POST", "/api/v1/dashboards", Some(&huge.to_string()));
    assert_eq!((status, v["field"].as_str()), (413, Some("body")), "{v}");

    assert_eq!(
        kite.call("DELETE", "/api/v1/dashboards/traffic", None).0,
        204
    );
    assert_eq!(
        titles(&kite),
        ["Broker", "Line 1", "Line 1 (north)", "Line 1 (north)"]
    );
    drop(kite);

    // Kept across a restart; the deleted example does not come back.
    let kite = Gateway::start_with(&[], None, in_dir(dir.path()));
    assert_eq!(
        titles(&kite),
        ["Broker", "Line 1", "Line 1 (north)", "Line 1 (north)"]
    );
    let (_, d) = kite.get_json("/api/v1/dashboards/line-1");
    assert_eq!(d["version"], 2);
}

/// `dashboards = "view"` (the default) lists and opens, `"edit"` also changes, `"none"`
/// sees nothing; who changed a dashboard is kept.
#[test]
fn roles_view_or_edit_dashboards() {
    use kite_policy::auth::DashboardAccess;
    let dir = TempDir::new("dashboards-roles");
    let kite = with_roles(
        dir.path(),
        &[
            ("ann", DashboardAccess::Edit),
            ("bob", DashboardAccess::View),
            ("eve", DashboardAccess::None),
        ],
    );
    let body =
        r#"{"schemaVersion": 1, "title": "Shared", "widgets": [{"kind": "text", "text": "hi"}]}"#;
    assert_eq!(kite.call("POST", "/api/v1/dashboards", Some(body)).0, 401);
    let (status, v) = kite.call_as(
        Some(("bob", "pw")),
        "POST",
        "/api/v1/dashboards",
        Some(body),
    );
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("\"edit\""), "{v}");
    let (status, v) = kite.call_as(
        Some(("ann", "pw")),
        "POST",
        "/api/v1/dashboards",
        Some(body),
    );
    assert_eq!(status, 201, "{v}");
    let (status, v) = kite.call_as(Some(("bob", "pw")), "GET", "/api/v1/dashboards", None);
    assert_eq!((status, &v["edit"]), (200, &json!(false)), "{v}");
    let shared: Vec<&Value> = v["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["id"] == "shared")
        .collect();
    assert_eq!(shared[0]["updatedBy"], "ann", "{v}");
    let (status, v) = kite.call_as(
        Some(("bob", "pw")),
        "GET",
        "/api/v1/dashboards/shared",
        None,
    );
    assert_eq!(
        (status, &v["widgets"][0]["text"]),
        (200, &json!("hi")),
        "{v}"
    );
    assert_eq!(
        kite.call_as(
            Some(("bob", "pw")),
            "DELETE",
            "/api/v1/dashboards/shared",
            None
        )
        .0,
        403
    );
    for path in ["/api/v1/dashboards", "/api/v1/dashboards/shared"] {
        assert_eq!(
            kite.call_as(Some(("eve", "pw")), "GET", path, None).0,
            403,
            "{path}"
        );
    }
    assert_eq!(
        kite.call_as(
            Some(("ann", "pw")),
            "DELETE",
            "/api/v1/dashboards/shared",
            None
        )
        .0,
        204
    );
}

/// `POST /api/v1/dashboards?check=true` (the app's editor, as widgets are added): the
/// document checked as a save checks it and answered as it would be kept — ids, layout and
/// defaults filled in — with nothing saved; a bad one is the save's `400` naming its key; a
/// role that may only view gets `403`, as for a save.
#[test]
fn a_dashboard_is_checked_without_being_saved() {
    use kite_policy::auth::DashboardAccess;
    let dir = TempDir::new("dashboards-check");
    let kite = with_roles(
        dir.path(),
        &[
            ("ann", DashboardAccess::Edit),
            ("bob", DashboardAccess::View),
        ],
    );
    let ann = Some(("ann", "pw"));
    let before = kite.call_as(ann, "GET", "/api/v1/dashboards", None).1;
    let doc = r#"{"schemaVersion": 1, "title": "Line 1", "widgets": [
        {"kind": "value", "topic": "plant/a/temp"},
        {"kind": "chart", "topic": "plant/a/temp"}]}"#;
    let (status, checked) = kite.call_as(ann, "POST", "/api/v1/dashboards?check=true", Some(doc));
    assert_eq!(status, 200, "{checked}");
    // As a save keeps it: ids, each widget's size from its kind, the first free place.
    assert_eq!(checked["columns"], 12, "{checked}");
    assert_eq!(
        (&checked["widgets"][0]["id"], &checked["widgets"][1]["id"]),
        (&json!("w1"), &json!("w2"))
    );
    assert_eq!(
        checked["widgets"][0]["layout"],
        json!({"x": 0, "y": 0, "w": 3, "h": 2})
    );
    assert_eq!(
        checked["widgets"][1]["layout"],
        json!({"x": 3, "y": 0, "w": 6, "h": 4})
    );
    // The same document saved is kept the same way.
    let (status, made) = kite.call_as(ann, "POST", "/api/v1/dashboards", Some(doc));
    assert_eq!(status, 201, "{made}");
    let (_, saved) = kite.call_as(ann, "GET", "/api/v1/dashboards/line-1", None);
    assert_eq!(saved["widgets"], checked["widgets"]);
    // Checking saved nothing: one more dashboard than before, the one posted.
    let after = kite.call_as(ann, "GET", "/api/v1/dashboards", None).1;
    assert_eq!(
        after["dashboards"].as_array().unwrap().len(),
        before["dashboards"].as_array().unwrap().len() + 1
    );

    // A wildcard where one topic is needed: the save's 400, naming the key [MQTT-4.7.1-1].
    let bad = r#"{"schemaVersion": 1, "title": "X", "widgets": [{"kind": "value", "topic": "plant/+/temp"}]}"#;
    let (status, v) = kite.call_as(ann, "POST", "/api/v1/dashboards?check=true", Some(bad));
    assert_eq!(
        (status, &v["field"]),
        (400, &json!("widgets[0].topic")),
        "{v}"
    );
    for (query, field) in [("check=maybe", "check"), ("dry=true", "dry")] {
        let (status, v) = kite.call_as(
            ann,
            "POST",
            &format!("/api/v1/dashboards?{query}"),
            Some(doc),
        );
        assert_eq!((status, &v["field"]), (400, &json!(field)), "{query}: {v}");
    }
    // Viewing is not editing.
    let (status, v) = kite.call_as(
        Some(("bob", "pw")),
        "POST",
        "/api/v1/dashboards?check=true",
        Some(doc),
    );
    assert_eq!(status, 403, "{v}");
    assert_eq!(
        kite.call_as(ann, "GET", "/api/v1/dashboards", None).1["dashboards"]
            .as_array()
            .unwrap()
            .len(),
        after["dashboards"].as_array().unwrap().len(),
        "nothing saved by a check"
    );
}
