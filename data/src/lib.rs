//! What Kite keeps beyond the broker, behind one interface: [`Storage`]. Today it holds the
//! recorded history (`history`), the device monitor's devices (`devices`), the alarms
//! (`alarms`) and the dashboards (`dashboards`), so that one implementation serves them all — [`RedbStorage`] (a file in the data directory) is the embedded default, and a
//! shared database (PostgreSQL) can stand behind several gateways.
//!
//! No network and no async runtime: the calls block (on a disk write, a query), so async
//! callers run them on blocking threads.

pub mod alarms;
pub mod dashboards;
pub mod devices;
pub mod history;
pub mod redb_store;

use std::path::{Path, PathBuf};

pub use alarms::{Alarm, AlarmRule, AlarmState, Notify, Op, Severity};
pub use dashboards::Dashboard;
pub use devices::{Device, Presence, Said, Source};
pub use history::{
    Bucket, MAX_POINTS, Millis, Page, QueryError, Record, Series, Span, Stored, TopicInfo, Usage,
};
pub use redb_store::{RedbStorage, Retention};

/// The time now, in ms since the epoch (0 before it).
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// When commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sync {
    /// Every commit is fsynced before it returns: nothing recorded (and acknowledged to the
    /// broker) is lost, even on power loss.
    #[default]
    Always,
    /// Commits are not fsynced; [`Storage::prune`] (called once a second) fsyncs. A crash
    /// of the machine may lose the last second.
    Periodic,
}

/// Why the storage failed (not a bad query: [`DataError::Query`]).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The query cannot be answered as asked.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The database refused the file or failed.
    #[error(
        "data file {path}: {detail} (move it away to start with no history and no devices, or point [broker] data_dir elsewhere)"
    )]
    Database {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The file was written by an incompatible version of Kite.
    #[error(
        "data file {path} has format {found}, this Kite reads format {expected}: use the Kite version that wrote it, or move the file away"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// The format found.
        found: u64,
        /// The format this version reads.
        expected: u64,
    },
    /// A record could not be read back.
    #[error("data file {path}: corrupt {what}; move the file away")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What could not be read.
        what: String,
    },
}

impl DataError {
    pub(crate) fn db(path: &Path, e: impl std::fmt::Display) -> Self {
        Self::Database {
            path: path.to_owned(),
            detail: e.to_string(),
        }
    }
}

/// The one storage interface (see the crate docs). Every call is whole: a `record` that
/// returns `Ok` is committed; a query sees a consistent state.
pub trait Storage: Send + std::marker::Sync + std::fmt::Debug + 'static {
    /// Records `batch` (topics in any order; within a topic, in order). When it returns,
    /// the batch is committed (and with [`Sync::Always`], on disk), and the oldest data was
    /// removed if the store was over its byte bound.
    fn record(&self, batch: &[Record]) -> Result<(), DataError>;

    /// The recorded topics, sorted by name.
    fn topics(&self) -> Result<Vec<TopicInfo>, DataError>;

    /// One topic's messages in `span`, newest first, at most `limit`.
    fn messages(&self, topic: &str, span: Span, limit: usize) -> Result<Page, DataError>;

    /// The numbers under `field` (a JSON Pointer; `None`: the payload itself) of each topic
    /// matching `filter` (a name or an MQTT filter), in at most `points` M4 buckets over
    /// `span`.
    fn series(
        &self,
        filter: &str,
        field: Option<&str>,
        span: Span,
        points: usize,
    ) -> Result<Vec<Series>, DataError>;

    /// Every message of the topics matching `filter` in `span` — topic by topic (sorted),
    /// oldest first within each — handed to `each` until it returns false; returns how many.
    /// Reads chunk by chunk: memory stays constant however much is exported.
    fn export(
        &self,
        filter: &str,
        span: Span,
        each: &mut dyn FnMut(&str, &Stored) -> bool,
    ) -> Result<u64, DataError>;

    /// Removes what is older than the retention allows (`now` minus it), and with
    /// [`Sync::Periodic`] fsyncs; returns the usage after.
    fn prune(&self, now: Millis) -> Result<Usage, DataError>;

    /// What the store holds.
    fn usage(&self) -> Usage;

    /// Every device kept, in no particular order.
    fn devices(&self) -> Result<Vec<Device>, DataError>;

    /// Removes the devices whose ids are `removed`, then keeps `changed` (each replacing the
    /// device of its id), in one commit.
    fn save_devices(&self, changed: &[Device], removed: &[String]) -> Result<(), DataError>;

    /// Every alarm rule kept (those made through the API), in no particular order.
    fn alarm_rules(&self) -> Result<Vec<AlarmRule>, DataError>;

    /// Keeps `rule`, replacing the rule of its name.
    fn save_alarm_rule(&self, rule: &AlarmRule) -> Result<(), DataError>;

    /// Removes the rule named `name`; whether there was one.
    fn delete_alarm_rule(&self, name: &str) -> Result<bool, DataError>;

    /// Every alarm kept (active, acknowledged and the cleared history), in no particular
    /// order.
    fn alarms(&self) -> Result<Vec<Alarm>, DataError>;

    /// Keeps `changed` (each replacing the alarm of its id) and removes the alarms numbered
    /// `removed`, in one commit.
    fn save_alarms(&self, changed: &[Alarm], removed: &[u64]) -> Result<(), DataError>;

    /// Every dashboard kept, in no particular order.
    fn dashboards(&self) -> Result<Vec<Dashboard>, DataError>;

    /// The dashboard `id`, if kept.
    fn dashboard(&self, id: &str) -> Result<Option<Dashboard>, DataError>;

    /// Keeps `dashboard`, replacing the one of its id.
    fn save_dashboard(&self, dashboard: &Dashboard) -> Result<(), DataError>;

    /// Removes the dashboard `id`; whether there was one.
    fn delete_dashboard(&self, id: &str) -> Result<bool, DataError>;

    /// Keeps `examples` if this store has never been given any (its first start), in one
    /// commit; whether it did. Deleted examples do not come back.
    fn seed_dashboards(&self, examples: &[Dashboard]) -> Result<bool, DataError>;
}
