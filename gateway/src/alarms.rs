//! Alarms, sans IO: rules checked from JSON (the API's body; `[[alarm]]` has the same keys),
//! and the evaluator — messages, device states and the clock in; alarms raised,
//! acknowledged, re-notified and cleared out, each as a [`Notice`] for the notifiers.
//!
//! A rule watches each *source* on its own: every topic its filter matches (or, for
//! `offline`, every device it names). For a source, the condition must hold for `for_secs`
//! before an alarm is raised; once raised it clears when the condition no longer holds — or,
//! with `clear_value`, only once the value is on the other side of it (raised above 30,
//! cleared below 28). An alarm that clears and comes back is a new occurrence (a new id).
//! While active and not acknowledged it is notified again every `renotify_mins`.

use std::collections::{BTreeMap, HashMap};

use kite_data::{Alarm, AlarmRule, AlarmState, Device, Millis, Notify, Op, Presence, Severity};
use serde_json::Value;

/// Cleared alarms kept at most (the oldest go first).
pub const MAX_CLEARED: usize = 10_000;

/// Sources one rule watches at most (topics or devices): beyond, new ones are not watched
/// (and counted).
pub const MAX_SOURCES_PER_RULE: usize = 100_000;

/// A bad rule: the key at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The key (`name`, `op`, `notify.webhook` ...).
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn rule_error(field: &str, message: impl Into<String>) -> RuleError {
    RuleError {
        field: field.to_owned(),
        message: message.into(),
    }
}

const KEYS: [&str; 11] = [
    "name",
    "topic",
    "field",
    "device",
    "op",
    "value",
    "for_secs",
    "clear_value",
    "severity",
    "renotify_mins",
    "notify",
];

