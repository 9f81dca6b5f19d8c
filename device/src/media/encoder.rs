//! Picking an H.264 encoder: hardware first, then software, proven by a test encode.
//!
//! A Pi 3/4/Zero 2 has the `v4l2h264enc` hardware encoder; a Pi 5 has none, nor do most x86
//! boxes, so the software encoders are a normal path, not an error path. An element that exists
//! but cannot encode (a driver without the device node, a GPU without the right profile) fails
//! its test encode and the next candidate is tried.

use std::time::Duration;

use anyhow::bail;
use gstreamer as gst;
use gstreamer::prelude::*;

/// An H.264 encoder element ferrocam knows how to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoder {
    /// GStreamer element name.
    pub element: &'static str,
    /// Whether it runs on dedicated hardware.
    pub hardware: bool,
}

/// Candidates in order of preference.
pub const CANDIDATES: [Encoder; 7] = [
    Encoder {
        element: "v4l2h264enc",
        hardware: true,
    }, // Raspberry Pi 3/4/Zero 2 (V4L2 M2M)
    Encoder {
        element: "mpph264enc",
        hardware: true,
    }, // Rockchip
    Encoder {
        element: "vah264enc",
        hardware: true,
    }, // VA-API (GStreamer ≥ 1.22 `va`)
    Encoder {
        element: "vaapih264enc",
        hardware: true,
    }, // VA-API (legacy plugin)
    Encoder {
        element: "nvh264enc",
        hardware: true,
    }, // NVIDIA NVENC
    Encoder {
        element: "x264enc",
        hardware: false,
    },
    Encoder {
        element: "openh264enc",
        hardware: false,
    },
];

/// What the probe may ask of the system; the real one asks GStreamer, tests use a fake.
pub trait EncoderProbe {
    /// Whether the element's plugin is installed.
    fn exists(&self, element: &str) -> bool;
    /// Whether a few frames go through `fragment` without error.
    fn encodes(&self, fragment: &str) -> bool;
}

/// The encoder that will be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub encoder: Encoder,
    pub reason: String,
}

