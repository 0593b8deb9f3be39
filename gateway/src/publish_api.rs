//! `POST /api/v1/publish`: publish one message over HTTP, so a script or a web page can send
//! without holding an MQTT connection.
//!
//! ```json
//! {"topic": "plant/valve/cmd", "payload": "open", "qos": 1, "retain": false,
//!  "encoding": "text",                       // or "base64"
//!  "upstream": "plant",                      // optional; the default target otherwise
//!  "properties": {"content_type": "text/plain", "message_expiry_interval": 60,
//!                 "response_topic": "r/1", "correlation_data": "<base64>",
//!                 "payload_format_indicator": true, "user_properties": [["k", "v"]]}}
//! ```
//!
//! With `[[user]]`s configured it needs HTTP Basic authentication with one of them, and the
//! user's role's `publish` rules apply. The answer is JSON: `200 {"ok": true, ...}` once the
//! broker has the message (QoS 1: its PUBACK; the embedded broker: routed, and stored where
//! persistence requires), or 4xx/5xx `{"error": "..."}` saying what is wrong.

use crate::listen::Peer;
use axum::extract::ConnectInfo;
use kite_broker::ExternalRefusal;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use kite_mqtt::codec::{Connect, Disconnect, Properties, Publish, ReasonCode};
use kite_mqtt::{Limits, Packet, QoS, Version};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::state::AppState;

/// How long the broker may take to answer.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    topic: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    properties: Option<RequestProperties>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestProperties {
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<String>,
    message_expiry_interval: Option<u32>,
    payload_format_indicator: Option<bool>,
    #[serde(default)]
    user_properties: Vec<(String, String)>,
}

/// The largest request body taken (a payload of up to about 1.5 MB in base64, with room for
/// the rest of the JSON).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

fn base64(what: &str, value: &str) -> Result<Bytes, String> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map(Bytes::from)
        .map_err(|e| format!("{what} is not valid base64 ({e})"))
}

/// The PUBLISH a request asks for, or what is wrong with it (a 400).
fn to_publish(req: &Request) -> Result<Publish, String> {
    kite_mqtt::topic::validate_name(&req.topic)
        .map_err(|e| format!("topic {:?}: {e}", req.topic))?;
    let qos = match req.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        q => {
            return Err(format!(
                "qos {q}: use 0 or 1 (one HTTP request carries one acknowledgement)"
            ));
        }
    };
    let payload = match req.encoding.as_deref() {
        None | Some("text") => Bytes::from(req.payload.clone().into_bytes()),
        Some("base64") => base64("payload", &req.payload)?,
        Some(other) => {
            return Err(format!("encoding {other:?}: use \"text\" or \"base64\""));
        }
    };
    let p = req.properties.as_ref();
    let correlation_data = match p.and_then(|p| p.correlation_data.as_deref()) {
        Some(c) => Some(base64("properties.correlation_data", c)?),
        None => None,
    };
    if let Some(rt) = p.and_then(|p| p.response_topic.as_deref()) {
        kite_mqtt::topic::validate_name(rt)
            .map_err(|e| format!("properties.response_topic {rt:?}: {e}"))?;
    }
    let properties = Properties {
        content_type: p.and_then(|p| p.content_type.as_deref()).map(Into::into),
        response_topic: p.and_then(|p| p.response_topic.as_deref()).map(Into::into),
        correlation_data,
        message_expiry_interval: p.and_then(|p| p.message_expiry_interval),
        payload_format_indicator: p.and_then(|p| p.payload_format_indicator),
        user_properties: p
            .map(|p| {
                p.user_properties
                    .iter()
                    .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                    .collect()
            })
            .unwrap_or_default(),
        ..Properties::default()
    };
    let publish = Publish {
        dup: false,
        qos,
        retain: req.retain,
        topic: req.topic.as_str().into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 1 },
        properties: properties.into(),
        payload,
    };
    // The codec's own check: sizes, strings, properties.
    Packet::Publish(publish.clone())
        .encoded_len(Version::V5)
        .map_err(|e| format!("cannot publish this: {e}"))?;
    Ok(publish)
}

