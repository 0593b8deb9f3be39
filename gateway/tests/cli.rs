//! The `kite` binary's command line: exit codes and one-line reasons.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

fn kite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kite"))
        .args(args)
        .env_remove("KITE_HTTP")
        .env_remove("KITE_CONFIG")
        .env_remove("KITE_ASSETS")
        .env_remove("KITE_MQTT")
        .output()
        .unwrap()
}

/// Exit code 2 and exactly one line on stderr that contains `needle`.
fn usage_error(args: &[&str], needle: &str) {
    let out = kite(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: one line expected: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{args:?}: {stderr:?} lacks {needle:?}"
    );
}

#[test]
fn version() {
    let out = kite(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("kite {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_names_every_serve_option() {
    let out = kite(&["serve", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--http", "--upstream", "--config", "--assets", "Examples:"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn no_arguments_prints_help_and_exits_2() {
    let out = kite(&[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_usage_is_one_line_and_exit_2() {
    usage_error(&["serve", "--bogus"], "unexpected argument '--bogus'");
    usage_error(
        &["serve", "--htp", "x"],
        "similar argument exists: '--http'",
    );
    usage_error(
        &["serve", "--http", "localhost"],
        "invalid value 'localhost' for '--http <ADDR>'",
    );
    usage_error(
        &["serve", "--upstream", "ws://h:1"],
        "unsupported scheme \"ws\"",
    );
    usage_error(&["serve", "--upstream", "mqtt://h:70000"], "1 to 65535");
    usage_error(&["frobnicate"], "unrecognized subcommand 'frobnicate'");
    usage_error(&["serve", "--tls-cert", "c.pem"], "--tls-key");
}

#[test]
fn bad_configuration_is_one_line_and_exit_2() {
    // Checked before anything is bound.
    usage_error(
        &["serve", "--http", "127.0.0.1:0", "--mqtt", "0.0.0.0:1883"],
        "the embedded broker would listen on 0.0.0.0:1883 without authentication",
    );
    usage_error(
        &[
            "serve",
            "--upstream",
            "mqtt://127.0.0.1:1",
            "--assets",
            "/nonexistent",
        ],
        "has no index.html",
    );
    let dir = std::env::temp_dir().join(format!("kite-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kite.toml");
    std::fs::write(&file, "[http]\nlisten = 8080\n").unwrap();
    // The same pass as `kite check-config`: the file, the line and what is wrong.
    usage_error(
        &["serve", "--config", file.to_str().unwrap()],
        "kite.toml:2: [http]: invalid type: integer `8080`, expected a string",
    );
    usage_error(
        &["serve", "--config", "/nonexistent/kite.toml"],
        "cannot read config file /nonexistent/kite.toml",
    );
}

/// `kite [global] serve --http 127.0.0.1:0 --upstream [NAME=]mqtt://127.0.0.1:<unused port>`,
/// with stdout and stderr piped.
fn spawn_serve(global: &[&str], upstream_name: &str) -> std::process::Child {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = unused.local_addr().unwrap().port();
    drop(unused);
    let upstream = format!("{upstream_name}mqtt://127.0.0.1:{port}");
    spawn(global, &["--http", "127.0.0.1:0", "--upstream", &upstream])
}

/// `kite [global] serve [serve_args]`, with stdout and stderr piped.
fn spawn(global: &[&str], serve_args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_kite"))
        .args(global)
        .arg("serve")
        .args(serve_args)
        .env_remove("KITE_CONFIG")
        .env_remove("KITE_MQTT")
        .env("KITE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn serve_prints_its_address_and_answers() {
    let mut child = spawn_serve(&[], "plant=");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    let body = std::io::Read::bytes(
        std::net::TcpStream::connect(&addr)
            .map(|mut s| {
                use std::io::Write;
                write!(s, "GET /api/v1/upstreams HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
                s
            })
            .unwrap(),
    )
    .map(|b| b.unwrap())
    .collect::<Vec<u8>>();
    let body = String::from_utf8(body).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(body.contains(r#""upstreams":["plant"]"#), "{body}");
}

/// Without an upstream, `kite serve` runs the embedded broker and says where devices reach it.
#[test]
fn serve_without_upstream_runs_the_embedded_broker() {
    use std::io::{Read, Write};
    let data = std::env::temp_dir().join(format!("kite-cli-data-{}", std::process::id()));
    let mut child = spawn(
        &[],
        &[
            "--http",
            "127.0.0.1:0",
            "--mqtt",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mqtt = common::address(&line, "mqtt://");
    let mut s = std::net::TcpStream::connect(&mqtt).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // MQTT 3.1.1 CONNECT, clean session, client id "d".
    s.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'd',
    ])
    .unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    assert!(data.join("broker.redb").is_file(), "no data file");
    let _ = std::fs::remove_dir_all(&data);
}

/// Found attacking 0.9: a client id with a newline was written raw to the text log, so a
/// client could forge log lines. Text logs escape control characters: one event, one line.
#[test]
fn a_client_cannot_forge_log_lines() {
    use std::io::{Read, Write};
    let data = std::env::temp_dir().join(format!("kite-cli-logs-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kite"))
        .args(["serve", "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("KITE_CONFIG")
        .env("KITE_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mqtt = common::address(&line, "mqtt://");
    let mut s = std::net::TcpStream::connect(&mqtt).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // MQTT 3.1.1 CONNECT, clean session, with a client id that starts a fake log line.
    let id = "d\n2026-12-04T00:00:00Z  INFO FORGED\r\x1b[2K";
    let mut connect = vec![0x10, (12 + id.len()) as u8, 0, 4];
    connect.extend_from_slice(b"MQTT");
    connect.extend_from_slice(&[4, 2, 0, 60, 0, id.len() as u8]);
    connect.extend_from_slice(id.as_bytes());
    let _ = s.write_all(&connect);
    let mut connack = [0u8; 4];
    let read = s.read_exact(&mut connack).is_ok();
    let _ = s.write_all(&[0xe0, 0]);
    let _ = s.read(&mut [0u8; 1]);
    // Killed before any assertion: a server outliving the test would hold its output open.
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        read && connack == [0x20, 2, 0, 0],
        "CONNACK accepted: {connack:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&data);
    let mentions: Vec<&str> = stderr.lines().filter(|l| l.contains("FORGED")).collect();
    assert!(
        !mentions.is_empty(),
        "the client id is logged at debug: {stderr}"
    );
    assert!(
        mentions.iter().all(|l| l.contains("d\\n2026-12-04")),
        "a line of its own: {stderr}"
    );
    assert!(
        stderr.contains("d\\n2026-12-04T00:00:00Z  INFO FORGED\\r\\x1b[2K"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "{stderr}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut child = spawn_serve(&["--log-format", "json"], "");
    // The stdout line comes after the first log lines: wait for it, then stop the server.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "no log lines");
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{l}"
        );
    }
    assert!(stderr.contains("forwarding to"), "{stderr}");
}

fn passwd(input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kite"))
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn passwd_prints_a_hash_the_gateway_accepts() {
    let out = passwd("s3cret\n");
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let auth = kite_policy::auth::Auth::new(
        vec![kite_policy::auth::User {
            name: "u".into(),
            password_hash: hash,
            role: None,
        }],
        vec![],
    )
    .unwrap();
    assert!(auth.check(Some("u"), Some(b"s3cret")).is_ok());
    assert!(
        auth.check(Some("u"), Some(b"s3cret\n")).is_err(),
        "the line ending is not part of the password"
    );
    let empty = passwd("\n");
    assert_eq!(empty.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("empty password"));
}

/// `kite check-config FILE`: every problem, each with its line, exit 2; a good file is "ok".
#[test]
fn check_config_reports_every_problem_with_its_line() {
    let dir = std::env::temp_dir().join(format!("kite-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[limits]\nmax_connections = 0\n\n[[upstream]]\nname = \"plant\"\naddresses = [\"mqtt://h:70000\"]\n\n[brokr]\n",
    )
    .unwrap();
    let out = kite(&["check-config", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let path = bad.display().to_string();
    for needle in [
        format!("{path}:2: invalid [limits] max_connections = 0"),
        format!("{path}:6: invalid upstream URL"),
        format!("{path}:8: unknown section [brokr]"),
        "kite: error: 3 problems".to_owned(),
    ] {
        assert!(
            stderr.contains(&needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
    let good = dir.join("good.toml");
    std::fs::write(&good, "[broker]\nlisten = \"127.0.0.1:1883\"\n").unwrap();
    let out = kite(&["check-config", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    // What serve would take from the environment is checked too.
    let out = Command::new(env!("CARGO_BIN_EXE_kite"))
        .args(["check-config", good.to_str().unwrap()])
        .env("KITE_BROKER__MAX_INFLIGHT", "many")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("KITE_BROKER__MAX_INFLIGHT"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `KITE_<SECTION>__<KEY>` sets a config-file key; a bad one is named in one line.
#[test]
fn environment_sets_config_keys() {
    let out = Command::new(env!("CARGO_BIN_EXE_kite"))
        .args(["serve", "--http", "127.0.0.1:0"])
        .env_remove("KITE_CONFIG")
        .env_remove("KITE_MQTT")
        .env("KITE_LIMITS__MAX_CONNECTIONS", "lots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("KITE_LIMITS__MAX_CONNECTIONS") && stderr.contains("max_connections"),
        "{stderr}"
    );

    // Both listeners from the environment alone (no flags, no file).
    let data = std::env::temp_dir().join(format!("kite-cli-env-{}", std::process::id()));
    let any = std::ffi::OsStr::new("127.0.0.1:0");
    let (mut child, line) = common::serve::<&str>(
        &[],
        &[
            ("KITE_HTTP__LISTEN", any),
            ("KITE_BROKER__LISTEN", any),
            ("KITE_BROKER__DATA_DIR", data.as_os_str()),
        ],
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let http = common::address(&line, "http://");
    let mqtt = common::address(&line, "mqtt://");
    assert!(
        !http.ends_with(":8080") && !mqtt.ends_with(":1883"),
        "defaults used: {line}"
    );
    assert!(data.join("broker.redb").is_file(), "data_dir not used");
    let _ = std::fs::remove_dir_all(&data);
}
