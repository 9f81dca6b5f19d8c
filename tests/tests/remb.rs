//! A viewer's own estimate of its path (REMB) reaches the shared encoder.
//! - A player that says its path carries 400 kbit/s gets the stream lowered to fit, keeps
//!   decoding, and gets the full rate back once it stops saying so. The REMB comes from a real
//!   WebRTC stack (the `webrtc` crate's RTCP over DTLS-SRTP) into the real device; only the
//!   figure is the test's.
//! - Chromium told nothing of transport-wide congestion control (the page strips it from the
//!   device's offer, as a receiver without TWCC would answer) estimates its path itself and
//!   sends REMB. Behind a 500 kbit/s uplink that is the only estimate the device has for it,
//!   and the encoder comes down below the link with it.
//!
//! The listener's bounds on hostile figures are unit-tested in `device/src/rtc/tests_remb.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrocam_tests::netns::NetNs;
use ferrocam_tests::playback::{self, wait_decoded};
use ferrocam_tests::{Browser, Stack, StackOptions, WhepPlayer, eventually, metric};
use serde_json::json;

const REMB_BPS: f32 = 400_000.0;

/// The camera both tests run: video only, a 2000 kbit/s plan, metrics at `metrics_addr`.
fn device_args(metrics_addr: &str) -> [&str; 6] {
    [
        "--audio",
        "off",
        "--bitrate-kbps",
        "2000",
        "--metrics-listen",
        metrics_addr,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_remb_lowers_the_encoder_and_its_end_gives_the_rate_back() -> anyhow::Result<()> {
    let metrics_addr = format!("127.0.0.1:{}", ferrocam_tests::free_port());
    let stack =
        Stack::start(StackOptions::new("remb").device_args(&device_args(&metrics_addr))).await?;
    let metrics = format!("http://{metrics_addr}/metrics");
    let target = || metric(&metrics, "ferrocam_device_encoder_target_bits_per_second");

    let player = WhepPlayer::connect(&stack.url("whep/demo")).await?;
    player.wait_frames(30, Duration::from_secs(20)).await?;
    let before = eventually(
        "the encoder at its full rate",
        Duration::from_secs(15),
        || async { Ok(target().ok().filter(|bps| *bps >= 1_500_000.0)) },
    )
    .await?;

    // The player reports a narrow path a few times a second, as a receiver does while its
    // estimate is low, until the encoder has come down and a further second of frames has
    // been decoded at the lower rate.
    let done = AtomicBool::new(false);
    let report = async {
        while !done.load(Ordering::Relaxed) {
            player.send_remb(REMB_BPS).await?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::Ok(())
    };
    let watch = async {
        let lowered = eventually(
            "the encoder lowered to the viewer's figure",
            Duration::from_secs(15),
            || async {
                let narrowest = metric(&metrics, "ferrocam_device_narrowest_link_bits_per_second")?;
                let now = target()?;
                Ok(
                    (narrowest <= f64::from(REMB_BPS) && now <= f64::from(REMB_BPS))
                        .then_some((narrowest, now)),
                )
            },
        )
        .await;
        let decoded = player.frames_decoded();
        let playing = player
            .wait_frames(decoded + 30, Duration::from_secs(10))
            .await;
        done.store(true, Ordering::Relaxed);
        lowered.and_then(|lowered| playing.map(|()| lowered))
    };
    let (lowered, reported) = tokio::join!(watch, report);
    reported?;
    let (narrowest, lowered_to) = lowered?;
    assert!(
        lowered_to < before,
        "lowered from {before} to {lowered_to} (narrowest link {narrowest})"
    );

    // The player stopped reporting: after the figure's 5 s the full rate comes back.
    let stopped = std::time::Instant::now();
    let after = eventually(
        "the encoder back at its full rate",
        Duration::from_secs(20),
        || async { Ok(target().ok().filter(|bps| *bps >= 1_500_000.0)) },
    )
    .await?;
    eprintln!(
        "encoder {before} bit/s; with a REMB of {REMB_BPS}: narrowest link {narrowest}, encoder \
         {lowered_to}; {after} again {:.1} s after the last REMB",
        stopped.elapsed().as_secs_f64()
    );
    player.close().await;
    Ok(())
}

/// Removes transport-wide congestion control from every description the page is given, before
/// Chromium sees it: its answer then has no TWCC, and it falls back to estimating the path
/// itself.
const WITHOUT_TWCC: &str = r#"
  const apply = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = function (description) {
    if (description && description.sdp) {
      const sdp = description.sdp.split('\r\n')
        .filter((l) => !/^a=rtcp-fb:\S+ transport-cc/.test(l))
        .filter((l) => !l.includes('transport-wide-cc'))
        .join('\r\n');
      description = { type: description.type, sdp };
    }
    return apply.call(this, description);
  };
"#;

#[tokio::test]
async fn chromium_without_twcc_on_a_narrow_uplink_is_followed_by_its_remb() -> anyhow::Result<()> {
    // The camera's uplink carries 500 kbit/s, and it starts at 2000.
    let ns = NetNs::create((std::process::id() % 10_000) as u16)?;
    ns.shape_uplink(500)?;
    let metrics_addr = format!("{}:{}", ns.ns_ip, ferrocam_tests::free_port());
    let stack = Stack::start(
        StackOptions::new("remb_chromium")
            .device_in_netns(&ns.name, &ns.ns_ip, &ns.host_ip)
            .device_args(&device_args(&metrics_addr)),
    )
    .await?;
    let metrics = format!("http://{metrics_addr}/metrics");
    let browser = Browser::start(&stack.log_dir).await?;
    browser.before_every_page(WITHOUT_TWCC).await?;
    stack.open_viewer(&browser, 0).await?;
    browser.click_device(&stack.device_id).await?;
    playback::wait_connected(&browser).await?;

    // Without TWCC the device has no estimate of its own for this viewer; Chromium's REMB
    // gives one, and the encoder comes down below the link with it.
    let (estimate, target) = eventually(
        "the encoder below the 500 kbit/s link",
        Duration::from_secs(30),
        || async {
            let (code, status) = stack.control(json!({"cmd": "status"}))?;
            anyhow::ensure!(code == 200, "status answered {code}: {status}");
            let estimate = status["ok"]["links"][0]["estimate_kbps"].as_u64();
            let target = metric(&metrics, "ferrocam_device_encoder_target_bits_per_second")?;
            Ok(estimate
                .filter(|kbps| *kbps < 500 && target < 500_000.0)
                .map(|kbps| (kbps, target)))
        },
    )
    .await?;
    // And the picture plays at that rate.
    let decoded = playback::sample(&browser).await?["decoded"]
        .as_f64()
        .unwrap_or_default();
    wait_decoded(&browser, decoded + 60.0).await?;
    eprintln!(
        "Chromium without TWCC behind 500 kbit/s: REMB {estimate} kbit/s, encoder {target} bit/s"
    );

    let answer = browser
        .js("return window.ferrocam.pc.localDescription.sdp;")
        .await?;
    let answer = answer.as_str().unwrap_or_default();
    assert!(
        !answer.contains("transport-cc") && !answer.contains("transport-wide-cc"),
        "the answer still has TWCC:\n{answer}"
    );
    assert!(
        answer.contains("goog-remb"),
        "Chromium did not take the device's goog-remb:\n{answer}"
    );
    let log = std::fs::read_to_string(stack.log_dir.join("device-1.log"))?;
    assert!(
        log.contains("the viewer sends its own estimate (REMB)"),
        "no REMB in the device's log"
    );
    browser.close().await
}
