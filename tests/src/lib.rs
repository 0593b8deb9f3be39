//! Helpers for Kite's end-to-end tests: a real mosquitto on a free port, the real gateway on
//! port 0, headless Chromium through chromedriver, and a raw MQTT-over-WebSocket client.
//!
//! Everything binds 127.0.0.1 only. Each helper stops what it started when dropped.
// Test helpers panic with a clear message when the machine lacks something: that is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod mqtt;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kite_gateway::config::{Config, Overrides, UpstreamArg};
use kite_gateway::http::AppState;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kite-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Finds a Debian program: `$ENV_VAR`, else the usual paths, else a clear failure.
pub fn program(env_var: &str, candidates: &[&str], package: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    for c in candidates {
        if Path::new(c).is_file() {
            return PathBuf::from(c);
        }
    }
    panic!(
        "{} not found: run `cargo xtask test` (it installs the test programs) or `apt-get install {package}`; or set {env_var}",
        candidates.first().unwrap_or(&package)
    );
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed on drop.
#[derive(Debug)]
pub struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real mosquitto broker on a free loopback port, anonymous access, no persistence.
#[derive(Debug)]
pub struct Mosquitto {
    pub port: u16,
    _process: Process,
    _dir: TempDir,
}

impl Mosquitto {
    pub fn start() -> Self {
        let bin = program(
            "KITE_MOSQUITTO",
            &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"],
            "mosquitto",
        );
        let dir = TempDir::new("mosquitto");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start mosquitto");
        let process = Process(child);
        wait_for(
            "mosquitto to accept connections",
            Duration::from_secs(10),
            || TcpStream::connect(("127.0.0.1", port)).ok(),
        );
        Self {
            port,
            _process: process,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Publishes one message with `mosquitto_pub`, as a device would.
    pub fn publish(&self, topic: &str, payload: &str) {
        let bin = program(
            "KITE_MOSQUITTO_PUB",
            &["/usr/bin/mosquitto_pub"],
            "mosquitto-clients",
        );
        let status = Command::new(bin)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-t",
                topic,
                "-m",
                payload,
            ])
            .status()
            .unwrap();
        assert!(status.success(), "mosquitto_pub failed: {status}");
    }
}

/// The built app, as `cargo xtask test` leaves it (or `KITE_ASSETS`).
pub fn assets_dir() -> PathBuf {
    let dir = std::env::var_os("KITE_ASSETS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dist/app"),
        PathBuf::from,
    );
    assert!(
        dir.join("index.html").is_file(),
        "the app is not built in {}: run `cargo xtask test` (it builds the app before the tests), or `trunk build --release`",
        dir.display()
    );
    dir
}

/// The real gateway, in this process, on 127.0.0.1:0, on its own runtime thread.
#[derive(Debug)]
pub struct Gateway {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Starts the gateway with these upstreams (`[NAME=]URL`) and, optionally, the app.
    pub fn start(upstreams: &[&str], assets: Option<PathBuf>) -> Self {
        let overrides = Overrides {
            http: Some("127.0.0.1:0".parse().unwrap()),
            assets,
            upstreams: upstreams
                .iter()
                .map(|u| u.parse::<UpstreamArg>().unwrap())
                .collect(),
        };
        let config = Config::load(None, overrides).unwrap();
        let state = AppState::new(config.clone()).unwrap();
        let listener = std::net::TcpListener::bind(config.http).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                kite_gateway::server::run(listener, state, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        Self {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Graceful shutdown waits for open WebSockets; do not hang a test on one.
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}
