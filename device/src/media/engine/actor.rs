//! The engine's own thread: the only place pipelines are built, changed and torn down.
//!
//! Starting a capture pipeline, waiting for a microphone's first packet, or setting a pipeline
//! to NULL can each block for a second or more. None of that may happen on a Tokio worker (it
//! would stall every session on that worker) or under a lock a viewer's path needs (a keyframe
//! request would wait behind it). So the pipelines belong to one thread, which takes
//! [`Command`]s in order and keeps its own timers (idle stop, restart backoff, stall check).
//! What viewers need in a hurry lives outside it, in [`Shared`]: the fan-out channels, the
//! keyframe gate and where forced keyframes go, and counters mirrored for quick reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use ferrocam_protocol::CameraState;
use gstreamer_app as gst_app;
use tokio::sync::oneshot;

use super::{LeaseKind, Shared};
use crate::media::Stream;
use crate::media::audio::AudioPipeline;
use crate::media::pipeline::{Outputs, VideoPipeline, VideoPlan};

/// Every stream a pipeline may make.
const ALL_STREAMS: [Stream; 3] = [Stream::H264, Stream::H264Low, Stream::Vp8];

/// Wait before rebuilding a pipeline that failed while viewers were watching; doubles with
/// every failure in a row, up to [`RESTART_DELAY_MAX`].
const RESTART_DELAY: Duration = Duration::from_secs(1);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
/// With viewers attached, this long without a frame counts as a fault (a camera that stalls
/// without an error: unplugged USB hubs do that).
const STALL_AFTER: Duration = Duration::from_secs(3);
/// How often the stall check runs.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the engine's thread is asked to do.
pub(super) enum Command {
    /// A viewer (or a snapshot) arrived: start the pipelines if they are not running. The
    /// reply says whether this started them.
    Acquire(LeaseKind, oneshot::Sender<anyhow::Result<bool>>),
    /// A lease ended: go idle after the idle timeout if it was the last.
    Release(LeaseKind),
    SetBitrate(u32, oneshot::Sender<anyhow::Result<()>>),
    Reconfigure {
        width: u32,
        height: u32,
        fps: u32,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    /// The sink holding the latest raw frame, for a snapshot (`None`: a passthrough camera,
    /// which has no raw frames).
    Frames(oneshot::Sender<anyhow::Result<Option<gst_app::AppSink>>>),
    /// A rendition's link limit changed: set the encoders to the plan within it.
    ApplyRates,
    /// A feed started or stopped watching a gated stream (VP8, low H.264): its encoder runs
    /// while any feed watches it.
    Watchers {
        stream: Stream,
        joined: bool,
    },
    /// A pipeline reported an error or end of stream.
    Fault(String),
    /// The engine was dropped.
    Stop,
}

/// The pipelines and everything about their lifecycle.
pub(super) struct Actor {
    shared: Arc<Shared>,
    /// For the pipelines' fault callbacks (which run on GStreamer threads).
    commands: Sender<Command>,
    video: Option<VideoPipeline>,
    audio: Option<AudioPipeline>,
    viewers: usize,
    /// Feeds watching each gated stream.
    watchers: HashMap<Stream, usize>,
    /// Snapshots of an otherwise idle camera in progress.
    stills: usize,
    /// The recorder (0 or 1).
    recorders: usize,
    /// Failures in a row, for the restart backoff.
    failures: u32,
    /// When the current pipeline started (the stall check leaves it time to warm up).
    started: Option<Instant>,
    idle_stop_at: Option<Instant>,
    restart_at: Option<Instant>,
    next_check: Instant,
}

impl Actor {
    /// Starts the engine's thread.
    pub(super) fn spawn(shared: Arc<Shared>) -> std::io::Result<Sender<Command>> {
        let (commands, inbox) = std::sync::mpsc::channel();
        let actor = Self {
            shared,
            commands: commands.clone(),
            video: None,
            audio: None,
            viewers: 0,
            watchers: HashMap::new(),
            stills: 0,
            recorders: 0,
            failures: 0,
            started: None,
            idle_stop_at: None,
            restart_at: None,
            next_check: Instant::now() + CHECK_EVERY,
        };
        std::thread::Builder::new()
            .name("media-engine".into())
            .spawn(move || actor.run(inbox))?;
        Ok(commands)
    }

