//! Which rung of the ladder ([`Rung`]) the main stream stands on, given the bitrate its
//! viewers' paths allow.
//!
//! The measure is bits per pixel: the bitrate spread over the frame's pixels per second. Below
//! about 0.033 an H.264 picture turns to blocks (720p30 at 900 kbit/s, 540p30 at 500; the same
//! marks at which libwebrtc stops starting a stream at each size), so the stream steps down
//! until its frame gets at least that. It steps back up only once the bigger frame would get
//! 0.05, half as much again, and has for [`UP_HOLD`]: each step costs a keyframe, and a link
//! that wobbles around one mark must not make the picture change size every second.
//!
//! Dropping the frame rate is the last resort: the half-size rung is left only at half the
//! usual mark, since a smooth small picture tells a viewer more than a sharp slide show.
//!
//! A step down waits [`DOWN_HOLD`], for two reasons. When a link narrows under a running stream
//! its queue is full for the first seconds, and the keyframe a step costs would go straight into
//! it and be lost (measured in `narrow_link`: a step taken at once left a frame 1.8 s late at
//! the 500 kbit/s step). And a narrow viewer that joins beside wider ones moves to the low
//! stream once it has stayed [`placement::MIN_STAY`]: stepping sooner would shrink every other
//! viewer's picture for those seconds (measured in `two_viewers`). The encoder's rate comes down
//! at once anyway; only the size waits.
//!
//! The ladder acts only while the link binds: an encoder held below its ceiling by nothing but
//! the plan (`video.set bitrate_kbps`) keeps the size the user chose.
//!
//! Pure: a bitrate and instants in, a rung out. The task in [`super`] feeds it.

use std::time::{Duration, Instant};

use super::placement;
use crate::media::{Frame, Rung};

/// A rung is left downwards when its frame gets fewer bits per pixel than this.
pub const DOWN_BELOW_BPP: f64 = 0.033;
/// A rung is climbed to when its frame would get this many bits per pixel, for [`UP_HOLD`].
pub const UP_FROM_BPP: f64 = 0.05;
/// How long the link must have allowed the bigger frame before the stream climbs to it.
pub const UP_HOLD: Duration = Duration::from_secs(3);
/// How long the link must have been too narrow for the frame before the stream steps down.
pub const DOWN_HOLD: Duration = placement::MIN_STAY;

/// The main stream's planned frame and bitrate: where the ladder starts.
#[derive(Debug, Clone, Copy)]
pub struct Planned {
    pub frame: Frame,
    pub ceiling_kbps: u32,
}

/// The rung the stream stands on, and since when a higher or a lower one would do.
#[derive(Debug, Default)]
pub struct Ladder {
    rung: Rung,
    higher_since: Option<Instant>,
    lower_since: Option<Instant>,
    /// The planned frame the rung was chosen for: a new plan (`video.set`) starts again at
    /// its full size.
    planned: Option<Frame>,
}

impl Ladder {
    /// The rung for a stream whose viewers' paths allow `limit_kbps` (`None`: no viewer has an
    /// estimate, so nothing limits it).
    pub fn decide(&mut self, now: Instant, limit_kbps: Option<u32>, planned: Planned) -> Rung {
        if self.planned != Some(planned.frame) {
            *self = Self {
                planned: Some(planned.frame),
                ..Self::default()
            };
        }
        let Some(limit_kbps) = limit_kbps else {
            self.rung = Rung::Full;
            self.seating_changed();
            return self.rung;
        };
        let binds = limit_kbps < planned.ceiling_kbps;
        let bps = f64::from(limit_kbps.min(planned.ceiling_kbps)) * 1000.0;
        let bpp = |rung: Rung| bps / rung.frame(planned.frame).pixel_rate().max(1.0);
        let too_big = |rung: Rung| binds && bpp(rung) < DOWN_BELOW_BPP * weight(rung);
        if too_big(self.rung) && self.rung.below().is_some() {
            self.higher_since = None;
            let since = *self.lower_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= DOWN_HOLD {
                while too_big(self.rung)
                    && let Some(below) = self.rung.below()
                {
                    self.rung = below;
                }
                self.lower_since = None;
            }
            return self.rung;
        }
        self.lower_since = None;
        let climb = self
            .rung
            .above()
            .filter(|&above| !binds || bpp(above) >= UP_FROM_BPP * weight(above));
        match climb {
            Some(above) => {
                let since = *self.higher_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= UP_HOLD {
                    // The next rung's wait starts now: one rung per hold at most.
                    self.rung = above;
                    self.higher_since = Some(now);
                }
            }
            None => self.higher_since = None,
        }
        self.rung
    }
}

impl Ladder {
    /// Viewers moved between streams: the limit about to come is for the new seating, so any
    /// wait begun under the old one starts again. (The governor raises a stream's rate only
    /// after holding it, so for half a second after a narrow viewer leaves the main stream its
    /// limit still looks like that viewer's.)
    pub fn seating_changed(&mut self) {
        self.higher_since = None;
        self.lower_since = None;
    }
}

