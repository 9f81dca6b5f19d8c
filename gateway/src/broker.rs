//! The embedded MQTT broker (rumqttd), so one box needs nothing else.
//!
//! rumqttd runs its router and listeners on threads of its own; the gateway then connects to it
//! over loopback TCP like any other client, so the embedded and external cases share one path.
//!
//! **No client connects without credentials**, loopback included ([`Access`]): enrolled devices
//! with their own password, and only under their own client id, so nobody can take over (and
//! kick) a device's connection; the gateway itself with a secret made at start that never
//! leaves the process. rumqttd has no topic ACLs, so an enrolled device could still publish on
//! another device's topics: that is why the gateway believes only signed messages (see
//! `crate::devices`).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::Context;
use ferrocam_protocol::{DeviceId, MAX_SIGNAL_PAYLOAD, topics};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::devices::Registry;

/// The broker user name of the gateway's own link.
pub const GATEWAY_USER: &str = "ferrocam-gateway";

/// Who may connect to the embedded broker.
#[derive(Clone)]
pub struct Access {
    pub devices: Arc<Registry>,
    /// The gateway link's password, random per start.
    pub gateway_secret: String,
    /// Refusals are logged at most once a second.
    pub log: Arc<std::sync::Mutex<crate::rate::LogThrottle>>,
}

impl Access {
    /// Whether a CONNECT with these client id, user name and password is admitted.
    pub fn admits(&self, client_id: &str, user: &str, password: &str) -> bool {
        if user == GATEWAY_USER {
            return client_id.starts_with("ferrocam-gw-")
                && ring_eq(password.as_bytes(), self.gateway_secret.as_bytes());
        }
        let Ok(device) = DeviceId::parse(user) else {
            return false;
        };
        client_id == topics::device_client_id(&device)
            && self.devices.broker_password_matches(&device, password)
    }
}

/// Compares secrets in time independent of where they differ.
fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a);
    let db = ring::digest::digest(&ring::digest::SHA256, b);
    // Digests of random secrets: their comparison leaks nothing about the secrets.
    da.as_ref() == db.as_ref()
}

/// A fresh secret for the gateway's own broker login.
pub fn gateway_secret() -> String {
    ferrocam_protocol::signed::generate_seed()
}

/// Starts the broker listening on `listen` (MQTT 3.1.1) and returns once it is accepting.
pub fn start(listen: SocketAddr, access: Access) -> anyhow::Result<()> {
    // rumqttd binds inside its own thread and only logs a failure there; probing first turns
    // "port already in use" into an error the operator sees.
    drop(
        TcpListener::bind(listen)
            .with_context(|| format!("embedded broker cannot bind {listen}"))?,
    );

    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        // Below what every client accepts (`ferrocam_mqtt` sets 4 × MAX_SIGNAL_PAYLOAD for
        // whole packets): a message the broker takes can always be delivered, so no oversized
        // retained message can put subscribers into a connect/refuse loop.
        max_payload_size: MAX_SIGNAL_PAYLOAD * 4 - 1024,
        max_inflight_count: 256,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    connections.set_auth_handler(move |client_id: String, user: String, password: String| {
        let admitted = access.admits(&client_id, &user, &password);
        if !admitted
            && let Some(suppressed) = access
                .log
                .lock()
                .expect("log lock")
                .may_log(std::time::Instant::now())
        {
            tracing::warn!(%client_id, %user, suppressed, "embedded broker refused a connection");
        }
        async move { admitted }
    });
    let server = ServerSettings {
        name: "ferrocam".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = Config {
        router: RouterConfig {
            max_connections: 20_000,
            max_outgoing_packet_count: 256,
            max_segment_size: 4 * 1024 * 1024,
            max_segment_count: 4,
            ..Default::default()
        },
        v4: Some(HashMap::from([("ferrocam".to_owned(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = Broker::new(config).start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })?;

    // Wait until the listener is up so the gateway's own client connects on its first try.
    for _ in 0..100 {
        if std::net::TcpStream::connect(listen).is_ok() {
            tracing::info!(%listen, "embedded MQTT broker listening");
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    anyhow::bail!("embedded broker did not start listening on {listen}")
}
