//! `kite-bench`: Kite against the alternatives, side by side, with one load generator (this
//! program). Run by `cargo xtask bench broker` and `cargo xtask bench gateway`.
//!
//! `broker`: Kite's embedded broker against Debian's mosquitto, over TCP and over WebSocket.
//!
//! Loads: 4 publishers → 1 subscriber (fan-in) and 1 publisher → 50 subscribers (fan-out), QoS 0
//! and 1, 64 B and 16 KiB payloads, MQTT 3.1.1, every client on its own connection. Each
//! publisher sends a fixed number of messages as fast as the broker takes them (QoS 1: 100
//! unacknowledged at most); a message carries its send time, so each delivery gives a latency
//! (under full load: it includes queueing). Then paced loads both brokers carry (4 × 2,500
//! msgs/s → 1, 1 × 200 msgs/s → 50), each message carrying the time it was due. Also the
//! resident memory of the broker process with 10,000 idle clients, over TCP and over WebSocket (`--only idle`);
//! and bridged: 4 → 1 QoS 1 64 B with the publishers on a broker that bridges them to a mosquitto
//! the subscriber is on — Kite's bridge against mosquitto's (`--only bridged`).
//!
//! `gateway`: MQTT over WebSocket to mosquitto four ways — (a) plain TCP to mosquitto (the
//! baseline), (b) mosquitto's own websockets listener, (c) websockify (`binary` subprotocol) in
//! front of mosquitto's TCP, (d) Kite's gateway in front of mosquitto's TCP: 4 → 1 at QoS 0 and
//! 1 (64 B) at full speed, with the CPU time per message of the process in front (all of
//! websockify's processes) and of it with mosquitto (read from `/proc` around each run), the
//! latency added at a paced 10,000 msgs/s, the delivery time of one 1 MB message to a WebSocket
//! subscriber, and the gateway's memory per idle WebSocket session. `--saturated`: only the
//! full-speed rows.
//!
//! `app`: the browser app under load — mosquitto, Kite's gateway serving the built app, headless
//! Chromium connected and subscribed to everything; a device publishes 20,000 msgs/s (QoS 0,
//! paced every 10 ms) over 1,000 topics for 10 s. Reports what the app counted, how its count
//! followed the load, how soon it had everything, the main thread's long tasks
//! (PerformanceObserver `longtask`: any task over 50 ms) and the JS heap.
//!
//! Usage: kite-bench broker  --kite PATH --mosquitto PATH [--write FILE] [--quick] [--only TEXT] [--repeat N] [--runs N]
//!        kite-bench gateway --kite PATH --mosquitto PATH --websockify PYTHONPATH [--write FILE] [--quick] [--runs N] [--saturated]
//!        kite-bench app     --kite PATH --mosquitto PATH --assets DIR [--write FILE] [--quick]
//!        kite-bench history --kite PATH --mosquitto PATH [--assets DIR] [--write FILE] [--quick] [--only store|broker|paced|chart]
//!        kite-bench devices --kite PATH --mosquitto PATH [--write FILE] [--quick]
//!
//! `devices`: the device monitor with 10,000 devices — the devices API's answer times, memory
//! per device, the broker's deliveries with and without the monitor (tests/src/bench/devices.rs).
//!
//! `history`: the history store — ingest, series queries, export, bytes on disk — and ingest
//! through the embedded broker with its recorder (tests/src/bench/history.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use kite_mqtt::codec::{Ack, Connect, Publish, Subscribe, Subscription};
use kite_mqtt::{Limits, Packet, QoS, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const V: Version = Version::V3_1_1;
/// QoS 1 messages a publisher keeps unacknowledged at most.
const WINDOW: usize = 100;
/// A scenario that has not finished by then is reported with what was delivered.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(30);
/// How much a TCP client reads at once at most.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Tcp,
    Ws,
}

#[derive(Clone, Debug)]
struct Target {
    name: &'static str,
    tcp: u16,
    ws: String,
    /// The WebSocket subprotocol to offer (`mqtt`; websockify only takes `binary`).
    ws_protocol: &'static str,
    pid: u32,
}

// ---- connections -------------------------------------------------------------------------

enum Rd {
    Tcp(tokio::io::ReadHalf<TcpStream>),
    Ws(futures_util::stream::SplitStream<WsStream>),
}
enum Wr {
    Tcp(tokio::io::WriteHalf<TcpStream>),
    Ws(futures_util::stream::SplitSink<WsStream, Message>),
}
type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

struct Reader {
    rd: Rd,
    buf: BytesMut,
}

impl Reader {
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self.buffered() {
                return Some(p);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// A whole packet already read, if any.
    fn buffered(&mut self) -> Option<Packet> {
        kite_mqtt::decode(&mut self.buf, V, &Limits::default())
            .ok()
            .flatten()
    }

    /// Reads more bytes; `false` when the connection is gone.
    async fn fill(&mut self) -> bool {
        loop {
            match &mut self.rd {
                Rd::Tcp(r) => {
                    // Read in large chunks, as real clients do: a full `BytesMut` only grows
                    // by 64 bytes, which made every TCP read here a fraction of a packet.
                    if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                        self.buf.reserve(READ_CHUNK);
                    }
                    return matches!(r.read_buf(&mut self.buf).await, Ok(n) if n > 0);
                }
                Rd::Ws(r) => match r.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        self.buf.extend_from_slice(&b);
                        return true;
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return false,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
}

impl Wr {
    async fn send(&mut self, bytes: Bytes) -> bool {
        match self {
            Wr::Tcp(w) => w.write_all(&bytes).await.is_ok(),
            Wr::Ws(w) => w.send(Message::Binary(bytes)).await.is_ok(),
        }
    }
}

async fn open(target: &Target, transport: Transport, client_id: &str) -> (Reader, Wr) {
    open_session(target, transport, client_id, true).await
}

/// [`open`], with Clean Session as `clean` says (`false`: a persistent session, whose
/// deliveries a broker with persistence keeps on disk).
async fn open_session(
    target: &Target,
    transport: Transport,
    client_id: &str,
    clean: bool,
) -> (Reader, Wr) {
    let (rd, mut wr) = match transport {
        Transport::Tcp => {
            let s = TcpStream::connect(("127.0.0.1", target.tcp)).await.unwrap();
            s.set_nodelay(true).unwrap();
            let (r, w) = tokio::io::split(s);
            (Rd::Tcp(r), Wr::Tcp(w))
        }
        Transport::Ws => {
            let mut req = target.ws.as_str().into_client_request().unwrap();
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                target.ws_protocol.parse().unwrap(),
            );
            // TCP_NODELAY, like the TCP clients (Nagle would add up to 40 ms).
            let (ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true)
                .await
                .unwrap();
            let (w, r) = ws.split();
            (Rd::Ws(r), Wr::Ws(w))
        }
    };
    let mut b = BytesMut::new();
    Packet::Connect(Box::new(Connect {
        version: V,
        client_id: client_id.into(),
        keep_alive: 120,
        clean_start: clean,
        ..Connect::default()
    }))
    .encode(V, &mut b)
    .unwrap();
    assert!(wr.send(b.freeze()).await);
    let mut reader = Reader {
        rd,
        buf: BytesMut::new(),
    };
    match reader.recv().await {
        Some(Packet::ConnAck(a)) if !a.reason.is_error() => {}
        other => panic!("{}: no CONNACK for {client_id}: {other:?}", target.name),
    }
    (reader, wr)
}

fn nanos(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

// ---- one scenario ------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Load {
    publishers: usize,
    subscribers: usize,
    qos: QoS,
    size: usize,
    per_publisher: usize,
    /// Messages per second per publisher (sent in 10 ms ticks); `None`: as fast as possible.
    rate: Option<u32>,
    /// Every client with a persistent session (Clean Session 0), as devices that must not
    /// miss a message connect; else clean sessions.
    persistent: bool,
}

struct Outcome {
    delivered: usize,
    expected: usize,
    secs: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU time per delivered message of the process in front of the broker (the gateway,
    /// websockify), in µs; NaN when there is none or it was not measured.
    cpu_front_us: f64,
    /// The same for the front and the broker together.
    cpu_all_us: f64,
}

impl Outcome {
    /// Deliveries per second.
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.secs.max(1e-9)
    }
}

async fn subscriber(
    target: Target,
    transport: Transport,
    id: String,
    load: Load,
    epoch: Instant,
    ready: tokio::sync::mpsc::Sender<()>,
) -> (Vec<u64>, u64) {
    let (mut rd, mut wr) = open_session(&target, transport, &id, !load.persistent).await;
    let mut b = BytesMut::new();
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![Subscription::new("bench/#", load.qos)],
        properties: Default::default(),
    })
    .encode(V, &mut b)
    .unwrap();
    wr.send(b.freeze()).await;
    match rd.recv().await {
        Some(Packet::SubAck(_)) => {}
        other => panic!("no SUBACK: {other:?}"),
    }
    ready.send(()).await.unwrap();
    let expected = load.publishers * load.per_publisher;
    let mut latencies = Vec::with_capacity(expected);
    let mut acks = BytesMut::new();
    let mut last = 0;
    let deadline = tokio::time::Instant::from_std(epoch) + SCENARIO_TIMEOUT;
    'run: while latencies.len() < expected {
        // Everything already read, then the acknowledgements for it in one write, then read.
        while let Some(p) = rd.buffered() {
            match p {
                Packet::Publish(p) => {
                    let sent = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                    last = nanos(epoch);
                    latencies.push(last.saturating_sub(sent));
                    let ack = match p.qos {
                        QoS::AtMostOnce => continue,
                        QoS::AtLeastOnce => Packet::PubAck(Ack::new(p.packet_id)),
                        // Delivered on arrival; PUBREC now, PUBCOMP when PUBREL comes.
                        QoS::ExactlyOnce => Packet::PubRec(Ack::new(p.packet_id)),
                    };
                    ack.encode(V, &mut acks).unwrap();
                }
                Packet::PubRel(r) => Packet::PubComp(Ack::new(r.packet_id))
                    .encode(V, &mut acks)
                    .unwrap(),
                _ => {}
            }
        }
        if !acks.is_empty() && !wr.send(acks.split().freeze()).await {
            break;
        }
        if latencies.len() >= expected {
            break;
        }
        match tokio::time::timeout_at(deadline, rd.fill()).await {
            Ok(true) => {}
            Ok(false) | Err(_) => break 'run,
        }
    }
    (latencies, last)
}

