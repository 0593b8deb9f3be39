//! Everything the app holds outside Yew state: the saved profiles, and for each profile in use
//! its [`Connection`], its message [`Store`](crate::store::Store), its subscriptions' states,
//! its sent history and what became of the last publish.
//!
//! Driver notices change it directly and ask [`Frames`] for one render: a busy connection
//! never pushes a message through Yew. Rules that keep it sound:
//! - never call into a [`Connection`] while the workspace is borrowed (its notices come back
//!   synchronously and borrow the workspace): clone the connection out first;
//! - every change the person makes is saved to `localStorage` at once (profiles, outbox,
//!   history), and a failure to save is shown, not swallowed.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use kite_mqtt::QoS;
use kite_mqtt::codec::Publish;
use kite_mqtt::session::{DropReason, Event};

use crate::compose::{self, Draft};
use crate::explorer::{Frames, StoreHandle};
use crate::mqtt::{Connection, Notice, Status};
use crate::payload;
use crate::profile::{self, FieldError, PALETTE, Profile, SubSpec};
use crate::storage;
use crate::store::{Caps, Store};

/// Reads saved caps: "<messages per topic> <bytes>".
fn caps_from_text(text: &str) -> Option<Caps> {
    let (h, m) = text.split_once(' ')?;
    let bytes: u64 = m.parse().ok()?;
    Some(Caps {
        history_per_topic: h.parse::<usize>().ok()?.min(10_000),
        // A cap saved as 0 by an earlier version (4096 MiB wrapped) is 1 MiB, not nothing.
        memory_bytes: crate::store::memory_cap(bytes.div_ceil(1 << 20)),
    })
}

/// A few values by name, in a vector: the app holds a handful of profiles and filters, and
/// a `HashMap` per value type would cost several KB of the app's size budget each.
#[derive(Debug)]
pub struct ByName<V>(Vec<(String, V)>);

impl<V> Default for ByName<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V: Clone> Clone for ByName<V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<V> ByName<V> {
    /// The value under `name`.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The value under `name`, to change.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        self.0.iter_mut().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Sets the value under `name`.
    pub fn insert(&mut self, name: String, value: V) {
        match self.get_mut(&name) {
            Some(slot) => *slot = value,
            None => self.0.push((name, value)),
        }
    }

    /// Takes the value under `name` out.
    pub fn remove(&mut self, name: &str) -> Option<V> {
        let at = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(at).1)
    }

    /// Every value.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    /// Every value, to change.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.iter_mut().map(|(_, v)| v)
    }
}

