//! The tee's gated branches beside the main H.264 encoder: the VP8 fallback (browsers without
//! H.264) and the low H.264 stream (viewers whose path is far narrower than the others'). Each
//! is a valve that drops every frame until a viewer needs the branch, a scaler, an encoder of
//! its own and a sink; shut, its encoder sees no frames and costs nothing.

use anyhow::{Context, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{CaptureFormat, VideoPlan};

/// The least the VP8 fallback is given (kbit/s), unless the main stream has less.
const VP8_MIN_KBPS: u32 = 300;

/// How big the VP8 fallback is, beside the main stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vp8Size {
    /// The main stream's size.
    Full,
    /// The main stream scaled down, keeping its shape, to fit in this box.
    Within(u32, u32),
}

/// The VP8 encoder, tuned for live video on a small CPU: realtime deadline and the fastest
/// speed, one thread (two spun a second core for nothing in our measurements), constant
/// bitrate with a short buffer, no frame lag, and partitions that survive a lost packet.
const VP8_ENCODER: &str = "vp8enc name=vp8enc deadline=1 cpu-used=16 threads=1 end-usage=cbr \
                           lag-in-frames=0 buffer-size=1000 buffer-initial-size=500 \
                           buffer-optimal-size=600 error-resilient=partitions";

/// What every gated branch starts with: the valve, then a one-frame leaky queue (a slow
/// encoder drops frames rather than hold up the tee).
fn gate(name: &str) -> String {
    format!(
        " raw. ! valve name={name}gate drop=true \
         ! queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 leaky=downstream "
    )
}

/// The sink every gated branch ends in. `async=false`: a sink that never prerolls (its valve
/// is shut) would otherwise hold the whole pipeline in PAUSED, and the main stream with it
/// (measured: two frames, then nothing).
fn sink(name: &str) -> String {
    format!("! appsink name={name}units sync=false async=false max-buffers=4 drop=true")
}

impl VideoPlan {
    /// Whether this plan encodes raw frames (and so can have branches and a ladder): not when
    /// the camera's own H.264 passes through.
    pub(crate) fn encodes(&self) -> bool {
        self.format != CaptureFormat::H264 && self.encoder.is_some()
    }

    /// The main stream's size scaled down, keeping its shape, to fit in `box_w`×`box_h` (never
    /// up); even sides, as I420 needs.
    fn fit_within(&self, box_w: u32, box_h: u32) -> (u32, u32) {
        let (width, height) = (f64::from(self.width), f64::from(self.height));
        let scale = (f64::from(box_w) / width)
            .min(f64::from(box_h) / height)
            .min(1.0);
        let even = |side: f64| ((side.round() as u32) & !1).max(2);
        (even(width * scale), even(height * scale))
    }

    /// A branch's share of the main stream's bitrate, by frame area (a quarter of the pixels
    /// get a quarter of the bits), but never below `floor` unless the main stream has less.
    fn scaled_kbps(&self, (w, h): (u32, u32), floor: u32) -> u32 {
        let area = f64::from(w * h) / f64::from((self.width * self.height).max(1));
        ((f64::from(self.bitrate_kbps) * area.min(1.0)) as u32).max(floor.min(self.bitrate_kbps))
    }

    /// The scaler into `size`, or nothing when it is the main stream's.
    fn scale_to(&self, (width, height): (u32, u32)) -> String {
        if (width, height) == (self.width, self.height) {
            String::new()
        } else {
            format!("! videoscale ! video/x-raw,width={width},height={height} ")
        }
    }

    /// The VP8 fallback's frame size, when this plan has one. Worked out from the size in
    /// force, so `video.set` resizes it too.
    pub fn vp8_size(&self) -> Option<(u32, u32)> {
        Some(match self.vp8.filter(|_| self.encodes())? {
            Vp8Size::Full => (self.width, self.height),
            Vp8Size::Within(box_w, box_h) => self.fit_within(box_w, box_h),
        })
    }

    /// The fallback's bitrate: the main stream's scaled by area, at least what VP8 needs for a
    /// watchable picture.
    pub fn vp8_bitrate_kbps(&self) -> u32 {
        self.vp8_size()
            .map_or(0, |size| self.scaled_kbps(size, VP8_MIN_KBPS))
    }

    /// The low H.264 stream's frame size, when this plan has one: only when it is smaller
    /// than the main stream (a low stream as big as the main one would help nobody).
    pub fn low_size(&self) -> Option<(u32, u32)> {
        let (box_w, box_h) = self.low.filter(|_| self.encodes())?;
        let size = self.fit_within(box_w, box_h);
        (size.0 < self.width).then_some(size)
    }

