//! The media engine on real GStreamer pipelines (test pattern, x264/openh264, MJPEG decode,
//! H.264 passthrough), with fan-out, keyframe and lifecycle behaviour.

use std::sync::Arc;
use std::time::Duration;

use super::*;

pub(super) fn plan(
    source: Source,
    format: CaptureFormat,
    encoder: Option<&str>,
    gop: u32,
) -> VideoPlan {
    VideoPlan {
        source,
        format,
        encoder: encoder.map(|name| {
            encoder::CANDIDATES
                .into_iter()
                .find(|e| e.element == name)
                .expect("known encoder")
        }),
        width: 640,
        height: 360,
        fps: 30,
        bitrate_kbps: 800,
        keyframe_interval: gop,
        stamp: false,
        vp8: None,
        low: None,
    }
}

pub(super) fn engine(video: VideoPlan, audio: Option<AudioSource>) -> Arc<MediaEngine> {
    gstreamer::init().unwrap();
    MediaEngine::new(EngineSettings {
        video,
        audio,
        idle_timeout: Duration::from_millis(300),
        keyframe_min_interval: Duration::from_millis(500),
        snapshot_settle_frames: 0,
    })
}

/// NAL unit types present in an Annex-B access unit.
fn nal_types(data: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            types.push(data[i + 3] & 0x1f);
            i += 3;
        }
        i += 1;
    }
    types
}

pub(super) async fn next(feed: &mut VideoFeed) -> AccessUnit {
    tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("an access unit within 10 s")
        .expect("engine alive")
}

/// Starts the engine, takes 20 access units and checks the first is a keyframe with SPS/PPS.
async fn assert_streams(video: VideoPlan) {
    let engine = engine(video, None);
    let _lease = engine.acquire().await.expect("pipeline starts");
    let mut feed = engine.video_feed(VideoCodec::H264).unwrap();
    let first = next(&mut feed).await;
    assert!(first.keyframe);
    let nals = nal_types(&first.data);
    assert!(
        nals.contains(&7) && nals.contains(&8) && nals.contains(&5),
        "{nals:?}"
    );
    for _ in 0..20 {
        let unit = next(&mut feed).await;
        assert!(!unit.data.is_empty());
        assert!(unit.duration > Duration::ZERO);
    }
}

