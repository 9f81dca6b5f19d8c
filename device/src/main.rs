//! `ferrocam-device`: the agent that runs on the board.

mod agent;
mod config;
mod link;
mod media;
mod rtc;
mod session;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use ferrocam_protocol::{BrokerAddr, Capabilities, DeviceStatus, PROTOCOL_VERSION};
use tokio::sync::{mpsc, watch};

use crate::agent::Agent;
use crate::config::Config;
use crate::media::{MediaEngine, Source, VideoSettings};
use crate::rtc::RtcSettings;
use crate::session::SessionContext;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn".into()),
        )
        .init();
    let config = Config::parse();

    let source = Source::resolve(&config.source)?;
    tracing::info!(device = %config.id, source = %source.describe(), "starting");
    let media = Arc::new(
        MediaEngine::start(&VideoSettings {
            source,
            encoder: config.encoder.clone(),
            width: config.width,
            height: config.height,
            fps: config.fps,
            bitrate_kbps: config.bitrate_kbps,
            keyframe_interval: config.keyframe_interval,
        })
        .context("starting the media engine")?,
    );

    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let agent = Arc::new(Agent::new(
        SessionContext {
            device: config.id.clone(),
            media: Arc::clone(&media),
            rtc: Arc::new(RtcSettings {
                udp_addrs: config.ice_udp.clone(),
                ice_servers: config.ice_servers.clone(),
            }),
            out: out_tx,
            connect_timeout: Duration::from_secs(config.session_timeout_secs),
        },
        config.max_viewers,
    ));

    let online = DeviceStatus {
        v: PROTOCOL_VERSION,
        device: config.id.clone(),
        online: true,
        // Milliseconds since the epoch at start: grows across restarts, so a stale last will
        // from a previous run can never override this run's "online".
        epoch: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        capabilities: Some(Capabilities {
            video: Some(media.capability().clone()),
        }),
    };
    let broker = BrokerAddr::parse(&config.broker)?;
    let client_id = format!("ferrocam-device-{}", config.id);

    let (stop_tx, stop_rx) = watch::channel(false);
    let link = tokio::spawn(link::run(broker, client_id, online, agent, out_rx, stop_rx));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    link.await.context("link task")??;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
