//! One run of the video pipeline: capture → (decode) → (encode) → H.264 access units, and a
//! VP8 branch beside the H.264 encoder that stays shut until a viewer needs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::broadcast;

use super::{AccessUnit, CaptureFormat, Encoder, Source};

/// The least the VP8 fallback is given (kbit/s), unless the main stream has less.
const VP8_MIN_KBPS: u32 = 300;

/// Everything that decides the pipeline's shape.
#[derive(Debug, Clone)]
pub struct VideoPlan {
    pub source: Source,
    pub format: CaptureFormat,
    /// `None` when the camera's own H.264 passes through.
    pub encoder: Option<Encoder>,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub keyframe_interval: u32,
    /// Paint each frame's capture time into it (the glass-to-glass meter, `ferrocam_stamp_gst`).
    pub stamp: bool,
    /// How big the VP8 fallback is, or `None` for no fallback. Ignored when the camera's own
    /// H.264 passes through (there are no raw frames to encode).
    pub vp8: Option<Vp8Size>,
}

/// How big the VP8 fallback is, beside the main stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vp8Size {
    /// The main stream's size.
    Full,
    /// The main stream scaled down, keeping its shape, to fit in this box.
    Within(u32, u32),
}

/// Where one encoder's frames go.
pub struct Output {
    pub units: broadcast::Sender<AccessUnit>,
    /// Runs (on a GStreamer thread) for each keyframe.
    pub on_keyframe: Arc<dyn Fn() + Send + Sync>,
    pub meter: Arc<Meter>,
}

/// The VP8 encoder, tuned for live video on a small CPU: realtime deadline and the fastest
/// speed, one thread (two spun a second core for nothing in our measurements), constant
/// bitrate with a short buffer, no frame lag, and partitions that survive a lost packet.
const VP8_ENCODER: &str = "vp8enc name=vp8enc deadline=1 cpu-used=16 threads=1 end-usage=cbr \
                           lag-in-frames=0 buffer-size=1000 buffer-initial-size=500 \
                           buffer-optimal-size=600 error-resilient=partitions";

impl VideoPlan {
    /// The VP8 fallback's frame size, when this plan has one. Worked out from the size in
    /// force, so `video.set` resizes it too; even sides, as I420 needs.
    pub fn vp8_size(&self) -> Option<(u32, u32)> {
        let encodes = self.format != CaptureFormat::H264 && self.encoder.is_some();
        let (width, height) = (f64::from(self.width), f64::from(self.height));
        let scale = match self.vp8.filter(|_| encodes)? {
            Vp8Size::Full => 1.0,
            Vp8Size::Within(box_w, box_h) => (f64::from(box_w) / width)
                .min(f64::from(box_h) / height)
                .min(1.0),
        };
        let even = |side: f64| ((side.round() as u32) & !1).max(2);
        Some((even(width * scale), even(height * scale)))
    }

    /// The fallback's bitrate: the main stream's, scaled by frame area (a quarter of the pixels
    /// get a quarter of the bits), but never below what VP8 needs for a watchable picture.
    pub fn vp8_bitrate_kbps(&self) -> u32 {
        let Some((w, h)) = self.vp8_size() else {
            return 0;
        };
        let area = f64::from(w * h) / f64::from((self.width * self.height).max(1));
        ((f64::from(self.bitrate_kbps) * area.min(1.0)) as u32)
            .max(VP8_MIN_KBPS.min(self.bitrate_kbps))
    }

    /// The tee's VP8 branch: a valve that drops every frame until a VP8 viewer arrives (so the
    /// encoder costs nothing before), scaling to the fallback's size, the encoder, its sink.
    /// The sink is `async=false`: a sink that never prerolls would otherwise hold the whole
    /// pipeline in PAUSED, and the H.264 stream with it (measured: two frames, then nothing).
    fn vp8_branch(&self) -> Option<String> {
        let (width, height) = self.vp8_size()?;
        let scale = if (width, height) == (self.width, self.height) {
            String::new()
        } else {
            format!("! videoscale ! video/x-raw,width={width},height={height} ")
        };
        Some(format!(
            " raw. ! valve name=vp8gate drop=true \
             ! queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 leaky=downstream \
             {scale}! {VP8_ENCODER} target-bitrate={bps} keyframe-max-dist={gop} \
             ! appsink name=vp8units sync=false async=false max-buffers=4 drop=true",
            bps = self
                .vp8_bitrate_kbps()
                .saturating_mul(1000)
                .min(i32::MAX as u32),
            gop = self.keyframe_interval,
        ))
    }

