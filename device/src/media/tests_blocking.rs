//! The engine never makes a viewer wait for slow work: with a snapshot held in progress (its
//! JPEG encoder blocked until the test lets go), a viewer still joins and gets its first
//! keyframe, and a viewer's keyframe request is still honoured. Both are measured, with and
//! without the snapshot, and printed (`--nocapture`); the assertions wait on events only.

use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::snapshot::{GstJpeg, Jpeg, JpegEncoder};
use super::tests::{next, plan};
use super::*;

/// A JPEG encoder that holds every snapshot until the test releases it.
struct HeldJpeg {
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl JpegEncoder for HeldJpeg {
    fn encode(&self, frame: &gstreamer::Sample, width: Option<u32>) -> anyhow::Result<Jpeg> {
        let _ = self.entered.send(());
        let _ = self.release.lock().unwrap().recv();
        GstJpeg::default().encode(frame, width)
    }
}

/// A join (lease, feed, first keyframe) and a keyframe request (request to the next keyframe
/// leaving the encoder), timed.
async fn join_and_keyframe(engine: &Arc<MediaEngine>) -> (Duration, Duration) {
    let started = Instant::now();
    let lease = engine.acquire().await.expect("a lease");
    let mut feed = engine.video_feed(VideoCodec::H264).unwrap();
    assert!(
        next(&mut feed).await.keyframe,
        "a join starts at a keyframe"
    );
    let join = started.elapsed();

    let mut units = engine.raw_units();
    let asked = Instant::now();
    engine.request_keyframe(Stream::H264, KeyframeReason::Feedback);
    let keyframe = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if units.recv().await.expect("engine alive").keyframe {
                return asked.elapsed();
            }
        }
    })
    .await
    .expect("the requested keyframe within 10 s");
    drop(lease);
    (join, keyframe)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_in_progress_delays_neither_joins_nor_keyframe_requests() {
    gstreamer::init().unwrap();
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
    let (release, release_rx) = mpsc::channel();
    // A GOP of 10 s: every keyframe in this test is one somebody asked for.
    let engine = MediaEngine::with_jpeg_encoder(
        EngineSettings {
            video: plan(
                Source::TestPattern,
                CaptureFormat::Raw,
                Some("x264enc"),
                300,
            ),
            audio: None,
            idle_timeout: Duration::from_secs(30),
            keyframe_min_interval: Duration::ZERO,
            snapshot_settle_frames: 0,
        },
        Arc::new(HeldJpeg {
            entered: entered_tx,
            release: Mutex::new(release_rx),
        }),
    );
    let _running = engine.acquire().await.unwrap();
    let (join_alone, keyframe_alone) = join_and_keyframe(&engine).await;

    let snapshot = tokio::spawn({
        let engine = Arc::clone(&engine);
        async move { engine.snapshot(SnapshotRequest::default()).await }
    });
    entered
        .recv()
        .await
        .expect("the snapshot reached its encoder");
    let (join_during, keyframe_during) = join_and_keyframe(&engine).await;
    assert!(
        !snapshot.is_finished(),
        "the snapshot was in progress throughout"
    );
    eprintln!(
        "join → first keyframe: {join_alone:?} alone, {join_during:?} during a snapshot; \
         keyframe request → keyframe: {keyframe_alone:?} alone, {keyframe_during:?} during a snapshot"
    );

    release.send(()).unwrap();
    let jpeg = snapshot
        .await
        .unwrap()
        .expect("the snapshot completes once released");
    assert_eq!((jpeg.width, jpeg.height), (640, 360));
    assert_eq!(&jpeg.data[..2], &[0xFF, 0xD8], "a JPEG");
}
