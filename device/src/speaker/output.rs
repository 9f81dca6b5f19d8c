//! Where the speaker's sound goes (`--speaker`), and the part of its pipeline that does not
//! change while talkers come and go: a silent live source, the mixer, the volume, the sink.
//!
//! The silent source is there so the mixer always has one live input: it keeps the output
//! running at a steady pace between talkers (an ALSA device that is fed in bursts clicks and
//! underruns) and gives every talker's sound a clock to be mixed against.

use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;

/// The mixed sound's format: what every talker is converted to before the mixer. Mono is
/// what a voice is, and 48 kHz is Opus's own rate (no resampling on the way in).
pub const OUTPUT_RATE: u32 = 48_000;
pub const OUTPUT_CAPS: &str = "audio/x-raw,format=S16LE,rate=48000,channels=1,layout=interleaved";

/// How long the mixer waits for a talker's sound beyond what its inputs report (the jitter
/// buffer's [`super::JITTER_BUFFER`] among them): a margin for decoding. Sound later than
/// that misses its turn in the mix.
pub const MIXER_LATENCY: Duration = Duration::from_millis(10);

/// The silent source's buffers: 10 ms, the pace the mixer produces output at.
const SILENCE_SAMPLES: u32 = OUTPUT_RATE / 100;

/// Where the speaker plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpeakerSink {
    /// An ALSA playback device (`default`, `hw:1,0`, `plughw:CARD=Speaker`).
    Alsa(String),
    /// Raw samples appended to a file (signed 16-bit little-endian, 48 kHz, mono), written at
    /// the pace a speaker would play them: for tests, and for keeping what was said.
    File(PathBuf),
    /// A GStreamer description that takes the mixed sound (`pulsesink`, `fakesink`, …).
    Pipeline(String),
}

impl SpeakerSink {
    /// Parses `--speaker`: `off`, `auto`, `alsa:<device>`, `file:<path>` or
    /// `pipeline:<description>`. `auto` is the default ALSA playback device when the board has
    /// one, else off.
    pub fn resolve(setting: &str) -> anyhow::Result<Option<Self>> {
        let (kind, rest) = setting.split_once(':').unwrap_or((setting, ""));
        Ok(match (kind, rest) {
            ("off" | "none" | "false", "") => None,
            ("auto", "") => crate::media::has_alsa_pcm('p').then(|| Self::Alsa("default".into())),
            ("alsa", device) if !device.is_empty() => Some(Self::Alsa(device.to_owned())),
            ("file", path) if !path.is_empty() => Some(Self::File(PathBuf::from(path))),
            ("pipeline", description) if !description.trim().is_empty() => {
                Some(Self::Pipeline(description.to_owned()))
            }
            _ => anyhow::bail!(
                "unknown speaker setting {setting:?}: use auto, off, alsa:<device>, file:<path> \
                 or pipeline:<gstreamer description>"
            ),
        })
    }

    /// What kind of sink this is (`alsa`, `file`, `pipeline`): all that `status` tells viewers.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Alsa(_) => "alsa",
            Self::File(_) => "file",
            Self::Pipeline(_) => "pipeline",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Alsa(device) => format!("alsa:{device}"),
            Self::File(path) => format!("file:{}", path.display()),
            Self::Pipeline(description) => format!("pipeline:{description}"),
        }
    }

    /// The sink element (or bin) for this destination.
    fn element(&self) -> anyhow::Result<gst::Element> {
        Ok(match self {
            Self::Alsa(device) => gst::ElementFactory::make("alsasink")
                .property("device", device)
                // A 40 ms ring of 10 ms periods: ALSA's default 200 ms would be most of the
                // mouth-to-speaker budget.
                .property("buffer-time", 40_000i64)
                .property("latency-time", 10_000i64)
                .build()?,
            Self::File(path) => gst::ElementFactory::make("filesink")
                .property("location", path.to_string_lossy().as_ref())
                // The speaker stops between talkers; what was said before stays.
                .property("append", true)
                // Each 10 ms reaches the file as it plays, not in 64 KiB batches.
                .property_from_str("buffer-mode", "unbuffered")
                // Written when a speaker would play it: at its time on the pipeline clock plus
                // the pipeline's latency, as an audio sink does.
                .property("sync", true)
                .build()?,
            Self::Pipeline(description) => gst::parse::bin_from_description(description, true)
                .with_context(|| format!("speaker pipeline {description:?}"))?
                .upcast(),
        })
    }
}

/// The fixed part of a running speaker pipeline.
pub struct Output {
    pub pipeline: gst::Pipeline,
    /// The last element, where sound leaves.
    pub sink: gst::Element,
    /// Talkers' branches join here, one request pad each.
    pub mixer: gst::Element,
    /// The speaker's loudness and mute.
    pub volume: gst::Element,
    /// For a file sink, once sound has reached it: (Unix µs when the first sample played,
    /// the file's length before it). See [`log_timing`].
    pub timing: Arc<OnceLock<(i64, u64)>>,
}

