//! The device monitor (issue #20): presence from status topics and Wills, from silence, and
//! from the embedded broker's client connections — through the devices API, across a
//! restart, in front of a real mosquitto, with access rules and bad input.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kite_gateway::config::Config;
use kite_mqtt::codec::Will;
use kite_mqtt::{QoS, Version};
use kite_tests::client::{TestClient, Via, connect, publish};
use kite_tests::{Gateway, Mosquitto, Process, TempDir, wait_for};

/// Status topics with Wills, silence after 2 s, and client connections.
const RULES: &str = "[[devices]]\nstatus_topic = \"plant/{device}/status\"\n\n[[devices]]\nactivity = \"plant/{device}/#\"\nstale_after_secs = 2\n\n[[devices]]\nclients = true\n";

/// `[[devices]]` from `rules` (TOML), kept in `dir` (the broker's data there too).
pub(crate) fn monitoring(dir: &std::path::Path, rules: &str) -> impl FnOnce(&mut Config) + use<> {
    let file = dir.join("devices.toml");
    std::fs::write(&file, rules).unwrap();
    let mut devices = Config::load(Some(&file), Default::default())
        .unwrap()
        .devices
        .unwrap();
    devices.dir = dir.to_owned();
    devices.sync = kite_data::Sync::Always;
    let dir = dir.to_owned();
    move |c: &mut Config| {
        c.broker.data_dir = Some(dir);
        c.devices = Some(devices);
    }
}

/// A gateway monitoring with `rules` in `dir`, whose anonymous role may subscribe to
/// `subscribe` only (and publish anything).
fn monitoring_as(dir: &std::path::Path, rules: &str, subscribe: &[&str]) -> Gateway {
    let acl = kite_policy::acl::Acl {
        publish: Some(vec!["#".into()]),
        subscribe: Some(subscribe.iter().map(|f| (*f).to_owned()).collect()),
        deny_publish: vec![],
        deny_subscribe: vec![],
    };
    let adjust = monitoring(dir, rules);
    Gateway::start_with(&[], None, move |c| {
        adjust(c);
        c.auth = kite_tests::anonymous_role(acl);
    })
}

fn get_json(kite: &Gateway, path: &str) -> (u16, serde_json::Value) {
    kite.get_json(path)
}

/// The device `id` once `pred` holds for it (10 s at most).
fn until(
    kite: &Gateway,
    id: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(&format!("{id} {what}"), Duration::from_secs(10), || {
        let (status, v) = get_json(kite, &format!("/api/v1/devices/{id}"));
        (status == 200 && pred(&v)).then_some(v)
    })
}

fn state_is(state: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |v| v["state"] == state
}

fn now_ms() -> u64 {
    kite_gateway::recorder::now_ms()
}

/// A device that announces itself retained and leaves a retained Will saying offline.
fn with_will(via: &Via, id: &str, keep_alive: u16) -> TestClient {
    let mut c = connect(Version::V5, id);
    c.keep_alive = keep_alive;
    c.will = Some(Will {
        topic: format!("plant/{id}/status").as_str().into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
    });
    let (mut client, ack) = TestClient::connect(via, c);
    assert!(!ack.reason.is_error(), "{ack:?}");
    let mut birth = publish(&format!("plant/{id}/status"), "online", QoS::AtLeastOnce, 1);
    birth.retain = true;
    client.publish(birth);
    client
}

