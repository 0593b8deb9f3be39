//! The HTTP surface: the app's static files, the `/mqtt` WebSocket endpoints and the REST API.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{Message, WebSocketUpgrade, close_code};
use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use kite_mqtt::Packet;
use kite_mqtt::codec::{Connect, ReasonCode};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use futures_util::StreamExt;
use tower_http::compression::CompressionLayer;
use tower_http::services::{ServeDir, ServeFile};

use crate::config::Config;
use crate::listen::Peer;
use crate::metrics::{EndKind, Metrics};
use crate::proxy;
use crate::state::Target;
pub use crate::state::{AppState, EMBEDDED, Sessions};
use kite_broker::ConnInfo;

/// The WebSocket read buffer per session.
const WS_READ_BUFFER: usize = 8 * 1024;

/// WebSocket subprotocols accepted, in order of preference ([MQTT-6.0.0-3], [MQTT-6.0.0-4]).
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// The whole router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/mqtt", get(mqtt_default))
        .route("/mqtt/{upstream}", get(mqtt_named))
        .route("/api/v1/upstreams", get(list_upstreams))
        .route("/api/v1/bridges", get(crate::bridges_api::list))
        .route("/api/v1/events", get(crate::events_api::events))
        .route("/api/v1/history", get(crate::history_api::messages))
        .route("/api/v1/history/series", get(crate::history_api::series))
        .route("/api/v1/history/export", get(crate::history_api::export))
        .route("/api/v1/history/topics", get(crate::history_api::topics))
        .route(
            "/api/v1/dashboards",
            get(crate::dashboards_api::list).post(crate::dashboards_api::create),
        )
        .route(
            "/api/v1/dashboards/{id}",
            get(crate::dashboards_api::one)
                .put(crate::dashboards_api::replace)
                .delete(crate::dashboards_api::delete),
        )
        .route("/api/v1/devices", get(crate::devices_api::list))
        .route(
            "/api/v1/devices/{id}",
            get(crate::devices_api::one).delete(crate::devices_api::forget),
        )
        .route(
            "/api/v1/alarms/rules",
            get(crate::alarms_api::rules).post(crate::alarms_api::create),
        )
        .route(
            "/api/v1/alarms/rules/{name}",
            axum::routing::put(crate::alarms_api::replace).delete(crate::alarms_api::delete),
        )
        .route("/api/v1/alarms", get(crate::alarms_api::list))
        .route("/api/v1/alarms/{id}", get(crate::alarms_api::one))
        .route(
            "/api/v1/alarms/{id}/ack",
            axum::routing::post(crate::alarms_api::acknowledge),
        )
        .route(
            "/api/v1/publish",
            axum::routing::post(crate::publish_api::publish),
        )
        // Below the API's own routes: any other `/api/` path is a JSON 404, not the app.
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    let app = match &state.config.assets {
        Some(dir) => {
            let index = dir.join("index.html");
            Router::new().fallback_service(ServeDir::new(dir).fallback(ServeFile::new(index)))
        }
        None => Router::new().fallback(no_app),
    };
    api.merge(app)
        .layer(middleware::from_fn(cache_headers))
        .layer(middleware::from_fn(api_errors_as_json))
        .layer(middleware::from_fn_with_state(state.clone(), api_cors))
        .layer(CompressionLayer::new())
}

/// `/api/` paths the gateway does not have.
async fn api_not_found(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "error": format!("no such API: {method} {}; the README's \"HTTP API\" lists them", uri.path()),
        })),
    )
        .into_response()
}

/// Every error the API answers is JSON, `{"error": "..."}`: those written as text by axum's
/// extractors (a malformed query, a wrong method: 405) are rewritten here. Successful answers
/// are JSON already, or the export's NDJSON/CSV, or empty (204).
async fn api_errors_as_json(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let res = next.run(req).await;
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !api || json || !(res.status().is_client_error() || res.status().is_server_error()) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    // These answers are short texts; a longer one is cut, not buffered whole.
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => parts
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_owned(),
        t => t.to_owned(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(
        parts,
        axum::body::Body::from(serde_json::json!({ "error": message }).to_string()),
    )
}

async fn no_app() -> Response {
    (
        StatusCode::NOT_FOUND,
        "The Kite app is not built or not found. Run `cargo xtask serve`, or pass `kite serve --assets DIR` (the directory holding index.html).\n",
    )
        .into_response()
}

/// `index.html` must always be revalidated (it names the current hashed assets); trunk's
/// hashed files never change under their name and may be cached for a year.
async fn cache_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let mut res = next.run(req).await;
    if !res.status().is_success() || path.starts_with("/mqtt") {
        return res;
    }
    let value = if !is_hashed_asset(&path) {
        "no-cache"
    } else {
        "public, max-age=31536000, immutable"
    };
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    res
}

