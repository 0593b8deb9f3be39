//! Alarms (issue #20): rules made through the API, evaluated on the gateway with no browser
//! open — raised after `for_secs`, re-notified, acknowledged, cleared with hysteresis — with
//! their notices on a webhook (a test HTTP server) and on MQTT, across a restart; a webhook
//! that is down holds up no message; offline devices from the monitor; bad input and roles.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use kite_gateway::config::{Alarms, Config};
use kite_mqtt::{QoS, Version};
use kite_tests::client::{TestClient, Via, publish};
use kite_tests::{Gateway, TempDir, wait_for};
use serde_json::{Value, json};

/// Alarms kept in `dir` (the broker's data there too), with `rules` from the config.
fn alarming(
    dir: &std::path::Path,
    rules: Vec<kite_data::AlarmRule>,
) -> impl FnOnce(&mut Config) + use<> {
    let dir = dir.to_owned();
    move |c: &mut Config| {
        c.broker.data_dir = Some(dir.clone());
        c.alarms = Some(Alarms {
            rules,
            dir,
            sync: kite_data::Sync::Always,
            username: None,
            password: None,
        });
    }
}

/// A webhook receiver: every POSTed body, as JSON, on the channel; answers 200.
fn webhook_receiver() -> (u16, mpsc::Receiver<Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            assert!(request_line.starts_with("POST /hook "), "{request_line}");
            if let Ok(v) = serde_json::from_slice::<Value>(&body)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    (port, rx)
}

fn call(kite: &Gateway, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    kite.call(method, path, body)
}

fn next_hook(rx: &mpsc::Receiver<Value>, event: &str) -> Value {
    loop {
        let v = rx
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| panic!("no {event} notification within 15 s"));
        if v["event"] == event {
            return v;
        }
        assert_ne!(v["event"], "cleared", "cleared before {event}: {v}");
    }
}

fn temp(c: &mut TestClient, t: f64, id: u16) {
    c.publish(publish(
        "plant/a/temp",
        &format!("{{\"temp\": {t}}}"),
        QoS::AtLeastOnce,
        id,
    ));
}

