//! systemd integration (`Type=notify`): READY once HTTP listens and the broker link has been
//! tried, WATCHDOG while the async runtime runs, STOPPING on shutdown. No-ops outside systemd.

use std::time::Duration;

use sd_notify::NotifyState;

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

/// Pets the watchdog from a task on the runtime that serves requests: a wedged runtime stops
/// the petting, and systemd restarts the gateway.
pub fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            notify(&[NotifyState::Watchdog]);
        }
    });
}
