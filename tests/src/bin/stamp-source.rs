//! The device's stamped test pattern as plain RTP, for peers that take RTP in (Janus's
//! streaming plugin): the same 1280×720 @ 30 fps SMPTE bars (with the running clock when
//! `timeoverlay` exists), the same glass-to-glass stamp (`ferrocam_protocol::stamp`, capture
//! time taken where `videotestsrc` produces the frame, painted by an `identity` before the
//! encoder) and the same x264 settings as `ferrocam-device` (tune=zerolatency,
//! speed-preset=ultrafast, no B-frames, constrained baseline), packetized by `rtph264pay` into
//! packets of at most 1200 bytes like the device's (the element's default, 1400, would give
//! the peer ~15 % fewer packets to relay per viewer) and sent to `127.0.0.1:<port>`.
//!
//! `stamp-source --port 5004 [--bitrate-kbps 2000] [--keyframe-interval 60]`; runs until killed.

use anyhow::Context;
use gstreamer as gst;
use gstreamer::prelude::*;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;
const FPS: u32 = 30;

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
         ! rtph264pay config-interval=-1 pt=96 mtu=1200 \
         ! udpsink host=127.0.0.1 port={port} sync=false async=false",
        gop = args.keyframe_interval,
        kbps = args.bitrate_kbps,
        port = args.port,
    )
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    gst::init()?;
    let line = launch_line(&args);
    let pipeline = gst::parse::launch(&line)
        .with_context(|| format!("building {line}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    ferrocam_stamp_gst::attach(&pipeline, WIDTH)?;
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
