//! Talking to the camera: real Chromium with a fake microphone that plays a tone file, a real
//! device whose speaker is a file (`--speaker file:…`, raw samples written at the pace a
//! speaker plays them), and the tones found in that file by frequency.
//!
//! Times are compared on the machine's one wall clock: the page notes when Talk was pressed
//! (`performance.timeOrigin + now()`), and the device logs when the first sample of its speaker
//! file plays (`speaker timing`), so each 100 ms of the file has a wall-clock time too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrocam_tests::audio::{self, WINDOW};
use ferrocam_tests::{Browser, Stack, StackOptions, eventually};
use serde_json::Value;

/// A Chromium whose microphone plays `wav` in a loop (permission granted by the fake UI).
async fn chromium_with_microphone(stack: &Stack, wav: &Path) -> anyhow::Result<Browser> {
    Browser::start_with(
        &stack.log_dir,
        &[
            "--use-fake-ui-for-media-stream".to_owned(),
            "--use-fake-device-for-media-stream".to_owned(),
            format!("--use-file-for-fake-audio-capture={}", wav.display()),
        ],
    )
    .await
}

fn tone_file(stack: &Stack, freq: f64) -> anyhow::Result<PathBuf> {
    let path = stack.log_dir.join(format!("tone-{freq}.wav"));
    audio::write_wav(&path, &audio::tone(freq, 30.0))?;
    Ok(path)
}

/// The page's talk state (`ferrocam.talk`, talk.js) once the connection has settled it.
async fn talk_state(browser: &Browser) -> anyhow::Result<Value> {
    eventually(
        "the page to settle talking",
        Duration::from_secs(30),
        || async {
            let talk = browser.js("return window.ferrocam.talk || null;").await?;
            let settled = talk["available"] == true || talk["reason"].is_string();
            Ok(settled.then_some(talk))
        },
    )
    .await
}

/// Presses Talk as a user does (a pointer down on the button); returns when, in Unix ms.
async fn press_talk(browser: &Browser) -> anyhow::Result<f64> {
    let pressed = browser
        .js("document.getElementById('talk').dispatchEvent(new PointerEvent('pointerdown', { bubbles: true }));
             return window.ferrocam.talk.pressedAt;")
        .await?;
    pressed
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("no press time: {pressed}"))
}

/// The device's speaker output since it last started, with the wall-clock time (Unix ms) at
/// which its first sample played.
fn speaker_output(stack: &Stack, file: &Path) -> anyhow::Result<Option<(f64, Vec<f64>)>> {
    let log = std::fs::read_to_string(stack.log_dir.join("device-1.log"))?;
    let Some((first_us, offset)) = audio::speaker_timing(&log) else {
        return Ok(None);
    };
    Ok(Some((
        first_us as f64 / 1000.0,
        audio::read_pcm(file, offset)?,
    )))
}

/// When (Unix ms) the speaker first played `freq` after `since`, if it has.
fn first_heard(stack: &Stack, file: &Path, freq: f64, since: f64) -> anyhow::Result<Option<f64>> {
    let Some((start, samples)) = speaker_output(stack, file)? else {
        return Ok(None);
    };
    let window_ms = 1000.0 * WINDOW as f64 / f64::from(audio::RATE);
    Ok(audio::tone_shares(&samples, freq)
        .iter()
        .enumerate()
        .map(|(i, &share)| (start + i as f64 * window_ms, share))
        .find(|&(at, share)| at + window_ms >= since && share > 0.5)
        .map(|(at, _)| at))
}

/// Frames the page has decoded, and when getStats counted them (ms).
async fn decoded(browser: &Browser) -> anyhow::Result<(f64, f64)> {
    let v = browser
        .js_async(
            "if (!ferrocam.pc) return done([0, performance.now()]);
             ferrocam.pc.getStats().then((report) => {
               let found = [0, performance.now()];
               report.forEach((s) => {
                 if (s.type === 'inbound-rtp' && s.kind === 'video') found = [s.framesDecoded || 0, s.timestamp];
               });
               done(found);
             });",
        )
        .await?;
    Ok((v[0].as_f64().unwrap_or(0.0), v[1].as_f64().unwrap_or(0.0)))
}

/// The frame rate the page decodes at over the next two seconds.
async fn decode_rate(browser: &Browser) -> anyhow::Result<f64> {
    let (frames, at) = decoded(browser).await?;
    let (later, then) = eventually(
        "two seconds of decoding",
        Duration::from_secs(10),
        || async {
            let now = decoded(browser).await?;
            Ok((now.1 - at >= 2000.0).then_some(now))
        },
    )
    .await?;
    Ok((later - frames) * 1000.0 / (then - at))
}

