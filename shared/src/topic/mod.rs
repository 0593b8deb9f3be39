//! Topic names, topic filters, matching and shared-subscription parsing (MQTT 3.1.1 §4.7,
//! MQTT 5.0 §4.7 and §4.8.2).
//!
//! A *topic name* is what a PUBLISH carries; it never holds wildcards. A *topic filter* is what
//! a SUBSCRIBE carries; it may hold `+` (one level) and `#` (this level and all below, last).

use crate::prelude::*;
use thiserror::Error;

// The broker's trie: hash maps with std's seeded hasher, so only with `std`.
#[cfg(feature = "std")]
mod tree;
#[cfg(feature = "std")]
pub use tree::{DEFAULT_DEPTH, SubscriptionTree};

/// The longest UTF-8 string MQTT can carry: a two-byte length prefix ([MQTT-1.5.3]).
pub const MAX_TOPIC_LEN: usize = 65_535;

const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or topic filter is not valid. Each variant names the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    /// [MQTT-4.7.3-1]: topic names and filters are at least one character long.
    #[error("topic is empty: a topic name or filter must be at least one character [MQTT-4.7.3-1]")]
    Empty,
    /// [MQTT-4.7.3-3]: a topic is a UTF-8 string of at most 65,535 bytes.
    #[error("topic is {len} bytes long; the limit is 65535 bytes of UTF-8 [MQTT-4.7.3-3]")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// [MQTT-4.7.3-2]: topics must not contain U+0000.
    #[error("topic contains the null character U+0000 at byte {at} [MQTT-4.7.3-2]")]
    NullChar {
        /// Byte offset of the null character.
        at: usize,
    },
    /// [MQTT-4.7.1-1]: wildcards are for filters only; a topic name must not contain them.
    #[error(
        "topic name contains the wildcard '{wildcard}' at byte {at}; wildcards are only allowed in subscription filters [MQTT-4.7.1-1]"
    )]
    WildcardInName {
        /// `+` or `#`.
        wildcard: char,
        /// Byte offset of the wildcard.
        at: usize,
    },
    /// [MQTT-4.7.1-2]: `#` must be the last character and occupy a whole level.
    #[error(
        "'#' at byte {at} must be alone in the last level of the filter (e.g. \"a/b/#\") [MQTT-4.7.1-2]"
    )]
    MisplacedHash {
        /// Byte offset of the `#`.
        at: usize,
    },
    /// [MQTT-4.7.1-3]: `+` must occupy a whole level.
    #[error(
        "'+' at byte {at} must occupy a whole level of the filter (e.g. \"a/+/c\") [MQTT-4.7.1-3]"
    )]
    MisplacedPlus {
        /// Byte offset of the `+`.
        at: usize,
    },
    /// [MQTT-4.8.2-1]: a share name is at least one character and has no `/`, `+` or `#`.
    #[error(
        "shared subscription \"{filter}\" needs a share name without '/', '+' or '#': use \"$share/<group>/<filter>\" [MQTT-4.8.2-1]"
    )]
    InvalidShareName {
        /// The whole filter as given.
        filter: String,
    },
    /// [MQTT-4.8.2-2]: a shared subscription names a filter after the share name.
    #[error(
        "shared subscription \"{filter}\" has no topic filter after the share name: use \"$share/<group>/<filter>\" [MQTT-4.8.2-2]"
    )]
    MissingSharedFilter {
        /// The whole filter as given.
        filter: String,
    },
}

#[inline]
fn check_len(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: topic.len() });
    }
    Ok(())
}

/// Checks a topic name as carried by PUBLISH or a Will: non-empty, at most 65,535 bytes, no
/// U+0000, no wildcard. One pass over the bytes, eight at a time.
#[inline]
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    check_len(name)?;
    let b = name.as_bytes();
    let mut base = 0;
    while base < b.len() {
        let mut mask = breakers(word_at(b, base));
        while mask != 0 {
            let at = base + (mask.trailing_zeros() / 8) as usize;
            mask &= mask - 1;
            match b.get(at) {
                Some(0) => return Err(TopicError::NullChar { at }),
                Some(&c @ (b'+' | b'#')) => {
                    return Err(TopicError::WildcardInName {
                        wildcard: char::from(c),
                        at,
                    });
                }
                _ => {}
            }
        }
        base += 8;
    }
    Ok(())
}

