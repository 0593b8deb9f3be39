//! Every MQTT 3.1, 3.1.1 and 5.0 case of mqtt-packet 9.0.2's test table (tests/data/README.md):
//! parse, generate, parse-error and generate-error. mqtt.js field names are mapped onto Kite's
//! types here. Where Kite writes another legal encoding, or refuses what the spec forbids but
//! mqtt.js accepts, the case is named in a list below with the reason, and still checked.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use kite_mqtt::MqttStr;
use kite_mqtt::codec::{
    Ack, Auth, ConnAck, Connect, Disconnect, Properties, Props, Publish, ReasonCode,
    RetainHandling, SubAck, Subscribe, Subscription, UnsubAck, Unsubscribe, Will,
};
use kite_mqtt::{DecodeError, Limits, Packet, QoS, Version, decode};
use serde_json::{Map, Value};

/// Cases Kite encodes differently but legally; both encodings decode to the same packet.
const ALTERNATIVE_ENCODINGS: &[(&str, &str)] = &[
    // The spec orders no properties; Kite writes them by identifier, mqtt.js by its object keys.
    ("connect MQTT 5", "property order"),
    (
        "connect MQTT 5 with will properties but with empty will payload",
        "property order",
    ),
    ("connect MQTT 5 w/o will properties", "property order"),
    ("publish MQTT 5 properties", "property order"),
    (
        "publish MQTT 5 with multiple same properties",
        "property order",
    ),
    ("connack MQTT 5 with properties", "property order"),
    (
        "connack MQTT 5 with properties and doubled user properties",
        "property order",
    ),
    ("disconnect MQTT 5", "property order"),
    // MQTT 5 §3.14.2.1 / §3.4.2.1: a 0 reason code with no properties may be left out; Kite
    // writes the shortest form (e000, 4002xxxx) where mqtt.js writes e0020000 / 40030...00.
    ("Version 5 DISCONNECT test 3", "shortest form"),
    ("disconnect MQTT 5 with no properties", "shortest form"),
    (
        "puback with reason and no MQTT 5 properties",
        "shortest form",
    ),
];

/// Cases mqtt.js parses but the specification forbids: Kite refuses them with this error.
const STRICTER: &[(&str, &str)] = &[
    // MQTT 5 §3.2.2.3.4: "It is a Protocol Error to ... have a value other than 0 or 1."
    ("connack MQTT 5 with properties", "Maximum QoS"),
    (
        "connack MQTT 5 with properties and doubled user properties",
        "Maximum QoS",
    ),
    // MQTT 5 §3.2.2: CONNACK has flags, a reason code and properties; one byte is malformed.
    ("Version 5 CONNACK test 1", "ends in the middle"),
    // [MQTT-3.1.2-1]: 3.1.1 is named "MQTT"; mqtt.js pairs "MQIsdp" with level 4 (bridge).
    (
        "connect MQTT bridge 132",
        "does not match the protocol level",
    ),
];

fn cases() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/mqtt-packet-vectors.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn version(n: u64) -> Result<Version, String> {
    match n {
        3 => Ok(Version::V3_1),
        4 => Ok(Version::V3_1_1),
        5 => Ok(Version::V5),
        n => Err(format!("protocol version {n} does not exist")),
    }
}

// ---- mqtt.js object → Kite packet. Any JavaScript value of the wrong type is an Err: in
// ---- Rust such a packet cannot be built at all, which is how it is refused.

type R<T> = Result<T, String>;

fn field<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    o.get(k).filter(|v| !v.is_null())
}

fn u(o: &Map<String, Value>, k: &str) -> R<Option<u64>> {
    field(o, k)
        .map(|v| {
            v.as_u64()
                .ok_or(format!("{k} is not a non-negative integer: {v}"))
        })
        .transpose()
}

fn u16_(o: &Map<String, Value>, k: &str) -> R<Option<u16>> {
    u(o, k)?
        .map(|n| u16::try_from(n).map_err(|_| format!("{k} {n} exceeds 65535")))
        .transpose()
}

fn u32_(o: &Map<String, Value>, k: &str) -> R<Option<u32>> {
    u(o, k)?
        .map(|n| u32::try_from(n).map_err(|_| format!("{k} {n} exceeds u32")))
        .transpose()
}

