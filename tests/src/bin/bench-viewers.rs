//! Benchmark: what each extra viewer costs the device.
//!
//! Starts a gateway and a device (720p30 test pattern, 2 Mbit/s, video only) from
//! `FERROCAM_BIN_DIR` (the Makefile points it at `target/release`), connects WHEP viewers
//! (packets counted, not decoded, to keep the load generator cheap) and samples the device
//! process's CPU time and RSS from /proc at 1, 4, 8 and 16 viewers. Prints a Markdown table
//! and writes target/bench/viewers.json.
//!
//! Run with `make bench`.

use std::time::{Duration, Instant};

use ferrocam_tests::process::{cpu_seconds, rss_mib};
use ferrocam_tests::{Stack, StackOptions, WhepOptions, WhepPlayer};

const LEVELS: [usize; 4] = [1, 4, 8, 16];
const SETTLE: Duration = Duration::from_secs(3);
const SAMPLE: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let stack = Stack::start(
        StackOptions::new("bench_viewers")
            .device_args(&["--audio", "off", "--bitrate-kbps", "2000"])
            // All viewers use the stack's one API token; they stand for 16 people.
            .gateway_args(&["--sessions-per-principal", "32"]),
    )
    .await?;
    let pid = stack.device.as_ref().expect("device running").pid();
    let endpoint = stack.url("whep/demo");
    let options = WhepOptions {
        audio: false,
        skip_decode: true,
        ..Default::default()
    };

    let mut players = Vec::new();
    let mut rows = Vec::new();
    for level in LEVELS {
        while players.len() < level {
            players.push(WhepPlayer::connect_with(&endpoint, options).await?);
        }
        tokio::time::sleep(SETTLE).await;
        let packets_before: u64 = players.iter().map(|p| p.rtp_packets()).sum();
        let cpu_before = cpu_seconds(pid)?;
        let started = Instant::now();
        tokio::time::sleep(SAMPLE).await;
        let cpu = (cpu_seconds(pid)? - cpu_before) / started.elapsed().as_secs_f64();
        let packets: u64 = players.iter().map(|p| p.rtp_packets()).sum::<u64>() - packets_before;
        let rss = rss_mib(pid)?;
        anyhow::ensure!(
            players.iter().all(|p| p.rtp_packets() > 0),
            "a viewer received nothing"
        );
        eprintln!(
            "{level} viewers: {:.1} % CPU, {rss:.1} MiB RSS",
            cpu * 100.0
        );
        rows.push((
            level,
            cpu * 100.0,
            rss,
            packets as f64 / SAMPLE.as_secs_f64(),
        ));
    }
    for p in players {
        p.delete().await?;
    }

    println!(
        "| viewers | device CPU (% of one core) | device RSS (MiB) | RTP packets/s sent (all viewers) |"
    );
    println!("|---|---|---|---|");
    for (n, cpu, rss, pps) in &rows {
        println!("| {n} | {cpu:.1} | {rss:.1} | {pps:.0} |");
    }
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|(n, cpu, rss, pps)| {
            serde_json::json!({ "viewers": n, "cpu_pct": cpu, "rss_mib": rss, "packets_per_s": pps })
        })
        .collect();
    let out = ferrocam_tests::process::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("viewers.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "peer": "ferrocam", "cpu": json }))?,
    )?;
    let (n1, cpu1, rss1, _) = rows[0];
    let (nk, cpuk, rssk, _) = rows[rows.len() - 1];
    let extra = (nk - n1) as f64;
    println!();
    println!(
        "Each viewer past the first: **{:.2} % of a core** and **{:.2} MiB RSS** (from {n1} to {nk} viewers).",
        (cpuk - cpu1) / extra,
        (rssk - rss1) / extra
    );
    Ok(())
}
