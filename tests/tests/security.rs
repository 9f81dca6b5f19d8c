//! Nothing flows without authorization: the gateway wants credentials on every API, WebSocket
//! and WHEP request, limits each caller to its devices and role, and refuses foreign origins;
//! the device opens sessions only for grants signed with the gateway's key, once each.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ferrocam_protocol::control::Role;
use ferrocam_protocol::{
    DeviceId, ErrorCode, FromDevice, InstanceId, Party, Reply, Request, SessionId, ToDevice, topics,
};
use ferrocam_tests::whep::http;
use ferrocam_tests::{Credentials, NO_AUTH, Stack, StackOptions, TestMqtt, WhepPlayer};

fn session(n: u8) -> SessionId {
    SessionId::from_random([n; 16])
}

/// An offer the device refuses quickly (no H.264) once it has accepted the grant.
fn av1_offer(device: &DeviceId, n: u8, grant: Option<String>, reply: &str) -> Vec<u8> {
    Request::new(
        Party::Gateway(InstanceId::parse("test-probe").unwrap()),
        device.clone(),
        session(n),
        ToDevice::Offer {
            sdp: "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 AV1/90000\r\n".into(),
            trickle: true,
            role: Role::View,
            grant,
        },
    )
    .reply_to(reply.to_owned())
    .encode()
}

