//! The last few seconds of the stream, held in memory so that an event clip can begin before
//! the event: when a door opens, the clip shows who opened it.
//!
//! A clip must begin with a keyframe (nothing before one decodes), so the ring keeps whole
//! groups of pictures: everything from the newest keyframe that is at least `keep` old. It
//! therefore holds between `keep` and `keep` plus one keyframe interval, bounded in bytes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::media::{AccessUnit, AudioUnit};

/// One thing the stream carried.
#[derive(Debug, Clone)]
pub enum Unit {
    Video(AccessUnit),
    Audio(AudioUnit),
}

impl Unit {
    fn encoded_at(&self) -> Instant {
        match self {
            Unit::Video(v) => v.encoded_at,
            Unit::Audio(a) => a.encoded_at,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Unit::Video(v) => v.data.len(),
            Unit::Audio(a) => a.data.len(),
        }
    }

    fn is_keyframe(&self) -> bool {
        matches!(self, Unit::Video(v) if v.keyframe)
    }
}

/// The ring.
pub struct Preroll {
    keep: Duration,
    max_bytes: usize,
    units: VecDeque<Unit>,
    bytes: usize,
    /// The encode time of the newest keyframe held (trimming never drops it, only clearing).
    newest_keyframe: Option<Instant>,
}

impl Preroll {
    /// Holds at least `keep` of stream (when it has it), and never more than `max_bytes`.
    pub fn new(keep: Duration, max_bytes: usize) -> Self {
        Self {
            keep,
            max_bytes,
            units: VecDeque::new(),
            bytes: 0,
            newest_keyframe: None,
        }
    }

    /// Adds what the stream just carried and forgets what is no longer needed. Video before
    /// the first keyframe is useless and never kept; sound before it is dropped with it.
    pub fn push(&mut self, unit: Unit) {
        if self.keep.is_zero() || (self.units.is_empty() && !unit.is_keyframe()) {
            return;
        }
        let now = unit.encoded_at();
        if unit.is_keyframe() {
            self.newest_keyframe = Some(now);
        }
        self.bytes += unit.bytes();
        self.units.push_back(unit);
        self.trim(now);
    }

    /// Drops whole groups of pictures from the front while the next keyframe is old enough to
    /// start the ring by itself, or while the ring is over its size.
    fn trim(&mut self, now: Instant) {
        while let Some(next_key) = self.units.iter().skip(1).position(Unit::is_keyframe) {
            let next_key = next_key + 1;
            let old_enough =
                now.saturating_duration_since(self.units[next_key].encoded_at()) >= self.keep;
            if !old_enough && self.bytes <= self.max_bytes {
                break;
            }
            for unit in self.units.drain(..next_key) {
                self.bytes -= unit.bytes();
            }
        }
        // One group larger than the budget: nothing in it can be kept.
        if self.bytes > self.max_bytes {
            self.clear();
        }
    }

    /// Everything held, oldest first (starting with a keyframe), leaving the ring empty.
    pub fn take(&mut self) -> Vec<Unit> {
        self.bytes = 0;
        self.newest_keyframe = None;
        self.units.drain(..).collect()
    }

    pub fn clear(&mut self) {
        self.units.clear();
        self.bytes = 0;
        self.newest_keyframe = None;
    }

    /// The encode time of the newest keyframe held.
    pub fn newest_keyframe(&self) -> Option<Instant> {
        self.newest_keyframe
    }

    /// How far back the ring should reach.
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// How far back the ring reaches from `now`.
    pub fn reach(&self, now: Instant) -> Duration {
        self.units.front().map_or(Duration::ZERO, |u| {
            now.saturating_duration_since(u.encoded_at())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(at: Instant, keyframe: bool, bytes: usize) -> Unit {
        Unit::Video(AccessUnit {
            data: vec![0u8; bytes].into(),
            duration: Duration::from_millis(100),
            keyframe,
            encoded_at: at,
            captured_at: std::time::SystemTime::now(),
        })
    }

    #[test]
    fn the_ring_starts_at_a_keyframe_and_reaches_back_at_least_its_length() {
        let start = Instant::now();
        let mut ring = Preroll::new(Duration::from_secs(3), 1 << 20);
        // A frame every 100 ms, a keyframe every second; the first frames are not keyframes.
        ring.push(frame(start, false, 10));
        assert!(ring.take().is_empty(), "no keyframe yet, nothing kept");
        for i in 1..=100u64 {
            let at = start + Duration::from_millis(100 * i);
            ring.push(frame(at, i % 10 == 0, 10));
            if i >= 40 {
                let reach = ring.reach(at);
                assert!(reach >= Duration::from_secs(3), "{i}: {reach:?}");
                assert!(
                    reach < Duration::from_secs(4) + Duration::from_millis(1),
                    "{i}: {reach:?}"
                );
            }
        }
        // Frame 100 (10 s in) was the newest keyframe.
        assert_eq!(
            ring.newest_keyframe(),
            Some(start + Duration::from_secs(10))
        );
        let held = ring.take();
        assert!(held[0].is_keyframe());
        assert_eq!(ring.reach(start), Duration::ZERO);
        assert_eq!(ring.newest_keyframe(), None);
    }

    #[test]
    fn a_ring_over_its_byte_budget_keeps_only_recent_whole_groups() {
        let start = Instant::now();
        let mut ring = Preroll::new(Duration::from_secs(60), 2_500);
        for i in 0..50u64 {
            ring.push(frame(
                start + Duration::from_millis(100 * i),
                i % 10 == 0,
                100,
            ));
        }
        let held = ring.take();
        let bytes: usize = held.iter().map(Unit::bytes).sum();
        assert!(bytes <= 2_500, "{bytes}");
        assert!(held[0].is_keyframe());
        assert_eq!(held.len(), 20, "the two newest whole groups");
        // One group bigger than the budget is not kept at all.
        let mut tiny = Preroll::new(Duration::from_secs(60), 50);
        tiny.push(frame(start, true, 100));
        assert!(tiny.take().is_empty());
    }
}
