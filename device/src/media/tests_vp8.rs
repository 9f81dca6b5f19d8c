//! The VP8 fallback on real GStreamer: shut until a VP8 feed opens, keyframes on join and on
//! request, shut again when the last VP8 feed closes, and absent for passthrough cameras.

use std::time::Duration;

use super::tests::{engine, next, plan};
use super::*;

/// A VP8 frame header (RFC 6386 §9.1): bit 0 of the first byte is 0 on a keyframe, which
/// carries the start code 9d 01 2a and the frame size.
fn vp8_keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((width, height))
}

pub(super) fn with_fallback(gop: u32) -> VideoPlan {
    VideoPlan {
        vp8: Some(Vp8Size::Within(320, 180)),
        low: None,
        ..plan(
            Source::TestPattern,
            CaptureFormat::Raw,
            Some("x264enc"),
            gop,
        )
    }
}

/// Takes `n` H.264 units from `feed`: a clock made of frames, so waits follow the pipeline.
async fn frames(feed: &mut VideoFeed, n: usize) {
    for _ in 0..n {
        next(feed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vp8_encoder_runs_only_while_a_vp8_viewer_watches() {
    let engine = engine(with_fallback(30), None);
    assert_eq!(engine.codecs(), vec![VideoCodec::H264, VideoCodec::Vp8]);
    let _lease = engine.acquire().await.expect("pipeline starts");
    let mut h264 = engine.video_feed(VideoCodec::H264).unwrap();
    // A second of H.264 with nobody on VP8: the fallback encoder produced nothing.
    frames(&mut h264, 40).await;
    assert_eq!(
        engine.stream_rates(Stream::Vp8).0,
        0.0,
        "VP8 encoded with no VP8 viewer"
    );

    let mut vp8 = engine.video_feed(VideoCodec::Vp8).unwrap();
    let first = next(&mut vp8).await;
    assert!(first.keyframe, "a VP8 feed starts at a keyframe");
    assert_eq!(vp8_keyframe_size(&first.data), Some((320, 180)));
    for _ in 0..10 {
        let unit = next(&mut vp8).await;
        assert!(!unit.data.is_empty());
    }
    assert_eq!(engine.vp8_viewers(), 1);

    // The H.264 viewers' stream goes on untouched beside it.
    frames(&mut h264, 10).await;

    drop(vp8);
    until(|| engine.vp8_viewers() == 0).await;
    // Give the last frames in flight a second to leave, then a full second with none.
    frames(&mut h264, 40).await;
    frames(&mut h264, 40).await;
    assert_eq!(
        engine.stream_rates(Stream::Vp8).0,
        0.0,
        "VP8 still encoding after its last viewer left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vp8_keyframe_request_gets_a_vp8_keyframe_without_touching_h264() {
    // Periodic keyframes far apart, so any keyframe seen is a forced one.
    let engine = engine(with_fallback(10_000), None);
    let _lease = engine.acquire().await.expect("pipeline starts");
    let mut vp8 = engine.video_feed(VideoCodec::Vp8).unwrap();
    assert!(next(&mut vp8).await.keyframe);
    let forced_before = engine.keyframes_forced.get();
    // Past the keyframe gate's minimum interval (500 ms in these tests).
    frames(&mut vp8, 20).await;
    let mut h264 = engine.raw_units();
    engine.request_keyframe(Stream::Vp8, KeyframeReason::Feedback);
    let mut seen = None;
    for i in 0..30 {
        if next(&mut vp8).await.keyframe {
            seen = Some(i);
            break;
        }
    }
    assert!(
        seen.is_some(),
        "no VP8 keyframe within 30 frames of the request"
    );
    assert_eq!(engine.keyframes_forced.get(), forced_before + 1);
    // The H.264 encoder went on with delta frames meanwhile.
    let mut h264_frames = 0;
    // A slow VP8 encoder (a loaded machine) can leave more H.264 units waiting than the
    // fan-out holds: the oldest are skipped, and the rest still count.
    loop {
        match h264.try_recv() {
            Ok(unit) => {
                assert!(!unit.keyframe, "a VP8 request forced an H.264 keyframe");
                h264_frames += 1;
            }
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        }
    }
    // The VP8 keyframe can come out before the H.264 encoder's frame of the same picture (the
    // two branches run on their own threads): then the H.264 encoder is waited for, a moment.
    if h264_frames == 0 {
        let unit = tokio::time::timeout(Duration::from_secs(2), h264.recv())
            .await
            .expect("no H.264 frames while waiting")
            .expect("the H.264 fan-out closed");
        assert!(!unit.keyframe, "a VP8 request forced an H.264 keyframe");
        h264_frames += 1;
    }
    assert!(h264_frames > 0, "no H.264 frames while waiting");
}

#[test]
fn the_fallback_keeps_the_main_streams_shape_and_follows_its_size() {
    let sized = |width, height, vp8| {
        VideoPlan {
            width,
            height,
            vp8: Some(vp8),
            low: None,
            ..plan(Source::TestPattern, CaptureFormat::Raw, Some("x264enc"), 30)
        }
        .vp8_size()
    };
    let default = Vp8Size::Within(640, 360);
    assert_eq!(sized(1280, 720, default), Some((640, 360)));
    // A 4:3 camera keeps 4:3, inside the box.
    assert_eq!(sized(640, 480, default), Some((480, 360)));
    // Never larger than the main stream (after `video.set` made it smaller).
    assert_eq!(sized(320, 240, default), Some((320, 240)));
    assert_eq!(sized(1920, 1080, Vp8Size::Full), Some((1920, 1080)));
    // Odd results are made even.
    assert_eq!(
        sized(1000, 750, Vp8Size::Within(333, 333)),
        Some((332, 250))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_camera_has_no_fallback() {
    let h264_camera = Source::Pipeline(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=180,framerate=30/1 \
         ! x264enc tune=zerolatency key-int-max=30 ! video/x-h264"
            .to_owned(),
    );
    let engine = engine(
        VideoPlan {
            vp8: Some(Vp8Size::Within(320, 180)),
            low: None,
            ..plan(h264_camera, CaptureFormat::H264, None, 30)
        },
        None,
    );
    assert_eq!(engine.codecs(), vec![VideoCodec::H264]);
    let refused = engine.video_feed(VideoCodec::Vp8).err().expect("refused");
    assert!(refused.to_string().contains("cannot send VP8"), "{refused}");
}

/// Waits (up to 5 s) for `done`, which the engine's thread makes true.
pub(super) async fn until(done: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the engine's thread caught up within 5 s");
}
