//! The device monitor's engine, sans IO: `[[devices]]` rules turn messages and client
//! connections into devices and their presence (online, offline, stale, unknown). The
//! monitor (`monitor.rs`) feeds it what the broker delivers and ticks it; the engine says
//! which devices changed, so that only those are stored.
//!
//! A device's state follows from three facts, whichever rules supplied them:
//! - the latest explicit word (`said`): a status message (its birth or its Will), its client
//!   connection opening or ending, a Sparkplug BIRTH or DEATH;
//! - when it was last active (`last_seen`): any live message on one of its rules' topics
//!   (retained messages delivered on subscribing are old news and do not count);
//! - how long it may be silent (`stale_after`), from the activity rule that saw it last.
//!
//! Offline when the latest word says so and nothing came after it; else stale when silent
//! for longer than allowed; else online when the word says so or it is active; else unknown.

use std::collections::HashMap;

use kite_data::{Device, Millis, Presence, Said, Source};

/// The client ids that `clients = true` leaves out unless told otherwise
/// (`except_client_ids`): the app's own sessions (`kite-` and 6 hex digits by default).
pub const APP_CLIENT_IDS: &str = "kite-*";

/// Devices kept at most: beyond, new ids are not added (and counted), so that a flood of
/// topics cannot grow the monitor without bound.
pub const MAX_DEVICES: usize = 100_000;

/// Where a rule's device ids come from: a topic pattern with `{device}` as one whole level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// As written.
    text: String,
    /// The subscription: `{device}` replaced by `+`.
    filter: String,
    /// The level that is the device id.
    at: usize,
}

impl Pattern {
    /// `text` checked: `{device}` exactly once, as a whole level, and a valid filter with it
    /// replaced by `+` (not a shared subscription).
    pub fn parse(text: &str) -> Result<Self, String> {
        let levels: Vec<&str> = text.split('/').collect();
        let at: Vec<usize> = levels
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains("{device}"))
            .map(|(i, _)| i)
            .collect();
        let at = match at[..] {
            [i] if levels[i] == "{device}" => i,
            [i] => {
                return Err(format!(
                    "{text:?}: {{device}} must be a whole level (level {:?} has more), e.g. \"plant/{{device}}/status\"",
                    levels[i]
                ));
            }
            [] => {
                return Err(format!(
                    "{text:?} has no {{device}}: put it where the device id is, e.g. \"plant/{{device}}/status\""
                ));
            }
            _ => {
                return Err(format!(
                    "{text:?} has {{device}} more than once: one level is the device id"
                ));
            }
        };
        if levels[..at].contains(&"#") {
            return Err(format!("{text:?}: {{device}} cannot come after #"));
        }
        let filter = levels
            .iter()
            .map(|l| if *l == "{device}" { "+" } else { l })
            .collect::<Vec<_>>()
            .join("/");
        kite_mqtt::topic::validate_filter(&filter)
            .map_err(|e| format!("{text:?} is not a topic filter with {{device}} as +: {e}"))?;
        if filter.starts_with("$share/") {
            return Err(format!(
                "{text:?} is a shared subscription: the monitor must see every message"
            ));
        }
        Ok(Self {
            text: text.to_owned(),
            filter,
            at,
        })
    }

    /// The filter the monitor subscribes to.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The device id in `topic`, if `topic` matches.
    pub fn device_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        if !kite_mqtt::topic::matches(&self.filter, topic) {
            return None;
        }
        topic.split('/').nth(self.at).filter(|id| !id.is_empty())
    }

    /// The pattern with `id` in place of `{device}` (the filter of that device's topics).
    fn for_device(&self, id: &str) -> String {
        self.text.replace("{device}", id)
    }
}

/// What a rule watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A status topic: payloads saying online or offline (compared trimmed, ignoring case;
    /// a JSON object's `"online"` boolean, or its `"state"`/`"status"` string, too).
    Status {
        online: Vec<String>,
        offline: Vec<String>,
    },
    /// Any message is a sign of life; silent longer than this (ms): stale.
    Activity { stale_after: u64 },
    /// The embedded broker's client connections: the client id is the device id, for the
    /// ids that match one of `ids` and none of `except` (globs: `*` is any run of
    /// characters).
    Clients {
        ids: Vec<String>,
        except: Vec<String>,
    },
    /// Sparkplug B edge nodes (`group/node`) and their devices (`group/node/device`): BIRTH
    /// and DEATH say online and offline (an NDEATH whose `bdSeq` is not the last NBIRTH's
    /// is stale and ignored), DATA is a sign of life; metrics kept from BIRTH and DATA.
    Sparkplug,
}

