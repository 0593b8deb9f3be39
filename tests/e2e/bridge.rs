//! The bridge (issue #18): Kite's embedded broker linked to a real mosquitto, configured with
//! `[[bridge]]` in a config file read by the same pass as `kite serve`'s.

use std::time::{Duration, Instant};

use kite_mqtt::codec::Publish;
use kite_mqtt::{Packet, QoS, Version};
use kite_tests::client::{TestClient, Via, connect, publish};
use kite_tests::{Gateway, Mosquitto};

use crate::hostile::metric;

/// The bridges of `text` (a config file), as `kite serve` would read them.
fn bridges(text: &str) -> Vec<kite_gateway::config::Bridge> {
    let dir = std::env::temp_dir().join(format!("kite-bridge-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = dir.join(format!("{n}.toml"));
    std::fs::write(&file, text).unwrap();
    kite_gateway::config::Config::load(Some(&file), Default::default())
        .unwrap()
        .bridges
}

/// Kite (embedded broker) with the bridges of `text`.
fn kite_with(text: &str) -> Gateway {
    let bridges = bridges(text);
    Gateway::start_with(&[], None, move |c| c.bridges = bridges)
}

/// `GET /api/v1/bridges`, with optional Basic credentials: (status, body).
fn bridges_api(kite: &Gateway, login: Option<(&str, &str)>) -> (u16, serde_json::Value) {
    kite.call_as(login, "GET", "/api/v1/bridges", None)
}

/// The first bridge's `reconnects` count from the bridges API (0 if absent).
fn reconnects(kite: &Gateway) -> u64 {
    bridges_api(kite, None).1["bridges"][0]["reconnects"]
        .as_u64()
        .unwrap_or(0)
}

fn tcp(addr: std::net::SocketAddr) -> Via {
    Via::Tcp(addr)
}

fn mosquitto_via(m: &Mosquitto) -> Via {
    Via::Tcp(format!("127.0.0.1:{}", m.port).parse().unwrap())
}

/// Publishes `probe` on `from` every 100 ms until `to` (subscribed to it) receives it: the
/// bridge is up and its subscriptions are in place. Returns what else `to` got meanwhile.
fn until_bridged(from: &mut TestClient, topic: &str, to: &mut TestClient) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        from.send(&Packet::Publish(publish(
            topic,
            "probe",
            QoS::AtMostOnce,
            0,
        )));
        let got = to.barrier();
        if got
            .iter()
            .any(|p| matches!(p, Packet::Publish(p) if &p.payload[..] == b"probe"))
        {
            return;
        }
        assert!(Instant::now() < deadline, "the bridge did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The next PUBLISH that is not a probe of [`until_bridged`] (late copies of those may follow).
fn recv_real(c: &mut TestClient) -> Publish {
    loop {
        let p = c.recv_publish();
        if &p.payload[..] != b"probe" {
            return p;
        }
    }
}

fn payload(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

/// `out` maps `plant/#` here to `site-a/plant/#` on mosquitto; `in` brings `cloud/cmd/#` there
/// to `local/cmd/#` here — messages, QoS 1 and the retain flag cross.
#[test]
fn a_bridge_carries_out_and_in() {
    let remote = Mosquitto::start();
    let kite = kite_with(&format!(
        "[[bridge]]\nname = \"cloud\"\naddresses = [\"{}\"]\nrestart_secs = [1, 2]\nnotification_topic = \"bridges/cloud/state\"\n\n[[bridge.topic]]\npattern = \"plant/#\"\ndirection = \"out\"\nqos = 1\nremote_prefix = \"site-a/\"\n\n[[bridge.topic]]\npattern = \"cmd/#\"\ndirection = \"in\"\nqos = 1\nlocal_prefix = \"local/\"\nremote_prefix = \"cloud/\"\n",
        remote.url()
    ));
    let here = tcp(kite.mqtt_addr.unwrap());
    let there = mosquitto_via(&remote);
    let mut watcher = TestClient::connected(&there, Version::V5, "watcher");
    watcher.subscribe("site-a/#", QoS::AtLeastOnce);
    let mut device = TestClient::connected(&here, Version::V5, "device");
    until_bridged(&mut device, "plant/probe", &mut watcher);

    // Out, QoS 1: the watcher on mosquitto gets it under the remote prefix, its MQTT 5
    // properties unchanged.
    let mut m = publish("plant/line1/temp", "21.5", QoS::AtLeastOnce, 7);
    m.retain = true;
    let properties = kite_mqtt::codec::Properties {
        content_type: Some("text/plain".into()),
        response_topic: Some("plant/line1/reply".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"req-42")),
        message_expiry_interval: Some(3600),
        user_properties: vec![("unit".into(), "°C".into()), ("site".into(), "a".into())],
        ..Default::default()
    };
    m.properties = properties.clone().into();
    assert_eq!(device.publish(m), kite_mqtt::codec::ReasonCode::Success);
    let got = recv_real(&mut watcher);
    assert_eq!(
        (got.topic.as_str(), payload(&got).as_str()),
        ("site-a/plant/line1/temp", "21.5")
    );
    assert_eq!(got.properties.content_type, properties.content_type);
    assert_eq!(got.properties.response_topic, properties.response_topic);
    assert_eq!(got.properties.correlation_data, properties.correlation_data);
    assert_eq!(got.properties.user_properties, properties.user_properties);
    // The expiry left: counted down by each broker, never up.
    assert!(
        got.properties
            .message_expiry_interval
            .is_some_and(|e| (3590..=3600).contains(&e)),
        "{:?}",
        got.properties.message_expiry_interval
    );
    watcher.ack(&got);
    // Retained as published: a new subscriber on mosquitto gets it from mosquitto's store.
    let mut late = TestClient::connected(&there, Version::V5, "late");
    late.subscribe("site-a/plant/line1/temp", QoS::AtMostOnce);
    let kept = late.recv_publish();
    assert!(kept.retain, "{kept:?}");
    assert_eq!(payload(&kept), "21.5");

    // In: a command published on mosquitto reaches a subscriber here, mapped.
    let mut operator = TestClient::connected(&here, Version::V5, "operator");
    operator.subscribe("local/cmd/#", QoS::AtLeastOnce);
    let mut cloud = TestClient::connected(&there, Version::V5, "cloud-app");
    let deadline = Instant::now() + Duration::from_secs(10);
    let cmd = loop {
        // The bridge subscribed on mosquitto once connected; until then a command is lost
        // (QoS 1 to no subscriber), so it is sent again.
        cloud.publish(publish("cloud/cmd/valve", "open", QoS::AtLeastOnce, 9));
        if let Some(p) = operator.barrier().into_iter().find_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        }) {
            break p;
        }
        assert!(Instant::now() < deadline, "no command came in");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (cmd.topic.as_str(), payload(&cmd).as_str()),
        ("local/cmd/valve", "open")
    );
    // What is neither out nor in does not cross.
    device.publish(publish("other/x", "no", QoS::AtLeastOnce, 8));
    cloud.publish(publish("elsewhere/y", "no", QoS::AtLeastOnce, 10));
    watcher.subscribe("#", QoS::AtMostOnce);
    let stray: Vec<String> = watcher
        .barrier()
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) if p.topic.starts_with("other") => Some(p.topic.to_string()),
            _ => None,
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    // Its state, retained, on both sides: "1" while up; the remote's "0" is the bridge's Will,
    // published when Kite goes away without a word. (mosquitto keeps `$SYS` to itself: a
    // client's PUBLISH there is dropped, so this bridge names a topic outside it.)
    const STATE: &str = "bridges/cloud/state";
    let mut state_here = TestClient::connected(&here, Version::V5, "state-here");
    state_here.subscribe(STATE, QoS::AtMostOnce);
    assert_eq!(payload(&state_here.recv_publish()), "1");
    let mut state_there = TestClient::connected(&there, Version::V5, "state-there");
    state_there.subscribe(STATE, QoS::AtMostOnce);
    assert_eq!(payload(&state_there.recv_publish()), "1");
    // Visible in /metrics.
    assert_eq!(metric(&kite, "kite_bridge_up{bridge=\"cloud\"}"), 1);
    assert!(
        metric(
            &kite,
            "kite_bridge_messages_total{bridge=\"cloud\",direction=\"out\"}"
        ) >= 2
    );
    assert!(
        metric(
            &kite,
            "kite_bridge_messages_total{bridge=\"cloud\",direction=\"in\"}"
        ) >= 1
    );
    assert_eq!(
        metric(&kite, "kite_bridge_dropped_total{bridge=\"cloud\"}"),
        0
    );
    drop(kite);
    let gone = state_there.recv_publish();
    assert_eq!((gone.topic.as_str(), payload(&gone).as_str()), (STATE, "0"));
}

