//! Retained messages: a trie by topic level, so a subscription finds its retained messages by
//! walking the levels its filter names, never by scanning every retained topic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use kite_mqtt::topic::levels;

use super::Message;

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    msg: Option<Arc<Message>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.msg.is_none()
    }

    fn collect_all(&self, now: Instant, out: &mut Vec<Arc<Message>>, skip_dollar: bool) {
        if let Some(m) = &self.msg
            && !m.expired(now)
        {
            out.push(m.clone());
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
#[derive(Debug, Default)]
pub(crate) struct Retained {
    root: Node,
    len: usize,
}

impl Retained {
    /// How many topics hold a retained message.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Sets (`Some`) or deletes (`None`) the retained message of `topic`.
    pub(crate) fn set(&mut self, topic: &str, msg: Option<Arc<Message>>) {
        let parts: Vec<&str> = levels(topic).collect();
        match msg {
            Some(m) => {
                let mut node = &mut self.root;
                for p in parts {
                    node = node.children.entry(p.into()).or_default();
                }
                if node.msg.replace(m).is_none() {
                    self.len += 1;
                }
            }
            None => {
                if Self::remove_at(&mut self.root, &parts) {
                    self.len -= 1;
                }
            }
        }
    }

    fn remove_at(node: &mut Node, parts: &[&str]) -> bool {
        match parts {
            [] => node.msg.take().is_some(),
            [first, rest @ ..] => {
                let Some(child) = node.children.get_mut(*first) else {
                    return false;
                };
                let removed = Self::remove_at(child, rest);
                if child.is_empty() {
                    node.children.remove(*first);
                }
                removed
            }
        }
    }

    /// The unexpired retained messages whose topic matches `filter` (already validated, not a
    /// `$share` filter), with the `$` rule: wildcards at the first level do not match topics
    /// starting with `$` [MQTT-4.7.2-1].
    pub(crate) fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let parts: Vec<&str> = levels(filter).collect();
        let mut out = Vec::new();
        Self::walk(&self.root, &parts, true, now, &mut out);
        out
    }

    fn walk(node: &Node, parts: &[&str], first: bool, now: Instant, out: &mut Vec<Arc<Message>>) {
        match parts {
            [] => {
                if let Some(m) = &node.msg
                    && !m.expired(now)
                {
                    out.push(m.clone());
                }
            }
            // `a/#` matches `a` itself and everything below [MQTT-4.7.1-2].
            ["#"] => {
                if first {
                    node.collect_all(now, out, true);
                } else {
                    node.collect_all(now, out, false);
                }
            }
            ["+", rest @ ..] => {
                for (name, child) in &node.children {
                    if first && name.starts_with('$') {
                        continue;
                    }
                    Self::walk(child, rest, false, now, out);
                }
            }
            [level, rest @ ..] => {
                if let Some(child) = node.children.get(*level) {
                    Self::walk(child, rest, false, now, out);
                }
            }
        }
    }
}