impl Output {
    /// Builds `silence → mixer → volume → convert → sink`, not yet playing.
    pub fn build(sink: &SpeakerSink) -> anyhow::Result<Self> {
        gst::init()?;
        let pipeline = gst::Pipeline::with_name("speaker");
        let silence = gst::ElementFactory::make("audiotestsrc")
            .property_from_str("wave", "silence")
            .property("is-live", true)
            .property("samplesperbuffer", SILENCE_SAMPLES as i32)
            .build()?;
        let caps = gst::Caps::from_str(OUTPUT_CAPS).context("output caps")?;
        let silence_caps = gst::ElementFactory::make("capsfilter")
            .property("caps", &caps)
            .build()?;
        let mixer = gst::ElementFactory::make("audiomixer")
            .name("mix")
            .property("latency", MIXER_LATENCY.as_nanos() as u64)
            .build()?;
        let volume = gst::ElementFactory::make("volume").build()?;
        let convert = gst::ElementFactory::make("audioconvert").build()?;
        let resample = gst::ElementFactory::make("audioresample").build()?;
        let tail: Vec<gst::Element> = match sink {
            // The file's format is fixed; a device or pipeline takes what it can.
            SpeakerSink::File(_) => vec![
                gst::ElementFactory::make("capsfilter")
                    .property("caps", &caps)
                    .build()?,
            ],
            _ => Vec::new(),
        };
        let sink_element = sink.element()?;
        let mut chain = vec![
            silence,
            silence_caps,
            mixer.clone(),
            volume.clone(),
            convert,
            resample,
        ];
        chain.extend(tail);
        chain.push(sink_element.clone());
        pipeline.add_many(&chain)?;
        gst::Element::link_many(&chain).map_err(|e| anyhow!("linking the speaker: {e}"))?;
        Ok(Self {
            pipeline,
            sink: sink_element,
            mixer,
            volume,
            timing: Arc::default(),
        })
    }
}

/// For a file sink: logs when one sample written to the file plays, on the wall clock (Unix
/// µs), and where in the file it is; each later sample plays 1/48,000 s after the one before.
/// What `tests/` use to measure mouth-to-speaker latency against the browser's clock. The sink
/// writes a buffer at its running time plus the pipeline's latency (as an audio sink plays it),
/// so that is what is computed.
///
/// The sample is the first of the buffer that starts [`TIMING_ANCHOR`] into the run, not the
/// run's very first: the first talker joins a pipeline already playing, and until its latency
/// is worked out again (see `speaker.rs`) the first few buffers play early, so the file's
/// first samples do not keep 1/48,000 s to the sample with the rest (measured: up to 30 ms).
pub fn log_timing(output: &Output) {
    let Some(pad) = output.sink.static_pad("sink") else {
        return;
    };
    let Some(start) = output
        .sink
        .find_property("location")
        .and_then(|_| output.sink.property::<Option<String>>("location"))
        .map(|path| std::fs::metadata(path).map_or(0, |meta| meta.len()))
    else {
        return;
    };
    let timing = Arc::clone(&output.timing);
    let pipeline = output.pipeline.downgrade();
    // Bytes that reached the sink so far (the probe runs on the streaming thread, in order).
    let written = std::sync::atomic::AtomicU64::new(0);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(buffer) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        let offset =
            start + written.fetch_add(buffer.size() as u64, std::sync::atomic::Ordering::Relaxed);
        let (Some(pts), Some(segment)) = (buffer.pts(), pad.sticky_event::<gst::event::Segment>(0))
        else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(running) = segment
            .segment()
            .downcast_ref::<gst::ClockTime>()
            .and_then(|s| s.to_running_time(pts))
        else {
            return gst::PadProbeReturn::Remove;
        };
        if running < gst::ClockTime::from_nseconds(TIMING_ANCHOR.as_nanos() as u64) {
            return gst::PadProbeReturn::Ok;
        }
        let (pipeline, timing) = (pipeline.clone(), Arc::clone(&timing));
        std::thread::spawn(move || log_anchor(pipeline, timing, running, offset));
        gst::PadProbeReturn::Remove
    });
}

/// How far into a run the timing is anchored (see [`log_timing`]).
const TIMING_ANCHOR: std::time::Duration = std::time::Duration::from_millis(300);

/// Works out when the sample at `offset` (running time `running`) plays, once the pipeline's
/// latency has settled, and logs it.
fn log_anchor(
    pipeline: gst::glib::WeakRef<gst::Pipeline>,
    timing: Arc<OnceLock<(i64, u64)>>,
    running: gst::ClockTime,
    offset: u64,
) {
    std::thread::sleep(std::time::Duration::from_millis(100));
    let Some(pipeline) = pipeline.upgrade() else {
        return;
    };
    let (Some(clock), Some(base)) = (pipeline.clock(), pipeline.base_time()) else {
        return;
    };
    let mut query = gst::query::Latency::new();
    let latency = if pipeline.query(&mut query) {
        query.result().1
    } else {
        gst::ClockTime::ZERO
    };
    let plays_at = (base + running + latency).nseconds() as i128;
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i128);
    let first_us = (now_us + (plays_at - clock.time().nseconds() as i128) / 1000) as i64;
    tracing::info!(
        first_sample_unix_us = first_us,
        file_offset_bytes = offset,
        latency_ms = latency.mseconds(),
        "speaker timing"
    );
    let _ = timing.set((first_us, offset));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_resolve() {
        assert_eq!(SpeakerSink::resolve("off").unwrap(), None);
        assert_eq!(
            SpeakerSink::resolve("alsa:hw:1,0").unwrap(),
            Some(SpeakerSink::Alsa("hw:1,0".into()))
        );
        assert_eq!(
            SpeakerSink::resolve("file:/tmp/out.pcm").unwrap(),
            Some(SpeakerSink::File("/tmp/out.pcm".into()))
        );
        assert_eq!(
            SpeakerSink::resolve("pipeline:fakesink sync=true").unwrap(),
            Some(SpeakerSink::Pipeline("fakesink sync=true".into()))
        );
        for bad in ["alsa:", "file:", "pipeline: ", "loud", "off:x"] {
            assert!(SpeakerSink::resolve(bad).is_err(), "{bad}");
        }
    }
}