/// A bridge of `plant/#` (out, QoS 1, `extra` lines in its `[[bridge]]`) to a persistent
/// mosquitto, up, with a persistent subscriber there that has gone away.
struct Outage {
    remote: Mosquitto,
    kite: Gateway,
    here: Via,
    there: Via,
    /// The subscriber's CONNECT, to come back with.
    archive: kite_mqtt::codec::Connect,
    device: TestClient,
}

fn outage_setup(extra: &str) -> Outage {
    let remote = Mosquitto::start_persistent();
    let kite = kite_with(&format!(
        "[[bridge]]\nname = \"cloud\"\naddresses = [\"{}\"]\nrestart_secs = [1, 1]\n{extra}\n[[bridge.topic]]\npattern = \"plant/#\"\ndirection = \"out\"\nqos = 1\n",
        remote.url()
    ));
    let here = tcp(kite.mqtt_addr.unwrap());
    let there = mosquitto_via(&remote);
    // A persistent subscriber on mosquitto: its session keeps what arrives while it is away.
    let mut c = connect(Version::V3_1_1, "archive");
    c.clean_start = false;
    let (mut archive, _) = TestClient::connect(&there, c.clone());
    archive.subscribe("plant/#", QoS::AtLeastOnce);
    let mut device = TestClient::connected(&here, Version::V5, "device");
    until_bridged(&mut device, "plant/probe", &mut archive);
    Outage {
        remote,
        kite,
        here,
        there,
        archive: c,
        device,
    }
}

