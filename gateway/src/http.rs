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

use crate::broker::{Broker, ConnInfo};
use crate::config::{Config, Upstream};
use crate::metrics::{EndKind, Metrics};
use crate::proxy;
use crate::server::Peer;
use crate::upstream::Connector;

/// The WebSocket read buffer per session.
const WS_READ_BUFFER: usize = 8 * 1024;

/// WebSocket subprotocols accepted, in order of preference ([MQTT-6.0.0-3], [MQTT-6.0.0-4]).
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Shared state of all requests.
#[derive(Debug, Clone)]
pub struct AppState {
    config: Arc<Config>,
    connector: Connector,
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    tls: Option<crate::tls::Reloadable>,
    broker: Option<Broker>,
    /// Open connections per source address, all listeners together.
    per_address: crate::per_address::PerAddress,
}

/// The name under which the embedded broker is listed and reachable (`/mqtt/embedded`).
pub const EMBEDDED: &str = "embedded";

/// Where a browser session goes.
#[derive(Debug, Clone)]
enum Target {
    Upstream(Upstream),
    Embedded(Broker),
}

impl Target {
    fn name(&self) -> &str {
        match self {
            Self::Upstream(u) => &u.name,
            Self::Embedded(_) => EMBEDDED,
        }
    }
}

/// The open WebSocket sessions: how many, and the signal that tells them to close.
#[derive(Debug)]
pub struct Sessions {
    shutdown: tokio::sync::watch::Sender<bool>,
    open: tokio::sync::watch::Sender<usize>,
}

