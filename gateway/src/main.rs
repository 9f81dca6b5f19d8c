//! `ferrocam-gateway`: serves the web viewer and relays signaling between browsers and devices.

mod auth;
mod broker;
mod ctl;
mod devices;
mod files;
mod http;
mod link;
mod metrics;
mod rate;
mod relay;
mod serve;
mod service;
mod turn;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ferrocam_mqtt::BrokerAddr;
use ferrocam_protocol::InstanceId;
use ferrocam_protocol::control::Role;
use ferrocam_protocol::viewer::IceServer;

use crate::auth::Auth;
use crate::auth::grant::GrantSigner;

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

    /// Address the embedded MQTT broker listens on (ignored with --broker). Only enrolled
    /// devices and this gateway may connect. An address other than loopback also needs
    /// --mqtt-plaintext-lan: the embedded broker has no TLS.
    #[arg(long, env = "FERROCAM_MQTT_LISTEN", default_value = "127.0.0.1:1883")]
    mqtt_listen: SocketAddr,

    /// Let the embedded broker listen on a non-loopback address without TLS: device passwords
    /// and signaling then cross the network in plain text (the messages stay signed). For a
    /// trusted LAN; otherwise use Mosquitto with TLS (docs/deploy.md).
    #[arg(long, env = "FERROCAM_MQTT_PLAINTEXT_LAN")]
    mqtt_plaintext_lan: bool,

    /// The enrolled devices (`ferrocam-gateway device add` writes it). Default: `devices.toml`
    /// next to the auth file. Messages of devices not in it are dropped.
    #[arg(long, env = "FERROCAM_DEVICES")]
    devices: Option<PathBuf>,

    /// Use this external broker instead of the embedded one:
    /// `mqtt://[user[:password]@]host[:port]` or `mqtts://…`; several, comma-separated, for the
    /// nodes of a clustered broker (a lost connection moves on to the next).
    #[arg(long, env = "FERROCAM_BROKER")]
    broker: Option<String>,

    /// PEM file of the CA(s) that signed the broker's certificate (`mqtts://`); without it the
    /// system's roots are trusted.
    #[arg(long, env = "FERROCAM_BROKER_CA")]
    broker_ca: Option<PathBuf>,

    /// File holding the broker password (instead of putting it in the URL).
    #[arg(long, env = "FERROCAM_BROKER_PASSWORD_FILE")]
    broker_password_file: Option<PathBuf>,

    /// The authentication file: users, API tokens, session secret, allowed origins
    /// (`ferrocam-gateway init` writes one). Required: nothing is served without it.
    #[arg(long, env = "FERROCAM_AUTH_CONFIG")]
    auth_config: Option<PathBuf>,

    /// The Ed25519 key that signs session grants; devices hold its public half. Default:
    /// `grant.key` next to the auth file.
    #[arg(long, env = "FERROCAM_GRANT_SIGNING_KEY")]
    grant_signing_key: Option<PathBuf>,

    /// Answer `/healthz` and `/metrics` without credentials from any address (default: only
    /// from loopback clients).
    #[arg(long, env = "FERROCAM_PUBLIC_OPS")]
    public_ops: bool,

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

    /// The most viewers of this gateway may do on the control channel: `control` (change
    /// settings, GPIO, PTZ) or `view` (watch and read only). Each user's or token's own role
    /// (auth file) is capped by it.
    #[arg(long, env = "FERROCAM_ROLE", default_value = "control", value_parser = parse_role)]
    role: Role,

    /// TURN server URL(s) for which this gateway mints short-lived credentials (coturn with
    /// `use-auth-secret`), e.g. `turn:turn.example.org:3478?transport=udp`. Repeatable.
    #[arg(long = "turn-url", env = "FERROCAM_TURN_URLS", value_delimiter = ',')]
    turn_urls: Vec<String>,

    /// The secret shared with the TURN server (`static-auth-secret`).
    #[arg(long, env = "FERROCAM_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,

    /// Host names the web server answers to besides IP addresses, `localhost` and this
    /// machine's name (`<name>` and `<name>.local`): the name a reverse proxy or DNS gives the
    /// gateway, comma-separated. Other names get 421, which stops DNS-rebinding pages. `*`
    /// turns the check off.
    #[arg(long, env = "FERROCAM_ALLOWED_HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<String>,

    /// Reverse proxies in front of the gateway (addresses or CIDR blocks, comma-separated):
    /// only their `X-Forwarded-For` is believed, for per-client login limits and logs.
    #[arg(long, env = "FERROCAM_TRUSTED_PROXIES", value_delimiter = ',', value_parser = http::client::Cidr::parse)]
    trusted_proxies: Vec<http::client::Cidr>,

    /// Sessions one user or API token may hold with one device at once, so one account cannot
    /// take every viewer slot of a camera.
    #[arg(long, env = "FERROCAM_SESSIONS_PER_PRINCIPAL", default_value_t = relay::SESSIONS_PER_PRINCIPAL)]
    sessions_per_principal: usize,

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
    /// Writes a first auth file (an admin user and an API token) and the grant key pair.
    Init(auth::cli::InitArgs),
    /// Reads a password on stdin and prints its argon2id hash for the auth file.
    HashPassword,
    /// Prints a new API token and its `[[token]]` entry for the auth file.
    NewToken(auth::cli::NewTokenArgs),
    /// Writes a new grant key pair.
    Keygen(auth::cli::KeygenArgs),
    /// Adds, lists and removes users, and sets their passwords.
    User {
        #[command(subcommand)]
        cmd: auth::manage::UserCmd,
    },
    /// Makes, lists and revokes API tokens.
    Token {
        #[command(subcommand)]
        cmd: auth::manage::TokenCmd,
    },
    /// Enrolls, lists and removes devices (`device add <id>` writes the device's config file).
    Device {
        #[command(subcommand)]
        cmd: devices::cli::DeviceCmd,
    },
}

