//! `--record-trigger`: an input whose rising edge starts an event clip (a door contact, a PIR
//! motion sensor on a GPIO line). The line is read every 20 ms through a function the caller
//! gives (main wires a GPIO line to it): fast enough for any sensor a clip is worth starting
//! for, and it works the same on the kernel's chips and on the fake one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Request;

/// How often the line is read.
const POLL: Duration = Duration::from_millis(20);

type Requests = mpsc::Sender<(
    Request,
    oneshot::Sender<Result<(), ferrocam_protocol::control::ControlError>>,
)>;

/// A named input and how to read it.
pub struct Trigger {
    /// For the log.
    pub name: String,
    /// The line's level now (an error reads as low).
    pub read: Arc<dyn Fn() -> anyhow::Result<bool> + Send + Sync>,
}

impl Trigger {
    /// Watches the line for as long as the recorder lives, asking for a `clip` on each rising
    /// edge.
    pub(super) fn watch(self, requests: Requests, clip: Duration) {
        tokio::spawn(async move {
            let mut was = (self.read)().unwrap_or(false);
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let now = (self.read)().unwrap_or(false);
                if now && !was {
                    tracing::info!(line = %self.name, "trigger: recording a clip");
                    let (reply, _answer) = oneshot::channel();
                    if requests.send((Request::Clip(clip), reply)).await.is_err() {
                        return; // the recorder is gone
                    }
                }
                was = now;
            }
        });
    }
}
