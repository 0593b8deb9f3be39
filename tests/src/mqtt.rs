//! A raw MQTT-over-WebSocket client for tests: sends bytes, reads whole packets back.
//!
//! Packets are written by hand here on purpose: these tests check that the gateway carries
//! bytes faithfully, independently of Kite's own codec.

use std::net::TcpStream;
use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::stream::MaybeTlsStream;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

/// An MQTT 3.1.1 CONNECT: clean session, keep-alive 30 s.
pub fn connect_v311(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    push_str(&mut body, client_id);
    frame(0x10, body)
}

/// An MQTT 3.1.1 or 5.0 CONNECT with a user name and password.
pub fn connect_with_credentials(v5: bool, client_id: &str, user: &str, password: &str) -> Vec<u8> {
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        if v5 { 5 } else { 4 },
        0xc2,
        0,
        30,
    ];
    if v5 {
        body.push(0);
    }
    push_str(&mut body, client_id);
    push_str(&mut body, user);
    push_str(&mut body, password);
    frame(0x10, body)
}

/// An MQTT 5.0 CONNECT: clean start, keep-alive 30 s, no properties.
pub fn connect_v5(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 30, 0];
    push_str(&mut body, client_id);
    frame(0x10, body)
}

/// A 3.1.1 QoS 0 PUBLISH.
pub fn publish_v311(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, topic);
    body.extend_from_slice(payload);
    frame(0x30, body)
}

/// A 3.1.1 SUBSCRIBE of one filter at QoS 0.
pub fn subscribe_v311(packet_id: u16, filter: &str) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    push_str(&mut body, filter);
    body.push(0);
    frame(0x82, body)
}

fn push_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn frame(header: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![header];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend(body);
    out
}

/// Length of the first whole packet in `buf`, if it is all there.
fn packet_len(buf: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let total = 1 + i + 1 + len;
            return (buf.len() >= total).then_some(total);
        }
    }
    None
}

/// A WebSocket client speaking raw MQTT bytes.
pub struct WsClient {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    pending: Vec<u8>,
}

impl WsClient {
    /// Opens `url` offering `protocol` (none if `None`).
    pub fn connect(url: &str, protocol: Option<&str>) -> Result<Self, tungstenite::Error> {
        Self::connect_with(url, protocol, &[])
    }

    /// Opens `url` offering `protocol`, with extra request headers (e.g. `Origin`).
    pub fn connect_with(
        url: &str,
        protocol: Option<&str>,
        headers: &[(&'static str, &str)],
    ) -> Result<Self, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        for (k, v) in headers {
            request.headers_mut().insert(*k, v.parse().unwrap());
        }
        if let Some(p) = protocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
        }
        let (ws, response) = tungstenite::connect(request)?;
        if let Some(p) = protocol {
            assert_eq!(
                response
                    .headers()
                    .get("Sec-WebSocket-Protocol")
                    .map(|v| v.to_str().unwrap()),
                Some(p),
                "the gateway must select the offered subprotocol [MQTT-6.0.0-4]"
            );
        }
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        Ok(Self {
            ws,
            pending: Vec::new(),
        })
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.ws.send(Message::binary(bytes.to_vec())).unwrap();
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    /// Reads one whole MQTT packet, across as many frames as it takes.
    pub fn read_packet(&mut self) -> Vec<u8> {
        loop {
            if let Some(n) = packet_len(&self.pending) {
                return self.pending.drain(..n).collect();
            }
            match self.ws.read().unwrap() {
                Message::Binary(b) => self.pending.extend_from_slice(&b),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    }

    /// The next frame, whatever it is.
    pub fn next_message(&mut self) -> Message {
        self.ws.read().unwrap()
    }

    /// Reads until the server closes; returns its close frame.
    pub fn read_close(&mut self) -> Option<CloseFrame> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => {}
                Err(e) => panic!("expected a close frame, got error {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(packet_len(&[0x20, 0x02, 0, 0]), Some(4));
        assert_eq!(packet_len(&[0x20, 0x02, 0]), None);
        let big = frame(0x30, vec![0; 200]);
        assert_eq!(&big[..3], &[0x30, 0xC8, 0x01]);
        assert_eq!(packet_len(&big), Some(203));
    }
}