async fn publisher(target: Target, transport: Transport, id: String, load: Load, epoch: Instant) {
    let (mut rd, mut wr) = open_session(&target, transport, &id, !load.persistent).await;
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    // QoS 2: each PUBREC's id, for the PUBREL this task writes (the reader cannot).
    let (rel_tx, mut rel_rx) = tokio::sync::mpsc::unbounded_channel::<u16>();
    let acks = {
        let window = window.clone();
        tokio::spawn(async move {
            while let Some(p) = rd.recv().await {
                match p {
                    Packet::PubAck(_) | Packet::PubComp(_) => window.add_permits(1),
                    Packet::PubRec(r) => {
                        let _ = rel_tx.send(r.packet_id);
                    }
                    _ => {}
                }
            }
        })
    };
    let acknowledged = load.qos != QoS::AtMostOnce;
    let pad = vec![0x5a; load.size.saturating_sub(8)];
    let mut batch = BytesMut::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let per_tick = load.rate.map(|r| (r / 100).max(1) as usize);
    // Paced: when the current tick's messages were due.
    let mut due = None;
    for i in 0..load.per_publisher {
        if let Some(n) = per_tick
            && i % n == 0
        {
            due = Some(ticks.tick().await.into_std());
        }
        if load.qos == QoS::AtLeastOnce {
            window.acquire().await.unwrap().forget();
        } else if load.qos == QoS::ExactlyOnce {
            // Waiting for room in the window, answer the PUBRECs that make it.
            loop {
                tokio::select! {
                    permit = window.acquire() => {
                        permit.unwrap().forget();
                        break;
                    }
                    Some(id) = rel_rx.recv() => {
                        if !send_pubrels(&mut wr, id, &mut rel_rx).await {
                            return;
                        }
                    }
                }
            }
        }
        let mut payload = BytesMut::with_capacity(load.size.max(8));
        // Paced, a message carries the time it was due, not the time it went out: a broker
        // that holds the publisher back (a full QoS 1 window) is charged for the wait, instead
        // of having it left out of the latency (coordinated omission). The interval keeps its
        // schedule when the publisher falls behind (its ticks then fire at once).
        payload.put_u64(match due {
            Some(t) => t.saturating_duration_since(epoch).as_nanos() as u64,
            None => nanos(epoch),
        });
        payload.put_slice(&pad);
        Packet::Publish(Publish {
            qos: load.qos,
            topic: "bench/data".into(),
            packet_id: if load.qos == QoS::AtMostOnce {
                0
            } else {
                (i % 65_000 + 1) as u16
            },
            payload: payload.freeze(),
            ..Publish::default()
        })
        .encode(V, &mut batch)
        .unwrap();
        // Several packets per write (per WebSocket frame): up to 64 KiB, or when the QoS 1
        // window is used up.
        while let Ok(id) = rel_rx.try_recv() {
            Packet::PubRel(Ack::new(id)).encode(V, &mut batch).unwrap();
        }
        let window_empty = acknowledged && window.available_permits() == 0;
        let tick_done = per_tick.is_some_and(|n| (i + 1) % n == 0);
        let flush =
            batch.len() >= 64 * 1024 || window_empty || tick_done || i + 1 == load.per_publisher;
        if flush && !wr.send(batch.split().freeze()).await {
            break;
        }
    }
    if acknowledged {
        // Wait for the last acknowledgements (bounded by the scenario timeout), answering
        // the last PUBRECs.
        let last = async {
            loop {
                tokio::select! {
                    all = window.acquire_many(WINDOW as u32) => {
                        let _ = all;
                        break;
                    }
                    Some(id) = rel_rx.recv() => {
                        if !send_pubrels(&mut wr, id, &mut rel_rx).await {
                            break;
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout(SCENARIO_TIMEOUT, last).await;
    }
    acks.abort();
}

/// Writes PUBREL for `first` and every other PUBREC already in; `false` when the connection
/// is gone.
async fn send_pubrels(
    wr: &mut Wr,
    first: u16,
    more: &mut tokio::sync::mpsc::UnboundedReceiver<u16>,
) -> bool {
    let mut b = BytesMut::new();
    Packet::PubRel(Ack::new(first)).encode(V, &mut b).unwrap();
    while let Ok(id) = more.try_recv() {
        Packet::PubRel(Ack::new(id)).encode(V, &mut b).unwrap();
    }
    wr.send(b.freeze()).await
}

/// The publishers' own runtime (one thread); the subscribers run on [`Setup`]'s (two). On one
/// runtime, four flooding publishers kept a worker from the subscriber's task — and the
/// subscriber is what timestamps the deliveries: at 4 → 1 16 KiB over TCP two of the four
/// publishers went unserved for ~20 ms at a time, their messages charged as the broker's
/// latency. Real devices and dashboards do not share a scheduler.
static PUBLISHERS: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("publishers")
        .enable_all()
        .build()
        .unwrap()
});

async fn run_load(target: &Target, transport: Transport, load: Load) -> Outcome {
    run_load_to(target, target, transport, load).await
}

/// [`run_load`] with the publishers on `target` and the subscribers on `to` (a bridge between
/// them).
async fn run_load_to(target: &Target, to: &Target, transport: Transport, load: Load) -> Outcome {
    let epoch = Instant::now();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(load.subscribers);
    let mut subs = Vec::new();
    for s in 0..load.subscribers {
        subs.push(tokio::spawn(subscriber(
            to.clone(),
            transport,
            format!("bench-sub-{s}"),
            load,
            epoch,
            ready_tx.clone(),
        )));
    }
    for _ in 0..load.subscribers {
        ready_rx.recv().await.unwrap();
    }
    let start = Instant::now();
    let mut pubs = Vec::new();
    for p in 0..load.publishers {
        pubs.push(PUBLISHERS.spawn(publisher(
            target.clone(),
            transport,
            format!("bench-pub-{p}"),
            load,
            epoch,
        )));
    }
    let mut all = Vec::new();
    // Throughput runs to the last delivery (a broker that drops messages is not charged the
    // wait for ones that never come).
    let mut last = 0u64;
    for s in subs {
        if let Ok(Ok(lat)) = tokio::time::timeout_at(
            // The subscribers stop by themselves at the scenario timeout, with what they got.
            tokio::time::Instant::from_std(start + SCENARIO_TIMEOUT + Duration::from_secs(5)),
            s,
        )
        .await
        {
            all.extend(lat.0);
            last = last.max(lat.1);
        }
    }
    for p in pubs {
        p.abort();
    }
    all.sort_unstable();
    let pct = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .map_or(f64::NAN, |n| *n as f64 / 1000.0)
    };
    Outcome {
        delivered: all.len(),
        expected: load.publishers * load.per_publisher * load.subscribers,
        secs: (Duration::from_nanos(last).saturating_sub(start.duration_since(epoch)))
            .as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        cpu_front_us: f64::NAN,
        cpu_all_us: f64::NAN,
    }
}

// ---- idle clients ------------------------------------------------------------------------

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Clock ticks per second of `/proc/PID/stat`'s times (`getconf CLK_TCK`; 100 on Linux).
static CLK_TCK: std::sync::LazyLock<f64> = std::sync::LazyLock::new(|| {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
});

/// CPU seconds used so far by `pid` and every process under it, living or reaped: each
/// one's user + system time and its reaped children's (websockify forks a process per
/// connection).
fn cpu_secs(pid: u32) -> f64 {
    // (pid, ppid, utime + stime + cutime + cstime) of every process.
    let mut all: Vec<(u32, u32, u64)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, ppid, ... utime is field 14.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // rest[0] is field 3 (state): field n is rest[n - 3].
        all.push((p, num(1) as u32, num(11) + num(12) + num(13) + num(14)));
    }
    let mut total = 0u64;
    let mut wanted = vec![pid];
    while let Some(p) = wanted.pop() {
        for (child, parent, ticks) in &all {
            if *child == p {
                total += ticks;
            }
            if *parent == p {
                wanted.push(*child);
            }
        }
    }
    total as f64 / *CLK_TCK
}

async fn idle_clients(target: &Target, n: usize, transport: Transport) -> (u64, u64) {
    let before = rss_kib(target.pid);
    let mut clients = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(500) {
        let mut batch = Vec::new();
        for i in chunk * 500..((chunk + 1) * 500).min(n) {
            let t = target.clone();
            batch.push(tokio::spawn(async move {
                open(&t, transport, &format!("idle-{i}")).await
            }));
        }
        for b in batch {
            clients.push(b.await.unwrap());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(target.pid);
    drop(clients);
    (before, after)
}

// ---- the brokers -------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Running {
    child: Child,
    target: Target,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_kite(kite: &Path, dir: &Path) -> Running {
    start_kite_with(kite, dir, None)
}

/// `kite serve` (the embedded broker) bridging `bench/#` out at QoS 1 to a broker on `remote`,
/// in MQTT 3.1.1 as mosquitto's bridge does by default.
fn start_kite_bridged(kite: &Path, dir: &Path, remote: u16) -> Running {
    start_kite_full(
        kite,
        dir,
        None,
        &format!(
            "[[bridge]]\nname = \"bench\"\naddresses = [\"mqtt://127.0.0.1:{remote}\"]\nprotocol = \"3.1.1\"\n\n[[bridge.topic]]\npattern = \"bench/#\"\ndirection = \"out\"\nqos = 1\n"
        ),
    )
}

/// `kite serve`: the embedded broker, or the gateway in front of `upstream` (a TCP port).
fn start_kite_with(kite: &Path, dir: &Path, upstream: Option<u16>) -> Running {
    start_kite_full(kite, dir, upstream, "")
}

/// [`start_kite_with`], with `extra` config-file lines.
fn start_kite_full(kite: &Path, dir: &Path, upstream: Option<u16>, extra: &str) -> Running {
    let (http, mqtt) = (free_port(), free_port());
    let config = dir.join("kite.toml");
    std::fs::write(
        &config,
        // Every load client comes from 127.0.0.1: no per-address bound (mosquitto has none).
        format!(
            "[limits]\nmax_connections = 20000\nmax_connections_per_address = 0\n[broker]\npersistence = false\nsys_interval_secs = 0\n{extra}"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(kite);
    cmd.args(["serve", "--http", &format!("127.0.0.1:{http}")])
        .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
        .arg("--config")
        .arg(&config)
        .env("KITE_LOG", "warn")
        .stdout(Stdio::null());
    if let Some(port) = upstream {
        cmd.args(["--upstream", &format!("mqtt://127.0.0.1:{port}")]);
    }
    let child = cmd.spawn().unwrap();
    if upstream.is_none() {
        wait_port(mqtt);
    }
    wait_port(http);
    Running {
        target: Target {
            name: if upstream.is_some() {
                "Kite gateway"
            } else {
                "Kite"
            },
            tcp: upstream.unwrap_or(mqtt),
            ws: format!("ws://127.0.0.1:{http}/mqtt"),
            ws_protocol: "mqtt",
            pid: child.id(),
        },
        child,
    }
}

fn start_mosquitto(bin: &Path, dir: &Path) -> Running {
    start_mosquitto_with(bin, dir, "")
}

/// mosquitto with TCP_NODELAY (as Kite: no Nagle delay in the latencies) and `extra` settings.
fn start_mosquitto_with(bin: &Path, dir: &Path, extra: &str) -> Running {
    let (tcp, ws) = (free_port(), free_port());
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "set_tcp_nodelay true\nlistener {tcp} 127.0.0.1\nlistener {ws} 127.0.0.1\nprotocol websockets\nallow_anonymous true\npersistence false\nmax_connections -1\n{extra}"
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(tcp);
    wait_port(ws);
    Running {
        target: Target {
            name: "mosquitto",
            tcp,
            ws: format!("ws://127.0.0.1:{ws}/mqtt"),
            ws_protocol: "mqtt",
            pid: child.id(),
        },
        child,
    }
}

// ---- main --------------------------------------------------------------------------------

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

const USAGE: &str = "usage: kite-bench broker  --kite PATH --mosquitto PATH [--write FILE] [--quick] [--only TEXT] [--repeat N] [--runs N]
       kite-bench gateway --kite PATH --mosquitto PATH --websockify PYTHONPATH [--write FILE] [--quick] [--runs N] [--saturated]
       kite-bench app     --kite PATH --mosquitto PATH --assets DIR [--write FILE] [--quick]
       kite-bench history --kite PATH --mosquitto PATH [--assets DIR] [--write FILE] [--quick] [--only store|broker|paced|chart]
       kite-bench devices --kite PATH --mosquitto PATH [--write FILE] [--quick]
       kite-bench dashboard|embed --kite PATH --mosquitto PATH --assets DIR [--write FILE] [--quick]
(`cargo xtask bench broker|gateway|app|history|devices|dashboard|embed` builds everything and passes these)";

/// A bad command line: what is wrong, the usage, exit status 2.
fn usage_error(what: &str) -> ! {
    eprintln!("kite-bench: {what}\n{USAGE}");
    std::process::exit(2);
}

/// The value of a required option.
fn required(args: &[String], name: &str, what: &str) -> String {
    arg(args, name).unwrap_or_else(|| usage_error(&format!("{name} {what} is required")))
}

/// The value of a whole-number option, or `default` without it.
fn count(args: &[String], name: &str, default: usize) -> usize {
    arg(args, name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| usage_error(&format!("{name} {v:?}: expected a whole number")))
    })
}

/// `[broker]` lines for queues that drop nothing in a benchmark's load.
const OPEN_QUEUE: &str = "max_queued_messages = 1000000\nmax_queued_messages_online = 1000000\n";

/// `kite serve` on fresh ports with its data in `dir` (emptied first) and `extra` config
/// (TOML); and its HTTP port. `ws` of the target holds the HTTP base URL.
fn start_kite_configured(kite: &Path, dir: &Path, extra: &str) -> (Running, u16) {
    start_kite_serving(kite, dir, extra, &[])
}

/// [`start_kite_configured`] with more arguments for `kite serve` (e.g. `--assets DIR`).
fn start_kite_serving(
    kite: &Path,
    dir: &Path,
    extra: &str,
    more: &[&std::ffi::OsStr],
) -> (Running, u16) {
    let (http, mqtt) = (free_port(), free_port());
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("kite.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_connections_per_address = 0\n[broker]\ndata_dir = \"{}\"\nsys_interval_secs = 0\n{extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new(kite)
        .args(["serve", "--http", &format!("127.0.0.1:{http}")])
        .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
        .arg("--config")
        .arg(&config)
        .args(more)
        .env("KITE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(mqtt);
    wait_port(http);
    let running = Running {
        target: Target {
            name: "Kite",
            tcp: mqtt,
            ws: format!("http://127.0.0.1:{http}"),
            ws_protocol: "mqtt",
            pid: child.id(),
        },
        child,
    };
    (running, http)
}

/// Starts recording, in the page, every animation frame's interval
/// (`requestAnimationFrame`) and the main thread's long tasks (over 50 ms).
fn watch_frames(browser: &kite_tests::browser::Browser) {
    browser.eval(
        r#"window.__frames = []; window.__long = [];
           new PerformanceObserver(l => { for (const e of l.getEntries()) window.__long.push(e.duration); }).observe({type: 'longtask', buffered: false});
           let last = performance.now();
           const tick = (t) => { window.__frames.push(t - last); last = t; if (!window.__stop) requestAnimationFrame(tick); };
           requestAnimationFrame(tick); return null;"#,
    );
}

/// Stops [`watch_frames`]: the frames' intervals (the first, partial one left out) and the
/// long tasks' durations, in ms.
fn frames_and_long_tasks(browser: &kite_tests::browser::Browser) -> (Vec<f64>, Vec<f64>) {
    let numbers = |v: serde_json::Value| -> Vec<f64> {
        v.as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default()
    };
    (
        numbers(browser.eval("window.__stop = true; return window.__frames.slice(1);")),
        numbers(browser.eval("return window.__long;")),
    )
}

#[path = "../bench/history.rs"]
mod bench_history;

#[path = "../bench/devices.rs"]
mod bench_devices;

#[path = "../bench/dashboard.rs"]
mod bench_dashboard;

#[path = "../bench/embed.rs"]
mod bench_embed;

/// `kite-bench embed`: kite.js in Chromium (see tests/src/bench/embed.rs).
fn embed_main(args: &[String]) {
    let setup = Setup::new(args);
    let assets = PathBuf::from(required(
        args,
        "--assets",
        "DIR (the built app and kite.js)",
    ));
    let secs = if setup.quick { 3 } else { 10 };
    let table = bench_embed::figures(&setup.kite, &setup.dir.join("embed"), &assets, secs);
    println!("\n{table}");
    setup.finish(&table);
}

/// `kite-bench dashboard`: a dashboard's frames under load (see tests/src/bench/dashboard.rs).
fn dashboard_main(args: &[String]) {
    let setup = Setup::new(args);
    let assets = PathBuf::from(required(args, "--assets", "DIR (the built app)"));
    let secs = if setup.quick { 3 } else { 10 };
    let table = bench_dashboard::figures(&setup.kite, &setup.dir.join("dashboard"), &assets, secs);
    println!("\n{table}");
    setup.finish(&table);
}

/// `kite-bench devices`: the device monitor's figures (see tests/src/bench/devices.rs).
fn devices_main(args: &[String]) {
    let setup = Setup::new(args);
    let rows = bench_devices::figures(&setup.kite, &setup.dir.join("devices"), setup.scale);
    let mut table = String::from("| devices | measured | goal |\n|---|---|---|\n");
    for (what, got, goal) in rows {
        table.push_str(&format!("| {what} | {got} | {goal} |\n"));
    }
    println!("\n{table}");
    setup.finish(&table);
}

/// `kite-bench history`: the history store's figures (see tests/src/bench/history.rs).
fn history_main(args: &[String]) {
    let setup = Setup::new(args);
    // `--only store|broker|paced|chart`: one part (a quicker look while working on it).
    let only = arg(args, "--only");
    let part = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut rows = Vec::new();
    if part("store") {
        rows.extend(bench_history::storage(&setup.dir, setup.scale as u64));
    }
    if part("broker") {
        rows.extend(bench_history::through_broker(
            &setup.kite,
            &setup.dir,
            &setup.rt,
            setup.scale,
        ));
    }
    if part("paced") {
        rows.extend(bench_history::paced(
            &setup.kite,
            &setup.dir,
            &setup.rt,
            setup.scale,
        ));
    }
    if let Some(assets) = arg(args, "--assets").filter(|_| part("chart")) {
        rows.extend(bench_history::chart(
            &setup.kite,
            &setup.dir,
            Path::new(&assets),
            1_000_000 / setup.scale as u64,
        ));
    }
    let mut table = String::from("| history | measured | goal |\n|---|---|---|\n");
    for (what, got, goal) in rows {
        table.push_str(&format!("| {what} | {got} | {goal} |\n"));
    }
    println!("\n{table}");
    setup.finish(&table);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("broker") => broker_main(&args),
        Some("gateway") => gateway_main(&args),
        Some("app") => app_main(&args),
        Some("history") => history_main(&args),
        Some("devices") => devices_main(&args),
        Some("dashboard") => dashboard_main(&args),
        Some("embed") => embed_main(&args),
        Some(other) => usage_error(&format!("unknown mode {other:?}")),
        None => usage_error("which benchmark?"),
    }
}

/// What both benchmarks take from the command line, and their runtime and scratch dir.
struct Setup {
    kite: PathBuf,
    mosquitto: PathBuf,
    quick: bool,
    write: Option<PathBuf>,
    dir: PathBuf,
    /// 10 with `--quick` (a tenth of the load), else 1.
    scale: usize,
    rt: tokio::runtime::Runtime,
}

impl Setup {
    fn new(args: &[String]) -> Self {
        let quick = args.iter().any(|a| a == "--quick");
        let dir = std::env::temp_dir().join(format!("kite-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            kite: PathBuf::from(required(args, "--kite", "PATH")),
            mosquitto: PathBuf::from(required(args, "--mosquitto", "PATH")),
            quick,
            write: arg(args, "--write").map(PathBuf::from),
            dir,
            scale: if quick { 10 } else { 1 },
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// Removes the scratch dir and writes the table where `--write` says.
    fn finish(&self, table: &str) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(path) = &self.write {
            std::fs::write(path, table).unwrap();
            println!("table written to {}", path.display());
        }
    }
}

/// `load` on a freshly started Kite, then on a freshly started mosquitto (no state carried
/// between scenarios).
fn on_both(setup: &Setup, transport: Transport, load: Load) -> [Outcome; 2] {
    ["kite", "mosquitto"].map(|which| {
        let running = if which == "kite" {
            start_kite(&setup.kite, &setup.dir)
        } else {
            start_mosquitto(&setup.mosquitto, &setup.dir)
        };
        setup
            .rt
            .block_on(run_load(&running.target, transport, load))
    })
}

/// `load` on both, `runs` times (each run on fresh servers, Kite then mosquitto); each
/// figure the median of the runs.
fn on_both_median(setup: &Setup, transport: Transport, load: Load, runs: usize) -> [Outcome; 2] {
    let all: Vec<[Outcome; 2]> = (0..runs.max(1))
        .map(|_| on_both(setup, transport, load))
        .collect();
    [0, 1].map(|i| median(all.iter().map(|r| &r[i]).collect()))
}

/// Each figure of `runs` (one scenario's) the median of them — msgs/s, not seconds.
fn median(runs: Vec<&Outcome>) -> Outcome {
    let mid = |f: &dyn Fn(&Outcome) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(|o| f(o)).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let delivered = mid(&|o| o.delivered as f64) as usize;
    let rate = mid(&Outcome::rate);
    Outcome {
        delivered,
        expected: runs[0].expected,
        secs: delivered as f64 / rate.max(1e-9),
        p50_us: mid(&|o| o.p50_us),
        p99_us: mid(&|o| o.p99_us),
        cpu_front_us: mid(&|o| o.cpu_front_us),
        cpu_all_us: mid(&|o| o.cpu_all_us),
    }
}

/// One saturated row: Kite's and mosquitto's msgs/s (with what was lost), their ratio, and
/// their p50 / p99.
fn side_by_side(key: &str, k: &Outcome, m: &Outcome) -> String {
    let shown = |o: &Outcome| {
        let mut s = format!("{:.0}", o.rate());
        if o.delivered < o.expected {
            let _ = write!(s, " ({} of {} delivered)", o.delivered, o.expected);
        }
        s
    };
    format!(
        "| {key} | {} | {} | {:.2}× | {:.1} / {:.1} | {:.1} / {:.1} |",
        shown(k),
        shown(m),
        k.rate() / m.rate().max(1e-9),
        k.p50_us / 1000.0,
        k.p99_us / 1000.0,
        m.p50_us / 1000.0,
        m.p99_us / 1000.0,
    )
}

/// A transport as the tables name it.
fn via(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp => "TCP",
        Transport::Ws => "WebSocket",
    }
}

fn broker_main(args: &[String]) {
    let setup = Setup::new(args);
    let Setup {
        kite,
        mosquitto,
        quick,
        dir,
        scale,
        rt,
        ..
    } = &setup;
    let (quick, scale) = (*quick, *scale);
    // `--only TEXT`: just the rows (saturated or paced) whose first cells contain TEXT (e.g.
    // "4 → 1 | 0 | 16 KiB | TCP", "4 × 2,500 msgs/s → 1 | 0 | TCP"), `--repeat N` times
    // each — to look at one case closely.
    let only = arg(args, "--only");
    let wanted = |key: &str| only.as_ref().is_none_or(|o| key.contains(o.as_str()));
    let repeat = count(args, "--repeat", 1);
    // `--runs N`: each figure of a row is the median of N runs (default 3, or 1 with
    // `--only`): one run's p99 on a shared 2-core machine moves by 10–40%.
    let runs = count(args, "--runs", if only.is_some() { 1 } else { 3 });
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| load | QoS | payload | via | Kite msgs/s | mosquitto msgs/s | Kite ÷ mosquitto | Kite p50 / p99 ms | mosquitto p50 / p99 ms |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (label, publishers, subscribers) in [("4 → 1", 4, 1), ("1 → 50", 1, 50)] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for size in [64usize, 16 * 1024] {
                for transport in [Transport::Tcp, Transport::Ws] {
                    let key = format!(
                        "{label} | {} | {} | {}",
                        qos as u8,
                        if size == 64 { "64 B" } else { "16 KiB" },
                        via(transport)
                    );
                    if !wanted(&key) {
                        continue;
                    }
                    for _ in 0..repeat {
                        let per_publisher = match (subscribers, size) {
                            (1, 64) => 50_000,
                            (1, _) => 2_000,
                            (_, 64) => 5_000,
                            _ => 200,
                        } / scale;
                        let load = Load {
                            publishers,
                            subscribers,
                            qos,
                            size,
                            per_publisher,
                            rate: None,
                            persistent: false,
                        };
                        let cells = on_both_median(&setup, transport, load, runs);
                        let line = side_by_side(&key, &cells[0], &cells[1]);
                        println!("{line}");
                        let _ = writeln!(table, "{line}");
                    }
                }
            }
        }
    }
    // Paced loads both brokers carry: latency without saturation, each message timed from
    // when it was due (so a broker that slows its publishers is charged for it).
    let _ = writeln!(
        table,
        "\n| paced load, 64 B, 3 s | QoS | via | Kite p50 / p99 ms | mosquitto p50 / p99 ms | Kite delivered | mosquitto delivered |\n|---|---|---|---|---|---|---|"
    );
    for (label, publishers, subscribers, rate) in [
        ("4 × 2,500 msgs/s → 1", 4, 1, 2_500u32),
        ("1 × 200 msgs/s → 50", 1, 50, 200),
    ] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for transport in [Transport::Tcp, Transport::Ws] {
                let key = format!("{label} | {} | {}", qos as u8, via(transport));
                if !wanted(&key) {
                    continue;
                }
                let load = Load {
                    publishers,
                    subscribers,
                    qos,
                    size: 64,
                    per_publisher: rate as usize * 3 / scale,
                    rate: Some(rate),
                    persistent: false,
                };
                for _ in 0..repeat {
                    let cells = on_both_median(&setup, transport, load, runs);
                    let (k, m) = (&cells[0], &cells[1]);
                    let line = format!(
                        "| {key} | {:.2} / {:.2} | {:.2} / {:.2} | {} of {} | {} of {} |",
                        k.p50_us / 1000.0,
                        k.p99_us / 1000.0,
                        m.p50_us / 1000.0,
                        m.p99_us / 1000.0,
                        k.delivered,
                        k.expected,
                        m.delivered,
                        m.expected,
                    );
                    println!("{line}");
                    let _ = writeln!(table, "{line}");
                }
            }
        }
    }
    // Durable: every client with a persistent session, so that the broker keeps each
    // delivery until it is acknowledged — on disk where it has persistence. Kite in memory,
    // Kite with its data file (`sync = "always"`: fsync before acknowledging; "periodic":
    // once a second), and mosquitto with `persistence true` (its database written every
    // `autosave_interval`, 30 min by default, and on exit: not per message). The queues are
    // opened on both (a million messages) so that none is dropped: the figure is what the
    // publishers get through, each with 100 unacknowledged at most. Paced (4 × 2,500
    // msgs/s for 3 s), the latencies are the commits' own, with no backlog behind them.
    let durable = [
        ("durable 4 → 1", None, 10_000),
        ("durable paced 4 × 2,500 msgs/s → 1", Some(2_500), 7_500),
    ];
    let durable_key = |label: &str, qos: QoS| format!("{label} | {} | 64 B | TCP", qos as u8);
    if durable.iter().any(|(label, ..)| {
        [QoS::AtLeastOnce, QoS::ExactlyOnce]
            .iter()
            .any(|q| wanted(&durable_key(label, *q)))
    }) {
        let _ = writeln!(
            table,
            "\n| durable, 4 → 1, persistent sessions | QoS | payload | via | Kite in memory msgs/s | Kite on disk, sync always | Kite on disk, sync periodic | mosquitto, persistence true | p50 / p99 ms (same order) |\n|---|---|---|---|---|---|---|---|---|"
        );
        for (label, rate, per_publisher) in durable {
            for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let key = durable_key(label, qos);
                if !wanted(&key) {
                    continue;
                }
                let load = Load {
                    publishers: 4,
                    subscribers: 1,
                    qos,
                    size: 64,
                    per_publisher: per_publisher / scale,
                    rate,
                    persistent: true,
                };
                for _ in 0..repeat {
                    let all: Vec<[Outcome; 4]> = (0..runs.max(1))
                    .map(|_| {
                        [0, 1, 2, 3].map(|which| {
                            let running = match which {
                                0 => start_kite_full(kite, dir, None, OPEN_QUEUE),
                                1 => {
                                    let extra = format!("sync = \"always\"\n{OPEN_QUEUE}");
                                    start_kite_configured(kite, &dir.join("durable"), &extra).0
                                }
                                2 => {
                                    let extra = format!("sync = \"periodic\"\n{OPEN_QUEUE}");
                                    start_kite_configured(kite, &dir.join("durable"), &extra).0
                                }
                                _ => {
                                    let data = dir.join("mosquitto-data");
                                    let _ = std::fs::remove_dir_all(&data);
                                    std::fs::create_dir_all(&data).unwrap();
                                    start_mosquitto_with(
                                        mosquitto,
                                        dir,
                                        &format!(
                                            "persistence true\npersistence_location {}/\nmax_queued_messages 1000000\n",
                                            data.display()
                                        ),
                                    )
                                }
                            };
                            rt.block_on(run_load(&running.target, Transport::Tcp, load))
                        })
                    })
                    .collect();
                    let cells = [0, 1, 2, 3].map(|i| median(all.iter().map(|r| &r[i]).collect()));
                    let rate = |o: &Outcome| {
                        if o.delivered < o.expected {
                            format!(
                                "{:.0} ({} of {} delivered)",
                                o.rate(),
                                o.delivered,
                                o.expected
                            )
                        } else {
                            format!("{:.0}", o.rate())
                        }
                    };
                    let lat = cells
                        .iter()
                        .map(|o| format!("{:.1} / {:.1}", o.p50_us / 1000.0, o.p99_us / 1000.0))
                        .collect::<Vec<_>>()
                        .join(" · ");
                    let line = format!(
                        "| {key} | {} | {} | {} | {} | {lat} |",
                        rate(&cells[0]),
                        rate(&cells[1]),
                        rate(&cells[2]),
                        rate(&cells[3]),
                    );
                    println!("{line}");
                    let _ = writeln!(table, "{line}");
                }
            }
        }
    }
    // Bridged: publishers on the bridging broker, the subscriber on a fresh mosquitto it
    // bridges `bench/#` to (out, QoS 1) — Kite's bridge, and mosquitto's own bridge doing the
    // same (mosquitto → mosquitto, its defaults otherwise).
    let key = "bridged 4 → 1 | 1 | 64 B | TCP";
    if wanted(key) {
        let _ = writeln!(
            table,
            "\n| bridged, 4 → 1 | QoS | payload | via | Kite → mosquitto msgs/s | mosquitto → mosquitto msgs/s | Kite ÷ mosquitto | Kite p50 / p99 ms | mosquitto p50 / p99 ms |\n|---|---|---|---|---|---|---|---|---|"
        );
        let load = Load {
            publishers: 4,
            subscribers: 1,
            qos: QoS::AtLeastOnce,
            size: 64,
            per_publisher: 25_000 / scale,
            rate: None,
            persistent: false,
        };
        for _ in 0..repeat {
            let all: Vec<[Outcome; 2]> = (0..runs.max(1))
                .map(|_| {
                    ["kite", "mosquitto"].map(|which| {
                        let remote = start_mosquitto_with(
                            mosquitto,
                            dir,
                            "max_queued_messages 1000000\n",
                        );
                        let bridging = if which == "kite" {
                            start_kite_bridged(kite, dir, remote.target.tcp)
                        } else {
                            std::fs::create_dir_all(dir.join("bridging")).unwrap();
                            start_mosquitto_with(
                                mosquitto,
                                &dir.join("bridging"),
                                &format!(
                                    "max_queued_messages 1000000\nconnection bench\naddress 127.0.0.1:{}\ntopic bench/# out 1\n",
                                    remote.target.tcp
                                ),
                            )
                        };
                        // Time for the bridge to connect (both connect at once when started).
                        std::thread::sleep(Duration::from_millis(1500));
                        rt.block_on(run_load_to(
                            &bridging.target,
                            &remote.target,
                            Transport::Tcp,
                            load,
                        ))
                    })
                })
                .collect();
            let cells = [0, 1].map(|i| median(all.iter().map(|r| &r[i]).collect()));
            let line = side_by_side(key, &cells[0], &cells[1]);
            println!("{line}");
            let _ = writeln!(table, "{line}");
        }
    }
    // `--only idle`: just the idle clients' table.
    if only.is_some() && !wanted("idle clients") {
        setup.finish(&table);
        return;
    }
    let idle = if quick { 1_000 } else { 10_000 };
    let _ = writeln!(
        table,
        "\n| {idle} idle clients | via | RSS before | RSS after | per client |\n|---|---|---|---|---|"
    );
    for which in ["kite", "mosquitto"] {
        for transport in [Transport::Tcp, Transport::Ws] {
            let running = if which == "kite" {
                start_kite(kite, dir)
            } else {
                start_mosquitto(mosquitto, dir)
            };
            let (before, after) = rt.block_on(idle_clients(&running.target, idle, transport));
            let line = format!(
                "| {} | {} | {:.1} MiB | {:.1} MiB | {:.1} KiB |",
                running.target.name,
                via(transport),
                before as f64 / 1024.0,
                after as f64 / 1024.0,
                after.saturating_sub(before) as f64 / idle as f64
            );
            println!("{line}");
            let _ = writeln!(table, "{line}");
        }
    }
    setup.finish(&table);
}

