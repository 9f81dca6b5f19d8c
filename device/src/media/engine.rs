//! The media engine: one capture + encode pipeline (and one audio pipeline) shared by every
//! viewer, started by the first viewer and stopped some time after the last one leaves.
//!
//! Viewers hold a [`ViewerLease`] while they exist (from offer to hang-up) and read access units
//! through a [`VideoFeed`]. Taking the lease at offer time lets the pipeline warm up while ICE
//! and DTLS run, so the first frame is not delayed by encoder start-up.
//!
//! The pipelines themselves live on the engine's own thread ([`actor`]): everything that can
//! block (building, rebuilding, stopping) happens there, never on a Tokio worker. This handle
//! talks to it with messages, and keeps what viewers need at once out of its way: a join
//! subscribes to the fan-out and asks the keyframe gate, and a forced keyframe goes straight
//! to the encoder, so neither waits for a snapshot, a rebuild or a stop.

mod actor;
mod feed;
mod rendition;
mod stills;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio::sync::{broadcast, oneshot, watch};

use self::actor::{Actor, Command};
use self::rendition::Rendition;
pub use super::audio::MicrophoneGain;
use super::audio::{AudioSource, AudioUnit};
use super::keyframes::{KeyframeReason, Verdict};
use super::pipeline::{VideoPlan, force_keyframe};
use super::rung::{Frame, Rung};
use super::snapshot::{GstJpeg, JpegEncoder};
use super::{Stream, VideoCodec};

pub use feed::VideoFeed;
pub use stills::{SnapshotError, SnapshotRequest};

/// Opus packets (20 ms each) a viewer may fall behind.
const AUDIO_FANOUT: usize = 50;

/// How the engine behaves.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub video: VideoPlan,
    pub audio: Option<AudioSource>,
    /// How long the pipeline keeps running after the last viewer leaves.
    pub idle_timeout: Duration,
    /// Minimum gap between keyframes forced by viewer feedback (PLI/FIR).
    pub keyframe_min_interval: Duration,
    /// Frames a snapshot skips after starting an idle camera (auto exposure settling).
    pub snapshot_settle_frames: u32,
}

/// What both the handle and the engine's thread use. Every lock here is held for a few
/// instructions, never across GStreamer work.
struct Shared {
    settings: EngineSettings,
    /// The plan in force (`video.set` changes it; the settings keep the original). A watch,
    /// so presence can follow what viewers actually get.
    plan: watch::Sender<VideoPlan>,
    h264: Rendition,
    /// The low H.264 stream; its encoder runs only while [`Self::low_viewers`] is above zero.
    low: Rendition,
    low_viewers: AtomicUsize,
    /// The VP8 fallback; its encoder runs only while [`Self::vp8_viewers`] is above zero.
    vp8: Rendition,
    vp8_viewers: AtomicUsize,
    audio_units: broadcast::Sender<AudioUnit>,
    /// The microphone's gain (half-duplex turns it down while the speaker plays).
    microphone_gain: Arc<MicrophoneGain>,
    /// Mirrors of the engine thread's state, for quick reads.
    viewers: AtomicUsize,
    running: AtomicBool,
    /// Audio that failed to start is off for the rest of the run: video-only is the fallback.
    audio_enabled: AtomicBool,
    health: watch::Sender<ferrocam_protocol::CameraState>,
    pipeline_restarts: prometheus_client::metrics::counter::Counter,
}

impl Shared {
    fn rendition(&self, stream: Stream) -> &Rendition {
        match stream {
            Stream::H264 => &self.h264,
            Stream::H264Low => &self.low,
            Stream::Vp8 => &self.vp8,
        }
    }

    /// The mirror of how many feeds watch a gated stream.
    fn watchers(&self, stream: Stream) -> Option<&AtomicUsize> {
        match stream {
            Stream::H264 => None,
            Stream::H264Low => Some(&self.low_viewers),
            Stream::Vp8 => Some(&self.vp8_viewers),
        }
    }

    fn audio_enabled(&self) -> bool {
        self.audio_enabled.load(Ordering::Relaxed)
    }
}

