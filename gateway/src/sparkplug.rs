//! Sparkplug B, as far as the device monitor needs it: the topic namespace
//! (`spBv1.0/<group>/<type>/<edge node>[/<device>]`) and the payload — a protobuf `Payload`
//! with its `Metric`s — read by a small decoder of the protobuf wire format (varints,
//! fixed 32/64-bit, length-delimited), bounded and never panicking on what it is given.
//! Metric values kept: the integer types (signed ones as the specification encodes them:
//! two's complement in the 32- or 64-bit field), float, double, boolean, string/text;
//! others (bytes, datasets, templates) by their datatype name.

use serde_json::Value;

/// The topic namespace's first level.
pub const NAMESPACE: &str = "spBv1.0";

/// Metrics kept per device at most.
pub const MAX_METRICS: usize = 256;

/// A Sparkplug message type the monitor acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NBirth,
    NDeath,
    NData,
    DBirth,
    DDeath,
    DData,
}

/// What a topic says: the message type and whom it is about (`group/node` or
/// `group/node/device`); `None` for other topics (commands, STATE, malformed).
pub fn topic(topic: &str) -> Option<(Kind, String)> {
    let mut levels = topic.split('/');
    if levels.next()? != NAMESPACE {
        return None;
    }
    let (group, kind, node) = (levels.next()?, levels.next()?, levels.next()?);
    let device = levels.next();
    if levels.next().is_some() || group.is_empty() || node.is_empty() {
        return None;
    }
    let kind = match (kind, device) {
        ("NBIRTH", None) => Kind::NBirth,
        ("NDEATH", None) => Kind::NDeath,
        ("NDATA", None) => Kind::NData,
        ("DBIRTH", Some(_)) => Kind::DBirth,
        ("DDEATH", Some(_)) => Kind::DDeath,
        ("DDATA", Some(_)) => Kind::DData,
        _ => return None,
    };
    let id = match device {
        Some(d) if !d.is_empty() => format!("{group}/{node}/{d}"),
        Some(_) => return None,
        None => format!("{group}/{node}"),
    };
    Some((kind, id))
}

/// One metric of a payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: Option<String>,
    pub alias: Option<u64>,
    pub value: Value,
}

/// A payload, as far as it is read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    pub timestamp: Option<u64>,
    pub seq: Option<u64>,
    pub metrics: Vec<Metric>,
}

impl Payload {
    /// The `bdSeq` metric (NBIRTH, NDEATH).
    pub fn bd_seq(&self) -> Option<u64> {
        self.metrics
            .iter()
            .find(|m| m.name.as_deref() == Some("bdSeq"))
            .and_then(|m| m.value.as_u64())
    }
}

