//! The recorder task: owns the camera lease, the pre-roll ring and the open segment, and
//! decides every moment whether to record.
//!
//! Recording is wanted while any of these holds: continuous mode (unless `record.stop` paused
//! it), a `record.start` that has not ended, a clip that has not ended. It happens while wanted
//! and nothing stands in the way (a low disk, a write error waiting out its retry, a camera
//! that does not start); `status.paused` names what stands in the way.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ferrocam_protocol::control::{ControlError, ControlErrorCode};
use ferrocam_protocol::record::{RecordMode, RecordingStatus};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::feeds::{next_audio, next_video};
use super::keyframe_need::{Recording, keyframe_wanted};
use super::preroll::{Preroll, Unit};
use super::segment::{self, OpenSegment};
use super::store::Store;
use super::writer::sync_file;
use super::{RecordSettings, Request, free_space};
use crate::media::{
    AccessUnit, AudioUnit, KeyframeReason, MediaEngine, Stream, VideoCodec, VideoFeed,
};

/// Most pre-roll held in memory.
const PREROLL_BYTES: usize = 32 * 1024 * 1024;
/// How often the open segment is flushed to disk.
const SYNC_EVERY: Duration = Duration::from_secs(5);
/// Sound that stops for this long ends the segment (at the next keyframe) so the muxer does
/// not wait for it; the next segment is video only until sound is back.
const SOUND_GAP: Duration = Duration::from_secs(2);
/// After a write error, the wait before trying again.
const WRITE_RETRY: Duration = Duration::from_secs(5);
/// After the camera failed to start for recording, the wait before trying again.
const CAMERA_RETRY: Duration = Duration::from_secs(5);

type Inbox = mpsc::Receiver<(Request, oneshot::Sender<Result<(), ControlError>>)>;

pub(super) struct Task {
    mode: RecordMode,
    segment_length: Duration,
    preroll_secs: u32,
    budget: Option<u64>,
    max_age: Option<Duration>,
    min_free: u64,
    resume_free: u64,
    media: Arc<MediaEngine>,
    store: Arc<Store>,
    status: watch::Sender<RecordingStatus>,
    lease: Option<crate::media::ViewerLease>,
    video: Option<VideoFeed>,
    audio: Option<broadcast::Receiver<AudioUnit>>,
    last_sound: Option<Instant>,
    /// When the feeds were opened (the camera lease taken).
    feeds_since: Option<Instant>,
    preroll: Preroll,
    open: Option<OpenSegment>,
    /// `record.stop` paused continuous recording.
    stopped: bool,
    /// A `record.start`: until when (`None` inside: until `record.stop`).
    manual: Option<Option<Instant>>,
    clip_until: Option<Instant>,
    low_disk: Option<String>,
    free_bytes: Option<u64>,
    write_error: Option<(String, Instant)>,
    camera_error: Option<(String, Instant)>,
}

pub(super) fn spawn(task: Task, inbox: Inbox) {
    tokio::spawn(task.run(inbox));
}

impl Task {
    pub(super) fn new(
        settings: &RecordSettings,
        media: Arc<MediaEngine>,
        store: Arc<Store>,
        status: watch::Sender<RecordingStatus>,
    ) -> Self {
        let preroll = match settings.mode {
            RecordMode::Events => settings.preroll,
            _ => Duration::ZERO,
        };
        Self {
            mode: settings.mode,
            segment_length: settings.segment,
            preroll_secs: preroll.as_secs() as u32,
            budget: settings.budget_bytes,
            max_age: settings.max_age,
            min_free: settings.min_free_bytes,
            resume_free: settings.resume_free_bytes,
            media,
            store,
            status,
            lease: None,
            video: None,
            audio: None,
            last_sound: None,
            feeds_since: None,
            preroll: Preroll::new(preroll, PREROLL_BYTES),
            open: None,
            stopped: false,
            manual: None,
            clip_until: None,
            low_disk: None,
            free_bytes: None,
            write_error: None,
            camera_error: None,
        }
    }

