//! The core of `kite.js`: Kite's MQTT session (`kite-mqtt`, the same code as the app) for any
//! web page. Sans IO, as the session is: the page's script (`embed/js/kite.js`) owns the
//! WebSocket and the timer, hands the session what arrives and sends what it gives. Every
//! packet is encoded, decoded and checked here; the script holds no MQTT of its own.
#![forbid(unsafe_code)]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use alloc::{format, vec};

use bytes::Bytes;
use js_sys::{Array, Object, Reflect, Uint8Array};
use kite_mqtt::QoS;
use kite_mqtt::Version;
use kite_mqtt::codec::{Properties, Publish, RetainHandling, Subscription};
use kite_mqtt::session::Instant;
use kite_mqtt::session::{self, CloseReason, ConnectOptions, Event};
use wasm_bindgen::prelude::*;

/// One MQTT session over the page's WebSocket.
#[wasm_bindgen]
pub struct Session {
    inner: session::Session,
}

/// Now, on the session's clock.
#[cfg(feature = "std")]
fn now() -> Instant {
    Instant::now()
}

#[cfg(not(feature = "std"))]
#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Now, on the session's clock: the page's `performance.now()` (whole milliseconds; `as`
/// saturates, so no value from the page can make it panic).
#[cfg(not(feature = "std"))]
fn now() -> Instant {
    Instant::after_origin(core::time::Duration::from_millis(performance_now() as u64))
}

/// `options`' `key` as a string, if it is one.
fn text(options: &JsValue, key: &str) -> Option<String> {
    Reflect::get(options, &JsValue::from_str(key))
        .ok()
        .and_then(|v| v.as_string())
}

/// `options`' `key` as a number, if it is one.
fn number(options: &JsValue, key: &str) -> Option<f64> {
    Reflect::get(options, &JsValue::from_str(key))
        .ok()
        .and_then(|v| v.as_f64())
}

fn set(o: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(o, &JsValue::from_str(key), &value.into());
}

fn error(message: impl core::fmt::Display) -> JsError {
    JsError::new(&message.to_string())
}

#[wasm_bindgen]
impl Session {
    /// A session from `options`: `clientId` (empty: the broker assigns one with MQTT 5),
    /// `username`, `password`, `version` (5 or 4 for 3.1.1; default 5), `keepAlive` (s,
    /// default 60), `clean` (default true), `sessionExpiry` (s, MQTT 5).
    #[wasm_bindgen(constructor)]
    pub fn new(options: &JsValue) -> Result<Session, JsError> {
        let version = match number(options, "version").map(|v| v as i64) {
            None | Some(5) => Version::V5,
            Some(3 | 4) => Version::V3_1_1,
            // (No number in the message: Rust's float formatting would double this module.)
            Some(_) => return Err(error("version: 5 (MQTT 5.0) or 4 (3.1.1)")),
        };
        let keep_alive = match number(options, "keepAlive") {
            None => 60,
            Some(k) if (0.0..=65_535.0).contains(&k) => k as u16,
            Some(_) => return Err(error("keepAlive: 0 to 65535 seconds")),
        };
        let clean = Reflect::get(options, &JsValue::from_str("clean"))
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        let mut properties = Properties::default();
        if let Some(e) = number(options, "sessionExpiry") {
            properties.session_expiry_interval = Some(e.clamp(0.0, f64::from(u32::MAX)) as u32);
        }
        let opts = ConnectOptions {
            version,
            client_id: text(options, "clientId").unwrap_or_default().into(),
            clean_start: clean,
            keep_alive,
            username: text(options, "username").map(Into::into),
            password: text(options, "password").map(|p| Bytes::from(p.into_bytes())),
            properties,
            ..ConnectOptions::default()
        };
        Ok(Session {
            inner: session::Session::new(opts),
        })
    }

    /// The WebSocket opened: the CONNECT (and, on a resumed session, what waits) goes.
    pub fn connect(&mut self) {
        self.inner.connect(now());
    }

