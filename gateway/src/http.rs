//! The HTTP surface: the app's static files, the `/mqtt` WebSocket endpoints and the REST API.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use futures_util::StreamExt;
use tower_http::compression::CompressionLayer;
use tower_http::services::{ServeDir, ServeFile};

use crate::config::{Config, Upstream};
use crate::proxy;
use crate::upstream::Connector;

/// WebSocket subprotocols accepted, in order of preference ([MQTT-6.0.0-3], [MQTT-6.0.0-4]).
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Shared state of all requests.
#[derive(Debug, Clone)]
pub struct AppState {
    config: Arc<Config>,
    connector: Connector,
}

impl AppState {
    /// State for this configuration.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let connector = Connector::new(&config.upstreams)?;
        Ok(Self {
            config: Arc::new(config),
            connector,
        })
    }
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/mqtt", get(mqtt_default))
        .route("/mqtt/{upstream}", get(mqtt_named))
        .route("/api/v1/upstreams", get(list_upstreams))
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
    let value = if path.starts_with("/api/") || !is_hashed_asset(&path) {
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
    let names: Vec<&str> = state
        .config
        .upstreams
        .iter()
        .map(|u| u.name.as_str())
        .collect();
    Json(serde_json::json!({
        "upstreams": names,
        "default": state.config.default_upstream().map(|u| u.name.as_str()),
    }))
}

async fn mqtt_default(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    match state.config.default_upstream() {
        Some(u) => upgrade(ws, &state, u.clone()),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no upstream broker is configured\n",
        )
            .into_response(),
    }
}

async fn mqtt_named(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.config.upstream(&name) {
        Some(u) => upgrade(ws, &state, u.clone()),
        None => (
            StatusCode::NOT_FOUND,
            format!("no upstream named {name:?}; GET /api/v1/upstreams lists them\n"),
        )
            .into_response(),
    }
}

fn upgrade(ws: WebSocketUpgrade, state: &AppState, upstream: Upstream) -> Response {
    let ws = ws.protocols(SUBPROTOCOLS);
    if ws.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "MQTT over WebSocket needs the `mqtt` subprotocol (Sec-WebSocket-Protocol: mqtt) [MQTT-6.0.0-3]\n",
        )
            .into_response();
    }
    let connector = state.connector.clone();
    ws.on_upgrade(move |socket| async move {
        let (tx, rx) = socket.split();
        let broker = match connector.connect(&upstream).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("{e}");
                proxy::refuse(tx, "cannot reach the upstream broker").await;
                return;
            }
        };
        let end = proxy::pump(tx, rx, broker).await;
        tracing::debug!(upstream = %upstream.name, ?end, "session ended");
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
