//! MQTT's data representations (MQTT 5.0 §1.5, 3.1.1 §1.5): big-endian integers, variable
//! byte integers, length-prefixed UTF-8 strings and binary data. Reading is zero-copy.

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use super::mqtt_str::{INLINE_LEN, MqttStr};
use super::{DecodeError, EncodeError};

/// The largest value a variable byte integer can hold ([MQTT-1.5.5]).
pub const MAX_VAR_INT: u32 = 268_435_455;

/// The longest string or binary value: a two-byte length prefix.
pub const MAX_STR_LEN: usize = 65_535;

/// Result of reading a variable byte integer from the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarInt {
    /// The value and how many bytes it took.
    Value(u32, usize),
    /// The buffer ends before the integer does.
    Incomplete,
}

/// Reads a variable byte integer: at most 4 bytes, minimal encoding ([MQTT-1.5.5-1]).
#[inline]
pub fn read_var_int(buf: &[u8]) -> Result<VarInt, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // A final byte of 0 after a continuation adds nothing: not minimal.
            if i > 0 && byte == 0 {
                return Err(DecodeError::NonMinimalVarInt);
            }
            return Ok(VarInt::Value(value, i + 1));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::VarIntTooLong)
    } else {
        Ok(VarInt::Incomplete)
    }
}

/// How many bytes `value` takes as a variable byte integer.
#[inline]
pub fn var_int_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

// BytesMut's `put_slice` (behind `put_u8`, `put_u16`, ...) is not `#[inline]`: a call and a
// memmove for every byte written. `extend_from_slice` is inline.

/// Writes one byte.
#[inline]
pub fn put_u8(buf: &mut BytesMut, v: u8) {
    buf.extend_from_slice(&[v]);
}

/// Writes a big-endian two-byte integer.
#[inline]
pub fn put_u16(buf: &mut BytesMut, v: u16) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian four-byte integer.
#[inline]
pub fn put_u32(buf: &mut BytesMut, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Writes a variable byte integer; the caller has checked `value <= MAX_VAR_INT`.
#[inline]
pub fn put_var_int(buf: &mut BytesMut, mut value: u32) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        put_u8(buf, byte);
        if value == 0 {
            break;
        }
    }
}

/// `bytes` as a `&str` if they are UTF-8. ASCII — nearly every topic — is checked a word at a
/// time (`ascii` uses `<[u8]>::is_ascii`); `str::from_utf8` goes byte by byte on short
/// strings and costs as much as the rest of a small PUBLISH's decoding.
#[inline]
pub fn utf8(bytes: &[u8]) -> Option<&str> {
    match ascii::AsciiStr::from_ascii(bytes) {
        Ok(s) => Some(s.as_str()),
        Err(_) => core::str::from_utf8(bytes).ok(),
    }
}

/// Checks that a string can be encoded: at most 65,535 bytes, no U+0000.
#[inline]
pub fn check_str(s: &str, what: &'static str) -> Result<usize, EncodeError> {
    if s.len() > MAX_STR_LEN {
        return Err(EncodeError::StringTooLong { what, len: s.len() });
    }
    if crate::topic::has_nul(s.as_bytes()) {
        return Err(EncodeError::NullCharacter { what });
    }
    Ok(2 + s.len())
}

/// Checks that binary data can be encoded: at most 65,535 bytes.
#[inline]
pub fn check_bin(b: &[u8], what: &'static str) -> Result<usize, EncodeError> {
    if b.len() > MAX_STR_LEN {
        return Err(EncodeError::StringTooLong { what, len: b.len() });
    }
    Ok(2 + b.len())
}

/// Writes a length-prefixed string or binary value; the caller checked the length.
#[inline]
pub fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    put_u16(buf, b.len() as u16);
    buf.extend_from_slice(b);
}

/// A cursor over one packet's body. Every read names what it reads, for the error.
///
/// The reader keeps the whole body and a position, so that after a failed parse the body is
/// still whole ([`Reader::into_body`]) and nothing is cloned to make that possible.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
    /// Reads stop here: the body's end, or a block's ([`Reader::block`]).
    end: usize,
    /// User properties this packet may still carry, and the limit (for the error).
    user_properties_left: usize,
    max_user_properties: usize,
}

impl Reader {
    /// A reader over these bytes.
    #[inline]
    pub fn new(buf: Bytes) -> Self {
        let end = buf.len();
        Self {
            buf,
            pos: 0,
            end,
            user_properties_left: usize::MAX,
            max_user_properties: usize::MAX,
        }
    }

