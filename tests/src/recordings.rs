//! Playing a device's recordings back with GStreamer, as a user's player would: every video
//! frame decoded (`avdec_h264`), every sound packet decoded (`opusdec`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;

/// What playing a file gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Played {
    /// Video frames decoded.
    pub frames: u64,
    /// From the first decoded frame's start to the last one's end.
    pub duration: Duration,
    /// Sound buffers decoded.
    pub sound_buffers: u64,
    pub width: u32,
    pub height: u32,
}

#[derive(Default)]
struct Tally {
    first: Option<u64>,
    end: u64,
    count: u64,
}

/// Decodes all of `path` (an MP4 file, fragmented or not) and counts what came out. Fails on any
/// error GStreamer reports (a damaged file, a decoder error).
pub fn play(path: &Path) -> anyhow::Result<Played> {
    gst::init()?;
    let pipeline = gst::Pipeline::new();
    let source = gst::ElementFactory::make("filesrc")
        .property("location", path.to_str().context("non-UTF-8 path")?)
        .build()?;
    let demux = gst::ElementFactory::make("qtdemux").build()?;
    pipeline.add_many([&source, &demux])?;
    source.link(&demux)?;
    let video = Arc::new(Mutex::new(Tally::default()));
    let sound = Arc::new(Mutex::new(Tally::default()));
    let size = Arc::new(Mutex::new((0u32, 0u32)));
    let (weak, tallies, size_seen) = (
        pipeline.downgrade(),
        (video.clone(), sound.clone()),
        size.clone(),
    );
    demux.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let name = pad.name();
        let (chain, tally) = if name.starts_with("video") {
            (
                "queue ! h264parse ! avdec_h264 ! fakesink sync=false async=false",
                &tallies.0,
            )
        } else if name.starts_with("audio") {
            (
                "queue ! opusparse ! opusdec ! fakesink sync=false async=false",
                &tallies.1,
            )
        } else {
            return;
        };
        let Ok(bin) = gst::parse::bin_from_description(chain, true) else {
            return;
        };
        let _ = pipeline.add(&bin);
        let _ = bin.sync_state_with_parent();
        if let Some(sink) = bin.static_pad("sink") {
            let _ = pad.link(&sink);
        }
        // Count what leaves the decoder: the ghost pad's peer sees raw frames at the sink.
        let sink_pad = bin
            .iterate_sinks()
            .into_iter()
            .flatten()
            .next()
            .and_then(|sink| sink.static_pad("sink"));
        let (tally, size) = (Arc::clone(tally), Arc::clone(&size_seen));
        let is_video = name.starts_with("video");
        if let Some(sink_pad) = sink_pad {
            sink_pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                if let Some(buffer) = info.buffer() {
                    let mut tally = tally.lock().unwrap();
                    let pts = buffer.pts().map_or(tally.end, |t| t.nseconds());
                    tally.first.get_or_insert(pts);
                    tally.end = tally
                        .end
                        .max(pts + buffer.duration().map_or(0, |d| d.nseconds()));
                    tally.count += 1;
                    if is_video
                        && tally.count == 1
                        && let Some(s) = pad
                            .current_caps()
                            .and_then(|c| c.structure(0).map(|s| s.to_owned()))
                    {
                        *size.lock().unwrap() = (
                            s.get::<i32>("width").unwrap_or(0) as u32,
                            s.get::<i32>("height").unwrap_or(0) as u32,
                        );
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
    });
    let outcome = run(&pipeline);
    let _ = pipeline.set_state(gst::State::Null);
    outcome?;
    let video = video.lock().unwrap();
    let sound = sound.lock().unwrap();
    let (width, height) = *size.lock().unwrap();
    Ok(Played {
        frames: video.count,
        duration: Duration::from_nanos(video.end - video.first.unwrap_or(video.end)),
        sound_buffers: sound.count,
        width,
        height,
    })
}

fn run(pipeline: &gst::Pipeline) -> anyhow::Result<()> {
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().context("no bus")?;
    let message = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(600),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .context("playing took more than 10 minutes")?;
    match message.view() {
        gst::MessageView::Error(e) => Err(anyhow!("{} ({:?})", e.error(), e.debug())),
        _ => Ok(()),
    }
}

/// The recordings in `dir`, oldest first: finished (`.mp4`) and open (`.mp4.part`) ones.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    name.starts_with("rec-")
                        && (name.ends_with(".mp4") || name.ends_with(".mp4.part"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}
