//! The device's media behaviour seen from a real WebRTC receiver: keyframes on PLI, Opus audio,
//! and the video-only fallback when the microphone is missing.

use std::time::Duration;

use ferrocam_tests::{Stack, StackOptions, WhepOptions, WhepPlayer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pli_from_a_viewer_forces_a_keyframe() -> anyhow::Result<()> {
    // A 20 s GOP: any keyframe in the next seconds comes from a request, not the schedule.
    let stack = Stack::start(
        StackOptions::new("pli_keyframe").device_args(&["--keyframe-interval", "600"]),
    )
    .await?;
    let player = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    player.wait_frames(30, Duration::from_secs(20)).await?;
    assert!(
        player.keyframes() >= 1,
        "the stream must start with a keyframe"
    );

    // Quiet period: no keyframes without a request, over 60 decoded frames (counted, not
    // timed: a slow machine still has to show them, so the check cannot pass on an idle
    // stream).
    let before = player.keyframes();
    let frames = player.frames_decoded();
    player
        .wait_frames(frames + 60, Duration::from_secs(20))
        .await?;
    assert_eq!(
        player.keyframes(),
        before,
        "keyframes arrived with nobody asking"
    );

    player.send_pli().await?;
    ferrocam_tests::eventually("a keyframe after PLI", Duration::from_secs(2), || async {
        Ok((player.keyframes() > before).then_some(()))
    })
    .await?;
    let frames = player.frames_decoded();
    player
        .wait_frames(frames + 15, Duration::from_secs(5))
        .await?;
    player.delete().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audio_track_is_negotiated_and_carries_opus() -> anyhow::Result<()> {
    let stack =
        Stack::start(StackOptions::new("audio_opus").device_args(&["--audio", "test"])).await?;
    let status = stack.device_status()?;
    assert_eq!(status["capabilities"]["audio"]["codec"], "opus", "{status}");
    assert_eq!(
        status["capabilities"]["audio"]["source"], "test tone",
        "{status}"
    );

    let player = WhepPlayer::connect_with(
        &stack.url("whep/demo"),
        WhepOptions {
            audio: true,
            skip_decode: false,
            ..Default::default()
        },
    )
    .await?;
    assert!(
        player.created.body.to_lowercase().contains("opus/48000"),
        "the answer has no Opus:\n{}",
        player.created.body
    );
    player.wait_frames(30, Duration::from_secs(20)).await?;
    let start = player.audio_packets();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let per_second = player.audio_packets() - start;
    // 20 ms Opus frames: ~50 a second.
    assert!(
        (35..=65).contains(&per_second),
        "{per_second} audio packets in 1 s"
    );
    player.delete().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_microphone_degrades_to_video_only() -> anyhow::Result<()> {
    let stack =
        Stack::start(StackOptions::new("audio_missing").device_args(&["--audio", "alsa:hw:97,0"]))
            .await?;
    let status = stack.device_status()?;
    assert!(status["capabilities"]["audio"].is_null(), "{status}");

    let player = WhepPlayer::connect_with(
        &stack.url("whep/demo"),
        WhepOptions {
            audio: true,
            skip_decode: false,
            ..Default::default()
        },
    )
    .await?;
    player.wait_frames(60, Duration::from_secs(20)).await?;
    assert_eq!(player.audio_packets(), 0);
    player.delete().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latency_stamp_survives_h264_and_reads_back_as_a_recent_capture_time()
-> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("latency_stamp").device_args(&[
        "--latency-stamp",
        "--audio",
        "off",
    ]))
    .await?;
    let player = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    player.wait_frames(60, Duration::from_secs(20)).await?;
    let samples = player.latencies_ms();
    player.close().await;
    // Nearly every decoded frame carries a readable stamp after 2 Mbit/s H.264.
    assert!(
        samples.len() >= 55,
        "only {} of 60 frames had a readable stamp",
        samples.len()
    );
    // And it is this moment's wall clock, not garbage that passed the checksum (a sanity
    // bound, not a performance target: the benchmark measures latency).
    assert!(
        samples.iter().all(|ms| (0.0..5_000.0).contains(ms)),
        "{samples:?}"
    );

    // Without the flag, nothing is painted.
    let plain =
        Stack::start(StackOptions::new("latency_stamp_off").device_args(&["--audio", "off"]))
            .await?;
    let player = WhepPlayer::connect(&plain.url("whep/demo")).await?;
    player.wait_frames(30, Duration::from_secs(20)).await?;
    assert!(player.latencies_ms().is_empty());
    player.close().await;
    Ok(())
}
