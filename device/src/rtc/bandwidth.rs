//! How much one viewer's path can carry: a send-side estimate built from the viewer's
//! transport-wide congestion control feedback (TWCC), for the shared encoder to follow.
//!
//! Google Congestion Control's two signals, acting on one rate:
//! - **delay**: packets of one frame leave together and should arrive spaced as they left; when
//!   the gaps between arrival groups keep growing, a queue is building on the path (the `tc tbf`
//!   of a narrow uplink, a Wi-Fi retry queue) and we are sending more than it carries;
//! - **loss**: a path that drops without queueing (a policer, a bad radio) shows only as loss.
//!
//! Arrival grouping and the received-rate meter are the `rtc` crate's. The delay detector
//! ([`super::trendline`]) and both rate controls are ours:
//! - the crate's own [`rtc::interceptor::Gcc`] notices a queue only at over one and a half times
//!   the link's rate, so on a narrow uplink it ran with `tc tbf`'s queue full (150 ms) and
//!   learned only from loss (`tests_bandwidth.rs` runs both on the same simulated link);
//! - its loss half keeps a rate of its own that climbs to the maximum while the path is
//!   clean, so when loss came it cut from 8 Mbit/s and took seconds to matter. Ours cuts the
//!   one rate the delay signal drives, to below what actually arrived, at most once per
//!   [`LOSS_DECREASE_HOLD`], and holds it while loss stays at a few per cent: a drop-tail
//!   queue that is full shows no growing delay, only loss.
//!
//! The delay-based rate also forgets the rate at which the path last queued once the path
//! clearly carries more, and grows fast away from it, so a link that widens again is used again
//! within seconds.
//!
//! Nothing here reads a clock: every instant is a parameter, so the tests drive it through a
//! simulated link with exact timing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    ArrivalGroupAccumulator, BandwidthEstimator, EstimatorStats, PacketReport, RateCalculator,
    Usage,
};

pub use super::delay_rate::RateBounds;
use super::delay_rate::{DECREASE_FACTOR, DelayRate};
use super::queue_delay::QueueDelay;
use super::trendline::Trendline;

/// A queue standing this high is drained: the rate comes down as if the delay were growing.
/// Well under `tc tbf`'s 150 ms, so the queue never sits full, and above what a keyframe (at
/// most 200 ms of the encoder's rate, queued behind at 85 % of the link) leaves standing for
/// a moment.
const DRAIN_ABOVE: Duration = Duration::from_millis(100);
/// While a queue stands this high the rate does not grow: growing into it refills it.
const GROW_BELOW: Duration = Duration::from_millis(50);
/// A "queue" that has stood at one level this long while being drained is no queue: a real one
/// shrinks once the cuts (every 400 ms) take effect, or, on a link narrower than the floor,
/// keeps growing. One that neither shrinks nor grows is a longer path (a handover, an ICE
/// restart onto another route), and it becomes the new base; otherwise the rate would be cut
/// to the floor until the old base aged out (10 s). Measured for a real queue: `narrow_link`'s
/// 500 kbit/s drop stood above 100 ms for 1.9 s, but fell from its 365 ms peak within 1.2 s.
const REBASE_AFTER: Duration = Duration::from_secs(2);
/// "One level": within this share either way. A rise past it starts a new level (the queue is
/// still filling), a fall below it shows the queue draining.
const LEVEL_BAND: f64 = 0.1;
/// Below this loss the path has room: the delay signal may raise the rate. Above [`LOSS_HIGH`]
/// the rate is cut in proportion (by half the loss); in between it holds, as a few per cent is
/// normal on radio.
const LOSS_LOW: f64 = 0.02;
const LOSS_HIGH: f64 = 0.10;
/// Loss is judged over at least this long and this many packets.
const LOSS_INTERVAL: Duration = Duration::from_millis(300);
const LOSS_MIN_PACKETS: usize = 20;
/// A cut needs this long to show in the feedback (a round trip plus the encoder's reaction),
/// so loss reported sooner is still the old rate's and must not cut again.
const LOSS_DECREASE_HOLD: Duration = Duration::from_millis(1000);

/// The estimate as the rest of the device sees it: shared with the estimator inside the
/// connection's interceptor chain, where nothing else can reach. It also counts what was
/// resent on the path lately ([`super::retransmissions`]), since that comes out of the same
/// capacity as the video, and holds the viewer's own figure for its path when it sends one
/// (REMB, [`super::remb`]).
#[derive(Clone, Default)]
pub struct LinkEstimate {
    bps: Arc<AtomicU64>,
    resent: Arc<Mutex<VecDeque<(Instant, f64)>>>,
    /// The viewer's latest REMB, and when it came.
    receiver: Arc<Mutex<Option<(Instant, f64)>>>,
}

/// A viewer's REMB counts for this long after it came. Receivers that send it repeat it about
/// every second, and at once when their estimate falls; one that stopped (a renegotiation
/// that dropped `goog-remb`) must not hold the stream down for the rest of the session.
const RECEIVER_FIGURE_KEPT: Duration = Duration::from_secs(5);