/// A rule from JSON, checked key by key; the first problem is the error.
pub fn parse_rule(v: &Value) -> Result<AlarmRule, RuleError> {
    let Some(o) = v.as_object() else {
        return Err(rule_error(
            "body",
            "an alarm rule is a JSON object, e.g. {\"name\": \"hot\", \"topic\": \"plant/+/temp\", \"op\": \">\", \"value\": 30, \"severity\": \"major\"}",
        ));
    };
    if let Some(k) = o.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(rule_error(
            k,
            format!("unknown key {k:?}: a rule has {}", KEYS.join(", ")),
        ));
    }
    let text = |key: &str| -> Result<Option<&str>, RuleError> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(rule_error(key, format!("{key} must be text, not {other}"))),
        }
    };
    let name = text("name")?.ok_or_else(|| rule_error("name", "name is required"))?;
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(rule_error(
            "name",
            format!(
                "name {name:?}: 1 to 64 letters, digits, - and _ (it is a topic level of the rule's MQTT notices)"
            ),
        ));
    }
    let op_text = text("op")?.ok_or_else(|| {
        rule_error(
            "op",
            "op is required: one of >, >=, <, <=, ==, !=, silent_for, offline",
        )
    })?;
    let op = Op::parse(op_text).ok_or_else(|| {
        rule_error(
            "op",
            format!("op {op_text:?}: one of >, >=, <, <=, ==, !=, silent_for, offline"),
        )
    })?;
    let present = |key: &str| o.get(key).is_some_and(|v| !v.is_null());
    let absent = |key: &str, why: &str| -> Result<(), RuleError> {
        if present(key) {
            Err(rule_error(
                key,
                format!("{key} does not apply {why}: remove it"),
            ))
        } else {
            Ok(())
        }
    };
    let (topic, device) = if op == Op::Offline {
        absent(
            "topic",
            "to op \"offline\" (it watches devices: give device)",
        )?;
        absent("field", "to op \"offline\"")?;
        absent("value", "to op \"offline\"")?;
        let device = text("device")?.ok_or_else(|| {
            rule_error(
                "device",
                "op \"offline\" needs device: a device id, or \"*\" for every device",
            )
        })?;
        if device.is_empty() || device.contains(['/', '+', '#']) && device != "*" {
            return Err(rule_error(
                "device",
                format!("device {device:?}: a device id (no /, + or #), or \"*\" for every device"),
            ));
        }
        (None, Some(device.to_owned()))
    } else {
        absent("device", "to this op (only to \"offline\")")?;
        let topic = text("topic")?.ok_or_else(|| {
            rule_error(
                "topic",
                "topic is required: a topic or filter, e.g. \"plant/+/temp\"",
            )
        })?;
        if let Err(e) = kite_mqtt::topic::validate_filter(topic) {
            return Err(rule_error("topic", format!("topic {topic:?}: {e}")));
        }
        if topic.starts_with("$share/") {
            return Err(rule_error(
                "topic",
                format!(
                    "topic {topic:?} is a shared subscription: give the filter without $share/<group>/"
                ),
            ));
        }
        (Some(topic.to_owned()), None)
    };
    let field = text("field")?.map(str::to_owned);
    if let Some(f) = &field {
        if op == Op::SilentFor {
            return Err(rule_error(
                "field",
                "field does not apply to op \"silent_for\": remove it",
            ));
        }
        if !f.is_empty() && !f.starts_with('/') {
            return Err(rule_error(
                "field",
                format!(
                    "field {f:?}: a JSON Pointer starts with / (e.g. \"/temp\", \"/sensors/0/value\")"
                ),
            ));
        }
    }
    let value = o.get("value").filter(|v| !v.is_null()).cloned();
    match op {
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            if !value.as_ref().is_some_and(Value::is_number) {
                return Err(rule_error(
                    "value",
                    format!("op {op_text:?} needs a number as value, e.g. 30"),
                ));
            }
        }
        Op::Eq | Op::Ne => {
            if !value
                .as_ref()
                .is_some_and(|v| v.is_number() || v.is_string())
            {
                return Err(rule_error(
                    "value",
                    format!("op {op_text:?} needs a number or text as value, e.g. 1 or \"open\""),
                ));
            }
        }
        Op::SilentFor => {
            if !value
                .as_ref()
                .and_then(Value::as_u64)
                .is_some_and(|s| (1..=31_536_000).contains(&s))
            {
                return Err(rule_error(
                    "value",
                    "op \"silent_for\" needs value: the seconds of silence, 1 to 31536000 (e.g. 300)",
                ));
            }
        }
        Op::Offline => {}
    }
    let for_secs = match o.get("for_secs") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64() {
            Some(s @ 0..=86_400) => s,
            _ => {
                return Err(rule_error(
                    "for_secs",
                    format!("for_secs = {v}: whole seconds, 0 to 86400"),
                ));
            }
        },
    };
    let clear_value = match o.get("clear_value") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let Some(c) = v.as_f64() else {
                return Err(rule_error(
                    "clear_value",
                    format!("clear_value = {v}: a number"),
                ));
            };
            let raise = value.as_ref().and_then(Value::as_f64).unwrap_or(f64::NAN);
            let ok = match op {
                Op::Gt | Op::Ge => c <= raise,
                Op::Lt | Op::Le => c >= raise,
                _ => {
                    return Err(rule_error(
                        "clear_value",
                        "clear_value applies to >, >=, < and <= only: remove it",
                    ));
                }
            };
            if !ok {
                let side = if matches!(op, Op::Gt | Op::Ge) {
                    "at or below"
                } else {
                    "at or above"
                };
                return Err(rule_error(
                    "clear_value",
                    format!(
                        "clear_value {c} must be {side} value {raise} (raise above 30, clear below 28)"
                    ),
                ));
            }
            Some(c)
        }
    };
    let severity_text = text("severity")?.ok_or_else(|| {
        rule_error(
            "severity",
            "severity is required: critical, major, minor or warning",
        )
    })?;
    let severity = Severity::parse(severity_text).ok_or_else(|| {
        rule_error(
            "severity",
            format!("severity {severity_text:?}: critical, major, minor or warning"),
        )
    })?;
    let renotify_mins = match o.get("renotify_mins") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(m) if (0.05..=10_080.0).contains(&m) => Some(m),
            _ => {
                return Err(rule_error(
                    "renotify_mins",
                    format!("renotify_mins = {v}: minutes from 0.05 (3 s) to 10080 (a week)"),
                ));
            }
        },
    };
    let notify = parse_notify(o.get("notify"))?;
    Ok(AlarmRule {
        name: name.to_owned(),
        topic,
        field,
        device,
        op,
        value,
        for_secs,
        clear_value,
        severity,
        renotify_mins,
        notify,
    })
}

