//! The RTCP side of a send-only peer: which feedback we advertise and the interceptor chain
//! that acts on it (retransmissions, reports, keyframe requests, congestion control).
//!
//! Separate from the codecs because it is tuned for cost (the NACK buffer is most of what a
//! viewer costs in memory) and changes for different reasons.

use anyhow::Context;
use rtc::interceptor::{CongestionControlBuilder, Slot, TwccSenderBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use webrtc::peer_connection::{MediaEngine, Registry, configure_rtcp_reports};

use super::bandwidth::{LinkEstimate, LinkEstimator, RateBounds};
use super::remb::{self, RembListener};
use super::retransmissions::{self, RetransmissionBudget};
use super::rtcp::{self, KeyframeRequestForwarder};

/// Packets kept per stream for retransmission on NACK: about a second of 720p at 2 Mbit/s, far
/// longer than a NACK takes to arrive, and a quarter of the crate's default of 1024, which was
/// most of what a viewer cost in memory (measured: 1.37 MiB per viewer with 1024).
const NACK_BUFFER_PACKETS: u16 = 256;

/// The interceptor chain of a sending-only peer:
/// - NACK responder (we retransmit, we never ask);
/// - sender/receiver reports;
/// - the keyframe-request forwarder;
/// - with `congestion`, transport-wide congestion control: every packet numbered (TWCC) and the
///   viewer's feedback turned into an estimate of its path ([`LinkEstimator`]), which comes
///   back as the [`LinkEstimate`] for the encoder to follow; the viewer's own figure (REMB),
///   where it sends one, as an extra input to it ([`RembListener`]); and a budget that keeps
///   retransmissions to a share of that estimate ([`RetransmissionBudget`]).
///
/// No pacer. The crate's paces at exactly its estimate and queues what exceeds it out of the
/// estimator's sight: when a 3 Mbit/s link dropped to 1 Mbit/s, its queue held seconds of video
/// (glass to glass 5 s, measured) while the estimator saw a quiet path. Unpaced, a frame's
/// packets leave together, the bottleneck spreads them, and the delay detector groups them
/// as one burst.
///
/// The crate's default set adds a NACK generator and TWCC receiver a device that receives no
/// media has no use for.
pub(super) fn interceptors(
    media_engine: &mut MediaEngine,
    congestion: Option<RateBounds>,
) -> anyhow::Result<(Registry, Option<LinkEstimate>)> {
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
    let registry = configure_rtcp_reports(registry)
        .with(Slot::from(rtcp::SLOT), KeyframeRequestForwarder::default());
    let Some(bounds) = congestion else {
        return Ok((registry, None));
    };

    // Both kinds: the audio shares the path, so its packets count in the estimate.
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "transport-cc".to_owned(),
                parameter: String::new(),
            },
            kind,
        );
        media_engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
                },
                kind,
                None,
            )
            .context("registering the transport-wide sequence number")?;
    }
    media_engine.register_feedback(
        RTCPFeedback {
            typ: "goog-remb".to_owned(),
            parameter: String::new(),
        },
        RtpCodecKind::Video,
    );
    let (estimator, estimate) = LinkEstimator::new(bounds);
    let registry = registry
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(estimator).build(),
        )
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
        .with(
            Slot::from(retransmissions::SLOT),
            RetransmissionBudget::new(estimate.clone()),
        )
        .with(Slot::from(remb::SLOT), RembListener::new(estimate.clone()));
    Ok((registry, Some(estimate)))
}