/// Resends are counted over this long.
const RESENT_WINDOW: Duration = Duration::from_secs(1);
/// What resends may take from the media's share, at most. The budget for them is a quarter of
/// the estimate, but of the estimate when they were sent: right after the estimate falls, the
/// last second's resends can be a larger share of the new one.
const RESENT_MAX_SHARE: f64 = 0.5;

impl LinkEstimate {
    /// The current estimate in bit/s, or `None` before the viewer's first feedback (a viewer
    /// that sends neither TWCC nor REMB never has one).
    pub fn bits_per_second(&self) -> Option<f64> {
        self.bits_per_second_at(Instant::now())
    }

    /// The estimate at `now`: ours from the TWCC feedback, lowered to the viewer's own REMB
    /// figure while that is fresh, or the REMB figure alone for a viewer without TWCC. REMB is
    /// an extra input, never a reason to send more than our own estimate allows: a receiver
    /// estimates from arrival times alone and does not see its own loss as we do, and libwebrtc's
    /// sender caps its estimate with REMB in the same way.
    pub fn bits_per_second_at(&self, now: Instant) -> Option<f64> {
        let ours = f64::from_bits(self.bps.load(Ordering::Relaxed));
        let ours = (ours > 0.0).then_some(ours);
        let theirs = self
            .receiver
            .lock()
            .expect("receiver figure")
            .filter(|(at, _)| now.saturating_duration_since(*at) <= RECEIVER_FIGURE_KEPT)
            .map(|(_, bps)| bps);
        match (ours, theirs) {
            (Some(ours), Some(theirs)) => Some(ours.min(theirs)),
            (ours, theirs) => ours.or(theirs),
        }
    }

    /// Takes the viewer's REMB of `bps`, received at `now` (already checked and bounded by
    /// [`super::remb`]).
    pub(super) fn receiver_estimate(&self, now: Instant, bps: f64) {
        *self.receiver.lock().expect("receiver figure") = Some((now, bps));
    }

    /// What the path has for new media now: the estimate less what retransmissions took over
    /// the last second. After a link narrows, the viewer asks for everything the full queue
    /// dropped, and those resends share the queue with the video; an encoder that kept its
    /// whole share kept the queue full and the loss going for seconds (measured: loss above
    /// 10 % for 3.3 s after a 3 → 1 Mbit/s drop). libwebrtc takes its retransmission rate off
    /// the encoder's target for the same reason.
    pub fn for_media_bps(&self, now: Instant) -> Option<f64> {
        let bps = self.bits_per_second_at(now)?;
        let mut resent = self.resent.lock().expect("resent window");
        while resent
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > RESENT_WINDOW)
        {
            resent.pop_front();
        }
        let resent_bps =
            resent.iter().map(|(_, bits)| bits).sum::<f64>() / RESENT_WINDOW.as_secs_f64();
        Some(bps - resent_bps.min(bps * RESENT_MAX_SHARE))
    }

    pub(super) fn publish(&self, bits_per_second: f64) {
        self.bps.store(bits_per_second.to_bits(), Ordering::Relaxed);
    }

    /// Counts a retransmission of `bits` that left at `now`.
    pub(super) fn resent(&self, now: Instant, bits: f64) {
        let mut resent = self.resent.lock().expect("resent window");
        // Bounded by the budget (a few hundred a second at most), and pruned on every read;
        // this bound only matters if nothing reads.
        if resent.len() >= 4096 {
            resent.pop_front();
        }
        resent.push_back((now, bits));
    }
}

/// A drain in progress: the level the standing queue last rose to, and since when.
struct Draining {
    level: Duration,
    since: Instant,
}

/// The estimator for one connection.
pub struct LinkEstimator {
    groups: ArrivalGroupAccumulator,
    trendline: Trendline,
    queue: QueueDelay,
    /// Set while the standing queue is above [`DRAIN_ABOVE`].
    draining: Option<Draining>,
    received: RateCalculator,
    loss: LossRate,
    rate: DelayRate,
    bounds: RateBounds,
    target: f64,
    published: LinkEstimate,
}

impl LinkEstimator {
    /// An estimator starting at `bounds.start`, and the handle it publishes to.
    pub fn new(bounds: RateBounds) -> (Self, LinkEstimate) {
        let published = LinkEstimate::default();
        let start = bounds.start.clamp(bounds.min, bounds.max);
        let estimator = Self {
            groups: ArrivalGroupAccumulator::default(),
            trendline: Trendline::default(),
            queue: QueueDelay::default(),
            draining: None,
            received: RateCalculator::default(),
            loss: LossRate::default(),
            rate: DelayRate::new(start, bounds),
            bounds,
            target: start,
            published: published.clone(),
        };
        (estimator, published)
    }

    /// The estimate in bit/s.
    pub fn estimate(&self) -> f64 {
        self.target
    }
}