// ---- gateway mode ------------------------------------------------------------------------

fn start_websockify(pythonpath: &Path, mqtt: u16) -> Running {
    let ws = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "websockify",
            &format!("127.0.0.1:{ws}"),
            &format!("127.0.0.1:{mqtt}"),
        ])
        .env("PYTHONPATH", pythonpath)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(ws);
    Running {
        target: Target {
            name: "websockify",
            tcp: mqtt,
            ws: format!("ws://127.0.0.1:{ws}/"),
            ws_protocol: "binary",
            pid: child.id(),
        },
        child,
    }
}

/// Time for one 1 MB QoS 0 message, published over TCP straight to mosquitto, to reach a
/// subscriber on `target` (median of three).
async fn one_megabyte(target: &Target, transport: Transport, mosquitto_tcp: u16) -> f64 {
    let mut times = Vec::new();
    for round in 0..3 {
        let (mut rd, mut wr) = open(target, transport, &format!("mb-sub-{round}")).await;
        let mut b = BytesMut::new();
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![Subscription::new("big/#", QoS::AtMostOnce)],
            properties: Default::default(),
        })
        .encode(V, &mut b)
        .unwrap();
        wr.send(b.freeze()).await;
        assert!(matches!(rd.recv().await, Some(Packet::SubAck(_))));
        let direct = Target {
            name: "mosquitto",
            tcp: mosquitto_tcp,
            ws: String::new(),
            ws_protocol: "mqtt",
            pid: 0,
        };
        let (_prd, mut pwr) = open(&direct, Transport::Tcp, &format!("mb-pub-{round}")).await;
        let mut b = BytesMut::new();
        Packet::Publish(Publish {
            topic: "big/one".into(),
            payload: Bytes::from(vec![7u8; 1 << 20]),
            ..Publish::default()
        })
        .encode(V, &mut b)
        .unwrap();
        let start = Instant::now();
        pwr.send(b.freeze()).await;
        match tokio::time::timeout(SCENARIO_TIMEOUT, rd.recv()).await {
            Ok(Some(Packet::Publish(p))) if p.payload.len() == 1 << 20 => {
                times.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            _ => times.push(f64::INFINITY),
        }
    }
    times.sort_by(f64::total_cmp);
    times[1]
}