/// The alarm: 5 s above 30 raises it once (webhook and retained MQTT notice), it
/// re-notifies while not acknowledged, is acknowledged by a user, holds between 28 and 30,
/// clears below 28 (the retained notice removed) — and the rule and the alarm's history
/// outlive a gateway restart.
#[test]
fn an_alarm_fires_once_renotifies_is_acknowledged_and_clears_below_its_clear_value() {
    let dir = TempDir::new("alarms");
    let (port, hooks) = webhook_receiver();
    let kite = Gateway::start_with(&[], None, alarming(dir.path(), Vec::new()));
    let rule = json!({"name": "hot", "topic": "plant/+/temp", "field": "/temp", "op": ">", "value": 30,
        "for_secs": 5, "clear_value": 28, "severity": "major", "renotify_mins": 0.05,
        "notify": {"webhook": format!("http://127.0.0.1:{port}/hook"), "mqtt": true, "browser": true}});
    let (status, v) = call(
        &kite,
        "POST",
        "/api/v1/alarms/rules",
        Some(&rule.to_string()),
    );
    assert_eq!((status, &v["name"]), (201, &json!("hot")), "{v}");
    let via = Via::Tcp(kite.mqtt_addr.unwrap());
    let mut watcher = TestClient::connected(&via, Version::V5, "watcher");
    watcher.subscribe("kite/alarms/#", QoS::AtLeastOnce);
    let mut device = TestClient::connected(&via, Version::V5, "dev-a");
    let sent = kite_data::now_ms();
    temp(&mut device, 31.0, 1);
    let raised = next_hook(&hooks, "raised");
    let a = &raised["alarm"];
    let (since, at) = (
        a["since"].as_u64().unwrap(),
        a["raised_at"].as_u64().unwrap(),
    );
    assert!(
        since >= sent && at - since >= 5_000 && at - since < 6_000,
        "{raised}"
    );
    assert_eq!(a["source"], "plant/a/temp");
    assert_eq!(a["text"], "plant/a/temp /temp = 31 > 30");
    let notice = watcher.recv_publish();
    assert_eq!(&*notice.topic, "kite/alarms/hot/plant/a/temp");
    let body: Value = serde_json::from_slice(&notice.payload).unwrap();
    assert_eq!(
        (&body["event"], &body["alarm"]["state"]),
        (&json!("raised"), &json!("active"))
    );
    watcher.ack(&notice);
    // Still above 30: no second alarm; every 3 s a renotification.
    temp(&mut device, 32.0, 2);
    let again = next_hook(&hooks, "renotified");
    assert_eq!(again["alarm"]["id"], a["id"], "{again}");
    assert_eq!(again["alarm"]["notified"], 2);
    let (_, list) = call(&kite, "GET", "/api/v1/alarms?state=active", None);
    assert_eq!(list["alarms"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["alarms"][0]["browser"], true);
    let id = a["id"].as_u64().unwrap();
    let (status, acked) = call(&kite, "POST", &format!("/api/v1/alarms/{id}/ack"), None);
    assert_eq!(status, 200, "{acked}");
    assert_eq!(
        (&acked["state"], &acked["acknowledged_by"]),
        (&json!("acknowledged"), &json!("anonymous"))
    );
    next_hook(&hooks, "acknowledged");
    let (status, _) = call(&kite, "POST", &format!("/api/v1/alarms/{id}/ack"), None);
    assert_eq!(status, 409);
    // Between the clear value and the threshold it holds; below 28 it clears.
    temp(&mut device, 29.0, 3);
    temp(&mut device, 27.5, 4);
    let cleared = next_hook(&hooks, "cleared");
    assert_eq!(cleared["alarm"]["id"], a["id"]);
    assert_eq!(cleared["alarm"]["cleared_why"], "the value is back");
    assert_eq!(cleared["alarm"]["acknowledged_by"], "anonymous");
    // Acknowledged: no renotification came in between (each is a webhook call).
    while let Ok(v) = hooks.try_recv() {
        assert_ne!(
            v["event"], "renotified",
            "renotified after the acknowledgement: {v}"
        );
    }
    // MQTT: the acknowledgement, the cleared alarm, then the retained notice removed.
    let mut seen = Vec::new();
    while seen
        .last()
        .is_none_or(|p: &kite_mqtt::codec::Publish| !p.payload.is_empty())
    {
        let p = watcher.recv_publish();
        watcher.ack(&p);
        seen.push(p);
    }
    let events: Vec<String> = seen
        .iter()
        .map(|p| {
            serde_json::from_slice::<Value>(&p.payload)
                .map(|v| v["event"].as_str().unwrap_or("").to_owned())
                .unwrap_or_else(|_| "(empty)".into())
        })
        .collect();
    assert_eq!(
        events[events.len() - 2..],
        ["cleared", "(empty)"],
        "{events:?}"
    );
    // A new watcher gets no retained notice: the alarm is not open.
    let mut late = TestClient::connected(&via, Version::V5, "late");
    late.subscribe("kite/alarms/#", QoS::AtLeastOnce);
    assert!(late.barrier().is_empty());

    // Restart: the rule and the alarm's history are there.
    drop((watcher, late, device));
    drop(kite);
    let kite = Gateway::start_with(&[], None, alarming(dir.path(), Vec::new()));
    let (_, rules) = call(&kite, "GET", "/api/v1/alarms/rules", None);
    assert_eq!(rules["rules"][0]["name"], "hot", "{rules}");
    assert_eq!(rules["rules"][0]["from"], "api");
    let (_, list) = call(&kite, "GET", "/api/v1/alarms", None);
    let kept = &list["alarms"][0];
    assert_eq!(
        (&kept["id"], &kept["state"]),
        (&a["id"], &json!("cleared")),
        "{list}"
    );
    assert_eq!(kept["acknowledged_by"], "anonymous");
}

/// A webhook that is down: every message still arrives (the notifications wait, retry and
/// are counted on tasks of their own, bounded at 1,000 waiting).
#[test]
fn a_webhook_that_is_down_holds_up_no_message() {
    let dir = TempDir::new("alarms-down");
    let closed = kite_tests::free_port();
    let rule: kite_data::AlarmRule = kite_gateway::alarms::parse_rule(&json!({
        "name": "any", "topic": "plant/+/v", "op": ">", "value": 0, "severity": "warning",
        "notify": {"webhook": format!("http://127.0.0.1:{closed}/hook")}}))
    .unwrap();
    let kite = Gateway::start_with(&[], None, alarming(dir.path(), vec![rule]));
    let via = Via::Tcp(kite.mqtt_addr.unwrap());
    let mut sub = TestClient::connected(&via, Version::V5, "sub");
    sub.subscribe("plant/#", QoS::AtLeastOnce);
    // Each message on its own topic raises an alarm: 3,000 notifications for a dead webhook.
    let n = 3_000u16;
    let reader = std::thread::spawn(move || {
        for _ in 0..n {
            let p = sub.recv_publish();
            sub.ack(&p);
        }
    });
    let mut device = TestClient::connected(&via, Version::V5, "flapping");
    for i in 1..=n {
        device.publish(publish(&format!("plant/{i}/v"), "1", QoS::AtLeastOnce, i));
    }
    reader.join().unwrap();
    let metric = |name: &str| kite.metric(name);
    wait_for("the alarms raised", Duration::from_secs(10), || {
        (metric("kite_alarms{state=\"active\",severity=\"warning\"}") == u64::from(n)).then_some(())
    });
    wait_for(
        "failed webhook attempts counted",
        Duration::from_secs(10),
        || (metric("kite_alarm_webhook_failures_total") > 0).then_some(()),
    );
    // 1,000 wait (and retry); the rest were dropped, counted (notices go out each tick).
    wait_for("the rest dropped", Duration::from_secs(10), || {
        (metric("kite_alarm_webhook_dropped_total") == u64::from(n) - 1_000).then_some(())
    });
    assert_eq!(metric("kite_alarm_webhook_sent_total"), 0);
}

/// Bad rules are a 400 naming the key; a body over 64 KiB a 413; duplicates 409; the
/// config's rules are not the API's to change (403); a role without `manage_alarms` may not
/// change rules (403); a role sees the rules and alarms of the topics it may read.
#[test]
fn the_alarms_api_checks_what_it_is_given_and_who_asks() {
    let dir = TempDir::new("alarms-api");
    let from_config = kite_gateway::alarms::parse_rule(&json!({
        "name": "cfg", "topic": "site/+/level", "op": "<", "value": 10, "severity": "minor"}))
    .unwrap();
    let kite = Gateway::start_with(&[], None, alarming(dir.path(), vec![from_config.clone()]));
    for (body, field) in [
        (
            json!({"name": "x", "topic": "a/#/b", "op": ">", "value": 1, "severity": "major"}),
            "topic",
        ),
        (
            json!({"name": "x", "topic": "a", "op": "~", "value": 1, "severity": "major"}),
            "op",
        ),
        (
            json!({"name": "x", "topic": "a", "op": ">", "value": "hot", "severity": "major"}),
            "value",
        ),
        (
            json!({"name": "x", "topic": "a", "op": ">", "value": 1, "severity": "major", "for_secs": -1}),
            "for_secs",
        ),
        (
            json!({"name": "x", "topic": "a", "op": ">", "value": 1}),
            "severity",
        ),
        (
            json!({"name": "x y", "topic": "a", "op": ">", "value": 1, "severity": "major"}),
            "name",
        ),
        (
            json!({"name": "x", "topic": "a", "op": ">", "value": 1, "severity": "major", "notify": {"webhook": "gopher://x"}}),
            "notify.webhook",
        ),
    ] {
        let (status, v) = call(
            &kite,
            "POST",
            "/api/v1/alarms/rules",
            Some(&body.to_string()),
        );
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(field)),
            "{body}: {v}"
        );
    }
    let (status, v) = call(&kite, "POST", "/api/v1/alarms/rules", Some("{not json"));
    assert_eq!((status, v["field"].as_str()), (400, Some("body")), "{v}");
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(70_000));
    let (status, _) = call(&kite, "POST", "/api/v1/alarms/rules", Some(&huge));
    assert_eq!(status, 413);
    let ok = json!({"name": "hot", "topic": "plant/+/temp", "op": ">", "value": 30, "severity": "major"});
    assert_eq!(
        call(&kite, "POST", "/api/v1/alarms/rules", Some(&ok.to_string())).0,
        201
    );
    assert_eq!(
        call(&kite, "POST", "/api/v1/alarms/rules", Some(&ok.to_string())).0,
        409
    );
    let (status, v) = call(
        &kite,
        "PUT",
        "/api/v1/alarms/rules/other",
        Some(&ok.to_string()),
    );
    assert_eq!((status, v["field"].as_str()), (400, Some("name")), "{v}");
    let cfg = serde_json::to_string(&from_config).unwrap();
    let (status, v) = call(&kite, "PUT", "/api/v1/alarms/rules/cfg", Some(&cfg));
    assert_eq!(status, 403, "{v}");
    assert_eq!(
        call(&kite, "DELETE", "/api/v1/alarms/rules/cfg", None).0,
        403
    );
    assert_eq!(
        call(&kite, "DELETE", "/api/v1/alarms/rules/nothing", None).0,
        404
    );
    assert_eq!(call(&kite, "POST", "/api/v1/alarms/999/ack", None).0, 404);
    assert_eq!(call(&kite, "POST", "/api/v1/alarms/abc/ack", None).0, 400);
    let (status, v) = call(&kite, "GET", "/api/v1/alarms?state=burning", None);
    assert_eq!((status, v["field"].as_str()), (400, Some("state")), "{v}");
    let (_, rules) = call(&kite, "GET", "/api/v1/alarms/rules", None);
    let names: Vec<(&str, &str)> = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["from"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("cfg", "config"), ("hot", "api")]);
    // Two alarms, one per topic branch.
    let via = Via::Tcp(kite.mqtt_addr.unwrap());
    let mut d = TestClient::connected(&via, Version::V5, "d");
    d.publish(publish("plant/a/temp", "35", QoS::AtLeastOnce, 1));
    d.publish(publish("site/b/level", "3", QoS::AtLeastOnce, 2));
    wait_for("two alarms", Duration::from_secs(10), || {
        let (_, v) = call(&kite, "GET", "/api/v1/alarms?state=active", None);
        (v["alarms"].as_array().unwrap().len() == 2).then_some(())
    });
    drop(d);
    drop(kite);

    // A role that may read plant/# only, without manage_alarms.
    let acl = kite_policy::acl::Acl {
        publish: Some(vec!["#".into()]),
        subscribe: Some(vec!["plant/#".into()]),
        deny_publish: vec![],
        deny_subscribe: vec![],
    };
    let adjust = alarming(dir.path(), vec![from_config]);
    let kite = Gateway::start_with(&[], None, move |c| {
        adjust(c);
        c.auth = kite_tests::anonymous_role(acl);
    });
    let (_, rules) = call(&kite, "GET", "/api/v1/alarms/rules", None);
    assert_eq!(rules["rules"].as_array().unwrap().len(), 1, "{rules}");
    assert_eq!(rules["rules"][0]["name"], "hot");
    let (_, list) = call(&kite, "GET", "/api/v1/alarms", None);
    let sources: Vec<&str> = list["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["plant/a/temp"]);
    let other = json!({"name": "cold", "topic": "plant/+/temp", "op": "<", "value": 0, "severity": "minor"});
    let (status, v) = call(
        &kite,
        "POST",
        "/api/v1/alarms/rules",
        Some(&other.to_string()),
    );
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("manage_alarms"),
        "{v}"
    );
    assert_eq!(
        call(&kite, "DELETE", "/api/v1/alarms/rules/hot", None).0,
        403
    );
}