impl BandwidthEstimator for LinkEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        let mut usage = self.trendline.usage();
        for report in reports {
            if report.arrived {
                self.received.add(now, report.size);
            }
            if let Some(delay) = self.groups.accumulate(report) {
                usage = self.trendline.update(&delay);
            }
        }
        let received = self.received.rate_bits_per_second(now);
        // A queue that stands full grows no more, so the trend calls it normal: the standing
        // queue decides then (see `queue_delay`).
        self.queue.on_reports(reports);
        let standing = self.queue.standing();
        if standing > DRAIN_ABOVE {
            let drain = self.draining.get_or_insert(Draining {
                level: standing,
                since: now,
            });
            if standing > drain.level.mul_f64(1.0 + LEVEL_BAND) {
                *drain = Draining {
                    level: standing,
                    since: now,
                };
            }
            let stuck = standing >= drain.level.mul_f64(1.0 - LEVEL_BAND);
            if stuck && now.saturating_duration_since(drain.since) >= REBASE_AFTER {
                tracing::info!(
                    ?standing,
                    "delay stayed level while draining: a longer path"
                );
                self.queue.rebase();
                // A new path, so what the old one carried says nothing about it; and the cuts
                // since the change took the rate's own fall for the ceiling, near which the
                // climb back is slow (measured: 1.7 of 2.5 Mbit/s 10 s after a handover). As
                // libwebrtc does on a route change, find the new path's ceiling afresh.
                self.rate.ceiling = None;
                self.draining = None;
            } else {
                usage = Usage::Over;
            }
        } else {
            self.draining = None;
        }
        // Loss acts on the same rate the delay signal drives, as libwebrtc's sender does: a
        // drop-tail queue that is full shows no growing delay at all, only loss, so the two
        // halves must not drift apart.
        // A cut goes below what actually arrived, too: with a full queue the rate sent can be
        // well above what the path delivers, and cutting only that would stay above the link.
        let lost = reports.iter().filter(|r| !r.arrived).count();
        let verdict = self.loss.judge(now, lost, reports.len());
        if let LossVerdict::Cut(factor) = verdict {
            let delivered = received.map_or(f64::INFINITY, |r| r * DECREASE_FACTOR);
            self.rate
                .cut(now, (self.rate.target * factor).min(delivered), received);
        }
        let may_grow = verdict == LossVerdict::Grow && standing < GROW_BELOW;
        self.rate.standing = standing;
        self.target = self
            .rate
            .update(now, usage, received, may_grow)
            .clamp(self.bounds.min, self.bounds.max);
        self.published.publish(self.target);
    }

    fn target_bitrate(&self) -> f64 {
        self.estimate()
    }

    fn stats(&self) -> EstimatorStats {
        let mut stats = EstimatorStats::default();
        stats.delay_based_bitrate = Some(self.rate.target);
        stats.packet_loss = self.loss.fraction;
        stats
    }
}

/// What the viewer's latest loss report says to do with the rate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LossVerdict {
    /// Little or no loss: the delay signal may raise the rate.
    Grow,
    /// A few per cent: keep the rate (normal on radio; reacting would give up capacity).
    Hold,
    /// Heavy loss: multiply the rate by this.
    Cut(f64),
}

/// The loss half: judges the feedback's per-packet verdicts over intervals (a policer, a bad
/// radio, or a queue that overflowed without its delay growing).
#[derive(Default)]
struct LossRate {
    /// Lost and reported since the interval began.
    lost: usize,
    total: usize,
    interval_start: Option<Instant>,
    /// The last interval's verdict, which holds until the next.
    verdict: Option<LossVerdict>,
    last_cut: Option<Instant>,
    /// The last interval's loss, for stats.
    fraction: Option<f64>,
}

impl LossRate {
    /// A cut once per interval of heavy loss (at most once per [`LOSS_DECREASE_HOLD`]);
    /// otherwise the last interval's verdict.
    fn judge(&mut self, now: Instant, lost: usize, total: usize) -> LossVerdict {
        self.lost += lost;
        self.total += total;
        let start = *self.interval_start.get_or_insert(now);
        if now.saturating_duration_since(start) < LOSS_INTERVAL || self.total < LOSS_MIN_PACKETS {
            return match self.verdict {
                None | Some(LossVerdict::Grow) => LossVerdict::Grow,
                Some(_) => LossVerdict::Hold,
            };
        }
        let fraction = self.lost as f64 / self.total as f64;
        (self.lost, self.total, self.interval_start) = (0, 0, Some(now));
        self.fraction = Some(fraction);
        let verdict = if fraction < LOSS_LOW {
            LossVerdict::Grow
        } else if fraction > LOSS_HIGH
            && self
                .last_cut
                .is_none_or(|at| now.saturating_duration_since(at) >= LOSS_DECREASE_HOLD)
        {
            self.last_cut = Some(now);
            tracing::debug!(fraction, "path losing: rate down");
            LossVerdict::Cut(1.0 - 0.5 * fraction)
        } else {
            LossVerdict::Hold
        };
        self.verdict = Some(verdict);
        verdict
    }
}

#[cfg(test)]
#[path = "tests_bandwidth.rs"]
mod tests;
