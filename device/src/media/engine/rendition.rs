//! One encoded stream viewers can subscribe to: the H.264 stream every capable viewer shares,
//! or the VP8 fallback. Each has its own fan-out, keyframe gate, keyframe target and meter, so a
//! Firefox viewer's keyframe requests never force H.264 keyframes on Chromium viewers, and the
//! other way round.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gstreamer_app as gst_app;
use tokio::sync::broadcast;

use crate::media::AccessUnit;
use crate::media::keyframes::KeyframeGate;
use crate::media::pipeline::{Meter, Output};
use crate::media::rung::Rung;

/// Access units a viewer may fall behind before it skips to the next keyframe: two seconds at
/// 30 fps, enough to ride out a scheduling hiccup, small enough to bound memory.
const VIDEO_FANOUT: usize = 64;

pub(super) struct Rendition {
    pub(super) units: broadcast::Sender<AccessUnit>,
    keyframes: Mutex<KeyframeGate>,
    /// Where forced keyframes go while a pipeline runs (set and cleared by the engine thread).
    target: Mutex<Option<gst_app::AppSink>>,
    pub(super) meter: Arc<Meter>,
    /// What the viewers' paths carry, in kbit/s (0: no limit), set by link adaptation; the
    /// encoder runs at the lower of this and the plan.
    link_kbps: AtomicU32,
    /// What the encoder was last set to, in kbit/s (0: not running).
    encoder_kbps: AtomicU32,
    /// The ladder's rung the stream stands on, set by link adaptation (the main stream only).
    rung: Mutex<Rung>,
}

impl Rendition {
    pub(super) fn new(keyframe_min_interval: Duration) -> Self {
        Self {
            units: broadcast::channel(VIDEO_FANOUT).0,
            keyframes: Mutex::new(KeyframeGate::new(keyframe_min_interval)),
            target: Mutex::default(),
            meter: Arc::default(),
            link_kbps: AtomicU32::new(0),
            encoder_kbps: AtomicU32::new(0),
            rung: Mutex::default(),
        }
    }

    /// The viewers' paths' limit, if any.
    pub(super) fn link_kbps(&self) -> Option<u32> {
        Some(self.link_kbps.load(Ordering::Relaxed)).filter(|&kbps| kbps > 0)
    }

    pub(super) fn set_link_kbps(&self, kbps: Option<u32>) {
        self.link_kbps.store(kbps.unwrap_or(0), Ordering::Relaxed);
    }

    /// The bitrate for an encoder whose plan says `planned`: the plan, unless the viewers'
    /// paths carry less.
    pub(super) fn bitrate_for(&self, planned: u32) -> u32 {
        self.link_kbps().map_or(planned, |link| link.min(planned))
    }

    pub(super) fn encoder_kbps(&self) -> u32 {
        self.encoder_kbps.load(Ordering::Relaxed)
    }

    pub(super) fn set_encoder_kbps(&self, kbps: u32) {
        self.encoder_kbps.store(kbps, Ordering::Relaxed);
    }

    pub(super) fn rung(&self) -> Rung {
        *self.rung.lock().expect("rung")
    }

    /// Whether that changed the rung.
    pub(super) fn set_rung(&self, rung: Rung) -> bool {
        std::mem::replace(&mut *self.rung.lock().expect("rung"), rung) != rung
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
