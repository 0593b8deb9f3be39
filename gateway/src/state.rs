//! What every request shares: the configuration, the upstream connector, the embedded broker
//! (when no upstream is configured), the open WebSocket sessions, metrics, the TLS
//! certificate, the login workers and the per-address connection counts.

use std::sync::Arc;

use kite_broker::Broker;

use crate::config::{Config, Upstream};
use crate::metrics::Metrics;
use crate::upstream::Connector;

/// Shared state of all requests.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) config: Arc<Config>,
    pub(crate) connector: Connector,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tls: Option<crate::tls::Reloadable>,
    pub(crate) broker: Option<Broker>,
    /// The history store, when `[history] record` is set.
    pub(crate) history: Option<Arc<dyn kite_data::Storage>>,
    /// The data store (history, devices), when either is configured.
    pub(crate) store: Option<Arc<dyn kite_data::Storage>>,
    /// The device monitor, when `[[devices]]` rules are given.
    pub(crate) devices: Option<Arc<crate::monitor::Monitor>>,
    /// The alarms, when there is a data directory.
    pub(crate) alarms: Option<Arc<crate::alarming::AlarmService>>,
    /// Each batch the recorder committed, with the times it is kept under (the event
    /// streams' source for recorded topics, so that their ids are the recorder's).
    pub(crate) recorded: tokio::sync::broadcast::Sender<Arc<Vec<kite_data::Record>>>,
    /// Held while a dashboard is written (its version checked, then bumped).
    pub(crate) dashboard_writes: Arc<tokio::sync::Mutex<()>>,
    /// Where login checks run: browsers, devices and the publish API share it.
    pub(crate) logins: kite_broker::logins::Logins,
    /// Open connections per source address, all listeners together.
    pub(crate) per_address: crate::per_address::PerAddress,
}

/// Committed batches an event stream may lag behind before it is told it missed some.
const RECORDED_BATCHES: usize = 1024;

/// The name under which the embedded broker is listed and reachable (`/mqtt/embedded`).
pub const EMBEDDED: &str = "embedded";

/// Where a browser session goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Upstream(Upstream),
    Embedded(Broker),
}

impl Target {
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Upstream(u) => &u.name,
            Self::Embedded(_) => EMBEDDED,
        }
    }
}

/// The open WebSocket sessions: how many, and the signal that tells them to close.
#[derive(Debug)]
pub struct Sessions {
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    open: tokio::sync::watch::Sender<usize>,
}

