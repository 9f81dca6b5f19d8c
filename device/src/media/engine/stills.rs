//! Snapshots any time: while viewers watch (the latest frame), when nobody does (the camera is
//! woken for it and goes back to sleep after the idle timeout, so a client polling every few
//! seconds keeps it warm exactly as long as it polls), and from a camera whose own H.264 passes
//! through (its next keyframe, decoded). Recent snapshots are kept, so a client that accepts an
//! older picture (`max_age`) does not wake the camera at all.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gstreamer_app as gst_app;
use tokio::sync::broadcast;

use super::{LeaseKind, MediaEngine};
use crate::media::pipeline::frame_age;
use crate::media::snapshot::{self, Jpeg, JpegEncoder};
use crate::media::{KeyframeReason, Stream};

/// How long an idle camera has to deliver its first usable frame.
const COLD_LIMIT: Duration = Duration::from_secs(3);
/// How long a running camera has to deliver a frame (or a keyframe, passing through).
const WARM_LIMIT: Duration = Duration::from_secs(2);
/// Recent snapshots kept (one per requested width).
const KEPT: usize = 4;
/// Snapshots taken at once; more wait (each holds a raw frame and a blocking thread).
const AT_ONCE: usize = 2;
/// A frame older than this is not "the live picture" (a camera that stalled after its last
/// frame leaves that frame waiting in the sink).
const MAX_FRAME_AGE: Duration = Duration::from_secs(1);

/// What a snapshot request asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// A snapshot at most this old will do (no new picture is taken if there is one).
    pub max_age: Option<Duration>,
    /// Scale down to this width (aspect ratio kept); the stream's size without it.
    pub width: Option<u32>,
}

/// Why there is no snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The camera cannot be started, or there is no way to make a picture.
    #[error("{0}")]
    Unavailable(String),
    /// The camera started but did not deliver in time.
    #[error("{0}")]
    Timeout(String),
}

/// The engine's snapshot state: the JPEG encoder (kept between snapshots) and recent pictures.
pub(super) struct Stills {
    jpeg: Arc<dyn JpegEncoder>,
    settle_frames: u32,
    recent: Mutex<Vec<(Option<u32>, Jpeg)>>,
    at_once: tokio::sync::Semaphore,
}

impl Stills {
    pub(super) fn new(jpeg: Arc<dyn JpegEncoder>, settle_frames: u32) -> Self {
        Self {
            jpeg,
            settle_frames,
            recent: Mutex::default(),
            at_once: tokio::sync::Semaphore::new(AT_ONCE),
        }
    }

    fn reuse(&self, width: Option<u32>, max_age: Duration) -> Option<Jpeg> {
        let recent = self.recent.lock().expect("recent snapshots");
        recent
            .iter()
            .find(|(w, jpeg)| {
                *w == width
                    && SystemTime::now()
                        .duration_since(jpeg.taken_at)
                        .is_ok_and(|age| age <= max_age)
            })
            .map(|(_, jpeg)| jpeg.clone())
    }

    fn remember(&self, width: Option<u32>, jpeg: &Jpeg) {
        let mut recent = self.recent.lock().expect("recent snapshots");
        recent.retain(|(w, _)| *w != width);
        if recent.len() >= KEPT {
            recent.remove(0);
        }
        recent.push((width, jpeg.clone()));
    }
}

impl MediaEngine {
    /// A JPEG of the live picture. Starts an idle camera if it must (skipping its first frames
    /// while exposure settles); all waiting and encoding happens on a blocking thread, so no
    /// viewer waits for a snapshot.
    pub async fn snapshot(
        self: &Arc<Self>,
        request: SnapshotRequest,
    ) -> Result<Jpeg, SnapshotError> {
        if let Some(max_age) = request.max_age
            && let Some(jpeg) = self.stills.reuse(request.width, max_age)
        {
            self.snapshots_reused.inc();
            return Ok(jpeg);
        }
        let _turn = tokio::time::timeout(WARM_LIMIT, self.stills.at_once.acquire())
            .await
            .map_err(|_| SnapshotError::Unavailable("too many snapshots at once".to_owned()))?
            .expect("never closed");
        // The snapshot this one waited for may be recent enough.
        if let Some(max_age) = request.max_age
            && let Some(jpeg) = self.stills.reuse(request.width, max_age)
        {
            self.snapshots_reused.inc();
            return Ok(jpeg);
        }
        // Listening before the camera starts: a passthrough camera's first keyframe may be
        // the one that makes the snapshot.
        let units = self.shared.h264.units.subscribe();
        let (lease, cold) = self
            .lease(LeaseKind::Still)
            .await
            .map_err(|e| SnapshotError::Unavailable(format!("the camera is unavailable: {e:#}")))?;
        let jpeg = match self.frames().await? {
            Some(frames) => self.still_from_raw(frames, cold, request.width).await,
            None => self.still_from_keyframe(units, cold, request.width).await,
        };
        drop(lease);
        let jpeg = jpeg?;
        self.snapshots_taken.inc();
        self.stills.remember(request.width, &jpeg);
        Ok(jpeg)
    }

