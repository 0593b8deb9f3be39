//! The embedded MQTT broker: what `kite serve` runs when no upstream is configured.
//!
//! Devices reach it over TCP (and TLS): the gateway accepts their connections and hands each
//! to [`Broker::serve_connection`]. Browser sessions on `/mqtt` reach it in-process, as typed
//! packets ([`Broker::connect_local`], [`LocalClient`]), after the gateway's CONNECT-first
//! checks, authentication and limits — as will the bridge, the history recorder and the alarm
//! engine.
//!
//! This crate knows nothing of HTTP, WebSocket or certificate files: any `AsyncRead +
//! AsyncWrite` stream is a connection (TLS ones arrive already accepted). Logins and topic
//! rules come from `kite-policy`; [`logins::Logins`] runs the password checks, for the
//! gateway's sessions too.
//!
//! Shape: [`Broker`] is shared state behind an `Arc` — the session table, the subscription
//! trie, the retained messages, statistics. Each connection is one task (`conn`) that owns
//! its socket. A message is routed by the publisher's task: it takes the subscription trie's
//! *read* lock, collects the matching sessions, releases the lock, then appends a delivery to
//! each session's bounded queue and wakes its task. So routing never serialises clients on a
//! single lock, and a slow subscriber only fills its own queue (then its deliveries are
//! dropped and counted) — it never stalls the publisher or the other subscribers.
//!
//! Lock order: the session table, then one session's state. The subscription trie and the
//! retained messages are never held together with a session's state.

pub mod bridge;
mod conn;
pub mod events;
mod local;
pub mod logins;
mod out;
pub use conn::refusal;
mod retain;
mod session;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kite_mqtt::codec::{Properties, Props, Publish};
use kite_mqtt::topic::SubscriptionTree;
use kite_mqtt::{MqttStr, QoS};
use tokio::io::{AsyncRead, AsyncWrite};

pub use conn::ConnInfo;
pub use local::{Closed, LocalClient, LocalReceiver, LocalSender};
use retain::Retained;
pub use session::QueueBounds;
use session::{Delivery, Persist, Slot};
use store::{Op, Store, StoreError};

/// The broker's settings (`[broker]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Largest packet accepted from a client, in bytes (announced as Maximum Packet Size).
    pub max_packet_size: u32,
    /// User Properties one packet from a client may carry; beyond, the connection is closed
    /// (MQTT 5: DISCONNECT 0x97).
    pub max_user_properties: usize,
    /// QoS 2 messages a client may have unacknowledged towards the broker (Receive Maximum).
    pub receive_maximum: u16,
    /// QoS 1/2 messages the broker has unacknowledged towards one client at most (also capped
    /// by the client's own Receive Maximum).
    pub max_inflight: u16,
    /// Topic aliases a client may use towards the broker (MQTT 5).
    pub topic_alias_maximum: u16,
    /// Longest keep-alive an MQTT 5 client may have, in seconds: a longer one (or 0, none) is
    /// replaced by this, told to the client as Server Keep Alive. 0: no cap. MQTT 3.1.1
    /// clients cannot be told, and keep theirs.
    pub max_keep_alive: u16,
    /// Longest session expiry a client may ask for, in seconds.
    pub max_session_expiry: u32,
    /// Messages queued per session while it has no connection at most; beyond, new
    /// deliveries to it are dropped and counted.
    pub max_queued_messages: usize,
    /// Messages queued per connected session beyond those in flight at most (what was queued
    /// while it was offline not counted): a client this far behind is not keeping up, and
    /// holding more only makes what it sees older. Beyond, new deliveries are dropped and
    /// counted.
    pub max_queued_messages_online: usize,
    /// Bytes (topic + payload) queued per session at most.
    pub max_queued_bytes: usize,
    /// Levels a topic name or filter may have (a shared subscription's filter counted without
    /// `$share/<group>/`): beyond, a SUBSCRIBE gets 0x8F for that filter, a PUBLISH 0x90.
    pub max_topic_levels: usize,
    /// Bytes a topic name or filter may have, the same way.
    pub max_topic_length: usize,
    /// Subscriptions one session may hold: beyond, 0x97 Quota exceeded for the new filter.
    pub max_subscriptions: usize,
    /// Topics that may hold a retained message: a retained PUBLISH to a new topic beyond is
    /// refused (0x97), not routed.
    pub max_retained_messages: usize,
    /// Bytes (topic + payload) of all retained messages: a retained PUBLISH that would grow
    /// them beyond is refused the same way.
    pub max_retained_bytes: usize,
    /// Time a new connection has to send its CONNECT.
    pub connect_timeout: Duration,
    /// Device connections open at once at most (per listener); more wait before accept.
    pub max_connections: usize,
    /// How often `$SYS/broker/...` statistics are published; `None`: never.
    pub sys_interval: Option<Duration>,
    /// What an MQTT 3.1.1 PUBLISH the role's rules refuse gets (`[acl] v311_denied_publish`).
    pub v311_denied_publish: kite_policy::DeniedPublish,
}