    /// At most `max` User Properties in what this reader reads ([`Reader::user_property`]).
    pub fn limit_user_properties(&mut self, max: usize) {
        self.user_properties_left = max;
        self.max_user_properties = max;
    }

    /// Counts one User Property against the limit.
    #[inline]
    pub fn user_property(&mut self) -> Result<(), super::DecodeError> {
        match self.user_properties_left.checked_sub(1) {
            Some(left) => {
                self.user_properties_left = left;
                Ok(())
            }
            None => Err(super::DecodeError::TooManyUserProperties {
                max: self.max_user_properties,
            }),
        }
    }

    /// The whole body, read or not (empty after [`Reader::rest`]).
    #[inline]
    pub fn into_body(self) -> Bytes {
        self.buf
    }

    /// Bytes not yet read.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// The bytes not yet read, without reading them.
    #[inline]
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// How many length-prefixed strings, each followed by `gap` bytes, the unread bytes seem to
    /// hold (the count stops where one would not fit): to size a list before reading it.
    #[inline]
    pub fn count_strings(&self, gap: usize) -> usize {
        let b = self.unread();
        let (mut at, mut n) = (0, 0);
        while let Some(&[h, l]) = b.get(at..at + 2) {
            at += 2 + usize::from(u16::from_be_bytes([h, l])) + gap;
            if at > b.len() {
                break;
            }
            n += 1;
        }
        n
    }

