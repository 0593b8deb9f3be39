//! `GET /api/v1/events` (issue #22, item 3): Server-Sent Events of the messages matching a
//! filter — from the embedded broker and from a mosquitto upstream, within the role's rules,
//! and resumed over the recorder with `Last-Event-ID`.

use std::io::BufRead as _;
use std::sync::mpsc;
use std::time::Duration;

use kite_mqtt::codec::Properties;
use kite_mqtt::{QoS, Version};
use kite_tests::client::{TestClient, Via, publish};
use kite_tests::{Gateway, Mosquitto, TempDir, wait_for};

const WAIT: Duration = Duration::from_secs(10);

/// One event as read off the stream.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: String,
    data: serde_json::Value,
}

/// An open event stream: its events arrive on a channel, read by a thread.
#[derive(Debug)]
struct Stream {
    events: mpsc::Receiver<Sse>,
    /// Cleared on drop: the reading thread then closes the connection at its next line (a
    /// keep-alive comment comes every 5 s).
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.open.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Stream {
    /// The next event (`message` or other), waiting up to [`WAIT`].
    fn next(&self) -> Sse {
        self.events
            .recv_timeout(WAIT)
            .expect("an event within 10 s")
    }

    /// The next `message` event.
    fn message(&self) -> Sse {
        loop {
            let e = self.next();
            if e.event == "message" {
                return e;
            }
        }
    }

    /// Whether no event comes within `d`.
    fn quiet_for(&self, d: Duration) -> bool {
        self.events.recv_timeout(d).is_err()
    }
}

/// `GET path` as an event stream: (status, Content-Type, the stream — or the error's body).
fn open(
    kite: &Gateway,
    path: &str,
    last_event_id: Option<&str>,
) -> (u16, String, Result<Stream, serde_json::Value>) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut request = agent
        .get(&kite.http_url(path))
        .header("Accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if status != 200 {
        let text = response.body_mut().read_to_string().unwrap_or_default();
        return (
            status,
            content_type,
            Err(serde_json::from_str(&text).unwrap_or_default()),
        );
    }
    let (tx, rx) = mpsc::channel();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let still = open.clone();
    let reader = response
        .into_body()
        .into_with_config()
        .limit(u64::MAX)
        .reader();
    std::thread::spawn(move || {
        let lines = std::io::BufReader::new(reader).lines();
        let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
        for line in lines {
            let Ok(line) = line else { return };
            if !still.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            if line.is_empty() {
                if !data.is_empty() || !event.is_empty() {
                    let e = Sse {
                        event: std::mem::take(&mut event),
                        id: std::mem::take(&mut id),
                        data: serde_json::from_str(&std::mem::take(&mut data)).unwrap_or_default(),
                    };
                    if tx.send(e).is_err() {
                        return;
                    }
                }
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    });
    (status, content_type, Ok(Stream { events: rx, open }))
}

fn device(kite: &Gateway, id: &str) -> TestClient {
    TestClient::connected(&Via::Tcp(kite.mqtt_addr.unwrap()), Version::V5, id)
}

/// The retained value first, then what is published, as the history API shows a message
/// (topic, payload as text or base64, QoS, retain, MQTT 5 properties); nothing outside the
/// filter.
#[test]
fn a_stream_gives_the_retained_value_then_each_message() {
    let kite = Gateway::start_with(&[], None, |_| {});
    let mut d = device(&kite, "sensor");
    let mut retained = publish("plant/a/temp", "21.5", QoS::AtLeastOnce, 1);
    retained.retain = true;
    d.publish(retained);
    let clients = kite.metric("kite_broker_clients_connected");
    let (status, content_type, stream) = open(&kite, "/api/v1/events?filter=plant/%2B/temp", None);
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let stream = stream.unwrap();
    let first = stream.message();
    assert_eq!(first.data["topic"], "plant/a/temp");
    assert_eq!(first.data["payload"], "21.5");
    assert_eq!(first.data["retain"], true, "{:?}", first.data);
    assert!(first.id.parse::<u64>().is_ok(), "{first:?}");

    let mut live = publish("plant/b/temp", "{\"t\": 22}", QoS::AtLeastOnce, 2);
    live.properties = Properties {
        content_type: Some("application/json".into()),
        user_properties: vec![("line".into(), "1".into())],
        ..Properties::default()
    }
    .into();
    d.publish(live);
    d.publish(publish("plant/b/humidity", "40", QoS::AtLeastOnce, 3));
    let mut binary = publish("plant/c/temp", "", QoS::AtLeastOnce, 4);
    binary.payload = vec![0xff_u8, 0x00].into();
    d.publish(binary);
    let next = stream.message();
    assert_eq!(
        (next.data["topic"].as_str(), next.data["payload"].as_str()),
        (Some("plant/b/temp"), Some("{\"t\": 22}"))
    );
    assert_eq!(next.data["qos"], 1);
    assert_eq!(next.data["retain"], false);
    assert_eq!(
        next.data["properties"]["content_type"], "application/json",
        "{:?}",
        next.data
    );
    assert_eq!(next.data["properties"]["user_properties"][0][0], "line");
    // The humidity is outside the filter; a payload that is not UTF-8 comes as base64.
    let binary = stream.message();
    assert_eq!(binary.data["topic"], "plant/c/temp");
    assert_eq!(
        (
            binary.data["encoding"].as_str(),
            binary.data["payload"].as_str()
        ),
        (Some("base64"), Some("/wA="))
    );
    assert!(stream.quiet_for(Duration::from_millis(300)));
    // The stream's session goes with it: once a keep-alive (every 5 s) finds the client
    // gone.
    drop(stream);
    wait_for(
        "the stream's session to end",
        Duration::from_secs(30),
        || (kite.metric("kite_broker_clients_connected") == clients).then_some(()),
    );
}

/// The role's rules: a filter it may not subscribe to is a 403 naming `filter`, topics its
/// deny rules cover are left out; with users, no login is a 401; bad input is a 400.
#[test]
fn a_stream_follows_the_roles_rules() {
    let acl = kite_policy::acl::Acl {
        publish: Some(vec!["#".into()]),
        subscribe: Some(vec!["plant/#".into()]),
        deny_publish: vec![],
        deny_subscribe: vec!["plant/secret/#".into()],
    };
    let kite = Gateway::start_with(&[], None, move |c| {
        c.auth = kite_tests::anonymous_role(acl);
    });
    let (status, content_type, refused) = open(&kite, "/api/v1/events?filter=other/%23", None);
    assert_eq!((status, content_type.as_str()), (403, "application/json"));
    let refused = refused.err().unwrap();
    assert_eq!(refused["field"], "filter", "{refused}");
    for (path, field) in [
        ("/api/v1/events", "filter"),
        ("/api/v1/events?filter=plant/%23/x", "filter"),
        ("/api/v1/events?filter=plant/%23&since=1", "since"),
        ("/api/v1/events?filter=plant/%23&upstream=nope", "upstream"),
    ] {
        let (status, _, e) = open(&kite, path, None);
        let e = e.err().unwrap();
        assert!(status == 400 || status == 404, "{path}: {status} {e}");
        assert_eq!(e["field"], field, "{path}: {e}");
    }
    let (_, _, stream) = open(&kite, "/api/v1/events?filter=plant/%23", None);
    let stream = stream.unwrap();
    let mut d = device(&kite, "mixed");
    d.publish(publish("plant/secret/key", "s3cret", QoS::AtLeastOnce, 1));
    d.publish(publish("plant/open", "hello", QoS::AtLeastOnce, 2));
    let got = stream.message();
    assert_eq!(
        got.data["topic"], "plant/open",
        "the denied topic is left out"
    );
    assert!(stream.quiet_for(Duration::from_millis(300)));

    let hash = kite_policy::auth::hash_password(b"pw").unwrap();
    let guarded = Gateway::start_with(&[], None, move |c| {
        c.auth = kite_policy::auth::Auth::new(
            vec![kite_policy::auth::User {
                name: "ops".into(),
                password_hash: hash,
                role: Some("ops".into()),
            }],
            vec![kite_policy::auth::Role {
                name: "ops".into(),
                ..Default::default()
            }],
        )
        .unwrap();
    });
    let (status, _, e) = open(&guarded, "/api/v1/events?filter=%23", None);
    assert_eq!(status, 401, "{e:?}");
}

/// A client that comes back with `Last-Event-ID` first gets what the recorder kept since
/// that event — what it missed while away — then the live stream.
#[test]
fn a_stream_resumes_over_the_recorder() {
    let dir = TempDir::new("events-resume");
    let kite = Gateway::start_with(
        &[],
        None,
        crate::history::recording(dir.path(), &["plant/#"], 1 << 30),
    );
    let mut d = device(&kite, "sensor");
    let (_, _, stream) = open(&kite, "/api/v1/events?filter=plant/%23", None);
    let stream = stream.unwrap();
    d.publish(publish("plant/a", "1", QoS::AtLeastOnce, 1));
    let seen = stream.message();
    assert_eq!(seen.data["payload"], "1");
    drop(stream);
    // Away: three more, on two topics.
    std::thread::sleep(Duration::from_millis(20));
    for (i, topic) in ["plant/a", "plant/b", "plant/a"].iter().enumerate() {
        d.publish(publish(
            topic,
            &(i + 2).to_string(),
            QoS::AtLeastOnce,
            i as u16 + 2,
        ));
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_for("recorded", WAIT, || {
        (kite.state().history().unwrap().usage().messages == 4).then_some(())
    });
    // The last event's millisecond comes again (at least once), then what was missed.
    let (_, _, stream) = open(&kite, "/api/v1/events?filter=plant/%23", Some(&seen.id));
    let stream = stream.unwrap();
    let replayed: Vec<(String, String)> = (0..4)
        .map(|_| {
            let m = stream.message();
            (
                m.data["topic"].as_str().unwrap().to_owned(),
                m.data["payload"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        replayed,
        [
            ("plant/a".to_owned(), "1".to_owned()),
            ("plant/a".to_owned(), "2".to_owned()),
            ("plant/b".to_owned(), "3".to_owned()),
            ("plant/a".to_owned(), "4".to_owned())
        ],
        "what was missed, in order"
    );
    d.publish(publish("plant/c", "live", QoS::AtLeastOnce, 9));
    let live = stream.message();
    assert_eq!(live.data["payload"], "live");
    assert!(
        live.id.parse::<u64>().unwrap() >= seen.id.parse::<u64>().unwrap(),
        "ids are times"
    );
    assert!(stream.quiet_for(Duration::from_millis(300)), "each once");
    // A topic the recorder does not keep resumes live only; a stream without
    // Last-Event-ID replays nothing.
    let (_, _, fresh) = open(&kite, "/api/v1/events?filter=plant/%23", None);
    let fresh = fresh.unwrap();
    assert!(fresh.quiet_for(Duration::from_millis(300)));
}

/// In front of mosquitto, the stream is the gateway's own session there.
#[test]
fn a_stream_from_an_upstream_broker() {
    let broker = Mosquitto::start();
    let kite = Gateway::start(&[&broker.url()], None);
    let (status, _, stream) = open(&kite, "/api/v1/events?filter=lab/%23", None);
    assert_eq!(status, 200);
    let stream = stream.unwrap();
    // The session subscribes once it is up: publish until the stream has one.
    let got = wait_for("a message through mosquitto", WAIT, || {
        broker.publish("lab/x", "from mosquitto");
        stream.events.recv_timeout(Duration::from_millis(200)).ok()
    });
    assert_eq!(got.data["topic"], "lab/x");
    assert_eq!(got.data["payload"], "from mosquitto");
}
