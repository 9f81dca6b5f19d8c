//! Viewers that cannot decode H.264 get VP8 from the same camera, encoded only while they
//! watch; H.264 viewers beside them are untouched; and a device without the fallback refuses
//! with a sentence that says why. A real device, gateway and WHEP players with GStreamer
//! decoders (H.264 and VP8).

use std::time::Duration;

use ferrocam_protocol::VideoCodec;
use ferrocam_tests::whep::http;
use ferrocam_tests::{Stack, StackOptions, WhepOptions, WhepPlayer, eventually, free_port, metric};

const WAIT: Duration = Duration::from_secs(20);

fn vp8_only() -> WhepOptions {
    WhepOptions {
        codec: VideoCodec::Vp8,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vp8_only_player_gets_vp8_while_h264_players_keep_h264() -> anyhow::Result<()> {
    let port = free_port();
    // Periodic keyframes 20 s apart, so the key frame after the PLI below is the PLI's.
    let listen = format!("127.0.0.1:{port}");
    let stack = Stack::start(StackOptions::new("codecs_vp8").device_args(&[
        "--metrics-listen",
        &listen,
        "--keyframe-interval",
        "600",
    ]))
    .await?;
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let status = stack.device_status()?;
    let video = &status["capabilities"]["video"];
    assert_eq!(
        video["codecs"],
        serde_json::json!(["h264", "vp8"]),
        "{status}"
    );
    assert_eq!(video["fallback"]["codec"], "vp8", "{status}");
    assert_eq!(video["fallback"]["width"], 640, "{status}");

    let h264 = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    h264.wait_frames(30, WAIT).await?;
    assert_eq!(metric(&metrics, "ferrocam_device_vp8_viewers")?, 0.0);
    assert_eq!(
        metric(&metrics, "ferrocam_device_vp8_frames_per_second")?,
        0.0,
        "VP8 encoded before anyone needed it"
    );

    let vp8 = WhepPlayer::connect_with(&stack.url("whep/demo"), vp8_only()).await?;
    assert_eq!(vp8.created.status, 201);
    let answer = vp8.created.body.to_ascii_uppercase();
    assert!(answer.contains("VP8/90000"), "{}", vp8.created.body);
    assert!(!answer.contains("H264/"), "{}", vp8.created.body);
    vp8.wait_frames(60, WAIT).await?;
    assert!(vp8.keyframes() >= 1, "a VP8 viewer starts at a key frame");
    assert_eq!(metric(&metrics, "ferrocam_device_vp8_viewers")?, 1.0);

    // The H.264 player went on decoding all along, and a PLI from the VP8 player is answered
    // with a VP8 key frame.
    let before = h264.frames_decoded();
    h264.wait_frames(before + 30, WAIT).await?;
    let keyframes = vp8.keyframes();
    vp8.send_pli().await?;
    eventually(
        "a VP8 key frame after PLI",
        Duration::from_secs(5),
        || async { Ok((vp8.keyframes() > keyframes).then_some(())) },
    )
    .await?;

    assert_eq!(vp8.delete().await?, 200);
    eventually("the VP8 encoder to stop", WAIT, || async {
        let viewers = metric(&metrics, "ferrocam_device_vp8_viewers")?;
        let fps = metric(&metrics, "ferrocam_device_vp8_frames_per_second")?;
        Ok((viewers == 0.0 && fps == 0.0).then_some(()))
    })
    .await?;
    let before = h264.frames_decoded();
    h264.wait_frames(before + 30, WAIT).await?;
    assert_eq!(h264.delete().await?, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_fallback_a_vp8_only_offer_is_refused_in_plain_words() -> anyhow::Result<()> {
    let stack =
        Stack::start(StackOptions::new("codecs_off").device_args(&["--vp8", "off"])).await?;
    let status = stack.device_status()?;
    assert_eq!(
        status["capabilities"]["video"]["codecs"],
        serde_json::json!(["h264"])
    );
    assert!(
        status["capabilities"]["video"]["fallback"].is_null(),
        "{status}"
    );

    let refused = match WhepPlayer::connect_with(&stack.url("whep/demo"), vp8_only()).await {
        Ok(_) => anyhow::bail!("a VP8-only player was answered by an H.264-only camera"),
        Err(e) => e.downcast::<ferrocam_tests::HttpReply>()?,
    };
    assert_eq!(refused.status, 406, "{refused}");
    assert!(refused.body.contains("H.264"), "{refused}");

    // H.264 still plays.
    let player = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    player.wait_frames(30, WAIT).await?;
    player.delete().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_with_neither_codec_names_both() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("codecs_none")).await?;
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
                 m=video 9 UDP/TLS/RTP/SAVPF 45\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
                 a=rtcp-mux\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
                 a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
                 a=setup:actpass\r\na=rtpmap:45 AV1/90000\r\n";
    let reply = http(
        "POST",
        stack.url("whep/demo"),
        vec![("Content-Type", "application/sdp".to_owned())],
        Some(offer.to_owned()),
    )
    .await?;
    assert_eq!(reply.status, 406, "{reply}");
    assert!(
        reply.body.contains("neither H.264") && reply.body.contains("VP8"),
        "{reply}"
    );
    Ok(())
}
