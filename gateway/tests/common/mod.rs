//! Running the real `kite` binary in integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use kite_mqtt::codec::{Connect, Properties};
use kite_mqtt::{Limits, Packet, Version};

/// `kite serve --http 127.0.0.1:0 --mqtt 127.0.0.1:0 <extra>` (the embedded broker, free
/// ports, warnings only); returns the child and the line it prints on stdout.
pub fn serve_embedded<S: AsRef<OsStr>>(extra: &[S]) -> (Child, String) {
    let mut args: Vec<&OsStr> = ["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"]
        .iter()
        .map(OsStr::new)
        .collect();
    args.extend(extra.iter().map(AsRef::as_ref));
    serve(&args, &[])
}

/// `kite serve <args>` with `env` set (no `KITE_CONFIG`, `KITE_HTTP` or `KITE_MQTT` from the
/// test's own environment; warnings only); returns the child and the line it prints on stdout.
pub fn serve<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &OsStr)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kite"))
        .arg("serve")
        .args(args)
        .env_remove("KITE_CONFIG")
        .env_remove("KITE_HTTP")
        .env_remove("KITE_MQTT")
        .env("KITE_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// The `host:port` after `scheme` (`"http://"`, `"mqtt://"`) in `kite serve`'s stdout line.
pub fn address(line: &str, scheme: &str) -> String {
    line.split(scheme)
        .nth(1)
        .and_then(|rest| rest.split(['/', ')', ' ', ';']).next())
        .map(|a| a.trim().to_owned())
        .unwrap_or_else(|| panic!("no {scheme} address in {line:?}"))
}

/// A server process killed when the test ends — also when an assertion fails first, so that
/// it never outlives the test holding the test's output pipe open.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM` for the peak), in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A blocking MQTT 5 client over TCP, packet by packet.
pub struct Client {
    /// The connection.
    pub stream: TcpStream,
    /// Bytes read and not yet decoded.
    pub buf: BytesMut,
}

impl Client {
    /// Connects with a session that expires an hour after the connection ends; returns the
    /// client and whether the broker had a session for it.
    pub fn connect(addr: &str, client_id: &str, clean_start: bool) -> (Self, bool) {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut c = Self {
            stream,
            buf: BytesMut::new(),
        };
        c.send(&Packet::Connect(Box::new(Connect {
            client_id: client_id.into(),
            clean_start,
            keep_alive: 0,
            properties: Properties {
                session_expiry_interval: Some(3600),
                ..Properties::default()
            }
            .into(),
            ..Connect::default()
        })));
        match c.recv() {
            Some(Packet::ConnAck(a)) if !a.reason.is_error() => (c, a.session_present),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Sends one packet.
    pub fn send(&mut self, p: &Packet) {
        let mut b = BytesMut::new();
        p.encode(Version::V5, &mut b).unwrap();
        self.stream.write_all(&b).unwrap();
    }

    /// The next packet; `None` when the connection is gone.
    pub fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) =
                kite_mqtt::decode(&mut self.buf, Version::V5, &Limits::default()).unwrap()
            {
                return Some(p);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
