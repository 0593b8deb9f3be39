//! The alarms API, behind the same logins as the rest of the HTTP API. A role sees the rules
//! and alarms of topics its `subscribe` rules cover (for `offline`: of devices it sees) and
//! acknowledges what it sees; it creates, changes and deletes rules only with
//! `manage_alarms = true` (without logins, everyone may), and only on topics it may read.
//!
//! - `GET /api/v1/alarms/rules` — `{"rules": [{...rule, "from": "config"|"api"}]}`.
//! - `POST /api/v1/alarms/rules` — a rule (JSON) → `201 {"name"}`; `409` if the name exists.
//! - `PUT /api/v1/alarms/rules/{name}` — replaces it (its open alarms clear); `404` if none.
//! - `DELETE /api/v1/alarms/rules/{name}` — `204` (its open alarms clear).
//! - `GET /api/v1/alarms?state=S&severity=V&rule=R&offset=N&limit=N` — `{"alarms": [..],
//!   "more": bool, "counts": {"active", "acknowledged", "cleared"}}`: active first, then
//!   acknowledged, then cleared, newest first within each (`counts`: of those asked for, before
//!   `offset` and `limit`).
//! - `GET /api/v1/alarms/{id}`, `POST /api/v1/alarms/{id}/ack` (`409` if acknowledged).
//!
//! The config file's rules (`[[alarm]]`) are changed in the file: the API answers `403`.

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kite_data::{Alarm, AlarmRule, AlarmState, Op, Severity};

use crate::alarming::{AlarmService, ChangeError};
use crate::history_api::{
    ApiError, Params, api_error, bad, caller, get, json_body, may_read, params,
};
use crate::listen::Peer;
use crate::state::AppState;

/// A rule's body at most.
const MAX_BODY: usize = 64 * 1024;

/// Alarms per page by default, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

fn error(status: StatusCode, field: Option<&str>, message: impl Into<String>) -> ApiError {
    api_error(status, field, message)
}

fn no_alarms() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        None,
        "this gateway keeps no alarms: they need a data directory ([broker] data_dir, with persistence on); in front of an upstream broker, give an [[alarm]] rule, [history] or [[devices]] to turn them on",
    )
    .into_response()
}

type Caller = (Option<kite_policy::Role>, String);

/// The service and the caller, or the answer to send.
async fn open(
    state: &AppState,
    headers: &HeaderMap,
    peer: std::net::IpAddr,
) -> Result<(std::sync::Arc<AlarmService>, Caller), Response> {
    let Some(service) = state.alarms().cloned() else {
        return Err(no_alarms());
    };
    let who = caller(state, headers, peer).await?;
    Ok((service, who))
}

/// Whether the caller sees device `id` (its topics; `#` for one known only by its client,
/// or not known).
fn sees_device(state: &AppState, who: &Caller, id: &str) -> bool {
    let role = who.0.as_ref();
    if id != "*"
        && let Some(monitor) = state.devices()
        && let Some(d) = monitor.engine().get(id)
        && !d.topics.is_empty()
    {
        return d.topics.iter().any(|t| may_read(role, &who.1, t));
    }
    may_read(role, &who.1, "#")
}

fn sees_rule(state: &AppState, who: &Caller, r: &AlarmRule) -> bool {
    match (&r.topic, &r.device) {
        (Some(t), _) => may_read(who.0.as_ref(), &who.1, t),
        (None, Some(d)) => sees_device(state, who, d),
        (None, None) => false,
    }
}

fn sees_alarm(state: &AppState, who: &Caller, a: &Alarm, offline: bool) -> bool {
    if offline {
        sees_device(state, who, &a.source)
    } else {
        may_read(who.0.as_ref(), &who.1, &a.source)
    }
}

fn rule_json(r: &AlarmRule, from_config: bool) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "from".into(),
            if from_config { "config" } else { "api" }.into(),
        );
    }
    v
}

fn alarm_json(a: &Alarm, browser: bool) -> serde_json::Value {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("browser".into(), browser.into());
    }
    v
}

