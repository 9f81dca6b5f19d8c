//! Wires the glass-to-glass stamp (`ferrocam_protocol::stamp`: each frame's capture time
//! painted into the frame as a row of blocks) into a GStreamer pipeline. Used by the device's
//! capture pipeline and by the benchmark's `stamp-source`, which feeds the same stamped picture
//! to Janus, so both are measured with one meter.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ferrocam_protocol::stamp::paint;
use gstreamer as gst;
use gstreamer::prelude::*;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Wires the stamp into a pipeline: the capture time of each frame is taken where the source
/// produces it (keyed by its timestamp) and painted by the `stamp` element (an `identity` on
/// I420 frames) before the encoder, so conversion and scaling count as latency, as they should.
pub fn attach(pipeline: &gst::Pipeline, width: u32) -> anyhow::Result<()> {
    let captured: Arc<Mutex<VecDeque<(gst::ClockTime, u64)>>> = Arc::default();
    if let Some(source) = pipeline.iterate_sources().into_iter().flatten().next()
        && let Some(pad) = source.static_pad("src")
    {
        let captured = Arc::clone(&captured);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                let mut q = captured.lock().expect("stamp lock");
                q.push_back((pts, now_ms()));
                if q.len() > 64 {
                    q.pop_front();
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    let stamp = pipeline
        .by_name("stamp")
        .ok_or_else(|| anyhow::anyhow!("the pipeline has no stamp element"))?;
    let pad = stamp
        .static_pad("src")
        .ok_or_else(|| anyhow::anyhow!("stamp element without a src pad"))?;
    let width = width as usize;
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(buffer) = info.buffer_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        // The source's time for this frame, or now if it was not seen (a duplicated frame).
        let ms = buffer
            .pts()
            .and_then(|pts| {
                let q = captured.lock().expect("stamp lock");
                q.iter().rev().find(|(p, _)| *p == pts).map(|(_, ms)| *ms)
            })
            .unwrap_or_else(now_ms);
        let Some(caps) = pad.current_caps() else {
            return gst::PadProbeReturn::Ok;
        };
        let Ok(video) = gstreamer_video::VideoInfo::from_caps(&caps) else {
            return gst::PadProbeReturn::Ok;
        };
        if video.format() != gstreamer_video::VideoFormat::I420 {
            return gst::PadProbeReturn::Ok;
        }
        let buffer = buffer.make_mut();
        let Ok(mut frame) =
            gstreamer_video::VideoFrameRef::from_buffer_ref_writable(buffer, &video)
        else {
            return gst::PadProbeReturn::Ok;
        };
        let strides = [
            video.stride()[0] as usize,
            video.stride()[1] as usize,
            video.stride()[2] as usize,
        ];
        let [y, u, v, _] = frame.planes_data_mut();
        paint(y, strides[0], [(u, strides[1]), (v, strides[2])], width, ms);
        gst::PadProbeReturn::Ok
    });
    Ok(())
}
