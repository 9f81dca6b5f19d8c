//! Recording on the device: the shared encoder's stream written to fragmented MP4 segments,
//! continuously, on command, or as event clips that begin a few seconds before their trigger.
//!
//! ```text
//!  MediaEngine ──VideoFeed──┐                 ┌──▶ rec-….mp4.part ──finish──▶ rec-….mp4 + .json
//!   (the one encoder)       ├─▶ recorder task ┤                                   + .jpg
//!  microphone ──Opus────────┘   (task.rs)     └──▶ pre-roll ring (events mode)
//!        ▲                        ▲    │
//!        └── a lease while it     │    └──▶ status (watch) · retention · free-space guard
//!            records or holds     │
//!            a pre-roll        Recorder (this handle): start · stop · clip · status
//! ```
//!
//! The recorder is one task that owns everything that changes; this handle only sends it
//! requests and reads its status. It never blocks a Tokio worker: GStreamer's waits (opening
//! and finishing a segment, thumbnails, probing a cut-off file) run on the blocking pool, and
//! frames are pushed into app sources that do not block.
//!
//! What a user can rely on:
//! - a segment always begins with a keyframe and ends just before one, so each plays alone;
//! - a segment cut off by a crash or power loss plays up to its last half-second fragment, and
//!   is recovered (renamed, measured) when the device starts again;
//! - the oldest segments go when the budget (`--record-budget-mb`) or age limit is reached;
//! - recording pauses before the filesystem fills (`--record-min-free-mb`), says why in
//!   `status`, and resumes by itself once there is room again; streaming never stops for it.

mod feeds;
mod keyframe_need;
mod preroll;
pub mod probe;
mod segment;
mod store;
mod task;
#[cfg(test)]
pub(crate) mod tests;
mod trigger;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferrocam_protocol::control::{ControlError, ControlErrorCode};
use ferrocam_protocol::record::{MAX_RECORD_SECONDS, RecordMode, RecordingStatus};
use tokio::sync::{mpsc, oneshot, watch};

use crate::media::MediaEngine;
pub use store::{SegmentInfo, Store};
pub use trigger::Trigger;

/// How the recorder behaves (from the `--record…` flags).
#[derive(Debug, Clone)]
pub struct RecordSettings {
    pub mode: RecordMode,
    pub dir: PathBuf,
    /// A new segment begins at the first keyframe after this much.
    pub segment: Duration,
    /// What a clip begins with, before its trigger (events mode).
    pub preroll: Duration,
    /// How long a clip goes on after its trigger, unless it says.
    pub clip: Duration,
    pub budget_bytes: Option<u64>,
    pub max_age: Option<Duration>,
    /// Recording pauses below this much free space, and resumes above the second.
    pub min_free_bytes: u64,
    pub resume_free_bytes: u64,
}

/// What the recorder is asked to do.
#[derive(Debug)]
enum Request {
    /// Record until stopped, or for this long.
    Start(Option<Duration>),
    Stop,
    /// An event clip: the pre-roll, then this long.
    Clip(Duration),
}

/// The handle the control commands use.
pub struct Recorder {
    requests: mpsc::Sender<(Request, oneshot::Sender<Result<(), ControlError>>)>,
    status: watch::Receiver<RecordingStatus>,
    store: Arc<Store>,
    clip_default: Duration,
}

impl Recorder {
    /// Opens the recordings directory (recovering segments a crash cut off) and starts the
    /// recorder, with a clip on each rising edge of `trigger`.
    pub async fn start(
        settings: RecordSettings,
        media: Arc<MediaEngine>,
        trigger: Option<Trigger>,
    ) -> anyhow::Result<Arc<Self>> {
        let dir = settings.dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&dir, probe::probe))
            .await
            .context("opening the recordings directory")??;
        let store = Arc::new(store);
        let (requests, inbox) = mpsc::channel(16);
        let (status, status_rx) = watch::channel(RecordingStatus::default());
        if let Some(trigger) = trigger {
            trigger.watch(requests.clone(), settings.clip);
        }
        task::spawn(
            task::Task::new(&settings, media, Arc::clone(&store), status),
            inbox,
        );
        Ok(Arc::new(Self {
            requests,
            status: status_rx,
            store,
            clip_default: settings.clip,
        }))
    }

    /// `record.start`.
    pub async fn record(&self, seconds: Option<u32>) -> Result<(), ControlError> {
        let duration = seconds.map(checked_seconds).transpose()?;
        self.ask(Request::Start(duration)).await
    }

    /// `record.stop`.
    pub async fn stop(&self) -> Result<(), ControlError> {
        self.ask(Request::Stop).await
    }

    /// `record.clip`.
    pub async fn clip(&self, seconds: Option<u32>) -> Result<(), ControlError> {
        let duration = match seconds {
            Some(s) => checked_seconds(s)?,
            None => self.clip_default,
        };
        self.ask(Request::Clip(duration)).await
    }

    /// What `status` reports.
    pub fn status(&self) -> RecordingStatus {
        self.status.borrow().clone()
    }

    /// The finished segments (for the file commands).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    async fn ask(&self, request: Request) -> Result<(), ControlError> {
        let gone = || ControlError::new(ControlErrorCode::Failed, "the recorder has stopped");
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((request, reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
fn free_space(dir: &std::path::Path) -> anyhow::Result<u64> {
    let stats = nix::sys::statvfs::statvfs(dir)?;
    Ok((stats.blocks_available() as u64).saturating_mul(stats.fragment_size() as u64))
}

fn checked_seconds(seconds: u32) -> Result<Duration, ControlError> {
    if !(1..=MAX_RECORD_SECONDS).contains(&seconds) {
        return Err(ControlError::new(
            ControlErrorCode::OutOfRange,
            format!("{seconds} s is outside 1..={MAX_RECORD_SECONDS}"),
        ));
    }
    Ok(Duration::from_secs(seconds.into()))
}