/// Whether `b` holds a zero byte (U+0000), eight bytes at a time: for short strings faster
/// than `memchr`, which `<[u8]>::contains` and `str::contains` call.
#[inline]
pub(crate) fn has_nul(b: &[u8]) -> bool {
    let mut base = 0;
    let mut found = 0;
    while base < b.len() {
        found |= zero_bytes(word_at(b, base));
        base += 8;
    }
    found != 0
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Bit 7 of each zero byte of `v` set (exact for the lowest zero byte; a bit above it may be
/// set for a byte that is not zero, so callers look at the byte).
#[inline(always)]
fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & HIGH
}

/// Where `v`'s bytes may be 0, `+` or `#` (bit 7 of each such byte). Topics are scanned eight
/// bytes at a time (SWAR): they are short, and the common answer is "none".
#[inline(always)]
fn breakers(v: u64) -> u64 {
    // '#' (0x23) and '+' (0x2b) differ in bit 3 only, and no other byte becomes 0x2b when
    // that bit is set: one comparison finds both.
    zero_bytes(v) | zero_bytes((v | (ONES * 0x08)) ^ (ONES * u64::from(b'+')))
}

/// The eight bytes at `base` as a little-endian word (byte `base` lowest), padded past the
/// end with a byte that breaks nothing. Built from loads and shifts: a copy into a padded
/// array would be read back wider than it was written (a store-forwarding stall that cost
/// more than the scan).
#[inline(always)]
fn word_at(b: &[u8], base: usize) -> u64 {
    const PAD: u64 = ONES * b'a' as u64;
    let n = b.len() - base;
    if n >= 8 {
        return load8(b, base);
    }
    let bits = 8 * n as u32;
    let bytes = if b.len() >= 8 {
        // The last eight bytes, shifted so that byte `base` comes lowest.
        load8(b, b.len() - 8) >> (64 - bits)
    } else {
        let mut v = 0u64;
        for (k, &c) in b[base..].iter().enumerate() {
            v |= u64::from(c) << (8 * k);
        }
        v
    };
    bytes | PAD.checked_shl(bits).unwrap_or(0)
}

#[inline(always)]
fn load8(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(
        b.get(at..at + 8)
            .and_then(|w| w.try_into().ok())
            .unwrap_or_default(),
    )
}

/// Orders names as people read them — runs of digits by their value, so `dev-2` comes
/// before `dev-10` (and `dev-02` just before `dev-2`); the rest byte by byte. Device ids and
/// topic levels are sorted with it.
pub fn natural_cmp(a: &str, b: &str) -> core::cmp::Ordering {
    use core::cmp::Ordering;
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let n = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let m = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let zeros = |s: &[u8]| s.iter().take_while(|c| **c == b'0').count();
                let (p, q) = (&x[..n], &y[..m]);
                let (p, q) = (&p[zeros(p)..], &q[zeros(q)..]);
                let o = p.len().cmp(&q.len()).then_with(|| p.cmp(q));
                if o != Ordering::Equal {
                    return o;
                }
                x = &x[n..];
                y = &y[m..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// Checks a topic filter as carried by SUBSCRIBE/UNSUBSCRIBE, including the `$share/` form.
#[inline]
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    check_len(filter)?;
    if !filter.starts_with('$') {
        return validate_plain_filter(filter.as_bytes(), 0);
    }
    let inner = match parse_shared(filter)? {
        Some(shared) => shared.filter,
        None => filter,
    };
    let offset = filter.len() - inner.len();
    if let Some(at) = filter.as_bytes()[..offset].iter().position(|&b| b == 0) {
        return Err(TopicError::NullChar { at });
    }
    validate_plain_filter(inner.as_bytes(), offset)
}

/// One pass: `+` alone in its level, `#` alone in the last level, no U+0000. Only the bytes
/// that are one of them are looked at (found eight at a time).
#[inline(always)]
fn validate_plain_filter(f: &[u8], offset: usize) -> Result<(), TopicError> {
    let mut base = 0;
    while base < f.len() {
        let mut mask = breakers(word_at(f, base));
        while mask != 0 {
            let i = base + (mask.trailing_zeros() / 8) as usize;
            mask &= mask - 1;
            let Some(&c) = f.get(i) else { break };
            let alone_before = i == 0 || f.get(i - 1) == Some(&b'/');
            match c {
                0 => return Err(TopicError::NullChar { at: offset + i }),
                b'+' if !alone_before || f.get(i + 1).is_some_and(|&n| n != b'/') => {
                    return Err(TopicError::MisplacedPlus { at: offset + i });
                }
                b'#' if !alone_before || i + 1 != f.len() => {
                    return Err(TopicError::MisplacedHash { at: offset + i });
                }
                _ => {}
            }
        }
        base += 8;
    }
    Ok(())
}

/// The levels of a topic name or filter (`"a//b"` → `"a"`, `""`, `"b"`), found by scanning
/// bytes (faster than `str::split` on short topics).
#[derive(Debug, Clone)]
pub struct Levels<'a> {
    rest: Option<&'a str>,
}

/// Splits a topic into its levels.
pub fn levels(topic: &str) -> Levels<'_> {
    Levels { rest: Some(topic) }
}