    /// The sink of the latest raw frame, or `None` for a passthrough camera.
    async fn frames(&self) -> Result<Option<gst_app::AppSink>, SnapshotError> {
        let (reply, frames) = tokio::sync::oneshot::channel();
        self.send(super::Command::Frames(reply));
        frames
            .await
            .map_err(|_| SnapshotError::Unavailable(super::stopped().to_string()))?
            .map_err(|e| SnapshotError::Unavailable(format!("{e:#}")))
    }

    /// The newest raw frame (after the settling frames, if the camera just started), encoded.
    async fn still_from_raw(
        &self,
        frames: gst_app::AppSink,
        cold: bool,
        width: Option<u32>,
    ) -> Result<Jpeg, SnapshotError> {
        let skip = if cold { self.stills.settle_frames } else { 0 };
        let limit = if cold { COLD_LIMIT } else { WARM_LIMIT };
        let jpeg = Arc::clone(&self.stills.jpeg);
        blocking(move || {
            let deadline = Instant::now() + limit;
            let (mut frame, mut fresh, mut good) = (None, false, 0);
            // Each pull waits for a frame newer than the last. Stale frames and the settling
            // ones are passed over; at the deadline, a settling frame will do, a stale one not.
            while good <= skip {
                let left = deadline.saturating_duration_since(Instant::now());
                let Some(sample) = frames
                    .try_pull_sample(gstreamer::ClockTime::from_nseconds(left.as_nanos() as u64))
                else {
                    break;
                };
                fresh = frame_age(&frames, &sample).is_none_or(|age| age <= MAX_FRAME_AGE);
                good += usize::from(fresh) as u32;
                frame = Some(sample);
            }
            let frame = frame.filter(|_| fresh).ok_or_else(|| {
                SnapshotError::Timeout(format!(
                    "the camera delivered no frame within {} ms",
                    limit.as_millis()
                ))
            })?;
            jpeg.encode(&frame, width)
                .map_err(|e| SnapshotError::Unavailable(format!("{e:#}")))
        })
        .await
    }

    /// A passthrough camera's next keyframe (asked for at once), decoded and encoded.
    async fn still_from_keyframe(
        &self,
        mut units: broadcast::Receiver<crate::media::AccessUnit>,
        cold: bool,
        width: Option<u32>,
    ) -> Result<Jpeg, SnapshotError> {
        let limit = if cold { COLD_LIMIT } else { WARM_LIMIT };
        self.request_keyframe(Stream::H264, KeyframeReason::Join);
        let keyframe = tokio::time::timeout(limit, async {
            loop {
                match units.recv().await {
                    Ok(unit) if unit.keyframe => return Some(unit),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            SnapshotError::Timeout(format!(
                "the camera delivered no keyframe within {} ms",
                limit.as_millis()
            ))
        })?;
        let jpeg = Arc::clone(&self.stills.jpeg);
        blocking(move || {
            let frame = snapshot::decode_keyframe(&keyframe.data)
                .map_err(|e| SnapshotError::Unavailable(format!("{e:#}")))?;
            jpeg.encode(&frame, width)
                .map_err(|e| SnapshotError::Unavailable(format!("{e:#}")))
        })
        .await
    }
}

/// Runs `work` on Tokio's blocking pool.
async fn blocking(
    work: impl FnOnce() -> Result<Jpeg, SnapshotError> + Send + 'static,
) -> Result<Jpeg, SnapshotError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SnapshotError::Unavailable(format!("the snapshot task failed: {e}")))?
}