/// HTTP Basic credentials from the request, if any.
fn basic_auth(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// A bearer token from the request (`Authorization: Bearer <JWT>`), if any.
fn bearer(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(value.strip_prefix("Bearer ")?.trim().as_bytes().to_vec())
}

/// Who is calling the HTTP API: with logins configured, the request's HTTP Basic credentials
/// (or `Authorization: Bearer <token>` with `[jwt]`) checked as an MQTT CONNECT's are — on
/// the same login workers, with the same delays — giving their role and user name; without,
/// `[acl] anonymous_role` (or no role: unrestricted). `Err`: the answer to send (401, 503).
pub(crate) async fn login(
    state: &AppState,
    headers: &HeaderMap,
    peer: std::net::IpAddr,
    deadline: std::time::Duration,
) -> Result<(Option<kite_policy::Role>, String), Response> {
    let config = state.shared_config();
    if config.auth.required() {
        let credentials = basic_auth(headers)
            .map(|(name, password)| (Some(name), password))
            .or_else(|| bearer(headers).map(|token| (None, token)));
        let Some((name, password)) = credentials else {
            return Err((
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"kite\"")],
                axum::Json(serde_json::json!({
                    "error": "log in with HTTP Basic authentication as one of the gateway's users, or with Authorization: Bearer <token> when [jwt] is set"
                })),
            )
                .into_response());
        };
        let auth = config.clone();
        let checked = state
            .logins()
            .check(peer, deadline, move || {
                auth.auth.check(name.as_deref(), Some(&password))
            })
            .await;
        return match checked {
            Ok(login) => Ok((login.role, login.user)),
            Err(refused) if refused.code == ReasonCode::ServerBusy => {
                Err(error(StatusCode::SERVICE_UNAVAILABLE, refused.detail))
            }
            Err(refused) => Err((
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"kite\"")],
                axum::Json(serde_json::json!({ "error": refused.detail })),
            )
                .into_response()),
        };
    }
    // No logins: `[acl] anonymous_role`'s rules, as for every MQTT session.
    Ok((config.auth.anonymous().and_then(|l| l.role), String::new()))
}

/// `POST /api/v1/publish`.
pub async fn publish(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // The whole body within the CONNECT timeout: a client trickling it byte by byte must not
    // hold its connection (and permit) open (the request head has its own deadline).
    let deadline = state.config().limits.connect_timeout;
    let body = match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body could not be read (at most {MAX_BODY} bytes): {e}"),
            );
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s ([limits] connect_timeout_secs)",
                    deadline.as_secs()
                ),
            );
        }
    };
    let req: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid JSON body: {e} (expected {{\"topic\": ..., \"payload\": ...}})"),
            );
        }
    };
    let publish = match to_publish(&req) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (role, user) = match login(&state, &headers, peer.ip(), deadline).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    if let Some(r) = &role
        && !r.acl.may_publish(&publish.topic, &user, "http-api")
    {
        return error(
            StatusCode::FORBIDDEN,
            format!("user {user:?} may not publish to {:?}", &*publish.topic),
        );
    }
    match target(&state, req.upstream.as_deref()) {
        None => error(
            StatusCode::NOT_FOUND,
            match &req.upstream {
                Some(name) => {
                    format!("no upstream named {name:?}; GET /api/v1/upstreams lists them")
                }
                None => "no upstream broker is configured".to_owned(),
            },
        ),
        Some(PublishTarget::Embedded(broker)) => {
            let qos = publish.qos;
            match broker.publish_external(publish).await {
                Ok(matched) => (
                    StatusCode::OK,
                    axum::Json(
                        serde_json::json!({ "ok": true, "qos": qos as u8, "matched": matched }),
                    ),
                )
                    .into_response(),
                Err(ExternalRefusal::Topic(why)) => (
                    StatusCode::BAD_REQUEST,
                    axum::Json(serde_json::json!({ "error": format!("topic: {why}"), "field": "topic" })),
                )
                    .into_response(),
                Err(ExternalRefusal::RetainedFull(full)) => (
                    StatusCode::INSUFFICIENT_STORAGE,
                    axum::Json(serde_json::json!({ "error": format!("retain: {full}"), "field": "retain" })),
                )
                    .into_response(),
            }
        }
        Some(PublishTarget::Upstream(connector, upstream)) => {
            let connect = kite_policy::auth::rewrite_connect(
                &Connect {
                    version: Version::V5,
                    client_id: format!("kite-api-{:x}", std::process::id() ^ rand_u32()).into(),
                    keep_alive: 30,
                    ..Connect::default()
                },
                role.as_ref(),
                // A fresh random client id of its own: nothing to scope.
                None,
            );
            match tokio::time::timeout(
                BROKER_TIMEOUT,
                upstream_publish(&connector, &upstream, connect, publish),
            )
            .await
            {
                Ok(Ok(reason)) if !reason.is_error() => (
                    StatusCode::OK,
                    axum::Json(serde_json::json!({ "ok": true, "reason": reason.description() })),
                )
                    .into_response(),
                Ok(Ok(reason)) => error(
                    StatusCode::BAD_GATEWAY,
                    format!("the broker refused the message: {reason}"),
                ),
                Ok(Err(e)) => error(StatusCode::BAD_GATEWAY, e),
                Err(_) => error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "the broker did not answer within {} s",
                        BROKER_TIMEOUT.as_secs()
                    ),
                ),
            }
        }
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish() as u32
}

