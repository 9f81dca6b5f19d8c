//! Where frames come from and in what form, and the GStreamer fragment that captures them.

use std::path::PathBuf;

use anyhow::bail;
use ferrocam_protocol::VideoSource;

/// A video source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A V4L2 capture device (USB/UVC webcams, the Pi's legacy camera stack).
    V4l2(PathBuf),
    /// A libcamera camera (Raspberry Pi CSI cameras on Bullseye and later) via `libcamerasrc`.
    Libcamera,
    /// GStreamer's `videotestsrc`, with a running clock when the `timeoverlay` plugin exists.
    TestPattern,
    /// Any GStreamer launch fragment producing the declared [`CaptureFormat`]; for testing the
    /// MJPEG and H.264 paths without such a camera, and for exotic sources.
    Pipeline(String),
}

/// What the source hands to the rest of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Uncompressed frames (YUYV, NV12, I420…): encoded by us.
    Raw,
    /// Motion JPEG: decoded, then encoded by us.
    Mjpeg,
    /// The camera's own H.264: parsed and passed through, no encoder at all.
    H264,
}

impl CaptureFormat {
    /// Parses the `--capture-format` setting (`auto` is resolved elsewhere).
    pub fn parse(s: &str) -> anyhow::Result<Option<Self>> {
        Ok(match s {
            "auto" => None,
            "raw" => Some(Self::Raw),
            "mjpeg" => Some(Self::Mjpeg),
            "h264" => Some(Self::H264),
            other => bail!("unknown capture format {other:?}: use auto, raw, mjpeg or h264"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Mjpeg => "mjpeg",
            Self::H264 => "h264",
        }
    }
}

/// The fragment of a `pipeline:<fragment>` setting, or why the setting names no source.
fn pipeline(setting: &str) -> anyhow::Result<String> {
    match setting.strip_prefix("pipeline:") {
        Some(fragment) if !fragment.trim().is_empty() => Ok(fragment.to_owned()),
        _ => bail!(
            "unknown source {setting:?}: use auto, test, libcamera, a /dev/video* path or \
             pipeline:<gstreamer fragment>"
        ),
    }
}

/// The raw FourCCs GStreamer's `v4l2src` turns into `video/x-raw`.
const RAW_FOURCCS: [&str; 6] = ["YUYV", "NV12", "YU12", "I420", "UYVY", "RGB3"];

impl Source {
    /// Resolves the `--source` setting against the discovered cameras. `auto` takes the first
    /// capture device and falls back to the test pattern, so `make demo` works with or without
    /// a camera.
    pub fn resolve(setting: &str, cameras: &[VideoSource]) -> anyhow::Result<Self> {
        match setting {
            "test" => Ok(Source::TestPattern),
            "auto" => Ok(match cameras.first() {
                Some(cam) => Source::V4l2(PathBuf::from(&cam.path)),
                None => Source::TestPattern,
            }),
            "libcamera" => {
                if gstreamer::ElementFactory::find("libcamerasrc").is_none() {
                    bail!(
                        "source libcamera needs GStreamer's libcamerasrc plugin, which is not \
                         installed (on Raspberry Pi OS: apt install gstreamer1.0-libcamera)"
                    );
                }
                Ok(Source::Libcamera)
            }
            path if path.starts_with("/dev/") => {
                if !cameras.iter().any(|c| c.path == path) {
                    bail!("{path} is not a V4L2 video capture device");
                }
                Ok(Source::V4l2(PathBuf::from(path)))
            }
            other => pipeline(other).map(Source::Pipeline),
        }
    }

    /// Checks a `--source` setting and the `--capture-format` forced with it without opening
    /// anything (`--check-config`): the syntax, that a device path is a device node, and that
    /// the source can deliver the format. Whether the node is a V4L2 camera, and what `auto`
    /// picks, show only at start.
    pub fn check_setting(setting: &str, format: Option<CaptureFormat>) -> anyhow::Result<()> {
        match setting {
            "auto" => Ok(()),
            "test" => Source::TestPattern.check_format(format),
            "libcamera" => Source::Libcamera.check_format(format),
            path if path.starts_with("/dev/") => {
                use std::os::unix::fs::FileTypeExt as _;
                let Ok(meta) = std::fs::metadata(path) else {
                    bail!("--source {path}: no such device (is the camera plugged in?)");
                };
                if !meta.file_type().is_char_device() {
                    bail!("--source {path} is not a device node");
                }
                Ok(())
            }
            other => pipeline(other).map(drop),
        }
    }

    /// Whether this source can deliver `format`. The test pattern and libcamera deliver raw
    /// video only; forcing MJPEG or H.264 on them would fail later, as a GStreamer link error
    /// that names neither setting.
    pub fn check_format(&self, format: Option<CaptureFormat>) -> anyhow::Result<()> {
        match (self, format) {
            (
                Source::TestPattern | Source::Libcamera,
                Some(forced @ (CaptureFormat::Mjpeg | CaptureFormat::H264)),
            ) => bail!(
                "--capture-format {} needs a V4L2 camera (--source /dev/videoN) or a \
                 pipeline: source that produces it; the {} delivers raw video only (use \
                 --capture-format auto or raw)",
                forced.name(),
                self.describe()
            ),
            _ => Ok(()),
        }
    }

    /// Human-readable description for logs and capabilities.
    pub fn describe(&self) -> String {
        match self {
            Source::V4l2(path) => path.display().to_string(),
            Source::Libcamera => "libcamera".to_owned(),
            Source::TestPattern => "test pattern".to_owned(),
            Source::Pipeline(_) => "custom pipeline".to_owned(),
        }
    }

    /// The capture format to use: the configured one, or for a V4L2 camera the best it offers
    /// at the wanted size. Raw is preferred (lowest latency, any encoder), then MJPEG (what most
    /// USB webcams deliver at 720p30), then the camera's H.264 — unless there is no hardware
    /// encoder, where passing the camera's H.264 through saves a Pi 5 a whole core.
    pub fn capture_format(
        &self,
        configured: Option<CaptureFormat>,
        camera: Option<&VideoSource>,
        width: u32,
        height: u32,
        hardware_encoder: bool,
    ) -> CaptureFormat {
        if let Some(format) = configured {
            return format;
        }
        let Some(camera) = camera else {
            return CaptureFormat::Raw;
        };
        let offers = |fourccs: &[&str]| {
            camera.formats.iter().any(|f| {
                fourccs.contains(&f.fourcc.as_str())
                    && f.sizes
                        .iter()
                        .any(|s| s.width == width && s.height == height)
            })
        };
        let h264 = offers(&["H264"]);
        if h264 && !hardware_encoder {
            CaptureFormat::H264
        } else if offers(&RAW_FOURCCS) {
            CaptureFormat::Raw
        } else if offers(&["MJPG", "JPEG"]) {
            CaptureFormat::Mjpeg
        } else if h264 {
            CaptureFormat::H264
        } else {
            CaptureFormat::Raw
        }
    }

    /// The GStreamer fragment from the source to either raw video (`Raw`, `Mjpeg`: decoded here)
    /// or H.264 byte-stream access units (`H264`).
    pub fn launch_fragment(
        &self,
        format: CaptureFormat,
        width: u32,
        height: u32,
        fps: u32,
    ) -> String {
        let size = format!("width={width},height={height},framerate={fps}/1");
        let (head, caps) = match self {
            Source::TestPattern => {
                let mut s = "videotestsrc is-live=true pattern=smpte".to_owned();
                if gstreamer::ElementFactory::find("timeoverlay").is_some() {
                    s.push_str(
                        " ! timeoverlay font-desc=\"Sans 36\" halignment=right valignment=bottom",
                    );
                }
                return s;
            }
            Source::Pipeline(fragment) => return fragment.clone(),
            Source::Libcamera => (
                "libcamerasrc".to_owned(),
                Some(format!("video/x-raw,{size}")),
            ),
            Source::V4l2(path) => {
                let head = format!("v4l2src device={}", path.display());
                let caps = match format {
                    CaptureFormat::Raw => format!("video/x-raw,{size}"),
                    CaptureFormat::Mjpeg => format!("image/jpeg,{size}"),
                    CaptureFormat::H264 => format!("video/x-h264,{size}"),
                };
                (head, Some(caps))
            }
        };
        let mut s = head;
        if let Some(caps) = caps {
            s.push_str(&format!(" ! {caps}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocam_protocol::{FrameSize, SourceFormat};

    fn camera(formats: &[&str]) -> VideoSource {
        VideoSource {
            path: "/dev/video0".into(),
            name: "Cam".into(),
            driver: "uvcvideo".into(),
            formats: formats
                .iter()
                .map(|f| SourceFormat {
                    fourcc: (*f).into(),
                    description: String::new(),
                    sizes: vec![FrameSize {
                        width: 1280,
                        height: 720,
                        fps: vec![30.0],
                    }],
                })
                .collect(),
        }
    }

    #[test]
    fn auto_prefers_raw_then_mjpeg_and_h264_only_without_a_hardware_encoder() {
        let s = Source::V4l2("/dev/video0".into());
        let all = camera(&["MJPG", "YUYV", "H264"]);
        assert_eq!(
            s.capture_format(None, Some(&all), 1280, 720, true),
            CaptureFormat::Raw
        );
        assert_eq!(
            s.capture_format(None, Some(&all), 1280, 720, false),
            CaptureFormat::H264
        );
        let webcam = camera(&["MJPG"]);
        assert_eq!(
            s.capture_format(None, Some(&webcam), 1280, 720, true),
            CaptureFormat::Mjpeg
        );
        // Formats not offered at the wanted size do not count.
        assert_eq!(
            s.capture_format(None, Some(&all), 1920, 1080, true),
            CaptureFormat::Raw
        );
        assert_eq!(
            s.capture_format(Some(CaptureFormat::Mjpeg), Some(&all), 1280, 720, true),
            CaptureFormat::Mjpeg
        );
    }

    #[test]
    fn resolves_settings() {
        let cams = vec![camera(&["YUYV"])];
        assert_eq!(
            Source::resolve("auto", &cams).unwrap(),
            Source::V4l2("/dev/video0".into())
        );
        assert_eq!(Source::resolve("auto", &[]).unwrap(), Source::TestPattern);
        assert_eq!(Source::resolve("test", &cams).unwrap(), Source::TestPattern);
        assert!(Source::resolve("/dev/video7", &cams).is_err());
        assert!(Source::resolve("pipeline:", &cams).is_err());
        assert!(Source::resolve("webcam", &cams).is_err());
        assert_eq!(
            Source::resolve("pipeline:videotestsrc", &cams).unwrap(),
            Source::Pipeline("videotestsrc".into())
        );
    }

    #[test]
    fn settings_are_checked_without_opening_anything() {
        let error = |source: &str, format| {
            Source::check_setting(source, format)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(error("auto", Some(CaptureFormat::H264)), None);
        assert_eq!(error("test", Some(CaptureFormat::Raw)), None);
        assert_eq!(
            error(
                "pipeline:videotestsrc ! jpegenc",
                Some(CaptureFormat::Mjpeg)
            ),
            None
        );
        let missing = error("/dev/video-ferrocam-none", None).unwrap();
        assert!(missing.contains("no such device"), "{missing}");
        let not_a_node = error("/dev/shm", None).unwrap();
        assert!(not_a_node.contains("not a device node"), "{not_a_node}");
        assert_eq!(
            error("/dev/null", None),
            None,
            "a device node; V4L2 or not shows at start"
        );
        assert!(error("webcam", None).unwrap().contains("unknown source"));
        assert!(
            error("pipeline: ", None)
                .unwrap()
                .contains("unknown source")
        );
        // Formats only a camera (or a custom pipeline) can deliver.
        for (source, format) in [
            ("test", CaptureFormat::Mjpeg),
            ("test", CaptureFormat::H264),
            ("libcamera", CaptureFormat::H264),
        ] {
            let message = error(source, Some(format)).unwrap();
            assert!(
                message.contains(&format!("--capture-format {}", format.name()))
                    && message.contains("raw video only"),
                "{message}"
            );
        }
        // `auto` resolved to the test pattern at start gets the same words.
        let resolved = Source::TestPattern.check_format(Some(CaptureFormat::H264));
        assert!(resolved.unwrap_err().to_string().contains("test pattern"));
        assert!(
            Source::V4l2("/dev/video0".into())
                .check_format(Some(CaptureFormat::H264))
                .is_ok()
        );
    }

    #[test]
    fn libcamera_without_its_plugin_is_a_clear_error() {
        gstreamer::init().unwrap();
        if gstreamer::ElementFactory::find("libcamerasrc").is_none() {
            let err = Source::resolve("libcamera", &[]).unwrap_err().to_string();
            assert!(err.contains("libcamerasrc"), "{err}");
        } else {
            assert_eq!(
                Source::resolve("libcamera", &[]).unwrap(),
                Source::Libcamera
            );
        }
    }

    #[test]
    fn v4l2_fragments_ask_for_the_chosen_format() {
        let s = Source::V4l2("/dev/video2".into());
        assert_eq!(
            s.launch_fragment(CaptureFormat::Mjpeg, 1280, 720, 30),
            "v4l2src device=/dev/video2 ! image/jpeg,width=1280,height=720,framerate=30/1"
        );
        assert!(
            s.launch_fragment(CaptureFormat::H264, 640, 480, 15)
                .ends_with("video/x-h264,width=640,height=480,framerate=15/1")
        );
    }
}
