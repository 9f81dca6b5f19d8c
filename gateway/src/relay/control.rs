//! Control requests the relay carries for REST clients and `ctl`: signed like sessions, and
//! answered by one or more `control_reply` messages that reach only the waiting request.

use std::sync::Arc;

use ferrocam_protocol::control::Role;
use ferrocam_protocol::{DeviceId, SessionId, ToDevice};
use tokio::sync::mpsc;

use super::{Refusal, Relay, State};

/// The replies to one relayed control request. Dropping it forgets the request, also when the
/// HTTP client goes away while its handler waits (the handler is dropped at that await), so
/// no entry outlives its caller.
pub struct ControlReplies {
    rx: mpsc::UnboundedReceiver<String>,
    relay: Arc<Relay>,
    id: SessionId,
}

impl ControlReplies {
    /// The next message from the device; `None` once the relay has dropped the request.
    pub async fn recv(&mut self) -> Option<String> {
        self.rx.recv().await
    }

    /// The next message if one is there already.
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Option<String> {
        self.rx.try_recv().ok()
    }
}

impl Drop for ControlReplies {
    fn drop(&mut self) {
        self.relay.control_done(&self.id);
    }
}

impl Relay {
    /// Relays a control-protocol request to a device; the device's reply messages arrive on the
    /// returned [`ControlReplies`], and dropping it forgets the request.
    pub fn control(
        self: &Arc<Self>,
        device: DeviceId,
        role: Role,
        user: &str,
        request: String,
        id: SessionId,
    ) -> Result<ControlReplies, Refusal> {
        let mut state = self.lock();
        Self::check_online(&state, &device)?;
        Self::take_control_token(&mut state, &device)?;
        let (tx, rx) = mpsc::unbounded_channel();
        state.controls.insert(id.clone(), (device.clone(), tx));
        drop(state);
        let grant = Some(
            self.signer
                .sign(&device, &id, role.into(), user, Vec::new(), None),
        );
        let reply_to = self.reply_topic(&device);
        let replies = ControlReplies {
            rx,
            relay: Arc::clone(self),
            id: id.clone(),
        };
        // A refusal drops `replies`, whose guard forgets the request.
        self.send(
            self.envelope(
                device,
                id,
                ToDevice::Control {
                    role,
                    request,
                    grant,
                },
            )
            .reply_to(reply_to),
        )?;
        Ok(replies)
    }

    /// Forgets a relayed control request (when its [`ControlReplies`] is dropped).
    fn control_done(&self, id: &SessionId) {
        self.lock().controls.remove(id);
    }

    /// Hands one `control_reply` to the request waiting for it, if `device` is the one asked.
    /// A reply to a relayed control request: opened if the device sealed it to the grant key
    /// (snapshots are), then handed to the caller that waits for it.
    pub(super) fn control_reply(
        &self,
        state: &State,
        device: &DeviceId,
        id: &SessionId,
        message: String,
        sealed: bool,
    ) {
        let message = if sealed {
            match self.opener.open(&message).map(String::from_utf8) {
                Ok(Ok(message)) => message,
                _ => {
                    tracing::warn!(%id, %device, "a sealed control reply did not open; dropped");
                    return;
                }
            }
        } else {
            message
        };
        Self::deliver_control_reply(state, device, id, message);
    }

    fn deliver_control_reply(state: &State, device: &DeviceId, id: &SessionId, message: String) {
        match state.controls.get(id) {
            Some((owner, tx)) if owner == device => {
                let _ = tx.send(message);
            }
            _ => tracing::debug!(%id, "control reply nobody waits for"),
        }
    }
}
