//! Link adaptation: the shared encoders follow what their viewers' paths carry.
//!
//! Each connected viewer's peer connection estimates its own path (`rtc::bandwidth`). A session
//! registers that estimate here while it streams; a task reads every estimate a few times a
//! second, seats each H.264 viewer on the full stream or, if its path is far narrower than the
//! others', on the low one ([`placement`]), lets the [`Governor`] of each stream pick a rate
//! from its viewers' estimates, and hands it to the media engine, which runs that stream's
//! encoder at the lower of this and the plan (`video.set`'s bitrate is the ceiling). So a viewer
//! on a 500 kbit/s uplink gets a picture instead of a queue that never drains, the picture comes
//! back to full quality when the path widens, and one narrow viewer does not drag the others
//! down.
//!
//! The media engine knows nothing of peers and the rtc module nothing of encoders; this joins
//! the two, the way `presence` joins media and the broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ferrocam_protocol::SessionId;
use ferrocam_protocol::control::{Rendition, ViewerLink};
use tokio::sync::watch;

use crate::media::{MediaEngine, Stream, VideoCodec};
use crate::rtc::LinkEstimate;

mod governor;
mod ladder;
mod placement;

pub use governor::{Governor, Limits};
use ladder::{Ladder, Planned};
use placement::{FullStream, Seat};

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
    by_id: HashMap<u64, Viewer>,
}

/// One streaming viewer: its codec, its path's estimate, and the stream it is told to watch.
struct Viewer {
    session: SessionId,
    codec: VideoCodec,
    estimate: LinkEstimate,
    seat: Seat,
    told: watch::Sender<Stream>,
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

    /// Counts `estimate` for the encoders of `codec` until the returned guard is dropped. The
    /// guard says which stream of the codec the viewer should watch.
    pub fn watch(
        self: &Arc<Self>,
        session: SessionId,
        codec: VideoCodec,
        estimate: LinkEstimate,
    ) -> Watching {
        let stream = Stream::main(codec);
        let (told, stream_rx) = watch::channel(stream);
        let mut viewers = self.viewers();
        viewers.next += 1;
        let id = viewers.next;
        viewers.by_id.insert(
            id,
            Viewer {
                session,
                codec,
                estimate,
                seat: Seat::new(stream, Instant::now()),
                told,
            },
        );
        Watching {
            adaptation: Arc::downgrade(self),
            id,
            stream: stream_rx,
        }
    }

    /// Each viewer's codec, rendition, frame and estimate, for status; `asking` is told which
    /// is its own.
    pub fn links(&self, asking: Option<&SessionId>) -> Vec<ViewerLink> {
        let mut links: Vec<_> = self
            .viewers()
            .by_id
            .values()
            .map(|viewer| {
                let frame = self.media.frame(viewer.seat.stream);
                ViewerLink {
                    codec: viewer.codec,
                    estimate_kbps: viewer
                        .estimate
                        .bits_per_second()
                        .map(|bps| (bps / 1000.0) as u32),
                    rendition: match viewer.seat.stream {
                        Stream::H264Low => Rendition::Low,
                        _ => Rendition::Full,
                    },
                    width: frame.width,
                    height: frame.height,
                    fps: frame.fps,
                    you: asking == Some(&viewer.session),
                }
            })
            .collect();
        links.sort_by_key(|link| link.estimate_kbps);
        links
    }

    /// Seats every H.264 viewer on the full or the low stream (all on the full one when the
    /// camera makes no low stream). Returns the moves, for the caller to tell once the
    /// encoders' rates are set: a viewer's first frames on its new stream should already be
    /// at that stream's rate for it.
    fn place(&self, now: Instant) -> Vec<(watch::Sender<Stream>, Stream)> {
        let low_exists = self.media.streams().contains(&Stream::H264Low);
        let ceiling_kbps = self.media.plan().bitrate_kbps;
        let sending_kbps = self.media.rates().1;
        let mut moves = Vec::new();
        let mut viewers = self.viewers();
        let widest = viewers_of(&viewers, VideoCodec::H264)
            .filter_map(|v| v.estimate.bits_per_second())
            .reduce(f64::max);
        for viewer in viewers.by_id.values_mut() {
            if viewer.codec != VideoCodec::H264 {
                continue;
            }
            let stream = match widest {
                Some(widest_bps) if low_exists => placement::choose(
                    viewer.seat,
                    viewer.estimate.bits_per_second(),
                    FullStream {
                        widest_bps,
                        ceiling_kbps,
                        sending_kbps,
                    },
                    now,
                ),
                _ => Stream::H264,
            };
            if stream != viewer.seat.stream {
                tracing::info!(
                    from = viewer.seat.stream.name(),
                    to = stream.name(),
                    estimate_kbps = viewer
                        .estimate
                        .bits_per_second()
                        .map(|b| (b / 1000.0) as u32),
                    "viewer moves to another stream"
                );
                viewer.seat = Seat::new(stream, now);
                moves.push((viewer.told.clone(), stream));
            }
        }
        moves
    }

