//! Riding out a broker restart: media already flowing peer-to-peer keeps playing, and the
//! device is back online, streaming to new viewers, within seconds of the broker returning.

use std::time::{Duration, Instant};

use ferrocam_tests::{Stack, StackOptions, WhepPlayer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_interrupts_no_stream_and_heals_within_seconds() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions::new("broker_restart").mosquitto()).await?;
    let watching = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    watching.wait_frames(30, Duration::from_secs(20)).await?;

    stack.kill_broker();
    // The outage: signaling is gone, the P2P media is not.
    let before = watching.frames_decoded();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        watching.frames_decoded() >= before + 60,
        "the running stream stalled while the broker was down"
    );

    stack.restart_broker().await?;
    let broker_up = Instant::now();
    // A new viewer gets through as soon as device and gateway are back on the broker.
    let newcomer = loop {
        match WhepPlayer::try_post(&stack.url("whep/demo")).await? {
            Ok(player) => break player,
            Err(reply) => {
                anyhow::ensure!(
                    broker_up.elapsed() < Duration::from_secs(5),
                    "still refused {:?} after the broker came back: {reply}",
                    broker_up.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    newcomer.wait_frames(1, Duration::from_secs(5)).await?;
    let healed = broker_up.elapsed();
    eprintln!(
        "broker restart: new viewer decoding {healed:?} after the broker accepted connections"
    );
    assert!(healed < Duration::from_secs(5), "took {healed:?}");
    stack.wait_online(true).await?;

    // The first viewer never noticed.
    let before = watching.frames_decoded();
    watching
        .wait_frames(before + 30, Duration::from_secs(5))
        .await?;
    newcomer.delete().await?;
    watching.delete().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_camera_is_rebuilt_and_viewers_resume_without_reconnecting() -> anyhow::Result<()>
{
    // A "camera" that errors out every 90 frames (3 s), like a flaky USB connection.
    let metrics_addr = format!("127.0.0.1:{}", ferrocam_tests::free_port());
    let stack = Stack::start(StackOptions::new("camera_fault").device_args(&[
        "--source",
        "pipeline:videotestsrc is-live=true ! identity error-after=90",
        "--audio",
        "off",
        "--metrics-listen",
        &metrics_addr,
    ]))
    .await?;
    let viewer = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    viewer.wait_frames(30, Duration::from_secs(20)).await?;

    // The fault shows in presence…
    let state = |stack: &Stack| -> anyhow::Result<serde_json::Value> {
        let status: serde_json::Value = ureq::get(&stack.url("api/devices/demo"))
            .header("authorization", &stack.bearer())
            .call()?
            .body_mut()
            .read_json()?;
        Ok(status["capabilities"]["camera"].clone())
    };
    let unavailable = ferrocam_tests::eventually(
        "camera unavailable in presence",
        Duration::from_secs(15),
        || async {
            let camera = state(&stack)?;
            Ok((camera["state"] == "unavailable").then_some(camera))
        },
    )
    .await?;
    assert!(
        unavailable["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("identity"),
        "{unavailable}"
    );
    // …then the rebuilt pipeline reports healthy again…
    ferrocam_tests::eventually("camera ok again", Duration::from_secs(15), || async {
        Ok((state(&stack)?["state"] == "ok").then_some(()))
    })
    .await?;
    // …and the same viewer, never reconnected, decodes frames from the new pipeline: well over
    // the 90 one pipeline run can produce.
    viewer.wait_frames(150, Duration::from_secs(20)).await?;
    assert!(
        viewer.keyframes() >= 2,
        "each rebuilt pipeline opens with a keyframe"
    );
    viewer.delete().await?;
    Ok(())
}
