//! The GStreamer pipeline that captures, encodes and hands access units to subscribers.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use ferrocam_protocol::VideoCapability;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::broadcast;

use super::{AccessUnit, Encoder, Source};

/// How many access units a slow viewer may fall behind before it skips to the next keyframe.
/// Two seconds at 30 fps: enough to ride out a scheduling hiccup, small enough to bound memory.
const FANOUT_CAPACITY: usize = 64;

/// What to capture and how to encode it.
#[derive(Debug, Clone)]
pub struct VideoSettings {
    pub source: Source,
    pub encoder: Option<String>,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub keyframe_interval: u32,
}

/// A running capture + encode pipeline shared by all viewers.
pub struct MediaEngine {
    pipeline: gst::Pipeline,
    appsink: gst_app::AppSink,
    units: broadcast::Sender<AccessUnit>,
    capability: VideoCapability,
}

impl MediaEngine {
    /// Builds the pipeline and starts it playing.
    pub fn start(settings: &VideoSettings) -> anyhow::Result<Self> {
        gst::init().context("GStreamer failed to initialise")?;
        let (encoder, why) = Encoder::select(settings.encoder.as_deref())?;
        tracing::info!(
            encoder = encoder.element(),
            reason = why,
            "H.264 encoder selected"
        );

        let description = format!(
            "{source} ! videoconvert ! videoscale ! videorate \
             ! video/x-raw,format=I420,width={w},height={h},framerate={fps}/1 \
             ! queue max-size-buffers=1 leaky=downstream \
             ! {encoder} \
             ! h264parse config-interval=-1 \
             ! video/x-h264,stream-format=byte-stream,alignment=au \
             ! appsink name=units sync=false max-buffers=4 drop=true",
            source = settings.source.launch_fragment()?,
            w = settings.width,
            h = settings.height,
            fps = settings.fps,
            encoder = encoder.launch_fragment(settings.bitrate_kbps, settings.keyframe_interval),
        );
        tracing::debug!(%description, "pipeline");
        let pipeline = gst::parse::launch(&description)
            .context("building the capture pipeline")?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("pipeline description did not produce a pipeline"))?;
        let appsink = pipeline
            .by_name("units")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .context("pipeline has no appsink")?;

        let (units, _) = broadcast::channel(FANOUT_CAPACITY);
        let frame = Duration::from_secs(1) / settings.fps.max(1);
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample({
                    let units = units.clone();
                    move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        if let Some(unit) = to_access_unit(&sample, frame) {
                            // No receivers is normal between viewers; not an error.
                            let _ = units.send(unit);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    }
                })
                .build(),
        );

        watch_bus(&pipeline)?;
        pipeline
            .set_state(gst::State::Playing)
            .context("the capture pipeline refused to start (is the camera busy?)")?;

        Ok(Self {
            pipeline,
            appsink,
            units,
            capability: VideoCapability {
                source: settings.source.describe(),
                encoder: encoder.element().to_owned(),
                codec: "H264".to_owned(),
                width: settings.width,
                height: settings.height,
                fps: settings.fps,
            },
        })
    }

    /// A new viewer's feed of access units. It starts mid-GOP: call [`Self::request_keyframe`]
    /// and skip to the first keyframe.
    pub fn subscribe(&self) -> broadcast::Receiver<AccessUnit> {
        self.units.subscribe()
    }

    /// Asks the encoder for an IDR frame with SPS/PPS as soon as possible.
    pub fn request_keyframe(&self) {
        let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        if !self.appsink.send_event(event) {
            tracing::warn!("encoder ignored a keyframe request");
        }
    }

    /// What this engine streams, for presence.
    pub fn capability(&self) -> &VideoCapability {
        &self.capability
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn to_access_unit(sample: &gst::Sample, frame: Duration) -> Option<AccessUnit> {
    let buffer = sample.buffer()?;
    let map = buffer.map_readable().ok()?;
    Some(AccessUnit {
        data: Bytes::copy_from_slice(map.as_slice()),
        duration: buffer
            .duration()
            .map(|d| Duration::from_nanos(d.nseconds()))
            .unwrap_or(frame),
        keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
        encoded_at: Instant::now(),
    })
}

/// Logs pipeline errors and warnings from a thread of their own. (Rebuilding the pipeline on
/// faults belongs to the reliability work; here a fault is at least visible.)
fn watch_bus(pipeline: &gst::Pipeline) -> anyhow::Result<()> {
    let bus = pipeline.bus().context("pipeline has no bus")?;
    std::thread::Builder::new()
        .name("gst-bus".into())
        .spawn(move || {
            for msg in bus.iter_timed(gst::ClockTime::NONE) {
                match msg.view() {
                    gst::MessageView::Error(e) => tracing::error!(
                        source = ?e.src().map(|s| s.path_string()),
                        error = %e.error(),
                        debug = ?e.debug(),
                        "pipeline error"
                    ),
                    gst::MessageView::Warning(w) => {
                        tracing::warn!(error = %w.error(), "pipeline warning")
                    }
                    gst::MessageView::Eos(_) => {
                        tracing::error!("pipeline reached end of stream");
                        break;
                    }
                    _ => {}
                }
            }
        })?;
    Ok(())
}
