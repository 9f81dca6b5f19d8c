//! Bad input gets a clear error and takes nothing down: garbage on the device's MQTT topic,
//! forged reply topics, malformed SDP, unknown devices over REST and WebSocket.

use std::time::Duration;

use ferrocam_protocol::control::Role;
use ferrocam_protocol::{
    DeviceId, ErrorCode, FromDevice, InstanceId, Party, Reply, Request, SessionId, ToDevice, topics,
};
use ferrocam_tests::{Browser, Stack, StackOptions, TestMqtt, eventually};

fn probe() -> Party {
    Party::Gateway(InstanceId::parse("test-probe").unwrap())
}

/// Publishes `payload` on `topic` signed with the grant key, as a gateway would, when it is
/// JSON (only JSON can be signed); anything else goes out as is, and the device's gate drops it.
async fn send(
    mqtt: &TestMqtt,
    creds: &ferrocam_tests::Credentials,
    topic: &str,
    payload: impl Into<Vec<u8>>,
) -> anyhow::Result<()> {
    let payload = payload.into();
    let payload = if serde_json::from_slice::<serde_json::Value>(&payload).is_ok() {
        creds.sign_request(topic, &payload)?
    } else {
        payload
    };
    mqtt.publish(topic, payload).await
}

fn session(n: u8) -> SessionId {
    SessionId::from_random([n; 16])
}

