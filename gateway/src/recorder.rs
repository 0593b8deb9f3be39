//! The history recorder: subscribes to `[history] record` and writes what arrives into the
//! history store ([`kite_data::Storage`]).
//!
//! With the embedded broker it is an in-process client (`Broker::connect_local`, client id
//! `kite-history`) with a persistent session: QoS 1 deliveries are acknowledged only after the
//! batch holding them is committed (fsynced with `sync = "always"`), so a `kill -9` loses
//! nothing acknowledged — the broker resends the rest. In front of an upstream broker it
//! keeps its own MQTT 5 session there (client id `kite-history-<hostname>`, persistent,
//! QoS 1, reconnecting with backoff), acknowledging the same way.
//!
//! A batch is whatever arrived while the previous one was being committed, so the commit rate
//! adapts to the load: one fsync per batch, not per message.

use std::sync::Arc;
use std::time::Duration;

use kite_broker::{Broker, ConnInfo};
use kite_data::{Record, Storage, Stored};
use kite_mqtt::codec::{
    Ack, Connect, Properties, Props, Publish, RetainHandling, Subscribe, Subscription,
};
use kite_mqtt::{Packet, QoS, Version};

use crate::metrics::Metrics;

/// The embedded broker's client id for the recorder.
pub const CLIENT_ID: &str = "kite-history";

/// What the recorder's session may hold at the broker while the store is slow (or while the
/// gateway restarts): beyond, the broker drops and counts.
const QUEUE: kite_broker::QueueBounds = kite_broker::QueueBounds {
    messages: 200_000,
    bytes: 256 << 20,
};

/// The shortest time between two commits (see `embedded_session`).
const COMMIT_EVERY: Duration = Duration::from_millis(10);

pub use kite_data::now_ms;

/// A delivery as it is recorded.
pub(crate) fn record(p: Publish, t: u64) -> Record {
    let mut properties = p.properties;
    // What is the broker's to the recorder, not the message's.
    if !properties.is_empty() {
        properties.subscription_identifiers.clear();
        properties.topic_alias = None;
    }
    let properties = if properties.is_empty() {
        Props::default()
    } else {
        properties
    };
    Record {
        topic: p.topic.to_string(),
        message: Stored {
            t,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
        },
    }
}

/// Where committed batches are told (the event streams listen).
pub(crate) type Recorded = tokio::sync::broadcast::Sender<Arc<Vec<Record>>>;

/// Commits `batch` on a blocking thread, then tells `recorded` (when anyone listens).
async fn commit(
    storage: &Arc<dyn Storage>,
    recorded: &Recorded,
    batch: Vec<Record>,
) -> Result<(), String> {
    let storage = storage.clone();
    let batch = tokio::task::spawn_blocking(move || storage.record(&batch).map(|()| batch))
        .await
        .map_err(|e| format!("the recording thread failed: {e}"))?
        .map_err(|e| e.to_string())?;
    if recorded.receiver_count() > 0 {
        let _ = recorded.send(Arc::new(batch));
    }
    Ok(())
}

/// The subscriptions: every filter at QoS 1, as published (RETAIN kept), retained messages
/// only on a new subscription (a resumed session has recorded them already).
fn subscriptions(filters: &[String]) -> Vec<Subscription> {
    filters
        .iter()
        .map(|f| Subscription {
            filter: f.as_str().into(),
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: true,
            retain_handling: RetainHandling::SendIfNew,
        })
        .collect()
}