pub struct MediaEngine {
    shared: Arc<Shared>,
    commands: std::sync::mpsc::Sender<Command>,
    stills: stills::Stills,
    runtime: tokio::runtime::Handle,
    me: Weak<MediaEngine>,
    /// Keyframes asked of the encoder (after the gate).
    pub keyframes_forced: prometheus_client::metrics::counter::Counter,
    /// Pipeline failures.
    pub pipeline_restarts: prometheus_client::metrics::counter::Counter,
    /// Snapshots taken from the camera, and answered from the recent ones (`max_age`).
    pub snapshots_taken: prometheus_client::metrics::counter::Counter,
    pub snapshots_reused: prometheus_client::metrics::counter::Counter,
}

/// Who needs the pipeline: a viewer, or a snapshot of an otherwise idle camera (counted apart,
/// so status and metrics show viewers only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseKind {
    Viewer,
    Still,
    /// The recorder, while it records or holds a pre-roll: like a viewer, it needs sound.
    Recorder,
}

/// Proof that someone needs the pipeline; dropping it lets the engine go idle.
pub struct ViewerLease {
    engine: Arc<MediaEngine>,
    kind: LeaseKind,
}

impl Drop for ViewerLease {
    fn drop(&mut self) {
        self.engine.send(Command::Release(self.kind));
    }
}

/// An acquire the engine thread may have granted before its caller stopped waiting (a task
/// aborted mid-await): then the grant is handed back, or the camera would never go idle.
struct PendingLease<'a> {
    engine: &'a MediaEngine,
    kind: LeaseKind,
    started: Option<oneshot::Receiver<anyhow::Result<bool>>>,
}

impl Drop for PendingLease<'_> {
    fn drop(&mut self) {
        if let Some(mut started) = self.started.take()
            && let Ok(Ok(_)) = started.try_recv()
        {
            self.engine.send(Command::Release(self.kind));
        }
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        // The engine thread stops its pipelines and ends.
        let _ = self.commands.send(Command::Stop);
    }
}

impl MediaEngine {
    /// Creates an idle engine. Must be called inside a Tokio runtime.
    pub fn new(settings: EngineSettings) -> Arc<Self> {
        Self::with_jpeg_encoder(settings, Arc::new(GstJpeg::default()))
    }

    /// [`Self::new`] with another JPEG encoder for snapshots.
    pub fn with_jpeg_encoder(settings: EngineSettings, jpeg: Arc<dyn JpegEncoder>) -> Arc<Self> {
        let keyframes_forced = prometheus_client::metrics::counter::Counter::default();
        let pipeline_restarts = prometheus_client::metrics::counter::Counter::default();
        let shared = Arc::new(Shared {
            audio_enabled: AtomicBool::new(settings.audio.is_some()),
            plan: watch::Sender::new(settings.video.clone()),
            h264: Rendition::new(settings.keyframe_min_interval),
            low: Rendition::new(settings.keyframe_min_interval),
            low_viewers: AtomicUsize::new(0),
            vp8: Rendition::new(settings.keyframe_min_interval),
            vp8_viewers: AtomicUsize::new(0),
            settings,
            audio_units: broadcast::channel(AUDIO_FANOUT).0,
            microphone_gain: Arc::default(),
            viewers: AtomicUsize::new(0),
            running: AtomicBool::new(false),
            health: watch::Sender::new(ferrocam_protocol::CameraState::Ok),
            pipeline_restarts: pipeline_restarts.clone(),
        });
        let commands = Actor::spawn(Arc::clone(&shared)).expect("starting the media engine thread");
        Arc::new_cyclic(|me| Self {
            stills: stills::Stills::new(jpeg, shared.settings.snapshot_settle_frames),
            shared,
            commands,
            runtime: tokio::runtime::Handle::current(),
            me: me.clone(),
            keyframes_forced,
            pipeline_restarts,
            snapshots_taken: Default::default(),
            snapshots_reused: Default::default(),
        })
    }

    /// The camera's health; changes when the pipeline fails and when it is back.
    pub fn health(&self) -> watch::Receiver<ferrocam_protocol::CameraState> {
        self.shared.health.subscribe()
    }

    /// Registers a viewer, starting the pipelines if they are not running (on the engine's
    /// thread; this only waits for it).
    pub async fn acquire(self: &Arc<Self>) -> anyhow::Result<ViewerLease> {
        Ok(self.lease(LeaseKind::Viewer).await?.0)
    }