/// One `[[devices]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What it watches.
    pub kind: Kind,
    /// Its topics (`None` for `Clients`).
    pub pattern: Option<Pattern>,
}

/// The payloads meaning online and offline by default.
pub fn default_words() -> (Vec<String>, Vec<String>) {
    (
        vec!["online".into(), "1".into(), "true".into()],
        vec!["offline".into(), "0".into(), "false".into()],
    )
}

/// What a status payload says: `Some(true)` online, `Some(false)` offline.
fn status_word(payload: &[u8], online: &[String], offline: &[String]) -> Option<bool> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    let is = |words: &[String], w: &str| words.iter().any(|x| x.eq_ignore_ascii_case(w));
    if is(online, text) {
        return Some(true);
    }
    if is(offline, text) {
        return Some(false);
    }
    if !text.starts_with('{') {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    if let Some(b) = v.get("online").and_then(serde_json::Value::as_bool) {
        return Some(b);
    }
    let s = v
        .get("state")
        .or_else(|| v.get("status"))
        .and_then(serde_json::Value::as_str)?;
    if is(online, s) {
        Some(true)
    } else if is(offline, s) {
        Some(false)
    } else {
        None
    }
}

/// A state change, as the monitor logs and counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The device.
    pub id: String,
    /// Its state before (`None`: new).
    pub from: Option<Presence>,
    /// Its state now.
    pub to: Presence,
}

/// A device and the engine's notes on it.
#[derive(Debug)]
struct Slot {
    device: Device,
    /// The rules (bit i: rule i) whose topics it was seen on: their filters are in
    /// `device.topics`.
    rules: u64,
    /// Changed since it was last stored.
    dirty: bool,
    /// Sparkplug: metric aliases from its last BIRTH (alias → name).
    aliases: HashMap<u64, String>,
}

/// The engine: rules, devices, and what changed since the last [`Engine::take_dirty`].
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    devices: HashMap<String, Slot, foldhash::fast::RandomState>,
    /// Client id → its current connection (a later one's end is not this one's).
    conns: HashMap<String, u64>,
    changes: Vec<Change>,
    /// Devices forgotten since the last [`Engine::take_removed`] (to be removed from the store).
    removed: Vec<String>,
    /// New devices refused beyond [`MAX_DEVICES`].
    pub refused: u64,
    /// Whether a rule watches Sparkplug B.
    sparkplug: bool,
    /// Sparkplug payloads that could not be read.
    pub bad_payloads: u64,
    /// Sparkplug NDEATHs ignored: their `bdSeq` was not the node's session's.
    pub stale_deaths: u64,
}

impl Engine {
    /// An engine with `rules` and the devices kept from before (`kept`), as of `now`: a
    /// device whose client was connected when the gateway stopped is offline now (its
    /// connection ended with the embedded broker).
    pub fn new(rules: Vec<Rule>, kept: Vec<Device>, now: Millis) -> Self {
        let sparkplug = rules.iter().any(|r| r.kind == Kind::Sparkplug);
        let mut e = Self {
            sparkplug,
            bad_payloads: 0,
            stale_deaths: 0,
            rules,
            devices: HashMap::with_capacity_and_hasher(kept.len(), Default::default()),
            conns: HashMap::new(),
            changes: Vec::new(),
            removed: Vec::new(),
            refused: 0,
        };
        for mut device in kept {
            let mut dirty = false;
            if let Some(said) = &mut device.said
                && said.source == Source::Client
                && said.online
            {
                *said = Said {
                    online: false,
                    t: now,
                    source: Source::Client,
                    detail: "the gateway (and its broker) restarted".into(),
                };
                dirty = true;
            }
            let rules = e.rules_of(&device);
            e.devices.insert(
                device.id.clone(),
                Slot {
                    device,
                    rules,
                    dirty,
                    aliases: HashMap::new(),
                },
            );
        }
        let ids: Vec<String> = e.devices.keys().cloned().collect();
        for id in ids {
            e.settle(&id, now);
        }
        e.changes.clear();
        e
    }

