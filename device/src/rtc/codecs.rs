//! The media formats the device sends: H.264 in the profiles viewers ask for, and Opus.
//!
//! Kept apart from the connection code so what we negotiate is readable in one place, and so
//! the answering and offering paths share one definition.

use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters};

/// The H.264 formats we answer, all packetization-mode 1. The stream itself is constrained
/// baseline, which every baseline, main and high decoder plays, so offers that list only a main
/// or high profile are answered too. Payload types are ours; the offer's numbers win.
const H264_PROFILES: [(&str, u8); 4] = [
    ("42e01f", 102), // constrained baseline 3.1
    ("42001f", 104), // baseline 3.1
    ("4d001f", 106), // main 3.1
    ("64001f", 108), // high 3.1
];
const OPUS_PAYLOAD_TYPE: u8 = 111;

/// One codec entry per profile in [`H264_PROFILES`], the first being the one we send.
pub(super) fn h264_codecs() -> Vec<RTCRtpCodecParameters> {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    H264_PROFILES
        .iter()
        .map(|(profile, payload_type)| RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: format!(
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
                ),
                // nack/pli come with the default interceptors; FIR is ours to advertise.
                rtcp_feedback: vec![feedback("ccm", "fir")],
            },
            payload_type: *payload_type,
        })
        .collect()
}

/// Stereo Opus at 48 kHz with in-band FEC.
pub(super) fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PAYLOAD_TYPE,
    }
}
