//! The device's speaker: what viewers say into their microphones, mixed and played.
//!
//! Each viewer allowed to talk becomes a [`Talker`] while its microphone track is connected:
//! a branch of the speaker's GStreamer pipeline that takes the viewer's RTP as it arrives,
//! puts it in order (a jitter buffer), decodes the Opus and joins the mixer.
//!
//! ```text
//! talker A: appsrc (RTP) → rtpjitterbuffer → rtpopusdepay → opusdec → convert ─┐
//! talker B: …                                                                  ├→ audiomixer → volume → sink
//! silence (live, 10 ms buffers) ───────────────────────────────────────────────┘
//! ```
//!
//! The pipeline runs only while someone talks to the device: it starts with the first talker
//! (a session joins with its first packet) and stops when the last one's session ends, so a
//! device nobody talks to spends nothing on it. Everything that changes
//! the pipeline happens under one lock on a blocking thread ([`Speaker::join`], dropping a
//! [`Talker`]); pushing a packet ([`Talker::play`]) never blocks, so sessions call it from
//! their async tasks.
//!
//! A viewer's sound is hostile input like any other: packets have a size limit, each talker's
//! queue is bounded and drops its oldest sound when full, the number of talkers is bounded,
//! and a decoder fed garbage loses that talker's sound, never the speaker.

mod output;
mod talker;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use ferrocam_protocol::SessionId;
use ferrocam_protocol::control::{SpeakerStatus, Talker as TalkerStatus};
use gstreamer as gst;
use gstreamer::prelude::*;

use output::Output;
pub use output::SpeakerSink;
pub use talker::Talker;

/// How late a talker's packet may be and still play: the jitter buffer's latency, which the
/// whole speaker pipeline then plays behind. Every millisecond here is a millisecond of
/// mouth-to-speaker delay (measured: the device adds this plus the mixer's margin plus about
/// 35 ms of decoding and 10 ms buffers); 30 ms covers a local network, and Opus conceals a
/// packet later than that rather than the speaker waiting for it.
pub const JITTER_BUFFER: Duration = Duration::from_millis(30);

/// Viewers whose microphones may be connected at once: a bound on the decoders a device runs.
pub const MAX_TALKERS: usize = 8;

/// A talker counts as talking while sound above [`talker::TALKING_LEVEL_DB`] arrived this
/// recently.
const TALKING_WINDOW: Duration = Duration::from_millis(500);

/// What the device's own microphone does while the speaker plays (`--half-duplex`): a board
/// with its speaker next to its microphone would otherwise send viewers their own voices back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfDuplex {
    /// Both at once (a headset, or a speaker far from the microphone).
    Off,
    /// The microphone drops to a tenth (−20 dB) while someone talks.
    Duck,
    /// The microphone is silent while someone talks.
    Mute,
}

impl HalfDuplex {
    pub fn parse(setting: &str) -> anyhow::Result<Self> {
        match setting {
            "off" => Ok(Self::Off),
            "duck" => Ok(Self::Duck),
            "mute" => Ok(Self::Mute),
            other => anyhow::bail!("unknown half-duplex setting {other:?}: use off, duck or mute"),
        }
    }

    /// The microphone's gain while someone talks.
    pub fn microphone_gain(self) -> f64 {
        match self {
            Self::Off => 1.0,
            Self::Duck => 0.1,
            Self::Mute => 0.0,
        }
    }
}

/// Told `true` when the speaker starts playing someone, `false` when it falls silent (for
/// half-duplex). Must not block.
pub type OnPlaying = Arc<dyn Fn(bool) + Send + Sync>;

/// The speaker, shared by every session.
pub struct Speaker {
    sink: SpeakerSink,
    half_duplex: HalfDuplex,
    /// The pipeline, while anyone talks. Held only by the blocking threads that add and remove
    /// talkers (pipeline state changes happen under it); never on a Tokio worker.
    pipeline: Mutex<Option<Running>>,
    /// The talkers, for status, metrics and level reports: held only for a moment.
    talkers: Mutex<Vec<Arc<Entry>>>,
    /// The running pipeline's `volume` element, for `audio.volume` and `audio.mute`.
    volume: Mutex<Option<gst::Element>>,
    volume_percent: AtomicU32,
    muted: AtomicBool,
    /// Whether someone is playing, as half-duplex was last told; the change and the telling
    /// happen under this lock, so two tellers cannot cross.
    playing: Mutex<bool>,
    on_playing: OnPlaying,
    epoch: Instant,
    next_id: AtomicU64,
    me: Weak<Speaker>,
}

