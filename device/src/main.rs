//! `ferrocam-device`: the agent that runs on the board.

mod adapt;
mod agent;
mod config;
mod control;
mod files;
mod grant;
mod link;
mod media;
mod metrics;
mod presence;
mod record;
mod requests;
mod rtc;
mod service;
mod session;
mod speaker;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use ferrocam_protocol::{
    AudioCapability, Capabilities, DeviceStatus, FallbackVideo, PROTOCOL_VERSION, VideoCapability,
    VideoCodec,
};
use tokio::sync::watch;

use crate::agent::Agent;
use crate::config::{Config, GpioChips};
use crate::control::camera::{NoControls, V4l2Controls};
use crate::control::gpio::{CdevGpio, FakeGpio};
use crate::control::{ControlHandler, Gpio, Ptz};
use crate::media::{
    AudioSource, CaptureFormat, Encoder, EngineSettings, GstProbe, MediaEngine, Source, VideoPlan,
};
use crate::rtc::{RateBounds, RtcSettings};
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
    if config.check_config {
        println!("configuration OK: {}", config.check()?);
        return Ok(());
    }
    // Fail before touching the camera if the device could never serve a session.
    let signer = Arc::new(config.signer()?);
    let grants = config.grant_verifier()?.with_opener(signer.opener());
    let gateway_key = config.request_verifier()?;
    let broker = config.broker_settings()?;
    config.check_media()?;

    gstreamer::init().context("GStreamer failed to initialise")?;
    let cameras = media::capture_devices();
    for cam in &cameras {
        tracing::info!(path = %cam.path, name = %cam.name, driver = %cam.driver, "camera found");
    }
    let source = Source::resolve(&config.source, &cameras)?;
    let forced_format = CaptureFormat::parse(&config.capture_format)?;
    // Again now that `auto` has picked its source.
    source.check_format(forced_format)?;
    let camera = match &source {
        Source::V4l2(path) => cameras
            .iter()
            .find(|c| c.path == path.display().to_string()),
        _ => None,
    };
    // Probe the encoder unless the camera's own H.264 is forced: whether there is a hardware
    // encoder also decides what `auto` captures.
    let selection = if forced_format == Some(CaptureFormat::H264) {
        None
    } else {
        Some(Encoder::select(
            config.encoder.as_deref(),
            config.keyframe_interval,
            &GstProbe,
        )?)
    };
    let hardware = selection.as_ref().is_some_and(|s| s.encoder.hardware);
    let format =
        source.capture_format(forced_format, camera, config.width, config.height, hardware);
    // Passthrough needs no encoder.
    let selection = selection.filter(|_| format != CaptureFormat::H264);
    let (encoder_name, encoder_reason) = match &selection {
        Some(s) => (s.encoder.element.to_owned(), s.reason.clone()),
        None => (
            "passthrough".to_owned(),
            "the camera delivers H.264".to_owned(),
        ),
    };
    tracing::info!(
        device = %config.id,
        source = %source.describe(),
        capture = format.name(),
        encoder = %encoder_name,
        reason = %encoder_reason,
        "media plan"
    );
    let audio = AudioSource::resolve(&config.audio, source == Source::TestPattern)?;
    let controls = match &source {
        Source::V4l2(path) => media::controls(path),
        _ => Vec::new(),
    };
    let vp8 = config
        .vp8
        .plan()
        .filter(|_| media::vp8_encoder_installed() || {
            tracing::warn!("no VP8 encoder (vp8enc, gstreamer1.0-plugins-good): viewers that cannot decode H.264 get no video");
            false
        });
    let mut video_capability = VideoCapability {
        source: source.describe(),
        capture_format: format.name().to_owned(),
        encoder: encoder_name,
        encoder_reason,
        codec: "H264".to_owned(),
        codecs: Vec::new(),
        fallback: None,
        width: config.width,
        height: config.height,
        fps: config.fps,
        bitrate_kbps: config.bitrate_kbps,
    };
    let media = MediaEngine::new(EngineSettings {
        video: VideoPlan {
            source,
            format,
            encoder: selection.map(|s| s.encoder),
            width: config.width,
            height: config.height,
            fps: config.fps,
            bitrate_kbps: config.bitrate_kbps,
            keyframe_interval: config.keyframe_interval,
            stamp: config.latency_stamp,
            vp8,
            low: config.low_rendition.0.filter(|_| config.adaptive),
        },
        audio: audio.clone(),
        idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        keyframe_min_interval: Duration::from_millis(config.keyframe_min_interval_ms),
        snapshot_settle_frames: config.snapshot_settle_frames,
    });
    // Prove the camera and encoder work before announcing the device online: a device that
    // says "online" must be able to stream. This also settles whether audio works.
    drop(
        media
            .acquire()
            .await
            .context("starting the media pipeline")?,
    );
    video_capability.codecs = media.codecs();
    video_capability.fallback = media
        .plan()
        .vp8_size()
        .map(|(width, height)| FallbackVideo {
            codec: VideoCodec::Vp8,
            width,
            height,
        });
    let audio_capability = audio
        .filter(|_| media.audio_enabled())
        .map(|a| AudioCapability {
            source: a.describe(),
            codec: "opus".to_owned(),
        });

    let limits = adapt::Limits {
        min_kbps: config.min_bitrate_kbps,
        max_kbps: config.max_bitrate_kbps.max(config.min_bitrate_kbps),
    };
    let adaptation = config
        .adaptive
        .then(|| adapt::LinkAdaptation::start(Arc::clone(&media), limits));
    let speaker = speaker::SpeakerSink::resolve(&config.speaker)?.map(|sink| {
        let half_duplex = speaker::HalfDuplex::parse(&config.half_duplex);
        (sink, half_duplex)
    });
    let speaker = match speaker {
        Some((sink, half_duplex)) => {
            let half_duplex = half_duplex?;
            let gain = media.microphone_gain();
            let ducked = half_duplex.microphone_gain();
            tracing::info!(sink = %sink.describe(), ?half_duplex, "viewers who may talk are heard");
            Some(speaker::Speaker::new(
                sink,
                half_duplex,
                Arc::new(move |playing| gain.set(if playing { ducked } else { 1.0 })),
            ))
        }
        None => None,
    };
    let gpio = open_gpio(&config)?;
    let recorder = start_recorder(&config, &media, &gpio).await?;
    let files = match &recorder {
        Some(recorder) => Some(Arc::new(files::FileService {
            library: Arc::new(files::Library::open(
                Arc::clone(recorder.store()),
                config.record.upload_max_bytes(),
            )?),
            media: Arc::clone(&media),
        })),
        None => None,
    };
    let control = Arc::new(ControlHandler {
        media: Arc::clone(&media),
        adaptation: adaptation.clone(),
        camera: match &media.plan().source {
            Source::V4l2(path) => Arc::new(V4l2Controls::new(path.clone(), controls.clone())),
            _ => Arc::new(NoControls),
        },
        gpio,
        ptz: Ptz::parse(&config.ptz)?,
        encoder: video_capability.encoder.clone(),
        started: std::time::Instant::now(),
        speaker: speaker.clone(),
        recorder,
    });
    let device_metrics = metrics::DeviceMetrics::new(
        Arc::clone(&media),
        &video_capability.encoder,
        adaptation.clone(),
        speaker.clone(),
    );
    if let Some(addr) = config.metrics_listen {
        metrics::serve(addr, Arc::clone(&device_metrics)).await?;
    }
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
        // The link numbers its connections from 1 (see `ferrocam_mqtt::Link`).
        seq: 0,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        capabilities: Some(Capabilities {
            video: Some(video_capability),
            audio: audio_capability,
            sources: cameras,
            controls,
            gpio: config.gpio_lines.iter().map(|l| l.name.clone()).collect(),
            ptz: control.ptz.available(),
            ptz_actions: control.ptz.actions(),
            camera: Default::default(),
        }),
    };
    let client_id = ferrocam_protocol::topics::device_client_id(&config.id);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (connected_tx, mut connected) = watch::channel(false);
    let capabilities = presence::track(&media, online.capabilities.clone().unwrap_or_default());
    let (publisher, device_link) = link::DeviceLink::new(link::Identity {
        broker,
        client_id,
        online,
        capabilities,
        signer,
        gateway_key: gateway_key.clone(),
    })?;
    let agent = Arc::new(Agent::new(
        SessionContext {
            device: config.id.clone(),
            media: Arc::clone(&media),
            rtc: Arc::new(
                RtcSettings::new(
                    config.ice_udp.clone(),
                    config.ice_tcp.addrs(&config.ice_udp),
                    config.ice_servers.clone(),
                    media.codecs(),
                )
                // Each viewer's estimate starts at the set bitrate (clamped to the limits by
                // the estimator): a new viewer does not pull the encoder down before its first
                // feedback says anything.
                .with_congestion(config.adaptive.then(|| RateBounds {
                    start: f64::from(config.bitrate_kbps) * 1000.0,
                    min: f64::from(limits.min_kbps) * 1000.0,
                    max: f64::from(limits.max_kbps) * 1000.0,
                }))
                .with_zero_playout_delay(config.zero_playout_delay),
            ),
            adaptation,
            out: Arc::new(publisher),
            connect_timeout: Duration::from_secs(config.session_timeout_secs),
            control: Arc::clone(&control),
            gateways: gateway_key
                .recipient()
                .context("the gateway's grant key is not a valid Ed25519 point")?,
            speaker: speaker.clone(),
            files,
        },
        config.max_viewers,
        grants,
    ));

    let link = tokio::spawn(device_link.run(link::Wiring {
        agent: Arc::clone(&agent),
        shutdown: stop_rx,
        connected: connected_tx,
        reconnects: device_metrics.broker_reconnects.clone(),
        requests_dropped: device_metrics.requests_dropped.clone(),
    }));
    // Ready once the pipeline proved itself (above) and the broker link is up. A broker that is
    // down at boot must not hold the service in "activating" forever: after a while the device
    // reports ready anyway and keeps retrying.
    // `wait_for` returns a read guard on the channel: keep it to this statement, or the link's
    // next `send_replace` would block forever.
    let up = matches!(
        tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|c| *c)).await,
        Ok(Ok(_))
    );
    if up {
        service::ready("streaming ready; connected to the broker");
    } else {
        service::ready("streaming ready; broker unreachable, retrying");
    }
    service::spawn_watchdog(Arc::clone(&media));

    shutdown_signal().await;
    tracing::info!("shutting down");
    service::stopping();
    // Hang up viewers while the broker link can still tell their gateways, then say offline.
    agent.hang_up_all("the device is shutting down");
    let drained = tokio::time::timeout(Duration::from_secs(2), agent.idle()).await;
    if drained.is_err() {
        tracing::warn!("sessions still open after 2 s; closing anyway");
    }
    let _ = stop_tx.send(true);
    // The link flushes for at most 2 s (see `ferrocam_mqtt::Link::shutdown`).
    tokio::time::timeout(Duration::from_secs(3), link)
        .await
        .context("the broker link did not close in time")?
        .context("link task")?;
    Ok(())
}