impl BrokerConfig {
    /// Why `topic` (a name, or a filter with any `$share/<group>/` removed) is beyond
    /// `max_topic_length` or `max_topic_levels`; `None` when it is within both.
    pub(crate) fn topic_beyond_limits(&self, topic: &str) -> Option<String> {
        if topic.len() > self.max_topic_length {
            return Some(format!(
                "the topic is {} bytes long; this broker takes {} at most ([broker] max_topic_length)",
                topic.len(),
                self.max_topic_length
            ));
        }
        let levels = topic.bytes().filter(|&b| b == b'/').count() + 1;
        (levels > self.max_topic_levels).then(|| {
            format!(
                "the topic has {levels} levels; this broker takes {} at most ([broker] max_topic_levels)",
                self.max_topic_levels
            )
        })
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 16 * 1024 * 1024,
            max_user_properties: 64,
            receive_maximum: 1024,
            max_inflight: 256,
            topic_alias_maximum: 64,
            // A dead connection is noticed (and its Will sent) within 90 s.
            max_keep_alive: 60,
            max_session_expiry: u32::MAX,
            max_queued_messages: 10_000,
            max_queued_messages_online: 1_000,
            max_queued_bytes: 64 * 1024 * 1024,
            // As EMQX's: real topic trees are far shallower, and each level costs a node.
            max_topic_levels: 128,
            max_topic_length: 4096,
            max_subscriptions: 1_000,
            max_retained_messages: 100_000,
            max_retained_bytes: 128 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            sys_interval: Some(Duration::from_secs(10)),
            v311_denied_publish: kite_policy::DeniedPublish::Drop,
        }
    }
}

/// A message as the broker holds it: one allocation shared by every delivery.
#[derive(Debug)]
pub(crate) struct Message {
    pub topic: MqttStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Only what passes through to subscribers: payload format, message expiry, content type,
    /// response topic, correlation data, user properties.
    pub properties: Props,
    /// When the broker received it (for the message expiry interval).
    pub received: Instant,
    /// The publishing session's client id (for No Local); `None` for the broker's own.
    pub publisher: Option<Arc<str>>,
}

impl Message {
    /// Keeps what a subscriber may see of `p`: topic aliases and subscription identifiers
    /// belong to one connection and are not carried forward [MQTT-3.3.2-7].
    pub(crate) fn from_publish(p: Publish, publisher: Option<Arc<str>>, now: Instant) -> Self {
        let properties = if p.properties.is_empty() {
            Props::default()
        } else {
            let src = &*p.properties;
            Properties {
                payload_format_indicator: src.payload_format_indicator,
                message_expiry_interval: src.message_expiry_interval,
                content_type: src.content_type.clone(),
                response_topic: src.response_topic.clone(),
                correlation_data: src.correlation_data.clone(),
                user_properties: src.user_properties.clone(),
                ..Properties::default()
            }
            .into()
        };
        Self {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
            received: now,
            publisher,
        }
    }

    /// Seconds of life left (MQTT 5 message expiry); `None` if it never expires.
    pub(crate) fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let total = self.properties.message_expiry_interval?;
        let elapsed = now.saturating_duration_since(self.received).as_secs();
        Some(u32::try_from(u64::from(total).saturating_sub(elapsed)).unwrap_or(0))
    }

    /// Whether its message expiry interval has passed [MQTT-3.3.2-5].
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.remaining_expiry(now) == Some(0)
    }

    /// What it costs in a queue: topic and payload bytes.
    pub(crate) fn size(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}

/// Which subscription: the session (by its slot's unique id) and, for a shared subscription,
/// its full `$share/<group>/<filter>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SubKey {
    slot: u64,
    share: Option<Arc<str>>,
}

#[derive(Debug, Clone)]
struct SubEntry {
    slot: Arc<Slot>,
    qos: QoS,
    no_local: bool,
    retain_as_published: bool,
    id: Option<u32>,
}