/// Why a payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPayload(pub &'static str);

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, BadPayload> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self
                .b
                .split_first()
                .ok_or(BadPayload("a varint is cut short"))?;
            self.b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(BadPayload("a varint is longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BadPayload> {
        if n > self.b.len() {
            return Err(BadPayload("a field is longer than the payload"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    /// The next field: its number, and its value (a varint, or the bytes of the others).
    fn field(&mut self) -> Result<(u64, Wire<'a>), BadPayload> {
        let key = self.varint()?;
        let number = key >> 3;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(self.take(8)?),
            2 => {
                let n = usize::try_from(self.varint()?)
                    .map_err(|_| BadPayload("a length does not fit"))?;
                Wire::Bytes(self.take(n)?)
            }
            5 => Wire::Fixed32(self.take(4)?),
            _ => return Err(BadPayload("an unknown wire type")),
        };
        Ok((number, wire))
    }
}

enum Wire<'a> {
    Varint(u64),
    Fixed64(&'a [u8]),
    Fixed32(&'a [u8]),
    Bytes(&'a [u8]),
}

/// Reads a Sparkplug B payload.
pub fn decode(payload: &[u8]) -> Result<Payload, BadPayload> {
    let mut r = Reader { b: payload };
    let mut out = Payload::default();
    while !r.b.is_empty() {
        match r.field()? {
            (1, Wire::Varint(t)) => out.timestamp = Some(t),
            (2, Wire::Bytes(m)) if out.metrics.len() < MAX_METRICS * 4 => {
                out.metrics.push(metric(m)?);
            }
            (3, Wire::Varint(s)) => out.seq = Some(s),
            _ => {}
        }
    }
    Ok(out)
}

/// The name of a datatype the monitor does not read the value of.
fn datatype_name(t: u64) -> &'static str {
    match t {
        13 => "DateTime",
        15 => "UUID",
        16 => "DataSet",
        17 => "Bytes",
        18 => "File",
        19 => "Template",
        _ => "value",
    }
}

fn metric(b: &[u8]) -> Result<Metric, BadPayload> {
    let mut r = Reader { b };
    let (mut name, mut alias, mut datatype, mut value, mut null) = (None, None, 0u64, None, false);
    while !r.b.is_empty() {
        match r.field()? {
            (1, Wire::Bytes(s)) => {
                name = Some(String::from_utf8_lossy(s).chars().take(128).collect());
            }
            (2, Wire::Varint(a)) => alias = Some(a),
            (4, Wire::Varint(t)) => datatype = t,
            (7, Wire::Varint(n)) => null = n != 0,
            (10, Wire::Varint(v)) => {
                let v = v as u32;
                value = Some(match datatype {
                    // Int8, Int16, Int32: two's complement in the 32-bit field.
                    1..=3 => Value::from(v as i32),
                    _ => Value::from(v),
                });
            }
            (11, Wire::Varint(v)) => {
                value = Some(match datatype {
                    4 => Value::from(v as i64),
                    // DateTime: ms since the epoch.
                    _ => Value::from(v),
                });
            }
            (12, Wire::Fixed32(b)) => {
                let f = f32::from_le_bytes(b.try_into().map_err(|_| BadPayload("a float"))?);
                value = serde_json::Number::from_f64(f64::from(f)).map(Value::Number);
            }
            (13, Wire::Fixed64(b)) => {
                let f = f64::from_le_bytes(b.try_into().map_err(|_| BadPayload("a double"))?);
                value = serde_json::Number::from_f64(f).map(Value::Number);
            }
            (14, Wire::Varint(v)) => value = Some(Value::from(v != 0)),
            (15, Wire::Bytes(s)) => {
                value = Some(Value::from(
                    String::from_utf8_lossy(s)
                        .chars()
                        .take(256)
                        .collect::<String>(),
                ));
            }
            (16..=19, Wire::Bytes(s)) => {
                value = Some(Value::from(format!(
                    "({} of {} bytes)",
                    datatype_name(datatype),
                    s.len()
                )));
            }
            _ => {}
        }
    }
    Ok(Metric {
        name,
        alias,
        value: if null {
            Value::Null
        } else {
            value.unwrap_or(Value::Null)
        },
    })
}

/// A payload's bytes, for tests and tools: `metrics` as (name, value) — integers as Int64,
/// other numbers as Double, booleans, strings — with `seq`.
pub fn encode(metrics: &[(&str, Value)], seq: Option<u64>) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, (field << 3) | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    let mut out = Vec::new();
    varint(&mut out, 1 << 3);
    varint(&mut out, kite_data::now_ms());
    for (name, value) in metrics {
        let mut m = Vec::new();
        bytes(&mut m, 1, name.as_bytes());
        match value {
            Value::Number(n) if n.as_i64().is_some() => {
                varint(&mut m, 4 << 3);
                varint(&mut m, 4);
                varint(&mut m, 11 << 3);
                varint(&mut m, n.as_i64().unwrap_or(0) as u64);
            }
            Value::Number(n) => {
                varint(&mut m, 4 << 3);
                varint(&mut m, 10);
                varint(&mut m, (13 << 3) | 1);
                m.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
            }
            Value::Bool(b) => {
                varint(&mut m, 4 << 3);
                varint(&mut m, 11);
                varint(&mut m, 14 << 3);
                varint(&mut m, u64::from(*b));
            }
            other => {
                varint(&mut m, 4 << 3);
                varint(&mut m, 12);
                bytes(&mut m, 15, other.as_str().unwrap_or_default().as_bytes());
            }
        }
        bytes(&mut out, 2, &m);
    }
    if let Some(s) = seq {
        varint(&mut out, 3 << 3);
        varint(&mut out, s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn topics_name_nodes_and_devices() {
        assert_eq!(
            topic("spBv1.0/plant/NBIRTH/edge-1"),
            Some((Kind::NBirth, "plant/edge-1".into()))
        );
        assert_eq!(
            topic("spBv1.0/plant/DDATA/edge-1/pump"),
            Some((Kind::DData, "plant/edge-1/pump".into()))
        );
        for other in [
            "spBv1.0/plant/NCMD/edge-1",
            "spBv1.0/STATE/host",
            "spBv1.0/plant/NBIRTH/edge-1/extra",
            "spBv1.0/plant/DBIRTH/edge-1",
            "spAv1.0/plant/NBIRTH/edge-1",
            "spBv1.0//NBIRTH/edge-1",
        ] {
            assert_eq!(topic(other), None, "{other}");
        }
    }

    #[test]
    fn payloads_come_back_as_encoded() {
        let bytes = encode(
            &[
                ("bdSeq", json!(7)),
                ("temp", json!(21.5)),
                ("on", json!(true)),
                ("mode", json!("auto")),
                ("offset", json!(-3)),
            ],
            Some(0),
        );
        let p = decode(&bytes).unwrap();
        assert_eq!(p.seq, Some(0));
        assert_eq!(p.bd_seq(), Some(7));
        let values: Vec<(Option<&str>, &Value)> = p
            .metrics
            .iter()
            .map(|m| (m.name.as_deref(), &m.value))
            .collect();
        assert_eq!(
            values,
            [
                (Some("bdSeq"), &json!(7)),
                (Some("temp"), &json!(21.5)),
                (Some("on"), &json!(true)),
                (Some("mode"), &json!("auto")),
                (Some("offset"), &json!(-3)),
            ]
        );
    }

    /// A signed Int32 is two's complement in the 32-bit `int_value` (Sparkplug B 6.4.16).
    #[test]
    fn signed_small_integers_are_read_as_encoded() {
        // Metric { name: "t", datatype: 3 (Int32), int_value: -5 as u32 }
        let mut m = vec![0x0a, 1, b't', 0x20, 3, 0x50];
        let mut v = u64::from(-5i32 as u32);
        while v >= 0x80 {
            m.push((v as u8) | 0x80);
            v >>= 7;
        }
        m.push(v as u8);
        let mut p = vec![0x12, m.len() as u8];
        p.extend_from_slice(&m);
        assert_eq!(decode(&p).unwrap().metrics[0].value, json!(-5));
    }

    #[test]
    fn anything_at_all_is_read_or_refused_without_a_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode(&bytes);
        }
        assert!(decode(&[0x12, 0xff, 0xff]).is_err());
        assert!(decode(&[0x0b]).is_err());
    }
}
