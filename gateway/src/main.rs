//! `ferrocam-gateway`: serves the web viewer and relays signaling between browsers and devices.

mod broker;
mod ctl;
mod http;
mod link;
mod metrics;
mod relay;
mod service;
mod turn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ferrocam_protocol::control::Role;
use ferrocam_protocol::viewer::IceServer;
use ferrocam_protocol::{BrokerAddr, InstanceId};
use tokio::sync::mpsc;

use crate::relay::Relay;

/// Log filter unless `RUST_LOG` says otherwise. rumqttd logs every client that drops during
/// CONNECT (health probes, port scans) at ERROR from its `server::broker` module; that is noise
/// for an embedded broker, so it is silenced, keeping rumqttd's other warnings.
const DEFAULT_LOG_FILTER: &str = "info,rumqttd=warn,rumqttd::server::broker=off";

/// ferrocam gateway: web viewer, REST and WebSocket signaling, embedded MQTT broker.
#[derive(Debug, Parser)]
#[command(name = "ferrocam-gateway", version)]
struct Config {
    /// Address the web viewer and API listen on.
    #[arg(long, env = "FERROCAM_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,

    /// Address the embedded MQTT broker listens on (ignored with --broker).
    #[arg(long, env = "FERROCAM_MQTT_LISTEN", default_value = "127.0.0.1:1883")]
    mqtt_listen: SocketAddr,

    /// Use this external broker (`mqtt://host:port`) instead of the embedded one.
    #[arg(long, env = "FERROCAM_BROKER")]
    broker: Option<String>,

    /// This instance's id, naming its reply topic; random when not set. Must be unique among
    /// gateways sharing a broker.
    #[arg(long, env = "FERROCAM_INSTANCE")]
    instance: Option<InstanceId>,

    /// STUN/TURN URLs handed to viewers (repeatable), e.g. `stun:stun.example.org:3478`.
    #[arg(
        long = "ice-server",
        env = "FERROCAM_ICE_SERVERS",
        value_delimiter = ','
    )]
    ice_servers: Vec<String>,

    /// Milliseconds a device has to answer an offer.
    #[arg(long, env = "FERROCAM_ANSWER_TIMEOUT_MS", default_value_t = 15_000)]
    answer_timeout_ms: u64,

    /// What viewers may do on the control channel: `control` (change settings, GPIO, PTZ) or
    /// `view` (watch and read only). Per-user roles come with authentication.
    #[arg(long, env = "FERROCAM_ROLE", default_value = "control", value_parser = parse_role)]
    role: Role,

    /// TURN server URL(s) for which this gateway mints short-lived credentials (coturn with
    /// `use-auth-secret`), e.g. `turn:turn.example.org:3478?transport=udp`. Repeatable.
    #[arg(long = "turn-url", env = "FERROCAM_TURN_URLS", value_delimiter = ',')]
    turn_urls: Vec<String>,

    /// The secret shared with the TURN server (`static-auth-secret`).
    #[arg(long, env = "FERROCAM_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,

    /// Seconds minted TURN credentials stay valid.
    #[arg(long, env = "FERROCAM_TURN_TTL", default_value_t = 3600)]
    turn_ttl_secs: u64,

    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Sends one control command to a device through a running gateway and prints the reply,
    /// e.g. `ferrocam-gateway ctl demo video.set bitrate_kbps=800`.
    Ctl(ctl::CtlArgs),
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "control" => Ok(Role::Control),
        "view" => Ok(Role::View),
        other => Err(format!("{other:?} is not a role; use view or control")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .init();
    let config = Config::parse();
    if let Some(Cmd::Ctl(args)) = &config.command {
        return ctl::run(args);
    }

    let broker = match &config.broker {
        Some(url) => BrokerAddr::parse(url)?,
        None => {
            broker::start(config.mqtt_listen)?;
            BrokerAddr {
                host: config.mqtt_listen.ip().to_string(),
                port: config.mqtt_listen.port(),
            }
        }
    };
    let instance = config.instance.clone().unwrap_or_else(random_instance);

    let (publish_tx, publish_rx) = mpsc::unbounded_channel();
    let relay = Arc::new(Relay::new(instance.clone(), publish_tx));
    let (connected_tx, mut connected) = tokio::sync::watch::channel(false);
    tokio::spawn(link::run(
        broker,
        Arc::clone(&relay),
        publish_rx,
        connected_tx,
    ));

    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("cannot listen on {}", config.http))?;
    tracing::info!(%instance, url = %format!("http://{}/", config.http), "gateway ready");
    let settings = http::HttpSettings {
        ice_servers: config
            .ice_servers
            .iter()
            .map(|url| IceServer {
                urls: vec![url.clone()],
                username: None,
                credential: None,
            })
            .collect(),
        answer_timeout: Duration::from_millis(config.answer_timeout_ms),
        role: config.role,
        turn: match (&config.turn_secret, config.turn_urls.is_empty()) {
            (Some(secret), false) => Some(turn::TurnConfig {
                urls: config.turn_urls.clone(),
                secret: secret.clone(),
                ttl: Duration::from_secs(config.turn_ttl_secs),
            }),
            (None, false) => anyhow::bail!("--turn-url needs --turn-secret"),
            _ => None,
        },
    };
    // `wait_for` returns a read guard on the channel: keep it to this statement, or the link's
    // next `send_replace` would block forever.
    let up = matches!(
        tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|c| *c)).await,
        Ok(Ok(_))
    );
    service::ready(if up {
        "serving; connected to the broker"
    } else {
        "serving; broker unreachable, retrying"
    });
    service::spawn_watchdog();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    axum::serve(
        listener,
        http::router(http::AppState::new(relay, settings, stop_rx)),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        service::stopping();
        let _ = stop_tx.send(true);
    })
    .await?;
    Ok(())
}

fn random_instance() -> InstanceId {
    let mut bytes = [0u8; 4];
    rand::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    InstanceId::parse(&format!("gw-{hex}")).expect("generated ids are valid")
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
