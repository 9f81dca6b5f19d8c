//! The agent: routes signaling envelopes to sessions. It sees envelopes and outbound messages
//! only; which transport carries them (MQTT today) is the link's business.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrocam_protocol::control::Role;
use ferrocam_protocol::signal::DecodeError;
use ferrocam_protocol::topics::parse_device_reply;
use ferrocam_protocol::{ErrorCode, FromDevice, GrantClaims, Request, SessionId, ToDevice};
use tokio::sync::mpsc;

use crate::grant::GrantVerifier;
use crate::session::{self, SessionContext, SessionInput};

/// Inbox depth of one session; excess messages (a candidate flood) are dropped.
const SESSION_INBOX: usize = 64;
/// How long the messages of one relayed control reply may wait for the broker queue: the
/// gateway gives up on the whole reply after 10 s.
const RELAYED_REPLY_LIMIT: Duration = Duration::from_secs(8);

/// Routes inbound envelopes to sessions and starts sessions on offers and invites.
pub struct Agent {
    ctx: SessionContext,
    max_sessions: usize,
    sessions: Arc<Mutex<HashMap<SessionId, Running>>>,
    /// Checks the gateway's signature on every request that opens something.
    grants: Mutex<GrantVerifier>,
}

/// What a request that opens a session asks for, before its grant is checked.
struct Opening {
    /// The viewer's offer, or `None` when the device is to offer.
    offer: Option<String>,
    trickle: bool,
    role: Role,
}

/// A session in progress, as the agent knows it.
struct Running {
    inbox: mpsc::Sender<SessionInput>,
    /// Who it was granted to: only the same user may move its signaling elsewhere.
    user: String,
}

impl Agent {
    pub fn new(ctx: SessionContext, max_sessions: usize, grants: GrantVerifier) -> Self {
        Self {
            ctx,
            max_sessions,
            sessions: Arc::default(),
            grants: Mutex::new(grants),
        }
    }

    /// A reply topic is usable only if it is this device's own reply namespace: a forged
    /// `reply_to` must not turn the device into a publisher on someone else's topics.
    fn valid_reply_topic(&self, reply_to: Option<String>) -> Option<String> {
        reply_to.filter(|t| parse_device_reply(t).is_some_and(|(d, _)| d == self.ctx.device))
    }

    /// Checks a request's grant; a refusal is answered with `unauthorized` and logged.
    fn check_grant(
        &self,
        grant: Option<&str>,
        session: &SessionId,
        reply_to: &str,
    ) -> Option<GrantClaims> {
        self.checked(session, reply_to, |grants| grants.verify(grant, session))
    }

    /// Runs one grant check (`verify`) and answers a refusal with `unauthorized`.
    fn checked(
        &self,
        session: &SessionId,
        reply_to: &str,
        verify: impl FnOnce(&mut GrantVerifier) -> Result<GrantClaims, crate::grant::GrantError>,
    ) -> Option<GrantClaims> {
        let checked = verify(&mut self.grants.lock().expect("grants lock"));
        match checked {
            Ok(claims) => Some(claims),
            Err(e) => {
                tracing::warn!(%session, error = %e, "refusing a request without a valid grant");
                self.ctx.say(
                    reply_to,
                    session,
                    FromDevice::Error {
                        code: ErrorCode::Unauthorized,
                        message: e.to_string(),
                    },
                );
                None
            }
        }
    }

    /// Asks every session to end, telling its gateway why.
    pub fn hang_up_all(&self, reason: &str) {
        for running in self.sessions.lock().expect("sessions lock").values() {
            let _ = running
                .inbox
                .try_send(SessionInput::Shutdown(reason.to_owned()));
        }
    }