/// Counters, also published under `$SYS/broker/` and at `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients connected now.
    pub clients_connected: AtomicU64,
    /// PUBLISH packets received from clients.
    pub messages_received: AtomicU64,
    /// PUBLISH packets sent to clients.
    pub messages_sent: AtomicU64,
    /// Bytes read from clients.
    pub bytes_received: AtomicU64,
    /// Bytes written to clients.
    pub bytes_sent: AtomicU64,
    /// Deliveries dropped: the session's queue was full, or a QoS 0 message for an offline
    /// session, or larger than the client's Maximum Packet Size.
    pub messages_dropped: AtomicU64,
    /// Deliveries dropped because their message expiry interval passed.
    pub messages_expired: AtomicU64,
    /// PUBLISH packets refused by the role's topic rules.
    pub publishes_denied: AtomicU64,
    /// Subscriptions refused by the role's topic rules.
    pub subscriptions_denied: AtomicU64,
    /// Deliveries not sent because the role may not read their topic (`deny_subscribe`).
    pub deliveries_denied: AtomicU64,
    /// Topic names and filters refused for `max_topic_levels` or `max_topic_length`.
    pub topics_refused: AtomicU64,
    /// Subscriptions refused for `max_subscriptions`.
    pub subscriptions_refused: AtomicU64,
    /// Retained PUBLISHes refused for `max_retained_messages` or `max_retained_bytes`.
    pub retained_refused: AtomicU64,
    /// Connections closed for a packet with more than `max_user_properties`.
    pub user_properties_refused: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

struct Inner {
    config: BrokerConfig,
    auth: Arc<kite_policy::auth::Auth>,
    logins: logins::Logins,
    sessions: Mutex<HashMap<Arc<str>, Arc<Slot>>>,
    subs: RwLock<SubscriptionTree<SubKey, SubEntry>>,
    retained: RwLock<Retained>,
    /// Next member to serve, per shared subscription.
    share_turns: Mutex<HashMap<Arc<str>, usize>>,
    next_id: AtomicU64,
    stats: Stats,
    started: Instant,
    shutdown: tokio::sync::watch::Sender<bool>,
    store: Option<Store>,
    /// Next key in the store's queue table.
    next_seq: AtomicU64,
    /// Sessions read from the store, whose expiry timers start with [`Broker::start`]:
    /// (slot, seconds left).
    loaded_expiries: Mutex<Vec<(Arc<Slot>, u64)>>,
    /// Device connections open at most (`max_connections`).
    permits: Arc<tokio::sync::Semaphore>,
    /// The bridges started on this broker.
    bridges: Mutex<Vec<bridge::Registered>>,
    /// Client connections opened and closed ([`Broker::client_events`]).
    events: tokio::sync::broadcast::Sender<events::ClientEvent>,
}

/// The embedded broker. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Resolves once the broker is shutting down.
pub(crate) async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before any other await.
    let _ = rx.wait_for(|s| *s).await.is_ok();
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// What `route` did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Routed {
    /// Sessions (or share groups) the message matched.
    pub matched: usize,
    /// The store ticket to wait for before acknowledging it (0: nothing stored).
    pub ticket: u64,
}

/// A CONNECT refused because its client id holds a session another login made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionOfAnotherUser;

/// A retained message refused because the retained store is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the broker holds as many retained messages as it may ([broker] max_retained_messages = {messages}, max_retained_bytes = {bytes}): delete some (an empty retained message), or raise the limits"
)]
pub struct RetainedFull {
    messages: usize,
    bytes: usize,
}

/// Why [`Broker::publish_external`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExternalRefusal {
    /// The topic is beyond `max_topic_levels` or `max_topic_length` (the reason).
    #[error("{0}")]
    Topic(String),
    /// The retained store is full.
    #[error(transparent)]
    RetainedFull(#[from] RetainedFull),
}

impl Broker {
    /// A broker with these settings, in memory only; `auth` admits device logins (the
    /// gateway's users), their checks run by `logins` (shared with the gateway's sessions).
    pub fn new(config: BrokerConfig, auth: kite_policy::Auth, logins: logins::Logins) -> Self {
        Self::with_store(config, auth, logins, None)
    }

