//! Helpers for Kite's end-to-end tests: a real mosquitto on a free port, the real gateway on
//! port 0, headless Chromium through chromedriver, and a raw MQTT-over-WebSocket client.
//!
//! Everything binds 127.0.0.1 only. Each helper stops what it started when dropped.
// Test helpers panic with a clear message when the machine lacks something: that is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod client;
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
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real mosquitto broker on a free loopback port, anonymous access.
#[derive(Debug)]
pub struct Mosquitto {
    pub port: u16,
    process: Option<Process>,
    conf: PathBuf,
    _dir: TempDir,
    _extra: Vec<TempDir>,
}

impl Mosquitto {
    /// A broker without persistence.
    pub fn start() -> Self {
        Self::start_with("persistence false\n")
    }

    /// A broker that keeps sessions and queued messages across [`Mosquitto::restart`], and
    /// queues up to 100,000 messages per offline client.
    pub fn start_persistent() -> Self {
        Self::start_with("persistence true\nmax_queued_messages 100000\n")
    }

    /// A broker that admits only `user` with `password` (no anonymous clients).
    pub fn start_with_password(user: &str, password: &str) -> Self {
        let dir = TempDir::new("mosquitto-passwd");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let file = dir.path().join("passwd");
        let bin = program(
            "KITE_MOSQUITTO_PASSWD",
            &["/usr/bin/mosquitto_passwd"],
            "mosquitto",
        );
        let status = Command::new(bin)
            .arg("-b")
            .arg("-c")
            .arg(&file)
            .arg(user)
            .arg(password)
            .status()
            .unwrap();
        assert!(status.success(), "mosquitto_passwd failed: {status}");
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let mut broker = Self::start_with(&format!(
            "persistence false\npassword_file {}\n",
            file.display()
        ));
        broker._extra.push(dir);
        broker
    }

