//! The media engine: one capture + encode pipeline (and one audio pipeline) shared by every
//! viewer, started by the first viewer and stopped some time after the last one leaves.
//!
//! Viewers hold a [`ViewerLease`] while they exist (from offer to hang-up) and read access units
//! through a [`VideoFeed`]. Taking the lease at offer time lets the pipeline warm up while ICE
//! and DTLS run, so the first frame is not delayed by encoder start-up.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::AccessUnit;
use super::audio::{AudioPipeline, AudioSource, AudioUnit};
use super::keyframes::{KeyframeGate, KeyframeReason, Verdict};
use super::pipeline::{Meter, VideoPipeline, VideoPlan};
use super::snapshot::{self, Jpeg};

/// Access units a viewer may fall behind before it skips to the next keyframe: two seconds at
/// 30 fps, enough to ride out a scheduling hiccup, small enough to bound memory.
const VIDEO_FANOUT: usize = 64;
/// Opus packets (20 ms each) a viewer may fall behind.
const AUDIO_FANOUT: usize = 50;
/// Wait before rebuilding a pipeline that failed while viewers were watching; doubles with
/// every failure in a row, up to [`RESTART_DELAY_MAX`].
const RESTART_DELAY: Duration = Duration::from_secs(1);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
/// With viewers attached, this long without a frame counts as a fault (a camera that stalls
/// without an error: unplugged USB hubs do that).
const STALL_AFTER: Duration = Duration::from_secs(3);

/// How the engine behaves.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub video: VideoPlan,
    pub audio: Option<AudioSource>,
    /// How long the pipeline keeps running after the last viewer leaves.
    pub idle_timeout: Duration,
    /// Minimum gap between keyframes forced by viewer feedback (PLI/FIR).
    pub keyframe_min_interval: Duration,
}

#[derive(Default)]
struct Running {
    video: Option<VideoPipeline>,
    audio: Option<AudioPipeline>,
    viewers: usize,
    /// Bumped on every acquire, so an idle stop scheduled before it does nothing.
    generation: u64,
    /// Failures in a row, for the restart backoff.
    failures: u32,
    /// When the current pipeline started (the stall check leaves it time to warm up).
    started: Option<Instant>,
}

pub struct MediaEngine {
    settings: EngineSettings,
    /// The plan in force (`video.set` changes it; the engine settings keep the original). A
    /// watch, so presence can follow what viewers actually get.
    plan: tokio::sync::watch::Sender<VideoPlan>,
    meter: Arc<Meter>,
    video_units: broadcast::Sender<AccessUnit>,
    audio_units: broadcast::Sender<AudioUnit>,
    running: Mutex<Running>,
    keyframes: Mutex<KeyframeGate>,
    /// Audio that failed to start is off for the rest of the run: video-only is the fallback.
    audio_enabled: std::sync::atomic::AtomicBool,
    runtime: tokio::runtime::Handle,
    me: Weak<MediaEngine>,
    health: tokio::sync::watch::Sender<ferrocam_protocol::CameraState>,
    /// Keyframes asked of the encoder (after the gate).
    pub keyframes_forced: prometheus_client::metrics::counter::Counter,
    /// Pipeline failures.
    pub pipeline_restarts: prometheus_client::metrics::counter::Counter,
}

/// Proof that a viewer needs the pipeline; dropping it lets the engine go idle.
pub struct ViewerLease {
    engine: Arc<MediaEngine>,
}

impl Drop for ViewerLease {
    fn drop(&mut self) {
        self.engine.release();
    }
}

impl MediaEngine {
    /// Creates an idle engine. Must be called inside a Tokio runtime.
    pub fn new(settings: EngineSettings) -> Arc<Self> {
        let keyframes = KeyframeGate::new(settings.keyframe_min_interval);
        Arc::new_cyclic(|me| Self {
            audio_enabled: std::sync::atomic::AtomicBool::new(settings.audio.is_some()),
            plan: tokio::sync::watch::Sender::new(settings.video.clone()),
            meter: Arc::default(),
            settings,
            video_units: broadcast::channel(VIDEO_FANOUT).0,
            audio_units: broadcast::channel(AUDIO_FANOUT).0,
            running: Mutex::default(),
            keyframes: Mutex::new(keyframes),
            runtime: tokio::runtime::Handle::current(),
            me: me.clone(),
            health: tokio::sync::watch::Sender::new(ferrocam_protocol::CameraState::Ok),
            keyframes_forced: Default::default(),
            pipeline_restarts: Default::default(),
        })
        .start_stall_monitor()
    }

    /// The camera's health; changes when the pipeline fails and when it is back.
    pub fn health(&self) -> tokio::sync::watch::Receiver<ferrocam_protocol::CameraState> {
        self.health.subscribe()
    }

