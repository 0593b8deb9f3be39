//! PUBLISH from the client: topic aliases, limits and topic rules, QoS 2's first step, routing.

use std::sync::Arc;
use std::time::Instant;

use kite_mqtt::codec::{Ack, Publish, ReasonCode};
use kite_mqtt::{Packet, QoS};

use crate::out::Out;
use crate::store::Op;
use crate::{Message, Stats, lock};

use super::{Conn, End};

impl Conn {
    pub(super) fn on_publish(
        &mut self,
        mut p: Publish,
        out: &mut Out,
        now: Instant,
    ) -> Result<(), End> {
        if let Some(alias) = p.properties.topic_alias {
            if alias == 0 || alias > self.broker.config().topic_alias_maximum {
                return Err(End::violation(
                    ReasonCode::TopicAliasInvalid,
                    format!(
                        "topic alias {alias} is above the Topic Alias Maximum {} [MQTT-3.3.2-9]",
                        self.broker.config().topic_alias_maximum
                    ),
                ));
            }
            if p.topic.is_empty() {
                match self.aliases_in.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return Err(End::violation(
                            ReasonCode::ProtocolError,
                            format!("topic alias {alias} was never set on this connection"),
                        ));
                    }
                }
            } else {
                self.aliases_in.insert(alias, p.topic.clone());
            }
        }
        if !p.properties.subscription_identifiers.is_empty() {
            return Err(End::violation(
                ReasonCode::ProtocolError,
                "a client PUBLISH may not carry a Subscription Identifier [MQTT-3.3.4-6]",
            ));
        }
        let (qos, packet_id) = (p.qos, p.packet_id);
        if let Some(why) = self.broker.config().topic_beyond_limits(&p.topic) {
            Stats::add(&self.broker.stats().topics_refused, 1);
            tracing::debug!(client_id = %self.client_id.escape_debug(), "PUBLISH refused: {why}");
            return self.refuse_publish(qos, packet_id, ReasonCode::TopicNameInvalid, why, out);
        }
        if let Some(refusal) = self
            .acl
            .as_ref()
            .and_then(|acl| acl.publish_refusal(&p.topic, &self.user, &self.client_id))
        {
            Stats::add(&self.broker.stats().publishes_denied, 1);
            tracing::debug!(client_id = %self.client_id, topic = %p.topic, "PUBLISH denied by the role's rules");
            if !self.v5()
                && self.broker.config().v311_denied_publish
                    == kite_policy::DeniedPublish::Disconnect
            {
                return Err(End::violation(
                    ReasonCode::NotAuthorized,
                    format!(
                        "PUBLISH to {:?} is not allowed for this user ([acl] v311_denied_publish = \"disconnect\")",
                        &*p.topic
                    ),
                ));
            }
            // 5.0: PUBACK/PUBREC 0x87 Not authorized tells the client; 3.1.1 has no way to say
            // no, so the message is acknowledged and dropped (or the session closed, above).
            let mut ack = Ack::new(packet_id);
            if self.v5() {
                ack.reason = refusal.reason();
            }
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.answer(0, Packet::PubAck(ack), out),
                QoS::ExactlyOnce => {
                    if !self.v5() {
                        // The PUBREL that follows gets its PUBCOMP.
                        lock(&self.slot.state).incoming_qos2.insert(packet_id);
                    }
                    self.answer(0, Packet::PubRec(ack), out);
                }
            }
            return Ok(());
        }
        // A QoS 2 message's packet id and its deliveries are stored in one transaction: were
        // the id stored alone (a stop between two commits), the publisher's resent PUBLISH
        // would be acknowledged as a duplicate and the message never routed; were the
        // deliveries stored alone, it would be routed twice.
        let broker = self.broker.clone();
        let _section = if qos == QoS::ExactlyOnce {
            broker.store_section()
        } else {
            None
        };
        let mut ticket = 0;
        let fresh = match qos {
            QoS::ExactlyOnce => {
                let mut st = lock(&self.slot.state);
                if st.incoming_qos2.contains(&packet_id) {
                    // A resend before PUBREL: acknowledged again, not routed again
                    // [MQTT-4.3.3-10].
                    false
                } else if st.incoming_qos2.len()
                    >= usize::from(self.broker.config().receive_maximum)
                {
                    return Err(End::violation(
                        ReasonCode::ReceiveMaximumExceeded,
                        format!(
                            "more than {} QoS 2 messages awaiting PUBREL [MQTT-3.3.4-7]",
                            self.broker.config().receive_maximum
                        ),
                    ));
                } else {
                    st.incoming_qos2.insert(packet_id);
                    if st.persisted {
                        let client = self.client_id.to_string();
                        ticket = self.broker.persist([Op::PutQos2(client, packet_id)]);
                    }
                    true
                }
            }
            _ => true,
        };
        let mut matched = 1;
        if fresh {
            Stats::add(&self.broker.stats().messages_received, 1);
            p.properties.topic_alias = None;
            let msg = Arc::new(Message::from_publish(p, Some(self.client_id.clone()), now));
            match self.broker.publish(msg, now) {
                Ok(routed) => {
                    matched = routed.matched;
                    ticket = ticket.max(routed.ticket);
                }
                Err(full) => {
                    if qos == QoS::ExactlyOnce {
                        // A PUBREC with an error ends the flow (5.0 §4.3.3): no PUBREL follows.
                        let persisted = {
                            let mut st = lock(&self.slot.state);
                            st.incoming_qos2.remove(&packet_id);
                            st.persisted
                        };
                        if persisted {
                            let client = self.client_id.to_string();
                            self.broker.persist([Op::DelQos2(client, packet_id)]);
                        }
                    }
                    tracing::debug!(client_id = %self.client_id.escape_debug(), "PUBLISH refused: {full}");
                    return self.refuse_publish(
                        qos,
                        packet_id,
                        ReasonCode::QuotaExceeded,
                        full.to_string(),
                        out,
                    );
                }
            }
        }
        let mut ack = Ack::new(packet_id);
        if matched == 0 && self.v5() {
            ack.reason = ReasonCode::NoMatchingSubscribers;
        }
        // Acknowledged once stored where it must survive a crash (persistent subscribers'
        // queues, retained messages, the QoS 2 id).
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.answer(ticket, Packet::PubAck(ack), out),
            QoS::ExactlyOnce => self.answer(ticket, Packet::PubRec(ack), out),
        }
        Ok(())
    }

    /// A PUBLISH beyond a limit of the broker's: MQTT 5 gets the reason in its PUBACK or PUBREC
    /// (a QoS 0 message is dropped); MQTT 3.1.1 cannot be told, so its connection is closed
    /// rather than the message silently lost.
    pub(super) fn refuse_publish(
        &mut self,
        qos: QoS,
        packet_id: u16,
        reason: ReasonCode,
        why: String,
        out: &mut Out,
    ) -> Result<(), End> {
        if !self.v5() {
            return Err(End::violation(reason, why));
        }
        let mut ack = Ack::new(packet_id);
        ack.reason = reason;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.answer(0, Packet::PubAck(ack), out),
            QoS::ExactlyOnce => self.answer(0, Packet::PubRec(ack), out),
        }
        Ok(())
    }
}
