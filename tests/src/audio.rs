//! Sound for the talkback tests: tones and clicks written as WAV files for Chromium's fake
//! microphone (`--use-file-for-fake-audio-capture`), and what the device's file speaker wrote
//! (`--speaker file:…`: raw s16le, 48 kHz, mono) read back and measured.

use std::path::Path;

/// The speaker file's sample rate.
pub const RATE: u32 = 48_000;

/// Writes a 16-bit mono WAV of `samples` (−1..1) at [`RATE`].
pub fn write_wav(path: &Path, samples: &[f64]) -> anyhow::Result<()> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&(RATE * 2).to_le_bytes()); // bytes per second
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &x in samples {
        out.extend_from_slice(&((x.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes());
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// `seconds` of a sine at `freq` Hz, at half scale.
pub fn tone(freq: f64, seconds: f64) -> Vec<f64> {
    let n = (seconds * f64::from(RATE)) as usize;
    (0..n)
        .map(|i| 0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(RATE)).sin())
        .collect()
}

/// `seconds` of silence with a 10 ms burst of 2 kHz every `period` seconds (a click a
/// detector finds to within a millisecond, and that survives Opus and echo cancellation).
pub fn clicks(period: f64, seconds: f64) -> Vec<f64> {
    let n = (seconds * f64::from(RATE)) as usize;
    let every = (period * f64::from(RATE)) as usize;
    let burst = RATE as usize / 100;
    (0..n)
        .map(|i| {
            let at = i % every;
            if at < burst {
                0.8 * (2.0 * std::f64::consts::PI * 2000.0 * at as f64 / f64::from(RATE)).sin()
            } else {
                0.0
            }
        })
        .collect()
}

/// The samples of a raw s16le file from byte `from` on.
pub fn read_pcm(path: &Path, from: u64) -> anyhow::Result<Vec<f64>> {
    let bytes = std::fs::read(path)?;
    let from = (from as usize).min(bytes.len()) & !1;
    Ok(bytes[from..]
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect())
}

/// Samples in one analysis window: 100 ms.
pub const WINDOW: usize = RATE as usize / 10;

/// For each 100 ms window of `samples`: the share (0–1) of its energy at `freq` Hz, by the
/// Goertzel algorithm; silent windows count as 0.
pub fn tone_shares(samples: &[f64], freq: f64) -> Vec<f64> {
    let coefficient = 2.0 * (2.0 * std::f64::consts::PI * freq / f64::from(RATE)).cos();
    samples
        .chunks_exact(WINDOW)
        .map(|window| {
            let energy: f64 = window.iter().map(|x| x * x).sum();
            if energy / (WINDOW as f64) < 1e-6 {
                return 0.0;
            }
            let (mut prev, mut prev2) = (0.0, 0.0);
            for &x in window {
                let next = x + coefficient * prev - prev2;
                prev2 = prev;
                prev = next;
            }
            let power = prev * prev + prev2 * prev2 - coefficient * prev * prev2;
            2.0 * power / (WINDOW as f64 * energy)
        })
        .collect()
}

/// The sample indices where a click starts: the signal rises above `threshold` after at least
/// `quiet` samples below it.
pub fn onsets(samples: &[f64], threshold: f64, quiet: usize) -> Vec<usize> {
    let mut found = Vec::new();
    let mut below = quiet;
    for (i, &x) in samples.iter().enumerate() {
        if x.abs() >= threshold {
            if below >= quiet {
                found.push(i);
            }
            below = 0;
        } else {
            below += 1;
        }
    }
    found
}

/// The last `speaker timing` line of a device log: (Unix µs at which the sample at the file
/// offset plays, that offset in bytes).
pub fn speaker_timing(log: &str) -> Option<(i64, u64)> {
    let plain = strip_ansi(log);
    let line = plain.lines().rev().find(|l| l.contains("speaker timing"))?;
    let field = |name: &str| {
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<i64>()
            .ok()
    };
    Some((
        field("first_sample_unix_us")?,
        field("file_offset_bytes")? as u64,
    ))
}

/// `text` without terminal colour codes (`ESC [ … m`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_is_found_where_it_is_and_clicks_where_they_are() {
        let mut sound = vec![0.0; WINDOW * 2];
        sound.extend(tone(1000.0, 0.3));
        let shares = tone_shares(&sound, 1000.0);
        assert_eq!(shares[..2], [0.0, 0.0]);
        assert!(shares[2..].iter().all(|&s| s > 0.95), "{shares:?}");
        assert!(tone_shares(&sound, 1500.0)[2..].iter().all(|&s| s < 0.01));
        let clicked = clicks(0.5, 2.0);
        assert_eq!(onsets(&clicked, 0.1, 4800), [1, 24_001, 48_001, 72_001]);
    }

    #[test]
    fn the_speaker_timing_is_read_from_a_coloured_log() {
        let log = "\u{1b}[2mT\u{1b}[0m INFO speaker started\n\
                   INFO speaker timing \u{1b}[3mfirst_sample_unix_us\u{1b}[0m\u{1b}[2m=\u{1b}[0m1764500000123456 \
                   \u{1b}[3mfile_offset_bytes\u{1b}[0m\u{1b}[2m=\u{1b}[0m9600\n";
        assert_eq!(speaker_timing(log), Some((1_764_500_000_123_456, 9600)));
        assert_eq!(speaker_timing("nothing"), None);
    }
}
