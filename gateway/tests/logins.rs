//! Logins under a flood, against the real `kite` binary: 200 wrong-password CONNECTs at once
//! from one address took 4 GB (an argon2id check is ~19 MiB, and every one ran at once) and
//! kept a valid login waiting for seconds. Now the process's peak RSS stays within a stated
//! bound, and a valid login from another address gets in while the flood is under way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An MQTT 3.1.1 CONNECT with a user name and password.
fn connect_packet(client_id: &str, user: &str, password: &str) -> Vec<u8> {
    let mut body = vec![0, 4];
    body.extend_from_slice(b"MQTT");
    body.extend_from_slice(&[4, 0b1100_0010, 0, 60]);
    for s in [client_id, user, password] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// The CONNACK return code for this CONNECT, sent from `from` (`None`: any local address).
fn login(mqtt: SocketAddr, from: Option<SocketAddr>, client_id: &str, password: &str) -> u8 {
    let stream = match from {
        None => TcpStream::connect(mqtt).unwrap(),
        Some(local) => {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(&local.into()).unwrap();
            s.connect(&mqtt.into()).unwrap();
            s.into()
        }
    };
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(&connect_packet(client_id, "alice", password))
        .unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(&connack[..2], &[0x20, 2]);
    connack[3]
}

/// 200 concurrent wrong passwords from 127.0.0.1: each is refused (return code 4, or 3 when
/// its check could not start within the connect timeout), a valid login from 127.0.0.2 gets
/// in meanwhile, the peak RSS of the process stays under 200 MiB, and /metrics counts them.
#[test]
fn a_login_flood_is_bounded_in_memory_and_delays_only_its_source() {
    let dir = std::env::temp_dir().join(format!("kite-logins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hash = kite_policy::auth::hash_password(b"right").unwrap();
    let config = dir.join("kite.toml");
    std::fs::write(
        &config,
        format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n[limits]\nconnect_timeout_secs = 10\n"
        ),
    )
    .unwrap();
    let (child, line) = common::serve_embedded(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--data-dir".as_ref(),
        dir.join("data").as_os_str(),
    ]);
    let child = common::KillOnDrop(child);
    let mqtt: SocketAddr = common::address(&line, "mqtt://").parse().unwrap();
    let http = common::address(&line, "http://");
    let before = common::status_kib(child.0.id(), "VmHWM");

    let flood: Vec<_> = (0..200)
        .map(|i| std::thread::spawn(move || login(mqtt, None, &format!("bad-{i}"), "wrong")))
        .collect();
    // While the flood waits, a valid login from another address.
    std::thread::sleep(Duration::from_millis(300));
    let other: SocketAddr = "127.0.0.2:0".parse().unwrap();
    assert_eq!(login(mqtt, Some(other), "good", "right"), 0, "accepted");
    let codes: Vec<u8> = flood.into_iter().map(|t| t.join().unwrap()).collect();
    // 4: bad user name or password; 3: server unavailable (busy), in the 3.1.1 form.
    assert!(codes.iter().all(|c| *c == 4 || *c == 3), "{codes:?}");
    assert!(codes.contains(&4));

    let peak = common::status_kib(child.0.id(), "VmHWM");
    let metrics = {
        let mut s = TcpStream::connect(&http).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "peak RSS: {before} KiB before, {peak} KiB through the flood; codes: {} refused, {} busy",
        codes.iter().filter(|c| **c == 4).count(),
        codes.iter().filter(|c| **c == 3).count()
    );
    assert!(peak < 200 * 1024, "peak RSS {peak} KiB");
    let count = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert_eq!(
        count("kite_login_failures_total") + count("kite_login_busy_total"),
        200
    );
    assert!(count("kite_login_delayed_total") > 0);
}