/// An `offline` rule follows the device monitor: a device whose Will says offline raises it
/// (after `for_secs`), and its return clears it.
#[test]
fn an_offline_device_raises_an_alarm_and_its_return_clears_it() {
    let dir = TempDir::new("alarms-offline");
    let rules_file = dir.path().join("devices.toml");
    std::fs::write(
        &rules_file,
        "[[devices]]\nstatus_topic = \"plant/{device}/status\"\n",
    )
    .unwrap();
    let mut devices = Config::load(Some(&rules_file), Default::default())
        .unwrap()
        .devices
        .unwrap();
    devices.dir = dir.path().to_owned();
    let down = kite_gateway::alarms::parse_rule(&json!({
        "name": "down", "op": "offline", "device": "*", "for_secs": 1, "severity": "critical"}))
    .unwrap();
    let adjust = alarming(dir.path(), vec![down]);
    let kite = Gateway::start_with(&[], None, move |c| {
        adjust(c);
        c.devices = Some(devices);
    });
    let via = Via::Tcp(kite.mqtt_addr.unwrap());
    let mut d = TestClient::connected(&via, Version::V5, "pub");
    let mut status = |payload: &str, id: u16| {
        let mut p = publish("plant/dev-x/status", payload, QoS::AtLeastOnce, id);
        p.retain = true;
        d.publish(p);
    };
    status("online", 1);
    status("offline", 2);
    let v = wait_for("the offline alarm", Duration::from_secs(10), || {
        let (_, v) = call(&kite, "GET", "/api/v1/alarms?state=active", None);
        (v["alarms"].as_array().unwrap().len() == 1).then_some(v)
    });
    let a = &v["alarms"][0];
    assert_eq!(
        (&a["source"], &a["severity"], &a["text"]),
        (
            &json!("dev-x"),
            &json!("critical"),
            &json!("device dev-x is offline")
        ),
        "{v}"
    );
    assert!(
        a["raised_at"].as_u64().unwrap() - a["since"].as_u64().unwrap() >= 1_000,
        "{v}"
    );
    status("online", 3);
    wait_for("cleared", Duration::from_secs(10), || {
        let (_, v) = call(&kite, "GET", "/api/v1/alarms?state=cleared", None);
        (v["alarms"].as_array().unwrap().len() == 1).then_some(())
    });
}

