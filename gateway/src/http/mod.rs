//! The gateway's HTTP surface: the web viewer, the REST API, WebSocket signaling and WHEP.

mod api;
mod assets;
mod control;
mod rate;
mod whep;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use ferrocam_protocol::control::Role;
use ferrocam_protocol::viewer::IceServer;
use ferrocam_protocol::{MAX_SIGNAL_PAYLOAD, SessionId};

use crate::relay::Relay;

/// Settings the handlers share.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// STUN/TURN servers handed to viewers (WebSocket hello, WHEP `Link` headers).
    pub ice_servers: Vec<IceServer>,
    /// How long a device has to answer an offer.
    pub answer_timeout: Duration,
    /// What viewers' sessions may do (until authentication assigns roles per user).
    pub role: Role,
    /// A TURN server this gateway mints credentials for.
    pub turn: Option<crate::turn::TurnConfig>,
}

impl HttpSettings {
    /// The ICE servers for one viewer: the static ones plus fresh TURN credentials.
    pub fn ice_servers_for(&self, who: &str) -> Vec<IceServer> {
        let mut servers = self.ice_servers.clone();
        if let Some(turn) = &self.turn {
            servers.push(turn.mint(who));
        }
        servers
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub relay: Arc<Relay>,
    pub settings: Arc<HttpSettings>,
    pub whep: Arc<whep::WhepSessions>,
    /// Flips to `true` when the gateway stops: long-lived WebSockets close themselves, or the
    /// server's graceful shutdown would wait for them forever.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl AppState {
    pub fn new(
        relay: Arc<Relay>,
        settings: HttpSettings,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            metrics: Arc::new(crate::metrics::Metrics::new(relay.answer_latency.clone())),
            relay,
            settings: Arc::new(settings),
            whep: Arc::default(),
            shutdown,
        }
    }
}

/// All routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/control.js", get(assets::control_js))
        .route("/style.css", get(assets::style_css))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/devices", get(api::list_devices))
        .route("/api/devices/:id", get(api::get_device))
        .route(
            "/api/devices/:id/control",
            axum::routing::post(control::relay),
        )
        .route("/api/devices/:id/snapshot.jpg", get(control::snapshot))
        .route("/ws", get(ws::upgrade))
        .merge(whep::routes(MAX_SIGNAL_PAYLOAD))
        .with_state(state)
}

/// 128 bits from the OS-seeded CSPRNG: session ids must be unguessable.
pub fn new_session_id() -> SessionId {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    SessionId::from_random(bytes)
}