pub(crate) fn parse_role(s: &str) -> Result<Role, String> {
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
    match &config.command {
        Some(Cmd::Ctl(args)) => return ctl::run(args),
        Some(Cmd::Init(args)) => return auth::cli::init(args),
        Some(Cmd::HashPassword) => return auth::cli::hash_password(),
        Some(Cmd::NewToken(args)) => return auth::cli::new_token(args),
        Some(Cmd::Keygen(args)) => return auth::cli::keygen(args),
        Some(Cmd::Device { cmd }) => return devices::cli::run(cmd),
        Some(Cmd::User { cmd }) => return auth::manage::user(cmd),
        Some(Cmd::Token { cmd }) => return auth::manage::token(cmd),
        None => {}
    }

    let Some(auth_path) = config.auth_config.clone() else {
        anyhow::bail!(
            "no --auth-config (FERROCAM_AUTH_CONFIG): the gateway serves nobody without one. \
             Create one with `ferrocam-gateway init --dir /etc/ferrocam`"
        );
    };
    let instance = config.instance.clone().unwrap_or_else(random_instance);
    let key_path = config
        .grant_signing_key
        .clone()
        .unwrap_or_else(|| auth_path.with_file_name("grant.key"));
    let signer = GrantSigner::load(&key_path, instance.clone())?;
    tracing::info!(public_key = %signer.public_key(), "devices must hold this grant key");
    let auth = Arc::new(Auth::load(auth_path.clone(), signer.session_key())?);
    let registry = Arc::new(devices::Registry::load(
        config
            .devices
            .clone()
            .unwrap_or_else(|| auth_path.with_file_name("devices.toml")),
    )?);

    let broker = broker_settings(&config, &registry)?;
    let seal = ferrocam_mqtt::signing_seal(signer.message_signer());
    let (publisher, broker_link) = link::open(&broker, &instance, seal)?;
    let mut relay = Relay::new(instance.clone(), publisher, signer);
    relay.sessions_per_principal = config.sessions_per_principal;
    relay.recipients = {
        let registry = Arc::clone(&registry);
        Box::new(move |device| registry.verifier(device)?.recipient())
    };
    let relay = Arc::new(relay);
    let gate = Arc::new(devices::inbound::Gatekeeper::new(Arc::clone(&registry)));
    let (connected_tx, mut connected) = tokio::sync::watch::channel(false);
    let (stop_link, link_stop) = tokio::sync::watch::channel(false);
    let inbound = link::Inbound {
        relay: Arc::clone(&relay),
        gate: Arc::clone(&gate),
    };
    let link_task = tokio::spawn(link::run(broker_link, inbound, connected_tx, link_stop));
    let forget = {
        let relay = Arc::clone(&relay);
        move |removed: &[ferrocam_protocol::DeviceId]| {
            for device in removed {
                relay.forget_device(device);
            }
        }
    };
    devices::spawn_watcher(Arc::clone(&registry), forget.clone());
    auth::spawn_watcher(Arc::clone(&auth));
    spawn_reload_on_sighup(Arc::clone(&auth), Arc::clone(&registry), forget);

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
        public_ops: config.public_ops,
        hosts: http::hardening::HostPolicy::new(&config.allowed_hosts),
        trusted_proxies: config.trusted_proxies.clone(),
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
    let state = http::AppState::new(relay, settings, auth, stop_rx, gate.dropped());
    serve::serve(listener, http::router(state.clone()), async move {
        shutdown_signal().await;
        service::stopping();
        let _ = stop_tx.send(true);
    })
    .await?;
    // Viewers' WebSockets close on `stop` and hand their sessions back to the relay, which
    // queues hang-ups for those still being set up; only then does the link stop, flushing
    // them to the broker before it disconnects.
    if tokio::time::timeout(Duration::from_secs(2), state.sockets_closed())
        .await
        .is_err()
    {
        tracing::warn!("viewer connections still open after 2 s; closing anyway");
    }
    let _ = stop_link.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), link_task).await;
    Ok(())
}

