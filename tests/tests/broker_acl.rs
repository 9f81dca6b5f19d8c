//! Device identity at the broker: Mosquitto with per-device passwords, the shipped ACL template
//! (`deploy/mosquitto/ferrocam.acl`) and TLS. The stack streams through it (so the template is
//! enough), and device B's credentials can neither read nor write device A's topics or the
//! gateways' replies.

use std::time::Duration;

use ferrocam_tests::stack::{GATEWAY_BROKER_USER, broker_password};
use ferrocam_tests::{Stack, StackOptions, TestMqtt, WhepPlayer};

#[tokio::test]
async fn a_device_can_only_use_its_own_topics() -> anyhow::Result<()> {
    // The device "demo" and the gateway talk over TLS with their own passwords.
    let stack = Stack::start(StackOptions::new("broker_acl").secure_mosquitto()).await?;
    let player = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    player.wait_frames(10, Duration::from_secs(15)).await?;

    // An observer with the gateways' rights sees what reaches demo's topics.
    let gw_pass = broker_password(GATEWAY_BROKER_USER);
    let mut observer = TestMqtt::connect_as(
        stack.mqtt_port,
        "observer",
        Some((GATEWAY_BROKER_USER, &gw_pass)),
        &[
            "ferrocam/v1/devices/+/status",
            "ferrocam/v1/devices/+/reply/+",
        ],
    )
    .await?;
    assert_eq!(observer.refused_subscriptions, 0);
    while observer.next(Duration::from_millis(300)).await.is_some() {} // retained statuses

    // Device B, with valid credentials of its own.
    let b_pass = broker_password("cam-b");
    let mut intruder = TestMqtt::connect_as(
        stack.mqtt_port,
        "cam-b",
        Some(("cam-b", &b_pass)),
        &[
            "ferrocam/v1/devices/demo/signal",
            "ferrocam/v1/devices/demo/reply/+",
            "ferrocam/v1/devices/+/reply/+",
            "ferrocam/v1/devices/#",
        ],
    )
    .await?;
    // Mosquitto 2.0 acknowledges these subscriptions and applies the ACL to every message it
    // would deliver (newer brokers may refuse them in the SUBACK): what counts is that nothing
    // arrives.
    // A second session's offer, answer and candidates cross the broker now; B sees none.
    let second = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    second.wait_frames(5, Duration::from_secs(15)).await?;
    assert!(
        intruder.next(Duration::from_secs(1)).await.is_none(),
        "B received another device's signaling"
    );

    // B's writes to demo's topics are dropped; its own status goes through (so the observer
    // would have seen the others).
    for topic in [
        "ferrocam/v1/devices/demo/status",
        "ferrocam/v1/devices/demo/reply/gw-0",
        "ferrocam/v1/devices/demo/signal",
    ] {
        intruder
            .publish(topic, format!("forged by cam-b on {topic}"))
            .await?;
    }
    intruder
        .publish("ferrocam/v1/devices/cam-b/status", "cam-b's own status")
        .await?;
    let mut seen = Vec::new();
    while let Some((topic, payload)) = observer.next(Duration::from_secs(2)).await {
        seen.push((topic, String::from_utf8_lossy(&payload).into_owned()));
    }
    assert!(
        seen.iter()
            .any(|(t, _)| t == "ferrocam/v1/devices/cam-b/status"),
        "B's own status should pass: {seen:?}"
    );
    assert!(
        !seen.iter().any(|(_, p)| p.starts_with("forged")),
        "a forged message got through: {seen:?}"
    );

    // Demo is still online and still streaming.
    stack.wait_online(true).await?;
    let before = second.frames_decoded();
    second
        .wait_frames(before + 10, Duration::from_secs(10))
        .await?;
    player.close().await;
    second.close().await;
    Ok(())
}

#[tokio::test]
async fn a_wrong_password_or_an_untrusted_certificate_keeps_a_client_out() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("broker_auth").secure_mosquitto()).await?;
    let wrong = TestMqtt::connect_as(
        stack.mqtt_port,
        "guesser",
        Some(("demo", "not-the-password")),
        &["ferrocam/v1/devices/demo/signal"],
    )
    .await;
    assert!(wrong.is_err(), "a wrong password must not connect");
    let anonymous = TestMqtt::connect(
        stack.mqtt_port,
        "anon",
        &["ferrocam/v1/devices/demo/signal"],
    )
    .await;
    assert!(anonymous.is_err(), "anonymous clients must not connect");

    // A device that does not trust the broker's CA (system roots only) never comes online
    // under another id.
    let (tls_port, _) = stack.mqtts.clone().expect("a TLS listener");
    let bin = ferrocam_tests::process::workspace_bin("ferrocam-device")?;
    let cam_b = stack.creds.enroll("cam-b")?;
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new("timeout");
        cam_b.keys_for(&mut cmd);
        cmd.args([
            "5",
            bin.to_str().unwrap(),
            "--source",
            "test",
            "--id",
            "cam-b",
        ])
        .args(["--ice-udp", "127.0.0.1:0"])
        .arg("--broker")
        .arg(format!(
            "mqtts://cam-b:{}@127.0.0.1:{tls_port}",
            broker_password("cam-b")
        ))
        .env("RUST_LOG", "info")
        .output()
    })
    .await??;
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("broker connection lost") && log.to_lowercase().contains("certificate"),
        "expected a TLS certificate failure: {log}"
    );
    assert!(!log.contains("connected to broker"), "{log}");
    let devices = ureq::get(&stack.url("api/devices"))
        .header("authorization", &stack.bearer())
        .call()?
        .body_mut()
        .read_to_string()?;
    assert!(!devices.contains("cam-b"), "{devices}");
    Ok(())
}