/// Whether a file name carries trunk's content hash: `name-<12 to 16 hex digits>[_bg].ext`.
fn is_hashed_asset(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or("");
    let stem = Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("");
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    // Trunk writes its 64-bit hash in hex without leading zeros: 16 digits 15 times in 16,
    // fewer otherwise (a 15-digit name was served `no-cache` once in CI). 12 or more: a name
    // like `logo-2024.png` is not taken for a hashed one.
    stem.rsplit_once('-').is_some_and(|(_, hash)| {
        (12..=16).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

async fn list_upstreams(State(state): State<AppState>) -> Json<serde_json::Value> {
    // Names only: addresses and credentials never leave the gateway.
    let mut names: Vec<&str> = state
        .config
        .upstreams
        .iter()
        .map(|u| u.name.as_str())
        .collect();
    if state.broker.is_some() {
        names.push(EMBEDDED);
    }
    Json(serde_json::json!({
        "upstreams": names,
        "default": state.default_target().as_ref().map(Target::name),
        // Whether the gateway records the default broker's topics (`[history]`).
        "history": state.history.is_some(),
        // Whether the gateway monitors devices (`[[devices]]`).
        "devices": state.devices.is_some(),
        // Whether it keeps alarms (a data directory).
        "alarms": state.alarms.is_some(),
        // Whether it keeps dashboards (a data directory).
        "dashboards": state.store.is_some(),
    }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = state.metrics.render();
            text += &format!(
                "# HELP kite_connections_per_address_refused_total Connections closed at accept: their source address had [limits] max_connections_per_address open.\n# TYPE kite_connections_per_address_refused_total counter\nkite_connections_per_address_refused_total {}\n",
                state.per_address.refused()
            );
            text += &crate::metrics::render_logins(state.logins().stats());
            if let Some(b) = &state.broker {
                text += &crate::metrics::render_broker(b);
            }
            if let Some(h) = &state.history {
                text += &crate::metrics::render_history(&state.metrics, &h.usage());
            }
            if let Some(d) = &state.devices {
                text += &crate::monitor::render_metrics(d);
            }
            if let Some(a) = &state.alarms {
                text += &a.render_metrics();
            }
            text
        },
    )
        .into_response()
}

/// 200 when the default upstream accepts a connection, 503 (with the reason, never the
/// address) when it does not.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.broker.is_some() {
        return "ready (embedded broker)\n".into_response();
    }
    let Some(upstream) = state.config.default_upstream() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no upstream broker is configured\n",
        )
            .into_response();
    };
    match state.connector.connect(upstream).await {
        Ok(_) => "ready\n".into_response(),
        Err(e) => {
            tracing::warn!("readiness check: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("upstream {:?} is unreachable\n", upstream.name),
            )
                .into_response()
        }
    }
}

/// Cross-site WebSocket hijacking defence: a browser page may open `/mqtt` only from the
/// gateway's own origin or an allowed one. Clients that send no Origin (not browsers) pass.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    listed(allowed, origin) || same_origin(headers, origin)
}

/// `kite.js`, `kite.iife.js`, their cores and declarations, which pages of other origins load
/// (a module, and any wasm, with CORS).
fn is_embed_file(path: &str) -> bool {
    matches!(path, "/kite.js" | "/kite.iife.js" | "/kite.d.ts")
        || path.starts_with("/kite-core")
        || path.starts_with("/kite-classic")
}

