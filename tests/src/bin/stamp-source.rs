//! The device's stamped test pattern as plain RTP, for peers that take RTP in (Janus's
//! streaming plugin): the same 1280×720 @ 30 fps SMPTE bars (with the running clock when
//! `timeoverlay` exists), the same glass-to-glass stamp (`ferrocam_protocol::stamp`, capture
//! time taken where `videotestsrc` produces the frame, painted by an `identity` before the
//! encoder) and the same x264 settings as `ferrocam-device` (tune=zerolatency,
//! speed-preset=ultrafast, no B-frames, constrained baseline), packetized by `rtph264pay` and
//! sent to `127.0.0.1:<port>`.
//!
//! `stamp-source --port 5004 [--bitrate-kbps 2000] [--keyframe-interval 60]`; runs until killed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use gstreamer as gst;
use gstreamer::prelude::*;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;
const FPS: u32 = 30;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Args {
    port: u16,
    bitrate_kbps: u32,
    keyframe_interval: u32,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        port: 0,
        bitrate_kbps: 2000,
        keyframe_interval: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => args.port = value()?.parse()?,
            "--bitrate-kbps" => args.bitrate_kbps = value()?.parse()?,
            "--keyframe-interval" => args.keyframe_interval = value()?.parse()?,
            "-h" | "--help" => {
                println!("stamp-source --port PORT [--bitrate-kbps 2000] [--keyframe-interval 60]");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(args.port != 0, "--port is required");
    Ok(args)
}

fn launch_line(args: &Args) -> String {
    let overlay = if gst::ElementFactory::find("timeoverlay").is_some() {
        " ! timeoverlay font-desc=\"Sans 36\" halignment=right valignment=bottom"
    } else {
        ""
    };
    // The device's fragments: source, conversion to I420 at the target size and rate, the
    // stamp, a leaky one-frame queue, then x264 exactly as `Encoder::launch_fragment` writes it.
    format!(
        "videotestsrc name=src is-live=true pattern=smpte{overlay} \
         ! videoconvert ! videoscale ! videorate \
         ! video/x-raw,format=I420,width={WIDTH},height={HEIGHT},framerate={FPS}/1 \
         ! identity name=stamp \
         ! queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 leaky=downstream \
         ! x264enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max={gop} \
           bitrate={kbps} ! video/x-h264,profile=(string)constrained-baseline \
         ! rtph264pay config-interval=-1 pt=96 \
         ! udpsink host=127.0.0.1 port={port} sync=false async=false",
        gop = args.keyframe_interval,
        kbps = args.bitrate_kbps,
        port = args.port,
    )
}

/// Records each frame's wall-clock time where the source produces it and paints it in the
/// `stamp` element, as `device/src/media/stamp.rs` does.
fn attach_stamp(pipeline: &gst::Pipeline) -> anyhow::Result<()> {
    let captured: Arc<Mutex<VecDeque<(gst::ClockTime, u64)>>> = Arc::default();
    let src = pipeline.by_name("src").context("no src element")?;
    let src_pad = src.static_pad("src").context("src without a src pad")?;
    {
        let captured = Arc::clone(&captured);
        src_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                let mut q = captured.lock().expect("stamp lock");
                q.push_back((pts, now_ms()));
                if q.len() > 64 {
                    q.pop_front();
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    let stamp = pipeline.by_name("stamp").context("no stamp element")?;
    let pad = stamp.static_pad("src").context("stamp without a src pad")?;
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(buffer) = info.buffer_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        let ms = buffer
            .pts()
            .and_then(|pts| {
                let q = captured.lock().expect("stamp lock");
                q.iter().rev().find(|(p, _)| *p == pts).map(|(_, ms)| *ms)
            })
            .unwrap_or_else(now_ms);
        let Some(caps) = pad.current_caps() else {
            return gst::PadProbeReturn::Ok;
        };
        let Ok(video) = gstreamer_video::VideoInfo::from_caps(&caps) else {
            return gst::PadProbeReturn::Ok;
        };
        if video.format() != gstreamer_video::VideoFormat::I420 {
            return gst::PadProbeReturn::Ok;
        }
        let buffer = buffer.make_mut();
        let Ok(mut frame) =
            gstreamer_video::VideoFrameRef::from_buffer_ref_writable(buffer, &video)
        else {
            return gst::PadProbeReturn::Ok;
        };
        let strides = [
            video.stride()[0] as usize,
            video.stride()[1] as usize,
            video.stride()[2] as usize,
        ];
        let [y, u, v, _] = frame.planes_data_mut();
        ferrocam_protocol::stamp::paint(
            y,
            strides[0],
            [(u, strides[1]), (v, strides[2])],
            video.width() as usize,
            ms,
        );
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    gst::init()?;
    let line = launch_line(&args);
    let pipeline = gst::parse::launch(&line)
        .with_context(|| format!("building {line}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    attach_stamp(&pipeline)?;
    pipeline.set_state(gst::State::Playing)?;
    eprintln!("stamp-source: {line}");
    let bus = pipeline.bus().context("pipeline without a bus")?;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Error(e) => {
                let _ = pipeline.set_state(gst::State::Null);
                anyhow::bail!("pipeline error: {} ({:?})", e.error(), e.debug());
            }
            gst::MessageView::Eos(_) => break,
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    Ok(())
}
