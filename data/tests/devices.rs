//! Devices through the storage interface: kept across a restart, replaced by id, kept beside
//! the history in one file (and a file of an earlier version, `history.redb`, is taken over).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use kite_data::{Device, Presence, RedbStorage, Retention, Said, Source, Storage, Sync};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kite-devices-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

const FOREVER: Retention = Retention {
    max_age: None,
    max_bytes: u64::MAX,
};

fn device(id: &str, state: Presence, since: u64) -> Device {
    Device {
        id: id.into(),
        state,
        since,
        last_seen: Some(since),
        last_topic: Some(format!("plant/{id}/temp")),
        said: Some(Said {
            online: state == Presence::Online,
            t: since,
            source: Source::Status,
            detail: "online".into(),
        }),
        stale_after: Some(120_000),
        topics: vec![format!("plant/{id}/#")],
    }
}

fn sorted(mut v: Vec<Device>) -> Vec<Device> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

#[test]
fn devices_are_kept_across_a_restart_and_replaced_by_id() {
    let d = dir("restart");
    for sync in [Sync::Always, Sync::Periodic] {
        let _ = std::fs::remove_dir_all(&d);
        {
            let s = RedbStorage::open(&d, sync, FOREVER).unwrap();
            assert!(s.devices().unwrap().is_empty());
            s.save_devices(&[
                device("dev-a", Presence::Online, 1_000),
                device("dev-b", Presence::Stale, 2_000),
            ])
            .unwrap();
            s.save_devices(&[device("dev-a", Presence::Offline, 3_000)])
                .unwrap();
            // With periodic sync, `prune` is what reaches the disk.
            s.prune(10_000).unwrap();
        }
        let s = RedbStorage::open(&d, sync, FOREVER).unwrap();
        assert_eq!(
            sorted(s.devices().unwrap()),
            vec![
                device("dev-a", Presence::Offline, 3_000),
                device("dev-b", Presence::Stale, 2_000)
            ]
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_history_file_of_an_earlier_version_is_taken_over() {
    let d = dir("rename");
    {
        let s = RedbStorage::open(&d, Sync::Always, FOREVER).unwrap();
        s.save_devices(&[device("dev-a", Presence::Online, 1)])
            .unwrap();
    }
    std::fs::rename(d.join("data.redb"), d.join("history.redb")).unwrap();
    let s = RedbStorage::open(&d, Sync::Always, FOREVER).unwrap();
    assert_eq!(s.path(), d.join("data.redb"));
    assert!(!d.join("history.redb").exists());
    assert_eq!(s.devices().unwrap().len(), 1);
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn presence_names_round_trip() {
    for p in Presence::ALL {
        assert_eq!(Presence::parse(p.as_str()), Some(p));
    }
    assert_eq!(Presence::parse("gone"), None);
}
