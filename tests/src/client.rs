//! A blocking MQTT test client that speaks packets (Kite's codec) over TCP or over the
//! gateway's WebSocket, for spec-level broker tests: each scenario is written once and run
//! both ways.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kite_mqtt::codec::{
    Ack, ConnAck, Connect, Properties, Publish, ReasonCode, SubAck, Subscribe, Subscription,
};
use kite_mqtt::{Limits, Packet, QoS, Version};

use crate::mqtt::WsClient;

/// How a test reaches the broker.
#[derive(Debug, Clone)]
pub enum Via {
    /// A device: TCP to the embedded broker's listener.
    Tcp(SocketAddr),
    /// A browser: WebSocket to the gateway's `/mqtt`.
    Ws(String),
}

enum Transport {
    Tcp(TcpStream),
    Ws(Box<WsClient>),
}

/// One MQTT connection under test.
pub struct TestClient {
    transport: Transport,
    version: Version,
    buf: BytesMut,
    /// Packets read while waiting for another one (e.g. a PUBLISH before a PUBREL).
    held: std::collections::VecDeque<Packet>,
    /// Send in pieces of this many bytes (WebSocket: one frame each).
    piece: Option<usize>,
}

impl TestClient {
    /// Opens the transport (no CONNECT yet).
    pub fn open(via: &Via, version: Version) -> Self {
        let transport = match via {
            Via::Tcp(addr) => {
                let s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s.set_nodelay(true).unwrap();
                Transport::Tcp(s)
            }
            Via::Ws(url) => Transport::Ws(Box::new(WsClient::connect(url, Some("mqtt")).unwrap())),
        };
        Self {
            transport,
            version,
            buf: BytesMut::new(),
            held: std::collections::VecDeque::new(),
            piece: None,
        }
    }

    /// From now on sends every packet in pieces of `n` bytes: over WebSocket, one frame each,
    /// so packets span frames.
    pub fn send_in_pieces(&mut self, n: usize) {
        self.piece = Some(n.max(1));
    }

    /// Sends several packets in one write (over WebSocket: one frame holding them all, unless
    /// sending in pieces).
    pub fn send_all(&mut self, packets: &[Packet]) {
        let mut buf = BytesMut::new();
        for p in packets {
            p.encode(self.version, &mut buf).unwrap();
        }
        self.send_raw(&buf);
    }

