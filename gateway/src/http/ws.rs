//! WebSocket signaling for browsers: `/ws` carries [`ClientMsg`] in and [`ServerMsg`] out.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use ferrocam_protocol::viewer::{ClientMsg, ServerMsg};
use ferrocam_protocol::{ErrorCode, MAX_VIEWER_MESSAGE, ToDevice};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::{AppState, new_session_id};
use crate::auth::Principal;
use crate::rate::TokenBucket;
use crate::relay::{OfferOptions, Refusal, ViewerId, ViewerTx};

/// Offers one connection may start: a burst of 5, then one every 2 s. Clicking between cameras
/// stays well inside this; a script opening sessions in a loop does not.
const OFFER_BURST: u32 = 5;
const OFFERS_PER_SECOND: f64 = 0.5;
/// Any message: generous for trickle ICE, a wall for floods.
const MESSAGE_BURST: u32 = 200;
const MESSAGES_PER_SECOND: f64 = 50.0;
/// Frames above this are cut off by the WebSocket layer itself; between
/// [`MAX_VIEWER_MESSAGE`] and this they get a `too_large` error and the socket lives on.
const HARD_FRAME_LIMIT: usize = 1024 * 1024;

pub async fn upgrade(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: axum::http::HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Kept to re-check on every offer: a socket outlives its token's expiry or revocation.
    let credential = super::guard::credential(&headers).unwrap_or_default();
    ws.max_message_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| serve(socket, state, principal, credential))
}

/// Per-connection state.
struct Connection {
    state: AppState,
    /// Who opened the socket (checked by the guard before the upgrade).
    principal: Principal,
    /// The token it opened with, re-checked on each offer.
    credential: String,
    viewer: ViewerId,
    tx: ViewerTx,
    offers: TokenBucket,
    messages: TokenBucket,
}

async fn serve(socket: WebSocket, state: AppState, principal: Principal, credential: String) {
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerMsg>();
    let mut conn = Connection {
        principal,
        credential,
        viewer: state.relay.new_viewer(),
        state,
        tx,
        offers: TokenBucket::new(OFFER_BURST, OFFERS_PER_SECOND),
        messages: TokenBucket::new(MESSAGE_BURST, MESSAGES_PER_SECOND),
    };
    let _open = OpenSocket::new(&conn.state);
    let mut shutdown = conn.state.shutdown.clone();
    let mut devices = conn.state.relay.watch_devices();
    devices.mark_changed();
    let (mut sink, mut stream) = socket.split();
    let who = format!("viewer{}", conn.viewer.0);
    let _ = conn.tx.send(ServerMsg::Hello {
        ice_servers: conn.state.settings.ice_servers_for(&who),
    });

    loop {
        let outgoing = tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    conn.handle(&text);
                    continue;
                }
                Some(Ok(Message::Binary(_))) => refusal(None, ErrorCode::BadRequest, "binary messages are not part of the protocol"),
                Some(Ok(_)) => continue, // ping/pong are answered by the library
                Some(Err(_)) | None => break,
            },
            Some(msg) = rx.recv() => msg,
            _ = shutdown.wait_for(|stop| *stop) => break,
            Ok(()) = devices.changed() => ServerMsg::Devices {
                devices: devices
                    .borrow_and_update()
                    .iter()
                    .filter(|d| conn.principal.may_watch(&d.device))
                    .cloned()
                    .collect(),
            },
        };
        let text = serde_json::to_string(&outgoing).expect("server messages serialize");
        if sink.send(Message::Text(text)).await.is_err() {
            break;
        }
    }
    conn.state.relay.viewer_gone(conn.viewer);
}

/// Counts one open viewer WebSocket for [`AppState::sockets_closed`] until dropped.
pub struct OpenSocket(std::sync::Arc<tokio::sync::watch::Sender<usize>>);

