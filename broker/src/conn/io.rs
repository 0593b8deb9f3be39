//! The transports: bytes over a socket (`serve`, `Conn::run`: decode what is read, write
//! what `Out` holds) and typed packets over an in-process link (`serve_local`,
//! `Conn::run_local`). Each reads the clock once per event and hands the packets to
//! `Conn::handle`.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use kite_mqtt::codec::wire::{VarInt, read_var_int};
use kite_mqtt::codec::{Connect, ReasonCode};
use kite_mqtt::{DecodeError, Limits, Packet, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::out::Out;
use crate::{Broker, Stats, stopped};

use super::connect::open;
use super::{
    CLOSE_TIMEOUT, Conn, ConnInfo, End, FAIR_SHARE, MAX_PENDING, OUT_HIGH_WATER, READ_AHEAD,
    closed, encode, refusal,
};

/// Why the first packet did not start a session.
enum FirstError {
    Closed,
    Io(std::io::Error),
    Decode(DecodeError),
    NotConnect,
}

async fn read_first<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Box<Connect>, FirstError> {
    loop {
        match kite_mqtt::decode(buf, Version::V5, limits) {
            Ok(Some(Packet::Connect(c))) => return Ok(c),
            // The first packet must be CONNECT [MQTT-3.1.0-1].
            Ok(Some(_)) => return Err(FirstError::NotConnect),
            Ok(None) => {}
            Err(e) => return Err(FirstError::Decode(e)),
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Err(FirstError::Closed),
            Ok(_) => {}
            Err(e) => return Err(FirstError::Io(e)),
        }
    }
}

/// Room for the rest of the packet that `inbuf` holds the start of (its size is in its fixed
/// header), at most [`READ_AHEAD`] more. Without it a large packet is read in small steps:
/// `BytesMut` grows by 64 bytes at a time from a fresh small buffer whenever the previous
/// packet's payload still holds the old one (it is queued for subscribers). Capped, so that a
/// size announced in five bytes never makes the broker allocate much.
fn make_room(inbuf: &mut BytesMut) {
    let missing = match inbuf.get(1..).map(read_var_int) {
        Some(Ok(VarInt::Value(remaining, n))) => {
            (1 + n + remaining as usize).saturating_sub(inbuf.len())
        }
        _ => 0,
    };
    if missing > 0 {
        inbuf.reserve(missing.min(READ_AHEAD));
    }
}

/// The protocol level a (possibly malformed) CONNECT in `buf` announces, if it can be read.
fn connect_level(buf: &[u8]) -> Option<u8> {
    let mut i = 1;
    while *buf.get(i)? & 0x80 != 0 {
        i += 1;
    }
    let name_len = usize::from(u16::from_be_bytes([*buf.get(i + 1)?, *buf.get(i + 2)?]));
    buf.get(i + 3 + name_len).copied()
}

/// Writes `out`, closes the write side, then reads and discards what the client still sends
/// until it closes too — all within [`CLOSE_TIMEOUT`]. A lingering close: closing a socket
/// with unread input resets the connection, and the reset throws away what the client had
/// not read yet — the DISCONNECT that says why, the refusing CONNACK.
async fn flush_and_close<R, W>(rd: &mut R, wr: &mut W, out: &mut Out)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        out.write_all(wr).await?;
        wr.shutdown().await?;
        let mut discard = [0u8; 2048];
        while rd.read(&mut discard).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

pub(crate) async fn serve<S>(broker: Broker, stream: S, info: ConnInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let config = broker.config().clone();
    let limits = Limits {
        max_packet_size: config.max_packet_size,
        max_user_properties: config.max_user_properties,
    };
    // Small to start (an idle client costs little); it grows with the packets that come.
    let mut inbuf = BytesMut::with_capacity(512);
    let first = tokio::time::timeout(
        config.connect_timeout,
        read_first(&mut rd, &mut inbuf, &limits),
    )
    .await;
    let connect = match first {
        Ok(Ok(c)) => c,
        Err(_) => {
            tracing::debug!(peer = %info.peer, "no CONNECT in time; closed");
            return flush_and_close(&mut rd, &mut wr, &mut Out::default()).await;
        }
        Ok(Err(FirstError::Closed)) => return,
        Ok(Err(FirstError::Io(e))) => {
            tracing::debug!(peer = %info.peer, "connection failed before CONNECT: {e}");
            return;
        }
        Ok(Err(FirstError::NotConnect)) => {
            tracing::debug!(peer = %info.peer, "first packet was not CONNECT [MQTT-3.1.0-1]; closed");
            return flush_and_close(&mut rd, &mut wr, &mut Out::default()).await;
        }
        Ok(Err(FirstError::Decode(e))) => {
            tracing::debug!(peer = %info.peer, "bad CONNECT: {e}");
            let mut out = Out::default();
            match (e, connect_level(&inbuf)) {
                // Unsupported level: CONNACK return code 1 in the 3.1.1 form [MQTT-3.1.2-2].
                (DecodeError::UnsupportedProtocolLevel { .. }, _) => {
                    let (p, v) =
                        refusal(Version::V3_1_1, ReasonCode::UnsupportedProtocolVersion, "");
                    encode(p, v, &mut out);
                }
                (DecodeError::InvalidProtocolName { .. }, _) => {}
                (e, Some(5)) => {
                    let code = match e {
                        DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
                        DecodeError::TooManyUserProperties { .. } => {
                            Stats::add(&broker.stats().user_properties_refused, 1);
                            ReasonCode::QuotaExceeded
                        }
                        _ => ReasonCode::MalformedPacket,
                    };
                    let (p, v) = refusal(Version::V5, code, &e.to_string());
                    encode(p, v, &mut out);
                }
                _ => {}
            }
            return flush_and_close(&mut rd, &mut wr, &mut out).await;
        }
    };
    let mut out = Out::new(wr.is_write_vectored());
    let Some(mut opened) = open(&broker, *connect, &info, limits, &mut out).await else {
        return flush_and_close(&mut rd, &mut wr, &mut out).await;
    };
    let end = opened
        .conn
        .run(&mut rd, &mut wr, &mut inbuf, &mut out, opened.keep_alive)
        .await;
    let conn = opened.conn.id;
    let client_id = opened.close(&end, &mut out);
    flush_and_close(&mut rd, &mut wr, &mut out).await;
    closed(&broker, &info, conn, &client_id, &end);
}

/// Serves an in-process client ([`crate::LocalClient`]): the same CONNECT handling, session,
/// rules and bounds as [`serve`], with typed packets instead of bytes.
pub(crate) async fn serve_local(
    broker: Broker,
    connect: Connect,
    info: ConnInfo,
    mut rx: tokio::sync::mpsc::Receiver<Vec<Packet>>,
    tx: tokio::sync::mpsc::Sender<Vec<Packet>>,
) {
    let config = broker.config();
    let limits = Limits {
        max_packet_size: config.max_packet_size,
        max_user_properties: config.max_user_properties,
    };
    let mut out = Out::local();
    let Some(mut opened) = open(&broker, connect, &info, limits, &mut out).await else {
        return flush_local(&tx, &mut out).await;
    };
    let end = opened
        .conn
        .run_local(&mut rx, &tx, &mut out, opened.keep_alive)
        .await;
    let conn = opened.conn.id;
    let client_id = opened.close(&end, &mut out);
    flush_local(&tx, &mut out).await;
    closed(&broker, &info, conn, &client_id, &end);
}

/// Hands the last packets (a refusal, a DISCONNECT) to a local client, bounded by
/// [`CLOSE_TIMEOUT`]; the link closes when `tx` is dropped.
async fn flush_local(tx: &tokio::sync::mpsc::Sender<Vec<Packet>>, out: &mut Out) {
    let packets = out.take_packets();
    if !packets.is_empty() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, tx.send(packets)).await;
    }
}

