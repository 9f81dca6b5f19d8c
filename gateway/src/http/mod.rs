//! The gateway's HTTP surface: the web viewer, the REST API and WebSocket signaling.

mod api;
mod assets;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::relay::Relay;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub relay: Arc<Relay>,
}

/// All routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/style.css", get(assets::style_css))
        .route("/healthz", get(api::healthz))
        .route("/api/devices", get(api::list_devices))
        .route("/api/devices/:id", get(api::get_device))
        .route("/ws", get(ws::upgrade))
        .with_state(state)
}