impl<'a> Levels<'a> {
    /// What is left: the next level and every level after it, as one string (`None` once every
    /// level was returned).
    pub fn remainder(&self) -> Option<&'a str> {
        self.rest
    }
}

impl<'a> Iterator for Levels<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        // `split_once`, not indexing: `str` indexing carries a panic path whose message
        // formats a `char` with `{:?}`, and those escaping tables weigh on kite.js's wasm.
        match rest.split_once('/') {
            Some((level, after)) => {
                self.rest = Some(after);
                Some(level)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// A `$share/<group>/<filter>` subscription, split into its parts ([MQTT-4.8.2]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The share name (group).
    pub group: &'a str,
    /// The topic filter that messages are matched against.
    pub filter: &'a str,
}

/// Splits a `$share/<group>/<filter>` filter. `Ok(None)` when the filter is not a shared
/// subscription; an error when it starts with `$share/` but is malformed.
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        return Ok(None);
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(
            if rest.is_empty() || rest.bytes().any(|b| b == b'+' || b == b'#') {
                TopicError::InvalidShareName {
                    filter: filter.to_owned(),
                }
            } else {
                TopicError::MissingSharedFilter {
                    filter: filter.to_owned(),
                }
            },
        );
    };
    if group.is_empty() || group.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::InvalidShareName {
            filter: filter.to_owned(),
        });
    }
    if inner.is_empty() {
        return Err(TopicError::MissingSharedFilter {
            filter: filter.to_owned(),
        });
    }
    Ok(Some(SharedFilter {
        group,
        filter: inner,
    }))
}

/// Whether a topic name matches a (valid, non-shared) topic filter.
///
/// Filters starting with a wildcard do not match names starting with `$` ([MQTT-4.7.2-1]).
/// `sport/#` also matches `sport` itself ([MQTT-4.7.1-2] non-normative example).
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    matches_below_first(filter, name)
}