/// The remote goes away: what is published here meanwhile (QoS 1) waits in the bridge's
/// session and reaches the remote, in order, once it is back.
#[test]
fn messages_wait_for_the_remote_and_arrive_in_order() {
    let Outage {
        mut remote,
        kite,
        here,
        there,
        archive: c,
        mut device,
    } = outage_setup("");

    remote.stop();
    // Here the bridge's state says it is down (retained "0"), once it noticed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut state = TestClient::connected(&here, Version::V5, "state");
        state.subscribe("$SYS/broker/bridge/cloud/state", QoS::AtMostOnce);
        if payload(&state.recv_publish()) == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "the state stayed \"1\"");
        std::thread::sleep(Duration::from_millis(50));
    }
    const N: u16 = 200;
    for i in 1..=N {
        let code = device.publish(publish("plant/seq", &i.to_string(), QoS::AtLeastOnce, i));
        assert_eq!(code, kite_mqtt::codec::ReasonCode::Success, "#{i}");
    }
    // The API says what waits, and why.
    let (status, body) = bridges_api(&kite, None);
    assert_eq!(status, 200, "{body}");
    let bridge = &body["bridges"][0];
    assert_eq!(bridge["name"], "cloud", "{body}");
    assert_eq!(bridge["state"], "down", "{body}");
    assert_eq!(bridge["queued"], u64::from(N), "{body}");
    assert!(
        bridge["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(
        metric(&kite, "kite_bridge_queued{bridge=\"cloud\"}"),
        u64::from(N)
    );
    remote.run();
    let (mut archive, ack) = TestClient::connect(&there, c);
    assert!(ack.session_present, "{ack:?}");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < N as usize {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} arrived",
            got.len()
        );
        let p = recv_real(&mut archive);
        archive.ack(&p);
        if p.topic.as_str() == "plant/seq" {
            got.push(payload(&p).parse::<u16>().unwrap());
        }
    }
    // In order; at QoS 1 a message may come twice (sent again after the outage), never out of
    // order among the first copies.
    got.dedup();
    assert_eq!(got, (1..=N).collect::<Vec<_>>());
    let (_, body) = bridges_api(&kite, None);
    assert_eq!(body["bridges"][0]["state"], "up", "{body}");
    assert!(metric(&kite, "kite_bridge_reconnects_total{bridge=\"cloud\"}") >= 1);
    assert_eq!(metric(&kite, "kite_bridge_up{bridge=\"cloud\"}"), 1);
}