    fn run(mut self, inbox: Receiver<Command>) {
        loop {
            let now = Instant::now();
            let wake = [self.idle_stop_at, self.restart_at, Some(self.next_check)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(self.next_check);
            match inbox.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(command) => self.handle(command),
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.on_timers(Instant::now());
        }
        self.stop_pipelines();
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Acquire(kind, reply) => {
                let started = self.acquire(kind);
                let ok = started.is_ok();
                // A caller that gave up waiting never got its lease: it will not release.
                if reply.send(started).is_err() && ok {
                    self.release(kind);
                }
            }
            Command::Release(kind) => self.release(kind),
            Command::SetBitrate(kbps, reply) => {
                let plan = VideoPlan {
                    bitrate_kbps: kbps,
                    ..self.shared.plan.borrow().clone()
                };
                // The plan changes only once the main encoder took it.
                let result = self.apply_rates(&plan);
                if result.is_ok() {
                    self.shared.plan.send_replace(plan);
                }
                let _ = reply.send(result);
            }
            Command::ApplyRates => self.apply_current_rates(),
            Command::Reconfigure {
                width,
                height,
                fps,
                reply,
            } => {
                let _ = reply.send(self.reconfigure(width, height, fps));
            }
            Command::Frames(reply) => {
                let frames = match &self.video {
                    None => Err(anyhow!("the camera is not running")),
                    Some(video) => Ok(video.frames()),
                };
                let _ = reply.send(frames);
            }
            Command::Watchers { stream, joined } => self.count_watchers(stream, joined),
            Command::Fault(fault) => self.on_fault(fault),
            Command::Stop => {}
        }
    }

    fn acquire(&mut self, kind: LeaseKind) -> anyhow::Result<bool> {
        self.idle_stop_at = None;
        let cold = self.video.is_none();
        if cold {
            // Audio too if viewers are already there (a snapshot during the backoff after a
            // fault restarts the camera for them).
            self.start_pipelines()?;
            // Started during the backoff after a fault: the camera is back.
            if self.restart_at.take().is_some() {
                self.shared.health.send_replace(CameraState::Ok);
            }
        }
        // A snapshot needs no sound: an idle camera woken for one starts video only.
        if kind != LeaseKind::Still {
            self.start_audio();
        }
        *self.count(kind) += 1;
        self.publish_viewers();
        Ok(cold)
    }

    fn release(&mut self, kind: LeaseKind) {
        let count = self.count(kind);
        *count = count.saturating_sub(1);
        self.publish_viewers();
        if self.idle() {
            self.idle_stop_at = Some(Instant::now() + self.shared.settings.idle_timeout);
        }
    }