    /// The rules whose filters a kept device lists.
    fn rules_of(&self, d: &Device) -> u64 {
        let mut bits = 0;
        for (i, r) in self.rules.iter().enumerate().take(64) {
            if let Some(p) = &r.pattern
                && d.topics.contains(&p.for_device(&d.id))
            {
                bits |= 1 << i;
            }
        }
        bits
    }

    /// The filters to subscribe to, each once, with whether a message on it may be a word
    /// on presence (a status topic: it must not be lost) or only a sign of life.
    pub fn filters(&self) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = Vec::new();
        for r in &self.rules {
            if let Some(p) = &r.pattern {
                let word = matches!(r.kind, Kind::Status { .. });
                match out.iter_mut().find(|(f, _)| f == p.filter()) {
                    Some(f) => f.1 |= word,
                    None => out.push((p.filter().to_owned(), word)),
                }
            }
        }
        if self.rules.iter().any(|r| r.kind == Kind::Sparkplug) {
            out.push((format!("{}/#", crate::sparkplug::NAMESPACE), true));
        }
        out
    }

    /// Whether a rule watches client connections.
    pub fn watches_clients(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.kind, Kind::Clients { .. }))
    }

    /// Whether a clients rule takes the client id `id` as a device.
    fn takes_client(&self, id: &str) -> bool {
        self.rules.iter().any(|r| match &r.kind {
            Kind::Clients { ids, except } => {
                ids.iter().any(|g| glob(g, id)) && !except.iter().any(|g| glob(g, id))
            }
            _ => false,
        })
    }

    /// The device `id`, created if new (and if there is room), marked changed.
    fn slot(&mut self, id: &str, now: Millis) -> Option<&mut Slot> {
        if !self.devices.contains_key(id) {
            if self.devices.len() >= MAX_DEVICES {
                self.refused += 1;
                return None;
            }
            self.devices.insert(
                id.to_owned(),
                Slot {
                    device: Device {
                        id: id.to_owned(),
                        state: Presence::Unknown,
                        since: now,
                        last_seen: None,
                        last_topic: None,
                        said: None,
                        stale_after: None,
                        topics: Vec::new(),
                        metrics: Default::default(),
                        bd_seq: None,
                    },
                    rules: 0,
                    dirty: true,
                    aliases: HashMap::new(),
                },
            );
            self.changes.push(Change {
                id: id.to_owned(),
                from: None,
                to: Presence::Unknown,
            });
        }
        let slot = self.devices.get_mut(id)?;
        slot.dirty = true;
        Some(slot)
    }

    /// A message on `topic`; `retained`: delivered because it was retained (on subscribing),
    /// not as it was published.
    pub fn on_message(&mut self, topic: &str, payload: &[u8], retained: bool, now: Millis) {
        if self.sparkplug && topic.starts_with("spBv1.0/") {
            self.on_sparkplug(topic, payload, retained, now);
        }
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            let Some(pattern) = &rule.pattern else {
                continue;
            };
            let Some(id) = pattern.device_of(topic) else {
                continue;
            };
            // What the message says, found before the device is borrowed.
            let word = match &rule.kind {
                Kind::Status { online, offline } => status_word(payload, online, offline),
                _ => None,
            };
            let stale_after = match rule.kind {
                Kind::Activity { stale_after } => Some(stale_after),
                _ => None,
            };
            let bit = if i < 64 { 1u64 << i } else { 0 };
            let filter = (bit == 0 || self.devices.get(id).is_none_or(|s| s.rules & bit == 0))
                .then(|| pattern.for_device(id));
            let Some(slot) = self.slot(id, now) else {
                continue;
            };
            slot.rules |= bit;
            let d = &mut slot.device;
            if let Some(filter) = filter
                && !d.topics.contains(&filter)
            {
                d.topics.push(filter);
                d.topics.sort();
            }
            // A retained message replayed on subscribing is not a new message.
            if !retained || d.last_topic.is_none() {
                match &mut d.last_topic {
                    Some(t) if t == topic => {}
                    Some(t) => {
                        t.clear();
                        t.push_str(topic);
                    }
                    None => d.last_topic = Some(topic.to_owned()),
                }
            }
            if !retained {
                d.last_seen = Some(now);
            }
            if let Some(on) = word {
                // A retained word saying what is known already keeps its time.
                let same = d.said.as_ref().is_some_and(|s| s.online == on);
                if !(retained && same) {
                    d.said = Some(Said {
                        online: on,
                        t: now,
                        source: Source::Status,
                        detail: String::from_utf8_lossy(payload).chars().take(200).collect(),
                    });
                }
            }
            if let Some(after) = stale_after
                && (!retained || d.stale_after.is_none())
            {
                d.stale_after = Some(after);
            }
            self.settle(id, now);
        }
    }

    /// A Sparkplug B message (see [`Kind::Sparkplug`]).
    fn on_sparkplug(&mut self, topic: &str, payload: &[u8], retained: bool, now: Millis) {
        use crate::sparkplug::Kind as K;
        let Some((kind, id)) = crate::sparkplug::topic(topic) else {
            return;
        };
        let decoded = match crate::sparkplug::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                self.bad_payloads += 1;
                tracing::debug!(
                    topic,
                    "device monitor: a Sparkplug payload it cannot read: {}",
                    e.0
                );
                return;
            }
        };
        // The node of a death: a stale one (another session's bdSeq) is ignored.
        if kind == K::NDeath
            && let Some(known) = self.devices.get(&id).and_then(|s| s.device.bd_seq)
            && decoded.bd_seq() != Some(known)
        {
            self.stale_deaths += 1;
            tracing::info!(node = %id, "device monitor: NDEATH with bdSeq {:?} ignored: the node's session is {known}", decoded.bd_seq());
            return;
        }
        let filter = match kind {
            K::NBirth | K::NDeath | K::NData => {
                let (group, node) = id.split_once('/').unwrap_or((&id, ""));
                format!("spBv1.0/{group}/+/{node}")
            }
            _ => {
                let mut parts = id.splitn(3, '/');
                let (g, n, d) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                format!("spBv1.0/{g}/+/{n}/{d}")
            }
        };
        let Some(slot) = self.slot(&id, now) else {
            return;
        };
        let d = &mut slot.device;
        if !d.topics.contains(&filter) {
            d.topics.push(filter);
        }
        d.last_topic = Some(topic.to_owned());
        if !retained {
            d.last_seen = Some(now);
        }
        let birth = matches!(kind, K::NBirth | K::DBirth);
        if birth {
            d.metrics.clear();
            slot.aliases.clear();
            if kind == K::NBirth {
                d.bd_seq = decoded.bd_seq();
            }
        }
        for m in decoded.metrics {
            let name = match (m.name, m.alias) {
                (Some(n), alias) => {
                    if let (true, Some(a)) = (birth, alias) {
                        slot.aliases.insert(a, n.clone());
                    }
                    n
                }
                (None, Some(a)) => match slot.aliases.get(&a) {
                    Some(n) => n.clone(),
                    None => continue,
                },
                (None, None) => continue,
            };
            if d.metrics.len() < crate::sparkplug::MAX_METRICS || d.metrics.contains_key(&name) {
                d.metrics.insert(name, m.value);
            }
        }
        let word = match kind {
            K::NBirth => Some((
                true,
                format!(
                    "NBIRTH (bdSeq {})",
                    d.bd_seq.map_or("?".into(), |b| b.to_string())
                ),
            )),
            K::DBirth => Some((true, "DBIRTH".to_owned())),
            K::NDeath => Some((false, "NDEATH".to_owned())),
            K::DDeath => Some((false, "DDEATH".to_owned())),
            K::NData | K::DData => None,
        };
        if let Some((online, detail)) = word {
            d.said = Some(Said {
                online,
                t: now,
                source: Source::Sparkplug,
                detail,
            });
        }
        self.settle(&id, now);
        // A node's death is its devices' too.
        if kind == K::NDeath {
            let prefix = format!("{id}/");
            let children: Vec<String> = self
                .devices
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .cloned()
                .collect();
            for child in children {
                if let Some(slot) = self.devices.get_mut(&child) {
                    slot.device.said = Some(Said {
                        online: false,
                        t: now,
                        source: Source::Sparkplug,
                        detail: "its edge node's NDEATH".into(),
                    });
                    slot.dirty = true;
                }
                self.settle(&child, now);
            }
        }
    }

    /// A client connection opened or ended.
    pub fn on_client(&mut self, event: &kite_broker::events::ClientEvent) {
        use kite_broker::events::ClientEvent;
        if !self.watches_clients() {
            return;
        }
        let (id, online, t, detail) = match event {
            ClientEvent::Connected {
                conn,
                client_id,
                transport,
                t,
                ..
            } => {
                self.conns.insert(client_id.to_string(), *conn);
                (client_id, true, *t, format!("connected ({transport})"))
            }
            ClientEvent::Disconnected {
                conn,
                client_id,
                reason,
                taken_over,
                t,
                ..
            } => {
                // A later connection of the same client took over, or is already there.
                if *taken_over || self.conns.get(&**client_id).is_some_and(|c| c != conn) {
                    return;
                }
                self.conns.remove(&**client_id);
                (client_id, false, *t, reason.clone())
            }
        };
        if id.is_empty() || !self.takes_client(id) {
            return;
        }
        let Some(slot) = self.slot(id, t) else {
            return;
        };
        let d = &mut slot.device;
        if online {
            d.last_seen = Some(t);
        }
        d.said = Some(Said {
            online,
            t,
            source: Source::Client,
            detail,
        });
        self.settle(id, t);
    }

    /// Stale devices as of `now`.
    pub fn tick(&mut self, now: Millis) {
        let due: Vec<String> = self
            .devices
            .values()
            .filter(|s| {
                s.device.state != Presence::Stale && derive(&s.device, now) != s.device.state
            })
            .map(|s| s.device.id.clone())
            .collect();
        for id in due {
            self.settle(&id, now);
        }
    }

    /// Recomputes `id`'s state; a change sets `since` (and marks it changed).
    fn settle(&mut self, id: &str, now: Millis) {
        let Some(slot) = self.devices.get_mut(id) else {
            return;
        };
        let d = &mut slot.device;
        let state = derive(d, now);
        if state != d.state {
            self.changes.push(Change {
                id: id.to_owned(),
                from: Some(d.state),
                to: state,
            });
            d.state = state;
            d.since = now;
            slot.dirty = true;
        }
    }

    /// The devices changed since the last call (to be stored).
    pub fn take_dirty(&mut self) -> Vec<Device> {
        self.devices
            .values_mut()
            .filter(|s| s.dirty)
            .map(|s| {
                s.dirty = false;
                s.device.clone()
            })
            .collect()
    }

    /// Forgets the device `id` (gone for good): it is no longer listed and is removed from
    /// the store at the next save; it comes back, as new, if it is heard from again. Whether
    /// there was one.
    pub fn forget(&mut self, id: &str) -> bool {
        if self.devices.remove(id).is_none() {
            return false;
        }
        self.removed.push(id.to_owned());
        true
    }

    /// The devices forgotten since the last call (to be removed from the store before the
    /// changed ones are kept: one forgotten and heard from again is in both).
    pub fn take_removed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.removed)
    }

    /// The state changes since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Every device (unordered).
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.values().map(|s| &s.device)
    }

    /// One device.
    pub fn get(&self, id: &str) -> Option<&Device> {
        self.devices.get(id).map(|s| &s.device)
    }

    /// How many devices are in each state (in [`Presence::ALL`]'s order).
    pub fn counts(&self) -> [u64; 4] {
        let mut n = [0u64; 4];
        for s in self.devices.values() {
            if let Some(i) = Presence::ALL.iter().position(|p| *p == s.device.state) {
                n[i] += 1;
            }
        }
        n
    }
}