/// The broker this gateway uses: an external one (`--broker`), or the embedded one, started
/// here, which only enrolled devices and this gateway (with a secret made now) may join.
fn broker_settings(
    config: &Config,
    registry: &Arc<devices::Registry>,
) -> anyhow::Result<ferrocam_mqtt::BrokerSettings> {
    let urls = match &config.broker {
        Some(urls) => BrokerAddr::parse_list(urls)?,
        None => {
            let listen = config.mqtt_listen;
            anyhow::ensure!(
                listen.ip().is_loopback() || config.mqtt_plaintext_lan,
                "--mqtt-listen {listen} is not a loopback address, and the embedded broker has \
                 no TLS: pass --mqtt-plaintext-lan to accept plain text on your LAN, or use an \
                 external broker with TLS (--broker mqtts://…, see docs/deploy.md)"
            );
            let access = broker::Access {
                devices: Arc::clone(registry),
                gateway_secret: broker::gateway_secret(),
                log: Arc::default(),
            };
            let url = format!(
                "mqtt://{}:{}@{listen}",
                broker::GATEWAY_USER,
                access.gateway_secret
            );
            broker::start(listen, access)?;
            vec![BrokerAddr::parse(&url)?]
        }
    };
    Ok(ferrocam_mqtt::BrokerSettings {
        urls,
        ca_file: config.broker_ca.clone(),
        password_file: config.broker_password_file.clone(),
        password: None,
    })
}

/// `systemctl reload` sends SIGHUP: re-read the auth file and the device list (a broken file
/// keeps the old one).
fn spawn_reload_on_sighup(
    auth: Arc<Auth>,
    registry: Arc<devices::Registry>,
    on_removed: impl Fn(&[ferrocam_protocol::DeviceId]) + Send + 'static,
) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match auth.reload() {
                Ok(()) => tracing::info!("auth file reloaded"),
                Err(e) => tracing::error!(error = format!("{e:#}"), "auth file not reloaded"),
            }
            match registry.reload() {
                Ok(removed) => on_removed(&removed),
                Err(e) => tracing::error!(error = format!("{e:#}"), "device list not reloaded"),
            }
        }
    });
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