    /// Opens and connects with `connect` (its version is used); returns the CONNACK.
    pub fn connect(via: &Via, connect: Connect) -> (Self, ConnAck) {
        let mut c = Self::open(via, connect.version);
        c.send(&Packet::Connect(Box::new(connect)));
        match c.recv() {
            Packet::ConnAck(ack) => (c, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects with clean start, keep-alive 60 s, and checks the CONNACK is Success.
    pub fn connected(via: &Via, version: Version, client_id: &str) -> Self {
        let (c, ack) = Self::connect(via, connect(version, client_id));
        assert_eq!(ack.reason, ReasonCode::Success, "{ack:?}");
        c
    }

    /// Sends one packet.
    pub fn send(&mut self, p: &Packet) {
        let mut buf = BytesMut::new();
        p.encode(self.version, &mut buf).unwrap();
        self.send_raw(&buf);
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        for piece in bytes.chunks(self.piece.unwrap_or(bytes.len()).max(1)) {
            match &mut self.transport {
                Transport::Tcp(s) => s.write_all(piece).unwrap(),
                Transport::Ws(ws) => ws.send(piece),
            }
        }
    }

    /// The next packet; `None` if the connection closed. Panics after 10 s of silence.
    pub fn try_recv(&mut self) -> Option<Packet> {
        if let Some(p) = self.held.pop_front() {
            return Some(p);
        }
        loop {
            let limits = Limits::default();
            if let Some(p) = kite_mqtt::decode(&mut self.buf, self.version, &limits).unwrap() {
                return Some(p);
            }
            match &mut self.transport {
                Transport::Tcp(s) => {
                    let mut chunk = [0u8; 16 * 1024];
                    match s.read(&mut chunk) {
                        Ok(0) => return None,
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                        Err(e) => panic!("reading from the broker: {e}"),
                    }
                }
                Transport::Ws(ws) => match ws.next_message() {
                    tokio_tungstenite::tungstenite::Message::Binary(b) => {
                        self.buf.extend_from_slice(&b)
                    }
                    tokio_tungstenite::tungstenite::Message::Close(_) => return None,
                    _ => {}
                },
            }
        }
    }

    /// The next packet; panics if the connection closed.
    pub fn recv(&mut self) -> Packet {
        self.try_recv().expect("the broker closed the connection")
    }

    /// The next packet, which must be a PUBLISH.
    pub fn recv_publish(&mut self) -> Publish {
        match self.recv() {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Sends PINGREQ and returns every packet that came before the PINGRESP. The broker sends
    /// what was routed to this session before it read the PINGREQ first, so an empty answer
    /// means nothing was delivered.
    pub fn barrier(&mut self) -> Vec<Packet> {
        self.send(&Packet::PingReq);
        let mut before = Vec::new();
        loop {
            match self.recv() {
                Packet::PingResp => return before,
                p => before.push(p),
            }
        }
    }

    /// Subscribes to `filters` (each with its options) with `properties`; returns the SUBACK.
    pub fn subscribe_with(
        &mut self,
        packet_id: u16,
        filters: Vec<Subscription>,
        properties: Properties,
    ) -> SubAck {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            filters,
            properties: properties.into(),
        }));
        match self.recv() {
            Packet::SubAck(a) => a,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Subscribes to `filters`, all at `qos`, in one SUBSCRIBE; returns the SUBACK.
    pub fn subscribe_all(&mut self, packet_id: u16, filters: &[&str], qos: QoS) -> SubAck {
        let filters = filters.iter().map(|f| Subscription::new(*f, qos)).collect();
        self.subscribe_with(packet_id, filters, Properties::default())
    }

    /// Subscribes to one filter at `qos`; checks it was granted.
    pub fn subscribe(&mut self, filter: &str, qos: QoS) {
        let ack = self.subscribe_with(
            1,
            vec![Subscription::new(filter, qos)],
            Properties::default(),
        );
        let granted = match qos {
            QoS::AtMostOnce => ReasonCode::GrantedQoS0,
            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        };
        assert_eq!(ack.reasons, vec![granted]);
    }

    /// Publishes and completes the QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP); returns the
    /// first acknowledgement's reason.
    pub fn publish(&mut self, p: Publish) -> ReasonCode {
        let (qos, id) = (p.qos, p.packet_id);
        self.send(&Packet::Publish(p));
        match qos {
            QoS::AtMostOnce => ReasonCode::Success,
            QoS::AtLeastOnce => match self.recv() {
                Packet::PubAck(a) if a.packet_id == id => a.reason,
                other => panic!("expected PUBACK {id}, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                let reason = match self.recv() {
                    Packet::PubRec(a) if a.packet_id == id => a.reason,
                    other => panic!("expected PUBREC {id}, got {other:?}"),
                };
                self.send(&Packet::PubRel(Ack::new(id)));
                match self.recv() {
                    Packet::PubComp(a) if a.packet_id == id => {}
                    other => panic!("expected PUBCOMP {id}, got {other:?}"),
                }
                reason
            }
        }
    }

    /// Acknowledges a received PUBLISH (QoS 1: PUBACK; QoS 2: PUBREC, PUBREL, PUBCOMP).
    pub fn ack(&mut self, p: &Publish) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(Ack::new(p.packet_id))),
            QoS::ExactlyOnce => {
                self.send(&Packet::PubRec(Ack::new(p.packet_id)));
                // Other deliveries may come first; they are kept for the next `recv`.
                let mut before = Vec::new();
                loop {
                    match self.recv() {
                        Packet::PubRel(a) if a.packet_id == p.packet_id => break,
                        other @ Packet::Publish(_) => before.push(other),
                        other => panic!("expected PUBREL {}, got {other:?}", p.packet_id),
                    }
                }
                self.held.extend(before);
                self.send(&Packet::PubComp(Ack::new(p.packet_id)));
            }
        }
    }

    /// Sends DISCONNECT (Normal disconnection) and waits for the broker to close.
    pub fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Default::default()));
        while self.try_recv().is_some() {}
    }

    /// Closes the transport without DISCONNECT (an abnormal close: the Will is published).
    pub fn drop_connection(self) {
        if let Transport::Tcp(s) = &self.transport {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A CONNECT: clean start, keep-alive 60 s.
pub fn connect(version: Version, client_id: &str) -> Connect {
    Connect {
        version,
        client_id: client_id.into(),
        keep_alive: 60,
        ..Connect::default()
    }
}

/// A PUBLISH of `payload` to `topic`.
pub fn publish(topic: &str, payload: &str, qos: QoS, packet_id: u16) -> Publish {
    Publish {
        qos,
        topic: topic.into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { packet_id },
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        ..Publish::default()
    }
}
