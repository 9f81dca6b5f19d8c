//! The relay: which devices exist, which viewer owns which session, and translation between the
//! browser's WebSocket messages and the device's MQTT envelopes.
//!
//! It does no I/O itself: requests for the broker go out on a channel ([`Publish`]), messages
//! for viewers on each viewer's channel. That keeps it testable without sockets or a broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferrocam_protocol::control::Role;
use ferrocam_protocol::viewer::{IceServer, ServerMsg};
use ferrocam_protocol::{
    DeviceId, DeviceStatus, ErrorCode, FromDevice, InstanceId, Party, Reply, Request, SessionId,
    ToDevice, topics,
};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{mpsc, watch};

use crate::auth::grant::GrantSigner;
use crate::rate::TokenBucket;

/// Offers one device may receive through this gateway: a burst of 30, then 10 a second. Far
/// above what real viewers do; it stops a flood (from many connections or tokens at once)
/// from making the device build peer connections faster than it can.
const DEVICE_OFFER_BURST: u32 = 30;
const DEVICE_OFFERS_PER_SECOND: f64 = 10.0;

/// One MQTT publish requested by the relay.
#[derive(Debug)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Identifies one viewer connection (one WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewerId(pub u64);

/// Channel to one viewer.
pub type ViewerTx = mpsc::UnboundedSender<ServerMsg>;

/// How a session is set up.
#[derive(Debug, Clone)]
pub struct OfferOptions {
    /// Trickle candidates (WebSocket) or answer with all of them (WHEP).
    pub trickle: bool,
    /// What the session's control channel may do.
    pub role: Role,
    /// Who asked (a user or API token name), for the grant and the device's log.
    pub user: String,
    /// STUN/TURN servers for the device's side of this session (inside the signed grant).
    pub device_ice: Vec<IceServer>,
}

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
    /// Who makes the offer.
    offerer: Offerer,
    stage: Stage,
    /// When the request now awaiting the device went out (for the answer-latency histogram).
    offered_at: std::time::Instant,
}

/// Where a session's description exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Setting up: the request is out, and this side's description is awaited next.
    Opening(Turn),
    /// Both descriptions are on their way: from here on the peers need no gateway to stream.
    Established,
    /// An ICE restart of an established session: the device's new offer, then the viewer's
    /// answer. The media keeps flowing meanwhile, so the session counts as established.
    Restarting(Turn),
    /// A viewer asked to take the session over (`resume`). Nothing it says is relayed, and
    /// only the device's verdict reaches it, until the device has checked that the session is
    /// that user's and answered `attached`.
    Resuming,
}

/// Whose description a session awaits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    Device,
    Viewer,
}

impl Session {
    /// Media can flow without the gateway (a dropped viewer connection then hangs up nothing).
    fn established(&self) -> bool {
        matches!(self.stage, Stage::Established | Stage::Restarting(_))
    }

    /// The session waits for `turn`'s description.
    fn awaits(&self, turn: Turn) -> bool {
        matches!(self.stage, Stage::Opening(t) | Stage::Restarting(t) if t == turn)
    }

    /// The device has not said anything yet about the current request (`expire_unanswered`).
    fn awaits_device_reply(&self) -> bool {
        matches!(self.stage, Stage::Opening(Turn::Device) | Stage::Resuming)
    }
}

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

/// Which side of a session writes the SDP offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offerer {
    /// The viewer offers, the device answers (WHEP, `offer` on the WebSocket).
    Viewer,
    /// The device offers after an invite, the viewer answers (`watch` on the WebSocket).
    Device,
}

#[derive(Default)]
struct State {
    devices: BTreeMap<DeviceId, DeviceStatus>,
    /// Devices whose status is marked offline only because this gateway lost the broker: the
    /// next status from the device replaces it whatever its epoch.
    unconfirmed: std::collections::BTreeSet<DeviceId>,
    sessions: HashMap<SessionId, Session>,
    /// Relayed control requests awaiting replies, by request id.
    controls: HashMap<SessionId, (DeviceId, mpsc::UnboundedSender<String>)>,
    /// Per-device offer rate limits (devices that exist only: bounded by the device list).
    offer_limits: HashMap<DeviceId, TokenBucket>,
}

/// Shared relay state of one gateway instance.
pub struct Relay {
    instance: InstanceId,
    /// Subscription filter for every device's replies to this instance.
    reply_filter: String,
    /// Signs the grant on every offer and control request.
    signer: GrantSigner,
    broker: mpsc::UnboundedSender<Publish>,
    state: Mutex<State>,
    devices_tx: watch::Sender<Vec<DeviceStatus>>,
    next_viewer: AtomicU64,
    /// Whether the broker link is up, and how often it went down (for `/metrics`).
    link_up: std::sync::atomic::AtomicBool,
    link_losses: AtomicU64,
    /// Request relayed → the device's SDP relayed (its answer, or its offer after an invite),
    /// in seconds.
    pub answer_latency: Histogram,
}

