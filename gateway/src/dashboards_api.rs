//! The dashboards API, behind the same logins as the rest of the HTTP API. A role lists and
//! opens dashboards with `dashboards = "view"` (the default) and creates, changes and
//! deletes them with `"edit"`; `"none"` sees none. Without logins everyone may edit. What a
//! widget shows still follows the role's topic rules (the broker's, when the app subscribes).
//!
//! - `GET /api/v1/dashboards` — `{"dashboards": [{"id", "title", "description", "widgets": n,
//!   "version", "updated", "updatedBy"}], "edit": bool}`, in natural order of their titles;
//!   `edit`: whether the caller may change them.
//! - `GET /api/v1/dashboards/{id}` — the document ([`crate::dashboards`]) with `id`, `version`,
//!   `created`, `updated`, `updatedBy`: the export.
//! - `POST /api/v1/dashboards` — a document (an export too: the kept keys are ignored) →
//!   `201 {"id", "version"}`, its id made from its title. With `?check=true` nothing is
//!   saved: the answer is `200` and the document as it would be kept (ids, layout and
//!   defaults filled in) — the app's editor shows a new widget where it will be, and a bad
//!   one at once.
//! - `PUT /api/v1/dashboards/{id}` — replaces it → `{"id", "version"}`; a `version` in the
//!   body that is not the current one is `409` (someone changed it since it was opened).
//! - `DELETE /api/v1/dashboards/{id}` — `204`.
//!
//! Bad documents are `400` naming the key (`widgets[2].topic`); bodies over 256 KiB `413`.

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kite_data::{Dashboard, Storage, now_ms};
use kite_policy::auth::DashboardAccess;
use serde_json::Value;
use std::sync::Arc;

use crate::dashboards::{MAX_DASHBOARDS, check, new_id};
use crate::history_api::{ApiError, Params, api_error, bad, caller, get, json_body, params};
use crate::listen::Peer;
use crate::state::AppState;

/// A dashboard's body at most.
const MAX_BODY: usize = 256 * 1024;

/// The store and what the caller may do, or the answer to send.
async fn open(
    state: &AppState,
    headers: &HeaderMap,
    peer: std::net::IpAddr,
    needs: DashboardAccess,
) -> Result<(Arc<dyn Storage>, String, DashboardAccess), Response> {
    let Some(store) = state.store().cloned() else {
        return Err(api_error(
            StatusCode::NOT_FOUND,
            None,
            "this gateway keeps no dashboards: they need a data directory ([broker] data_dir, with persistence on; in front of an upstream broker, set [broker] data_dir to turn them on)",
        )
        .into_response());
    };
    let (role, user) = caller(state, headers, peer).await?;
    // Without logins (no role), everyone may edit.
    let access = role.map_or(DashboardAccess::Edit, |r| r.dashboards);
    if access < needs {
        let message = match needs {
            DashboardAccess::Edit => {
                "your role may not change dashboards: it needs dashboards = \"edit\""
            }
            _ => "your role may not see dashboards: it needs dashboards = \"view\"",
        };
        return Err(api_error(StatusCode::FORBIDDEN, None, message).into_response());
    }
    Ok((store, user, access))
}

/// Runs `f` with the store on a blocking thread.
async fn blocking<T: Send + 'static>(
    store: Arc<dyn Storage>,
    f: impl FnOnce(&dyn Storage) -> Result<T, kite_data::DataError> + Send + 'static,
) -> Result<T, Response> {
    let done = tokio::task::spawn_blocking(move || f(store.as_ref())).await;
    let failed = match done {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::error!("dashboards: {failed}");
    Err(api_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        None,
        format!("the data store failed: {failed}"),
    )
    .into_response())
}

fn not_found(id: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        Some("id"),
        format!("no dashboard {id:?}"),
    )
    .into_response()
}

/// The document with the keys the gateway keeps: the export.
fn export(d: &Dashboard) -> Value {
    let mut v = d.doc.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), d.id.clone().into());
        o.insert("version".into(), d.version.into());
        o.insert("created".into(), d.created.into());
        o.insert("updated".into(), d.updated.into());
        o.insert("updatedBy".into(), d.updated_by.clone().into());
    }
    v
}

/// `GET /api/v1/dashboards`.
pub async fn list(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    let (store, _, access) = match open(&state, &headers, peer.ip(), DashboardAccess::View).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut all = match blocking(store, |s| s.dashboards()).await {
        Ok(all) => all,
        Err(r) => return r,
    };
    let title = |d: &Dashboard| d.doc["title"].as_str().unwrap_or_default().to_owned();
    all.sort_by(|a, b| {
        kite_mqtt::topic::natural_cmp(
            &title(a).to_ascii_lowercase(),
            &title(b).to_ascii_lowercase(),
        )
        .then_with(|| a.id.cmp(&b.id))
    });
    let list: Vec<Value> = all
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id,
                "title": d.doc["title"],
                "description": d.doc.get("description").cloned().unwrap_or_default(),
                "widgets": d.doc["widgets"].as_array().map_or(0, Vec::len),
                "version": d.version,
                "updated": d.updated,
                "updatedBy": d.updated_by,
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "dashboards": list,
        "edit": access == DashboardAccess::Edit,
    }))
    .into_response()
}

