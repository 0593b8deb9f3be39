//! The message store: every topic seen on a connection, as a tree, with bounded history.
//!
//! Messages never go through Yew state one by one: the driver puts them here (cheap: a hash
//! lookup, a few counters, a copy of the payload into the topic's ring), and the view reads
//! the store at most once per animation frame. Plain Rust, no web-sys: tested natively.
//!
//! Memory is bounded twice: each topic keeps its last `history_per_topic` messages, and all
//! histories together hold at most `memory_bytes` (the oldest messages, whatever their topic,
//! go first; each topic's latest value preview stays).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use kite_mqtt::codec::Props;

/// A node of the tree: its index.
pub type NodeId = u32;

/// The invisible root (its children are the first topic levels).
pub const ROOT: NodeId = 0;

/// Levels shown expanded when they first appear: the first two (`plant/line-1/...`).
const EXPANDED_DEPTH: u16 = 2;

/// Bytes of payload kept for a topic's one-line preview.
const PREVIEW_BYTES: usize = 128;

/// What an entry costs beyond its payload (its fields and its place in the queues), counted
/// against the memory cap.
const ENTRY_OVERHEAD: usize = 96;

/// How much the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Messages kept per topic.
    pub history_per_topic: usize,
    /// Bytes kept in all histories together.
    pub memory_bytes: usize,
}

/// The most the histories may hold, in MiB: the app's whole address space is 4 GiB (wasm32).
pub const MAX_MEMORY_MIB: u64 = 2048;

/// `mib` MiB as the bytes the histories may hold, within 1 ..= [`MAX_MEMORY_MIB`]. Computed
/// in 64 bits: 4096 MiB in a 32-bit `usize` was 0, and every kept message was dropped.
pub fn memory_cap(mib: u64) -> usize {
    usize::try_from(mib.clamp(1, MAX_MEMORY_MIB) << 20).unwrap_or(usize::MAX)
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            history_per_topic: 50,
            memory_bytes: 32 * 1024 * 1024,
        }
    }
}

/// One received message, as kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Arrival order in the store.
    pub seq: u64,
    /// Arrival time, milliseconds since the epoch.
    pub at_ms: f64,
    /// QoS it was delivered with.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// The payload (a copy: it does not hold the network buffer).
    pub payload: Bytes,
    /// MQTT 5 properties, as delivered.
    pub properties: Props,
}

#[derive(Debug, Default)]
struct Rate {
    window_start: f64,
    count: u32,
    last: f64,
}

#[derive(Debug)]
struct Node {
    name: Box<str>,
    parent: NodeId,
    depth: u16,
    children: BTreeMap<Box<str>, NodeId>,
    /// The children in the order people read them (`dev-2` before `dev-10`).
    order: Vec<NodeId>,
    /// Messages on exactly this topic.
    messages: u64,
    /// Messages on this topic and every topic below it.
    total: u64,
    history: VecDeque<Entry>,
    preview: Bytes,
    preview_len: usize,
    retained: bool,
    last_ms: f64,
    rate: Rate,
    expanded: bool,
}

impl Node {
    fn new(name: &str, parent: NodeId, depth: u16) -> Self {
        Self {
            name: name.into(),
            parent,
            depth,
            children: BTreeMap::new(),
            order: Vec::new(),
            messages: 0,
            total: 0,
            history: VecDeque::new(),
            preview: Bytes::new(),
            preview_len: 0,
            retained: false,
            last_ms: 0.0,
            rate: Rate::default(),
            expanded: depth < EXPANDED_DEPTH,
        }
    }
}

/// What the view shows of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// This level's name.
    pub name: String,
    /// 0 for a first level.
    pub depth: u16,
    /// Whether levels exist below it.
    pub has_children: bool,
    /// Whether they are shown.
    pub expanded: bool,
    /// Messages on exactly this topic (0: only a level of longer topics).
    pub messages: u64,
    /// Messages here and below.
    pub total: u64,
    /// The last message here was retained.
    pub retained: bool,
    /// When the last message here arrived (ms since the epoch; 0: never).
    pub last_ms: f64,
    /// Messages per second here, lately.
    pub rate: f64,
    /// The start of the last payload (at most 128 bytes) and its whole length.
    pub preview: (Bytes, usize),
}

