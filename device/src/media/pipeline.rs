//! One run of the video pipeline: capture → (decode) → (encode) → H.264 access units, and
//! gated branches beside the H.264 encoder (the VP8 fallback, the low H.264 stream) that stay
//! shut until a viewer needs them ([`branches`]).

mod branches;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::broadcast;

pub use self::branches::Vp8Size;
use self::branches::{Branch, set_encoder_bitrate};
use super::rung::{Frame, Rung};
use super::{AccessUnit, CaptureFormat, Encoder, Source, Stream};

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
    /// The box the low H.264 stream fits in (for viewers on narrow paths), or `None` for no
    /// low stream. Ignored when the camera's own H.264 passes through.
    pub low: Option<(u32, u32)>,
}

/// Where one encoder's frames go.
pub struct Output {
    pub units: broadcast::Sender<AccessUnit>,
    /// Runs (on a GStreamer thread) for each keyframe.
    pub on_keyframe: Arc<dyn Fn() + Send + Sync>,
    pub meter: Arc<Meter>,
}

impl VideoPlan {
    /// The `gst-launch` description of the whole pipeline.
    pub fn describe(&self) -> String {
        let branches = [self.vp8_branch(), self.low_branch()]
            .into_iter()
            .flatten()
            .collect::<String>();
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
        // building latency. Then the ladder's scaler (`rung`): passthrough, at no cost, until
        // link adaptation asks for smaller frames; `drop-only` so that rate never holds a frame
        // back to choose between it and the next. The tee's second branch keeps the latest raw
        // frame for snapshots (no copy: the appsink just holds a reference to one buffer).
        format!(
            "{source} ! {decode}videoconvert ! videoscale ! videorate \
             ! video/x-raw,format=I420,width={w},height={h},framerate={fps}/1 {stamp}! tee name=raw \
             raw. ! queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 leaky=downstream \
             ! videorate drop-only=true ! videoscale ! capsfilter name={RUNG_FILTER} \
               caps=video/x-raw,format=I420,width={w},height={h},framerate={fps}/1 \
             ! {encoder} ! {tail} \
             raw. ! queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 leaky=downstream \
             ! appsink name=frames sync=false max-buffers=1 drop=true{branches}",
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

/// The main stream's scaler's caps filter, whose caps pick the rung.
const RUNG_FILTER: &str = "rungframe";

/// The caps of raw frames of `frame`'s size and rate.
fn raw_caps(frame: Frame) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", i32::try_from(frame.width).unwrap_or(i32::MAX))
        .field("height", i32::try_from(frame.height).unwrap_or(i32::MAX))
        .field(
            "framerate",
            gst::Fraction::new(i32::try_from(frame.fps).unwrap_or(i32::MAX), 1),
        )
        .build()
}

impl VideoPlan {
    /// The planned frame size and rate: the main stream's full rung.
    pub fn frame(&self) -> Frame {
        Frame {
            width: self.width,
            height: self.height,
            fps: self.fps,
        }
    }
}

/// A playing pipeline. Dropping it stops it.
pub struct VideoPipeline {
    pipeline: gst::Pipeline,
    appsink: gst_app::AppSink,
    vp8: Option<Branch>,
    low: Option<Branch>,
    _bus: BusWatch,
}

/// Where each stream's frames go.
pub struct Outputs {
    pub h264: Output,
    pub low: Output,
    pub vp8: Output,
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
    /// Builds and starts the pipeline; each stream's frames go to its output (a gated
    /// branch's once [`Self::set_flowing`] opens it).
    pub fn start(
        plan: &VideoPlan,
        outputs: Outputs,
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
        deliver(&appsink, outputs.h264, frame);
        let vp8 = Branch::find(&pipeline, "vp8")?;
        if let Some(branch) = &vp8 {
            deliver(&branch.appsink, outputs.vp8, frame);
        }
        let low = Branch::find(&pipeline, "low")?;
        if let Some(branch) = &low {
            deliver(&branch.appsink, outputs.low, frame);
        }

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
            low,
            _bus: bus,
        })
    }

