//! Counters for `GET /metrics` (Prometheus text format 0.0.4), kept in atomics: recording is
//! a relaxed increment on the forwarding path, never a lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use kite_mqtt::codec::PacketType;

const PACKET_TYPES: [PacketType; 15] = [
    PacketType::Connect,
    PacketType::ConnAck,
    PacketType::Publish,
    PacketType::PubAck,
    PacketType::PubRec,
    PacketType::PubRel,
    PacketType::PubComp,
    PacketType::Subscribe,
    PacketType::SubAck,
    PacketType::Unsubscribe,
    PacketType::UnsubAck,
    PacketType::PingReq,
    PacketType::PingResp,
    PacketType::Disconnect,
    PacketType::Auth,
];

/// Why a session ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum EndKind {
    Browser = 0,
    Broker,
    Violation,
    Error,
    Shutdown,
    ConnectTimeout,
    UpstreamUnreachable,
    AuthFailed,
}

const END_NAMES: [&str; 8] = [
    "browser_closed",
    "broker_closed",
    "violation",
    "error",
    "shutdown",
    "connect_timeout",
    "upstream_unreachable",
    "auth_failed",
];

/// What a role's topic rules refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// A PUBLISH.
    Publish = 0,
    /// One filter of a SUBSCRIBE.
    Subscribe,
    /// A CONNECT's Will.
    Will,
}

const DENIAL_NAMES: [&str; 3] = ["publish", "subscribe", "will"];

/// Upper bounds (seconds) of the forwarding latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 10] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25,
];

/// Which way a chunk went through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Browser → broker: from the WebSocket frame read to the bytes written to the broker.
    Up = 0,
    /// Broker → browser: from the bytes read from the broker to the frame sent.
    Down = 1,
}

/// A Prometheus histogram in atomics: counts per bucket (not cumulative), sum in µs, count.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn record(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
}

/// All counters of one gateway.
#[derive(Debug, Default)]
pub struct Metrics {
    sessions_total: AtomicU64,
    sessions_open: AtomicU64,
    packets_in: [AtomicU64; 16],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    ends: [AtomicU64; 8],
    upstream_errors: AtomicU64,
    throttled: AtomicU64,
    paced: [AtomicU64; 2],
    denied: [AtomicU64; 3],
    latency: [Histogram; 2],
    /// The history recorder's session is up (1) or not (0).
    pub(crate) history_up: AtomicU64,
    /// Messages the recorder committed to the history store.
    pub(crate) history_recorded: AtomicU64,
}

impl Metrics {
    /// A session started (WebSocket upgraded).
    pub fn session_opened(&self) {
        self.sessions_total.fetch_add(1, Relaxed);
        self.sessions_open.fetch_add(1, Relaxed);
    }

    /// A session ended.
    pub fn session_closed(&self, why: EndKind) {
        self.sessions_open.fetch_sub(1, Relaxed);
        self.ends[why as usize].fetch_add(1, Relaxed);
    }

    /// A packet from a browser was forwarded.
    pub fn packet_in(&self, packet: PacketType, bytes: usize) {
        self.packets_in[packet as usize].fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }

