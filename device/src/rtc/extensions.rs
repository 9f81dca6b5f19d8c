//! Two RTP header extensions on our video, for viewers that are not our own page.
//!
//! - **playout-delay** with min = max = 0. Our page asks Chromium for its smallest jitter
//!   buffer itself (`jitterBufferTarget = 0`); any other Chromium-based viewer (a WHEP player,
//!   someone's own page) would otherwise smooth playback with a buffer that adds tens of
//!   milliseconds. With this extension libwebrtc renders each frame as soon as it is decoded.
//!   A camera feed is worth more fresh than smooth.
//! - **abs-capture-time**: when the frame was captured, on the NTP clock. A receiver that
//!   knows the sender's clock (one machine, or NTP-synced hosts) can compute capture →
//!   display latency without our stamp in the picture.
//!
//! Both are negotiated like any extension (a viewer that does not list them gets neither;
//! `--zero-playout-delay off` stops the device agreeing to playout-delay) and
//! written here into the packets the packetizer makes: playout-delay on every packet (4 bytes,
//! so the frame's first packet to arrive carries it, whichever that is), abs-capture-time on
//! each frame's first packet (receivers interpolate between frames by the RTP clock).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpHeaderExtensionCapability, RTCRtpHeaderExtensionParameters, RtpCodecKind,
};
use webrtc::peer_connection::MediaEngine;

pub(super) const PLAYOUT_DELAY_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
pub(super) const ABS_CAPTURE_TIME_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Lets the extensions be negotiated on video: abs-capture-time always, playout-delay when
/// `zero_playout_delay` (`--zero-playout-delay`). A viewer is never sent an extension it was
/// not offered or did not offer.
pub(super) fn register(
    media_engine: &mut MediaEngine,
    zero_playout_delay: bool,
) -> anyhow::Result<()> {
    let playout_delay = zero_playout_delay.then_some(PLAYOUT_DELAY_URI);
    for uri in [Some(ABS_CAPTURE_TIME_URI), playout_delay]
        .into_iter()
        .flatten()
    {
        media_engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                RtpCodecKind::Video,
                None,
            )
            .with_context(|| format!("registering {uri}"))?;
    }
    Ok(())
}

/// The ids a viewer agreed to for the extensions; `None` for one it did not list.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameExtensions {
    playout_delay: Option<u8>,
    abs_capture_time: Option<u8>,
}

impl FrameExtensions {
    /// Picks our extensions out of a sender's negotiated ones. Ids above 14 need the two-byte
    /// header form; libwebrtc offers ours below that, and one it numbered higher is skipped
    /// rather than risk a header the packet writer rejects.
    pub(super) fn negotiated(extensions: &[RTCRtpHeaderExtensionParameters]) -> Self {
        let id = |uri: &str| {
            extensions
                .iter()
                .find(|e| e.uri == uri)
                .and_then(|e| u8::try_from(e.id).ok())
                .filter(|id| (1..=14).contains(id))
        };
        Self {
            playout_delay: id(PLAYOUT_DELAY_URI),
            abs_capture_time: id(ABS_CAPTURE_TIME_URI),
        }
    }

    /// Writes the extensions into one frame's packets, captured at `captured_at`.
    pub(super) fn apply(&self, packets: &mut [rtc::rtp::Packet], captured_at: SystemTime) {
        if let Some(id) = self.playout_delay {
            // 12 bits of minimum and 12 of maximum delay, in 10 ms units: all zero.
            let zero = Bytes::from_static(&[0, 0, 0]);
            for packet in packets.iter_mut() {
                let _ = packet.header.set_extension(id, zero.clone());
            }
        }
        if let (Some(id), Some(first)) = (self.abs_capture_time, packets.first_mut()) {
            let stamp = Bytes::copy_from_slice(&ntp(captured_at).to_be_bytes());
            let _ = first.header.set_extension(id, stamp);
        }
    }
}

/// `t` as a 64-bit NTP timestamp: seconds since 1900 in the high 32 bits, the fraction in the
/// low 32 (UQ32.32).
fn ntp(t: SystemTime) -> u64 {
    let since_unix = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_unix.as_secs() + NTP_UNIX_OFFSET_S;
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn negotiated(list: &[(&str, u16)]) -> Vec<RTCRtpHeaderExtensionParameters> {
        list.iter()
            .map(|&(uri, id)| RTCRtpHeaderExtensionParameters {
                uri: uri.to_owned(),
                id,
                encrypted: false,
            })
            .collect()
    }

    fn packets(n: usize) -> Vec<rtc::rtp::Packet> {
        (0..n)
            .map(|i| rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    sequence_number: i as u16,
                    ..Default::default()
                },
                payload: Bytes::from_static(&[1, 2, 3]),
            })
            .collect()
    }

    #[test]
    fn ntp_time_counts_from_1900_with_a_binary_fraction() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        let ntp = ntp(t);
        assert_eq!(ntp >> 32, 1_700_000_000 + NTP_UNIX_OFFSET_S);
        assert_eq!(ntp & 0xFFFF_FFFF, 1 << 31, "half a second");
    }

    #[test]
    fn every_packet_asks_for_no_delay_and_the_first_carries_the_capture_time() {
        let ids = FrameExtensions::negotiated(&negotiated(&[
            ("urn:ietf:params:rtp-hdrext:sdes:mid", 4),
            (PLAYOUT_DELAY_URI, 6),
            (ABS_CAPTURE_TIME_URI, 13),
        ]));
        let mut frame = packets(3);
        let captured = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        ids.apply(&mut frame, captured);
        for packet in &frame {
            assert_eq!(
                packet.header.get_extension(6).as_deref(),
                Some(&[0u8, 0, 0][..])
            );
        }
        let stamp = frame[0].header.get_extension(13).expect("capture time");
        assert_eq!(stamp.as_ref(), ntp(captured).to_be_bytes());
        assert!(frame[1].header.get_extension(13).is_none());
        assert!(frame[2].header.get_extension(13).is_none());
    }

    #[test]
    fn a_viewer_that_did_not_agree_gets_neither() {
        let ids = FrameExtensions::negotiated(&negotiated(&[(
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
            3,
        )]));
        assert_eq!(ids, FrameExtensions::default());
        let mut frame = packets(2);
        ids.apply(&mut frame, SystemTime::now());
        assert!(frame.iter().all(|p| !p.header.extension));
    }

    #[test]
    fn ids_beyond_the_one_byte_form_are_left_out() {
        let ids = FrameExtensions::negotiated(&negotiated(&[(PLAYOUT_DELAY_URI, 15)]));
        assert_eq!(ids, FrameExtensions::default());
    }
}
