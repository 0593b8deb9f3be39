//! A resumed session's redelivery (`resend`), and its release when the connection ends
//! (`finish`: expiry, the Will).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kite_mqtt::Packet;
use kite_mqtt::codec::{Ack, Publish, Will};

use crate::out::Out;
use crate::session::Awaiting;
use crate::{Message, lock, store};

use super::{Conn, End, encode};

impl Conn {
    /// On a resumed session: everything in flight again, in order — PUBLISH with DUP, or
    /// PUBREL where the PUBREC had come [MQTT-4.4.0-1].
    pub(super) fn resend(&mut self, out: &mut Out, now: Instant) {
        let slot = self.slot.clone();
        let mut st = lock(&slot.state);
        let inflight = std::mem::take(&mut st.inflight);
        for f in inflight {
            let keep = match f.awaiting {
                Awaiting::Comp => {
                    encode(Packet::PubRel(Ack::new(f.packet_id)), self.version, out);
                    true
                }
                _ => self.send_publish(&f.delivery, f.packet_id, true, 0, now, out),
            };
            if keep {
                st.inflight.push_back(f);
            } else {
                self.broker.forget_delivery(&self.client_id, f.delivery.seq);
            }
        }
    }

    /// After the connection: release the session (it expires, or ends now), and the Will.
    pub(super) fn finish(self, end: &End, will: Option<Will>, now: Instant) {
        let (owned, generation, expiry) = {
            let mut st = lock(&self.slot.state);
            let owned = st.owner == Some(self.id);
            if owned {
                st.owner = None;
            }
            (owned, st.generation, st.expiry)
        };
        if owned {
            self.slot.set_online(false);
            // The disconnect time, so that a restarted broker knows how long is left.
            self.broker
                .persist_session(&self.slot, store::unix_now().as_secs());
            if expiry == 0 {
                self.broker.end_session(&self.slot, generation);
            } else if expiry != u32::MAX {
                let broker = self.broker.clone();
                let slot = self.slot.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(expiry))).await;
                    broker.end_session(&slot, generation);
                });
            }
        }
        let Some(will) = will.filter(|_| end.publishes_will()) else {
            return;
        };
        let delay = will.properties.will_delay_interval.unwrap_or(0);
        let msg = Arc::new(Message::from_publish(
            Publish {
                dup: false,
                qos: will.qos,
                retain: will.retain,
                topic: will.topic,
                packet_id: 0,
                properties: will.properties,
                payload: will.payload,
            },
            Some(self.client_id.clone()),
            now,
        ));
        if delay == 0 || expiry == 0 {
            if let Err(full) = self.broker.publish(msg, now) {
                tracing::warn!(client_id = %self.client_id.escape_debug(), "Will not published: {full}");
            }
        } else if owned {
            // Published when the delay or the session ends, whichever is first — unless the
            // client came back before [MQTT-3.1.3-9].
            let wait = Duration::from_secs(u64::from(delay.min(expiry)));
            let broker = self.broker;
            let slot = self.slot;
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let resumed = {
                    let st = lock(&slot.state);
                    st.owner.is_some() || st.generation != generation
                };
                if !resumed && let Err(full) = broker.publish(msg, Instant::now()) {
                    tracing::warn!("a delayed Will was not published: {full}");
                }
            });
        }
        // Taken over with a will delay: the session was resumed at once; no Will.
    }
}
