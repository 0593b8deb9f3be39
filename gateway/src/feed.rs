//! A feed: a subscriber session of the gateway's own that hands what it receives, in
//! batches, to a handler — the device monitor's and the alarms' source of messages. Its
//! subscriptions follow a `watch` channel (the alarms' rules change at run time: new filters
//! are subscribed, gone ones unsubscribed). Not persistent: retained messages are delivered
//! on every (re)subscription, with the RETAIN flag set [MQTT-3.3.1-9], and live messages
//! have it clear (Retain As Published off).
//!
//! With the embedded broker it is an in-process client (`Broker::connect_local`) whose
//! deliveries are taken at most every [`READ_EVERY`], so that one wake-up carries many; in
//! front of an upstream broker it is a `client::spawn` MQTT 5 session, reconnecting with
//! backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use kite_broker::{Broker, ConnInfo};
use kite_data::{Millis, now_ms};
use kite_mqtt::codec::{
    Ack, Connect, Properties, Props, Publish, RetainHandling, Subscribe, Subscription, Unsubscribe,
};
use kite_mqtt::{MqttStr, Packet, QoS, Version};
use tokio::sync::watch;

/// The shortest time between two reads of the embedded broker's deliveries.
pub const READ_EVERY: Duration = Duration::from_millis(10);

/// What a feed's session may hold at the embedded broker between reads: beyond, the broker
/// drops (QoS 0) and counts.
const QUEUE: kite_broker::QueueBounds = kite_broker::QueueBounds {
    messages: 200_000,
    bytes: 64 << 20,
};

/// What a feed receives: a batch of messages, with when they were taken.
pub type Handler = Box<dyn FnMut(&[Publish], Millis) + Send>;

/// A feed's settings.
pub struct Feed {
    /// For logs: "device monitor", "alarms".
    pub name: &'static str,
    /// Its client id.
    pub client_id: String,
    /// The subscriptions it should have.
    pub filters: watch::Receiver<Vec<Subscription>>,
    /// 1 while its session is up, else 0.
    pub up: Arc<AtomicU64>,
    /// Ends the feed (on the embedded broker) when it says so or its sender is dropped;
    /// `None`: the feed lasts as long as the broker. (In front of an upstream, the
    /// `shutdown` of [`start_upstream`] does this.)
    pub stop: Option<watch::Receiver<bool>>,
}

/// Completes when `stop` says so or its sender is gone; never without one.
async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(s) => {
            let _ = s.wait_for(|down| *down).await;
        }
        None => std::future::pending().await,
    }
}

/// A client id of the gateway's own at an upstream broker: `<prefix>-<hostname>`, so that
/// two gateways in front of one broker keep their own sessions.
pub fn upstream_client_id(prefix: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into());
    format!("{prefix}-{host}")
}

/// A subscription as feeds make them: at `qos`, retained messages on subscribing, RETAIN
/// clear on live messages.
pub fn subscription(filter: &str, qos: QoS) -> Subscription {
    Subscription {
        filter: filter.into(),
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: RetainHandling::SendAtSubscribe,
    }
}

/// What changed between `had` and `want`: the subscriptions to make (new, or at another
/// QoS) and the filters to drop.
fn changes(had: &[Subscription], want: &[Subscription]) -> (Vec<Subscription>, Vec<MqttStr>) {
    let add = want
        .iter()
        .filter(|w| !had.iter().any(|h| h.filter == w.filter && h.qos == w.qos))
        .cloned()
        .collect();
    let drop = had
        .iter()
        .filter(|h| !want.iter().any(|w| w.filter == h.filter))
        .map(|h| h.filter.clone())
        .collect();
    (add, drop)
}

/// Starts `feed` on the embedded broker; the receiver completes once its first
/// subscriptions are sent (so that the broker's listeners can wait for it).
pub fn start_embedded(
    broker: Broker,
    feed: Feed,
    handler: Handler,
) -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(run_embedded(broker, feed, handler, tx));
    rx
}

