//! Reading a recorded file back: how much of it plays, how big its picture is, whether it has
//! sound. Used for segments cut off by a crash (their description was never written) and by
//! tests. Demuxes only (no decoding), so a minute of video takes milliseconds. Blocking.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// How long reading one file may take.
const LIMIT: Duration = Duration::from_secs(20);

/// What a recorded file holds, as a player would see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probed {
    /// From the first frame's start to the last frame's end.
    pub duration: Duration,
    pub frames: u64,
    pub keyframes: u64,
    pub width: u32,
    pub height: u32,
    pub audio: bool,
}

/// Reads every video frame of an MP4 file (without decoding it).
pub fn probe(path: &Path) -> anyhow::Result<Probed> {
    let pipeline = gst::Pipeline::new();
    let source = gst::ElementFactory::make("filesrc")
        .property(
            "location",
            path.to_str().context("a path that is not UTF-8")?,
        )
        .build()?;
    let demux = gst::ElementFactory::make("qtdemux").build()?;
    // qtdemux pushes every track from one thread, so each sink gets its own queue; and neither
    // waits to preroll, since a file without sound never feeds the sound sink at all.
    let sink = gst_app::AppSink::builder().sync(false).build();
    sink.set_property("async", false);
    let sound = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()?;
    let (video_queue, sound_queue) = (
        gst::ElementFactory::make("queue").build()?,
        gst::ElementFactory::make("queue").build()?,
    );
    pipeline.add_many([
        &source,
        &demux,
        &video_queue,
        sink.upcast_ref(),
        &sound_queue,
        &sound,
    ])?;
    source.link(&demux)?;
    video_queue.link(&sink)?;
    sound_queue.link(&sound)?;
    let audio = Arc::new(AtomicBool::new(false));
    let (video_pad, sound_pad) = (
        video_queue
            .static_pad("sink")
            .context("a queue without a pad")?,
        sound_queue
            .static_pad("sink")
            .context("a queue without a pad")?,
    );
    let heard = Arc::clone(&audio);
    demux.connect_pad_added(move |_, pad| {
        let name = pad.name();
        let target = if name.starts_with("video") {
            &video_pad
        } else if name.starts_with("audio") {
            heard.store(true, Ordering::Relaxed);
            &sound_pad
        } else {
            return;
        };
        if !target.is_linked() {
            let _ = pad.link(target);
        }
    });
    let result = read_frames(&pipeline, &sink, &audio);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn read_frames(
    pipeline: &gst::Pipeline,
    sink: &gst_app::AppSink,
    audio: &AtomicBool,
) -> anyhow::Result<Probed> {
    pipeline.set_state(gst::State::Playing)?;
    let deadline = std::time::Instant::now() + LIMIT;
    let mut probed = Probed {
        duration: Duration::ZERO,
        frames: 0,
        keyframes: 0,
        width: 0,
        height: 0,
        audio: false,
    };
    let (mut first, mut end) = (None::<gst::ClockTime>, gst::ClockTime::ZERO);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        anyhow::ensure!(!left.is_zero(), "reading took longer than {LIMIT:?}");
        let wait = left.min(Duration::from_millis(200));
        let Some(sample) =
            sink.try_pull_sample(gst::ClockTime::from_nseconds(wait.as_nanos() as u64))
        else {
            if sink.is_eos() {
                break;
            }
            if let Some(error) = pipeline
                .bus()
                .and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]))
                && let gst::MessageView::Error(e) = error.view()
            {
                return Err(anyhow!("{}", e.error()));
            }
            continue;
        };
        if probed.width == 0
            && let Some(s) = sample.caps().and_then(|c| c.structure(0))
        {
            probed.width = s.get::<i32>("width").unwrap_or(0) as u32;
            probed.height = s.get::<i32>("height").unwrap_or(0) as u32;
        }
        let buffer = sample.buffer().context("a sample without a buffer")?;
        let pts = buffer.pts().unwrap_or(end);
        first.get_or_insert(pts);
        end = end.max(pts + buffer.duration().unwrap_or(gst::ClockTime::ZERO));
        probed.frames += 1;
        if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
            probed.keyframes += 1;
        }
    }
    let first = first.context("no video frames")?;
    probed.duration = Duration::from_nanos((end - first).nseconds());
    probed.audio = audio.load(Ordering::Relaxed);
    Ok(probed)
}