/// Whether `origin` is one of `[http] allowed_origins` (or that list has `"*"`).
fn listed(allowed: &[String], origin: &str) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// Whether `origin` is the gateway's own (its host is the request's `Host`).
fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// CORS for the HTTP API and `kite.js`, by `[http] allowed_origins` as for `/mqtt`: a page from a listed
/// origin gets `Access-Control-Allow-Origin` on every answer (errors too, so that it can read
/// them) and its preflights answered (`204`); a page from another origin gets `403` for
/// anything but a `GET` (so that a foreign page cannot publish or change anything through a
/// visitor's browser), and its `GET`s answered without the header (the browser keeps the
/// answer from it). Requests without `Origin` (not browsers) and from the gateway's own
/// origin are not affected.
async fn api_cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let path = req.uri().path();
    let covered = path.starts_with("/api/") || is_embed_file(path);
    let Some(origin) = origin.filter(|o| covered && !same_origin(req.headers(), o)) else {
        return next.run(req).await;
    };
    let preflight = req.method() == axum::http::Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if !listed(&state.config.allowed_origins, &origin) {
        if preflight
            || !matches!(
                *req.method(),
                axum::http::Method::GET | axum::http::Method::HEAD
            )
        {
            return (
                StatusCode::FORBIDDEN,
                Json(serde_json::json!({
                    "error": format!("pages from {origin} may not use this API: add the origin to [http] allowed_origins"),
                    "field": "origin",
                })),
            )
                .into_response();
        }
        return next.run(req).await;
    }
    let mut res = if preflight {
        let mut res = StatusCode::NO_CONTENT.into_response();
        let h = res.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, Last-Event-ID"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        res
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location"),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    res
}

/// A WebSocket upgrade, or why the request is not one.
type Upgrade = Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

/// A `/mqtt` endpoint asked without a WebSocket upgrade answers `426` once its target is known
/// to exist — so a plain GET (the app's probe after a failed WebSocket) tells an unknown
/// upstream (`404`) and an unconfigured gateway (`503`) from a WebSocket refused for another
/// reason.
fn upgrade_or_426(
    ws: Upgrade,
    headers: &HeaderMap,
    peer: Peer,
    state: &AppState,
    target: Target,
) -> Response {
    match ws {
        Ok(ws) => upgrade(ws, headers, peer, state, target),
        Err(_) => (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, HeaderValue::from_static("websocket"))],
            "this is an MQTT-over-WebSocket endpoint: connect with a WebSocket (subprotocol mqtt)\n",
        )
            .into_response(),
    }
}

async fn mqtt_default(
    ws: Upgrade,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<Peer>,
    State(state): State<AppState>,
) -> Response {
    match state.default_target() {
        Some(t) => upgrade_or_426(ws, &headers, peer, &state, t),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no upstream broker is configured\n",
        )
            .into_response(),
    }
}

async fn mqtt_named(
    ws: Upgrade,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<Peer>,
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.target(&name) {
        Some(t) => upgrade_or_426(ws, &headers, peer, &state, t),
        None => (
            StatusCode::NOT_FOUND,
            format!("no upstream named {name:?}; GET /api/v1/upstreams lists them\n"),
        )
            .into_response(),
    }
}

/// Admits a browser's CONNECT (`client_id`: the id it gave) as the embedded broker admits a
/// device: its login checked on the login workers when the gateway has users or `[jwt]`, then
/// [`kite_policy::Auth::admit`] (the anonymous role, the Will topic rules).
async fn admit(
    config: &Arc<Config>,
    logins: &kite_broker::logins::Logins,
    connect: &Connect,
    peer: SocketAddr,
) -> Result<kite_policy::Admission, kite_policy::Refused> {
    let checked = if config.auth.required() {
        let checking = config.clone();
        let deadline = config.limits.connect_timeout;
        let login = logins.check_connect(connect, peer.ip(), deadline, move |user, password| {
            checking.auth.check(user, password)
        });
        Some(login.await?)
    } else {
        None
    };
    config.auth.admit(connect, &connect.client_id, checked)
}

/// The CONNECT an upstream gets for `login`: the role's broker credentials and client id
/// prefix, the client id scoped to the user with `[acl] scope_client_ids`.
fn upstream_connect(
    config: &Config,
    connect: &Connect,
    login: &kite_policy::Login,
) -> Result<Bytes, kite_policy::Refused> {
    let scope = (config.scope_client_ids && config.auth.required()).then_some(login.user.as_str());
    let upstream = kite_policy::auth::rewrite_connect(connect, login.role.as_ref(), scope);
    let mut bytes = BytesMut::new();
    Packet::Connect(Box::new(upstream))
        .encode(connect.version, &mut bytes)
        .map_err(|e| {
            kite_policy::Refused::new(
                ReasonCode::ClientIdentifierNotValid,
                format!("the CONNECT for the broker cannot be made: {e}"),
            )
        })?;
    Ok(bytes.freeze())
}