fn parse_notify(v: Option<&Value>) -> Result<Notify, RuleError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Notify::default());
    };
    let Some(o) = v.as_object() else {
        return Err(rule_error(
            "notify",
            "notify is an object: {\"webhook\": \"https://...\", \"mqtt\": true, \"browser\": true}",
        ));
    };
    if let Some(k) = o
        .keys()
        .find(|k| !["webhook", "mqtt", "browser"].contains(&k.as_str()))
    {
        return Err(rule_error(
            &format!("notify.{k}"),
            format!("unknown key {k:?}: notify has webhook, mqtt and browser"),
        ));
    }
    let flag = |key: &str| -> Result<bool, RuleError> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(rule_error(
                &format!("notify.{key}"),
                format!("notify.{key} is true or false, not {other}"),
            )),
        }
    };
    let webhook = match o.get("webhook") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => {
            crate::webhook::Target::parse(url).map_err(|e| {
                rule_error("notify.webhook", format!("notify.webhook {url:?}: {e}"))
            })?;
            Some(url.clone())
        }
        Some(other) => {
            return Err(rule_error(
                "notify.webhook",
                format!("notify.webhook is a URL (http:// or https://), not {other}"),
            ));
        }
    };
    Ok(Notify {
        webhook,
        mqtt: flag("mqtt")?,
        browser: flag("browser")?,
    })
}

/// What happened to an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Raised,
    Renotified,
    Acknowledged,
    Cleared,
}

impl Event {
    /// Its name in notifications.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raised => "raised",
            Self::Renotified => "renotified",
            Self::Acknowledged => "acknowledged",
            Self::Cleared => "cleared",
        }
    }
}

/// A notification to send: what happened, the alarm as it is now, and where to.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub event: Event,
    pub alarm: Alarm,
    pub notify: Notify,
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// No alarm has this id.
    Unknown,
    /// Someone acknowledged it already.
    Already,
}

/// What a rule watches of one source.
#[derive(Debug, Default)]
struct Watch {
    /// Since when the condition holds (`None`: it does not).
    holds_since: Option<Millis>,
    /// The last value (for the alarm's text and `value`).
    last: Option<Value>,
    /// When a message last arrived (for `silent_for`).
    last_t: Millis,
    /// Its open alarm (active or acknowledged).
    open: Option<u64>,
}

/// A rule and what it watches.
#[derive(Debug)]
struct Watched {
    rule: AlarmRule,
    sources: HashMap<String, Watch, foldhash::fast::RandomState>,
}

/// The evaluator (see the module docs).
#[derive(Debug, Default)]
pub struct Evaluator {
    rules: Vec<Watched>,
    alarms: BTreeMap<u64, Alarm>,
    next_id: u64,
    notices: Vec<Notice>,
    changed: Vec<u64>,
    removed: Vec<u64>,
    /// Sources not watched beyond [`MAX_SOURCES_PER_RULE`].
    pub refused: u64,
}

/// The number or text a message gives a rule (`None`: the message has none there).
fn observed(payload: &[u8], field: Option<&str>) -> Option<Value> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    match field {
        // A number as it was written (35 stays 35, not 35.0); else the text.
        None | Some("") => match serde_json::from_str::<Value>(text) {
            Ok(v @ (Value::Number(_) | Value::String(_) | Value::Bool(_))) => Some(v),
            _ => Some(Value::String(text.to_owned())),
        },
        Some(pointer) => {
            if !text.starts_with(['{', '[']) {
                return None;
            }
            let v: Value = serde_json::from_str(text).ok()?;
            match v.pointer(pointer)? {
                v @ (Value::Number(_) | Value::String(_) | Value::Bool(_)) => Some(v.clone()),
                _ => None,
            }
        }
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether `v` satisfies the rule's comparison (`None`: it cannot be compared).
fn holds(rule: &AlarmRule, v: &Value) -> Option<bool> {
    let limit = rule.value.as_ref()?;
    match rule.op {
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            let (x, l) = (number(v)?, limit.as_f64()?);
            Some(match rule.op {
                Op::Gt => x > l,
                Op::Ge => x >= l,
                Op::Lt => x < l,
                _ => x <= l,
            })
        }
        Op::Eq | Op::Ne => {
            let same = match limit {
                Value::Number(l) => number(v)? == l.as_f64()?,
                Value::String(l) => match v {
                    Value::String(s) => s == l,
                    // A number or boolean payload against text: as JSON writes it.
                    other => {
                        let written = other.to_string();
                        written == *l
                    }
                },
                _ => return None,
            };
            Some(if rule.op == Op::Eq { same } else { !same })
        }
        Op::SilentFor | Op::Offline => None,
    }
}

/// Whether an open alarm of `rule` clears at `v` (hysteresis with `clear_value`).
fn clears(rule: &AlarmRule, v: &Value) -> Option<bool> {
    match (rule.clear_value, rule.op) {
        (Some(c), Op::Gt | Op::Ge) => Some(number(v)? < c),
        (Some(c), Op::Lt | Op::Le) => Some(number(v)? > c),
        _ => holds(rule, v).map(|h| !h),
    }
}

