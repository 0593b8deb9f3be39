//! Retained messages: a trie by topic level, so a subscription finds its retained messages by
//! walking the levels its filter names, never by scanning every retained topic.
//!
//! As the subscription trie, it is at most [`DEFAULT_DEPTH`] levels deep: a topic with more
//! levels keeps the rest of its name as one key in the node where the trie stops, compared with
//! the rest of a filter level by level. Every walk recurses at most that many times, whatever
//! topic a client retains (a name of 65,536 empty levels cannot overflow the stack).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use kite_mqtt::topic::{DEFAULT_DEPTH, Levels, levels, matches_below_first};

use super::Message;

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    msg: Option<Arc<Message>>,
    /// At the trie's depth only: the topics with more levels, by the rest of their name.
    /// Boxed: an empty map is 48 bytes in every node, a `None` 8.
    #[allow(
        clippy::box_collection,
        reason = "keeps the many nodes without tails small"
    )]
    tails: Option<Box<HashMap<Box<str>, Arc<Message>>>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.msg.is_none() && self.tails.is_none()
    }

    /// This node's message and every one below it; recurses at most the trie's depth.
    fn collect_all(&self, now: Instant, out: &mut Vec<Arc<Message>>, skip_dollar: bool) {
        let live = |m: &&Arc<Message>| !m.expired(now);
        out.extend(self.msg.iter().filter(live).cloned());
        if let Some(tails) = &self.tails {
            out.extend(tails.values().filter(live).cloned());
        }
        for (name, child) in &self.children {
            if skip_dollar && name.starts_with('$') {
                continue;
            }
            child.collect_all(now, out, false);
        }
    }
}

/// The retained message of every topic that has one.
#[derive(Debug)]
pub(crate) struct Retained {
    root: Node,
    len: usize,
    /// Topic and payload bytes of every retained message.
    bytes: usize,
    /// How many levels become nodes (tests make it small to meet tails with short topics).
    depth: usize,
}

impl Default for Retained {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
            bytes: 0,
            depth: DEFAULT_DEPTH,
        }
    }
}

impl Retained {
    /// How many topics hold a retained message.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Topic and payload bytes of every retained message.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Sets (`Some`) or deletes (`None`) the retained message of `topic`; returns the message
    /// it replaced or deleted.
    pub(crate) fn set(&mut self, topic: &str, msg: Option<Arc<Message>>) -> Option<Arc<Message>> {
        let old = match msg {
            Some(m) => {
                self.bytes += m.size();
                let mut node = &mut self.root;
                let mut it = levels(topic);
                let mut depth = 0;
                let old = loop {
                    let rest = it.remainder();
                    let Some(level) = it.next() else {
                        break node.msg.replace(m);
                    };
                    if depth == self.depth {
                        let tails = node.tails.get_or_insert_with(Box::default);
                        break tails.insert(rest.unwrap_or(level).into(), m);
                    }
                    node = node.children.entry(level.into()).or_default();
                    depth += 1;
                };
                if old.is_none() {
                    self.len += 1;
                }
                old
            }
            None => {
                let old = Self::remove_at(&mut self.root, levels(topic), self.depth);
                if old.is_some() {
                    self.len -= 1;
                }
                old
            }
        };
        if let Some(m) = &old {
            self.bytes -= m.size();
        }
        old
    }

    /// Recurses once per level, at most the trie's depth.
    fn remove_at(node: &mut Node, mut it: Levels<'_>, depth: usize) -> Option<Arc<Message>> {
        let rest = it.remainder();
        match it.next() {
            None => node.msg.take(),
            Some(level) if depth == 0 => {
                let tails = node.tails.as_deref_mut()?;
                let removed = tails.remove(rest.unwrap_or(level));
                if tails.is_empty() {
                    node.tails = None;
                }
                removed
            }
            Some(level) => {
                let child = node.children.get_mut(level)?;
                let removed = Self::remove_at(child, it, depth - 1);
                if child.is_empty() {
                    node.children.remove(level);
                }
                removed
            }
        }
    }