/// The level (dB) of each of `freqs` in the audio the page receives from the camera, from a
/// WebAudio analyser on the received track.
async fn received_levels(browser: &Browser, freqs: &[f64]) -> anyhow::Result<Vec<f64>> {
    let script = format!(
        "const track = ferrocam.stream && ferrocam.stream.getAudioTracks()[0];
         if (!track) return done(null);
         const context = new AudioContext();
         const analyser = context.createAnalyser();
         analyser.fftSize = 8192;
         context.createMediaStreamSource(new MediaStream([track])).connect(analyser);
         setTimeout(() => {{
           const bins = new Float32Array(analyser.frequencyBinCount);
           analyser.getFloatFrequencyData(bins);
           const level = (f) => {{
             const at = Math.round(f * analyser.fftSize / context.sampleRate);
             return Math.max(bins[at - 1], bins[at], bins[at + 1]);
           }};
           done({freqs:?}.map(level));
           context.close();
         }}, 1500);"
    );
    let levels = browser.js_async(&script).await?;
    levels
        .as_array()
        .map(|l| l.iter().map(|v| v.as_f64().unwrap_or(-200.0)).collect())
        .ok_or_else(|| anyhow::anyhow!("no received audio track: {levels}"))
}

fn speaker_args(stack_dir_name: &str) -> (PathBuf, String) {
    let file = ferrocam_tests::process::workspace_root()
        .join("target/e2e-logs")
        .join(format!("{stack_dir_name}-speaker.pcm"));
    let _ = std::fs::remove_file(&file);
    let arg = format!("file:{}", file.display());
    (file, arg)
}

#[tokio::test]
async fn a_viewer_is_heard_within_a_second_and_two_talkers_mix_without_echo() -> anyhow::Result<()>
{
    let (speaker, speaker_arg) = speaker_args("talkback");
    let stack =
        Stack::start(StackOptions::new("talkback").device_args(&["--speaker", &speaker_arg]))
            .await?;
    let alice = chromium_with_microphone(&stack, &tone_file(&stack, 1000.0)?).await?;
    stack.open_viewer(&alice, 0).await?;
    alice.click_device(&stack.device_id).await?;
    let state = talk_state(&alice).await?;
    assert_eq!(state["available"], true, "{state}");

    // Pressed: the tone is on the speaker within a second.
    let pressed = press_talk(&alice).await?;
    let heard = eventually(
        "1000 Hz from the speaker",
        Duration::from_secs(10),
        || async { first_heard(&stack, &speaker, 1000.0, pressed) },
    )
    .await?;
    let delay = heard - pressed;
    println!("talk pressed → tone on the speaker: {delay:.0} ms (100 ms windows)");
    assert!(delay <= 1000.0, "heard {delay:.0} ms after pressing Talk");
    // The page learns from the camera that it is being played.
    eventually(
        "the page to say it is heard",
        Duration::from_secs(5),
        || async {
            let v = alice
            .js("return [ferrocam.talk.heard, document.getElementById('talk-state').textContent];")
            .await?;
            Ok((v[0] == true && v[1].as_str().unwrap_or("").contains("playing you")).then_some(()))
        },
    )
    .await?;

    // A second viewer talks at the same time, hands-free: both tones are in the output.
    let bob = chromium_with_microphone(&stack, &tone_file(&stack, 1500.0)?).await?;
    stack.open_viewer(&bob, 0).await?;
    bob.click_device(&stack.device_id).await?;
    assert_eq!(talk_state(&bob).await?["available"], true);
    let latched = bob
        .js(
            "const latch = document.getElementById('talk-latch'); latch.click();
             return [latch.checked, ferrocam.talk.pressedAt];",
        )
        .await?;
    assert_eq!(latched[0], true);
    let bob_pressed = latched[1].as_f64().unwrap_or(0.0);
    eventually(
        "both tones mixed for half a second",
        Duration::from_secs(10),
        || async {
            let Some((start, samples)) = speaker_output(&stack, &speaker)? else {
                return Ok(None);
            };
            let from = ((bob_pressed - start).max(0.0) * f64::from(audio::RATE) / 1000.0) as usize;
            let samples = &samples[from.min(samples.len())..];
            let low = audio::tone_shares(samples, 1000.0);
            let high = audio::tone_shares(samples, 1500.0);
            let both = low
                .iter()
                .zip(&high)
                .filter(|(l, h)| **l > 0.2 && **h > 0.2)
                .count();
            Ok((both >= 5).then_some(()))
        },
    )
    .await?;
    // Each page sees the other talking.
    eventually(
        "alice to see another talker",
        Duration::from_secs(5),
        || async {
            let others = alice.js("return ferrocam.talk.others || [];").await?;
            Ok((others.as_array().is_some_and(|o| !o.is_empty())).then_some(()))
        },
    )
    .await?;

    // The camera's own sound and picture carry on, and neither talker hears itself (or the
    // other) come back: the received audio has the device's 440 Hz and nothing of 1000 or
    // 1500 Hz.
    for (name, page) in [("alice", &alice), ("bob", &bob)] {
        let fps = decode_rate(page).await?;
        assert!(fps >= 25.0, "{name} decodes {fps:.1} fps while both talk");
        let levels = received_levels(page, &[440.0, 1000.0, 1500.0]).await?;
        println!("{name} receives 440/1000/1500 Hz at {levels:?} dB");
        assert!(
            levels[0] > -80.0,
            "{name} lost the camera's sound: {levels:?}"
        );
        assert!(
            levels[1] < levels[0] - 30.0 && levels[2] < levels[0] - 30.0,
            "{name} hears a talker come back: {levels:?}"
        );
    }

    // Released: the page stops sending and the camera stops playing alice.
    alice
        .js("document.getElementById('talk').dispatchEvent(new PointerEvent('pointerup', { bubbles: true })); return null;")
        .await?;
    let stopped = eventually(
        "alice to stop being heard",
        Duration::from_secs(5),
        || async {
            let v = alice
                .js("return [ferrocam.talk.sending, ferrocam.talk.heard];")
                .await?;
            Ok((v[0] == false && v[1] == false).then_some(()))
        },
    )
    .await;
    if stopped.is_err() {
        let talk = alice.js("return ferrocam.talk;").await?;
        anyhow::bail!("alice is still heard after letting go: {talk}");
    }
    bob.close().await?;
    alice.close().await
}

