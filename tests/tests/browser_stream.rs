//! The product's spine, end to end: a real gateway (embedded rumqttd), a real device
//! (GStreamer test pattern → x264 → webrtc), and headless Chromium playing the stream from the
//! gateway's own page.

use std::time::Duration;

use ferrocam_tests::{Browser, Stack, StackOptions, eventually};
use serde_json::Value;

/// Opens the page, clicks the device and waits until the browser has decoded 60 frames.
/// Returns the page's measurements.
async fn play_from_page(stack: &Stack, browser: &Browser) -> anyhow::Result<Value> {
    browser.client.goto(&stack.url("")).await?;
    let selector = format!(
        "button.device[data-device='{}']:not([disabled])",
        stack.device_id
    );
    let button = eventually("the device button", Duration::from_secs(15), || async {
        Ok(browser
            .client
            .find(fantoccini::Locator::Css(&selector))
            .await
            .ok())
    })
    .await?;
    button.click().await?;

    // At least 60 frames decoded at the configured 1280×720.
    let seen = eventually(
        "60 decoded frames at 1280x720",
        Duration::from_secs(30),
        || async {
            let v = browser
                .js("const v = document.getElementById('video');
                 const q = v.getVideoPlaybackQuality();
                 return { width: v.videoWidth, height: v.videoHeight,
                          frames: q.totalVideoFrames, dropped: q.droppedVideoFrames,
                          error: window.ferrocam.lastError };")
                .await?;
            if !v["error"].is_null() {
                anyhow::bail!("page shows an error: {}", v["error"]);
            }
            let ready =
                v["width"] == 1280 && v["height"] == 720 && v["frames"].as_u64() >= Some(60);
            Ok(ready.then_some(v))
        },
    )
    .await?;
    Ok(seen)
}

/// Reads inbound-rtp `packetsReceived` for video from the page's peer connection.
async fn packets_received(browser: &Browser) -> anyhow::Result<u64> {
    let v = browser
        .js_async(
            "window.ferrocam.pc.getStats().then((r) => {
               let n = null;
               r.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') n = s.packetsReceived; });
               done(n);
             });",
        )
        .await?;
    v.as_u64()
        .ok_or_else(|| anyhow::anyhow!("no inbound-rtp video stats: {v}"))
}

#[tokio::test]
async fn browser_plays_live_h264_from_the_gateway_page() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("browser_plays_live_h264")).await?;
    let browser = Browser::start(&stack.log_dir).await?;

    let seen = play_from_page(&stack, &browser).await?;
    assert_eq!(seen["width"], 1280, "{seen}");
    assert_eq!(seen["height"], 720, "{seen}");
    assert!(seen["frames"].as_u64().unwrap() >= 60, "{seen}");

    let first = packets_received(&browser).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = packets_received(&browser).await?;
    assert!(
        second > first,
        "packetsReceived did not grow: {first} then {second}"
    );

    // The codec really is H.264.
    let codec = browser
        .js_async(
            "window.ferrocam.pc.getStats().then((r) => {
               let m = null;
               r.forEach((s) => { if (s.type === 'codec' && s.mimeType.startsWith('video/')) m = s.mimeType; });
               done(m);
             });",
        )
        .await?;
    assert_eq!(codec, "video/H264");
    browser.close().await
}

#[tokio::test]
async fn an_offer_without_h264_gets_a_clear_error_on_the_page() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("offer_without_h264")).await?;
    let browser = Browser::start(&stack.log_dir).await?;
    browser.client.goto(&stack.url("")).await?;
    eventually("the device list", Duration::from_secs(15), || async {
        Ok(browser
            .js("return window.ferrocam.devices.some((d) => d.online);")
            .await?
            .as_bool()
            .filter(|b| *b))
    })
    .await?;

    browser
        .js("window.ferrocam.watch('demo', { codecs: ['video/VP8'] }); return null;")
        .await?;
    let error = eventually("an error on the page", Duration::from_secs(15), || async {
        let v = browser
            .js("const e = document.getElementById('error');
                 return { code: window.ferrocam.lastError && window.ferrocam.lastError.code,
                          shown: !e.hidden, text: e.textContent };")
            .await?;
        Ok((!v["code"].is_null()).then_some(v))
    })
    .await?;
    assert_eq!(error["code"], "no_common_codec", "{error}");
    assert_eq!(error["shown"], true, "{error}");
    assert!(error["text"].as_str().unwrap().contains("H.264"), "{error}");
    browser.close().await
}
