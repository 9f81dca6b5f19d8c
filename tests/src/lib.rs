//! Harness for ferrocam's end-to-end tests: starts real gateway, device and browser processes on
//! free loopback ports, and tears them down when dropped.
//!
//! Binaries come from the workspace's `target/debug` (the Makefile builds them before testing);
//! system tools (chromium, chromedriver) come from the machine, installed by
//! `scripts/setup-system.sh`. Each process logs to `target/e2e-logs/<test>/<name>.log`, and a
//! failing test prints the tail of every log.

pub mod audio;
pub mod blip;
pub mod browser;
pub mod coturn;
pub mod creds;
pub mod files_page;
pub mod gateway_bench;
pub mod janus;
pub mod link_steps;
pub mod mosquitto;
pub mod mqtt;
pub mod nats;
pub mod netns;
pub mod playback;
pub mod process;
pub mod proxy;
pub mod recordings;
pub mod stack;
pub mod whep;

pub use browser::{Browser, Kind as BrowserKind};
pub use creds::{Credentials, NO_AUTH};
pub use mqtt::TestMqtt;
pub use process::{Process, free_port};
pub use stack::{BrokerKind, Stack, StackOptions};
pub use whep::{HttpReply, WhepOptions, WhepPlayer};

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout` with the
/// description and the last value seen.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: std::time::Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // Only the latest attempt's error is worth reporting.
        let last_error = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "timed out after {timeout:?} waiting for {what}{}",
                last_error
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// One series from the `/metrics` page at `url`, labels included in `name`; an error when the
/// page has no such series.
pub fn metric(url: &str, name: &str) -> anyhow::Result<f64> {
    let text = ureq::get(url).call()?.body_mut().read_to_string()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {name} on {url}"))
}

/// Width and height from a JPEG's SOF marker.
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u16, u16)> {
    let mut i = 2;
    while i + 9 < jpeg.len() {
        if jpeg[i] != 0xff {
            return None;
        }
        let marker = jpeg[i + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if (0xc0..=0xc2).contains(&marker) {
            let h = u16::from_be_bytes([jpeg[i + 5], jpeg[i + 6]]);
            let w = u16::from_be_bytes([jpeg[i + 7], jpeg[i + 8]]);
            return Some((w, h));
        }
        i += 2 + len;
    }
    None
}

/// The message inside a signed broker payload (`ferrocam_protocol::signed`), without checking
/// the signature: for tests that only watch what devices and gateways publish.
pub fn inner(payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let wrapper: serde_json::Value = serde_json::from_slice(payload)?;
    let msg = wrapper.get("msg").ok_or_else(|| {
        anyhow::anyhow!("not a signed message: {}", String::from_utf8_lossy(payload))
    })?;
    Ok(serde_json::to_vec(msg)?)
}