/// Adds a `view` user to the stack's auth file (the gateway notices the change by itself).
fn add_view_user(stack: &Stack, name: &str, password: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child =
        std::process::Command::new(ferrocam_tests::process::workspace_bin("ferrocam-gateway")?)
            .args(["user", "add", name, "--role", "view", "--password-stdin"])
            .arg("--auth-config")
            .arg(&stack.creds.auth_config)
            .stdin(std::process::Stdio::piped())
            .spawn()?;
    writeln!(child.stdin.take().expect("piped"), "{password}")?;
    anyhow::ensure!(child.wait()?.success(), "user add failed");
    Ok(())
}

/// A page changed to send its microphone whatever the camera says: it offers two-way audio
/// with the microphone in it, and rewrites the camera's answer to claim the camera receives
/// (Chromium then sends, as it would to a camera that listens).
const SEND_ANYWAY: &str = r#"
  (() => {
    const addTransceiver = RTCPeerConnection.prototype.addTransceiver;
    RTCPeerConnection.prototype.addTransceiver = function (kind, init) {
      if (kind === 'audio' && window.__mic) return addTransceiver.call(this, window.__mic, { direction: 'sendrecv' });
      return addTransceiver.call(this, kind, init);
    };
    const setRemote = RTCPeerConnection.prototype.setRemoteDescription;
    RTCPeerConnection.prototype.setRemoteDescription = function (description) {
      if (description && description.type === 'answer') {
        const sdp = description.sdp.replace(/(m=audio[\s\S]*?)a=(sendonly|inactive)/, '$1a=sendrecv');
        return setRemote.call(this, { type: 'answer', sdp });
      }
      return setRemote.call(this, description);
    };
  })();
"#;

/// Audio packets the page has sent on its current connection.
async fn audio_packets_sent(browser: &Browser) -> anyhow::Result<f64> {
    let sent = browser
        .js_async(
            "if (!ferrocam.pc) return done(0);
             ferrocam.pc.getStats().then((report) => {
               let sent = 0;
               report.forEach((s) => { if (s.type === 'outbound-rtp' && s.kind === 'audio') sent += s.packetsSent || 0; });
               done(sent);
             });",
        )
        .await?;
    Ok(sent.as_f64().unwrap_or(0.0))
}