/// A playing pipeline; dropping it stops it.
struct Running {
    output: Output,
    /// Tells the bus thread to finish (it is not waited for).
    stop_bus: Arc<AtomicBool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.output.pipeline.set_state(gst::State::Null);
        self.stop_bus.store(true, Ordering::Relaxed);
    }
}

/// One talker as the speaker keeps it.
struct Entry {
    id: u64,
    session: SessionId,
    user: String,
    /// When sound was last heard, in ms since [`Speaker::epoch`] plus one (0: never).
    heard: AtomicU64,
    branch: gst::Bin,
    mixer_pad: gst::Pad,
}

impl Entry {
    fn talking(&self, now_ms: u64) -> bool {
        match self.heard.load(Ordering::Relaxed) {
            0 => false,
            heard => now_ms.saturating_sub(heard - 1) < TALKING_WINDOW.as_millis() as u64,
        }
    }
}

impl Speaker {
    /// A speaker playing to `sink`; nothing runs until the first talker joins.
    pub fn new(sink: SpeakerSink, half_duplex: HalfDuplex, on_playing: OnPlaying) -> Arc<Self> {
        let speaker = Arc::new_cyclic(|me| Self {
            sink,
            half_duplex,
            pipeline: Mutex::new(None),
            talkers: Mutex::new(Vec::new()),
            volume: Mutex::new(None),
            volume_percent: AtomicU32::new(100),
            muted: AtomicBool::new(false),
            playing: Mutex::new(false),
            on_playing,
            epoch: Instant::now(),
            next_id: AtomicU64::new(1),
            me: me.clone(),
        });
        if half_duplex != HalfDuplex::Off {
            spawn_silence_watch(Arc::downgrade(&speaker));
        }
        speaker
    }

    /// Connects `session`'s microphone: from now on what [`Talker::play`] is given is mixed
    /// into the speaker. Starts the speaker for the first talker.
    pub async fn join(&self, session: SessionId, user: String) -> anyhow::Result<Talker> {
        let speaker = self.me.upgrade().context("the speaker is gone")?;
        tokio::task::spawn_blocking(move || speaker.add_talker(session, user))
            .await
            .map_err(|e| anyhow!("joining the speaker: {e}"))?
    }

    fn add_talker(self: Arc<Self>, session: SessionId, user: String) -> anyhow::Result<Talker> {
        let mut pipeline = self.pipeline.lock().expect("speaker lock");
        anyhow::ensure!(
            self.talkers.lock().expect("talkers lock").len() < MAX_TALKERS,
            "{MAX_TALKERS} viewers are connected to the speaker already"
        );
        if pipeline.is_none() {
            *pipeline = Some(self.start_output()?);
        }
        let output = &pipeline.as_ref().expect("just started").output;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let added = talker::branch(id).and_then(|(branch, appsrc)| {
            let mixer_pad = connect(output, &branch)?;
            Ok((branch, appsrc, mixer_pad))
        });
        let (branch, appsrc, mixer_pad) = match added {
            Ok(added) => added,
            Err(e) => {
                // Nobody else talking: a pipeline started for this talker stops again.
                if self.talkers.lock().expect("talkers lock").is_empty() {
                    self.stop_output(&mut pipeline);
                }
                return Err(e);
            }
        };
        let entry = Arc::new(Entry {
            id,
            session,
            user,
            heard: AtomicU64::new(0),
            branch,
            mixer_pad,
        });
        let mut talkers = self.talkers.lock().expect("talkers lock");
        talkers.push(Arc::clone(&entry));
        tracing::info!(session = %entry.session, user = %entry.user, talkers = talkers.len(), "talker connected to the speaker");
        drop((talkers, pipeline));
        Ok(Talker::new(appsrc, entry, self))
    }

