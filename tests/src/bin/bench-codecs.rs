//! Benchmark: what the VP8 fallback costs the device, at the default 640×360 and at the full
//! 1280×720.
//!
//! For each fallback size, starts a gateway and a device (720p30 test pattern, 2 Mbit/s H.264,
//! video only) from `FERROCAM_BIN_DIR`, then samples the device's CPU (from /proc) with one
//! H.264 WHEP viewer; with one and with four VP8-only viewers beside it; and after they leave
//! (the VP8 encoder stops). Viewers count packets without decoding, to keep the load generator
//! cheap. Prints a Markdown table and writes target/bench/codecs.json.
//!
//! Run with `make bench`.

use std::time::{Duration, Instant};

use ferrocam_protocol::VideoCodec;
use ferrocam_tests::process::{cpu_seconds, rss_mib};
use ferrocam_tests::{Stack, StackOptions, WhepOptions, WhepPlayer};

const SETTLE: Duration = Duration::from_secs(3);
const SAMPLE: Duration = Duration::from_secs(10);

/// Device CPU (% of one core) and RSS (MiB) over one sample, after letting it settle.
async fn sample(pid: u32, players: &[WhepPlayer]) -> anyhow::Result<(f64, f64)> {
    tokio::time::sleep(SETTLE).await;
    let before = cpu_seconds(pid)?;
    let packets: Vec<u64> = players.iter().map(|p| p.rtp_packets()).collect();
    let started = Instant::now();
    tokio::time::sleep(SAMPLE).await;
    let cpu = (cpu_seconds(pid)? - before) / started.elapsed().as_secs_f64() * 100.0;
    for (player, before) in players.iter().zip(packets) {
        anyhow::ensure!(player.rtp_packets() > before, "a viewer received nothing");
    }
    Ok((cpu, rss_mib(pid)?))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let h264 = WhepOptions {
        skip_decode: true,
        ..Default::default()
    };
    let vp8 = WhepOptions {
        codec: VideoCodec::Vp8,
        ..h264
    };
    let mut rows = Vec::new();
    for size in ["640x360", "full"] {
        let stack = Stack::start(
            StackOptions::new("bench_codecs")
                .device_args(&["--audio", "off", "--bitrate-kbps", "2000", "--vp8", size])
                .gateway_args(&["--sessions-per-principal", "32"]),
        )
        .await?;
        let pid = stack.device.as_ref().expect("device running").pid();
        let endpoint = stack.url("whep/demo");
        let mut players = vec![WhepPlayer::connect_with(&endpoint, h264).await?];
        let (base, base_rss) = sample(pid, &players).await?;
        players.push(WhepPlayer::connect_with(&endpoint, vp8).await?);
        let (one, one_rss) = sample(pid, &players).await?;
        while players.len() < 5 {
            players.push(WhepPlayer::connect_with(&endpoint, vp8).await?);
        }
        let (four, _) = sample(pid, &players).await?;
        for player in players.drain(1..) {
            player.delete().await?;
        }
        let (after, _) = sample(pid, &players).await?;
        for player in players {
            player.delete().await?;
        }
        let size = if size == "full" { "1280x720" } else { size };
        eprintln!(
            "VP8 {size}: {base:.1} % with H.264 only, {one:.1} % + 1 VP8 viewer, {four:.1} % + 4, {after:.1} % after"
        );
        rows.push(serde_json::json!({
            "vp8_size": size, "h264_only_cpu_pct": base, "one_vp8_viewer_cpu_pct": one,
            "four_vp8_viewers_cpu_pct": four, "after_cpu_pct": after,
            "rss_mib": base_rss, "rss_with_vp8_mib": one_rss,
        }));
    }

    println!(
        "| VP8 size | device CPU, 1 H.264 viewer | + 1 VP8 viewer | + 4 VP8 viewers | VP8 viewers gone | RSS without → with VP8 (MiB) |"
    );
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        let pct = |key: &str| row[key].as_f64().unwrap_or_default();
        println!(
            "| {} | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:.1} → {:.1} |",
            row["vp8_size"].as_str().unwrap_or_default(),
            pct("h264_only_cpu_pct"),
            pct("one_vp8_viewer_cpu_pct"),
            pct("four_vp8_viewers_cpu_pct"),
            pct("after_cpu_pct"),
            pct("rss_mib"),
            pct("rss_with_vp8_mib"),
        );
    }
    let out = ferrocam_tests::process::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("codecs.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    Ok(())
}