    async fn run(mut self, mut inbox: Inbox) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.follow_camera_need().await;
            tokio::select! {
                request = inbox.recv() => match request {
                    Some((request, reply)) => {
                        let outcome = self.on_request(request).await;
                        // The reply's caller reads the status next: make it current first.
                        self.publish();
                        let _ = reply.send(outcome);
                    }
                    None => break,
                },
                unit = next_video(&mut self.video) => match unit {
                    Some(unit) => self.on_video(unit).await,
                    None => self.video = None,
                },
                unit = next_audio(&mut self.audio) => match unit {
                    Some(unit) => self.on_audio(unit),
                    None => self.audio = None,
                },
                _ = tick.tick() => self.on_tick().await,
            }
            self.publish();
        }
        self.close_segment();
    }

    async fn on_request(&mut self, request: Request) -> Result<(), ControlError> {
        let now = Instant::now();
        let starts = !matches!(request, Request::Stop);
        if let Some(reason) = self.low_disk.as_ref().filter(|_| starts) {
            return Err(ControlError::new(
                ControlErrorCode::Unavailable,
                reason.clone(),
            ));
        }
        match request {
            Request::Start(duration) => {
                self.stopped = false;
                self.manual = Some(duration.map(|d| now + d));
            }
            Request::Stop => {
                // Pauses continuous recording; an events device keeps its pre-roll armed.
                self.stopped = self.mode == RecordMode::Continuous;
                self.manual = None;
                self.clip_until = None;
                self.close_segment();
            }
            Request::Clip(duration) => {
                let until = now + duration;
                self.clip_until = Some(self.clip_until.map_or(until, |t| t.max(until)));
            }
        }
        if self.recording_allowed(now) && self.open.is_none() {
            let held = self.preroll.take();
            if held.is_empty() {
                // Begin at a keyframe asked for now rather than at the next periodic one.
                self.media
                    .request_keyframe(Stream::H264, KeyframeReason::Join);
            } else {
                // The pre-roll begins with a keyframe: the segment opens at once, seconds back.
                self.begin(held).await;
            }
        }
        Ok(())
    }

    /// Recording is asked for (by mode, command or clip), whatever stands in the way.
    fn wanted(&self, now: Instant) -> bool {
        (self.mode == RecordMode::Continuous && !self.stopped)
            || self
                .manual
                .is_some_and(|until| until.is_none_or(|t| now < t))
            || self.clip_until.is_some_and(|t| now < t)
    }

    /// What stands in the way of recording, in words.
    fn obstacle(&self) -> Option<String> {
        if let Some(reason) = &self.low_disk {
            return Some(reason.clone());
        }
        if let Some((reason, _)) = &self.write_error {
            return Some(format!("writing failed ({reason}); retrying"));
        }
        self.camera_error
            .as_ref()
            .map(|(reason, _)| format!("the camera did not start ({reason}); retrying"))
    }

    fn recording_allowed(&self, now: Instant) -> bool {
        self.wanted(now)
            && self.low_disk.is_none()
            && self.write_error.as_ref().is_none_or(|(_, at)| *at <= now)
    }

    /// Holds the camera (and the feeds) while recording is possible or a pre-roll is kept, and
    /// lets it go otherwise, so an idle camera that records nothing costs nothing.
    async fn follow_camera_need(&mut self) {
        let now = Instant::now();
        let needed = self.low_disk.is_none()
            && (self.recording_allowed(now) || (self.mode == RecordMode::Events && !self.stopped));
        if !needed {
            if self.lease.is_some() && self.open.is_none() {
                self.video = None;
                self.audio = None;
                self.lease = None;
                self.preroll.clear();
            }
            return;
        }
        if self.lease.is_some() || self.camera_error.as_ref().is_some_and(|(_, at)| now < *at) {
            return;
        }
        let lease = match self.media.record().await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(error = %e, "recording: the camera did not start");
                self.camera_error = Some((format!("{e:#}"), now + CAMERA_RETRY));
                return;
            }
        };
        self.camera_error = None;
        match self.media.video_feed(VideoCodec::H264) {
            Ok(feed) => self.video = Some(feed),
            Err(e) => {
                self.camera_error = Some((format!("{e:#}"), now + CAMERA_RETRY));
                return;
            }
        }
        self.audio = self.media.audio_feed();
        self.last_sound = None;
        self.feeds_since = Some(now);
        self.lease = Some(lease);
    }

    async fn on_video(&mut self, unit: AccessUnit) {
        let now = Instant::now();
        // The ring fills only between segments: what a segment holds is on disk already.
        if self.open.is_none() {
            self.preroll.push(Unit::Video(unit.clone()));
        }
        // Asked at the first frame it is due, so a segment ends within a frame or two of its
        // length (repeats merge into the pending request; a keyframe is what was wanted).
        if !unit.keyframe && keyframe_wanted(unit.encoded_at, self.keyframe_need()) {
            self.media
                .request_keyframe(Stream::H264, KeyframeReason::Join);
        }
        if !self.recording_allowed(now) {
            self.close_segment();
            return;
        }
        let rotate = self.open.as_ref().is_some_and(|open| {
            unit.keyframe
                && (unit.encoded_at.saturating_duration_since(open.base) >= self.segment_length
                    || segment::sps(&unit.data) != open.sps
                    || open.writer.has_audio() != self.sound_flowing(now))
        });
        if rotate {
            self.close_segment();
        }
        if self.open.is_none() {
            let mut units = self.preroll.take();
            if units.is_empty() {
                if !unit.keyframe {
                    return;
                }
                units.push(Unit::Video(unit));
            }
            self.begin(units).await;
            return;
        }
        self.push(&Unit::Video(unit));
    }

    fn on_audio(&mut self, unit: AudioUnit) {
        self.last_sound = Some(unit.encoded_at);
        if self.open.is_some() {
            self.push(&Unit::Audio(unit));
        } else {
            self.preroll.push(Unit::Audio(unit));
        }
    }

    /// Whether segments should have a sound track: sound arrived lately, or the microphone
    /// was just started and its first packets are on their way (so a recording begun on an
    /// idle camera has its sound from the start rather than a silent first segment).
    fn sound_flowing(&self, now: Instant) -> bool {
        let recent = |t: Instant| now.saturating_duration_since(t) < SOUND_GAP;
        self.audio.is_some()
            && match self.last_sound {
                Some(t) => recent(t),
                None => self.feeds_since.is_some_and(recent),
            }
    }

    /// Opens a segment with `units` (a keyframe first; the pre-roll when there is one).
    async fn begin(&mut self, units: Vec<Unit>) {
        let audio = self.sound_flowing(Instant::now());
        match OpenSegment::open(&self.store, &units, audio).await {
            Ok(open) => {
                self.write_error = None;
                self.open = Some(open);
                for unit in &units {
                    self.push(unit);
                }
            }
            Err(e) => self.write_failed(format!("{e:#}")),
        }
    }

    fn push(&mut self, unit: &Unit) {
        let Some(open) = &mut self.open else { return };
        let pushed = match unit {
            Unit::Video(v) => open.writer.push_video(v),
            Unit::Audio(a) => open.writer.push_audio(a),
        };
        if let Err(e) = pushed {
            self.write_failed(format!("{e:#}"));
            self.close_segment();
        }
    }

    fn write_failed(&mut self, reason: String) {
        tracing::warn!(%reason, "recording: writing failed");
        self.write_error = Some((reason, Instant::now() + WRITE_RETRY));
    }

    /// Finishes the open segment in the background (see [`OpenSegment::close`]).
    fn close_segment(&mut self) {
        if let Some(open) = self.open.take() {
            let plan = self.media.plan();
            let retention = (self.budget, self.max_age);
            open.close(
                Arc::clone(&self.store),
                (plan.width, plan.height),
                retention,
            );
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        if self
            .manual
            .is_some_and(|until| until.is_some_and(|t| t <= now))
        {
            self.manual = None;
        }
        if self.clip_until.is_some_and(|t| t <= now) {
            self.clip_until = None;
        }
        if let Some(failure) = self.open.as_ref().and_then(|open| open.writer.failure()) {
            self.write_failed(failure);
            self.close_segment();
        }
        self.check_space();
        if !self.recording_allowed(now) {
            self.close_segment();
        }
        if let Some(open) = &mut self.open
            && now.duration_since(open.synced_at) >= SYNC_EVERY
        {
            open.synced_at = now;
            let path = open.writer.path().to_owned();
            tokio::task::spawn_blocking(move || sync_file(&path));
        }
        if self.open.is_none() {
            let store = Arc::clone(&self.store);
            let (budget, max_age) = (self.budget, self.max_age);
            let _ = tokio::task::spawn_blocking(move || {
                store.enforce(budget, max_age, SystemTime::now())
            })
            .await;
        }
    }

    /// What the recorder needs keyframes for (see [`keyframe_wanted`]).
    fn keyframe_need(&self) -> Recording {
        match (&self.open, &self.video) {
            (Some(open), _) => Recording::Segment {
                base: open.base,
                length: self.segment_length,
                sound_changed: open.writer.has_audio() != self.sound_flowing(Instant::now()),
            },
            (None, Some(_)) => Recording::Preroll {
                newest_keyframe: self.preroll.newest_keyframe(),
                keep: self.preroll.keep(),
            },
            (None, None) => Recording::Idle,
        }
    }

    /// The free-space guard: pause below the minimum, resume above the resume mark.
    fn check_space(&mut self) {
        let free = match free_space(self.store.dir()) {
            Ok(free) => free,
            Err(e) => {
                tracing::debug!(error = %e, "statvfs failed");
                return;
            }
        };
        self.free_bytes = Some(free);
        const MB: u64 = 1024 * 1024;
        if self.low_disk.is_none() && free < self.min_free {
            let reason = format!(
                "the disk is nearly full: {} MB free, and recording pauses below {} MB",
                free / MB,
                self.min_free / MB
            );
            tracing::warn!(%reason, "recording paused");
            self.low_disk = Some(reason);
            self.close_segment();
        } else if self.low_disk.is_some() && free >= self.resume_free {
            tracing::info!(
                free_mb = free / MB,
                "room on the disk again; recording resumes"
            );
            self.low_disk = None;
        }
    }

    fn publish(&self) {
        let now = Instant::now();
        let (segments, bytes) = self.store.totals();
        let until = [
            self.manual.flatten(),
            self.clip_until.filter(|_| self.manual.is_none()),
        ]
        .into_iter()
        .flatten()
        .max()
        .filter(|_| self.mode != RecordMode::Continuous || self.stopped);
        let paused = if self.open.is_some() {
            None
        } else if self.wanted(now) {
            self.obstacle()
        } else if self.mode == RecordMode::Continuous && self.stopped {
            Some("continuous recording was stopped by record.stop".to_owned())
        } else {
            None
        };
        let status = RecordingStatus {
            mode: self.mode,
            recording: self.open.is_some(),
            paused,
            segment: self.open.as_ref().map(|open| open.id),
            until_unix_ms: until.map(|t| unix_ms(SystemTime::now() + (t - now.min(t)))),
            preroll_secs: self.preroll_secs,
            preroll_held_ms: self.preroll.reach(now).as_millis() as u64,
            segments,
            bytes,
            budget_bytes: self.budget,
            free_bytes: self.free_bytes,
        };
        self.status.send_if_modified(|old| {
            let changed = *old != status;
            *old = status;
            changed
        });
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
