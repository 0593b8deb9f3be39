//! Headless Chromium driven through chromedriver's WebDriver HTTP API.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Process, TempDir, free_port, program, wait_for};

/// One Chromium session. Dropping it ends the session and stops chromedriver.
pub struct Browser {
    base: String,
    agent: ureq::Agent,
    _driver: Process,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a fresh headless Chromium session.
    pub fn start() -> Self {
        let chromedriver = program(
            "CHROMEDRIVER",
            &["/usr/bin/chromedriver"],
            "chromium-driver",
        );
        let chromium = program("KITE_CHROMIUM", &["/usr/bin/chromium"], "chromium");
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver");
        let driver = Process(child);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver to be ready", Duration::from_secs(20), || {
            let mut r = agent.get(format!("{base}/status")).call().ok()?;
            let v: Value = r.body_mut().read_json().ok()?;
            v["value"]["ready"].as_bool().filter(|&ready| ready)
        });
        let profile = TempDir::new("chromium");
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut browser = Self {
            base,
            agent,
            _driver: driver,
            _profile: profile,
        };
        let session = browser.call("POST", "/session", Some(caps));
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session from chromedriver: {session}"))
            .to_owned();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self
                .agent
                .post(&url)
                .send_json(body.unwrap_or_else(|| json!({}))),
        }
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let value: Value = response.body_mut().read_json().unwrap();
        if let Some(err) = value["value"]["error"].as_str() {
            panic!(
                "WebDriver {method} {path}: {err}: {}",
                value["value"]["message"]
            );
        }
        value
    }

    /// Resizes the window (e.g. to a phone's 390 × 844).
    pub fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs a script in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )["value"]
            .take()
    }

    /// Text of the first element matching `selector`, if there is one.
    pub fn text(&self, selector: &str) -> Option<String> {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            Value::from(selector)
        );
        self.eval(&script).as_str().map(str::to_owned)
    }

    /// Waits until `selector` matches an element, returning its text.
    pub fn wait_text(&self, selector: &str, timeout: Duration) -> String {
        wait_for(&format!("element {selector:?}"), timeout, || {
            self.text(selector)
        })
    }

    /// The browser console's messages at level SEVERE (errors) since the last call.
    pub fn console_errors(&self) -> Vec<String> {
        let logs = self.call("POST", "/se/log", Some(json!({"type": "browser"})));
        logs["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a PNG screenshot of the page.
    pub fn screenshot(&self, path: &PathBuf) {
        let shot = self.call("GET", "/screenshot", None);
        let b64 = shot["value"].as_str().unwrap();
        std::fs::write(path, decode_base64(b64)).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.base).call();
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