/// The topics of one connection.
#[derive(Debug)]
pub struct Store {
    nodes: Vec<Node>,
    by_topic: HashMap<Box<str>, NodeId>,
    caps: Caps,
    /// Payload bytes + overhead of all history entries.
    history_bytes: usize,
    history_len: usize,
    /// (node, seq) of every entry in arrival order, for evicting the oldest first; entries
    /// already gone from their topic's ring are skipped.
    fifo: VecDeque<(NodeId, u64)>,
    next_seq: u64,
    received: u64,
    evicted: u64,
    rows: Vec<NodeId>,
    rows_dirty: bool,
    filter: Filter,
    /// While the live stream is paused: what arrived meanwhile, taken on resume.
    held: Option<Held>,
}

/// Messages held while paused, oldest first, within the memory cap (beyond it, the oldest held
/// are dropped and counted).
#[derive(Debug, Default)]
struct Held {
    messages: VecDeque<HeldMessage>,
    bytes: usize,
    dropped: u64,
}

#[derive(Debug)]
struct HeldMessage {
    topic: Box<str>,
    payload: Bytes,
    qos: u8,
    retain: bool,
    properties: Props,
    at_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Filter {
    #[default]
    None,
    /// Case-insensitive text anywhere in the topic.
    Text(String),
    /// An MQTT topic filter (`+`, `#`).
    Mqtt(String),
}

impl Default for Store {
    fn default() -> Self {
        Self::new(Caps::default())
    }
}

impl Store {
    /// An empty store keeping this much.
    pub fn new(caps: Caps) -> Self {
        Self {
            nodes: vec![Node::new("", ROOT, 0)],
            by_topic: HashMap::new(),
            caps,
            history_bytes: 0,
            history_len: 0,
            fifo: VecDeque::new(),
            next_seq: 0,
            received: 0,
            evicted: 0,
            rows: Vec::new(),
            rows_dirty: true,
            filter: Filter::None,
            held: None,
        }
    }

    /// Pauses the live stream: what arrives is held, not shown, until [`Store::resume`].
    pub fn pause(&mut self) {
        self.held.get_or_insert_with(Held::default);
    }

    /// Takes what was held while paused, in arrival order, and follows the stream again.
    pub fn resume(&mut self) {
        if let Some(held) = self.held.take() {
            for m in held.messages {
                self.ingest(&m.topic, &m.payload, m.qos, m.retain, m.properties, m.at_ms);
            }
        }
    }

    /// While paused: the messages held and those dropped beyond the memory cap.
    pub fn paused(&self) -> Option<(usize, u64)> {
        self.held.as_ref().map(|h| (h.messages.len(), h.dropped))
    }

    /// The caps in force.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Messages taken since the start (or the last [`Store::clear`]).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Distinct topics that carried a message.
    pub fn topics(&self) -> usize {
        self.by_topic.len()
    }

    /// Bytes held by histories (payloads and per-entry overhead), and entries.
    pub fn memory(&self) -> (usize, usize) {
        (self.history_bytes, self.history_len)
    }