/// `kite check-config`'s pass refuses a bad `[[bridge]]` with the line of each problem.
#[test]
fn bad_bridges_are_refused_with_their_lines() {
    let dir = std::env::temp_dir().join(format!("kite-bridge-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kite.toml");
    std::fs::write(
        &file,
        "[[bridge]]\nname = \"a b\"\naddresses = [\"ws://x\"]\nprotocol = \"4\"\n\n[[bridge.topic]]\npattern = \"a/#/b\"\ndirection = \"sideways\"\nlocal_prefix = \"x/+/\"\n\n[[bridge]]\nname = \"b\"\naddresses = [\"mqtts://127.0.0.1:1\"]\nca_file = \"/nonexistent/ca.pem\"\n\n[[bridge.topic]]\npattern = \"plant/#\"\ndirection = \"out\"\nqos = 3\n\n[[bridge]]\nname = \"b\"\naddresses = [\"mqtt://127.0.0.1:1\"]\n",
    )
    .unwrap();
    let problems = kite_gateway::config::check::check_file(&file);
    let lines: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        lines,
        [
            (2, "bridge[1].name"),
            (3, "bridge[1].addresses"),
            (4, "bridge[1].protocol"),
            (7, "bridge.topic[1].pattern"),
            (8, "bridge.topic[1].direction"),
            (9, "bridge.topic[1].local_prefix"),
            (14, "bridge[2].ca_file"),
            (19, "bridge.topic[2].qos"),
            (22, "bridge[3].name"),
            (22, "bridge[3].name"),
        ],
        "{problems:#?}"
    );
}

/// The `sync/` messages `c` received until now (a PINGREQ's answer marks the end).
fn synced(c: &mut TestClient) -> Vec<String> {
    c.barrier()
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) if p.topic.starts_with("sync/") => {
                if p.qos != QoS::AtMostOnce {
                    c.ack(&p);
                }
                Some(format!("{}={}", p.topic, payload(&p)))
            }
            _ => None,
        })
        .collect()
}

/// `both` makes no loop: a message published once on either side arrives once on each side
/// (MQTT 5: No Local on the bridge's subscriptions on both sides; 3.1.1: try_private, which
/// mosquitto honours, and No Local here).
fn both_ways_once(protocol: &str) {
    let remote = Mosquitto::start();
    both_ways_once_with(protocol, &remote.url(), &mosquitto_via(&remote));
}