/// The four ways of the gateway benchmark, each with a fresh mosquitto behind it.
const WAYS: [&str; 4] = [
    "(a) TCP to mosquitto",
    "(b) mosquitto WS",
    "(c) websockify",
    "(d) Kite gateway",
];

/// `f` against way `way` (an index into [`WAYS`]): a fresh mosquitto with deep queues (the
/// gateway runs measure the transport, not mosquitto's drop policy), and in front of it
/// websockify (c) or Kite's gateway (d).
fn run_way<T>(
    setup: &Setup,
    websockify: &Path,
    way: usize,
    f: impl FnOnce(&Target, Transport, Pids) -> T,
) -> T {
    let broker = start_mosquitto_with(
        &setup.mosquitto,
        &setup.dir,
        "max_queued_messages 1000000\n",
    );
    let mqtt = broker.target.tcp;
    let front = match way {
        2 => Some(start_websockify(websockify, mqtt)),
        3 => Some(start_kite_with(&setup.kite, &setup.dir, Some(mqtt))),
        _ => None,
    };
    let (target, transport) = match (way, &front) {
        (0, _) => (broker.target.clone(), Transport::Tcp),
        (1, _) => (broker.target.clone(), Transport::Ws),
        (_, Some(f)) => (f.target.clone(), Transport::Ws),
        _ => unreachable!(),
    };
    let pids = Pids {
        broker: broker.target.pid,
        front: front.as_ref().map(|f| f.target.pid),
    };
    let out = f(&target, transport, pids);
    drop(front);
    drop(broker);
    out
}

