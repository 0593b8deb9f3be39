//! Dashboards through the storage interface: kept across a restart (with `Sync::Always`,
//! each change is on disk when the call returns), replaced by id, deleted, and the examples
//! given once — a store's first start — so that deleted examples stay deleted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kite_data::{Dashboard, RedbStorage, Retention, Storage, Sync};

const FOREVER: Retention = Retention {
    max_age: None,
    max_bytes: u64::MAX,
};

fn dashboard(id: &str, title: &str, version: u64) -> Dashboard {
    Dashboard {
        id: id.into(),
        doc: serde_json::json!({"schemaVersion": 1, "title": title, "widgets": []}),
        created: 1_000,
        updated: 1_000 + version,
        updated_by: "ann".into(),
        version,
    }
}

fn sorted(mut v: Vec<Dashboard>) -> Vec<Dashboard> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

#[test]
fn dashboards_are_kept_replaced_deleted_and_seeded_once() {
    let d = std::env::temp_dir().join(format!("kite-dashboards-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    {
        let s = RedbStorage::open(&d, Sync::Always, FOREVER).unwrap();
        assert!(s.dashboards().unwrap().is_empty());
        assert!(
            s.seed_dashboards(&[
                dashboard("ex-1", "Broker", 1),
                dashboard("ex-2", "Clients", 1)
            ])
            .unwrap()
        );
        s.save_dashboard(&dashboard("a", "Line 1", 1)).unwrap();
        s.save_dashboard(&dashboard("a", "Line 1 (renamed)", 2))
            .unwrap();
        assert!(s.delete_dashboard("ex-2").unwrap());
        assert!(!s.delete_dashboard("ex-2").unwrap());
    }
    // No prune, no clean shutdown needed: each commit was fsynced.
    let s = RedbStorage::open(&d, Sync::Always, FOREVER).unwrap();
    assert_eq!(
        sorted(s.dashboards().unwrap()),
        vec![
            dashboard("a", "Line 1 (renamed)", 2),
            dashboard("ex-1", "Broker", 1)
        ]
    );
    assert_eq!(
        s.dashboard("a").unwrap(),
        Some(dashboard("a", "Line 1 (renamed)", 2))
    );
    assert_eq!(s.dashboard("ex-2").unwrap(), None);
    // Seeded once: the deleted example does not come back.
    assert!(
        !s.seed_dashboards(&[dashboard("ex-2", "Clients", 1)])
            .unwrap()
    );
    assert_eq!(s.dashboards().unwrap().len(), 2);
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}
