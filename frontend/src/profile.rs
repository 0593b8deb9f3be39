//! Connection profiles: what a person fills in to reach a broker, kept in the browser.
//!
//! A profile holds the text as typed (so a half-finished form is saved as it is); [`Profile::check`]
//! turns it into session options or says, per field, what is wrong. Profiles are stored as JSON
//! written here and read with [`crate::payload::parse`] (no serde: the app must stay small).
//! Plain Rust, no web-sys: tested natively.

use std::fmt::Write as _;

use bytes::Bytes;
use bytestring::ByteString;
use kite_mqtt::codec::{Properties, RetainHandling, Subscription, Will};
use kite_mqtt::session::ConnectOptions;
use kite_mqtt::{MqttStr, QoS, Version};

use crate::payload::{self, Json};

/// Colours offered for connections (readable on light and dark backgrounds).
pub const PALETTE: [&str; 8] = [
    "#2f80ed", "#eb5757", "#27ae60", "#f2994a", "#9b51e0", "#00a3a3", "#d4a017", "#e0529c",
];

/// One saved connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Stable identifier (in URLs and storage keys): lowercase letters and digits.
    pub id: String,
    /// What it is called.
    pub name: String,
    /// `#rrggbb`.
    pub colour: String,
    /// WebSocket URL; empty: the gateway that served the page.
    pub url: String,
    /// Gateway upstream name; empty: the gateway's default broker.
    pub upstream: String,
    /// Protocol version.
    pub version: Version,
    /// Client identifier; empty: the broker assigns one (5.0) / a random one is used (3.1.1).
    pub client_id: String,
    /// User name (empty: none).
    pub username: String,
    /// Password (kept in the browser only if `save_password`).
    pub password: String,
    /// Whether the password is saved with the profile.
    pub save_password: bool,
    /// Clean start (5.0) / clean session (3.1.1).
    pub clean_start: bool,
    /// Session expiry interval in seconds, as typed (5.0).
    pub session_expiry: String,
    /// Keep-alive in seconds, as typed.
    pub keep_alive: String,
    /// The Last Will, if `will_topic` is not empty.
    pub will_topic: String,
    /// Its payload (text).
    pub will_payload: String,
    /// Its QoS.
    pub will_qos: u8,
    /// Whether it is retained.
    pub will_retain: bool,
    /// User properties sent with CONNECT (5.0): `name: value` per line.
    pub user_properties: String,
    /// Subscriptions made on every connect, in order.
    pub subscriptions: Vec<SubSpec>,
}

/// A subscription kept with a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubSpec {
    /// Topic filter.
    pub filter: String,
    /// Maximum QoS.
    pub qos: u8,
    /// 5.0: not my own messages.
    pub no_local: bool,
    /// 5.0: keep RETAIN as published.
    pub retain_as_published: bool,
    /// 5.0: 0 send retained at subscribe, 1 only if new, 2 never.
    pub retain_handling: u8,
}

impl SubSpec {
    /// `filter` at `qos`, default options.
    pub fn new(filter: &str, qos: u8) -> Self {
        Self {
            filter: filter.to_owned(),
            qos,
            no_local: false,
            // The RETAIN flag as published: the explorer then knows which topics the broker
            // holds a retained message for, live too (5.0; 3.1.1 ignores it).
            retain_as_published: true,
            retain_handling: 0,
        }
    }

    /// The SUBSCRIBE entry, or why the filter is not valid.
    pub fn subscription(&self) -> Result<Subscription, String> {
        kite_mqtt::topic::validate_filter(&self.filter).map_err(|e| e.to_string())?;
        Ok(Subscription {
            filter: MqttStr::from(self.filter.as_str()),
            qos: QoS::from_u8(self.qos).unwrap_or_default(),
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling: match self.retain_handling {
                1 => RetainHandling::SendIfNew,
                2 => RetainHandling::DoNotSend,
                _ => RetainHandling::SendAtSubscribe,
            },
        })
    }

    fn to_json(&self) -> String {
        format!(
            "{{\"filter\":{},\"qos\":{},\"no_local\":{},\"retain_as_published\":{},\"retain_handling\":{}}}",
            json_string(&self.filter),
            self.qos,
            self.no_local,
            self.retain_as_published,
            self.retain_handling
        )
    }

