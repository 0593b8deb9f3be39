//! [`MqttStr`]: the string type of topic names and topic filters.

use crate::prelude::*;
use core::borrow::Borrow;
use core::fmt;
use core::hash::{Hash, Hasher};
use core::ops::Deref;

use arrayvec::ArrayString;
use bytes::Bytes;
use bytestring::ByteString;

/// The longest string kept inline. An [`MqttStr`] is then 40 bytes on 64-bit targets (the
/// inline length is a `u32`, plus the tag), and most real topics fit
/// (`zigbee2mqtt/0x00158d0001234567` is 30 bytes, `homie/boiler-7/temperature/set` 30).
pub const INLINE_LEN: usize = 32;

/// A UTF-8 string as MQTT carries topic names and topic filters: up to [`INLINE_LEN`] bytes
/// it is kept inline; a longer one is a zero-copy slice of the buffer it was read from (or a
/// shared copy). It reads as a `&str` (`Deref`), compares, orders and hashes like one.
///
/// Why not a slice always (`ByteString`): every slice of a packet's buffer is a reference
/// count to raise and to drop — two atomic operations, for each topic read and each copy a
/// broker hands to a subscriber. Copying 32 bytes costs less than either (see
/// shared/BENCHMARKS.md).
#[derive(Clone)]
pub struct MqttStr(Repr);

#[derive(Clone)]
enum Repr {
    Inline(ArrayString<INLINE_LEN>),
    Shared(ByteString),
}

impl MqttStr {
    /// The empty string.
    pub const fn new() -> Self {
        Self(Repr::Inline(ArrayString::new_const()))
    }

    /// The string as a `&str`.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(s) => s.as_str(),
            Repr::Shared(s) => s,
        }
    }

    /// Whether the string is kept inline (short) rather than shared.
    #[inline]
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline(_))
    }

    /// `s` inline if it fits.
    #[inline]
    pub(crate) fn inline(s: &str) -> Option<Self> {
        ArrayString::from(s).ok().map(|s| Self(Repr::Inline(s)))
    }

    /// The string read from `bytes`: copied inline when short, else the same bytes (no copy).
    /// `None` if the bytes are not UTF-8.
    #[inline]
    pub(crate) fn from_utf8_bytes(bytes: Bytes) -> Option<Self> {
        if bytes.len() <= INLINE_LEN {
            Self::inline(super::wire::utf8(&bytes)?)
        } else {
            ByteString::try_from(bytes)
                .ok()
                .map(|s| Self(Repr::Shared(s)))
        }
    }
}

impl Default for MqttStr {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for MqttStr {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for MqttStr {
    #[inline]
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for MqttStr {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Borrow<str> for MqttStr {
    #[inline]
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for MqttStr {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for MqttStr {}

impl PartialOrd for MqttStr {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for MqttStr {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for MqttStr {
    /// Hashes as the `str` does, so that `Borrow<str>` lookups in hash maps work.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for MqttStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MqttStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for MqttStr {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<MqttStr> for str {
    fn eq(&self, other: &MqttStr) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<MqttStr> for &str {
    fn eq(&self, other: &MqttStr) -> bool {
        *self == other.as_str()
    }
}

impl fmt::Debug for MqttStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MqttStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for MqttStr {
    #[inline]
    fn from(s: &str) -> Self {
        Self::inline(s).unwrap_or_else(|| Self(Repr::Shared(ByteString::from(s))))
    }
}

impl From<&String> for MqttStr {
    fn from(s: &String) -> Self {
        Self::from(s.as_str())
    }
}

impl From<String> for MqttStr {
    fn from(s: String) -> Self {
        Self::inline(&s).unwrap_or_else(|| Self(Repr::Shared(ByteString::from(s))))
    }
}

impl From<ByteString> for MqttStr {
    fn from(s: ByteString) -> Self {
        Self::inline(&s).unwrap_or(Self(Repr::Shared(s)))
    }
}

impl From<&MqttStr> for MqttStr {
    fn from(s: &MqttStr) -> Self {
        s.clone()
    }
}

impl From<MqttStr> for String {
    fn from(s: MqttStr) -> Self {
        s.as_str().to_owned()
    }
}

impl From<MqttStr> for ByteString {
    fn from(s: MqttStr) -> Self {
        match s.0 {
            Repr::Inline(s) => ByteString::from(s.as_str()),
            Repr::Shared(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn short_strings_are_inline_and_long_ones_share_their_bytes() {
        let short = "a".repeat(INLINE_LEN);
        let long = "b".repeat(INLINE_LEN + 1);
        assert!(MqttStr::from(short.as_str()).is_inline());
        assert!(!MqttStr::from(long.as_str()).is_inline());
        let read = MqttStr::from_utf8_bytes(Bytes::from(long.clone())).unwrap();
        assert!(!read.is_inline());
        assert_eq!(read, long);
        assert_eq!(
            MqttStr::from_utf8_bytes(Bytes::from(short.clone())).unwrap(),
            short
        );
        // Not UTF-8, short and long.
        assert!(MqttStr::from_utf8_bytes(Bytes::from_static(b"\xff")).is_none());
        assert!(MqttStr::from_utf8_bytes(Bytes::from(vec![0xff; 40])).is_none());
        // A multi-byte character that would not fit whole stays whole.
        let s = format!("{}é", "x".repeat(INLINE_LEN - 1));
        assert_eq!(MqttStr::from(s.as_str()).as_str(), s);
    }

    #[test]
    fn compares_and_hashes_as_str() {
        use std::collections::HashMap;
        let long = "c".repeat(50);
        let mut map = HashMap::new();
        map.insert(MqttStr::from("a/b"), 1);
        map.insert(MqttStr::from(long.as_str()), 2);
        assert_eq!(map.get("a/b"), Some(&1));
        assert_eq!(map.get(long.as_str()), Some(&2));
        assert_eq!(
            MqttStr::from(long.clone()),
            MqttStr::from(ByteString::from(long))
        );
        let (a, b) = (MqttStr::from("a"), MqttStr::from("b"));
        assert!(a < b);
        assert_eq!(MqttStr::new(), "");
        assert_eq!(format!("{:?}", MqttStr::from("x")), "\"x\"");
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn stays_small() {
        assert_eq!(size_of::<MqttStr>(), 40);
    }
}
