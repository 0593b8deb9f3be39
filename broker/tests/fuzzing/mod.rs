//! The embedded broker driven by a script made of arbitrary bytes, for fuzzing: the cargo-fuzz
//! target `broker` (`cargo xtask fuzz`, open-ended) and the bounded, seeded run of
//! `broker/tests/fuzz.rs` in every `cargo xtask test`.
//!
//! Three in-process clients (client ids drawn from a small set, so sessions are resumed and
//! taken over) send what the script says — PUBLISH with topic aliases and subscription ids,
//! SUBSCRIBE with options and shared groups, UNSUBSCRIBE, acknowledgements for any id, PING,
//! DISCONNECT, raw garbage, reconnects — while time jumps ahead (keep-alive, Will delay,
//! expiry). Half the scripts run under a role with topic rules. Checked: nothing panics,
//! everything the broker sends is a well-formed packet, and afterwards a new client still
//! gets a QoS 1 message through it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kite_mqtt::codec::{
    Ack, Connect, Disconnect, Properties, Publish, ReasonCode, RetainHandling, Subscribe,
    Subscription, Unsubscribe, Will,
};
use kite_mqtt::{Limits, Packet, QoS, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use kite_broker::{Broker, BrokerConfig, ConnInfo};

/// Reads the script: each call takes the next byte (zero once it is used up).
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }

    fn pick<'t, T>(&mut self, from: &'t [T]) -> &'t T {
        &from[usize::from(self.byte()) % from.len()]
    }

    fn qos(&mut self) -> QoS {
        *self.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
    }

    fn id(&mut self) -> u16 {
        u16::from(self.byte() % 8) + 1
    }

    /// A topic of one to four levels from a small alphabet (wildcards included: a name with
    /// one cannot be encoded, and the step is skipped).
    fn topic(&mut self) -> String {
        let levels = usize::from(self.byte() % 4) + 1;
        (0..levels)
            .map(|_| *self.pick(&["a", "b", "", "$x", "+", "#", "c"]))
            .collect::<Vec<_>>()
            .join("/")
    }
}

const CLIENT_IDS: [&str; 4] = ["a", "b", "c", ""];

fn connect(s: &mut Script<'_>) -> (Connect, Version) {
    let version = if s.byte() & 1 == 0 {
        Version::V3_1_1
    } else {
        Version::V5
    };
    let flags = s.byte();
    let mut c = Connect {
        version,
        client_id: (*s.pick(&CLIENT_IDS)).into(),
        clean_start: flags & 1 == 0,
        keep_alive: u16::from(flags >> 4),
        ..Connect::default()
    };
    if flags & 2 != 0 {
        let mut will_props = Properties::default();
        if version == Version::V5 && flags & 4 != 0 {
            will_props.will_delay_interval = Some(u32::from(s.byte() % 4));
        }
        c.will = Some(Will {
            topic: s.topic().as_str().into(),
            payload: Bytes::from_static(b"will"),
            qos: s.qos(),
            retain: flags & 8 != 0,
            properties: will_props.into(),
        });
    }
    if version == Version::V5 {
        c.properties = Properties {
            session_expiry_interval: Some(u32::from(s.byte() % 3) * 5),
            receive_maximum: Some(u16::from(s.byte() % 3) + 1),
            topic_alias_maximum: Some(u16::from(s.byte() % 3)),
            ..Properties::default()
        }
        .into();
    }
    (c, version)
}

