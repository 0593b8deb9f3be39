//! How recorded points are laid out: a *chunk* holds consecutive points of one stream (a
//! topic's messages, or one numeric field of a topic) as a header and a body of entries, each
//! entry's time a varint delta from the one before.
//!
//! ```text
//! chunk   = stream u32 | first_t u64 | last_t u64 | count u32 | entries        (LE)
//! message = dt varint | flags u8 (qos bits 0-1, retain bit 2, properties bit 3)
//!           | payload length varint | payload | [properties as MQTT 5 writes them]
//! number  = dt varint | f64 LE
//! ```
//!
//! An 8-byte numeric payload at 1 Hz costs 2 + 1 + 1 + 8 = 12 bytes as a message and
//! 2 + 8 = 10 bytes as a number.

use bytes::{BufMut, Bytes, BytesMut};
use kite_mqtt::QoS;
use kite_mqtt::codec::{PropertyContext, Props};

use super::{Bucket, Stored};

/// The chunk header's size.
pub(crate) const HEADER: usize = 24;

/// A chunk's body closes once it reaches this size (a redb leaf page of 4 KiB then holds it
/// with its key and redb's own bookkeeping).
pub(crate) const TARGET: usize = 3_600;

pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads a varint at `*at`; `None` at a malformed or cut one.
pub(crate) fn get_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A message's entry without its time (the tail keeps it so; a chunk puts the delta first).
pub(crate) fn message_body(s: &Stored, out: &mut Vec<u8>) {
    let props = !s.properties.is_empty();
    out.push(s.qos as u8 | u8::from(s.retain) << 2 | u8::from(props) << 3);
    put_varint(out, s.payload.len() as u64);
    out.extend_from_slice(&s.payload);
    if props {
        let mut buf = BytesMut::new();
        // Properties that arrived on a PUBLISH encode for a PUBLISH; if not, none are kept.
        if s.properties
            .encode_to(
                PropertyContext::Packet(kite_mqtt::codec::PacketType::Publish),
                &mut buf,
            )
            .is_ok()
        {
            out.extend_from_slice(&buf);
        } else {
            out.put_u8(0);
        }
    }
}

/// A number's entry without its time.
pub(crate) fn number_body(v: f64) -> [u8; 8] {
    v.to_le_bytes()
}

/// An open or closed chunk's header values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub stream: u32,
    pub first: u64,
    pub last: u64,
    pub count: u32,
}

impl Header {
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream.to_le_bytes());
        out.extend_from_slice(&self.first.to_le_bytes());
        out.extend_from_slice(&self.last.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
    }

    pub(crate) fn read(b: &[u8]) -> Option<Self> {
        let u64_at = |i: usize| Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
        Some(Self {
            stream: u32::from_le_bytes(b.get(0..4)?.try_into().ok()?),
            first: u64_at(4)?,
            last: u64_at(12)?,
            count: u32::from_le_bytes(b.get(20..24)?.try_into().ok()?),
        })
    }
}

/// Entries in a chunk body, with their absolute times.
pub(crate) struct Entries<'a> {
    body: &'a [u8],
    at: usize,
    t: u64,
}

impl<'a> Entries<'a> {
    pub(crate) fn new(body: &'a [u8], first: u64) -> Self {
        Self {
            body,
            at: 0,
            t: first,
        }
    }

    /// The next number's time and value; `None` at the end (or at a malformed entry, which
    /// [`Entries::broken`] then reports).
    pub(crate) fn next_number(&mut self) -> Option<(u64, f64)> {
        if self.at >= self.body.len() {
            return None;
        }
        // `self.at` moves only past a whole entry, so that a cut one reads as `broken`.
        let mut at = self.at;
        let dt = get_varint(self.body, &mut at)?;
        let v = f64::from_le_bytes(self.body.get(at..at + 8)?.try_into().ok()?);
        self.at = at + 8;
        self.t = self.t.saturating_add(dt);
        Some((self.t, v))
    }

