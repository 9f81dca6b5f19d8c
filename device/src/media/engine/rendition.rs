//! One encoded stream viewers can subscribe to: the H.264 stream every capable viewer shares,
//! or the VP8 fallback. Each has its own fan-out, keyframe gate, keyframe target and meter, so a
//! Firefox viewer's keyframe requests never force H.264 keyframes on Chromium viewers, and the
//! other way round.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gstreamer_app as gst_app;
use tokio::sync::broadcast;

use crate::media::AccessUnit;
use crate::media::keyframes::KeyframeGate;
use crate::media::pipeline::{Meter, Output};

/// Access units a viewer may fall behind before it skips to the next keyframe: two seconds at
/// 30 fps, enough to ride out a scheduling hiccup, small enough to bound memory.
const VIDEO_FANOUT: usize = 64;

pub(super) struct Rendition {
    pub(super) units: broadcast::Sender<AccessUnit>,
    keyframes: Mutex<KeyframeGate>,
    /// Where forced keyframes go while a pipeline runs (set and cleared by the engine thread).
    target: Mutex<Option<gst_app::AppSink>>,
    pub(super) meter: Arc<Meter>,
}

impl Rendition {
    pub(super) fn new(keyframe_min_interval: Duration) -> Self {
        Self {
            units: broadcast::channel(VIDEO_FANOUT).0,
            keyframes: Mutex::new(KeyframeGate::new(keyframe_min_interval)),
            target: Mutex::default(),
            meter: Arc::default(),
        }
    }

    pub(super) fn keyframes(&self) -> MutexGuard<'_, KeyframeGate> {
        self.keyframes.lock().expect("keyframe gate")
    }

    pub(super) fn target(&self) -> MutexGuard<'_, Option<gst_app::AppSink>> {
        self.target.lock().expect("keyframe target")
    }

    /// What a pipeline needs to feed this rendition. `me` picks this rendition out of the
    /// shared state the callback keeps alive.
    pub(super) fn output<S: Send + Sync + 'static>(
        &self,
        shared: Arc<S>,
        me: fn(&S) -> &Rendition,
    ) -> Output {
        Output {
            units: self.units.clone(),
            on_keyframe: Arc::new(move || me(&shared).keyframes().on_keyframe()),
            meter: Arc::clone(&self.meter),
        }
    }
}
