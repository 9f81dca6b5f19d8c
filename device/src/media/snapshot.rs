//! Still images: a raw frame to JPEG (one encoder pipeline kept and reused), and a camera's own
//! H.264 keyframe to a raw frame (for passthrough cameras, which have no raw frames).
//!
//! Both block (GStreamer pushes and pulls), so the engine runs them on a blocking thread.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// How long one encode or decode may take before it counts as stuck.
const STEP_LIMIT: Duration = Duration::from_secs(3);
/// Snapshot widths a request may ask for.
pub const WIDTHS: std::ops::RangeInclusive<u32> = 16..=3840;

/// A JPEG image.
#[derive(Debug, Clone)]
pub struct Jpeg {
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// When the frame in it was taken (close enough: when it was encoded).
    pub taken_at: SystemTime,
}

/// Turns a raw frame into a JPEG, scaled down to `width` (keeping the aspect ratio) if given.
/// Blocking: the engine calls it on a blocking thread.
pub trait JpegEncoder: Send + Sync {
    fn encode(&self, frame: &gst::Sample, width: Option<u32>) -> anyhow::Result<Jpeg>;
}

/// GStreamer's `jpegenc` (quality 85) behind a `videoscale`, in one pipeline that stays up
/// between snapshots: building one per request costs more than the encode. It is rebuilt only
/// when the input format or the output size changes, or after a failure.
#[derive(Default)]
pub struct GstJpeg {
    pipeline: Mutex<Option<Reusable>>,
}

impl JpegEncoder for GstJpeg {
    fn encode(&self, frame: &gst::Sample, width: Option<u32>) -> anyhow::Result<Jpeg> {
        let caps = frame.caps().context("frame without caps")?.to_owned();
        let (in_width, in_height) = dimensions(&caps)?;
        let size = output_size(in_width, in_height, width);
        let mut buffer = frame.buffer_owned().context("frame without buffer")?;
        {
            // The capture pipeline's timestamps mean nothing here; the encoder needs none.
            let buffer = buffer.make_mut();
            buffer.set_pts(gst::ClockTime::NONE);
            buffer.set_dts(gst::ClockTime::NONE);
        }
        let mut slot = self.pipeline.lock().expect("jpeg encoder");
        if slot
            .as_ref()
            .is_none_or(|p| p.caps != caps || p.size != size)
        {
            *slot = Some(Reusable::build(caps, size)?);
        }
        let encoded = slot.as_ref().expect("just built").encode(buffer);
        if encoded.is_err() {
            *slot = None; // start clean next time
        }
        Ok(Jpeg {
            data: encoded?,
            width: size.0,
            height: size.1,
            taken_at: SystemTime::now(),
        })
    }
}

/// One running `appsrc ! videoscale ! videoconvert ! jpegenc ! appsink` pipeline.
struct Reusable {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    caps: gst::Caps,
    size: (u32, u32),
}

impl Reusable {
    fn build(caps: gst::Caps, (width, height): (u32, u32)) -> anyhow::Result<Self> {
        let pipeline = gst::parse::launch(&format!(
            "appsrc name=src format=time ! videoscale ! video/x-raw,width={width},height={height} \
             ! videoconvert ! jpegenc quality=85 ! appsink name=jpeg sync=false"
        ))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
        let src = by_name::<gst_app::AppSrc>(&pipeline, "src")?;
        let sink = by_name::<gst_app::AppSink>(&pipeline, "jpeg")?;
        src.set_caps(Some(&caps));
        let reusable = Self {
            pipeline,
            src,
            sink,
            caps,
            size: (width, height),
        };
        // On failure `reusable` is dropped, which sets the pipeline back to NULL.
        reusable.pipeline.set_state(gst::State::Playing)?;
        Ok(reusable)
    }

    fn encode(&self, buffer: gst::Buffer) -> anyhow::Result<Vec<u8>> {
        self.src
            .push_buffer(buffer)
            .map_err(|e| anyhow!("pushing the frame: {e:?}"))?;
        let jpeg = self
            .sink
            .try_pull_sample(clock_time(STEP_LIMIT))
            .context("the JPEG encoder produced nothing")?;
        let map = jpeg.buffer().context("empty JPEG")?.map_readable()?;
        Ok(map.as_slice().to_vec())
    }
}