    /// Bytes from a broker were sent to a browser.
    pub fn bytes_out(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    /// No address of an upstream answered.
    pub fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Relaxed);
    }

    /// How long one chunk took through the gateway.
    pub fn forwarded(&self, direction: Direction, took: std::time::Duration) {
        self.latency[direction as usize].record(took);
    }

    /// A session was over its publish rate and paused.
    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Relaxed);
    }

    /// A hot session's read waited for the timer's tick (see `proxy::Pacer`).
    pub fn paced(&self, direction: Direction) {
        self.paced[direction as usize].fetch_add(1, Relaxed);
    }

    /// A role's topic rules refused something.
    pub fn denied(&self, what: Denial) {
        self.denied[what as usize].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let one = |v: &AtomicU64| vec![(String::new(), v.load(Relaxed))];
        metric(
            "kite_sessions_total",
            "counter",
            "WebSocket MQTT sessions started.",
            &one(&self.sessions_total),
        );
        metric(
            "kite_sessions_open",
            "gauge",
            "WebSocket MQTT sessions open now.",
            &one(&self.sessions_open),
        );
        let packets: Vec<(String, u64)> = PACKET_TYPES
            .iter()
            .map(|t| {
                (
                    format!("{{type=\"{t}\"}}"),
                    self.packets_in[*t as usize].load(Relaxed),
                )
            })
            .collect();
        metric(
            "kite_packets_in_total",
            "counter",
            "MQTT packets received from browsers, by type (those refused by topic rules included).",
            &packets,
        );
        metric(
            "kite_bytes_in_total",
            "counter",
            "Bytes from browsers forwarded to brokers.",
            &one(&self.bytes_in),
        );
        metric(
            "kite_bytes_out_total",
            "counter",
            "Bytes from brokers sent to browsers.",
            &one(&self.bytes_out),
        );
        let ends: Vec<(String, u64)> = END_NAMES
            .iter()
            .zip(&self.ends)
            .map(|(n, v)| (format!("{{reason=\"{n}\"}}"), v.load(Relaxed)))
            .collect();
        metric(
            "kite_sessions_closed_total",
            "counter",
            "Sessions ended, by reason.",
            &ends,
        );
        metric(
            "kite_upstream_connect_errors_total",
            "counter",
            "Sessions for which no upstream address answered.",
            &one(&self.upstream_errors),
        );
        metric(
            "kite_publish_throttled_total",
            "counter",
            "Pauses in reading a browser that was over its publish rate.",
            &one(&self.throttled),
        );
        let paced: Vec<(String, u64)> = ["up", "down"]
            .iter()
            .zip(&self.paced)
            .map(|(n, v)| (format!("{{direction=\"{n}\"}}"), v.load(Relaxed)))
            .collect();
        metric(
            "kite_paced_reads_total",
            "counter",
            "Reads of a busy session (over 5,000 wake-ups a second) that waited for the next 1 ms timer tick, so that what arrived meanwhile went in one read and one write.",
            &paced,
        );
        let denied: Vec<(String, u64)> = DENIAL_NAMES
            .iter()
            .zip(&self.denied)
            .map(|(n, v)| (format!("{{what=\"{n}\"}}"), v.load(Relaxed)))
            .collect();
        metric(
            "kite_denied_total",
            "counter",
            "Packets from browsers refused by their role's topic rules (in front of an upstream), by what was refused.",
            &denied,
        );
        let name = "kite_forward_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time a chunk takes through the gateway: browser frame read to bytes written to the broker (up), broker bytes read to frame sent (down).\n# TYPE {name} histogram"
        );
        for (direction, h) in ["up", "down"].iter().zip(&self.latency) {
            let mut cumulative = 0;
            for (bound, count) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
                cumulative += count.load(Relaxed);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{direction=\"{direction}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let total = h.count.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{direction=\"{direction}\",le=\"+Inf\"}} {total}\n{name}_sum{{direction=\"{direction}\"}} {}\n{name}_count{{direction=\"{direction}\"}} {total}",
                h.sum_us.load(Relaxed) as f64 / 1e6
            );
        }
        out
    }
}

/// The password checks' counters (see [`crate::logins`]).
/// The history recorder and store (`[history]`).
/// Writes one metric per row: (name, "gauge" or "counter", help, value).
pub fn write_rows(out: &mut String, rows: &[(&str, &str, &str, u64)]) {
    for (name, kind, help, v) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
}

