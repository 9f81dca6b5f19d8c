//! The low H.264 stream on real GStreamer: shut until a feed moves to it, a move made at the
//! low stream's first keyframe (smaller frames from there on), a move back at the full stream's
//! keyframe, and the low encoder shut again once nobody watches it.

use super::snapshot::decode_keyframe;
use super::tests::{engine, next, plan};
use super::tests_vp8::until;
use super::*;

/// A 640×360 main stream with a low stream that fits in 320×180.
fn with_low() -> VideoPlan {
    VideoPlan {
        low: Some((320, 180)),
        ..plan(Source::TestPattern, CaptureFormat::Raw, Some("x264enc"), 60)
    }
}

/// The picture size a keyframe decodes to.
pub(super) fn decoded_size(unit: &AccessUnit) -> (i32, i32) {
    let sample = decode_keyframe(&unit.data).expect("the keyframe decodes");
    let caps = sample.caps().expect("decoded caps");
    let s = caps.structure(0).expect("a structure");
    (s.get("width").unwrap(), s.get("height").unwrap())
}

/// Takes units until `feed` is on `stream`; returns the first unit from it and how many of the
/// old stream's units came before it.
async fn until_on(feed: &mut VideoFeed, stream: Stream) -> (AccessUnit, usize) {
    for before in 0..90 {
        let unit = next(feed).await;
        if feed.stream() == stream {
            return (unit, before);
        }
    }
    panic!("the feed did not reach {stream:?} within 90 frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_moves_to_the_low_stream_and_back_at_keyframes() {
    let engine = engine(with_low(), None);
    assert_eq!(
        engine.streams(),
        vec![Stream::H264, Stream::H264Low],
        "a 640x360 camera with a 320x180 box has a low stream"
    );
    let _lease = engine.acquire().await.expect("pipeline starts");
    let mut feed = engine.video_feed(VideoCodec::H264).unwrap();
    let first = next(&mut feed).await;
    assert_eq!(decoded_size(&first), (640, 360));
    for _ in 0..30 {
        next(&mut feed).await;
    }
    assert_eq!(
        engine.stream_rates(Stream::H264Low).0,
        0.0,
        "the low encoder ran with nobody on it"
    );

    feed.move_to(Stream::H264Low);
    let (arrived, before) = until_on(&mut feed, Stream::H264Low).await;
    assert!(arrived.keyframe, "a move lands on a keyframe");
    assert_eq!(decoded_size(&arrived), (320, 180));
    assert!(before < 30, "the move took {before} frames");
    assert_eq!(engine.low_viewers(), 1);
    for _ in 0..20 {
        assert!(!next(&mut feed).await.data.is_empty());
    }

    feed.move_to(Stream::H264);
    let (back, _) = until_on(&mut feed, Stream::H264).await;
    assert!(back.keyframe);
    assert_eq!(decoded_size(&back), (640, 360));
    until(|| engine.low_viewers() == 0).await;
    // A second for the last low frames to leave, then a second with none.
    for _ in 0..60 {
        next(&mut feed).await;
    }
    assert_eq!(
        engine.stream_rates(Stream::H264Low).0,
        0.0,
        "the low encoder still ran after its last viewer left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_low_stream_where_it_would_not_be_smaller_or_for_another_codec() {
    // The box is as big as the main stream: nothing to gain.
    let same = VideoPlan {
        low: Some((640, 360)),
        ..with_low()
    };
    assert_eq!(same.low_size(), None);
    let engine = engine(same, None);
    assert_eq!(engine.streams(), vec![Stream::H264]);
    let _lease = engine.acquire().await.expect("pipeline starts");
    let mut feed = engine.video_feed(VideoCodec::H264).unwrap();
    next(&mut feed).await;
    // Moves to a stream the camera does not make, or of another codec, are ignored.
    feed.move_to(Stream::H264Low);
    feed.move_to(Stream::Vp8);
    for _ in 0..10 {
        next(&mut feed).await;
    }
    assert_eq!(feed.stream(), Stream::H264);
    assert_eq!(engine.low_viewers(), 0);
}
