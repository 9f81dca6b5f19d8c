//! The delay-based half of a viewer's rate ([`super::bandwidth`]): down to what the path
//! delivered when it queued, back up gently near that ceiling and quickly away from it. Loss
//! cuts the same rate ([`DelayRate::cut`]).
//!
//! Nothing here reads a clock: every instant is a parameter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::{RateControlState, Usage};

/// A decrease goes to this share of what the path delivered while it was queueing, so the queue
/// drains (GCC's β).
pub(super) const DECREASE_FACTOR: f64 = 0.85;
/// A queue already standing deep is drained faster: the share falls so that, sent at the new
/// rate, it empties within this long. At 85 % a 280 ms queue took 1.9 s to drain, and on a
/// 500 kbit/s link frames waited over 200 ms for much of it (`narrow_link`: a token bucket
/// hides the path's limit until its burst is spent, and then the queue comes at once).
const DRAIN_WITHIN: Duration = Duration::from_secs(1);
/// But never below this share in one decrease: what arrived is itself falling then.
const DEEPEST_DECREASE: f64 = 0.7;
/// Growth per second near the last rate at which the path queued: gentle, as the path is known
/// to fill around there. A token bucket (`tc tbf`'s 16 kB burst, a DSL shaper) lets a rate
/// above the link through without queueing until its saved-up tokens run out, so the delay
/// signal comes a second or more late, and whatever was added meanwhile becomes queue at once:
/// at 8 % a second (GCC's figure) the estimate reached 1.5× a 500 kbit/s link before the first
/// sign, and frames waited 200–250 ms (`narrow_link`, with the resolution ladder, whose small
/// frames follow the rate closely). At 5 % the worst second stayed near 100 ms. Crossing the
/// band at 5 % takes about 6 s of a widened link's climb; 7 % (and 10 % past the band) was
/// tried to shorten it and made the climb no faster than the wider cap after the ceiling is
/// forgotten ([`MAX_ABOVE_RECEIVED`]), while one `narrow_link` run in two went over 200 ms at
/// p95 on the 500 kbit/s step.
const NEAR_GROWTH_PER_SECOND: f64 = 1.05;
/// Growth per second away from it: once the path has carried clearly more than its old ceiling,
/// the ceiling is stale (a link that widened again) and the camera should get back its picture
/// within seconds, not half a minute. At 30 % a second the climb from 1 to 2.5 Mbit/s after
/// `narrow_link`'s widening took 3.7 s of the 15 the issue allows, on top of the 10 s it takes
/// to prove the old ceiling stale, and the whole rise ended at 15–16 s. The climb cannot
/// overshoot much: growth is capped at [`MAX_ABOVE_RECEIVED`] times what arrives.
const FAR_GROWTH_PER_SECOND: f64 = 1.5;
/// "Near" the ceiling is this band around it. At 1.15× the estimate, the video (85 % of it)
/// plus its headers already fill what the path carried when it queued.
const NEAR_CEILING_FROM: f64 = 0.9;
const NEAR_CEILING_TO: f64 = 1.15;
/// Growth per second above the band while the ceiling still stands: a little faster, towards
/// the proof that the link widened ([`CEILING_FORGOTTEN_ABOVE`]), but not much faster than
/// GCC's own increase (8 %), for the token bucket's sake (above).
const PAST_CEILING_GROWTH_PER_SECOND: f64 = 1.08;
/// Deliveries this far above the last ceiling, for this long, mean the ceiling no longer holds.
/// One moment above proves nothing: a token bucket that sat below its rate for a while lets its
/// burst through at once (16 kB in `narrow_link`'s 500 kbit/s step: deliveries measured at 620,
/// 1.3× the ceiling), and forgetting on that ran the estimate to 1.5× the link.
const CEILING_FORGOTTEN_ABOVE: f64 = 1.2;
const CEILING_FORGOTTEN_AFTER: Duration = Duration::from_millis(1500);
/// Growth is capped at this multiple of what actually arrives (plus a packet's worth), so an
/// encoder that sends less than it may (a still scene) does not let the estimate run away. What
/// arrives trails the estimate by the encoder's reaction and the meter's window, about a second
/// in `narrow_link`, so this cap, not [`FAR_GROWTH_PER_SECOND`], set the pace of the climb after
/// a widening: at 1.5× it went about 30 % a second (1.2 to 2.55 Mbit/s in 3.1 s).
const MAX_ABOVE_RECEIVED: f64 = 2.0;
/// The same cap while the path's ceiling is known. A token bucket passes its burst before any
/// queue shows, so near its rate the delay signal comes late: at 1.5× the estimate climbed to
/// 1.3× a 500 kbit/s link before each cut, and every climb refilled the 150 ms queue (glass to
/// glass p95 near 200 ms in `narrow_link`). At 1.2× the video (85 % of the estimate) can still
/// grow 2 % a step, more than the gentle growth near a ceiling asks.
const MAX_ABOVE_RECEIVED_NEAR_CEILING: f64 = 1.2;
const RECEIVED_SLACK_BPS: f64 = 10_000.0;
/// One increase per this interval, so each acts on fresh evidence.
const RATE_CONTROL_INTERVAL: Duration = Duration::from_millis(200);
/// One decrease per this interval. A decrease goes to a share of what arrived, and what arrives
/// falls as we send less: deciding again before the last decrease shows in the feedback
/// ratchets the rate down to the floor (measured: every 60 ms while a queue drained, from 1.4
/// Mbit/s to 150 kbit/s on a 1 Mbit/s link, then eight seconds to climb back).
const DECREASE_INTERVAL: Duration = Duration::from_millis(400);
/// Decreases this close together are one episode of queueing, and what arrived at each is a
/// noisy reading of where the path fills. Four readings of one episode on `narrow_link`'s 500
/// kbit/s link: 655, 534, 512, 420. The first still counts the faster rate from before the
/// link narrowed; the last is our own cut draining the queue (by then it had emptied, and what
/// arrived was what we sent). Either alone misled: a ceiling 16–20 % low made the link's
/// ordinary rate look "clearly more", so the ceiling was forgotten and the growth meant for a
/// widened link refilled the queue (frames 274 ms late); one 15 % high let the fast growth far
/// below the ceiling run past the link. The ceiling is the median of the episode's readings.
const EPISODE: Duration = Duration::from_millis(1000);
/// A reading below this share of the episode's median is no drain but a path that really
/// narrowed (3.3 → 1.7 → 1.0 Mbit/s when a 3 Mbit/s link became 1), and the episode starts
/// again from it.
const NARROWED_BELOW: f64 = 0.6;
/// An episode remembers at most this many readings (a link narrower than the floor queues
/// without end).
const EPISODE_READINGS: usize = 8;

