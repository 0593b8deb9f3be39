//! `GET /api/v1/events?filter=F`: Server-Sent Events of the messages matching `F`, for pages
//! and scripts that want no MQTT client at all (issue #22, item 3).
//!
//! Each stream has a subscriber session of the gateway's own ([`crate::feed`]): an in-process
//! client of the embedded broker, or an MQTT 5 session with the upstream (with the role's
//! broker credentials), ended when the HTTP client goes. It gives the retained values first
//! (`retain: true`), then each message. The caller's role must be allowed to subscribe to
//! `F`, and messages on topics its deny rules cover are left out. Each event is
//! `event: message`, `id: <ms>` and `data:` the message as the history API shows it, with its
//! topic.
//!
//! **Ids and resume.** The topics the recorder keeps (of the broker it records) come from its
//! commits, so their ids are the times they are kept under; the others' ids are the time the
//! stream's session took them. A client that comes back with `Last-Event-ID` (browsers'
//! `EventSource` does it by itself) first gets what the recorder kept on the matching topics
//! from that millisecond on — the newest [`REPLAY_MAX`] at most, oldest first: the messages of
//! that millisecond come again (at least once, as QoS 1) — then the live stream, without
//! what the replay gave. Topics that are not recorded resume live only.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use kite_data::{Millis, Span, Stored};
use kite_mqtt::QoS;
use kite_mqtt::codec::Publish;
use tokio::sync::{mpsc, watch};

use crate::history_api::{Params, api_error, get, may_read, message_json, params, readable};
use crate::listen::Peer;
use crate::state::{AppState, Target};

/// Batches of live messages waiting for a slow client; beyond, messages are dropped and the
/// client is told how many (`event: dropped`, see [`dropped_event`]).
const BUFFER: usize = 256;

/// A comment line this often on a quiet stream: proxies keep it open, and a client that went
/// is noticed (a write fails) and its session ended within this long.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(5);

/// Recorded messages replayed on a resume at most (the newest).
pub const REPLAY_MAX: usize = 10_000;

/// Numbers the streams' client ids.
static STREAMS: AtomicU64 = AtomicU64::new(0);

