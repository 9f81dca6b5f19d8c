//! Event clips with a pre-roll, and recording on command.

use std::time::Duration;

use ferrocam_tests::Stack;
use ferrocam_tests::recordings::segment_files;
use serde_json::json;

use super::common::{began_ms, command, now_ms, options, play, wait_for};

pub async fn clips_and_commands() -> anyhow::Result<()> {
    // A door contact on a (fake) GPIO input: the test writes its level into the state file.
    let pins =
        std::env::temp_dir().join(format!("ferrocam-clips-gpio-{}.json", std::process::id()));
    let pins_arg = pins.to_string_lossy().into_owned();
    let stack = Stack::start(options(
        "recording_clips",
        &[
            "--record",
            "events",
            "--record-preroll-s",
            "3",
            "--record-clip-s",
            "2",
            "--keyframe-interval",
            "30",
            "--gpio-line",
            "name=door,chip=gpiochip0,line=27,direction=input",
            "--gpio-fake",
            &pins_arg,
            "--record-trigger",
            "door",
        ],
    ))
    .await?;
    let dir = stack.recordings_dir();
    wait_for(&stack, "three seconds of pre-roll", |s| {
        s["preroll_held_ms"].as_u64() >= Some(3000) && s["recording"] == false
    })
    .await?;

    // A clip: three seconds from before the trigger, two after.
    let triggered = now_ms();
    let (code, body) = command(&stack, json!({"cmd": "record.clip"}))?;
    anyhow::ensure!(
        code == 200 && body["ok"]["recording"] == true,
        "record.clip: {code} {body}"
    );
    wait_for(&stack, "the clip to be filed", |s| {
        s["recording"] == false && s["segments"] == 1
    })
    .await?;
    let clip = segment_files(&dir)
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no clip in {dir:?}"))?;
    let played = play(&clip).await?;
    let began = began_ms(&clip.to_string_lossy())?;
    let before = triggered as i64 - began as i64;
    eprintln!(
        "clip: begins {before} ms before its trigger, plays {} ms ({} frames)",
        played.duration.as_millis(),
        played.frames
    );
    // The ring reaches back at least 3 s, to a keyframe at most a second further.
    anyhow::ensure!((2900..=4600).contains(&before), "begins {before} ms before");
    anyhow::ensure!(
        played.duration >= Duration::from_millis(4900) && played.duration <= Duration::from_secs(7),
        "the clip plays {:?}",
        played.duration
    );

    // Out of range.
    for seconds in [0, 86_401] {
        let (code, body) = command(&stack, json!({"cmd": "record.start", "seconds": seconds}))?;
        anyhow::ensure!(
            code == 422 && body["error"]["code"] == "out_of_range",
            "seconds {seconds}: {code} {body}"
        );
    }
    // On command: until stopped.
    let (code, body) = command(&stack, json!({"cmd": "record.start"}))?;
    anyhow::ensure!(code == 200, "record.start: {code} {body}");
    wait_for(&stack, "recording on command", |s| s["recording"] == true).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, body) = command(&stack, json!({"cmd": "record.stop"}))?;
    anyhow::ensure!(
        code == 200 && body["ok"]["recording"] == false,
        "record.stop: {code} {body}"
    );
    // On command, for a while: ends by itself.
    let (code, body) = command(&stack, json!({"cmd": "record.start", "seconds": 2}))?;
    anyhow::ensure!(
        code == 200 && body["ok"]["until_unix_ms"].as_u64().is_some(),
        "record.start 2 s: {code} {body}"
    );
    wait_for(&stack, "the timed recording to end by itself", |s| {
        s["recording"] == false && s["segments"] == 3
    })
    .await?;
    let files = segment_files(&dir);
    anyhow::ensure!(files.len() == 3, "{files:?}");
    // Until stopped (two seconds after it was seen recording), then for two seconds: each
    // plays at least that long, less a frame.
    for file in &files[1..] {
        let played = play(file).await?;
        anyhow::ensure!(
            played.duration >= Duration::from_millis(1950),
            "{file:?}: {played:?}"
        );
    }

    // The door opens: a clip with its pre-roll, as from record.clip.
    wait_for(&stack, "the pre-roll again", |s| {
        s["preroll_held_ms"].as_u64() >= Some(3000)
    })
    .await?;
    let opened = now_ms();
    std::fs::write(&pins, br#"{"door":true}"#)?;
    wait_for(&stack, "the door's clip to be filed", |s| {
        s["recording"] == false && s["segments"] == 4
    })
    .await?;
    let _ = std::fs::remove_file(&pins);
    let clip = segment_files(&dir)
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no clip in {dir:?}"))?;
    let played = play(&clip).await?;
    let before = opened as i64 - began_ms(&clip.to_string_lossy())? as i64;
    eprintln!(
        "door clip: begins {before} ms before the edge, plays {} ms",
        played.duration.as_millis()
    );
    anyhow::ensure!(
        (2900..=4700).contains(&before),
        "begins {before} ms before the edge"
    );
    anyhow::ensure!(played.duration >= Duration::from_millis(4900), "{played:?}");
    Ok(())
}
