//! Is a queue building on the path? The delay-gradient detector of Google Congestion Control, in
//! the form libwebrtc uses (a trend line over recent arrival groups, an adaptive threshold).
//!
//! Each arrival group (the packets sent within 5 ms of each other) arrives some milliseconds
//! later or earlier, relative to its predecessor, than it left. Summed up, that is how much
//! queue has built up since the start. A straight line fitted through the last 20 sums says how
//! fast it is growing: a queue growing by 2 ms per second of stream is overuse long before the
//! bottleneck's buffer fills and drops.
//!
//! Why not the `rtc` crate's own detector: it compares a Kalman-filtered *per-group* delta to a
//! 12.5 ms threshold, which a narrow uplink only crosses when sending at well over one and a
//! half times its rate. At 10–30 % over, the per-group deltas stay at a few milliseconds and the
//! queue fills to `tc tbf`'s limit unnoticed, so the only signal left is loss (measured in
//! `tests_bandwidth.rs`: a standing queue of 150 ms at both narrow rates). libwebrtc scales
//! the slope by the number of groups seen and a gain of 4, which is what we do.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::{InterGroupDelay, Usage};

/// Groups the line is fitted through.
const WINDOW: usize = 20;
/// Exponential smoothing of the accumulated delay before fitting.
const SMOOTHING: f64 = 0.9;
/// The slope is multiplied by min(groups seen, this) × [`GAIN`] before comparing.
const MAX_GROUPS_COUNTED: f64 = 60.0;
const GAIN: f64 = 4.0;
/// The threshold starts here and adapts within [`THRESHOLD_MIN`, `THRESHOLD_MAX`]: up slowly,
/// so a path with steady jitter stops reading as congested; down faster.
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const THRESHOLD_UP: f64 = 0.0087;
const THRESHOLD_DOWN: f64 = 0.039;
/// Trends this far beyond the threshold are spikes (a route change), not evidence to adapt to.
const THRESHOLD_IGNORES_BEYOND: f64 = 15.0;
/// Overuse must last this long, over at least two groups, and still be growing.
const OVERUSE_TIME: Duration = Duration::from_millis(10);

pub struct Trendline {
    /// (ms since the first group, smoothed accumulated delay in ms)
    points: VecDeque<(f64, f64)>,
    first: Option<Instant>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    groups: f64,
    trend: f64,
    previous_trend: f64,
    threshold: f64,
    threshold_updated: Option<Instant>,
    over_since: Option<Instant>,
    over_count: u32,
    usage: Usage,
}

impl Default for Trendline {
    fn default() -> Self {
        Self {
            points: VecDeque::with_capacity(WINDOW),
            first: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            groups: 0.0,
            trend: 0.0,
            previous_trend: 0.0,
            threshold: THRESHOLD_START,
            threshold_updated: None,
            over_since: None,
            over_count: 0,
            usage: Usage::Normal,
        }
    }
}

impl Trendline {
    /// What the path says now.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Takes one group's delay against its predecessor and says what the path does now.
    pub fn update(&mut self, delay: &InterGroupDelay) -> Usage {
        let first = *self.first.get_or_insert(delay.at);
        self.accumulated_ms += delay.delta_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        let x = delay.at.saturating_duration_since(first).as_secs_f64() * 1000.0;
        if self.points.len() == WINDOW {
            self.points.pop_front();
        }
        self.points.push_back((x, self.smoothed_ms));
        self.groups = (self.groups + 1.0).min(MAX_GROUPS_COUNTED);
        if self.points.len() == WINDOW
            && let Some(slope) = slope(&self.points)
        {
            self.trend = slope;
        }
        let modified = self.trend * self.groups * GAIN;
        self.detect(modified, delay.at);
        self.adapt_threshold(modified, delay.at);
        self.usage
    }

    fn detect(&mut self, modified: f64, at: Instant) {
        if modified > self.threshold {
            let since = *self.over_since.get_or_insert(at);
            self.over_count += 1;
            if at.saturating_duration_since(since) >= OVERUSE_TIME
                && self.over_count > 1
                && modified >= self.previous_trend
            {
                self.usage = Usage::Over;
            }
        } else {
            self.over_since = None;
            self.over_count = 0;
            self.usage = if modified < -self.threshold {
                Usage::Under
            } else {
                Usage::Normal
            };
        }
        self.previous_trend = modified;
    }

    fn adapt_threshold(&mut self, modified: f64, at: Instant) {
        let last = self.threshold_updated.replace(at).unwrap_or(at);
        let magnitude = modified.abs();
        if magnitude > self.threshold + THRESHOLD_IGNORES_BEYOND {
            return;
        }
        let k = if magnitude < self.threshold {
            THRESHOLD_DOWN
        } else {
            THRESHOLD_UP
        };
        let elapsed_ms = at.saturating_duration_since(last).as_secs_f64().min(0.1) * 1000.0;
        self.threshold += k * (magnitude - self.threshold) * elapsed_ms;
        self.threshold = self.threshold.clamp(THRESHOLD_MIN, THRESHOLD_MAX);
    }
}

/// The least-squares slope of `points`, or `None` when all x are equal.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sum_x, sum_y) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mean_x, mean_y) = (sum_x / n, sum_y / n);
    let (mut numerator, mut denominator) = (0.0, 0.0);
    for (x, y) in points {
        numerator += (x - mean_x) * (y - mean_y);
        denominator += (x - mean_x) * (x - mean_x);
    }
    (denominator > 0.0).then(|| numerator / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds groups 33 ms apart (a frame each at 30 fps), continuing where the last call ended.
    struct Feed {
        trendline: Trendline,
        epoch: Instant,
        next: u64,
    }

    impl Feed {
        fn new() -> Self {
            Self {
                trendline: Trendline::default(),
                epoch: Instant::now(),
                next: 0,
            }
        }

        fn groups(&mut self, per_group_ms: f64, groups: u64) -> Usage {
            for _ in 0..groups {
                self.trendline.update(&InterGroupDelay {
                    delta_ms: per_group_ms,
                    at: self.epoch + Duration::from_millis(self.next * 33),
                    size: 4000,
                });
                self.next += 1;
            }
            self.trendline.usage()
        }
    }

    #[test]
    fn a_steady_path_is_normal() {
        assert_eq!(Feed::new().groups(0.0, 100), Usage::Normal);
    }

    #[test]
    fn a_queue_growing_by_a_few_milliseconds_per_frame_is_overuse() {
        // 20 % over the link's rate at 30 fps: each 33 ms frame adds about 3 ms of queue, a
        // rate the per-group 12.5 ms threshold never sees.
        assert_eq!(Feed::new().groups(3.0, 40), Usage::Over);
    }

    #[test]
    fn a_draining_queue_is_underuse() {
        let mut feed = Feed::new();
        feed.groups(3.0, 40);
        assert_eq!(feed.groups(-6.0, 40), Usage::Under);
    }
}
