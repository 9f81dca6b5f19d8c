//! The media formats the device sends: H.264 in the profiles viewers ask for, VP8 for viewers
//! that cannot decode H.264, and Opus.
//!
//! Kept apart from the connection code so what we negotiate is readable in one place, and so
//! the answering and offering paths share one definition.

use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters};

use crate::media::VideoCodec;

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
const VP8_PAYLOAD_TYPE: u8 = 96;

/// The entries to register for `codec`, the first being the one we send.
pub(super) fn video_codecs(codec: VideoCodec) -> Vec<RTCRtpCodecParameters> {
    match codec {
        VideoCodec::H264 => h264_codecs(),
        VideoCodec::Vp8 => vec![vp8_codec()],
    }
}

/// nack/pli come with the default interceptors; FIR is ours to advertise.
fn fir() -> Vec<RTCPFeedback> {
    vec![RTCPFeedback {
        typ: "ccm".to_owned(),
        parameter: "fir".to_owned(),
    }]
}

/// VP8 at 90 kHz (RFC 7741); the encoder's partitions survive single losses.
fn vp8_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: fir(),
        },
        payload_type: VP8_PAYLOAD_TYPE,
    }
}

/// One codec entry per profile in [`H264_PROFILES`], the first being the one we send.
fn h264_codecs() -> Vec<RTCRtpCodecParameters> {
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
                rtcp_feedback: fir(),
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