/// `GET /api/v1/events`.
pub async fn events(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(raw): Query<Params>,
) -> Response {
    let (role, user) = match crate::history_api::caller(&state, &headers, peer.ip()).await {
        Ok(who) => who,
        Err(r) => return r,
    };
    let checked = (|| -> Result<(String, Target), crate::history_api::ApiError> {
        let p = params(&raw, &["filter", "upstream"])?;
        let filter = readable(&p, "filter", true, role.as_ref(), &user)?;
        let target = match get(&p, "upstream") {
            None => state.default_target(),
            Some(name) => Some(state.target(name).ok_or_else(|| {
                api_error(
                    StatusCode::NOT_FOUND,
                    Some("upstream"),
                    format!("no upstream named {name:?}; GET /api/v1/upstreams lists them"),
                )
            })?),
        };
        let target = target.ok_or_else(|| {
            api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "no broker is configured",
            )
        })?;
        Ok((filter, target))
    })();
    let (filter, target) = match checked {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let resume_after: Option<Millis> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());

    // Live first, so that nothing falls between the replay and the stream. Recorded topics
    // of the broker the recorder records come from its commits (their ids are the
    // recorder's times, so a resume starts exactly there); the rest from a session of the
    // stream's own.
    let recorded = match (state.history(), &state.config().history) {
        (Some(store), Some(history))
            if state.default_target().map(|t| t.name().to_owned())
                == Some(target.name().to_owned()) =>
        {
            Some(RecordedSource {
                store: store.clone(),
                filters: history.record.clone(),
                commits: state.recorded(),
            })
        }
        _ => None,
    };
    let (tx, rx) = mpsc::channel::<(Vec<Publish>, Millis)>(BUFFER);
    let dropped = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let n = STREAMS.fetch_add(1, Relaxed);
    let handler: crate::feed::Handler = {
        let dropped = dropped.clone();
        Box::new(move |batch, t| {
            if tx.try_send((batch.to_vec(), t)).is_err() {
                dropped.fetch_add(batch.len() as u64, Relaxed);
            }
        })
    };
    let feed = crate::feed::Feed {
        name: "events",
        client_id: format!("kite-events-{n}"),
        filters: watch::channel(vec![crate::feed::subscription(&filter, QoS::AtLeastOnce)]).1,
        up: Arc::new(AtomicU64::new(0)),
        stop: Some(stopped.clone()),
    };
    match target {
        Target::Embedded(broker) => {
            // Subscribed before the answer starts: what is published after it arrives.
            let subscribed = crate::feed::start_embedded(broker, feed, handler);
            let _ = tokio::time::timeout(state.config().limits.connect_timeout, subscribed).await;
        }
        Target::Upstream(upstream) => {
            let login = role.as_ref().map_or((None, None), |r| {
                (r.upstream_username.clone(), r.upstream_password.clone())
            });
            let feed = crate::feed::Feed {
                client_id: format!("{}-{n}", crate::feed::upstream_client_id("kite-events")),
                ..feed
            };
            let _ = crate::feed::start_upstream(upstream, feed, login, handler, stopped);
        }
    }

    let replayed = match (resume_after, recorded.as_ref()) {
        (Some(after), Some(r)) => {
            let store = r.store.clone();
            let (filter, role, user) = (filter.clone(), role.clone(), user.clone());
            let read = tokio::task::spawn_blocking(move || {
                replay(&*store, &filter, after, &|topic| {
                    may_read(role.as_ref(), &user, topic)
                })
            });
            match read.await {
                Ok(Ok(list)) => list,
                Ok(Err(e)) => {
                    tracing::error!("events: the replay could not be read: {e}");
                    Vec::new()
                }
                Err(e) => {
                    tracing::error!("events: the replay could not be read: {e}");
                    Vec::new()
                }
            }
        }
        _ => Vec::new(),
    };
    // Batches committed while the replay was read are in both: skipped once.
    let seam = replayed.last().map(|(_, last)| {
        let at = last.t;
        let same: std::collections::HashSet<(String, bytes::Bytes)> = replayed
            .iter()
            .filter(|(_, m)| m.t == at)
            .map(|(topic, m)| (topic.clone(), m.payload.clone()))
            .collect();
        (at, same)
    });
    let replay = stream::iter(
        replayed
            .into_iter()
            .map(|(topic, m)| Ok::<_, Infallible>(event(&topic, &m))),
    );
    let live = Live {
        feed: rx,
        recorded,
        seam,
        dropped,
        role,
        user,
        filter,
        shutdown: state.sessions().shutdown.subscribe(),
        _stop: stop,
    };
    let live = stream::unfold(live, |mut live| async move {
        let events = live.next().await?;
        Some((stream::iter(events), live))
    })
    .flatten();
    Sse::new(replay.chain(live))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// The recorder as a source: its store (for a resume), its filters, and its commits.
struct RecordedSource {
    store: Arc<dyn kite_data::Storage>,
    filters: Vec<String>,
    commits: tokio::sync::broadcast::Receiver<Arc<Vec<kite_data::Record>>>,
}

impl RecordedSource {
    fn records(&self, topic: &str) -> bool {
        self.filters
            .iter()
            .any(|f| kite_mqtt::topic::matches(f, topic))
    }
}

/// A stream's live part.
struct Live {
    feed: mpsc::Receiver<(Vec<Publish>, Millis)>,
    recorded: Option<RecordedSource>,
    /// The last replayed time and what was replayed at it: commits up to there are skipped.
    seam: Option<(Millis, std::collections::HashSet<(String, bytes::Bytes)>)>,
    dropped: Arc<AtomicU64>,
    role: Option<kite_policy::Role>,
    user: String,
    filter: String,
    /// The gateway shutting down ends the stream.
    shutdown: watch::Receiver<bool>,
    /// Dropped with the stream: its session ends.
    _stop: watch::Sender<bool>,
}