    /// Registers the recorder: the pipelines (sound too) run while it holds the lease, without
    /// counting as a viewer.
    pub async fn record(self: &Arc<Self>) -> anyhow::Result<ViewerLease> {
        Ok(self.lease(LeaseKind::Recorder).await?.0)
    }

    /// A lease of `kind`, and whether this lease started the pipeline (a cold camera).
    async fn lease(self: &Arc<Self>, kind: LeaseKind) -> anyhow::Result<(ViewerLease, bool)> {
        let (reply, started) = oneshot::channel();
        self.send(Command::Acquire(kind, reply));
        let mut pending = PendingLease {
            engine: self,
            kind,
            started: Some(started),
        };
        let started = pending.started.as_mut().expect("just set");
        let cold = started.await.map_err(|_| stopped())??;
        pending.started = None;
        let lease = ViewerLease {
            engine: Arc::clone(self),
            kind,
        };
        Ok((lease, cold))
    }

    /// A feed of `codec` frames for one viewer, starting at a keyframe of the codec's main
    /// stream. A feed of a gated stream (VP8) opens its encoder's branch while it lives.
    pub fn video_feed(self: &Arc<Self>, codec: VideoCodec) -> anyhow::Result<VideoFeed> {
        if !self.codecs().contains(&codec) {
            return Err(anyhow!("this camera cannot send {codec}"));
        }
        Ok(VideoFeed::open(Arc::clone(self), Stream::main(codec)))
    }

    /// The codecs this camera can send, preferred first.
    pub fn codecs(&self) -> Vec<VideoCodec> {
        let mut codecs = vec![VideoCodec::H264];
        if self.shared.settings.video.vp8_size().is_some() {
            codecs.push(VideoCodec::Vp8);
        }
        codecs
    }

    /// The streams this camera can make (the plan in force decides the low stream: a camera
    /// already at 640×360 has none).
    pub fn streams(&self) -> Vec<Stream> {
        let plan = self.shared.plan.borrow();
        let mut streams = vec![Stream::H264];
        if plan.low_size().is_some() {
            streams.push(Stream::H264Low);
        }
        if plan.vp8_size().is_some() {
            streams.push(Stream::Vp8);
        }
        streams
    }

    /// Viewers of the VP8 fallback right now.
    pub fn vp8_viewers(&self) -> usize {
        self.shared.vp8_viewers.load(Ordering::Relaxed)
    }

    /// Viewers of the low H.264 stream right now.
    pub fn low_viewers(&self) -> usize {
        self.shared.low_viewers.load(Ordering::Relaxed)
    }

    /// A feed started or stopped watching `stream`: a gated stream's encoder runs while any
    /// feed watches it.
    fn watching(&self, stream: Stream, joined: bool) {
        if stream.gated() {
            self.send(Command::Watchers { stream, joined });
        }
    }

    /// Opus packets for one viewer, if audio is on.
    pub fn audio_feed(&self) -> Option<broadcast::Receiver<AudioUnit>> {
        self.audio_enabled()
            .then(|| self.shared.audio_units.subscribe())
    }

    /// Whether viewers get audio.
    pub fn audio_enabled(&self) -> bool {
        self.shared.audio_enabled()
    }

    /// The microphone's gain, for half-duplex.
    pub fn microphone_gain(&self) -> Arc<MicrophoneGain> {
        Arc::clone(&self.shared.microphone_gain)
    }

    /// Every access unit, with no keyframe skipping (for tests that count frames exactly).
    #[cfg(test)]
    pub fn raw_units(&self) -> broadcast::Receiver<super::AccessUnit> {
        self.shared.h264.units.subscribe()
    }