pub fn render_history(m: &Metrics, usage: &kite_data::Usage) -> String {
    let mut out = String::new();
    write_rows(
        &mut out,
        &[
            (
                "kite_history_up",
                "gauge",
                "Whether the history recorder's session is up (1) or not (0).",
                m.history_up.load(Relaxed),
            ),
            (
                "kite_history_recorded_total",
                "counter",
                "Messages the history recorder committed.",
                m.history_recorded.load(Relaxed),
            ),
            (
                "kite_history_bytes",
                "gauge",
                "Bytes the history store counts against [history] max_bytes.",
                usage.bytes,
            ),
            (
                "kite_history_topics",
                "gauge",
                "Topics recorded.",
                usage.topics,
            ),
            (
                "kite_history_messages",
                "gauge",
                "Messages kept in the history store.",
                usage.messages,
            ),
            (
                "kite_history_dropped_total",
                "counter",
                "Recorded messages removed to stay within [history] max_bytes.",
                usage.dropped,
            ),
            (
                "kite_history_expired_total",
                "counter",
                "Recorded messages removed for their age ([history] retention_days).",
                usage.expired,
            ),
        ],
    );
    out
}

pub fn render_logins(s: &kite_broker::logins::LoginStats) -> String {
    let mut out = String::new();
    for (name, help, v) in [
        (
            "kite_login_failures_total",
            "Logins refused (unknown user, wrong password, bad token), from browsers, devices and the publish API.",
            &s.failed,
        ),
        (
            "kite_login_delayed_total",
            "Login checks delayed because their source address had failed before.",
            &s.delayed,
        ),
        (
            "kite_login_busy_total",
            "Logins refused (server busy) because their check could not start within the connect timeout.",
            &s.busy,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Relaxed)
        );
    }
    out
}