impl Encoder {
    /// Probes the candidates (or only the forced one) and returns the first that works, set for
    /// `keyframe_interval` (a hardware encoder may refuse a GOP setting; then the next one is
    /// tried).
    pub fn select(
        forced: Option<&str>,
        keyframe_interval: u32,
        probe: &dyn EncoderProbe,
    ) -> anyhow::Result<Selection> {
        let test_fragment = |enc: Encoder| enc.launch_fragment(1000, keyframe_interval);
        if let Some(name) = forced {
            let Some(enc) = CANDIDATES.into_iter().find(|e| e.element == name) else {
                let known: Vec<_> = CANDIDATES.iter().map(|e| e.element).collect();
                bail!("unknown encoder {name:?}; known: {}", known.join(", "));
            };
            if !probe.exists(name) {
                bail!("encoder {name} was requested but its GStreamer plugin is not installed");
            }
            if !probe.encodes(&test_fragment(enc)) {
                bail!("encoder {name} was requested but failed a test encode");
            }
            return Ok(Selection {
                encoder: enc,
                reason: "forced by configuration".to_owned(),
            });
        }
        let mut skipped = Vec::new();
        for enc in CANDIDATES {
            if !probe.exists(enc.element) {
                continue;
            }
            if !probe.encodes(&test_fragment(enc)) {
                skipped.push(format!("{} failed a test encode", enc.element));
                continue;
            }
            let mut reason = if enc.hardware {
                "hardware encoder".to_owned()
            } else {
                "no working hardware encoder; software fallback".to_owned()
            };
            if !skipped.is_empty() {
                reason.push_str(&format!(" ({})", skipped.join("; ")));
            }
            return Ok(Selection {
                encoder: enc,
                reason,
            });
        }
        bail!(
            "no working H.264 encoder: install gstreamer1.0-plugins-ugly (x264enc) or \
             gstreamer1.0-plugins-bad (openh264enc){}",
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; {}", skipped.join("; "))
            }
        )
    }

    /// The encoder's setting for a keyframe every `keyframe_interval` frames, where 0 means
    /// only when asked (a viewer joins, a PLI or FIR, a recording's segment begins): each
    /// encoder spells "never" its own way, and some spell it 0 and others read 0 as "choose".
    fn gop_setting(self, keyframe_interval: u32) -> i64 {
        if keyframe_interval > 0 {
            return keyframe_interval.into();
        }
        match self.element {
            // X264_KEYINT_MAX_INFINITE; 0 would be x264's own choice (250).
            "x264enc" => 1 << 30,
            // uiIntraPeriod 0: the first frame only (checked here: one IDR in 300 frames).
            "openh264enc" => 0,
            // Documented as "-1 = infinite".
            "nvh264enc" => -1,
            // The property's maximum; 0 is "auto-calculate".
            "vah264enc" => 1024,
            // The Pi's bcm2835-codec takes up to 2^31-1 frames (over two years at 30 fps), as
            // do mpph264enc's and vaapih264enc's properties.
            _ => i32::MAX.into(),
        }
    }

    /// The encoder's launch fragment, from raw video to H.264 constrained baseline (what every
    /// browser decodes) with no B-frames; `keyframe_interval` as in [`Self::gop_setting`].
    pub fn launch_fragment(self, bitrate_kbps: u32, keyframe_interval: u32) -> String {
        let kbps = bitrate_kbps;
        let bps = bitrate_kbps * 1000;
        let gop = self.gop_setting(keyframe_interval);
        match self.element {
            // The Pi's encoder needs the level pinned downstream (raspberrypi/linux#3974);
            // level 4 covers 1080p30. SPS/PPS are repeated before every IDR.
            "v4l2h264enc" => format!(
                "v4l2h264enc extra-controls=\"controls,video_bitrate={bps},h264_i_frame_period={gop},repeat_sequence_header=1\" \
                 ! video/x-h264,level=(string)4,profile=(string)constrained-baseline"
            ),
            "mpph264enc" => format!(
                "mpph264enc bps={bps} gop={gop} profile=baseline ! video/x-h264,profile=(string)constrained-baseline"
            ),
            "vah264enc" => format!(
                "vah264enc bitrate={kbps} key-int-max={gop} b-frames=0 rate-control=cbr \
                 ! video/x-h264,profile=(string)constrained-baseline"
            ),
            "vaapih264enc" => format!(
                "vaapih264enc bitrate={kbps} keyframe-period={gop} max-bframes=0 rate-control=cbr \
                 ! video/x-h264,profile=(string)constrained-baseline"
            ),
            "nvh264enc" => format!(
                "nvh264enc bitrate={kbps} gop-size={gop} bframes=0 zerolatency=true \
                 ! video/x-h264,profile=(string)constrained-baseline"
            ),
            // zerolatency: no lookahead, no B-frames, sliced threads: a frame leaves as soon as
            // it is encoded. A 200 ms VBV buffer (x264enc's default is 600 ms) caps any frame,
            // keyframes included, at a fifth of a second of bitrate: on a narrow uplink a
            // bigger keyframe overflowed the bottleneck's queue, was dropped, asked for again,
            // and froze the picture (measured on a 1 Mbit/s `tc tbf` link, 150 ms queue).
            "x264enc" => format!(
                "x264enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max={gop} \
                 bitrate={kbps} vbv-buf-capacity=200 \
                 ! video/x-h264,profile=(string)constrained-baseline"
            ),
            "openh264enc" => format!(
                "openh264enc usage-type=camera complexity=low rate-control=bitrate \
                 bitrate={bps} gop-size={gop} ! video/x-h264,profile=(string)constrained-baseline"
            ),
            other => unreachable!("no launch fragment for {other}"),
        }
    }
}

/// Whether GStreamer has the VP8 encoder the fallback uses (gstreamer1.0-plugins-good).
pub fn vp8_encoder_installed() -> bool {
    gst::ElementFactory::find("vp8enc").is_some()
}

/// Asks the installed GStreamer.
pub struct GstProbe;

impl EncoderProbe for GstProbe {
    fn exists(&self, element: &str) -> bool {
        gst::ElementFactory::find(element).is_some()
    }