    fn count_watchers(&mut self, stream: Stream, joined: bool) {
        let count = self.watchers.entry(stream).or_default();
        let before = *count;
        *count = if joined {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        let now = *count;
        if let Some(mirror) = self.shared.watchers(stream) {
            mirror.store(now, Ordering::Relaxed);
        }
        if (before == 0) != (now == 0) {
            tracing::info!(
                stream = stream.name(),
                watchers = now,
                "encoder {}",
                if joined { "started" } else { "stopped" }
            );
        }
        if let Some(video) = &self.video {
            video.set_flowing(stream, now > 0);
        }
    }

    fn count(&mut self, kind: LeaseKind) -> &mut usize {
        match kind {
            LeaseKind::Viewer => &mut self.viewers,
            LeaseKind::Still => &mut self.stills,
            LeaseKind::Recorder => &mut self.recorders,
        }
    }

    /// Changes size or frame rate by rebuilding the pipeline. Viewers keep their feeds; the new
    /// pipeline opens with a keyframe carrying the new SPS, which decoders follow.
    fn reconfigure(&mut self, width: u32, height: u32, fps: u32) -> anyhow::Result<()> {
        let previous = self.shared.plan.borrow().clone();
        self.shared.plan.send_modify(|plan| {
            plan.width = width;
            plan.height = height;
            plan.fps = fps;
        });
        if self.video.is_none() {
            return Ok(());
        }
        self.stop_pipelines();
        if let Err(e) = self.start_pipelines() {
            // Put the working configuration back rather than leave viewers with nothing.
            self.shared.plan.send_replace(previous);
            self.start_pipelines()?;
            return Err(e);
        }
        Ok(())
    }

    /// Video, and audio if a viewer needs it.
    fn start_pipelines(&mut self) -> anyhow::Result<()> {
        self.start_video()?;
        if self.viewers + self.recorders > 0 {
            self.start_audio();
        }
        Ok(())
    }

    fn start_video(&mut self) -> anyhow::Result<()> {
        let faults = self.commands.clone();
        let on_fault = Arc::new(move |fault: String| {
            let _ = faults.send(Command::Fault(fault));
        });
        let plan = self.shared.plan.borrow().clone();
        let shared = &self.shared;
        let outputs = Outputs {
            h264: shared.h264.output(Arc::clone(shared), |s: &Shared| &s.h264),
            low: shared.low.output(Arc::clone(shared), |s: &Shared| &s.low),
            vp8: shared.vp8.output(Arc::clone(shared), |s: &Shared| &s.vp8),
        };
        let video = VideoPipeline::start(&plan, outputs, on_fault)?;
        for stream in ALL_STREAMS {
            if stream.gated() {
                video.set_flowing(stream, self.watchers.get(&stream).is_some_and(|&n| n > 0));
            }
            *self.shared.rendition(stream).target() = video.keyframe_target(stream);
        }
        self.video = Some(video);
        self.apply_current_rates();
        self.shared.running.store(true, Ordering::Relaxed);
        self.started = Some(Instant::now());
        tracing::info!("video pipeline started");
        Ok(())
    }

    /// Sets each running encoder to `plan`'s bitrate within its viewers' link limit, and the
    /// main stream's scaler to its rung of the ladder. The branches follow only once the main
    /// H.264 encoder took it, so all follow the same plan.
    /// An error means the main encoder cannot change (a camera whose own H.264 passes through).
    fn apply_rates(&self, plan: &VideoPlan) -> anyhow::Result<()> {
        let Some(video) = &self.video else {
            for stream in ALL_STREAMS {
                self.shared.rendition(stream).set_encoder_kbps(0);
            }
            return Ok(());
        };
        let planned = [
            (Stream::H264, Some(plan.bitrate_kbps)),
            (
                Stream::H264Low,
                plan.low_size().map(|_| plan.low_bitrate_kbps()),
            ),
            (
                Stream::Vp8,
                plan.vp8_size().map(|_| plan.vp8_bitrate_kbps()),
            ),
        ];
        for (stream, planned) in planned {
            let Some(planned) = planned else { continue };
            let rendition = self.shared.rendition(stream);
            let kbps = rendition.bitrate_for(planned);
            video.set_bitrate(stream, kbps)?;
            rendition.set_encoder_kbps(kbps);
            if stream == Stream::H264 {
                video.set_rung(plan, rendition.rung())?;
            }
        }
        Ok(())
    }

    /// [`Actor::apply_rates`] for the plan in force: a pipeline starts at the plan's rate, and
    /// this brings it down at once when viewers' paths are narrower.
    fn apply_current_rates(&self) {
        let plan = self.shared.plan.borrow().clone();
        if let Err(e) = self.apply_rates(&plan) {
            tracing::debug!(error = %e, "bitrate unchanged");
        }
    }

    /// Starts the audio pipeline if there is a source, it works, and it is not running yet.
    fn start_audio(&mut self) {
        let Some(source) = &self.shared.settings.audio else {
            return;
        };
        if self.audio.is_some() || !self.shared.audio_enabled() {
            return;
        }
        let on_fault = Arc::new(|fault: String| tracing::warn!(%fault, "audio stopped"));
        let gain = Arc::clone(&self.shared.microphone_gain);
        match AudioPipeline::start(source, self.shared.audio_units.clone(), gain, on_fault) {
            Ok(audio) => self.audio = Some(audio),
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "audio unavailable; streaming video only"
                );
                self.shared.audio_enabled.store(false, Ordering::Relaxed);
            }
        }
    }

