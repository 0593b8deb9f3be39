//! The browser's MQTT driver: a web-sys `WebSocket` and one timer around
//! `kite_mqtt::session::Session`. It parses no bytes itself; it moves them and the time.
//!
//! Events are collected while the driver's state is borrowed and handed to the application
//! afterwards, so an application callback may call back into the driver.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use bytestring::ByteString;
use kite_mqtt::codec::{Props, Publish, ReasonCode, Subscription};
use kite_mqtt::session::{
    Backoff, CloseReason, ConnectOptions, Event, Instant, Session, SessionError,
};
use kite_mqtt::{MqttStr, QoS, Version};

/// A publish waiting in the outbox, as the app lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// What [`Connection::cancel`] takes.
    pub key: u64,
    /// Its topic.
    pub topic: String,
    /// Its QoS.
    pub qos: QoS,
    /// Retained.
    pub retain: bool,
    /// Payload bytes.
    pub bytes: usize,
    /// Packet id for QoS 1/2 (the one `publish` returned), 0 for QoS 0.
    pub packet_id: u16,
}
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{BinaryType, MessageEvent, WebSocket};

/// What the application hears from the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The connection state changed.
    Status(Status),
    /// A session event (messages, acknowledgements, ...).
    Mqtt(Event),
}

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Opening the WebSocket or waiting for CONNACK.
    Connecting,
    /// CONNACK accepted.
    Connected,
    /// Lost; the next attempt in this many milliseconds.
    Reconnecting {
        /// Delay before the next attempt.
        in_ms: u32,
        /// When the next attempt is (ms since the epoch): the delay counts down to it.
        at_ms: u64,
        /// Why the last connection ended.
        reason: String,
    },
    /// Closed on request.
    Closed,
    /// The broker refused the connection for a reason trying again will not fix (bad user
    /// name or password, not authorized, banned, unsupported version, client id not valid):
    /// no reconnecting until the person connects again.
    Failed {
        /// The broker's answer.
        reason: String,
    },
}

/// Whether the broker will refuse the same CONNECT again.
/// Why redialing would only take the session back from another connection that uses the same
/// client id — which would then take it back, forever (two tabs with one profile): the
/// server said so (5.0: 0x8E Session taken over), or, with brokers that close the older
/// connection without a word (3.1.1; mosquitto 2.0 in 5.0 too), the broker closed the
/// connection cleanly within [`SHORT_LIVED_MS`] of accepting it [`SHORT_LIVED_IN_A_ROW`]
/// times in a row.
pub fn taken_over(reason: &CloseReason, short_lived_in_a_row: u32) -> Option<String> {
    const TEXT: &str = "another connection with the same client id took this session over (another tab with this connection, or a device using the same id); Kite stopped here so that the two do not take it from each other forever: change the client id, or close the other and connect again";
    match reason {
        CloseReason::ServerDisconnect {
            reason: ReasonCode::SessionTakenOver,
            ..
        } => Some(TEXT.to_owned()),
        CloseReason::ConnectionLost if short_lived_in_a_row >= SHORT_LIVED_IN_A_ROW => {
            Some(format!(
                "the broker closed this connection {short_lived_in_a_row} times in a row within seconds of accepting it — usually {TEXT}"
            ))
        }
        _ => None,
    }
}

/// Connections the broker closes this soon after accepting them count as short-lived (the
/// other connection's redial comes within the longest backoff).
pub const SHORT_LIVED_MS: u128 = 60_000;
/// Short-lived connections in a row that stop the redialing ([`taken_over`]).
pub const SHORT_LIVED_IN_A_ROW: u32 = 3;

fn refused_for_good(reason: &CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::Refused {
            reason: ReasonCode::UnsupportedProtocolVersion
                | ReasonCode::ClientIdentifierNotValid
                | ReasonCode::BadUserNameOrPassword
                | ReasonCode::NotAuthorized
                | ReasonCode::Banned
                | ReasonCode::BadAuthenticationMethod,
            ..
        }
    )
}