fn installed(element: &str) -> bool {
    gstreamer::init().unwrap();
    gstreamer::ElementFactory::find(element).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pattern_through_x264() {
    assert_streams(plan(
        Source::TestPattern,
        CaptureFormat::Raw,
        Some("x264enc"),
        30,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pattern_through_openh264() {
    assert!(
        installed("openh264enc"),
        "gstreamer1.0-plugins-bad provides openh264enc"
    );
    assert_streams(plan(
        Source::TestPattern,
        CaptureFormat::Raw,
        Some("openh264enc"),
        30,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mjpeg_source_is_decoded_then_encoded() {
    // Stands in for a UVC webcam delivering MJPEG.
    let mjpeg_camera = Source::Pipeline(
        "videotestsrc is-live=true ! video/x-raw,width=640,height=360,framerate=30/1 ! jpegenc"
            .into(),
    );
    let plan = plan(mjpeg_camera, CaptureFormat::Mjpeg, Some("x264enc"), 30);
    assert!(plan.describe().contains("jpegdec"));
    assert_streams(plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cameras_own_h264_passes_through_without_an_encoder() {
    // Stands in for a UVC camera with a built-in H.264 encoder (AVC stream format, as many
    // deliver it): h264parse must turn it into Annex-B access units with SPS/PPS repeated.
    let h264_camera = Source::Pipeline(
        "videotestsrc is-live=true ! video/x-raw,width=640,height=360,framerate=30/1 \
         ! x264enc tune=zerolatency key-int-max=15 ! video/x-h264,stream-format=avc"
            .into(),
    );
    let plan = plan(h264_camera, CaptureFormat::H264, None, 30);
    let description = plan.describe();
    assert!(
        !description.contains("x264enc tune=zerolatency speed-preset"),
        "{description}"
    );
    assert_streams(plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_viewer_gets_a_keyframe_within_two_frames() {
    // A 10 s GOP: without a forced keyframe the joiner would wait up to 10 s.
    let engine = engine(
        plan(
            Source::TestPattern,
            CaptureFormat::Raw,
            Some("x264enc"),
            300,
        ),
        None,
    );
    let _lease = engine.acquire().await.unwrap();
    let mut early = engine.video_feed(VideoCodec::H264).unwrap();
    next(&mut early).await;
    for _ in 0..20 {
        next(&mut early).await; // well past the first keyframe
    }
    let mut raw = engine.raw_units();
    engine.request_keyframe(Stream::H264, KeyframeReason::Join);
    let mut waited = 0;
    loop {
        let unit = raw.recv().await.unwrap();
        waited += 1;
        if unit.keyframe {
            break;
        }
        assert!(waited < 3, "no keyframe within 2 frames of the join");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_concurrent_viewers_each_start_on_a_keyframe_and_see_the_same_stream() {
    let engine = engine(
        plan(
            Source::TestPattern,
            CaptureFormat::Raw,
            Some("x264enc"),
            300,
        ),
        None,
    );
    let mut leases = Vec::new();
    for _ in 0..3 {
        leases.push(engine.acquire().await.unwrap());
    }
    let mut feeds: Vec<_> = (0..3)
        .map(|_| engine.video_feed(VideoCodec::H264).unwrap())
        .collect();
    let mut streams = Vec::new();
    for feed in &mut feeds {
        let mut units = Vec::new();
        for _ in 0..15 {
            units.push(next(feed).await);
        }
        streams.push(units);
    }
    for units in &streams {
        assert!(units[0].keyframe, "a viewer started mid-GOP");
    }
    // The feeds are the one encoder's output: from the last feed's first keyframe on, all agree.
    let start = &streams[2][0].data;
    for units in &streams[..2] {
        let at = units
            .iter()
            .position(|u| u.data == *start)
            .expect("same access units");
        assert!(
            units[at..]
                .iter()
                .zip(&streams[2])
                .all(|(a, b)| a.data == b.data)
        );
    }
    drop(leases);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_keyframe_requests_is_rate_limited_on_the_real_encoder() {
    let engine = engine(
        plan(
            Source::TestPattern,
            CaptureFormat::Raw,
            Some("x264enc"),
            300,
        ),
        None,
    );
    let _lease = engine.acquire().await.unwrap();
    let mut feed = engine.video_feed(VideoCodec::H264).unwrap();
    next(&mut feed).await;
    // 2 s of a viewer sending PLI every frame.
    let mut keyframes = 0;
    for _ in 0..60 {
        engine.request_keyframe(Stream::H264, KeyframeReason::Feedback);
        if next(&mut feed).await.keyframe {
            keyframes += 1;
        }
    }
    assert!(
        (2..=6).contains(&keyframes),
        "{keyframes} keyframes in 60 frames of PLI"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_starts_with_the_first_viewer_and_stops_after_the_last() {
    let engine = engine(
        plan(Source::TestPattern, CaptureFormat::Raw, Some("x264enc"), 30),
        None,
    );
    assert!(!engine.is_running());
    let a = engine.acquire().await.unwrap();
    let b = engine.acquire().await.unwrap();
    assert!(engine.is_running());
    drop(a);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(engine.is_running(), "one viewer is still watching");
    drop(b);
    // Back within the idle timeout: the pipeline keeps running.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = engine.acquire().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(engine.is_running());
    drop(c);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!engine.is_running(), "idle pipeline still running");
    let _d = engine.acquire().await.unwrap();
    let mut feed = engine.video_feed(VideoCodec::H264).unwrap();
    assert!(
        next(&mut feed).await.keyframe,
        "a restarted pipeline streams again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_tone_reaches_viewers_as_opus() {
    let engine = engine(
        plan(Source::TestPattern, CaptureFormat::Raw, Some("x264enc"), 30),
        Some(AudioSource::TestTone),
    );
    let _lease = engine.acquire().await.unwrap();
    assert!(engine.audio_enabled());
    let mut audio = engine.audio_feed().expect("audio on");
    for _ in 0..10 {
        let packet = tokio::time::timeout(Duration::from_secs(5), audio.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(!packet.data.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_microphone_degrades_to_video_only() {
    let engine = engine(
        plan(Source::TestPattern, CaptureFormat::Raw, Some("x264enc"), 30),
        Some(AudioSource::Alsa("hw:97,0".into())),
    );
    let _lease = engine
        .acquire()
        .await
        .expect("video starts even though audio cannot");
    assert!(!engine.audio_enabled());
    assert!(engine.audio_feed().is_none());
    let mut feed = engine.video_feed(VideoCodec::H264).unwrap();
    assert!(next(&mut feed).await.keyframe);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_viewer_drops_frames_for_itself_only() {
    let engine = engine(
        plan(
            Source::TestPattern,
            CaptureFormat::Raw,
            Some("x264enc"),
            300,
        ),
        None,
    );
    let _lease = engine.acquire().await.unwrap();
    let mut slow = engine.video_feed(VideoCodec::H264).unwrap();
    let mut fast = engine.video_feed(VideoCodec::H264).unwrap();
    next(&mut slow).await;
    // The slow viewer stops reading for longer than the fan-out buffer holds (64 frames);
    // the fast one keeps up and must see every frame in order.
    let mut fast_units = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        fast_units.push(next(&mut fast).await);
    }
    assert!(
        fast_units.len() >= 75,
        "fast viewer got {} frames in 3 s",
        fast_units.len()
    );
    let keyframes = fast_units.iter().filter(|u| u.keyframe).count();
    assert!(
        keyframes <= 2,
        "the fast viewer saw {keyframes} keyframes; lag must not disturb it"
    );
    // The slow viewer resumes, and resumes on a keyframe (it asked for one when it noticed).
    let resumed = next(&mut slow).await;
    assert!(
        resumed.keyframe,
        "a lagging viewer must restart at a keyframe"
    );
}