    fn encodes(&self, fragment: &str) -> bool {
        let description = format!(
            "videotestsrc num-buffers=5 ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
             ! {fragment} ! h264parse ! fakesink"
        );
        let Ok(pipeline) = gst::parse::launch(&description) else {
            return false;
        };
        if pipeline.set_state(gst::State::Playing).is_err() {
            let _ = pipeline.set_state(gst::State::Null);
            return false;
        }
        let ok = pipeline.bus().is_some_and(|bus| {
            matches!(
                bus.timed_pop_filtered(
                    gst::ClockTime::from_seconds(5),
                    &[gst::MessageType::Eos, gst::MessageType::Error],
                )
                .map(|m| m.type_()),
                Some(gst::MessageType::Eos)
            )
        });
        let _ = pipeline.set_state(gst::State::Null);
        // Some hardware drivers need a moment to release the device after NULL.
        std::thread::sleep(Duration::from_millis(10));
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A board described by which plugins exist and which of them can really encode.
    struct FakeBoard {
        installed: Vec<&'static str>,
        broken: Vec<&'static str>,
    }

    impl EncoderProbe for FakeBoard {
        fn exists(&self, element: &str) -> bool {
            self.installed.contains(&element)
        }
        fn encodes(&self, fragment: &str) -> bool {
            !self.broken.iter().any(|b| fragment.starts_with(b))
        }
    }

    #[test]
    fn a_pi_4_uses_its_hardware_encoder_with_the_level_pinned() {
        let pi4 = FakeBoard {
            installed: vec!["v4l2h264enc", "x264enc", "openh264enc"],
            broken: vec![],
        };
        let sel = Encoder::select(None, 30, &pi4).unwrap();
        assert_eq!(sel.encoder.element, "v4l2h264enc");
        assert_eq!(sel.reason, "hardware encoder");
        let fragment = sel.encoder.launch_fragment(2000, 60);
        assert!(fragment.contains("level=(string)4"), "{fragment}");
        assert!(fragment.contains("video_bitrate=2000000"), "{fragment}");
        assert!(fragment.contains("h264_i_frame_period=60"), "{fragment}");
    }

    #[test]
    fn a_pi_5_falls_back_to_x264_and_says_why() {
        let pi5 = FakeBoard {
            installed: vec!["x264enc", "openh264enc"],
            broken: vec![],
        };
        let sel = Encoder::select(None, 30, &pi5).unwrap();
        assert_eq!(sel.encoder.element, "x264enc");
        assert!(sel.reason.contains("software fallback"));
    }

    #[test]
    fn an_encoder_that_fails_its_test_encode_is_skipped() {
        let odd = FakeBoard {
            installed: vec!["v4l2h264enc", "openh264enc"],
            broken: vec!["v4l2h264enc"],
        };
        let sel = Encoder::select(None, 30, &odd).unwrap();
        assert_eq!(sel.encoder.element, "openh264enc");
        assert!(
            sel.reason.contains("v4l2h264enc failed a test encode"),
            "{}",
            sel.reason
        );
    }

    #[test]
    fn other_hardware_comes_before_software() {
        let rockchip = FakeBoard {
            installed: vec!["mpph264enc", "x264enc"],
            broken: vec![],
        };
        assert_eq!(
            Encoder::select(None, 30, &rockchip)
                .unwrap()
                .encoder
                .element,
            "mpph264enc"
        );
    }

    #[test]
    fn forcing_an_encoder_checks_it_exists_and_works() {
        let pi4 = FakeBoard {
            installed: vec!["v4l2h264enc", "x264enc"],
            broken: vec![],
        };
        let sel = Encoder::select(Some("x264enc"), 30, &pi4).unwrap();
        assert_eq!(
            (sel.encoder.element, sel.reason.as_str()),
            ("x264enc", "forced by configuration")
        );
        assert!(Encoder::select(Some("openh264enc"), 30, &pi4).is_err());
        assert!(Encoder::select(Some("ffmpeg"), 30, &pi4).is_err());
        let broken = FakeBoard {
            installed: vec!["x264enc"],
            broken: vec!["x264enc"],
        };
        assert!(Encoder::select(Some("x264enc"), 30, &broken).is_err());
    }

    #[test]
    fn nothing_installed_is_a_clear_error() {
        let bare = FakeBoard {
            installed: vec![],
            broken: vec![],
        };
        let err = Encoder::select(None, 30, &bare).unwrap_err().to_string();
        assert!(err.contains("gstreamer1.0-plugins-ugly"), "{err}");
    }

    #[test]
    fn the_real_probe_finds_a_working_software_encoder_here() {
        gst::init().unwrap();
        let sel = Encoder::select(None, 30, &GstProbe).unwrap();
        assert!(GstProbe.encodes(&sel.encoder.launch_fragment(500, 30)));
        for forced in ["x264enc", "openh264enc"] {
            if GstProbe.exists(forced) {
                assert_eq!(
                    Encoder::select(Some(forced), 30, &GstProbe)
                        .unwrap()
                        .encoder
                        .element,
                    forced
                );
            }
        }
    }
}
