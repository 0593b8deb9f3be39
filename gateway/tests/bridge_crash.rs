//! The bridge loses nothing acknowledged (issue #18): a child `kite` bridges `plant/#` to a real
//! mosquitto; mosquitto is stopped, a device publishes at QoS 1 to Kite (every message
//! PUBACKed), Kite is killed with SIGKILL during the outage and restarted on the same data,
//! then mosquitto returns — and a persistent subscriber on mosquitto gets every message, in
//! publish order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kite_mqtt::codec::{Ack, Publish, Subscribe, Subscription};
use kite_mqtt::{Packet, QoS};

mod common;

use common::{Client, KillOnDrop};

const MESSAGES: u32 = 2_000;

/// Debian's mosquitto with persistence in `dir`, on `port`.
struct Mosquitto {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    fn start(dir: &Path, port: u16) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        // Started as root, mosquitto drops to its own user, which must write its database.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let mut m = Self {
            dir: dir.to_owned(),
            port,
            child: None,
        };
        m.run();
        m
    }

    fn run(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 100000\n",
                self.port,
                self.dir.display()
            ),
        )
        .unwrap();
        let bin =
            std::env::var_os("KITE_MOSQUITTO").unwrap_or_else(|| "/usr/sbin/mosquitto".into());
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian's package: `cargo xtask test` installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (mosquitto saves its database) and wait.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kite serve --config FILE --data-dir DATA`; the child and the embedded broker's address.
fn start_kite(config: &Path, data: &Path) -> (KillOnDrop, String) {
    let args: [&OsStr; 8] = [
        OsStr::new("--http"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--mqtt"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ];
    let (child, line) = common::serve(&args, &[]);
    (KillOnDrop(child), common::address(&line, "mqtt://"))
}

fn subscribe(c: &mut Client, filter: &str) {
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![Subscription::new(filter, QoS::AtLeastOnce)],
        properties: Default::default(),
    }));
    loop {
        match c.recv() {
            Some(Packet::SubAck(_)) => return,
            Some(_) => {}
            None => panic!("no SUBACK"),
        }
    }
}

fn publish(c: &mut Client, topic: &str, payload: &str, packet_id: u16) {
    c.send(&Packet::Publish(Publish {
        qos: if packet_id == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        topic: topic.into(),
        packet_id,
        payload: Bytes::from(payload.to_owned()),
        ..Publish::default()
    }));
}

#[test]
fn a_bridged_message_survives_an_outage_and_a_sigkill() {
    let root = std::env::temp_dir().join(format!("kite-bridge-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let port = free_port();
    let mut remote = Mosquitto::start(&root.join("mosquitto"), port);
    let config = root.join("kite.toml");
    std::fs::write(
        &config,
        format!(
            "[[bridge]]\nname = \"cloud\"\naddresses = [\"mqtt://127.0.0.1:{port}\"]\nrestart_secs = [1, 1]\n\n[[bridge.topic]]\npattern = \"plant/#\"\ndirection = \"out\"\nqos = 1\n"
        ),
    )
    .unwrap();
    let data = root.join("kite-data");
    let (mut kite, addr) = start_kite(&config, &data);
    let remote_addr = format!("127.0.0.1:{port}");

    // A persistent subscriber on mosquitto, then away; a live watcher to see the bridge up.
    let (mut archive, _) = Client::connect(&remote_addr, "archive", false);
    subscribe(&mut archive, "plant/#");
    drop(archive);
    let (mut watcher, _) = Client::connect(&remote_addr, "watcher", true);
    subscribe(&mut watcher, "plant/probe");
    let (mut device, _) = Client::connect(&addr, "device", true);
    let deadline = Instant::now() + Duration::from_secs(15);
    watcher
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    loop {
        publish(&mut device, "plant/probe", "probe", 0);
        if matches!(watcher.recv(), Some(Packet::Publish(_))) {
            break;
        }
        assert!(Instant::now() < deadline, "the bridge did not come up");
        watcher = Client::connect(&remote_addr, "watcher", true).0;
        subscribe(&mut watcher, "plant/probe");
        watcher
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    drop(watcher);

    // The outage: every message is PUBACKed by Kite while mosquitto is away.
    remote.stop();
    for i in 1..=MESSAGES {
        let id = (i % 60_000) as u16 + 1;
        publish(&mut device, "plant/seq", &i.to_string(), id);
        loop {
            match device.recv() {
                Some(Packet::PubAck(a)) if a.packet_id == id => break,
                Some(_) => {}
                None => panic!("Kite closed the device's connection at #{i}"),
            }
        }
    }
    // Killed with every message acknowledged and none forwarded; restarted on the same data.
    kite.0.kill().unwrap();
    let _ = kite.0.wait();
    drop(device);
    let (kite, _) = start_kite(&config, &data);
    remote.run();

    let (mut archive, present) = Client::connect(&remote_addr, "archive", false);
    assert!(present, "mosquitto kept the archive's session");
    let mut got: Vec<u32> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.last() != Some(&MESSAGES) {
        assert!(
            Instant::now() < deadline,
            "{} of {MESSAGES} arrived (last {:?})",
            got.len(),
            got.last()
        );
        match archive.recv() {
            Some(Packet::Publish(p)) => {
                if p.qos == QoS::AtLeastOnce {
                    archive.send(&Packet::PubAck(Ack::new(p.packet_id)));
                }
                if p.topic.as_str() == "plant/seq" {
                    got.push(String::from_utf8_lossy(&p.payload).parse().unwrap());
                }
            }
            Some(_) => {}
            None => panic!("mosquitto closed the archive's connection"),
        }
    }
    // In order; at QoS 1 a message sent again after the restart may come twice.
    got.dedup();
    assert_eq!(got, (1..=MESSAGES).collect::<Vec<_>>());
    drop(kite);
    let _ = std::fs::remove_dir_all(&root);
}