/// For people: `plant/a/temp /temp = 31.5 > 30`.
fn describe(rule: &AlarmRule, source: &str, v: Option<&Value>) -> String {
    match rule.op {
        Op::Offline => format!("device {source} is offline"),
        Op::SilentFor => format!(
            "no message on {source} for {} s",
            rule.value.as_ref().and_then(Value::as_u64).unwrap_or(0)
        ),
        _ => format!(
            "{source}{} = {} {} {}",
            rule.field
                .as_deref()
                .map(|f| format!(" {f}"))
                .unwrap_or_default(),
            v.map_or_else(|| "?".to_owned(), Value::to_string),
            rule.op.as_str(),
            rule.value
                .as_ref()
                .map_or_else(String::new, Value::to_string)
        ),
    }
}

impl Evaluator {
    /// An evaluator with `rules`, and the alarms kept from before (`kept`): the open ones
    /// stay open (their watches start again from the next message).
    pub fn new(rules: Vec<AlarmRule>, kept: Vec<Alarm>) -> Self {
        let mut e = Self {
            next_id: kept.iter().map(|a| a.id).max().unwrap_or(0) + 1,
            alarms: kept.into_iter().map(|a| (a.id, a)).collect(),
            ..Self::default()
        };
        e.rules = rules
            .into_iter()
            .map(|rule| Watched {
                rule,
                sources: HashMap::default(),
            })
            .collect();
        let open: Vec<(String, String, u64)> = e
            .alarms
            .values()
            .filter(|a| a.state != AlarmState::Cleared)
            .map(|a| (a.rule.clone(), a.source.clone(), a.id))
            .collect();
        for (rule, source, id) in open {
            match e.rules.iter_mut().find(|w| w.rule.name == rule) {
                Some(w) => {
                    w.sources.entry(source).or_default().open = Some(id);
                }
                // Its rule is gone (the config changed while the gateway was down).
                None => e.clear(id, kite_data::now_ms(), "its rule no longer exists"),
            }
        }
        e
    }

    /// The rules, in order.
    pub fn rules(&self) -> impl Iterator<Item = &AlarmRule> {
        self.rules.iter().map(|w| &w.rule)
    }

    /// The filters to subscribe to, each once.
    pub fn filters(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for w in &self.rules {
            if let Some(t) = &w.rule.topic
                && !out.contains(t)
            {
                out.push(t.clone());
            }
        }
        out
    }

    /// Replaces the rules: a rule that is gone or changed clears its open alarms (`why`) and
    /// starts watching afresh; an unchanged one keeps its watches.
    pub fn set_rules(&mut self, rules: Vec<AlarmRule>, now: Millis) {
        let mut old: Vec<Watched> = std::mem::take(&mut self.rules);
        for rule in rules {
            match old.iter().position(|w| w.rule == rule) {
                Some(i) => self.rules.push(old.swap_remove(i)),
                None => self.rules.push(Watched {
                    rule,
                    sources: HashMap::default(),
                }),
            }
        }
        for w in old {
            let why = if self.rules.iter().any(|n| n.rule.name == w.rule.name) {
                "its rule was changed"
            } else {
                "its rule was deleted"
            };
            for watch in w.sources.values() {
                if let Some(id) = watch.open {
                    self.clear(id, now, why);
                }
            }
        }
    }

    /// A message on `topic` (retained ones say what holds now, as live ones do).
    pub fn on_message(&mut self, topic: &str, payload: &[u8], now: Millis) {
        for i in 0..self.rules.len() {
            let w = &self.rules[i];
            let Some(filter) = &w.rule.topic else {
                continue;
            };
            if !kite_mqtt::topic::matches(filter, topic) {
                continue;
            }
            if w.rule.op == Op::SilentFor {
                let Some(watch) = self.watch(i, topic) else {
                    continue;
                };
                watch.last_t = now;
                if let Some(id) = watch.open.take() {
                    self.clear(id, now, "a message arrived");
                }
                continue;
            }
            let Some(v) = observed(payload, w.rule.field.as_deref()) else {
                continue;
            };
            let (Some(h), Some(c)) = (holds(&w.rule, &v), clears(&w.rule, &v)) else {
                continue;
            };
            let for_ms = w.rule.for_secs * 1000;
            let Some(watch) = self.watch(i, topic) else {
                continue;
            };
            watch.last_t = now;
            watch.last = Some(v);
            if watch.open.is_some() {
                if c {
                    watch.holds_since = None;
                    if let Some(id) = watch.open.take() {
                        self.clear(id, now, "the value is back");
                    }
                }
                continue;
            }
            if !h {
                watch.holds_since = None;
                continue;
            }
            let since = *watch.holds_since.get_or_insert(now);
            if now.saturating_sub(since) >= for_ms {
                self.raise(i, topic, since, now);
            }
        }
    }