/// The processes of one way: mosquitto, and what is in front of it (if anything).
#[derive(Clone, Copy)]
struct Pids {
    broker: u32,
    front: Option<u32>,
}

fn gateway_main(args: &[String]) {
    let websockify = PathBuf::from(required(args, "--websockify", "PYTHONPATH"));
    let setup = Setup::new(args);
    let (quick, scale, rt) = (setup.quick, setup.scale, &setup.rt);
    // `--runs N`: each figure of the load rows is the median of N runs (default 3).
    let runs = count(args, "--runs", 3).max(1);
    // `--saturated`: only the two saturated rows and their CPU rows (about 3 minutes).
    let saturated_only = args.iter().any(|a| a == "--saturated");
    // `load` against `way`, `runs` times, each figure the median.
    let measure = |way: usize, load: Load| -> Outcome {
        let all: Vec<Outcome> = (0..runs)
            .map(|_| {
                run_way(&setup, &websockify, way, |t, tr, pids| {
                    // CPU time of each process, read from /proc around the run.
                    let front_before = pids.front.map_or(0.0, cpu_secs);
                    let broker_before = cpu_secs(pids.broker);
                    let mut o = rt.block_on(run_load(t, tr, load));
                    let front = pids.front.map_or(0.0, cpu_secs) - front_before;
                    let broker = cpu_secs(pids.broker) - broker_before;
                    let per = |secs: f64| secs * 1e6 / (o.delivered.max(1) as f64);
                    o.cpu_front_us = if pids.front.is_some() {
                        per(front)
                    } else {
                        f64::NAN
                    };
                    o.cpu_all_us = per(front + broker);
                    o
                })
            })
            .collect();
        median(all.iter().collect())
    };
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| load | {} | (d) ÷ (b) | (d) ÷ (c) |\n|---|---|---|---|---|---|---|",
        WAYS.join(" | ")
    );
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let load = Load {
            publishers: 4,
            subscribers: 1,
            qos,
            size: 64,
            per_publisher: 50_000 / scale,
            rate: None,
            persistent: false,
        };
        let outcomes: Vec<Outcome> = (0..WAYS.len()).map(|way| measure(way, load)).collect();
        let cells: Vec<String> = outcomes
            .iter()
            .map(|o| {
                let mut c = format!(
                    "{:.0} msgs/s, {:.1} / {:.1} ms",
                    o.rate(),
                    o.p50_us / 1000.0,
                    o.p99_us / 1000.0
                );
                if o.delivered < o.expected {
                    let _ = write!(c, " ({} of {})", o.delivered, o.expected);
                }
                c
            })
            .collect();
        let rate = |way: usize| outcomes[way].rate().max(1e-9);
        let line = format!(
            "| 4 → 1, QoS {}, 64 B: msgs/s, p50 / p99 | {} | {:.2}× | {:.2}× |",
            qos as u8,
            cells.join(" | "),
            outcomes[3].rate() / rate(1),
            outcomes[3].rate() / rate(2)
        );
        println!("{line}");
        let _ = writeln!(table, "{line}");
        // CPU per message, from /proc: the process in front of mosquitto alone (all of
        // websockify's processes), and it with mosquitto. (b) is mosquitto alone, with its
        // WebSocket listener.
        let cpu: Vec<String> = outcomes
            .iter()
            .map(|o| {
                if o.cpu_front_us.is_nan() {
                    format!("– / {:.1}", o.cpu_all_us)
                } else {
                    format!("{:.1} / {:.1}", o.cpu_front_us, o.cpu_all_us)
                }
            })
            .collect();
        let line = format!(
            "| 4 → 1, QoS {}, 64 B: CPU µs per message, front / front + mosquitto | {} | {:.2}× | {:.2}× |",
            qos as u8,
            cpu.join(" | "),
            outcomes[3].cpu_all_us / outcomes[1].cpu_all_us,
            outcomes[3].cpu_all_us / outcomes[2].cpu_all_us
        );
        println!("{line}");
        let _ = writeln!(table, "{line}");
    }
    if saturated_only {
        setup.finish(&table);
        return;
    }
    // Latency added at a paced 10,000 msgs/s (4 × 2,500), QoS 0.
    let paced = Load {
        publishers: 4,
        subscribers: 1,
        qos: QoS::AtMostOnce,
        size: 64,
        per_publisher: 7_500 / scale,
        rate: Some(2_500),
        persistent: false,
    };
    let p99: Vec<f64> = (0..WAYS.len())
        .map(|way| measure(way, paced).p99_us / 1000.0)
        .collect();
    let line = format!(
        "| 10,000 msgs/s paced, QoS 0: p99 ms (added over (a)) | {:.2} | {:.2} (+{:.2}) | {:.2} (+{:.2}) | {:.2} (+{:.2}) | | |",
        p99[0],
        p99[1],
        p99[1] - p99[0],
        p99[2],
        p99[2] - p99[0],
        p99[3],
        p99[3] - p99[0]
    );
    println!("{line}");
    let _ = writeln!(table, "{line}");
    // One 1 MB message to a WebSocket subscriber (TCP for (a)).
    let mut mb = Vec::new();
    for way in 0..4 {
        mb.push(run_way(&setup, &websockify, way, |t, tr, _| {
            let direct = t.tcp;
            rt.block_on(one_megabyte(t, tr, direct))
        }));
    }
    let line = format!(
        "| 1 MB message to the subscriber: ms (median of 3) | {:.1} | {:.1} | {:.1} | {:.1} | | |",
        mb[0], mb[1], mb[2], mb[3]
    );
    println!("{line}");
    let _ = writeln!(table, "{line}");
    // Gateway memory per idle WebSocket session (each also holds a connection to mosquitto:
    // two file descriptors, so 9,000 stay under this machine's limit of 20,000).
    let idle = if quick { 1_000 } else { 9_000 };
    let cell = run_way(&setup, &websockify, 3, |t, tr, _| {
        let (before, after) = rt.block_on(idle_clients(t, idle, tr));
        format!(
            "| {idle} idle WebSocket sessions: Kite gateway RSS | {:.1} MiB before, {:.1} MiB after: {:.1} KiB per session | | | | | |",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            after.saturating_sub(before) as f64 / idle as f64
        )
    });
    println!("{cell}");
    let _ = writeln!(table, "{cell}");
    setup.finish(&table);
}

