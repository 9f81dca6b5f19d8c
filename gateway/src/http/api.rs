//! REST endpoints.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrocam_protocol::DeviceId;
use serde_json::json;

use super::AppState;

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

/// `GET /api/devices`: every known device with its live online state.
pub async fn list_devices(State(state): State<AppState>) -> Response {
    Json(json!({ "devices": *state.relay.watch_devices().borrow() })).into_response()
}

/// `GET /api/devices/{id}`: one device, 404 if unknown, 400 if the id is malformed.
pub async fn get_device(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let id = match DeviceId::parse(&id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
    };
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
