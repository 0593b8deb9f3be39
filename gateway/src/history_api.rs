//! The history API (`[history]`), behind the same logins as the rest of the HTTP API; a role
//! reads only the topics its `subscribe` rules let it subscribe to.
//!
//! - `GET /api/v1/history?topic=T&from=F&to=U&limit=N` — one topic's messages, newest first:
//!   `{"messages": [{"t", "payload", "encoding", "qos", "retain", "properties"}], "more"}`.
//! - `GET /api/v1/history/series?topic=T&field=/temp&from=F&to=U&points=P` — numbers in at most
//!   `P` M4 buckets: `{"series": [{"topic", "field", "buckets": [{"t", "first", "last", "min",
//!   "max", "count"}]}]}`; `topic` may be a filter (one series per topic).
//! - `GET /api/v1/history/export?filter=F&from=..&to=..&format=ndjson|csv` — streamed.
//! - `GET /api/v1/history/topics[?filter=F]` — `{"topics": [{"topic", "count", "first",
//!   "last", "fields"}]}`, all recorded topics or those matching `F`.
//!
//! Times (`from`, `to`) are milliseconds since the epoch or RFC 3339 (`2026-12-05T10:00:00Z`);
//! answers give milliseconds. Bad input is a `400` with `{"error", "field"}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use kite_data::{DataError, Span, Storage, Stored};
use kite_mqtt::codec::Properties;

use crate::listen::Peer;
use crate::state::AppState;

/// Messages per page at most (`limit`).
const MAX_LIMIT: usize = 10_000;

/// What a series covers without `from`: the day before `to`.
const DEFAULT_SERIES_SPAN: u64 = 86_400_000;

/// Export output is sent in pieces of about this size.
const EXPORT_PIECE: usize = 64 * 1024;

pub(crate) type Params = Vec<(String, String)>;

/// An answer other than 200: its status, and the JSON error naming the field.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    field: Option<String>,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.field {
            Some(field) => serde_json::json!({ "error": self.message, "field": field }),
            None => serde_json::json!({ "error": self.message }),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// An answer with `status` and the JSON error (naming `field`, when given).
pub(crate) fn api_error(
    status: StatusCode,
    field: Option<&str>,
    message: impl Into<String>,
) -> ApiError {
    ApiError {
        status,
        field: field.map(str::to_owned),
        message: message.into(),
    }
}

pub(crate) fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        field: Some(field.to_owned()),
        message: message.into(),
    }
}

pub(crate) fn forbidden(field: &str, message: String) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        field: Some(field.to_owned()),
        message,
    }
}

fn failed(e: &DataError) -> Response {
    match e {
        DataError::Query(q) => {
            let field = match q {
                kite_data::QueryError::Points(_) => "points",
                _ => "field",
            };
            bad(field, q.to_string()).into_response()
        }
        other => {
            tracing::error!("history: {other}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(
                    serde_json::json!({ "error": format!("the history store failed: {other}") }),
                ),
            )
                .into_response()
        }
    }
}

/// A request's body as JSON: `413` beyond `max` bytes, `408` when it does not arrive within
/// the connect timeout, `400` when it is not JSON (`what`: "the rule", for the messages).
pub(crate) async fn json_body(
    state: &AppState,
    body: axum::body::Body,
    max: usize,
    what: &str,
) -> Result<serde_json::Value, ApiError> {
    let deadline = state.config().limits.connect_timeout;
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, max)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Err(api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some("body"),
                format!("{what} could not be read (at most {max} bytes): {e}"),
            ));
        }
        Err(_) => {
            return Err(api_error(
                StatusCode::REQUEST_TIMEOUT,
                Some("body"),
                format!("{what} did not arrive in time"),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| bad("body", format!("the body is not JSON: {e}")))
}

/// The parameters, each at most once and each one of `known`.
pub(crate) fn params<'p>(
    raw: &'p Params,
    known: &[&str],
) -> Result<Vec<(&'p str, &'p str)>, ApiError> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (k, v) in raw {
        if !known.contains(&k.as_str()) {
            return Err(bad(
                k,
                format!(
                    "unknown parameter {k:?}: this endpoint takes {}",
                    known.join(", ")
                ),
            ));
        }
        if seen.iter().any(|(s, _)| s == k) {
            return Err(bad(k, format!("{k} is given twice")));
        }
        seen.push((k, v));
    }
    Ok(seen)
}