/// Where an API publish goes.
pub enum PublishTarget {
    /// The embedded broker.
    Embedded(kite_broker::Broker),
    /// An upstream broker, reached with this connector.
    Upstream(crate::upstream::Connector, crate::config::Upstream),
}

/// One short MQTT 5 session with the upstream: CONNECT, PUBLISH (QoS 1: wait for PUBACK),
/// DISCONNECT. Returns the broker's reason code for the message.
async fn upstream_publish(
    connector: &crate::upstream::Connector,
    upstream: &crate::config::Upstream,
    connect: Connect,
    publish: Publish,
) -> Result<ReasonCode, String> {
    let mut io = connector
        .connect(upstream)
        .await
        .map_err(|_| format!("cannot reach upstream {:?}", upstream.name))?;
    let qos = publish.qos;
    let mut out = BytesMut::new();
    for p in [Packet::Connect(Box::new(connect)), Packet::Publish(publish)] {
        p.encode(Version::V5, &mut out)
            .map_err(|e| format!("cannot encode the request: {e}"))?;
    }
    io.write_all(&out)
        .await
        .map_err(|e| format!("writing to the broker: {e}"))?;
    let mut buf = BytesMut::new();
    let mut reason = ReasonCode::Success;
    let mut connected = false;
    while !connected || qos == QoS::AtLeastOnce {
        let packet = loop {
            match kite_mqtt::decode(&mut buf, Version::V5, &Limits::default()) {
                Ok(Some(p)) => break p,
                Ok(None) => {}
                Err(e) => return Err(format!("the broker sent a malformed packet: {e}")),
            }
            match io.read_buf(&mut buf).await {
                Ok(0) => return Err("the broker closed the connection".to_owned()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading from the broker: {e}")),
            }
        };
        match packet {
            Packet::ConnAck(a) if a.reason.is_error() => {
                return Err(format!("the broker refused the connection: {}", a.reason));
            }
            Packet::ConnAck(_) => connected = true,
            Packet::PubAck(a) => {
                reason = a.reason;
                break;
            }
            Packet::Disconnect(d) => {
                return Err(format!("the broker disconnected: {}", d.reason));
            }
            _ => {}
        }
    }
    let mut bye = BytesMut::new();
    if Packet::Disconnect(Disconnect::default())
        .encode(Version::V5, &mut bye)
        .is_ok()
    {
        let _ = io.write_all(&bye).await;
    }
    let _ = io.shutdown().await;
    Ok(reason)
}
/// Where `POST /api/v1/publish` sends (the named upstream, or the default target).
fn target(state: &AppState, name: Option<&str>) -> Option<PublishTarget> {
    use PublishTarget as P;
    let target = match name {
        Some(n) => state.target(n),
        None => state.default_target(),
    }?;
    Some(match target {
        crate::state::Target::Upstream(u) => P::Upstream(state.connector.clone(), u),
        crate::state::Target::Embedded(b) => P::Embedded(b),
    })
}
