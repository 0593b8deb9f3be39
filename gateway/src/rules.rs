//! A role's topic rules enforced by the gateway in front of an upstream broker.
//!
//! The embedded broker checks the rules itself; an upstream broker only knows the role's
//! broker credentials, so the gateway checks every packet the browser sends before the broker
//! sees it ([`TopicRules`]) and answers refusals itself, splicing its answers into the broker
//! → browser stream at packet boundaries ([`Downstream`]):
//!
//! - PUBLISH to a topic the role may not publish to: not forwarded. MQTT 5: PUBACK/PUBREC
//!   0x87 Not authorized (QoS 1/2), dropped at QoS 0. MQTT 3.1.1 has no way to say no: the
//!   message is acknowledged (PUBACK, or PUBREC then PUBCOMP) and dropped, or the session is
//!   closed (`[acl] v311_denied_publish = "disconnect"`). Counted in `kite_denied_total`.
//! - Topic aliases (MQTT 5) are tracked as the broker tracks them: an alias set by a refused
//!   PUBLISH is not recorded (the broker never saw it), and a PUBLISH by alias is checked
//!   against the topic the alias stands for, so an alias can never carry a message past the
//!   rules. An alias that was never set closes the session (Protocol Error).
//! - SUBSCRIBE: each filter must be covered by the role's rules ([`crate::acl`]). Refused
//!   filters are taken out of the SUBSCRIBE the broker gets and put back into its SUBACK with
//!   0x87 (3.1.1: 0x80) in their places; when all are refused the gateway answers alone.
//!   Since every subscription the broker holds is covered by the rules, every message it
//!   delivers is one the role may read: deliveries are not checked again.
//! - The Will topic is checked at CONNECT: refused with CONNACK 0x87 (3.1.1: 5) before the
//!   broker is contacted.
//!
//! Memory: the alias table holds at most [`ALIAS_BYTES`] of topic names, and the SUBACK
//! being rewritten at most the session's maximum packet size.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use axum::extract::ws::close_code;
use bytes::{Bytes, BytesMut};
use kite_mqtt::codec::wire::{VarInt, read_var_int};
use kite_mqtt::codec::{Ack, Connect, PacketType, ReasonCode, SubAck, Subscribe};
use kite_mqtt::{Limits, MqttStr, Packet, QoS, Version, decode};

use crate::metrics::{Denial, Metrics};
use crate::violation::Violation;
use kite_policy::DeniedPublish;
use kite_policy::acl::Acl;

/// Topic name bytes the alias table of one session may hold.
pub const ALIAS_BYTES: usize = 256 * 1024;

/// What to do with one packet from the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Forward these bytes to the broker.
    Up(Bytes),
    /// Hand this packet to the embedded broker (an in-process link: no bytes).
    Typed(Packet),
    /// Send this packet to the browser (the gateway answers; the broker never saw the request).
    Answer(Bytes),
    /// The broker's SUBACK for a SUBSCRIBE that lost some filters gets their codes back.
    Splice(Splice),
}

/// Where a SUBACK gets the codes of the filters the gateway refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    /// The SUBSCRIBE's packet identifier.
    pub packet_id: u16,
    /// The code of each filter of the browser's SUBSCRIBE: `Some` for the refused ones, `None`
    /// where the broker's code goes.
    pub codes: Vec<Option<ReasonCode>>,
}

/// One session's rules and the state they need (who, aliases, refused QoS 2 ids).
#[derive(Debug)]
pub struct TopicRules {
    acl: Acl,
    user: String,
    client_id: String,
    version: Version,
    denied_v311: DeniedPublish,
    metrics: Arc<Metrics>,
    aliases: HashMap<u16, MqttStr>,
    alias_bytes: usize,
    /// QoS 2 PUBLISHes refused in 3.1.1 and answered with PUBREC: their PUBREL gets PUBCOMP.
    refused_qos2: HashSet<u16>,
}