    /// Bytes from the WebSocket.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.inner.handle_bytes(bytes, now());
    }

    /// The WebSocket closed.
    pub fn lost(&mut self) {
        self.inner.connection_lost(now());
    }

    /// The next bytes to send, or `undefined`.
    pub fn transmit(&mut self) -> Option<Uint8Array> {
        self.inner.poll_transmit().map(|b| Uint8Array::from(&b[..]))
    }

    /// Milliseconds until [`Session::tick`] is due, or -1 when nothing is.
    pub fn timeout(&self) -> f64 {
        self.inner.poll_timeout().map_or(-1.0, |at| {
            at.saturating_duration_since(now()).as_secs_f64() * 1000.0
        })
    }

    /// The timer fired.
    pub fn tick(&mut self) {
        self.inner.handle_timeout(now());
    }

    /// Whether the broker accepted the connection.
    pub fn connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// Publishes waiting for the connection or for room.
    pub fn waiting(&self) -> usize {
        self.inner.outbox_len()
    }

    /// Queues a publish: its packet id (QoS 1 and 2; completed by a `published` event), or 0
    /// (QoS 0). `properties`: `contentType`, `responseTopic`, `correlationData` (bytes),
    /// `messageExpiry` (s), `payloadFormat` (true: UTF-8), `userProperties` (`{k: v}` or
    /// `[[k, v]]`). Throws what is wrong (a bad topic, QoS, too large, the outbox full).
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        properties: &JsValue,
    ) -> Result<u16, JsError> {
        let qos = QoS::from_u8(qos).ok_or_else(|| error(format!("qos {qos}: 0, 1 or 2")))?;
        kite_mqtt::topic::validate_name(topic)
            .map_err(|e| error(format!("topic \"{topic}\": {e}")))?;
        let publish = Publish {
            qos,
            retain,
            topic: topic.into(),
            payload: Bytes::copy_from_slice(payload),
            properties: publish_properties(properties)?.into(),
            ..Publish::default()
        };
        let id = self.inner.publish(publish, now()).map_err(error)?;
        Ok(id.unwrap_or(0))
    }

    /// Subscribes to `filter` at `qos`: the packet id its `subscribed` event carries.
    pub fn subscribe(&mut self, filter: &str, qos: u8) -> Result<u16, JsError> {
        let qos = QoS::from_u8(qos).ok_or_else(|| error(format!("qos {qos}: 0, 1 or 2")))?;
        kite_mqtt::topic::validate_filter(filter)
            .map_err(|e| error(format!("filter \"{filter}\": {e}")))?;
        let sub = Subscription {
            filter: filter.into(),
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        };
        self.inner
            .subscribe(vec![sub], Default::default(), now())
            .map_err(error)
    }

    /// Unsubscribes from `filter`.
    pub fn unsubscribe(&mut self, filter: &str) -> Result<u16, JsError> {
        self.inner
            .unsubscribe(vec![filter.into()], now())
            .map_err(error)
    }

    /// Ends the session cleanly (a DISCONNECT to send).
    pub fn disconnect(&mut self) {
        let _ = self
            .inner
            .disconnect(kite_mqtt::codec::ReasonCode::Success, now());
    }

    /// The next event, or `undefined`: `{type: "connected", sessionPresent, clientId}`,
    /// `{type: "message", topic, payload, qos, retain, properties}`, `{type: "published",
    /// id, ok, reason}`, `{type: "subscribed", id, ok, reason}`, `{type: "unsubscribed", id}`,
    /// `{type: "dropped", topic, reason}`, `{type: "closed", reason, code, final}` (`final`:
    /// trying again would not help — a refused login, a session taken over).
    pub fn event(&mut self) -> JsValue {
        let Some(event) = self.inner.poll_event() else {
            return JsValue::UNDEFINED;
        };
        let o = Object::new();
        match event {
            Event::Connected {
                session_present,
                client_id,
                ..
            } => {
                set(&o, "type", "connected");
                set(&o, "sessionPresent", session_present);
                set(&o, "clientId", client_id.to_string());
            }
            Event::Message(p) => {
                set(&o, "type", "message");
                set(&o, "topic", p.topic.as_str());
                set(&o, "payload", Uint8Array::from(&p.payload[..]));
                set(&o, "qos", p.qos as u8);
                set(&o, "retain", p.retain);
                set(&o, "properties", properties_object(&p.properties));
            }
            Event::Published { packet_id, reason } => {
                set(&o, "type", "published");
                set(&o, "id", packet_id);
                set(&o, "ok", !reason.is_error());
                set(&o, "reason", reason.to_string());
                set(&o, "code", reason as u8);
            }
            Event::Subscribed { packet_id, reasons } => {
                set(&o, "type", "subscribed");
                set(&o, "id", packet_id);
                let reason = reasons.first().copied();
                set(&o, "ok", reason.is_some_and(|r| !r.is_error()));
                set(
                    &o,
                    "reason",
                    reason.map(|r| r.to_string()).unwrap_or_default(),
                );
            }
            Event::Unsubscribed { packet_id, .. } => {
                set(&o, "type", "unsubscribed");
                set(&o, "id", packet_id);
            }
            Event::Dropped { topic, why } => {
                set(&o, "type", "dropped");
                set(&o, "topic", topic.as_str());
                set(
                    &o,
                    "reason",
                    match why {
                        session::DropReason::OutboxFull => "the outbox was full",
                        session::DropReason::Expired => "its message expiry passed",
                    },
                );
            }
            Event::Disconnected(reason) => {
                set(&o, "type", "closed");
                set(&o, "reason", reason.to_string());
                let (code, final_) = match &reason {
                    CloseReason::Refused { reason, .. } => (*reason as u8, true),
                    CloseReason::ServerDisconnect { reason, .. } => (
                        *reason as u8,
                        *reason == kite_mqtt::codec::ReasonCode::SessionTakenOver,
                    ),
                    _ => (0, false),
                };
                set(&o, "code", code);
                set(&o, "final", final_);
            }
            // Neither is asked for by this session (no manual release, no AUTH method).
            Event::Received { .. } | Event::Auth(_) => return self.event(),
        }
        o.into()
    }
}

