//! A camera on a network that drops all UDP still plays in the browser, over ICE-TCP (RFC 6544:
//! the device listens on TCP and the browser connects to it), and the page says so. With UDP
//! open the same device and browser use UDP: TCP is the fallback, never the first choice.
//!
//! The device runs in a network namespace the test makes; the firewall is two iptables rules in
//! it (UDP dropped in and out), so MQTT over TCP still reaches the broker.

use std::time::Duration;

use ferrocam_tests::netns::NetNs;
use ferrocam_tests::{Browser, Stack, StackOptions, eventually};
use serde_json::Value;

/// Frames decoded so far and the page's own description of the path (stats.js).
async fn progress(browser: &Browser) -> anyhow::Result<(f64, Value, String)> {
    let v = browser
        .js("const s = ferrocam.stats || {};
             return { decoded: Number(s['Frames decoded'] || 0), path: ferrocam.path || null,
                      shown: document.getElementById('stats').textContent };")
        .await?;
    Ok((
        v["decoded"].as_f64().unwrap_or(0.0),
        v["path"].clone(),
        v["shown"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Watches until 60 frames are decoded and returns the path the page reports.
async fn watch_and_report_path(browser: &Browser, device: &str) -> anyhow::Result<(Value, String)> {
    browser.click_device(device).await?;
    eventually(
        "60 decoded frames and a path",
        Duration::from_secs(40),
        || async {
            let (decoded, path, shown) = progress(browser).await?;
            Ok((decoded >= 60.0 && !path.is_null()).then_some((path, shown)))
        },
    )
    .await
}

#[tokio::test]
async fn the_page_plays_over_tcp_when_udp_is_blocked_and_says_so() -> anyhow::Result<()> {
    let ns = NetNs::create((std::process::id() % 10_000) as u16)?;
    let stack = Stack::start(
        StackOptions::new("udp_blocked")
            .device_in_netns(&ns.name, &ns.ns_ip, &ns.host_ip)
            .device_args(&["--audio", "off"]),
    )
    .await?;
    let browser = Browser::start(&stack.log_dir).await?;
    stack.open_viewer(&browser, 0).await?;

    // UDP open: the video comes over UDP although the device also offers TCP.
    let (path, _) = watch_and_report_path(&browser, &stack.device_id).await?;
    assert_eq!(path["protocol"], "udp", "with UDP open: {path}");
    assert_eq!(path["kind"], "direct", "{path}");
    browser.js("ferrocam.hangUp(); return null;").await?;

    // UDP dropped both ways inside the device's network.
    ns.block_udp()?;
    let (path, shown) = watch_and_report_path(&browser, &stack.device_id).await?;
    assert_eq!(path["protocol"], "tcp", "with UDP blocked: {path}");
    assert_eq!(path["kind"], "direct", "{path}");
    assert_eq!(
        path["remote"], "host",
        "the device's passive TCP candidate: {path}"
    );
    assert!(
        shown.contains("direct · TCP"),
        "the stats panel names the path: {shown:?}"
    );
    // It keeps playing, not just starts: 60 more frames at the stream's rate.
    let (before, _, _) = progress(&browser).await?;
    eventually(
        "60 more frames over TCP",
        Duration::from_secs(10),
        || async {
            let (now, _, _) = progress(&browser).await?;
            Ok((now >= before + 60.0).then_some(()))
        },
    )
    .await?;
    browser.close().await
}
