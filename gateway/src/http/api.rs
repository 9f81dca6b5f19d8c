//! REST endpoints.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::AppState;
use super::reply::error;
use super::scope::ScopedDevice;
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
pub async fn get_device(State(state): State<AppState>, ScopedDevice(id): ScopedDevice) -> Response {
    match state.relay.device(&id) {
        Some(status) => Json(status).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "unknown_device",
            &format!("no device called {id}"),
        ),
    }
}
