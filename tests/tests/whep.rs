//! WHEP egress at the gateway, exercised by a non-browser player (the `webrtc` crate plus a
//! GStreamer H.264 decoder): POST/PATCH/DELETE per draft-ietf-wish-whep and its error answers.

use std::time::Duration;

use ferrocam_protocol::{Capabilities, DeviceId, DeviceStatus, PROTOCOL_VERSION, topics};
use ferrocam_tests::whep::http;
use ferrocam_tests::{Stack, StackOptions, TestMqtt, WhepPlayer, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_player_posts_patches_decodes_and_deletes() -> anyhow::Result<()> {
    let stack = Stack::start(
        StackOptions::new("whep_round_trip")
            .gateway_args(&["--ice-server", "stun:stun.invalid:3478"]),
    )
    .await?;
    let endpoint = stack.url("whep/demo");

    let options = http("OPTIONS", endpoint.clone(), vec![], None).await?;
    assert!(options.status == 200 || options.status == 204, "{options}");
    assert_eq!(options.header("Accept-Post"), Some("application/sdp"));
    assert!(
        options
            .header("Access-Control-Allow-Methods")
            .unwrap()
            .contains("PATCH")
    );
    // CORS only for origins listed in the auth file (tested in security.rs): a request
    // without an Origin gets none.
    assert_eq!(options.header("Access-Control-Allow-Origin"), None);

    let player = WhepPlayer::connect(&endpoint).await?;
    let created = &player.created;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("Content-Type"), Some("application/sdp"));
    // The session URL names the gateway instance, for load balancers to route on.
    assert!(
        player.session_url.contains("/i/gw-0/whep/demo/"),
        "{}",
        player.session_url
    );
    let elsewhere = player.session_url.replace("/i/gw-0/", "/i/gw-9/");
    let misdirected = http("DELETE", elsewhere, vec![], None).await?;
    assert_eq!(misdirected.status, 421, "{}", misdirected.body);
    assert!(player.etag.starts_with('"') && player.etag.ends_with('"'));
    assert!(
        created.body.contains("a=candidate:"),
        "a non-trickle answer carries the device's candidates:\n{}",
        created.body
    );
    assert_eq!(
        created.headers_named("Link"),
        vec![r#"<stun:stun.invalid:3478>; rel="ice-server""#]
    );
    assert!(
        !player.candidates.is_empty(),
        "the player trickled no candidates"
    );

    player.wait_frames(30, Duration::from_secs(20)).await?;
    assert!(player.rtp_packets() > 30);

    // The gateway's metrics saw it.
    let metrics = http("GET", stack.url("metrics"), vec![], None).await?.body;
    for line in [
        "ferrocam_gateway_devices_online 1",
        r#"ferrocam_gateway_sessions{state="answered"} 1"#,
        r#"ferrocam_gateway_sessions{state="awaiting_answer"} 0"#,
        r#"ferrocam_gateway_offers_total{via="whep",result="accepted"} 1"#,
        "ferrocam_gateway_answer_latency_seconds_count 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }

    // PATCH preconditions.
    let frag = "a=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\n";
    assert_eq!(
        player.patch(None, frag).await?.status,
        428,
        "missing If-Match"
    );
    assert_eq!(
        player.patch(Some("\"stale\"".into()), frag).await?.status,
        412
    );
    assert_eq!(
        player.patch(Some("*".into()), frag).await?.status,
        422,
        "ICE restart"
    );
    let restart = "a=ice-ufrag:new1\r\na=ice-pwd:newpasswordnewpassword12\r\n";
    assert_eq!(
        player
            .patch(Some(player.etag.clone()), restart)
            .await?
            .status,
        422
    );
    let wrong_type = http(
        "PATCH",
        player.session_url.clone(),
        vec![
            ("Content-Type", "application/sdp".into()),
            ("If-Match", player.etag.clone()),
        ],
        Some(frag.into()),
    )
    .await?;
    assert_eq!(wrong_type.status, 415);
    assert_eq!(
        player
            .patch(Some(player.etag.clone()), "garbage")
            .await?
            .status,
        400
    );
    let ok = player.patch(Some(player.etag.clone()), frag).await?;
    assert_eq!(ok.status, 204, "{ok}");
    assert!(
        ok.header("ETag").is_none(),
        "a trickle PATCH must not carry an ETag"
    );

    // Still decoding after all that.
    let before = player.frames_decoded();
    player
        .wait_frames(before + 15, Duration::from_secs(10))
        .await?;

    let session_url = player.session_url.clone();
    let etag = player.etag.clone();
    assert_eq!(player.delete().await?, 200);
    let after = http(
        "PATCH",
        session_url.clone(),
        vec![
            ("Content-Type", "application/trickle-ice-sdpfrag".into()),
            ("If-Match", etag),
        ],
        Some(frag.into()),
    )
    .await?;
    assert_eq!(after.status, 404, "the session must be gone after DELETE");
    assert_eq!(http("DELETE", session_url, vec![], None).await?.status, 404);

    // And the gateway holds no session for it.
    ferrocam_tests::eventually("no sessions left", Duration::from_secs(5), || async {
        let health = http("GET", stack.url("healthz"), vec![], None).await?;
        Ok(health.body.contains("\"sessions\":0").then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_refusals_use_the_drafts_status_codes() -> anyhow::Result<()> {
    let mut stack =
        Stack::start(StackOptions::new("whep_refusals").device_args(&["--max-viewers", "1"]))
            .await?;
    let base = stack.url("");
    let post = |path: &str, ctype: &str, body: String| {
        http(
            "POST",
            format!("{base}{path}"),
            vec![("Content-Type", ctype.to_owned())],
            Some(body),
        )
    };

    assert_eq!(
        post("whep/nope", "application/sdp", "v=0".into())
            .await?
            .status,
        404
    );
    assert_eq!(
        post("whep/bad%2Bid", "application/sdp", "v=0".into())
            .await?
            .status,
        400
    );
    assert_eq!(
        post("whep/demo", "text/plain", "v=0".into()).await?.status,
        415
    );
    let huge = format!("v=0\r\n{}", "a=x\r\n".repeat(20_000));
    assert_eq!(
        post("whep/demo", "application/sdp", huge).await?.status,
        413
    );

    // Not SDP at all: the player's mistake, not a codec mismatch.
    let not_sdp = post("whep/demo", "application/sdp", "hello".into()).await?;
    assert_eq!(not_sdp.status, 400, "{not_sdp}");

    // Neither H.264 nor VP8 (codecs.rs covers VP8-only players).
    let vp9_only = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 98\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
        a=rtpmap:98 VP9/90000\r\n";
    let no_codec = post("whep/demo", "application/sdp", vp9_only.into()).await?;
    assert_eq!(no_codec.status, 406, "{no_codec}");
    assert!(no_codec.body.contains("H.264"), "{no_codec}");

    // Busy: the device takes one viewer.
    let first = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    first.wait_frames(10, Duration::from_secs(20)).await?;
    let busy = WhepPlayer::try_post(&stack.url("whep/demo")).await?;
    let busy = busy.err().expect("a second viewer must be refused");
    assert_eq!(busy.status, 503, "{busy}");
    assert!(busy.header("Retry-After").is_some());
    assert!(
        busy.body.contains("limit of 1 viewer") && !busy.body.contains("viewers"),
        "{busy}"
    );
    assert_eq!(first.delete().await?, 200);

    // Offline: 409 with Retry-After.
    stack.kill_device();
    stack.wait_online(false).await?;
    let offline = post("whep/demo", "application/sdp", "v=0".into()).await?;
    assert_eq!(offline.status, 409, "{offline}");
    assert!(offline.header("Retry-After").is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_answers_is_a_timeout() -> anyhow::Result<()> {
    let stack = Stack::start(
        StackOptions::new("answer_timeout")
            .gateway_args(&["--answer-timeout-ms", "1500"])
            .enroll("mute"),
    )
    .await?;
    // An enrolled "device" that announces itself and then ignores every offer.
    let mute = DeviceId::parse("mute")?;
    let mute_login = stack.creds.enroll("mute")?;
    let impostor = TestMqtt::as_device(stack.mqtt_port, &mute_login, &[]).await?;
    let status = DeviceStatus {
        v: PROTOCOL_VERSION,
        device: mute.clone(),
        online: true,
        epoch: 1,
        seq: 0,
        version: "test".into(),
        capabilities: Some(Capabilities::default()),
    };
    impostor
        .client
        .publish(
            topics::device_status(&mute),
            rumqttc::QoS::AtLeastOnce,
            true,
            mute_login.signer().seal(
                &topics::device_status(&mute),
                &serde_json::to_vec(&status)?,
                ferrocam_mqtt::now_ms(),
            ),
        )
        .await?;
    eventually(
        "the mute device listed",
        Duration::from_secs(10),
        || async {
            let reply = http("GET", stack.url("api/devices/mute"), vec![], None).await?;
            Ok((reply.status == 200).then_some(()))
        },
    )
    .await?;

    let started = std::time::Instant::now();
    let reply = WhepPlayer::try_post(&stack.url("whep/mute")).await?;
    let reply = reply.err().expect("no answer can come");
    assert_eq!(reply.status, 504, "{reply}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let health = http("GET", stack.url("healthz"), vec![], None).await?;
    assert!(health.body.contains("\"sessions\":0"), "{}", health.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_sweeps_sessions_that_never_connect() -> anyhow::Result<()> {
    let stack = Stack::start(
        StackOptions::new("half_open_sweep").device_args(&["--session-timeout-secs", "2"]),
    )
    .await?;
    // Offer and answer, then vanish before ICE: a half-open session on the device.
    let player = WhepPlayer::post_only(&stack.url("whep/demo")).await?;
    player.close().await;
    let health = http("GET", stack.url("healthz"), vec![], None).await?;
    assert!(health.body.contains("\"sessions\":1"), "{}", health.body);
    // The device gives up after its timeout and tells the gateway, which frees the session.
    eventually(
        "the half-open session swept",
        Duration::from_secs(10),
        || async {
            let health = http("GET", stack.url("healthz"), vec![], None).await?;
            Ok(health.body.contains("\"sessions\":0").then_some(()))
        },
    )
    .await
}
