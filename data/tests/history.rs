//! The history store through its interface: what is recorded comes back (also after a
//! restart), series buckets match a naive M4, bounds hold, and bad queries are refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::PathBuf;

use bytes::Bytes;
use kite_data::{
    Bucket, DataError, QueryError, Record, RedbStorage, Retention, Span, Storage, Stored, Sync,
};
use kite_mqtt::QoS;
use kite_mqtt::codec::Properties;
use proptest::prelude::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kite-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

const FOREVER: Retention = Retention {
    max_age: None,
    max_bytes: u64::MAX,
};

fn open(d: &std::path::Path, retention: Retention) -> RedbStorage {
    RedbStorage::open(d, Sync::Periodic, retention).unwrap()
}

fn rec(topic: &str, t: u64, payload: &str) -> Record {
    Record {
        topic: topic.into(),
        message: Stored {
            t,
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        },
    }
}

fn texts(page: &kite_data::Page) -> Vec<String> {
    page.messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

#[test]
fn messages_come_back_newest_first_whole_and_after_a_restart() {
    let d = dir("restart");
    let props = Properties {
        content_type: Some("application/json".into()),
        user_properties: vec![("k".into(), "v".into())],
        ..Properties::default()
    };
    {
        let s = open(&d, FOREVER);
        // Enough for several closed chunks and an open one.
        let batch: Vec<Record> = (0..2_000u64)
            .map(|i| rec("plant/a/temp", 1_000 + i, &format!("{i}")))
            .collect();
        for part in batch.chunks(100) {
            s.record(part).unwrap();
        }
        let mut special = rec("plant/a/state", 5_000, "{\"on\": true}");
        special.message.retain = true;
        special.message.qos = QoS::ExactlyOnce;
        special.message.properties = props.clone().into();
        s.record(&[special]).unwrap();
        let page = s.messages("plant/a/temp", Span::ALL, 3).unwrap();
        assert_eq!(texts(&page), ["1999", "1998", "1997"]);
        assert!(page.more);
    }
    // Reopened: the closed chunks and the open one (rebuilt from the tail) are all there.
    let s = open(&d, FOREVER);
    let page = s.messages("plant/a/temp", Span::ALL, 10_000).unwrap();
    assert_eq!(page.messages.len(), 2_000);
    assert!(!page.more);
    assert_eq!(texts(&page)[0], "1999");
    assert_eq!(texts(&page)[1_999], "0");
    assert!(page.messages.windows(2).all(|w| w[0].t > w[1].t));
    let span = Span {
        from: 1_100,
        to: 1_104,
    };
    assert_eq!(
        texts(&s.messages("plant/a/temp", span, 100).unwrap()),
        ["104", "103", "102", "101", "100"]
    );
    let state = s.messages("plant/a/state", Span::ALL, 10).unwrap();
    let m = &state.messages[0];
    assert_eq!((m.t, m.qos, m.retain), (5_000, QoS::ExactlyOnce, true));
    assert_eq!(*m.properties, props);
    let topics = s.topics().unwrap();
    assert_eq!(topics.len(), 2);
    assert_eq!(topics[0].topic, "plant/a/state");
    assert_eq!(topics[0].fields, ["/on"]);
    assert_eq!(
        (topics[1].count, topics[1].first, topics[1].last),
        (2_000, 1_000, 2_999)
    );
    assert_eq!(topics[1].fields, [""]);
    // More after the restart continues the same streams.
    s.record(&[rec("plant/a/temp", 3_000, "2000")]).unwrap();
    assert_eq!(
        texts(&s.messages("plant/a/temp", Span::ALL, 1).unwrap()),
        ["2000"]
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_very_first_batch_survives_a_restart_in_its_open_chunk() {
    let d = dir("first");
    {
        let s = open(&d, FOREVER);
        s.record(&[rec("a", 1, "{\"v\": 5}")]).unwrap();
    }
    let s = open(&d, FOREVER);
    assert_eq!(s.messages("a", Span::ALL, 10).unwrap().messages.len(), 1);
    let series = s.series("a", Some("/v"), Span::ALL, 10).unwrap();
    assert_eq!(series[0].buckets[0].count, 1);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_clock_stepped_back_records_at_the_topics_last_time() {
    let d = dir("clock");
    let s = open(&d, FOREVER);
    s.record(&[
        rec("a", 5_000, "1"),
        rec("a", 4_000, "2"),
        rec("b", 4_000, "3"),
    ])
    .unwrap();
    let page = s.messages("a", Span::ALL, 10).unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.t).collect::<Vec<_>>(),
        [5_000, 5_000]
    );
    assert_eq!(s.messages("b", Span::ALL, 10).unwrap().messages[0].t, 4_000);
    let _ = std::fs::remove_dir_all(&d);
}

/// M4 by hand: every point in its bucket.
fn naive(points: &[(u64, f64)], span: Span, n: usize) -> Vec<Bucket> {
    let total = u128::from(span.to - span.from) + 1;
    let n = (n as u128).min(total);
    let width = total.div_ceil(n) as u64;
    let mut out: Vec<Bucket> = Vec::new();
    for &(t, v) in points.iter().filter(|(t, _)| span.contains(*t)) {
        let start = span.from + (t - span.from) / width * width;
        match out.iter_mut().find(|b| b.t == start) {
            Some(b) => {
                b.last = v;
                b.min = b.min.min(v);
                b.max = b.max.max(v);
                b.count += 1;
            }
            None => out.push(Bucket {
                t: start,
                first: v,
                last: v,
                min: v,
                max: v,
                count: 1,
            }),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// `[MQTT]`-independent: the series API's buckets are those of a naive M4 over the same
    /// points, whatever the span and bucket count, across closed and open chunks.
    #[test]
    fn series_buckets_match_a_naive_m4(
        steps in proptest::collection::vec((0u64..5_000, -1e6f64..1e6), 1..1_500),
        from in 0u64..200_000,
        len in 0u64..3_000_000,
        n in 1usize..2_000,
        json in any::<bool>(),
    ) {
        let d = dir(&format!("m4-{}", rand_suffix()));
        let s = open(&d, FOREVER);
        let mut t = 0;
        let mut points = Vec::new();
        let mut batch = Vec::new();
        for (dt, v) in steps {
            t += dt;
            points.push((t, v));
            let payload = if json { format!("{{\"x\": {{\"v\": {v}}}}}") } else { format!("{v}") };
            batch.push(rec("s/1", t, &payload));
        }
        for part in batch.chunks(97) {
            s.record(part).unwrap();
        }
        let span = Span { from, to: from + len };
        let field = if json { Some("/x/v") } else { None };
        let got = s.series("s/1", field, span, n).unwrap();
        prop_assert_eq!(got.len(), 1);
        // Values went through their decimal text: compare with what it parses back to.
        let parsed: Vec<(u64, f64)> = points.iter().map(|&(t, v)| (t, format!("{v}").parse().unwrap())).collect();
        prop_assert_eq!(&got[0].buckets, &naive(&parsed, span, n));
        prop_assert!(got[0].buckets.len() <= n);
        let _ = std::fs::remove_dir_all(&d);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn a_filter_gives_one_series_per_topic_and_bad_queries_say_why() {
    let d = dir("filter");
    let s = open(&d, FOREVER);
    s.record(&[
        rec("plant/a/temp", 1, r#"{"temp": 20, "hum": 40}"#),
        rec("plant/b/temp", 2, r#"{"temp": 22}"#),
        rec("plant/c/note", 3, "hello"),
        rec("other/temp", 4, r#"{"temp": 99}"#),
    ])
    .unwrap();
    let all = s
        .series("plant/+/temp", Some("/temp"), Span::ALL, 10)
        .unwrap();
    assert_eq!(
        all.iter()
            .map(|x| (x.topic.as_str(), x.buckets[0].first))
            .collect::<Vec<_>>(),
        [("plant/a/temp", 20.0), ("plant/b/temp", 22.0)]
    );
    // A topic without the field among others that have it: left out.
    assert_eq!(
        s.series("plant/#", Some("/hum"), Span::ALL, 10)
            .unwrap()
            .len(),
        1
    );
    match s.series("plant/+/temp", Some("/pressure"), Span::ALL, 10) {
        Err(DataError::Query(QueryError::UnknownField { field, known, .. })) => {
            assert_eq!(field, "/pressure");
            assert_eq!(known, "\"/hum\", \"/temp\"");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.series("plant/c/note", None, Span::ALL, 10),
        Err(DataError::Query(QueryError::UnknownField { .. }))
    ));
    for points in [0, 10_001] {
        assert!(matches!(
            s.series("plant/#", None, Span::ALL, points),
            Err(DataError::Query(QueryError::Points(p))) if p == points
        ));
    }
    assert!(matches!(
        s.series("plant/#", Some("temp"), Span::ALL, 10),
        Err(DataError::Query(QueryError::Field(_)))
    ));
    // Nothing recorded under the filter: no series, no error (a chart with no data yet).
    assert_eq!(
        s.series("nothing/#", Some("/temp"), Span::ALL, 10).unwrap(),
        []
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn export_visits_every_message_of_a_subtree_in_order() {
    let d = dir("export");
    let s = open(&d, FOREVER);
    let mut batch = Vec::new();
    for i in 0..3_000u64 {
        batch.push(rec(&format!("site/{}/v", i % 3), i, &format!("{i}")));
    }
    batch.push(rec("elsewhere", 5, "x"));
    for part in batch.chunks(250) {
        s.record(part).unwrap();
    }
    let mut seen: Vec<(String, u64)> = Vec::new();
    let n = s
        .export("site/#", Span::ALL, &mut |topic, m| {
            seen.push((topic.to_owned(), m.t));
            true
        })
        .unwrap();
    assert_eq!(n, 3_000);
    assert_eq!(seen.len(), 3_000);
    assert_eq!(seen[0], ("site/0/v".into(), 0));
    assert_eq!(seen[999], ("site/0/v".into(), 2_997));
    assert_eq!(seen[1_000], ("site/1/v".into(), 1));
    // Within a span, and stopped early.
    let mut k = 0;
    let n = s
        .export("site/1/v", Span { from: 100, to: 199 }, &mut |_, _| {
            k += 1;
            k < 5
        })
        .unwrap();
    assert_eq!((n, k), (5, 5));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_flooding_topic_cannot_grow_the_store_past_max_bytes() {
    let d = dir("bytes");
    let max = 2 << 20;
    let s = open(
        &d,
        Retention {
            max_age: None,
            max_bytes: max,
        },
    );
    s.record(&[rec("quiet", 0, "1")]).unwrap();
    let payload = "x".repeat(200);
    let mut t = 1;
    for _ in 0..200 {
        let batch: Vec<Record> = (0..100)
            .map(|_| {
                t += 1;
                rec("flood", t, &payload)
            })
            .collect();
        s.record(&batch).unwrap();
        assert!(s.usage().bytes <= max, "{:?}", s.usage());
    }
    let u = s.usage();
    assert!(u.dropped > 5_000, "{u:?}");
    assert_eq!(u.messages + u.dropped, 20_001, "{u:?}");
    // The oldest went first: the quiet topic's one message, then the flood's oldest.
    let page = s.messages("flood", Span::ALL, 100_000).unwrap();
    assert_eq!(page.messages.len() as u64, u.messages);
    assert_eq!(page.messages[0].t, t);
    let file = std::fs::metadata(s.path()).unwrap().len();
    println!("usage {u:?}, file {file} bytes");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn retention_removes_what_is_older_and_says_so() {
    let d = dir("retention");
    let day = 86_400_000;
    let s = open(
        &d,
        Retention {
            max_age: Some(day),
            max_bytes: u64::MAX,
        },
    );
    // Two days of one message a minute, then a third day's.
    let batch: Vec<Record> = (0..3 * 1_440u64)
        .map(|i| rec("m", i * 60_000, "1"))
        .collect();
    for part in batch.chunks(500) {
        s.record(part).unwrap();
    }
    let now = 3 * day;
    let u = s.prune(now).unwrap();
    assert!(u.expired > 0);
    let page = s.messages("m", Span::ALL, 100_000).unwrap();
    assert!(page.messages.iter().all(|m| m.t >= now - day));
    assert_eq!(page.messages.len(), 1_440);
    assert_eq!(s.topics().unwrap()[0].first, now - day);
    // The horizon is kept across a restart.
    drop(s);
    let s = open(&d, FOREVER);
    assert_eq!(
        s.messages("m", Span::ALL, 100_000).unwrap().messages.len(),
        1_440
    );
    let _ = std::fs::remove_dir_all(&d);
}