impl TopicRules {
    /// Rules for the session of `connect`: `user` is the login's user name (a token's `sub`
    /// with JWT), the client id the one the browser sent.
    pub fn new(
        acl: Acl,
        user: &str,
        connect: &Connect,
        denied_v311: DeniedPublish,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            acl,
            user: user.to_owned(),
            client_id: connect.client_id.to_string(),
            version: connect.version,
            denied_v311,
            metrics,
            aliases: HashMap::new(),
            alias_bytes: 0,
            refused_qos2: HashSet::new(),
        }
    }

    /// Whether the Will (if any) may be published; `Err` says why not.
    pub fn check_will(&self, connect: &Connect) -> Result<(), String> {
        match &connect.will {
            Some(will)
                if !self
                    .acl
                    .may_publish(&will.topic, &self.user, &self.client_id) =>
            {
                self.metrics.denied(Denial::Will);
                Err(format!(
                    "the Will topic {:?} is not allowed for user {:?}",
                    &*will.topic, self.user
                ))
            }
            _ => Ok(()),
        }
    }

    /// Checks one packet from the browser (`raw`: its original bytes) and says what to do.
    pub fn check(
        &mut self,
        packet: &Packet,
        raw: Bytes,
        out: &mut Vec<Step>,
    ) -> Result<(), Violation> {
        match packet {
            Packet::Publish(p) => {
                let topic = self.resolve_topic(p)?;
                let Some(refusal) = self
                    .acl
                    .publish_refusal(&topic, &self.user, &self.client_id)
                else {
                    if let Some(alias) = p.properties.topic_alias
                        && !p.topic.is_empty()
                    {
                        self.set_alias(alias, topic)?;
                    }
                    out.push(Step::Up(raw));
                    return Ok(());
                };
                self.metrics.denied(Denial::Publish);
                tracing::debug!(user = self.user, topic = %topic, "PUBLISH refused by the role's rules");
                if !self.version.is_v5() && self.denied_v311 == DeniedPublish::Disconnect {
                    return Err(Violation {
                        ws_code: close_code::POLICY,
                        reason: ReasonCode::NotAuthorized,
                        detail: format!(
                            "PUBLISH to {topic:?} is not allowed for user {:?}",
                            self.user
                        ),
                    });
                }
                let mut ack = Ack::new(p.packet_id);
                if self.version.is_v5() {
                    ack.reason = refusal.reason();
                }
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => out.push(self.answer(Packet::PubAck(ack))),
                    QoS::ExactlyOnce => {
                        if !self.version.is_v5() {
                            self.refused_qos2.insert(p.packet_id);
                        }
                        out.push(self.answer(Packet::PubRec(ack)));
                    }
                }
            }
            Packet::PubRel(rel) if self.refused_qos2.remove(&rel.packet_id) => {
                out.push(self.answer(Packet::PubComp(Ack::new(rel.packet_id))));
            }
            Packet::Subscribe(s) => self.check_subscribe(s, raw, out),
            _ => out.push(Step::Up(raw)),
        }
        Ok(())
    }

    /// The topic a PUBLISH goes to: its name, or the one its alias stands for.
    fn resolve_topic(&self, p: &kite_mqtt::codec::Publish) -> Result<MqttStr, Violation> {
        if !p.topic.is_empty() {
            return Ok(p.topic.clone());
        }
        // The codec refuses an empty topic without an alias.
        let alias = p.properties.topic_alias.unwrap_or(0);
        self.aliases.get(&alias).cloned().ok_or_else(|| {
            Violation::protocol(format!(
                "PUBLISH by topic alias {alias}, which was never set on this connection (MQTT 5 §3.3.2.3.4)"
            ))
        })
    }

    fn set_alias(&mut self, alias: u16, topic: MqttStr) -> Result<(), Violation> {
        let added = topic.len();
        if let Some(old) = self.aliases.insert(alias, topic) {
            self.alias_bytes -= old.len();
        }
        self.alias_bytes += added;
        if self.alias_bytes > ALIAS_BYTES {
            return Err(Violation {
                ws_code: close_code::POLICY,
                reason: ReasonCode::QuotaExceeded,
                detail: format!(
                    "topic aliases hold more than {} KiB of topic names",
                    ALIAS_BYTES / 1024
                ),
            });
        }
        Ok(())
    }

    fn check_subscribe(&self, s: &Subscribe, raw: Bytes, out: &mut Vec<Step>) {
        let codes: Vec<Option<ReasonCode>> = s
            .filters
            .iter()
            .map(|f| {
                self.acl
                    .subscribe_upstream_refusal(&f.filter, &self.user, &self.client_id)
                    .map(|refusal| {
                        self.metrics.denied(Denial::Subscribe);
                        tracing::debug!(user = self.user, filter = %f.filter, "SUBSCRIBE refused by the role's rules");
                        refusal.reason()
                    })
            })
            .collect();
        let refused = codes.iter().filter(|c| c.is_some()).count();
        if refused == 0 {
            out.push(Step::Up(raw));
        } else if refused == codes.len() {
            out.push(self.answer(Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                reasons: codes.into_iter().flatten().collect(),
                properties: Default::default(),
            })));
        } else {
            let allowed = Subscribe {
                packet_id: s.packet_id,
                filters: s
                    .filters
                    .iter()
                    .zip(&codes)
                    .filter(|(_, c)| c.is_none())
                    .map(|(f, _)| f.clone())
                    .collect(),
                properties: s.properties.clone(),
            };
            out.push(Step::Splice(Splice {
                packet_id: s.packet_id,
                codes,
            }));
            out.push(Step::Up(encode(&Packet::Subscribe(allowed), self.version)));
        }
    }

    fn answer(&self, packet: Packet) -> Step {
        Step::Answer(encode(&packet, self.version))
    }
}

