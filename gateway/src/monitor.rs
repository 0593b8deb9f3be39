//! The device monitor (`[[devices]]`): the presence engine ([`crate::presence`]) shared by
//! the sessions that feed it (`devices.rs`) and the devices API, its metrics, and the saving
//! of the devices that changed into the data store ([`kite_data::Storage`]), so that a
//! restart starts from them.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use kite_data::{Device, Storage, now_ms};

use crate::presence::{Engine, Rule};

/// The monitor: the engine, shared with the devices API.
#[derive(Debug)]
pub struct Monitor {
    engine: Mutex<Engine>,
    store: Arc<dyn Storage>,
    /// Whether its session with the broker is up (1) or not (0).
    pub up: Arc<AtomicU64>,
    /// Client events it missed because it fell behind.
    pub missed_events: AtomicU64,
    /// Saves that failed.
    pub save_failures: AtomicU64,
}

impl Monitor {
    /// The monitor with `rules`, starting from the devices `store` kept.
    pub fn open(rules: Vec<Rule>, store: Arc<dyn Storage>) -> Result<Self, kite_data::DataError> {
        let kept = store.devices()?;
        let engine = Engine::new(rules, kept, now_ms());
        Ok(Self {
            engine: Mutex::new(engine),
            store,
            up: Arc::new(AtomicU64::new(0)),
            missed_events: AtomicU64::new(0),
            save_failures: AtomicU64::new(0),
        })
    }

    /// The engine, locked (briefly: every delivery waits for it).
    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks silence and stores what changed (on a blocking thread); logs state changes.
    pub(crate) async fn save(&self) {
        let (dirty, removed, changes) = {
            let mut e = self.engine();
            e.tick(now_ms());
            (e.take_dirty(), e.take_removed(), e.take_changes())
        };
        for c in &changes {
            match c.from {
                Some(from) => {
                    tracing::info!(device = %c.id, "device {} → {}", from.as_str(), c.to.as_str())
                }
                None => tracing::debug!(device = %c.id, "new device"),
            }
        }
        if dirty.is_empty() && removed.is_empty() {
            return;
        }
        let store = self.store.clone();
        let saved = tokio::task::spawn_blocking(move || store.save_devices(&dirty, &removed)).await;
        let failed = match saved {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        self.save_failures.fetch_add(1, Relaxed);
        tracing::error!("device monitor: cannot keep the devices that changed: {failed}");
    }

    /// The devices `visible` lets through, in natural order of their ids: how many are in
    /// each state (in [`kite_data::Presence::ALL`]'s order), and copies of those that `want`
    /// also lets through after `after`, at most `limit` — with whether there are more.
    pub fn page(
        &self,
        visible: impl Fn(&Device) -> bool,
        want: impl Fn(&Device) -> bool,
        after: Option<&str>,
        limit: usize,
    ) -> ([usize; 4], Vec<Device>, bool) {
        let engine = self.engine();
        let mut seen: Vec<&Device> = engine.devices().filter(|d| visible(d)).collect();
        let mut counts = [0usize; 4];
        for d in &seen {
            if let Some(i) = kite_data::Presence::ALL.iter().position(|p| *p == d.state) {
                counts[i] += 1;
            }
        }
        seen.retain(|d| {
            want(d) && after.is_none_or(|a| natural(&d.id, a) == std::cmp::Ordering::Greater)
        });
        let more = seen.len() > limit;
        // Only the page needs its order: the smallest `limit` first, then sorted.
        if more {
            seen.select_nth_unstable_by(limit, |a, b| natural(&a.id, &b.id));
            seen.truncate(limit);
        }
        seen.sort_unstable_by(|a, b| natural(&a.id, &b.id));
        let page = seen.into_iter().cloned().collect();
        (counts, page, more)
    }
}

/// The device monitor's metrics: devices by state, and its own health.
pub fn render_metrics(m: &Monitor) -> String {
    let (counts, refused, bad, stale) = {
        let e = m.engine();
        (e.counts(), e.refused, e.bad_payloads, e.stale_deaths)
    };
    let mut out = String::from(
        "# HELP kite_devices Devices the monitor knows, by state.\n# TYPE kite_devices gauge\n",
    );
    for (p, n) in kite_data::Presence::ALL.iter().zip(counts) {
        let _ = writeln!(out, "kite_devices{{state=\"{}\"}} {n}", p.as_str());
    }
    crate::metrics::write_rows(
        &mut out,
        &[
            (
                "kite_devices_up",
                "gauge",
                "Whether the device monitor's session with the broker is up (1) or not (0).",
                m.up.load(Relaxed),
            ),
            (
                "kite_devices_refused_total",
                "counter",
                "New device ids not added: the monitor holds as many devices as it may (100,000).",
                refused,
            ),
            (
                "kite_devices_sparkplug_bad_payloads_total",
                "counter",
                "Sparkplug B payloads the monitor could not read.",
                bad,
            ),
            (
                "kite_devices_sparkplug_stale_deaths_total",
                "counter",
                "Sparkplug B NDEATHs ignored: their bdSeq was not the one of the node's last NBIRTH.",
                stale,
            ),
            (
                "kite_devices_missed_events_total",
                "counter",
                "Client connections and disconnections the monitor missed because it fell behind.",
                m.missed_events.load(Relaxed),
            ),
            (
                "kite_devices_save_failures_total",
                "counter",
                "Times the devices that changed could not be kept in the data store.",
                m.save_failures.load(Relaxed),
            ),
        ],
    );
    out
}

/// Orders ids as people read them: `dev-2` before `dev-10`.
pub use kite_mqtt::topic::natural_cmp as natural;
