//! `kill -9` in the middle of a segment, then the budget at work.

use std::time::Duration;

use ferrocam_tests::Stack;
use ferrocam_tests::recordings::segment_files;

use super::common::{began_ms, description, now_ms, options, play, recording, wait_for};

/// Three-second segments at 2 Mbit/s (about 750 kB each) under a 3 MB budget.
pub async fn kill_and_retention() -> anyhow::Result<()> {
    let mut stack = Stack::start(options(
        "recording_kill",
        &[
            "--record",
            "continuous",
            "--record-segment-s",
            "3",
            "--keyframe-interval",
            "30",
            "--bitrate-kbps",
            "2000",
            "--record-budget-mb",
            "3",
        ],
    ))
    .await?;
    let dir = stack.recordings_dir();
    // Two segments filed, and the third two seconds in.
    let status = wait_for(&stack, "two segments and a third well begun", |s| {
        s["segments"].as_u64() >= Some(2)
            && s["segment"]
                .as_str()
                .and_then(|id| began_ms(id).ok())
                .is_some_and(|began| now_ms().saturating_sub(began) >= 2000)
    })
    .await?;
    let open = status["segment"].as_str().unwrap_or_default().to_owned();
    stack.kill_device();
    let killed_at = now_ms();

    let files = segment_files(&dir);
    let (finished, cut): (Vec<_>, Vec<_>) = files
        .iter()
        .partition(|f| f.extension().is_some_and(|e| e == "mp4"));
    anyhow::ensure!(
        finished.len() >= 2 && cut.len() == 1,
        "after the kill: {files:?}"
    );
    for file in &finished {
        let played = play(file).await?;
        let described = description(file)?["duration_ms"].as_u64().unwrap_or(0);
        anyhow::ensure!(
            described.abs_diff(played.duration.as_millis() as u64) <= 100
                && played.duration >= Duration::from_millis(2900),
            "{file:?}: plays {:?}, described {described} ms",
            played.duration
        );
    }
    let cut = cut[0].clone();
    anyhow::ensure!(
        cut.to_string_lossy().contains(&open),
        "{cut:?} is not {open}"
    );
    let played = play(&cut).await?;
    let ran_for = killed_at - began_ms(&open)?;
    eprintln!(
        "kill -9: the open segment ran {ran_for} ms; {} ms of it plays ({} frames, {} sound buffers)",
        played.duration.as_millis(),
        played.frames,
        played.sound_buffers
    );
    // Up to the last one-second fragment (and what the muxer held back).
    anyhow::ensure!(
        played.duration.as_millis() as u64 + 1600 >= ran_for && played.sound_buffers > 0,
        "the cut segment plays {:?} of {ran_for} ms",
        played.duration
    );

    // The next start recovers it: filed, described, listed.
    stack.start_device()?;
    stack.wait_online(true).await?;
    let media = cut.with_file_name(format!("{open}.mp4"));
    anyhow::ensure!(media.exists() && !cut.exists(), "{open} was not filed");
    let info = description(&media)?;
    anyhow::ensure!(info["recovered"] == true, "{info}");
    anyhow::ensure!(
        info["duration_ms"].as_u64() == Some(played.duration.as_millis() as u64)
            || info["duration_ms"]
                .as_u64()
                .is_some_and(|d| d.abs_diff(played.duration.as_millis() as u64) <= 100),
        "{info} vs {:?}",
        played.duration
    );

    // Retention: recording goes on, and the oldest segments make room within the budget.
    let oldest = began_ms(&finished[0].to_string_lossy())?;
    let status = wait_for(&stack, "the oldest segment to be removed", |_| {
        !finished[0].exists()
    })
    .await;
    let status = match status {
        Ok(status) => status,
        Err(e) => return Err(e.context(format!("segments now: {:?}", segment_files(&dir)))),
    };
    let budget = 3 * 1024 * 1024;
    anyhow::ensure!(
        status["bytes"].as_u64().is_some_and(|b| b <= budget),
        "over the budget: {status}"
    );
    let remaining = segment_files(&dir);
    for file in &remaining {
        anyhow::ensure!(began_ms(&file.to_string_lossy())? > oldest, "{file:?} kept");
    }
    let on_disk: u64 = remaining
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "mp4"))
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    eprintln!(
        "retention: {} segments kept, {on_disk} bytes of finished ones (budget {budget}); status {}",
        remaining.len(),
        recording(&stack)?
    );
    anyhow::ensure!(on_disk <= budget, "{on_disk} bytes on disk");
    Ok(())
}