/// Whether `text` matches `pattern`, where `*` is any run of characters (none too) and
/// every other character stands for itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole text.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// A device's state from its facts, as of `now` (see the module docs).
fn derive(d: &Device, now: Millis) -> Presence {
    let active_after_word = match (&d.said, d.last_seen) {
        (Some(s), Some(seen)) => seen > s.t,
        _ => false,
    };
    if let Some(s) = &d.said
        && !s.online
        && !active_after_word
    {
        return Presence::Offline;
    }
    let stale = match (d.stale_after, d.last_seen) {
        (Some(after), Some(seen)) => now.saturating_sub(seen) > after,
        _ => false,
    };
    if stale {
        return Presence::Stale;
    }
    if d.said.as_ref().is_some_and(|s| s.online) || d.last_seen.is_some() {
        return Presence::Online;
    }
    Presence::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;
    use kite_broker::events::ClientEvent;

    fn status_rule() -> Rule {
        let (online, offline) = default_words();
        Rule {
            kind: Kind::Status { online, offline },
            pattern: Some(Pattern::parse("plant/{device}/status").unwrap()),
        }
    }

    fn activity_rule(secs: u64) -> Rule {
        Rule {
            kind: Kind::Activity {
                stale_after: secs * 1000,
            },
            pattern: Some(Pattern::parse("sensors/{device}/#").unwrap()),
        }
    }

    fn state(e: &Engine, id: &str) -> Presence {
        e.get(id).unwrap().state
    }

    #[test]
    fn patterns_take_device_as_one_whole_level() {
        let p = Pattern::parse("plant/{device}/status").unwrap();
        assert_eq!(p.filter(), "plant/+/status");
        assert_eq!(p.device_of("plant/dev-a/status"), Some("dev-a"));
        assert_eq!(p.device_of("plant/dev-a/temp"), None);
        assert_eq!(p.device_of("plant//status"), None);
        let p = Pattern::parse("{device}/#").unwrap();
        assert_eq!(p.device_of("dev-b/x/y"), Some("dev-b"));
        for bad in [
            "plant/status",
            "plant/dev-{device}/x",
            "{device}/{device}",
            "#/{device}",
            "$share/g/{device}/x",
            "a/+x/{device}",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_payloads_are_words_or_json() {
        let (on, off) = default_words();
        assert_eq!(status_word(b" Online\n", &on, &off), Some(true));
        assert_eq!(status_word(b"0", &on, &off), Some(false));
        assert_eq!(status_word(br#"{"online": true}"#, &on, &off), Some(true));
        assert_eq!(
            status_word(br#"{"state":"offline"}"#, &on, &off),
            Some(false)
        );
        assert_eq!(status_word(b"maybe", &on, &off), None);
        assert_eq!(status_word(&[0xff, 0xfe], &on, &off), None);
    }

    /// Birth and Will on a status topic; a message after the Will means it is back.
    #[test]
    fn a_status_topic_says_online_and_its_will_offline() {
        let mut e = Engine::new(vec![status_rule()], Vec::new(), 0);
        e.on_message("plant/a/status", b"online", false, 1_000);
        assert_eq!(state(&e, "a"), Presence::Online);
        e.on_message("plant/a/status", b"offline", false, 5_000);
        let d = e.get("a").unwrap();
        assert_eq!((d.state, d.since), (Presence::Offline, 5_000));
        let changes = e.take_changes();
        assert_eq!(
            changes.iter().map(|c| c.to).collect::<Vec<_>>(),
            [Presence::Unknown, Presence::Online, Presence::Offline]
        );
    }

    /// Retained messages are old news: they say what the device said, but not that it is
    /// active now, and a retained word that says what is known keeps its time.
    #[test]
    fn retained_messages_do_not_count_as_activity() {
        let mut e = Engine::new(vec![status_rule(), activity_rule(60)], Vec::new(), 0);
        e.on_message("sensors/b/temp", b"21", true, 1_000);
        let d = e.get("b").unwrap();
        assert_eq!((d.state, d.last_seen), (Presence::Unknown, None));
        e.on_message("plant/b/status", b"online", true, 1_000);
        assert_eq!(state(&e, "b"), Presence::Online);
        e.on_message("plant/b/status", b"online", true, 9_000);
        assert_eq!(e.get("b").unwrap().said.as_ref().unwrap().t, 1_000);
    }

    /// Silent longer than `stale_after`: stale at the first tick after; a message: online.
    #[test]
    fn a_silent_device_goes_stale_and_comes_back() {
        let mut e = Engine::new(vec![activity_rule(120)], Vec::new(), 0);
        e.on_message("sensors/c/temp", b"21", false, 10_000);
        assert_eq!(state(&e, "c"), Presence::Online);
        e.tick(130_000);
        assert_eq!(state(&e, "c"), Presence::Online);
        e.tick(130_001);
        let d = e.get("c").unwrap();
        assert_eq!((d.state, d.since), (Presence::Stale, 130_001));
        e.on_message("sensors/c/temp", b"22", false, 140_000);
        assert_eq!(state(&e, "c"), Presence::Online);
        assert_eq!(e.take_dirty().len(), 1);
        assert!(e.take_dirty().is_empty());
    }

    /// Offline beats stale; activity after the Will means the device is back.
    #[test]
    fn an_offline_word_holds_until_the_device_is_active_again() {
        let mut e = Engine::new(vec![status_rule(), activity_rule(10)], Vec::new(), 0);
        e.on_message("sensors/d/temp", b"1", false, 1_000);
        e.on_message("plant/d/status", b"offline", false, 2_000);
        e.tick(60_000);
        assert_eq!(state(&e, "d"), Presence::Offline);
        e.on_message("sensors/d/temp", b"2", false, 61_000);
        assert_eq!(state(&e, "d"), Presence::Online);
    }

    fn connected(conn: u64, id: &str, t: u64) -> ClientEvent {
        ClientEvent::Connected {
            conn,
            client_id: id.into(),
            transport: "tcp",
            keep_alive: 10,
            t,
        }
    }

    fn ended(conn: u64, id: &str, taken_over: bool, t: u64) -> ClientEvent {
        ClientEvent::Disconnected {
            conn,
            client_id: id.into(),
            reason: "keep-alive timeout".into(),
            clean: false,
            taken_over,
            t,
        }
    }

    fn all_clients() -> Rule {
        Rule {
            kind: Kind::Clients {
                ids: vec!["*".into()],
                except: Vec::new(),
            },
            pattern: None,
        }
    }

    /// A take-over [MQTT-3.1.4-3] ends the old connection but the client stays connected;
    /// the current connection's end makes it offline, with why.
    #[test]
    fn client_connections_make_devices_online_and_offline() {
        let mut e = Engine::new(vec![all_clients()], Vec::new(), 0);
        e.on_client(&connected(1, "dev-e", 1_000));
        assert_eq!(state(&e, "dev-e"), Presence::Online);
        e.on_client(&connected(2, "dev-e", 2_000));
        e.on_client(&ended(1, "dev-e", true, 2_000));
        assert_eq!(state(&e, "dev-e"), Presence::Online);
        e.on_client(&ended(2, "dev-e", false, 9_000));
        let d = e.get("dev-e").unwrap();
        assert_eq!((d.state, d.since), (Presence::Offline, 9_000));
        assert_eq!(d.said.as_ref().unwrap().detail, "keep-alive timeout");
        // Kept across a restart, and a client that was connected then is offline after.
        e.on_client(&connected(3, "dev-f", 10_000));
        let kept: Vec<Device> = e.devices().cloned().collect();
        let e = Engine::new(vec![all_clients()], kept, 20_000);
        assert_eq!(e.get("dev-e").unwrap().since, 9_000);
        let f = e.get("dev-f").unwrap();
        assert_eq!((f.state, f.since), (Presence::Offline, 20_000));
    }

    #[test]
    fn devices_are_bounded() {
        let mut e = Engine::new(vec![activity_rule(60)], Vec::new(), 0);
        for i in 0..MAX_DEVICES + 5 {
            e.on_message(&format!("sensors/{i}/x"), b"1", false, 1);
        }
        assert_eq!(e.devices().count(), MAX_DEVICES);
        assert_eq!(e.refused, 5);
        assert_eq!(e.counts(), [MAX_DEVICES as u64, 0, 0, 0]);
    }

    /// Sparkplug B: BIRTH and DEATH make nodes and devices online and offline, metrics come
    /// from BIRTH and DATA (by alias too); an NDEATH of an earlier session — its bdSeq not the
    /// last NBIRTH's, as when the old connection's Will comes after the node reconnected —
    /// is ignored; a node's death is its devices' (Sparkplug B 3.0, the bdSeq rules).
    #[test]
    fn sparkplug_births_deaths_and_a_stale_bdseq() {
        use crate::sparkplug::encode;
        use serde_json::json;
        let rule = Rule {
            kind: Kind::Sparkplug,
            pattern: None,
        };
        let mut e = Engine::new(vec![rule], Vec::new(), 0);
        assert_eq!(e.filters(), [("spBv1.0/#".to_owned(), true)]);
        let birth = encode(&[("bdSeq", json!(1)), ("temp", json!(20.5))], Some(0));
        e.on_message("spBv1.0/plant/NBIRTH/edge", &birth, false, 1_000);
        let node = e.get("plant/edge").unwrap();
        assert_eq!((node.state, node.bd_seq), (Presence::Online, Some(1)));
        assert_eq!(node.metrics.get("temp"), Some(&json!(20.5)));
        let dbirth = encode(&[("rpm", json!(1200))], Some(1));
        e.on_message("spBv1.0/plant/DBIRTH/edge/pump", &dbirth, false, 1_100);
        e.on_message(
            "spBv1.0/plant/DDATA/edge/pump",
            &encode(&[("rpm", json!(1300))], Some(2)),
            false,
            1_200,
        );
        let pump = e.get("plant/edge/pump").unwrap();
        assert_eq!(
            (pump.state, pump.metrics.get("rpm")),
            (Presence::Online, Some(&json!(1300)))
        );
        // The node reconnects (bdSeq 2), then the old connection's Will arrives.
        let rebirth = encode(&[("bdSeq", json!(2)), ("temp", json!(21.0))], Some(0));
        e.on_message("spBv1.0/plant/NBIRTH/edge", &rebirth, false, 2_000);
        let old_death = encode(&[("bdSeq", json!(1))], None);
        e.on_message("spBv1.0/plant/NDEATH/edge", &old_death, false, 2_100);
        assert_eq!(e.get("plant/edge").unwrap().state, Presence::Online);
        assert_eq!(e.stale_deaths, 1);
        let death = encode(&[("bdSeq", json!(2))], None);
        e.on_message("spBv1.0/plant/NDEATH/edge", &death, false, 3_000);
        let node = e.get("plant/edge").unwrap();
        assert_eq!((node.state, node.since), (Presence::Offline, 3_000));
        let pump = e.get("plant/edge/pump").unwrap();
        assert_eq!(pump.state, Presence::Offline);
        assert_eq!(pump.said.as_ref().unwrap().detail, "its edge node's NDEATH");
        // A payload that is not protobuf is counted, not a device.
        e.on_message("spBv1.0/plant/NBIRTH/other", &[0x12, 0xff], false, 4_000);
        assert_eq!((e.bad_payloads, e.get("plant/other")), (1, None));
    }

    /// `client_ids` and `except_client_ids`: the app's own sessions (`kite-…`) are not
    /// devices unless asked.
    #[test]
    fn clients_are_chosen_by_their_ids() {
        let rule = Rule {
            kind: Kind::Clients {
                ids: vec!["sensor-*".into(), "plc".into()],
                except: vec!["*-test".into()],
            },
            pattern: None,
        };
        let mut e = Engine::new(vec![rule], Vec::new(), 0);
        for (i, id) in ["sensor-1", "plc", "plc-2", "sensor-9-test", "kite-0a1b2c"]
            .into_iter()
            .enumerate()
        {
            e.on_client(&connected(i as u64, id, 1_000));
        }
        let mut ids: Vec<&str> = e.devices().map(|d| d.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["plc", "sensor-1"]);
    }

    #[test]
    fn globs() {
        for (g, t, m) in [
            ("*", "", true),
            ("*", "abc", true),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "ac", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("", "", true),
            ("", "a", false),
            ("kite-*", "kite-", true),
            ("*-*-*", "a-b", false),
        ] {
            assert_eq!(glob(g, t), m, "{g:?} on {t:?}");
        }
    }

    /// A forgotten device is gone from the list and from the store (next save), and comes
    /// back as new when heard from again.
    #[test]
    fn a_forgotten_device_comes_back_only_when_heard_from() {
        let mut e = Engine::new(vec![activity_rule(60)], Vec::new(), 0);
        e.on_message("sensors/a/x", b"1", false, 1_000);
        e.on_message("sensors/b/x", b"1", false, 1_000);
        e.take_dirty();
        assert!(e.forget("a"));
        assert!(!e.forget("a"));
        assert!(e.get("a").is_none());
        assert_eq!(e.counts(), [1, 0, 0, 0]);
        assert_eq!(e.take_removed(), ["a"]);
        assert!(e.take_removed().is_empty());
        e.on_message("sensors/a/x", b"2", false, 5_000);
        assert_eq!(e.get("a").map(|d| d.since), Some(5_000));
    }
}
