//! Prometheus metrics of the device, on an optional loopback HTTP listener (`--metrics-listen`):
//! `/metrics` (text exposition) and `/healthz`. Every metric is documented once, in the table of
//! docs/deploy.md ("What to monitor"); a test below holds the two to each other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::adapt::LinkAdaptation;
use crate::media::{MediaEngine, Stream};
use crate::speaker::Speaker;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EncoderLabels {
    encoder: String,
}

/// Label of the dropped-requests counter: one of [`crate::requests::REFUSAL_REASONS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

pub struct DeviceMetrics {
    registry: Registry,
    media: Arc<MediaEngine>,
    viewers: Gauge,
    camera_running: Gauge,
    frame_rate: Gauge<f64, AtomicU64>,
    bitrate: Gauge<f64, AtomicU64>,
    vp8_viewers: Gauge,
    vp8_frame_rate: Gauge<f64, AtomicU64>,
    vp8_bitrate: Gauge<f64, AtomicU64>,
    adapting: AdaptationGauges,
    speaker: SpeakerGauges,
    /// Broker connections lost (each one is followed by a reconnect attempt).
    pub broker_reconnects: Counter,
    /// Requests from the broker that no gateway signed (or stale, or replayed).
    pub requests_dropped: Family<ReasonLabels, Counter>,
}

impl DeviceMetrics {
    pub fn new(
        media: Arc<MediaEngine>,
        encoder: &str,
        adaptation: Option<Arc<LinkAdaptation>>,
        speaker: Option<Arc<Speaker>>,
    ) -> Arc<Self> {
        let mut registry = Registry::with_prefix("ferrocam_device");
        let viewers = Gauge::default();
        let camera_running = Gauge::default();
        let frame_rate = Gauge::<f64, AtomicU64>::default();
        let bitrate = Gauge::<f64, AtomicU64>::default();
        let vp8_viewers = Gauge::default();
        let vp8_frame_rate = Gauge::<f64, AtomicU64>::default();
        let vp8_bitrate = Gauge::<f64, AtomicU64>::default();
        let broker_reconnects = Counter::default();
        let requests_dropped = Family::<ReasonLabels, Counter>::default();
        for reason in crate::requests::REFUSAL_REASONS {
            requests_dropped.get_or_create_owned(&ReasonLabels { reason });
        }
        registry.register("viewers", "Viewers holding the pipeline", viewers.clone());
        registry.register(
            "camera_running",
            "1 while the capture pipeline runs (viewers, a snapshot, or the idle timeout)",
            camera_running.clone(),
        );
        registry.register(
            "frames_per_second",
            "Frames per second leaving the encoder",
            frame_rate.clone(),
        );
        registry.register(
            "bitrate_bits_per_second",
            "Video bitrate leaving the encoder",
            bitrate.clone(),
        );
        registry.register(
            "vp8_viewers",
            "Viewers of the VP8 fallback (its encoder runs while this is above zero)",
            vp8_viewers.clone(),
        );
        registry.register(
            "vp8_frames_per_second",
            "Frames per second leaving the VP8 fallback encoder",
            vp8_frame_rate.clone(),
        );
        registry.register(
            "vp8_bitrate_bits_per_second",
            "Video bitrate leaving the VP8 fallback encoder",
            vp8_bitrate.clone(),
        );
        let adapting = AdaptationGauges::register(&mut registry, adaptation);
        let speaker = SpeakerGauges::register(&mut registry, speaker);
        registry.register(
            "encoder",
            "The H.264 encoder in use",
            Info::new(EncoderLabels {
                encoder: encoder.to_owned(),
            }),
        );
        register_engine_counters(&mut registry, &media);
        registry.register(
            "broker_reconnects",
            "Broker connections lost",
            broker_reconnects.clone(),
        );
        registry.register(
            "requests_dropped",
            "Requests from the broker refused: unsigned, bad signature, too large, stale or replayed",
            requests_dropped.clone(),
        );
        Arc::new(Self {
            registry,
            media,
            viewers,
            camera_running,
            frame_rate,
            bitrate,
            vp8_viewers,
            vp8_frame_rate,
            vp8_bitrate,
            adapting,
            speaker,
            broker_reconnects,
            requests_dropped,
        })
    }