    /// The `gst-launch` description of the whole pipeline.
    pub fn describe(&self) -> String {
        let vp8 = self.vp8_branch().unwrap_or_default();
        let source = self
            .source
            .launch_fragment(self.format, self.width, self.height, self.fps);
        let tail = "h264parse config-interval=-1 \
                    ! video/x-h264,stream-format=byte-stream,alignment=au \
                    ! appsink name=units sync=false max-buffers=4 drop=true";
        let encoder = match (self.format, self.encoder) {
            (CaptureFormat::H264, _) => return format!("{source} ! {tail}"),
            // Named, so bitrate can be changed on the running element.
            (_, Some(enc)) => enc
                .launch_fragment(self.bitrate_kbps, self.keyframe_interval)
                .replacen(enc.element, &format!("{} name=enc", enc.element), 1),
            (_, None) => unreachable!("raw and MJPEG capture always have an encoder"),
        };
        let decode = match self.format {
            CaptureFormat::Mjpeg => "jpegdec ! ",
            _ => "",
        };
        // The leaky one-frame queue before the encoder: a slow encoder drops frames instead of
        // building latency. The tee's second branch keeps the latest raw frame for snapshots
        // (no copy: the appsink just holds a reference to one buffer).
        format!(
            "{source} ! {decode}videoconvert ! videoscale ! videorate \
             ! video/x-raw,format=I420,width={w},height={h},framerate={fps}/1 {stamp}! tee name=raw \
             raw. ! queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 leaky=downstream \
             ! {encoder} ! {tail} \
             raw. ! queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 leaky=downstream \
             ! appsink name=frames sync=false max-buffers=1 drop=true{vp8}",
            w = self.width,
            h = self.height,
            fps = self.fps,
            stamp = if self.stamp {
                "! identity name=stamp "
            } else {
                ""
            },
        )
    }
}

/// A playing pipeline. Dropping it stops it.
pub struct VideoPipeline {
    pipeline: gst::Pipeline,
    appsink: gst_app::AppSink,
    vp8: Option<Vp8Branch>,
    _bus: BusWatch,
}

/// The running pipeline's VP8 branch.
struct Vp8Branch {
    gate: gst::Element,
    encoder: gst::Element,
    appsink: gst_app::AppSink,
}

/// Frames and bytes leaving the encoder over the last second.
#[derive(Default)]
pub struct Meter {
    window: std::sync::Mutex<std::collections::VecDeque<(Instant, usize)>>,
}

impl Meter {
    fn record(&self, bytes: usize) {
        let now = Instant::now();
        let mut window = self.window.lock().expect("meter lock");
        window.push_back((now, bytes));
        while window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(1))
        {
            window.pop_front();
        }
    }

    /// How long since the last frame (forever if none yet).
    pub fn idle_for(&self) -> Duration {
        self.window
            .lock()
            .expect("meter lock")
            .back()
            .map_or(Duration::MAX, |(t, _)| t.elapsed())
    }

    /// (frames per second, kbit/s) over the last second.
    pub fn rates(&self) -> (f64, f64) {
        let now = Instant::now();
        let window = self.window.lock().expect("meter lock");
        let recent = window
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= Duration::from_secs(1));
        let (frames, bytes) = recent.fold((0usize, 0usize), |(f, b), (_, n)| (f + 1, b + n));
        (frames as f64, bytes as f64 * 8.0 / 1000.0)
    }
}

impl VideoPipeline {
    /// Builds and starts the pipeline; H.264 access units go to `h264` and VP8 frames (once
    /// [`Self::set_vp8_flowing`] opens the branch) to `vp8`.
    pub fn start(
        plan: &VideoPlan,
        h264: Output,
        vp8: Output,
        on_fault: Arc<dyn Fn(String) + Send + Sync>,
    ) -> anyhow::Result<Self> {
        let description = plan.describe();
        tracing::debug!(%description, "starting video pipeline");
        let pipeline = gst::parse::launch(&description)
            .context("building the capture pipeline")?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("pipeline description did not produce a pipeline"))?;
        let appsink = pipeline
            .by_name("units")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .context("pipeline has no appsink")?;

        let frame = Duration::from_secs(1) / plan.fps.max(1);
        deliver(&appsink, h264, frame);
        let vp8 = match pipeline.by_name("vp8units") {
            None => None,
            Some(sink) => {
                let appsink = sink
                    .downcast::<gst_app::AppSink>()
                    .map_err(|_| anyhow!("vp8units is not an appsink"))?;
                deliver(&appsink, vp8, frame);
                Some(Vp8Branch {
                    gate: pipeline.by_name("vp8gate").context("no VP8 valve")?,
                    encoder: pipeline.by_name("vp8enc").context("no VP8 encoder")?,
                    appsink,
                })
            }
        };