/// In front of mosquitto the alarms keep their own session there: a value published to
/// mosquitto raises the alarm, and its notice is published back there, retained.
#[test]
fn in_front_of_mosquitto_alarms_watch_and_publish_there() {
    let remote = kite_tests::Mosquitto::start();
    let dir = TempDir::new("alarms-upstream");
    let rule = kite_gateway::alarms::parse_rule(&json!({
        "name": "high", "topic": "tank/+/level", "op": ">=", "value": 90, "severity": "major",
        "notify": {"mqtt": true}}))
    .unwrap();
    let kite = Gateway::start_with(&[&remote.url()], None, alarming(dir.path(), vec![rule]));
    // The feed subscribes after it connects: publish until the alarm is there.
    let v = wait_for("the alarm", Duration::from_secs(10), || {
        remote.publish("tank/t1/level", "95");
        let (_, v) = call(&kite, "GET", "/api/v1/alarms?state=active", None);
        (v["alarms"].as_array().unwrap().len() == 1).then_some(v)
    });
    assert_eq!(v["alarms"][0]["source"], "tank/t1/level");
    let notice = remote.receive_one("kite/alarms/#");
    assert!(
        notice.starts_with("kite/alarms/high/tank/t1/level {"),
        "{notice}"
    );
    assert!(notice.contains("\"event\":\"raised\""), "{notice}");
}