#[tokio::test]
async fn the_device_opens_sessions_only_for_valid_unused_grants() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("device_grants").enroll("probe")).await?;
    let device = DeviceId::parse(&stack.device_id)?;
    let reply = topics::device_reply(&device, &InstanceId::parse("test-probe")?);
    // The embedded broker has no topic ACLs: an enrolled device can publish on another's
    // topics. This probe holds the gateway's grant key too, to sign requests as a gateway;
    // the grants inside are what is under test.
    let probe = stack.creds.enroll("probe")?;
    let mut mqtt = TestMqtt::as_device(stack.mqtt_port, &probe, &[&reply]).await?;
    let signal = topics::device_signal(&device);
    let signed = |request: Vec<u8>| stack.creds.sign_request(&signal, &request).unwrap();
    let decode = |topic: &str, payload: &[u8]| -> anyhow::Result<Reply> {
        Ok(Reply::decode(&stack.enrollment.open(topic, payload)?)?)
    };
    // Someone else's gateway key: a leaked broker password is all such an attacker has.
    let stranger = Credentials::create(&stack.log_dir.join("stranger"))?;

    let creds = &stack.creds;
    let cases: Vec<(u8, Option<String>)> = vec![
        (1, None),
        (2, Some(creds.grant("demo", &session(2), Role::View, -300)?)),
        (
            3,
            Some(creds.grant("other-cam", &session(3), Role::View, 30)?),
        ),
        (
            4,
            Some(stranger.grant("demo", &session(4), Role::View, 30)?),
        ),
        // A grant for session 9 presented for session 5.
        (5, Some(creds.grant("demo", &session(9), Role::View, 30)?)),
        (6, Some("garbage.not.jwt".to_owned())),
    ];
    for (n, grant) in &cases {
        mqtt.publish(
            &signal,
            signed(av1_offer(&device, *n, grant.clone(), &reply)),
        )
        .await?;
    }
    // A good grant: the device gets as far as the SDP (no H.264), proving the grant passed.
    let good = creds.grant("demo", &session(7), Role::View, 30)?;
    mqtt.publish(
        &signal,
        signed(av1_offer(&device, 7, Some(good.clone()), &reply)),
    )
    .await?;

    let mut codes = std::collections::HashMap::new();
    while codes.len() < cases.len() + 1 {
        let Some((topic, payload)) = mqtt.next(Duration::from_secs(10)).await else {
            anyhow::bail!("expected {} errors, got {codes:?}", cases.len() + 1);
        };
        let reply = decode(&topic, &payload)?;
        if let FromDevice::Error { code, message } = reply.body {
            codes.insert(reply.session, (code, message));
        }
    }
    for (n, _) in &cases {
        assert_eq!(
            codes[&session(*n)].0,
            ErrorCode::Unauthorized,
            "case {n}: {:?}",
            codes[&session(*n)]
        );
    }
    assert!(
        codes[&session(2)].1.contains("expired"),
        "{:?}",
        codes[&session(2)]
    );
    assert!(
        codes[&session(3)].1.contains("other-cam"),
        "{:?}",
        codes[&session(3)]
    );
    assert_eq!(codes[&session(7)].0, ErrorCode::NoCommonCodec);

    // The same grant again (a replay of a captured offer) is refused.
    mqtt.publish(&signal, signed(av1_offer(&device, 7, Some(good), &reply)))
        .await?;
    let (topic, payload) = mqtt
        .next(Duration::from_secs(10))
        .await
        .expect("an answer to the replay");
    let FromDevice::Error { code, message } = decode(&topic, &payload)?.body else {
        anyhow::bail!("expected an error for the replay");
    };
    assert_eq!(code, ErrorCode::Unauthorized);
    assert!(message.contains("already used"), "{message}");

    // Relayed control requests need a grant too, and never exceed its role.
    let control = |n: u8, grant: Option<String>| {
        Request::new(
            Party::Gateway(InstanceId::parse("test-probe").unwrap()),
            device.clone(),
            session(n),
            ToDevice::Control {
                role: Role::Control,
                request: r#"{"v":1,"id":1,"cmd":"video.set","bitrate_kbps":500}"#.into(),
                grant,
            },
        )
        .reply_to(reply.clone())
        .encode()
    };
    mqtt.publish(&signal, signed(control(20, None))).await?;
    let (topic, payload) = mqtt.next(Duration::from_secs(10)).await.expect("a refusal");
    assert!(matches!(
        decode(&topic, &payload)?.body,
        FromDevice::Error {
            code: ErrorCode::Unauthorized,
            ..
        }
    ));
    let view_grant = creds.grant("demo", &session(21), Role::View, 30)?;
    mqtt.publish(&signal, signed(control(21, Some(view_grant))))
        .await?;
    let (topic, payload) = mqtt.next(Duration::from_secs(10)).await.expect("a reply");
    let FromDevice::ControlReply { message, sealed } = decode(&topic, &payload)?.body else {
        anyhow::bail!("expected a control reply");
    };
    // Sealed to the gateways' grant key, which this probe holds as a gateway would.
    assert!(sealed, "a control reply in clear on the broker");
    let message = stack.creds.open_sealed(&message)?;
    assert!(message.contains("forbidden"), "{message}");

    // And a real viewer still streams.
    let player = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    player.wait_frames(10, Duration::from_secs(15)).await?;
    player.close().await;
    Ok(())
}