    /// Resolves once no session is left.
    pub async fn idle(&self) {
        while !self.sessions.lock().expect("sessions lock").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Handles one payload from the signaling topic. Garbage is logged and dropped; it never
    /// takes the agent down.
    pub fn handle_payload(&self, payload: &[u8]) {
        let envelope = match Request::decode(payload) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(error = %e, bytes = payload.len(), "malformed signal");
                return self.refuse_malformed(payload, &e);
            }
        };
        if envelope.device != self.ctx.device {
            tracing::warn!(device = %envelope.device, "signal addressed to another device");
            return;
        }
        self.handle(envelope);
    }

    /// Answers a malformed request with a typed error when its header says where to.
    fn refuse_malformed(&self, payload: &[u8], error: &DecodeError) {
        let Some((session, device, reply_to)) = Request::reply_route(payload) else {
            return;
        };
        if device != self.ctx.device {
            return;
        }
        let Some(reply_to) = self.valid_reply_topic(Some(reply_to)) else {
            return;
        };
        let code = match error {
            DecodeError::Version(_) => ErrorCode::UnsupportedVersion,
            DecodeError::TooLarge(_) => ErrorCode::TooLarge,
            DecodeError::Malformed(_) => ErrorCode::BadRequest,
        };
        self.ctx.say(
            &reply_to,
            &session,
            FromDevice::Error {
                code,
                message: error.to_string(),
            },
        );
    }

    fn handle(&self, envelope: Request) {
        let Request {
            session,
            reply_to,
            body,
            ..
        } = envelope;
        let input = match body {
            ToDevice::Offer {
                sdp,
                trickle,
                role,
                grant,
            } => {
                let asked = Opening {
                    offer: Some(sdp),
                    trickle,
                    role,
                };
                return self.start_session(session, reply_to, grant, asked);
            }
            ToDevice::Invite { role, grant } => {
                let asked = Opening {
                    offer: None,
                    trickle: true,
                    role,
                };
                return self.start_session(session, reply_to, grant, asked);
            }
            ToDevice::Control {
                role,
                request,
                grant,
            } => {
                return self.relayed_control(session, reply_to, role, grant, request);
            }
            ToDevice::Answer { sdp, grant } => {
                // The answer names the certificate the media will be encrypted for: only one
                // the gateway vouches for may reach a session.
                let checked = self.grants.lock().expect("grants lock").verify_answer(
                    grant.as_deref(),
                    &session,
                    &sdp,
                );
                if let Err(e) = checked {
                    tracing::warn!(%session, error = %e, "answer without a valid grant dropped");
                    return;
                }
                SessionInput::Answer(sdp)
            }
            ToDevice::Attach { grant } => return self.attach(session, reply_to, grant),
            ToDevice::Candidate { candidate } => SessionInput::Candidate(candidate),
            ToDevice::EndOfCandidates => SessionInput::EndOfCandidates,
            ToDevice::RestartIce => SessionInput::RestartIce,
            ToDevice::HangUp { reason } => SessionInput::HangUp(reason),
        };
        let inbox = self
            .sessions
            .lock()
            .expect("sessions lock")
            .get(&session)
            .map(|running| running.inbox.clone());
        match inbox {
            Some(inbox) => {
                if inbox.try_send(input).is_err() {
                    tracing::warn!(%session, "session inbox full; message dropped");
                }
            }
            None => tracing::debug!(%session, "signal for an unknown session"),
        }
    }

    /// Moves a session's signaling to the gateway behind `reply_to` (the viewer reconnected
    /// there). Only the user the session was granted to may do that; anyone else learns no
    /// more than that there is no such session.
    fn attach(&self, session: SessionId, reply_to: Option<String>, grant: Option<String>) {
        let Some(reply_to) = self.valid_reply_topic(reply_to) else {
            tracing::warn!(%session, "attach without a valid reply topic");
            return;
        };
        let check = |grants: &mut GrantVerifier| grants.check_attach(grant.as_deref(), &session);
        let Some(claims) = self.checked(&session, &reply_to, check) else {
            return;
        };
        // Replies go to the gateway that vouched for the move, not to one a publisher names.
        let from_issuer = parse_device_reply(&reply_to)
            .is_some_and(|(_, instance)| instance.as_str() == claims.iss);
        let inbox = self
            .sessions
            .lock()
            .expect("sessions lock")
            .get(&session)
            .filter(|running| from_issuer && running.user == claims.usr)
            .map(|running| running.inbox.clone());
        let Some(inbox) = inbox else {
            tracing::info!(%session, user = %claims.usr, "attach for no session of this user");
            let message = "the session has ended".into();
            let code = ErrorCode::UnknownSession;
            return self
                .ctx
                .say(&reply_to, &session, FromDevice::Error { code, message });
        };
        // Only now is the grant marked used: attaches for sessions that do not exist must not
        // fill the memory that opening grants need.
        let grant = grant.as_deref().unwrap_or_default();
        let remember = |grants: &mut GrantVerifier| {
            grants
                .remember_attach(grant, &claims)
                .map(|()| claims.clone())
        };
        if self.checked(&session, &reply_to, remember).is_none() {
            return;
        }
        if inbox.try_send(SessionInput::Attach(reply_to)).is_ok() {
            tracing::info!(%session, gateway = %claims.iss, "session signaling moved");
        }
    }

    /// A control request relayed by a gateway: answered with one `control_reply` per message.
    fn relayed_control(
        &self,
        id: SessionId,
        reply_to: Option<String>,
        role: Role,
        grant: Option<String>,
        request: String,
    ) {
        let Some(reply_to) = self.valid_reply_topic(reply_to) else {
            tracing::warn!(%id, "control request without a valid reply topic");
            return;
        };
        let Some(claims) = self.check_grant(grant.as_deref(), &id, &reply_to) else {
            return;
        };
        // Never more than the grant allows, whatever the request says.
        let role = role.min(claims.role);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            // A snapshot is more messages than the broker queue holds: wait for room, but no
            // longer than the gateway waits for the whole reply.
            let deadline = Instant::now() + RELAYED_REPLY_LIMIT;
            let caller = crate::control::Caller::relayed(role);
            for message in ctx.control.handle(&caller, &request).await {
                let body = FromDevice::ControlReply {
                    message: ctx.gateways.seal(message.as_bytes()),
                    sealed: true,
                };
                if ctx.say_by(deadline, &reply_to, &id, body).await.is_err() {
                    tracing::warn!(%id, "the broker queue stayed full; control reply cut short");
                    return;
                }
            }
        });
    }

    fn start_session(
        &self,
        session: SessionId,
        reply_to: Option<String>,
        grant: Option<String>,
        asked: Opening,
    ) {
        let Some(reply_to) = self.valid_reply_topic(reply_to) else {
            tracing::warn!(%session, "session request without a valid reply topic");
            return;
        };
        if self
            .sessions
            .lock()
            .expect("sessions lock")
            .contains_key(&session)
        {
            tracing::warn!(%session, "duplicate session request ignored");
            return;
        }
        let Some(claims) = self.check_grant(grant.as_deref(), &session, &reply_to) else {
            return;
        };
        tracing::info!(%session, user = %claims.usr, gateway = %claims.iss, role = ?claims.role, talk = claims.talk, "session granted");
        let user = claims.usr.clone();
        let request = session::Request {
            session: session.clone(),
            reply_to,
            offer: asked.offer,
            trickle: asked.trickle,
            // Never more than the grant allows, whatever the request says.
            role: asked.role.min(claims.role),
            talk: claims.talk,
            user: claims.usr.clone(),
            ice_servers: claims.ice,
        };
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.len() >= self.max_sessions {
            drop(sessions);
            let message = match self.max_sessions {
                1 => "the device is at its limit of 1 viewer".to_owned(),
                n => format!("the device is at its limit of {n} viewers"),
            };
            return self.ctx.say(
                &request.reply_to,
                &session,
                FromDevice::Error {
                    code: ErrorCode::Busy,
                    message,
                },
            );
        }
        let (tx, rx) = mpsc::channel(SESSION_INBOX);
        sessions.insert(session.clone(), Running { inbox: tx, user });
        drop(sessions);

        let ctx = self.ctx.clone();
        let registry = Arc::clone(&self.sessions);
        tokio::spawn(async move {
            session::run(ctx, request, rx).await;
            registry.lock().expect("sessions lock").remove(&session);
        });
    }
}
