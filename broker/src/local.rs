//! The in-process client: a connection to the broker that exchanges typed packets
//! ([`kite_mqtt::Packet`]) over channels instead of bytes over a socket — the same CONNECT
//! handling, session, topic rules and queue bounds as a network client, with no encoding or
//! decoding in between. The gateway's WebSocket sessions use it; so will the bridge, the
//! history recorder and the alarm engine.
//!
//! ```text
//! let mut client = broker.connect_local(connect, ConnInfo::internal(None));
//! match client.recv().await { Some(Packet::ConnAck(ack)) => ..., _ => ... }
//! client.send(Packet::Subscribe(subscribe)).await?;
//! ```
//!
//! Both directions carry batches (`Vec<Packet>`, one channel operation for many packets; an
//! idle link holds no buffer but the channels' own) and are bounded: [`LocalClient::send`]
//! waits while the broker has not taken the packets before, and the broker stops reading (and taking deliveries from the session's
//! queue) while the client does not take what it was sent — exactly as TCP backpressure
//! would. Dropping the client (or its sender) closes the connection: without a DISCONNECT, so
//! its Will is published. The broker closing it ends [`LocalClient::recv`] with `None` after
//! the last packets (a refusing CONNACK, or a DISCONNECT with the reason).

use std::collections::VecDeque;

use kite_mqtt::Packet;
use kite_mqtt::codec::Connect;
use tokio::sync::mpsc;

/// Batches a client may hand over before the broker takes them.
const TO_BROKER: usize = 4;

/// Batches the broker may hand over before the client takes them (each at most 64 KiB of
/// encoded size, plus one packet).
const FROM_BROKER: usize = 4;

/// Packets in one batch from a client at most: a longer batch waits for room once per part.
pub const MAX_BATCH: usize = 64;

/// The connection is closed: the broker ended it (or is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the broker closed this in-process connection")]
pub struct Closed;

/// The sending half of a [`LocalClient`] (cheap to clone: one per task that sends).
#[derive(Debug, Clone)]
pub struct LocalSender {
    tx: mpsc::Sender<Vec<Packet>>,
}

impl LocalSender {
    /// Hands `packet` to the broker, waiting while the link is full.
    pub async fn send(&self, packet: Packet) -> Result<(), Closed> {
        self.tx.send(vec![packet]).await.map_err(|_| Closed)
    }

    /// Hands `packets` to the broker in order, in batches of at most [`MAX_BATCH`] (one
    /// channel operation each), waiting while the link is full.
    pub async fn send_all(&self, mut packets: Vec<Packet>) -> Result<(), Closed> {
        while packets.len() > MAX_BATCH {
            let rest = packets.split_off(MAX_BATCH);
            self.tx.send(packets).await.map_err(|_| Closed)?;
            packets = rest;
        }
        if packets.is_empty() {
            return Ok(());
        }
        self.tx.send(packets).await.map_err(|_| Closed)
    }
}

/// The receiving half of a [`LocalClient`].
#[derive(Debug)]
pub struct LocalReceiver {
    rx: mpsc::Receiver<Vec<Packet>>,
    ready: VecDeque<Packet>,
}

impl LocalReceiver {
    /// Puts `packets` back in front of what is still to be received, in their order (packets
    /// taken while waiting for another one).
    pub fn put_back(&mut self, packets: Vec<Packet>) {
        for p in packets.into_iter().rev() {
            self.ready.push_front(p);
        }
    }

    /// The next packet from the broker; `None` once the connection is closed and every packet
    /// before the close was taken.
    pub async fn recv(&mut self) -> Option<Packet> {
        if self.ready.is_empty() {
            self.ready.extend(self.rx.recv().await?);
        }
        self.ready.pop_front()
    }

    /// Every packet from the broker that is ready, appended to `into` (waiting for at least
    /// one); `false` once the connection is closed and nothing was left.
    pub async fn recv_many(&mut self, into: &mut Vec<Packet>) -> bool {
        if self.ready.is_empty() {
            match self.rx.recv().await {
                Some(batch) => self.ready.extend(batch),
                None => return false,
            }
        }
        into.extend(self.ready.drain(..));
        while let Ok(batch) = self.rx.try_recv() {
            into.extend(batch);
        }
        true
    }
}

/// A client of the broker inside the process (see the module docs).
#[derive(Debug)]
pub struct LocalClient {
    sender: LocalSender,
    receiver: LocalReceiver,
}

impl LocalClient {
    /// Hands `packet` to the broker, waiting while the link is full.
    pub async fn send(&self, packet: Packet) -> Result<(), Closed> {
        self.sender.send(packet).await
    }

    /// The next packet from the broker (the first is the CONNACK); `None` once closed.
    pub async fn recv(&mut self) -> Option<Packet> {
        self.receiver.recv().await
    }

    /// The two halves, for a task that sends and another that receives.
    pub fn split(self) -> (LocalSender, LocalReceiver) {
        (self.sender, self.receiver)
    }
}

impl crate::Broker {
    /// Connects an in-process client with `connect` (its client id, clean start, keep-alive
    /// and Will as for any client; `info.authenticated`: a login already checked, else the
    /// CONNECT's credentials are checked). The connection runs in a task of its own on the
    /// current runtime; its first packet back is the CONNACK.
    pub fn connect_local(&self, connect: Connect, info: crate::ConnInfo) -> LocalClient {
        let (to_broker, from_client) = mpsc::channel(TO_BROKER);
        let (to_client, from_broker) = mpsc::channel(FROM_BROKER);
        tokio::spawn(crate::conn::serve_local(
            self.clone(),
            connect,
            info,
            from_client,
            to_client,
        ));
        LocalClient {
            sender: LocalSender { tx: to_broker },
            receiver: LocalReceiver {
                rx: from_broker,
                ready: VecDeque::new(),
            },
        }
    }
}