    /// The unexpired retained messages whose topic matches `filter` (already validated, not a
    /// `$share` filter), with the `$` rule: wildcards at the first level do not match topics
    /// starting with `$` [MQTT-4.7.2-1].
    pub(crate) fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let mut out = Vec::new();
        Self::walk(&self.root, levels(filter), true, self.depth, now, &mut out);
        out
    }

    /// `it` holds the filter's levels below `node`; recurses at most the trie's depth.
    fn walk(
        node: &Node,
        mut it: Levels<'_>,
        first: bool,
        depth: usize,
        now: Instant,
        out: &mut Vec<Arc<Message>>,
    ) {
        let rest = it.remainder();
        let Some(level) = it.next() else {
            out.extend(node.msg.iter().filter(|m| !m.expired(now)).cloned());
            return;
        };
        // `a/#` matches `a` itself and everything below [MQTT-4.7.1-2].
        if level == "#" {
            node.collect_all(now, out, first);
            return;
        }
        if depth == 0 {
            // Below the root: the `$` rule does not apply to tails.
            let filter = rest.unwrap_or(level);
            if let Some(tails) = &node.tails {
                out.extend(
                    tails
                        .iter()
                        .filter(|(name, m)| matches_below_first(filter, name) && !m.expired(now))
                        .map(|(_, m)| m.clone()),
                );
            }
            return;
        }
        if level == "+" {
            for (name, child) in &node.children {
                if first && name.starts_with('$') {
                    continue;
                }
                Self::walk(child, it.clone(), false, depth - 1, now, out);
            }
        } else if let Some(child) = node.children.get(level) {
            Self::walk(child, it, false, depth - 1, now, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kite_mqtt::QoS;
    use kite_mqtt::codec::Publish;
    use kite_mqtt::topic::matches;

    fn message(topic: &str, now: Instant) -> Arc<Message> {
        let publish = Publish {
            qos: QoS::AtMostOnce,
            topic: topic.into(),
            payload: "x".into(),
            ..Publish::default()
        };
        Arc::new(Message::from_publish(publish, None, now))
    }

    fn topics(r: &Retained, filter: &str, now: Instant) -> Vec<String> {
        let mut v: Vec<String> = r
            .matching(filter, now)
            .iter()
            .map(|m| m.topic.to_string())
            .collect();
        v.sort_unstable();
        v
    }

    /// Before the trie had a depth, retaining on a topic of 30,000 empty levels and then
    /// clearing it (two `POST /api/v1/publish`) overflowed the stack and killed the gateway.
    #[test]
    fn the_deepest_topics_do_not_overflow_the_stack() {
        let now = Instant::now();
        let mut r = Retained::default();
        let deep = format!("http{}", "/".repeat(65_531));
        let deep_a = format!("a{}", "/a".repeat(32_767));
        for t in [&deep, &deep_a] {
            assert!(t.len() <= 65_535);
            r.set(t, Some(message(t, now)));
        }
        assert_eq!(r.len(), 2);
        // Compared as booleans: a failure must not print 64 KiB names.
        assert!(topics(&r, "#", now) == [deep_a.clone(), deep.clone()]);
        assert!(topics(&r, &format!("http{}/#", "/+".repeat(100)), now) == [deep.clone()]);
        let pluses = format!("+{}", "/+".repeat(32_767));
        assert!(topics(&r, &pluses, now) == [deep_a.clone()]);
        assert!(r.set(&deep, None).is_some());
        assert_eq!(r.len(), 1);
        assert_eq!(r.bytes(), deep_a.len() + 1);
        drop(r);
    }

    /// With a depth of 2, topics of up to 5 levels meet tails; every filter finds what the
    /// plain matcher finds.
    #[test]
    fn tails_agree_with_the_plain_matcher() {
        let now = Instant::now();
        let names = [
            "a",
            "a/b",
            "a/b/c",
            "a/b/c/d",
            "a/b/$c/d",
            "a/x/c/d/e",
            "$SYS/b/c/d",
            "/",
            "//",
            "///",
            "a/b/c/d/e",
        ];
        let filters = [
            "#",
            "+",
            "a/#",
            "a/b/#",
            "a/b/c/#",
            "a/b/c/d/#",
            "a/+/c/+",
            "+/+/+/+",
            "a/b/+/d",
            "+/b/$c/d",
            "$SYS/#",
            "+/+/c/#",
            "/",
            "+/+/+",
            "a/b/c/d",
            "a/+/+/+/+",
        ];
        let mut r = Retained {
            depth: 2,
            ..Retained::default()
        };
        for n in names {
            r.set(n, Some(message(n, now)));
        }
        for f in filters {
            let mut want: Vec<String> = names
                .iter()
                .filter(|n| matches(f, n))
                .map(|n| (*n).to_owned())
                .collect();
            want.sort_unstable();
            assert_eq!(topics(&r, f, now), want, "filter {f}");
        }
        for n in names {
            assert!(r.set(n, None).is_some(), "{n}");
        }
        assert_eq!((r.len(), r.bytes()), (0, 0));
        assert!(r.root.is_empty(), "emptied nodes and tails are pruned");
    }
}