/// The dashboard `id`, if kept.
async fn find(store: &Arc<dyn Storage>, id: &str) -> Result<Option<Dashboard>, Response> {
    let id = id.to_owned();
    blocking(store.clone(), move |s| s.dashboard(&id)).await
}

/// `GET /api/v1/dashboards/{id}`.
pub async fn one(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (store, _, _) = match open(&state, &headers, peer.ip(), DashboardAccess::View).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match find(&store, &id).await {
        Ok(Some(d)) => axum::Json(export(&d)).into_response(),
        Ok(None) => not_found(&id),
        Err(r) => r,
    }
}

/// The body as a checked document.
async fn read_doc(state: &AppState, body: Body) -> Result<(Value, Option<Value>), ApiError> {
    let v = json_body(state, body, MAX_BODY, "the dashboard").await?;
    let version = v.get("version").cloned();
    // Checked on a blocking thread: laying out 200 widgets is bounded, not free.
    let checked = tokio::task::spawn_blocking(move || check(&v))
        .await
        .map_err(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()))?;
    let doc = checked.map_err(|e| api_error(StatusCode::BAD_REQUEST, Some(&e.field), e.message))?;
    Ok((doc, version))
}

/// `check` of `POST /api/v1/dashboards?check=true`: whether to check only.
fn check_only(raw: &Params) -> Result<bool, ApiError> {
    let p = params(raw, &["check"])?;
    match get(&p, "check") {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(bad(
            "check",
            format!(
                "check = {v:?}: true (check the dashboard and answer it as it would be kept, saving nothing) or false"
            ),
        )),
    }
}

/// `POST /api/v1/dashboards`.
pub async fn create(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(raw): Query<Params>,
    body: Body,
) -> Response {
    let (store, user, _) = match open(&state, &headers, peer.ip(), DashboardAccess::Edit).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let only_check = match check_only(&raw) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let doc = match read_doc(&state, body).await {
        Ok((doc, _)) => doc,
        Err(e) => return e.into_response(),
    };
    if only_check {
        return axum::Json(doc).into_response();
    }
    let _writing = state.dashboard_writes.lock().await;
    let made = blocking(store, move |s| {
        let all = s.dashboards()?;
        if all.len() >= MAX_DASHBOARDS {
            return Ok(None);
        }
        let title = doc["title"].as_str().unwrap_or_default();
        let id = new_id(title, |id| all.iter().any(|d| d.id == id));
        let now = now_ms();
        let d = Dashboard {
            id,
            doc,
            created: now,
            updated: now,
            updated_by: user,
            version: 1,
        };
        s.save_dashboard(&d)?;
        Ok(Some(d))
    })
    .await;
    match made {
        Ok(Some(d)) => (
            StatusCode::CREATED,
            [(
                axum::http::header::LOCATION,
                format!("/api/v1/dashboards/{}", d.id),
            )],
            axum::Json(serde_json::json!({ "id": d.id, "version": d.version })),
        )
            .into_response(),
        Ok(None) => api_error(
            StatusCode::CONFLICT,
            None,
            format!("this gateway keeps {MAX_DASHBOARDS} dashboards at most: delete some first"),
        )
        .into_response(),
        Err(r) => r,
    }
}

/// `PUT /api/v1/dashboards/{id}`.
pub async fn replace(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let (store, user, _) = match open(&state, &headers, peer.ip(), DashboardAccess::Edit).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (doc, version) = match read_doc(&state, body).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let _writing = state.dashboard_writes.lock().await;
    let Some(mut d) = (match find(&store, &id).await {
        Ok(d) => d,
        Err(r) => return r,
    }) else {
        return not_found(&id);
    };
    if let Some(v) = version
        && v.as_u64() != Some(d.version)
    {
        return api_error(
            StatusCode::CONFLICT,
            Some("version"),
            format!(
                "version {v}: the dashboard is at version {} ({} changed it since): open it again, then make your change",
                d.version,
                if d.updated_by.is_empty() { "someone" } else { &d.updated_by }
            ),
        )
        .into_response();
    }
    d.doc = doc;
    d.updated = now_ms().max(d.updated);
    d.updated_by = user;
    d.version += 1;
    let answer = serde_json::json!({ "id": d.id, "version": d.version });
    match blocking(store, move |s| s.save_dashboard(&d)).await {
        Ok(()) => axum::Json(answer).into_response(),
        Err(r) => r,
    }
}

/// `DELETE /api/v1/dashboards/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    ConnectInfo(Peer { addr: peer, .. }): ConnectInfo<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (store, user, _) = match open(&state, &headers, peer.ip(), DashboardAccess::Edit).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let _writing = state.dashboard_writes.lock().await;
    let gone = id.clone();
    match blocking(store, move |s| s.delete_dashboard(&gone)).await {
        Ok(true) => {
            tracing::info!(dashboard = %id, user = %user, "dashboard deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => not_found(&id),
        Err(r) => r,
    }
}