#[tokio::test]
async fn every_gateway_entry_point_wants_credentials() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("gateway_auth")).await?;
    let get = |path: &str, auth: &str, extra: Vec<(&'static str, String)>| {
        let mut headers = vec![("authorization", auth.to_owned())];
        headers.extend(extra);
        http("GET", stack.url(path), headers, None)
    };

    // No credentials: 401 with a Bearer challenge, on the API, the WebSocket and WHEP.
    for path in ["api/devices", "api/devices/demo", "api/me", "ws"] {
        let reply = get(path, NO_AUTH, vec![]).await?;
        assert_eq!(reply.status, 401, "{path}: {}", reply.body);
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer"))
        );
    }
    let whep = http(
        "POST",
        stack.url("whep/demo"),
        vec![
            ("authorization", NO_AUTH.into()),
            ("content-type", "application/sdp".into()),
        ],
        Some("v=0\r\n".into()),
    )
    .await?;
    assert_eq!(whep.status, 401);
    let player = WhepPlayer::try_post(&stack.url("whep/demo")).await?;
    assert!(player.is_ok(), "the API token must work for WHEP");
    player.unwrap().close().await;
    // The page sends strangers to the login page, which itself needs nothing.
    let page = get("", NO_AUTH, vec![]).await?;
    assert_eq!(
        (page.status, page.header("location")),
        (303, Some("/login"))
    );
    assert_eq!(get("login", NO_AUTH, vec![]).await?.status, 200);
    // A wrong token, a forged one, another scheme.
    for bad in [
        "Bearer fct_nope",
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
        "Basic dGVzdDp0ZXN0",
    ] {
        assert_eq!(get("api/devices", bad, vec![]).await?.status, 401, "{bad}");
    }

    // Logging in: a wrong password is refused, the right one gives a token and an HttpOnly,
    // SameSite=Strict cookie, each of which works.
    let login = |password: &str| {
        http(
            "POST",
            stack.url("api/login"),
            vec![("content-type", "application/json".into())],
            Some(serde_json::json!({ "user": stack.creds.user, "password": password }).to_string()),
        )
    };
    assert_eq!(login("wrong").await?.status, 401);
    // Another site cannot log the browser in (login CSRF): not with the right JSON from its
    // origin, not with the bodies its forms can send.
    let json = serde_json::json!({ "user": stack.creds.user, "password": stack.creds.password });
    let foreign = http(
        "POST",
        stack.url("api/login"),
        vec![
            ("content-type", "application/json".into()),
            ("origin", "https://evil.example".into()),
        ],
        Some(json.to_string()),
    )
    .await?;
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    assert!(foreign.header("set-cookie").is_none());
    let form = http(
        "POST",
        stack.url("api/login"),
        vec![("content-type", "text/plain;charset=UTF-8".into())],
        Some(json.to_string()),
    )
    .await?;
    assert_eq!(form.status, 415, "{}", form.body);
    assert!(form.header("set-cookie").is_none());
    let ok = login(&stack.creds.password).await?;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let cookie = ok
        .header("set-cookie")
        .expect("a session cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let token = serde_json::from_str::<serde_json::Value>(&ok.body)?["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let me = get("api/me", &format!("Bearer {token}"), vec![]).await?;
    assert!(me.body.contains("tester"), "{}", me.body);
    let cookie_pair = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = get(
        "api/devices",
        NO_AUTH,
        vec![("cookie", cookie_pair.clone())],
    )
    .await?;
    assert_eq!(with_cookie.status, 200);

    // A foreign site cannot ride on the cookie (cross-site WebSocket hijacking, CSRF).
    let evil = vec![
        ("cookie", cookie_pair),
        ("origin", "https://evil.example".to_owned()),
    ];
    assert_eq!(get("ws", NO_AUTH, evil.clone()).await?.status, 403);
    assert_eq!(get("api/devices", NO_AUTH, evil).await?.status, 403);

    // Health and metrics: fine from loopback, not through a proxy without credentials.
    assert_eq!(get("healthz", NO_AUTH, vec![]).await?.status, 200);
    let proxied = vec![("x-forwarded-for", "203.0.113.9".to_owned())];
    assert_eq!(get("metrics", NO_AUTH, proxied).await?.status, 401);
    let metrics = get("metrics", NO_AUTH, vec![]).await?;
    assert!(
        metrics
            .body
            .contains("ferrocam_gateway_auth_failures_total{reason=\"missing\"}"),
        "{}",
        metrics.body
    );
    Ok(())
}

