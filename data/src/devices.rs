//! Devices: what the gateway's device monitor knows of each device, as [`crate::Storage`]
//! keeps it across restarts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Millis;

/// A device's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// It said so (status topic, client connection, Sparkplug BIRTH) or it is active.
    Online,
    /// It said so, or its Will / its connection's end did.
    Offline,
    /// Silent for longer than its rule allows.
    Stale,
    /// Seen, but nothing tells either way yet.
    Unknown,
}

impl Presence {
    /// Every state, in the order they are listed.
    pub const ALL: [Self; 4] = [Self::Online, Self::Offline, Self::Stale, Self::Unknown];

    /// Its name in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Stale => "stale",
            Self::Unknown => "unknown",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Where an explicit word on a device's presence came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A message on its status topic (a birth message or its Will).
    Status,
    /// Its MQTT connection to the embedded broker.
    Client,
    /// A Sparkplug B BIRTH or DEATH.
    Sparkplug,
}

/// The latest explicit word on a device's presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Said {
    /// Online (else offline).
    pub online: bool,
    /// When it was said (ms since the epoch).
    pub t: Millis,
    /// Where.
    pub source: Source,
    /// Why, for people: the status payload, or how the connection ended.
    pub detail: String,
}

/// One device as the monitor keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Its id (the `{device}` level of the topics it uses, or its client id).
    pub id: String,
    /// Its state.
    pub state: Presence,
    /// Since when (ms since the epoch).
    pub since: Millis,
    /// When a message of it last arrived, or its client last connected (ms); retained
    /// messages delivered on subscribing do not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Millis>,
    /// The topic of its last message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_topic: Option<String>,
    /// The latest explicit word on its presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub said: Option<Said>,
    /// How long it may be silent before it is stale (ms), from the rule that saw it last
    /// (`None`: no activity rule covers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<u64>,
    /// The filters its topics are under (its rules' patterns with its id), for the app.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Sparkplug B: its metrics, from its last BIRTH and the DATA since (name → value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, serde_json::Value>,
    /// Sparkplug B edge nodes: the `bdSeq` of the last NBIRTH (an NDEATH with another is
    /// stale: from an earlier session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bd_seq: Option<u64>,
}