    /// What the paths of the viewers seated on `stream` have for new media (bit/s): each
    /// estimate less its recent retransmissions.
    fn estimates(&self, stream: Stream, now: Instant) -> Vec<f64> {
        self.viewers()
            .by_id
            .values()
            .filter(|viewer| viewer.seat.stream == stream)
            .filter_map(|viewer| viewer.estimate.for_media_bps(now))
            .collect()
    }

    fn viewers(&self) -> std::sync::MutexGuard<'_, Viewers> {
        self.viewers.lock().expect("link adaptation viewers")
    }
}

fn viewers_of(viewers: &Viewers, codec: VideoCodec) -> impl Iterator<Item = &Viewer> {
    viewers.by_id.values().filter(move |v| v.codec == codec)
}

/// A viewer counted by [`LinkAdaptation::watch`]; dropping it stops counting it.
pub struct Watching {
    adaptation: Weak<LinkAdaptation>,
    id: u64,
    stream: watch::Receiver<Stream>,
}

impl Watching {
    /// The stream this viewer should watch; changes when the viewer is moved.
    pub fn stream(&self) -> watch::Receiver<Stream> {
        self.stream.clone()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(adaptation) = self.adaptation.upgrade() {
            adaptation.viewers().by_id.remove(&self.id);
        }
    }
}

/// Until the device lets go of the adaptation: read the estimates, seat the viewers, decide
/// each stream's rate (and the main stream's rung of the ladder), apply.
async fn run(adaptation: Weak<LinkAdaptation>) {
    let mut governors: HashMap<Stream, Governor> = HashMap::new();
    let mut ladder = Ladder::default();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(adaptation) = adaptation.upgrade() else {
            return;
        };
        let now = Instant::now();
        let moves = adaptation.place(now);
        if !moves.is_empty() {
            ladder.seating_changed();
        }
        for stream in adaptation.media.streams() {
            let estimates = adaptation.estimates(stream, now);
            let limit =
                governors
                    .entry(stream)
                    .or_default()
                    .decide(now, &estimates, adaptation.limits);
            // The low stream, with nobody seated on it, keeps its last limit: a viewer leaving
            // it still receives it until the full stream's keyframe, and the next to arrive is
            // most likely on a link like the last one's.
            if limit.is_none() && stream == Stream::H264Low {
                continue;
            }
            if adaptation.media.set_link_kbps(stream, limit) {
                let narrowest = estimates.iter().copied().reduce(f64::min);
                tracing::debug!(
                    stream = stream.name(),
                    ?limit,
                    ?narrowest,
                    "encoder follows the viewers' paths"
                );
            }
            if stream == Stream::H264 {
                let plan = adaptation.media.plan();
                // The encoder's real ceiling: a plan above `--max-bitrate-kbps` never gets more.
                let planned = Planned {
                    frame: plan.frame(),
                    ceiling_kbps: plan.bitrate_kbps.min(adaptation.limits.max_kbps),
                };
                let rung = ladder.decide(now, limit, planned);
                if adaptation.media.set_rung(stream, rung) {
                    let frame = rung.frame(planned.frame);
                    tracing::info!(
                        rung = rung.name(),
                        width = frame.width,
                        height = frame.height,
                        fps = frame.fps,
                        ?limit,
                        "main stream steps to another size"
                    );
                }
            }
        }
        for (told, stream) in moves {
            told.send_replace(stream);
        }
    }
}
