//! WebSocket signaling for browsers: `/ws` carries [`ClientMsg`] in and [`ServerMsg`] out.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use ferrocam_protocol::viewer::{ClientMsg, ServerMsg};
use ferrocam_protocol::{ErrorCode, MAX_VIEWER_MESSAGE, SessionId, Signal};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::AppState;
use crate::relay::{Refusal, Relay, ViewerId, ViewerTx};

/// How long a device has to answer an offer before the viewer is told it timed out.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_VIEWER_MESSAGE)
        .on_upgrade(move |socket| serve(socket, state.relay))
}

async fn serve(socket: WebSocket, relay: Arc<Relay>) {
    let viewer = relay.new_viewer();
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerMsg>();
    let mut devices = relay.watch_devices();
    devices.mark_changed();
    let (mut sink, mut stream) = socket.split();

    loop {
        let outgoing = tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    handle(&relay, viewer, &tx, &text);
                    continue;
                }
                Some(Ok(Message::Binary(_))) => ServerMsg::Error {
                    session: None,
                    code: ErrorCode::BadRequest,
                    message: "binary messages are not part of the protocol".into(),
                },
                Some(Ok(_)) => continue, // ping/pong are answered by the library
                Some(Err(_)) | None => break,
            },
            Some(msg) = rx.recv() => msg,
            Ok(()) = devices.changed() => ServerMsg::Devices {
                devices: devices.borrow_and_update().clone(),
            },
        };
        let text = serde_json::to_string(&outgoing).expect("server messages serialize");
        if sink.send(Message::Text(text)).await.is_err() {
            break;
        }
    }
    relay.viewer_gone(viewer);
}

/// Handles one text message; every failure becomes an error message to the viewer, never a
/// dropped connection.
fn handle(relay: &Arc<Relay>, viewer: ViewerId, tx: &ViewerTx, text: &str) {
    let msg = match serde_json::from_str::<ClientMsg>(text) {
        Ok(msg) => msg,
        Err(e) => {
            let _ = tx.send(ServerMsg::Error {
                session: None,
                code: ErrorCode::BadRequest,
                message: format!("malformed message: {e}"),
            });
            return;
        }
    };
    let (session, result) = match msg {
        ClientMsg::Offer { device, sdp } => {
            let session = new_session_id();
            match relay.offer(viewer, tx, device.clone(), sdp, session.clone()) {
                Ok(session) => {
                    let _ = tx.send(ServerMsg::Session {
                        device,
                        session: session.clone(),
                    });
                    let relay = Arc::clone(relay);
                    tokio::spawn(async move {
                        tokio::time::sleep(ANSWER_TIMEOUT).await;
                        relay.expire_unanswered(&session);
                    });
                    return;
                }
                Err(refusal) => (None, Err(refusal)),
            }
        }
        ClientMsg::Candidate { session, candidate } => {
            let r = relay.forward(viewer, &session, Signal::Candidate { candidate });
            (Some(session), r)
        }
        ClientMsg::EndOfCandidates { session } => {
            let r = relay.forward(viewer, &session, Signal::EndOfCandidates);
            (Some(session), r)
        }
        ClientMsg::HangUp { session } => {
            let r = relay.forward(
                viewer,
                &session,
                Signal::HangUp {
                    reason: "viewer hung up".into(),
                },
            );
            (Some(session), r)
        }
    };
    if let Err(Refusal { code, message }) = result {
        let _ = tx.send(ServerMsg::Error {
            session,
            code,
            message,
        });
    }
}

/// 128 bits from the OS-seeded CSPRNG: session ids must be unguessable.
fn new_session_id() -> SessionId {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    SessionId::from_random(bytes)
}
