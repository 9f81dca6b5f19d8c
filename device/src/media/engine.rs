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
mod stills;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use gstreamer_app as gst_app;
use tokio::sync::{broadcast, oneshot, watch};

use self::actor::{Actor, Command};
use super::AccessUnit;
use super::audio::{AudioSource, AudioUnit};
use super::keyframes::{KeyframeGate, KeyframeReason, Verdict};
use super::pipeline::{Meter, VideoPlan, force_keyframe};
use super::snapshot::{GstJpeg, JpegEncoder};

pub use stills::{SnapshotError, SnapshotRequest};

/// Access units a viewer may fall behind before it skips to the next keyframe: two seconds at
/// 30 fps, enough to ride out a scheduling hiccup, small enough to bound memory.
const VIDEO_FANOUT: usize = 64;
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
    meter: Arc<Meter>,
    video_units: broadcast::Sender<AccessUnit>,
    audio_units: broadcast::Sender<AudioUnit>,
    keyframes: Mutex<KeyframeGate>,
    /// Where forced keyframes go while a pipeline runs (set and cleared by the engine thread).
    keyframe_target: Mutex<Option<gst_app::AppSink>>,
    /// Mirrors of the engine thread's state, for quick reads.
    viewers: AtomicUsize,
    running: AtomicBool,
    /// Audio that failed to start is off for the rest of the run: video-only is the fallback.
    audio_enabled: AtomicBool,
    health: watch::Sender<ferrocam_protocol::CameraState>,
    pipeline_restarts: prometheus_client::metrics::counter::Counter,
}

impl Shared {
    fn keyframes(&self) -> MutexGuard<'_, KeyframeGate> {
        self.keyframes.lock().expect("keyframe gate")
    }

    fn keyframe_target(&self) -> MutexGuard<'_, Option<gst_app::AppSink>> {
        self.keyframe_target.lock().expect("keyframe target")
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
            keyframes: Mutex::new(KeyframeGate::new(settings.keyframe_min_interval)),
            settings,
            meter: Arc::default(),
            video_units: broadcast::channel(VIDEO_FANOUT).0,
            audio_units: broadcast::channel(AUDIO_FANOUT).0,
            keyframe_target: Mutex::default(),
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

    /// A feed of access units for one viewer, starting at a keyframe.
    pub fn video_feed(self: &Arc<Self>) -> VideoFeed {
        let feed = VideoFeed {
            units: self.shared.video_units.subscribe(),
            engine: Arc::clone(self),
            need_keyframe: true,
        };
        self.request_keyframe(KeyframeReason::Join);
        feed
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

    /// Every access unit, with no keyframe skipping (for tests that count frames exactly).
    #[cfg(test)]
    pub fn raw_units(&self) -> broadcast::Receiver<AccessUnit> {
        self.shared.video_units.subscribe()
    }

    /// Whether the video pipeline is running.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::Relaxed)
    }

    /// Viewers holding a lease.
    pub fn viewers(&self) -> usize {
        self.shared.viewers.load(Ordering::Relaxed)
    }

    /// (frames per second, kbit/s) leaving the encoder over the last second.
    pub fn rates(&self) -> (f64, f64) {
        self.shared.meter.rates()
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

    /// Asks for a keyframe, subject to the [`KeyframeGate`].
    pub fn request_keyframe(&self, reason: KeyframeReason) {
        let verdict = self.shared.keyframes().request(Instant::now(), reason);
        match verdict {
            Verdict::Force => self.force_keyframe(),
            Verdict::Merged => {}
            Verdict::Deferred(at) => {
                let me = self.me.clone();
                self.runtime.spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    if let Some(engine) = me.upgrade()
                        && engine.shared.keyframes().fire_deferred(Instant::now())
                    {
                        engine.force_keyframe();
                    }
                });
            }
        }
    }

    fn force_keyframe(&self) {
        self.keyframes_forced.inc();
        // Clone under the lock, send outside it: the event travels through GStreamer.
        let target = self.shared.keyframe_target().clone();
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

/// One viewer's view of the shared access units: starts at a keyframe, and after falling behind
/// skips to the next keyframe instead of decoding a stream with holes.
pub struct VideoFeed {
    units: broadcast::Receiver<AccessUnit>,
    engine: Arc<MediaEngine>,
    need_keyframe: bool,
}

impl VideoFeed {
    /// The next access unit to send, or `None` when the engine is gone.
    pub async fn next(&mut self) -> Option<AccessUnit> {
        loop {
            match self.units.recv().await {
                Ok(unit) => {
                    if self.need_keyframe && !unit.keyframe {
                        continue;
                    }
                    self.need_keyframe = false;
                    return Some(unit);
                }
                // The frames this viewer missed are gone; only this viewer pays for it.
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "viewer lagged; waiting for a keyframe");
                    self.need_keyframe = true;
                    self.engine.request_keyframe(KeyframeReason::Join);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