struct Inner {
    session: Session,
    url: String,
    ws: Option<WebSocket>,
    backoff: Backoff,
    attempt: u32,
    connected_at: Option<Instant>,
    /// Connections in a row lost within [`SHORT_LIVED_MS`] of being accepted.
    short_lived: u32,
    user_closed: bool,
    /// The timer is a redial after a lost connection (not the session's deadline): pumping
    /// the session meanwhile (a publish into the outbox) must not cancel it.
    redialing: bool,
    /// The redial waited for (its delay and when, ms since the epoch): a later explanation of
    /// the failure re-tells it with the reason.
    waiting: Option<(u32, u64)>,
    /// The current socket opened (else a close means the gateway was not reached).
    opened: bool,
    /// What the gateway said when it closed the socket (code and reason), for the status.
    close_note: Option<String>,
    /// The last socket was closed normally (1000) by the other side: the broker ended the
    /// connection (not the network).
    closed_cleanly: bool,
    timer: Option<i32>,
    notify: Rc<dyn Fn(Notice)>,
    /// The closures the browser calls, made once per connection and never replaced while
    /// they could run (wasm-bindgen refuses a call into a dropped closure).
    callbacks: Option<Callbacks>,
}

struct Callbacks {
    on_open: Closure<dyn FnMut(MessageEvent)>,
    on_message: Closure<dyn FnMut(MessageEvent)>,
    on_close: Closure<dyn FnMut(MessageEvent)>,
    tick: Closure<dyn FnMut()>,
    redial: Closure<dyn FnMut()>,
}

fn detach(ws: &WebSocket) {
    ws.set_onopen(None);
    ws.set_onmessage(None);
    ws.set_onclose(None);
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let (Some(id), Some(w)) = (self.timer.take(), web_sys::window()) {
            w.clear_timeout_with_handle(id);
        }
        if let Some(ws) = self.ws.take() {
            detach(&ws);
            let _ = ws.close();
        }
    }
}

/// A connection to a broker through Kite's gateway. Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    inner: Rc<RefCell<Inner>>,
}

impl PartialEq for Connection {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

fn window_timeout(f: &js_sys::Function, ms: i32) -> Option<i32> {
    web_sys::window()?
        .set_timeout_with_callback_and_timeout_and_arguments_0(f, ms)
        .ok()
}

impl Connection {
    /// Connects to `url` (`ws://.../mqtt`) as MQTT 5 with this client id; `notify` hears
    /// every status change and session event.
    pub fn open(url: &str, client_id: &str, notify: impl Fn(Notice) + 'static) -> Self {
        let opts = ConnectOptions {
            version: Version::V5,
            client_id: ByteString::from(client_id),
            keep_alive: 30,
            ..ConnectOptions::default()
        };
        let conn = Self::new(url, opts, notify);
        conn.connect();
        conn
    }

    /// A connection that will dial `url` with `opts` when [`Connection::connect`] is called;
    /// until then publishes wait in its outbox.
    pub fn new(url: &str, opts: ConnectOptions, notify: impl Fn(Notice) + 'static) -> Self {
        let inner = Rc::new(RefCell::new(Inner {
            session: Session::new(opts),
            url: url.to_owned(),
            ws: None,
            backoff: Backoff::default(),
            attempt: 0,
            connected_at: None,
            short_lived: 0,
            user_closed: true,
            redialing: false,
            waiting: None,
            opened: false,
            close_note: None,
            closed_cleanly: false,
            timer: None,
            notify: Rc::new(notify),
            callbacks: None,
        }));
        let conn = Self { inner };
        conn.make_callbacks();
        conn
    }

    /// Dials (again): from closed, or now instead of at the end of a reconnect delay.
    pub fn connect(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            if !inner.user_closed && inner.ws.is_some() {
                return; // connecting or connected already
            }
            inner.user_closed = false;
            inner.attempt = 0;
        }
        self.clear_timer();
        self.dial();
    }

    /// New options and URL for the next connection, keeping the outbox (only while closed:
    /// returns false otherwise).
    pub fn reconfigure(&self, url: &str, opts: ConnectOptions) -> bool {
        let mut inner = self.inner.borrow_mut();
        if !inner.user_closed {
            return false;
        }
        let now = Instant::now();
        let saved = inner.session.export_outbox(now);
        let mut session = Session::new(opts);
        // The same messages, checked against the new options; any that no longer fit (a
        // version without properties...) leave the outbox as it was.
        if session.import_outbox(&saved, now).is_err() {
            return false;
        }
        inner.session = session;
        inner.url = url.to_owned();
        true
    }

    /// The protocol version in use.
    pub fn version(&self) -> Version {
        self.inner.borrow().session.version()
    }

    /// Whether it is connected (CONNACK received).
    pub fn is_connected(&self) -> bool {
        self.inner.borrow().session.is_connected()
    }