impl Conn {
    async fn run<R, W>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        inbuf: &mut BytesMut,
        out: &mut Out,
        keep_alive: u16,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut shutdown = self.broker.shutdown_signal();
        let grace = Duration::from_millis(u64::from(keep_alive) * 1500);
        let mut deadline = tokio::time::Instant::now() + grace;
        let slot = self.slot.clone();
        let mut committed = self.committed.clone();
        // Packets already buffered behind the CONNECT.
        if let Err(end) = self.handle_buffered(inbuf, out) {
            return end;
        }
        // Bytes read since this task last let others run.
        let mut turn = 0;
        loop {
            if turn >= FAIR_SHARE {
                turn = 0;
                tokio::task::yield_now().await;
            }
            let (reading, waiting) = match self.next_turn(out) {
                Ok(turn) => turn,
                Err(end) => return end,
            };
            let slices = out.slices();
            tokio::select! {
                r = rd.read_buf(inbuf), if reading => match r {
                    Ok(0) => return End::Closed,
                    Ok(n) => {
                        turn += n;
                        Stats::add(&self.broker.stats().bytes_received, n as u64);
                        deadline = tokio::time::Instant::now() + grace;
                        if let Err(end) = self.handle_buffered(inbuf, out) {
                            return end;
                        }
                    }
                    Err(e) => return End::Io(e.to_string()),
                },
                w = wr.write_vectored(&slices), if !slices.is_empty() => match w {
                    Ok(0) => return End::Closed,
                    Ok(n) => {
                        Stats::add(&self.broker.stats().bytes_sent, n as u64);
                        out.advance(n);
                    }
                    Err(e) => return End::Io(e.to_string()),
                },
                () = slot.notify.notified() => {}
                c = async { committed.as_mut()?.changed().await.ok() }, if waiting => {
                    if c.is_none() {
                        return End::Io("the broker's store stopped".to_owned());
                    }
                }
                () = tokio::time::sleep_until(deadline), if keep_alive > 0 => return End::KeepAlive,
                () = stopped(&mut shutdown) => return End::Shutdown,
            }
        }
    }

    /// The start of each turn of a transport's loop: the session still this connection's,
    /// the answers whose writes are committed released, deliveries taken from the queue.
    /// Returns whether to read (room in `out` and for held answers) and whether answers wait
    /// for the store.
    fn next_turn(&mut self, out: &mut Out) -> Result<(bool, bool), End> {
        if let Some(end) = self.taken_over() {
            return Err(end);
        }
        self.release(out);
        self.fill(out, Instant::now());
        let reading = out.len() < OUT_HIGH_WATER && self.pending.len() < MAX_PENDING;
        Ok((reading, !self.pending.is_empty()))
    }

    /// [`Conn::run`] for an in-process client: packets come from `rx` in batches (the same
    /// limits as decoding bytes would apply: maximum packet size, User Properties), and go to
    /// `tx` in batches — what `out` holds when the link has room. No buffer is kept between
    /// batches: an idle link holds no memory of its own.
    async fn run_local(
        &mut self,
        rx: &mut tokio::sync::mpsc::Receiver<Vec<Packet>>,
        tx: &tokio::sync::mpsc::Sender<Vec<Packet>>,
        out: &mut Out,
        keep_alive: u16,
    ) -> End {
        let mut shutdown = self.broker.shutdown_signal();
        let grace = Duration::from_millis(u64::from(keep_alive) * 1500);
        let mut deadline = tokio::time::Instant::now() + grace;
        let slot = self.slot.clone();
        let mut committed = self.committed.clone();
        let mut turn = 0;
        loop {
            if turn >= FAIR_SHARE {
                turn = 0;
                tokio::task::yield_now().await;
            }
            let (reading, waiting) = match self.next_turn(out) {
                Ok(turn) => turn,
                Err(end) => return end,
            };
            let sending = !out.is_empty();
            tokio::select! {
                batch = rx.recv(), if reading => {
                    let Some(batch) = batch else {
                        return End::Closed;
                    };
                    deadline = tokio::time::Instant::now() + grace;
                    // What was routed to this session before these packets arrived goes out
                    // before the answers to them, as for bytes.
                    let now = Instant::now();
                    self.fill(out, now);
                    for packet in batch {
                        let len = match self.within_limits(&packet) {
                            Ok(len) => len,
                            Err(end) => return end,
                        };
                        turn += len;
                        Stats::add(&self.broker.stats().bytes_received, len as u64);
                        if let Err(end) = self.handle(packet, out, now) {
                            return end;
                        }
                    }
                }
                permit = tx.reserve(), if sending => match permit {
                    Ok(permit) => {
                        Stats::add(&self.broker.stats().bytes_sent, out.len() as u64);
                        permit.send(out.take_packets());
                    }
                    Err(_) => return End::Closed,
                },
                () = slot.notify.notified() => {}
                c = async { committed.as_mut()?.changed().await.ok() }, if waiting => {
                    if c.is_none() {
                        return End::Io("the broker's store stopped".to_owned());
                    }
                }
                () = tokio::time::sleep_until(deadline), if keep_alive > 0 => return End::KeepAlive,
                () = stopped(&mut shutdown) => return End::Shutdown,
            }
        }
    }

    /// The checks decoding applies to bytes, for a typed packet: its encoded size within the
    /// Maximum Packet Size, its User Properties within the limit. Returns the size.
    fn within_limits(&self, packet: &Packet) -> Result<usize, End> {
        let len = packet.encoded_len(self.version).map_err(|e| {
            End::violation(
                ReasonCode::MalformedPacket,
                format!("malformed packet: {e}"),
            )
        })?;
        if len as u64 > u64::from(self.limits.max_packet_size) {
            return Err(End::violation(
                ReasonCode::PacketTooLarge,
                format!(
                    "a packet of {len} bytes is over the maximum packet size {}",
                    self.limits.max_packet_size
                ),
            ));
        }
        let properties = match packet {
            Packet::Publish(p) => p.properties.user_properties.len(),
            Packet::Subscribe(p) => p.properties.user_properties.len(),
            Packet::Unsubscribe(p) => p.properties.user_properties.len(),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.properties.user_properties.len()
            }
            Packet::Disconnect(d) => d.properties.user_properties.len(),
            _ => 0,
        };
        if properties > self.limits.max_user_properties {
            Stats::add(&self.broker.stats().user_properties_refused, 1);
            return Err(End::violation(
                ReasonCode::QuotaExceeded,
                format!(
                    "{properties} User Properties in one packet, more than {} ([limits] max_user_properties)",
                    self.limits.max_user_properties
                ),
            ));
        }
        Ok(len)
    }

    fn handle_buffered(&mut self, inbuf: &mut BytesMut, out: &mut Out) -> Result<(), End> {
        // What was routed to this session before these packets arrived goes out before the
        // answers to them (a PINGRESP is a barrier a client can rely on).
        let now = Instant::now();
        self.fill(out, now);
        loop {
            match kite_mqtt::decode(inbuf, self.version, &self.limits) {
                Ok(Some(p)) => self.handle(p, out, now)?,
                Ok(None) => {
                    make_room(inbuf);
                    return Ok(());
                }
                Err(e @ DecodeError::PacketTooLarge { .. }) => {
                    return Err(End::violation(ReasonCode::PacketTooLarge, e.to_string()));
                }
                Err(e @ DecodeError::TooManyUserProperties { .. }) => {
                    Stats::add(&self.broker.stats().user_properties_refused, 1);
                    return Err(End::violation(
                        ReasonCode::QuotaExceeded,
                        format!("{e} ([limits] max_user_properties)"),
                    ));
                }
                Err(e) => {
                    return Err(End::violation(
                        ReasonCode::MalformedPacket,
                        format!("malformed packet: {e}"),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kite_mqtt::codec::Publish;

    use super::*;

    #[test]
    fn room_is_made_for_the_rest_of_a_packet_and_never_much_more() {
        // Nothing buffered (an idle client): nothing reserved.
        let mut idle = BytesMut::with_capacity(512);
        make_room(&mut idle);
        assert_eq!(idle.capacity(), 512);
        // The start of a 16 KiB PUBLISH whose buffer a queued payload still shares.
        let mut whole = BytesMut::new();
        Packet::Publish(Publish {
            topic: "a/b".into(),
            payload: vec![7u8; 16 * 1024].into(),
            ..Publish::default()
        })
        .encode(Version::V3_1_1, &mut whole)
        .unwrap();
        let mut inbuf = BytesMut::with_capacity(600);
        inbuf.extend_from_slice(&[0u8; 100]);
        inbuf.extend_from_slice(&whole[..200]);
        let earlier_payload = inbuf.split_to(100).freeze();
        make_room(&mut inbuf);
        assert!(inbuf.capacity() >= whole.len(), "{}", inbuf.capacity());
        drop(earlier_payload);
        // A fixed header announcing 256 MB reserves READ_AHEAD at most.
        let mut huge = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0x7f, 0, 1][..]);
        make_room(&mut huge);
        assert!(
            huge.capacity() <= huge.len() + 2 * READ_AHEAD,
            "{}",
            huge.capacity()
        );
        assert!(huge.capacity() >= READ_AHEAD);
    }
}
