//! Which requests from the broker the device believes: only those a gateway signed.
//!
//! Anyone who can publish on the device's `signal` topic (a broker without ACLs, a leaked
//! gateway broker password) could otherwise hang up its viewers, inject ICE candidates or ask
//! for ICE restarts; grants only ever covered the requests that open something. Now every
//! request must carry the gateway's signature over the topic, the time and the message
//! (`ferrocam_protocol::signed`), checked with the grant key the device already holds. A grant
//! inside a signed request is thereby bound to that request's SDP or control command.
//!
//! A signed request is still a request someone could copy off the broker and send again, so the
//! gate also refuses stale ones (more than [`FRESH_FOR_MS`] from the device's clock: the
//! device needs NTP, as it does for grants) and remembers every signature it accepted for as
//! long as the request would be fresh. That memory starts empty with the process, so requests
//! signed before the process started (give or take [`BEFORE_START_MS`] of clock difference)
//! are refused too: a restart does not reopen the window for what was captured before it.

use std::collections::{HashSet, VecDeque};

use ferrocam_protocol::signed::{FRESH_FOR_MS, SignedError, Verifier};

/// Signatures remembered at most. A gateway sends a few dozen requests per session, so this
/// covers hundreds of sessions within one freshness window; past it the oldest is forgotten
/// first (it is about to go stale anyway).
const REMEMBERED: usize = 16_384;

/// How long before this process started a request may have been signed and still be taken:
/// the clock difference tolerated between a gateway and a device that just booted.
pub const BEFORE_START_MS: u64 = 10_000;

/// Why a request was dropped (the label of `ferrocam_device_requests_dropped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Signature(SignedError),
    /// Signed, but too far from now.
    Stale,
    /// Signed and fresh, but accepted before.
    Replayed,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Signature(e) => e.reason(),
            Self::Stale => "stale",
            Self::Replayed => "replayed",
        }
    }
}

/// Every reason, so each series exists from the start.
pub const REFUSAL_REASONS: [&str; 5] = [
    "unsigned",
    "bad_signature",
    "too_large",
    "stale",
    "replayed",
];

/// The gate in front of the agent.
pub struct RequestGate {
    verifier: Verifier,
    topic: String,
    seen: HashSet<[u8; 64]>,
    /// How many signatures to remember at most ([`REMEMBERED`] but in tests).
    capacity: usize,
    /// Requests signed before this (Unix ms) are refused as stale.
    not_before_ms: u64,
    /// Accepted signatures in arrival order, with when they go stale.
    order: VecDeque<(u64, [u8; 64])>,
}

impl RequestGate {
    /// A gate for requests on `topic` (the device's signal topic), signed with `verifier`'s key.
    /// `not_before_ms`: the process's start, less [`BEFORE_START_MS`].
    pub fn new(verifier: Verifier, topic: String, not_before_ms: u64) -> Self {
        Self {
            verifier,
            topic,
            seen: HashSet::new(),
            capacity: REMEMBERED,
            not_before_ms,
            order: VecDeque::new(),
        }
    }

