//! The gateway's HTTP surface: the web viewer, the REST API, WebSocket signaling and WHEP.

mod api;
mod assets;
pub mod client;
mod control;
mod guard;
pub mod hardening;
mod login;
mod reply;
mod scope;
mod whep;
mod ws;

#[cfg(test)]
mod tests;

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
    /// The most any session through this gateway may do; each caller's own role (from the
    /// auth file) is capped by it.
    pub role: Role,
    /// A TURN server this gateway mints credentials for.
    pub turn: Option<crate::turn::TurnConfig>,
    /// Serve `/healthz` and `/metrics` to anyone, not only to loopback clients.
    pub public_ops: bool,
    /// The `Host` names served ([`hardening`]).
    pub hosts: hardening::HostPolicy,
    /// Reverse proxies whose `X-Forwarded-For` names the client ([`client`]).
    pub trusted_proxies: Vec<client::Cidr>,
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

    /// TURN credentials for a device's side of one session (they travel in the signed grant).
    pub fn device_ice_for(&self, who: &str) -> Vec<IceServer> {
        self.turn.iter().map(|turn| turn.mint(who)).collect()
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
    /// Users, tokens and session tokens.
    pub auth: Arc<crate::auth::Auth>,
    /// Per-address login rate limits.
    pub logins: Arc<login::LoginLimiter>,
    /// Per-principal limits on REST control requests and snapshots.
    pub controls: Arc<crate::rate::Keyed<String>>,
    /// Viewer WebSockets still open (each holds a [`ws::OpenSocket`]).
    sockets: Arc<tokio::sync::watch::Sender<usize>>,
}

impl AppState {
    pub fn new(
        relay: Arc<Relay>,
        settings: HttpSettings,
        auth: Arc<crate::auth::Auth>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        device_drops: crate::metrics::DeviceDrops,
    ) -> Self {
        Self {
            metrics: Arc::new(crate::metrics::Metrics::new(
                relay.answer_latency.clone(),
                device_drops,
            )),
            relay,
            settings: Arc::new(settings),
            whep: Arc::default(),
            shutdown,
            auth,
            logins: Arc::default(),
            controls: Arc::new(control::principal_limiter()),
            sockets: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// Resolves once every viewer WebSocket has closed (after `shutdown` flips, they close
    /// themselves and hand their sessions back to the relay, which queues the hang-ups of those
    /// still being set up). The gateway waits for this before it flushes its broker link.
    pub async fn sockets_closed(&self) {
        let mut open = self.sockets.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    /// Counts a refusal; `reason` is one of [`crate::metrics::AUTH_FAILURE_REASONS`].
    pub fn count_auth_failure(&self, reason: &'static str) {
        debug_assert!(
            crate::metrics::AUTH_FAILURE_REASONS.contains(&reason),
            "{reason}"
        );
        self.metrics
            .auth_failures
            .get_or_create(&crate::metrics::AuthFailureLabels { reason })
            .inc();
    }

    /// What a caller's sessions may do: its own role, capped by this gateway's.
    pub fn role_for(&self, principal: &crate::auth::Principal) -> Role {
        principal.role.min(self.settings.role)
    }

    /// Whether `principal`'s sessions may talk: its own right, and never through a gateway
    /// capped at `--role view` (a public viewing gateway lets nobody speak at the camera).
    pub fn talk_for(&self, principal: &crate::auth::Principal) -> bool {
        principal.talk && self.settings.role == Role::Control
    }
}

/// All routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/control.js", get(assets::control_js))
        .route("/meter.js", get(assets::meter_js))
        .route("/devices.js", get(assets::devices_js))
        .route("/stats.js", get(assets::stats_js))
        .route("/talk.js", get(assets::talk_js))
        .route("/files.js", get(assets::files_js))
        .route("/reconnect.js", get(assets::reconnect_js))
        .route("/support.js", get(assets::support_js))
        .route("/style.css", get(assets::style_css))
        .route("/login", get(login::page))
        .route("/login.js", get(login::script))
        // A login body is a user name and a password: read no more than 4 KiB of it, so the
        // per-address limiter (which runs in the handler) is not preceded by a 2 MB read.
        .route(
            "/api/login",
            axum::routing::post(login::login).layer(axum::extract::DefaultBodyLimit::max(4096)),
        )
        .route("/api/logout", axum::routing::post(login::logout))
        .route("/api/me", get(login::me))
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
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            hardening::harden,
        ))
        .with_state(state)
}

/// 128 bits from the OS-seeded CSPRNG: session ids must be unguessable.
pub fn new_session_id() -> SessionId {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    SessionId::from_random(bytes)
}
