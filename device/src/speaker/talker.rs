//! One viewer's microphone inside the speaker: the [`Talker`] handle a session pushes RTP
//! into, and the pipeline branch behind it.
//!
//! A viewer counts as talking while its decoded sound is above a whisper
//! ([`TALKING_LEVEL_DB`]), measured by a `level` element at the end of its branch: a
//! browser whose microphone is off may go on sending packets of silence, and those are not
//! talking.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{Entry, Speaker, output};

/// Packets one talker may have played per 100 ms: Opus's shortest frames (2.5 ms) make 40, a
/// browser's usual 20 ms frames 5. More are dropped before they cost a copy or a decode.
const PACKETS_PER_TENTH: u32 = 50;

/// Sound one talker may send per 100 ms, in µs: half as much again as real time, for jitter.
/// One Opus packet can hold 120 ms, so counting packets alone would let a talker make the
/// decoder run many times faster than real time.
const AUDIO_PER_TENTH_US: u32 = 150_000;

/// How much of one talker's sound may wait for the pipeline before the oldest is dropped.
const TALKER_QUEUE: Duration = Duration::from_millis(300);

/// The largest RTP packet a talker may send; anything larger is not a browser's Opus.
const MAX_PACKET: usize = 1500;

/// Decoded sound louder than this (RMS, dB below full scale) is talking. Speech is around −30
/// to −20; a muted or noise-suppressed microphone is below −70.
pub const TALKING_LEVEL_DB: f64 = -50.0;

/// How often a talker's level is measured.
pub const LEVEL_INTERVAL: Duration = Duration::from_millis(100);

/// The name of talker `id`'s branch in the pipeline, which level messages are traced back by.
pub fn branch_name(id: u64) -> String {
    format!("talker-{id}")
}

/// The talker id of a branch named by [`branch_name`].
pub fn branch_id(name: &str) -> Option<u64> {
    name.strip_prefix("talker-")?.parse().ok()
}

/// One viewer's microphone, connected to the speaker; dropping it disconnects it.
pub struct Talker {
    pub(super) appsrc: gst_app::AppSrc,
    pub(super) entry: Arc<Entry>,
    pub(super) speaker: Arc<Speaker>,
    /// The payload type the viewer's Opus arrives with, from its first packet (the viewer's
    /// side of the negotiation numbers it); packets of any other type are not played.
    payload_type: OnceLock<u8>,
    /// The 100 ms window packets are being counted in, the count ([`PACKETS_PER_TENTH`]) and
    /// the sound they hold ([`AUDIO_PER_TENTH_US`]).
    window: AtomicU64,
    in_window: AtomicU32,
    audio_in_window_us: AtomicU32,
}

impl Talker {
    pub(super) fn new(appsrc: gst_app::AppSrc, entry: Arc<Entry>, speaker: Arc<Speaker>) -> Self {
        Self {
            appsrc,
            entry,
            speaker,
            payload_type: OnceLock::new(),
            window: AtomicU64::new(0),
            in_window: AtomicU32::new(0),
            audio_in_window_us: AtomicU32::new(0),
        }
    }

    /// Queues one RTP packet (Opus) of this viewer's for playing. Never blocks: a talker that
    /// sends faster than real time loses its oldest sound.
    pub fn play(&self, rtp: &[u8]) {
        if rtp.len() > MAX_PACKET {
            return;
        }
        let Some(duration_us) = opus_duration_us(rtp) else {
            return;
        };
        if !self.within_budget(duration_us) {
            return;
        }
        let payload_type = rtp[1] & 0x7f;
        let expected = *self.payload_type.get_or_init(|| {
            self.appsrc.set_caps(Some(&opus_rtp_caps(payload_type)));
            payload_type
        });
        if payload_type != expected {
            return;
        }
        let _ = self
            .appsrc
            .push_buffer(gst::Buffer::from_slice(rtp.to_vec()));
    }

    /// Whether one more packet, holding `duration_us` of sound, fits this 100 ms window.
    /// (`play` is called by one task at a time; the atomics only make the handle `Sync`.)
    fn within_budget(&self, duration_us: u32) -> bool {
        let tenth = self.speaker.now_ms() / 100;
        if self.window.swap(tenth, Ordering::Relaxed) != tenth {
            self.in_window.store(0, Ordering::Relaxed);
            self.audio_in_window_us.store(0, Ordering::Relaxed);
        }
        let packets = self.in_window.fetch_add(1, Ordering::Relaxed) + 1;
        let audio = self
            .audio_in_window_us
            .fetch_add(duration_us, Ordering::Relaxed)
            .saturating_add(duration_us);
        packets <= PACKETS_PER_TENTH && audio <= AUDIO_PER_TENTH_US
    }
}