fn b(o: &Map<String, Value>, k: &str) -> R<Option<bool>> {
    field(o, k)
        .map(|v| v.as_bool().ok_or(format!("{k} is not a boolean: {v}")))
        .transpose()
}

fn s(o: &Map<String, Value>, k: &str) -> R<Option<ByteString>> {
    field(o, k)
        .map(|v| match v {
            Value::String(s) => Ok(ByteString::from(s.clone())),
            Value::Object(_) => {
                Ok(ByteString::try_from(bin(v)?).map_err(|_| format!("{k} is not UTF-8"))?)
            }
            v => Err(format!("{k} is not a string: {v}")),
        })
        .transpose()
}

fn bin(v: &Value) -> R<Bytes> {
    match v {
        Value::String(s) => Ok(Bytes::from(s.clone())),
        Value::Object(o) if o.contains_key("$hex") => {
            Ok(Bytes::from(hex(o["$hex"].as_str().unwrap())))
        }
        Value::Object(o) if o.contains_key("$fill_byte") => {
            let mut data = hex(o["$prefix_hex"].as_str().unwrap());
            let total = o["$total_len"].as_u64().unwrap() as usize;
            data.resize(total, o["$fill_byte"].as_u64().unwrap() as u8);
            Ok(Bytes::from(data))
        }
        v => Err(format!("not binary data: {v}")),
    }
}

fn opt_bin(o: &Map<String, Value>, k: &str) -> R<Option<Bytes>> {
    field(o, k).map(bin).transpose()
}

fn qos(o: &Map<String, Value>, k: &str) -> R<QoS> {
    let n = u(o, k)?.unwrap_or(0);
    QoS::from_u8(n as u8)
        .filter(|_| n <= 2)
        .ok_or(format!("{k} {n} is not 0, 1 or 2"))
}

fn obj<'a>(v: &'a Value, what: &str) -> R<&'a Map<String, Value>> {
    v.as_object().ok_or(format!("{what} is not an object: {v}"))
}

fn properties(o: &Map<String, Value>) -> R<Props> {
    let Some(p) = field(o, "properties") else {
        return Ok(Props::default());
    };
    let p = obj(p, "properties")?;
    let mut props = Properties {
        payload_format_indicator: b(p, "payloadFormatIndicator")?,
        message_expiry_interval: u32_(p, "messageExpiryInterval")?,
        content_type: s(p, "contentType")?.map(Into::into),
        response_topic: s(p, "responseTopic")?.map(Into::into),
        correlation_data: opt_bin(p, "correlationData")?,
        session_expiry_interval: u32_(p, "sessionExpiryInterval")?,
        assigned_client_identifier: s(p, "assignedClientIdentifier")?.map(Into::into),
        server_keep_alive: u16_(p, "serverKeepAlive")?,
        authentication_method: s(p, "authenticationMethod")?.map(Into::into),
        authentication_data: opt_bin(p, "authenticationData")?,
        request_problem_information: b(p, "requestProblemInformation")?,
        will_delay_interval: u32_(p, "willDelayInterval")?,
        request_response_information: b(p, "requestResponseInformation")?,
        response_information: s(p, "responseInformation")?.map(Into::into),
        server_reference: s(p, "serverReference")?.map(Into::into),
        reason_string: s(p, "reasonString")?.map(Into::into),
        receive_maximum: u16_(p, "receiveMaximum")?,
        topic_alias_maximum: u16_(p, "topicAliasMaximum")?,
        topic_alias: u16_(p, "topicAlias")?,
        maximum_qos: match u(p, "maximumQoS")? {
            None => None,
            // mqtt.js allows 2; Kite's type holds it so the encoder can refuse it.
            Some(n) => Some(QoS::from_u8(n as u8).ok_or(format!("maximumQoS {n}"))?),
        },
        retain_available: b(p, "retainAvailable")?,
        maximum_packet_size: u32_(p, "maximumPacketSize")?,
        wildcard_subscription_available: b(p, "wildcardSubscriptionAvailable")?,
        subscription_identifier_available: b(p, "subscriptionIdentifiersAvailable")?,
        shared_subscription_available: b(p, "sharedSubscriptionAvailable")?,
        ..Properties::default()
    };
    match field(p, "subscriptionIdentifier") {
        None => {}
        Some(Value::Array(ids)) => {
            for id in ids {
                let id = id.as_u64().ok_or(format!("subscriptionIdentifier {id}"))?;
                props
                    .subscription_identifiers
                    .push(u32::try_from(id).map_err(|_| format!("{id}"))?);
            }
        }
        Some(v) => {
            let id = v.as_u64().ok_or(format!(
                "subscriptionIdentifier {v} is not a non-negative integer"
            ))?;
            props
                .subscription_identifiers
                .push(u32::try_from(id).map_err(|_| format!("{id}"))?);
        }
    }
    if let Some(up) = field(p, "userProperties") {
        for (k, v) in obj(up, "userProperties")? {
            let values = match v {
                Value::Array(a) => a.clone(),
                v => vec![v.clone()],
            };
            for v in values {
                let v = v.as_str().ok_or("user property value is not a string")?;
                props
                    .user_properties
                    .push((MqttStr::from(k.clone()), MqttStr::from(v)));
            }
        }
    }
    Ok(props.into())
}

