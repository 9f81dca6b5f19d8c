//! When to ask the encoder for a keyframe. Pure logic, driven by the caller's clock.
//!
//! Measured on the foundation probe: forcing a keyframe when a viewer joins gives the fastest
//! first frame, and a fixed throttle on joins made a late joiner wait seconds. So:
//! - a request while one is already pending (asked, no keyframe seen yet) merges into it;
//! - a joining viewer's request is honoured at once;
//! - a PLI/FIR from a viewer is honoured at most once per `min_interval`; one arriving sooner is
//!   deferred to the end of the interval, not dropped, so the viewer that lost a frame still
//!   recovers, while a viewer spamming PLIs cannot turn the stream into all keyframes.

use std::time::{Duration, Instant};

/// A pending request that sees no keyframe within this long is forgotten (the encoder may have
/// dropped the event while restarting).
const PENDING_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a keyframe is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeReason {
    /// A viewer joined (or skipped ahead after lagging).
    Join,
    /// A viewer reported loss with PLI or FIR.
    Feedback,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Ask the encoder now.
    Force,
    /// One is already on its way.
    Merged,
    /// Ask at this instant (call [`KeyframeGate::fire_deferred`] then).
    Deferred(Instant),
}

#[derive(Debug)]
pub struct KeyframeGate {
    min_interval: Duration,
    pending_since: Option<Instant>,
    last_forced: Option<Instant>,
    deferred: bool,
}

impl KeyframeGate {
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            pending_since: None,
            last_forced: None,
            deferred: false,
        }
    }

    /// Decides on one request.
    pub fn request(&mut self, now: Instant, reason: KeyframeReason) -> Verdict {
        if self.is_pending(now) {
            return Verdict::Merged;
        }
        if reason == KeyframeReason::Feedback
            && let Some(last) = self.last_forced
            && now < last + self.min_interval
        {
            if self.deferred {
                return Verdict::Merged;
            }
            self.deferred = true;
            return Verdict::Deferred(last + self.min_interval);
        }
        self.mark_forced(now);
        Verdict::Force
    }

    /// The deferred instant has come: `true` if the encoder should be asked now.
    pub fn fire_deferred(&mut self, now: Instant) -> bool {
        if !std::mem::take(&mut self.deferred) || self.is_pending(now) {
            return false;
        }
        self.mark_forced(now);
        true
    }

    /// A keyframe left the encoder.
    pub fn on_keyframe(&mut self) {
        self.pending_since = None;
    }

    fn is_pending(&self, now: Instant) -> bool {
        self.pending_since
            .is_some_and(|since| now < since + PENDING_TIMEOUT)
    }

    fn mark_forced(&mut self, now: Instant) {
        self.pending_since = Some(now);
        self.last_forced = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeyframeReason::*;

    const GAP: Duration = Duration::from_millis(500);

    #[test]
    fn joins_are_immediate_and_merge_while_pending() {
        let t = Instant::now();
        let mut gate = KeyframeGate::new(GAP);
        assert_eq!(gate.request(t, Join), Verdict::Force);
        assert_eq!(
            gate.request(t + Duration::from_millis(10), Join),
            Verdict::Merged
        );
        gate.on_keyframe();
        // A second joiner right after the keyframe still gets its own at once.
        assert_eq!(
            gate.request(t + Duration::from_millis(40), Join),
            Verdict::Force
        );
    }

    #[test]
    fn feedback_is_limited_to_one_per_interval_and_deferred_not_dropped() {
        let t = Instant::now();
        let mut gate = KeyframeGate::new(GAP);
        assert_eq!(gate.request(t, Feedback), Verdict::Force);
        gate.on_keyframe();
        let soon = t + Duration::from_millis(100);
        assert_eq!(gate.request(soon, Feedback), Verdict::Deferred(t + GAP));
        // A storm of further PLIs adds nothing.
        for i in 0..50 {
            assert_eq!(
                gate.request(soon + Duration::from_millis(i), Feedback),
                Verdict::Merged
            );
        }
        assert!(gate.fire_deferred(t + GAP));
        assert!(!gate.fire_deferred(t + GAP), "fires once");
    }

    #[test]
    fn a_keyframe_that_never_comes_does_not_block_forever() {
        let t = Instant::now();
        let mut gate = KeyframeGate::new(GAP);
        assert_eq!(gate.request(t, Join), Verdict::Force);
        assert_eq!(
            gate.request(t + PENDING_TIMEOUT + GAP, Feedback),
            Verdict::Force
        );
    }

    #[test]
    fn over_ten_seconds_of_constant_pli_the_encoder_is_asked_at_most_once_per_interval() {
        let t = Instant::now();
        let mut gate = KeyframeGate::new(GAP);
        let mut forced = 0;
        let mut deferred_at = None;
        for ms in 0..10_000u64 {
            let now = t + Duration::from_millis(ms);
            if deferred_at.is_some_and(|at| now >= at) {
                deferred_at = None;
                if gate.fire_deferred(now) {
                    forced += 1;
                    gate.on_keyframe();
                }
            }
            match gate.request(now, Feedback) {
                Verdict::Force => {
                    forced += 1;
                    gate.on_keyframe();
                }
                Verdict::Deferred(at) => deferred_at = Some(at),
                Verdict::Merged => {}
            }
        }
        assert!(
            (19..=21).contains(&forced),
            "forced {forced} keyframes in 10 s"
        );
    }
}