/// The GPIO lines from the config, on the kernel's chips or on a fake one.
fn open_gpio(config: &Config) -> anyhow::Result<Arc<dyn Gpio>> {
    Ok(match config.gpio_chips() {
        GpioChips::Fake { state } => Arc::new(FakeGpio::new(&config.gpio_lines, state)),
        GpioChips::Kernel => {
            Arc::new(CdevGpio::open(&config.gpio_lines).context("opening GPIO lines")?)
        }
    })
}

/// The recorder, unless `--record-dir none`. A directory that cannot be opened is fatal when
/// `--record` asks for recording, and otherwise only turns recording off (say, a user's own
/// run of the demo where /var/lib is not writable).
async fn start_recorder(
    config: &Config,
    media: &Arc<media::MediaEngine>,
    gpio: &Arc<dyn Gpio>,
) -> anyhow::Result<Option<Arc<record::Recorder>>> {
    let flags = &config.record;
    if !flags.enabled() {
        return Ok(None);
    }
    let trigger = match &flags.trigger {
        Some(line) => Some(gpio_trigger(gpio, line)?),
        None => None,
    };
    match record::Recorder::start(flags.settings(), Arc::clone(media), trigger).await {
        Ok(recorder) => Ok(Some(recorder)),
        Err(e) if flags.mode == ferrocam_protocol::record::RecordMode::Off => {
            tracing::warn!(error = %format!("{e:#}"), dir = %flags.dir.display(),
                "recording is unavailable");
            Ok(None)
        }
        Err(e) => Err(e.context("--record needs its directory (--record-dir)")),
    }
}

/// `--record-trigger <line>`: a configured GPIO input.
fn gpio_trigger(gpio: &Arc<dyn Gpio>, line: &str) -> anyhow::Result<record::Trigger> {
    let input = gpio
        .lines()
        .into_iter()
        .any(|l| l.name == line && l.direction == "input");
    anyhow::ensure!(
        input,
        "--record-trigger {line:?} is not a GPIO input configured with --gpio"
    );
    let (gpio, name) = (Arc::clone(gpio), line.to_owned());
    Ok(record::Trigger {
        name: line.to_owned(),
        read: Arc::new(move || {
            gpio.get(&name)
                .map_err(|e| anyhow::anyhow!("{}", e.message))
        }),
    })
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