#[tokio::test]
async fn device_survives_garbage_and_answers_bad_offers_with_typed_errors() -> anyhow::Result<()> {
    let mut stack =
        Stack::start(StackOptions::new("device_survives_garbage").enroll("probe")).await?;
    let device = DeviceId::parse(&stack.device_id)?;
    let signal = topics::device_signal(&device);
    let status = topics::device_status(&device);
    let probe_instance = InstanceId::parse("test-probe")?;
    let reply = topics::device_reply(&device, &probe_instance);
    let reply = reply.as_str();
    let grant = |n: u8| stack.creds.grant("demo", &session(n), Role::View, 30);
    // An enrolled device (the embedded broker admits nobody else) that also holds the
    // gateway's grant key, so it can sign requests as a gateway: what is under test is how the
    // device takes what is inside them.
    let probe_device = stack.creds.enroll("probe")?;
    let mut mqtt = TestMqtt::as_device(stack.mqtt_port, &probe_device, &[reply, &status]).await?;
    // The retained online status arrives first.
    let (_, retained) = mqtt
        .next(Duration::from_secs(5))
        .await
        .expect("retained status");
    assert!(String::from_utf8_lossy(&retained).contains("\"online\":true"));

    let garbage: Vec<Vec<u8>> = vec![
        b"\xff\xfe not json at all".to_vec(),
        b"{}".to_vec(),
        b"[1,2,3]".to_vec(),
        vec![b'{'; 100 * 1024], // over the 64 KiB signal limit
        br#"{"v":99,"session":"s","device":"demo","type":"offer","sdp":"v=0"}"#.to_vec(),
        br#"{"v":1,"session":"a/#","device":"demo","type":"offer","sdp":"v=0"}"#.to_vec(),
        br#"{"v":1,"session":"s1","device":"demo","type":"no_such_type"}"#.to_vec(),
        // A forged reply topic: the device must not publish onto its own status topic.
        Request::new(
            probe(),
            device.clone(),
            session(1),
            ToDevice::Offer {
                sdp: "v=0".into(),
                trickle: true,
                role: Role::View,
                grant: Some(grant(1)?),
            },
        )
        .reply_to(status.clone())
        .encode(),
        // A candidate for a session that does not exist.
        Request::new(
            probe(),
            device.clone(),
            session(2),
            ToDevice::HangUp {
                reason: "nothing".into(),
            },
        )
        .encode(),
    ];
    for payload in garbage {
        send(&mqtt, &stack.creds, &signal, payload).await?;
    }

    // A well-formed envelope with an SDP that is not SDP gets a typed error back.
    send(
        &mqtt,
        &stack.creds,
        &signal,
        Request::new(
            probe(),
            device.clone(),
            session(3),
            ToDevice::Offer {
                sdp: "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n\
                      a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\nthis is not sdp"
                    .into(),
                trickle: true,
                role: Role::View,
                grant: Some(grant(3)?),
            },
        )
        .reply_to(reply.into())
        .encode(),
    )
    .await?;
    // And an offer with neither H.264 nor VP8 gets `no_common_codec`.
    send(
        &mqtt,
        &stack.creds,
        &signal,
        Request::new(
            probe(),
            device.clone(),
            session(4),
            ToDevice::Offer {
                sdp: "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 AV1/90000\r\n".into(),
                trickle: true,
                role: Role::View,
                grant: Some(grant(4)?),
            },
        )
        .reply_to(reply.into())
        .encode(),
    )
    .await?;

    // Malformed requests that still say where to reply get a typed error there.
    let unknown_type = format!(
        r#"{{"v":1,"session":"{}","device":"demo","reply_to":"{reply}","type":"warp"}}"#,
        session(5)
    );
    send(&mqtt, &stack.creds, &signal, unknown_type).await?;
    let future_version = format!(
        r#"{{"v":2,"session":"{}","device":"demo","reply_to":"{reply}","type":"offer"}}"#,
        session(6)
    );
    send(&mqtt, &stack.creds, &signal, future_version).await?;

    let mut errors = std::collections::HashMap::new();
    while errors.len() < 4 {
        let Some((topic, payload)) = mqtt.next(Duration::from_secs(10)).await else {
            anyhow::bail!("expected four error replies, got {errors:?}");
        };
        assert_ne!(
            topic, status,
            "the device published on a forged reply topic"
        );
        let envelope = Reply::decode(&stack.enrollment.open(&topic, &payload)?)?;
        if let FromDevice::Error { code, .. } = envelope.body {
            errors.insert(envelope.session, code);
        }
    }
    assert_eq!(errors[&session(3)], ErrorCode::BadRequest);
    assert_eq!(errors[&session(4)], ErrorCode::NoCommonCodec);
    assert_eq!(errors[&session(5)], ErrorCode::BadRequest);
    assert_eq!(errors[&session(6)], ErrorCode::UnsupportedVersion);

    // Sessions the device offers: an invite without a grant is refused; answers that are not
    // SDP, or that reject the video, end the session with a typed error.
    let invite = |n: u8, grant: Option<String>| {
        Request::new(
            probe(),
            device.clone(),
            session(n),
            ToDevice::Invite {
                role: Role::View,
                grant,
            },
        )
        .reply_to(reply.into())
        .encode()
    };
    send(&mqtt, &stack.creds, &signal, invite(7, Some(grant(7)?))).await?;
    send(&mqtt, &stack.creds, &signal, invite(8, Some(grant(8)?))).await?;
    send(&mqtt, &stack.creds, &signal, invite(9, None)).await?;
    let mut replies = std::collections::HashMap::new();
    while replies.len() < 3 {
        let Some((topic, payload)) = mqtt.next(Duration::from_secs(10)).await else {
            anyhow::bail!("expected two offers and a refusal, got {replies:?}");
        };
        let envelope = Reply::decode(&stack.enrollment.open(&topic, &payload)?)?;
        // Trickled candidates and end-of-candidates follow the offers; not what is counted.
        if matches!(
            envelope.body,
            FromDevice::Offer { .. } | FromDevice::Error { .. }
        ) {
            replies.insert(envelope.session, envelope.body);
        }
    }
    for n in [7, 8] {
        let FromDevice::Offer { sdp, .. } = &replies[&session(n)] else {
            panic!("invite {n} was not answered with an offer: {replies:?}");
        };
        assert!(
            sdp.contains("H264") && sdp.contains("a=setup:active"),
            "{sdp}"
        );
    }
    assert!(
        matches!(
            replies[&session(9)],
            FromDevice::Error {
                code: ErrorCode::Unauthorized,
                ..
            }
        ),
        "{replies:?}"
    );
    let answer = |n: u8, sdp: &str| -> anyhow::Result<Vec<u8>> {
        let grant = stack.creds.answer_grant("demo", &session(n), sdp)?;
        Ok(Request::new(
            probe(),
            device.clone(),
            session(n),
            ToDevice::Answer {
                sdp: sdp.into(),
                grant: Some(grant),
            },
        )
        .encode())
    };
    // Answers the gateway did not vouch for are dropped without a word (anyone on the broker
    // could otherwise hand the stream to their own certificate), and the session lives on.
    let forged = |n: u8, grant: Option<String>| {
        Request::new(
            probe(),
            device.clone(),
            session(n),
            ToDevice::Answer {
                sdp: "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 0\r\n".into(),
                grant,
            },
        )
        .encode()
    };
    send(&mqtt, &stack.creds, &signal, forged(7, None)).await?;
    send(&mqtt, &stack.creds, &signal, forged(7, Some(grant(7)?))).await?;
    send(
        &mqtt,
        &stack.creds,
        &signal,
        forged(
            8,
            Some(stack.creds.answer_grant("demo", &session(8), "v=0")?),
        ),
    )
    .await?;
    while let Some((topic, payload)) = mqtt.next(Duration::from_millis(500)).await {
        let body = Reply::decode(&stack.enrollment.open(&topic, &payload)?)?.body;
        assert!(
            !matches!(body, FromDevice::Error { .. } | FromDevice::HangUp { .. }),
            "a forged answer got a reaction: {body:?}"
        );
    }
    send(
        &mqtt,
        &stack.creds,
        &signal,
        answer(
            7,
            "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\nnot sdp",
        )?,
    )
    .await?;
    send(
        &mqtt,
        &stack.creds,
        &signal,
        answer(8, "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 0\r\n")?,
    )
    .await?;
    let mut errors = std::collections::HashMap::new();
    while errors.len() < 2 {
        let Some((topic, payload)) = mqtt.next(Duration::from_secs(10)).await else {
            anyhow::bail!("expected two errors for the bad answers, got {errors:?}");
        };
        let envelope = Reply::decode(&stack.enrollment.open(&topic, &payload)?)?;
        if let FromDevice::Error { code, .. } = envelope.body {
            errors.insert(envelope.session, code);
        }
    }
    assert_eq!(errors[&session(7)], ErrorCode::BadRequest);
    assert_eq!(errors[&session(8)], ErrorCode::NoCommonCodec);

    // Still alive and still online.
    assert!(stack.device_running(), "device process died");
    let body: serde_json::Value = ureq::get(&stack.url("api/devices/demo"))
        .header("authorization", &stack.bearer())
        .call()?
        .body_mut()
        .read_json()?;
    assert_eq!(body["online"], true, "{body}");
    Ok(())
}