#[tokio::test]
async fn tokens_are_scoped_to_devices_and_roles_and_revocable() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions::new("token_scopes")).await?;
    let gateway = ferrocam_tests::process::workspace_bin("ferrocam-gateway")?;
    let new_token = |role: &str, devices: &str| -> anyhow::Result<(String, String)> {
        let out = std::process::Command::new(&gateway)
            .args([
                "new-token",
                "--name",
                &format!("{role}-{devices}"),
                "--role",
                role,
            ])
            .args(["--devices", devices])
            .output()?;
        let text = String::from_utf8(out.stdout)?;
        let token = text
            .split_whitespace()
            .find(|w| w.starts_with("fct_"))
            .expect("a token")
            .to_owned();
        let entry = text[text.find("[[token]]").expect("an entry")..].to_owned();
        Ok((token, entry))
    };
    let (viewer, viewer_entry) = new_token("view", "demo")?;
    let (elsewhere, elsewhere_entry) = new_token("control", "garage")?;
    let mut file = std::fs::read_to_string(&stack.creds.auth_config)?;
    file.push_str(&format!("\n{viewer_entry}\n{elsewhere_entry}"));
    file = file.replace(
        "allowed_origins = []",
        "allowed_origins = [\"https://nvr.example\"]",
    );
    std::fs::write(&stack.creds.auth_config, &file)?;
    reload(&mut stack)?;
    let bearer = |t: &str| format!("Bearer {t}");

    // The garage-only token sees no demo device and cannot watch it.
    let list = http(
        "GET",
        stack.url("api/devices"),
        vec![("authorization", bearer(&elsewhere))],
        None,
    )
    .await?;
    assert_eq!(list.status, 200);
    assert!(!list.body.contains("\"demo\""), "{}", list.body);
    let one = http(
        "GET",
        stack.url("api/devices/demo"),
        vec![("authorization", bearer(&elsewhere))],
        None,
    )
    .await?;
    assert_eq!(one.status, 404);
    // In the words an unknown device gets.
    assert!(one.body.contains("\"unknown_device\""), "{}", one.body);
    ferrocam_tests::creds::set_token_for(&stack.url(""), &elsewhere);
    let refused = WhepPlayer::try_post(&stack.url("whep/demo")).await?;
    assert_eq!(refused.err().map(|r| r.status), Some(404));

    // The view token watches but cannot change anything.
    ferrocam_tests::creds::set_token_for(&stack.url(""), &viewer);
    let player = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    player.wait_frames(5, Duration::from_secs(15)).await?;
    player.close().await;
    let change = http(
        "POST",
        stack.url("api/devices/demo/control"),
        vec![("content-type", "application/json".into())],
        Some(r#"{"cmd":"video.set","bitrate_kbps":700}"#.into()),
    )
    .await?;
    assert_eq!(change.status, 422, "{}", change.body);
    assert!(change.body.contains("forbidden"), "{}", change.body);

    // A listed origin gets CORS headers; the preflight is answered.
    let cors = http(
        "GET",
        stack.url("api/devices"),
        vec![("origin", "https://nvr.example".into())],
        None,
    )
    .await?;
    assert_eq!(
        cors.header("access-control-allow-origin"),
        Some("https://nvr.example")
    );

    // Revoked: delete the entry and reload.
    std::fs::write(&stack.creds.auth_config, file.replace(&viewer_entry, ""))?;
    reload(&mut stack)?;
    let revoked = http("GET", stack.url("api/devices"), vec![], None).await?;
    assert_eq!(revoked.status, 401);
    ferrocam_tests::creds::set_token_for(&stack.url(""), &stack.creds.token);
    Ok(())
}

/// SIGHUP, as `systemctl reload` sends, then a moment for the gateway to re-read the file.
fn reload(stack: &mut Stack) -> anyhow::Result<()> {
    let pid = stack.gateways[0].process.pid();
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

#[tokio::test]
async fn connections_that_never_finish_their_request_are_dropped() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("slow_clients")).await?;
    let addr = format!("127.0.0.1:{}", stack.gateways[0].http_port);
    // 200 clients start a WebSocket handshake and never finish it.
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(&addr)?;
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")?;
        stalled.push(s);
    }
    // Meanwhile real viewers are served.
    let player = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    player.wait_frames(5, Duration::from_secs(15)).await?;
    player.close().await;
    // And the stalled ones are cut off after the header timeout (10 s).
    let started = Instant::now();
    let mut closed = 0;
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut buf = [0u8; 512];
        // The server either closes silently or answers 408 and closes.
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
    }
    assert_eq!(
        closed,
        stalled.len(),
        "some stalled connections stayed open"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    Ok(())
}