        if plan.stamp && plan.format != CaptureFormat::H264 {
            ferrocam_stamp_gst::attach(&pipeline, plan.width)?;
        }
        let bus = BusWatch::start(&pipeline, on_fault)?;
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let _ = pipeline.set_state(gst::State::Null);
            return Err(anyhow!(e))
                .context("the capture pipeline refused to start (is the camera busy?)");
        }
        Ok(Self {
            pipeline,
            appsink,
            vp8,
            _bus: bus,
        })
    }

    /// Opens or shuts the VP8 branch. Shut, its encoder sees no frames and costs nothing; on
    /// opening, the valve passes the stream's caps again before the first frame.
    pub fn set_vp8_flowing(&self, flowing: bool) {
        if let Some(vp8) = &self.vp8 {
            vp8.gate.set_property("drop", !flowing);
        }
    }

    /// Where VP8 keyframe requests go, if this pipeline has the branch.
    pub fn vp8_keyframe_target(&self) -> Option<gst_app::AppSink> {
        self.vp8.as_ref().map(|vp8| vp8.appsink.clone())
    }
}

/// Sends each sample `sink` produces to `output`, as access units.
fn deliver(sink: &gst_app::AppSink, output: Output, frame: Duration) {
    let Output {
        units,
        on_keyframe,
        meter,
    } = output;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(unit) = to_access_unit(&sample, frame) {
                    meter.record(unit.data.len());
                    if unit.keyframe {
                        on_keyframe();
                    }
                    // No receivers is normal between viewers; not an error.
                    let _ = units.send(unit);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// Asks the encoder (or a camera that supports it) behind `target` for an IDR frame with
/// SPS/PPS. Quick: the event travels upstream without waiting for the stream.
pub fn force_keyframe(target: &gst_app::AppSink) {
    let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
        .all_headers(true)
        .build();
    if !target.send_event(event) {
        tracing::debug!("keyframe request not handled upstream");
    }
}

impl VideoPipeline {
    /// Changes the H.264 encoder's target bitrate while it runs.
    pub fn set_h264_bitrate(&self, kbps: u32) -> anyhow::Result<()> {
        let enc = self
            .pipeline
            .by_name("enc")
            .context("no encoder in this pipeline (the camera's own H.264 passes through)")?;
        let factory = enc
            .factory()
            .map(|f| f.name().to_string())
            .unwrap_or_default();
        match factory.as_str() {
            "x264enc" | "vah264enc" | "vaapih264enc" | "nvh264enc" => {
                enc.set_property("bitrate", kbps)
            }
            "openh264enc" => enc.set_property("bitrate", kbps * 1000),
            "mpph264enc" => enc.set_property("bps", kbps * 1000),
            "v4l2h264enc" => enc.set_property(
                "extra-controls",
                gst::Structure::builder("controls")
                    .field("video_bitrate", (kbps * 1000) as i32)
                    .build(),
            ),
            other => anyhow::bail!("changing the bitrate of {other} is not supported"),
        }
        Ok(())
    }

    /// Changes the VP8 fallback's target bitrate while it runs (nothing without a fallback).
    pub fn set_vp8_bitrate(&self, kbps: u32) {
        if let Some(vp8) = &self.vp8 {
            let bps = kbps.saturating_mul(1000);
            vp8.encoder
                .set_property("target-bitrate", i32::try_from(bps).unwrap_or(i32::MAX));
        }
    }

    /// The sink holding the most recent raw frame, for snapshots; `None` when the camera's
    /// own H.264 passes through (there are no raw frames). Pulling from it blocks until a
    /// frame is there, so callers do it off the engine and off the async runtime.
    pub fn frames(&self) -> Option<gst_app::AppSink> {
        self.pipeline
            .by_name("frames")?
            .downcast::<gst_app::AppSink>()
            .ok()
    }

    /// The element keyframe requests are sent to (they travel upstream to the encoder). A
    /// clone can outlive the pipeline: an event sent to a stopped one is simply not handled.
    pub fn keyframe_target(&self) -> gst_app::AppSink {
        self.appsink.clone()
    }
}

impl Drop for VideoPipeline {
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
            .filter(|d| !d.is_zero())
            .unwrap_or(frame),
        keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
        encoded_at: Instant::now(),
    })
}

/// Watches a pipeline's bus on a thread of its own and reports the first error or EOS. Stops
/// when dropped: a bus in the NULL state is flushing and would never wake a blocking read.
pub(super) struct BusWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl BusWatch {
    pub(super) fn start(
        pipeline: &gst::Pipeline,
        on_fault: Arc<dyn Fn(String) + Send + Sync>,
    ) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;
        let bus = pipeline.bus().context("pipeline has no bus")?;
        let name = pipeline.name().to_string();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("gst-bus".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else {
                        continue;
                    };
                    match msg.view() {
                        gst::MessageView::Error(e) => {
                            let source = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
                            tracing::error!(pipeline = %name, %source, error = %e.error(), debug = ?e.debug(), "pipeline error");
                            on_fault(format!("{source}: {}", e.error()));
                            return;
                        }
                        gst::MessageView::Warning(w) => {
                            tracing::warn!(pipeline = %name, error = %w.error(), "pipeline warning")
                        }
                        gst::MessageView::Eos(_) => {
                            on_fault("end of stream".to_owned());
                            return;
                        }
                        _ => {}
                    }
                }
            })?;
        Ok(Self { stop })
    }
}

impl Drop for BusWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
