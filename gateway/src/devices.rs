//! The device monitor's sessions (`[[devices]]`): a feed ([`crate::feed`]) hands the monitor
//! ([`crate::monitor`]) what the broker delivers and, with the embedded broker, a task hands
//! it the broker's client connections (`Broker::client_events`); the upkeep ticks it (a
//! silent device goes stale within half a second of its bound) and saves the devices that
//! changed once a second.
//!
//! With the embedded broker the feed is an in-process client (`kite-devices`); in front of
//! an upstream broker an MQTT 5 session there (`kite-devices-<hostname>`). Status topics are
//! subscribed at QoS 1 (a Will saying offline must not be dropped when the monitor falls
//! behind), the rest at QoS 0 (a sign of life more or less is no loss, and costs the broker
//! less).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use kite_broker::Broker;
use kite_data::now_ms;
use kite_mqtt::QoS;
use kite_mqtt::codec::Subscription;

use crate::feed::{Feed, Handler};
use crate::monitor::Monitor;

/// The embedded broker's client id for the monitor.
pub const CLIENT_ID: &str = "kite-devices";

/// How often silence is checked.
const TICK: Duration = Duration::from_millis(500);

/// How often changed devices are stored.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The monitor's subscriptions (see the module docs).
fn subscriptions(monitor: &Monitor) -> Vec<Subscription> {
    monitor
        .engine()
        .filters()
        .iter()
        .map(|(f, word)| {
            let qos = if *word {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            crate::feed::subscription(f, qos)
        })
        .collect()
}

/// The feed's settings and its handler: each message to the engine.
fn feed(monitor: &Arc<Monitor>, client_id: String) -> (Feed, Handler) {
    // The rules do not change while the gateway runs: the sender may go.
    let (_, filters) = tokio::sync::watch::channel(subscriptions(monitor));
    let feed = Feed {
        name: "device monitor",
        client_id,
        filters,
        up: monitor.up.clone(),
        stop: None,
    };
    let m = monitor.clone();
    let handler: Handler = Box::new(move |batch, now| {
        let mut engine = m.engine();
        for p in batch {
            engine.on_message(&p.topic, &p.payload, p.retain, now);
        }
    });
    (feed, handler)
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
/// are sent and it watches client connections, so that the broker's listeners can wait for
/// it. `None` without a monitor.
pub fn start_embedded(
    state: &crate::state::AppState,
    broker: &Broker,
) -> Option<tokio::sync::oneshot::Receiver<()>> {
    let monitor = state.devices()?.clone();
    // Watching from before the first subscription, so that no connection is missed.
    if monitor.engine().watches_clients() {
        tokio::spawn(client_events(broker.client_events(), monitor.clone()));
    }
    let stopping = broker.clone();
    tokio::spawn(upkeep(monitor.clone(), async move {
        stopping.stopped().await;
    }));
    let (feed, handler) = feed(&monitor, CLIENT_ID.into());
    Some(crate::feed::start_embedded(broker.clone(), feed, handler))
}

/// Hands the broker's client connections to the monitor, every one already there under one
/// lock.
async fn client_events(
    mut events: tokio::sync::broadcast::Receiver<kite_broker::events::ClientEvent>,
    monitor: Arc<Monitor>,
) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    loop {
        let mut next = events.recv().await;
        let mut engine = monitor.engine();
        loop {
            match next {
                Ok(e) => engine.on_client(&e),
                Err(RecvError::Lagged(n)) => {
                    monitor.missed_events.fetch_add(n, Relaxed);
                    tracing::warn!(
                        "device monitor: {n} client connections were missed (it fell behind)"
                    );
                }
                Err(RecvError::Closed) => return,
            }
            next = match events.try_recv() {
                Ok(e) => Ok(e),
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
            };
        }
    }
}

/// The monitor's client id at an upstream broker: `kite-devices-<hostname>`.
pub fn upstream_client_id() -> String {
    crate::feed::upstream_client_id("kite-devices")
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
    let mut stop = shutdown.clone();
    tokio::spawn(upkeep(monitor.clone(), async move {
        let _ = stop.wait_for(|down| *down).await;
    }));
    let (feed, handler) = feed(&monitor, upstream_client_id());
    crate::feed::start_upstream(
        upstream,
        feed,
        (devices.username, devices.password),
        handler,
        shutdown,
    );
}