    /// A broker with `extra` lines appended to its configuration (e.g. a second listener).
    pub fn start_with(extra: &str) -> Self {
        let dir = TempDir::new("mosquitto");
        // Started as root, mosquitto drops to the `mosquitto` user: it must be able to write
        // its persistence database here, or it silently keeps nothing across a restart.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous {}\npersistence_location {}/\nlog_dest stderr\nlog_type error\nlog_type warning\n{extra}",
                !extra.contains("password_file"),
                dir.path().display()
            ),
        )
        .unwrap();
        let mut broker = Self {
            port,
            process: None,
            conf,
            _dir: dir,
            _extra: Vec::new(),
        };
        broker.run();
        broker
    }

    /// Starts the broker again after [`Mosquitto::stop`] (same port, same configuration).
    pub fn run(&mut self) {
        let bin = program(
            "KITE_MOSQUITTO",
            &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"],
            "mosquitto",
        );
        let child = Command::new(bin)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start mosquitto");
        self.process = Some(Process(child));
        let port = self.port;
        wait_for(
            "mosquitto to accept connections",
            Duration::from_secs(10),
            || TcpStream::connect(("127.0.0.1", port)).ok(),
        );
    }

    /// Stops the broker with SIGTERM (it saves its persistence database) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(p.0.id().to_string())
                .status();
            let _ = p.0.wait();
        }
    }

    /// Stops and starts the broker again on the same port with the same configuration.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// A mosquitto client program (`mosquitto_pub`, `mosquitto_sub`) aimed at this broker.
    pub fn client(&self, tool: &str) -> Command {
        mosquitto_client(tool, self.port)
    }

    /// Reads one message from `topic` with `mosquitto_sub` (at most 10 s), as
    /// `"topic payload"`; a retained message arrives at once.
    pub fn receive_one(&self, topic: &str) -> String {
        let out = self
            .client("mosquitto_sub")
            .args(["-t", topic, "-C", "1", "-W", "10", "-v"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// Publishes one message with `mosquitto_pub`, as a device would.
    pub fn publish(&self, topic: &str, payload: &str) {
        let status = self
            .client("mosquitto_pub")
            .args(["-t", topic, "-m", payload])
            .status()
            .unwrap();
        assert!(status.success(), "mosquitto_pub failed: {status}");
    }
}

/// A mosquitto client program (`mosquitto_pub`, `mosquitto_sub`) aimed at a broker on
/// 127.0.0.1:`port` (mosquitto or Kite's embedded broker).
pub fn mosquitto_client(tool: &str, port: u16) -> Command {
    let env = format!("KITE_{}", tool.to_uppercase());
    let bin = program(&env, &[&format!("/usr/bin/{tool}")], "mosquitto-clients");
    let mut cmd = Command::new(bin);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    cmd
}

/// `python3` with Eclipse Paho's client importable (`KITE_PAHO`, set by `cargo xtask test`,
/// or its default install directory).
pub fn python_with_paho() -> Command {
    let dir = std::env::var_os("KITE_PAHO").map_or_else(
        || {
            let home =
                std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
            home.join(".cache/kite/paho-mqtt-2.1.0")
        },
        PathBuf::from,
    );
    assert!(
        dir.join("paho/mqtt/client.py").is_file(),
        "paho-mqtt is not installed in {}: run `cargo xtask test` (it installs it), or `python3 -m pip install --target {} paho-mqtt==2.1.0`",
        dir.display(),
        dir.display()
    );
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONPATH", dir)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
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

/// Users and roles with no logins, where every session gets the role `guest` with `acl`
/// (`[acl] anonymous_role = "guest"`).
pub fn anonymous_role(acl: kite_policy::acl::Acl) -> kite_policy::auth::Auth {
    let guest = kite_policy::auth::Role {
        name: "guest".into(),
        acl,
        ..Default::default()
    };
    kite_policy::auth::Auth::new(vec![], vec![guest])
        .and_then(|a| a.with_anonymous_role(Some("guest")))
        .expect("a valid anonymous role")
}

/// Runs `scenario` against a fresh gateway with the embedded broker (its configuration
/// adjusted by `adjust`): over TCP to the broker's listener, then over the gateway's WebSocket.
pub fn each_way(adjust: impl Fn(&mut Config), scenario: impl Fn(&Gateway, &client::Via)) {
    for ws in [false, true] {
        let gw = Gateway::start_with(&[], None, &adjust);
        let via = if ws {
            client::Via::Ws(gw.ws_url("/mqtt"))
        } else {
            client::Via::Tcp(gw.mqtt_addr.expect("embedded broker"))
        };
        scenario(&gw, &via);
    }
}

/// The real gateway, in this process, on 127.0.0.1:0, on its own runtime thread.
#[derive(Debug)]
pub struct Gateway {
    pub addr: SocketAddr,
    /// The embedded broker's TCP address (when started without upstreams).
    pub mqtt_addr: Option<SocketAddr>,
    /// The embedded broker's TLS address (when `[broker] tls_listen` is set).
    pub mqtts_addr: Option<SocketAddr>,
    state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Starts the gateway with these upstreams (`[NAME=]URL`) and, optionally, the app.
    pub fn start(upstreams: &[&str], assets: Option<PathBuf>) -> Self {
        Self::start_with(upstreams, assets, |_| {})
    }

    /// Like [`Gateway::start`], with the configuration adjusted by `adjust` (limits, origins).
    pub fn start_with(
        upstreams: &[&str],
        assets: Option<PathBuf>,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let overrides = Overrides {
            http: Some("127.0.0.1:0".parse().unwrap()),
            assets,
            upstreams: upstreams
                .iter()
                .map(|u| u.parse::<UpstreamArg>().unwrap())
                .collect(),
            tls: None,
            mqtt: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: None,
            mqtts: None,
            env: Vec::new(),
        };
        let mut config = Config::load(None, overrides).unwrap();
        // In memory unless a test gives the broker a data directory (and alarms one).
        config.broker.data_dir = None;
        config.alarms = None;
        adjust(&mut config);
        let state = AppState::new(config.clone()).unwrap();
        let kept = state.clone();
        let listener = std::net::TcpListener::bind(config.http).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let mqtt = state.broker().map(|_| {
            let l = std::net::TcpListener::bind(config.broker.listen).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        });
        let mqtt_addr = mqtt.as_ref().map(|l| l.local_addr().unwrap());
        let mqtts = state.broker().and(config.broker.tls_listen).map(|addr| {
            let l = std::net::TcpListener::bind(addr).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        });
        let mqtts_addr = mqtts.as_ref().map(|l| l.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                if let Some(mqtt) = mqtt {
                    let mqtt = tokio::net::TcpListener::from_std(mqtt).unwrap();
                    let mqtts = mqtts.map(|l| tokio::net::TcpListener::from_std(l).unwrap());
                    kite_gateway::server::start_broker(&state, mqtt, mqtts);
                }
                kite_gateway::server::run(listener, state, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        Self {
            addr,
            mqtt_addr,
            mqtts_addr,
            state: kept,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The running gateway's state (e.g. to reload its TLS certificate).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// `GET path` of the HTTP API: the status and the JSON answer (`null` if none).
    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        self.call("GET", path, None)
    }

    /// `method path` of the HTTP API with a JSON `body`: the status and the JSON answer
    /// (`null` if none).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        self.call_as(None, method, path, body)
    }

    /// [`Gateway::call`] logged in as `login` (user, password) with HTTP Basic
    /// authentication.
    pub fn call_as(
        &self,
        login: Option<(&str, &str)>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let (status, text) = self.call_text_as(login, method, path, body);
        (status, serde_json::from_str(&text).unwrap_or_default())
    }

    /// `GET path`: the status and the body as text (CSV, NDJSON, plain-text errors).
    pub fn get_text(&self, path: &str) -> (u16, String) {
        self.call_text_as(None, "GET", path, None)
    }

    /// [`Gateway::call_as`], the answer's body as text.
    pub fn call_text_as(
        &self,
        login: Option<(&str, &str)>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let url = self.http_url(path);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some((user, password)) = login {
            use base64::Engine as _;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request = request.header("Authorization", format!("Basic {token}"));
        }
        if body.is_some() {
            request = request.header("Content-Type", "application/json");
        }
        let request = request.body(body.unwrap_or_default().to_owned()).unwrap();
        let mut response = agent.run(request).unwrap();
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .unwrap_or_default();
        (status, text)
    }

    /// A value of `/metrics` (`name` with its labels, e.g. `kite_devices{state="online"}`);
    /// 0 when it is not there.
    pub fn metric(&self, name: &str) -> u64 {
        let text = ureq::get(&self.http_url("/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
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

/// Serves `html` for every request on a port of its own (a page of another origin than the
/// gateway's, for kite.js); returns the page's URL. The server lives as long as the process.
pub fn page_server(html: String) -> String {
    use std::io::{BufRead as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port for the page");
    let url = format!("http://{}/", listener.local_addr().expect("its address"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let Ok(read) = stream.try_clone() else {
                continue;
            };
            let mut reader = std::io::BufReader::new(read);
            // The request line and headers, up to the blank line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    url
}