#[tokio::test]
async fn unknown_devices_get_404_over_rest_and_an_error_over_websocket() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("unknown_device")).await?;

    let status = |path: &str| match ureq::get(&stack.url(path))
        .header("authorization", &stack.bearer())
        .call()
    {
        Ok(resp) => resp.status().as_u16(),
        Err(ureq::Error::StatusCode(code)) => code,
        Err(e) => panic!("GET {path}: {e}"),
    };
    assert_eq!(status("api/devices/demo"), 200);
    assert_eq!(status("api/devices/nope"), 404);
    assert_eq!(status("api/devices/bad%2Bid"), 400);
    assert_eq!(status("api/devices/bad%23id"), 400);

    let browser = Browser::start(&stack.log_dir).await?;
    stack.open_viewer(&browser, 0).await?;
    eventually("the page's WebSocket", Duration::from_secs(15), || async {
        Ok(browser
            .js("return window.ferrocam.ws && window.ferrocam.ws.readyState === 1;")
            .await?
            .as_bool()
            .filter(|open| *open))
    })
    .await?;
    browser
        .js("window.ferrocam.watch('nope'); return null;")
        .await?;
    let error = eventually(
        "an unknown_device error",
        Duration::from_secs(15),
        || async {
            let v = browser.js("return window.ferrocam.lastError;").await?;
            Ok((!v.is_null()).then_some(v))
        },
    )
    .await?;
    assert_eq!(error["code"], "unknown_device", "{error}");

    // Malformed WebSocket input gets an error message, and the socket stays usable.
    let reply = browser
        .js_async(
            "const ws = new WebSocket(`ws://${location.host}/ws`);
             const seen = [];
             ws.onmessage = (e) => {
               const m = JSON.parse(e.data);
               if (m.type === 'error') seen.push(m.code);
               if (seen.length === 3) { ws.close(); done(seen); }
             };
             ws.onopen = () => {
               ws.send('{not json');
               ws.send(JSON.stringify({ type: 'offer', device: 'a/#', sdp: 'v=0' }));
               ws.send(JSON.stringify({ type: 'offer', device: 'demo', sdp: 'x'.repeat(100 * 1024) }));
             };",
        )
        .await?;
    assert_eq!(
        reply,
        serde_json::json!(["bad_request", "bad_request", "too_large"])
    );
    browser.close().await
}
