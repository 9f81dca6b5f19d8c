//! Prometheus metrics of the device, on an optional loopback HTTP listener (`--metrics-listen`):
//! `/metrics` (text exposition) and `/healthz`.

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
use prometheus_client::registry::Registry;

use crate::media::MediaEngine;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EncoderLabels {
    encoder: String,
}

pub struct DeviceMetrics {
    registry: Registry,
    media: Arc<MediaEngine>,
    viewers: Gauge,
    fps: Gauge<f64, AtomicU64>,
    bitrate: Gauge<f64, AtomicU64>,
    /// Broker connections lost (each one is followed by a reconnect attempt).
    pub broker_reconnects: Counter,
}

impl DeviceMetrics {
    pub fn new(media: Arc<MediaEngine>, encoder: &str) -> Arc<Self> {
        let mut registry = Registry::with_prefix("ferrocam_device");
        let viewers = Gauge::default();
        let fps = Gauge::<f64, AtomicU64>::default();
        let bitrate = Gauge::<f64, AtomicU64>::default();
        let broker_reconnects = Counter::default();
        let encoders = Family::<EncoderLabels, Gauge>::default();
        encoders
            .get_or_create(&EncoderLabels {
                encoder: encoder.to_owned(),
            })
            .set(1);
        registry.register("viewers", "Viewers holding the pipeline", viewers.clone());
        registry.register("fps", "Frames per second leaving the encoder", fps.clone());
        registry.register(
            "bitrate_kbps",
            "Video bitrate leaving the encoder",
            bitrate.clone(),
        );
        registry.register("encoder", "The H.264 encoder in use", encoders);
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
            "broker_reconnects",
            "Broker connections lost",
            broker_reconnects.clone(),
        );
        Arc::new(Self {
            registry,
            media,
            viewers,
            fps,
            bitrate,
            broker_reconnects,
        })
    }

    fn render(&self) -> String {
        let (fps, kbps) = self.media.rates();
        self.viewers.set(self.media.viewers() as i64);
        self.fps.set(fps);
        self.bitrate.set(kbps);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the process ends.
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