    /// Whether everything was read.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    #[inline]
    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() < n {
            Err(DecodeError::Truncated { what })
        } else {
            Ok(())
        }
    }

    /// One byte.
    #[inline]
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        let v = self.buf[self.pos];
        self.pos += 1;
        Ok(v)
    }

    /// A two-byte integer.
    #[inline]
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.need(2, what)?;
        let v = u16::from_be_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        Ok(v)
    }

    /// A four-byte integer.
    #[inline]
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        let b = &self.buf[self.pos..self.pos + 4];
        let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        self.pos += 4;
        Ok(v)
    }

    /// A variable byte integer.
    #[inline]
    pub fn var_int(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        match read_var_int(&self.buf[self.pos..self.end])? {
            VarInt::Value(v, n) => {
                self.pos += n;
                Ok(v)
            }
            VarInt::Incomplete => Err(DecodeError::Truncated { what }),
        }
    }

    /// The next `n` bytes, zero-copy.
    #[inline]
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, what)?;
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// Everything left, zero-copy, without touching the reference count. Must be the last
    /// read: afterwards the reader is empty and [`Reader::into_body`] returns nothing.
    #[inline]
    pub fn rest(&mut self) -> Bytes {
        let mut b = core::mem::take(&mut self.buf);
        b.truncate(self.end);
        self.end = 0;
        b.advance(self.pos);
        self.pos = 0;
        b
    }

    /// Reads the next `len` bytes with `read`, which cannot read past them (a property
    /// block): no slice of the buffer is taken for it.
    #[inline]
    pub fn block<T>(
        &mut self,
        len: usize,
        what: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        self.need(len, what)?;
        let end = self.end;
        self.end = self.pos + len;
        let result = read(self);
        self.end = end;
        result
    }

    /// Binary data with a two-byte length.
    #[inline]
    pub fn binary(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }

    /// A well-formed UTF-8 string with a two-byte length, U+0000 not checked: for topic names,
    /// whose validation finds U+0000 in the same pass as the wildcards.
    #[inline]
    pub fn utf8(&mut self, what: &'static str) -> Result<ByteString, DecodeError> {
        let raw = self.binary(what)?;
        ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8 { what })
    }

    /// A well-formed UTF-8 string with a two-byte length as an [`MqttStr`], U+0000 not
    /// checked: for topic names and filters. A short one is copied out (no reference count
    /// to raise), a long one is a slice.
    #[inline]
    pub fn mqtt_str(&mut self, what: &'static str) -> Result<MqttStr, DecodeError> {
        let len = usize::from(self.u16(what)?);
        self.need(len, what)?;
        let start = self.pos;
        let s = if len <= INLINE_LEN {
            utf8(&self.buf[start..start + len]).and_then(MqttStr::inline)
        } else {
            MqttStr::from_utf8_bytes(self.buf.slice(start..start + len))
        };
        let s = s.ok_or(DecodeError::InvalidUtf8 { what })?;
        self.pos += len;
        Ok(s)
    }

    /// Like [`Reader::mqtt_str`], U+0000 refused ([MQTT-1.5.4-2]; checked first, as
    /// [`Reader::string`] does).
    #[inline]
    pub fn mqtt_string(&mut self, what: &'static str) -> Result<MqttStr, DecodeError> {
        if self.remaining() >= 2 {
            let len = usize::from(u16::from_be_bytes([
                self.buf[self.pos],
                self.buf[self.pos + 1],
            ]));
            let start = self.pos + 2;
            if let Some(raw) = self.buf[..self.end].get(start..start + len)
                && crate::topic::has_nul(raw)
            {
                return Err(DecodeError::NullCharacter { what });
            }
        }
        self.mqtt_str(what)
    }

    /// A UTF-8 string with a two-byte length: well-formed, no U+0000 ([MQTT-1.5.4-1],
    /// [MQTT-1.5.4-2]).
    #[inline]
    pub fn string(&mut self, what: &'static str) -> Result<ByteString, DecodeError> {
        let raw = self.binary(what)?;
        if crate::topic::has_nul(&raw) {
            return Err(DecodeError::NullCharacter { what });
        }
        ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8 { what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn var_int_boundaries() {
        for (value, bytes) in [
            (0u32, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xff, 0x7f]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xff, 0xff, 0x7f]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (MAX_VAR_INT, &[0xff, 0xff, 0xff, 0x7f]),
        ] {
            let mut buf = BytesMut::new();
            put_var_int(&mut buf, value);
            assert_eq!(&buf[..], bytes, "{value}");
            assert_eq!(var_int_len(value), bytes.len());
            assert_eq!(read_var_int(bytes), Ok(VarInt::Value(value, bytes.len())));
        }
    }

    #[test]
    fn var_int_rules() {
        // [MQTT-1.5.5-1]: at most four bytes.
        assert_eq!(
            read_var_int(&[0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            read_var_int(&[0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::VarIntTooLong)
        );
        // [MQTT-1.5.5-1]: the minimum number of bytes.
        assert_eq!(
            read_var_int(&[0x80, 0x00]),
            Err(DecodeError::NonMinimalVarInt)
        );
        assert_eq!(
            read_var_int(&[0xff, 0x80, 0x00]),
            Err(DecodeError::NonMinimalVarInt)
        );
        assert_eq!(read_var_int(&[0x80]), Ok(VarInt::Incomplete));
        assert_eq!(read_var_int(&[]), Ok(VarInt::Incomplete));
    }

    #[test]
    fn strings() {
        let mut r = Reader::new(Bytes::from_static(
            b"\x00\x02hi\x00\x01\xff\x00\x01\x00\x00\x05ab",
        ));
        assert_eq!(&r.string("a").unwrap()[..], "hi");
        // [MQTT-1.5.4-1]
        assert_eq!(r.string("b"), Err(DecodeError::InvalidUtf8 { what: "b" }));
        // [MQTT-1.5.4-2]
        assert_eq!(r.string("c"), Err(DecodeError::NullCharacter { what: "c" }));
        assert_eq!(r.string("d"), Err(DecodeError::Truncated { what: "d" }));
        // The same rules for MqttStr, short (inline) and long (shared).
        let long = "x".repeat(60);
        let mut bytes = b"\x00\x02hi\x00\x01\xff\x00\x02\xff\x00".to_vec();
        bytes.extend_from_slice(&[0, 60]);
        bytes.extend_from_slice(long.as_bytes());
        bytes.extend_from_slice(b"\x00\x05ab");
        let mut r = Reader::new(Bytes::from(bytes));
        assert_eq!(r.mqtt_string("a").unwrap(), "hi");
        assert_eq!(
            r.mqtt_string("b"),
            Err(DecodeError::InvalidUtf8 { what: "b" })
        );
        r.pos += 1;
        assert_eq!(
            r.mqtt_string("c"),
            Err(DecodeError::NullCharacter { what: "c" })
        );
        r.pos += 4;
        let s = r.mqtt_string("e").unwrap();
        assert!(!s.is_inline());
        assert_eq!(s, long);
        assert_eq!(r.mqtt_str("d"), Err(DecodeError::Truncated { what: "d" }));
        assert_eq!(check_str(&"x".repeat(65_535), "s"), Ok(65_537));
        assert_eq!(
            check_str(&"x".repeat(65_536), "s"),
            Err(EncodeError::StringTooLong {
                what: "s",
                len: 65_536
            })
        );
        assert_eq!(
            check_str("a\0", "s"),
            Err(EncodeError::NullCharacter { what: "s" })
        );
    }
}