    /// History entries dropped to stay under the memory cap.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Takes one message.
    pub fn ingest(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        properties: Props,
        at_ms: f64,
    ) {
        if let Some(held) = &mut self.held {
            held.bytes += topic.len() + payload.len() + ENTRY_OVERHEAD;
            held.messages.push_back(HeldMessage {
                topic: topic.into(),
                payload: Bytes::copy_from_slice(payload),
                qos,
                retain,
                properties,
                at_ms,
            });
            while held.bytes > self.caps.memory_bytes
                && let Some(old) = held.messages.pop_front()
            {
                held.bytes -= old.topic.len() + old.payload.len() + ENTRY_OVERHEAD;
                held.dropped += 1;
            }
            return;
        }
        self.received += 1;
        let id = match self.by_topic.get(topic) {
            Some(&id) => id,
            None => self.insert(topic),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let cost = payload.len() + ENTRY_OVERHEAD;
        let history_per_topic = self.caps.history_per_topic;
        let node = &mut self.nodes[id as usize];
        node.messages += 1;
        // The broker holds a retained message here once one is seen (at subscribe time, or live
        // with retain-as-published), until an empty message — a deletion — comes.
        node.retained = !payload.is_empty() && (retain || node.retained);
        node.last_ms = at_ms;
        node.preview_len = payload.len();
        node.preview = Bytes::copy_from_slice(&payload[..payload.len().min(PREVIEW_BYTES)]);
        let rate = &mut node.rate;
        let elapsed = at_ms - rate.window_start;
        if elapsed >= 1000.0 {
            rate.last = f64::from(rate.count) * 1000.0 / elapsed;
            rate.window_start = at_ms;
            rate.count = 0;
        }
        rate.count += 1;
        if history_per_topic > 0 {
            node.history.push_back(Entry {
                seq,
                at_ms,
                qos,
                retain,
                payload: Bytes::copy_from_slice(payload),
                properties,
            });
            self.history_bytes += cost;
            self.history_len += 1;
            self.fifo.push_back((id, seq));
            while node.history.len() > history_per_topic {
                if let Some(old) = node.history.pop_front() {
                    self.history_bytes -= old.payload.len() + ENTRY_OVERHEAD;
                    self.history_len -= 1;
                }
            }
        }
        // Totals up the tree (a handful of levels).
        let mut at = id;
        loop {
            let n = &mut self.nodes[at as usize];
            n.total += 1;
            if at == ROOT {
                break;
            }
            at = n.parent;
        }
        self.enforce_memory();
    }

    fn enforce_memory(&mut self) {
        while self.history_bytes > self.caps.memory_bytes {
            let Some((id, seq)) = self.fifo.pop_front() else {
                break;
            };
            let node = &mut self.nodes[id as usize];
            if node.history.front().is_some_and(|e| e.seq == seq)
                && let Some(old) = node.history.pop_front()
            {
                self.history_bytes -= old.payload.len() + ENTRY_OVERHEAD;
                self.history_len -= 1;
                self.evicted += 1;
            }
        }
        // Entries that left their ring by the per-topic cap are still queued: compact now
        // and then, so the queue stays within twice the live entries.
        if self.fifo.len() > 2 * self.history_len + 1024 {
            let nodes = &self.nodes;
            self.fifo.retain(|&(id, seq)| {
                nodes[id as usize]
                    .history
                    .front()
                    .is_some_and(|e| e.seq <= seq)
            });
        }
    }

    /// Creates the nodes of `topic` (and any missing levels above it).
    fn insert(&mut self, topic: &str) -> NodeId {
        let mut at = ROOT;
        for (depth, level) in topic.split('/').enumerate() {
            at = match self.nodes[at as usize].children.get(level) {
                Some(&child) => child,
                None => {
                    let id = self.nodes.len() as NodeId;
                    let depth = u16::try_from(depth).unwrap_or(u16::MAX);
                    self.nodes.push(Node::new(level, at, depth));
                    let parent = &self.nodes[at as usize];
                    let place = parent.order.partition_point(|&c| {
                        kite_mqtt::topic::natural_cmp(&self.nodes[c as usize].name, level).is_lt()
                    });
                    let parent = &mut self.nodes[at as usize];
                    parent.children.insert(level.into(), id);
                    parent.order.insert(place, id);
                    self.rows_dirty = true;
                    id
                }
            };
        }
        self.by_topic.insert(topic.into(), at);
        at
    }

    /// The node's full topic.
    pub fn topic(&self, id: NodeId) -> String {
        let mut levels = Vec::new();
        let mut at = id;
        while at != ROOT {
            let Some(n) = self.nodes.get(at as usize) else {
                break;
            };
            levels.push(&*n.name);
            at = n.parent;
        }
        levels.reverse();
        levels.join("/")
    }

    /// The node of a topic, if it carried a message or is a level of one that did.
    pub fn find(&self, topic: &str) -> Option<NodeId> {
        if let Some(&id) = self.by_topic.get(topic) {
            return Some(id);
        }
        let mut at = ROOT;
        for level in topic.split('/') {
            at = *self.nodes[at as usize].children.get(level)?;
        }
        Some(at)
    }

    /// What the view shows of a node; `None` for an unknown id.
    pub fn view(&self, id: NodeId, now_ms: f64) -> Option<NodeView> {
        let n = self.nodes.get(id as usize)?;
        let rate = if n.messages == 0 || now_ms - n.last_ms > 5000.0 {
            0.0
        } else if now_ms - n.rate.window_start >= 1000.0 {
            f64::from(n.rate.count) * 1000.0 / (now_ms - n.rate.window_start)
        } else {
            n.rate.last
        };
        Some(NodeView {
            name: n.name.to_string(),
            depth: n.depth,
            has_children: !n.children.is_empty(),
            expanded: n.expanded || self.filter != Filter::None,
            messages: n.messages,
            total: n.total,
            retained: n.retained,
            last_ms: n.last_ms,
            rate,
            preview: (n.preview.clone(), n.preview_len),
        })
    }

    /// The node's kept messages, oldest first.
    pub fn history(&self, id: NodeId) -> impl DoubleEndedIterator<Item = &Entry> + '_ {
        self.nodes
            .get(id as usize)
            .into_iter()
            .flat_map(|n| n.history.iter())
    }