fn packet(s: &mut Script<'_>, version: Version) -> Option<Packet> {
    let v5 = version == Version::V5;
    Some(match s.byte() % 12 {
        0..=2 => {
            let qos = s.qos();
            let flags = s.byte();
            let mut properties = Properties::default();
            if v5 && flags & 1 != 0 {
                properties.topic_alias = Some(u16::from(s.byte() % 4));
            }
            if v5 && flags & 2 != 0 {
                properties.message_expiry_interval = Some(u32::from(s.byte() % 3));
            }
            let topic = if properties.topic_alias.is_some() && flags & 4 != 0 {
                String::new()
            } else {
                s.topic()
            };
            Packet::Publish(Publish {
                qos,
                retain: flags & 8 != 0,
                dup: flags & 16 != 0,
                packet_id: if qos == QoS::AtMostOnce { 0 } else { s.id() },
                topic: topic.as_str().into(),
                payload: if flags & 32 != 0 {
                    Bytes::new()
                } else {
                    Bytes::from_static(b"p")
                },
                properties: properties.into(),
            })
        }
        3 | 4 => {
            let n = usize::from(s.byte() % 3) + 1;
            let filters = (0..n)
                .map(|_| {
                    let flags = s.byte();
                    let topic = s.topic();
                    let filter = if flags & 1 != 0 {
                        format!("$share/g/{topic}")
                    } else {
                        topic
                    };
                    Subscription {
                        filter: filter.as_str().into(),
                        qos: s.qos(),
                        no_local: v5 && flags & 2 != 0,
                        retain_as_published: v5 && flags & 4 != 0,
                        retain_handling: if v5 {
                            *s.pick(&[
                                RetainHandling::SendAtSubscribe,
                                RetainHandling::SendIfNew,
                                RetainHandling::DoNotSend,
                            ])
                        } else {
                            RetainHandling::SendAtSubscribe
                        },
                    }
                })
                .collect();
            let mut properties = Properties::default();
            if v5 && s.byte() & 1 != 0 {
                properties.subscription_identifiers = vec![u32::from(s.byte() % 3) + 1];
            }
            Packet::Subscribe(Subscribe {
                packet_id: s.id(),
                filters,
                properties: properties.into(),
            })
        }
        5 => Packet::Unsubscribe(Unsubscribe {
            packet_id: s.id(),
            filters: vec![s.topic().as_str().into()],
            properties: Default::default(),
        }),
        6 => Packet::PubAck(Ack::new(s.id())),
        7 => Packet::PubRec(Ack::new(s.id())),
        8 => Packet::PubRel(Ack::new(s.id())),
        9 => Packet::PubComp(Ack::new(s.id())),
        10 => Packet::PingReq,
        _ => return None,
    })
}

/// One client: its end of the pipe, and a task that reads and checks what the broker sends.
struct Client {
    tx: tokio::io::WriteHalf<DuplexStream>,
    reader: tokio::task::JoinHandle<()>,
}

async fn open(broker: &Broker, c: &Connect, version: Version, n: u16) -> Client {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let b = broker.clone();
    let peer = SocketAddr::from(([127, 0, 0, 1], 10_000 + n));
    tokio::spawn(async move { b.serve_connection(theirs, ConnInfo::tcp(peer)).await });
    let (mut rx, mut tx) = tokio::io::split(ours);
    let mut bytes = BytesMut::new();
    if Packet::Connect(Box::new(c.clone()))
        .encode(version, &mut bytes)
        .is_err()
    {
        // Not encodable (a Will topic with a wildcard, an empty client id without clean
        // start): one that is, so the version the broker answers in is the client's.
        let plain = Connect {
            will: None,
            clean_start: true,
            ..c.clone()
        };
        bytes.clear();
        Packet::Connect(Box::new(plain))
            .encode(version, &mut bytes)
            .expect("a plain CONNECT encodes");
    }
    let _ = tx.write_all(&bytes).await;
    let reader = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        loop {
            match rx.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            while let Some(p) = kite_mqtt::decode(&mut buf, version, &Limits::default())
                .unwrap_or_else(|e| panic!("the broker sent a malformed packet: {e}"))
            {
                let _ = p;
            }
        }
    });
    Client { tx, reader }
}

/// Runs one script (see the module's documentation); panics if an invariant breaks.
pub fn broker_script(data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(run(data));
}

