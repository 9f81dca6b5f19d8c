//! Soak: 1,000 viewer connect/close cycles against one device. Sessions must all be freed and
//! the device's memory must stay flat (RSS growth ≤ 5 MB from cycle 100 to cycle 1,000).
//! Checks `webrtc` issue #906 (a reference cycle that leaked closed connections) does not bite.

use std::time::{Duration, Instant};

use ferrocam_tests::whep::http;
use ferrocam_tests::{Stack, StackOptions, WhepOptions, WhepPlayer, eventually};

const CYCLES: usize = 1000;
const BASELINE_AT: usize = 100;

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_viewer_cycles_leave_no_sessions_and_flat_memory() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("soak").device_args(&["--audio", "off"])).await?;
    let pid = stack.device.as_ref().expect("device").pid();
    let endpoint = stack.url("whep/demo");
    let options = WhepOptions {
        audio: false,
        skip_decode: true,
        ..Default::default()
    };
    // Keep one viewer for the whole run so the pipeline stays up and only session state churns.
    let anchor = WhepPlayer::connect_with(&endpoint, options).await?;

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut baseline = 0;
    for cycle in 1..=CYCLES {
        let player = WhepPlayer::connect_with(&endpoint, options).await?;
        eventually(
            "media on the new session",
            Duration::from_secs(10),
            || async { Ok((player.rtp_packets() > 0).then_some(())) },
        )
        .await?;
        anyhow::ensure!(
            player.delete().await? == 200,
            "DELETE failed at cycle {cycle}"
        );
        if cycle == BASELINE_AT {
            // Let the last session's teardown finish before the baseline.
            tokio::time::sleep(Duration::from_millis(500)).await;
            baseline = rss_kib(pid)?;
        }
        if cycle % 100 == 0 {
            samples.push((cycle, rss_kib(pid)?));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = rss_kib(pid)?;
    eprintln!(
        "soak: {CYCLES} cycles in {:?}; device RSS (KiB) by cycle: {samples:?}; growth {} KiB from cycle {BASELINE_AT}",
        started.elapsed(),
        end as i64 - baseline as i64
    );

    // Every session freed: the gateway holds only the anchor, the device leases only to it.
    eventually(
        "sessions back to the anchor alone",
        Duration::from_secs(10),
        || async {
            let health = http("GET", stack.url("healthz"), vec![], None).await?;
            Ok(health.body.contains("\"sessions\":1").then_some(()))
        },
    )
    .await?;
    let status = http(
        "POST",
        stack.url("api/devices/demo/control"),
        vec![("Content-Type", "application/json".into())],
        Some(r#"{"cmd":"status"}"#.into()),
    )
    .await?;
    assert!(status.body.contains("\"viewers\":1"), "{}", status.body);
    anchor.delete().await?;
    eventually("no sessions at all", Duration::from_secs(10), || async {
        let health = http("GET", stack.url("healthz"), vec![], None).await?;
        Ok(health.body.contains("\"sessions\":0").then_some(()))
    })
    .await?;

    let growth_kib = end.saturating_sub(baseline);
    assert!(
        growth_kib <= 5 * 1024,
        "device RSS grew {growth_kib} KiB from cycle {BASELINE_AT} to {CYCLES}: {samples:?}"
    );
    Ok(())
}