/// The presence bounds of issue #20, each through the API: a device killed with SIGKILL is
/// offline at once (its Will, and its connection's end); one whose network goes silent is
/// offline within keep-alive × 1.5 + 1 s [MQTT-3.1.2-22]; a silent one is stale within
/// `stale_after_secs` + 1 s; and all of it — with `since` — is kept across a restart.
#[test]
fn wills_silence_and_connections_make_presence_and_it_outlives_a_restart() {
    let dir = TempDir::new("devices");
    let kite = Gateway::start_with(&[], None, monitoring(dir.path(), RULES));
    let port = kite.mqtt_addr.unwrap().port();
    let via = Via::Tcp(kite.mqtt_addr.unwrap());

    // dev-a: a real client process with a Will, killed with SIGKILL.
    let sub = kite_tests::mosquitto_client("mosquitto_sub", port)
        .args([
            "-i",
            "dev-a",
            "-k",
            "5",
            "--will-topic",
            "plant/dev-a/status",
            "--will-payload",
            "offline",
            "--will-retain",
            "-t",
            "plant/dev-a/cmd",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let sub = Process(sub);
    let v = until(&kite, "dev-a", "connected", |v| {
        v["state"] == "online" && v["said"]["source"] == "client"
    });
    assert!(v["last_seen"].as_u64().is_some(), "{v}");
    let status = Command::new("kill")
        .args(["-KILL", &sub.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let killed = Instant::now();
    let v = until(&kite, "dev-a", "offline", state_is("offline"));
    // keep-alive 5 s × 1.5 + 1 s; a killed process's socket closes at once.
    assert!(killed.elapsed() < Duration::from_millis(8_500), "{v}");
    drop(sub);

    // dev-b: its network goes silent (the socket stays open, nothing is sent).
    // The broker counts the keep-alive from the last packet (the birth, after this).
    let silent_from = now_ms();
    let b = with_will(&via, "dev-b", 2);
    until(&kite, "dev-b", "online", |v| {
        v["state"] == "online" && v["topics"].as_array().unwrap().len() == 2
    });
    let v = until(&kite, "dev-b", "offline", state_is("offline"));
    let since = v["since"].as_u64().unwrap();
    assert!(
        since >= silent_from + 3_000 && since <= silent_from + 4_000,
        "offline {} ms after its last packet (keep-alive 2 s: 3 s to 4 s): {v}",
        since - silent_from
    );
    // Its Will and its connection's end both say so; either may be the last word.
    let detail = v["said"]["detail"].as_str().unwrap();
    assert!(detail == "offline" || detail == "keep-alive timeout", "{v}");
    drop(b);

    // dev-c: sends once, then is silent for longer than stale_after_secs = 2.
    let mut c = TestClient::connected(&via, Version::V5, "sensor-c");
    c.publish(publish("plant/dev-c/temp", "21.5", QoS::AtLeastOnce, 1));
    let v = until(&kite, "dev-c", "online", state_is("online"));
    assert_eq!(v["last_topic"], "plant/dev-c/temp");
    assert_eq!(v["stale_after_secs"], 2);
    let v = until(&kite, "dev-c", "stale", state_is("stale"));
    let (since, seen) = (
        v["since"].as_u64().unwrap(),
        v["last_seen"].as_u64().unwrap(),
    );
    assert!(
        since > seen + 2_000 && since <= seen + 3_000,
        "stale {} ms after its last message (2 s + 1 s at most): {v}",
        since - seen
    );
    // A message: online again.
    c.publish(publish("plant/dev-c/temp", "21.6", QoS::AtLeastOnce, 2));
    until(&kite, "dev-c", "online again", state_is("online"));
    // The sensor's client id is a device too (clients = true), online while connected.
    until(&kite, "sensor-c", "online", state_is("online"));
    c.disconnect();
    let v = until(&kite, "sensor-c", "offline", state_is("offline"));
    assert_eq!(v["said"]["detail"], "client disconnected", "{v}");
    let v = until(&kite, "dev-c", "stale again", state_is("stale"));
    let before: Vec<(String, serde_json::Value)> = ["dev-a", "dev-b", "dev-c", "sensor-c"]
        .iter()
        .map(|id| {
            (
                id.to_string(),
                get_json(&kite, &format!("/api/v1/devices/{id}")).1,
            )
        })
        .collect();
    assert_eq!(before[2].1["since"], v["since"]);
    assert_eq!(kite.metric("kite_devices{state=\"offline\"}"), 3);
    assert_eq!(kite.metric("kite_devices{state=\"stale\"}"), 1);
    assert_eq!(kite.metric("kite_devices_up"), 1);

    // Restart: each device as it was, since included.
    drop(kite);
    let kite = Gateway::start_with(&[], None, monitoring(dir.path(), RULES));
    for (id, was) in &before {
        let (status, now) = get_json(&kite, &format!("/api/v1/devices/{id}"));
        assert_eq!(status, 200, "{id}: {now}");
        for key in [
            "state",
            "since",
            "last_seen",
            "last_topic",
            "said",
            "topics",
        ] {
            assert_eq!(
                now[key], was[key],
                "{id}.{key} after a restart: {now} (was {was})"
            );
        }
    }
}

/// A client connected when the gateway stops is offline after it restarts (its connection
/// ended with the embedded broker), and comes back online when it reconnects.
#[test]
fn a_connected_client_is_offline_after_a_restart_until_it_reconnects() {
    let dir = TempDir::new("devices-restart");
    let rules = "[[devices]]\nclients = true\n";
    let kite = Gateway::start_with(&[], None, monitoring(dir.path(), rules));
    let c = TestClient::connected(&Via::Tcp(kite.mqtt_addr.unwrap()), Version::V5, "dev-r");
    until(&kite, "dev-r", "online", state_is("online"));
    drop(kite);
    drop(c);
    let kite = Gateway::start_with(&[], None, monitoring(dir.path(), rules));
    let v = until(&kite, "dev-r", "offline", state_is("offline"));
    assert!(
        v["said"]["detail"].as_str().unwrap().contains("restarted"),
        "{v}"
    );
    let _c = TestClient::connected(&Via::Tcp(kite.mqtt_addr.unwrap()), Version::V5, "dev-r");
    until(&kite, "dev-r", "online again", state_is("online"));
}

/// The list: natural order, filters by state and text, pages with `after`; bad input is a
/// 400 naming the parameter; a role sees only devices of topics it may subscribe to.
#[test]
fn the_devices_api_lists_filters_pages_and_hides_what_a_role_may_not_read() {
    let dir = TempDir::new("devices-api");
    let rules = "[[devices]]\nactivity = \"plant/{device}/#\"\nstale_after_secs = 3600\n\n[[devices]]\nclients = true\n";
    let kite = Gateway::start_with(&[], None, monitoring(dir.path(), rules));
    let mut c = TestClient::connected(&Via::Tcp(kite.mqtt_addr.unwrap()), Version::V5, "feeder");
    for i in 1..=12u16 {
        c.publish(publish(
            &format!("plant/dev-{i}/temp"),
            "1",
            QoS::AtLeastOnce,
            i,
        ));
    }
    wait_for("13 devices", Duration::from_secs(10), || {
        let (_, v) = get_json(&kite, "/api/v1/devices");
        (v["devices"].as_array().unwrap().len() == 13).then_some(())
    });
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, v) = get_json(&kite, "/api/v1/devices?limit=5");
    assert_eq!(ids(&v), ["dev-1", "dev-2", "dev-3", "dev-4", "dev-5"]);
    assert_eq!(v["more"], true);
    assert_eq!(v["counts"]["online"], 13);
    let (_, v) = get_json(&kite, "/api/v1/devices?limit=5&after=dev-10");
    assert_eq!(ids(&v), ["dev-11", "dev-12", "feeder"]);
    assert_eq!(v["more"], false);
    let (_, v) = get_json(&kite, "/api/v1/devices?q=EV-1");
    assert_eq!(ids(&v), ["dev-1", "dev-10", "dev-11", "dev-12"]);
    let (_, v) = get_json(&kite, "/api/v1/devices?state=offline,stale");
    assert_eq!(ids(&v), Vec::<String>::new());
    for (path, field) in [
        ("/api/v1/devices?state=gone", "state"),
        ("/api/v1/devices?limit=0", "limit"),
        ("/api/v1/devices?limit=10001", "limit"),
        ("/api/v1/devices?limit=x", "limit"),
        ("/api/v1/devices?sort=id", "sort"),
        ("/api/v1/devices?q=a&q=b", "q"),
    ] {
        let (status, v) = get_json(&kite, path);
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(field)),
            "{path}: {v}"
        );
    }
    let (status, v) = get_json(&kite, "/api/v1/devices/nobody");
    assert_eq!((status, v["field"].as_str()), (404, Some("id")), "{v}");
    drop(c);
    drop(kite);

    // A role that may read plant/dev-1/# and plant/dev-2/temp only.
    let kite = monitoring_as(dir.path(), rules, &["plant/dev-1/#", "plant/dev-2/temp"]);
    let (status, v) = get_json(&kite, "/api/v1/devices");
    assert_eq!(status, 200, "{v}");
    // dev-2's topics are plant/dev-2/#, which the role may not read whole; feeder is a client.
    assert_eq!(ids(&v), ["dev-1"]);
    assert_eq!(v["counts"]["online"], 1);
    for hidden in ["dev-2", "feeder"] {
        let (status, _) = get_json(&kite, &format!("/api/v1/devices/{hidden}"));
        assert_eq!(status, 404, "{hidden}");
    }
}

/// In front of mosquitto the monitor keeps its own session there: a birth retained before
/// the gateway started says online, and a killed device's Will says offline.
#[test]
fn in_front_of_mosquitto_the_monitor_follows_status_topics() {
    let remote = Mosquitto::start();
    remote
        .client("mosquitto_pub")
        .args(["-r", "-t", "plant/dev-m/status", "-m", "online"])
        .status()
        .unwrap();
    let dir = TempDir::new("devices-upstream");
    let rules = "[[devices]]\nstatus_topic = \"plant/{device}/status\"\n";
    let kite = Gateway::start_with(&[&remote.url()], None, monitoring(dir.path(), rules));
    let v = until(&kite, "dev-m", "online", state_is("online"));
    // A retained birth is what the device said, not a sign of life now.
    assert!(v.get("last_seen").is_none(), "{v}");
    let sub = remote
        .client("mosquitto_sub")
        .args([
            "-i",
            "dev-n",
            "--will-topic",
            "plant/dev-n/status",
            "--will-payload",
            "0",
            "-t",
            "plant/dev-n/cmd",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Connected (so that its Will is at the broker) once it prints what it subscribed to.
    let mut sub = Process(sub);
    let out = sub.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    wait_for("dev-n connected", Duration::from_secs(10), || {
        remote.publish("plant/dev-n/cmd", "ping");
        rx.recv_timeout(Duration::from_millis(300)).ok()
    });
    remote.publish("plant/dev-n/status", "1");
    until(&kite, "dev-n", "online", state_is("online"));
    Command::new("kill")
        .args(["-KILL", &sub.0.id().to_string()])
        .status()
        .unwrap();
    let v = until(&kite, "dev-n", "offline", state_is("offline"));
    assert_eq!(v["said"]["source"], "status", "{v}");
}

/// An edge node with the Sparkplug B Will (NDEATH with the session's bdSeq), as a client of the
/// embedded broker, that announces itself with NBIRTH and `metrics`.
fn edge_node(via: &Via, client_id: &str, bd_seq: u64) -> TestClient {
    use kite_gateway::sparkplug::encode;
    use serde_json::json;
    let mut c = connect(Version::V5, client_id);
    c.will = Some(Will {
        topic: "spBv1.0/plant/NDEATH/edge-1".into(),
        payload: Bytes::from(encode(&[("bdSeq", json!(bd_seq))], None)),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    let (mut client, ack) = TestClient::connect(via, c);
    assert!(!ack.reason.is_error(), "{ack:?}");
    let birth = encode(
        &[
            ("bdSeq", json!(bd_seq)),
            ("Node Control/Rebirth", json!(false)),
            ("temp", json!(20.5)),
        ],
        Some(0),
    );
    let mut p = publish("spBv1.0/plant/NBIRTH/edge-1", "", QoS::AtMostOnce, 0);
    p.payload = Bytes::from(birth);
    client.publish(p);
    client
}

/// Sparkplug B through the real broker: NBIRTH and DBIRTH make a node and its device online
/// with their metrics; when the node has reconnected (a new session, bdSeq 1) the old
/// connection's Will (NDEATH, bdSeq 0) is stale and ignored; the new session's NDEATH makes the
/// node and its device offline.
#[test]
fn sparkplug_nodes_follow_birth_and_death_and_a_stale_ndeath_is_ignored() {
    use kite_gateway::sparkplug::encode;
    use serde_json::json;
    let dir = TempDir::new("devices-sparkplug");
    let kite = Gateway::start_with(
        &[],
        None,
        monitoring(dir.path(), "[[devices]]\nsparkplug = true\n"),
    );
    let via = Via::Tcp(kite.mqtt_addr.unwrap());
    let old = edge_node(&via, "edge-1-a", 0);
    let v = until(&kite, "plant%2Fedge-1", "online", state_is("online"));
    assert_eq!(
        (&v["bd_seq"], &v["metrics"]["temp"]),
        (&json!(0), &json!(20.5)),
        "{v}"
    );
    // The node reconnects (its old TCP connection not yet seen dead), then births a device.
    let mut new = edge_node(&via, "edge-1-b", 1);
    let mut dbirth = publish("spBv1.0/plant/DBIRTH/edge-1/pump", "", QoS::AtMostOnce, 0);
    dbirth.payload = Bytes::from(encode(&[("rpm", json!(1200))], Some(1)));
    new.publish(dbirth);
    let pump = until(&kite, "plant%2Fedge-1%2Fpump", "online", state_is("online"));
    assert_eq!(pump["metrics"]["rpm"], 1200, "{pump}");
    until(&kite, "plant%2Fedge-1", "the new session", |v| {
        v["bd_seq"] == 1
    });
    // The old connection dies: its Will is the stale NDEATH.
    old.drop_connection();
    wait_for("the stale NDEATH counted", Duration::from_secs(10), || {
        (kite.metric("kite_devices_sparkplug_stale_deaths_total") == 1).then_some(())
    });
    assert_eq!(
        get_json(&kite, "/api/v1/devices/plant%2Fedge-1").1["state"],
        "online"
    );
    // The live session ends: its NDEATH is the node's, and its device's.
    new.drop_connection();
    let v = until(&kite, "plant%2Fedge-1", "offline", state_is("offline"));
    assert_eq!(v["said"]["source"], "sparkplug", "{v}");
    let pump = until(
        &kite,
        "plant%2Fedge-1%2Fpump",
        "offline",
        state_is("offline"),
    );
    assert_eq!(pump["said"]["detail"], "its edge node's NDEATH", "{pump}");
}

/// `clients = true` leaves the app's own sessions (`kite-…`) out unless told; a device gone
/// for good is forgotten with `DELETE` (a role needs `manage_alarms`), stays forgotten
/// across a restart, and comes back as new when it is heard from again.
#[test]
fn app_sessions_are_not_devices_and_a_device_can_be_forgotten() {
    let dir = TempDir::new("devices-forget");
    let rules = "[[devices]]\nactivity = \"plant/{device}/#\"\nstale_after_secs = 3600\n\n[[devices]]\nclients = true\nexcept_client_ids = [\"kite-*\", \"*-tool\"]\n";
    let kite = Gateway::start_with(&[], None, monitoring(dir.path(), rules));
    let via = Via::Ws(kite.ws_url("/mqtt"));
    let _app = TestClient::connected(&via, Version::V5, "kite-0a1b2c");
    let _tool = TestClient::connected(&via, Version::V5, "debug-tool");
    let mut c = TestClient::connected(&via, Version::V5, "dev-x");
    c.publish(publish("plant/gone/temp", "1", QoS::AtLeastOnce, 1));
    until(&kite, "dev-x", "online", state_is("online"));
    until(&kite, "gone", "online", state_is("online"));
    let ids = |kite: &Gateway| -> Vec<String> {
        let (_, v) = get_json(kite, "/api/v1/devices");
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&kite), ["dev-x", "gone"]);
    assert_eq!(kite.call("DELETE", "/api/v1/devices/gone", None).0, 204);
    let (status, v) = kite.call("DELETE", "/api/v1/devices/gone", None);
    assert_eq!((status, v["field"].as_str()), (404, Some("id")), "{v}");
    assert_eq!(ids(&kite), ["dev-x"]);
    drop(c);
    drop(kite);

    // Forgotten in the store too; a role without manage_alarms may not forget.
    let kite = monitoring_as(dir.path(), rules, &["#"]);
    assert_eq!(ids(&kite), ["dev-x"]);
    let (status, v) = kite.call("DELETE", "/api/v1/devices/dev-x", None);
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("manage_alarms"),
        "{v}"
    );
    let mut c = TestClient::connected(
        &Via::Tcp(kite.mqtt_addr.unwrap()),
        Version::V5,
        "feeder-tool",
    );
    c.publish(publish("plant/gone/temp", "2", QoS::AtLeastOnce, 1));
    until(&kite, "gone", "back", state_is("online"));
}
