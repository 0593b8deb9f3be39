//! The devices API (`[[devices]]`), behind the same logins as the rest of the HTTP API; a
//! role sees a device only when its `subscribe` rules cover one of the device's topics (a
//! device known only by its client connection: when they cover every topic, `#`).
//!
//! - `GET /api/v1/devices?state=S&q=T&after=ID&limit=N` — `{"devices": [..], "more": bool,
//!   "counts": {"online": n, "offline": n, "stale": n, "unknown": n}}`: the devices in natural
//!   order of their ids (`dev-2` before `dev-10`), those in state `S` (one of online, offline,
//!   stale, unknown; several comma-separated) whose id contains `T` (ignoring case), after
//!   the id `ID` (the last of the previous page), at most `N` (default 1,000, at most
//!   10,000); `counts` are over the devices the caller sees, before `state` and `q`.
//! - `GET /api/v1/devices/{id}` — one device, or `404`.
//! - `DELETE /api/v1/devices/{id}` — forgets a device that is gone for good (`204`; `404` if
//!   none): a role needs `manage_alarms = true` (`403` otherwise). It comes back, as new,
//!   if it is heard from again.
//!
//! A device: `{"id", "state", "since", "last_seen", "last_topic", "said": {"online", "t",
//! "source", "detail"}, "stale_after_secs", "topics", "metrics", "bd_seq"}` (times in ms
//! since the epoch; absent fields are unknown; `metrics` and `bd_seq` for Sparkplug B).

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kite_data::{Device, Presence};

use crate::history_api::{ApiError, Params, bad, caller, get, may_read, params};
use crate::listen::Peer;
use crate::state::AppState;

/// Devices per page by default, and at most.
const DEFAULT_LIMIT: usize = 1_000;
const MAX_LIMIT: usize = 10_000;

fn not_monitored() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({
            "error": "this gateway monitors no devices: add [[devices]] rules to its config (see the README's \"Devices\")"
        })),
    )
        .into_response()
}

/// The monitor and the caller (role, user), or the answer to send.
async fn open(
    state: &AppState,
    headers: &HeaderMap,
    peer: std::net::IpAddr,
) -> Result<
    (
        std::sync::Arc<crate::monitor::Monitor>,
        Option<kite_policy::Role>,
        String,
    ),
    Response,
> {
    let Some(monitor) = state.devices().cloned() else {
        return Err(not_monitored());
    };
    let (role, user) = caller(state, headers, peer).await?;
    Ok((monitor, role, user))
}

/// Whether the caller may see `d`.
fn visible(role: Option<&kite_policy::Role>, user: &str, d: &Device) -> bool {
    if d.topics.is_empty() {
        return may_read(role, user, "#");
    }
    d.topics.iter().any(|t| may_read(role, user, t))
}

/// A device as the API answers it.
#[derive(serde::Serialize)]
struct DeviceOut<'a> {
    id: &'a str,
    state: &'static str,
    since: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    said: Option<SaidOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stale_after_secs: Option<u64>,
    topics: &'a [String],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    metrics: &'a std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bd_seq: Option<u64>,
}

#[derive(serde::Serialize)]
struct SaidOut<'a> {
    online: bool,
    t: u64,
    source: &'static str,
    detail: &'a str,
}

impl<'a> From<&'a Device> for DeviceOut<'a> {
    fn from(d: &'a Device) -> Self {
        Self {
            id: &d.id,
            state: d.state.as_str(),
            since: d.since,
            last_seen: d.last_seen,
            last_topic: d.last_topic.as_deref(),
            said: d.said.as_ref().map(|s| SaidOut {
                online: s.online,
                t: s.t,
                source: match s.source {
                    kite_data::Source::Status => "status",
                    kite_data::Source::Client => "client",
                    kite_data::Source::Sparkplug => "sparkplug",
                },
                detail: &s.detail,
            }),
            stale_after_secs: d.stale_after.map(|ms| ms / 1000),
            topics: &d.topics,
            metrics: &d.metrics,
            bd_seq: d.bd_seq,
        }
    }
}