    /// Checks once a second that a pipeline with viewers produces frames.
    fn start_stall_monitor(self: Arc<Self>) -> Arc<Self> {
        let me = Arc::downgrade(&self);
        self.runtime.spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticker.tick().await;
                let Some(engine) = me.upgrade() else { return };
                let stalled = {
                    let mut running = engine.lock();
                    // Ten good seconds forgive earlier failures.
                    if running
                        .started
                        .is_some_and(|t| t.elapsed() > Duration::from_secs(10))
                        && engine.meter.idle_for() < Duration::from_secs(1)
                    {
                        running.failures = 0;
                    }
                    running.viewers > 0
                        && running.video.is_some()
                        && running.started.is_some_and(|t| t.elapsed() > STALL_AFTER)
                        && engine.meter.idle_for() > STALL_AFTER
                };
                if stalled {
                    engine.on_video_fault(format!("no frames for {} s", STALL_AFTER.as_secs()));
                }
            }
        });
        self
    }

    /// Registers a viewer, starting the pipelines if they are not running.
    pub fn acquire(self: &Arc<Self>) -> anyhow::Result<ViewerLease> {
        let mut running = self.lock();
        running.viewers += 1;
        running.generation += 1;
        if running.video.is_none()
            && let Err(e) = self.start_pipelines(&mut running)
        {
            running.viewers -= 1;
            return Err(e);
        }
        Ok(ViewerLease {
            engine: Arc::clone(self),
        })
    }

    /// A feed of access units for one viewer, starting at a keyframe.
    pub fn video_feed(self: &Arc<Self>) -> VideoFeed {
        let feed = VideoFeed {
            units: self.video_units.subscribe(),
            engine: Arc::clone(self),
            need_keyframe: true,
        };
        self.request_keyframe(KeyframeReason::Join);
        feed
    }

    /// Opus packets for one viewer, if audio is on.
    pub fn audio_feed(&self) -> Option<broadcast::Receiver<AudioUnit>> {
        self.audio_enabled().then(|| self.audio_units.subscribe())
    }

    /// Whether viewers get audio.
    pub fn audio_enabled(&self) -> bool {
        self.audio_enabled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every access unit, with no keyframe skipping (for tests that count frames exactly).
    #[cfg(test)]
    pub fn raw_units(&self) -> broadcast::Receiver<AccessUnit> {
        self.video_units.subscribe()
    }

    /// Whether the video pipeline is running.
    #[cfg(test)]
    pub fn is_running(&self) -> bool {
        self.lock().video.is_some()
    }

    /// Viewers holding a lease.
    pub fn viewers(&self) -> usize {
        self.lock().viewers
    }

    /// (frames per second, kbit/s) leaving the encoder over the last second.
    pub fn rates(&self) -> (f64, f64) {
        self.meter.rates()
    }

    /// The plan in force.
    pub fn plan(&self) -> VideoPlan {
        self.plan.borrow().clone()
    }

    /// The plan in force; changes with every `video.set` that took effect.
    pub fn plan_changes(&self) -> tokio::sync::watch::Receiver<VideoPlan> {
        self.plan.subscribe()
    }

    /// Changes the target bitrate of the running encoder (and of later runs).
    pub fn set_bitrate(&self, kbps: u32) -> anyhow::Result<()> {
        let running = self.lock();
        if let Some(video) = &running.video {
            video.set_bitrate(kbps)?;
        }
        self.plan.send_modify(|plan| plan.bitrate_kbps = kbps);
        Ok(())
    }

    /// Changes size or frame rate by rebuilding the pipeline. Viewers keep their feeds; the new
    /// pipeline opens with a keyframe carrying the new SPS, which decoders follow.
    pub fn reconfigure(&self, width: u32, height: u32, fps: u32) -> anyhow::Result<()> {
        let previous = self.plan();
        self.plan.send_modify(|plan| {
            plan.width = width;
            plan.height = height;
            plan.fps = fps;
        });
        let mut running = self.lock();
        if running.video.is_none() {
            return Ok(());
        }
        running.video = None;
        running.audio = None;
        if let Err(e) = self.start_pipelines(&mut running) {
            // Put the working configuration back rather than leave viewers with nothing.
            self.plan.send_replace(previous);
            self.start_pipelines(&mut running)?;
            return Err(e);
        }
        Ok(())
    }

    /// A JPEG of the latest frame. Blocking (encodes on the caller's thread).
    pub fn snapshot(&self) -> anyhow::Result<Jpeg> {
        let frame = {
            let running = self.lock();
            let video = running
                .video
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("the pipeline is not running"))?;
            video.last_frame()
        };
        let frame = frame.ok_or_else(|| {
            anyhow::anyhow!("no frame available (passthrough sources have no raw frames)")
        })?;
        snapshot::encode(&frame)
    }

    /// Asks for a keyframe, subject to the [`KeyframeGate`].
    pub fn request_keyframe(&self, reason: KeyframeReason) {
        let verdict = self
            .keyframes
            .lock()
            .expect("keyframe gate")
            .request(Instant::now(), reason);
        match verdict {
            Verdict::Force => self.force_keyframe(),
            Verdict::Merged => {}
            Verdict::Deferred(at) => {
                let me = self.me.clone();
                self.runtime.spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    if let Some(engine) = me.upgrade()
                        && engine
                            .keyframes
                            .lock()
                            .expect("keyframe gate")
                            .fire_deferred(Instant::now())
                    {
                        engine.force_keyframe();
                    }
                });
            }
        }
    }

    fn force_keyframe(&self) {
        self.keyframes_forced.inc();
        if let Some(video) = &self.lock().video {
            video.force_keyframe();
        }
    }

    fn start_pipelines(&self, running: &mut Running) -> anyhow::Result<()> {
        let me = self.me.clone();
        let on_keyframe = Arc::new(move || {
            if let Some(engine) = me.upgrade() {
                engine
                    .keyframes
                    .lock()
                    .expect("keyframe gate")
                    .on_keyframe();
            }
        });
        let me = self.me.clone();
        let on_fault = Arc::new(move |fault: String| {
            if let Some(engine) = me.upgrade() {
                engine.on_video_fault(fault);
            }
        });
        let plan = self.plan();
        running.video = Some(VideoPipeline::start(
            &plan,
            self.video_units.clone(),
            on_keyframe,
            on_fault,
            Arc::clone(&self.meter),
        )?);
        running.started = Some(Instant::now());
        tracing::info!("video pipeline started");
        if let (Some(source), true) = (&self.settings.audio, self.audio_enabled()) {
            let on_fault = Arc::new(|fault: String| tracing::warn!(%fault, "audio stopped"));
            match AudioPipeline::start(source, self.audio_units.clone(), on_fault) {
                Ok(audio) => running.audio = Some(audio),
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "audio unavailable; streaming video only"
                    );
                    self.audio_enabled
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// A pipeline error, EOS or stall: drop the dead pipeline, say the camera is unavailable,
    /// and while anyone watches rebuild it with backoff. Viewers keep their feeds and resume at
    /// the new pipeline's first keyframe, without reconnecting.
    fn on_video_fault(&self, fault: String) {
        let delay = {
            let mut running = self.lock();
            if running.video.take().is_none() {
                return; // already being handled
            }
            running.audio = None;
            running.started = None;
            running.failures += 1;
            restart_delay(running.failures)
        };
        self.pipeline_restarts.inc();
        tracing::warn!(%fault, retry_in = ?delay, "video pipeline failed");
        self.health
            .send_replace(ferrocam_protocol::CameraState::Unavailable { reason: fault });
        self.schedule_restart(delay);
    }

    fn schedule_restart(&self, delay: Duration) {
        let me = self.me.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(engine) = me.upgrade() else { return };
            let mut running = engine.lock();
            if running.video.is_some() {
                return;
            }
            if running.viewers == 0 {
                // Nobody watching: the next viewer starts it (and finds out).
                drop(running);
                engine.health.send_replace(ferrocam_protocol::CameraState::Ok);
                return;
            }
            match engine.start_pipelines(&mut running) {
                Ok(()) => {
                    tracing::info!("video pipeline rebuilt");
                    drop(running);
                    engine.health.send_replace(ferrocam_protocol::CameraState::Ok);
                }
                Err(e) => {
                    running.failures += 1;
                    let delay = restart_delay(running.failures);
                    drop(running);
                    let reason = format!("{e:#}");
                    tracing::error!(error = %reason, retry_in = ?delay, "video pipeline rebuild failed");
                    engine.health.send_replace(ferrocam_protocol::CameraState::Unavailable { reason });
                    engine.schedule_restart(delay);
                }
            }
        });
    }

    fn release(&self) {
        let mut running = self.lock();
        running.viewers -= 1;
        if running.viewers > 0 {
            return;
        }
        let generation = running.generation;
        let me = self.me.clone();
        let idle = self.settings.idle_timeout;
        self.runtime.spawn(async move {
            tokio::time::sleep(idle).await;
            let Some(engine) = me.upgrade() else { return };
            let mut running = engine.lock();
            if running.viewers == 0 && running.generation == generation {
                let stopped = (running.video.take(), running.audio.take());
                drop(running);
                drop(stopped);
                tracing::info!("no viewers; pipelines stopped");
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().expect("media engine lock")
    }
}

/// Backoff after `failures` failures in a row: 1 s, 2 s, 4 s … 30 s.
fn restart_delay(failures: u32) -> Duration {
    (RESTART_DELAY * 2u32.pow(failures.saturating_sub(1).min(5))).min(RESTART_DELAY_MAX)
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