/// Counts a session and logs one line when it opens and one when it closes, with the reason.
struct SessionLog {
    metrics: Arc<Metrics>,
    peer: SocketAddr,
    upstream: String,
    started: std::time::Instant,
}

impl SessionLog {
    fn open(metrics: Arc<Metrics>, peer: SocketAddr, upstream: &str) -> Self {
        metrics.session_opened();
        tracing::info!(%peer, upstream, "session opened");
        Self {
            metrics,
            peer,
            upstream: upstream.to_owned(),
            started: std::time::Instant::now(),
        }
    }

    fn close(self, kind: EndKind, detail: &str) {
        self.metrics.session_closed(kind);
        tracing::info!(
            peer = %self.peer,
            upstream = self.upstream,
            secs = self.started.elapsed().as_secs(),
            reason = ?kind,
            "session closed: {detail}"
        );
    }
}

fn upgrade(
    ws: WebSocketUpgrade,
    headers: &HeaderMap,
    peer: Peer,
    state: &AppState,
    target: Target,
) -> Response {
    if peer.spare {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway holds as many connections as it may ([limits] max_connections); try again later\n",
        )
            .into_response();
    }
    let peer = peer.addr;
    if !origin_allowed(headers, &state.config.allowed_origins) {
        return (
            StatusCode::FORBIDDEN,
            "this page's origin may not open MQTT sessions here; add it to [http] allowed_origins\n",
        )
            .into_response();
    }
    let limits = state.config.limits;
    let max = limits.max_packet_size as usize;
    // tungstenite reserves 128 KiB per connection for reading by default; frames larger than
    // the buffer still arrive (it grows), so an idle session need not hold that much.
    let ws = ws
        .protocols(SUBPROTOCOLS)
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(max)
        .max_frame_size(max);
    if ws.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "MQTT over WebSocket needs the `mqtt` subprotocol (Sec-WebSocket-Protocol: mqtt) [MQTT-6.0.0-3]\n",
        )
            .into_response();
    }
    let connector = state.connector.clone();
    let sessions = state.sessions.clone();
    let metrics = state.metrics.clone();
    let config = state.config.clone();
    let logins = state.logins.clone();
    ws.on_upgrade(move |socket| async move {
        let _open = sessions.enter();
        let log = SessionLog::open(metrics.clone(), peer, target.name());
        let mut shutdown = sessions.shutdown.subscribe();
        let (mut tx, mut rx) = socket.split();
        // The CONNECT first, in time; only then is the upstream contacted.
        let mut inbound = proxy::Inbound::new(limits.max_packet_size, metrics.clone())
            .with_max_user_properties(limits.max_user_properties)
            .with_session_limits(limits.session);
        let reading = tokio::time::timeout(
            limits.connect_timeout,
            proxy::read_connect(&mut rx, &mut inbound),
        );
        let read = tokio::select! {
            r = reading => r,
            () = proxy::shutting_down(&mut shutdown) => {
                proxy::close(&mut tx, close_code::AWAY, "the gateway is shutting down").await;
                return log.close(EndKind::Shutdown, "before CONNECT");
            }
        };
        let mut first = match read {
            Err(_) => {
                let reason = format!("no CONNECT within {} s", limits.connect_timeout.as_secs());
                proxy::close(&mut tx, close_code::POLICY, &reason).await;
                return log.close(EndKind::ConnectTimeout, &reason);
            }
            Ok(Err(v)) => {
                proxy::refuse_with(&mut tx, inbound.version(), &v).await;
                proxy::linger(&mut rx).await;
                return log.close(EndKind::Violation, &v.detail);
            }
            Ok(Ok(None)) => return log.close(EndKind::Browser, "before CONNECT"),
            Ok(Ok(Some(connect))) => connect,
        };
        // Taken, not copied: the browser's password is not kept for the session's lifetime.
        let embedded = matches!(target, Target::Embedded(_));
        let mut login = None;
        // The embedded broker gets the CONNECT itself, typed.
        let mut local_connect = None;
        if let Some(mut connect) = inbound.take_connect() {
            let refused = match admit(&config, &logins, &connect, peer).await {
                // The embedded broker trusts the gateway's check, sees the client's own
                // CONNECT and enforces the role's topic rules; an upstream gets the role's
                // credentials, and the gateway enforces the rules in front of it.
                Ok(admission) if embedded => {
                    login = admission.login;
                    None
                }
                Ok(kite_policy::Admission { login: None }) => None,
                Ok(kite_policy::Admission { login: Some(who) }) => {
                    match upstream_connect(&config, &connect, &who) {
                        Err(r) => Some((r.code, r.detail)),
                        Ok(bytes) => {
                            first = bytes;
                            if let Some(acl) = who
                                .role
                                .map(|r| r.acl)
                                .filter(kite_policy::acl::Acl::restricts)
                            {
                                inbound.set_rules(crate::rules::TopicRules::new(
                                    acl,
                                    &who.user,
                                    &connect,
                                    config.v311_denied_publish,
                                    metrics.clone(),
                                ));
                            }
                            None
                        }
                    }
                }
                Err(r) => {
                    if r.cause == kite_policy::Cause::WillTopic {
                        metrics.denied(crate::metrics::Denial::Will);
                    }
                    Some((r.code, r.detail))
                }
            };
            if let Some((code, detail)) = refused {
                // The broker's own refusal: MQTT 5 clients learn why in the reason string
                // (e.g. "the token has expired").
                let (refusal, version) = kite_broker::refusal(connect.version, code, &detail);
                let mut bytes = BytesMut::new();
                if refusal.encode(version, &mut bytes).is_ok() {
                    let _ = tokio::time::timeout(
                        proxy::CLOSE_TIMEOUT,
                        tx.send(Message::Binary(bytes.freeze())),
                    )
                    .await;
                }
                proxy::close(
                    &mut tx,
                    close_code::POLICY,
                    &code.description().to_lowercase(),
                )
                .await;
                proxy::linger(&mut rx).await;
                return log.close(EndKind::AuthFailed, &detail);
            }
            if embedded {
                if login.is_some() {
                    // Checked here; the broker need not see the password.
                    connect.password = None;
                }
                local_connect = Some(connect);
            }
        }
        let upstream = match &target {
            Target::Upstream(upstream) => upstream,
            Target::Embedded(b) => {
                // No network hop and no bytes: an in-process link to a broker connection task.
                let Some(connect) = local_connect else {
                    proxy::close(&mut tx, close_code::ERROR, "no CONNECT to hand over").await;
                    return log.close(EndKind::Error, "the CONNECT was not kept");
                };
                let client = b.connect_local(*connect, ConnInfo::websocket(peer, login.take()));
                let end = proxy::pump_local(tx, rx, client, inbound, shutdown).await;
                return log.close(end.kind(), &end.detail());
            }
        };
        let mut broker = match connector.connect(upstream).await {
            Ok(b) => b,
            Err(e) => {
                proxy::close(
                    &mut tx,
                    close_code::ERROR,
                    "cannot reach the upstream broker",
                )
                .await;
                metrics.upstream_error();
                return log.close(EndKind::UpstreamUnreachable, &e.to_string());
            }
        };
        if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut broker, &first).await {
            proxy::close(
                &mut tx,
                close_code::ERROR,
                "connection to the broker failed",
            )
            .await;
            return log.close(
                EndKind::Error,
                &format!("writing CONNECT to the broker: {e}"),
            );
        }
        let end = proxy::pump(tx, rx, broker, inbound, shutdown).await;
        log.close(end.kind(), &end.detail());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_assets() {
        assert!(is_hashed_asset("/kite-frontend-3f1c2a9b8d7e6f50.js"));
        assert!(is_hashed_asset("/kite-frontend-3f1c2a9b8d7e6f50_bg.wasm"));
        assert!(is_hashed_asset("/style-0123456789abcdef.css"));
        assert!(is_hashed_asset("/kite-frontend-6a4dc6d9a96bb7e_bg.wasm"));
        assert!(!is_hashed_asset("/logo-2024.png"));
        assert!(!is_hashed_asset("/"));
        assert!(!is_hashed_asset("/index.html"));
        assert!(!is_hashed_asset("/logo.svg"));
        assert!(!is_hashed_asset("/x-0123456789abcdeg.js"));
    }
}
