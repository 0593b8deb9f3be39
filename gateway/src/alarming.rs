//! The alarm service: the evaluator ([`crate::alarms`]) fed by a feed ([`crate::feed`],
//! client id `kite-alarms`, or `kite-alarms-<hostname>` at an upstream) whose subscriptions
//! follow the rules, and by the device monitor's states; a tick every 250 ms; the rules and
//! alarms kept in the data store; and the notifiers — the webhook (POSTed, retried with
//! backoff on tasks of its own: a webhook that is down never holds up a message) and MQTT
//! (`kite/alarms/<rule>/<source>`, retained while the alarm is open).
//!
//! Rules come from the config (`[[alarm]]`, not changed through the API) and from the API
//! (kept in the data store). A rule change is written to the store first, then applied.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use kite_data::{Alarm, AlarmRule, DataError, Storage, now_ms};
use kite_mqtt::QoS;
use kite_mqtt::codec::{Publish, Subscription};

use crate::alarms::{Evaluator, Event, Notice};

/// The embedded broker's client id for the alarms' feed.
pub const CLIENT_ID: &str = "kite-alarms";

/// How often the clock is looked at (for_secs, silences, renotifications, devices).
const TICK: Duration = Duration::from_millis(250);

/// Webhook notifications waiting or being retried at most: beyond, new ones are dropped and
/// counted.
const MAX_PENDING_WEBHOOKS: usize = 1_000;

/// The waits between a webhook's attempts: 7 attempts over about a minute.
const RETRIES: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
];

/// Where MQTT notices are published.
#[derive(Debug, Clone)]
enum Publisher {
    Embedded(kite_broker::Broker),
    Upstream(crate::client::Client),
}

/// Why a rule change was refused.
#[derive(Debug)]
pub enum ChangeError {
    /// No rule of that name.
    Unknown,
    /// A rule of that name exists (creating).
    Exists,
    /// It is a `[[alarm]]` of the config file.
    FromConfig,
    /// The store failed.
    Store(DataError),
}

/// The service (see the module docs).
#[derive(Debug)]
pub struct AlarmService {
    evaluator: Mutex<Evaluator>,
    store: Arc<dyn Storage>,
    /// The names of the config file's rules.
    config_rules: Vec<String>,
    /// The feed's subscriptions, following the rules.
    filters: tokio::sync::watch::Sender<Vec<Subscription>>,
    /// One rule change at a time (the store, then the evaluator).
    changing: tokio::sync::Mutex<()>,
    publisher: std::sync::OnceLock<Publisher>,
    /// Whether the feed's session is up (1) or not (0).
    pub up: Arc<AtomicU64>,
    pub webhook_sent: AtomicU64,
    pub webhook_failures: AtomicU64,
    pub webhook_given_up: AtomicU64,
    pub webhook_dropped: AtomicU64,
    pub mqtt_failures: AtomicU64,
    pub save_failures: AtomicU64,
    pending_webhooks: Arc<AtomicUsize>,
}

/// The feed's subscriptions for `evaluator`'s rules: each filter once, at QoS 1.
fn subscriptions(evaluator: &Evaluator) -> Vec<Subscription> {
    evaluator
        .filters()
        .iter()
        .map(|f| crate::feed::subscription(f, QoS::AtLeastOnce))
        .collect()
}