/// `GET /api/v1/alarms/rules`.
pub async fn rules(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    let (service, who) = match open(&state, &headers, peer.ip()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let rules: Vec<AlarmRule> = service.evaluator().rules().cloned().collect();
    let list: Vec<serde_json::Value> = rules
        .iter()
        .filter(|r| sees_rule(&state, &who, r))
        .map(|r| rule_json(r, service.from_config(&r.name)))
        .collect();
    axum::Json(serde_json::json!({ "rules": list })).into_response()
}

/// The caller may change rules, and this one: its topic (or device) too.
fn may_manage(state: &AppState, who: &Caller, rule: Option<&AlarmRule>) -> Result<(), ApiError> {
    if who.0.as_ref().is_some_and(|r| !r.manage_alarms) {
        return Err(error(
            StatusCode::FORBIDDEN,
            None,
            "your role may not change alarm rules: it needs manage_alarms = true",
        ));
    }
    if let Some(r) = rule
        && !sees_rule(state, who, r)
    {
        let field = if r.topic.is_some() { "topic" } else { "device" };
        return Err(error(
            StatusCode::FORBIDDEN,
            Some(field),
            format!("{field}: your role may not read it, so it may not watch it"),
        ));
    }
    Ok(())
}

/// The body as a checked rule.
async fn read_rule(state: &AppState, body: Body) -> Result<AlarmRule, ApiError> {
    let v = json_body(state, body, MAX_BODY, "the rule").await?;
    crate::alarms::parse_rule(&v)
        .map_err(|e| error(StatusCode::BAD_REQUEST, Some(&e.field), e.message))
}

fn change_failed(e: ChangeError, name: &str) -> ApiError {
    match e {
        ChangeError::Unknown => error(
            StatusCode::NOT_FOUND,
            Some("name"),
            format!("no alarm rule {name:?}"),
        ),
        ChangeError::Exists => error(
            StatusCode::CONFLICT,
            Some("name"),
            format!(
                "an alarm rule {name:?} exists: change it with PUT /api/v1/alarms/rules/{name}"
            ),
        ),
        ChangeError::FromConfig => error(
            StatusCode::FORBIDDEN,
            Some("name"),
            format!("alarm rule {name:?} is an [[alarm]] of the config file: change it there"),
        ),
        ChangeError::Store(e) => {
            tracing::error!("alarms: {e}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                format!("the data store failed: {e}"),
            )
        }
    }
}

/// A rule made or changed through the API: the caller may manage rules, the body is a good
/// rule (named `name` when given), on a topic the caller may read; then stored and applied.
async fn put(
    state: AppState,
    peer: std::net::IpAddr,
    headers: HeaderMap,
    name: Option<String>,
    body: Body,
) -> Result<Response, Response> {
    let (service, who) = open(&state, &headers, peer).await?;
    may_manage(&state, &who, None).map_err(IntoResponse::into_response)?;
    let rule = read_rule(&state, body)
        .await
        .map_err(IntoResponse::into_response)?;
    if let Some(name) = &name
        && rule.name != *name
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            Some("name"),
            format!(
                "the body's name {:?} is not the path's {name:?}: a rule is renamed by deleting it and creating another",
                rule.name
            ),
        )
        .into_response());
    }
    may_manage(&state, &who, Some(&rule)).map_err(IntoResponse::into_response)?;
    let created = name.is_none();
    let name = rule.name.clone();
    service
        .put_rule(rule, created)
        .await
        .map_err(|e| change_failed(e, &name).into_response())?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(serde_json::json!({ "name": name }))).into_response())
}

/// `POST /api/v1/alarms/rules`.
pub async fn create(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    put(state, peer.ip(), headers, None, body)
        .await
        .unwrap_or_else(|r| r)
}

/// `PUT /api/v1/alarms/rules/{name}`.
pub async fn replace(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    put(state, peer.ip(), headers, Some(name), body)
        .await
        .unwrap_or_else(|r| r)
}

/// `DELETE /api/v1/alarms/rules/{name}`.
pub async fn delete(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let (service, who) = match open(&state, &headers, peer.ip()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let rule = service
        .evaluator()
        .rules()
        .find(|r| r.name == name)
        .cloned();
    if let Err(r) = may_manage(&state, &who, rule.as_ref()) {
        return r.into_response();
    }
    match service.delete_rule(&name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => change_failed(e, &name).into_response(),
    }
}

/// The query of a list, checked.
struct ListQuery {
    states: Option<Vec<AlarmState>>,
    severities: Option<Vec<Severity>>,
    rule: Option<String>,
    offset: usize,
    limit: usize,
}

fn list_query(raw: &Params) -> Result<ListQuery, ApiError> {
    let p = params(raw, &["state", "severity", "rule", "offset", "limit"])?;
    fn list<T>(
        v: Option<&str>,
        field: &str,
        parse: fn(&str) -> Option<T>,
        names: &str,
    ) -> Result<Option<Vec<T>>, ApiError> {
        let Some(v) = v else {
            return Ok(None);
        };
        v.split(',')
            .map(|s| {
                parse(s.trim()).ok_or_else(|| {
                    bad(
                        field,
                        format!("{field} {s:?}: one of {names} (several comma-separated)"),
                    )
                })
            })
            .collect::<Result<Vec<T>, ApiError>>()
            .map(Some)
    }
    let number = |field: &str, default: usize, max: usize| -> Result<usize, ApiError> {
        match get(&p, field) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n <= max && (field == "offset" || n > 0) => Ok(n),
                _ => Err(bad(
                    field,
                    format!(
                        "{field} = {v:?}: a whole number up to {max}{}",
                        if field == "limit" {
                            " (at least 1)"
                        } else {
                            ""
                        }
                    ),
                )),
            },
        }
    };
    Ok(ListQuery {
        states: list(
            get(&p, "state"),
            "state",
            AlarmState::parse,
            "active, acknowledged, cleared",
        )?,
        severities: list(
            get(&p, "severity"),
            "severity",
            Severity::parse,
            "critical, major, minor, warning",
        )?,
        rule: get(&p, "rule").map(str::to_owned),
        offset: number("offset", 0, usize::MAX)?,
        limit: number("limit", DEFAULT_LIMIT, MAX_LIMIT)?,
    })
}