/// Records from the embedded broker until it shuts down; `ready` is sent once the recorder's
/// subscriptions are in place (or dropped if they cannot be).
async fn run_embedded(
    broker: Broker,
    storage: Arc<dyn Storage>,
    recorded: Recorded,
    filters: Vec<String>,
    metrics: Arc<Metrics>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut delay = Duration::from_millis(500);
    let mut ready = Some(ready);
    loop {
        match embedded_session(&broker, &storage, &recorded, &filters, &metrics, &mut ready).await {
            Ok(()) => return,
            Err(e) => {
                metrics
                    .history_up
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                tracing::error!("history recorder: {e}; retrying in {delay:?}");
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
    storage: &Arc<dyn Storage>,
    recorded: &Recorded,
    filters: &[String],
    metrics: &Metrics,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), String> {
    let connect = Connect {
        version: Version::V5,
        client_id: CLIENT_ID.into(),
        bridge: false,
        clean_start: false,
        keep_alive: 0,
        username: None,
        password: None,
        will: None,
        properties: Properties {
            session_expiry_interval: Some(u32::MAX),
            ..Properties::default()
        }
        .into(),
    };
    let login = kite_policy::auth::Login {
        user: "history".into(),
        role: None,
    };
    let info = ConnInfo::internal(Some(login)).with_queue(QUEUE);
    let (sender, mut receiver) = broker.connect_local(connect, info).split();
    let keep_alive = match receiver.recv().await {
        // The broker's keep-alive holds in-process clients too: a PINGREQ when idle.
        Some(Packet::ConnAck(a)) if !a.reason.is_error() => {
            a.properties.server_keep_alive.unwrap_or(60).max(2)
        }
        Some(other) => return Err(format!("the broker refused the recorder: {other:?}")),
        None => return Ok(()),
    };
    let mut ping = tokio::time::interval(Duration::from_secs(u64::from(keep_alive) / 2));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sender
        .send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: subscriptions(filters),
            properties: Props::default(),
        }))
        .await
        .map_err(|e| e.to_string())?;
    // Deliveries of a resumed session may come before the SUBACK: they wait in the link.
    let mut early = Vec::new();
    loop {
        match receiver.recv().await {
            Some(Packet::SubAck(a)) => {
                if let Some(bad) = a.reasons.iter().find(|r| r.is_error()) {
                    return Err(format!("the broker refused a recorded filter: {bad}"));
                }
                break;
            }
            Some(p) => early.push(p),
            None => return Ok(()),
        }
    }
    receiver.put_back(early);
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    metrics
        .history_up
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let mut packets = Vec::new();
    let mut last_commit = tokio::time::Instant::now();
    loop {
        packets.clear();
        // At most one commit per COMMIT_EVERY: what arrives meanwhile waits in the link and
        // the session's queue and makes the next batch (a commit's fixed cost is most of
        // a small batch's).
        tokio::time::sleep_until(last_commit + COMMIT_EVERY).await;
        tokio::select! {
            open = receiver.recv_many(&mut packets) => if !open {
                return Ok(());
            },
            _ = ping.tick() => {
                if sender.send(Packet::PingReq).await.is_err() {
                    return Ok(());
                }
                continue;
            }
        }
        let t = now_ms();
        let mut batch = Vec::with_capacity(packets.len());
        let mut acks = Vec::new();
        for p in packets.drain(..) {
            match p {
                Packet::Publish(p) => {
                    if p.qos == QoS::AtLeastOnce {
                        acks.push(Packet::PubAck(Ack::new(p.packet_id)));
                    }
                    batch.push(record(p, t));
                }
                Packet::Disconnect(d) => {
                    tracing::info!(
                        "history recorder: the broker closed its session: {}",
                        d.reason
                    );
                }
                _ => {}
            }
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        last_commit = tokio::time::Instant::now();
        commit(storage, recorded, batch).await?;
        metrics
            .history_recorded
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        // Only now: what is acknowledged is on disk.
        if sender.send_all(acks).await.is_err() {
            return Ok(());
        }
    }
}

/// Starts the recorder on the embedded broker (`[history] record`); the receiver completes
/// once its subscriptions are in place, so that the broker's listeners can wait for it and no
/// early message goes unrecorded. `None` without `[history]`.
pub fn start_embedded(
    state: &crate::state::AppState,
    broker: &Broker,
) -> Option<tokio::sync::oneshot::Receiver<()>> {
    let (storage, history) = (state.history()?.clone(), state.config().history.clone()?);
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(run_embedded(
        broker.clone(),
        storage,
        state.recorded.clone(),
        history.record,
        state.metrics.clone(),
        tx,
    ));
    Some(rx)
}

/// The recorder's client id at an upstream broker: `kite-history-<hostname>`, so that two
/// gateways in front of one broker keep their own sessions.
pub fn upstream_client_id() -> String {
    crate::feed::upstream_client_id("kite-history")
}

/// Starts the recorder in front of the default upstream broker: an MQTT 5 session of its own
/// there (persistent, QoS 1, reconnecting with backoff), each QoS 1 message acknowledged
/// after the batch holding it is committed. It stops when the gateway shuts down.
pub fn start_upstream(state: &crate::state::AppState) {
    let (Some(storage), Some(history), Some(upstream)) = (
        state.history().cloned(),
        state.config().history.clone(),
        state.config().default_upstream().cloned(),
    ) else {
        return;
    };
    let shutdown = state.sessions().shutdown.subscribe();
    tokio::spawn(run_upstream(
        upstream,
        history,
        storage,
        state.recorded.clone(),
        state.metrics.clone(),
        shutdown,
    ));
}

async fn run_upstream(
    upstream: crate::config::Upstream,
    history: crate::config::History,
    storage: Arc<dyn Storage>,
    recorded: Recorded,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use kite_mqtt::session::{ConnectOptions, Event};
    let opts = ConnectOptions {
        version: Version::V5,
        client_id: upstream_client_id().into(),
        clean_start: false,
        keep_alive: 30,
        username: history.username.clone().map(Into::into),
        password: history
            .password
            .clone()
            .map(|p| bytes::Bytes::from(p.into_bytes())),
        properties: Properties {
            session_expiry_interval: Some(u32::MAX),
            ..Properties::default()
        },
        manual_ack: true,
        ..ConnectOptions::default()
    };
    let name = upstream.name.clone();
    let (client, mut events) = crate::client::spawn(
        opts,
        crate::client::Target::Upstream(upstream),
        kite_mqtt::session::Backoff::default(),
    );
    if let Err(e) = client.subscribe(subscriptions(&history.record)).await {
        tracing::error!(upstream = %name, "history recorder: cannot subscribe: {e}");
        return;
    }
    let mut batch = Vec::new();
    let mut acks = Vec::new();
    loop {
        let first = tokio::select! {
            ev = events.recv() => ev,
            _ = shutdown.wait_for(|down| *down) => None,
        };
        let Some(first) = first else {
            client.disconnect().await;
            metrics
                .history_up
                .store(0, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        let t = now_ms();
        let mut next = Some(first);
        while let Some(ev) = next.take() {
            match ev {
                Event::Message(p) => {
                    if p.qos == QoS::AtLeastOnce {
                        acks.push(p.packet_id);
                    }
                    batch.push(record(p, t));
                }
                Event::Connected { .. } => {
                    tracing::info!(upstream = %name, "history recorder connected");
                    metrics
                        .history_up
                        .store(1, std::sync::atomic::Ordering::Relaxed);
                }
                Event::Subscribed { reasons, .. } => {
                    if let Some(bad) = reasons.iter().find(|r| r.is_error()) {
                        tracing::error!(upstream = %name, "history recorder: the broker refused a recorded filter: {bad}");
                    }
                }
                Event::Disconnected(reason) => {
                    tracing::warn!(upstream = %name, "history recorder disconnected: {reason:?}");
                    metrics
                        .history_up
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                }
                _ => {}
            }
            if batch.len() < 10_000 {
                next = events.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        if let Err(e) = commit(&storage, &recorded, std::mem::take(&mut batch)).await {
            // Not acknowledged: the broker keeps them for the session and sends them again
            // on the next connection.
            tracing::error!(upstream = %name, "history recorder: {e}");
            acks.clear();
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        metrics
            .history_recorded
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        for id in acks.drain(..) {
            if client.acknowledge(id).await.is_err() {
                return;
            }
        }
    }
}

/// Starts the data store's upkeep (the history's retention, and the fsync of
/// `sync = "periodic"`) until the gateway shuts down.
pub fn start_upkeep(state: &crate::state::AppState) {
    let Some(storage) = state.store().cloned() else {
        return;
    };
    let shutdown = state.sessions().shutdown.subscribe();
    tokio::spawn(upkeep(storage, async move {
        let mut s = shutdown;
        let _ = s.wait_for(|down| *down).await;
    }));
}

/// Retention and the periodic fsync, once a second.
async fn upkeep(storage: Arc<dyn Storage>, stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => break,
        }
        let s = storage.clone();
        match tokio::task::spawn_blocking(move || s.prune(now_ms())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("history upkeep: {e}"),
            Err(e) => tracing::error!("history upkeep: {e}"),
        }
    }
    // A last fsync of what periodic sync left.
    let _ = tokio::task::spawn_blocking(move || storage.prune(now_ms())).await;
}
