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
    RateControlState, Usage,
};

use super::queue_delay::QueueDelay;
use super::trendline::Trendline;

/// A decrease goes to this share of what the path delivered while it was queueing, so the queue
/// drains (GCC's β).
const DECREASE_FACTOR: f64 = 0.85;
/// Growth per second near the last rate at which the path queued: gentle, as the path is known
/// to fill around there. A token bucket (`tc tbf`'s 16 kB burst, a DSL shaper) lets a rate
/// above the link through without queueing until its saved-up tokens run out, so the delay
/// signal comes a second or more late, and whatever was added meanwhile becomes queue at once:
/// at 8 % a second (GCC's figure) the estimate reached 1.5× a 500 kbit/s link before the first
/// sign, and frames waited 200–250 ms (`narrow_link`, with the resolution ladder, whose small
/// frames follow the rate closely). At 5 % the worst second stayed near 100 ms.
const NEAR_GROWTH_PER_SECOND: f64 = 1.05;
/// Growth per second away from it: once the path has carried clearly more than its old ceiling,
/// the ceiling is stale (a link that widened again) and the camera should get back its picture
/// within seconds, not half a minute.
const FAR_GROWTH_PER_SECOND: f64 = 1.3;
/// "Near" the ceiling is this band around it. At 1.15× the estimate, the video (85 % of it)
/// plus its headers already fill what the path carried when it queued.
const NEAR_CEILING_FROM: f64 = 0.9;
const NEAR_CEILING_TO: f64 = 1.15;
/// Growth per second above the band while the ceiling still stands: a little faster, towards
/// the proof that the link widened ([`CEILING_FORGOTTEN_ABOVE`]), but no faster than GCC's own
/// increase, for the token bucket's sake (above).
const PAST_CEILING_GROWTH_PER_SECOND: f64 = 1.08;
/// Deliveries this far above the last ceiling, for this long, mean the ceiling no longer holds.
/// One moment above proves nothing: a token bucket that sat below its rate for a while lets its
/// burst through at once (16 kB in `narrow_link`'s 500 kbit/s step: deliveries measured at 620,
/// 1.3× the ceiling), and forgetting on that ran the estimate to 1.5× the link.
const CEILING_FORGOTTEN_ABOVE: f64 = 1.2;
const CEILING_FORGOTTEN_AFTER: Duration = Duration::from_millis(1500);
/// Growth is capped at this multiple of what actually arrives (plus a packet's worth), so an
/// encoder that sends less than it may (a still scene) does not let the estimate run away.
const MAX_ABOVE_RECEIVED: f64 = 1.5;
/// The same cap while the path's ceiling is known. A token bucket passes its burst before any
/// queue shows, so near its rate the delay signal comes late: at 1.5× the estimate climbed to
/// 1.3× a 500 kbit/s link before each cut, and every climb refilled the 150 ms queue (glass to
/// glass p95 near 200 ms in `narrow_link`). At 1.2× the video (85 % of the estimate) can still
/// grow 2 % a step, more than the gentle growth near a ceiling asks.
const MAX_ABOVE_RECEIVED_NEAR_CEILING: f64 = 1.2;
const RECEIVED_SLACK_BPS: f64 = 10_000.0;
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
/// One increase per this interval, so each acts on fresh evidence.
const RATE_CONTROL_INTERVAL: Duration = Duration::from_millis(200);
/// One decrease per this interval. A decrease goes to a share of what arrived, and what arrives
/// falls as we send less: deciding again before the last decrease shows in the feedback
/// ratchets the rate down to the floor (measured: every 60 ms while a queue drained, from 1.4
/// Mbit/s to 150 kbit/s on a 1 Mbit/s link, then eight seconds to climb back).
const DECREASE_INTERVAL: Duration = Duration::from_millis(400);
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
/// capacity as the video.
#[derive(Clone, Default)]
pub struct LinkEstimate {
    bps: Arc<AtomicU64>,
    resent: Arc<Mutex<VecDeque<(Instant, f64)>>>,
}

/// Resends are counted over this long.
const RESENT_WINDOW: Duration = Duration::from_secs(1);
/// What resends may take from the media's share, at most. The budget for them is a quarter of
/// the estimate, but of the estimate when they were sent: right after the estimate falls, the
/// last second's resends can be a larger share of the new one.
const RESENT_MAX_SHARE: f64 = 0.5;

impl LinkEstimate {
    /// The current estimate in bit/s, or `None` before the viewer's first feedback (a viewer
    /// whose browser sends no TWCC never has one).
    pub fn bits_per_second(&self) -> Option<f64> {
        let bps = f64::from_bits(self.bps.load(Ordering::Relaxed));
        (bps > 0.0).then_some(bps)
    }