async fn run_embedded(
    broker: Broker,
    mut feed: Feed,
    mut handler: Handler,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut delay = Duration::from_millis(500);
    let mut ready = Some(ready);
    loop {
        match embedded_session(&broker, &mut feed, &mut handler, &mut ready).await {
            Ok(()) => return,
            Err(e) => {
                feed.up.store(0, Relaxed);
                tracing::error!("{}: {e}; retrying in {delay:?}", feed.name);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = broker.stopped() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// One session with the embedded broker: `Ok` when the broker closed it (shutting down).
async fn embedded_session(
    broker: &Broker,
    feed: &mut Feed,
    handler: &mut Handler,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), String> {
    let connect = Connect {
        version: Version::V5,
        client_id: feed.client_id.as_str().into(),
        bridge: false,
        clean_start: true,
        keep_alive: 0,
        username: None,
        password: None,
        will: None,
        properties: Properties::default().into(),
    };
    let login = kite_policy::auth::Login {
        user: feed.client_id.clone(),
        role: None,
    };
    let info = ConnInfo::internal(Some(login)).with_queue(QUEUE);
    let (sender, mut receiver) = broker.connect_local(connect, info).split();
    let keep_alive = match receiver.recv().await {
        // The broker's keep-alive holds in-process clients too: a PINGREQ when idle.
        Some(Packet::ConnAck(a)) if !a.reason.is_error() => {
            a.properties.server_keep_alive.unwrap_or(60).max(2)
        }
        Some(other) => return Err(format!("the broker refused the session: {other:?}")),
        None => return Ok(()),
    };
    let mut ping = tokio::time::interval(Duration::from_secs(u64::from(keep_alive) / 2));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut had: Vec<Subscription> = Vec::new();
    let mut packet_id: u16 = 0;
    let mut next_id = move || {
        packet_id = packet_id.checked_add(1).unwrap_or(1);
        packet_id
    };
    // The subscriptions now, and each time they change.
    let mut follow = |had: &mut Vec<Subscription>, want: Vec<Subscription>| {
        let (add, drop) = changes(had, &want);
        *had = want;
        let mut out = Vec::new();
        if !drop.is_empty() {
            out.push(Packet::Unsubscribe(Unsubscribe {
                packet_id: next_id(),
                filters: drop,
                properties: Props::default(),
            }));
        }
        if !add.is_empty() {
            out.push(Packet::Subscribe(Subscribe {
                packet_id: next_id(),
                filters: add,
                properties: Props::default(),
            }));
        }
        out
    };
    let first = follow(&mut had, feed.filters.borrow_and_update().clone());
    sender.send_all(first).await.map_err(|e| e.to_string())?;
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    feed.up.store(1, Relaxed);
    let mut packets = Vec::new();
    let mut publishes = Vec::new();
    let mut next_read = tokio::time::Instant::now();
    loop {
        packets.clear();
        let deliveries = async {
            tokio::time::sleep_until(next_read).await;
            receiver.recv_many(&mut packets).await
        };
        tokio::select! {
            open = deliveries => if !open {
                return Ok(());
            },
            changed = feed.filters.changed(), if feed.filters.has_changed().is_ok() => {
                if changed.is_err() {
                    // Nobody will change them again: these stay.
                    continue;
                }
                let out = follow(&mut had, feed.filters.borrow_and_update().clone());
                if sender.send_all(out).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            _ = ping.tick() => {
                if sender.send(Packet::PingReq).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            // Dropping the session ends it: it starts clean and expires at once.
            () = stopped(&mut feed.stop) => return Ok(()),
        }
        next_read = tokio::time::Instant::now() + READ_EVERY;
        let mut acks = Vec::new();
        publishes.clear();
        for p in packets.drain(..) {
            match p {
                Packet::Publish(p) => {
                    if p.qos == QoS::AtLeastOnce {
                        acks.push(Packet::PubAck(Ack::new(p.packet_id)));
                    }
                    publishes.push(p);
                }
                Packet::SubAck(a) => {
                    if let Some(bad) = a.reasons.iter().find(|r| r.is_error()) {
                        tracing::error!("{}: the broker refused a filter: {bad}", feed.name);
                    }
                }
                Packet::Disconnect(d) => {
                    tracing::info!("{}: the broker closed its session: {}", feed.name, d.reason);
                }
                _ => {}
            }
        }
        if !publishes.is_empty() {
            handler(&publishes, now_ms());
        }
        if sender.send_all(acks).await.is_err() {
            return Ok(());
        }
    }
}

/// The login of the gateway's own sessions at an upstream (`[history] username`, `password`).
pub type Login = (Option<String>, Option<String>);

/// Starts `feed` in front of `upstream`; it stops when `shutdown` says so. Returns the
/// session's client (to publish through it).
pub fn start_upstream(
    upstream: crate::config::Upstream,
    feed: Feed,
    login: Login,
    handler: Handler,
    shutdown: watch::Receiver<bool>,
) -> crate::client::Client {
    use kite_mqtt::session::ConnectOptions;
    let opts = ConnectOptions {
        version: Version::V5,
        client_id: feed.client_id.as_str().into(),
        clean_start: true,
        keep_alive: 30,
        username: login.0.map(Into::into),
        password: login.1.map(|p| bytes::Bytes::from(p.into_bytes())),
        ..ConnectOptions::default()
    };
    let name = upstream.name.clone();
    let (client, events) = crate::client::spawn(
        opts,
        crate::client::Target::Upstream(upstream),
        kite_mqtt::session::Backoff::default(),
    );
    tokio::spawn(run_upstream(
        client.clone(),
        events,
        name,
        feed,
        handler,
        shutdown,
    ));
    client
}

async fn run_upstream(
    client: crate::client::Client,
    mut events: tokio::sync::mpsc::Receiver<kite_mqtt::session::Event>,
    name: String,
    mut feed: Feed,
    mut handler: Handler,
    mut shutdown: watch::Receiver<bool>,
) {
    use kite_mqtt::session::Event;
    let mut had: Vec<Subscription> = Vec::new();
    let mut want = Some(feed.filters.borrow_and_update().clone());
    let mut batch = Vec::new();
    loop {
        if let Some(w) = want.take() {
            let (add, drop) = changes(&had, &w);
            had = w;
            if !drop.is_empty() && client.unsubscribe(drop).await.is_err() {
                return;
            }
            if !add.is_empty() && client.subscribe(add).await.is_err() {
                return;
            }
        }
        let ev = tokio::select! {
            ev = events.recv() => ev,
            changed = feed.filters.changed(), if feed.filters.has_changed().is_ok() => {
                if changed.is_ok() {
                    want = Some(feed.filters.borrow_and_update().clone());
                }
                continue;
            }
            _ = shutdown.wait_for(|down| *down) => None,
        };
        let Some(first) = ev else {
            client.disconnect().await;
            feed.up.store(0, Relaxed);
            return;
        };
        // Whatever else is there already makes one batch.
        let mut next = Some(first);
        while let Some(ev) = next.take() {
            match ev {
                Event::Message(p) => batch.push(p),
                Event::Connected { .. } => {
                    tracing::info!(upstream = %name, "{} connected", feed.name);
                    feed.up.store(1, Relaxed);
                }
                Event::Subscribed { reasons, .. } => {
                    if let Some(bad) = reasons.iter().find(|r| r.is_error()) {
                        tracing::error!(upstream = %name, "{}: the broker refused a filter: {bad}", feed.name);
                    }
                }
                Event::Disconnected(reason) => {
                    tracing::warn!(upstream = %name, "{} disconnected: {reason:?}", feed.name);
                    feed.up.store(0, Relaxed);
                }
                _ => {}
            }
            if batch.len() < 10_000 {
                next = events.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            handler(&batch, now_ms());
            batch.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_follow_what_is_wanted() {
        let had = vec![
            subscription("a/#", QoS::AtLeastOnce),
            subscription("b/+", QoS::AtMostOnce),
        ];
        let want = vec![
            subscription("b/+", QoS::AtLeastOnce),
            subscription("c", QoS::AtMostOnce),
        ];
        let (add, drop) = changes(&had, &want);
        let added: Vec<(&str, QoS)> = add.iter().map(|s| (&*s.filter, s.qos)).collect();
        assert_eq!(added, [("b/+", QoS::AtLeastOnce), ("c", QoS::AtMostOnce)]);
        assert_eq!(drop, [MqttStr::from("a/#")]);
    }
}