    /// The last message on `topic`: its whole payload (when kept: the history, or a short
    /// payload's preview), arrival time and order.
    pub fn last(&self, topic: &str) -> Option<(&[u8], f64, u64)> {
        let n = &self.nodes[*self.by_topic.get(topic)? as usize];
        match n.history.back() {
            Some(e) => Some((&e.payload, e.at_ms, e.seq)),
            None if n.preview_len == n.preview.len() && n.messages > 0 => {
                Some((&n.preview, n.last_ms, u64::MAX))
            }
            None => None,
        }
    }

    /// The topics received that `filter` matches, in natural order.
    pub fn topics_matching(&self, filter: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .by_topic
            .keys()
            .filter(|t| kite_mqtt::topic::matches(filter, t))
            .map(|t| t.to_string())
            .collect();
        crate::sort::sort_by(&mut out, |a, b| kite_mqtt::topic::natural_cmp(a, b));
        out
    }

    /// This app published to `topic` with RETAIN: the broker holds it now (or, empty, no
    /// longer holds one) — shown even when the broker does not send it back retained.
    pub fn note_retained(&mut self, topic: &str, empty: bool) {
        if let Some(&id) = self.by_topic.get(topic) {
            self.nodes[id as usize].retained = !empty;
        }
    }

    /// Opens every level above `id`, so that its row is shown (a topic opened by its URL).
    pub fn reveal(&mut self, id: NodeId) {
        let mut at = id;
        while let Some(parent) = self.parent(at) {
            self.set_expanded(parent, true);
            at = parent;
        }
    }

    /// The node's parent (`None` for a first level or the root).
    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        let n = self.nodes.get(id as usize)?;
        (id != ROOT && n.parent != ROOT).then_some(n.parent)
    }

    /// Shows or hides the levels below a node.
    pub fn set_expanded(&mut self, id: NodeId, expanded: bool) {
        if let Some(n) = self.nodes.get_mut(id as usize)
            && n.expanded != expanded
        {
            n.expanded = expanded;
            self.rows_dirty = true;
        }
    }

    /// Shows only topics that match: an MQTT filter if `text` has `+` or `#` and is a valid
    /// one, else topics containing `text` (any case). Empty: everything.
    pub fn set_filter(&mut self, text: &str) {
        let text = text.trim();
        let filter = if text.is_empty() {
            Filter::None
        } else if (text.contains('+') || text.contains('#'))
            && kite_mqtt::topic::validate_filter(text).is_ok()
        {
            Filter::Mqtt(text.to_owned())
        } else {
            // ASCII case folding: Unicode's tables would cost the app 17 KB.
            Filter::Text(text.to_ascii_lowercase())
        };
        if filter != self.filter {
            self.filter = filter;
            self.rows_dirty = true;
        }
    }

