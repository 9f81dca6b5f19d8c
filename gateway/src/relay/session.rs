//! Viewer sessions in the relay: opening them (offer, invite), taking them over after a
//! reconnect (resume), relaying what the viewer says and routing what the device replies, and
//! forgetting them. Each session's stage says which messages it expects next.

use ferrocam_protocol::control::Role;
use ferrocam_protocol::viewer::ServerMsg;
use ferrocam_protocol::{DeviceId, ErrorCode, SessionId, ToDevice};

use super::{OfferOptions, Offerer, Refusal, Relay, ViewerId, ViewerTx};

mod replies;

pub(super) struct Session {
    device: DeviceId,
    /// The principal that opened it (`Principal::id`).
    owner: String,
    viewer: ViewerId,
    tx: ViewerTx,
    /// Who makes the offer.
    offerer: Offerer,
    stage: Stage,
    /// When the request now awaiting the device went out (for the answer-latency histogram).
    offered_at: std::time::Instant,
    /// Candidates the device sent since its last SDP; past [`MAX_DEVICE_CANDIDATES`] the rest
    /// are dropped, so a device cannot flood a viewer's connection.
    candidates: usize,
}

/// Candidates a device may trickle per description (a few host, server-reflexive and relay
/// candidates are all a real one gathers; the device caps a viewer's at the same number).
const MAX_DEVICE_CANDIDATES: usize = 64;

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
    pub(super) fn is_owned_by(&self, device: &DeviceId, owner: &str) -> bool {
        self.device == *device && self.owner == owner
    }

    /// Media can flow without the gateway: an ICE restart may be asked for.
    fn established(&self) -> bool {
        matches!(self.stage, Stage::Established | Stage::Restarting(_))
    }

    /// The session waits for `turn`'s description.
    fn awaits(&self, turn: Turn) -> bool {
        matches!(self.stage, Stage::Opening(t) | Stage::Restarting(t) if t == turn)
    }

    /// Still being set up: a hang-up from the gateway frees the device's half-built session.
    /// (A session being resumed is not: it was established, and may not even be the
    /// resuming viewer's; the gateway only forgets it.)
    fn being_opened(&self) -> bool {
        matches!(self.stage, Stage::Opening(_))
    }

    /// The device has not said anything yet about the current request (`expire_unanswered`).
    fn awaits_device_reply(&self) -> bool {
        matches!(self.stage, Stage::Opening(Turn::Device) | Stage::Resuming)
    }
}

impl Relay {
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
            talk,
            user,
            owner,
            device_ice,
            ..
        } = options;
        let device_key = (self.recipients)(&device);
        let mut state = self.lock();
        Self::check_online(&state, &device)?;
        self.check_owner_share(&state, &device, &owner)?;
        Self::take_offer_token(&mut state, &device)?;
        // Signed and recorded under the same lock that checked the account's share (signing
        // takes tens of microseconds, and offers are rate-limited per device), so parallel
        // offers from one account cannot all pass the check.
        let grant = self.signer.sign(
            &device,
            &session,
            crate::auth::grant::Rights { role, talk },
            &user,
            device_ice,
            device_key.as_ref(),
        );
        let body = request(role, grant);
        let offerer = if matches!(body, ToDevice::Invite { .. }) {
            Offerer::Device
        } else {
            Offerer::Viewer
        };
        state.sessions.insert(
            session.clone(),
            Session {
                device: device.clone(),
                owner,
                viewer,
                tx: tx.clone(),
                offerer,
                stage: Stage::Opening(Turn::Device),
                offered_at: std::time::Instant::now(),
                candidates: 0,
            },
        );
        drop(state);
        let reply_to = self.reply_topic(&device);
        if let Err(refusal) = self.send(
            self.envelope(device, session.clone(), body)
                .reply_to(reply_to),
        ) {
            self.lock().sessions.remove(&session);
            return Err(refusal);
        }
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
                    owner: options.owner.clone(),
                    viewer,
                    tx: tx.clone(),
                    // Whoever offered, the descriptions were exchanged long ago.
                    offerer: Offerer::Device,
                    stage: Stage::Resuming,
                    offered_at: std::time::Instant::now(),
                    candidates: 0,
                },
            );
        }
        let grant = self.signer.sign_attach(&device, &session, &options.user);
        let reply_to = self.reply_topic(&device);
        self.send(
            self.envelope(
                device,
                session.clone(),
                ToDevice::Attach { grant: Some(grant) },
            )
            .reply_to(reply_to),
        )
        .inspect_err(|_| {
            self.lock().sessions.remove(&session);
        })
    }

    /// Forwards a viewer's message for one of its own sessions to the device. An answer goes
    /// with a grant that binds it to the session ([`GrantSigner::sign_answer`]).
    pub fn forward(
        &self,
        viewer: ViewerId,
        session: &SessionId,
        body: ToDevice,
    ) -> Result<(), Refusal> {
        // What an answer or an ICE restart changes, to put back if the broker link refuses
        // the message: the viewer may then try again.
        let mut undo = None;
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
                    undo = Some((entry.stage, entry.offered_at));
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
                    undo = Some((entry.stage, entry.offered_at));
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
        let sent = self.send(self.envelope(device, session.clone(), body));
        if sent.is_err()
            && let Some((stage, offered_at)) = undo
            && let Some(entry) = self.lock().sessions.get_mut(session)
        {
            entry.stage = stage;
            entry.offered_at = offered_at;
        }
        sent
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
            if entry.being_opened() {
                let _ = self.send(self.envelope(
                    entry.device,
                    session.clone(),
                    ToDevice::HangUp {
                        reason: "no answer in time".into(),
                    },
                ));
            }
        }
    }

    /// Forgets every session of a viewer whose connection went away, and hangs up those still
    /// being set up. A session whose descriptions were exchanged (or that is being resumed) is left
    /// running: its media and
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
                .filter(|(_, s)| s.being_opened())
                .map(|(id, s)| (id, s.device))
                .collect()
        };
        for (session, device) in gone {
            let _ = self.send(self.envelope(
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
}
