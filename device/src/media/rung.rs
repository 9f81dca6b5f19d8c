//! The steps the main stream's picture takes down when its viewers' paths cannot carry it at
//! the planned size: 1280×720 → 960×540 → 640×360, then half the frame rate.
//!
//! A bitrate too small for the frame size does not make a small picture, it makes a coarse one:
//! at 360 kbit/s a 1280×720 stream ran at QP 48 (H.264's coarsest is 51), a smear of blocks, and
//! every keyframe was a burst the narrow path could not take at once. The same bits over a
//! quarter of the pixels give a clear picture. So the encoder is fed smaller frames, scaled
//! inside the running pipeline (a caps change the encoder follows with a keyframe carrying the
//! new size), with no restart and no renegotiation with the viewers.
//!
//! Which rung to stand on is link adaptation's decision (`adapt::ladder`); this is only what
//! each rung is.

/// A step of the ladder, from the plan's own size downwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Rung {
    /// The plan's size and frame rate.
    #[default]
    Full,
    /// Three quarters of each side (1280×720 → 960×540).
    ThreeQuarters,
    /// Half of each side (1280×720 → 640×360).
    Half,
    /// Half of each side at half the frame rate: the last resort, since a smooth small
    /// picture tells a viewer more than a sharp slide show.
    HalfAtHalfRate,
}

/// A frame size and rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl Frame {
    /// Pixels per second: what the bits are spread over.
    pub fn pixel_rate(self) -> f64 {
        f64::from(self.width) * f64::from(self.height) * f64::from(self.fps)
    }
}

impl Rung {
    /// The next rung down, if any.
    pub fn below(self) -> Option<Self> {
        match self {
            Self::Full => Some(Self::ThreeQuarters),
            Self::ThreeQuarters => Some(Self::Half),
            Self::Half => Some(Self::HalfAtHalfRate),
            Self::HalfAtHalfRate => None,
        }
    }

    /// The next rung up, if any.
    pub fn above(self) -> Option<Self> {
        match self {
            Self::Full => None,
            Self::ThreeQuarters => Some(Self::Full),
            Self::Half => Some(Self::ThreeQuarters),
            Self::HalfAtHalfRate => Some(Self::Half),
        }
    }

    /// The frame this rung makes of a stream planned at `planned`: each side scaled (even, as
    /// I420 needs), and the frame rate halved on the last rung.
    pub fn frame(self, planned: Frame) -> Frame {
        let (quarters, fps) = match self {
            Self::Full => return planned,
            Self::ThreeQuarters => (3, planned.fps),
            Self::Half => (2, planned.fps),
            Self::HalfAtHalfRate => (2, (planned.fps / 2).max(1)),
        };
        let side = |planned: u32| ((planned * quarters / 4) & !1).max(2);
        Frame {
            width: side(planned.width),
            height: side(planned.height),
            fps,
        }
    }

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::ThreeQuarters => "three-quarters",
            Self::Half => "half",
            Self::HalfAtHalfRate => "half-at-half-rate",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HD: Frame = Frame {
        width: 1280,
        height: 720,
        fps: 30,
    };

    #[test]
    fn the_ladder_of_a_720p30_camera() {
        let mut rung = Rung::Full;
        let mut frames = vec![rung.frame(HD)];
        while let Some(next) = rung.below() {
            assert_eq!(next.above(), Some(rung));
            rung = next;
            frames.push(rung.frame(HD));
        }
        let sizes: Vec<_> = frames.iter().map(|f| (f.width, f.height, f.fps)).collect();
        assert_eq!(
            sizes,
            [
                (1280, 720, 30),
                (960, 540, 30),
                (640, 360, 30),
                (640, 360, 15)
            ]
        );
    }

    #[test]
    fn odd_sizes_stay_even_and_tiny_ones_stay_valid() {
        let odd = Frame {
            width: 1366,
            height: 766,
            fps: 1,
        };
        let three = Rung::ThreeQuarters.frame(odd);
        assert_eq!((three.width, three.height), (1024, 574));
        let slow = Rung::HalfAtHalfRate.frame(odd);
        assert_eq!((slow.width % 2, slow.height % 2, slow.fps), (0, 0, 1));
        let tiny = Frame {
            width: 2,
            height: 2,
            fps: 30,
        };
        assert_eq!(Rung::Half.frame(tiny).width, 2);
    }
}
