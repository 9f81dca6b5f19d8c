//! REST endpoints.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ferrocam_protocol::DeviceId;
use serde_json::json;

use super::AppState;
use crate::auth::Principal;

/// `GET /healthz`: liveness, with the number of sessions in flight.
pub async fn healthz(State(state): State<AppState>) -> Response {
    Json(json!({ "ok": true, "sessions": state.relay.session_count() })).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state.relay),
    )
        .into_response()
}

/// `GET /api/devices`: every device the caller may watch, with its live online state.
pub async fn list_devices(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let devices: Vec<_> = state
        .relay
        .watch_devices()
        .borrow()
        .iter()
        .filter(|d| principal.may_watch(&d.device))
        .cloned()
        .collect();
    Json(json!({ "devices": devices })).into_response()
}

/// `GET /api/devices/{id}`: one device, 404 if unknown (or not the caller's), 400 if the id is
/// malformed.
pub async fn get_device(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let id = match DeviceId::parse(&id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
    };
    if !principal.may_watch(&id) {
        return super::guard::not_yours(&state, "/api/", &principal, id.as_str());
    }
    match state.relay.device(&id) {
        Some(status) => Json(status).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "unknown_device",
            &format!("no device called {id}"),
        ),
    }
}

/// A JSON error body: `{"error": {"code": …, "message": …}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}
