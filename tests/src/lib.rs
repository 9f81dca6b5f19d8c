//! Harness for ferrocam's end-to-end tests: starts real gateway, device and browser processes on
//! free loopback ports, and tears them down when dropped.
//!
//! Binaries come from the workspace's `target/debug` (the Makefile builds them before testing);
//! system tools (chromium, chromedriver) come from the machine, installed by
//! `scripts/setup-system.sh`. Each process logs to `target/e2e-logs/<test>/<name>.log`, and a
//! failing test prints the tail of every log.

pub mod blip;
pub mod browser;
pub mod creds;
pub mod gateway_bench;
pub mod mqtt;
pub mod nats;
pub mod netns;
pub mod process;
pub mod proxy;
pub mod stack;
pub mod whep;

pub use browser::Browser;
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
