//! One recorded segment being written: the shared encoder's H.264 access units (and the
//! microphone's Opus packets) muxed into a fragmented MP4 file by GStreamer's `mp4mux`.
//!
//! Fragmented, because a file that is cut off (power lost, `kill -9`) must still play: an
//! ordinary MP4 keeps its index (`moov`) at the end, written last, so a cut file has none and
//! plays not at all. Here the header comes first and every half second of media is a
//! self-contained fragment (`moof` + `mdat`), so a cut file plays up to its last complete
//! fragment.
//!
//! Nothing here re-encodes: the access units are the very ones viewers get.
//!
//! Pushing is non-blocking (the app sources queue, bounded); [`SegmentWriter::open`] and
//! [`SegmentWriter::finish`] wait on GStreamer and must run on a blocking thread.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::media::{AccessUnit, AudioUnit};

/// Media in one fragment: about what a cut file loses (plus what the OS had not yet written to
/// disk, see `fsync` in the recorder). Half a second rather than a second: with one-second
/// fragments a cut two seconds into a segment once kept 0.8 s of video and no sound.
pub const FRAGMENT: Duration = Duration::from_millis(500);

/// Most bytes waiting in either app source: a muxer that stops taking data (a full disk) makes
/// the writer drop the oldest rather than grow.
const MAX_QUEUED_BYTES: u64 = 16 * 1024 * 1024;

/// How long the muxer may take to write out what it holds when the segment ends.
const FINISH_LIMIT: Duration = Duration::from_secs(5);

/// An open segment.
pub struct SegmentWriter {
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    audio: Option<gst_app::AppSrc>,
    /// Pipeline time zero: the first keyframe's encode time.
    base: Instant,
    path: PathBuf,
    /// Media time of the last video frame's end.
    video_end: Duration,
}

impl SegmentWriter {
    /// Opens `path` (created or truncated) for a segment whose first frame was encoded at
    /// `base`, with a sound track when `audio`. Blocking.
    pub fn open(path: &Path, base: Instant, audio: bool) -> anyhow::Result<Self> {
        let location = path
            .to_str()
            .context("the recordings directory's path is not UTF-8")?
            .replace('"', "\\\"");
        let audio_branch = if audio {
            " appsrc name=audio format=time is-live=false \
               caps=audio/x-opus,channel-mapping-family=0,channels=2,rate=48000 \
             ! opusparse ! queue ! mux."
        } else {
            ""
        };
        let description = format!(
            "appsrc name=video format=time is-live=false \
               caps=video/x-h264,stream-format=byte-stream,alignment=au \
             ! h264parse ! queue ! mp4mux name=mux fragment-duration={fragment} streamable=true \
             ! filesink location=\"{location}\"{audio_branch}",
            fragment = FRAGMENT.as_millis(),
        );
        let pipeline = gst::parse::launch(&description)?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("not a pipeline"))?;
        let source = |name: &str| -> anyhow::Result<gst_app::AppSrc> {
            let src = pipeline
                .by_name(name)
                .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
                .with_context(|| format!("no {name} source"))?;
            src.set_max_bytes(MAX_QUEUED_BYTES);
            src.set_property_from_str("leaky-type", "downstream");
            Ok(src)
        };
        let video = source("video")?;
        let audio = if audio { Some(source("audio")?) } else { None };
        let writer = Self {
            pipeline,
            video,
            audio,
            base,
            path: path.to_owned(),
            video_end: Duration::ZERO,
        };
        writer
            .pipeline
            .set_state(gst::State::Playing)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(writer)
    }

    /// Whether this segment has a sound track.
    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one video frame. Frames from before the segment's start are skipped.
    pub fn push_video(&mut self, unit: &AccessUnit) -> anyhow::Result<()> {
        let Some(pts) = unit.encoded_at.checked_duration_since(self.base) else {
            return Ok(());
        };
        // Timestamps must not go backwards; the engine's clock is monotonic, but a frame that
        // came out of the encoder late must still follow the one before it.
        let pts = pts.max(self.video_end.saturating_sub(unit.duration));
        let mut buffer = gst::Buffer::from_slice(unit.data.clone());
        {
            let buffer = buffer.get_mut().expect("a new buffer");
            buffer.set_pts(clock_time(pts));
            buffer.set_dts(clock_time(pts));
            buffer.set_duration(clock_time(unit.duration));
            if !unit.keyframe {
                buffer.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        self.video_end = pts + unit.duration;
        self.video
            .push_buffer(buffer)
            .map_err(|e| anyhow!("the muxer refused a frame: {e:?}"))?;
        Ok(())
    }

    /// Appends one Opus packet (dropped when this segment has no sound track or the packet is
    /// older than the segment).
    pub fn push_audio(&mut self, unit: &AudioUnit) -> anyhow::Result<()> {
        let Some(src) = &self.audio else {
            return Ok(());
        };
        let Some(pts) = unit.encoded_at.checked_duration_since(self.base) else {
            return Ok(());
        };
        let mut buffer = gst::Buffer::from_slice(unit.data.clone());
        {
            let buffer = buffer.get_mut().expect("a new buffer");
            buffer.set_pts(clock_time(pts));
            buffer.set_duration(clock_time(unit.duration));
        }
        src.push_buffer(buffer)
            .map_err(|e| anyhow!("the muxer refused a sound packet: {e:?}"))?;
        Ok(())
    }

    /// An error the pipeline reported since the last call (a full disk, say), if any.
    pub fn failure(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        while let Some(message) = bus.pop() {
            if let gst::MessageView::Error(error) = message.view() {
                return Some(error.error().to_string());
            }
        }
        None
    }

    /// Ends the segment: the muxer writes out its last fragment, the file is flushed to disk.
    /// Blocking. On error the file keeps what was written.
    pub fn finish(self) -> anyhow::Result<Duration> {
        let _ = self.video.end_of_stream();
        if let Some(audio) = &self.audio {
            let _ = audio.end_of_stream();
        }
        let bus = self.pipeline.bus().context("a pipeline without a bus")?;
        let outcome = match bus.timed_pop_filtered(
            clock_time(FINISH_LIMIT),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) {
            Some(message) => match message.view() {
                gst::MessageView::Error(error) => Err(anyhow!("{}", error.error())),
                _ => Ok(()),
            },
            None => Err(anyhow!(
                "the muxer did not finish within {} s",
                FINISH_LIMIT.as_secs()
            )),
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        sync_file(&self.path);
        outcome.map(|()| self.video_end)
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Flushes a file's written data to the disk, so a power cut keeps it. Blocking; failures are
/// only logged (the data is in the page cache and will reach the disk anyway, later).
pub fn sync_file(path: &Path) {
    let synced = std::fs::File::open(path).and_then(|f| f.sync_data());
    if let Err(e) = synced {
        tracing::debug!(path = %path.display(), error = %e, "fsync failed");
    }
}

fn clock_time(d: Duration) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(d.as_nanos() as u64)
}