/// Encodes a packet the gateway built from valid parts (a failure would be a gateway bug; it
/// yields no bytes and is logged).
fn encode(packet: &Packet, version: Version) -> Bytes {
    let mut buf = BytesMut::new();
    if let Err(e) = packet.encode(version, &mut buf) {
        tracing::error!("cannot encode the gateway's own {packet:?}: {e}");
        buf.clear();
    }
    buf.freeze()
}

/// A message from the browser side to the broker → browser side.
#[derive(Debug)]
pub enum DownCmd {
    /// Send this packet to the browser at the next packet boundary.
    Answer(Bytes),
    /// Rewrite the SUBACK with this packet id.
    Splice(Splice),
}

/// Why the broker's stream cannot be carried on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StreamError(String);

#[derive(Debug)]
enum State {
    /// Reading a fixed header; `carried` of its bytes came in earlier reads (not yet sent).
    Header {
        bytes: [u8; 5],
        len: usize,
        carried: usize,
    },
    /// Passing `left` more bytes of a packet through.
    Body { left: usize },
    /// Collecting a whole SUBACK to rewrite.
    Hold { left: usize, buf: BytesMut },
}

impl State {
    const fn header() -> Self {
        Self::Header {
            bytes: [0; 5],
            len: 0,
            carried: 0,
        }
    }
}

/// The broker → browser stream, cut at packet boundaries without copying: bytes pass through
/// as read, only fixed headers are looked at. The gateway's own answers go in between two
/// packets, and SUBACKs that must be spliced are held whole and rewritten.
#[derive(Debug)]
pub struct Downstream {
    version: Version,
    state: State,
    /// Whether the broker's first packet (its CONNACK) went through: nothing of the gateway's
    /// may come before it [MQTT-3.2.0-1].
    started: bool,
    splices: HashMap<u16, Vec<Option<ReasonCode>>>,
    queued: VecDeque<Bytes>,
    max_hold: usize,
}

impl Downstream {
    /// A stream of a `version` session; a SUBACK to rewrite may be at most `max_hold` bytes.
    pub fn new(version: Version, max_hold: usize) -> Self {
        Self {
            version,
            state: State::header(),
            started: false,
            splices: HashMap::new(),
            queued: VecDeque::new(),
            max_hold,
        }
    }

    /// Whether the stream is between two packets, after the CONNACK (so the gateway may send
    /// one of its own).
    pub fn at_boundary(&self) -> bool {
        self.started && matches!(self.state, State::Header { len: 0, .. })
    }

    /// Answers waiting for a packet boundary.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// Takes a command from the browser side.
    pub fn command(&mut self, cmd: DownCmd) {
        match cmd {
            DownCmd::Answer(bytes) => self.queued.push_back(bytes),
            DownCmd::Splice(s) => {
                self.splices.insert(s.packet_id, s.codes);
            }
        }
    }

    /// The queued answers, if the stream is at a packet boundary.
    pub fn take_answers(&mut self, out: &mut Vec<Bytes>) {
        if self.at_boundary() {
            out.extend(self.queued.drain(..));
        }
    }

