//! Alarms: the rules (made in the app, through the API, or in the config as `[[alarm]]`) and
//! their occurrences, as [`crate::Storage`] keeps them across restarts.

use serde::{Deserialize, Serialize};

use crate::Millis;

/// How bad an alarm is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The worst.
    Critical,
    /// Bad.
    Major,
    /// Less bad.
    Minor,
    /// Worth a look.
    Warning,
}

impl Severity {
    /// Every severity, worst first.
    pub const ALL: [Self; 4] = [Self::Critical, Self::Major, Self::Minor, Self::Warning];

    /// Its name in the API, in rules and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Major => "major",
            Self::Minor => "minor",
            Self::Warning => "warning",
        }
    }

    /// The severity named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// What a rule compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    /// No message on a topic for `value` seconds.
    #[serde(rename = "silent_for")]
    SilentFor,
    /// A device is offline (from the device monitor).
    #[serde(rename = "offline")]
    Offline,
}

impl Op {
    /// Every operator.
    pub const ALL: [Self; 8] = [
        Self::Gt,
        Self::Ge,
        Self::Lt,
        Self::Le,
        Self::Eq,
        Self::Ne,
        Self::SilentFor,
        Self::Offline,
    ];

    /// As written in a rule.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::SilentFor => "silent_for",
            Self::Offline => "offline",
        }
    }

    /// The operator written `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Where a rule's notifications go (besides the app, which lists every alarm).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    /// An HTTP(S) URL: each notification is POSTed there as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Publish the alarm on `kite/alarms/<rule>/<source>`, retained while active.
    #[serde(default)]
    pub mqtt: bool,
    /// Ask the app to show a browser notification (where the user allowed them).
    #[serde(default)]
    pub browser: bool,
}

/// A rule, checked (see the gateway's `alarms` module for the checks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmRule {
    /// Its name: letters, digits, `-` and `_` (it is a topic level of its MQTT notices).
    pub name: String,
    /// A topic or filter (all operators but `offline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// A JSON Pointer into JSON payloads (`None`: the payload itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A device id, or `*` for every device (`offline` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The comparison.
    pub op: Op,
    /// What is compared with: a number or text (`==`, `!=`), seconds (`silent_for`); none
    /// for `offline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// How long the condition must hold before the alarm is raised (s).
    #[serde(default)]
    pub for_secs: u64,
    /// Hysteresis: raised by `op value`, cleared only on the other side of this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_value: Option<f64>,
    /// How bad.
    pub severity: Severity,
    /// Notify again this often while active and not acknowledged (minutes; decimals allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renotify_mins: Option<f64>,
    /// Where notifications go.
    #[serde(default)]
    pub notify: Notify,
}

/// An alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmState {
    /// Raised, nobody acknowledged it yet.
    Active,
    /// Raised and acknowledged: still holding.
    Acknowledged,
    /// No longer holding (acknowledged or not).
    Cleared,
}

impl AlarmState {
    /// Every state.
    pub const ALL: [Self; 3] = [Self::Active, Self::Acknowledged, Self::Cleared];

    /// Its name in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Acknowledged => "acknowledged",
            Self::Cleared => "cleared",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// One occurrence of an alarm: raised once, maybe acknowledged, cleared once. An alarm that
/// clears and comes back is a new occurrence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// Its number (increasing).
    pub id: u64,
    /// The rule's name.
    pub rule: String,
    /// The topic or device it is about.
    pub source: String,
    /// Its rule's severity when raised.
    pub severity: Severity,
    /// Its state.
    pub state: AlarmState,
    /// When the condition began to hold (ms since the epoch).
    pub since: Millis,
    /// When it was raised (`since` + `for_secs`, or later).
    pub raised_at: Millis,
    /// The value that raised it (for `silent_for` and `offline`, the last seen time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// For people: what holds ("plant/a/temp /temp = 31.5 > 30").
    pub text: String,
    /// Who acknowledged it, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<Millis>,
    /// When it cleared, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_why: Option<String>,
    /// Notifications sent (the first, and each renotification).
    #[serde(default)]
    pub notified: u32,
    /// When it was last notified.
    #[serde(default)]
    pub notified_at: Millis,
}