    /// Builds and starts the fixed part of the pipeline.
    fn start_output(&self) -> anyhow::Result<Running> {
        let output = Output::build(&self.sink)?;
        self.apply_volume(&output.volume);
        let bus = output.pipeline.bus().context("pipeline without a bus")?;
        let stop_bus = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stop_bus);
        std::thread::Builder::new()
            .name("speaker-bus".into())
            .spawn({
                let speaker = self.me.clone();
                let pipeline = output.pipeline.downgrade();
                move || watch_bus(&bus, &stop, &speaker, &pipeline)
            })?;
        let running = Running { output, stop_bus };
        running
            .output
            .pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| anyhow!("the speaker ({}) cannot be opened", self.sink.describe()))?;
        *self.volume.lock().expect("volume lock") = Some(running.output.volume.clone());
        tracing::info!(sink = %self.sink.describe(), "speaker started");
        output::log_timing(&running.output);
        Ok(running)
    }

    fn stop_output(&self, pipeline: &mut Option<Running>) {
        *self.volume.lock().expect("volume lock") = None;
        if pipeline.take().is_some() {
            tracing::info!("speaker stopped: nobody talks");
        }
    }

    fn remove_talker(&self, id: u64) {
        let mut pipeline = self.pipeline.lock().expect("speaker lock");
        let (entry, nobody_left) = {
            let mut talkers = self.talkers.lock().expect("talkers lock");
            let Some(at) = talkers.iter().position(|t| t.id == id) else {
                return;
            };
            let entry = talkers.remove(at);
            (entry, talkers.is_empty())
        };
        if let Some(running) = pipeline.as_ref() {
            // The mixer's pad goes first: the branch's thread then stops pushing, and setting
            // the branch to NULL cannot wait on a mixer that holds its buffer.
            running.output.mixer.release_request_pad(&entry.mixer_pad);
            let _ = entry.branch.set_state(gst::State::Null);
            let _ = running.output.pipeline.remove(&entry.branch);
        }
        tracing::info!(session = %entry.session, user = %entry.user, "talker left the speaker");
        if nobody_left {
            self.stop_output(&mut pipeline);
        }
    }

    /// Sets the loudness, in percent of the talkers' own level.
    pub fn set_volume(&self, percent: u32) {
        self.volume_percent.store(percent, Ordering::Relaxed);
        self.apply_current_volume();
    }

    /// Silences the speaker, or lets it play again.
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
        self.apply_current_volume();
    }

    fn apply_current_volume(&self) {
        if let Some(volume) = self.volume.lock().expect("volume lock").as_ref() {
            self.apply_volume(volume);
        }
    }

    fn apply_volume(&self, volume: &gst::Element) {
        volume.set_property(
            "volume",
            f64::from(self.volume_percent.load(Ordering::Relaxed)) / 100.0,
        );
        volume.set_property("mute", self.muted.load(Ordering::Relaxed));
    }

    /// Whether the speaker makes any sound at all (not muted, not at volume 0).
    fn audible(&self) -> bool {
        !self.muted.load(Ordering::Relaxed) && self.volume_percent.load(Ordering::Relaxed) > 0
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Who is connected to the speaker and who is talking; `asking` is marked as `you`. The
    /// sink is named by its kind only (a file path or a pipeline may say more than viewers
    /// should know).
    pub fn status(&self, asking: Option<&SessionId>) -> SpeakerStatus {
        let talkers = self.talkers.lock().expect("talkers lock");
        let now = self.now_ms();
        SpeakerStatus {
            sink: self.sink.kind().to_owned(),
            volume_percent: self.volume_percent.load(Ordering::Relaxed),
            muted: self.muted.load(Ordering::Relaxed),
            half_duplex: self.half_duplex != HalfDuplex::Off,
            talkers: talkers
                .iter()
                .map(|t| TalkerStatus {
                    user: t.user.clone(),
                    talking: t.talking(now),
                    you: asking == Some(&t.session),
                })
                .collect(),
        }
    }

    /// (connected talkers, of them talking now): for metrics.
    pub fn counts(&self) -> (usize, usize) {
        let talkers = self.talkers.lock().expect("talkers lock");
        let now = self.now_ms();
        let talking = talkers.iter().filter(|t| t.talking(now)).count();
        (talkers.len(), talking)
    }

    /// A talker's sound was measured at `rms` dB: loud enough, and it is talking.
    fn measured(&self, id: u64, rms: f64) {
        if rms < talker::TALKING_LEVEL_DB {
            return;
        }
        if let Some(entry) = self
            .talkers
            .lock()
            .expect("talkers lock")
            .iter()
            .find(|t| t.id == id)
        {
            entry.heard.store(self.now_ms() + 1, Ordering::Relaxed);
        }
        // A muted speaker plays nothing the microphone could pick up.
        if self.half_duplex != HalfDuplex::Off && self.audible() {
            self.set_playing(true);
        }
    }

    /// Tells half-duplex that sound is playing, or no longer is.
    fn set_playing(&self, playing: bool) {
        let mut current = self.playing.lock().expect("playing lock");
        if *current != playing {
            *current = playing;
            tracing::debug!(playing, "speaker playing changed");
            (self.on_playing)(playing);
        }
    }
}