    fn with_store(
        config: BrokerConfig,
        auth: kite_policy::Auth,
        logins: logins::Logins,
        store: Option<Store>,
    ) -> Self {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
                config,
                auth: Arc::new(auth),
                logins,
                sessions: Mutex::new(HashMap::new()),
                subs: RwLock::new(SubscriptionTree::new()),
                retained: RwLock::new(Retained::default()),
                share_turns: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                stats: Stats::default(),
                started: Instant::now(),
                shutdown,
                store,
                next_seq: AtomicU64::new(1),
                loaded_expiries: Mutex::new(Vec::new()),
                bridges: Mutex::new(Vec::new()),
                events: tokio::sync::broadcast::Sender::new(events::CAPACITY),
            }),
        }
    }

    /// A broker that keeps retained messages, persistent sessions and their queued messages
    /// in `dir` (see [`store`]), restored from it now.
    pub fn open(
        config: BrokerConfig,
        auth: kite_policy::Auth,
        logins: logins::Logins,
        dir: &std::path::Path,
        sync: store::Sync,
    ) -> Result<Self, StoreError> {
        let (store, loaded) = Store::open(dir, sync)?;
        let broker = Self::with_store(config, auth, logins, Some(store));
        broker.restore(loaded);
        Ok(broker)
    }

    fn restore(&self, loaded: store::Loaded) {
        let now = Instant::now();
        let unix = store::unix_now().as_secs();
        {
            let mut retained = write(&self.inner.retained);
            for m in loaded.retained {
                if !m.expired(now) {
                    let topic = m.topic.clone();
                    retained.set(&topic, Some(Arc::new(m)));
                }
            }
        }
        self.inner
            .next_seq
            .store(loaded.max_seq + 1, Ordering::Relaxed);
        let (mut n_sessions, mut n_queued) = (0, 0);
        for s in loaded.sessions {
            let r = &s.record;
            // A session that was connected when the broker stopped counts as disconnected now.
            let since = if r.disconnected_at == 0 {
                0
            } else {
                unix.saturating_sub(r.disconnected_at)
            };
            let left = if r.expiry == u32::MAX {
                None
            } else {
                Some(u64::from(r.expiry).saturating_sub(since))
            };
            let client_id: Arc<str> = s.client_id.as_str().into();
            if left == Some(0) {
                if let Some(st) = &self.inner.store {
                    st.submit([Op::DelSession(s.client_id.clone())]);
                }
                continue;
            }
            let slot = Arc::new(Slot::new(self.next_id(), client_id.clone(), 0, r.expiry));
            slot.set_online(false);
            {
                let mut st = lock(&slot.state);
                st.owner = None;
                st.user = r.user.as_deref().map(Arc::from);
                st.persisted = true;
                for (filter, e) in &r.subscriptions {
                    st.subscriptions.insert(filter.as_str().into(), *e);
                }
                for q in s.queue {
                    let d = Delivery {
                        msg: Arc::new(q.msg),
                        qos: q.qos,
                        retain: q.retain,
                        ids: q.ids,
                        seq: q.seq,
                        live: false,
                    };
                    n_queued += 1;
                    // A QoS 2 delivery that was sent goes back in flight under its packet id
                    // (resent on reconnect as PUBLISH with DUP, or PUBREL).
                    match q.sent {
                        Some((packet_id, step)) => st.inflight.push_back(session::Inflight {
                            packet_id,
                            delivery: d,
                            awaiting: match step {
                                store::Sent::AwaitingRec => session::Awaiting::Rec,
                                store::Sent::AwaitingComp => session::Awaiting::Comp,
                            },
                        }),
                        None => {
                            st.queued_bytes += d.msg.size();
                            st.queue.push_back(d);
                        }
                    }
                }
                st.incoming_qos2.extend(s.qos2_in);
            }
            for (filter, e) in &r.subscriptions {
                self.subscribe(&slot, filter, *e);
            }
            if let Some(left) = left {
                lock(&self.inner.loaded_expiries).push((slot.clone(), left));
            }
            lock(&self.inner.sessions).insert(client_id, slot);
            n_sessions += 1;
        }
        if let Some(st) = &self.inner.store {
            tracing::info!(
                "broker data {}: {} retained messages, {n_sessions} persistent sessions, {n_queued} queued messages",
                st.path().display(),
                self.retained_count(),
            );
        }
    }

    /// Starts the expiry timers of the sessions read from the store (needs the runtime).
    pub fn start_timers(&self) {
        for (slot, left) in std::mem::take(&mut *lock(&self.inner.loaded_expiries)) {
            let broker = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(left)).await;
                broker.end_session(&slot, 0);
            });
        }
    }

    /// Writes to the store, if there is one; returns the ticket to wait for (0: none).
    pub(crate) fn persist(&self, ops: impl IntoIterator<Item = Op>) -> u64 {
        match &self.inner.store {
            Some(s) => s.submit(ops),
            None => 0,
        }
    }

    /// A store section (see `Store::section`), when there is a store: what is submitted
    /// while it lives commits in one transaction. Taken before any other lock, never nested.
    pub(crate) fn store_section(&self) -> Option<std::sync::RwLockReadGuard<'_, ()>> {
        self.inner.store.as_ref().map(Store::section)
    }

    /// The store's committed ticket, when there is a store.
    pub(crate) fn committed(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.store.as_ref().map(Store::committed)
    }

    /// Writes `slot`'s session record if it is persistent (expiry > 0), or deletes the record
    /// of a session that no longer is. Returns the ticket (0: nothing written).
    pub(crate) fn persist_session(&self, slot: &Slot, disconnected_at: u64) -> u64 {
        if self.inner.store.is_none() {
            return 0;
        }
        let op = {
            let mut st = lock(&slot.state);
            if st.ended {
                return 0;
            }
            if st.expiry > 0 {
                st.persisted = true;
                Op::PutSession(
                    slot.client_id.to_string(),
                    store::session_record(
                        st.expiry,
                        st.user.as_deref(),
                        disconnected_at,
                        &st.subscriptions,
                    ),
                )
            } else if st.persisted {
                st.persisted = false;
                Op::DelSession(slot.client_id.to_string())
            } else {
                return 0;
            }
        };
        self.persist([op])
    }

    /// Deletes a delivery's store record once it is acknowledged or dropped.
    pub(crate) fn forget_delivery(&self, client_id: &str, seq: u64) {
        if seq != 0 {
            self.persist([Op::DelQueued(client_id.to_owned(), seq)]);
        }
    }

    /// Stops the store's writer after what was submitted.
    pub fn close_store(&self) {
        if let Some(s) = &self.inner.store {
            s.close();
        }
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// The broker's counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Sessions the broker holds (connected or not).
    pub fn session_count(&self) -> usize {
        lock(&self.inner.sessions).len()
    }

    /// Topics with a retained message.
    pub fn retained_count(&self) -> usize {
        read(&self.inner.retained).len()
    }

    /// Subscriptions across all sessions.
    pub fn subscription_count(&self) -> usize {
        read(&self.inner.subs).len()
    }

    /// Tells every connection to close (MQTT 5: DISCONNECT 0x8B Server shutting down) and
    /// stops the listeners.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    pub(crate) fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn auth(&self) -> &Arc<kite_policy::auth::Auth> {
        &self.inner.auth
    }

    /// Where login checks run.
    pub fn logins(&self) -> &logins::Logins {
        &self.inner.logins
    }

    /// The bridges started on this broker ([`Broker::start_bridge`]), by name, in order.
    pub fn bridges(&self) -> Vec<(String, Arc<bridge::BridgeState>)> {
        lock(&self.inner.bridges)
            .iter()
            .map(|r| (r.name.clone(), r.state.clone()))
            .collect()
    }

    /// Each bridge's state now, with what waits here for its remote (its local session's queue
    /// and the messages sent to the remote and not yet acknowledged by it).
    pub fn bridge_statuses(&self) -> Vec<bridge::BridgeStatus> {
        let registered = lock(&self.inner.bridges).clone();
        registered
            .into_iter()
            .map(|r| {
                let slot = lock(&self.inner.sessions).get(r.local_id.as_str()).cloned();
                let (queued, full) = slot.map_or((0, 0), |s| {
                    let st = lock(&s.state);
                    (st.queue.len() + st.inflight.len(), st.dropped)
                });
                bridge::BridgeStatus {
                    up: r.state.up(),
                    queued,
                    messages_out: r.state.messages_out(),
                    messages_in: r.state.messages_in(),
                    reconnects: r.state.reconnects(),
                    // Its own (not forwardable) and its queue's (full).
                    dropped: r.state.dropped() + full,
                    last_error: r.state.last_error(),
                    notification_topic: r.notification_topic,
                    name: r.name,
                }
            })
            .collect()
    }

    /// The device connection permits (`max_connections`): whoever accepts a connection for
    /// [`Broker::serve_connection`] takes one first and holds it while the connection lives.
    pub fn permits(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.permits
    }

    /// Client connections opened and closed from now on (not the in-process clients'). A
    /// receiver that falls more than [`events::CAPACITY`] events behind misses the oldest
    /// and is told how many.
    pub fn client_events(&self) -> tokio::sync::broadcast::Receiver<events::ClientEvent> {
        self.inner.events.subscribe()
    }

    /// Reports `event` to whoever watches (nobody: dropped).
    pub(crate) fn report(&self, event: events::ClientEvent) {
        if self.inner.events.receiver_count() > 0 {
            let _ = self.inner.events.send(event);
        }
    }

    /// After [`Broker::shutdown`]: waits, at most `timeout`, until every device connection
    /// has ended (all [`Broker::permits`] back), so that nothing they submit comes after the
    /// store is closed. Whether they all ended.
    pub async fn connections_ended(&self, timeout: std::time::Duration) -> bool {
        let all = u32::try_from(self.inner.config.max_connections).unwrap_or(u32::MAX);
        matches!(
            tokio::time::timeout(timeout, self.inner.permits.acquire_many(all)).await,
            Ok(Ok(_))
        )
    }

    /// Completes when [`Broker::shutdown`] was called.
    pub async fn stopped(&self) {
        stopped(&mut self.shutdown_signal()).await;
    }

    /// Serves one client connection (TCP, TLS: any byte stream) until it ends. The caller
    /// holds one of [`Broker::permits`] for it.
    pub async fn serve_connection<S>(&self, stream: S, info: ConnInfo)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        conn::serve(self.clone(), stream, info).await;
    }

    /// Publishes `$SYS/broker/...` statistics (retained) every `sys_interval` until shutdown.
    pub async fn publish_sys(&self) {
        let Some(every) = self.inner.config.sys_interval else {
            return;
        };
        let mut shutdown = self.shutdown_signal();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => self.publish_sys_once(),
                () = stopped(&mut shutdown) => return,
            }
        }
    }

    fn publish_sys_once(&self) {
        let s = &self.inner.stats;
        let values: [(&str, String); 9] = [
            (
                "$SYS/broker/version",
                format!("kite {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "$SYS/broker/uptime",
                format!("{} seconds", self.inner.started.elapsed().as_secs()),
            ),
            (
                "$SYS/broker/clients/connected",
                Stats::get(&s.clients_connected).to_string(),
            ),
            (
                "$SYS/broker/messages/received",
                Stats::get(&s.messages_received).to_string(),
            ),
            (
                "$SYS/broker/messages/sent",
                Stats::get(&s.messages_sent).to_string(),
            ),
            (
                "$SYS/broker/messages/dropped",
                Stats::get(&s.messages_dropped).to_string(),
            ),
            (
                "$SYS/broker/bytes/received",
                Stats::get(&s.bytes_received).to_string(),
            ),
            (
                "$SYS/broker/bytes/sent",
                Stats::get(&s.bytes_sent).to_string(),
            ),
            (
                "$SYS/broker/retained messages/count",
                self.retained_count().to_string(),
            ),
        ];
        let now = Instant::now();
        for (topic, value) in values {
            let msg = Arc::new(Message {
                topic: topic.into(),
                payload: Bytes::from(value),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Props::default(),
                received: now,
                publisher: None,
            });
            // Statistics that do not fit in the retained store are not routed either.
            let _ = self.publish(msg, now);
        }
    }

    /// Stores a retained message (or deletes one: empty payload [MQTT-3.3.1-6/7]) and routes
    /// the message to the subscribers.
    ///
    /// A retained message that would take the retained store beyond `max_retained_messages`
    /// or `max_retained_bytes` is refused whole: neither stored nor routed.
    pub(crate) fn publish(&self, msg: Arc<Message>, now: Instant) -> Result<Routed, RetainedFull> {
        let mut retain_ticket = 0;
        if msg.retain {
            let keep = (!msg.payload.is_empty()).then(|| msg.clone());
            let op = match &keep {
                Some(m) => Op::PutRetained(
                    m.topic.to_string(),
                    store::encode_message(m, m.qos, true, &[], None, now),
                ),
                None => Op::DelRetained(msg.topic.to_string()),
            };
            // Under the lock, so that the store sees retained updates in the order they apply.
            // The broker's own $SYS statistics are not worth a disk write every interval.
            let mut retained = write(&self.inner.retained);
            let grows = keep.is_some();
            let old = retained.set(&msg.topic, keep);
            let config = &self.inner.config;
            if grows
                && (retained.len() > config.max_retained_messages
                    || (retained.bytes() > config.max_retained_bytes
                        && old.as_ref().is_none_or(|o| o.size() < msg.size())))
            {
                retained.set(&msg.topic, old);
                Stats::add(&self.inner.stats.retained_refused, 1);
                return Err(RetainedFull {
                    messages: config.max_retained_messages,
                    bytes: config.max_retained_bytes,
                });
            }
            let own_statistics = msg.publisher.is_none() && msg.topic.starts_with("$SYS/");
            if !own_statistics {
                retain_ticket = self.persist([op]);
            }
        }
        let mut routed = self.route(&msg, now);
        routed.ticket = routed.ticket.max(retain_ticket);
        Ok(routed)
    }

    /// Appends a delivery of `msg` to every matching session's queue: one per session at the
    /// highest matching QoS with every matching subscription identifier [MQTT-3.3.4-2/4/5],
    /// and one per shared subscription to the next member in turn.
    fn route(&self, msg: &Arc<Message>, now: Instant) -> Routed {
        struct Target {
            slot: Arc<Slot>,
            qos: QoS,
            retain: bool,
            ids: Vec<u32>,
        }
        let mut targets: Vec<Target> = Vec::new();
        let mut by_slot: HashMap<u64, usize> = HashMap::new();
        let mut shares: Vec<(Arc<str>, Vec<&SubEntry>)> = Vec::new();
        let publisher = msg.publisher.as_deref();
        let subs = read(&self.inner.subs);
        subs.for_each_match(&msg.topic, |key, e| {
            if let Some(share) = &key.share {
                match shares.iter_mut().find(|(s, _)| s == share) {
                    Some((_, members)) => members.push(e),
                    None => shares.push((share.clone(), vec![e])),
                }
                return;
            }
            // No Local: not back to the publishing session [MQTT-3.8.3-3].
            if e.no_local && publisher == Some(&*e.slot.client_id) {
                return;
            }
            let qos = e.qos.min(msg.qos);
            // Retain As Published; otherwise 0 for an established subscription [MQTT-3.3.1-12].
            let retain = msg.retain && e.retain_as_published;
            match by_slot.get(&key.slot) {
                Some(&i) => {
                    let t = &mut targets[i];
                    t.qos = t.qos.max(qos);
                    t.retain |= retain;
                    t.ids.extend(e.id);
                }
                None => {
                    by_slot.insert(key.slot, targets.len());
                    targets.push(Target {
                        slot: e.slot.clone(),
                        qos,
                        retain,
                        ids: e.id.into_iter().collect(),
                    });
                }
            }
        });
        let mut shared_targets = Vec::with_capacity(shares.len());
        if !shares.is_empty() {
            let mut turns = lock(&self.inner.share_turns);
            for (share, mut members) in shares {
                // Stable order, so that turns go round the members.
                members.sort_by_key(|e| e.slot.id);
                let online: Vec<&SubEntry> = members
                    .iter()
                    .copied()
                    .filter(|e| e.slot.is_online())
                    .collect();
                let pool = if online.is_empty() { &members } else { &online };
                let turn = turns.entry(share).or_insert(0);
                let e = pool[*turn % pool.len()];
                *turn = turn.wrapping_add(1);
                shared_targets.push(Target {
                    slot: e.slot.clone(),
                    qos: e.qos.min(msg.qos),
                    retain: msg.retain && e.retain_as_published,
                    ids: e.id.into_iter().collect(),
                });
            }
        }
        drop(subs);
        let matched = targets.len() + shared_targets.len();
        let mut ticket = 0;
        for t in targets.into_iter().chain(shared_targets) {
            let d = Delivery {
                msg: msg.clone(),
                qos: t.qos,
                retain: t.retain,
                ids: t.ids,
                seq: 0,
                live: false,
            };
            match t.slot.push(
                d,
                session::Kind::Live,
                &self.inner.config,
                self.persist_handle().as_ref(),
                now,
            ) {
                Some(t) => ticket = ticket.max(t),
                None => Stats::add(&self.inner.stats.messages_dropped, 1),
            }
        }
        Routed { matched, ticket }
    }

    pub(crate) fn persist_handle(&self) -> Option<Persist<'_>> {
        self.inner.store.as_ref().map(|store| Persist {
            store,
            next_seq: &self.inner.next_seq,
        })
    }

    /// Publishes a message that did not come from an MQTT client (`POST /api/v1/publish`);
    /// returns once it is routed and stored where persistence requires. Returns how many
    /// sessions (or share groups) it matched.
    /// A topic beyond `max_topic_levels` or `max_topic_length`, or a retained message the
    /// retained store has no room for, is refused, not routed.
    pub async fn publish_external(&self, p: Publish) -> Result<usize, ExternalRefusal> {
        if let Some(why) = self.inner.config.topic_beyond_limits(&p.topic) {
            Stats::add(&self.inner.stats.topics_refused, 1);
            return Err(ExternalRefusal::Topic(why));
        }
        let now = Instant::now();
        let routed = self.publish(Arc::new(Message::from_publish(p, None, now)), now)?;
        if routed.ticket > 0
            && let Some(mut committed) = self.committed()
        {
            let _ = committed.wait_for(|c| *c >= routed.ticket).await.is_ok();
        }
        Ok(routed.matched)
    }

    /// The retained messages, read-locked: held by a SUBSCRIBE from registering its
    /// subscriptions until their retained messages are queued, so that a retained publish
    /// (which needs the write lock) is routed after them — a subscriber never gets the newer
    /// value live and then the older one retained. Lock order: this, then `subs`, then a
    /// session's slot; nothing takes this lock while holding those.
    pub(crate) fn retained_read(&self) -> RwLockReadGuard<'_, retain::Retained> {
        read(&self.inner.retained)
    }

    pub(crate) fn subscribe(&self, slot: &Arc<Slot>, filter: &str, entry: SubscribeEntry) {
        let share = filter
            .starts_with("$share/")
            .then(|| Arc::<str>::from(filter));
        let key = SubKey {
            slot: slot.id,
            share,
        };
        let value = SubEntry {
            slot: slot.clone(),
            qos: entry.qos,
            no_local: entry.no_local,
            retain_as_published: entry.retain_as_published,
            id: entry.id,
        };
        if let Err(e) = write(&self.inner.subs).insert(filter, key, value) {
            // The decoder validated the filter; this cannot happen for a decoded SUBSCRIBE.
            tracing::warn!(filter, "subscription refused by the trie: {e}");
        }
    }

    pub(crate) fn unsubscribe(&self, slot_id: u64, filter: &str) -> bool {
        let share = filter
            .starts_with("$share/")
            .then(|| Arc::<str>::from(filter));
        let key = SubKey {
            slot: slot_id,
            share,
        };
        write(&self.inner.subs).remove(filter, &key).is_some()
    }

    /// Attaches connection `conn` to the session of `client_id`: resumes it (`clean_start`
    /// false and one exists) or starts a new one, taking it over from a connection that still
    /// holds it (that one is woken to close with 0x8E [MQTT-3.1.4-3]). Returns the slot and
    /// whether a session was resumed.
    ///
    /// A session belongs to the login that made it: another login (`user`) may neither resume
    /// it nor end it with a clean start — that is refused (`Err`), and the session and its
    /// connection stay as they are. A session made without a login (or restored from a store
    /// that did not record one) is adopted by the next login that resumes it.
    pub(crate) fn attach(
        &self,
        client_id: &Arc<str>,
        user: Option<&Arc<str>>,
        clean_start: bool,
        conn: u64,
        expiry: u32,
    ) -> Result<(Arc<Slot>, bool), SessionOfAnotherUser> {
        let mut sessions = lock(&self.inner.sessions);
        let existing = sessions.get(client_id).cloned();
        if let Some(old) = &existing {
            let mut st = lock(&old.state);
            if let (Some(theirs), Some(ours)) = (&st.user, user)
                && theirs != ours
            {
                return Err(SessionOfAnotherUser);
            }
            let had_owner = st.owner.is_some();
            if !clean_start {
                if user.is_some() {
                    st.user = user.cloned();
                }
                st.owner = Some(conn);
                st.resumed();
                st.generation += 1;
                st.expiry = expiry;
                drop(st);
                old.set_online(true);
                if had_owner {
                    old.notify.notify_one();
                }
                return Ok((old.clone(), true));
            }
            // Clean start: the old session ends here [MQTT-3.1.2-4].
            st.ended = true;
            st.owner = None;
            drop(st);
            if had_owner {
                old.notify.notify_one();
            }
        }
        let slot = Arc::new(Slot::new(self.next_id(), client_id.clone(), conn, expiry));
        lock(&slot.state).user = user.cloned();
        sessions.insert(client_id.clone(), slot.clone());
        drop(sessions);
        if let Some(old) = existing {
            self.drop_subscriptions(&old);
        }
        Ok((slot, false))
    }

    /// Ends `slot`'s session if it is still the client's, nobody re-attached since
    /// `generation`, and no connection holds it.
    pub(crate) fn end_session(&self, slot: &Arc<Slot>, generation: u64) {
        let mut sessions = lock(&self.inner.sessions);
        let current = sessions
            .get(&slot.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, slot));
        {
            let mut st = lock(&slot.state);
            if st.owner.is_some() || st.generation != generation || st.ended {
                return;
            }
            st.ended = true;
        }
        if current {
            sessions.remove(&slot.client_id);
        }
        drop(sessions);
        self.drop_subscriptions(slot);
    }

    fn drop_subscriptions(&self, slot: &Arc<Slot>) {
        let (filters, persisted): (Vec<MqttStr>, bool) = {
            let mut st = lock(&slot.state);
            st.queue.clear();
            st.live = 0;
            st.queued_bytes = 0;
            st.inflight.clear();
            let persisted = std::mem::take(&mut st.persisted);
            (
                st.subscriptions.drain().map(|(f, _)| f).collect(),
                persisted,
            )
        };
        if persisted {
            self.persist([Op::DelSession(slot.client_id.to_string())]);
        }
        if filters.is_empty() {
            return;
        }
        let mut subs = write(&self.inner.subs);
        for f in filters {
            let share = f.starts_with("$share/").then(|| Arc::<str>::from(&*f));
            subs.remove(
                &f,
                &SubKey {
                    slot: slot.id,
                    share,
                },
            );
        }
    }

    /// A client identifier for a client that sent an empty one [MQTT-3.1.3-6].
    pub(crate) fn assign_client_id(&self) -> Arc<str> {
        let nanos = self.inner.started.elapsed().as_nanos() as u64;
        let n = self.next_id();
        let mixed = (nanos ^ n.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!("kite-{:016x}", mixed ^ n).into()
    }
}

/// The options of one subscription, as the session keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubscribeEntry {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub id: Option<u32>,
}