impl Drop for Reusable {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Decodes one H.264 keyframe (Annex B, SPS and PPS in front, as the engine's access units
/// carry them) into a raw frame, with the board's hardware decoder if it has one.
pub fn decode_keyframe(annex_b: &[u8]) -> anyhow::Result<gst::Sample> {
    let decoder = ["v4l2h264dec", "openh264dec", "avdec_h264"]
        .into_iter()
        .find(|name| gst::ElementFactory::find(name).is_some())
        .context("no H.264 decoder installed (v4l2h264dec, openh264dec or avdec_h264)")?;
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=video/x-h264,stream-format=byte-stream,alignment=au \
         ! h264parse ! {decoder} ! videoconvert ! video/x-raw,format=I420 \
         ! appsink name=raw sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow!("not a pipeline"))?;
    let src = by_name::<gst_app::AppSrc>(&pipeline, "src")?;
    let sink = by_name::<gst_app::AppSink>(&pipeline, "raw")?;
    let decoded = (|| {
        pipeline.set_state(gst::State::Playing)?;
        src.push_buffer(gst::Buffer::from_slice(annex_b.to_vec()))
            .map_err(|e| anyhow!("pushing the keyframe: {e:?}"))?;
        // End of stream makes decoders with a reorder delay give the frame up at once.
        src.end_of_stream()
            .map_err(|e| anyhow!("ending the stream: {e:?}"))?;
        sink.try_pull_sample(clock_time(STEP_LIMIT))
            .with_context(|| format!("{decoder} decoded nothing"))
    })();
    let _ = pipeline.set_state(gst::State::Null);
    decoded
}

/// The picture size an H.264 keyframe decodes to: what a recording was made at, which the
/// resolution ladder may have made smaller than the plan's. Blocking.
pub fn keyframe_size(annex_b: &[u8]) -> anyhow::Result<(u32, u32)> {
    let sample = decode_keyframe(annex_b)?;
    let caps = sample.caps().context("the decoded frame has no caps")?;
    let info = gstreamer_video::VideoInfo::from_caps(caps)?;
    Ok((info.width(), info.height()))
}

/// A JPEG of one H.264 keyframe, scaled down to `width` if given (recordings' thumbnails).
/// Blocking.
pub fn keyframe_jpeg(annex_b: &[u8], width: Option<u32>) -> anyhow::Result<Jpeg> {
    let raw = decode_keyframe(annex_b)?;
    GstJpeg::default().encode(&raw, width)
}

/// The size of a snapshot of a `width`×`height` frame asked to be `wanted` wide: never wider
/// than the frame, the height following the aspect ratio, both even (JPEG's 4:2:0 needs it).
pub fn output_size(width: u32, height: u32, wanted: Option<u32>) -> (u32, u32) {
    let even = |n: u32| (n & !1).max(2);
    match wanted {
        Some(w) if w < width => {
            let h = (u64::from(height) * u64::from(w) + u64::from(width) / 2) / u64::from(width);
            (even(w), even(h as u32))
        }
        _ => (width, height),
    }
}

fn dimensions(caps: &gst::Caps) -> anyhow::Result<(u32, u32)> {
    let structure = caps.structure(0).context("empty caps")?;
    let width = structure
        .get::<i32>("width")
        .context("caps without width")?;
    let height = structure
        .get::<i32>("height")
        .context("caps without height")?;
    Ok((width as u32, height as u32))
}

fn by_name<T: IsA<gst::Element>>(pipeline: &gst::Pipeline, name: &str) -> anyhow::Result<T> {
    pipeline
        .by_name(name)
        .and_then(|e| e.downcast::<T>().ok())
        .with_context(|| format!("no {name} in the pipeline"))
}

fn clock_time(d: Duration) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_keep_the_aspect_ratio_and_never_upscale() {
        assert_eq!(output_size(1280, 720, None), (1280, 720));
        assert_eq!(output_size(1280, 720, Some(640)), (640, 360));
        assert_eq!(output_size(1280, 720, Some(321)), (320, 180));
        assert_eq!(output_size(1280, 720, Some(4000)), (1280, 720));
        assert_eq!(output_size(640, 480, Some(16)), (16, 12));
        assert_eq!(output_size(1280, 720, Some(1)), (2, 2));
    }
}
