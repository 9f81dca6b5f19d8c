//! Which H.264 stream each viewer watches: the full one, or the low one kept for viewers whose
//! path is far narrower than the others'.
//!
//! One encoder per stream means a stream can only send what the narrowest of its viewers
//! carries. Without a second stream, one phone on a weak cell drags every other viewer down to
//! its rate. So a viewer whose path carries less than half of what the full stream could send
//! for the widest viewer moves to the low stream (smaller frames, its own encoder and rate), and
//! comes back once its path carries 70 % of it. The gap between the two, and a minimum stay, keep
//! a viewer whose estimate wobbles around the line from moving back and forth (each move costs a
//! keyframe on the stream moved to).
//!
//! Pure: estimates and instants in, a stream out. The task in [`super`] feeds it.

use std::time::{Duration, Instant};

use crate::media::Stream;

use super::governor::VIDEO_SHARE;

/// A viewer moves to the low stream when its path carries less than this share of the full
/// stream's rate.
pub const SPLIT: f64 = 0.5;
/// A viewer on the low stream moves back when its path carries this share of the full
/// stream's rate.
pub const REJOIN: f64 = 0.7;
/// The least time between two moves of one viewer.
pub const MIN_STAY: Duration = Duration::from_secs(3);

/// Where one viewer is, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seat {
    pub stream: Stream,
    pub since: Instant,
}

impl Seat {
    pub fn new(stream: Stream, now: Instant) -> Self {
        Self { stream, since: now }
    }
}

/// What the full stream could send and what it sends.
#[derive(Debug, Clone, Copy)]
pub struct FullStream {
    /// The widest path estimate among the H.264 viewers, bit/s.
    pub widest_bps: f64,
    /// The plan's bitrate: the full stream's ceiling, kbit/s.
    pub ceiling_kbps: u32,
    /// What its encoder produced over the last second, kbit/s (0 when not known).
    pub sending_kbps: f64,
}

impl FullStream {
    /// The rate the full stream could run at for its widest viewer.
    fn could_send_kbps(&self) -> f64 {
        (self.widest_bps * VIDEO_SHARE / 1000.0).min(f64::from(self.ceiling_kbps))
    }

    /// What a viewer's path must carry (in share terms) to come back: what the full stream
    /// could send, or what it sends now if that is less. A still scene sends far below the
    /// ceiling, and a path estimate only grows on what the viewer receives (at most 2× it),
    /// so measuring against the ceiling alone would keep a viewer on the low stream for good.
    fn rejoin_kbps(&self) -> f64 {
        let could = self.could_send_kbps();
        if self.sending_kbps > 0.0 {
            could.min(self.sending_kbps)
        } else {
            could
        }
    }
}

/// The stream an H.264 viewer should watch, given its path's estimate (bit/s) and the full
/// stream's figures. A viewer without an estimate yet stays where it is.
pub fn choose(seat: Seat, estimate_bps: Option<f64>, full: FullStream, now: Instant) -> Stream {
    let Some(estimate) = estimate_bps else {
        return seat.stream;
    };
    if now.saturating_duration_since(seat.since) < MIN_STAY {
        return seat.stream;
    }
    let carries_kbps = estimate * VIDEO_SHARE / 1000.0;
    let share_of = |kbps: f64| (kbps > 0.0).then(|| carries_kbps / kbps);
    match seat.stream {
        Stream::H264 if share_of(full.could_send_kbps()).is_some_and(|s| s < SPLIT) => {
            Stream::H264Low
        }
        Stream::H264Low if share_of(full.rejoin_kbps()).is_some_and(|s| s >= REJOIN) => {
            Stream::H264
        }
        stream => stream,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CEILING: u32 = 2000;

    fn settled(stream: Stream, t0: Instant) -> Seat {
        Seat::new(stream, t0 - MIN_STAY)
    }

    /// The full stream for a widest viewer of `widest_bps`, sending at its ceiling.
    fn full(widest_bps: f64) -> FullStream {
        FullStream {
            widest_bps,
            ceiling_kbps: CEILING,
            sending_kbps: 0.0,
        }
    }

    #[test]
    fn a_viewer_far_below_the_widest_moves_down_and_the_widest_never_does() {
        let t0 = Instant::now();
        let on_full = settled(Stream::H264, t0);
        // The widest viewer is always at a share of 1 (or above, past the ceiling).
        assert_eq!(choose(on_full, Some(500e3), full(500e3), t0), Stream::H264);
        // 500 kbit/s next to an unshaped viewer: 425 of 2000 kbit/s.
        assert_eq!(
            choose(on_full, Some(500e3), full(50e6), t0),
            Stream::H264Low
        );
        // 1.5 Mbit/s: 1275 of 2000, stays.
        assert_eq!(choose(on_full, Some(1.5e6), full(50e6), t0), Stream::H264);
    }

    #[test]
    fn the_way_back_needs_more_than_the_way_down() {
        let t0 = Instant::now();
        let low = settled(Stream::H264Low, t0);
        let on_full = settled(Stream::H264, t0);
        // 60 % of the full rate: too much to move down, too little to come back.
        let sixty = 0.6 * f64::from(CEILING) * 1000.0 / VIDEO_SHARE;
        assert_eq!(choose(on_full, Some(sixty), full(50e6), t0), Stream::H264);
        assert_eq!(choose(low, Some(sixty), full(50e6), t0), Stream::H264Low);
        let seventy_five = 0.75 * f64::from(CEILING) * 1000.0 / VIDEO_SHARE;
        assert_eq!(
            choose(low, Some(seventy_five), full(50e6), t0),
            Stream::H264
        );
    }

    #[test]
    fn a_still_scene_does_not_keep_a_viewer_on_the_low_stream() {
        let t0 = Instant::now();
        let low = settled(Stream::H264Low, t0);
        // The full stream sends 800 of its 2000 kbit/s: a path carrying 700 comes back
        // (595 kbit/s of video is 74 % of what the full stream sends), though it is far from
        // the ceiling.
        let still = FullStream {
            sending_kbps: 800.0,
            ..full(50e6)
        };
        assert_eq!(choose(low, Some(700e3), full(50e6), t0), Stream::H264Low);
        assert_eq!(choose(low, Some(700e3), still, t0), Stream::H264);
    }

    #[test]
    fn no_estimate_or_a_recent_move_keeps_the_viewer_where_it_is() {
        let t0 = Instant::now();
        let on_full = settled(Stream::H264, t0);
        assert_eq!(choose(on_full, None, full(50e6), t0), Stream::H264);
        let just_moved = Seat::new(Stream::H264Low, t0);
        assert_eq!(
            choose(
                just_moved,
                Some(50e6),
                full(50e6),
                t0 + Duration::from_secs(1)
            ),
            Stream::H264Low
        );
        assert_eq!(
            choose(just_moved, Some(50e6), full(50e6), t0 + MIN_STAY),
            Stream::H264
        );
    }
}