    /// The next message; `None` at the end (or at a malformed entry).
    pub(crate) fn next_message(&mut self, chunk: &Bytes) -> Option<Stored> {
        if self.at >= self.body.len() {
            return None;
        }
        let mut at = self.at;
        let dt = get_varint(self.body, &mut at)?;
        let flags = *self.body.get(at)?;
        let qos = QoS::from_u8(flags & 3)?;
        at += 1;
        let len = usize::try_from(get_varint(self.body, &mut at)?).ok()?;
        let end = at.checked_add(len)?;
        self.body.get(at..end)?;
        // The body is a suffix of `chunk`: payloads are slices of it, not copies.
        let offset = chunk.len() - self.body.len();
        let payload = chunk.slice(offset + at..offset + end);
        at = end;
        let properties = if flags & 8 != 0 {
            let start = at;
            let plen = usize::try_from(get_varint(self.body, &mut at)?).ok()?;
            let pend = at.checked_add(plen)?;
            self.body.get(at..pend)?;
            at = pend;
            Props::decode_from(
                chunk.slice(offset + start..offset + pend),
                PropertyContext::Packet(kite_mqtt::codec::PacketType::Publish),
            )
            .ok()?
        } else {
            Props::default()
        };
        self.at = at;
        self.t = self.t.saturating_add(dt);
        Some(Stored {
            t: self.t,
            payload,
            qos,
            retain: flags & 4 != 0,
            properties,
        })
    }

    /// Whether reading stopped before the end of the body (a malformed entry).
    pub(crate) fn broken(&self) -> bool {
        self.at < self.body.len()
    }
}

/// M4 downsampling: points in time order folded into at most `n` equal-width buckets over
/// `[from, to]` — each bucket's first, last, min and max (a line drawn through them at `n`
/// pixels is the line of every point), and its count. Empty buckets are left out.
#[derive(Debug)]
pub(crate) struct M4 {
    from: u64,
    width: u64,
    buckets: Vec<Bucket>,
}

impl M4 {
    /// `n` ≥ 1 buckets over `from..=to` (`from` ≤ `to`).
    pub(crate) fn new(from: u64, to: u64, n: usize) -> Self {
        let span = u128::from(to - from) + 1;
        let n = (n.max(1) as u128).min(span);
        // Ceiling, so that n buckets cover the span.
        let width = u64::try_from(span.div_ceil(n)).unwrap_or(u64::MAX);
        Self {
            from,
            width,
            buckets: Vec::new(),
        }
    }

    /// Adds a point; points come in time order, within the range.
    pub(crate) fn add(&mut self, t: u64, v: f64) {
        let start = self.from + (t - self.from) / self.width * self.width;
        match self.buckets.last_mut() {
            Some(b) if b.t == start => {
                b.last = v;
                b.min = b.min.min(v);
                b.max = b.max.max(v);
                b.count += 1;
            }
            _ => self.buckets.push(Bucket {
                t: start,
                first: v,
                last: v,
                min: v,
                max: v,
                count: 1,
            }),
        }
    }

    pub(crate) fn finish(self) -> Vec<Bucket> {
        self.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_refuse_garbage() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut at = 0;
            assert_eq!(get_varint(&b, &mut at), Some(v));
            assert_eq!(at, b.len());
        }
        let mut at = 0;
        assert_eq!(get_varint(&[0x80, 0x80], &mut at), None);
        let mut at = 0;
        assert_eq!(get_varint(&[0xff; 11], &mut at), None);
    }

    #[test]
    fn a_cut_chunk_reads_as_broken_not_as_a_panic() {
        let mut body = Vec::new();
        put_varint(&mut body, 5);
        message_body(
            &Stored {
                t: 0,
                payload: Bytes::from_static(b"hello"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Props::default(),
            },
            &mut body,
        );
        for cut in 0..body.len() {
            let chunk = Bytes::copy_from_slice(&body[..cut]);
            let mut e = Entries::new(&chunk, 0);
            assert!(e.next_message(&chunk).is_none());
            assert_eq!(e.broken(), cut > 0, "cut at {cut}");
        }
        let chunk = Bytes::from(body);
        let mut e = Entries::new(&chunk, 10);
        let m = e.next_message(&chunk).unwrap();
        assert_eq!((m.t, &m.payload[..], m.retain), (15, &b"hello"[..], true));
    }
}