    /// The low stream's ceiling: the main stream's bitrate, not a share by area. Adaptation
    /// keeps it at what its viewers' paths carry, and a viewer earns its way back to the full
    /// stream only by showing its path carries most of the full rate; a path estimate can only
    /// climb on what actually arrives (at most 2× that), so the low stream must be allowed to
    /// send that much. Measured: with an area-scaled ceiling (500 kbit/s for 2 Mbit/s) a viewer
    /// whose link widened stayed on the low stream for good.
    pub fn low_bitrate_kbps(&self) -> u32 {
        self.low_size().map_or(0, |_| self.bitrate_kbps)
    }

    /// The tee's VP8 branch, when this plan has one.
    pub(super) fn vp8_branch(&self) -> Option<String> {
        let size = self.vp8_size()?;
        Some(format!(
            "{gate}{scale}! {VP8_ENCODER} target-bitrate={bps} {gop} {sink}",
            gate = gate("vp8"),
            scale = self.scale_to(size),
            bps = self
                .vp8_bitrate_kbps()
                .saturating_mul(1000)
                .min(i32::MAX as u32),
            // 0: keyframes only when forced (libvpx's own placement disabled).
            gop = match self.keyframe_interval {
                0 => "keyframe-mode=disabled".to_owned(),
                n => format!("keyframe-max-dist={n}"),
            },
            sink = sink("vp8"),
        ))
    }

    /// The tee's low H.264 branch, when this plan has one: the main stream's encoder kind (a
    /// Pi's hardware encoder takes a second stream), named `lowenc`, with the same parser and
    /// caps as the main stream so both go out the same way.
    pub(super) fn low_branch(&self) -> Option<String> {
        let size = self.low_size()?;
        let enc = self.encoder?;
        let encoder = enc
            .launch_fragment(self.low_bitrate_kbps(), self.keyframe_interval)
            .replacen(enc.element, &format!("{} name=lowenc", enc.element), 1);
        Some(format!(
            "{gate}{scale}! {encoder} ! h264parse config-interval=-1 \
             ! video/x-h264,stream-format=byte-stream,alignment=au {sink}",
            gate = gate("low"),
            scale = self.scale_to(size),
            sink = sink("low"),
        ))
    }
}

/// A running pipeline's gated branch.
pub(super) struct Branch {
    gate: gst::Element,
    encoder: gst::Element,
    pub(super) appsink: gst_app::AppSink,
}

impl Branch {
    /// The branch named `name` (`vp8`, `low`) in `pipeline`, if the plan gave it one.
    pub(super) fn find(pipeline: &gst::Pipeline, name: &str) -> anyhow::Result<Option<Self>> {
        let Some(sink) = pipeline.by_name(&format!("{name}units")) else {
            return Ok(None);
        };
        Ok(Some(Self {
            gate: pipeline
                .by_name(&format!("{name}gate"))
                .with_context(|| format!("no {name} valve"))?,
            encoder: pipeline
                .by_name(&format!("{name}enc"))
                .with_context(|| format!("no {name} encoder"))?,
            appsink: sink
                .downcast::<gst_app::AppSink>()
                .map_err(|_| anyhow!("{name}units is not an appsink"))?,
        }))
    }

    /// Opens or shuts the valve. On opening, the valve passes the stream's caps again before
    /// the first frame.
    pub(super) fn set_flowing(&self, flowing: bool) {
        self.gate.set_property("drop", !flowing);
    }

    pub(super) fn set_bitrate(&self, kbps: u32) -> anyhow::Result<()> {
        set_encoder_bitrate(&self.encoder, kbps)
    }
}

/// Changes a running encoder's target bitrate, in whatever unit and property its kind uses.
pub(super) fn set_encoder_bitrate(enc: &gst::Element, kbps: u32) -> anyhow::Result<()> {
    let factory = enc
        .factory()
        .map(|f| f.name().to_string())
        .unwrap_or_default();
    let bps = kbps.saturating_mul(1000);
    match factory.as_str() {
        "x264enc" | "vah264enc" | "vaapih264enc" | "nvh264enc" => enc.set_property("bitrate", kbps),
        "openh264enc" => enc.set_property("bitrate", bps),
        "mpph264enc" => enc.set_property("bps", bps),
        "vp8enc" => enc.set_property("target-bitrate", i32::try_from(bps).unwrap_or(i32::MAX)),
        "v4l2h264enc" => enc.set_property(
            "extra-controls",
            gst::Structure::builder("controls")
                .field("video_bitrate", i32::try_from(bps).unwrap_or(i32::MAX))
                .build(),
        ),
        other => anyhow::bail!("changing the bitrate of {other} is not supported"),
    }
    Ok(())
}
