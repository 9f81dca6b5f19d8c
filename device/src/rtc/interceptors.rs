//! The RTCP side of a send-only peer: which feedback we advertise and the interceptor chain
//! that acts on it (retransmissions, reports, keyframe requests).
//!
//! Separate from the codecs because it is tuned for cost (the NACK buffer is most of what a
//! viewer costs in memory) and changes for different reasons.

use rtc::interceptor::Slot;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RtpCodecKind};
use webrtc::peer_connection::{MediaEngine, Registry, configure_rtcp_reports};

use super::rtcp::{self, KeyframeRequestForwarder};

/// Packets kept per stream for retransmission on NACK: about a second of 720p at 2 Mbit/s, far
/// longer than a NACK takes to arrive, and a quarter of the crate's default of 1024, which was
/// most of what a viewer cost in memory (measured: 1.37 MiB per viewer with 1024).
const NACK_BUFFER_PACKETS: u16 = 256;

/// The interceptor chain of a sending-only peer: NACK responder (we retransmit, we never ask),
/// sender/receiver reports, and the keyframe-request forwarder. The crate's default set adds a
/// NACK generator and TWCC receiver a device that receives no media has no use for.
pub(super) fn interceptors(media_engine: &mut MediaEngine) -> Registry {
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    let registry = Registry::new().with(
        Slot::NackResponder,
        rtc::interceptor::NackResponderBuilder::new()
            .with_size(NACK_BUFFER_PACKETS)
            .build(),
    );
    configure_rtcp_reports(registry)
        .with(Slot::from(rtcp::SLOT), KeyframeRequestForwarder::default())
}
