//! The device monitor's sessions (`[[devices]]`): they feed the monitor
//! ([`crate::monitor`]) what the broker delivers and, with the embedded broker, its client
//! connections; tick it (a silent device goes stale within half a second of its bound); and
//! save the devices that changed once a second.
//!
//! With the embedded broker it is an in-process client (`kite-devices`); in front of an
//! upstream broker it keeps an MQTT 5 session there (`kite-devices-<hostname>`, reconnecting
//! with backoff). Its sessions are not persistent: what a device said while the gateway was
//! away is in the retained status messages delivered on subscribing (the RETAIN flag set:
//! [MQTT-3.3.1-9]), and live messages have it clear (Retain As Published off).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use kite_broker::{Broker, ConnInfo};
use kite_data::now_ms;
use kite_mqtt::codec::{Ack, Connect, Properties, Props, RetainHandling, Subscribe, Subscription};
use kite_mqtt::{Packet, QoS, Version};

use crate::monitor::Monitor;

/// The embedded broker's client id for the monitor.
pub const CLIENT_ID: &str = "kite-devices";

/// How often silence is checked.
const TICK: Duration = Duration::from_millis(500);

/// The shortest time between two reads of the broker's deliveries (see `embedded_session`).
const READ_EVERY: Duration = Duration::from_millis(10);

/// What the monitor's session may hold at the broker while it waits between reads: beyond,
/// the broker drops (QoS 0 signs of life) and counts.
const QUEUE: kite_broker::QueueBounds = kite_broker::QueueBounds {
    messages: 200_000,
    bytes: 64 << 20,
};

/// How often changed devices are stored.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The subscriptions: status topics at QoS 1 (a Will saying offline must not be dropped when
/// the monitor falls behind), the rest at QoS 0 (a sign of life more or less is no loss, and
/// costs the broker less); live messages with RETAIN clear, retained ones on every
/// (re)subscription.
fn subscriptions(filters: &[(String, bool)]) -> Vec<Subscription> {
    filters
        .iter()
        .map(|(f, word)| Subscription {
            filter: f.as_str().into(),
            qos: if *word {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        })
        .collect()
}

/// Ticks and saves until `stop` completes, then saves once more.
async fn upkeep(monitor: Arc<Monitor>, stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_save = tokio::time::Instant::now();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => break,
        }
        if last_save.elapsed() >= SAVE_EVERY {
            last_save = tokio::time::Instant::now();
            monitor.save().await;
        } else {
            monitor.engine().tick(now_ms());
        }
    }
    monitor.save().await;
}

/// Starts the monitor on the embedded broker; the receiver completes once its subscriptions
/// are in place and it watches client connections, so that the broker's listeners can wait
/// for it. `None` without a monitor.
pub fn start_embedded(
    state: &crate::state::AppState,
    broker: &Broker,
) -> Option<tokio::sync::oneshot::Receiver<()>> {
    let monitor = state.devices()?.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stopping = broker.clone();
    tokio::spawn(upkeep(monitor.clone(), async move {
        stopping.stopped().await;
    }));
    tokio::spawn(run_embedded(broker.clone(), monitor, tx));
    Some(rx)
}

