//! SUBSCRIBE and UNSUBSCRIBE: filters checked against limits and topic rules, retained
//! messages handed out.

use std::time::Instant;

use kite_mqtt::codec::{Props, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe};
use kite_mqtt::topic::parse_shared;
use kite_mqtt::{Packet, QoS};

use crate::out::Out;
use crate::session::{Delivery, Kind};
use crate::{Stats, SubscribeEntry, lock};

use super::Conn;

impl Conn {
    pub(super) fn on_subscribe(&mut self, s: Subscribe, out: &mut Out, now: Instant) {
        let id = s.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let broker = self.broker.clone();
        let config = broker.config();
        // Until the retained messages are queued (see `Broker::retained_read`).
        let held = broker.retained_read();
        for f in s.filters {
            let inner = parse_shared(&f.filter)
                .ok()
                .flatten()
                .map_or(&*f.filter, |s| s.filter);
            if let Some(why) = config.topic_beyond_limits(inner) {
                Stats::add(&self.broker.stats().topics_refused, 1);
                tracing::debug!(client_id = %self.client_id.escape_debug(), "subscription refused: {why}");
                // 0x8F Topic Filter invalid (3.1.1: 0x80 Failure).
                reasons.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            if let Some(refusal) = self
                .acl
                .as_ref()
                .and_then(|acl| acl.subscribe_refusal(&f.filter, &self.user, &self.client_id))
            {
                Stats::add(&self.broker.stats().subscriptions_denied, 1);
                // 0x87 or 0x80 in 5.0; 0x80 in 3.1.1.
                reasons.push(refusal.reason());
                continue;
            }
            let entry = SubscribeEntry {
                qos: f.qos,
                no_local: f.no_local,
                retain_as_published: f.retain_as_published,
                id,
            };
            let existed = {
                let mut st = lock(&self.slot.state);
                let existed = st.subscriptions.contains_key(&f.filter);
                if !existed && st.subscriptions.len() >= config.max_subscriptions {
                    drop(st);
                    Stats::add(&self.broker.stats().subscriptions_refused, 1);
                    tracing::debug!(
                        client_id = %self.client_id.escape_debug(),
                        "subscription refused: more than {} on one session ([broker] max_subscriptions)",
                        config.max_subscriptions
                    );
                    reasons.push(ReasonCode::QuotaExceeded);
                    continue;
                }
                st.subscriptions.insert(f.filter.clone(), entry);
                existed
            };
            self.broker.subscribe(&self.slot, &f.filter, entry);
            reasons.push(match f.qos {
                QoS::AtMostOnce => ReasonCode::GrantedQoS0,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
            // Retained messages: not for shared subscriptions; per Retain Handling otherwise
            // [MQTT-3.3.1-9/10/11]. Sent with RETAIN set [MQTT-3.3.1-8].
            use kite_mqtt::codec::RetainHandling as R;
            let send = !f.filter.starts_with("$share/")
                && match f.retain_handling {
                    R::SendAtSubscribe => true,
                    R::SendIfNew => !existed,
                    R::DoNotSend => false,
                };
            if send {
                for msg in held.matching(&f.filter, now) {
                    retained.push(Delivery {
                        seq: 0,
                        live: false,
                        qos: msg.qos.min(f.qos),
                        retain: true,
                        ids: id.into_iter().collect(),
                        msg,
                    });
                }
            }
        }
        let ack = SubAck {
            packet_id: s.packet_id,
            reasons,
            properties: Props::default(),
        };
        // The subscription is stored before it is acknowledged.
        let ticket = self.broker.persist_session(&self.slot, 0);
        self.answer(ticket, Packet::SubAck(ack), out);
        let persist = self.broker.persist_handle();
        for d in retained {
            let pushed = self.slot.push(
                d,
                Kind::Retained,
                self.broker.config(),
                persist.as_ref(),
                now,
            );
            if pushed.is_none() {
                Stats::add(&self.broker.stats().messages_dropped, 1);
            }
        }
        drop(held);
    }

    pub(super) fn on_unsubscribe(&mut self, u: Unsubscribe, out: &mut Out) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        for f in &u.filters {
            let existed = lock(&self.slot.state).subscriptions.remove(f).is_some();
            self.broker.unsubscribe(self.slot.id, f);
            reasons.push(if existed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        if !self.v5() {
            reasons.clear();
        }
        let ack = UnsubAck {
            packet_id: u.packet_id,
            reasons,
            properties: Props::default(),
        };
        let ticket = self.broker.persist_session(&self.slot, 0);
        self.answer(ticket, Packet::UnsubAck(ack), out);
    }
}
