//! What devices say back about sessions: routed to the viewer that owns the session, if the
//! session expects it. (Control replies go to the caller waiting for them, in `control.rs`.)

use ferrocam_protocol::viewer::ServerMsg;
use ferrocam_protocol::{DeviceId, FromDevice, Party, Reply};

use super::super::{Offerer, Relay};
use super::{MAX_DEVICE_CANDIDATES, Session, Stage, Turn};

impl Relay {
    /// Routes a reply that arrived on `device`'s reply topic to the viewer that owns the
    /// session. The link has checked that the device signed it for that topic; an envelope
    /// claiming to be from another device is dropped.
    pub fn on_reply(&self, topic_device: &DeviceId, envelope: Reply) {
        let Reply {
            session,
            device,
            from,
            body,
            ..
        } = envelope;
        if device != *topic_device || from != Party::Device(device.clone()) {
            tracing::warn!(%session, %topic_device, claimed = %device, "reply claims another device; dropped");
            return;
        }
        let mut state = self.lock();
        if let FromDevice::ControlReply { message, sealed } = body {
            return self.control_reply(&state, &device, &session, message, sealed);
        }
        let Some(entry) = state.sessions.get_mut(&session) else {
            tracing::debug!(%session, "reply for an unknown session");
            return;
        };
        if entry.device != device {
            tracing::warn!(%session, %device, "reply from a device that does not own the session");
            return;
        }
        if entry.stage == Stage::Resuming
            && !matches!(
                body,
                FromDevice::Attached | FromDevice::Error { .. } | FromDevice::HangUp { .. }
            )
        {
            tracing::debug!(%session, "nothing but the device's verdict reaches a resuming viewer");
            return;
        }
        // The device's SDP, once: its answer when the viewer offered, its offer after an invite.
        let sdp_expected = |offerer| entry.offerer == offerer && entry.awaits(Turn::Device);
        let (msg, ends) = match body {
            FromDevice::Answer { sdp, .. } if sdp_expected(Offerer::Viewer) => {
                let session = session.clone();
                (ServerMsg::Answer { session, sdp }, false)
            }
            FromDevice::Offer { sdp, .. } if sdp_expected(Offerer::Device) => {
                let session = session.clone();
                (ServerMsg::Offer { session, sdp }, false)
            }
            FromDevice::Candidate { .. } if entry.candidates >= MAX_DEVICE_CANDIDATES => {
                tracing::debug!(%session, "device candidate over the limit; dropped");
                return;
            }
            FromDevice::Candidate { candidate } => (
                ServerMsg::Candidate {
                    session: session.clone(),
                    candidate,
                },
                false,
            ),
            FromDevice::EndOfCandidates => (
                ServerMsg::EndOfCandidates {
                    session: session.clone(),
                },
                false,
            ),
            FromDevice::HangUp { reason } => (
                ServerMsg::HangUp {
                    session: session.clone(),
                    reason,
                },
                true,
            ),
            FromDevice::Error { code, message } => (
                ServerMsg::Error {
                    session: Some(session.clone()),
                    code,
                    message,
                },
                true,
            ),
            FromDevice::Offer { .. } | FromDevice::Answer { .. } => {
                tracing::warn!(%session, "device sent SDP the session does not expect; ignored");
                return;
            }
            FromDevice::Attached if entry.stage == Stage::Resuming => {
                entry.stage = Stage::Established;
                let session = session.clone();
                (ServerMsg::Resumed { session }, false)
            }
            // Answered above; a second one (or one for a session not resuming) says nothing new.
            FromDevice::Attached | FromDevice::ControlReply { .. } => return,
        };
        if let Some(waited) = entry.relaying(&msg) {
            self.answer_latency.observe(waited);
        }
        let _ = entry.tx.send(msg);
        if ends {
            state.sessions.remove(&session);
        }
    }
}

impl Session {
    /// Books what is about to be relayed to the viewer: candidates count against the limit,
    /// and the device's SDP moves the session on (and returns how long the device took).
    fn relaying(&mut self, msg: &ServerMsg) -> Option<f64> {
        match msg {
            ServerMsg::Candidate { .. } => {
                self.candidates += 1;
                None
            }
            ServerMsg::Answer { .. } | ServerMsg::Offer { .. } => {
                self.candidates = 0;
                // The device answered the viewer's offer, or offered and now awaits the viewer.
                self.stage = match (self.offerer, self.stage) {
                    (Offerer::Viewer, _) => Stage::Established,
                    (Offerer::Device, Stage::Restarting(_)) => Stage::Restarting(Turn::Viewer),
                    (Offerer::Device, _) => Stage::Opening(Turn::Viewer),
                };
                Some(self.offered_at.elapsed().as_secs_f64())
            }
            _ => None,
        }
    }
}
