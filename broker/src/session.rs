//! One client session as the broker keeps it: subscriptions, the bounded queue of deliveries,
//! the QoS 1/2 messages in flight both ways. It outlives connections (persistent sessions).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use kite_mqtt::{MqttStr, QoS};
use tokio::sync::Notify;

use super::{BrokerConfig, Message, SubscribeEntry, lock};

/// The store and its queue sequence counter, for deliveries to persistent sessions.
pub(crate) struct Persist<'a> {
    pub store: &'a super::store::Store,
    pub next_seq: &'a std::sync::atomic::AtomicU64,
}

/// What a delivery is, for the queue's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A publication routed to the session's subscriptions.
    Live,
    /// A retained message sent because of a new subscription.
    Retained,
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub msg: Arc<Message>,
    /// The QoS it is delivered at (the lower of the publication's and the subscription's).
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (MQTT 5).
    pub ids: Vec<u32>,
    /// Its key in the store's queue table; 0: not stored.
    pub seq: u64,
    /// Whether it counts towards `max_queued_messages_online` while queued (set by
    /// [`Slot::push`]).
    pub live: bool,
}

/// Where an outgoing QoS 1/2 delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Awaiting {
    /// QoS 1: PUBACK.
    Ack,
    /// QoS 2: PUBREC.
    Rec,
    /// QoS 2: PUBCOMP (PUBREL sent).
    Comp,
}

/// A delivery sent and not yet acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Inflight {
    pub packet_id: u16,
    pub delivery: Delivery,
    pub awaiting: Awaiting,
}

/// Bounds of one session's queue that replace `[broker]`'s (`ConnInfo::with_queue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBounds {
    /// Deliveries queued or in flight at most, whether a connection holds the session or not.
    pub messages: usize,
    /// Their bytes at most.
    pub bytes: usize,
}

#[derive(Debug)]
pub(crate) struct SessionState {
    /// The connection that holds the session, if any.
    pub owner: Option<u64>,
    /// Bumped at every attach: timers started by a connection that left check it.
    pub generation: u64,
    /// Session expiry interval in seconds (`u32::MAX`: never).
    pub expiry: u32,
    /// The login that made the session (`None`: none). Another login may not take it over.
    pub user: Option<Arc<str>>,
    /// Set when the session is removed: deliveries are refused, its connection closes.
    pub ended: bool,
    /// The queue's own bounds, if its client has them (a bridge); else `[broker]`'s.
    pub bounds: Option<QueueBounds>,
    /// Deliveries dropped because the queue was full (its count or its bytes).
    pub dropped: u64,
    /// The store holds a record of this session.
    pub persisted: bool,
    /// Subscriptions by full filter (`$share/...` included).
    pub subscriptions: HashMap<MqttStr, SubscribeEntry>,
    /// Deliveries not yet sent, oldest first.
    pub queue: VecDeque<Delivery>,
    /// How many queued deliveries count towards `max_queued_messages_online` (those with
    /// `live` set): not what was queued before the current connection took the session, nor
    /// the retained messages sent for a new subscription.
    pub live: usize,
    pub queued_bytes: usize,
    /// Sent and not acknowledged, in the order sent (resent in this order [MQTT-4.6.0-1]).
    pub inflight: VecDeque<Inflight>,
    next_packet_id: u16,
    /// QoS 2 messages received (and routed) whose PUBREL has not come yet: a PUBLISH with one
    /// of these ids is a duplicate and is not routed again [MQTT-4.3.3-10].
    pub incoming_qos2: HashSet<u16>,
}

impl SessionState {
    /// Takes the oldest queued delivery off the queue, with its bounds' accounting.
    pub(crate) fn pop(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        self.queued_bytes -= d.msg.size();
        self.live -= usize::from(d.live);
        Some(d)
    }