// ---- app ----------------------------------------------------------------------------------

/// The app's message count, from its Topics card ("N messages received on M topics").
fn app_count(browser: &kite_tests::browser::Browser) -> u64 {
    browser
        .text(".count")
        .and_then(|t| t.split(' ').next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn app_main(args: &[String]) {
    let setup = Setup::new(args);
    let assets = PathBuf::from(required(args, "--assets", "DIR (the built app)"));
    let (rate, topics) = (20_000_u64, 1_000_u64);
    let secs = if setup.quick { 3 } else { 10 };
    let total = rate * secs;
    let mosquitto = start_mosquitto(&setup.mosquitto, &setup.dir);
    let http = free_port();
    let child = Command::new(&setup.kite)
        .args(["serve", "--http", &format!("127.0.0.1:{http}")])
        .args([
            "--upstream",
            &format!("mqtt://127.0.0.1:{}", mosquitto.target.tcp),
        ])
        .arg("--assets")
        .arg(&assets)
        .env("KITE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _kite = Running {
        target: Target {
            name: "Kite gateway",
            tcp: mosquitto.target.tcp,
            ws: String::new(),
            ws_protocol: "mqtt",
            pid: child.id(),
        },
        child,
    };
    wait_port(http);
    let base = format!("http://127.0.0.1:{http}");

    // The app, with a saved connection that subscribes to bench/#, connected.
    let browser = kite_tests::browser::Browser::start();
    browser.goto(&format!("{base}/"));
    kite_tests::wait_for("the app", Duration::from_secs(30), || {
        browser.text("#kite-app h1")
    });
    browser.eval(
        r#"localStorage.setItem('kite.profiles', JSON.stringify([{id: "bench", name: "bench", client_id: "kite-bench-app", subscriptions: [{filter: "bench/#", qos: 0}]}])); return null;"#,
    );
    browser.goto(&format!("{base}/connections/bench"));
    kite_tests::wait_for("the connection page", Duration::from_secs(30), || {
        browser.text("#connect")
    });
    browser.eval("document.querySelector('#connect').click(); return null;");
    kite_tests::wait_for("the subscription", Duration::from_secs(30), || {
        browser
            .text(".subscription")
            .filter(|t| t.contains("granted"))
    });
    browser.eval(
        r#"window.__long = []; new PerformanceObserver(l => { for (const e of l.getEntries()) window.__long.push(e.duration); }).observe({type: 'longtask', buffered: true}); return null;"#,
    );

    // The device: QoS 0, paced in 10 ms batches over 1,000 topics.
    let device = kite_tests::client::Via::Tcp(
        format!("127.0.0.1:{}", mosquitto.target.tcp)
            .parse()
            .unwrap(),
    );
    let mut d = kite_tests::client::TestClient::connected(&device, V, "kite-bench-device");
    let per_tick = rate / 100;
    let payload_of = |i: u64| format!("{{\"t\": {}.{}, \"seq\": {i}}}", 20 + i % 7, i % 10);
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut sent = 0;
    let mut tick = 0u64;
    while sent < total {
        let batch: Vec<Packet> = (sent..(sent + per_tick).min(total))
            .map(|i| {
                let t = i % topics;
                Packet::Publish(kite_tests::client::publish(
                    &format!("bench/g{:02}/dev-{t:04}", t % 20),
                    &payload_of(i),
                    QoS::AtMostOnce,
                    0,
                ))
            })
            .collect();
        sent += batch.len() as u64;
        d.send_all(&batch);
        tick += 1;
        if tick.is_multiple_of(100) {
            // Once a second: what the app shows against what was sent.
            samples.push((start.elapsed().as_secs_f64(), sent, app_count(&browser)));
        }
        let next = start + Duration::from_millis(10 * tick);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    d.barrier();
    let mut counted = app_count(&browser);
    let deadline = Instant::now() + Duration::from_secs(60);
    while counted < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        counted = app_count(&browser);
    }
    let all_secs = start.elapsed().as_secs_f64();
    let long: Vec<f64> = browser
        .eval("return window.__long;")
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    let heap_mib = browser
        .eval("return performance.memory ? performance.memory.usedJSHeapSize : 0;")
        .as_f64()
        .unwrap_or(0.0)
        / 1_048_576.0;
    // The observer must be able to see a long task, or "none" would mean nothing: one made on
    // purpose (80 ms of busy main thread) after the measurement.
    browser.eval(
        "setTimeout(() => { const t = performance.now(); while (performance.now() - t < 80) {} }, 0); return null;",
    );
    let canary = kite_tests::wait_for(
        "the observer to see a long task",
        Duration::from_secs(10),
        || {
            browser
                .eval("return window.__long.length;")
                .as_u64()
                .filter(|&n| n as usize > long.len())
        },
    );
    assert!(canary as usize > long.len());
    let rows = browser.eval("return document.querySelector('.tree').dataset.rows;");
    let rows = rows.as_str().unwrap_or("?").to_owned();
    let in_dom = browser.eval("return document.querySelectorAll('.topic-row').length;");
    let memory = browser.text(".memory").unwrap_or_default();

    let mut table = String::new();
    let _ = writeln!(
        table,
        "App ingest: {rate} msgs/s (QoS 0, ~30 B JSON) over {topics} topics for {secs} s through Kite's gateway to headless Chromium\n"
    );
    let _ = writeln!(table, "| | |\n|---|---|");
    let _ = writeln!(table, "| messages sent | {total} in {send_secs:.1} s |");
    let _ = writeln!(
        table,
        "| messages the app counted | {counted} ({}) |",
        if counted == total {
            "all"
        } else {
            "MISSING SOME"
        }
    );
    let _ = writeln!(table, "| all counted after | {all_secs:.1} s |");
    let _ = writeln!(
        table,
        "| main-thread tasks over 50 ms | {} (longest {:.0} ms; the observer saw a deliberate 80 ms task afterwards) |",
        long.len(),
        long.iter().copied().fold(0.0, f64::max)
    );
    let _ = writeln!(table, "| tree rows / rows in the DOM | {rows} / {in_dom} |");
    let _ = writeln!(table, "| history kept | {memory} |");
    let _ = writeln!(table, "| JS heap | {heap_mib:.1} MiB |");
    let _ = writeln!(
        table,
        "\nThe app's count while the device published (each second):\n"
    );
    let _ = writeln!(
        table,
        "| t (s) | sent | counted by the app |\n|---|---|---|"
    );
    for (t, s, c) in &samples {
        let _ = writeln!(table, "| {t:.1} | {s} | {c} |");
    }
    println!("{table}");
    setup.finish(&table);
}
