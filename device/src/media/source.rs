//! Choosing the video source: a V4L2 camera or GStreamer's test pattern.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where frames come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A V4L2 capture device (USB/UVC webcams, the Pi's legacy camera stack).
    V4l2(PathBuf),
    /// GStreamer's `videotestsrc`, with a running clock when the `timeoverlay` plugin exists.
    TestPattern,
}

impl Source {
    /// Resolves the `--source` setting. `auto` takes `/dev/video0` when it is a capture device
    /// and falls back to the test pattern, so `make demo` works with or without a camera.
    pub fn resolve(setting: &str) -> anyhow::Result<Self> {
        match setting {
            "test" => Ok(Source::TestPattern),
            "auto" => Ok(match first_capture_device() {
                Some(path) => Source::V4l2(path),
                None => Source::TestPattern,
            }),
            path if path.starts_with('/') => {
                let path = PathBuf::from(path);
                if !is_capture_device(&path) {
                    bail!("{} is not a V4L2 video capture device", path.display());
                }
                Ok(Source::V4l2(path))
            }
            other => bail!("unknown source {other:?}: use auto, test or a /dev/video* path"),
        }
    }

    /// Human-readable description for logs and capabilities.
    pub fn describe(&self) -> String {
        match self {
            Source::V4l2(path) => path.display().to_string(),
            Source::TestPattern => "test pattern".to_owned(),
        }
    }

    /// The GStreamer description of this source, producing raw video.
    pub(super) fn launch_fragment(&self) -> anyhow::Result<String> {
        Ok(match self {
            Source::TestPattern => {
                let mut s = "videotestsrc is-live=true pattern=smpte".to_owned();
                if gstreamer::ElementFactory::find("timeoverlay").is_some() {
                    s.push_str(
                        " ! timeoverlay font-desc=\"Sans 36\" halignment=right valignment=bottom",
                    );
                }
                s
            }
            Source::V4l2(path) => {
                let device = path.to_str().context("device path is not UTF-8")?;
                // decodebin turns MJPEG into raw and passes raw formats through; the caps filter
                // after it (added by the pipeline) scales and rate-adapts to the configured size.
                format!("v4l2src device={device} ! decodebin")
            }
        })
    }
}

fn first_capture_device() -> Option<PathBuf> {
    let mut nodes: Vec<PathBuf> = std::fs::read_dir("/dev")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("video"))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().find(|p| is_capture_device(p))
}

/// Whether the node can capture video (UVC cameras also expose metadata-only nodes).
fn is_capture_device(path: &Path) -> bool {
    let Ok(dev) = v4l::Device::with_path(path) else {
        return false;
    };
    dev.query_caps()
        .map(|caps| {
            caps.capabilities
                .contains(v4l::capability::Flags::VIDEO_CAPTURE)
        })
        .unwrap_or(false)
}
