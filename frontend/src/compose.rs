//! The publish form: what a person types (topic, payload in a format, QoS, retain, MQTT 5
//! properties) checked into a PUBLISH, or every mistake named by field. Also what the sent
//! history keeps. Plain Rust, no web-sys: tested natively.

use bytes::Bytes;
use kite_mqtt::codec::{Properties, Publish};
use kite_mqtt::{MqttStr, QoS, Version};

use crate::payload::{self, Format, Json};
use crate::profile::{FieldError, json_string, number, parse_pairs, text_problem};

/// The publish form as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// Topic name.
    pub topic: String,
    /// Payload as typed, read in `format`.
    pub payload: String,
    /// How `payload` is read: text (UTF-8), JSON (checked, sent as typed), hex or base64.
    pub format: Format,
    /// 0, 1 or 2.
    pub qos: u8,
    /// RETAIN.
    pub retain: bool,
    /// Content type (5.0), empty: none.
    pub content_type: String,
    /// Payload format indicator "UTF-8" (5.0).
    pub utf8: bool,
    /// Message expiry in seconds, as typed (5.0), empty: none.
    pub expiry: String,
    /// Response topic (5.0), empty: none.
    pub response_topic: String,
    /// Correlation data as text (5.0), empty: none.
    pub correlation: String,
    /// User properties, `name: value` per line (5.0).
    pub user_properties: String,
}

impl Default for Draft {
    fn default() -> Self {
        Self {
            topic: "kite/hello".into(),
            payload: String::new(),
            format: Format::Text,
            qos: 1,
            retain: false,
            content_type: String::new(),
            utf8: false,
            expiry: String::new(),
            response_topic: String::new(),
            correlation: String::new(),
            user_properties: String::new(),
        }
    }
}

impl Draft {
    /// Whether any MQTT 5 property is filled in.
    pub fn has_v5_properties(&self) -> bool {
        self.utf8
            || [
                &self.content_type,
                &self.expiry,
                &self.response_topic,
                &self.correlation,
                &self.user_properties,
            ]
            .iter()
            .any(|s| !s.trim().is_empty())
    }

    /// The payload bytes, or what is wrong with them.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, String> {
        match self.format {
            Format::Text => Ok(self.payload.clone().into_bytes()),
            Format::Json => match payload::json_error_at(&self.payload) {
                None => Ok(self.payload.clone().into_bytes()),
                Some((line, column)) => Err(format!(
                    "the payload is not valid JSON (line {line}, column {column}); fix it or send it as text"
                )),
            },
            Format::Hex => payload::from_hex(&self.payload),
            Format::Base64 => payload::from_base64(&self.payload),
        }
    }

    /// The PUBLISH this form describes for a connection speaking `version`, or every mistake.
    pub fn build(&self, version: Version) -> Result<Publish, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut fail = |field: &'static str, message: String| {
            errors.push(FieldError { field, message });
        };
        if let Err(e) = kite_mqtt::topic::validate_name(&self.topic) {
            fail("topic", e.to_string());
        }
        let payload = match self.payload_bytes() {
            Ok(p) => p,
            Err(e) => {
                fail("payload", e);
                Vec::new()
            }
        };
        if self.utf8 && std::str::from_utf8(&payload).is_err() {
            fail(
                "utf8",
                "the payload is marked UTF-8 but is not UTF-8 [MQTT-3.3.2-4]; untick it or fix the payload".into(),
            );
        }
        let qos = QoS::from_u8(self.qos).unwrap_or_default();
        let mut properties = Properties::default();
        if !self.content_type.is_empty() {
            match text_problem(&self.content_type, "the content type") {
                Some(p) => fail("content_type", p),
                None => properties.content_type = Some(self.content_type.as_str().into()),
            }
        }
        if self.utf8 {
            properties.payload_format_indicator = Some(true);
        }
        if !self.expiry.trim().is_empty() {
            match number::<u32>(&self.expiry, "message expiry", u64::from(u32::MAX)) {
                Ok(0) => fail(
                    "expiry",
                    "a message expiry of 0 s would expire at once; leave it empty for none".into(),
                ),
                Ok(s) => properties.message_expiry_interval = Some(s),
                Err(e) => fail("expiry", e),
            }
        }
        if !self.response_topic.is_empty() {
            match kite_mqtt::topic::validate_name(&self.response_topic) {
                Ok(()) => properties.response_topic = Some(self.response_topic.as_str().into()),
                Err(e) => fail("response_topic", format!("the response topic: {e}")),
            }
        }
        if !self.correlation.is_empty() {
            properties.correlation_data = Some(Bytes::from(self.correlation.clone().into_bytes()));
        }
        match parse_pairs(&self.user_properties) {
            Ok(pairs) => properties.user_properties = pairs,
            Err(e) => fail("user_properties", e),
        }
        if !version.is_v5() && self.has_v5_properties() {
            fail(
                "properties",
                "this connection speaks MQTT 3.1.1, which has no message properties; clear them or connect with 5.0".into(),
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Publish {
            qos,
            retain: self.retain,
            topic: MqttStr::from(self.topic.as_str()),
            payload: Bytes::from(payload),
            properties: properties.into(),
            ..Default::default()
        })
    }

    /// As a JSON object (for the sent history).
    pub fn to_json(&self) -> String {
        let fields: [(&str, String); 11] = [
            ("topic", json_string(&self.topic)),
            ("payload", json_string(&self.payload)),
            ("format", json_string(self.format.label())),
            ("qos", self.qos.to_string()),
            ("retain", self.retain.to_string()),
            ("content_type", json_string(&self.content_type)),
            ("utf8", self.utf8.to_string()),
            ("expiry", json_string(&self.expiry)),
            ("response_topic", json_string(&self.response_topic)),
            ("correlation", json_string(&self.correlation)),
            ("user_properties", json_string(&self.user_properties)),
        ];
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", json_string(k)))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    /// Reads [`Draft::to_json`]; `None` if it is not one.
    pub fn from_json(v: &Json) -> Option<Self> {
        let Json::Obj(fields) = v else { return None };
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let text = |k: &str| match get(k) {
            Some(Json::Str(s)) => Some(s.clone()),
            _ => None,
        };
        let flag = |k: &str| matches!(get(k), Some(Json::Bool(true)));
        let format = text("format")?;
        Some(Self {
            topic: text("topic")?,
            payload: text("payload")?,
            format: *Format::ALL.iter().find(|f| f.label() == format)?,
            qos: match get("qos") {
                Some(v) => v.small(2)?,
                None => return None,
            },
            retain: flag("retain"),
            content_type: text("content_type").unwrap_or_default(),
            utf8: flag("utf8"),
            expiry: text("expiry").unwrap_or_default(),
            response_topic: text("response_topic").unwrap_or_default(),
            correlation: text("correlation").unwrap_or_default(),
            user_properties: text("user_properties").unwrap_or_default(),
        })
    }
}