    /// The gated branch of `stream` (`None` for the main stream, or one this plan lacks).
    fn branch(&self, stream: Stream) -> Option<&Branch> {
        match stream {
            Stream::H264 => None,
            Stream::H264Low => self.low.as_ref(),
            Stream::Vp8 => self.vp8.as_ref(),
        }
    }

    /// Opens or shuts a gated stream's branch (the main stream always flows).
    pub fn set_flowing(&self, stream: Stream, flowing: bool) {
        if let Some(branch) = self.branch(stream) {
            branch.set_flowing(flowing);
        }
    }

    /// Where `stream`'s keyframe requests go, if this pipeline makes that stream. A clone can
    /// outlive the pipeline: an event sent to a stopped one is simply not handled.
    pub fn keyframe_target(&self, stream: Stream) -> Option<gst_app::AppSink> {
        match stream {
            Stream::H264 => Some(self.appsink.clone()),
            gated => self.branch(gated).map(|branch| branch.appsink.clone()),
        }
    }

    /// Moves the main stream to `rung` of the ladder while it runs: the scaler in front of its
    /// encoder makes frames of that size and rate, and the encoder, seeing new caps, starts
    /// again from a keyframe carrying the new size. An error when the main stream has no
    /// encoder (the camera's own H.264 passes through: nothing to scale). Only the main stream
    /// has a ladder: the low stream is already small, and the VP8 fallback has its own size.
    pub fn set_rung(&self, plan: &VideoPlan, rung: Rung) -> anyhow::Result<()> {
        let filter = self
            .pipeline
            .by_name(RUNG_FILTER)
            .context("no scaler in this pipeline (the camera's own H.264 passes through)")?;
        let caps = raw_caps(rung.frame(plan.frame()));
        let current = filter.property::<Option<gst::Caps>>("caps");
        if current.as_ref() != Some(&caps) {
            filter.set_property("caps", &caps);
        }
        Ok(())
    }

    /// Changes `stream`'s encoder bitrate while it runs. An error for the main stream when it
    /// has no encoder (the camera's own H.264 passes through); nothing for a branch this plan
    /// lacks.
    pub fn set_bitrate(&self, stream: Stream, kbps: u32) -> anyhow::Result<()> {
        match stream {
            Stream::H264 => {
                let enc = self.pipeline.by_name("enc").context(
                    "no encoder in this pipeline (the camera's own H.264 passes through)",
                )?;
                set_encoder_bitrate(&enc, kbps)
            }
            gated => self
                .branch(gated)
                .map_or(Ok(()), |branch| branch.set_bitrate(kbps)),
        }
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
                if let Some(unit) = to_access_unit(sink, &sample, frame) {
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
    /// The sink holding the most recent raw frame, for snapshots; `None` when the camera's
    /// own H.264 passes through (there are no raw frames). Pulling from it blocks until a
    /// frame is there, so callers do it off the engine and off the async runtime.
    pub fn frames(&self) -> Option<gst_app::AppSink> {
        self.pipeline
            .by_name("frames")?
            .downcast::<gst_app::AppSink>()
            .ok()
    }
}

impl Drop for VideoPipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn to_access_unit(
    sink: &gst_app::AppSink,
    sample: &gst::Sample,
    frame: Duration,
) -> Option<AccessUnit> {
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
        captured_at: captured_at(sink, sample),
    })
}

/// When the frame in `sample` was captured, on the wall clock: now, less its [`frame_age`].
/// Now, for a buffer without a timestamp.
fn captured_at(sink: &gst_app::AppSink, sample: &gst::Sample) -> SystemTime {
    let now = SystemTime::now();
    frame_age(sink, sample)
        .and_then(|age| now.checked_sub(age))
        .unwrap_or(now)
}

/// How long ago `sample` was captured, by the running time of the pipeline it came from (the
/// pipeline clock when the source made the frame, against the clock now); `None` when either
/// is unknown.
pub(crate) fn frame_age(sink: &gst_app::AppSink, sample: &gst::Sample) -> Option<Duration> {
    let pts = sample.buffer()?.pts()?;
    let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    let captured = segment.to_running_time(pts)?;
    let now = sink.current_running_time()?;
    Some(Duration::from_nanos(
        now.saturating_sub(captured).nseconds(),
    ))
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
