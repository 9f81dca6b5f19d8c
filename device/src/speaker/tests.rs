//! The speaker with real GStreamer: Opus RTP made by GStreamer's own encoder and payloader goes
//! in through talkers, raw samples come out of a file sink, and the tones in them are measured.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::output::OUTPUT_RATE;
use super::*;

/// Opus RTP packets of a sine at `freq` Hz, `seconds` long (20 ms each).
fn opus_rtp(freq: u32, seconds: u32) -> Vec<Vec<u8>> {
    gst::init().unwrap();
    let buffers = seconds * 50;
    let pipeline = gst::parse::launch(&format!(
        "audiotestsrc wave=sine freq={freq} volume=0.3 samplesperbuffer=960 num-buffers={buffers} \
         ! audio/x-raw,rate=48000,channels=1 ! opusenc frame-size=20 ! rtpopuspay \
         ! appsink name=out sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    collect_rtp(&pipeline)
}

/// Runs `pipeline` to its end and returns what its appsink `out` received.
fn collect_rtp(pipeline: &gst::Pipeline) -> Vec<Vec<u8>> {
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut packets = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        packets.push(sample.buffer().unwrap().map_readable().unwrap().to_vec());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    packets
}

/// Plays `packets` through `talker` at the pace a browser sends them.
async fn send(talker: &Talker, packets: &[Vec<u8>]) {
    let mut every = tokio::time::interval(Duration::from_millis(20));
    for packet in packets {
        every.tick().await;
        talker.play(packet);
    }
}

fn output_file(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "ferrocam-speaker-{}-{name}.pcm",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

fn samples(path: &Path) -> Vec<f64> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect()
}

/// The share of the sound's energy at `freq` (Goertzel), 0–1, averaged over the 100 ms
/// windows that are not silent: silence before and after says nothing about what played.
fn tone_share(samples: &[f64], freq: f64) -> f64 {
    let shares: Vec<f64> = samples
        .chunks_exact(OUTPUT_RATE as usize / 10)
        .filter_map(|window| {
            let energy: f64 = window.iter().map(|x| x * x).sum();
            (energy / window.len() as f64 > 1e-6).then(|| goertzel(window, freq) / energy)
        })
        .collect();
    if shares.is_empty() {
        return 0.0;
    }
    shares.iter().sum::<f64>() / shares.len() as f64
}

/// The power at `freq` in `window`, scaled so a pure tone's is its energy.
fn goertzel(window: &[f64], freq: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / f64::from(OUTPUT_RATE)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in window {
        let s0 = x + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    2.0 * (s1 * s1 + s2 * s2 - k * s1 * s2) / window.len() as f64
}

fn speaker_to(path: &Path) -> Arc<Speaker> {
    Speaker::new(
        SpeakerSink::File(path.to_path_buf()),
        HalfDuplex::Off,
        Arc::new(|_| {}),
    )
}

fn session(n: u8) -> SessionId {
    SessionId::from_random([n; 16])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_talkers_are_both_heard_and_the_speaker_stops_after_the_last() {
    let path = output_file("mix");
    let speaker = speaker_to(&path);
    let (low, high) = (opus_rtp(700, 2), opus_rtp(1300, 2));
    let alice = speaker.join(session(1), "alice".into()).await.unwrap();
    let bob = speaker.join(session(2), "bob".into()).await.unwrap();
    tokio::join!(send(&alice, &low), send(&bob, &high));
    let status = speaker.status(Some(&session(2)));
    let talkers: Vec<_> = status
        .talkers
        .iter()
        .map(|t| (t.user.as_str(), t.talking, t.you))
        .collect();
    assert_eq!(talkers, [("alice", true, false), ("bob", true, true)]);
    drop((alice, bob));
    // Leaving is done on a blocking thread; the pipeline stops with the last talker.
    for _ in 0..100 {
        if speaker.counts() == (0, 0) && speaker.pipeline.lock().unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(speaker.pipeline.lock().unwrap().is_none());

    let heard = samples(&path);
    // The file runs at the speaker's pace: about the two seconds sent, plus the latency.
    let seconds = heard.len() as f64 / f64::from(OUTPUT_RATE);
    assert!((1.8..3.0).contains(&seconds), "{seconds:.2} s of sound");
    let (share_low, share_high) = (tone_share(&heard, 700.0), tone_share(&heard, 1300.0));
    assert!(
        share_low > 0.25 && share_high > 0.25,
        "700 Hz {share_low:.2}, 1300 Hz {share_high:.2} of the energy"
    );
    assert!(tone_share(&heard, 1000.0) < 0.01);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_one_talker_does_not_silence_another() {
    let path = output_file("garbage");
    let speaker = speaker_to(&path);
    let tone = opus_rtp(900, 2);
    let good = speaker.join(session(1), "alice".into()).await.unwrap();
    let bad = speaker.join(session(2), "mallory".into()).await.unwrap();
    // Valid RTP headers (the seq and timestamp of real packets) with random payloads, plus
    // packets too short or too long to be RTP at all.
    let mut noise = 0x2545_f491_u32;
    let junk: Vec<Vec<u8>> = tone
        .iter()
        .map(|packet| {
            let mut forged = packet[..12].to_vec();
            forged.extend((0..200).map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 17;
                noise ^= noise << 5;
                noise as u8
            }));
            forged
        })
        .collect();
    bad.play(&[0x80]);
    bad.play(&vec![0x80; 64 * 1024]);
    // A flood: 10,000 packets at once, most dropped before they cost a decode.
    for packet in junk.iter().cycle().take(10_000) {
        bad.play(packet);
    }
    tokio::join!(send(&good, &tone), send(&bad, &junk));
    drop((good, bad));
    let heard = samples(&path);
    assert!(tone_share(&heard, 900.0) > 0.3, "the tone is lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_silences_and_volume_scales() {
    let path = output_file("volume");
    let speaker = speaker_to(&path);
    let tone = opus_rtp(1000, 1);
    let alice = speaker.join(session(1), "alice".into()).await.unwrap();
    send(&alice, &tone[..25]).await;
    speaker.set_muted(true);
    // What is already queued in the mixer (its latency) still plays after the switch.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let loud_until = samples(&path).len();
    send(&alice, &tone[25..]).await;
    let heard = samples(&path);
    let muted_part = &heard[loud_until..];
    let loud = tone_share(&heard[..loud_until], 1000.0);
    assert!(loud > 0.3, "{loud:.2} of {loud_until} samples at 1000 Hz");
    assert!(
        muted_part.len() > 12_000,
        "{} samples while muted",
        muted_part.len()
    );
    assert!(muted_part.iter().all(|&x| x == 0.0), "sound while muted");
    let status = speaker.status(None);
    assert!(status.muted && status.talkers.iter().all(|t| !t.you));
}

#[test]
fn half_duplex_settings() {
    assert_eq!(HalfDuplex::parse("duck").unwrap().microphone_gain(), 0.1);
    assert_eq!(HalfDuplex::parse("mute").unwrap().microphone_gain(), 0.0);
    assert_eq!(HalfDuplex::parse("off").unwrap().microphone_gain(), 1.0);
    assert!(HalfDuplex::parse("on").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_duplex_turns_the_microphone_down_while_someone_talks() {
    let path = output_file("duplex");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let speaker = Speaker::new(
        SpeakerSink::File(path),
        HalfDuplex::Duck,
        Arc::new(move |playing| {
            let _ = tx.send(playing);
        }),
    );
    let alice = speaker.join(session(1), "alice".into()).await.unwrap();
    send(&alice, &opus_rtp(500, 1)).await;
    assert_eq!(rx.recv().await, Some(true));
    // Back up once the speaker has been quiet for its talking window.
    let back = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
    assert_eq!(back.unwrap(), Some(false));
}

/// Opus RTP of a click every half second (a 10 ms burst of 2 kHz), `seconds` long.
fn click_rtp(seconds: u32) -> Vec<Vec<u8>> {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "audiotestsrc wave=sine freq=2000 volume=0.8 samplesperbuffer=480 num-buffers={} \
         ! audio/x-raw,rate=48000,channels=1 ! volume name=gate ! opusenc frame-size=20 \
         ! rtpopuspay ! appsink name=out sync=false",
        seconds * 100
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    // Only the first 10 ms buffer of every 50 is heard.
    let n = std::sync::atomic::AtomicU64::new(0);
    pipeline
        .by_name("gate")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let counted = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data
                && !counted.is_multiple_of(50)
            {
                let buffer = buffer.make_mut();
                let mut map = buffer.map_writable().unwrap();
                map.as_mut_slice().fill(0);
            }
            gst::PadProbeReturn::Ok
        });
    collect_rtp(&pipeline)
}

/// Wall-clock ms now.
fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_speaker_timing_says_when_the_file_sink_plays_each_sample() {
    // The tests and the talkback benchmark time sound on the speaker by the `speaker timing`
    // the device logs (the wall-clock time of the file's first sample). Checked here against
    // when the bytes really reach the file, watched every millisecond.
    let path = output_file("timing");
    let speaker = speaker_to(&path);
    let alice = speaker.join(session(1), "alice".into()).await.unwrap();
    let packets = click_rtp(3);
    let watched = path.clone();
    let growth = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < until {
            let len = std::fs::metadata(&watched).map_or(0, |m| m.len());
            seen.push((unix_ms(), len));
            std::thread::sleep(Duration::from_millis(1));
        }
        seen
    });
    let mut sent = Vec::new();
    let mut every = tokio::time::interval(Duration::from_millis(20));
    for (i, packet) in packets.iter().enumerate() {
        every.tick().await;
        if i % 25 == 0 {
            sent.push(unix_ms());
        }
        alice.play(packet);
    }
    let growth = growth.join().unwrap();
    let timing = speaker
        .pipeline
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .output
        .timing
        .get()
        .copied();
    let (first_us, offset) = timing.expect("no timing for a file sink");
    // The sample the timing is anchored at, counted from the file's start (a new file).
    let anchor = offset as usize / 2;
    let heard = samples(&path);
    let mut quiet = usize::MAX / 2;
    let mut onsets = Vec::new();
    for (i, x) in heard.iter().enumerate() {
        if x.abs() > 0.05 {
            if quiet > OUTPUT_RATE as usize / 4 {
                onsets.push(i);
            }
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    assert_eq!(onsets.len(), sent.len() - 1, "clicks heard at {onsets:?}");
    // The file sink writes a whole 10 ms buffer (the mixer's) when its first sample is due, so
    // a click reaches the file up to a buffer before it plays: the file's growth is compared
    // with when the click's buffer begins. Buffers start at the anchor, a buffer's start.
    let buffer = OUTPUT_RATE as usize / 100;
    // The first click plays while the pipeline is still settling; the rest in steady state.
    for (&i, sent_at) in onsets.iter().zip(&sent).skip(1) {
        let ms = |sample: usize| {
            first_us as f64 / 1000.0
                + (sample as f64 - anchor as f64) * 1000.0 / f64::from(OUTPUT_RATE)
        };
        let logged = ms(i);
        let buffer_logged = ms(i - i.saturating_sub(anchor) % buffer);
        let written = growth
            .iter()
            .find(|(_, len)| *len as usize >= (i + 1) * 2)
            .map(|(at, _)| *at)
            .expect("the file never grew that far");
        println!(
            "click sent → played {:.1} ms (its buffer due {:.1} ms, written {:.1} ms)",
            logged - sent_at,
            buffer_logged - sent_at,
            written - sent_at
        );
        assert!(
            (buffer_logged - written).abs() < 15.0,
            "its buffer logged due at {buffer_logged:.1}, written {written:.1} (click at {logged:.1})"
        );
    }
}
