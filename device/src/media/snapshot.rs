//! Snapshots: the latest raw frame, JPEG-encoded on demand (no encoding cost when nobody asks).

use anyhow::{Context, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// A JPEG image.
#[derive(Debug, Clone)]
pub struct Jpeg {
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Turns a raw frame into a JPEG. Blocking: the engine calls it on a blocking thread.
pub trait JpegEncoder: Send + Sync {
    fn encode(&self, frame: &gst::Sample) -> anyhow::Result<Jpeg>;
}

/// GStreamer's `jpegenc`, quality 85.
pub struct GstJpeg;

impl JpegEncoder for GstJpeg {
    fn encode(&self, frame: &gst::Sample) -> anyhow::Result<Jpeg> {
        encode(frame)
    }
}

/// Encodes one raw video sample as JPEG (quality 85).
fn encode(sample: &gst::Sample) -> anyhow::Result<Jpeg> {
    let caps = sample.caps().context("frame without caps")?.to_owned();
    let structure = caps.structure(0).context("empty caps")?;
    let width = structure
        .get::<i32>("width")
        .context("caps without width")? as u32;
    let height = structure
        .get::<i32>("height")
        .context("caps without height")? as u32;
    let buffer = sample.buffer().context("frame without buffer")?.to_owned();

    let pipeline = gst::parse::launch(
        "appsrc name=src format=time ! videoconvert ! jpegenc quality=85 ! appsink name=jpeg sync=false",
    )?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow!("not a pipeline"))?;
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .context("appsrc")?;
    let sink = pipeline
        .by_name("jpeg")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("appsink")?;
    src.set_caps(Some(&caps));
    pipeline.set_state(gst::State::Playing)?;
    let result = (|| {
        src.push_buffer(buffer)
            .map_err(|e| anyhow!("pushing the frame: {e:?}"))?;
        src.end_of_stream()
            .map_err(|e| anyhow!("ending the stream: {e:?}"))?;
        let jpeg = sink
            .try_pull_sample(gst::ClockTime::from_seconds(5))
            .context("the JPEG encoder produced nothing")?;
        let map = jpeg.buffer().context("empty JPEG")?.map_readable()?;
        Ok(Jpeg {
            data: map.as_slice().to_vec(),
            width,
            height,
        })
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}