/// Adds a talker's `branch` to the running pipeline and links it to a new mixer pad, which it
/// returns; on failure the pipeline is as it was.
fn connect(output: &Output, branch: &gst::Bin) -> anyhow::Result<gst::Pad> {
    output.pipeline.add(branch)?;
    let linked = output
        .mixer
        .request_pad_simple("sink_%u")
        .context("the mixer has no pad for another talker")
        .and_then(|mixer_pad| {
            let src = branch
                .static_pad("src")
                .context("talker branch without output");
            let result = src.and_then(|src| {
                src.link(&mixer_pad).map_err(|e| anyhow!("{e:?}"))?;
                branch
                    .sync_state_with_parent()
                    .map_err(|e| anyhow!("starting the talker: {e}"))
            });
            if result.is_err() {
                output.mixer.release_request_pad(&mixer_pad);
            }
            result.map(|()| mixer_pad)
        });
    if linked.is_err() {
        let _ = branch.set_state(gst::State::Null);
        let _ = output.pipeline.remove(branch);
    } else if output.pipeline.recalculate_latency().is_err() {
        // A branch added to a running pipeline brings latency (its jitter buffer, its
        // decoder) that the sink does not know of until the pipeline's latency is worked out
        // again: without this the first talker was played up to 30 ms early, depending on
        // whether it joined before or after the pipeline had settled its latency.
        tracing::debug!("the speaker's latency could not be worked out again");
    }
    linked
}

/// Logs what the pipeline reports until it stops. A talker's decoder failing on garbage is
/// that talker's problem (its branch goes quiet); the speaker plays on. When an element's
/// latency changes (a talker's jitter buffer joining the pipeline after it started), the
/// pipeline's latency is worked out again, as an application must: without it the sink keeps
/// the latency of the moment it started and plays the talkers early, ahead of what their
/// jitter buffers and the timing log assume.
fn watch_bus(
    bus: &gst::Bus,
    stop: &AtomicBool,
    speaker: &Weak<Speaker>,
    pipeline: &gst::glib::WeakRef<gst::Pipeline>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(message) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match message.view() {
            gst::MessageView::Error(err) => {
                let source = message.src().map(|s| s.path_string().to_string());
                tracing::warn!(source, error = %err.error(), debug = ?err.debug(), "speaker error");
            }
            gst::MessageView::Warning(warning) => {
                tracing::debug!(error = %warning.error(), "speaker warning");
            }
            gst::MessageView::Latency(_) => {
                if let Some(pipeline) = pipeline.upgrade()
                    && pipeline.recalculate_latency().is_err()
                {
                    tracing::debug!("the speaker's latency could not be worked out again");
                }
            }
            gst::MessageView::Element(element) => {
                let rms = element.structure().and_then(talker::level_rms);
                let id = message
                    .src()
                    .and_then(|level| level.parent())
                    .and_then(|branch| talker::branch_id(&branch.name()));
                if let (Some(rms), Some(id), Some(speaker)) = (rms, id, speaker.upgrade()) {
                    speaker.measured(id, rms);
                }
            }
            _ => {}
        }
    }
}

/// For half-duplex: notices when the speaker has been silent a moment, so the microphone
/// comes back (it goes down as soon as a talker is heard, in [`Speaker::measured`]).
fn spawn_silence_watch(speaker: Weak<Speaker>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            let Some(speaker) = speaker.upgrade() else {
                return;
            };
            let playing = *speaker.playing.lock().expect("playing lock");
            if playing && (speaker.counts().1 == 0 || !speaker.audible()) {
                speaker.set_playing(false);
            }
        }
    });
}