    /// Whether the video pipeline is running.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::Relaxed)
    }

    /// Viewers holding a lease.
    pub fn viewers(&self) -> usize {
        self.shared.viewers.load(Ordering::Relaxed)
    }

    /// (frames per second, kbit/s) leaving the H.264 encoder over the last second.
    pub fn rates(&self) -> (f64, f64) {
        self.shared.h264.meter.rates()
    }

    /// (frames per second, kbit/s) leaving `stream`'s encoder over the last second.
    pub fn stream_rates(&self, stream: Stream) -> (f64, f64) {
        self.shared.rendition(stream).meter.rates()
    }

    /// The plan in force.
    pub fn plan(&self) -> VideoPlan {
        self.shared.plan.borrow().clone()
    }

    /// The plan in force; changes with every `video.set` that took effect.
    pub fn plan_changes(&self) -> watch::Receiver<VideoPlan> {
        self.shared.plan.subscribe()
    }

    /// Changes the target bitrate of the running encoder (and of later runs).
    pub async fn set_bitrate(&self, kbps: u32) -> anyhow::Result<()> {
        let (reply, done) = oneshot::channel();
        self.send(Command::SetBitrate(kbps, reply));
        done.await.map_err(|_| stopped())?
    }

    /// Limits `stream`'s encoder to what its viewers' paths carry (`None`: no limit, the
    /// plan's bitrate). The plan stays as it is: it is the ceiling the encoder returns to.
    /// Whether that changed the limit.
    pub fn set_link_kbps(&self, stream: Stream, kbps: Option<u32>) -> bool {
        let rendition = self.shared.rendition(stream);
        let changed = rendition.link_kbps() != kbps;
        if changed {
            rendition.set_link_kbps(kbps);
            self.send(Command::ApplyRates);
        }
        changed
    }

    /// Moves `stream` to `rung` of the ladder (only the main H.264 stream has one, and only
    /// when it is encoded here: a camera's own H.264 passes through at its size; see
    /// [`super::Rung`]). Whether that changed its rung.
    pub fn set_rung(&self, stream: Stream, rung: Rung) -> bool {
        let scaled = stream == Stream::H264 && self.shared.plan.borrow().encodes();
        let changed = scaled && self.shared.rendition(stream).set_rung(rung);
        if changed {
            self.send(Command::ApplyRates);
        }
        changed
    }

    /// The frame `stream` is sent at now: its rung of the ladder applied to the plan (the
    /// main stream), or its planned size (the low stream and VP8).
    pub fn frame(&self, stream: Stream) -> Frame {
        let plan = self.shared.plan.borrow();
        let planned = plan.frame();
        let size = match stream {
            Stream::H264 => return self.shared.h264.rung().frame(planned),
            Stream::H264Low => plan.low_size(),
            Stream::Vp8 => plan.vp8_size(),
        };
        size.map_or(planned, |(width, height)| Frame {
            width,
            height,
            fps: planned.fps,
        })
    }

    /// What `stream`'s encoder runs at now, in kbit/s (0 when it is not running).
    pub fn encoder_kbps(&self, stream: Stream) -> u32 {
        self.shared.rendition(stream).encoder_kbps()
    }

    /// Changes size or frame rate by rebuilding the pipeline. Viewers keep their feeds; the new
    /// pipeline opens with a keyframe carrying the new SPS, which decoders follow.
    pub async fn reconfigure(&self, width: u32, height: u32, fps: u32) -> anyhow::Result<()> {
        let (reply, done) = oneshot::channel();
        self.send(Command::Reconfigure {
            width,
            height,
            fps,
            reply,
        });
        done.await.map_err(|_| stopped())?
    }

    /// Asks `stream`'s encoder for a keyframe, subject to its keyframe gate
    /// ([`super::keyframes::KeyframeGate`]).
    pub fn request_keyframe(&self, stream: Stream, reason: KeyframeReason) {
        let verdict = self
            .shared
            .rendition(stream)
            .keyframes()
            .request(Instant::now(), reason);
        match verdict {
            Verdict::Force => self.force_keyframe(stream),
            Verdict::Merged => {}
            Verdict::Deferred(at) => {
                let me = self.me.clone();
                self.runtime.spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    if let Some(engine) = me.upgrade()
                        && engine
                            .shared
                            .rendition(stream)
                            .keyframes()
                            .fire_deferred(Instant::now())
                    {
                        engine.force_keyframe(stream);
                    }
                });
            }
        }
    }

    fn force_keyframe(&self, stream: Stream) {
        self.keyframes_forced.inc();
        // Clone under the lock, send outside it: the event travels through GStreamer.
        let target = self.shared.rendition(stream).target().clone();
        if let Some(target) = target {
            force_keyframe(&target);
        }
    }

    fn send(&self, command: Command) {
        // Fails only once the engine thread is gone, and then every reply says so.
        let _ = self.commands.send(command);
    }
}

fn stopped() -> anyhow::Error {
    anyhow!("the media engine has stopped")
}