    /// The nodes shown, in order: each level's children in natural order (`dev-2` before
    /// `dev-10`), below expanded nodes
    /// only (with a filter: the matching topics and the levels above them, all open).
    pub fn rows(&mut self) -> &[NodeId] {
        if self.rows_dirty {
            self.rows_dirty = false;
            let mut rows = std::mem::take(&mut self.rows);
            rows.clear();
            let keep = self.matching();
            let mut stack: Vec<NodeId> = self.nodes[ROOT as usize]
                .order
                .iter()
                .rev()
                .copied()
                .collect();
            while let Some(id) = stack.pop() {
                if keep.as_ref().is_some_and(|k| !k.contains(&id)) {
                    continue;
                }
                rows.push(id);
                let n = &self.nodes[id as usize];
                if n.expanded || keep.is_some() {
                    stack.extend(n.order.iter().rev().copied());
                }
            }
            self.rows = rows;
        }
        &self.rows
    }

    /// With a filter: the matching topics' nodes and every level above them.
    fn matching(&self) -> Option<HashSet<NodeId>> {
        let matches = |topic: &str, id: NodeId| match &self.filter {
            Filter::None => true,
            // The topic, or its last value.
            Filter::Text(t) => {
                topic.to_ascii_lowercase().contains(t.as_str())
                    || String::from_utf8_lossy(&self.nodes[id as usize].preview)
                        .to_ascii_lowercase()
                        .contains(t.as_str())
            }
            Filter::Mqtt(f) => kite_mqtt::topic::matches(f, topic),
        };
        if self.filter == Filter::None {
            return None;
        }
        let mut keep = HashSet::new();
        for (topic, &id) in &self.by_topic {
            if matches(topic, id) {
                let mut at = id;
                while at != ROOT && keep.insert(at) {
                    at = self.nodes[at as usize].parent;
                }
            }
        }
        Some(keep)
    }

    /// Whether a search is on (so that an empty tree says no topic matches, not that none
    /// came).
    pub fn filtering(&self) -> bool {
        self.filter != Filter::None
    }

    /// Topics at `id` and below whose last message was retained (and not empty): what
    /// deleting the retained messages of a subtree has to clear.
    pub fn retained_below(&self, id: NodeId) -> Vec<String> {
        let mut found = Vec::new();
        let mut stack = vec![id];
        while let Some(at) = stack.pop() {
            let Some(n) = self.nodes.get(at as usize) else {
                continue;
            };
            if n.retained && n.preview_len > 0 && at != ROOT {
                found.push(self.topic(at));
            }
            stack.extend(n.children.values().rev());
        }
        found
    }

    /// New caps: histories are cut to the new per-topic length at once, and the oldest
    /// messages go until the new memory cap holds.
    pub fn set_caps(&mut self, caps: Caps) {
        self.caps = caps;
        for node in &mut self.nodes {
            while node.history.len() > caps.history_per_topic {
                if let Some(old) = node.history.pop_front() {
                    self.history_bytes -= old.payload.len() + ENTRY_OVERHEAD;
                    self.history_len -= 1;
                }
            }
        }
        self.enforce_memory();
    }

