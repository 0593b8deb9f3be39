//! A subscription trie: which subscriptions match a topic name, fast.
//!
//! One node per filter level; exact levels in a hash map, `+` and `#` in their own slots, so
//! matching a name walks at most three branches per level and never scans all filters.
//!
//! The trie is at most [`DEFAULT_DEPTH`] levels deep: the levels of a longer filter beyond that
//! depth are kept as one string (its *tail*) in the node where the trie stops, and compared level
//! by level with a name's remaining levels. So every walk (insert, remove, match, drop) recurses
//! at most that many times, whatever a client sends — a filter of 65,536 levels cannot overflow
//! the stack — and a subscription costs at most that many nodes plus its own bytes.

use core::hash::Hash;
use std::collections::HashMap;

use super::{Levels, TopicError, levels, matches_below_first, parse_shared, validate_filter};

/// How many levels of a filter become trie nodes; the rest is kept whole. Real topic trees are
/// rarely deeper (Sparkplug: 5, AWS IoT shadows: 8), so their matching never meets a tail.
pub const DEFAULT_DEPTH: usize = 16;

#[derive(Debug)]
struct Node<K, V> {
    children: HashMap<Box<str>, Node<K, V>>,
    plus: Option<Box<Node<K, V>>>,
    /// The subscriptions held here, boxed so that a node on a path (most nodes) is 64 bytes.
    subs: Option<Box<Subs<K, V>>>,
}

#[derive(Debug)]
struct Subs<K, V> {
    /// Subscriptions whose filter ends here.
    here: HashMap<K, V>,
    /// Subscriptions to `<this node's path>/#`.
    hash: HashMap<K, V>,
    /// At the trie's depth only: filters with more levels, by the rest of the filter.
    tails: HashMap<Box<str>, HashMap<K, V>>,
}

impl<K, V> Default for Subs<K, V> {
    fn default() -> Self {
        Self {
            here: HashMap::new(),
            hash: HashMap::new(),
            tails: HashMap::new(),
        }
    }
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self {
            children: HashMap::new(),
            plus: None,
            subs: None,
        }
    }
}

impl<K, V> Node<K, V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.plus.is_none() && self.subs.is_none()
    }

    fn subs_mut(&mut self) -> &mut Subs<K, V> {
        self.subs.get_or_insert_with(Box::default)
    }

    /// Drops the subscription box once it holds nothing.
    fn tidy(&mut self) {
        if self
            .subs
            .as_ref()
            .is_some_and(|s| s.here.is_empty() && s.hash.is_empty() && s.tails.is_empty())
        {
            self.subs = None;
        }
    }
}

/// Subscriptions by topic filter, each owned by a key (a client, or a client in a share group),
/// with a value (its options). A key has at most one subscription per filter.
///
/// A shared subscription `$share/<group>/<filter>` is stored under `<filter>`: put the group in
/// the key or the value to tell members apart.
#[derive(Debug)]
pub struct SubscriptionTree<K, V> {
    root: Node<K, V>,
    len: usize,
    depth: usize,
}

impl<K, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        Self::with_depth(DEFAULT_DEPTH)
    }
}

fn inner(filter: &str) -> Result<&str, TopicError> {
    validate_filter(filter)?;
    Ok(parse_shared(filter)?.map_or(filter, |s| s.filter))
}

/// Where a filter ends in the trie, once its levels down to the trie's depth were walked.
enum End<'f> {
    /// The filter's last level was this node's.
    Here,
    /// `<this node>/#`.
    Hash,
    /// More levels than the trie is deep: the rest of the filter.
    Tail(&'f str),
}

impl<K, V> SubscriptionTree<K, V> {
    /// An empty tree whose nodes go `depth` levels deep (at least 1); longer filters keep their
    /// remaining levels as one string. [`SubscriptionTree::new`] uses [`DEFAULT_DEPTH`]; a
    /// smaller depth is for tests that want tails with short filters.
    pub fn with_depth(depth: usize) -> Self {
        Self {
            root: Node::default(),
            len: 0,
            depth: depth.max(1),
        }
    }
}

