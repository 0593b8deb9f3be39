//! The subscription trie agrees with the plain matcher on arbitrary filters and names.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kite_mqtt::topic::{SubscriptionTree, matches, parse_shared, validate_filter};
use proptest::collection::vec;
use proptest::prelude::*;

/// Levels from a small alphabet so that filters and names often meet, `$` topics included.
fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just(String::new()),
        Just("$SYS".to_owned()),
        "[a-c]{1,2}"
    ]
}

fn name() -> impl Strategy<Value = String> {
    vec(level(), 1..5).prop_map(|l| l.join("/"))
}

fn filter() -> impl Strategy<Value = String> {
    let lvl = prop_oneof![3 => level(), 2 => Just("+".to_owned())];
    (vec(lvl, 0..4), any::<bool>(), any::<bool>()).prop_map(|(levels, hash, shared)| {
        let mut f = levels.join("/");
        if hash || levels.is_empty() {
            f = if levels.is_empty() {
                "#".to_owned()
            } else {
                format!("{f}/#")
            };
        }
        if f.is_empty() {
            f.push('+');
        }
        if shared { format!("$share/g/{f}") } else { f }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn tree_agrees_with_the_plain_matcher(depth in prop_oneof![Just(2_usize), Just(16)], filters in vec(filter(), 1..40), names in vec(name(), 1..20), removals in vec(any::<prop::sample::Index>(), 0..10)) {
        // Depth 2: filters and names of up to 5 levels meet the tails kept below the trie.
        let mut tree = SubscriptionTree::with_depth(depth);
        let mut live: Vec<(usize, String)> = Vec::new();
        for (i, f) in filters.iter().enumerate() {
            prop_assert!(validate_filter(f).is_ok(), "{f}");
            tree.insert(f, i, ()).unwrap();
            live.push((i, f.clone()));
        }
        for r in removals {
            if live.is_empty() { break; }
            let (i, f) = live.remove(r.index(live.len()));
            prop_assert_eq!(tree.remove(&f, &i), Some(()));
        }
        prop_assert_eq!(tree.len(), live.len());
        for n in &names {
            let mut got: Vec<usize> = tree.matches(n).into_iter().map(|(k, ())| *k).collect();
            got.sort_unstable();
            let want: Vec<usize> = live
                .iter()
                .filter(|(_, f)| {
                    let inner = parse_shared(f).unwrap().map_or(f.as_str(), |s| s.filter);
                    matches(inner, n)
                })
                .map(|(i, _)| *i)
                .collect();
            prop_assert_eq!(got, want, "name {:?}", n);
        }
    }
}

/// The byte-by-byte rules, as the specification states them, to check the validators (which
/// scan eight bytes at a time) against.
mod reference {
    use kite_mqtt::topic::TopicError;

    pub fn name(n: &str) -> Result<(), TopicError> {
        if n.is_empty() {
            return Err(TopicError::Empty);
        }
        for (at, b) in n.bytes().enumerate() {
            match b {
                0 => return Err(TopicError::NullChar { at }),
                b'+' | b'#' => {
                    return Err(TopicError::WildcardInName {
                        wildcard: char::from(b),
                        at,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A filter without the `$share/` prefix.
    pub fn plain_filter(f: &str) -> Result<(), TopicError> {
        if f.is_empty() {
            return Err(TopicError::Empty);
        }
        let b = f.as_bytes();
        let mut level_start = 0;
        for (i, &c) in b.iter().enumerate() {
            match c {
                0 => return Err(TopicError::NullChar { at: i }),
                b'/' => level_start = i + 1,
                b'+' if i != level_start || b.get(i + 1).is_some_and(|&n| n != b'/') => {
                    return Err(TopicError::MisplacedPlus { at: i });
                }
                b'#' if i != level_start || i + 1 != b.len() => {
                    return Err(TopicError::MisplacedHash { at: i });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Strings dense in the bytes that matter (NUL, wildcards, separators, multi-byte
/// characters whose bytes look like nothing in particular), long enough to cross several
/// eight-byte words.
fn tricky() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\0".to_owned()),
        Just("+".to_owned()),
        Just("#".to_owned()),
        Just("/".to_owned()),
        Just("é".to_owned()),
        Just("\u{2b2b}".to_owned()),
        Just("\u{1F600}".to_owned()),
        "[a-z]{1,9}"
    ];
    vec(piece, 0..24).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// [MQTT-4.7.1-1], [MQTT-4.7.3-1], [MQTT-4.7.3-2]: the same verdict and the same first
    /// offending byte as the byte-by-byte rule.
    #[test]
    fn name_validation_agrees_with_the_plain_rule(n in tricky()) {
        prop_assert_eq!(kite_mqtt::topic::validate_name(&n), reference::name(&n));
    }

    /// [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-2].
    #[test]
    fn filter_validation_agrees_with_the_plain_rule(f in tricky()) {
        // No `$share/` prefix in this alphabet, so the whole string is the plain filter.
        prop_assert_eq!(validate_filter(&f), reference::plain_filter(&f));
    }
}