impl Relay {
    pub fn new(
        instance: InstanceId,
        broker: mpsc::UnboundedSender<Publish>,
        signer: GrantSigner,
    ) -> Self {
        Self {
            reply_filter: topics::replies_to(&instance),
            signer,
            instance,
            broker,
            state: Mutex::default(),
            devices_tx: watch::Sender::new(Vec::new()),
            next_viewer: AtomicU64::new(1),
            link_up: std::sync::atomic::AtomicBool::new(false),
            link_losses: AtomicU64::new(0),
            // 1 ms to ~16 s.
            answer_latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }

    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// The subscription filter matching every device's replies to this instance.
    pub fn reply_filter(&self) -> &str {
        &self.reply_filter
    }

    /// Where `device` sends its replies to this instance.
    pub fn reply_topic(&self, device: &DeviceId) -> String {
        topics::device_reply(device, &self.instance)
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
        let newer = state.unconfirmed.remove(&status.device)
            || state
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

    /// The broker link is down: nobody can reach any device through this gateway, so every
    /// device shows offline (and offers fail fast with "offline" instead of timing out) until
    /// its status arrives again after the reconnect.
    pub fn on_link_down(&self) {
        if self.link_up.swap(false, Ordering::Relaxed) {
            self.link_losses.fetch_add(1, Ordering::Relaxed);
        }
        let mut state = self.lock();
        let mut changed = false;
        let ids: Vec<DeviceId> = state.devices.keys().cloned().collect();
        for id in ids {
            if let Some(status) = state.devices.get_mut(&id)
                && status.online
            {
                status.online = false;
                state.unconfirmed.insert(id);
                changed = true;
            }
        }
        if changed {
            tracing::warn!("broker link down; devices shown offline until they report again");
            self.publish_devices(&state);
        }
    }

    /// The broker link is (again) up.
    pub fn on_link_up(&self) {
        self.link_up.store(true, Ordering::Relaxed);
    }

    /// (link up now, times it was lost).
    pub fn link_state(&self) -> (bool, u64) {
        (
            self.link_up.load(Ordering::Relaxed),
            self.link_losses.load(Ordering::Relaxed),
        )
    }

    /// Drops a device whose retained status was cleared.
    pub fn forget_device(&self, id: &DeviceId) {
        let mut state = self.lock();
        state.offer_limits.remove(id);
        if state.devices.remove(id).is_some() {
            self.publish_devices(&state);
        }
    }

    /// Starts session `session` (minted by the caller from a CSPRNG) by sending the viewer's
    /// offer to the device. `trickle: false` asks for an answer that carries all candidates
    /// (WHEP).
    pub fn offer(
        &self,
        viewer: ViewerId,
        tx: &ViewerTx,
        device: DeviceId,
        sdp: String,
        options: OfferOptions,
        session: SessionId,
    ) -> Result<SessionId, Refusal> {
        let trickle = options.trickle;
        self.open(viewer, tx, device, options, session, |role, grant| {
            ToDevice::Offer {
                sdp,
                trickle,
                role,
                grant: Some(grant),
            }
        })
    }

    /// Starts session `session` by asking the device to offer; its offer reaches the viewer as
    /// [`ServerMsg::Offer`], the viewer's answer comes back through [`Self::forward`].
    pub fn invite(
        &self,
        viewer: ViewerId,
        tx: &ViewerTx,
        device: DeviceId,
        options: OfferOptions,
        session: SessionId,
    ) -> Result<SessionId, Refusal> {
        self.open(viewer, tx, device, options, session, |role, grant| {
            ToDevice::Invite {
                role,
                grant: Some(grant),
            }
        })
    }

    /// What `offer` and `invite` share: the device must be online and under its offer limit;
    /// the session is recorded before the request goes out, with a signed grant.
    fn open(
        &self,
        viewer: ViewerId,
        tx: &ViewerTx,
        device: DeviceId,
        options: OfferOptions,
        session: SessionId,
        request: impl FnOnce(Role, String) -> ToDevice,
    ) -> Result<SessionId, Refusal> {
        let OfferOptions {
            role,
            user,
            device_ice,
            ..
        } = options;
        let mut state = self.lock();
        Self::check_online(&state, &device)?;
        Self::take_offer_token(&mut state, &device)?;
        drop(state);
        // Signing takes tens of microseconds: not under the lock every viewer shares.
        let grant = self.signer.sign(&device, &session, role, &user, device_ice);
        let body = request(role, grant);
        let offerer = if matches!(body, ToDevice::Invite { .. }) {
            Offerer::Device
        } else {
            Offerer::Viewer
        };
        self.lock().sessions.insert(
            session.clone(),
            Session {
                device: device.clone(),
                viewer,
                tx: tx.clone(),
                offerer,
                stage: Stage::Opening(Turn::Device),
                offered_at: std::time::Instant::now(),
            },
        );
        let reply_to = self.reply_topic(&device);
        self.send(
            self.envelope(device, session.clone(), body)
                .reply_to(reply_to),
        );
        Ok(session)
    }

    /// Takes over a session this viewer started earlier, through this gateway before it
    /// restarted or through another one: the device is asked (with an attach grant naming the
    /// session and the user) to reply here. It checks that the user is the one who started the
    /// session, and answers `attached` (relayed as [`ServerMsg::Resumed`], after which the
    /// viewer's messages for the session are relayed again) or an error when it is not. Until
    /// then the session is `Resuming` and relays nothing from the viewer, so a stranger who
    /// learned a session id cannot hang it up or restart it. It counts against the device's
    /// offer limit like an offer.
    ///
    /// The device need not be known yet: a gateway that has just started may not have its
    /// retained status yet when the viewer's WebSocket is back.
    pub fn resume(
        &self,
        viewer: ViewerId,
        tx: &ViewerTx,
        device: DeviceId,
        options: OfferOptions,
        session: SessionId,
    ) -> Result<(), Refusal> {
        {
            let mut state = self.lock();
            if let Some(entry) = state.sessions.get(&session) {
                // Another live connection holds it: same answer as for no such session, so
                // nobody can probe for session ids.
                if entry.viewer != viewer || entry.device != device {
                    return Err(Refusal {
                        code: ErrorCode::UnknownSession,
                        message: "no such session".to_owned(),
                    });
                }
            }
            Self::take_offer_token(&mut state, &device)?;
            state.sessions.insert(
                session.clone(),
                Session {
                    device: device.clone(),
                    viewer,
                    tx: tx.clone(),
                    // Whoever offered, the descriptions were exchanged long ago.
                    offerer: Offerer::Device,
                    stage: Stage::Resuming,
                    offered_at: std::time::Instant::now(),
                },
            );
        }
        let grant = self.signer.sign_attach(&device, &session, &options.user);
        let reply_to = self.reply_topic(&device);
        self.send(
            self.envelope(device, session, ToDevice::Attach { grant: Some(grant) })
                .reply_to(reply_to),
        );
        Ok(())
    }

    /// One request that makes the device work (an offer, an invite, a resume) against its
    /// per-device limit.
    fn take_offer_token(state: &mut State, device: &DeviceId) -> Result<(), Refusal> {
        let allowed = state
            .offer_limits
            .entry(device.clone())
            .or_insert_with(|| TokenBucket::new(DEVICE_OFFER_BURST, DEVICE_OFFERS_PER_SECOND))
            .try_take();
        if allowed {
            return Ok(());
        }
        Err(Refusal {
            code: ErrorCode::RateLimited,
            message: format!("too many offers for device {device}; try again in a moment"),
        })
    }

    fn check_online(state: &State, device: &DeviceId) -> Result<(), Refusal> {
        match state.devices.get(device) {
            Some(status) if status.online => Ok(()),
            Some(_) => Err(Refusal {
                code: ErrorCode::UnknownDevice,
                message: format!("device {device} is offline"),
            }),
            None => Err(Refusal {
                code: ErrorCode::UnknownDevice,
                message: format!("no device called {device}"),
            }),
        }
    }

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
        let (tx, rx) = mpsc::unbounded_channel();
        state.controls.insert(id.clone(), (device.clone(), tx));
        drop(state);
        let grant = Some(self.signer.sign(&device, &id, role, user, Vec::new()));
        let reply_to = self.reply_topic(&device);
        let replies = ControlReplies {
            rx,
            relay: Arc::clone(self),
            id: id.clone(),
        };
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
        );
        Ok(replies)
    }