impl Live {
    /// The next events (never an empty list); `None` when the session is gone.
    async fn next(&mut self) -> Option<Vec<Result<Event, Infallible>>> {
        loop {
            let mut events = Vec::new();
            let got = tokio::select! {
                batch = self.feed.recv() => Got::Feed(batch),
                commit = next_commit(&mut self.recorded) => Got::Commit(commit),
                _ = self.shutdown.wait_for(|down| *down) => Got::Down,
            };
            match got {
                Got::Feed(None) | Got::Down => return None,
                Got::Feed(Some((batch, t))) => {
                    for p in batch {
                        // A recorded topic's live messages come from the recorder; the
                        // retained values sent on subscribing, from here.
                        let from_recorder = !p.retain
                            && self.recorded.as_ref().is_some_and(|r| r.records(&p.topic));
                        if from_recorder || !may_read(self.role.as_ref(), &self.user, &p.topic) {
                            continue;
                        }
                        let record = crate::recorder::record(p, t);
                        events.push(Ok(event(&record.topic, &record.message)));
                    }
                }
                Got::Commit(Ok(batch)) => {
                    for r in batch.iter() {
                        if !kite_mqtt::topic::matches(&self.filter, &r.topic)
                            || self.replayed(&r.topic, &r.message)
                            || !may_read(self.role.as_ref(), &self.user, &r.topic)
                        {
                            continue;
                        }
                        // As a plain subscription sees it: RETAIN only on the values sent
                        // when the stream started.
                        let mut m = r.message.clone();
                        m.retain = false;
                        events.push(Ok(event(&r.topic, &m)));
                    }
                }
                Got::Commit(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                    events.push(Ok(dropped_event("batches", n)));
                }
                Got::Commit(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    self.recorded = None;
                }
            }
            let lost = self.dropped.swap(0, Relaxed);
            if lost > 0 {
                events.insert(0, Ok(dropped_event("messages", lost)));
            }
            if !events.is_empty() {
                return Some(events);
            }
        }
    }

    /// Whether a commit's message was in the replay already.
    fn replayed(&mut self, topic: &str, m: &Stored) -> bool {
        let Some((at, same)) = &self.seam else {
            return false;
        };
        if m.t > *at {
            self.seam = None;
            return false;
        }
        m.t < *at || same.contains(&(topic.to_owned(), m.payload.clone()))
    }
}

/// What a stream waited for.
enum Got {
    Feed(Option<(Vec<Publish>, Millis)>),
    Commit(Result<Arc<Vec<kite_data::Record>>, tokio::sync::broadcast::error::RecvError>),
    Down,
}

/// The next commit of the recorder; never without one.
async fn next_commit(
    source: &mut Option<RecordedSource>,
) -> Result<Arc<Vec<kite_data::Record>>, tokio::sync::broadcast::error::RecvError> {
    match source {
        Some(s) => s.commits.recv().await,
        None => std::future::pending().await,
    }
}

/// What a slow client did not get (`event: dropped`): `{"messages": n}` from its session,
/// `{"batches": n}` of the recorder's commits.
fn dropped_event(what: &str, n: u64) -> Event {
    Event::default()
        .event("dropped")
        .data(serde_json::json!({ what: n }).to_string())
}

/// One message as an event.
fn event(topic: &str, m: &Stored) -> Event {
    Event::default()
        .event("message")
        .id(m.t.to_string())
        .data(message_json(m, Some(topic)).to_string())
}