/// The embedded broker's counters in the Prometheus text exposition.
pub fn render_broker(broker: &kite_broker::Broker) -> String {
    let s = broker.stats();
    let rows: [(&str, &str, &str, u64); 17] = [
        (
            "kite_broker_clients_connected",
            "gauge",
            "Clients connected to the embedded broker.",
            s.clients_connected.load(Relaxed),
        ),
        (
            "kite_broker_sessions",
            "gauge",
            "Sessions the embedded broker holds, connected or not.",
            broker.session_count() as u64,
        ),
        (
            "kite_broker_subscriptions",
            "gauge",
            "Subscriptions across all sessions.",
            broker.subscription_count() as u64,
        ),
        (
            "kite_broker_retained_messages",
            "gauge",
            "Topics with a retained message.",
            broker.retained_count() as u64,
        ),
        (
            "kite_broker_messages_received_total",
            "counter",
            "PUBLISH packets received from clients.",
            s.messages_received.load(Relaxed),
        ),
        (
            "kite_broker_messages_sent_total",
            "counter",
            "PUBLISH packets sent to clients.",
            s.messages_sent.load(Relaxed),
        ),
        (
            "kite_broker_messages_dropped_total",
            "counter",
            "Deliveries dropped: full session queue, QoS 0 to an offline session, or over the client's maximum packet size.",
            s.messages_dropped.load(Relaxed),
        ),
        (
            "kite_broker_messages_expired_total",
            "counter",
            "Deliveries dropped because their message expiry interval passed.",
            s.messages_expired.load(Relaxed),
        ),
        (
            "kite_broker_publishes_denied_total",
            "counter",
            "PUBLISH packets refused by the role's topic rules.",
            s.publishes_denied.load(Relaxed),
        ),
        (
            "kite_broker_subscriptions_denied_total",
            "counter",
            "Subscriptions refused by the role's topic rules.",
            s.subscriptions_denied.load(Relaxed),
        ),
        (
            "kite_broker_deliveries_denied_total",
            "counter",
            "Deliveries not sent because the role may not read their topic (deny_subscribe).",
            s.deliveries_denied.load(Relaxed),
        ),
        (
            "kite_broker_topics_refused_total",
            "counter",
            "Topic names and filters refused for [broker] max_topic_levels or max_topic_length.",
            s.topics_refused.load(Relaxed),
        ),
        (
            "kite_broker_subscriptions_refused_total",
            "counter",
            "Subscriptions refused for [broker] max_subscriptions (per session).",
            s.subscriptions_refused.load(Relaxed),
        ),
        (
            "kite_broker_retained_refused_total",
            "counter",
            "Retained PUBLISHes refused for [broker] max_retained_messages or max_retained_bytes.",
            s.retained_refused.load(Relaxed),
        ),
        (
            "kite_broker_user_properties_refused_total",
            "counter",
            "Connections closed for a packet with more than [limits] max_user_properties.",
            s.user_properties_refused.load(Relaxed),
        ),
        (
            "kite_broker_bytes_received_total",
            "counter",
            "Bytes read from clients.",
            s.bytes_received.load(Relaxed),
        ),
        (
            "kite_broker_bytes_sent_total",
            "counter",
            "Bytes written to clients.",
            s.bytes_sent.load(Relaxed),
        ),
    ];
    let mut out = String::with_capacity(2048);
    for (name, kind, help, v) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    // Each bridge's state, one family per figure, one line per bridge (and direction).
    let bridges = broker.bridges();
    let statuses = broker.bridge_statuses();
    if !bridges.is_empty() {
        let line = |labels: String, v: u64| format!("{labels} {v}");
        let families: [(&str, &str, &str, Vec<String>); 5] = [
            (
                "kite_bridge_up",
                "gauge",
                "1 while the bridge is connected to its remote broker.",
                bridges
                    .iter()
                    .map(|(n, b)| line(format!("{{bridge=\"{n}\"}}"), u64::from(b.up())))
                    .collect(),
            ),
            (
                "kite_bridge_messages_total",
                "counter",
                "Messages carried, by direction (out: here to the remote, acknowledged by it at QoS 1 and 2; in: from the remote, published here).",
                bridges
                    .iter()
                    .flat_map(|(n, b)| {
                        [("out", b.messages_out()), ("in", b.messages_in())]
                            .map(|(d, v)| line(format!("{{bridge=\"{n}\",direction=\"{d}\"}}"), v))
                    })
                    .collect(),
            ),
            (
                "kite_bridge_queued",
                "gauge",
                "Messages waiting here for the remote broker, or sent and not yet acknowledged by it.",
                statuses
                    .iter()
                    .map(|b| line(format!("{{bridge=\"{}\"}}", b.name), b.queued as u64))
                    .collect(),
            ),
            (
                "kite_bridge_reconnects_total",
                "counter",
                "Connections to the remote broker lost or refused.",
                bridges
                    .iter()
                    .map(|(n, b)| line(format!("{{bridge=\"{n}\"}}"), b.reconnects()))
                    .collect(),
            ),
            (
                "kite_bridge_dropped_total",
                "counter",
                "Messages dropped: beyond the bridge's max_queued_messages or max_queued_bytes, or not forwardable (too large for the remote, refused by it).",
                statuses
                    .iter()
                    .map(|b| line(format!("{{bridge=\"{}\"}}", b.name), b.dropped))
                    .collect(),
            ),
        ];
        for (name, kind, help, lines) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for l in lines {
                let _ = writeln!(out, "{name}{l}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.session_opened();
        m.packet_in(PacketType::Publish, 10);
        m.packet_in(PacketType::Publish, 5);
        m.session_closed(EndKind::Violation);
        m.forwarded(Direction::Up, std::time::Duration::from_micros(70));
        m.forwarded(Direction::Up, std::time::Duration::from_secs(1));
        let text = m.render();
        for line in [
            "kite_sessions_total 1",
            "kite_sessions_open 0",
            "kite_packets_in_total{type=\"PUBLISH\"} 2",
            "kite_bytes_in_total 15",
            "kite_sessions_closed_total{reason=\"violation\"} 1",
            "# TYPE kite_sessions_open gauge",
            "kite_forward_seconds_bucket{direction=\"up\",le=\"0.00005\"} 0",
            "kite_forward_seconds_bucket{direction=\"up\",le=\"0.0001\"} 1",
            "kite_forward_seconds_bucket{direction=\"up\",le=\"0.25\"} 1",
            "kite_forward_seconds_bucket{direction=\"up\",le=\"+Inf\"} 2",
            "kite_forward_seconds_count{direction=\"up\"} 2",
            "kite_forward_seconds_count{direction=\"down\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}