/// [`both_ways_once`] with the remote at `url` (`there`, for the test's clients).
fn both_ways_once_with(protocol: &str, url: &str, there: &Via) {
    let kite = kite_with(&format!(
        "[[bridge]]\nname = \"twin\"\naddresses = [\"{url}\"]\nprotocol = \"{protocol}\"\nrestart_secs = [1, 2]\n\n[[bridge.topic]]\npattern = \"sync/#\"\ndirection = \"both\"\nqos = 1\n\n[[bridge.topic]]\npattern = \"probe/#\"\ndirection = \"out\"\n"
    ));
    let here = tcp(kite.mqtt_addr.unwrap());
    let there = there.clone();
    let mut a = TestClient::connected(&here, Version::V5, "a");
    a.subscribe("sync/#", QoS::AtLeastOnce);
    let mut b = TestClient::connected(&there, Version::V5, "b");
    b.subscribe("#", QoS::AtLeastOnce);
    let mut device = TestClient::connected(&here, Version::V5, "device");
    // Up, and its subscription on mosquitto made (it goes before the first message out).
    until_bridged(&mut device, "probe/x", &mut b);
    let mut cloud = TestClient::connected(&there, Version::V5, "cloud");

    device.publish(publish("sync/here", "1", QoS::AtLeastOnce, 1));
    cloud.publish(publish("sync/there", "2", QoS::AtLeastOnce, 2));
    // Time for any copy to go round; then everything each side has.
    let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(10);
    while (on_a.len() < 2 || on_b.len() < 2) && Instant::now() < deadline {
        on_a.extend(synced(&mut a));
        on_b.extend(synced(&mut b));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    on_a.extend(synced(&mut a));
    on_b.extend(synced(&mut b));
    on_a.sort();
    on_b.sort();
    let both = ["sync/here=1", "sync/there=2"];
    assert_eq!(on_a, both, "here, {protocol}");
    assert_eq!(on_b, both, "on mosquitto, {protocol}");
}

#[test]
fn both_ways_once_mqtt_5() {
    both_ways_once("5");
}

/// Between two Kites: the remote is another Kite's embedded broker (No Local there too).
#[test]
fn both_ways_once_between_two_kites() {
    let other = Gateway::start(&[], None);
    let addr = other.mqtt_addr.unwrap();
    both_ways_once_with("5", &format!("mqtt://{addr}"), &tcp(addr));
}

#[test]
fn both_ways_once_mqtt_3_1_1() {
    both_ways_once("3.1.1");
}

/// With users, `GET /api/v1/bridges` needs a login (401 without), and a role sees the bridges
/// whose state topic it may subscribe to.
#[test]
fn the_bridges_api_follows_logins_and_roles() {
    use kite_policy::acl::Acl;
    use kite_policy::auth::{Auth, Role, User};
    let remote = Mosquitto::start();
    let bridges = bridges(&format!(
        "[[bridge]]\nname = \"cloud\"\naddresses = [\"{}\"]\nnotification_topic = \"bridges/cloud/state\"\n\n[[bridge.topic]]\npattern = \"plant/#\"\ndirection = \"out\"\n",
        remote.url()
    ));
    let hash = kite_policy::auth::hash_password(b"pw").unwrap();
    let user = |name: &str, role: &str| User {
        name: name.into(),
        password_hash: hash.clone(),
        role: Some(role.into()),
    };
    let role = |name: &str, subscribe: &str| Role {
        name: name.into(),
        acl: Acl {
            subscribe: Some(vec![subscribe.into()]),
            ..Acl::default()
        },
        ..Role::default()
    };
    let kite = Gateway::start_with(&[], None, move |c| {
        c.bridges = bridges;
        c.auth = Auth::new(
            vec![user("ops", "ops"), user("guest", "guest")],
            vec![role("ops", "bridges/#"), role("guest", "plant/#")],
        )
        .unwrap();
    });
    assert_eq!(bridges_api(&kite, None).0, 401);
    assert_eq!(bridges_api(&kite, Some(("ops", "wrong"))).0, 401);
    let (status, body) = bridges_api(&kite, Some(("ops", "pw")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["bridges"][0]["name"], "cloud", "{body}");
    let (status, body) = bridges_api(&kite, Some(("guest", "pw")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["bridges"], serde_json::json!([]), "{body}");
}

/// Failover: with the first address down the bridge uses the second; when the first returns
/// the bridge goes back to it (checked every longest restart delay, here 1 s).
#[test]
fn failover_to_the_second_address_and_back_to_the_first() {
    let mut first = Mosquitto::start();
    first.stop();
    let second = Mosquitto::start();
    let kite = kite_with(&format!(
        "[[bridge]]\nname = \"cloud\"\naddresses = [\"{}\", \"{}\"]\nrestart_secs = [1, 1]\n\n[[bridge.topic]]\npattern = \"plant/#\"\ndirection = \"out\"\n",
        first.url(),
        second.url()
    ));
    let here = tcp(kite.mqtt_addr.unwrap());
    let mut device = TestClient::connected(&here, Version::V5, "device");
    let mut on_second = TestClient::connected(&mosquitto_via(&second), Version::V5, "w2");
    on_second.subscribe("plant/#", QoS::AtMostOnce);
    until_bridged(&mut device, "plant/probe", &mut on_second);

    first.run();
    let mut on_first = TestClient::connected(&mosquitto_via(&first), Version::V5, "w1");
    on_first.subscribe("plant/#", QoS::AtMostOnce);
    until_bridged(&mut device, "plant/probe", &mut on_first);
    // And no longer to the second.
    let _ = on_second.barrier();
    device.publish(publish("plant/after", "x", QoS::AtLeastOnce, 1));
    assert_eq!(recv_real(&mut on_first).topic.as_str(), "plant/after");
    let late: Vec<Packet> = on_second.barrier();
    assert!(
        !late
            .iter()
            .any(|p| matches!(p, Packet::Publish(p) if p.topic.as_str() == "plant/after")),
        "{late:?}"
    );
}

/// The app's start page shows the bridges: connected, then down with why and what waits.
#[test]
fn the_app_shows_the_bridges() {
    use kite_tests::browser::Browser;
    let mut remote = Mosquitto::start();
    let bridges = bridges(&format!(
        "[[bridge]]\nname = \"cloud\"\naddresses = [\"{}\"]\nrestart_secs = [1, 1]\n\n[[bridge.topic]]\npattern = \"plant/#\"\ndirection = \"out\"\nqos = 1\n",
        remote.url()
    ));
    let kite = Gateway::start_with(&[], Some(kite_tests::assets_dir()), move |c| {
        c.bridges = bridges;
    });
    let browser = Browser::start();
    browser.goto(&kite.http_url("/"));
    let shown = browser.wait_text(
        ".bridge[data-name=cloud][data-state=connected]",
        Duration::from_secs(30),
    );
    assert!(
        shown.contains("cloud") && shown.contains("connected"),
        "{shown}"
    );
    // The remote goes away; what is published meanwhile waits, and the page says so (it asks
    // every 5 s).
    remote.stop();
    let mut device = TestClient::connected(&tcp(kite.mqtt_addr.unwrap()), Version::V5, "device");
    for i in 1..=3u16 {
        device.publish(publish("plant/x", "1", QoS::AtLeastOnce, i));
    }
    let down = browser.wait_text(
        ".bridge[data-name=cloud][data-state=down]",
        Duration::from_secs(15),
    );
    assert!(down.contains("3 waiting"), "{down}");
    assert!(down.contains("no address answered"), "{down}");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    crate::app::screenshot(&browser, "bridges");
    browser.resize(390, 800);
    crate::app::screenshot(&browser, "bridges-phone");
}

/// A bridge over `mqtts://` to a mosquitto that trusts a private CA and requires a client
/// certificate: the bridge's `ca_file`, `client_cert`, `client_key` and `server_name`, with
/// paths relative to the config file.
#[test]
fn a_bridge_over_tls_with_a_private_ca_and_a_client_certificate() {
    let dir = kite_tests::TempDir::new("bridge-tls");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    crate::tls::private_pki(&dir);
    let tls_port = kite_tests::free_port();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let remote = Mosquitto::start_with(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        p("ca.crt"),
        p("server.crt"),
        p("server.key"),
    ));
    kite_tests::wait_for("mosquitto's TLS listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).ok()
    });
    let file = dir.path().join("kite.toml");
    std::fs::write(
        &file,
        format!(
            "[[bridge]]\nname = \"secure\"\naddresses = [\"mqtts://127.0.0.1:{tls_port}\"]\nca_file = \"ca.crt\"\nclient_cert = \"client.crt\"\nclient_key = \"client.key\"\nserver_name = \"localhost\"\n\n[[bridge.topic]]\npattern = \"plant/#\"\ndirection = \"out\"\nqos = 1\n"
        ),
    )
    .unwrap();
    let bridges = kite_gateway::config::Config::load(Some(&file), Default::default())
        .unwrap()
        .bridges;
    let kite = Gateway::start_with(&[], None, move |c| c.bridges = bridges);
    // The watcher on mosquitto's plain listener.
    let mut watcher = TestClient::connected(&mosquitto_via(&remote), Version::V5, "watcher");
    watcher.subscribe("plant/#", QoS::AtLeastOnce);
    let mut device = TestClient::connected(&tcp(kite.mqtt_addr.unwrap()), Version::V5, "device");
    until_bridged(&mut device, "plant/probe", &mut watcher);
    device.publish(publish("plant/secure", "over TLS", QoS::AtLeastOnce, 1));
    let got = recv_real(&mut watcher);
    assert_eq!(
        (got.topic.as_str(), payload(&got).as_str()),
        ("plant/secure", "over TLS")
    );
}

/// Back within a step: after a long outage the backoff has grown, but the bridge checks every
/// first step whether the remote answers, and forwards again — and says so on its state topic —
/// within about a step of the remote's return.
///
/// Told apart from the backoff whatever the jitter or the load: with `restart_secs = [1,
/// 600]` the waits double — 1–2 s after the loss, then 2–4, 4–8, 8–16, 16–32 s after each
/// failed try. The remote comes back as the fifth failure is counted (`reconnects` = 5: the
/// loss and four tries), so the backoff alone would wait 16 s or more, while a step is 1 s.
/// The bound, 12 s, is far from both.
#[test]
fn forwarding_resumes_within_a_step_of_the_remotes_return() {
    let mut remote = Mosquitto::start();
    let kite = kite_with(&format!(
        "[[bridge]]\nname = \"cloud\"\naddresses = [\"{}\"]\nrestart_secs = [1, 600]\n\n[[bridge.topic]]\npattern = \"plant/#\"\ndirection = \"out\"\n",
        remote.url()
    ));
    let here = tcp(kite.mqtt_addr.unwrap());
    let mut device = TestClient::connected(&here, Version::V5, "device");
    let mut watcher = TestClient::connected(&mosquitto_via(&remote), Version::V5, "w");
    watcher.subscribe("plant/#", QoS::AtMostOnce);
    until_bridged(&mut device, "plant/probe", &mut watcher);
    remote.stop();
    kite_tests::wait_for(
        "the loss and four failed tries",
        Duration::from_secs(60),
        || (reconnects(&kite) >= 5).then_some(()),
    );
    remote.run();
    let back = Instant::now();
    let state = |kite: &Gateway| {
        let mut c = TestClient::connected(&tcp(kite.mqtt_addr.unwrap()), Version::V5, "state");
        c.subscribe("$SYS/broker/bridge/cloud/state", QoS::AtMostOnce);
        payload(&c.recv_publish())
    };
    while state(&kite) != "1" {
        assert!(
            back.elapsed() < Duration::from_secs(12),
            "not back {:?} after the remote; the bridge says {}",
            back.elapsed(),
            bridges_api(&kite, None).1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // And it forwards again (to a new watcher: the first went with the remote).
    let mut watcher = TestClient::connected(&mosquitto_via(&remote), Version::V5, "w2");
    watcher.subscribe("plant/#", QoS::AtMostOnce);
    until_bridged(&mut device, "plant/again", &mut watcher);
}

/// A remote on `port` that comes back still starting: for its first `booting` it accepts a
/// connection and closes it at once (as a broker that listens before it is ready may); then it
/// carries each connection to mosquitto on `to`, both ways.
fn booting_remote(port: u16, booting: Duration, to: u16) {
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let up = Instant::now();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            if up.elapsed() < booting {
                continue; // dropped: closed at once
            }
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let ways = [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ];
            for (mut from, mut into) in ways {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(Shutdown::Write);
                });
            }
        }
    });
}