/// What the recorder kept on the topics matching `filter` at or after `after` that `readable`
/// lets through: the newest [`REPLAY_MAX`], oldest first.
fn replay(
    store: &dyn kite_data::Storage,
    filter: &str,
    after: Millis,
    readable: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, Stored)>, kite_data::DataError> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // The newest kept in a heap whose top is the oldest of them; `seq` orders equal times
    // as they were read (a topic's own messages in order).
    let mut heap: BinaryHeap<Reverse<(Millis, u64, usize)>> = BinaryHeap::new();
    let mut kept: Vec<Option<(String, Stored)>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut seq = 0u64;
    let mut allowed: Option<(String, bool)> = None;
    store.export(
        filter,
        Span {
            from: after,
            to: Millis::MAX,
        },
        &mut |topic, m| {
            let ok = match &allowed {
                Some((t, ok)) if t == topic => *ok,
                _ => {
                    let ok = readable(topic);
                    allowed = Some((topic.to_owned(), ok));
                    ok
                }
            };
            if !ok {
                return true;
            }
            seq += 1;
            if heap.len() == REPLAY_MAX {
                match heap.peek() {
                    Some(Reverse((t, ..))) if *t > m.t => return true,
                    _ => {}
                }
                if let Some(Reverse((_, _, slot))) = heap.pop() {
                    kept[slot] = None;
                    free.push(slot);
                }
            }
            let entry = Some((topic.to_owned(), m.clone()));
            let slot = match free.pop() {
                Some(slot) => {
                    kept[slot] = entry;
                    slot
                }
                None => {
                    kept.push(entry);
                    kept.len() - 1
                }
            };
            heap.push(Reverse((m.t, seq, slot)));
            true
        },
    )?;
    let mut order: Vec<(Millis, u64, usize)> = heap.into_iter().map(|Reverse(e)| e).collect();
    order.sort_unstable();
    Ok(order
        .into_iter()
        .filter_map(|(_, _, slot)| kept.get_mut(slot).and_then(Option::take))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kite_data::{Record, RedbStorage, Storage};

    fn stored(t: Millis, payload: &str) -> Stored {
        Stored {
            t,
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
        }
    }

    /// The replay is in time order across topics, from `after` on, without the topics the
    /// role may not read, and the newest `REPLAY_MAX` when there are more.
    #[test]
    fn the_replay_is_the_newest_in_time_order() {
        let dir = std::env::temp_dir().join(format!("kite-events-replay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = RedbStorage::open(
            &dir,
            kite_data::Sync::Periodic,
            kite_data::Retention {
                max_age: None,
                max_bytes: 1 << 30,
            },
        )
        .unwrap();
        let mut batch = Vec::new();
        for i in 0..(REPLAY_MAX as u64 + 50) {
            for topic in ["a/x", "a/y", "a/secret"] {
                batch.push(Record {
                    topic: topic.into(),
                    message: stored(1_000 + i, &format!("{topic} {i}")),
                });
            }
        }
        store.record(&batch).unwrap();
        let readable = |topic: &str| topic != "a/secret";
        let got = replay(&store, "a/#", 1_005, &readable).unwrap();
        let times: Vec<Millis> = got.iter().map(|(_, m)| m.t).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
        assert!(got.iter().all(|(topic, _)| topic != "a/secret"));
        assert_eq!(got.len(), REPLAY_MAX);
        // The newest kept: the last of both topics are there.
        let last = 1_000 + REPLAY_MAX as u64 + 49;
        assert_eq!(times.last(), Some(&last));
        assert_eq!(times.first(), Some(&(last - (REPLAY_MAX as u64 / 2) + 1)));
        // Fewer than the bound: all of them from `after` on.
        let got = replay(&store, "a/x", last - 2, &readable).unwrap();
        let payloads: Vec<&[u8]> = got.iter().map(|(_, m)| &m.payload[..]).collect();
        let want = [
            format!("a/x {}", REPLAY_MAX + 47),
            format!("a/x {}", REPLAY_MAX + 48),
            format!("a/x {}", REPLAY_MAX + 49),
        ];
        assert_eq!(
            payloads,
            want.iter().map(|s| s.as_bytes()).collect::<Vec<_>>()
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