/// Whether the levels of a topic name match those of a filter, without the `$` rule of the
/// first level: for the lower levels of a name and a filter whose upper levels already matched.
/// Iterative: the cost is linear in the levels, whatever their number.
pub fn matches_below_first(filter: &str, name: &str) -> bool {
    let mut names = levels(name);
    let mut filters = levels(filter);
    loop {
        match (filters.next(), names.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(n)) if f == n => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn names_sort_as_people_read_them() {
        let mut v = vec!["dev-10", "dev-2", "dev-1", "a", "dev-02", "dev-b", "dev-2x"];
        v.sort_by(|a, b| super::natural_cmp(a, b));
        assert_eq!(
            v,
            ["a", "dev-1", "dev-02", "dev-2", "dev-2x", "dev-10", "dev-b"]
        );
    }

    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn nul_found_at_every_position_of_every_length() {
        for len in 0..40 {
            let clean = vec![b'x'; len];
            assert!(!super::has_nul(&clean), "{len}");
            for at in 0..len {
                let mut b = clean.clone();
                b[at] = 0;
                assert!(super::has_nul(&b), "{len} {at}");
                // A byte just above zero after a zero must not hide it.
                if at + 1 < len {
                    b[at + 1] = 1;
                    assert!(super::has_nul(&b), "{len} {at} +1");
                }
            }
            let mut high = vec![0x80u8; len];
            assert!(!super::has_nul(&high));
            if len > 0 {
                high[len - 1] = 0;
                assert!(super::has_nul(&high));
            }
        }
    }

    #[test]
    fn names_valid() {
        for name in [
            "a",
            "/",
            "a/b/c",
            "$SYS/broker/uptime",
            "sport/tennis/player1",
            " ",
            "é/ü",
        ] {
            assert_eq!(validate_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn name_rules() {
        // [MQTT-4.7.3-1]
        assert_eq!(validate_name(""), Err(TopicError::Empty));
        // [MQTT-4.7.3-2]
        assert_eq!(validate_name("a\0b"), Err(TopicError::NullChar { at: 1 }));
        // [MQTT-4.7.3-3]
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(
            validate_name(&long),
            Err(TopicError::TooLong {
                len: MAX_TOPIC_LEN + 1
            })
        );
        assert_eq!(validate_name(&long[1..]), Ok(()));
        // [MQTT-4.7.1-1]
        assert_eq!(
            validate_name("a/+/c"),
            Err(TopicError::WildcardInName {
                wildcard: '+',
                at: 2
            })
        );
        assert_eq!(
            validate_name("a/b#"),
            Err(TopicError::WildcardInName {
                wildcard: '#',
                at: 3
            })
        );
    }

    #[test]
    fn filters_valid() {
        for filter in [
            "#",
            "+",
            "+/+",
            "/+",
            "a/#",
            "a/+/c/#",
            "sport/tennis/+",
            "$SYS/#",
            "$share/g/a/#",
            "$share/g/#",
            "$shareX/#",
        ] {
            assert_eq!(validate_filter(filter), Ok(()), "{filter:?}");
        }
    }

    #[test]
    fn filter_rules() {
        assert_eq!(validate_filter(""), Err(TopicError::Empty));
        // [MQTT-4.7.1-2]
        assert_eq!(
            validate_filter("a/#/b"),
            Err(TopicError::MisplacedHash { at: 2 })
        );
        assert_eq!(
            validate_filter("a#"),
            Err(TopicError::MisplacedHash { at: 1 })
        );
        assert_eq!(
            validate_filter("a/b#"),
            Err(TopicError::MisplacedHash { at: 3 })
        );
        // [MQTT-4.7.1-3]
        assert_eq!(
            validate_filter("a+"),
            Err(TopicError::MisplacedPlus { at: 1 })
        );
        assert_eq!(
            validate_filter("a/+b/c"),
            Err(TopicError::MisplacedPlus { at: 2 })
        );
        // Offsets count from the start of the whole filter, share prefix included.
        assert_eq!(
            validate_filter("$share/g/a+"),
            Err(TopicError::MisplacedPlus { at: 10 })
        );
    }

    #[test]
    fn shared_subscriptions() {
        assert_eq!(
            parse_shared("$share/group/a/+/c"),
            Ok(Some(SharedFilter {
                group: "group",
                filter: "a/+/c"
            }))
        );
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert_eq!(parse_shared("$share"), Ok(None));
        // [MQTT-4.8.2-1]
        for bad in ["$share//a", "$share/g+/a", "$share/#", "$share/"] {
            assert!(
                matches!(parse_shared(bad), Err(TopicError::InvalidShareName { .. })),
                "{bad:?}"
            );
        }
        // [MQTT-4.8.2-2]
        for bad in ["$share/g", "$share/g/"] {
            assert!(
                matches!(
                    parse_shared(bad),
                    Err(TopicError::MissingSharedFilter { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn matching_spec_examples() {
        // Non-normative examples of MQTT 3.1.1 §4.7.1.2 and §4.7.1.3.
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "a/b/c", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("+/b", "a/b", true),
        ];
        for (filter, name, expected) in cases {
            assert_eq!(matches(filter, name), expected, "{filter:?} vs {name:?}");
        }
    }

    #[test]
    fn levels_split_like_str_split() {
        for t in ["a", "", "/", "a/b", "/a/", "a//b", "$SYS/x/"] {
            assert_eq!(
                levels(t).collect::<Vec<_>>(),
                t.split('/').collect::<Vec<_>>(),
                "{t:?}"
            );
        }
    }

    #[test]
    fn dollar_topics_not_matched_by_leading_wildcards() {
        // [MQTT-4.7.2-1]
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/broker/uptime"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }
}
