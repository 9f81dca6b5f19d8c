//! Finding cameras: every `/dev/video*` node that captures video, with its formats, sizes,
//! rates and controls, read through the `v4l` crate.

use std::path::{Path, PathBuf};

use ferrocam_protocol::{ControlInfo, FrameSize, MenuEntry, SourceFormat, VideoSource};
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::video::Capture;

/// All capture devices, sorted by path. Metadata-only nodes (UVC cameras expose two) and the
/// Pi's encoder/ISP nodes (memory-to-memory, not capture) are left out.
pub fn capture_devices() -> Vec<VideoSource> {
    let mut nodes: Vec<PathBuf> = std::fs::read_dir("/dev")
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("video"))
                })
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes.iter().filter_map(|p| describe(p)).collect()
}

/// Describes one node, or `None` when it is not a capture device.
pub fn describe(path: &Path) -> Option<VideoSource> {
    let dev = v4l::Device::with_path(path).ok()?;
    let caps = dev.query_caps().ok()?;
    if !caps
        .capabilities
        .contains(v4l::capability::Flags::VIDEO_CAPTURE)
    {
        return None;
    }
    let formats = dev
        .enum_formats()
        .unwrap_or_default()
        .into_iter()
        .map(|f| SourceFormat {
            fourcc: f.fourcc.str().unwrap_or("????").to_owned(),
            description: f.description.clone(),
            sizes: sizes(&dev, f.fourcc),
        })
        .collect();
    Some(VideoSource {
        path: path.display().to_string(),
        name: caps.card,
        driver: caps.driver,
        formats,
    })
}

fn sizes(dev: &v4l::Device, fourcc: v4l::FourCC) -> Vec<FrameSize> {
    let mut out = Vec::new();
    for size in dev.enum_framesizes(fourcc).unwrap_or_default() {
        let (width, height) = match size.size {
            FrameSizeEnum::Discrete(d) => (d.width, d.height),
            FrameSizeEnum::Stepwise(s) => (s.max_width, s.max_height),
        };
        let fps = dev
            .enum_frameintervals(fourcc, width, height)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| {
                let f = match i.interval {
                    FrameIntervalEnum::Discrete(f) => f,
                    FrameIntervalEnum::Stepwise(s) => s.min,
                };
                (f.numerator > 0).then(|| f64::from(f.denominator) / f64::from(f.numerator))
            })
            .collect();
        out.push(FrameSize { width, height, fps });
    }
    out
}

/// The controls of a capture device (empty when it has none or cannot be opened).
pub fn controls(path: &Path) -> Vec<ControlInfo> {
    let Ok(dev) = v4l::Device::with_path(path) else {
        return Vec::new();
    };
    dev.query_controls()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !matches!(c.typ, v4l::control::Type::CtrlClass))
        .map(|c| ControlInfo {
            id: c.id,
            name: c.name,
            kind: format!("{:?}", c.typ).to_lowercase(),
            minimum: c.minimum,
            maximum: c.maximum,
            step: c.step,
            default: c.default,
            menu: c
                .items
                .unwrap_or_default()
                .into_iter()
                .map(|(index, item)| MenuEntry {
                    value: i64::from(index),
                    name: match item {
                        v4l::control::MenuItem::Name(name) => name,
                        v4l::control::MenuItem::Value(v) => v.to_string(),
                    },
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_devices_are_not_capture_sources() {
        assert!(describe(Path::new("/dev/null")).is_none());
        assert!(describe(Path::new("/nonexistent/video0")).is_none());
        assert!(controls(Path::new("/nonexistent/video0")).is_empty());
    }
}
