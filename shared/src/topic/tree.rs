//! A subscription trie: which subscriptions match a topic name, fast.
//!
//! One node per filter level; exact levels in a hash map, `+` and `#` in their own slots, so
//! matching a name walks at most three branches per level and never scans all filters.

use std::collections::HashMap;
use std::hash::Hash;

use super::{Levels, TopicError, levels, parse_shared, validate_filter};

#[derive(Debug)]
struct Node<K, V> {
    children: HashMap<Box<str>, Node<K, V>>,
    plus: Option<Box<Node<K, V>>>,
    /// Subscriptions whose filter ends here.
    here: HashMap<K, V>,
    /// Subscriptions to `<this node's path>/#`.
    hash: HashMap<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self {
            children: HashMap::new(),
            plus: None,
            here: HashMap::new(),
            hash: HashMap::new(),
        }
    }
}

impl<K, V> Node<K, V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.here.is_empty()
            && self.hash.is_empty()
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
}

impl<K, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

fn inner(filter: &str) -> Result<&str, TopicError> {
    validate_filter(filter)?;
    Ok(parse_shared(filter)?.map_or(filter, |s| s.filter))
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
        let mut it = levels(inner(filter)?).peekable();
        while let Some(level) = it.next() {
            if level == "#" {
                let old = node.hash.insert(key, value);
                self.len += usize::from(old.is_none());
                return Ok(old);
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                node.children.entry(level.into()).or_default()
            };
            if it.peek().is_none() {
                break;
            }
        }
        let old = node.here.insert(key, value);
        self.len += usize::from(old.is_none());
        Ok(old)
    }

    /// Removes `key`'s subscription to `filter`, pruning emptied nodes.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let filter = inner(filter).ok()?;
        let parts: Vec<&str> = levels(filter).collect();
        let removed = Self::remove_at(&mut self.root, &parts, key);
        self.len -= usize::from(removed.is_some());
        removed
    }

    fn remove_at(node: &mut Node<K, V>, levels: &[&str], key: &K) -> Option<V> {
        match levels {
            [] => node.here.remove(key),
            ["#"] => node.hash.remove(key),
            [level, rest @ ..] => {
                if *level == "+" {
                    let child = node.plus.as_deref_mut()?;
                    let removed = Self::remove_at(child, rest, key);
                    if child.is_empty() {
                        node.plus = None;
                    }
                    removed
                } else {
                    let child = node.children.get_mut(*level)?;
                    let removed = Self::remove_at(child, rest, key);
                    if child.is_empty() {
                        node.children.remove(*level);
                    }
                    removed
                }
            }
        }
    }

    /// Calls `f` for every subscription matching the topic name `topic`, with the `$` rule
    /// ([MQTT-4.7.2-1]): names starting with `$` are not matched by `#` or `+` at the first level.
    pub fn for_each_match<'s>(&'s self, topic: &str, mut f: impl FnMut(&'s K, &'s V)) {
        let dollar = topic.starts_with('$');
        let mut rest = levels(topic);
        if let Some(first) = rest.next() {
            Self::walk(&self.root, first, rest, !dollar, &mut f);
        }
    }

    /// Every subscription matching `topic`.
    pub fn matches(&self, topic: &str) -> Vec<(&K, &V)> {
        let mut out = Vec::new();
        self.for_each_match(topic, |k, v| out.push((k, v)));
        out
    }

    fn walk<'s, 't>(
        node: &'s Node<K, V>,
        level: &'t str,
        mut rest: Levels<'t>,
        wildcards: bool,
        f: &mut impl FnMut(&'s K, &'s V),
    ) {
        if wildcards {
            node.hash.iter().for_each(|(k, v)| f(k, v));
        }
        let next = rest.next();
        let mut step = |child: &'s Node<K, V>| match next {
            Some(n) => Self::walk(child, n, rest.clone(), true, f),
            None => {
                child.here.iter().for_each(|(k, v)| f(k, v));
                // "a/#" also matches "a" ([MQTT-4.7.1-2]).
                child.hash.iter().for_each(|(k, v)| f(k, v));
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
}
