//! A camera on a network that drops all UDP still plays in the browser, over ICE-TCP (RFC 6544:
//! the device listens on TCP and the browser connects to it), and the page says so. With UDP
//! open the same device and browser use UDP: TCP is the fallback, never the first choice. And a
//! viewer whose own network drops UDP, with no direct way to the camera, plays through a real
//! coturn over TCP, with the credentials the gateway mints.
//!
//! The blocked side runs in a network namespace the test makes; the firewall is two iptables
//! rules in it (UDP dropped in and out), so MQTT, HTTP and TURN over TCP still get through.

use std::time::Duration;

use ferrocam_tests::coturn::{self, SECRET};
use ferrocam_tests::netns::NetNs;
use ferrocam_tests::{Browser, Stack, StackOptions, eventually, free_port};
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

#[tokio::test]
async fn a_viewer_whose_network_drops_udp_plays_through_turn_over_tcp() -> anyhow::Result<()> {
    let ns = NetNs::create((std::process::id() % 10_000) as u16)?;
    let host_ip: std::net::IpAddr = ns.host_ip.parse()?;
    let turn_port = free_port();
    let turn_url = format!("turn:{}:{turn_port}?transport=tcp", ns.host_ip);
    // The camera on this host, reachable over UDP only (no ICE-TCP): from the viewer's network
    // the one way to it is the relay.
    let ice = format!("{}:0", ns.host_ip);
    let stack = Stack::start(
        StackOptions::new("turn_over_tcp")
            .device_args(&["--audio", "off", "--ice-udp", &ice, "--ice-tcp", "off"])
            .gateway_args(&["--turn-url", &turn_url, "--turn-secret", SECRET]),
    )
    .await?;
    let _coturn = coturn::start(host_ip, turn_port, &stack.log_dir)?;
    ns.block_udp()?;
    let browser = Browser::start_in(&ns, &stack.log_dir).await?;
    let _front = stack.open_viewer_in(&ns, &browser).await?;

    let (path, shown) = watch_and_report_path(&browser, &stack.device_id).await?;
    assert_eq!(path["kind"], "relay", "through coturn: {path}");
    assert_eq!(
        path["protocol"], "tcp",
        "the browser's leg to the relay: {path}"
    );
    assert!(
        shown.contains("TURN relay · TCP"),
        "the stats panel names the path: {shown:?}"
    );
    browser.close().await
}