    /// Whether the person closed it (no reconnecting).
    pub fn is_closed(&self) -> bool {
        self.inner.borrow().user_closed
    }

    /// Subscribes to `filter` (validated by the session; the error says which rule it breaks).
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<u16, SessionError> {
        self.subscribe_with(Subscription::new(filter, qos))
    }

    /// Subscribes with every option (5.0: no local, retain as published, retain handling).
    pub fn subscribe_with(&self, subscription: Subscription) -> Result<u16, SessionError> {
        let r = self.with(|s, now| s.subscribe(vec![subscription], Props::default(), now));
        self.pump();
        r
    }

    /// Unsubscribes from `filter`.
    pub fn unsubscribe(&self, filter: &str) -> Result<u16, SessionError> {
        let r = self.with(|s, now| s.unsubscribe(vec![MqttStr::from(filter)], now));
        self.pump();
        r
    }

    /// The publishes waiting to be sent, oldest first.
    pub fn outbox(&self) -> Vec<Waiting> {
        let inner = self.inner.borrow();
        inner
            .session
            .outbox()
            .map(|w| Waiting {
                key: w.key,
                topic: w.publish.topic.to_string(),
                qos: w.publish.qos,
                retain: w.publish.retain,
                bytes: w.publish.payload.len(),
                packet_id: w.publish.packet_id,
            })
            .collect()
    }

    /// How many publishes wait in the outbox (without copying them out).
    pub fn outbox_len(&self) -> usize {
        self.inner.borrow().session.outbox_len()
    }

    /// QoS 1/2 publishes sent and not yet acknowledged.
    pub fn inflight(&self) -> usize {
        self.inner.borrow().session.inflight_len()
    }

    /// Takes a waiting publish out of the outbox; `None` if it already went.
    pub fn cancel(&self, key: u64) -> Option<Publish> {
        self.inner.borrow_mut().session.cancel(key)
    }

    /// Everything not yet acknowledged, as bytes to keep across a page reload.
    pub fn export_outbox(&self) -> bytes::Bytes {
        self.inner.borrow().session.export_outbox(Instant::now())
    }

    /// Queues messages kept by [`Connection::export_outbox`].
    pub fn import_outbox(&self, data: &[u8]) -> Result<usize, SessionError> {
        let r = self.with(|s, now| s.import_outbox(data, now));
        self.pump();
        r
    }

    /// Publishes (queued in the outbox while disconnected).
    pub fn publish(&self, publish: Publish) -> Result<Option<u16>, SessionError> {
        let r = self.with(|s, now| s.publish(publish, now));
        self.pump();
        r
    }