/// After an outage the backoff has grown; when the remote answers again but fails the first
/// session (still starting), the bridge tries again from the backoff's first step — not after
/// the outage's grown delay, with no check meanwhile (it had waited 16 s or more: the
/// flaky failures of `forwarding_resumes_within_a_step_of_the_remotes_return` fit this).
///
/// With `restart_secs = [1, 600]` and four failed tries (1–2, 2–4, 4–8 s apart), the fifth
/// failure — the first session on the returned remote, in its 2 s of starting — was followed
/// by 16–32 s of waiting; now by 1–2 s (and 2–4 s if that try still falls in the 2 s). The
/// bound, 12 s, is far from both.
#[test]
fn a_remote_that_fails_its_first_session_on_return_is_tried_again_soon() {
    let remote = Mosquitto::start();
    let port = kite_tests::free_port();
    let kite = kite_with(&format!(
        "[[bridge]]\nname = \"cloud\"\naddresses = [\"mqtt://127.0.0.1:{port}\"]\nrestart_secs = [1, 600]\n\n[[bridge.topic]]\npattern = \"plant/#\"\ndirection = \"out\"\n"
    ));
    kite_tests::wait_for(
        "four failed tries while nothing listens",
        Duration::from_secs(60),
        || (reconnects(&kite) >= 4).then_some(()),
    );
    // Back, but closing what it accepts for 2 s: the bridge's check (a plain connection
    // every first step, 1 s) and its session right after it both meet a closed connection.
    booting_remote(port, Duration::from_secs(2), remote.port);
    let back = Instant::now();
    let up = |kite: &Gateway| bridges_api(kite, None).1["bridges"][0]["state"] == "up";
    while !up(&kite) {
        assert!(
            back.elapsed() < Duration::from_secs(12),
            "not up {:?} after the remote's return; the bridge says {}",
            back.elapsed(),
            bridges_api(&kite, None).1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // It failed a session on the returned remote before (else this test proves nothing).
    assert!(reconnects(&kite) >= 5, "{}", bridges_api(&kite, None).1);
    // And it forwards.
    let mut device = TestClient::connected(&tcp(kite.mqtt_addr.unwrap()), Version::V5, "device");
    let mut watcher = TestClient::connected(&mosquitto_via(&remote), Version::V5, "w");
    watcher.subscribe("plant/#", QoS::AtMostOnce);
    until_bridged(&mut device, "plant/back", &mut watcher);
}

/// Bounded and counted: beyond the bridge's `max_queued_messages` new outgoing messages are
/// dropped and counted (`kite_bridge_dropped_total`); what was kept arrives once the remote is
/// back, and nothing else is lost.
#[test]
fn beyond_its_queue_bound_a_bridge_drops_new_messages_and_counts_them() {
    let Outage {
        mut remote,
        kite,
        here: _,
        there,
        archive: c,
        mut device,
    } = outage_setup("max_queued_messages = 50\n");
    remote.stop();
    // Down (and so taking nothing) before the messages come.
    let deadline = Instant::now() + Duration::from_secs(10);
    while bridges_api(&kite, None).1["bridges"][0]["state"] != "down" {
        assert!(Instant::now() < deadline, "the bridge did not notice");
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 1..=80u16 {
        device.publish(publish("plant/seq", &i.to_string(), QoS::AtLeastOnce, i));
    }
    assert_eq!(metric(&kite, "kite_bridge_queued{bridge=\"cloud\"}"), 50);
    assert_eq!(
        metric(&kite, "kite_bridge_dropped_total{bridge=\"cloud\"}"),
        30
    );
    remote.run();
    let (mut archive, _) = TestClient::connect(&there, c);
    let mut got = Vec::new();
    while got.len() < 50 {
        let p = recv_real(&mut archive);
        archive.ack(&p);
        if p.topic.as_str() == "plant/seq" {
            got.push(payload(&p).parse::<u16>().unwrap());
        }
    }
    got.dedup();
    assert_eq!(
        got,
        (1..=50).collect::<Vec<_>>(),
        "the first 50 kept, in order"
    );
    // And none of the dropped ones after them.
    let more: Vec<String> = archive
        .barrier()
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) if p.topic.as_str() == "plant/seq" => Some(payload(&p)),
            _ => None,
        })
        .collect();
    assert!(
        more.iter().all(|m| m.parse::<u16>().unwrap() <= 50),
        "{more:?}"
    );
}