    fn stop_pipelines(&mut self) {
        for stream in ALL_STREAMS {
            *self.shared.rendition(stream).target() = None;
        }
        self.shared.running.store(false, Ordering::Relaxed);
        self.started = None;
        // Dropping sets them to NULL, which may block: fine here, nowhere else.
        self.video = None;
        self.audio = None;
        self.apply_current_rates();
    }

    /// A pipeline error, EOS or stall: drop the dead pipeline, say the camera is unavailable,
    /// and while anyone watches rebuild it with backoff. Viewers keep their feeds and resume at
    /// the new pipeline's first keyframe, without reconnecting.
    fn on_fault(&mut self, fault: String) {
        if self.video.is_none() {
            return; // already handled (a stale report from a pipeline already gone)
        }
        self.stop_pipelines();
        self.failures += 1;
        let delay = restart_delay(self.failures);
        self.shared.pipeline_restarts.inc();
        tracing::warn!(%fault, retry_in = ?delay, "video pipeline failed");
        self.shared
            .health
            .send_replace(CameraState::Unavailable { reason: fault });
        self.restart_at = Some(Instant::now() + delay);
    }

    fn on_timers(&mut self, now: Instant) {
        if self.idle_stop_at.is_some_and(|at| at <= now) {
            self.idle_stop_at = None;
            if self.idle() && self.video.is_some() {
                self.stop_pipelines();
                tracing::info!("no viewers; pipelines stopped");
            }
        }
        if self.restart_at.is_some_and(|at| at <= now) {
            self.restart_at = None;
            self.restart();
        }
        if self.next_check <= now {
            self.next_check = now + CHECK_EVERY;
            self.check_stall();
        }
    }

    fn restart(&mut self) {
        if self.video.is_some() {
            return;
        }
        if self.idle() {
            // Nobody watching: the next viewer starts it (and finds out).
            self.shared.health.send_replace(CameraState::Ok);
            return;
        }
        match self.start_pipelines() {
            Ok(()) => {
                tracing::info!("video pipeline rebuilt");
                self.shared.health.send_replace(CameraState::Ok);
            }
            Err(e) => {
                self.failures += 1;
                let delay = restart_delay(self.failures);
                let reason = format!("{e:#}");
                tracing::error!(error = %reason, retry_in = ?delay, "video pipeline rebuild failed");
                self.shared
                    .health
                    .send_replace(CameraState::Unavailable { reason });
                self.restart_at = Some(Instant::now() + delay);
            }
        }
    }

    /// A pipeline with viewers must produce frames; ten good seconds forgive earlier failures.
    fn check_stall(&mut self) {
        let meter = &self.shared.h264.meter;
        let running_for = self.started.map(|t| t.elapsed());
        if running_for.is_some_and(|d| d > Duration::from_secs(10))
            && meter.idle_for() < Duration::from_secs(1)
        {
            self.failures = 0;
        }
        let stalled = self.viewers + self.recorders > 0
            && self.video.is_some()
            && running_for.is_some_and(|d| d > STALL_AFTER)
            && meter.idle_for() > STALL_AFTER;
        if stalled {
            self.on_fault(format!("no frames for {} s", STALL_AFTER.as_secs()));
        }
    }

    /// Nobody needs the pipelines.
    fn idle(&self) -> bool {
        self.viewers + self.stills + self.recorders == 0
    }

    fn publish_viewers(&self) {
        self.shared.viewers.store(self.viewers, Ordering::Relaxed);
    }
}

/// Backoff after `failures` failures in a row: 1 s, 2 s, 4 s … 30 s.
fn restart_delay(failures: u32) -> Duration {
    (RESTART_DELAY * 2u32.pow(failures.saturating_sub(1).min(5))).min(RESTART_DELAY_MAX)
}