    /// Disconnects and stops reconnecting.
    pub fn close(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.user_closed = true;
            let now = Instant::now();
            let _ = inner
                .session
                .disconnect(ReasonCode::NormalDisconnection, now);
        }
        self.pump();
        let ws = self.inner.borrow_mut().ws.take();
        if let Some(ws) = ws {
            detach(&ws);
            let _ = ws.close();
        }
        self.clear_timer();
        self.emit(vec![Notice::Status(Status::Closed)]);
    }

    fn with<T>(&self, f: impl FnOnce(&mut Session, Instant) -> T) -> T {
        let mut inner = self.inner.borrow_mut();
        f(&mut inner.session, Instant::now())
    }

    fn weak(&self) -> Weak<RefCell<Inner>> {
        Rc::downgrade(&self.inner)
    }

    fn from_weak(weak: &Weak<RefCell<Inner>>) -> Option<Self> {
        weak.upgrade().map(|inner| Self { inner })
    }

    fn emit(&self, notices: Vec<Notice>) {
        let notify = self.inner.borrow().notify.clone();
        for n in notices {
            notify(n);
        }
    }

    fn make_callbacks(&self) {
        let weak = self.weak();
        let on = |f: fn(&Connection, MessageEvent)| {
            let weak = weak.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
                if let Some(c) = Self::from_weak(&weak) {
                    f(&c, e);
                }
            })
        };
        let on_open = on(|c, _| {
            c.inner.borrow_mut().opened = true;
            c.with(|s, now| s.connect(now));
            c.pump();
        });
        let on_message = on(|c, e| {
            if let Ok(buf) = e.data().dyn_into::<js_sys::ArrayBuffer>() {
                let bytes = js_sys::Uint8Array::new(&buf).to_vec();
                c.with(|s, now| s.handle_bytes(&bytes, now));
                c.pump();
            }
        });
        let on_close = on(|c, e| {
            let e: web_sys::CloseEvent = e.unchecked_into();
            let (opened, url) = {
                let mut inner = c.inner.borrow_mut();
                if let Some(ws) = inner.ws.take() {
                    detach(&ws);
                }
                (std::mem::take(&mut inner.opened), inner.url.clone())
            };
            if !opened {
                // The socket never opened: the session never started, so it has nothing to
                // report; the driver tries again itself.
                if !c.inner.borrow().user_closed {
                    c.schedule_reconnect(format!("cannot reach {url} (asking why…)"));
                    // The browser tells nothing more of a failed WebSocket: the same URL over
                    // plain HTTP tells a missing path from a server not reached.
                    let weak = c.weak();
                    wasm_bindgen_futures::spawn_local(async move {
                        let why = crate::reach::explain(&url, &crate::reach::probe(&url).await);
                        if let Some(c) = Self::from_weak(&weak) {
                            c.explain_wait(why);
                        }
                    });
                }
                return;
            }
            let (code, reason) = (e.code(), e.reason());
            c.inner.borrow_mut().closed_cleanly = code == 1000;
            c.inner.borrow_mut().close_note = match (code, reason.is_empty()) {
                (1000, true) => None,
                (code, true) => Some(format!("the connection to the gateway closed ({code})")),
                (code, false) => Some(format!(
                    "the gateway closed the connection ({code}): {reason}"
                )),
            };
            c.with(|s, now| s.connection_lost(now));
            c.pump();
        });
        let tick = {
            let weak = weak.clone();
            Closure::<dyn FnMut()>::new(move || {
                if let Some(c) = Self::from_weak(&weak) {
                    c.inner.borrow_mut().timer = None;
                    c.with(|s, now| s.handle_timeout(now));
                    c.pump();
                }
            })
        };
        let redial = Closure::<dyn FnMut()>::new(move || {
            if let Some(c) = Self::from_weak(&weak) {
                {
                    let mut inner = c.inner.borrow_mut();
                    inner.timer = None;
                    inner.redialing = false;
                }
                if !c.inner.borrow().user_closed {
                    c.dial();
                }
            }
        });
        self.inner.borrow_mut().callbacks = Some(Callbacks {
            on_open,
            on_message,
            on_close,
            tick,
            redial,
        });
    }

    fn clear_timer(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.redialing = false;
            inner.waiting = None;
        }
        if let (Some(id), Some(w)) = (self.inner.borrow_mut().timer.take(), web_sys::window()) {
            w.clear_timeout_with_handle(id);
        }
    }

    /// Sets the one timer to call `which` (tick or redial) after `ms`.
    fn set_timer(&self, ms: i32, redial: bool) {
        self.clear_timer();
        let mut inner = self.inner.borrow_mut();
        let handle = inner.callbacks.as_ref().and_then(|cb| {
            let f = if redial { &cb.redial } else { &cb.tick };
            window_timeout(f.as_ref().unchecked_ref(), ms)
        });
        inner.timer = handle;
    }

    /// Opens a WebSocket and wires its callbacks.
    fn dial(&self) {
        let url = self.inner.borrow().url.clone();
        let ws = match WebSocket::new_with_str(&url, "mqtt") {
            Ok(ws) => ws,
            Err(e) => {
                let reason = format!("cannot open {url}: {}", crate::api::describe(e));
                return self.schedule_reconnect(reason);
            }
        };
        ws.set_binary_type(BinaryType::Arraybuffer);
        {
            let mut inner = self.inner.borrow_mut();
            if let Some(cb) = &inner.callbacks {
                ws.set_onopen(Some(cb.on_open.as_ref().unchecked_ref()));
                ws.set_onmessage(Some(cb.on_message.as_ref().unchecked_ref()));
                ws.set_onclose(Some(cb.on_close.as_ref().unchecked_ref()));
            }
            inner.opened = false;
            if let Some(old) = inner.ws.replace(ws) {
                detach(&old);
                let _ = old.close();
            }
        }
        self.emit(vec![Notice::Status(Status::Connecting)]);
    }

    /// Sends what the session has to send, hands out its events, and sets the timer.
    fn pump(&self) {
        let mut notices = Vec::new();
        let mut ended = None;
        {
            let mut inner = self.inner.borrow_mut();
            while let Some(bytes) = inner.session.poll_transmit() {
                if let Some(ws) = &inner.ws {
                    let _ = ws.send_with_u8_array(&bytes);
                }
            }
            while let Some(event) = inner.session.poll_event() {
                match &event {
                    Event::Connected { .. } => {
                        inner.connected_at = Some(Instant::now());
                        notices.push(Notice::Status(Status::Connected));
                    }
                    Event::Disconnected(reason) => ended = Some(reason.clone()),
                    _ => {}
                }
                notices.push(Notice::Mqtt(event));
            }
        }
        self.emit(notices);
        if let Some(reason) = ended {
            let ws = self.inner.borrow_mut().ws.take();
            if let Some(ws) = ws {
                detach(&ws);
                let _ = ws.close();
            }
            let note = self.inner.borrow_mut().close_note.take();
            if reason != CloseReason::Requested && !self.inner.borrow().user_closed {
                let text = match (&reason, note) {
                    (CloseReason::ConnectionLost, Some(note)) => note,
                    _ => reason.to_string(),
                };
                let short_lived = {
                    let mut inner = self.inner.borrow_mut();
                    let brief = reason == CloseReason::ConnectionLost
                        && std::mem::take(&mut inner.closed_cleanly)
                        && inner
                            .connected_at
                            .is_some_and(|t| t.elapsed().as_millis() < SHORT_LIVED_MS);
                    inner.short_lived = if brief { inner.short_lived + 1 } else { 0 };
                    inner.short_lived
                };
                let stop = taken_over(&reason, short_lived)
                    .or_else(|| refused_for_good(&reason).then(|| reason.to_string()));
                if let Some(why) = stop {
                    let mut inner = self.inner.borrow_mut();
                    inner.user_closed = true;
                    inner.short_lived = 0;
                    drop(inner);
                    self.emit(vec![Notice::Status(Status::Failed { reason: why })]);
                } else {
                    self.schedule_reconnect(text);
                }
            }
            return;
        }
        self.arm_timer();
    }

    fn arm_timer(&self) {
        if self.inner.borrow().redialing {
            return;
        }
        let deadline = self.inner.borrow().session.poll_timeout();
        match deadline {
            Some(at) => {
                let ms = at
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as i32;
                self.set_timer(ms, false);
            }
            None => self.clear_timer(),
        }
    }

    fn schedule_reconnect(&self, reason: String) {
        let delay = {
            let mut inner = self.inner.borrow_mut();
            let lasted = inner
                .connected_at
                .take()
                .map(|t| t.elapsed())
                .unwrap_or_default();
            inner.attempt = inner.backoff.next_attempt(inner.attempt, lasted);
            inner.backoff.delay(inner.attempt, js_sys::Math::random())
        };
        let in_ms = delay.as_millis().min(u32::MAX as u128) as u32;
        let at_ms = js_sys::Date::now() as u64 + u64::from(in_ms);
        self.emit(vec![Notice::Status(Status::Reconnecting {
            in_ms,
            at_ms,
            reason,
        })]);
        self.set_timer(i32::try_from(in_ms).unwrap_or(i32::MAX), true);
        let mut inner = self.inner.borrow_mut();
        inner.redialing = true;
        inner.waiting = Some((in_ms, at_ms));
    }

    /// Re-tells the redial waited for with `reason` (nothing if it is no longer waited for).
    fn explain_wait(&self, reason: String) {
        let waiting = {
            let inner = self.inner.borrow();
            inner.waiting.filter(|_| inner.redialing)
        };
        if let Some((in_ms, at_ms)) = waiting {
            self.emit(vec![Notice::Status(Status::Reconnecting {
                in_ms,
                at_ms,
                reason,
            })]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #21, bug 5: two tabs with one client id took the session from each other forever
    /// (0x8E [MQTT-3.1.4-3] each time the other reconnected); the driver stops and says why.
    #[test]
    fn a_session_taken_over_stops_the_redialing() {
        let over = CloseReason::ServerDisconnect {
            reason: ReasonCode::SessionTakenOver,
            reason_string: None,
        };
        assert!(taken_over(&over, 0).is_some_and(|t| t.contains("same client id")));
        let lost = CloseReason::ConnectionLost;
        assert_eq!(taken_over(&lost, SHORT_LIVED_IN_A_ROW - 1), None);
        let why = taken_over(&lost, SHORT_LIVED_IN_A_ROW).unwrap_or_default();
        assert!(why.contains("3 times in a row"), "{why}");
        assert_eq!(taken_over(&CloseReason::KeepAliveTimeout, 9), None);
    }
}