/// `GET /api/v1/alarms`.
pub async fn list(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(raw): Query<Params>,
) -> Response {
    let q = match list_query(&raw) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let (service, who) = match open(&state, &headers, peer.ip()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (alarms, rules): (Vec<Alarm>, Vec<(String, Op, bool)>) = {
        let e = service.evaluator();
        let alarms = e
            .alarms()
            .rev()
            .filter(|a| q.states.as_ref().is_none_or(|s| s.contains(&a.state)))
            .filter(|a| {
                q.severities
                    .as_ref()
                    .is_none_or(|s| s.contains(&a.severity))
            })
            .filter(|a| q.rule.as_ref().is_none_or(|r| *r == a.rule))
            .cloned()
            .collect();
        let rules = e
            .rules()
            .map(|r| (r.name.clone(), r.op, r.notify.browser))
            .collect();
        (alarms, rules)
    };
    let rule_of = |a: &Alarm| rules.iter().find(|r| r.0 == a.rule);
    let rank = |s: AlarmState| match s {
        AlarmState::Active => 0,
        AlarmState::Acknowledged => 1,
        AlarmState::Cleared => 2,
    };
    let mut seen: Vec<&Alarm> = alarms
        .iter()
        .filter(|a| {
            let offline = rule_of(a).map_or(!a.source.contains('/'), |r| r.1 == Op::Offline);
            sees_alarm(&state, &who, a, offline)
        })
        .collect();
    // Newest first already; a stable sort keeps that within each state.
    seen.sort_by_key(|a| rank(a.state));
    let mut counts = serde_json::Map::new();
    for s in AlarmState::ALL {
        let n = seen.iter().filter(|a| a.state == s).count();
        counts.insert(s.as_str().into(), n.into());
    }
    let more = seen.len() > q.offset.saturating_add(q.limit);
    let page: Vec<serde_json::Value> = seen
        .iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|a| alarm_json(a, rule_of(a).is_some_and(|r| r.2)))
        .collect();
    axum::Json(serde_json::json!({ "alarms": page, "more": more, "counts": counts }))
        .into_response()
}

fn alarm_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| {
        bad(
            "id",
            format!("alarm id {raw:?}: a whole number, as GET /api/v1/alarms lists them"),
        )
    })
}

/// The alarm `id` if the caller sees it.
fn visible_alarm(
    state: &AppState,
    service: &AlarmService,
    who: &Caller,
    id: u64,
) -> Option<(Alarm, bool)> {
    let (alarm, rule) = {
        let e = service.evaluator();
        let a = e.get(id)?.clone();
        let rule = e
            .rules()
            .find(|r| r.name == a.rule)
            .map(|r| (r.op, r.notify.browser));
        (a, rule)
    };
    let offline = rule.map_or(!alarm.source.contains('/'), |r| r.0 == Op::Offline);
    sees_alarm(state, who, &alarm, offline).then_some((alarm, rule.is_some_and(|r| r.1)))
}

fn not_found(id: u64) -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        Some("id"),
        format!("no alarm {id} (or your role may not read its topic)"),
    )
}

/// `GET /api/v1/alarms/{id}`.
pub async fn one(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    let id = match alarm_id(&raw) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let (service, who) = match open(&state, &headers, peer.ip()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match visible_alarm(&state, &service, &who, id) {
        Some((a, browser)) => axum::Json(alarm_json(&a, browser)).into_response(),
        None => not_found(id).into_response(),
    }
}

/// `POST /api/v1/alarms/{id}/ack`.
pub async fn acknowledge(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    let id = match alarm_id(&raw) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let (service, who) = match open(&state, &headers, peer.ip()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some((_, browser)) = visible_alarm(&state, &service, &who, id) else {
        return not_found(id).into_response();
    };
    let user = if who.1.is_empty() {
        "anonymous"
    } else {
        who.1.as_str()
    };
    match service.acknowledge(id, user) {
        Ok(a) => axum::Json(alarm_json(&a, browser)).into_response(),
        Err(crate::alarms::AckError::Unknown) => not_found(id).into_response(),
        Err(crate::alarms::AckError::Already) => error(
            StatusCode::CONFLICT,
            Some("id"),
            format!("alarm {id} is acknowledged already"),
        )
        .into_response(),
    }
}