#[tokio::test]
async fn a_view_only_viewer_is_never_heard_even_from_a_page_that_sends_anyway() -> anyhow::Result<()>
{
    let (speaker, speaker_arg) = speaker_args("talkback_view_only");
    let stack = Stack::start(
        StackOptions::new("talkback_view_only").device_args(&["--speaker", &speaker_arg]),
    )
    .await?;
    add_view_user(&stack, "watcher", "watcher password 1")?;
    let page = chromium_with_microphone(&stack, &tone_file(&stack, 1200.0)?).await?;
    page.login(&stack.url(""), "watcher", "watcher password 1")
        .await?;

    // The page as shipped: Talk is off, and says why.
    page.click_device(&stack.device_id).await?;
    let state = talk_state(&page).await?;
    assert_eq!(state["available"], false, "{state}");
    assert!(
        state["reason"].as_str().unwrap_or("").contains("View only"),
        "{state}"
    );
    let button = page
        .js("return [document.getElementById('talk').disabled, document.getElementById('talk-state').textContent];")
        .await?;
    assert_eq!(button[0], true, "{button}");
    assert!(
        button[1].as_str().unwrap_or("").contains("View only"),
        "{button}"
    );

    // Modified: it offers itself, with the microphone in the offer and the camera's answer
    // rewritten; Chromium really sends.
    page.before_every_page(SEND_ANYWAY).await?;
    page.client.refresh().await?;
    page.js_async(
        "navigator.mediaDevices.getUserMedia({ audio: true }).then((s) => { window.__mic = s.getAudioTracks()[0]; done(null); });",
    )
    .await?;
    page.js(&format!(
        "ferrocam.watch('{}', {{ offerer: 'browser' }}); return null;",
        stack.device_id
    ))
    .await?;
    let sent = eventually(
        "the modified page to send audio",
        Duration::from_secs(20),
        || async {
            let sent = audio_packets_sent(&page).await?;
            Ok((sent >= 100.0).then_some(sent))
        },
    )
    .await?;
    println!("audio packets the modified page sent: {sent}");
    // Video still plays on that session.
    let fps = decode_rate(&page).await?;
    assert!(fps >= 25.0, "{fps:.1} fps");

    // Whatever it sent, nothing was played: the speaker never even started.
    let log = std::fs::read_to_string(stack.log_dir.join("device-1.log"))?;
    let log = audio::strip_ansi(&log);
    assert!(
        !log.contains("talker connected"),
        "a view session reached the speaker"
    );
    assert!(log.contains("talk=false"), "the grant says no talking");
    if speaker.exists() {
        let samples = audio::read_pcm(&speaker, 0)?;
        let loud = audio::tone_shares(&samples, 1200.0)
            .iter()
            .filter(|&&s| s > 0.1)
            .count();
        assert_eq!(loud, 0, "the view session's tone was played");
    }
    page.close().await
}

/// Presses Talk and waits for the page's verdict: the error it shows.
async fn talk_refusal(browser: &Browser) -> anyhow::Result<(String, String)> {
    press_talk(browser).await?;
    eventually(
        "the page to say why it cannot talk",
        Duration::from_secs(10),
        || async {
            let v = browser
                .js(
                    "return [ferrocam.talk.errorName || null, ferrocam.talk.error || null,
                         document.getElementById('talk-state').textContent];",
                )
                .await?;
            Ok(v[1].as_str().map(|error| {
                (
                    v[0].as_str().unwrap_or_default().to_owned(),
                    format!("{error} | shown: {}", v[2].as_str().unwrap_or_default()),
                )
            }))
        },
    )
    .await
}

#[tokio::test]
async fn without_a_microphone_or_permission_the_viewer_watches_and_is_told_why()
-> anyhow::Result<()> {
    let (_, speaker_arg) = speaker_args("talkback_refused");
    let stack = Stack::start(
        StackOptions::new("talkback_refused").device_args(&["--speaker", &speaker_arg]),
    )
    .await?;
    // This machine has no sound card: with the prompt accepted there is still no microphone.
    let no_microphone = Browser::start_with(
        &stack.log_dir,
        &["--use-fake-ui-for-media-stream".to_owned()],
    )
    .await?;
    // A fake microphone, and the permission prompt refused.
    let refused = Browser::start_with(
        &stack.log_dir,
        &[
            "--use-fake-device-for-media-stream".to_owned(),
            "--use-fake-ui-for-media-stream=deny".to_owned(),
        ],
    )
    .await?;
    for (page, expected) in [(&no_microphone, "No microphone"), (&refused, "refused")] {
        stack.open_viewer(page, 0).await?;
        page.click_device(&stack.device_id).await?;
        assert_eq!(talk_state(page).await?["available"], true);
        let (name, said) = talk_refusal(page).await?;
        println!("{name}: {said}");
        assert!(
            said.contains(expected) && said.contains("still watch"),
            "{name}: {said}"
        );
        // Still watching, and Talk can be tried again.
        let fps = decode_rate(page).await?;
        assert!(fps >= 25.0, "{fps:.1} fps after the refusal");
        let talk = page
            .js("return [document.getElementById('talk').disabled, ferrocam.talk.sending];")
            .await?;
        assert_eq!(talk, serde_json::json!([false, false]));
    }
    refused.close().await?;
    no_microphone.close().await
}