/// How much of the usual mark a rung needs to hold: half for the half-size rung, whose only
/// step down is to half the frame rate.
fn weight(rung: Rung) -> f64 {
    if rung == Rung::Half { 0.5 } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HD: Planned = Planned {
        frame: Frame {
            width: 1280,
            height: 720,
            fps: 30,
        },
        ceiling_kbps: 2000,
    };

    /// The rung a fresh ladder settles on for `kbps`, once the step down's wait is over.
    fn settled(kbps: u32, planned: Planned) -> Rung {
        let t0 = Instant::now();
        let mut ladder = Ladder::default();
        ladder.decide(t0, Some(kbps), planned);
        ladder.decide(t0 + DOWN_HOLD, Some(kbps), planned)
    }

    #[test]
    fn a_narrowing_link_steps_down_as_far_as_it_must_after_the_hold() {
        let t0 = Instant::now();
        let mut ladder = Ladder::default();
        assert_eq!(ladder.decide(t0, Some(360), HD), Rung::Full);
        let halfway = t0 + DOWN_HOLD / 2;
        assert_eq!(ladder.decide(halfway, Some(360), HD), Rung::Full);
        assert_eq!(ladder.decide(t0 + DOWN_HOLD, Some(360), HD), Rung::Half);
        // A dip that passes in time changes nothing.
        let mut dipped = Ladder::default();
        assert_eq!(dipped.decide(t0, Some(360), HD), Rung::Full);
        assert_eq!(dipped.decide(halfway, Some(2000), HD), Rung::Full);
        assert_eq!(dipped.decide(t0 + DOWN_HOLD, Some(360), HD), Rung::Full);

        let decide = |kbps| settled(kbps, HD);
        assert_eq!(decide(2000), Rung::Full);
        assert_eq!(decide(950), Rung::Full);
        // `narrow_link`'s 1000 kbit/s step: about 720 kbit/s of video.
        assert_eq!(decide(720), Rung::ThreeQuarters);
        // Its 500 kbit/s step: about 360.
        assert_eq!(decide(360), Rung::Half);
        assert_eq!(decide(150), Rung::Half);
        assert_eq!(decide(100), Rung::HalfAtHalfRate);
    }

    #[test]
    fn the_way_up_needs_more_than_the_way_down_and_a_steady_link() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut ladder = Ladder::default();
        ladder.decide(t0 - DOWN_HOLD, Some(700), HD);
        assert_eq!(ladder.decide(t0, Some(700), HD), Rung::ThreeQuarters);
        // 1200 kbit/s would have kept 720p (above 912) but is not enough to climb back (1382).
        assert_eq!(ladder.decide(at(1), Some(1200), HD), Rung::ThreeQuarters);
        assert_eq!(ladder.decide(at(10), Some(1200), HD), Rung::ThreeQuarters);
        // 1500 is, once it has lasted.
        assert_eq!(ladder.decide(at(11), Some(1500), HD), Rung::ThreeQuarters);
        assert_eq!(ladder.decide(at(13), Some(1500), HD), Rung::ThreeQuarters);
        // A dip restarts the wait.
        assert_eq!(ladder.decide(at(13), Some(1300), HD), Rung::ThreeQuarters);
        assert_eq!(ladder.decide(at(14), Some(1500), HD), Rung::ThreeQuarters);
        assert_eq!(ladder.decide(at(17), Some(1500), HD), Rung::Full);
    }

    #[test]
    fn the_climb_goes_one_rung_at_a_time() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut ladder = Ladder::default();
        ladder.decide(t0 - DOWN_HOLD, Some(100), HD);
        assert_eq!(ladder.decide(t0, Some(100), HD), Rung::HalfAtHalfRate);
        assert_eq!(ladder.decide(at(1), Some(5000), HD), Rung::HalfAtHalfRate);
        assert_eq!(ladder.decide(at(4), Some(5000), HD), Rung::Half);
        assert_eq!(ladder.decide(at(5), Some(5000), HD), Rung::Half);
        assert_eq!(ladder.decide(at(8), Some(5000), HD), Rung::ThreeQuarters);
        assert_eq!(ladder.decide(at(11), Some(5000), HD), Rung::Full);
    }

    #[test]
    fn a_low_ceiling_the_user_chose_keeps_the_size() {
        let modest = Planned {
            ceiling_kbps: 500,
            ..HD
        };
        // The link carries more than the plan: the plan binds, not the link.
        assert_eq!(settled(3000, modest), Rung::Full);
        // Once the link binds, the ladder acts as usual.
        assert_eq!(settled(400, modest), Rung::Half);
    }

    #[test]
    fn a_new_seating_or_a_new_plan_starts_the_wait_again() {
        let t0 = Instant::now();
        let mut ladder = Ladder::default();
        ladder.decide(t0, Some(360), HD);
        ladder.seating_changed();
        // The wait began again at the move: no step at t0 + DOWN_HOLD.
        ladder.decide(t0 + DOWN_HOLD / 2, Some(360), HD);
        assert_eq!(ladder.decide(t0 + DOWN_HOLD, Some(360), HD), Rung::Full);
        assert_eq!(
            ladder.decide(t0 + DOWN_HOLD * 3 / 2, Some(360), HD),
            Rung::Half
        );
        // `video.set` to 640×360: its own full size, whatever rung the old plan stood on.
        let small = Planned {
            frame: Frame {
                width: 640,
                height: 360,
                fps: 30,
            },
            ..HD
        };
        assert_eq!(
            ladder.decide(t0 + DOWN_HOLD * 2, Some(360), small),
            Rung::Full
        );
    }

    #[test]
    fn nobody_with_an_estimate_means_the_full_picture() {
        let now = Instant::now();
        let mut ladder = Ladder::default();
        ladder.decide(now, Some(300), HD);
        assert_eq!(ladder.decide(now + DOWN_HOLD, Some(300), HD), Rung::Half);
        assert_eq!(ladder.decide(now + DOWN_HOLD, None, HD), Rung::Full);
    }
}