    /// Forgets everything, what is held too (the caps and a pause stay).
    pub fn clear(&mut self) {
        let paused = self.held.is_some();
        *self = Self::new(self.caps);
        if paused {
            self.pause();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_MEMORY_MIB, memory_cap};

    /// "MiB kept in all" = 4096 kept nothing (issue #21, bug 1): the cap never wraps, and
    /// never reaches 0.
    #[test]
    fn the_memory_cap_never_wraps_to_nothing() {
        assert_eq!(memory_cap(32), 32 << 20);
        assert_eq!(memory_cap(0), 1 << 20);
        for mib in [4096, 4097, 1 << 32, u64::MAX] {
            assert_eq!(memory_cap(mib) as u64, MAX_MEMORY_MIB << 20, "{mib}");
        }
        // What a 32-bit usize holds.
        assert!(MAX_MEMORY_MIB << 20 <= u64::from(u32::MAX));
    }

    use super::*;

    fn put(store: &mut Store, topic: &str, payload: &str, at_ms: f64) {
        store.ingest(topic, payload.as_bytes(), 1, false, Props::default(), at_ms);
    }

    /// Pausing the live stream holds what arrives, in order, within the memory cap; resuming
    /// takes it as if it had just arrived.
    #[test]
    fn a_pause_holds_messages_until_resumed() {
        let mut s = Store::new(Caps {
            memory_bytes: 8 * (ENTRY_OVERHEAD + 8),
            ..Caps::default()
        });
        put(&mut s, "a", "1", 0.0);
        s.pause();
        for (i, topic) in ["a", "b", "a", "c", "d"].iter().enumerate() {
            put(&mut s, topic, &i.to_string(), i as f64);
        }
        assert_eq!(
            (s.received(), s.topics()),
            (1, 1),
            "nothing shown while paused"
        );
        // Five held of 1 + 1 + overhead bytes each: within the cap.
        assert_eq!(s.paused(), Some((5, 0)));
        s.resume();
        assert_eq!(s.paused(), None);
        assert_eq!((s.received(), s.topics()), (6, 4));
        let a = s.find("a").unwrap();
        let last: Vec<&[u8]> = s.history(a).map(|e| &e.payload[..]).collect();
        assert_eq!(last, [&b"1"[..], b"0", b"2"], "in arrival order");

        // Beyond the cap the oldest held go, counted.
        s.pause();
        for i in 0..10 {
            put(&mut s, "flood", &"x".repeat(ENTRY_OVERHEAD + i), i as f64);
        }
        let (held, dropped) = s.paused().unwrap();
        assert!(held < 10 && dropped == 10 - held as u64, "{held} {dropped}");
        s.resume();
        let flood = s.find("flood").unwrap();
        assert_eq!(
            s.history(flood).last().map(|e| e.payload.len()),
            Some(ENTRY_OVERHEAD + 9),
            "the newest held is kept"
        );
    }

    fn names(store: &mut Store) -> Vec<String> {
        let rows = store.rows().to_vec();
        rows.iter()
            .map(|&id| {
                let v = store.view(id, 0.0).unwrap();
                format!("{}{}", " ".repeat(v.depth.into()), v.name)
            })
            .collect()
    }

    #[test]
    fn retained_topics_below_a_node_and_new_caps() {
        let mut s = Store::default();
        s.ingest("a/b", b"1", 0, true, Props::default(), 0.0);
        s.ingest("a/b/c", b"2", 0, true, Props::default(), 0.0);
        s.ingest("a/d", b"3", 0, false, Props::default(), 0.0);
        s.ingest("x", b"4", 0, true, Props::default(), 0.0);
        let a = s.find("a").unwrap();
        assert_eq!(s.retained_below(a), ["a/b", "a/b/c"]);
        // Deleted (an empty message reaches subscribers without RETAIN): no longer listed.
        s.ingest("a/b", b"", 0, false, Props::default(), 1.0);
        assert_eq!(s.retained_below(a), ["a/b/c"]);
        assert_eq!(s.retained_below(ROOT), ["a/b/c", "x"]);

        for i in 0..10 {
            put(&mut s, "a/d", &i.to_string(), 2.0);
        }
        let d = s.find("a/d").unwrap();
        assert_eq!(s.history(d).count(), 11);
        s.set_caps(Caps {
            history_per_topic: 3,
            memory_bytes: 32 * 1024 * 1024,
        });
        let kept: Vec<&[u8]> = s.history(d).map(|e| &e.payload[..]).collect();
        assert_eq!(kept, [b"7", b"8", b"9"]);
        s.set_caps(Caps {
            history_per_topic: 3,
            memory_bytes: 2 * (ENTRY_OVERHEAD + 1),
        });
        assert_eq!(s.memory().1, 2, "the two newest messages fit");
        assert_eq!(s.history(d).count(), 2);
    }

    #[test]
    fn builds_a_sorted_tree_with_counts() {
        let mut s = Store::default();
        put(&mut s, "plant/line-2/temp", "20", 0.0);
        put(&mut s, "plant/line-1/temp", "21", 0.0);
        put(&mut s, "plant/line-1/temp", "22", 0.0);
        put(&mut s, "plant/line-1", "on", 0.0);
        put(&mut s, "$SYS/uptime", "5", 0.0);
        assert_eq!(
            names(&mut s),
            [
                "$SYS", " uptime", "plant", " line-1", "  temp", " line-2", "  temp"
            ]
        );
        let plant = s.find("plant").unwrap();
        let line1 = s.find("plant/line-1").unwrap();
        let v = s.view(plant, 0.0).unwrap();
        assert_eq!((v.messages, v.total), (0, 4));
        let v = s.view(line1, 0.0).unwrap();
        assert_eq!((v.messages, v.total), (1, 3));
        assert_eq!(
            s.topic(s.find("plant/line-1/temp").unwrap()),
            "plant/line-1/temp"
        );
        assert_eq!((s.received(), s.topics()), (5, 4));
        // Collapsing hides the levels below.
        s.set_expanded(plant, false);
        assert_eq!(names(&mut s), ["$SYS", " uptime", "plant"]);
    }

    /// Issue #21: levels sort as people read them; Find matches last values too.
    #[test]
    fn natural_order_and_find_in_values() {
        let mut s = Store::default();
        for (t, v) in [("dev-10/t", "1"), ("dev-2/t", "OVERHEAT"), ("dev-1/t", "3")] {
            put(&mut s, t, v, 0.0);
        }
        assert_eq!(
            names(&mut s),
            ["dev-1", " t", "dev-2", " t", "dev-10", " t"]
        );
        assert!(!s.filtering());
        s.set_filter("overheat");
        assert!(s.filtering());
        assert_eq!(names(&mut s), ["dev-2", " t"]);
        s.set_filter("nothing like it");
        assert!(names(&mut s).is_empty());
        s.set_filter("");
        assert_eq!(names(&mut s).len(), 6);
    }

    /// Issue #21, bug 3: the retained marker followed only the last delivery — a live message
    /// (RETAIN 0 [MQTT-3.3.1-9]) hid a retained one the broker still holds.
    #[test]
    fn the_retained_marker_stays_until_a_deletion() {
        let mut s = Store::default();
        s.ingest("a", b"1", 0, true, Props::default(), 0.0);
        let a = s.find("a").unwrap();
        s.ingest("a", b"2", 0, false, Props::default(), 1.0);
        assert!(s.view(a, 1.0).unwrap().retained, "still held by the broker");
        s.ingest("a", b"", 0, false, Props::default(), 2.0);
        assert!(
            !s.view(a, 2.0).unwrap().retained,
            "an empty message deletes it"
        );
        s.note_retained("a", false);
        assert!(
            s.view(a, 2.0).unwrap().retained,
            "the app's own retained publish"
        );
        assert_eq!(
            s.retained_below(a),
            Vec::<String>::new(),
            "nothing kept to delete yet"
        );
    }

    /// Issue #21, bug 7: a topic opened by its URL is shown, its levels opened.
    #[test]
    fn a_deep_topic_is_revealed() {
        let mut s = Store::default();
        put(&mut s, "a/b/c/d/e", "1", 0.0);
        let deep = s.find("a/b/c/d/e").unwrap();
        assert!(
            !s.rows().contains(&deep),
            "collapsed below the default depth"
        );
        s.reveal(deep);
        assert!(s.rows().contains(&deep));
    }

    #[test]
    fn empty_levels_and_deep_topics() {
        let mut s = Store::default();
        put(&mut s, "/a//b", "x", 0.0);
        let id = s.find("/a//b").unwrap();
        assert_eq!(s.topic(id), "/a//b");
        assert_eq!(s.view(id, 0.0).unwrap().depth, 3);
    }

    #[test]
    fn history_is_bounded_per_topic_and_in_total() {
        let mut s = Store::new(Caps {
            history_per_topic: 3,
            memory_bytes: 10 * (100 + ENTRY_OVERHEAD),
        });
        for i in 0..5 {
            put(&mut s, "a", &format!("{i}"), f64::from(i));
        }
        let a = s.find("a").unwrap();
        let kept: Vec<_> = s.history(a).map(|e| e.payload.clone()).collect();
        assert_eq!(kept, ["2", "3", "4"]);
        // 100-byte payloads on many topics: the oldest go first, whatever their topic.
        let big = "x".repeat(100);
        for i in 0..20 {
            put(&mut s, &format!("t/{i}"), &big, 10.0 + f64::from(i));
        }
        let (bytes, entries) = s.memory();
        assert!(bytes <= 10 * (100 + ENTRY_OVERHEAD), "{bytes}");
        assert_eq!(entries, 10);
        assert_eq!(
            s.history(a).count(),
            0,
            "the oldest, on topic a, went first"
        );
        assert_eq!(s.history(s.find("t/19").unwrap()).count(), 1);
        assert_eq!(s.history(s.find("t/9").unwrap()).count(), 0);
        assert!(s.evicted() >= 10);
        // The latest value's preview stays when its history is gone.
        assert_eq!(&s.view(a, 0.0).unwrap().preview.0[..], b"4");
    }

    #[test]
    fn the_eviction_queue_stays_small_with_a_busy_topic() {
        let mut s = Store::new(Caps {
            history_per_topic: 2,
            memory_bytes: usize::MAX,
        });
        for i in 0..100_000 {
            put(&mut s, "busy", "v", f64::from(i));
        }
        assert!(s.fifo.len() <= 2 * s.memory().1 + 1024, "{}", s.fifo.len());
    }

    #[test]
    fn filters_by_text_or_mqtt_filter() {
        let mut s = Store::default();
        for t in [
            "plant/line-1/temp",
            "plant/line-2/pressure",
            "office/temp",
            "$SYS/load",
        ] {
            put(&mut s, t, "1", 0.0);
        }
        s.set_filter("TEMP");
        assert_eq!(
            names(&mut s),
            ["office", " temp", "plant", " line-1", "  temp"]
        );
        s.set_filter("plant/+/pressure");
        assert_eq!(names(&mut s), ["plant", " line-2", "  pressure"]);
        // `#` does not match `$` topics [MQTT-4.7.2-1].
        s.set_filter("#");
        assert!(!names(&mut s).contains(&"$SYS".to_owned()));
        // Not a valid filter: taken as text.
        s.set_filter("a/#/b");
        assert!(names(&mut s).is_empty());
        s.set_filter("");
        assert_eq!(names(&mut s).len(), 9);
    }

    #[test]
    fn rate_is_messages_per_second_lately() {
        let mut s = Store::default();
        for i in 0..30 {
            put(&mut s, "r", "1", f64::from(i) * 100.0);
        }
        let r = s.find("r").unwrap();
        let rate = s.view(r, 3000.0).unwrap().rate;
        assert!((9.0..=11.0).contains(&rate), "{rate}");
        assert_eq!(s.view(r, 60_000.0).unwrap().rate, 0.0, "quiet for a minute");
    }

    #[test]
    fn a_hundred_thousand_topics() {
        let mut s = Store::default();
        for i in 0..100_000u32 {
            put(&mut s, &format!("site/{}/dev-{i}/value", i % 100), "1", 0.0);
        }
        assert_eq!(s.topics(), 100_000);
        // site (open) → 100 groups (open) → their devices (closed): 1 + 100 + 100,000 rows.
        assert_eq!(s.rows().len(), 1 + 100 + 100_000);
        let site = s.find("site").unwrap();
        s.set_expanded(site, false);
        assert_eq!(s.rows().len(), 1);
    }
}
