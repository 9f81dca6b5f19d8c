//! The relay: which devices exist, which viewer owns which session, and translation between the
//! browser's WebSocket messages and the device's MQTT envelopes.
//!
//! It does no I/O itself: requests for the broker go out on a channel ([`Publish`]), messages
//! for viewers on each viewer's channel. That keeps it testable without sockets or a broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrocam_protocol::viewer::ServerMsg;
use ferrocam_protocol::{
    DeviceId, DeviceStatus, Envelope, ErrorCode, InstanceId, SessionId, Signal,
    topics,
};
use tokio::sync::{mpsc, watch};

/// One MQTT publish requested by the relay.
#[derive(Debug)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Identifies one viewer connection (one WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewerId(u64);

/// Channel to one viewer.
pub type ViewerTx = mpsc::UnboundedSender<ServerMsg>;

/// A request the relay refuses, with the code the viewer sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

struct Session {
    device: DeviceId,
    viewer: ViewerId,
    tx: ViewerTx,
    answered: bool,
}

#[derive(Default)]
struct State {
    devices: BTreeMap<DeviceId, DeviceStatus>,
    sessions: HashMap<SessionId, Session>,
}

/// Shared relay state of one gateway instance.
pub struct Relay {
    instance: InstanceId,
    reply_topic: String,
    broker: mpsc::UnboundedSender<Publish>,
    state: Mutex<State>,
    devices_tx: watch::Sender<Vec<DeviceStatus>>,
    next_viewer: AtomicU64,
}

impl Relay {
    pub fn new(instance: InstanceId, broker: mpsc::UnboundedSender<Publish>) -> Self {
        Self {
            reply_topic: topics::gateway_signal(&instance),
            instance,
            broker,
            state: Mutex::default(),
            devices_tx: watch::Sender::new(Vec::new()),
            next_viewer: AtomicU64::new(1),
        }
    }

    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// The topic devices send this instance's replies to.
    pub fn reply_topic(&self) -> &str {
        &self.reply_topic
    }

    /// Allocates an id for a new viewer connection.
    pub fn new_viewer(&self) -> ViewerId {
        ViewerId(self.next_viewer.fetch_add(1, Ordering::Relaxed))
    }

    /// The current device list, and a way to wait for changes.
    pub fn watch_devices(&self) -> watch::Receiver<Vec<DeviceStatus>> {
        self.devices_tx.subscribe()
    }

    /// One device's status, if it was ever seen.
    pub fn device(&self, id: &DeviceId) -> Option<DeviceStatus> {
        self.lock().devices.get(id).cloned()
    }

    /// Records a status update, ignoring ones older than what is known.
    pub fn on_status(&self, status: DeviceStatus) {
        let mut state = self.lock();
        let newer = state
            .devices
            .get(&status.device)
            .is_none_or(|current| status.supersedes(current));
        if !newer {
            tracing::debug!(device = %status.device, "ignoring a stale status");
            return;
        }
        tracing::info!(device = %status.device, online = status.online, "device status");
        state.devices.insert(status.device.clone(), status);
        self.publish_devices(&state);
    }

    /// Drops a device whose retained status was cleared.
    pub fn forget_device(&self, id: &DeviceId) {
        let mut state = self.lock();
        if state.devices.remove(id).is_some() {
            self.publish_devices(&state);
        }
    }

    /// Starts a session: mints its id and sends the offer to the device.
    pub fn offer(
        &self,
        viewer: ViewerId,
        tx: &ViewerTx,
        device: DeviceId,
        sdp: String,
        session: SessionId,
    ) -> Result<SessionId, Refusal> {
        let mut state = self.lock();
        match state.devices.get(&device) {
            Some(status) if status.online => {}
            Some(_) => {
                return Err(Refusal {
                    code: ErrorCode::UnknownDevice,
                    message: format!("device {device} is offline"),
                });
            }
            None => {
                return Err(Refusal {
                    code: ErrorCode::UnknownDevice,
                    message: format!("no device called {device}"),
                });
            }
        }
        state.sessions.insert(
            session.clone(),
            Session {
                device: device.clone(),
                viewer,
                tx: tx.clone(),
                answered: false,
            },
        );
        drop(state);
        self.send(
            Envelope::new(device, session.clone(), Signal::Offer { sdp })
                .reply_to(self.reply_topic.clone()),
        );
        Ok(session)
    }