    /// A packet went through: the next header starts (the first one was the CONNACK).
    fn packet_done(&mut self) {
        self.state = State::header();
        self.started = true;
    }

    /// Takes bytes read from the broker; `out` gets what to send to the browser, in order
    /// (slices of `chunk`, answers, rewritten SUBACKs).
    pub fn process(&mut self, chunk: &Bytes, out: &mut Vec<Bytes>) -> Result<(), StreamError> {
        let mut pos = 0;
        // The start of the bytes of `chunk` not yet in `out`.
        let mut run = 0;
        let flush = |out: &mut Vec<Bytes>, from: usize, to: usize| {
            if to > from {
                out.push(chunk.slice(from..to));
            }
        };
        while pos < chunk.len() {
            match &mut self.state {
                State::Body { left } => {
                    let take = (*left).min(chunk.len() - pos);
                    pos += take;
                    *left -= take;
                    if *left == 0 {
                        self.packet_done();
                    }
                }
                State::Hold { left, buf } => {
                    let take = (*left).min(chunk.len() - pos);
                    buf.extend_from_slice(&chunk[pos..pos + take]);
                    pos += take;
                    run = pos;
                    *left -= take;
                    if *left == 0 {
                        let packet = std::mem::take(buf).freeze();
                        self.packet_done();
                        out.push(self.rewrite(packet));
                    }
                }
                State::Header {
                    bytes,
                    len,
                    carried,
                } => {
                    if *len == 0 && self.started && !self.queued.is_empty() {
                        flush(out, run, pos);
                        run = pos;
                        out.extend(self.queued.drain(..));
                    }
                    bytes[*len] = chunk[pos];
                    *len += 1;
                    pos += 1;
                    if *len < 2 {
                        continue;
                    }
                    let remaining = match read_var_int(&bytes[1..*len]) {
                        Ok(VarInt::Value(v, _)) => v as usize,
                        Ok(VarInt::Incomplete) => continue,
                        Err(e) => {
                            return Err(StreamError(format!(
                                "the broker sent a malformed packet header: {e}"
                            )));
                        }
                    };
                    let (header, len, carried) = (*bytes, *len, *carried);
                    if header[0] >> 4 == PacketType::SubAck as u8 && !self.splices.is_empty() {
                        if len + remaining > self.max_hold {
                            return Err(StreamError(format!(
                                "the broker sent a SUBACK of {} bytes, more than the {} the gateway holds to rewrite",
                                len + remaining,
                                self.max_hold
                            )));
                        }
                        flush(out, run, pos - (len - carried));
                        run = pos;
                        let mut buf = BytesMut::with_capacity(len + remaining);
                        buf.extend_from_slice(&header[..len]);
                        if remaining == 0 {
                            self.packet_done();
                            out.push(self.rewrite(buf.freeze()));
                        } else {
                            self.state = State::Hold {
                                left: remaining,
                                buf,
                            };
                        }
                    } else {
                        // Header bytes from an earlier read were held back: they go first.
                        if carried > 0 {
                            out.push(Bytes::copy_from_slice(&header[..carried]));
                        }
                        if remaining == 0 {
                            self.packet_done();
                        } else {
                            self.state = State::Body { left: remaining };
                        }
                    }
                }
            }
        }
        match &mut self.state {
            State::Header { len: 0, .. } => {
                flush(out, run, pos);
                if self.started {
                    out.extend(self.queued.drain(..));
                }
            }
            State::Header { len, carried, .. } => {
                // A header cut by the end of the read: held back until it is whole.
                flush(out, run, pos - (*len - *carried));
                *carried = *len;
            }
            State::Body { .. } => flush(out, run, pos),
            State::Hold { .. } => {}
        }
        Ok(())
    }