impl<V: Default> ByName<V> {
    /// The value under `name`, made empty if there is none.
    pub fn get_or_default(&mut self, name: &str) -> &mut V {
        let at = match self.0.iter().position(|(n, _)| n == name) {
            Some(at) => at,
            None => {
                self.0.push((name.to_owned(), V::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }
}

/// Sent drafts kept per profile.
const SENT_KEPT: usize = 30;

/// Lines kept in a connection's log.
const LOG_KEPT: usize = 30;

/// What became of a subscription on the live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubState {
    /// SUBSCRIBE sent (or waiting for the connection).
    Pending(u16),
    /// The broker granted this QoS.
    Granted(u8),
    /// The broker refused it, with its reason.
    Refused(String),
}

/// One profile in use: its connection and what it received.
pub struct Link {
    /// The MQTT connection (closed until the person connects).
    pub conn: Connection,
    /// Every topic it received.
    pub store: StoreHandle,
    /// Where the connection stands.
    pub status: Status,
    /// The broker's answer per filter, for this page's life.
    pub subs: ByName<SubState>,
    /// Client id in use and whether the broker resumed a session.
    pub session: Option<(String, bool)>,
    /// The last publish: its packet id (QoS 1/2) and what became of it.
    pub last_publish: Option<(Option<u16>, String)>,
    /// Recent happenings worth showing (dropped messages, refusals), newest last.
    pub log: VecDeque<String>,
}

/// The app's state outside Yew.
pub struct Workspace {
    /// The saved profiles, in the order shown.
    pub profiles: Vec<Profile>,
    /// Profiles in use, by id.
    pub links: ByName<Link>,
    /// Sent drafts per profile, newest first.
    pub sent: ByName<Vec<Draft>>,
    /// A problem with the browser's storage, shown until dismissed.
    pub problem: Option<String>,
    /// `ws://host/mqtt` of the gateway that served the page.
    pub same_origin: String,
    /// The broker whose topics that gateway records (its default broker's name), if it
    /// records (`GET /api/v1/upstreams`).
    pub recorded_broker: Option<String>,
    /// What each connection's store keeps (saved in the browser).
    pub caps: Caps,
    /// A sent draft the person chose to edit, by profile, until the form takes it.
    pub reuse: ByName<Draft>,
    frames: Rc<Frames>,
}

/// The workspace, shared by every component. Cheap to clone; equal when it is the same one.
#[derive(Clone)]
pub struct Handle(Rc<RefCell<Workspace>>);

impl PartialEq for Handle {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Handle {
    /// Loads the saved profiles (and any outbox saved with them).
    pub fn load(same_origin: String, frames: Rc<Frames>) -> Self {
        let mut problem = None;
        let profiles = match storage::get(storage::PROFILES) {
            Ok(None) => Vec::new(),
            Ok(Some(text)) => match profile::list_from_json(&text) {
                Ok(p) => p,
                Err(e) => {
                    // Kept aside, never wiped: the person may want it back.
                    let aside = format!("{}.damaged", storage::PROFILES);
                    let _ = storage::set(&aside, &text);
                    problem = Some(format!(
                        "The saved connections could not be read ({e}); they were kept under localStorage key \"{aside}\" and the list starts empty."
                    ));
                    Vec::new()
                }
            },
            Err(e) => {
                problem = Some(format!("Connections cannot be saved in this browser: {e}"));
                Vec::new()
            }
        };
        let caps = storage::get(storage::CAPS)
            .ok()
            .flatten()
            .and_then(|t| caps_from_text(&t))
            .unwrap_or_default();
        let handle = Self(Rc::new(RefCell::new(Workspace {
            profiles,
            links: ByName::default(),
            sent: ByName::default(),
            problem,
            same_origin,
            recorded_broker: None,
            caps,
            reuse: ByName::default(),
            frames,
        })));
        let ids: Vec<String> = handle.read(|w| w.profiles.iter().map(|p| p.id.clone()).collect());
        for id in &ids {
            handle.restore(id);
        }
        // What was connected before the reload is connected again, with its subscriptions.
        for id in connected_ids().iter().filter(|id| ids.contains(id)) {
            let _ = handle.connect(id);
        }
        handle
    }

    /// Asks for one render at the next animation frame.
    pub fn request_frame(&self) {
        self.read(|w| w.frames.request());
    }

    /// New caps for every connection's store, saved in the browser.
    pub fn set_caps(&self, caps: Caps) {
        let stores: Vec<StoreHandle> = self.write(|w| {
            w.caps = caps;
            w.links.values().map(|l| l.store.clone()).collect()
        });
        for s in stores {
            s.0.borrow_mut().set_caps(caps);
        }
        let text = format!("{} {}", caps.history_per_topic, caps.memory_bytes);
        if let Err(e) = storage::set(storage::CAPS, &text) {
            self.write(|w| w.problem = Some(e));
        }
    }

    /// Puts a sent draft into the profile's publish form.
    pub fn reuse(&self, id: &str, draft: Draft) {
        self.write(|w| w.reuse.insert(id.to_owned(), draft));
    }

    /// The form took the draft.
    pub fn take_reuse(&self, id: &str) {
        self.0.borrow_mut().reuse.remove(id);
    }

    /// Says which broker the gateway records (see [`Workspace::recorded_broker`]), and
    /// asks for a render when that changed.
    pub fn set_recorded_broker(&self, broker: Option<String>) {
        let changed = {
            let mut w = self.0.borrow_mut();
            let changed = w.recorded_broker != broker;
            w.recorded_broker = broker;
            changed
        };
        if changed {
            self.request_frame();
        }
    }

    /// Reads the workspace.
    pub fn read<T>(&self, f: impl FnOnce(&Workspace) -> T) -> T {
        f(&self.0.borrow())
    }

    fn write<T>(&self, f: impl FnOnce(&mut Workspace) -> T) -> T {
        let r = f(&mut self.0.borrow_mut());
        self.0.borrow().frames.request();
        r
    }

    /// A profile by id.
    pub fn profile(&self, id: &str) -> Option<Profile> {
        self.read(|w| w.profiles.iter().find(|p| p.id == id).cloned())
    }

    /// The connection of a profile in use.
    pub fn conn(&self, id: &str) -> Option<Connection> {
        self.read(|w| w.links.get(id).map(|l| l.conn.clone()))
    }

    /// The store of a profile in use.
    pub fn store(&self, id: &str) -> Option<StoreHandle> {
        self.read(|w| w.links.get(id).map(|l| l.store.clone()))
    }

    /// A fresh profile (not saved yet): the next colour and a random client id.
    pub fn new_profile(&self) -> Profile {
        let (n, used): (usize, Vec<String>) = self.read(|w| {
            (
                w.profiles.len(),
                w.profiles.iter().map(|p| p.colour.clone()).collect(),
            )
        });
        let colour = PALETTE
            .iter()
            .find(|c| !used.iter().any(|u| u == *c))
            .unwrap_or(&PALETTE[n % PALETTE.len()]);
        let name = if n == 0 {
            "My broker".to_owned()
        } else {
            format!("Broker {}", n + 1)
        };
        Profile::new(random_id(), name, colour, random_client_id())
    }

    /// Saves a profile (new or edited). A connection in use takes the new settings when it
    /// next connects. Returns what is wrong if it cannot be used.
    pub fn save_profile(&self, profile: Profile) -> Result<(), Vec<FieldError>> {
        profile.check_here()?;
        self.write(
            |w| match w.profiles.iter_mut().find(|p| p.id == profile.id) {
                Some(slot) => *slot = profile,
                None => w.profiles.push(profile),
            },
        );
        self.save_profiles();
        Ok(())
    }

    /// Forgets a profile: closes its connection, drops what it received and its saved outbox
    /// and history.
    pub fn delete_profile(&self, id: &str) {
        if let Some(conn) = self.conn(id) {
            conn.close();
        }
        remember_connected(id, false);
        self.write(|w| {
            w.profiles.retain(|p| p.id != id);
            w.links.remove(id);
            w.sent.remove(id);
        });
        let _ = storage::remove(&storage::outbox_key(id));
        let _ = storage::remove(&storage::sent_key(id));
        self.save_profiles();
    }

    fn save_profiles(&self) {
        let text = self.read(|w| profile::list_to_json(&w.profiles));
        if let Err(e) = storage::set(storage::PROFILES, &text) {
            self.write(|w| w.problem = Some(e));
        }
    }

    /// Dismisses the storage problem.
    pub fn dismiss_problem(&self) {
        self.write(|w| w.problem = None);
    }

    /// Sets up a profile's connection (closed), from its saved outbox and history if any.
    fn restore(&self, id: &str) {
        let sent = match storage::get(&storage::sent_key(id)) {
            Ok(Some(text)) => compose::history_from_json(&text).0,
            _ => Vec::new(),
        };
        self.write(|w| w.sent.insert(id.to_owned(), sent));
        let Ok(Some(saved)) = storage::get(&storage::outbox_key(id)) else {
            return;
        };
        let outcome = payload::from_base64(&saved)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let conn = self.link(id).ok_or("the profile is not valid")?;
                conn.import_outbox(&bytes).map_err(|e| e.to_string())
            });
        if let Err(e) = outcome {
            let key = storage::outbox_key(id);
            let aside = format!("{key}.damaged");
            let _ = storage::set(&aside, &saved);
            let _ = storage::remove(&key);
            self.write(|w| {
                w.problem = Some(format!(
                    "The messages waiting to be sent could not be restored ({e}); they were kept under localStorage key \"{aside}\"."
                ))
            });
        }
    }

    /// The profile's connection, made (closed) if it has none yet. `None` if the profile is
    /// gone or not valid.
    fn link(&self, id: &str) -> Option<Connection> {
        if let Some(c) = self.conn(id) {
            return Some(c);
        }
        let profile = self.profile(id)?;
        let opts = profile.check_here().ok()?;
        let url = self.read(|w| profile.endpoint(&w.same_origin));
        let weak = Rc::downgrade(&self.0);
        let key = id.to_owned();
        let store = StoreHandle(Rc::new(RefCell::new(Store::new(self.read(|w| w.caps)))));
        let sink = store.clone();
        let conn = Connection::new(&url, opts, move |n| on_notice(&weak, &key, &sink, n));
        self.write(|w| {
            w.links.insert(
                id.to_owned(),
                Link {
                    conn: conn.clone(),
                    store,
                    status: Status::Closed,
                    subs: ByName::default(),
                    session: None,
                    last_publish: None,
                    log: VecDeque::new(),
                },
            )
        });
        Some(conn)
    }

    /// Connects a profile (with its current settings) and makes its saved subscriptions.
    pub fn connect(&self, id: &str) -> Result<(), Vec<FieldError>> {
        let profile = self.profile(id).ok_or_else(|| {
            vec![FieldError {
                field: "name",
                message: "this connection no longer exists".into(),
            }]
        })?;
        let opts = profile.check_here()?;
        let url = self.read(|w| profile.endpoint(&w.same_origin));
        let Some(conn) = self.link(id) else {
            return Ok(());
        };
        if conn.is_closed() && !conn.reconfigure(&url, opts) {
            self.log(
                id,
                "the waiting messages do not fit the new settings (MQTT 3.1.1 has no properties?): connecting with the previous ones".into(),
            );
        }
        conn.connect();
        remember_connected(id, true);
        for spec in &profile.subscriptions {
            self.send_subscribe(id, &conn, spec);
        }
        Ok(())
    }

    /// Disconnects (DISCONNECT, no reconnecting). What waits in the outbox stays.
    pub fn disconnect(&self, id: &str) {
        if let Some(conn) = self.conn(id) {
            conn.close();
        }
        remember_connected(id, false);
    }

    fn send_subscribe(&self, id: &str, conn: &Connection, spec: &SubSpec) {
        let state = match spec.subscription().map(|s| conn.subscribe_with(s)) {
            Ok(Ok(packet_id)) => SubState::Pending(packet_id),
            Ok(Err(e)) => SubState::Refused(e.to_string()),
            Err(e) => SubState::Refused(e),
        };
        self.write(|w| {
            if let Some(l) = w.links.get_mut(id) {
                l.subs.insert(spec.filter.clone(), state);
            }
        });
    }

    /// Adds (or changes) a subscription: kept with the profile, made now if connected.
    pub fn subscribe(&self, id: &str, spec: SubSpec) -> Result<(), String> {
        spec.subscription()?;
        let found = self.write(|w| {
            let Some(p) = w.profiles.iter_mut().find(|p| p.id == id) else {
                return false;
            };
            match p.subscriptions.iter_mut().find(|s| s.filter == spec.filter) {
                Some(s) => *s = spec.clone(),
                None => p.subscriptions.push(spec.clone()),
            }
            true
        });
        if !found {
            return Err("this connection no longer exists".into());
        }
        self.save_profiles();
        if let Some(conn) = self.conn(id).filter(|c| !c.is_closed()) {
            self.send_subscribe(id, &conn, &spec);
        }
        Ok(())
    }

    /// Subscribes (QoS 1) to the `filters` the connection does not have yet, for this page's
    /// life and not saved with the profile: what a dashboard shows. Made now, or when the
    /// connection comes up; renewed by the session if the broker loses it.
    pub fn watch(&self, id: &str, filters: &[String]) {
        let new: Vec<&String> = self.read(|w| {
            let have = w.links.get(id).map(|l| &l.subs);
            filters
                .iter()
                .filter(|f| have.is_none_or(|s| s.get(f).is_none()))
                .collect()
        });
        if new.is_empty() {
            return;
        }
        let Some(conn) = self.link(id) else { return };
        for f in new {
            self.send_subscribe(id, &conn, &SubSpec::new(f, 1));
        }
    }

    /// Publishes `payload` to `topic` from a dashboard's control (no entry in the sent
    /// history): the packet id to follow its acknowledgement with (`None` at QoS 0).
    pub fn publish_to(
        &self,
        id: &str,
        topic: &str,
        payload: &str,
        qos: u8,
        retain: bool,
    ) -> Result<Option<u16>, String> {
        let conn = self
            .link(id)
            .ok_or("this connection's settings are not valid: edit it first")?;
        let message = Publish {
            qos: match qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            },
            retain,
            topic: topic.into(),
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            ..Default::default()
        };
        self.send(id, &conn, message);
        Ok(self.read(|w| {
            w.links
                .get(id)
                .and_then(|l| l.last_publish.as_ref())
                .and_then(|(packet_id, _)| *packet_id)
        }))
    }

    /// Removes a subscription: from the profile, and UNSUBSCRIBE if connected.
    pub fn unsubscribe(&self, id: &str, filter: &str) {
        self.write(|w| {
            if let Some(p) = w.profiles.iter_mut().find(|p| p.id == id) {
                p.subscriptions.retain(|s| s.filter != filter);
            }
            if let Some(l) = w.links.get_mut(id) {
                l.subs.remove(filter);
            }
        });
        self.save_profiles();
        if let Some(conn) = self.conn(id).filter(|c| !c.is_closed())
            && let Err(e) = conn.unsubscribe(filter)
        {
            self.log(id, format!("could not unsubscribe from {filter}: {e}"));
        }
    }

    /// Publishes a draft (into the outbox when not connected) and keeps it in the history.
    pub fn publish(&self, id: &str, draft: &Draft) -> Result<(), Vec<FieldError>> {
        let Some(conn) = self.link(id) else {
            return Err(vec![FieldError {
                field: "topic",
                message: "this connection's settings are not valid: edit it first".into(),
            }]);
        };
        let message = draft.build(conn.version())?;
        self.send(id, &conn, message);
        let history = self.write(|w| {
            let sent = w.sent.get_or_default(id);
            sent.retain(|d| d != draft);
            sent.insert(0, draft.clone());
            sent.truncate(SENT_KEPT);
            compose::history_to_json(sent)
        });
        if let Err(e) = storage::set(&storage::sent_key(id), &history) {
            self.write(|w| w.problem = Some(e));
        }
        Ok(())
    }

    fn send(&self, id: &str, conn: &Connection, message: Publish) {
        if message.retain
            && let Some(store) = self.store(id)
        {
            store
                .0
                .borrow_mut()
                .note_retained(&message.topic, message.payload.is_empty());
        }
        let outcome = match conn.publish(message) {
            Ok(None) if conn.is_connected() => (None, "sent (QoS 0: no acknowledgement)".into()),
            Ok(None) => (None, "waiting in the outbox (QoS 0)".into()),
            Ok(Some(packet_id)) if conn.is_connected() && conn.outbox_len() == 0 => {
                (Some(packet_id), "waiting for the broker…".into())
            }
            Ok(Some(packet_id)) => (Some(packet_id), "waiting in the outbox".into()),
            Err(e) => (None, format!("not sent: {e}")),
        };
        self.write(|w| {
            if let Some(l) = w.links.get_mut(id) {
                l.last_publish = Some(outcome);
            }
        });
        self.save_outbox(id);
    }

    /// Deletes retained messages: an empty retained publish to each topic ([MQTT-3.3.1-6]).
    pub fn delete_retained(&self, id: &str, topics: &[String]) {
        let Some(conn) = self.link(id) else { return };
        for topic in topics {
            let message = Publish {
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: topic.as_str().into(),
                ..Default::default()
            };
            self.send(id, &conn, message);
        }
        self.log(
            id,
            format!(
                "asked the broker to delete {} retained message{}",
                topics.len(),
                if topics.len() == 1 { "" } else { "s" }
            ),
        );
    }

    /// Takes a waiting message out of the outbox.
    pub fn cancel(&self, id: &str, key: u64) {
        if let Some(conn) = self.conn(id)
            && let Some(p) = conn.cancel(key)
        {
            self.log(id, format!("cancelled the message to {}", p.topic));
            self.save_outbox(id);
        }
    }

    fn log(&self, id: &str, line: String) {
        self.write(|w| {
            if let Some(l) = w.links.get_mut(id) {
                l.log.push_back(line);
                while l.log.len() > LOG_KEPT {
                    l.log.pop_front();
                }
            }
        });
    }

    /// Saves what the profile's connection has not had acknowledged (it survives a reload).
    fn save_outbox(&self, id: &str) {
        let Some(conn) = self.conn(id) else { return };
        let saved = conn.export_outbox();
        let key = storage::outbox_key(id);
        // 8 bytes: the format tag alone, nothing waiting.
        let result = if saved.len() <= 8 {
            storage::remove(&key)
        } else {
            storage::set(&key, &payload::base64(&saved))
        };
        if let Err(e) = result {
            self.write(|w| {
                w.problem = Some(format!(
                    "The messages waiting to be sent could not be saved: {e}"
                ))
            });
        }
    }
}

/// What a connection's driver reports, applied to the workspace.
fn on_notice(weak: &Weak<RefCell<Workspace>>, id: &str, store: &StoreHandle, notice: Notice) {
    let Some(rc) = weak.upgrade() else { return };
    let handle = Handle(rc);
    if let Notice::Mqtt(Event::Message(p)) = &notice {
        store.0.borrow_mut().ingest(
            &p.topic,
            &p.payload,
            p.qos as u8,
            p.retain,
            p.properties.clone(),
            js_sys::Date::now(),
        );
        handle.read(|w| w.frames.request());
        return;
    }
    let mut outbox_changed = false;
    handle.write(|w| {
        let Some(link) = w.links.get_mut(id) else {
            return;
        };
        match notice {
            Notice::Status(s) => link.status = s,
            Notice::Mqtt(Event::Connected {
                session_present,
                client_id,
                ..
            }) => {
                link.session = Some((client_id.to_string(), session_present));
                outbox_changed = true;
            }
            Notice::Mqtt(Event::Published { packet_id, reason }) => {
                outbox_changed = true;
                if let Some((Some(last), state)) = &mut link.last_publish
                    && *last == packet_id
                {
                    *state = if reason.is_error() {
                        format!("refused by the broker: {reason}")
                    } else {
                        "acknowledged by the broker".into()
                    };
                } else if reason.is_error() {
                    link.log
                        .push_back(format!("the broker refused message {packet_id}: {reason}"));
                }
            }
            Notice::Mqtt(Event::Subscribed { packet_id, reasons }) => {
                let reason = reasons.first().copied();
                for state in link.subs.values_mut() {
                    if *state == SubState::Pending(packet_id) {
                        *state = match reason {
                            Some(r) if r.is_error() => SubState::Refused(r.to_string()),
                            Some(r) => SubState::Granted(r.value()),
                            None => SubState::Refused("no answer".into()),
                        };
                    }
                }
            }
            Notice::Mqtt(Event::Dropped { topic, why }) => {
                outbox_changed = true;
                link.log.push_back(match why {
                    DropReason::Expired => {
                        format!("a message to {topic} expired while waiting and was not sent")
                    }
                    DropReason::OutboxFull => {
                        format!("the outbox was full: the oldest message, to {topic}, was dropped")
                    }
                });
            }
            Notice::Mqtt(_) => {}
        }
        while link.log.len() > LOG_KEPT {
            link.log.pop_front();
        }
    });
    if outbox_changed {
        handle.save_outbox(id);
    }
}

/// A random profile id: `p` and 8 hex digits.
fn random_id() -> String {
    format!(
        "p{:08x}",
        (js_sys::Math::random() * f64::from(u32::MAX)) as u32
    )
}

/// The profiles that were connected when the page was left ([`storage::CONNECTED`]).
fn connected_ids() -> Vec<String> {
    storage::get(storage::CONNECTED)
        .ok()
        .flatten()
        .map(|t| t.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Keeps (or forgets) that profile `id` is connected, for the next page load.
fn remember_connected(id: &str, connected: bool) {
    let mut ids = connected_ids();
    ids.retain(|i| i != id);
    if connected {
        ids.push(id.to_owned());
    }
    let _ = storage::set(storage::CONNECTED, &ids.join(" "));
}

/// A random client id: `kite-` and 6 hex digits.
pub fn random_client_id() -> String {
    format!(
        "kite-{:06x}",
        (js_sys::Math::random() * f64::from(0xff_ffff)) as u32
    )
}
