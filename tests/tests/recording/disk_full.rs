//! A filesystem filled to the last byte while the device records onto it.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrocam_tests::recordings::segment_files;
use ferrocam_tests::{Stack, WhepPlayer};
use serde_json::json;

use super::common::{WAIT, command, options, play, recording, wait_for};

/// A tmpfs of its own, unmounted (and removed) on drop. Needs root, as the network tests do.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(megabytes: u32) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("ferrocam-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&dir)
            .status()?;
        anyhow::ensure!(status.success(), "mounting a tmpfs (needs root): {status}");
        Ok(Self(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes zeros into `path` until the filesystem refuses more.
fn fill(path: &std::path::Path) -> anyhow::Result<u64> {
    let mut file = std::fs::File::create(path)?;
    let block = vec![0u8; 64 * 1024];
    let mut written = 0;
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => return Err(e.into()),
        }
    }
    Ok(written)
}

pub async fn disk_full() -> anyhow::Result<()> {
    let disk = SmallDisk::mount(48)?;
    let records = disk.0.join("recordings");
    let records_arg = records.to_string_lossy().into_owned();
    let stack = Stack::start(options(
        "recording_disk_full",
        &[
            "--record",
            "continuous",
            "--record-dir",
            &records_arg,
            "--record-segment-s",
            "5",
            "--record-budget-mb",
            "0",
            "--record-min-free-mb",
            "8",
            "--record-resume-free-mb",
            "16",
        ],
    ))
    .await?;
    let player = WhepPlayer::connect(&stack.url(&format!("whep/{}", stack.device_id))).await?;
    player.wait_frames(30, WAIT).await?;
    // One segment filed before the disk fills; the next is the one it cuts short.
    wait_for(&stack, "a segment filed", |s| {
        s["recording"] == true && s["segments"].as_u64() >= Some(1)
    })
    .await?;

    let filler = disk.0.join("filler");
    let filled = fill(&filler)?;
    let status = wait_for(&stack, "recording to pause for the full disk", |s| {
        s["recording"] == false && s["paused"].as_str().is_some_and(|p| p.contains("disk"))
    })
    .await?;
    eprintln!("disk full: {filled} bytes of filler; status {status}");

    // Streaming and control carry on while the disk is full.
    let (frames, since) = (player.frames_decoded(), Instant::now());
    let mut pings = Vec::new();
    while since.elapsed() < Duration::from_secs(5) {
        let sent = Instant::now();
        let (code, body) = command(&stack, json!({"cmd": "ping"}))?;
        anyhow::ensure!(code == 200, "ping: {code} {body}");
        pings.push(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let fps = (player.frames_decoded() - frames) as f64 / since.elapsed().as_secs_f64();
    pings.sort();
    eprintln!(
        "disk full: the viewer decodes {fps:.1} fps; control ping p50 {:?}",
        pings[pings.len() / 2]
    );
    anyhow::ensure!(fps >= 25.0, "{fps:.1} fps while the disk is full");
    let (code, body) = command(&stack, json!({"cmd": "record.start"}))?;
    anyhow::ensure!(
        code == 422 && body["error"]["code"] == "unavailable",
        "record.start on a full disk: {code} {body}"
    );

    // Room again: recording resumes by itself.
    std::fs::remove_file(&filler)?;
    wait_for(&stack, "recording to resume", |s| {
        s["recording"] == true && s["paused"].is_null()
    })
    .await?;
    let status = recording(&stack)?;
    eprintln!("disk full: resumed; status {status}");
    // Every segment written before, the one the full disk cut short included, plays.
    let files = segment_files(&records);
    let finished: Vec<_> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "mp4"))
        .collect();
    anyhow::ensure!(!finished.is_empty(), "no finished segments: {files:?}");
    for file in finished {
        let played = play(file).await?;
        anyhow::ensure!(played.frames > 0, "{file:?} holds no frames");
    }
    player.close().await;
    drop(stack);
    Ok(())
}
