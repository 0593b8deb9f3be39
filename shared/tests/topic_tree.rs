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
    fn tree_agrees_with_the_plain_matcher(filters in vec(filter(), 1..40), names in vec(name(), 1..20), removals in vec(any::<prop::sample::Index>(), 0..10)) {
        let mut tree = SubscriptionTree::new();
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
