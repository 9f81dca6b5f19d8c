//! systemd integration (`Type=notify`): READY once the device can stream and has tried its
//! broker, WATCHDOG while the media pipeline makes progress, STOPPING on shutdown. Without
//! `NOTIFY_SOCKET` (not under systemd) every call is a no-op.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::media::MediaEngine;

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Pets systemd's watchdog at half its interval, but only while the device is healthy: idle
/// (nobody watching), or frames leaving the encoder. A pipeline that wedges with viewers
/// attached stops the petting, and systemd restarts the service.
pub fn spawn_watchdog(media: Arc<MediaEngine>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            let (fps, _) = media.rates();
            if media.viewers() == 0 || fps > 0.0 {
                notify(&[NotifyState::Watchdog]);
            } else {
                tracing::warn!("viewers attached but no frames; withholding the watchdog ping");
            }
        }
    });
}