fn reason(
    packet: kite_mqtt::codec::PacketType,
    o: &Map<String, Value>,
    key: &str,
) -> R<ReasonCode> {
    let code = u(o, key)?.unwrap_or(0);
    ReasonCode::from_byte(packet, code as u8).ok_or(format!("{packet} reason code {code}"))
}

fn ack(o: &Map<String, Value>, packet: kite_mqtt::codec::PacketType) -> R<Ack> {
    Ok(Ack {
        packet_id: u16_(o, "messageId")?.ok_or("messageId missing")?,
        reason: reason(packet, o, "reasonCode")?,
        properties: properties(o)?,
    })
}

fn packet(v: &Value, ver: Version) -> R<Packet> {
    use kite_mqtt::codec::PacketType as T;
    let o = obj(v, "packet")?;
    let cmd = field(o, "cmd")
        .and_then(Value::as_str)
        .ok_or("Unknown command")?;
    Ok(match cmd {
        "connect" => {
            let version = match field(o, "protocolVersion") {
                None => Version::V3_1_1,
                Some(v) => version(v.as_u64().ok_or(format!("protocolVersion {v}"))?)?,
            };
            match (field(o, "protocolId"), version) {
                (None, _) => {}
                (Some(Value::String(id)), Version::V3_1) if id == "MQIsdp" => {}
                (Some(Value::String(id)), Version::V3_1_1 | Version::V5) if id == "MQTT" => {}
                (Some(v), _) => {
                    return Err(format!("protocolId {v} does not match the protocol level"));
                }
            }
            let will = match field(o, "will") {
                None => None,
                Some(w) => {
                    let w = obj(w, "will")?;
                    Some(Will {
                        topic: s(w, "topic")?.ok_or("will topic missing")?.into(),
                        payload: opt_bin(w, "payload")?.ok_or("will payload missing")?,
                        qos: qos(w, "qos")?,
                        retain: b(w, "retain")?.unwrap_or(false),
                        properties: properties(w)?,
                    })
                }
            };
            Packet::Connect(Box::new(Connect {
                version,
                client_id: s(o, "clientId")?.unwrap_or_default(),
                bridge: b(o, "bridgeMode")?.unwrap_or(false),
                clean_start: b(o, "clean")?.unwrap_or(true),
                keep_alive: u16_(o, "keepalive")?.unwrap_or(0),
                username: s(o, "username")?,
                password: opt_bin(o, "password")?,
                will,
                properties: properties(o)?,
            }))
        }
        "connack" => {
            // A two-byte CONNACK on a v5 connection is a 3.1.1 server's answer: Kite reads its
            // return code by meaning (1 = Unsupported Protocol Version), mqtt.js keeps the raw 1.
            let v3_form = !ver.is_v5() || u(o, "length")? == Some(2);
            let reason = if !v3_form {
                reason(T::ConnAck, o, "reasonCode")?
            } else {
                let code = u(o, "returnCode")?.or(u(o, "reasonCode")?).unwrap_or(0);
                ReasonCode::from_v3_connack(code as u8).ok_or(format!("return code {code}"))?
            };
            Packet::ConnAck(ConnAck {
                session_present: b(o, "sessionPresent")?.unwrap_or(false),
                reason,
                properties: properties(o)?,
            })
        }
        "publish" => Packet::Publish(Publish {
            dup: b(o, "dup")?.unwrap_or(false),
            qos: qos(o, "qos")?,
            retain: b(o, "retain")?.unwrap_or(false),
            topic: s(o, "topic")?.ok_or("topic missing")?.into(),
            packet_id: u16_(o, "messageId")?.unwrap_or(0),
            properties: properties(o)?,
            payload: opt_bin(o, "payload")?.unwrap_or_default(),
        }),
        "puback" => Packet::PubAck(ack(o, T::PubAck)?),
        "pubrec" => Packet::PubRec(ack(o, T::PubRec)?),
        "pubrel" => Packet::PubRel(ack(o, T::PubRel)?),
        "pubcomp" => Packet::PubComp(ack(o, T::PubComp)?),
        "subscribe" => {
            let subs = field(o, "subscriptions")
                .and_then(Value::as_array)
                .ok_or("subscriptions missing")?;
            let mut filters = Vec::new();
            for sub in subs {
                let sub = obj(sub, "subscription")?;
                filters.push(Subscription {
                    filter: s(sub, "topic")?.ok_or("topic missing")?.into(),
                    qos: qos(sub, "qos")?,
                    no_local: b(sub, "nl")?.unwrap_or(false),
                    retain_as_published: b(sub, "rap")?.unwrap_or(false),
                    retain_handling: match u(sub, "rh")?.unwrap_or(0) {
                        0 => RetainHandling::SendAtSubscribe,
                        1 => RetainHandling::SendIfNew,
                        2 => RetainHandling::DoNotSend,
                        n => return Err(format!("rh {n}")),
                    },
                });
            }
            Packet::Subscribe(Subscribe {
                packet_id: u16_(o, "messageId")?.ok_or("messageId missing")?,
                filters,
                properties: properties(o)?,
            })
        }
        "suback" | "unsuback" => {
            let packet_type = if cmd == "suback" {
                T::SubAck
            } else {
                T::UnsubAck
            };
            let packet_id = u16_(o, "messageId")?.ok_or("Invalid messageId")?;
            let mut reasons = Vec::new();
            if ver.is_v5() || packet_type == T::SubAck {
                for g in field(o, "granted")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    let code = g.as_u64().ok_or("granted code")? as u8;
                    let r = if ver.is_v5() {
                        ReasonCode::from_byte(packet_type, code)
                    } else {
                        ReasonCode::from_v3_suback(code)
                    };
                    reasons.push(r.ok_or(format!("code {code}"))?);
                }
            }
            let properties = properties(o)?;
            if packet_type == T::SubAck {
                Packet::SubAck(SubAck {
                    packet_id,
                    reasons,
                    properties,
                })
            } else {
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    reasons,
                    properties,
                })
            }
        }
        "unsubscribe" => {
            let list = field(o, "unsubscriptions")
                .and_then(Value::as_array)
                .ok_or("Invalid unsubscriptions")?;
            let filters = list
                .iter()
                .map(|f| {
                    f.as_str()
                        .map(kite_mqtt::MqttStr::from)
                        .ok_or("Invalid unsubscriptions".to_owned())
                })
                .collect::<R<Vec<_>>>()?;
            Packet::Unsubscribe(Unsubscribe {
                packet_id: u16_(o, "messageId")?.ok_or("Invalid messageId")?,
                filters,
                properties: properties(o)?,
            })
        }
        "pingreq" => Packet::PingReq,
        "pingresp" => Packet::PingResp,
        "disconnect" => Packet::Disconnect(Disconnect {
            reason: reason(T::Disconnect, o, "reasonCode")?,
            properties: properties(o)?,
        }),
        "auth" => Packet::Auth(Auth {
            reason: reason(T::Auth, o, "reasonCode")?,
            properties: properties(o)?,
        }),
        other => return Err(format!("Unknown command {other}")),
    })
}

