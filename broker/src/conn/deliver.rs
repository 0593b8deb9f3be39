//! Deliveries to the client: taking them from the session's queue (`fill`) within the
//! client's Receive Maximum, encoding them (`send_publish`), and the client's acknowledgements.

use std::time::Instant;

use kite_mqtt::codec::{Ack, Props, Publish};
use kite_mqtt::{MqttStr, Packet, QoS};

use crate::out::Out;
use crate::session::{Awaiting, Delivery, Inflight};
use crate::store::{Op, Sent};
use crate::{Stats, lock, store};

use super::{Conn, OUT_HIGH_WATER, PENDING_FILL_LIMIT};

impl Conn {
    pub(super) fn on_ack(&mut self, kind: Awaiting, ack: &Ack, out: &mut Out, now: Instant) {
        let mut st = lock(&self.slot.state);
        let Some(i) = st
            .inflight
            .iter()
            .position(|f| f.packet_id == ack.packet_id && f.awaiting == kind)
        else {
            // Unknown or out of step: nothing to do (e.g. a late acknowledgement after a
            // resend).
            return;
        };
        if kind == Awaiting::Rec && !(self.v5() && ack.reason.is_error()) {
            st.inflight[i].awaiting = Awaiting::Comp;
            // Stored before the PUBREL leaves: after a crash, PUBREL is resent, not PUBLISH.
            let ticket = if st.inflight[i].delivery.seq != 0 {
                let d = st.inflight[i].delivery.clone();
                drop(st);
                self.store_step(&d, ack.packet_id, Sent::AwaitingComp, now)
            } else {
                drop(st);
                0
            };
            self.answer(ticket, Packet::PubRel(Ack::new(ack.packet_id)), out);
        } else if let Some(done) = st.inflight.remove(i) {
            drop(st);
            self.broker
                .forget_delivery(&self.client_id, done.delivery.seq);
        }
    }

    /// Moves deliveries from the session's queue to `out`, within the client's receive window.
    pub(super) fn fill(&mut self, out: &mut Out, now: Instant) {
        let window = usize::from(
            self.client_receive_max
                .min(self.broker.config().max_inflight),
        );
        let slot = self.slot.clone();
        let mut st = lock(&slot.state);
        // Deliveries held behind an uncommitted answer stay in the (bounded) session queue.
        while out.len() < OUT_HIGH_WATER && self.pending.len() < PENDING_FILL_LIMIT {
            let Some(front) = st.queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && st.inflight.len() >= window {
                break;
            }
            let Some(d) = st.pop() else {
                break;
            };
            if d.msg.expired(now) {
                Stats::add(&self.broker.stats().messages_expired, 1);
                self.broker.forget_delivery(&self.client_id, d.seq);
                continue;
            }
            // Checked here, where every delivery passes (live, retained, queued offline, restored
            // after a restart), not when routing.
            let topic = &*d.msg.topic;
            if self
                .read_denied
                .iter()
                .any(|f| kite_mqtt::topic::matches(f, topic))
                || self
                    .read_allowed
                    .as_ref()
                    .is_some_and(|rules| !rules.iter().any(|r| kite_policy::acl::covers(r, topic)))
            {
                Stats::add(&self.broker.stats().deliveries_denied, 1);
                self.broker.forget_delivery(&self.client_id, d.seq);
                continue;
            }
            if d.qos == QoS::AtMostOnce {
                self.send_publish(&d, 0, false, 0, now, out);
                continue;
            }
            let packet_id = st.next_packet_id();
            // A stored QoS 2 delivery: its packet id is stored before the PUBLISH leaves, so
            // that after a crash it is resent under the same id and delivered once.
            let ticket = if d.qos == QoS::ExactlyOnce && d.seq != 0 {
                self.store_step(&d, packet_id, Sent::AwaitingRec, now)
            } else {
                0
            };
            if !self.send_publish(&d, packet_id, false, ticket, now, out) {
                self.broker.forget_delivery(&self.client_id, d.seq);
            } else {
                let awaiting = if d.qos == QoS::AtLeastOnce {
                    Awaiting::Ack
                } else {
                    Awaiting::Rec
                };
                st.inflight.push_back(Inflight {
                    packet_id,
                    delivery: d,
                    awaiting,
                });
            }
        }
    }

    /// Stores where a QoS 2 delivery stands (its packet id and step); returns the ticket.
    pub(super) fn store_step(&self, d: &Delivery, packet_id: u16, step: Sent, now: Instant) -> u64 {
        let record = store::encode_message(
            &d.msg,
            d.qos,
            d.retain,
            &d.ids,
            Some((packet_id, step)),
            now,
        );
        self.broker
            .persist([Op::PutQueued(self.client_id.to_string(), d.seq, record)])
    }

    /// Encodes a delivery for this client. `false`: not sent — larger than the client's
    /// Maximum Packet Size (dropped as if delivered [MQTT-3.1.2-25]), or not encodable.
    /// Sent once store ticket `ticket` is committed (0: no wait).
    pub(super) fn send_publish(
        &mut self,
        d: &Delivery,
        packet_id: u16,
        dup: bool,
        ticket: u64,
        now: Instant,
        out: &mut Out,
    ) -> bool {
        let mut properties = Props::default();
        let mut alias = None;
        if self.v5() {
            if !d.msg.properties.is_empty() {
                properties = d.msg.properties.clone();
            }
            if let Some(left) = d.msg.remaining_expiry(now) {
                properties.message_expiry_interval = Some(left);
            }
            if !d.ids.is_empty() {
                properties.subscription_identifiers = d.ids.clone();
            }
            if self.client_alias_max > 0 {
                alias = match self.aliases_out.get(&d.msg.topic) {
                    Some(&a) => Some((a, true)),
                    None if self.aliases_out.len() < usize::from(self.client_alias_max) => {
                        Some((self.aliases_out.len() as u16 + 1, false))
                    }
                    None => None,
                };
            }
        }
        let mut topic = d.msg.topic.clone();
        if let Some((a, known)) = alias {
            properties.topic_alias = Some(a);
            if known {
                topic = MqttStr::new();
            }
        }
        let packet = Packet::Publish(Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic,
            packet_id,
            properties,
            payload: d.msg.payload.clone(),
        });
        match packet.encoded_len(self.version) {
            Ok(n) if n as u64 <= u64::from(self.client_max_packet) => {}
            Ok(_) => {
                Stats::add(&self.broker.stats().messages_dropped, 1);
                return false;
            }
            Err(e) => {
                tracing::warn!(client_id = %self.client_id, "cannot deliver a message: {e}");
                Stats::add(&self.broker.stats().messages_dropped, 1);
                return false;
            }
        }
        if let Some((a, false)) = alias {
            self.aliases_out.insert(d.msg.topic.clone(), a);
        }
        self.answer(ticket, packet, out);
        Stats::add(&self.broker.stats().messages_sent, 1);
        true
    }
}