impl Sessions {
    fn new() -> Self {
        Self {
            shutdown: tokio::sync::watch::Sender::new(false),
            open: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Tells every session to close (MQTT 5: DISCONNECT 0x8B Server shutting down).
    pub fn close_all(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until no session is open, or `timeout` passed; returns how many are left.
    pub async fn drained(&self, timeout: std::time::Duration) -> usize {
        let mut open = self.open.subscribe();
        let _ = tokio::time::timeout(timeout, open.wait_for(|n| *n == 0)).await;
        *open.borrow()
    }

    fn enter(self: &Arc<Self>) -> SessionGuard {
        self.open.send_modify(|n| *n += 1);
        SessionGuard(self.clone())
    }
}

/// Counts a session as open while it lives.
struct SessionGuard(Arc<Sessions>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl AppState {
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration, shared (e.g. to move into a blocking task).
    pub fn shared_config(&self) -> Arc<Config> {
        self.config.clone()
    }

    /// State for this configuration.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let config_for_limits = config.limits;
        let connector = Connector::new(&config.upstreams)?;
        let tls = config
            .tls
            .clone()
            .map(crate::tls::Reloadable::new)
            .transpose()?;
        let broker = if !config.upstreams.is_empty() {
            None
        } else {
            let (settings, auth) = (&config.broker, config.auth.clone());
            let broker_config = crate::broker::BrokerConfig {
                v311_denied_publish: config.v311_denied_publish,
                ..settings.config.clone()
            };
            Some(match &settings.data_dir {
                Some(dir) => Broker::open(broker_config, auth, dir, settings.sync)?,
                None => Broker::new(broker_config, auth),
            })
        };
        Ok(Self {
            tls,
            broker,
            config: Arc::new(config),
            connector,
            sessions: Arc::new(Sessions::new()),
            metrics: Arc::default(),
            per_address: crate::per_address::PerAddress::new(
                config_for_limits.max_connections_per_address,
            ),
        })
    }

    /// Open connections per source address, shared by every listener.
    pub fn per_address(&self) -> &crate::per_address::PerAddress {
        &self.per_address
    }

    /// The TLS certificate in use, if the gateway terminates TLS.
    pub fn tls(&self) -> Option<&crate::tls::Reloadable> {
        self.tls.as_ref()
    }

    /// The open sessions.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// The embedded broker, when no upstream is configured.
    pub fn broker(&self) -> Option<&Broker> {
        self.broker.as_ref()
    }

    fn default_target(&self) -> Option<Target> {
        match (self.config.default_upstream(), &self.broker) {
            (Some(u), _) => Some(Target::Upstream(u.clone())),
            (None, Some(b)) => Some(Target::Embedded(b.clone())),
            (None, None) => None,
        }
    }

    /// Where `POST /api/v1/publish` sends (the named upstream, or the default target).
    pub fn publish_target(&self, name: Option<&str>) -> Option<crate::publish_api::PublishTarget> {
        use crate::publish_api::PublishTarget as P;
        let target = match name {
            Some(n) => self.target(n),
            None => self.default_target(),
        }?;
        Some(match target {
            Target::Upstream(u) => P::Upstream(self.connector.clone(), u),
            Target::Embedded(b) => P::Embedded(b),
        })
    }

    fn target(&self, name: &str) -> Option<Target> {
        match (self.config.upstream(name), &self.broker) {
            (Some(u), _) => Some(Target::Upstream(u.clone())),
            (None, Some(b)) if name == EMBEDDED => Some(Target::Embedded(b.clone())),
            _ => None,
        }
    }
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/mqtt", get(mqtt_default))
        .route("/mqtt/{upstream}", get(mqtt_named))
        .route("/api/v1/upstreams", get(list_upstreams))
        .route(
            "/api/v1/publish",
            axum::routing::post(crate::publish_api::publish),
        )
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
        .layer(CompressionLayer::new())
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

/// Whether a file name carries trunk's content hash: `name-<16 hex digits>[_bg].ext`.
fn is_hashed_asset(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or("");
    let stem = Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("");
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    stem.rsplit_once('-')
        .is_some_and(|(_, hash)| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
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
            text += &crate::metrics::render_logins(state.shared_config().auth.logins().stats());
            if let Some(b) = &state.broker {
                text += &crate::metrics::render_broker(b);
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
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

async fn mqtt_default(
    ws: WebSocketUpgrade,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<Peer>,
    State(state): State<AppState>,
) -> Response {
    match state.default_target() {
        Some(t) => upgrade(ws, &headers, peer, &state, t),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no upstream broker is configured\n",
        )
            .into_response(),
    }
}

async fn mqtt_named(
    ws: WebSocketUpgrade,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<Peer>,
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.target(&name) {
        Some(t) => upgrade(ws, &headers, peer, &state, t),
        None => (
            StatusCode::NOT_FOUND,
            format!("no upstream named {name:?}; GET /api/v1/upstreams lists them\n"),
        )
            .into_response(),
    }
}

/// Checks the browser's credentials when users or `[jwt]` are configured (argon2, off the
/// async threads), or else gives the session the anonymous role, if any. `Ok(Some(bytes))`:
/// the CONNECT to send upstream instead (the role's broker credentials and client id prefix)
/// and the login; `Ok(None)`: forward the browser's own; `Err`: the refusal.
async fn authenticate(
    config: &Arc<Config>,
    connect: &Connect,
    peer: SocketAddr,
) -> Result<Option<(Bytes, crate::auth::Login)>, crate::auth::Refused> {
    let login = if config.auth.required() {
        let checking = config.clone();
        let username = connect.username.as_ref().map(ToString::to_string);
        let password = connect.password.clone();
        config
            .auth
            .logins()
            .check(peer.ip(), config.limits.connect_timeout, move || {
                checking
                    .auth
                    .check(username.as_deref(), password.as_deref())
            })
            .await?
    } else {
        // No logins: `[acl] anonymous_role`, if set, is every session's role.
        match config.auth.anonymous() {
            Some(login) => login,
            None => return Ok(None),
        }
    };
    let scope = (config.scope_client_ids && config.auth.required()).then_some(login.user.as_str());
    let upstream = crate::auth::rewrite_connect(connect, login.role.as_ref(), scope);
    let mut bytes = BytesMut::new();
    Packet::Connect(Box::new(upstream))
        .encode(connect.version, &mut bytes)
        .map_err(|e| crate::auth::Refused {
            code: ReasonCode::ClientIdentifierNotValid,
            detail: format!("the CONNECT for the broker cannot be made: {e}"),
        })?;
    Ok(Some((bytes.freeze(), login)))
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
                return log.close(EndKind::Violation, &v.detail);
            }
            Ok(Ok(None)) => return log.close(EndKind::Browser, "before CONNECT"),
            Ok(Ok(Some(connect))) => connect,
        };
        // Taken, not copied: the browser's password is not kept for the session's lifetime.
        let embedded = matches!(target, Target::Embedded(_));
        let mut login = None;
        if let Some(connect) = inbound.take_connect() {
            let refused = match authenticate(&config, &connect, peer).await {
                // The embedded broker trusts the gateway's check, sees the client's own
                // CONNECT and enforces the role's topic rules; an upstream gets the role's
                // credentials, and the gateway enforces the rules in front of it.
                Ok(Some((_, who))) if embedded => {
                    login = Some(who);
                    None
                }
                Ok(Some((upstream_connect, who))) => {
                    first = upstream_connect;
                    match who.role.map(|r| r.acl).filter(crate::acl::Acl::restricts) {
                        None => None,
                        Some(acl) => {
                            let rules = crate::rules::TopicRules::new(
                                acl,
                                &who.user,
                                &connect,
                                config.v311_denied_publish,
                                metrics.clone(),
                            );
                            match rules.check_will(&connect) {
                                Ok(()) => {
                                    inbound.set_rules(rules);
                                    None
                                }
                                Err(detail) => Some((ReasonCode::NotAuthorized, detail)),
                            }
                        }
                    }
                }
                Ok(None) => None,
                Err(r) => Some((r.code, r.detail)),
            };
            if let Some((code, detail)) = refused {
                // The broker's own refusal: MQTT 5 clients learn why in the reason string
                // (e.g. "the token has expired").
                let (refusal, version) = crate::broker::refusal(connect.version, code, &detail);
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
                return log.close(EndKind::AuthFailed, &detail);
            }
        }
        let connected = match &target {
            Target::Upstream(upstream) => connector.connect(upstream).await,
            Target::Embedded(b) => {
                // No network hop: an in-memory pipe to a broker connection task.
                let (gateway_end, broker_end) = tokio::io::duplex(64 * 1024);
                let b = b.clone();
                let info = ConnInfo::websocket(peer, login.take());
                tokio::spawn(async move { b.serve(broker_end, info).await });
                Ok(Box::new(gateway_end) as Box<dyn crate::upstream::BrokerIo>)
            }
        };
        let mut broker = match connected {
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
        let detail = match &end {
            proxy::End::Violation(v) => v.detail.clone(),
            proxy::End::Error(e) => e.clone(),
            other => format!("{other:?}"),
        };
        log.close(end.kind(), &detail);
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
        assert!(!is_hashed_asset("/"));
        assert!(!is_hashed_asset("/index.html"));
        assert!(!is_hashed_asset("/logo.svg"));
        assert!(!is_hashed_asset("/x-0123456789abcdeg.js"));
    }
}