impl<K: Eq + Hash, V> SubscriptionTree<K, V> {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many subscriptions the tree holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds (or replaces) `key`'s subscription to `filter`; returns the value it replaced.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Result<Option<V>, TopicError> {
        let mut node = &mut self.root;
        let mut it = levels(inner(filter)?);
        let mut depth = 0;
        let end = loop {
            let rest = it.remainder();
            let Some(level) = it.next() else {
                break End::Here;
            };
            if level == "#" {
                break End::Hash;
            }
            if depth == self.depth {
                break End::Tail(rest.unwrap_or(level));
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                node.children.entry(level.into()).or_default()
            };
            depth += 1;
        };
        let subs = node.subs_mut();
        let old = match end {
            End::Here => subs.here.insert(key, value),
            End::Hash => subs.hash.insert(key, value),
            End::Tail(tail) => subs
                .tails
                .entry(tail.into())
                .or_default()
                .insert(key, value),
        };
        self.len += usize::from(old.is_none());
        Ok(old)
    }

    /// Removes `key`'s subscription to `filter`, pruning emptied nodes.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let filter = inner(filter).ok()?;
        let removed = Self::remove_at(&mut self.root, levels(filter), self.depth, key);
        self.len -= usize::from(removed.is_some());
        removed
    }

    /// Recurses once per level, at most the trie's depth.
    fn remove_at(node: &mut Node<K, V>, mut it: Levels<'_>, depth: usize, key: &K) -> Option<V> {
        let rest = it.remainder();
        let end = match it.next() {
            None => End::Here,
            Some("#") => End::Hash,
            Some(level) if depth == 0 => End::Tail(rest.unwrap_or(level)),
            Some(level) => {
                let removed = if level == "+" {
                    let child = node.plus.as_deref_mut()?;
                    let removed = Self::remove_at(child, it, depth - 1, key);
                    if child.is_empty() {
                        node.plus = None;
                    }
                    removed
                } else {
                    let child = node.children.get_mut(level)?;
                    let removed = Self::remove_at(child, it, depth - 1, key);
                    if child.is_empty() {
                        node.children.remove(level);
                    }
                    removed
                };
                return removed;
            }
        };
        let subs = node.subs.as_deref_mut()?;
        let removed = match end {
            End::Here => subs.here.remove(key),
            End::Hash => subs.hash.remove(key),
            End::Tail(tail) => {
                let group = subs.tails.get_mut(tail)?;
                let removed = group.remove(key);
                if group.is_empty() {
                    subs.tails.remove(tail);
                }
                removed
            }
        };
        node.tidy();
        removed
    }

    /// Calls `f` for every subscription matching the topic name `topic`, with the `$` rule
    /// ([MQTT-4.7.2-1]): names starting with `$` are not matched by `#` or `+` at the first level.
    pub fn for_each_match<'s>(&'s self, topic: &str, mut f: impl FnMut(&'s K, &'s V)) {
        let dollar = topic.starts_with('$');
        Self::walk(&self.root, topic, !dollar, self.depth, &mut f);
    }

    /// Every subscription matching `topic`.
    pub fn matches(&self, topic: &str) -> Vec<(&K, &V)> {
        let mut out = Vec::new();
        self.for_each_match(topic, |k, v| out.push((k, v)));
        out
    }

    /// `name` is the name's levels below `node`, `depth` how many levels of nodes are left
    /// below it; recurses once per level, at most the trie's depth.
    fn walk<'s>(
        node: &'s Node<K, V>,
        name: &str,
        wildcards: bool,
        depth: usize,
        f: &mut impl FnMut(&'s K, &'s V),
    ) {
        if let Some(subs) = node.subs.as_deref() {
            if wildcards {
                subs.hash.iter().for_each(|(k, v)| f(k, v));
            }
            // Tails are below the root only, where the `$` rule no longer applies.
            for (tail, group) in &subs.tails {
                if matches_below_first(tail, name) {
                    group.iter().for_each(|(k, v)| f(k, v));
                }
            }
        }
        if depth == 0 {
            return;
        }
        let mut it = levels(name);
        let level = it.next().unwrap_or(name);
        let next = it.remainder();
        let mut step = |child: &'s Node<K, V>| match next {
            Some(n) => Self::walk(child, n, true, depth - 1, f),
            None => {
                if let Some(subs) = child.subs.as_deref() {
                    subs.here.iter().for_each(|(k, v)| f(k, v));
                    // "a/#" also matches "a" ([MQTT-4.7.1-2]).
                    subs.hash.iter().for_each(|(k, v)| f(k, v));
                }
            }
        };
        if let Some(child) = node.children.get(level) {
            step(child);
        }
        if wildcards && let Some(plus) = node.plus.as_deref() {
            step(plus);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn names(tree: &SubscriptionTree<&'static str, ()>, topic: &str) -> Vec<&'static str> {
        let mut v: Vec<&str> = tree.matches(topic).into_iter().map(|(k, ())| *k).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn spec_examples() {
        let mut t = SubscriptionTree::new();
        for (key, filter) in [
            ("all", "#"),
            ("sport", "sport/#"),
            ("tennis+", "sport/tennis/+"),
            ("p1", "sport/tennis/player1"),
            ("p1#", "sport/tennis/player1/#"),
            ("++", "+/+"),
            ("/+", "/+"),
            ("sys", "$SYS/#"),
            ("shared", "$share/g/sport/tennis/+"),
        ] {
            t.insert(filter, key, ()).unwrap();
        }
        assert_eq!(t.len(), 9);
        assert_eq!(names(&t, "sport"), ["all", "sport"]);
        assert_eq!(
            names(&t, "sport/tennis/player1"),
            ["all", "p1", "p1#", "shared", "sport", "tennis+"]
        );
        assert_eq!(
            names(&t, "sport/tennis/player1/ranking"),
            ["all", "p1#", "sport"]
        );
        assert_eq!(names(&t, "/finance"), ["++", "/+", "all"]);
        // [MQTT-4.7.2-1]
        assert_eq!(names(&t, "$SYS/broker/uptime"), ["sys"]);
        assert_eq!(names(&t, "$SYS"), ["sys"]);
    }

    #[test]
    fn insert_replaces_and_remove_prunes() {
        let mut t = SubscriptionTree::new();
        assert_eq!(t.insert("a/+/c", "k", 1), Ok(None));
        assert_eq!(t.insert("a/+/c", "k", 2), Ok(Some(1)));
        assert_eq!(t.insert("a/#", "k", 3), Ok(None));
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove("a/+/c", &"k"), Some(2));
        assert_eq!(t.remove("a/+/c", &"k"), None);
        assert_eq!(t.remove("a/#", &"other"), None);
        assert_eq!(t.remove("a/#", &"k"), Some(3));
        assert!(t.is_empty());
        assert!(t.root.is_empty(), "emptied nodes are pruned");
        assert!(matches!(
            t.insert("a/#/b", "k", 0),
            Err(TopicError::MisplacedHash { .. })
        ));
    }

    /// Filters of 65,536 levels (the most 65,535 bytes hold: all empty) go in, match, come out
    /// and are dropped without recursing once per level: before the trie had a depth, such
    /// filters overflowed a 2 MiB stack (a tokio worker's), killing the broker.
    #[test]
    fn the_deepest_filters_do_not_overflow_the_stack() {
        let slashes = "/".repeat(65_535);
        let pluses = format!("{}+", "+/".repeat(32_767));
        let mixed = format!("{}#", "a/+//".repeat(13_106));
        let name = "/".repeat(65_535);
        let mut t = SubscriptionTree::new();
        for (i, f) in [&slashes, &pluses, &mixed].into_iter().enumerate() {
            assert!(f.len() <= 65_535, "{}", f.len());
            t.insert(f, i, ()).unwrap();
        }
        // `+` × 32,768 has half the levels of the name.
        assert_eq!(names_of(&t, &name), [0]);
        assert_eq!(names_of(&t, &"/".repeat(32_767)), [1]);
        let mixed_name = "a/x//".repeat(13_106);
        assert_eq!(names_of(&t, &mixed_name), [2]);
        assert_eq!(t.remove(&pluses, &1), Some(()));
        assert!(names_of(&t, &"/".repeat(32_767)).is_empty());
        // Dropped with two subscriptions left in it.
        drop(t);
    }

    fn names_of(tree: &SubscriptionTree<usize, ()>, topic: &str) -> Vec<usize> {
        let mut v: Vec<usize> = tree.matches(topic).into_iter().map(|(k, ())| *k).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn tails_below_the_depth_match_like_levels() {
        let mut t = SubscriptionTree::with_depth(2);
        for (key, filter) in [
            (0, "a/b/c/d"),
            (1, "a/b/+/d"),
            (2, "a/b/c/#"),
            (3, "a/+/c/+"),
            (4, "a/b/#"),
            (5, "+/+/$x/#"),
            (6, "a/b/c"),
        ] {
            t.insert(filter, key, ()).unwrap();
        }
        assert_eq!(names_of(&t, "a/b/c/d"), [0, 1, 2, 3, 4]);
        // "a/b/c/#" also matches "a/b/c" [MQTT-4.7.1-2]; a tail is not a first level, so `+`
        // and `#` match "$x" there.
        assert_eq!(names_of(&t, "a/b/c"), [2, 4, 6]);
        assert_eq!(names_of(&t, "a/b/$x/y"), [4, 5]);
        assert_eq!(t.remove("a/b/+/d", &1), Some(()));
        assert_eq!(t.remove("a/b/+/d", &1), None);
        assert_eq!(names_of(&t, "a/b/x/d"), [4]);
        for (key, filter) in [(0, "a/b/c/d"), (2, "a/b/c/#"), (3, "a/+/c/+")] {
            assert_eq!(t.remove(filter, &key), Some(()));
        }
        for (key, filter) in [(4, "a/b/#"), (5, "+/+/$x/#"), (6, "a/b/c")] {
            assert_eq!(t.remove(filter, &key), Some(()));
        }
        assert!(t.is_empty());
        assert!(t.root.is_empty(), "emptied nodes and tails are pruned");
    }
}
