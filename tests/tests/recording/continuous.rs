//! Continuous recording for a long stretch: segments that each play alone and join without a gap.

use std::time::Duration;

use ferrocam_tests::Stack;
use ferrocam_tests::recordings::segment_files;
use serde_json::json;

use super::common::{began_ms, command, description, now_ms, options, play, wait_for};

/// One continuous recording to make and check.
pub struct Run {
    pub name: &'static str,
    pub length: Duration,
    pub segment: Duration,
    /// Extra device arguments.
    pub args: &'static [&'static str],
}

/// Records `run.length` at 720p30 in `run.segment`s, stops, and plays every segment back.
pub async fn continuous(run: Run) -> anyhow::Result<()> {
    let segment_secs = run.segment.as_secs().to_string();
    let mut args = vec![
        "--record",
        "continuous",
        "--record-segment-s",
        &segment_secs,
        "--record-budget-mb",
        "0",
    ];
    args.extend_from_slice(run.args);
    let stack = Stack::start(options(run.name, &args)).await?;
    let length = run.length;
    let dir = stack.recordings_dir();
    wait_for(&stack, "continuous recording to begin", |s| {
        s["recording"] == true
    })
    .await?;
    tokio::time::sleep(length).await;
    let (code, body) = command(&stack, json!({"cmd": "record.stop"}))?;
    let stopped_at = now_ms();
    anyhow::ensure!(code == 200, "record.stop: {code} {body}");
    let expected = length.as_secs() / run.segment.as_secs();
    // Filed: counted in the status, and no file still being finished (`.part`).
    let all_filed = |dir: &std::path::Path| {
        segment_files(dir)
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "mp4"))
    };
    let status = wait_for(&stack, "the last segment to be filed", |s| {
        s["recording"] == false && s["segments"].as_u64() >= Some(expected) && all_filed(&dir)
    })
    .await?;
    anyhow::ensure!(
        status["paused"]
            .as_str()
            .is_some_and(|p| p.contains("record.stop")),
        "status says why it does not record: {status}"
    );

    let files = segment_files(&dir);
    let first = files
        .first()
        .ok_or_else(|| anyhow::anyhow!("no segments in {dir:?}"))?;
    // From the first frame recorded to the stop (the device began at its start-up).
    let recorded_for = Duration::from_millis(stopped_at - began_ms(&first.to_string_lossy())?);
    let (mut total, mut previous_end) = (Duration::ZERO, None::<u64>);
    let mut frames = 0;
    for file in &files {
        let played = play(file).await?;
        let info = description(file)?;
        let began = began_ms(&file.to_string_lossy())?;
        anyhow::ensure!(
            (played.width, played.height) == (1280, 720),
            "{file:?} is {}x{}",
            played.width,
            played.height
        );
        anyhow::ensure!(played.sound_buffers > 0, "{file:?} has no sound");
        let described = info["duration_ms"].as_u64().unwrap_or(0);
        let measured = played.duration.as_millis() as u64;
        anyhow::ensure!(
            described.abs_diff(measured) <= 100,
            "{file:?}: described {described} ms, plays {measured} ms"
        );
        // A segment ends at the first keyframe once it is long enough, and the recorder asks
        // for one then (the encoder may make none by itself): only the last, cut by the stop,
        // is shorter. The slack is the keyframe's way through the encoder and back, and below,
        // a frame's worth: the recorder times segments by encode time, a player by timestamps
        // (measured: 59.999999999 s for 60).
        let last = Some(file) == files.last();
        let long_enough =
            run.segment - Duration::from_millis(34)..=run.segment + Duration::from_millis(500);
        anyhow::ensure!(
            last || long_enough.contains(&played.duration),
            "{file:?} plays {:?}, for segments of {:?}",
            played.duration,
            run.segment
        );
        // Each segment begins where the one before ended (a frame's worth of slack).
        if let Some(end) = previous_end {
            anyhow::ensure!(
                began.abs_diff(end) <= 100,
                "{file:?} begins {began}, the one before ended {end}"
            );
        }
        previous_end = Some(began + measured);
        total += played.duration;
        frames += played.frames;
        eprintln!(
            "{}: {} — {:.3} s, {} frames, {} sound buffers, {} bytes",
            run.name,
            file.file_name().unwrap().to_string_lossy(),
            played.duration.as_secs_f64(),
            played.frames,
            played.sound_buffers,
            info["bytes"]
        );
    }
    let fps = frames as f64 / total.as_secs_f64();
    eprintln!(
        "{}: {} segments, {:.1} s recorded in {:.1} s, {fps:.2} fps",
        run.name,
        files.len(),
        total.as_secs_f64(),
        recorded_for.as_secs_f64()
    );
    // The durations add up to the time recorded (the first keyframe's wait and the stop's
    // last frame are the slack).
    let missing = recorded_for.as_secs_f64() - total.as_secs_f64();
    anyhow::ensure!(
        (-0.5..=1.5).contains(&missing),
        "{:.1} s recorded in {:.1} s",
        total.as_secs_f64(),
        recorded_for.as_secs_f64()
    );
    anyhow::ensure!(fps >= 29.0, "{fps:.2} fps");
    Ok(())
}
