//! The REMB listener, driven with RTCP packets as the chain would hand them over.

use std::time::{Duration, Instant};

use rtc::interceptor::AttributedPacket;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::shared::{TransportContext, TransportMessage};

use super::*;

fn rtcp(now: Instant, packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
    TransportMessage {
        now,
        transport: TransportContext::default(),
        message: AttributedPacket::new(Packet::Rtcp(packets)),
    }
}

fn remb(bitrate: f32) -> Box<dyn rtc::rtcp::Packet> {
    Box::new(ReceiverEstimatedMaximumBitrate {
        sender_ssrc: 1,
        bitrate,
        ssrcs: vec![2],
    })
}

#[test]
fn a_viewer_without_twcc_gets_its_own_figure_and_every_packet_passes_on() {
    let estimate = LinkEstimate::default();
    let mut listener = RembListener::new(estimate.clone());
    let t0 = Instant::now();
    assert_eq!(estimate.bits_per_second_at(t0), None);

    let pli: Box<dyn rtc::rtcp::Packet> = Box::new(PictureLossIndication {
        sender_ssrc: 1,
        media_ssrc: 2,
    });
    listener
        .handle_read(rtcp(t0, vec![pli, remb(400_000.0)]))
        .unwrap();
    assert_eq!(estimate.bits_per_second_at(t0), Some(400_000.0));
    let passed = listener.poll_read().expect("passed on");
    let Packet::Rtcp(packets) = &passed.message.packet else {
        panic!("not RTCP");
    };
    assert_eq!(packets.len(), 2, "the keyframe request is still there");

    // A newer figure replaces it; one that stopped coming no longer counts after 5 s.
    listener
        .handle_read(rtcp(t0 + Duration::from_secs(1), vec![remb(900_000.0)]))
        .unwrap();
    assert_eq!(
        estimate.bits_per_second_at(t0 + Duration::from_secs(2)),
        Some(900_000.0)
    );
    assert_eq!(
        estimate.bits_per_second_at(t0 + Duration::from_secs(7)),
        None
    );
}

#[test]
fn the_viewers_figure_lowers_ours_and_never_raises_it() {
    let estimate = LinkEstimate::default();
    let mut listener = RembListener::new(estimate.clone());
    let t0 = Instant::now();
    estimate.publish(2_000_000.0);
    listener
        .handle_read(rtcp(t0, vec![remb(600_000.0)]))
        .unwrap();
    assert_eq!(estimate.bits_per_second_at(t0), Some(600_000.0));
    listener
        .handle_read(rtcp(t0, vec![remb(5_000_000.0)]))
        .unwrap();
    assert_eq!(estimate.bits_per_second_at(t0), Some(2_000_000.0));
    // What the encoder follows is lowered with it.
    listener
        .handle_read(rtcp(t0, vec![remb(600_000.0)]))
        .unwrap();
    assert_eq!(estimate.for_media_bps(t0), Some(600_000.0));
}

#[test]
fn a_hostile_figure_is_bounded_or_ignored() {
    let estimate = LinkEstimate::default();
    let mut listener = RembListener::new(estimate.clone());
    let t0 = Instant::now();
    for nonsense in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        listener
            .handle_read(rtcp(t0, vec![remb(nonsense)]))
            .unwrap();
        assert_eq!(
            estimate.bits_per_second_at(t0),
            None,
            "{nonsense} is no figure"
        );
        assert!(
            listener.poll_read().is_some(),
            "but the packet still passes on"
        );
    }
    listener.handle_read(rtcp(t0, vec![remb(0.0)])).unwrap();
    assert_eq!(estimate.bits_per_second_at(t0), Some(LOWEST_BPS));
    listener.handle_read(rtcp(t0, vec![remb(-5.0)])).unwrap();
    assert_eq!(estimate.bits_per_second_at(t0), Some(LOWEST_BPS));
    listener
        .handle_read(rtcp(t0, vec![remb(f32::MAX)]))
        .unwrap();
    assert_eq!(estimate.bits_per_second_at(t0), Some(HIGHEST_BPS));
}