// kite.js's build (no `std`): a panic (a bug: nothing from the page or the network panics on
// purpose) traps, which the page's script sees as a `RuntimeError` from the call it made.
#[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

// kite.js's allocator: lol_alloc's free list (first fit, neighbours merged on free) is about
// 0.5 KB of wasm where dlmalloc was 6–8 KB; a page's session makes few, short-lived
// allocations (a packet, a message, an event), so its list stays short. The lock is a spin
// lock that a single-threaded page never waits on; it keeps this crate free of `unsafe`.
#[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());

/// Whether the topic `name` matches `filter` (`+`, `#`, the `$` rule).
#[wasm_bindgen]
pub fn matches(filter: &str, name: &str) -> bool {
    kite_mqtt::topic::matches(filter, name)
}

/// A publish's properties from the page's object.
fn publish_properties(p: &JsValue) -> Result<Properties, JsError> {
    let mut out = Properties::default();
    if p.is_undefined() || p.is_null() {
        return Ok(out);
    }
    out.content_type = text(p, "contentType").map(Into::into);
    out.response_topic = text(p, "responseTopic").map(Into::into);
    if let Some(e) = number(p, "messageExpiry") {
        out.message_expiry_interval = Some(e.clamp(0.0, f64::from(u32::MAX)) as u32);
    }
    if let Some(b) = Reflect::get(p, &JsValue::from_str("payloadFormat"))
        .ok()
        .and_then(|v| v.as_bool())
    {
        out.payload_format_indicator = Some(b);
    }
    if let Ok(c) = Reflect::get(p, &JsValue::from_str("correlationData")) {
        if let Some(s) = c.as_string() {
            out.correlation_data = Some(Bytes::from(s.into_bytes()));
        } else if c.is_instance_of::<Uint8Array>() {
            out.correlation_data = Some(Bytes::from(Uint8Array::new(&c).to_vec()));
        }
    }
    if let Ok(u) = Reflect::get(p, &JsValue::from_str("userProperties"))
        && u.is_object()
    {
        let pairs: Vec<JsValue> = if Array::is_array(&u) {
            Array::from(&u).iter().collect()
        } else {
            Object::entries(&Object::from(u)).iter().collect()
        };
        for pair in pairs {
            let pair = Array::from(&pair);
            match (pair.get(0).as_string(), pair.get(1).as_string()) {
                (Some(k), Some(v)) => out.user_properties.push((k.into(), v.into())),
                _ => return Err(error("userProperties: string keys and string values")),
            }
        }
    }
    Ok(out)
}

/// A message's properties for the page: the same names as [`publish_properties`] reads.
fn properties_object(p: &Properties) -> Object {
    let o = Object::new();
    if let Some(v) = &p.content_type {
        set(&o, "contentType", v.as_str());
    }
    if let Some(v) = &p.response_topic {
        set(&o, "responseTopic", v.as_str());
    }
    if let Some(v) = &p.correlation_data {
        set(&o, "correlationData", Uint8Array::from(&v[..]));
    }
    if let Some(v) = p.message_expiry_interval {
        set(&o, "messageExpiry", v);
    }
    if let Some(v) = p.payload_format_indicator {
        set(&o, "payloadFormat", v);
    }
    if !p.user_properties.is_empty() {
        let list = Array::new();
        for (k, v) in &p.user_properties {
            list.push(&Array::of2(&k.as_str().into(), &v.as_str().into()));
        }
        set(&o, "userProperties", list);
    }
    o
}
