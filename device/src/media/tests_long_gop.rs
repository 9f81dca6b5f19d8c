//! `--keyframe-interval 0` on real encoders: no keyframe unless one is asked for, and one
//! soon after it is.

use std::sync::Arc;

use super::tests::{engine, next, plan};
use super::tests_vp8::with_fallback;
use super::*;

/// How many frames to watch for a keyframe nobody asked for: 9 s, past the longest interval an
/// encoder picks by itself (x264's 250 frames, which `key-int-max=0` would have meant).
const UNASKED_FRAMES: usize = 270;
/// A forced keyframe arrives within this many frames (one second).
const FORCED_WITHIN: usize = 30;

/// Watches `stream` from its first keyframe: none in the next [`UNASKED_FRAMES`], then one
/// within [`FORCED_WITHIN`] of a request.
async fn keyframes_only_when_asked(engine: &Arc<MediaEngine>, codec: VideoCodec, stream: Stream) {
    let mut feed = engine.video_feed(codec).unwrap();
    // A new feed waits for a keyframe (and asks for one): its first unit is one.
    assert!(next(&mut feed).await.keyframe);
    for i in 0..UNASKED_FRAMES {
        assert!(
            !next(&mut feed).await.keyframe,
            "{codec:?}: a keyframe nobody asked for, {i} frames after the first"
        );
    }
    engine.request_keyframe(stream, KeyframeReason::Feedback);
    let mut seen = None;
    for i in 0..FORCED_WITHIN {
        if next(&mut feed).await.keyframe {
            seen = Some(i);
            break;
        }
    }
    assert!(
        seen.is_some(),
        "{codec:?}: no keyframe within {FORCED_WITHIN} frames of a PLI"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_periodic_keyframes_x264_makes_them_only_when_asked() {
    let engine = engine(
        plan(Source::TestPattern, CaptureFormat::Raw, Some("x264enc"), 0),
        None,
    );
    let _lease = engine.acquire().await.unwrap();
    keyframes_only_when_asked(&engine, VideoCodec::H264, Stream::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_periodic_keyframes_openh264_makes_them_only_when_asked() {
    // gstreamer1.0-plugins-bad, which `scripts/setup-system.sh` installs.
    let engine = engine(
        plan(
            Source::TestPattern,
            CaptureFormat::Raw,
            Some("openh264enc"),
            0,
        ),
        None,
    );
    let _lease = engine.acquire().await.unwrap();
    keyframes_only_when_asked(&engine, VideoCodec::H264, Stream::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_periodic_keyframes_the_vp8_fallback_makes_them_only_when_asked() {
    let engine = engine(with_fallback(0), None);
    let _lease = engine.acquire().await.unwrap();
    keyframes_only_when_asked(&engine, VideoCodec::Vp8, Stream::Vp8).await;
}
