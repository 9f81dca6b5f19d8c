//! The device's video carries playout-delay (min = max = 0) and abs-capture-time for any
//! Chromium viewer that offers them: both are negotiated in the device's answer, and the
//! capture time reaches the browser (`getSynchronizationSources`) on the right clock. The
//! bytes in the packets are unit-tested in `device/src/rtc/extensions.rs`.

use ferrocam_tests::playback::{n, wait_decoded};
use ferrocam_tests::{Browser, Stack, StackOptions};

const PLAYOUT_DELAY: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
const ABS_CAPTURE_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";
/// Milliseconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_MS: f64 = 2_208_988_800_000.0;

#[tokio::test]
async fn a_chromium_viewer_gets_zero_playout_delay_and_the_capture_time() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("header_extensions").device_args(&[
        "--latency-stamp",
        "--audio",
        "off",
    ]))
    .await?;
    let browser = Browser::start(&stack.log_dir).await?;
    stack.open_viewer(&browser, 0).await?;
    browser.click_device(&stack.device_id).await?;
    wait_decoded(&browser, 30.0).await?;

    let sdp = browser
        .js("return window.ferrocam.pc.remoteDescription.sdp;")
        .await?;
    let sdp = sdp.as_str().unwrap_or_default();
    let video = sdp
        .split("m=")
        .find(|section| section.starts_with("video"))
        .unwrap_or_default();
    for uri in [PLAYOUT_DELAY, ABS_CAPTURE_TIME] {
        assert!(
            video
                .lines()
                .any(|l| l.starts_with("a=extmap:") && l.ends_with(uri)),
            "the device's video description lacks {uri}:\n{video}"
        );
    }
    // Chromium reports the last frame's abs-capture-time (ms since 1900) beside when it
    // arrived (`timestamp`, ms since 1970). Both clocks are this machine's: the capture must
    // come before the arrival, and not long before.
    let sources = browser
        .js("return window.ferrocam.pc.getReceivers()
               .filter((r) => r.track && r.track.kind === 'video')
               .flatMap((r) => r.getSynchronizationSources());")
        .await?;
    eprintln!("synchronization sources: {sources}");
    let source = &sources[0];
    let captured = source["captureTimestamp"]
        .as_f64()
        .unwrap_or_else(|| panic!("no capture time reached the browser: {sources}"))
        - NTP_UNIX_OFFSET_MS;
    let arrived = n(source, "timestamp");
    assert!(
        (0.0..2000.0).contains(&(arrived - captured)),
        "captured at {captured} (Unix ms), arrived at {arrived}: {sources}"
    );
    browser.close().await
}