impl OpenSocket {
    fn new(state: &AppState) -> Self {
        state.sockets.send_modify(|n| *n += 1);
        Self(std::sync::Arc::clone(&state.sockets))
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

fn refusal(
    session: Option<ferrocam_protocol::SessionId>,
    code: ErrorCode,
    message: &str,
) -> ServerMsg {
    ServerMsg::Error {
        session,
        code,
        message: message.to_owned(),
    }
}

impl Connection {
    /// Handles one text message; every failure becomes an error message to the viewer, never a
    /// dropped connection.
    fn handle(&mut self, text: &str) {
        if !self.messages.try_take() {
            self.state.metrics.rate_limited.inc();
            return self.refuse(None, ErrorCode::RateLimited, "too many messages; slow down");
        }
        if text.len() > MAX_VIEWER_MESSAGE {
            let message = format!(
                "message is {} bytes; the limit is {MAX_VIEWER_MESSAGE}",
                text.len()
            );
            return self.refuse(None, ErrorCode::TooLarge, &message);
        }
        let msg = match serde_json::from_str::<ClientMsg>(text) {
            Ok(msg) => msg,
            Err(e) => {
                return self.refuse(
                    None,
                    ErrorCode::BadRequest,
                    &format!("malformed message: {e}"),
                );
            }
        };
        let relay = &self.state.relay;
        let (session, result) = match msg {
            ClientMsg::Offer { device, sdp } => return self.open(device, Some(sdp)),
            ClientMsg::Watch { device } => return self.open(device, None),
            ClientMsg::Resume { device, session } => return self.resume(device, session),
            ClientMsg::Answer { session, sdp } => {
                let answer = ToDevice::Answer { sdp, grant: None };
                let r = relay.forward(self.viewer, &session, answer);
                (session, r)
            }
            ClientMsg::Candidate { session, candidate } => {
                let r = relay.forward(self.viewer, &session, ToDevice::Candidate { candidate });
                (session, r)
            }
            ClientMsg::RestartIce { session } => {
                let r = relay.forward(self.viewer, &session, ToDevice::RestartIce);
                (session, r)
            }
            ClientMsg::EndOfCandidates { session } => {
                let r = relay.forward(self.viewer, &session, ToDevice::EndOfCandidates);
                (session, r)
            }
            ClientMsg::HangUp { session } => {
                let reason = "viewer hung up".into();
                let r = relay.forward(self.viewer, &session, ToDevice::HangUp { reason });
                (session, r)
            }
        };
        if let Err(Refusal { code, message }) = result {
            self.refuse(Some(session), code, &message);
        }
    }

    /// Checks that this connection may start (or resume) a session with `device` now: within
    /// its rate, with a credential still valid, and with the device in its scope. A refusal has
    /// been sent to the viewer when this returns `None`.
    fn authorize(
        &mut self,
        device: &ferrocam_protocol::DeviceId,
        session: Option<&ferrocam_protocol::SessionId>,
    ) -> Option<OfferOptions> {
        if !self.offers.try_take() {
            self.state.metrics.rate_limited.inc();
            self.refuse(
                session.cloned(),
                ErrorCode::RateLimited,
                "too many offers from this connection; wait a moment",
            );
            return None;
        }
        // The token may have expired or been revoked since the socket opened; the file's
        // current entry also decides the scope and role.
        match self.state.auth.authenticate(&self.credential) {
            Ok(principal) => self.principal = principal,
            Err(e) => {
                self.state.count_auth_failure(e.label());
                self.refuse(session.cloned(), ErrorCode::Unauthorized, &e.to_string());
                return None;
            }
        }
        if !self.principal.may_watch(device) {
            self.state.count_auth_failure("forbidden_device");
            self.state
                .metrics
                .offers
                .count("ws", Err(ErrorCode::UnknownDevice));
            // Same words as for a device that does not exist: no probing for other devices.
            self.refuse(
                session.cloned(),
                ErrorCode::UnknownDevice,
                &format!("no device called {device}"),
            );
            return None;
        }
        Some(OfferOptions {
            trickle: true,
            role: self.state.role_for(&self.principal),
            talk: self.state.talk_for(&self.principal),
            user: self.principal.name.clone(),
            owner: self.principal.id.clone(),
            device_ice: self
                .state
                .settings
                .device_ice_for(&format!("device-viewer{}", self.viewer.0)),
        })
    }

    /// Takes over a running session after a reconnect (see [`ClientMsg::Resume`]).
    fn resume(
        &mut self,
        device: ferrocam_protocol::DeviceId,
        session: ferrocam_protocol::SessionId,
    ) {
        // A refusal names the session, so the page knows its resume failed and starts anew.
        let Some(options) = self.authorize(&device, Some(&session)) else {
            return;
        };
        let relay = &self.state.relay;
        match relay.resume(self.viewer, &self.tx, device, options, session.clone()) {
            Ok(()) => self.expire_unanswered(session),
            Err(Refusal { code, message }) => self.refuse(Some(session), code, &message),
        }
    }

    /// Starts a session: with the viewer's offer (`sdp`), or asking the device to offer.
    fn open(&mut self, device: ferrocam_protocol::DeviceId, sdp: Option<String>) {
        let Some(options) = self.authorize(&device, None) else {
            return;
        };
        let relay = &self.state.relay;
        let opened = match sdp {
            Some(sdp) => relay.offer(
                self.viewer,
                &self.tx,
                device.clone(),
                sdp,
                options,
                new_session_id(),
            ),
            None => relay.invite(
                self.viewer,
                &self.tx,
                device.clone(),
                options,
                new_session_id(),
            ),
        };
        match opened {
            Ok(session) => {
                self.state.metrics.offers.count("ws", Ok(()));
                let _ = self.tx.send(ServerMsg::Session {
                    device,
                    session: session.clone(),
                });
                self.expire_unanswered(session);
            }
            Err(Refusal { code, message }) => {
                self.state.metrics.offers.count("ws", Err(code));
                self.refuse(None, code, &message)
            }
        }
    }

    /// Ends `session` with a timeout unless the device has answered within the answer timeout.
    fn expire_unanswered(&self, session: ferrocam_protocol::SessionId) {
        let relay = Arc::clone(&self.state.relay);
        let timeout = self.state.settings.answer_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            relay.expire_unanswered(&session);
        });
    }

    fn refuse(
        &self,
        session: Option<ferrocam_protocol::SessionId>,
        code: ErrorCode,
        message: &str,
    ) {
        let _ = self.tx.send(refusal(session, code, message));
    }
}