impl Sessions {
    fn new() -> Self {
        Self {
            shutdown: tokio::sync::watch::Sender::new(false),
            open: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Tells every session to close (MQTT 5: DISCONNECT 0x8B Server shutting down).
    pub fn close_all(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until no session is open, or `timeout` passed; returns how many are left.
    pub async fn drained(&self, timeout: std::time::Duration) -> usize {
        let mut open = self.open.subscribe();
        let _ = tokio::time::timeout(timeout, open.wait_for(|n| *n == 0)).await;
        *open.borrow()
    }

    pub(crate) fn enter(self: &Arc<Self>) -> SessionGuard {
        self.open.send_modify(|n| *n += 1);
        SessionGuard(self.clone())
    }
}

/// Counts a session as open while it lives.
pub(crate) struct SessionGuard(Arc<Sessions>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl AppState {
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration, shared (e.g. to move into a blocking task).
    pub fn shared_config(&self) -> Arc<Config> {
        self.config.clone()
    }

    /// State for this configuration.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let config_for_limits = config.limits;
        let connector = Connector::new(&config.upstreams)?;
        let tls = config
            .tls
            .clone()
            .map(crate::tls::Reloadable::new)
            .transpose()?;
        let logins = kite_broker::logins::Logins::default();
        let broker = if !config.upstreams.is_empty() {
            None
        } else {
            let (settings, auth) = (&config.broker, config.auth.clone());
            let broker_config = kite_broker::BrokerConfig {
                v311_denied_publish: config.v311_denied_publish,
                ..settings.config.clone()
            };
            Some(match &settings.data_dir {
                Some(dir) => Broker::open(broker_config, auth, logins.clone(), dir, settings.sync)?,
                None => Broker::new(broker_config, auth, logins.clone()),
            })
        };
        // One store for the history and the devices: the same file in the data directory.
        let unbounded = kite_data::Retention {
            max_age: None,
            max_bytes: u64::MAX,
        };
        let place = match (&config.history, &config.devices, &config.alarms) {
            (Some(h), _, _) => Some((&h.dir, h.sync, h.retention)),
            (None, Some(d), _) => Some((&d.dir, d.sync, unbounded)),
            (None, None, Some(a)) => Some((&a.dir, a.sync, unbounded)),
            (None, None, None) => None,
        };
        let store: Option<Arc<dyn kite_data::Storage>> = match place {
            Some((dir, sync, retention)) => Some(Arc::new(kite_data::RedbStorage::open(
                dir, sync, retention,
            )?)),
            None => None,
        };
        // The example dashboards read the embedded broker's $SYS topics.
        if let (Some(store), Some(_)) = (&store, &broker)
            && crate::dashboards::seed(store.as_ref())?
        {
            tracing::info!("example dashboards added: broker, traffic");
        }
        let history = store.clone().filter(|_| config.history.is_some());
        let devices = match (&config.devices, &store) {
            (Some(d), Some(store)) => Some(Arc::new(crate::monitor::Monitor::open(
                d.rules.clone(),
                store.clone(),
            )?)),
            _ => None,
        };
        let alarms = match (&config.alarms, &store) {
            (Some(a), Some(store)) => Some(Arc::new(crate::alarming::AlarmService::open(
                a.rules.clone(),
                store.clone(),
            )?)),
            _ => None,
        };
        Ok(Self {
            tls,
            broker,
            history,
            store,
            devices,
            alarms,
            recorded: tokio::sync::broadcast::channel(RECORDED_BATCHES).0,
            dashboard_writes: Arc::default(),
            logins,
            config: Arc::new(config),
            connector,
            sessions: Arc::new(Sessions::new()),
            metrics: Arc::default(),
            per_address: crate::per_address::PerAddress::new(
                config_for_limits.max_connections_per_address,
            ),
        })
    }

    /// The history store, when `[history] record` is set.
    pub fn history(&self) -> Option<&Arc<dyn kite_data::Storage>> {
        self.history.as_ref()
    }

    /// What the recorder commits, batch by batch, from now on.
    pub fn recorded(&self) -> tokio::sync::broadcast::Receiver<Arc<Vec<kite_data::Record>>> {
        self.recorded.subscribe()
    }

    /// The data store (history, devices, alarms, dashboards), when there is one.
    pub fn store(&self) -> Option<&Arc<dyn kite_data::Storage>> {
        self.store.as_ref()
    }

    /// The device monitor, when `[[devices]]` rules are given.
    pub fn devices(&self) -> Option<&Arc<crate::monitor::Monitor>> {
        self.devices.as_ref()
    }

    /// The alarms, when there is a data directory.
    pub fn alarms(&self) -> Option<&Arc<crate::alarming::AlarmService>> {
        self.alarms.as_ref()
    }

    /// Where login checks run.
    pub fn logins(&self) -> &kite_broker::logins::Logins {
        &self.logins
    }

    /// Open connections per source address, shared by every listener.
    pub fn per_address(&self) -> &crate::per_address::PerAddress {
        &self.per_address
    }

    /// The TLS certificate in use, if the gateway terminates TLS.
    pub fn tls(&self) -> Option<&crate::tls::Reloadable> {
        self.tls.as_ref()
    }

    /// The open sessions.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// The embedded broker, when no upstream is configured.
    pub fn broker(&self) -> Option<&Broker> {
        self.broker.as_ref()
    }

    /// Where sessions and publishes go without a name: the default upstream, or else the
    /// embedded broker.
    pub(crate) fn default_target(&self) -> Option<Target> {
        match (self.config.default_upstream(), &self.broker) {
            (Some(u), _) => Some(Target::Upstream(u.clone())),
            (None, Some(b)) => Some(Target::Embedded(b.clone())),
            (None, None) => None,
        }
    }

    /// The upstream named `name`, or the embedded broker as `embedded`.
    pub(crate) fn target(&self, name: &str) -> Option<Target> {
        match (self.config.upstream(name), &self.broker) {
            (Some(u), _) => Some(Target::Upstream(u.clone())),
            (None, Some(b)) if name == EMBEDDED => Some(Target::Embedded(b.clone())),
            _ => None,
        }
    }
}