/// Reads a saved history list: the drafts that can be read (a damaged entry is skipped and
/// counted, never fatal).
pub fn history_from_json(text: &str) -> (Vec<Draft>, usize) {
    let Some(Json::Arr(items)) = payload::parse(text) else {
        return (Vec::new(), usize::from(!text.is_empty()));
    };
    let drafts: Vec<Draft> = items.iter().filter_map(Draft::from_json).collect();
    let bad = items.len() - drafts.len();
    (drafts, bad)
}

/// A history list as JSON.
pub fn history_to_json(drafts: &[Draft]) -> String {
    let items: Vec<String> = drafts.iter().map(Draft::to_json).collect();
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v5_draft() -> Draft {
        Draft {
            topic: "cmd/pump-1".into(),
            payload: "{\"on\": true}".into(),
            format: Format::Json,
            qos: 1,
            retain: true,
            content_type: "application/json".into(),
            utf8: true,
            expiry: "60".into(),
            response_topic: "reply/kite".into(),
            correlation: "req-7".into(),
            user_properties: "origin: kite\norigin: test".into(),
        }
    }

    #[test]
    fn a_v5_draft_becomes_a_publish_with_its_properties() {
        let p = v5_draft().build(Version::V5).unwrap();
        assert_eq!(
            (p.topic.as_ref(), p.qos, p.retain),
            ("cmd/pump-1", QoS::AtLeastOnce, true)
        );
        assert_eq!(&p.payload[..], b"{\"on\": true}");
        assert_eq!(
            p.properties.content_type.as_deref(),
            Some("application/json")
        );
        assert_eq!(p.properties.payload_format_indicator, Some(true));
        assert_eq!(p.properties.message_expiry_interval, Some(60));
        assert_eq!(p.properties.response_topic.as_deref(), Some("reply/kite"));
        assert_eq!(
            p.properties.correlation_data.as_deref(),
            Some(&b"req-7"[..])
        );
        assert_eq!(p.properties.user_properties.len(), 2);
    }

    #[test]
    fn every_mistake_is_named_and_nothing_is_built() {
        let mut d = v5_draft();
        d.topic = "cmd/#".into();
        d.payload = "{\"on\": tru}".into();
        d.expiry = "0".into();
        d.response_topic = String::new();
        let errors = d.build(Version::V5).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["topic", "payload", "expiry"]);
        assert!(
            errors[1].message.contains("line 1, column 8"),
            "{}",
            errors[1].message
        );
        // MQTT 3.1.1 has no properties.
        let errors = v5_draft().build(Version::V3_1_1).unwrap_err();
        assert_eq!(errors[0].field, "properties");
        // Bytes marked UTF-8 must be UTF-8 [MQTT-3.3.2-4].
        let d = Draft {
            payload: "ff fe".into(),
            format: Format::Hex,
            utf8: true,
            ..Draft::default()
        };
        assert_eq!(d.build(Version::V5).unwrap_err()[0].field, "utf8");
    }

    #[test]
    fn hex_and_base64_payloads_are_bytes() {
        let d = Draft {
            payload: "00 ff 10".into(),
            format: Format::Hex,
            ..Draft::default()
        };
        assert_eq!(
            &d.build(Version::V3_1_1).unwrap().payload[..],
            [0, 0xff, 0x10]
        );
        let d = Draft {
            payload: "AP8Q".into(),
            format: Format::Base64,
            ..Draft::default()
        };
        assert_eq!(
            &d.build(Version::V3_1_1).unwrap().payload[..],
            [0, 0xff, 0x10]
        );
    }

    #[test]
    fn the_history_round_trips_and_skips_what_it_cannot_read() {
        let drafts = vec![v5_draft(), Draft::default()];
        let (back, bad) = history_from_json(&history_to_json(&drafts));
        assert_eq!((back, bad), (drafts, 0));
        let (back, bad) = history_from_json(
            r#"[{"topic": 1}, {"topic":"a","payload":"","format":"hex","qos":0}]"#,
        );
        assert_eq!((back.len(), bad), (1, 1));
        assert_eq!(history_from_json("nonsense").1, 1);
    }
}