    /// The request inside `payload` if a gateway signed it for this topic, recently, and it was
    /// not seen before.
    pub fn admit<'a>(&mut self, payload: &'a [u8], now_ms: u64) -> Result<&'a [u8], Refusal> {
        let opened = self
            .verifier
            .open(&self.topic, payload)
            .map_err(Refusal::Signature)?;
        if !opened.is_fresh(now_ms) || opened.at_ms < self.not_before_ms {
            return Err(Refusal::Stale);
        }
        self.forget_stale(now_ms);
        if !self.seen.insert(opened.signature) {
            return Err(Refusal::Replayed);
        }
        self.order
            .push_back((opened.at_ms.saturating_add(FRESH_FOR_MS), opened.signature));
        if self.order.len() > self.capacity
            && let Some((_, oldest)) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        Ok(opened.msg)
    }

    /// Forgets signatures whose requests can no longer pass the freshness check.
    fn forget_stale(&mut self, now_ms: u64) {
        while let Some((stale_after, signature)) = self.order.front().copied() {
            if stale_after >= now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&signature);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocam_protocol::signed::{Signer, generate_seed};

    const TOPIC: &str = "ferrocam/v1/devices/cam/signal";
    const NOW: u64 = 1_800_000_000_000;

    fn gateway() -> (Signer, RequestGate) {
        let signer = Signer::from_seed_base64(&generate_seed()).unwrap();
        let verifier = Verifier::from_base64(&signer.public_key()).unwrap();
        (
            signer,
            RequestGate::new(verifier, TOPIC.to_owned(), NOW - 2 * FRESH_FOR_MS),
        )
    }

    #[test]
    fn a_signed_fresh_request_passes_once() {
        let (gw, mut gate) = gateway();
        let request = gw.seal(TOPIC, br#"{"type":"hang_up"}"#, NOW);
        assert_eq!(
            gate.admit(&request, NOW + 5).unwrap(),
            br#"{"type":"hang_up"}"#
        );
        assert_eq!(gate.admit(&request, NOW + 6), Err(Refusal::Replayed));
    }

    #[test]
    fn unsigned_foreign_stale_and_misrouted_requests_are_refused() {
        let (gw, mut gate) = gateway();
        let (stranger, _) = gateway();
        let msg = br#"{"type":"hang_up"}"#;
        assert_eq!(
            gate.admit(msg, NOW),
            Err(Refusal::Signature(SignedError::Malformed))
        );
        assert_eq!(
            gate.admit(&stranger.seal(TOPIC, msg, NOW), NOW),
            Err(Refusal::Signature(SignedError::BadSignature))
        );
        // Signed for another device's topic.
        let elsewhere = gw.seal("ferrocam/v1/devices/other/signal", msg, NOW);
        assert_eq!(
            gate.admit(&elsewhere, NOW),
            Err(Refusal::Signature(SignedError::BadSignature))
        );
        let old = gw.seal(TOPIC, msg, NOW - FRESH_FOR_MS - 1);
        assert_eq!(gate.admit(&old, NOW), Err(Refusal::Stale));
        let future = gw.seal(TOPIC, msg, NOW + FRESH_FOR_MS + 1);
        assert_eq!(gate.admit(&future, NOW), Err(Refusal::Stale));
    }

    #[test]
    fn what_was_signed_before_the_process_started_is_refused() {
        let (gw, _) = gateway();
        let verifier = Verifier::from_base64(&gw.public_key()).unwrap();
        // Started at NOW: a request captured a minute earlier, though still "fresh", is not
        // taken again by the restarted device; one from just now is.
        let mut gate = RequestGate::new(verifier, TOPIC.to_owned(), NOW - BEFORE_START_MS);
        let captured = gw.seal(TOPIC, b"{}", NOW - 60_000);
        assert_eq!(gate.admit(&captured, NOW + 1000), Err(Refusal::Stale));
        let current = gw.seal(TOPIC, b"{}", NOW + 900);
        assert!(gate.admit(&current, NOW + 1000).is_ok());
    }

    #[test]
    fn memory_is_bounded_and_forgets_only_what_went_stale() {
        let (gw, mut gate) = gateway();
        let first = gw.seal(TOPIC, b"{}", NOW);
        gate.admit(&first, NOW).unwrap();
        for i in 0..100u64 {
            let later = gw.seal(TOPIC, format!("{{\"i\":{i}}}").as_bytes(), NOW + 1000);
            gate.admit(&later, NOW + 1000).unwrap();
        }
        assert_eq!(gate.order.len(), 101);
        // Within the window the first is remembered; once it would be stale it is forgotten
        // (and refused as stale anyway).
        assert_eq!(gate.admit(&first, NOW + 2000), Err(Refusal::Replayed));
        let much_later = NOW + FRESH_FOR_MS + 500;
        let next = gw.seal(TOPIC, b"{\"n\":1}", much_later);
        gate.admit(&next, much_later).unwrap();
        assert_eq!(gate.order.len(), 101);
        assert!(!gate.seen.contains(&gw_signature(&first)));
        assert_eq!(gate.admit(&first, much_later), Err(Refusal::Stale));
        // The count bound.
        gate.capacity = 150;
        for i in 0..60u64 {
            let m = gw.seal(TOPIC, format!("{{\"j\":{i}}}").as_bytes(), much_later);
            gate.admit(&m, much_later).unwrap();
        }
        assert_eq!(gate.order.len(), 150);
        assert_eq!(gate.seen.len(), 150);
    }

    fn gw_signature(sealed: &[u8]) -> [u8; 64] {
        let json: serde_json::Value = serde_json::from_slice(sealed).unwrap();
        let sig = json["sig"].as_str().unwrap();
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        bytes.try_into().unwrap()
    }
}