/// A device as JSON.
pub fn device_json(d: &Device) -> serde_json::Value {
    serde_json::to_value(DeviceOut::from(d)).unwrap_or_default()
}

/// A JSON answer already encoded.
fn json_bytes(bytes: Vec<u8>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response()
}

/// The query of a list, checked.
struct ListQuery {
    states: Option<Vec<Presence>>,
    text: Option<String>,
    after: Option<String>,
    limit: usize,
}

fn list_query(raw: &Params) -> Result<ListQuery, ApiError> {
    let p = params(raw, &["state", "q", "after", "limit"])?;
    let states = match get(&p, "state") {
        None => None,
        Some(v) => Some(
            v.split(',')
                .map(|s| {
                    Presence::parse(s.trim()).ok_or_else(|| {
                        bad(
                            "state",
                            format!(
                                "state {s:?}: one of online, offline, stale, unknown (several comma-separated)"
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let limit = match get(&p, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n @ 1..=MAX_LIMIT) => n,
            _ => {
                return Err(bad(
                    "limit",
                    format!("limit = {v:?}: a whole number from 1 to {MAX_LIMIT}"),
                ));
            }
        },
    };
    Ok(ListQuery {
        states,
        text: get(&p, "q")
            .filter(|q| !q.is_empty())
            .map(str::to_lowercase),
        after: get(&p, "after").map(str::to_owned),
        limit,
    })
}

/// `GET /api/v1/devices`.
pub async fn list(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(raw): Query<Params>,
) -> Response {
    let (monitor, role, user) = match open(&state, &headers, peer.ip()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let q = match list_query(&raw) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let (counts, page, more) = monitor.page(
        |d| visible(role.as_ref(), &user, d),
        |d| {
            q.states.as_ref().is_none_or(|s| s.contains(&d.state))
                && q.text
                    .as_ref()
                    .is_none_or(|t| d.id.to_lowercase().contains(t.as_str()))
        },
        q.after.as_deref(),
        q.limit,
    );
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        devices: Vec<DeviceOut<'a>>,
        more: bool,
        counts: std::collections::BTreeMap<&'static str, usize>,
    }
    let answer = Answer {
        devices: page.iter().map(DeviceOut::from).collect(),
        more,
        counts: Presence::ALL
            .iter()
            .zip(counts)
            .map(|(p, n)| (p.as_str(), n))
            .collect(),
    };
    match serde_json::to_vec(&answer) {
        Ok(bytes) => json_bytes(bytes),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "error": format!("cannot encode the devices: {e}") })),
        )
            .into_response(),
    }
}

/// `404` for `id`: none, or one the caller may not see (answered alike).
fn no_device(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({
            "error": format!("no device {id:?} (or your role may not read its topics)"),
            "field": "id",
        })),
    )
        .into_response()
}

/// `DELETE /api/v1/devices/{id}`.
pub async fn forget(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (monitor, role, user) = match open(&state, &headers, peer.ip()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let forgotten = {
        let mut engine = monitor.engine();
        match engine.get(&id) {
            Some(d) if visible(role.as_ref(), &user, d) => {
                if role.as_ref().is_some_and(|r| !r.manage_alarms) {
                    return (
                        StatusCode::FORBIDDEN,
                        axum::Json(serde_json::json!({
                            "error": "your role may not forget devices: it needs manage_alarms = true",
                        })),
                    )
                        .into_response();
                }
                engine.forget(&id)
            }
            _ => false,
        }
    };
    if !forgotten {
        return no_device(&id);
    }
    tracing::info!(device = %id, user = %user, "device forgotten");
    // Stored now, so that a restart right after does not bring it back.
    monitor.save().await;
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /api/v1/devices/{id}`.
pub async fn one(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (monitor, role, user) = match open(&state, &headers, peer.ip()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let device = monitor.engine().get(&id).cloned();
    match device {
        Some(d) if visible(role.as_ref(), &user, &d) => axum::Json(device_json(&d)).into_response(),
        // A device the caller may not see is answered as one that does not exist.
        _ => no_device(&id),
    }
}
