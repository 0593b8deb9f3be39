//! Recorded history: what [`crate::Storage`] keeps of the messages the gateway's recorder
//! saw, and how it is asked for.

pub(crate) mod chunk;
pub mod numbers;

use bytes::Bytes;
use kite_mqtt::QoS;
use kite_mqtt::codec::Props;

/// A time: milliseconds since the Unix epoch.
pub type Millis = u64;

/// Buckets a series query may ask for at most.
pub const MAX_POINTS: usize = 10_000;

/// One message to record.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its topic name.
    pub topic: String,
    /// The message as it is kept.
    pub message: Stored,
}

/// One recorded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// When it was recorded (ms since the epoch). Within a topic, times never go backwards:
    /// a clock stepped back records at the topic's last time.
    pub t: Millis,
    /// Its payload, whole.
    pub payload: Bytes,
    /// The QoS it was published with (as delivered to the recorder).
    pub qos: QoS,
    /// Its RETAIN flag as delivered (a retained message sent on subscribing has it).
    pub retain: bool,
    /// Its MQTT 5 properties.
    pub properties: Props,
}

/// A closed interval of times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first time included.
    pub from: Millis,
    /// The last time included (≥ `from`).
    pub to: Millis,
}

impl Span {
    /// All of time.
    pub const ALL: Self = Self {
        from: 0,
        to: Millis::MAX,
    };

    /// Whether `t` is in it.
    pub fn contains(&self, t: Millis) -> bool {
        self.from <= t && t <= self.to
    }
}

/// One page of a topic's messages, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The messages.
    pub messages: Vec<Stored>,
    /// Whether older messages in the span were left out (ask again with `to` before the last).
    pub more: bool,
}

/// A recorded topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    /// Its name.
    pub topic: String,
    /// Messages kept.
    pub count: u64,
    /// The oldest kept message's time.
    pub first: Millis,
    /// The newest one's.
    pub last: Millis,
    /// The numeric fields charted (JSON Pointers; `""`: the payload itself), in the order
    /// they were first seen.
    pub fields: Vec<String>,
}

/// One bucket of a downsampled series (M4: first, last, min and max).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The bucket's start.
    pub t: Millis,
    /// Its first value.
    pub first: f64,
    /// Its last value.
    pub last: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// How many points it holds.
    pub count: u64,
}

/// One topic's field, downsampled.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The topic.
    pub topic: String,
    /// The field (`""`: the payload itself).
    pub field: String,
    /// The non-empty buckets, in time order.
    pub buckets: Vec<Bucket>,
}

/// What a store holds, for metrics and the API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes counted against `max_bytes`.
    pub bytes: u64,
    /// Topics recorded.
    pub topics: u64,
    /// Messages kept.
    pub messages: u64,
    /// Messages removed to stay within `max_bytes`, since the store was created.
    pub dropped: u64,
    /// Messages removed for their age (`retention_days`), since the store was created.
    pub expired: u64,
}

/// Why a query has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `field` names no numbers recorded for the topics asked.
    #[error(
        "field {field:?}: no numbers are recorded under it for {topic}; recorded fields: {known}"
    )]
    UnknownField {
        /// The field asked.
        field: String,
        /// The topic or filter asked.
        topic: String,
        /// The fields recorded, listed.
        known: String,
    },
    /// `points` is 0 or above [`MAX_POINTS`].
    #[error("points = {0}: ask for 1 to {MAX_POINTS} buckets")]
    Points(usize),
    /// `field` is not a JSON Pointer.
    #[error("field: {0}")]
    Field(String),
}
