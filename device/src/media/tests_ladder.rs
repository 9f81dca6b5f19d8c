//! The main stream's ladder on real GStreamer: each rung's frames come out of the running
//! encoder at their size and rate, starting at a keyframe, with no restart and nothing else
//! disturbed.

use super::tests::{engine, next, plan};
use super::tests_low::decoded_size;
use super::*;

/// A 640×360 main stream (its rungs: 480×270, 320×180, then 320×180 at 15 fps).
fn small() -> VideoPlan {
    plan(Source::TestPattern, CaptureFormat::Raw, Some("x264enc"), 60)
}

/// Takes units until a keyframe of `size` arrives; how many came before it.
async fn until_size(feed: &mut VideoFeed, size: (i32, i32)) -> (AccessUnit, usize) {
    for before in 0..60 {
        let unit = next(feed).await;
        if unit.keyframe && decoded_size(&unit) == size {
            return (unit, before);
        }
    }
    panic!("no {size:?} keyframe within 60 frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_main_stream_steps_down_the_ladder_and_back() {
    let engine = engine(small(), None);
    let _lease = engine.acquire().await.expect("pipeline starts");
    let mut feed = engine.video_feed(VideoCodec::H264).unwrap();
    let first = next(&mut feed).await;
    assert_eq!(decoded_size(&first), (640, 360));
    let full_frame = first.duration;
    assert_eq!(full_frame, Duration::from_secs(1) / 30);
    assert!(
        !engine.set_rung(Stream::H264, Rung::Full),
        "already on the full rung"
    );

    // Down two rungs at once: the next frame of the new size is a keyframe.
    assert!(engine.set_rung(Stream::H264, Rung::Half));
    let (half, before) = until_size(&mut feed, (320, 180)).await;
    assert!(before < 15, "the step took {before} frames");
    assert_eq!(half.duration, full_frame);
    let frame = engine.frame(Stream::H264);
    assert_eq!((frame.width, frame.height, frame.fps), (320, 180, 30));
    for _ in 0..10 {
        let unit = next(&mut feed).await;
        assert!(
            !unit.keyframe,
            "a keyframe with no reason: the encoder restarted"
        );
    }

    // Half the frame rate: each frame lasts twice as long (RTP timestamps follow it), and the
    // size stays.
    assert!(engine.set_rung(Stream::H264, Rung::HalfAtHalfRate));
    let mut slow = None;
    for _ in 0..30 {
        let unit = next(&mut feed).await;
        if unit.duration > full_frame {
            slow = Some(unit);
            break;
        }
    }
    let slow = slow.expect("no frame at half the rate within 30 frames");
    assert_eq!(slow.duration, Duration::from_secs(1) / 15);
    for _ in 0..10 {
        let unit = next(&mut feed).await;
        assert_eq!(unit.duration, Duration::from_secs(1) / 15);
        if unit.keyframe {
            assert_eq!(decoded_size(&unit), (320, 180));
        }
    }

    // And back to the full picture in one step.
    assert!(engine.set_rung(Stream::H264, Rung::Full));
    let (full, _) = until_size(&mut feed, (640, 360)).await;
    assert_eq!(full.duration, full_frame);
    // Only the main stream has a ladder.
    assert!(!engine.set_rung(Stream::Vp8, Rung::Half));
    assert!(!engine.set_rung(Stream::H264Low, Rung::Half));
}