async fn run(data: &[u8]) {
    let mut s = Script(data);
    let config = BrokerConfig {
        max_topic_levels: 3,
        max_subscriptions: 4,
        max_retained_messages: 3,
        max_queued_messages: 4,
        max_queued_messages_online: 4,
        max_inflight: 2,
        receive_maximum: 2,
        topic_alias_maximum: 2,
        sys_interval: None,
        ..BrokerConfig::default()
    };
    let auth = if s.byte() & 1 == 0 {
        kite_policy::auth::Auth::default()
    } else {
        let guest = kite_policy::auth::Role {
            name: "guest".into(),
            acl: kite_policy::acl::Acl {
                publish: Some(vec!["a/#".into(), "b".into()]),
                subscribe: Some(vec!["a/#".into(), "+/b".into()]),
                deny_publish: vec!["a/$x".into()],
                deny_subscribe: vec!["a/b".into()],
            },
            ..Default::default()
        };
        kite_policy::auth::Auth::new(vec![], vec![guest])
            .and_then(|a| a.with_anonymous_role(Some("guest")))
            .expect("a valid role")
    };
    let broker = Broker::new(config, auth, kite_broker::logins::Logins::new(1));
    let mut clients: Vec<(Client, Version)> = Vec::new();
    let mut opened = 0;
    for _ in 0..3 {
        let (c, v) = connect(&mut s);
        opened += 1;
        clients.push((open(&broker, &c, v, opened).await, v));
    }
    let mut steps = 0;
    while !s.done() && steps < 200 {
        steps += 1;
        let which = usize::from(s.byte()) % clients.len();
        match s.byte() % 32 {
            // Time passes: keep-alives run out, Wills fire, sessions expire.
            0 => tokio::time::sleep(Duration::from_millis(u64::from(s.byte()) * 100)).await,
            // The client reconnects (its connection dropped without DISCONNECT).
            1 | 2 => {
                let (c, v) = connect(&mut s);
                opened += 1;
                let new = open(&broker, &c, v, opened).await;
                let (mut old, _) = std::mem::replace(&mut clients[which], (new, v));
                // The broker reads the end of its stream (dropping one half of a split pipe
                // closes nothing).
                let _ = old.tx.shutdown().await;
            }
            // Bytes that need not be a packet.
            3 => {
                let n = usize::from(s.byte() % 16);
                let raw: Vec<u8> = (0..n).map(|_| s.byte()).collect();
                let _ = clients[which].0.tx.write_all(&raw).await;
            }
            4 => {
                let reason = *s.pick(&[
                    ReasonCode::Success,
                    ReasonCode::DisconnectWithWillMessage,
                    ReasonCode::ProtocolError,
                ]);
                let (client, version) = &mut clients[which];
                let mut bytes = BytesMut::new();
                if Packet::Disconnect(Disconnect::new(reason))
                    .encode(*version, &mut bytes)
                    .is_ok()
                {
                    let _ = client.tx.write_all(&bytes).await;
                }
            }
            _ => {
                let (client, version) = &mut clients[which];
                if let Some(p) = packet(&mut s, *version) {
                    // Not encodable (a wildcard in a name...): skipped; garbage has its step.
                    let mut bytes = BytesMut::new();
                    if p.encode(*version, &mut bytes).is_ok() {
                        let _ = client.tx.write_all(&bytes).await;
                    }
                }
            }
        }
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (mut c, _) in clients {
        let _ = c.tx.shutdown().await;
        // The broker closes a connection whose client went away; a panic in a reader (a
        // malformed packet from the broker) fails the script.
        match tokio::time::timeout(Duration::from_secs(600), c.reader).await {
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(_) => {}
            Err(_) => panic!("the broker kept a connection open after its client went away"),
        }
    }
    still_serving(&broker).await;
    broker.shutdown();
}

/// A new client subscribes and gets its own QoS 1 message back through the broker.
async fn still_serving(broker: &Broker) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let b = broker.clone();
    tokio::spawn(async move {
        b.serve_connection(theirs, ConnInfo::tcp(SocketAddr::from(([127, 0, 0, 1], 9))))
            .await
    });
    let (mut rx, mut tx) = tokio::io::split(ours);
    let v = Version::V5;
    let mut out = BytesMut::new();
    for p in [
        Packet::Connect(Box::new(Connect {
            version: v,
            client_id: "fuzz-check".into(),
            keep_alive: 0,
            ..Connect::default()
        })),
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![Subscription::new("a/check", QoS::AtLeastOnce)],
            properties: Default::default(),
        }),
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            packet_id: 2,
            topic: "a/check".into(),
            payload: Bytes::from_static(b"ok"),
            ..Publish::default()
        }),
    ] {
        p.encode(v, &mut out).expect("a valid packet");
    }
    tx.write_all(&out).await.expect("the broker takes bytes");
    let mut buf = BytesMut::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        while let Some(p) = kite_mqtt::decode(&mut buf, v, &Limits::default()).expect("well-formed")
        {
            if let Packet::Publish(p) = p
                && &p.payload[..] == b"ok"
            {
                return;
            }
        }
        let read = tokio::time::timeout_at(deadline, rx.read_buf(&mut buf)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {}
            other => panic!("the broker stopped serving a new client: {other:?}"),
        }
    }
}