    /// The SUBACK with the refused filters' codes spliced in (unchanged if it is not one the
    /// gateway waits for or does not decode).
    fn rewrite(&mut self, packet: Bytes) -> Bytes {
        let mut buf = BytesMut::from(&packet[..]);
        let limits = Limits {
            max_packet_size: u32::MAX,
            ..Limits::default()
        };
        let Ok(Some(Packet::SubAck(mut ack))) = decode(&mut buf, self.version, &limits) else {
            return packet;
        };
        let Some(codes) = self.splices.remove(&ack.packet_id) else {
            return packet;
        };
        let expected = codes.iter().filter(|c| c.is_none()).count();
        if ack.reasons.len() != expected {
            tracing::warn!(
                packet_id = ack.packet_id,
                "the broker's SUBACK has {} codes for {expected} filters: passed on unchanged",
                ack.reasons.len()
            );
            return packet;
        }
        let mut from_broker = ack.reasons.into_iter();
        ack.reasons = codes
            .into_iter()
            .map(|c| {
                c.or_else(|| from_broker.next())
                    .unwrap_or(ReasonCode::UnspecifiedError)
            })
            .collect();
        encode(&Packet::SubAck(ack), self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(packets: &[Packet], v: Version) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for p in packets {
            p.encode(v, &mut buf).unwrap();
        }
        buf.to_vec()
    }

    fn suback(id: u16, reasons: Vec<ReasonCode>) -> Packet {
        Packet::SubAck(SubAck {
            packet_id: id,
            reasons,
            properties: Default::default(),
        })
    }

    /// Every way of cutting the stream gives the same bytes out, answers between packets and
    /// the SUBACK rewritten.
    #[test]
    fn downstream_splits_anywhere() {
        let v = Version::V5;
        let big = Packet::Publish(kite_mqtt::codec::Publish {
            topic: "a/b".into(),
            payload: Bytes::from(vec![7u8; 300]), // a two-byte remaining length
            ..Default::default()
        });
        let connack = Packet::ConnAck(kite_mqtt::codec::ConnAck {
            session_present: false,
            reason: ReasonCode::Success,
            properties: Default::default(),
        });
        let input = bytes(
            &[
                connack.clone(),
                big.clone(),
                suback(5, vec![ReasonCode::GrantedQoS1]),
                Packet::PingResp,
                big.clone(),
            ],
            v,
        );
        let answer = bytes(&[Packet::PubAck(Ack::new(9))], v);
        let out_packets = [
            connack.clone(),
            big.clone(),
            suback(5, vec![ReasonCode::NotAuthorized, ReasonCode::GrantedQoS1]),
            Packet::PingResp,
            big.clone(),
        ];
        let expected = bytes(&out_packets, v);
        let boundaries: Vec<usize> = (0..=out_packets.len())
            .map(|n| bytes(&out_packets[..n], v).len())
            .collect();
        for a in 0..input.len() {
            for b in [a, (a + 1).min(input.len()), (a + 7).min(input.len())] {
                let mut d = Downstream::new(v, 1024);
                d.command(DownCmd::Splice(Splice {
                    packet_id: 5,
                    codes: vec![Some(ReasonCode::NotAuthorized), None],
                }));
                let mut out = Vec::new();
                for (i, part) in [&input[..a], &input[a..b], &input[b..]].iter().enumerate() {
                    d.process(&Bytes::copy_from_slice(part), &mut out).unwrap();
                    if i == 0 {
                        // An answer comes while the stream may be in the middle of a packet.
                        d.command(DownCmd::Answer(Bytes::from(answer.clone())));
                    }
                }
                d.take_answers(&mut out);
                let got: Vec<u8> = out.concat();
                // The answer is there once, at a packet boundary; the rest is unchanged.
                // Never before the CONNACK [MQTT-3.2.0-1].
                let at = boundaries[1..].iter().copied().find(|&i| {
                    got[i..].starts_with(&answer) && {
                        let mut rest = got[..i].to_vec();
                        rest.extend_from_slice(&got[i + answer.len()..]);
                        rest == expected
                    }
                });
                assert!(at.is_some(), "cut at {a}, {b}: {got:02x?}");
                assert!(d.at_boundary());
            }
        }
    }

    #[test]
    fn a_malformed_header_from_the_broker_is_an_error() {
        let mut d = Downstream::new(Version::V5, 1024);
        let mut out = Vec::new();
        let e = d
            .process(
                &Bytes::from_static(&[0x30, 0xff, 0xff, 0xff, 0xff]),
                &mut out,
            )
            .unwrap_err();
        assert!(e.0.contains("malformed"), "{e}");
    }
}
