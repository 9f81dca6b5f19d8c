//! When the recorder asks the encoder for a keyframe of its own.
//!
//! A segment can only end, and a pre-roll only move on, at a keyframe. With periodic keyframes
//! one comes along every couple of seconds, but with `--keyframe-interval 0` the encoder makes
//! them only when asked, and without asking a segment would never end and the pre-roll ring
//! would grow until its byte cap threw it all away. So the recorder asks:
//! - when the open segment has reached its length, or its sound track began or ended (the
//!   next segment begins with the keyframe);
//! - when the pre-roll's newest keyframe is as old as the pre-roll is long, so the ring can
//!   drop the group before it and hold between one and two pre-roll lengths.
//!
//! With periodic keyframes more often than that, the second never happens, and the first
//! costs one keyframe per segment (one a minute by default), shared with the viewers.

use std::time::{Duration, Instant};

/// What the recorder is doing, as far as keyframes go.
#[derive(Debug, Clone, Copy)]
pub(super) enum Recording {
    /// A segment is open: its first frame's encode time, how long segments last, and whether
    /// sound began or ended since it opened (which needs a new file).
    Segment {
        base: Instant,
        length: Duration,
        sound_changed: bool,
    },
    /// Only the pre-roll ring fills: its newest keyframe (if any yet), and how far back the
    /// ring must reach.
    Preroll {
        newest_keyframe: Option<Instant>,
        keep: Duration,
    },
    /// Neither: nothing to ask for.
    Idle,
}

/// Whether the recorder needs a keyframe at `now` (the encode time of the latest frame).
pub(super) fn keyframe_wanted(now: Instant, recording: Recording) -> bool {
    match recording {
        Recording::Segment {
            base,
            length,
            sound_changed,
        } => sound_changed || now.saturating_duration_since(base) >= length,
        // A ring with no keyframe yet has asked when it opened its feeds (`Task`'s joins).
        Recording::Preroll {
            newest_keyframe: Some(at),
            keep,
        } => !keep.is_zero() && now.saturating_duration_since(at) >= keep,
        Recording::Preroll { .. } | Recording::Idle => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_segment_wants_a_keyframe_once_it_is_as_long_as_segments_are() {
        let base = Instant::now();
        let open = |sound_changed| Recording::Segment {
            base,
            length: 60 * SECOND,
            sound_changed,
        };
        assert!(!keyframe_wanted(base + 59 * SECOND, open(false)));
        assert!(keyframe_wanted(base + 60 * SECOND, open(false)));
        assert!(
            keyframe_wanted(base + 90 * SECOND, open(false)),
            "still, until one comes"
        );
        assert!(
            keyframe_wanted(base + SECOND, open(true)),
            "sound came or went"
        );
    }

    #[test]
    fn a_preroll_wants_one_when_its_newest_is_as_old_as_the_preroll_is_long() {
        let key = Instant::now();
        let ring = |newest_keyframe| Recording::Preroll {
            newest_keyframe,
            keep: 5 * SECOND,
        };
        assert!(!keyframe_wanted(key + 4 * SECOND, ring(Some(key))));
        assert!(keyframe_wanted(key + 5 * SECOND, ring(Some(key))));
        assert!(!keyframe_wanted(key + 5 * SECOND, ring(None)));
        let no_preroll = Recording::Preroll {
            newest_keyframe: Some(key),
            keep: Duration::ZERO,
        };
        assert!(!keyframe_wanted(key + 60 * SECOND, no_preroll));
        assert!(!keyframe_wanted(key + 60 * SECOND, Recording::Idle));
    }
}
