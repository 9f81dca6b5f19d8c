//! The policy that turns the viewers' path estimates into one encoder bitrate.
//!
//! One encoder serves every viewer of a codec, so it can send only what the narrowest of their
//! paths carries. This picks that rate, leaves room for what else shares the path, and keeps the
//! encoder from being retuned on every wobble of an estimate.
//!
//! Pure: estimates and instants in, a bitrate out. The task in [`super`] feeds it.

use std::time::{Duration, Instant};

/// The share of a path's estimate the video gets: the rest is room for the audio (Opus, up to
/// 64 kbit/s), RTP and SRTP headers (about 5 %) and retransmissions after loss.
pub const VIDEO_SHARE: f64 = 0.85;
/// A lower rate is applied when it is this much below the current one: small dips are the
/// estimate's noise, and each change costs the encoder a rate-control reset.
const DOWN_STEP: f64 = 0.97;
/// A higher rate is applied when it is this much above the current one and has stayed there
/// for [`UP_HOLD`]: going up too eagerly fills the path's queue again.
const UP_STEP: f64 = 1.05;
const UP_HOLD: Duration = Duration::from_millis(500);

/// The bitrate limits the device was configured with, in kbit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min_kbps: u32,
    pub max_kbps: u32,
}

/// One codec's encoder.
#[derive(Debug, Default)]
pub struct Governor {
    current: Option<u32>,
    higher_since: Option<Instant>,
}

impl Governor {
    /// The encoder's limit given the estimates (bit/s) of the viewers that have one; `None`
    /// when none has (nobody watching, or only browsers that send no feedback): the encoder
    /// then runs at the rate it was set to.
    pub fn decide(&mut self, now: Instant, estimates_bps: &[f64], limits: Limits) -> Option<u32> {
        let Some(narrowest) = estimates_bps.iter().copied().reduce(f64::min) else {
            self.current = None;
            self.higher_since = None;
            return None;
        };
        let wanted = ((narrowest * VIDEO_SHARE / 1000.0) as u32)
            .clamp(limits.min_kbps, limits.max_kbps.max(limits.min_kbps));
        let Some(current) = self.current else {
            self.current = Some(wanted);
            return self.current;
        };
        if f64::from(wanted) < f64::from(current) * DOWN_STEP {
            self.current = Some(wanted);
            self.higher_since = None;
        } else if f64::from(wanted) > f64::from(current) * UP_STEP {
            let since = *self.higher_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= UP_HOLD {
                self.current = Some(wanted);
                self.higher_since = None;
            }
        } else {
            self.higher_since = None;
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        min_kbps: 150,
        max_kbps: 4000,
    };

    #[test]
    fn the_narrowest_viewer_sets_the_rate_with_room_to_spare() {
        let mut governor = Governor::default();
        let now = Instant::now();
        assert_eq!(governor.decide(now, &[], LIMITS), None);
        assert_eq!(
            governor.decide(now, &[3_000_000.0, 1_000_000.0], LIMITS),
            Some(850)
        );
    }

    #[test]
    fn drops_apply_at_once_and_rises_after_holding() {
        let mut governor = Governor::default();
        let t0 = Instant::now();
        governor.decide(t0, &[1_000_000.0], LIMITS);
        assert_eq!(governor.decide(t0, &[500_000.0], LIMITS), Some(425));
        // A rise is held back until it has lasted half a second.
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(governor.decide(at(100), &[1_000_000.0], LIMITS), Some(425));
        assert_eq!(governor.decide(at(400), &[1_000_000.0], LIMITS), Some(425));
        assert_eq!(governor.decide(at(600), &[1_000_000.0], LIMITS), Some(850));
        // Wobbles of a few per cent change nothing.
        assert_eq!(governor.decide(at(700), &[990_000.0], LIMITS), Some(850));
        assert_eq!(governor.decide(at(800), &[1_030_000.0], LIMITS), Some(850));
    }

    #[test]
    fn stays_within_the_limits_and_lets_go_when_nobody_reports() {
        let mut governor = Governor::default();
        let now = Instant::now();
        assert_eq!(governor.decide(now, &[10_000.0], LIMITS), Some(150));
        assert_eq!(governor.decide(now, &[], LIMITS), None);
        assert_eq!(governor.decide(now, &[90_000_000.0], LIMITS), Some(4000));
    }
}