async fn run_embedded(
    broker: Broker,
    monitor: Arc<Monitor>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut delay = Duration::from_millis(500);
    let mut ready = Some(ready);
    // Watching from before the first subscription, so that no connection is missed.
    let mut events = monitor
        .engine()
        .watches_clients()
        .then(|| broker.client_events());
    loop {
        match embedded_session(&broker, &monitor, &mut events, &mut ready).await {
            Ok(()) => return,
            Err(e) => {
                monitor.up.store(0, Relaxed);
                tracing::error!("device monitor: {e}; retrying in {delay:?}");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = broker.stopped() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// The next client event, or never without a watch.
async fn next_event(
    events: &mut Option<tokio::sync::broadcast::Receiver<kite_broker::events::ClientEvent>>,
) -> Result<kite_broker::events::ClientEvent, tokio::sync::broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One session with the embedded broker: `Ok` when the broker closed it (shutting down).
async fn embedded_session(
    broker: &Broker,
    monitor: &Monitor,
    events: &mut Option<tokio::sync::broadcast::Receiver<kite_broker::events::ClientEvent>>,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), String> {
    let connect = Connect {
        version: Version::V5,
        client_id: CLIENT_ID.into(),
        bridge: false,
        clean_start: true,
        keep_alive: 0,
        username: None,
        password: None,
        will: None,
        properties: Properties::default().into(),
    };
    let login = kite_policy::auth::Login {
        user: "devices".into(),
        role: None,
    };
    let (sender, mut receiver) = broker
        .connect_local(connect, ConnInfo::internal(Some(login)).with_queue(QUEUE))
        .split();
    let keep_alive = match receiver.recv().await {
        Some(Packet::ConnAck(a)) if !a.reason.is_error() => {
            a.properties.server_keep_alive.unwrap_or(60).max(2)
        }
        Some(other) => return Err(format!("the broker refused the monitor: {other:?}")),
        None => return Ok(()),
    };
    let mut ping = tokio::time::interval(Duration::from_secs(u64::from(keep_alive) / 2));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let filters = monitor.engine().filters();
    if !filters.is_empty() {
        sender
            .send(Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: subscriptions(&filters),
                properties: Props::default(),
            }))
            .await
            .map_err(|e| e.to_string())?;
    }
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    monitor.up.store(1, Relaxed);
    let mut packets = Vec::new();
    let mut next_read = tokio::time::Instant::now();
    loop {
        packets.clear();
        // Deliveries are taken at most every READ_EVERY: what arrives meanwhile waits in the
        // link and the session's queue and makes one batch (one wake-up for many messages).
        let deliveries = async {
            tokio::time::sleep_until(next_read).await;
            receiver.recv_many(&mut packets).await
        };
        tokio::select! {
            open = deliveries => if !open {
                return Ok(());
            },
            ev = next_event(events) => {
                let mut engine = monitor.engine();
                let mut ev = ev;
                loop {
                    match ev {
                        Ok(e) => engine.on_client(&e),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            monitor.missed_events.fetch_add(n, Relaxed);
                            tracing::warn!("device monitor: {n} client connections were missed (it fell behind)");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            *events = None;
                            break;
                        }
                    }
                    // Every event already there, under one lock.
                    match events.as_mut().map(tokio::sync::broadcast::Receiver::try_recv) {
                        Some(Ok(e)) => ev = Ok(e),
                        Some(Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n))) => {
                            ev = Err(tokio::sync::broadcast::error::RecvError::Lagged(n));
                        }
                        _ => break,
                    }
                }
                continue;
            }
            _ = ping.tick() => {
                if sender.send(Packet::PingReq).await.is_err() {
                    return Ok(());
                }
                continue;
            }
        }
        next_read = tokio::time::Instant::now() + READ_EVERY;
        let now = now_ms();
        let mut acks = Vec::new();
        {
            let mut engine = monitor.engine();
            for p in &packets {
                match p {
                    Packet::Publish(p) => {
                        if p.qos == QoS::AtLeastOnce {
                            acks.push(Packet::PubAck(Ack::new(p.packet_id)));
                        }
                        engine.on_message(&p.topic, &p.payload, p.retain, now);
                    }
                    Packet::SubAck(a) => {
                        if let Some(bad) = a.reasons.iter().find(|r| r.is_error()) {
                            tracing::error!("device monitor: the broker refused a filter: {bad}");
                        }
                    }
                    Packet::Disconnect(d) => {
                        tracing::info!(
                            "device monitor: the broker closed its session: {}",
                            d.reason
                        );
                    }
                    _ => {}
                }
            }
        }
        if sender.send_all(acks).await.is_err() {
            return Ok(());
        }
    }
}

/// The monitor's client id at an upstream broker: `kite-devices-<hostname>`.
pub fn upstream_client_id() -> String {
    crate::recorder::upstream_client_id().replacen("kite-history-", "kite-devices-", 1)
}

/// Starts the monitor in front of the default upstream broker. It stops when the gateway
/// shuts down.
pub fn start_upstream(state: &crate::state::AppState) {
    let (Some(monitor), Some(devices), Some(upstream)) = (
        state.devices().cloned(),
        state.config().devices.clone(),
        state.config().default_upstream().cloned(),
    ) else {
        return;
    };
    let shutdown = state.sessions().shutdown.subscribe();
    let stop = shutdown.clone();
    tokio::spawn(upkeep(monitor.clone(), async move {
        let mut s = stop;
        let _ = s.wait_for(|down| *down).await;
    }));
    tokio::spawn(run_upstream(upstream, devices, monitor, shutdown));
}

async fn run_upstream(
    upstream: crate::config::Upstream,
    devices: crate::config::Devices,
    monitor: Arc<Monitor>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use kite_mqtt::session::{ConnectOptions, Event};
    let opts = ConnectOptions {
        version: Version::V5,
        client_id: upstream_client_id().into(),
        clean_start: true,
        keep_alive: 30,
        username: devices.username.clone().map(Into::into),
        password: devices
            .password
            .clone()
            .map(|p| bytes::Bytes::from(p.into_bytes())),
        ..ConnectOptions::default()
    };
    let name = upstream.name.clone();
    let (client, mut events) = crate::client::spawn(
        opts,
        crate::client::Target::Upstream(upstream),
        kite_mqtt::session::Backoff::default(),
    );
    let filters = monitor.engine().filters();
    if let Err(e) = client.subscribe(subscriptions(&filters)).await {
        tracing::error!(upstream = %name, "device monitor: cannot subscribe: {e}");
        return;
    }
    loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = shutdown.wait_for(|down| *down) => None,
        };
        let Some(ev) = ev else {
            client.disconnect().await;
            monitor.up.store(0, Relaxed);
            return;
        };
        match ev {
            Event::Message(p) => {
                monitor
                    .engine()
                    .on_message(&p.topic, &p.payload, p.retain, now_ms());
            }
            Event::Connected { .. } => {
                tracing::info!(upstream = %name, "device monitor connected");
                monitor.up.store(1, Relaxed);
            }
            Event::Subscribed { reasons, .. } => {
                if let Some(bad) = reasons.iter().find(|r| r.is_error()) {
                    tracing::error!(upstream = %name, "device monitor: the broker refused a filter: {bad}");
                }
            }
            Event::Disconnected(reason) => {
                tracing::warn!(upstream = %name, "device monitor disconnected: {reason:?}");
                monitor.up.store(0, Relaxed);
            }
            _ => {}
        }
    }
}
