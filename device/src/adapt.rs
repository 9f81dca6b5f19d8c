//! Link adaptation: the shared encoders follow what their viewers' paths carry.
//!
//! Each connected viewer's peer connection estimates its own path (`rtc::bandwidth`). A session
//! registers that estimate here while it streams; a task reads every estimate a few times a
//! second, lets the [`Governor`] of each codec pick a rate, and hands it to the media engine,
//! which runs the encoder at the lower of that and the plan (`video.set`'s bitrate is the
//! ceiling). So a viewer on a 500 kbit/s uplink gets a picture instead of a queue that never
//! drains, and the picture comes back to full quality when the path widens.
//!
//! The media engine knows nothing of peers and the rtc module nothing of encoders; this joins
//! the two, the way `presence` joins media and the broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ferrocam_protocol::control::ViewerLink;

use crate::media::{MediaEngine, VideoCodec};
use crate::rtc::LinkEstimate;

mod governor;

pub use governor::{Governor, Limits};

/// How often the encoders are brought in line with the estimates: often, because every moment
/// the encoder runs above a path that just narrowed is lost packets.
const EVERY: Duration = Duration::from_millis(100);

/// The viewers' estimates and what the encoders were set to.
pub struct LinkAdaptation {
    media: Arc<MediaEngine>,
    limits: Limits,
    viewers: Mutex<Viewers>,
}

#[derive(Default)]
struct Viewers {
    next: u64,
    by_id: HashMap<u64, (VideoCodec, LinkEstimate)>,
}

impl LinkAdaptation {
    /// Starts adapting `media`'s encoders within `limits`.
    pub fn start(media: Arc<MediaEngine>, limits: Limits) -> Arc<Self> {
        let adaptation = Arc::new(Self {
            media,
            limits,
            viewers: Mutex::default(),
        });
        tokio::spawn(run(Arc::downgrade(&adaptation)));
        adaptation
    }

    /// Counts `estimate` for `codec`'s encoder until the returned guard is dropped.
    pub fn watch(self: &Arc<Self>, codec: VideoCodec, estimate: LinkEstimate) -> Watching {
        let mut viewers = self.viewers();
        viewers.next += 1;
        let id = viewers.next;
        viewers.by_id.insert(id, (codec, estimate));
        Watching {
            adaptation: Arc::downgrade(self),
            id,
        }
    }

    /// Each viewer's codec and estimate, for status.
    pub fn links(&self) -> Vec<ViewerLink> {
        let mut links: Vec<_> = self
            .viewers()
            .by_id
            .values()
            .map(|(codec, estimate)| ViewerLink {
                codec: *codec,
                estimate_kbps: estimate.bits_per_second().map(|bps| (bps / 1000.0) as u32),
            })
            .collect();
        links.sort_by_key(|link| link.estimate_kbps);
        links
    }

    fn estimates(&self, codec: VideoCodec) -> Vec<f64> {
        self.viewers()
            .by_id
            .values()
            .filter(|(c, _)| *c == codec)
            .filter_map(|(_, estimate)| estimate.bits_per_second())
            .collect()
    }

    fn viewers(&self) -> std::sync::MutexGuard<'_, Viewers> {
        self.viewers.lock().expect("link adaptation viewers")
    }
}

/// A viewer counted by [`LinkAdaptation::watch`]; dropping it stops counting it.
pub struct Watching {
    adaptation: Weak<LinkAdaptation>,
    id: u64,
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(adaptation) = self.adaptation.upgrade() {
            adaptation.viewers().by_id.remove(&self.id);
        }
    }
}

/// Until the device lets go of the adaptation: read the estimates, decide, apply.
async fn run(adaptation: Weak<LinkAdaptation>) {
    let mut governors: HashMap<VideoCodec, Governor> = HashMap::new();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(adaptation) = adaptation.upgrade() else {
            return;
        };
        let now = Instant::now();
        for codec in adaptation.media.codecs() {
            let estimates = adaptation.estimates(codec);
            let limit =
                governors
                    .entry(codec)
                    .or_default()
                    .decide(now, &estimates, adaptation.limits);
            if adaptation.media.set_link_kbps(codec, limit) {
                let narrowest = estimates.iter().copied().reduce(f64::min);
                tracing::debug!(
                    ?codec,
                    ?limit,
                    ?narrowest,
                    "encoder follows the viewers' paths"
                );
            }
        }
    }
}