    fn from_json(v: &Json) -> Option<Self> {
        let Json::Obj(fields) = v else { return None };
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let small = |k: &str, max: u8| match get(k) {
            None => Some(0),
            Some(v) => v.small(max),
        };
        let flag = |k: &str| matches!(get(k), Some(Json::Bool(true)));
        let Some(Json::Str(filter)) = get("filter") else {
            return None;
        };
        Some(Self {
            filter: filter.clone(),
            qos: small("qos", 2)?,
            no_local: flag("no_local"),
            retain_as_published: flag("retain_as_published"),
            retain_handling: small("retain_handling", 2)?,
        })
    }
}

impl Profile {
    /// A new profile with sensible defaults: MQTT 5, same-origin gateway, a random client id,
    /// clean start, keep-alive 30 s.
    pub fn new(id: String, name: String, colour: &str, client_id: String) -> Self {
        Self {
            id,
            name,
            colour: colour.to_owned(),
            url: String::new(),
            upstream: String::new(),
            version: Version::V5,
            client_id,
            username: String::new(),
            password: String::new(),
            save_password: false,
            clean_start: true,
            session_expiry: "0".into(),
            keep_alive: "30".into(),
            will_topic: String::new(),
            will_payload: String::new(),
            will_qos: 0,
            will_retain: false,
            user_properties: String::new(),
            subscriptions: Vec::new(),
        }
    }

    /// The WebSocket URL to dial: the profile's own, or `same_origin` (`ws://host/mqtt`) with
    /// `/<upstream>` when one is chosen.
    pub fn endpoint(&self, same_origin: &str) -> String {
        let base = if self.url.trim().is_empty() {
            same_origin.trim_end_matches('/')
        } else {
            self.url.trim().trim_end_matches('/')
        };
        if self.upstream.is_empty() {
            base.to_owned()
        } else {
            format!("{base}/{}", self.upstream)
        }
    }

    /// The session options this profile asks for, or every problem found, by field.
    pub fn check(&self) -> Result<ConnectOptions, Vec<FieldError>> {
        self.check_on(None)
    }

    /// [`Profile::check_on`] for the page the app runs in.
    pub fn check_here(&self) -> Result<ConnectOptions, Vec<FieldError>> {
        let scheme = web_sys::window().and_then(|w| w.location().protocol().ok());
        self.check_on(scheme.as_deref())
    }

    /// [`Profile::check`] for a page served over `page_scheme` (`https:`: a `ws://` URL is
    /// refused — the browser would block it as mixed content).
    pub fn check_on(&self, page_scheme: Option<&str>) -> Result<ConnectOptions, Vec<FieldError>> {
        let mixed = page_scheme == Some("https:") && self.url.trim().starts_with("ws://");
        let mut checked = self.check_fields();
        if mixed {
            let e = FieldError {
                field: "url",
                message:
                    "this page came over https: the browser allows only wss:// from it; use wss://"
                        .into(),
            };
            match &mut checked {
                Ok(_) => checked = Err(vec![e]),
                Err(list) => list.push(e),
            }
        }
        checked
    }

