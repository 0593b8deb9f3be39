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
        metrics: [("temp".to_owned(), serde_json::json!(21.5))].into(),
        bd_seq: Some(3),
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
            s.save_devices(
                &[
                    device("dev-a", Presence::Online, 1_000),
                    device("dev-b", Presence::Stale, 2_000),
                    device("dev-c", Presence::Online, 2_000),
                ],
                &[],
            )
            .unwrap();
            // A removed device is gone; one removed and saved in the same commit is kept.
            s.save_devices(
                &[device("dev-a", Presence::Offline, 3_000)],
                &["dev-c".into(), "dev-a".into(), "dev-none".into()],
            )
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
        s.save_devices(&[device("dev-a", Presence::Online, 1)], &[])
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

fn rule(name: &str) -> kite_data::AlarmRule {
    kite_data::AlarmRule {
        name: name.into(),
        topic: Some("plant/+/temp".into()),
        field: Some("/temp".into()),
        device: None,
        op: kite_data::Op::Gt,
        value: Some(serde_json::json!(30)),
        for_secs: 5,
        clear_value: Some(28.0),
        severity: kite_data::Severity::Major,
        renotify_mins: Some(15.0),
        notify: kite_data::Notify {
            webhook: Some("https://ops.example.com/hook".into()),
            mqtt: true,
            browser: true,
        },
    }
}

fn alarm(id: u64, state: kite_data::AlarmState) -> kite_data::Alarm {
    kite_data::Alarm {
        id,
        rule: "hot".into(),
        source: "plant/a/temp".into(),
        severity: kite_data::Severity::Major,
        state,
        since: 1_000,
        raised_at: 6_000,
        value: Some(serde_json::json!(31.5)),
        text: "plant/a/temp /temp = 31.5 > 30".into(),
        acknowledged_by: None,
        acknowledged_at: None,
        cleared_at: None,
        cleared_why: None,
        notified: 1,
        notified_at: 6_000,
    }
}

/// Alarm rules and alarms beside the devices: kept across a restart, replaced by their key,
/// removed.
#[test]
fn alarm_rules_and_alarms_are_kept_replaced_and_removed() {
    use kite_data::AlarmState;
    let d = dir("alarms");
    {
        let s = RedbStorage::open(&d, Sync::Always, FOREVER).unwrap();
        s.save_alarm_rule(&rule("hot")).unwrap();
        s.save_alarm_rule(&rule("cold")).unwrap();
        let mut changed = rule("hot");
        changed.for_secs = 9;
        s.save_alarm_rule(&changed).unwrap();
        assert!(s.delete_alarm_rule("cold").unwrap());
        assert!(!s.delete_alarm_rule("cold").unwrap());
        s.save_alarms(
            &[alarm(1, AlarmState::Cleared), alarm(2, AlarmState::Active)],
            &[],
        )
        .unwrap();
        s.save_alarms(&[alarm(2, AlarmState::Acknowledged)], &[1])
            .unwrap();
    }
    let s = RedbStorage::open(&d, Sync::Always, FOREVER).unwrap();
    let rules = s.alarm_rules().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!((rules[0].name.as_str(), rules[0].for_secs), ("hot", 9));
    assert_eq!(rules[0].notify, rule("hot").notify);
    assert_eq!(
        s.alarms().unwrap(),
        vec![alarm(2, AlarmState::Acknowledged)]
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn rules_read_as_the_api_writes_them() {
    let text = r#"{"name": "hot", "topic": "plant/+/temp", "field": "/temp", "op": ">", "value": 30, "for_secs": 5, "clear_value": 28, "severity": "major", "renotify_mins": 15, "notify": {"webhook": "https://ops.example.com/hook", "mqtt": true, "browser": true}}"#;
    let r: kite_data::AlarmRule = serde_json::from_str(text).unwrap();
    assert_eq!(r, rule("hot"));
    let r: kite_data::AlarmRule = serde_json::from_str(
        r#"{"name": "down", "device": "*", "op": "offline", "severity": "critical"}"#,
    )
    .unwrap();
    assert_eq!(
        (r.op, r.for_secs, r.notify.mqtt),
        (kite_data::Op::Offline, 0, false)
    );
}