impl AlarmService {
    /// The service with the config's rules and what `store` kept (rules made through the API,
    /// alarms). A kept rule named like a config rule is left out (the config wins).
    pub fn open(config_rules: Vec<AlarmRule>, store: Arc<dyn Storage>) -> Result<Self, DataError> {
        let names: Vec<String> = config_rules.iter().map(|r| r.name.clone()).collect();
        let mut rules = config_rules;
        let mut kept = store.alarm_rules()?;
        kept.sort_by(|a, b| a.name.cmp(&b.name));
        for r in kept {
            if names.contains(&r.name) {
                tracing::warn!(
                    "alarm rule {:?} made through the API is shadowed by the config's [[alarm]] of that name",
                    r.name
                );
            } else {
                rules.push(r);
            }
        }
        let evaluator = Evaluator::new(rules, store.alarms()?);
        let (filters, _) = tokio::sync::watch::channel(subscriptions(&evaluator));
        Ok(Self {
            evaluator: Mutex::new(evaluator),
            store,
            config_rules: names,
            filters,
            changing: tokio::sync::Mutex::new(()),
            publisher: std::sync::OnceLock::new(),
            up: Arc::new(AtomicU64::new(0)),
            webhook_sent: AtomicU64::new(0),
            webhook_failures: AtomicU64::new(0),
            webhook_given_up: AtomicU64::new(0),
            webhook_dropped: AtomicU64::new(0),
            mqtt_failures: AtomicU64::new(0),
            save_failures: AtomicU64::new(0),
            pending_webhooks: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The evaluator, locked (briefly: the feed waits for it).
    pub fn evaluator(&self) -> MutexGuard<'_, Evaluator> {
        self.evaluator
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the rule named `name` comes from the config file.
    pub fn from_config(&self, name: &str) -> bool {
        self.config_rules.iter().any(|n| n == name)
    }

    /// Creates (`create`) or replaces a rule made through the API: stored, then applied.
    pub async fn put_rule(&self, rule: AlarmRule, create: bool) -> Result<(), ChangeError> {
        let _one = self.changing.lock().await;
        if self.from_config(&rule.name) {
            return Err(ChangeError::FromConfig);
        }
        let exists = self.evaluator().rules().any(|r| r.name == rule.name);
        match (create, exists) {
            (true, true) => return Err(ChangeError::Exists),
            (false, false) => return Err(ChangeError::Unknown),
            _ => {}
        }
        let store = self.store.clone();
        let kept = rule.clone();
        blocking(move || store.save_alarm_rule(&kept))
            .await
            .map_err(ChangeError::Store)?;
        let mut rules: Vec<AlarmRule> = self.evaluator().rules().cloned().collect();
        match rules.iter_mut().find(|r| r.name == rule.name) {
            Some(r) => *r = rule,
            None => rules.push(rule),
        }
        self.apply(rules);
        Ok(())
    }

    /// Deletes a rule made through the API (its open alarms clear).
    pub async fn delete_rule(&self, name: &str) -> Result<(), ChangeError> {
        let _one = self.changing.lock().await;
        if self.from_config(name) {
            return Err(ChangeError::FromConfig);
        }
        let store = self.store.clone();
        let n = name.to_owned();
        let found = blocking(move || store.delete_alarm_rule(&n))
            .await
            .map_err(ChangeError::Store)?;
        let mut rules: Vec<AlarmRule> = self.evaluator().rules().cloned().collect();
        let before = rules.len();
        rules.retain(|r| r.name != name);
        if !found && rules.len() == before {
            return Err(ChangeError::Unknown);
        }
        self.apply(rules);
        Ok(())
    }

    fn apply(&self, rules: Vec<AlarmRule>) {
        let subs = {
            let mut e = self.evaluator();
            e.set_rules(rules, now_ms());
            subscriptions(&e)
        };
        self.filters.send_replace(subs);
    }

    /// `user` acknowledges alarm `id`.
    pub fn acknowledge(&self, id: u64, user: &str) -> Result<Alarm, crate::alarms::AckError> {
        self.evaluator().acknowledge(id, user, now_ms())
    }

    /// The clock, the devices, then what happened: notices sent, changes stored.
    async fn tick(self: &Arc<Self>, monitor: Option<&Arc<crate::monitor::Monitor>>) {
        let now = now_ms();
        let (notices, (changed, removed)) = {
            // The monitor's lock first, then the evaluator's (nowhere the other way).
            let engine = monitor.map(|m| m.engine());
            let mut e = self.evaluator();
            if let Some(engine) = &engine {
                e.on_devices(engine.devices(), now);
            }
            e.tick(now);
            (e.take_notices(), e.take_changes())
        };
        for n in notices {
            self.notify(n);
        }
        if changed.is_empty() && removed.is_empty() {
            return;
        }
        let store = self.store.clone();
        if let Err(e) = blocking(move || store.save_alarms(&changed, &removed)).await {
            self.save_failures.fetch_add(1, Relaxed);
            tracing::error!("alarms: cannot keep the alarms that changed: {e}");
        }
    }

    /// Sends a notice where its rule says, on tasks of their own.
    fn notify(self: &Arc<Self>, n: Notice) {
        let a = &n.alarm;
        tracing::info!(alarm = a.id, rule = %a.rule, source = %a.source, severity = a.severity.as_str(), "alarm {}: {}", n.event.as_str(), a.text);
        let body = Bytes::from(
            serde_json::to_vec(&serde_json::json!({ "event": n.event.as_str(), "alarm": a }))
                .unwrap_or_default(),
        );
        if n.notify.mqtt
            && let Some(p) = self.publisher.get().cloned()
        {
            let topic = format!("kite/alarms/{}/{}", a.rule, a.source);
            let me = self.clone();
            let (event, body) = (n.event, body.clone());
            tokio::spawn(async move { me.publish(p, topic, event, body).await });
        }
        if let Some(url) = &n.notify.webhook {
            let Ok(target) = crate::webhook::Target::parse(url) else {
                return;
            };
            if self.pending_webhooks.fetch_add(1, Relaxed) >= MAX_PENDING_WEBHOOKS {
                self.pending_webhooks.fetch_sub(1, Relaxed);
                self.webhook_dropped.fetch_add(1, Relaxed);
                tracing::warn!(
                    "alarms: {MAX_PENDING_WEBHOOKS} webhook notifications wait already: this one is dropped"
                );
                return;
            }
            let me = self.clone();
            tokio::spawn(async move {
                me.deliver(target, body).await;
                me.pending_webhooks.fetch_sub(1, Relaxed);
            });
        }
    }

    /// POSTs `body`, retrying with backoff.
    async fn deliver(&self, target: crate::webhook::Target, body: Bytes) {
        let mut waits = RETRIES.iter();
        loop {
            match crate::webhook::post(&target, body.clone()).await {
                Ok(()) => {
                    self.webhook_sent.fetch_add(1, Relaxed);
                    return;
                }
                Err(e) => {
                    self.webhook_failures.fetch_add(1, Relaxed);
                    match waits.next() {
                        Some(wait) => {
                            tracing::warn!("alarms: webhook: {e}; again in {wait:?}");
                            tokio::time::sleep(*wait).await;
                        }
                        None => {
                            self.webhook_given_up.fetch_add(1, Relaxed);
                            tracing::error!(
                                "alarms: webhook: {e}; given up after {} attempts",
                                RETRIES.len() + 1
                            );
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The MQTT notice: retained while the alarm is open; on clearing, the cleared alarm
    /// (not retained), then the retained one removed.
    async fn publish(&self, to: Publisher, topic: String, event: Event, body: Bytes) {
        let message = |payload: Bytes, retain: bool| Publish {
            topic: topic.as_str().into(),
            payload,
            qos: QoS::AtLeastOnce,
            retain,
            packet_id: 1,
            ..Publish::default()
        };
        let mut out = vec![message(body, event != Event::Cleared)];
        if event == Event::Cleared {
            out.push(message(Bytes::new(), true));
        }
        for p in out {
            let sent = match &to {
                Publisher::Embedded(b) => b
                    .publish_external(p)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Publisher::Upstream(c) => c.publish(p).await.map(|_| ()).map_err(|e| e.to_string()),
            };
            if let Err(e) = sent {
                self.mqtt_failures.fetch_add(1, Relaxed);
                tracing::warn!("alarms: cannot publish on {topic}: {e}");
            }
        }
    }

    /// Metrics: alarms by state and severity, the notifiers' counts.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        let (counts, cleared) = self.evaluator().counts();
        let mut out = String::from(
            "# HELP kite_alarms Alarms by state and severity (cleared: the history kept).\n# TYPE kite_alarms gauge\n",
        );
        for (s, (active, acked)) in kite_data::Severity::ALL.iter().zip(counts) {
            let _ = writeln!(
                out,
                "kite_alarms{{state=\"active\",severity=\"{}\"}} {active}",
                s.as_str()
            );
            let _ = writeln!(
                out,
                "kite_alarms{{state=\"acknowledged\",severity=\"{}\"}} {acked}",
                s.as_str()
            );
        }
        let _ = writeln!(out, "kite_alarms{{state=\"cleared\"}} {cleared}");
        crate::metrics::write_rows(
            &mut out,
            &[
                (
                    "kite_alarms_up",
                    "gauge",
                    "Whether the alarms' session with the broker is up (1) or not (0).",
                    self.up.load(Relaxed),
                ),
                (
                    "kite_alarm_webhook_sent_total",
                    "counter",
                    "Webhook notifications delivered (a 2xx answer).",
                    self.webhook_sent.load(Relaxed),
                ),
                (
                    "kite_alarm_webhook_failures_total",
                    "counter",
                    "Webhook attempts that failed (each retry counts).",
                    self.webhook_failures.load(Relaxed),
                ),
                (
                    "kite_alarm_webhook_given_up_total",
                    "counter",
                    "Webhook notifications given up after every retry.",
                    self.webhook_given_up.load(Relaxed),
                ),
                (
                    "kite_alarm_webhook_dropped_total",
                    "counter",
                    "Webhook notifications dropped: 1,000 were waiting already.",
                    self.webhook_dropped.load(Relaxed),
                ),
                (
                    "kite_alarm_mqtt_failures_total",
                    "counter",
                    "MQTT notices that could not be published.",
                    self.mqtt_failures.load(Relaxed),
                ),
                (
                    "kite_alarm_save_failures_total",
                    "counter",
                    "Times the alarms that changed could not be kept in the data store.",
                    self.save_failures.load(Relaxed),
                ),
            ],
        );
        out
    }
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DataError> + Send + 'static,
) -> Result<T, DataError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DataError::Database {
            path: Default::default(),
            detail: format!("the storage thread failed: {e}"),
        })?
}

/// The feed's settings and its handler: each message to the evaluator.
fn feed(
    service: &Arc<AlarmService>,
    client_id: String,
) -> (crate::feed::Feed, crate::feed::Handler) {
    let feed = crate::feed::Feed {
        name: "alarms",
        client_id,
        filters: service.filters.subscribe(),
        up: service.up.clone(),
        stop: None,
    };
    let s = service.clone();
    let handler: crate::feed::Handler = Box::new(move |batch, now| {
        let mut e = s.evaluator();
        for p in batch {
            e.on_message(&p.topic, &p.payload, now);
        }
    });
    (feed, handler)
}

/// Ticks until `stop` completes, then once more.
async fn upkeep(
    service: Arc<AlarmService>,
    monitor: Option<Arc<crate::monitor::Monitor>>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => break,
        }
        service.tick(monitor.as_ref()).await;
    }
    service.tick(monitor.as_ref()).await;
}

/// Starts the alarms on the embedded broker; the receiver completes once the feed's
/// subscriptions are sent.
pub fn start_embedded(
    service: Arc<AlarmService>,
    monitor: Option<Arc<crate::monitor::Monitor>>,
    broker: &kite_broker::Broker,
) -> tokio::sync::oneshot::Receiver<()> {
    let _ = service.publisher.set(Publisher::Embedded(broker.clone()));
    let stopping = broker.clone();
    tokio::spawn(upkeep(service.clone(), monitor, async move {
        stopping.stopped().await;
    }));
    let (feed, handler) = feed(&service, CLIENT_ID.into());
    crate::feed::start_embedded(broker.clone(), feed, handler)
}

/// Starts the alarms in front of `upstream` (the default one); they stop when `shutdown`
/// says so.
pub fn start_upstream(
    service: Arc<AlarmService>,
    monitor: Option<Arc<crate::monitor::Monitor>>,
    upstream: crate::config::Upstream,
    login: crate::feed::Login,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
    tokio::spawn(upkeep(service.clone(), monitor, async move {
        let _ = stop.wait_for(|down| *down).await;
    }));
    let (feed, handler) = feed(&service, crate::feed::upstream_client_id("kite-alarms"));
    let client = crate::feed::start_upstream(upstream, feed, login, handler, shutdown);
    let _ = service.publisher.set(Publisher::Upstream(client));
}