    fn render(&self) -> String {
        let (fps, kbps) = self.media.rates();
        self.viewers.set(self.media.viewers() as i64);
        self.camera_running.set(i64::from(self.media.is_running()));
        self.frame_rate.set(fps);
        // Base units, as Prometheus names want them.
        self.bitrate.set(kbps * 1000.0);
        let (vp8_fps, vp8_kbps) = self.media.stream_rates(Stream::Vp8);
        self.vp8_viewers.set(self.media.vp8_viewers() as i64);
        self.vp8_frame_rate.set(vp8_fps);
        self.vp8_bitrate.set(vp8_kbps * 1000.0);
        self.adapting.update(&self.media);
        self.speaker.update();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the process ends.
/// The counters the media engine keeps itself.
fn register_engine_counters(registry: &mut Registry, media: &MediaEngine) {
    registry.register(
        "keyframes_forced",
        "Keyframes asked of the encoder",
        media.keyframes_forced.clone(),
    );
    registry.register(
        "pipeline_restarts",
        "Video pipeline failures (each followed by a rebuild)",
        media.pipeline_restarts.clone(),
    );
    registry.register(
        "snapshots",
        "Snapshots taken from the camera",
        media.snapshots_taken.clone(),
    );
    registry.register(
        "snapshots_reused",
        "Snapshot requests answered with a recent picture (max_age_ms)",
        media.snapshots_reused.clone(),
    );
}

/// What link adaptation did: the encoders' settings and the narrowest viewer's path.
struct AdaptationGauges {
    encoder_target: Gauge,
    vp8_encoder_target: Gauge,
    low_encoder_target: Gauge,
    low_viewers: Gauge,
    narrowest_link: Gauge,
    main_width: Gauge,
    main_fps: Gauge,
    adaptation: Option<Arc<LinkAdaptation>>,
}

impl AdaptationGauges {
    fn register(registry: &mut Registry, adaptation: Option<Arc<LinkAdaptation>>) -> Self {
        let gauges = Self {
            encoder_target: Gauge::default(),
            vp8_encoder_target: Gauge::default(),
            low_encoder_target: Gauge::default(),
            low_viewers: Gauge::default(),
            narrowest_link: Gauge::default(),
            main_width: Gauge::default(),
            main_fps: Gauge::default(),
            adaptation,
        };
        registry.register(
            "main_stream_width_pixels",
            "The width the main H.264 stream is encoded at: the camera's, or less where link adaptation stepped it down",
            gauges.main_width.clone(),
        );
        registry.register(
            "main_stream_frames_per_second",
            "The frame rate the main H.264 stream is encoded at (halved on the ladder's last rung)",
            gauges.main_fps.clone(),
        );
        registry.register(
            "encoder_target_bits_per_second",
            "What the H.264 encoder is set to: the configured bitrate, or less when a viewer's path carries less",
            gauges.encoder_target.clone(),
        );
        registry.register(
            "vp8_encoder_target_bits_per_second",
            "What the VP8 fallback encoder is set to (0 without a fallback)",
            gauges.vp8_encoder_target.clone(),
        );
        registry.register(
            "low_encoder_target_bits_per_second",
            "What the low H.264 stream's encoder is set to (0 without a low stream)",
            gauges.low_encoder_target.clone(),
        );
        registry.register(
            "low_stream_viewers",
            "Viewers moved to the low H.264 stream because their path is far narrower than the others'",
            gauges.low_viewers.clone(),
        );
        registry.register(
            "narrowest_link_bits_per_second",
            "The lowest path estimate among connected viewers (0 when none has one)",
            gauges.narrowest_link.clone(),
        );
        gauges
    }

    fn update(&self, media: &MediaEngine) {
        let bps = |kbps: u32| i64::from(kbps) * 1000;
        self.encoder_target
            .set(bps(media.encoder_kbps(Stream::H264)));
        self.vp8_encoder_target
            .set(bps(media.encoder_kbps(Stream::Vp8)));
        self.low_encoder_target
            .set(bps(media.encoder_kbps(Stream::H264Low)));
        self.low_viewers.set(media.low_viewers() as i64);
        let main = media.frame(Stream::H264);
        self.main_width.set(i64::from(main.width));
        self.main_fps.set(i64::from(main.fps));
        let narrowest = self.adaptation.as_ref().and_then(|adaptation| {
            adaptation
                .links(None)
                .iter()
                .filter_map(|link| link.estimate_kbps)
                .min()
        });
        self.narrowest_link.set(narrowest.map_or(0, bps));
    }
}

/// Who the speaker plays: viewers connected with the right to talk, and those talking now.
struct SpeakerGauges {
    talkers: Gauge,
    talking: Gauge,
    speaker: Option<Arc<Speaker>>,
}

impl SpeakerGauges {
    fn register(registry: &mut Registry, speaker: Option<Arc<Speaker>>) -> Self {
        let gauges = Self {
            talkers: Gauge::default(),
            talking: Gauge::default(),
            speaker,
        };
        registry.register(
            "talkers",
            "Viewers connected to the speaker (they may talk and have sent sound in this session)",
            gauges.talkers.clone(),
        );
        registry.register(
            "talking",
            "Viewers whose sound (louder than -50 dBFS) reached the speaker in the last half second",
            gauges.talking.clone(),
        );
        gauges
    }

    fn update(&self) {
        let (talkers, talking) = self.speaker.as_ref().map_or((0, 0), |s| s.counts());
        self.talkers.set(talkers as i64);
        self.talking.set(talking as i64);
    }
}

pub async fn serve(addr: SocketAddr, metrics: Arc<DeviceMetrics>) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

async fn render(State(metrics): State<Arc<DeviceMetrics>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::media::{CaptureFormat, EngineSettings, Source, VideoPlan};

    #[tokio::test]
    async fn a_fresh_registry_shows_every_series_at_zero() {
        gstreamer::init().unwrap();
        let media = MediaEngine::new(EngineSettings {
            video: VideoPlan {
                source: Source::TestPattern,
                format: CaptureFormat::Raw,
                encoder: None,
                width: 640,
                height: 360,
                fps: 30,
                bitrate_kbps: 800,
                keyframe_interval: 30,
                stamp: false,
                vp8: None,
                low: None,
            },
            audio: None,
            idle_timeout: Duration::from_secs(5),
            keyframe_min_interval: Duration::from_millis(500),
            snapshot_settle_frames: 0,
        });
        let text = DeviceMetrics::new(media, "x264enc", None, None).render();
        for series in [
            "ferrocam_device_viewers 0",
            "ferrocam_device_camera_running 0",
            "ferrocam_device_snapshots_total 0",
            "ferrocam_device_snapshots_reused_total 0",
            "ferrocam_device_frames_per_second 0.0",
            "ferrocam_device_bitrate_bits_per_second 0.0",
            "ferrocam_device_encoder_info{encoder=\"x264enc\"} 1",
            "ferrocam_device_keyframes_forced_total 0",
            "ferrocam_device_pipeline_restarts_total 0",
            "ferrocam_device_broker_reconnects_total 0",
            "ferrocam_device_encoder_target_bits_per_second 0",
            "ferrocam_device_narrowest_link_bits_per_second 0",
            "ferrocam_device_talkers 0",
            "ferrocam_device_talking 0",
        ] {
            assert!(
                text.lines().any(|l| l == series),
                "no {series:?} in\n{text}"
            );
        }
    }
}