    fn check_fields(&self) -> Result<ConnectOptions, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut fail = |field: &'static str, message: String| {
            errors.push(FieldError { field, message });
        };
        if self.name.trim().is_empty() {
            fail("name", "give the connection a name".into());
        }
        let url = self.url.trim();
        if !url.is_empty()
            && let Err(why) = check_ws_url(url)
        {
            fail("url", why);
        }
        let keep_alive = match number::<u16>(&self.keep_alive, "keep-alive", 65_535) {
            Ok(k) => k,
            Err(e) => {
                fail("keep_alive", e);
                0
            }
        };
        let v5 = self.version.is_v5();
        let session_expiry = if v5 {
            match number::<u32>(&self.session_expiry, "session expiry", u64::from(u32::MAX)) {
                Ok(s) => s,
                Err(e) => {
                    fail("session_expiry", e);
                    0
                }
            }
        } else {
            0
        };
        if let Some(message) = text_problem(&self.client_id, "the client id") {
            fail("client_id", message);
        }
        if !v5 && self.client_id.is_empty() && !self.clean_start {
            fail(
                "client_id",
                "MQTT 3.1.1 needs a client id to resume a session [MQTT-3.1.3-7]; give one or tick clean start".into(),
            );
        }
        if let Some(message) = text_problem(&self.username, "the user name") {
            fail("username", message);
        }
        if !v5 && self.username.is_empty() && !self.password.is_empty() {
            fail(
                "password",
                "MQTT 3.1.1 sends a password only with a user name [MQTT-3.1.2-22]".into(),
            );
        }
        let will = if self.will_topic.is_empty() {
            None
        } else {
            if let Err(e) = kite_mqtt::topic::validate_name(&self.will_topic) {
                fail("will_topic", format!("the Will topic: {e}"));
            }
            Some(Will {
                topic: MqttStr::from(self.will_topic.as_str()),
                payload: Bytes::from(self.will_payload.clone().into_bytes()),
                qos: QoS::from_u8(self.will_qos).unwrap_or_default(),
                retain: self.will_retain,
                properties: Default::default(),
            })
        };
        let user_properties = match parse_pairs(&self.user_properties) {
            Ok(pairs) => pairs,
            Err(e) => {
                fail("user_properties", e);
                Vec::new()
            }
        };
        if !v5 && !user_properties.is_empty() {
            fail(
                "user_properties",
                "user properties need MQTT 5.0; clear them or switch the version".into(),
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let properties = Properties {
            session_expiry_interval: (v5 && session_expiry > 0).then_some(session_expiry),
            user_properties,
            ..Properties::default()
        };
        Ok(ConnectOptions {
            version: self.version,
            client_id: ByteString::from(self.client_id.as_str()),
            clean_start: self.clean_start,
            keep_alive,
            username: (!self.username.is_empty()).then(|| ByteString::from(self.username.as_str())),
            password: (!self.password.is_empty())
                .then(|| Bytes::from(self.password.clone().into_bytes())),
            will,
            properties,
            ..ConnectOptions::default()
        })
    }

    /// The profile as a JSON object (the password only if `save_password`).
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        let mut field = |name: &str, value: String| {
            if out.len() > 1 {
                out.push(',');
            }
            let _ = write!(out, "{}:{value}", json_string(name));
        };
        let s = |v: &str| json_string(v);
        field("id", s(&self.id));
        field("name", s(&self.name));
        field("colour", s(&self.colour));
        field("url", s(&self.url));
        field("upstream", s(&self.upstream));
        field(
            "version",
            s(if self.version.is_v5() { "5" } else { "3.1.1" }),
        );
        field("client_id", s(&self.client_id));
        field("username", s(&self.username));
        if self.save_password {
            field("password", s(&self.password));
        }
        field("save_password", self.save_password.to_string());
        field("clean_start", self.clean_start.to_string());
        field("session_expiry", s(&self.session_expiry));
        field("keep_alive", s(&self.keep_alive));
        field("will_topic", s(&self.will_topic));
        field("will_payload", s(&self.will_payload));
        field("will_qos", self.will_qos.to_string());
        field("will_retain", self.will_retain.to_string());
        field("user_properties", s(&self.user_properties));
        let subs: Vec<String> = self.subscriptions.iter().map(SubSpec::to_json).collect();
        field("subscriptions", format!("[{}]", subs.join(",")));
        out.push('}');
        out
    }

    /// Reads a profile written by [`Profile::to_json`]; fields it lacks take their defaults
    /// (so older saved profiles still load).
    pub fn from_json(v: &Json) -> Result<Self, String> {
        let Json::Obj(fields) = v else {
            return Err("a profile is not a JSON object".into());
        };
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let text = |name: &str| match get(name) {
            Some(Json::Str(s)) => Ok(Some(s.clone())),
            None | Some(Json::Null) => Ok(None),
            Some(_) => Err(format!("the profile's \"{name}\" is not text")),
        };
        let flag = |name: &str| match get(name) {
            Some(Json::Bool(b)) => Ok(Some(*b)),
            None | Some(Json::Null) => Ok(None),
            Some(_) => Err(format!("the profile's \"{name}\" is not true or false")),
        };
        let id = text("id")?.filter(|id| is_id(id)).ok_or_else(|| {
            "a profile has no valid \"id\" (lowercase letters and digits)".to_owned()
        })?;
        let mut p = Profile::new(id, String::new(), PALETTE[0], String::new());
        let version = text("version")?.unwrap_or_else(|| "5".into());
        p.version = match version.as_str() {
            "5" => Version::V5,
            "3.1.1" => Version::V3_1_1,
            other => {
                return Err(format!(
                    "the profile's version \"{other}\" is not 5 or 3.1.1"
                ));
            }
        };
        let texts: [(&str, &mut String); 12] = [
            ("name", &mut p.name),
            ("colour", &mut p.colour),
            ("url", &mut p.url),
            ("upstream", &mut p.upstream),
            ("client_id", &mut p.client_id),
            ("username", &mut p.username),
            ("password", &mut p.password),
            ("session_expiry", &mut p.session_expiry),
            ("keep_alive", &mut p.keep_alive),
            ("will_topic", &mut p.will_topic),
            ("will_payload", &mut p.will_payload),
            ("user_properties", &mut p.user_properties),
        ];
        for (name, slot) in texts {
            if let Some(v) = text(name)? {
                *slot = v;
            }
        }
        let flags: [(&str, &mut bool); 3] = [
            ("save_password", &mut p.save_password),
            ("clean_start", &mut p.clean_start),
            ("will_retain", &mut p.will_retain),
        ];
        for (name, slot) in flags {
            if let Some(v) = flag(name)? {
                *slot = v;
            }
        }
        p.subscriptions = match get("subscriptions") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Arr(items)) => items
                .iter()
                .map(|v| {
                    SubSpec::from_json(v).ok_or_else(|| {
                        "a saved subscription is not {filter, qos 0-2, options}".to_owned()
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("the profile's \"subscriptions\" is not a list".into()),
        };
        p.will_qos = match get("will_qos") {
            None | Some(Json::Null) => 0,
            Some(v) => v
                .small(2)
                .ok_or("the profile's \"will_qos\" is not 0, 1 or 2")?,
        };
        Ok(p)
    }
}

/// Reads the saved list of profiles (a JSON array of [`Profile::to_json`] objects).
pub fn list_from_json(text: &str) -> Result<Vec<Profile>, String> {
    let Some(Json::Arr(items)) = payload::parse(text) else {
        return Err("the saved profiles are not a JSON list".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| Profile::from_json(v).map_err(|e| format!("profile {}: {e}", i + 1)))
        .collect()
}

/// The list as JSON.
pub fn list_to_json(profiles: &[Profile]) -> String {
    let items: Vec<String> = profiles.iter().map(Profile::to_json).collect();
    format!("[{}]", items.join(","))
}

/// A field of a form and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name (as in [`Profile`]).
    pub field: &'static str,
    /// What is wrong, and how to fix it.
    pub message: String,
}

/// Whether `id` can name a profile: 1 to 32 lowercase letters and digits.
pub fn is_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A whole number in `0..=max`, read from a form field.
pub fn number<T: TryFrom<u64>>(text: &str, what: &str, max: u64) -> Result<T, String> {
    let t = text.trim();
    let n: u64 = t
        .parse()
        .map_err(|_| format!("the {what} \"{t}\" is not a whole number of seconds"))?;
    if n > max {
        return Err(format!("the {what} is at most {max}"));
    }
    T::try_from(n).map_err(|_| format!("the {what} is at most {max}"))
}

/// Why `s` cannot be an MQTT string, if it cannot ([MQTT-1.5.4-2]: no U+0000; at most
/// 65,535 bytes).
pub fn text_problem(s: &str, what: &str) -> Option<String> {
    if s.contains('\0') {
        Some(format!(
            "{what} contains the character U+0000, which MQTT forbids [MQTT-1.5.4-2]"
        ))
    } else if s.len() > 65_535 {
        Some(format!(
            "{what} is {} bytes; MQTT strings are at most 65,535",
            s.len()
        ))
    } else {
        None
    }
}

/// `name: value` per line (blank lines skipped) into user properties; names may repeat.
pub fn parse_pairs(text: &str) -> Result<Vec<(MqttStr, MqttStr)>, String> {
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "line {}: \"{line}\" has no ':'; write one property per line as name: value",
                n + 1
            ));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return Err(format!("line {}: the property has no name", n + 1));
        }
        for (part, what) in [(name, "the name"), (value, "the value")] {
            if let Some(problem) = text_problem(part, what) {
                return Err(format!("line {}: {problem}", n + 1));
            }
        }
        pairs.push((MqttStr::from(name), MqttStr::from(value)));
    }
    Ok(pairs)
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    payload::quote(s, &mut out);
    out
}