    /// Forgets a relayed control request (when its [`ControlReplies`] is dropped).
    fn control_done(&self, id: &SessionId) {
        self.lock().controls.remove(id);
    }

    /// Forwards a viewer's message for one of its own sessions to the device. An answer goes
    /// with a grant that binds it to the session ([`GrantSigner::sign_answer`]).
    pub fn forward(
        &self,
        viewer: ViewerId,
        session: &SessionId,
        body: ToDevice,
    ) -> Result<(), Refusal> {
        let device = {
            let mut state = self.lock();
            let owned = |s: &&Session| s.viewer == viewer && s.stage != Stage::Resuming;
            let Some(entry) = state.sessions.get(session).filter(owned) else {
                // Same answer for "no such session", "someone else's session" and "a session
                // whose takeover the device has not confirmed": a viewer cannot probe for
                // other viewers' session ids, nor act on one it only claims.
                return Err(Refusal {
                    code: ErrorCode::UnknownSession,
                    message: "no such session".to_owned(),
                });
            };
            let device = entry.device.clone();
            match body {
                ToDevice::HangUp { .. } => {
                    state.sessions.remove(session);
                }
                ToDevice::Answer { .. } => {
                    let entry = state.sessions.get_mut(session).expect("looked up above");
                    if !entry.awaits(Turn::Viewer) {
                        return Err(Refusal {
                            code: ErrorCode::BadRequest,
                            message: "this session expects no answer from the viewer".to_owned(),
                        });
                    }
                    entry.stage = Stage::Established;
                }
                ToDevice::RestartIce => {
                    let entry = state.sessions.get_mut(session).expect("looked up above");
                    // Also while one is under way: a request the device never acted on (lost, or
                    // no offer could be made) must not wedge the session.
                    if entry.offerer != Offerer::Device || !entry.established() {
                        return Err(Refusal {
                            code: ErrorCode::BadRequest,
                            message:
                                "only an established session the device offered can restart ICE"
                                    .to_owned(),
                        });
                    }
                    // The device's new offer and the viewer's answer to it are expected again.
                    entry.stage = Stage::Restarting(Turn::Device);
                    entry.offered_at = std::time::Instant::now();
                }
                _ => {}
            }
            device
        };
        let body = match body {
            ToDevice::Answer { sdp, .. } => ToDevice::Answer {
                grant: Some(self.signer.sign_answer(&device, session, &sdp)),
                sdp,
            },
            other => other,
        };
        self.send(self.envelope(device, session.clone(), body));
        Ok(())
    }