    /// What the path has for new media now: the estimate less what retransmissions took over
    /// the last second. After a link narrows, the viewer asks for everything the full queue
    /// dropped, and those resends share the queue with the video; an encoder that kept its
    /// whole share kept the queue full and the loss going for seconds (measured: loss above
    /// 10 % for 3.3 s after a 3 → 1 Mbit/s drop). libwebrtc takes its retransmission rate off
    /// the encoder's target for the same reason.
    pub fn for_media_bps(&self, now: Instant) -> Option<f64> {
        let bps = self.bits_per_second()?;
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

/// Where the rate starts and the bounds it stays in, in bit/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateBounds {
    pub start: f64,
    pub min: f64,
    pub max: f64,
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

/// The delay-based rate: down to what the path delivered when it queued, back up gently near
/// that ceiling and quickly away from it.
struct DelayRate {
    state: RateControlState,
    target: f64,
    bounds: RateBounds,
    /// What the path delivered the last time it queued, until it clearly carries more.
    ceiling: Option<f64>,
    /// Since when deliveries have stayed clearly above the ceiling.
    above_ceiling_since: Option<Instant>,
    last_change: Option<Instant>,
    last_decrease: Option<Instant>,
}

impl DelayRate {
    fn new(start: f64, bounds: RateBounds) -> Self {
        Self {
            state: RateControlState::default(),
            target: start,
            bounds,
            ceiling: None,
            above_ceiling_since: None,
            last_change: None,
            last_decrease: None,
        }
    }

    /// Lowers the rate to `to` after loss, and remembers what arrived as where the path filled,
    /// unless the path already showed it fills higher: loss often comes right after a delay
    /// decrease, while what arrives is still falling from it. Taking that dip as the ceiling
    /// made the path's ordinary rate look like "clearly more", and the fast growth meant for a
    /// widened link then ran to 1.8× a 500 kbit/s link (measured in `narrow_link`).
    fn cut(&mut self, now: Instant, to: f64, received: Option<f64>) {
        self.target = to.clamp(self.bounds.min, self.bounds.max);
        let filled_at = received.unwrap_or(self.target);
        self.ceiling = Some(self.ceiling.map_or(filled_at, |c| c.max(filled_at)));
        self.last_change = Some(now);
        self.last_decrease = Some(now);
    }

    /// Drops the ceiling once deliveries have stayed clearly above it (see
    /// [`CEILING_FORGOTTEN_AFTER`]).
    fn forget_a_stale_ceiling(&mut self, now: Instant, received: Option<f64>) {
        let Some(ceiling) = self.ceiling else {
            return;
        };
        if received.is_none_or(|r| r <= ceiling * CEILING_FORGOTTEN_ABOVE) {
            self.above_ceiling_since = None;
            return;
        }
        let since = *self.above_ceiling_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= CEILING_FORGOTTEN_AFTER {
            self.ceiling = None;
            self.above_ceiling_since = None;
        }
    }

    /// `may_grow`: whether loss allows an increase (it holds the rate at a few per cent).
    fn update(&mut self, now: Instant, usage: Usage, received: Option<f64>, may_grow: bool) -> f64 {
        self.state = self.state.next(usage);
        let since = self.last_change.map_or(RATE_CONTROL_INTERVAL, |last| {
            now.saturating_duration_since(last)
        });
        if since < RATE_CONTROL_INTERVAL && self.state != RateControlState::Decrease {
            return self.target;
        }
        match self.state {
            RateControlState::Hold => {}
            RateControlState::Decrease => {
                // From what arrived, not from what we aimed at: that is what the path carries.
                let Some(received) = received else {
                    return self.target;
                };
                if self
                    .last_decrease
                    .is_some_and(|at| now.saturating_duration_since(at) < DECREASE_INTERVAL)
                {
                    return self.target;
                }
                self.last_decrease = Some(now);
                self.target = (received * DECREASE_FACTOR).min(self.target);
                tracing::debug!(received, target = self.target, "path queueing: rate down");
                self.ceiling = Some(received);
                self.above_ceiling_since = None;
                self.last_change = Some(now);
            }
            RateControlState::Increase if !may_grow => {}
            RateControlState::Increase => {
                // Only what actually arrived shows that the path carries more: an estimate that
                // has merely grown past the ceiling proves nothing (measured: it ran on to 1.6×
                // a 1 Mbit/s link before the queue showed, and the viewer froze).
                self.forget_a_stale_ceiling(now, received);
                // Gentle only near the ceiling: well below it (after a deep cut for loss) the
                // path is known to carry more, and every second spent there is a worse picture.
                // Past the band, no queue has shown although the video alone now fills what the
                // path carried: likely a wider link, so climb faster towards the proof of it
                // (the cap on what arrives still bounds the climb).
                let per_second = match self.ceiling {
                    Some(ceiling) if self.target < ceiling * NEAR_CEILING_FROM => {
                        FAR_GROWTH_PER_SECOND
                    }
                    Some(ceiling) if self.target < ceiling * NEAR_CEILING_TO => {
                        NEAR_GROWTH_PER_SECOND
                    }
                    Some(_) => PAST_CEILING_GROWTH_PER_SECOND,
                    None => FAR_GROWTH_PER_SECOND,
                };
                let grown = self.target * per_second.powf(since.as_secs_f64().min(1.0));
                let above = if self.ceiling.is_some() {
                    MAX_ABOVE_RECEIVED_NEAR_CEILING
                } else {
                    MAX_ABOVE_RECEIVED
                };
                let cap = received.map_or(f64::INFINITY, |r| r * above + RECEIVED_SLACK_BPS);
                // Never lowered by the cap: that is the delay signal's job, not this one's.
                self.target = grown.min(cap).max(self.target);
                self.last_change = Some(now);
            }
        }
        self.target = self.target.clamp(self.bounds.min, self.bounds.max);
        self.target
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
