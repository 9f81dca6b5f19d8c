//! A budget for retransmissions, so NACKs cannot flood a path that is already losing.
//!
//! When a link narrows under a running stream, the first packets past its queue are lost; the
//! viewer asks for them again (NACK), the crate's responder resends them, and on a path still
//! full they are lost again and asked for again. Measured on a 3 → 1 Mbit/s drop: the device
//! sent 750 packets a second, 2.5 times its video, and 80–90 % of them were lost for seconds
//! (`tests/tests/narrow_link.rs`). libwebrtc bounds retransmissions by the estimate for the same
//! reason.
//!
//! This interceptor sits between the NACK responder and the TWCC numbering, so it sees every
//! resent packet before it is numbered. A packet whose sequence number already left is a
//! retransmission; it passes only while the budget (a share of the path's estimate, refilled
//! continuously, [`BURST`] of it at most) has room. The rest are dropped: the viewer asks again
//! or requests a keyframe, which costs less than a flooded link.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

use super::bandwidth::LinkEstimate;

/// Slot between the NACK responder (4_000) and the TWCC sender (2_000), where the crate's
/// pacer would go (we have none: see `interceptors.rs`).
pub const SLOT: usize = 3_000;
/// Retransmissions may use this share of the path's estimate.
const SHARE: f64 = 0.25;
/// The most the budget holds: this long at the budget's rate.
const BURST: Duration = Duration::from_millis(200);
/// Sequence numbers remembered per stream to tell a retransmission from a first send: four
/// times the NACK responder's buffer, so anything it can resend is still known.
const REMEMBERED: usize = 1024;

pub struct RetransmissionBudget {
    estimate: LinkEstimate,
    sent: HashMap<u32, Sent>,
    budget_bits: f64,
    refilled: Option<Instant>,
    write_queue: VecDeque<TaggedPacket>,
    read_queue: VecDeque<TaggedPacket>,
}

/// The sequence numbers one stream has sent, oldest first.
#[derive(Default)]
struct Sent {
    order: VecDeque<u16>,
    known: std::collections::HashSet<u16>,
}

impl Sent {
    /// Records `seq`; whether it had been sent before.
    fn again(&mut self, seq: u16) -> bool {
        if self.known.contains(&seq) {
            return true;
        }
        if self.order.len() == REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.known.remove(&oldest);
        }
        self.order.push_back(seq);
        self.known.insert(seq);
        false
    }
}

impl RetransmissionBudget {
    pub fn new(estimate: LinkEstimate) -> Self {
        Self {
            estimate,
            sent: HashMap::new(),
            budget_bits: 0.0,
            refilled: None,
            write_queue: VecDeque::new(),
            read_queue: VecDeque::new(),
        }
    }

    /// Whether a retransmission of `bits` may leave at `now`. Before the first estimate there
    /// is no budget to speak of: everything passes.
    fn affords(&mut self, now: Instant, bits: f64) -> bool {
        let Some(bps) = self.estimate.bits_per_second_at(now) else {
            return true;
        };
        let rate = bps * SHARE;
        let elapsed = self
            .refilled
            .replace(now)
            .map_or(BURST, |at| now.saturating_duration_since(at));
        self.budget_bits =
            (self.budget_bits + rate * elapsed.as_secs_f64()).min(rate * BURST.as_secs_f64());
        if self.budget_bits >= bits {
            self.budget_bits -= bits;
            true
        } else {
            false
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RetransmissionBudget {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(rtp) = &msg.message.packet {
            let again = self
                .sent
                .entry(rtp.header.ssrc)
                .or_default()
                .again(rtp.header.sequence_number);
            let bits = (rtp.marshal_size() * 8) as f64;
            if again {
                if !self.affords(msg.now, bits) {
                    tracing::trace!(
                        seq = rtp.header.sequence_number,
                        "retransmission over budget"
                    );
                    return Ok(());
                }
                self.estimate.resent(msg.now, bits);
            }
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RetransmissionBudget {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.sent.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sends_are_told_from_resends_within_a_bounded_memory() {
        let mut sent = Sent::default();
        assert!(!sent.again(7));
        assert!(sent.again(7));
        for seq in 8..8 + REMEMBERED as u16 {
            sent.again(seq);
        }
        assert_eq!(sent.order.len(), REMEMBERED);
        assert!(!sent.again(7), "forgotten once a thousand others were sent");
    }

    #[test]
    fn resends_get_a_share_of_the_estimate_and_no_more() {
        let estimate = LinkEstimate::default();
        let mut budget = RetransmissionBudget::new(estimate.clone());
        let t0 = Instant::now();
        assert!(budget.affords(t0, 1e9), "no estimate yet: no limit");
        estimate.publish(1_000_000.0);
        // 250 kbit/s for 200 ms at most: 50 kbit, about five 1,200-byte packets.
        let packet = 9_600.0;
        let passed = (0..20).filter(|_| budget.affords(t0, packet)).count();
        assert_eq!(passed, 5);
        // 100 ms later another 25 kbit has come in.
        let later = t0 + Duration::from_millis(100);
        let passed = (0..20).filter(|_| budget.affords(later, packet)).count();
        assert_eq!(passed, 2);
    }

    #[test]
    fn what_was_resent_comes_off_the_media_share_for_a_second() {
        let estimate = LinkEstimate::default();
        let t0 = Instant::now();
        assert_eq!(estimate.for_media_bps(t0), None);
        estimate.publish(1_000_000.0);
        assert_eq!(estimate.for_media_bps(t0), Some(1_000_000.0));
        // 200 kbit resent within the last second: 800 kbit/s are left for new media.
        for ms in [0, 300, 600] {
            estimate.resent(t0 + Duration::from_millis(ms), 200_000.0 / 3.0);
        }
        let media = estimate
            .for_media_bps(t0 + Duration::from_millis(700))
            .unwrap();
        assert!((media - 800_000.0).abs() < 1.0, "{media}");
        // A second after the last resend, all of it is the media's again.
        let clear = estimate.for_media_bps(t0 + Duration::from_millis(1700));
        assert_eq!(clear, Some(1_000_000.0));
    }
}
