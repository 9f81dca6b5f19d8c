//! The viewer's own estimate of its path (REMB, `goog-remb`), as an extra input to ours.
//!
//! A receiver that estimates its path itself sends a Receiver Estimated Maximum Bitrate in
//! RTCP. Chromium and Firefox do so only when transport-wide congestion control is not
//! negotiated (with TWCC they leave the estimate to the sender); other receivers, some WHEP
//! players among them, send REMB and never TWCC. For those REMB is the only figure we have; for
//! the rest it can only lower ours ([`LinkEstimate::bits_per_second_at`]).
//!
//! The figure comes from the network, so it is checked and bounded before it counts: a REMB is
//! a float any peer can set to NaN, to zero or to 10^38.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use super::bandwidth::LinkEstimate;

/// Before the keyframe-request forwarder ([`super::rtcp::SLOT`]), which drops every RTCP
/// packet that is not a keyframe request.
pub const SLOT: usize = 13_000;

/// The bounds a receiver's figure is held to, in bit/s. Below the floor no picture is possible
/// anyway (the encoder's own floor is higher), and above the ceiling no camera sends.
const LOWEST_BPS: f64 = 10_000.0;
const HIGHEST_BPS: f64 = 1_000_000_000.0;

/// Reads REMB from the viewer's RTCP into the connection's [`LinkEstimate`]; passes every
/// packet on unchanged. One per connection.
pub struct RembListener {
    estimate: LinkEstimate,
    /// Whether this viewer has sent one yet (logged once: it sends one a second or more).
    heard: bool,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RembListener {
    pub fn new(estimate: LinkEstimate) -> Self {
        Self {
            estimate,
            heard: false,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

/// The figure a REMB may count with, or `None` if it is no number at all.
fn bounded(bitrate: f32) -> Option<f64> {
    let bps = f64::from(bitrate);
    bps.is_finite().then(|| bps.clamp(LOWEST_BPS, HIGHEST_BPS))
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RembListener {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            // A compound packet could carry several; the last is the newest.
            let newest = packets
                .iter()
                .rev()
                .filter_map(|p| p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>())
                .find_map(|remb| bounded(remb.bitrate));
            if let Some(bps) = newest {
                if !std::mem::replace(&mut self.heard, true) {
                    tracing::debug!(bps, "the viewer sends its own estimate (REMB)");
                }
                self.estimate.receiver_estimate(msg.now, bps);
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RembListener {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
#[path = "tests_remb.rs"]
mod tests;