/// A WebSocket URL as the browser will take it: `ws://` or `wss://`, a host, a port (if any)
/// from 1 to 65535, no fragment.
pub fn check_ws_url(url: &str) -> Result<(), String> {
    let Some(rest) = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
    else {
        return Err(format!(
            "\"{url}\" is not a WebSocket URL: it starts with ws:// or wss://, e.g. wss://gateway.example/mqtt"
        ));
    };
    if url.contains('#') {
        return Err(format!("\"{url}\": a WebSocket URL has no # part"));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err(format!("\"{url}\": an IPv6 host is written [::1]")),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(format!(
            "\"{url}\" names no host: e.g. wss://gateway.example/mqtt"
        ));
    }
    if let Some(p) = port
        && !matches!(p.parse::<u32>(), Ok(1..=65_535))
    {
        return Err(format!("\"{url}\": port {p} is not a port (1 to 65535)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Profile {
        let mut p = Profile::new(
            "a1".into(),
            "Plant \"A\"\n".into(),
            PALETTE[2],
            "kite-1".into(),
        );
        p.username = "alice".into();
        p.password = "s3cret".into();
        p.will_topic = "status/kite-1".into();
        p.will_payload = "offline".into();
        p.will_qos = 1;
        p.will_retain = true;
        p.user_properties = "site: lyon\nsite: paris\n".into();
        p.subscriptions.push(SubSpec {
            filter: "plant/+/temp".into(),
            qos: 2,
            no_local: true,
            retain_as_published: true,
            retain_handling: 2,
        });
        p.session_expiry = "3600".into();
        p.clean_start = false;
        p
    }

    #[test]
    fn a_profile_round_trips_through_json_and_keeps_the_password_only_when_asked() {
        let p = sample();
        let back = list_from_json(&list_to_json(std::slice::from_ref(&p))).unwrap();
        let mut expected = p.clone();
        expected.password.clear();
        assert_eq!(back, [expected], "no password saved unless asked");
        let mut saving = p;
        saving.save_password = true;
        let back = list_from_json(&list_to_json(std::slice::from_ref(&saving))).unwrap();
        assert_eq!(back, [saving]);
    }

    #[test]
    fn damaged_saved_profiles_are_refused_with_what_is_wrong() {
        assert!(list_from_json("{").unwrap_err().contains("not a JSON list"));
        let e = list_from_json(r#"[{"id":"ok1"},{"id":"Not OK"}]"#).unwrap_err();
        assert!(e.starts_with("profile 2:"), "{e}");
        let e = list_from_json(r#"[{"id":"a","version":"4"}]"#).unwrap_err();
        assert!(e.contains("\"4\""), "{e}");
        let e = list_from_json(r#"[{"id":"a","clean_start":"yes"}]"#).unwrap_err();
        assert!(e.contains("clean_start"), "{e}");
        let e =
            list_from_json(r#"[{"id":"a","subscriptions":[{"filter":"x","qos":3}]}]"#).unwrap_err();
        assert!(e.contains("subscription"), "{e}");
        // Fields a profile lacks take their defaults.
        let p = &list_from_json(r#"[{"id":"a"}]"#).unwrap()[0];
        assert_eq!(p.keep_alive, "30");
        assert!(p.clean_start);
    }

    /// Issue #21, bug 6: `ws://` alone, port 99999 and a `ws://` from an https page are
    /// refused by the form, with what to write instead.
    #[test]
    fn websocket_urls_are_checked_before_the_browser_sees_them() {
        for good in [
            "ws://localhost:8080/mqtt",
            "wss://gw.example/mqtt",
            "wss://gw.example",
            "ws://[::1]:9001/mqtt",
            "wss://user@gw.example:443/mqtt?x=1",
        ] {
            assert_eq!(check_ws_url(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("ws://", "no host"),
            ("ws:///mqtt", "no host"),
            ("ws://h:99999/mqtt", "99999"),
            ("ws://h:0", "port 0"),
            ("ws://h:/mqtt", "port"),
            ("ws://h/mqtt#x", "#"),
            ("ws://[::1/mqtt", "IPv6"),
            ("http://h/mqtt", "ws:// or wss://"),
        ] {
            let e = check_ws_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let mut p = sample();
        p.url = "ws://h:99999/mqtt".into();
        let e = p.check().unwrap_err();
        assert_eq!(e[0].field, "url");
        p.url = "ws://gw.example/mqtt".into();
        assert!(p.check_on(Some("http:")).is_ok());
        let e = p.check_on(Some("https:")).unwrap_err();
        assert!(e[0].message.contains("wss://"), "{e:?}");
    }

    #[test]
    fn check_gives_the_session_options() {
        let o = sample().check().unwrap();
        assert_eq!(o.client_id, "kite-1");
        assert!(!o.clean_start);
        assert_eq!(o.keep_alive, 30);
        assert_eq!(o.properties.session_expiry_interval, Some(3600));
        assert_eq!(o.properties.user_properties.len(), 2);
        let will = o.will.unwrap();
        assert_eq!(
            (will.topic.as_ref(), will.qos, will.retain),
            ("status/kite-1", QoS::AtLeastOnce, true)
        );
        assert_eq!(o.username.as_deref(), Some("alice"));
    }

    #[test]
    fn check_names_every_bad_field() {
        let mut p = sample();
        p.name = " ".into();
        p.url = "http://x/mqtt".into();
        p.keep_alive = "70000".into();
        p.session_expiry = "soon".into();
        p.will_topic = "status/+".into();
        p.user_properties = "no colon here".into();
        let fields: Vec<&str> = p.check().unwrap_err().iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "name",
                "url",
                "keep_alive",
                "session_expiry",
                "will_topic",
                "user_properties"
            ]
        );
    }

    #[test]
    fn mqtt_3_1_1_rules_apply_to_3_1_1_profiles() {
        let mut p = sample();
        p.version = Version::V3_1_1;
        p.client_id.clear();
        p.username.clear();
        let errors = p.check().unwrap_err();
        let text: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert!(
            text.iter().any(|t| t.contains("[MQTT-3.1.3-7]")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("[MQTT-3.1.2-22]")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.contains("need MQTT 5.0")), "{text:?}");
    }

    #[test]
    fn the_endpoint_adds_the_upstream() {
        let mut p = sample();
        assert_eq!(p.endpoint("ws://h:8080/mqtt"), "ws://h:8080/mqtt");
        p.upstream = "lab".into();
        assert_eq!(p.endpoint("ws://h:8080/mqtt"), "ws://h:8080/mqtt/lab");
        p.url = "wss://gw.example/mqtt/".into();
        assert_eq!(p.endpoint("ws://h:8080/mqtt"), "wss://gw.example/mqtt/lab");
    }

    #[test]
    fn user_properties_are_name_value_lines() {
        let pairs = parse_pairs("a: 1\n\n b :two: three \n").unwrap();
        assert_eq!(
            pairs,
            [("a".into(), "1".into()), ("b".into(), "two: three".into())]
        );
        assert!(parse_pairs(": x").unwrap_err().contains("no name"));
        assert!(parse_pairs("a: \0").unwrap_err().contains("U+0000"));
    }

    #[test]
    fn json_strings_are_escaped() {
        let s = json_string("a\"b\\c\n\u{1}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001é\"");
        assert_eq!(
            payload::parse(&s),
            Some(Json::Str("a\"b\\c\n\u{1}é".into()))
        );
    }
}