fn decode_all(bytes: &[u8], ver: Version) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let before = buf.clone();
    let result = decode(&mut buf, ver, &Limits::default());
    if result.is_err() {
        assert_eq!(buf, before, "an error must consume nothing");
    }
    result
}

fn encode(p: &Packet, ver: Version) -> Result<Vec<u8>, kite_mqtt::EncodeError> {
    let mut buf = BytesMut::from(&b"prefix"[..]);
    let result = p.encode(ver, &mut buf);
    if result.is_err() {
        assert_eq!(&buf[..], b"prefix", "an encode error must write nothing");
    }
    result.map(|()| buf[6..].to_vec())
}

fn listed<'a>(list: &'a [(&str, &str)], name: &str) -> Option<&'a str> {
    list.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

#[test]
fn mqtt_packet_vectors() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in cases() {
        let name = case["name"].as_str().unwrap().to_owned();
        let kind = case["kind"].as_str().unwrap();
        let ver = match version(case["protocolVersion"].as_u64().unwrap()) {
            Ok(v) => v,
            Err(e) => {
                // "Invalid protocol version" (level 1): not a Kite version at all.
                assert_eq!(kind, "generate_error", "{name}: {e}");
                checked += 1;
                continue;
            }
        };
        let mut fail =
            |what: String| failures.push(format!("{kind} {:?} v{}: {what}", name, ver.level()));
        let bytes = match (case.get("hex").and_then(Value::as_str), case.get("bytes")) {
            (Some(h), _) => Some(hex(h)),
            (None, Some(spec)) => Some(bin(spec).unwrap().to_vec()),
            (None, None) => None,
        };
        match kind {
            "parse_generate"
            | "parse_and_generate"
            | "parse_only"
            | "generate_only"
            | "parse_generate_defaults" => {
                let expected = match packet(&case["object"], ver) {
                    Ok(p) => p,
                    Err(e) if listed(STRICTER, &name).is_some_and(|why| e.contains(why)) => {
                        // Not representable, and refused on decode with the same reason.
                        match decode_all(bytes.as_deref().unwrap(), ver) {
                            Err(d) if d.to_string().contains(listed(STRICTER, &name).unwrap()) => {}
                            other => fail(format!("decode gave {other:?}, want a refusal")),
                        }
                        checked += 1;
                        continue;
                    }
                    Err(e) => {
                        fail(format!("cannot map the object: {e}"));
                        continue;
                    }
                };
                let bytes = bytes.clone().unwrap();
                let parses = kind != "generate_only";
                let generates = kind != "parse_only";
                if parses {
                    let want = match case.get("parsed") {
                        Some(parsed) => packet(parsed, ver).unwrap(),
                        None => expected.clone(),
                    };
                    match (decode_all(&bytes, ver), listed(STRICTER, &name)) {
                        (Err(e), Some(why)) if e.to_string().contains(why) => {}
                        (Ok(Some(got)), None) if got == want => {}
                        (other, why) => fail(format!(
                            "decode gave {other:?}, want {want:?} (stricter: {why:?})"
                        )),
                    }
                }
                if generates {
                    match (
                        encode(&expected, ver),
                        listed(ALTERNATIVE_ENCODINGS, &name),
                        listed(STRICTER, &name),
                    ) {
                        (Ok(out), None, _) if out == bytes => {}
                        (Ok(out), Some(_), None) if out != bytes => {
                            // Another legal encoding: same length, same meaning.
                            let ours = decode_all(&out, ver).unwrap().unwrap();
                            if ours != expected {
                                fail(format!("our encoding decodes to {ours:?}"));
                            }
                            if listed(ALTERNATIVE_ENCODINGS, &name) == Some("property order")
                                && out.len() != bytes.len()
                            {
                                fail("a reordering must keep the length".into());
                            }
                        }
                        (Err(e), _, Some(why)) if e.to_string().contains(why) => {}
                        (other, alt, strict) => fail(format!(
                            "encode gave {other:02x?}, want {bytes:02x?} (alternative: {alt:?}, stricter: {strict:?})"
                        )),
                    }
                }
            }
            "parse_error" => match decode_all(&bytes.unwrap(), ver) {
                Err(_) => {}
                other => fail(format!(
                    "decode gave {other:?}, want an error ({})",
                    case["error"]
                )),
            },
            "generate_error" | "write_to_stream_error" => match packet(&case["object"], ver) {
                // A JavaScript value of the wrong type: Kite's types cannot even hold it.
                Err(_) => {}
                Ok(p) => {
                    if let Ok(out) = encode(&p, ver) {
                        fail(format!("encode accepted it: {} bytes", out.len()));
                    }
                }
            },
            other => fail(format!("unknown kind {other}")),
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, 165, "every case is checked");
}