pub(crate) fn get<'p>(p: &[(&'p str, &'p str)], name: &str) -> Option<&'p str> {
    p.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// A time: milliseconds since the epoch, or RFC 3339.
fn parse_time(field: &str, v: &str) -> Result<u64, ApiError> {
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(ms);
    }
    rfc3339(v).ok_or_else(|| {
        bad(
            field,
            format!(
                "{field} = {v:?}: give milliseconds since the epoch (1796464800000) or RFC 3339 (2026-12-05T10:00:00Z, 2026-12-05T11:00:00.5+01:00)"
            ),
        )
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` → ms since the epoch (not before 1970).
fn rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut at = 19;
    let mut ms = 0i64;
    if b.get(at) == Some(&b'.') {
        let start = at + 1;
        at = start;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
        let frac = &s[start..at.min(start + 3)];
        ms = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_min = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if at + 6 == b.len() && b[at + 3] == b':' => {
            let (oh, om) = (num(at + 1..at + 3)?, num(at + 4..at + 6)?);
            let m = oh * 60 + om;
            if sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3_600 + mi * 60 + sec - offset_min * 60;
    u64::try_from(secs * 1_000 + ms).ok()
}

/// The span from `from` and `to` (`from` defaulting to `default_from(to)`).
fn span(p: &[(&str, &str)], default_from: impl Fn(u64) -> u64) -> Result<Span, ApiError> {
    let to = match get(p, "to") {
        Some(v) => parse_time("to", v)?,
        None => crate::recorder::now_ms(),
    };
    let from = match get(p, "from") {
        Some(v) => parse_time("from", v)?,
        None => default_from(to),
    };
    if from > to {
        return Err(bad(
            "from",
            format!("from ({from}) is after to ({to}): swap them"),
        ));
    }
    Ok(Span { from, to })
}

/// The store, or 404 when nothing is recorded.
fn store(state: &AppState) -> Result<Arc<dyn Storage>, ApiError> {
    state.history().cloned().ok_or_else(|| ApiError {
        status: StatusCode::NOT_FOUND,
        field: None,
        message:
            "this gateway records no history: set [history] record = [\"<filters>\"] in its config"
                .into(),
    })
}

/// Whether `role` may read `filter` (a topic name is a filter too).
pub(crate) fn may_read(role: Option<&kite_policy::Role>, user: &str, filter: &str) -> bool {
    role.is_none_or(|r| r.acl.may_subscribe(filter, user, "http-api"))
}

pub(crate) async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    peer: std::net::IpAddr,
) -> Result<(Option<kite_policy::Role>, String), Response> {
    let deadline = state.config().limits.connect_timeout;
    crate::publish_api::login(state, headers, peer, deadline).await
}

/// A topic name or filter parameter, checked, that the caller may read.
pub(crate) fn readable(
    p: &[(&str, &str)],
    name: &str,
    filter_allowed: bool,
    role: Option<&kite_policy::Role>,
    user: &str,
) -> Result<String, ApiError> {
    let Some(v) = get(p, name) else {
        return Err(bad(name, format!("{name} is required")));
    };
    let checked = if filter_allowed {
        kite_mqtt::topic::validate_filter(v)
    } else {
        kite_mqtt::topic::validate_name(v)
    };
    if let Err(e) = checked {
        return Err(bad(name, format!("{name} {v:?}: {e}")));
    }
    if !may_read(role, user, v) {
        return Err(forbidden(
            name,
            format!(
                "{name} {v:?}: your role may not subscribe to it, so it may not read its history"
            ),
        ));
    }
    Ok(v.to_owned())
}

/// A message as JSON (the same shape as the publish API's request).
pub fn message_json(m: &Stored, topic: Option<&str>) -> serde_json::Value {
    let (payload, encoding) = match std::str::from_utf8(&m.payload) {
        Ok(text) => (text.to_owned(), "text"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&m.payload),
            "base64",
        ),
    };
    let mut v = serde_json::json!({
        "t": m.t,
        "payload": payload,
        "encoding": encoding,
        "qos": m.qos as u8,
        "retain": m.retain,
        "properties": properties_json(&m.properties),
    });
    if let (Some(topic), Some(obj)) = (topic, v.as_object_mut()) {
        obj.insert("topic".into(), topic.into());
    }
    v
}

fn properties_json(p: &Properties) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    if let Some(v) = &p.content_type {
        o.insert("content_type".into(), v.to_string().into());
    }
    if let Some(v) = &p.response_topic {
        o.insert("response_topic".into(), v.to_string().into());
    }
    if let Some(v) = &p.correlation_data {
        o.insert(
            "correlation_data".into(),
            base64::engine::general_purpose::STANDARD.encode(v).into(),
        );
    }
    if let Some(v) = p.message_expiry_interval {
        o.insert("message_expiry_interval".into(), v.into());
    }
    if let Some(v) = p.payload_format_indicator {
        o.insert("payload_format_indicator".into(), v.into());
    }
    if !p.user_properties.is_empty() {
        let list: Vec<serde_json::Value> = p
            .user_properties
            .iter()
            .map(|(k, v)| serde_json::json!([k.to_string(), v.to_string()]))
            .collect();
        o.insert("user_properties".into(), list.into());
    }
    o.into()
}

/// `GET /api/v1/history`.
pub async fn messages(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(raw): Query<Params>,
) -> Response {
    let store = match store(&state) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let (role, user) = match caller(&state, &headers, peer.ip()).await {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = (|| {
        let p = params(&raw, &["topic", "from", "to", "limit"])?;
        let topic = readable(&p, "topic", false, role.as_ref(), &user)?;
        let limit = match get(&p, "limit") {
            None => 100,
            Some(v) => match v.parse::<usize>() {
                Ok(n @ 1..=MAX_LIMIT) => n,
                _ => return Err(bad("limit", format!("limit = {v:?}: 1 to {MAX_LIMIT}"))),
            },
        };
        let span = span(&p, |_| 0)?;
        Ok((topic, span, limit))
    })();
    let (topic, span, limit) = match result {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let page = tokio::task::spawn_blocking(move || store.messages(&topic, span, limit)).await;
    match page {
        Ok(Ok(page)) => axum::Json(serde_json::json!({
            "messages": page.messages.iter().map(|m| message_json(m, None)).collect::<Vec<_>>(),
            "more": page.more,
        }))
        .into_response(),
        Ok(Err(e)) => failed(&e),
        Err(e) => failed(&DataError::Database {
            path: Default::default(),
            detail: e.to_string(),
        }),
    }
}

/// `GET /api/v1/history/series`.
pub async fn series(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(raw): Query<Params>,
) -> Response {
    let store = match store(&state) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let (role, user) = match caller(&state, &headers, peer.ip()).await {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = (|| {
        let p = params(&raw, &["topic", "field", "from", "to", "points"])?;
        let topic = readable(&p, "topic", true, role.as_ref(), &user)?;
        let field = get(&p, "field").map(str::to_owned);
        let points = match get(&p, "points") {
            None => 1_000,
            Some(v) => v.parse::<usize>().map_err(|_| {
                bad(
                    "points",
                    format!(
                        "points = {v:?}: a whole number, 1 to {}",
                        kite_data::MAX_POINTS
                    ),
                )
            })?,
        };
        let span = span(&p, |to| to.saturating_sub(DEFAULT_SERIES_SPAN))?;
        Ok::<_, ApiError>((topic, field, span, points))
    })();
    let (topic, field, span, points) = match result {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let answer =
        tokio::task::spawn_blocking(move || store.series(&topic, field.as_deref(), span, points))
            .await;
    match answer {
        Ok(Ok(series)) => {
            let list: Vec<serde_json::Value> = series
                .iter()
                .filter(|s| may_read(role.as_ref(), &user, &s.topic))
                .map(|s| {
                    serde_json::json!({
                        "topic": s.topic,
                        "field": s.field,
                        "buckets": s.buckets.iter().map(|b| serde_json::json!({
                            "t": b.t, "first": b.first, "last": b.last,
                            "min": b.min, "max": b.max, "count": b.count,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            axum::Json(serde_json::json!({ "from": span.from, "to": span.to, "series": list }))
                .into_response()
        }
        Ok(Err(e)) => failed(&e),
        Err(e) => failed(&DataError::Database {
            path: Default::default(),
            detail: e.to_string(),
        }),
    }
}

/// `GET /api/v1/history/topics`.
pub async fn topics(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(raw): Query<Params>,
) -> Response {
    let store = match store(&state) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let (role, user) = match caller(&state, &headers, peer.ip()).await {
        Ok(who) => who,
        Err(r) => return r,
    };
    let filter = match params(&raw, &["filter"]) {
        Ok(p) => match get(&p, "filter") {
            Some(f) => match kite_mqtt::topic::validate_filter(f) {
                Ok(()) => Some(f.to_owned()),
                Err(e) => return bad("filter", format!("filter {f:?}: {e}")).into_response(),
            },
            None => None,
        },
        Err(e) => return e.into_response(),
    };
    match tokio::task::spawn_blocking(move || store.topics()).await {
        Ok(Ok(list)) => {
            let list: Vec<serde_json::Value> = list
                .iter()
                .filter(|t| {
                    filter
                        .as_deref()
                        .is_none_or(|f| kite_mqtt::topic::matches(f, &t.topic))
                })
                .filter(|t| may_read(role.as_ref(), &user, &t.topic))
                .map(|t| {
                    serde_json::json!({
                        "topic": t.topic, "count": t.count, "first": t.first,
                        "last": t.last, "fields": t.fields,
                    })
                })
                .collect();
            axum::Json(serde_json::json!({ "topics": list })).into_response()
        }
        Ok(Err(e)) => failed(&e),
        Err(e) => failed(&DataError::Database {
            path: Default::default(),
            detail: e.to_string(),
        }),
    }
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(out: &mut Vec<u8>, v: &str) {
    if v.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(v.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(v.as_bytes());
    }
}

/// `GET /api/v1/history/export`: streamed — lines are written into pieces of about 64 KiB on
/// a blocking thread, and each piece waits for the client to take the one before (two in
/// flight at most), so an export of any size holds constant memory.
pub async fn export(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(raw): Query<Params>,
) -> Response {
    let store = match store(&state) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let (role, user) = match caller(&state, &headers, peer.ip()).await {
        Ok(who) => who,
        Err(r) => return r,
    };
    let result = (|| {
        let p = params(&raw, &["filter", "from", "to", "format"])?;
        let filter = readable(&p, "filter", true, role.as_ref(), &user)?;
        let csv = match get(&p, "format") {
            None | Some("ndjson") => false,
            Some("csv") => true,
            Some(other) => {
                return Err(bad(
                    "format",
                    format!("format = {other:?}: \"ndjson\" or \"csv\""),
                ));
            }
        };
        let span = span(&p, |_| 0)?;
        Ok((filter, csv, span))
    })();
    let (filter, csv, span) = match result {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(2);
    tokio::task::spawn_blocking(move || {
        let mut piece: Vec<u8> = Vec::with_capacity(EXPORT_PIECE + 4096);
        if csv {
            piece.extend_from_slice(b"t,topic,qos,retain,encoding,payload\n");
        }
        let mut allowed: Option<(String, bool)> = None;
        let mut gone = false;
        let result = store.export(&filter, span, &mut |topic, m| {
            // Deny rules may cover some topics below a readable filter.
            let ok = match &allowed {
                Some((t, ok)) if t == topic => *ok,
                _ => {
                    let ok = may_read(role.as_ref(), &user, topic);
                    allowed = Some((topic.to_owned(), ok));
                    ok
                }
            };
            if !ok {
                return true;
            }
            if csv {
                let (payload, encoding) = match std::str::from_utf8(&m.payload) {
                    Ok(t) => (std::borrow::Cow::Borrowed(t), "text"),
                    Err(_) => (
                        std::borrow::Cow::Owned(
                            base64::engine::general_purpose::STANDARD.encode(&m.payload),
                        ),
                        "base64",
                    ),
                };
                piece.extend_from_slice(format!("{},", m.t).as_bytes());
                csv_field(&mut piece, topic);
                piece.extend_from_slice(
                    format!(",{},{},{encoding},", m.qos as u8, m.retain).as_bytes(),
                );
                csv_field(&mut piece, &payload);
                piece.push(b'\n');
            } else {
                if serde_json::to_writer(&mut piece, &message_json(m, Some(topic))).is_err() {
                    return false;
                }
                piece.push(b'\n');
            }
            if piece.len() >= EXPORT_PIECE {
                let full = std::mem::replace(&mut piece, Vec::with_capacity(EXPORT_PIECE + 4096));
                if tx.blocking_send(Ok(full.into())).is_err() {
                    gone = true;
                    return false;
                }
            }
            true
        });
        match result {
            Ok(_) if !gone => {
                let _ = tx.blocking_send(Ok(piece.into()));
            }
            Ok(_) => {}
            Err(e) => {
                // The status line went already: the body ends with an error the client sees.
                tracing::error!("history export: {e}");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let (content_type, ext) = if csv {
        ("text/csv; charset=utf-8", "csv")
    } else {
        ("application/x-ndjson", "ndjson")
    };
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"kite-history.{ext}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339("2026-12-05T10:00:00Z"), Some(1_796_464_800_000));
        assert_eq!(
            rfc3339("2026-12-05T11:00:00.5+01:00"),
            Some(1_796_464_800_500)
        );
        assert_eq!(
            rfc3339("2026-12-05T09:30:00.123456-00:30"),
            Some(1_796_464_800_123)
        );
        assert_eq!(rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        for bad in [
            "",
            "2026-12-05",
            "2026-12-05T10:00:00",
            "2026-13-05T10:00:00Z",
            "2026-12-05T10:00:00.Z",
            "2026-12-05T10:00:00+0100",
            "1969-12-31T23:59:59Z",
            "２０２６-12-05T10:00:00Z",
        ] {
            assert_eq!(rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        let mut out = Vec::new();
        csv_field(&mut out, "plain");
        out.push(b'|');
        csv_field(&mut out, "a,\"b\"\nc");
        assert_eq!(String::from_utf8(out).unwrap(), "plain|\"a,\"\"b\"\"\nc\"");
    }
}