    /// Routes a reply that arrived on `device`'s reply topic to the viewer that owns the
    /// session. The topic is the device's identity (the broker's ACL lets only that device
    /// publish there); an envelope claiming to be from another device is dropped.
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
        if let FromDevice::ControlReply { message } = body {
            match state.controls.get(&session) {
                Some((owner, tx)) if *owner == device => {
                    let _ = tx.send(message);
                }
                _ => tracing::debug!(%session, "control reply nobody waits for"),
            }
            return;
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
        if matches!(msg, ServerMsg::Answer { .. } | ServerMsg::Offer { .. }) {
            // The device answered the viewer's offer, or offered and now awaits the viewer.
            entry.stage = match (entry.offerer, entry.stage) {
                (Offerer::Viewer, _) => Stage::Established,
                (Offerer::Device, Stage::Restarting(_)) => Stage::Restarting(Turn::Viewer),
                (Offerer::Device, _) => Stage::Opening(Turn::Viewer),
            };
            self.answer_latency
                .observe(entry.offered_at.elapsed().as_secs_f64());
        }
        let _ = entry.tx.send(msg);
        if ends {
            state.sessions.remove(&session);
        }
    }

    /// Ends a session the device never answered.
    pub fn expire_unanswered(&self, session: &SessionId) {
        let mut state = self.lock();
        if state
            .sessions
            .get(session)
            .is_some_and(Session::awaits_device_reply)
            && let Some(entry) = state.sessions.remove(session)
        {
            let _ = entry.tx.send(ServerMsg::Error {
                session: Some(session.clone()),
                code: ErrorCode::Timeout,
                message: format!("device {} did not reply", entry.device),
            });
            drop(state);
            self.send(self.envelope(
                entry.device,
                session.clone(),
                ToDevice::HangUp {
                    reason: "no answer in time".into(),
                },
            ));
        }
    }

    /// Forgets every session of a viewer whose connection went away, and hangs up those still
    /// being set up. A session whose descriptions were exchanged is left running: its media and
    /// control channel flow peer to peer, so a viewer that lost only its WebSocket (this gateway
    /// restarting, a proxy timing out) keeps watching and resumes signaling with
    /// [`Self::resume`]. A viewer that really left closes its peer connection, and the device
    /// ends the session on its own (control channel closed, or ICE consent lost).
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
                .filter_map(|id| state.sessions.remove(&id).map(|s| (id, s)))
                .filter(|(_, s)| !s.established())
                .map(|(id, s)| (id, s.device))
                .collect()
        };
        for (session, device) in gone {
            self.send(self.envelope(
                device,
                session,
                ToDevice::HangUp {
                    reason: "viewer left".into(),
                },
            ));
        }
    }

    /// Number of sessions in flight or streaming.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Sessions waiting for the device's answer, and sessions answered.
    pub fn sessions_by_state(&self) -> (usize, usize) {
        let state = self.lock();
        let answered = state
            .sessions
            .values()
            .filter(|s| !s.awaits_device_reply())
            .count();
        (state.sessions.len() - answered, answered)
    }

    fn envelope(&self, device: DeviceId, session: SessionId, body: ToDevice) -> Request {
        Request::new(Party::Gateway(self.instance.clone()), device, session, body)
    }

    fn send(&self, envelope: Request) {
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

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
