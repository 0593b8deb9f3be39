//! `GET /api/v1/bridges`: the embedded broker's bridges now — name, whether the remote is
//! connected, what waits for it, counts and the last error (never an address's credentials:
//! bridge URLs carry none). Behind the same logins as the publish API; a role sees the bridges
//! whose state topic (`notification_topic`) it may subscribe to, as it could over MQTT.

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::listen::Peer;
use crate::state::AppState;

/// `GET /api/v1/bridges`.
pub async fn list(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    let deadline = state.config().limits.connect_timeout;
    let (role, user) = match crate::publish_api::login(&state, &headers, peer.ip(), deadline).await
    {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let statuses = state
        .broker()
        .map(kite_broker::Broker::bridge_statuses)
        .unwrap_or_default();
    let bridges: Vec<serde_json::Value> = statuses
        .into_iter()
        .filter(|b| {
            role.as_ref().is_none_or(|r| {
                r.acl
                    .may_subscribe(&b.notification_topic, &user, "http-api")
            })
        })
        .map(|b| {
            serde_json::json!({
                "name": b.name,
                "state": if b.up { "up" } else { "down" },
                "queued": b.queued,
                "messages_out": b.messages_out,
                "messages_in": b.messages_in,
                "reconnects": b.reconnects,
                "dropped": b.dropped,
                "last_error": b.last_error,
                "notification_topic": b.notification_topic,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "bridges": bridges })).into_response()
}