impl Drop for Talker {
    fn drop(&mut self) {
        let speaker = Arc::clone(&self.speaker);
        let id = self.entry.id;
        let _ = self.appsrc.end_of_stream();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || speaker.remove_talker(id));
            }
            Err(_) => speaker.remove_talker(id),
        }
    }
}

/// The sound an Opus packet inside an RTP packet holds, in µs, read from its table-of-contents
/// byte (RFC 6716, 3.1); `None` when the packet is too short to be RTP carrying Opus.
pub fn opus_duration_us(rtp: &[u8]) -> Option<u32> {
    let first = *rtp.first()?;
    let mut at = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        // A header extension: 4 bytes, then its length in 32-bit words.
        let words = u16::from_be_bytes([*rtp.get(at + 2)?, *rtp.get(at + 3)?]);
        at += 4 + 4 * usize::from(words);
    }
    let toc = *rtp.get(at)?;
    let config = toc >> 3;
    let frame_us: u32 = match config {
        0..=11 => [10_000, 20_000, 40_000, 60_000][usize::from(config % 4)],
        12..=15 => [10_000, 20_000][usize::from(config % 2)],
        _ => [2_500, 5_000, 10_000, 20_000][usize::from(config % 4)],
    };
    let frames: u32 = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*rtp.get(at + 1)? & 0x3f),
    };
    Some(frame_us * frames)
}

/// What a talker's packets are: Opus over RTP with the viewer's payload type.
fn opus_rtp_caps(payload_type: u8) -> gst::Caps {
    gst::Caps::builder("application/x-rtp")
        .field("media", "audio")
        .field("clock-rate", 48_000i32)
        .field("encoding-name", "OPUS")
        .field("payload", i32::from(payload_type))
        .build()
}

/// Talker `id`'s branch: RTP in through an appsrc, decoded and measured sound out through a
/// ghost pad.
pub fn branch(id: u64) -> anyhow::Result<(gst::Bin, gst_app::AppSrc)> {
    gst::init()?;
    let description = format!(
        "appsrc name=rtp is-live=true format=time do-timestamp=true \
         ! rtpjitterbuffer latency={} drop-on-latency=true \
         ! rtpopusdepay ! opusdec plc=true \
         ! audioconvert ! audioresample ! capsfilter caps=\"{}\" \
         ! level interval={} post-messages=true",
        super::JITTER_BUFFER.as_millis(),
        output::OUTPUT_CAPS,
        LEVEL_INTERVAL.as_nanos(),
    );
    let branch = gst::parse::bin_from_description(&description, true)
        .context("building a talker's branch")?;
    branch.set_property("name", branch_name(id));
    let appsrc = branch
        .by_name("rtp")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .context("talker branch without its appsrc")?;
    appsrc.set_property("block", false);
    appsrc.set_property("max-time", TALKER_QUEUE.as_nanos() as u64);
    appsrc.set_property("max-bytes", 0u64);
    appsrc.set_property("max-buffers", 0u64);
    appsrc.set_property_from_str("leaky-type", "downstream");
    Ok((branch, appsrc))
}

/// The loudest channel's RMS (dB) in a `level` element's message, if that is what `structure`
/// is.
pub fn level_rms(structure: &gst::StructureRef) -> Option<f64> {
    if structure.name() != "level" {
        return None;
    }
    #[allow(deprecated)] // `level` reports a GValueArray, and this is how to read one
    let rms = structure.get::<gst::glib::ValueArray>("rms").ok()?;
    rms.iter()
        .filter_map(|value| value.get::<f64>().ok())
        .fold(None, |loudest: Option<f64>, db| {
            Some(loudest.map_or(db, |l| l.max(db)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        packet.extend_from_slice(payload);
        packet
    }

    #[test]
    fn an_opus_packet_says_how_much_sound_it_holds() {
        // CELT 20 ms, one frame (a browser's usual packet).
        assert_eq!(opus_duration_us(&rtp(&[(19 << 3), 0xaa])), Some(20_000));
        // SILK 60 ms, two frames.
        assert_eq!(opus_duration_us(&rtp(&[(3 << 3) | 1, 0xaa])), Some(120_000));
        // CELT 2.5 ms, code 3 with 48 frames: 120 ms.
        assert_eq!(opus_duration_us(&rtp(&[(16 << 3) | 3, 48])), Some(120_000));
        // Behind a CSRC and a one-word header extension.
        let mut extended = vec![0x91, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2];
        extended.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4, 19 << 3]);
        assert_eq!(opus_duration_us(&extended), Some(20_000));
        // Too short to hold a TOC byte.
        assert_eq!(opus_duration_us(&[0x80; 12]), None);
        assert_eq!(opus_duration_us(&[0x91; 16]), None);
        assert_eq!(opus_duration_us(&rtp(&[(16 << 3) | 3])), None);
    }
}
