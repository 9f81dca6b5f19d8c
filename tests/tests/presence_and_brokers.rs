//! Presence and multi-gateway signaling on real brokers: the gateway's embedded rumqttd, a
//! Mosquitto started by the test, and a 3-node NATS cluster started by the test (device and
//! gateways on different nodes, so every message crosses the cluster).

use std::time::Duration;

use ferrocam_protocol::{DeviceId, DeviceStatus, topics};
use ferrocam_tests::{Stack, StackOptions, TestMqtt, WhepPlayer};

/// Kill -9 → the broker's last will marks the device offline; a restart marks it online with a
/// newer epoch.
async fn presence_follows_kill_and_restart(options: StackOptions) -> anyhow::Result<()> {
    let mut stack = Stack::start(options.enroll("watcher")).await?;
    let device = DeviceId::parse(&stack.device_id)?;
    let status_topic = topics::device_status(&device);
    // The embedded broker admits only enrolled clients.
    let watcher_login = stack.creds.enroll("watcher")?;
    let mut watcher =
        TestMqtt::as_device(stack.mqtt_port, &watcher_login, &[&status_topic]).await?;
    let (_, first) = watcher
        .next(Duration::from_secs(5))
        .await
        .expect("retained status");
    let first: DeviceStatus = serde_json::from_slice(&ferrocam_tests::inner(&first)?)?;
    assert!(first.online);
    let video = first
        .capabilities
        .as_ref()
        .and_then(|c| c.video.as_ref())
        .expect("capabilities");
    assert_eq!((video.width, video.height, video.fps), (1280, 720, 30));

    stack.kill_device();
    stack.wait_online(false).await?;
    let devices: serde_json::Value = ureq::get(&stack.url("api/devices"))
        .header("authorization", &stack.bearer())
        .call()?
        .body_mut()
        .read_json()?;
    assert_eq!(devices["devices"][0]["online"], false, "{devices}");

    // The will as published: offline, same epoch as the run it belongs to.
    // (Kept as published, signature and all, to replay it below.)
    let (will, will_payload) = loop {
        let (_, payload) = watcher
            .next(Duration::from_secs(5))
            .await
            .expect("the last will");
        let status: DeviceStatus = serde_json::from_slice(&ferrocam_tests::inner(&payload)?)?;
        if !status.online {
            break (status, payload);
        }
    };
    assert_eq!(will.epoch, first.epoch);

    stack.start_device()?;
    stack.wait_online(true).await?;
    let (_, again) = watcher
        .next(Duration::from_secs(10))
        .await
        .expect("online again");
    let again: DeviceStatus = serde_json::from_slice(&ferrocam_tests::inner(&again)?)?;
    assert!(
        again.online && again.epoch > first.epoch,
        "{again:?} after {first:?}"
    );

    // A stale will replayed after the new "online" must not flip the gateway back to offline.
    // The gateway logs each status it refuses as stale: wait for that line, which proves the
    // will was processed, then check nothing changed.
    let refusals = || {
        stack.gateways[0]
            .process
            .log_tail(1 << 20)
            .matches("ignoring a stale status")
            .count()
    };
    let refused_before = refusals();
    let stale = will_payload;
    watcher
        .client
        .publish(&status_topic, rumqttc::QoS::AtLeastOnce, false, stale)
        .await?;
    ferrocam_tests::eventually(
        "the gateway to refuse the stale will",
        Duration::from_secs(10),
        || async { Ok((refusals() > refused_before).then_some(())) },
    )
    .await?;
    let now: serde_json::Value = ureq::get(&stack.url("api/devices/demo"))
        .header("authorization", &stack.bearer())
        .call()?
        .body_mut()
        .read_json()?;
    assert_eq!(
        now["online"], true,
        "a stale will overwrote a newer online: {now}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_on_the_embedded_broker() -> anyhow::Result<()> {
    presence_follows_kill_and_restart(StackOptions::new("presence_embedded")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_on_mosquitto() -> anyhow::Result<()> {
    presence_follows_kill_and_restart(StackOptions::new("presence_mosquitto").mosquitto()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_on_a_nats_cluster() -> anyhow::Result<()> {
    presence_follows_kill_and_restart(StackOptions::new("presence_nats").nats_cluster()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_mosquitto_stream_the_same_device_at_once() -> anyhow::Result<()> {
    two_gateways_stream_the_same_device_at_once(
        StackOptions::new("two_gateways").mosquitto().gateways(2),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_a_nats_cluster_stream_the_same_device_at_once() -> anyhow::Result<()> {
    two_gateways_stream_the_same_device_at_once(
        StackOptions::new("two_gateways_nats")
            .nats_cluster()
            .gateways(2),
    )
    .await
}

/// Two gateways on one shared broker each set up their own WHEP session with the same device
/// at the same time; ending one leaves the other streaming.
async fn two_gateways_stream_the_same_device_at_once(options: StackOptions) -> anyhow::Result<()> {
    let stack = Stack::start(options).await?;
    stack.wait_online_at(1, true).await?;

    // Both sessions are set up concurrently, each through its own gateway.
    let (url_a, url_b) = (
        stack.gateway_url(0, "whep/demo"),
        stack.gateway_url(1, "whep/demo"),
    );
    let (a, b) = tokio::join!(WhepPlayer::connect(&url_a), WhepPlayer::connect(&url_b));
    let (a, b) = (a?, b?);
    let (fa, fb) = tokio::join!(
        a.wait_frames(60, Duration::from_secs(20)),
        b.wait_frames(60, Duration::from_secs(20)),
    );
    fa?;
    fb?;
    // Each gateway routed only its own session.
    assert!(
        a.session_url
            .contains(&format!(":{}/", stack.gateways[0].http_port))
    );
    assert!(
        b.session_url
            .contains(&format!(":{}/", stack.gateways[1].http_port))
    );

    // Ending one leaves the other streaming.
    assert_eq!(a.delete().await?, 200);
    let before = b.frames_decoded();
    b.wait_frames(before + 30, Duration::from_secs(10)).await?;
    assert_eq!(b.delete().await?, 200);
    Ok(())
}

/// `video.set` changes what viewers get; presence (and so the REST API, the page's list and its
/// pickers) follows at once instead of keeping the size and rate the device started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_a_video_set() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("presence_video_set")).await?;
    // A viewer keeps the pipeline running, so the new size is really built.
    let viewer = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    viewer.wait_frames(10, Duration::from_secs(20)).await?;
    let set = ureq::post(&stack.url("api/devices/demo/control"))
        .header("authorization", &stack.bearer())
        .send_json(serde_json::json!({
            "cmd": "video.set", "width": 640, "height": 360, "fps": 15, "bitrate_kbps": 700
        }))?
        .body_mut()
        .read_json::<serde_json::Value>()?;
    assert!(set["error"].is_null(), "{set}");
    let video = ferrocam_tests::eventually(
        "presence to show 640x360 at 15 fps and 700 kbit/s",
        Duration::from_secs(10),
        || async {
            let status: serde_json::Value = ureq::get(&stack.url("api/devices/demo"))
                .header("authorization", &stack.bearer())
                .call()?
                .body_mut()
                .read_json()?;
            let video = status["capabilities"]["video"].clone();
            let now = (
                &video["width"],
                &video["height"],
                &video["fps"],
                &video["bitrate_kbps"],
            );
            Ok((now == (&640.into(), &360.into(), &15.into(), &700.into())).then_some(video))
        },
    )
    .await?;
    // Only what `video.set` changes moved.
    assert_eq!(video["codec"], "H264", "{video}");
    viewer.delete().await?;
    Ok(())
}
