//! The embedded MQTT broker (rumqttd), so one box needs nothing else.
//!
//! rumqttd runs its router and listeners on threads of its own; the gateway then connects to it
//! over loopback TCP like any other client, so the embedded and external cases share one path.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use anyhow::Context;
use ferrocam_protocol::MAX_SIGNAL_PAYLOAD;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Starts the broker listening on `listen` (MQTT 3.1.1) and returns once it is accepting.
pub fn start(listen: SocketAddr) -> anyhow::Result<()> {
    // rumqttd binds inside its own thread and only logs a failure there; probing first turns
    // "port already in use" into an error the operator sees.
    drop(
        TcpListener::bind(listen)
            .with_context(|| format!("embedded broker cannot bind {listen}"))?,
    );

    let server = ServerSettings {
        name: "ferrocam".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_SIGNAL_PAYLOAD * 4,
            max_inflight_count: 256,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
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
