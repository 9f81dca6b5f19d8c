//! The player's H.264 decoder (a GStreamer pipeline fed RTP) and what it reads from decoded
//! frames: the count, the first frame's time, and glass-to-glass latencies from stamped frames
//! ([`ferrocam_protocol::stamp`]).
//!
//! Apart from the player because it is all GStreamer, and the only part that touches pixels.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use ferrocam_protocol::VideoCodec;

use super::payload_type;

/// What the decoder saw of stamped frames.
#[derive(Default)]
pub struct Stamps {
    pub(super) latencies: std::sync::Mutex<Vec<f64>>,
    pub(super) first_frame: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Stamps {
    fn record(&self, sample: &gst::Sample) {
        self.first_frame
            .lock()
            .expect("stamps lock")
            .get_or_insert_with(std::time::Instant::now);
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
            return;
        };
        let Ok(info) = gstreamer_video::VideoInfo::from_caps(caps) else {
            return;
        };
        let Ok(frame) = gstreamer_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        else {
            return;
        };
        let Ok(y) = frame.plane_data(0) else {
            return;
        };
        let stride = info.stride()[0] as usize;
        if let Some(captured) = ferrocam_protocol::stamp::read(y, stride, info.width() as usize) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(0.0);
            self.latencies
                .lock()
                .expect("stamps lock")
                .push(now - captured as f64);
        }
    }
}

/// RTP in, decoded frames counted: appsrc → depayloader → (parser →) software decoder, for
/// H.264 or VP8.
pub(super) fn decoder(
    codec: VideoCodec,
) -> anyhow::Result<(gst::Pipeline, gst_app::AppSrc, Arc<AtomicU64>, Arc<Stamps>)> {
    let (name, chain) = match codec {
        VideoCodec::H264 => {
            let decoder = ["avdec_h264", "openh264dec"]
                .into_iter()
                .find(|e| gst::ElementFactory::find(e).is_some())
                .context("no H.264 decoder: install gstreamer1.0-libav")?;
            ("H264", format!("rtph264depay ! h264parse ! {decoder}"))
        }
        VideoCodec::Vp8 => ("VP8", "rtpvp8depay ! vp8dec".to_owned()),
    };
    let payload = payload_type(codec);
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=rtp is-live=true format=time do-timestamp=true \
           caps=\"application/x-rtp,media=video,encoding-name={name},clock-rate=90000,payload={payload}\" \
         ! {chain} ! appsink name=frames sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let appsrc = pipeline
        .by_name("rtp")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .context("appsrc")?;
    let appsink = pipeline
        .by_name("frames")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("appsink")?;
    let decoded = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&decoded);
    let stamps = Arc::new(Stamps::default());
    let seen = Arc::clone(&stamps);
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                if let Ok(sample) = sink.pull_sample() {
                    seen.record(&sample);
                }
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing)?;
    Ok((pipeline, appsrc, decoded, stamps))
}