    /// Forwards a viewer's message for one of its own sessions to the device.
    pub fn forward(
        &self,
        viewer: ViewerId,
        session: &SessionId,
        body: Signal,
    ) -> Result<(), Refusal> {
        let device = {
            let mut state = self.lock();
            let Some(entry) = state.sessions.get(session).filter(|s| s.viewer == viewer) else {
                // Same answer for "no such session" and "someone else's session": a viewer
                // cannot probe for other viewers' session ids.
                return Err(Refusal {
                    code: ErrorCode::UnknownSession,
                    message: "no such session".to_owned(),
                });
            };
            let device = entry.device.clone();
            if matches!(body, Signal::HangUp { .. }) {
                state.sessions.remove(session);
            }
            device
        };
        self.send(Envelope::new(device, session.clone(), body));
        Ok(())
    }

    /// Routes a device's reply to the viewer that owns the session.
    pub fn on_reply(&self, envelope: Envelope) {
        let Envelope {
            session,
            device,
            body,
            ..
        } = envelope;
        let mut state = self.lock();
        let Some(entry) = state.sessions.get_mut(&session) else {
            tracing::debug!(%session, "reply for an unknown session");
            return;
        };
        if entry.device != device {
            tracing::warn!(%session, %device, "reply from a device that does not own the session");
            return;
        }
        let (msg, ends) = match body {
            Signal::Answer { sdp } => {
                entry.answered = true;
                (ServerMsg::Answer { session: session.clone(), sdp }, false)
            }
            Signal::Candidate { candidate } => (
                ServerMsg::Candidate { session: session.clone(), candidate },
                false,
            ),
            Signal::EndOfCandidates => (ServerMsg::EndOfCandidates { session: session.clone() }, false),
            Signal::HangUp { reason } => (ServerMsg::HangUp { session: session.clone(), reason }, true),
            Signal::Error { code, message } => (
                ServerMsg::Error { session: Some(session.clone()), code, message },
                true,
            ),
            Signal::Offer { .. } => {
                tracing::warn!(%session, "device sent an offer; ignored");
                return;
            }
        };
        let _ = entry.tx.send(msg);
        if ends {
            state.sessions.remove(&session);
        }
    }

    /// Ends a session the device never answered.
    pub fn expire_unanswered(&self, session: &SessionId) {
        let mut state = self.lock();
        if state.sessions.get(session).is_some_and(|s| !s.answered)
            && let Some(entry) = state.sessions.remove(session)
        {
            let _ = entry.tx.send(ServerMsg::Error {
                session: Some(session.clone()),
                code: ErrorCode::Timeout,
                message: format!("device {} did not answer", entry.device),
            });
            drop(state);
            self.send(Envelope::new(
                entry.device,
                session.clone(),
                Signal::HangUp { reason: "no answer in time".into() },
            ));
        }
    }

    /// Hangs up every session of a viewer that went away.
    pub fn viewer_gone(&self, viewer: ViewerId) {
        let gone: Vec<(SessionId, DeviceId)> = {
            let mut state = self.lock();
            let ids: Vec<SessionId> = state
                .sessions
                .iter()
                .filter(|(_, s)| s.viewer == viewer)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| state.sessions.remove(&id).map(|s| (id, s.device)))
                .collect()
        };
        for (session, device) in gone {
            self.send(Envelope::new(
                device,
                session,
                Signal::HangUp { reason: "viewer left".into() },
            ));
        }
    }

    /// Number of sessions in flight or streaming.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    fn send(&self, envelope: Envelope) {
        let _ = self.broker.send(Publish {
            topic: topics::device_signal(&envelope.device),
            payload: envelope.encode(),
        });
    }

    fn publish_devices(&self, state: &State) {
        self.devices_tx
            .send_replace(state.devices.values().cloned().collect());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("relay state lock")
    }
}
