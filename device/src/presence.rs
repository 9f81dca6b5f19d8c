//! What the device says about itself in presence, kept current while it runs: the camera's
//! health, and the stream as `video.set` left it (size, rate, bitrate). The media engine knows
//! nothing of presence and the link nothing of media; this joins the two.

use std::sync::Arc;

use ferrocam_protocol::Capabilities;
use tokio::sync::watch;

use crate::media::{MediaEngine, VideoPlan};

/// Starts following `media`; the receiver holds `initial` updated with every change.
pub fn track(media: &Arc<MediaEngine>, initial: Capabilities) -> watch::Receiver<Capabilities> {
    let (tx, rx) = watch::channel(initial);
    let mut health = media.health();
    let mut plan = media.plan_changes();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Ok(()) = health.changed() => {
                    let state = health.borrow_and_update().clone();
                    tx.send_if_modified(|caps| replace(&mut caps.camera, state));
                }
                Ok(()) = plan.changed() => {
                    let plan = plan.borrow_and_update().clone();
                    tx.send_if_modified(|caps| apply(caps, &plan));
                }
                () = tx.closed() => return,
                else => return,
            }
        }
    });
    rx
}

/// Sets `slot` to `value`; whether that changed it.
fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    let changed = *slot != value;
    *slot = value;
    changed
}

/// Copies what `video.set` can change from the plan in force; whether anything changed.
fn apply(caps: &mut Capabilities, plan: &VideoPlan) -> bool {
    let Some(video) = caps.video.as_mut() else {
        return false;
    };
    let before = (video.width, video.height, video.fps, video.bitrate_kbps);
    video.width = plan.width;
    video.height = plan.height;
    video.fps = plan.fps;
    video.bitrate_kbps = plan.bitrate_kbps;
    before != (video.width, video.height, video.fps, video.bitrate_kbps)
}