/// Where the rate starts and the bounds it stays in, in bit/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateBounds {
    pub start: f64,
    pub min: f64,
    pub max: f64,
}

/// The delay-based rate: down to what the path delivered when it queued, back up gently near
/// that ceiling and quickly away from it.
pub(super) struct DelayRate {
    pub(super) state: RateControlState,
    pub(super) target: f64,
    bounds: RateBounds,
    /// What the path delivered the last time it queued, until it clearly carries more.
    pub(super) ceiling: Option<f64>,
    /// The path's standing queue at the latest report (see `queue_delay`).
    pub(super) standing: Duration,
    /// What arrived at each decrease of the current episode ([`EPISODE`]).
    episode: VecDeque<f64>,
    /// Since when deliveries have stayed clearly above the ceiling.
    above_ceiling_since: Option<Instant>,
    last_change: Option<Instant>,
    last_decrease: Option<Instant>,
}

impl DelayRate {
    pub(super) fn new(start: f64, bounds: RateBounds) -> Self {
        Self {
            state: RateControlState::default(),
            target: start,
            bounds,
            ceiling: None,
            standing: Duration::ZERO,
            episode: VecDeque::with_capacity(EPISODE_READINGS),
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
    pub(super) fn cut(&mut self, now: Instant, to: f64, received: Option<f64>) {
        self.target = to.clamp(self.bounds.min, self.bounds.max);
        let filled_at = received.unwrap_or(self.target);
        self.ceiling = Some(self.ceiling.map_or(filled_at, |c| c.max(filled_at)));
        self.last_change = Some(now);
        self.last_decrease = Some(now);
    }

    /// Where the path fills, after a decrease at which `received` arrived (see [`EPISODE`]).
    fn read_ceiling(&mut self, received: f64, same_episode: bool) -> f64 {
        let narrowed = median(&self.episode).is_none_or(|m| received < m * NARROWED_BELOW);
        if !same_episode || narrowed {
            self.episode.clear();
        }
        if self.episode.len() == EPISODE_READINGS {
            self.episode.pop_front();
        }
        self.episode.push_back(received);
        median(&self.episode).unwrap_or(received)
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
    pub(super) fn update(
        &mut self,
        now: Instant,
        usage: Usage,
        received: Option<f64>,
        may_grow: bool,
    ) -> f64 {
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
                let same_episode = self
                    .last_decrease
                    .is_some_and(|at| now.saturating_duration_since(at) < EPISODE);
                self.last_decrease = Some(now);
                self.target = (received * decrease_factor(self.standing)).min(self.target);
                tracing::debug!(received, target = self.target, "path queueing: rate down");
                self.ceiling = Some(self.read_ceiling(received, same_episode));
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

/// The middle reading, or the mean of the middle two.
fn median(readings: &VecDeque<f64>) -> Option<f64> {
    let mut sorted: Vec<f64> = readings.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The share of what arrived a decrease goes to, with `standing` queued on the path.
pub(super) fn decrease_factor(standing: Duration) -> f64 {
    let drained = standing.as_secs_f64() / DRAIN_WITHIN.as_secs_f64();
    (1.0 - drained).clamp(DEEPEST_DECREASE, DECREASE_FACTOR)
}
