//! The flags that shape the extra streams beside the main one: the VP8 fallback and the low
//! H.264 stream.

use crate::media::Vp8Size;

/// What `--vp8` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    Off,
    Full,
    Size(u32, u32),
}

impl Fallback {
    /// The media plan's fallback: none, or how big it may be beside the main stream.
    pub fn plan(self) -> Option<Vp8Size> {
        match self {
            Self::Off => None,
            Self::Full => Some(Vp8Size::Full),
            Self::Size(width, height) => Some(Vp8Size::Within(width, height)),
        }
    }
}

pub(super) fn parse_fallback(s: &str) -> Result<Fallback, String> {
    match s.trim() {
        "off" | "none" => Ok(Fallback::Off),
        "full" => Ok(Fallback::Full),
        size => {
            let (w, h) = size
                .split_once('x')
                .ok_or_else(|| format!("{s:?}: expected WIDTHxHEIGHT, full or off"))?;
            let dimension = |v: &str| match v.parse::<u32>() {
                Ok(n) if (16..=4096).contains(&n) => Ok(n),
                _ => Err(format!("{s:?}: each side must be 16 to 4096 pixels")),
            };
            Ok(Fallback::Size(dimension(w)?, dimension(h)?))
        }
    }
}

/// What `--low-rendition` asks for: the box the low H.264 stream fits in, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowBox(pub Option<(u32, u32)>);

/// `WIDTHxHEIGHT` or `off` (the low stream's box).
pub(super) fn parse_box(s: &str) -> Result<LowBox, String> {
    match parse_fallback(s)? {
        Fallback::Off => Ok(LowBox(None)),
        Fallback::Size(width, height) => Ok(LowBox(Some((width, height)))),
        Fallback::Full => Err(format!("{s:?}: expected WIDTHxHEIGHT or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_low_stream_box_is_a_size_or_off() {
        assert_eq!(parse_box("640x360"), Ok(LowBox(Some((640, 360)))));
        assert_eq!(parse_box("off"), Ok(LowBox(None)));
        assert!(parse_box("full").is_err());
        assert!(parse_box("8x8").is_err());
    }
}