    /// The watch of `source` under rule `i`, created if new (and if there is room).
    fn watch(&mut self, i: usize, source: &str) -> Option<&mut Watch> {
        let w = self.rules.get_mut(i)?;
        if !w.sources.contains_key(source) {
            if w.sources.len() >= MAX_SOURCES_PER_RULE {
                self.refused += 1;
                return None;
            }
            w.sources.insert(source.to_owned(), Watch::default());
        }
        w.sources.get_mut(source)
    }

    /// The devices' states (from the device monitor), for `offline` rules.
    pub fn on_devices<'d>(&mut self, devices: impl Iterator<Item = &'d Device>, now: Millis) {
        if !self.rules.iter().any(|w| w.rule.op == Op::Offline) {
            return;
        }
        for d in devices {
            for i in 0..self.rules.len() {
                let w = &self.rules[i];
                if w.rule.op != Op::Offline
                    || w.rule
                        .device
                        .as_deref()
                        .is_none_or(|x| x != "*" && x != d.id)
                {
                    continue;
                }
                let for_ms = w.rule.for_secs * 1000;
                let offline = d.state == Presence::Offline;
                // Most devices are online and unwatched: nothing to keep for them.
                if !offline && !w.sources.contains_key(&d.id) {
                    continue;
                }
                let Some(watch) = self.watch(i, &d.id) else {
                    continue;
                };
                watch.last = d.last_seen.map(Value::from);
                if !offline {
                    watch.holds_since = None;
                    if let Some(id) = watch.open.take() {
                        self.clear(id, now, "the device is back");
                    }
                    continue;
                }
                if watch.open.is_some() {
                    continue;
                }
                let since = *watch.holds_since.get_or_insert(d.since);
                if now.saturating_sub(since) >= for_ms {
                    self.raise(i, &d.id, since, now);
                }
            }
        }
    }

    /// The clock: conditions that have held long enough, silences, renotifications.
    pub fn tick(&mut self, now: Millis) {
        let mut due: Vec<(usize, String, Millis)> = Vec::new();
        for (i, w) in self.rules.iter().enumerate() {
            let for_ms = w.rule.for_secs * 1000;
            let silent_ms = match w.rule.op {
                Op::SilentFor => w
                    .rule
                    .value
                    .as_ref()
                    .and_then(Value::as_u64)
                    .map(|s| s * 1000),
                _ => None,
            };
            for (source, watch) in &w.sources {
                if watch.open.is_some() {
                    continue;
                }
                match silent_ms {
                    Some(s) => {
                        if now.saturating_sub(watch.last_t) >= s + for_ms {
                            due.push((i, source.clone(), watch.last_t + s));
                        }
                    }
                    None => {
                        if let Some(since) = watch.holds_since
                            && now.saturating_sub(since) >= for_ms
                        {
                            due.push((i, source.clone(), since));
                        }
                    }
                }
            }
        }
        for (i, source, since) in due {
            self.raise(i, &source, since, now);
        }
        // Renotify what is active and not acknowledged.
        let mut renotify = Vec::new();
        for w in &self.rules {
            let Some(mins) = w.rule.renotify_mins else {
                continue;
            };
            let every = (mins * 60_000.0) as u64;
            for watch in w.sources.values() {
                if let Some(id) = watch.open
                    && let Some(a) = self.alarms.get(&id)
                    && a.state == AlarmState::Active
                    && now.saturating_sub(a.notified_at) >= every
                {
                    renotify.push((id, w.rule.notify.clone()));
                }
            }
        }
        for (id, notify) in renotify {
            if let Some(a) = self.alarms.get_mut(&id) {
                a.notified += 1;
                a.notified_at = now;
                self.changed.push(id);
                self.notices.push(Notice {
                    event: Event::Renotified,
                    alarm: a.clone(),
                    notify,
                });
            }
        }
    }

    fn raise(&mut self, i: usize, source: &str, since: Millis, now: Millis) {
        let id = self.next_id;
        let Some(w) = self.rules.get_mut(i) else {
            return;
        };
        let Some(watch) = w.sources.get_mut(source) else {
            return;
        };
        if watch.open.is_some() {
            return;
        }
        self.next_id += 1;
        watch.open = Some(id);
        watch.holds_since = None;
        let alarm = Alarm {
            id,
            rule: w.rule.name.clone(),
            source: source.to_owned(),
            severity: w.rule.severity,
            state: AlarmState::Active,
            since,
            raised_at: now,
            value: watch.last.clone(),
            text: describe(&w.rule, source, watch.last.as_ref()),
            acknowledged_by: None,
            acknowledged_at: None,
            cleared_at: None,
            cleared_why: None,
            notified: 1,
            notified_at: now,
        };
        self.notices.push(Notice {
            event: Event::Raised,
            alarm: alarm.clone(),
            notify: w.rule.notify.clone(),
        });
        self.alarms.insert(id, alarm);
        self.changed.push(id);
    }

    fn clear(&mut self, id: u64, now: Millis, why: &str) {
        let notify = self.notify_of(id);
        let Some(a) = self.alarms.get_mut(&id) else {
            return;
        };
        if a.state == AlarmState::Cleared {
            return;
        }
        a.state = AlarmState::Cleared;
        a.cleared_at = Some(now);
        a.cleared_why = Some(why.to_owned());
        self.changed.push(id);
        self.notices.push(Notice {
            event: Event::Cleared,
            alarm: a.clone(),
            notify,
        });
        // The history is bounded: the oldest cleared go first.
        let cleared = self
            .alarms
            .values()
            .filter(|a| a.state == AlarmState::Cleared)
            .count();
        if cleared > MAX_CLEARED {
            let oldest: Vec<u64> = self
                .alarms
                .values()
                .filter(|a| a.state == AlarmState::Cleared)
                .take(cleared - MAX_CLEARED)
                .map(|a| a.id)
                .collect();
            for id in oldest {
                self.alarms.remove(&id);
                self.removed.push(id);
            }
        }
    }

    fn notify_of(&self, id: u64) -> Notify {
        let rule = self.alarms.get(&id).map(|a| a.rule.as_str());
        self.rules
            .iter()
            .find(|w| Some(w.rule.name.as_str()) == rule)
            .map(|w| w.rule.notify.clone())
            .unwrap_or_default()
    }

    /// `user` acknowledges alarm `id` (active or cleared, once).
    pub fn acknowledge(&mut self, id: u64, user: &str, now: Millis) -> Result<Alarm, AckError> {
        let notify = self.notify_of(id);
        let a = self.alarms.get_mut(&id).ok_or(AckError::Unknown)?;
        if a.acknowledged_by.is_some() {
            return Err(AckError::Already);
        }
        a.acknowledged_by = Some(user.to_owned());
        a.acknowledged_at = Some(now);
        if a.state == AlarmState::Active {
            a.state = AlarmState::Acknowledged;
        }
        let a = a.clone();
        self.changed.push(id);
        self.notices.push(Notice {
            event: Event::Acknowledged,
            alarm: a.clone(),
            notify,
        });
        Ok(a)
    }

    /// One alarm.
    pub fn get(&self, id: u64) -> Option<&Alarm> {
        self.alarms.get(&id)
    }

    /// Every alarm kept, oldest first.
    pub fn alarms(&self) -> impl DoubleEndedIterator<Item = &Alarm> {
        self.alarms.values()
    }

    /// The notifications to send since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The alarms changed and removed since the last call (to be stored).
    pub fn take_changes(&mut self) -> (Vec<Alarm>, Vec<u64>) {
        let mut ids = std::mem::take(&mut self.changed);
        ids.sort_unstable();
        ids.dedup();
        let changed = ids
            .iter()
            .filter_map(|id| self.alarms.get(id).cloned())
            .collect();
        (changed, std::mem::take(&mut self.removed))
    }

    /// Open alarms by state and severity: `(active, acknowledged)` per severity (in
    /// [`Severity::ALL`]'s order), and how many cleared ones are kept.
    pub fn counts(&self) -> ([(u64, u64); 4], u64) {
        let mut n = [(0u64, 0u64); 4];
        let mut cleared = 0;
        for a in self.alarms.values() {
            let i = Severity::ALL
                .iter()
                .position(|s| *s == a.severity)
                .unwrap_or(0);
            match a.state {
                AlarmState::Active => n[i].0 += 1,
                AlarmState::Acknowledged => n[i].1 += 1,
                AlarmState::Cleared => cleared += 1,
            }
        }
        (n, cleared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> AlarmRule {
        parse_rule(&v).unwrap()
    }

    fn hot() -> AlarmRule {
        rule(
            json!({"name": "hot", "topic": "plant/+/temp", "field": "/temp", "op": ">", "value": 30,
            "for_secs": 5, "clear_value": 28, "severity": "major", "renotify_mins": 1,
            "notify": {"webhook": "http://127.0.0.1:9/hook", "mqtt": true}}),
        )
    }

    fn temp(e: &mut Evaluator, t: f64, now: Millis) {
        e.on_message("plant/a/temp", format!("{{\"temp\": {t}}}").as_bytes(), now);
    }

    fn events(e: &mut Evaluator) -> Vec<(Event, AlarmState)> {
        e.take_notices()
            .into_iter()
            .map(|n| (n.event, n.alarm.state))
            .collect()
    }

    #[test]
    fn rules_are_checked_key_by_key() {
        let bad = |v: Value| parse_rule(&v).unwrap_err().field;
        assert_eq!(bad(json!([])), "body");
        assert_eq!(bad(json!({"name": "a b", "op": ">"})), "name");
        assert_eq!(bad(json!({"name": "a", "op": "~"})), "op");
        assert_eq!(
            bad(json!({"name": "a", "op": ">", "topic": "a/#/b"})),
            "topic"
        );
        assert_eq!(
            bad(json!({"name": "a", "op": ">", "topic": "a", "value": "x"})),
            "value"
        );
        assert_eq!(
            bad(
                json!({"name": "a", "op": ">", "topic": "a", "value": 30, "clear_value": 31, "severity": "major"})
            ),
            "clear_value"
        );
        assert_eq!(
            bad(json!({"name": "a", "op": ">", "topic": "a", "value": 1, "severity": "bad"})),
            "severity"
        );
        assert_eq!(
            bad(json!({"name": "a", "op": "offline", "topic": "a", "severity": "major"})),
            "topic"
        );
        assert_eq!(
            bad(
                json!({"name": "a", "op": "silent_for", "topic": "a", "value": 0, "severity": "major"})
            ),
            "value"
        );
        assert_eq!(
            bad(
                json!({"name": "a", "op": ">", "topic": "a", "value": 1, "severity": "major", "notify": {"webhook": "ftp://x"}})
            ),
            "notify.webhook"
        );
        assert_eq!(
            bad(
                json!({"name": "a", "op": ">", "topic": "a", "value": 1, "severity": "major", "notify": {"sms": true}})
            ),
            "notify.sms"
        );
        assert_eq!(
            bad(
                json!({"name": "a", "op": ">", "topic": "a", "value": 1, "severity": "major", "extra": 1})
            ),
            "extra"
        );
        assert_eq!(hot().clear_value, Some(28.0));
    }

    /// 5 s above 30: raised once, at 5 s; re-notified each minute while not acknowledged;
    /// acknowledged; between 28 and 30 it holds (hysteresis); below 28 it clears; above 30
    /// again is a new occurrence.
    #[test]
    fn an_alarm_needs_its_time_renotifies_and_clears_with_hysteresis() {
        let mut e = Evaluator::new(vec![hot()], Vec::new());
        temp(&mut e, 31.0, 1_000);
        e.tick(5_999);
        assert!(events(&mut e).is_empty());
        temp(&mut e, 32.0, 3_000);
        e.tick(6_000);
        assert_eq!(events(&mut e), [(Event::Raised, AlarmState::Active)]);
        let a = e.alarms().next().unwrap().clone();
        assert_eq!(
            (a.since, a.raised_at, a.value),
            (1_000, 6_000, Some(json!(32)))
        );
        assert_eq!(a.text, "plant/a/temp /temp = 32 > 30");
        e.tick(7_000);
        temp(&mut e, 33.0, 8_000);
        assert!(events(&mut e).is_empty(), "raised once");
        e.tick(66_000);
        assert_eq!(events(&mut e), [(Event::Renotified, AlarmState::Active)]);
        let acked = e.acknowledge(a.id, "ops", 70_000).unwrap();
        assert_eq!(acked.acknowledged_by.as_deref(), Some("ops"));
        assert_eq!(e.acknowledge(a.id, "ops", 70_001), Err(AckError::Already));
        assert_eq!(
            events(&mut e),
            [(Event::Acknowledged, AlarmState::Acknowledged)]
        );
        e.tick(200_000);
        assert!(events(&mut e).is_empty(), "acknowledged: no renotification");
        temp(&mut e, 29.0, 201_000);
        assert!(events(&mut e).is_empty(), "29 is above the clear value");
        temp(&mut e, 27.5, 202_000);
        assert_eq!(events(&mut e), [(Event::Cleared, AlarmState::Cleared)]);
        temp(&mut e, 31.0, 203_000);
        e.tick(208_000);
        let n = e.take_notices();
        assert_eq!(n.len(), 1);
        assert_ne!(n[0].alarm.id, a.id, "a new occurrence");
        let (changed, removed) = e.take_changes();
        assert_eq!((changed.len(), removed.len()), (2, 0));
    }

    #[test]
    fn a_value_that_stops_holding_restarts_the_wait() {
        let mut e = Evaluator::new(vec![hot()], Vec::new());
        temp(&mut e, 31.0, 0);
        temp(&mut e, 25.0, 4_000);
        temp(&mut e, 31.0, 4_500);
        e.tick(6_000);
        assert!(events(&mut e).is_empty());
        e.tick(9_500);
        assert_eq!(events(&mut e), [(Event::Raised, AlarmState::Active)]);
    }

    #[test]
    fn silence_raises_and_a_message_clears() {
        let r = rule(
            json!({"name": "quiet", "topic": "plant/+/temp", "op": "silent_for", "value": 10, "severity": "minor"}),
        );
        let mut e = Evaluator::new(vec![r], Vec::new());
        e.on_message("plant/b/temp", b"1", 1_000);
        e.tick(10_999);
        assert!(events(&mut e).is_empty());
        e.tick(11_000);
        let n = e.take_notices();
        assert_eq!(n[0].event, Event::Raised);
        assert_eq!(n[0].alarm.text, "no message on plant/b/temp for 10 s");
        e.on_message("plant/b/temp", b"2", 12_000);
        assert_eq!(events(&mut e), [(Event::Cleared, AlarmState::Cleared)]);
    }

    #[test]
    fn text_and_numbers_compare_as_written() {
        let r = rule(
            json!({"name": "open", "topic": "door", "op": "==", "value": "open", "severity": "warning"}),
        );
        let mut e = Evaluator::new(vec![r], Vec::new());
        e.on_message("door", b"closed", 0);
        assert!(events(&mut e).is_empty());
        e.on_message("door", b"open", 1);
        assert_eq!(events(&mut e), [(Event::Raised, AlarmState::Active)]);
        e.on_message("door", b"closed", 2);
        assert_eq!(events(&mut e), [(Event::Cleared, AlarmState::Cleared)]);
        // A payload that is not a number does not change a numeric rule's watch.
        let mut e = Evaluator::new(vec![hot()], Vec::new());
        e.on_message("plant/a/temp", b"not json", 0);
        e.on_message("plant/a/temp", br#"{"hum": 50}"#, 0);
        e.tick(100_000);
        assert!(events(&mut e).is_empty());
    }

    fn device(id: &str, state: Presence, since: Millis) -> Device {
        Device {
            id: id.into(),
            state,
            since,
            last_seen: Some(since),
            last_topic: None,
            said: None,
            stale_after: None,
            topics: Vec::new(),
            metrics: Default::default(),
            bd_seq: None,
        }
    }

    #[test]
    fn an_offline_device_raises_after_for_secs_and_clears_when_back() {
        let r = rule(
            json!({"name": "down", "op": "offline", "device": "*", "for_secs": 30, "severity": "critical"}),
        );
        let mut e = Evaluator::new(vec![r], Vec::new());
        let d = [
            device("a", Presence::Offline, 1_000),
            device("b", Presence::Online, 0),
        ];
        e.on_devices(d.iter(), 20_000);
        assert!(events(&mut e).is_empty());
        e.on_devices(d.iter(), 31_000);
        let n = e.take_notices();
        assert_eq!((n.len(), n[0].alarm.source.as_str()), (1, "a"));
        assert_eq!(n[0].alarm.text, "device a is offline");
        e.on_devices([device("a", Presence::Online, 40_000)].iter(), 40_000);
        assert_eq!(events(&mut e), [(Event::Cleared, AlarmState::Cleared)]);
    }

    /// Kept across a restart: an open alarm stays open and clears later; a changed rule
    /// clears its open alarms.
    #[test]
    fn open_alarms_outlive_a_restart_and_a_changed_rule_clears_them() {
        let mut e = Evaluator::new(vec![hot()], Vec::new());
        temp(&mut e, 31.0, 0);
        e.tick(5_000);
        let kept: Vec<Alarm> = e.alarms().cloned().collect();
        let mut e = Evaluator::new(vec![hot()], kept.clone());
        temp(&mut e, 27.0, 6_000);
        assert_eq!(events(&mut e), [(Event::Cleared, AlarmState::Cleared)]);
        let mut e = Evaluator::new(vec![hot()], kept);
        let mut changed = hot();
        changed.value = Some(json!(35));
        e.set_rules(vec![changed], 7_000);
        let n = e.take_notices();
        assert_eq!(
            n[0].alarm.cleared_why.as_deref(),
            Some("its rule was changed")
        );
    }
}