    /// A connection took the session over: what it finds queued does not count towards the
    /// online bound.
    pub(crate) fn resumed(&mut self) {
        for d in &mut self.queue {
            d.live = false;
        }
        self.live = 0;
    }

    /// A packet identifier not used by any message in flight.
    pub(crate) fn next_packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if self.next_packet_id == 0 {
                self.next_packet_id = 1;
            }
            let id = self.next_packet_id;
            if !self.inflight.iter().any(|i| i.packet_id == id) {
                return id;
            }
        }
    }
}

/// A session, shared by its connection's task, the routers that deliver to it, and timers.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Unique for the broker's lifetime (a new session for the same client id gets a new id).
    pub id: u64,
    pub client_id: Arc<str>,
    pub state: std::sync::Mutex<SessionState>,
    /// Wakes the owning connection: new deliveries, or the session was taken over or ended.
    pub notify: Notify,
    online: AtomicBool,
}

impl Slot {
    pub(crate) fn new(id: u64, client_id: Arc<str>, owner: u64, expiry: u32) -> Self {
        Self {
            id,
            client_id,
            state: std::sync::Mutex::new(SessionState {
                owner: Some(owner),
                generation: 0,
                expiry,
                user: None,
                ended: false,
                bounds: None,
                dropped: 0,
                persisted: false,
                subscriptions: HashMap::new(),
                queue: VecDeque::new(),
                live: 0,
                queued_bytes: 0,
                inflight: VecDeque::new(),
                next_packet_id: 0,
                incoming_qos2: HashSet::new(),
            }),
            notify: Notify::new(),
            online: AtomicBool::new(true),
        }
    }

    pub(crate) fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    pub(crate) fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }

    /// Queues a delivery and wakes the connection; a QoS 1/2 delivery to a persistent session
    /// is also written to the store. `None`: dropped — the session ended, the queue is full
    /// (count — the online or the offline bound — or bytes), or QoS 0 for a session with no
    /// connection. `Some(ticket)`: queued; the ticket of its store write (0 if not stored).
    ///
    /// A `Kind::Retained` delivery (a new subscription's retained messages) is held to the
    /// byte bound only, and does not count towards the online one.
    pub(crate) fn push(
        &self,
        mut d: Delivery,
        kind: Kind,
        config: &BrokerConfig,
        store: Option<&Persist<'_>>,
        now: Instant,
    ) -> Option<u64> {
        let size = d.msg.size();
        let mut st = lock(&self.state);
        if st.ended || (st.owner.is_none() && d.qos == QoS::AtMostOnce) {
            return None;
        }
        let full = match (st.bounds, st.owner, kind) {
            (_, _, Kind::Retained) if st.owner.is_some() => false,
            // Sent and not acknowledged counts too: all of it waits for the bridge's remote.
            (Some(b), _, _) => st.queue.len() + st.inflight.len() >= b.messages,
            (None, Some(_), Kind::Live) => st.live >= config.max_queued_messages_online,
            (None, _, _) => st.queue.len() >= config.max_queued_messages,
        };
        let max_bytes = st.bounds.map_or(config.max_queued_bytes, |b| b.bytes);
        if full || st.queued_bytes + size > max_bytes {
            st.dropped += 1;
            return None;
        }
        d.live = st.owner.is_some() && kind == Kind::Live;
        st.live += usize::from(d.live);
        let mut ticket = 0;
        if let Some(p) = store
            && st.expiry > 0
            && d.qos != QoS::AtMostOnce
        {
            d.seq = p.next_seq.fetch_add(1, Ordering::Relaxed);
            let record = super::store::encode_message(&d.msg, d.qos, d.retain, &d.ids, None, now);
            ticket = p.store.submit([super::store::Op::PutQueued(
                self.client_id.to_string(),
                d.seq,
                record,
            )]);
        }
        st.queue.push_back(d);
        st.queued_bytes += size;
        drop(st);
        self.notify.notify_one();
        Some(ticket)
    }
}
