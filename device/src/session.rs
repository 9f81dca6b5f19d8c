//! One viewer session on the device: answer the offer, trade candidates, stream until it ends.
//!
//! A session is a task with an inbox. Messages for it arrive in order (offer first, then
//! candidates), so no candidate can race ahead of the offer it belongs to.

use std::sync::Arc;
use std::time::Duration;

use ferrocam_protocol::{DeviceId, Envelope, ErrorCode, IceCandidate, SessionId, Signal};
use tokio::sync::{broadcast, mpsc};

use crate::media::MediaEngine;
use crate::rtc::{Peer, PeerEvent, RtcSettings, VideoSender, offer_has_h264};

/// Candidates a viewer may trickle into one session; real browsers send fewer than 20.
pub const MAX_REMOTE_CANDIDATES: usize = 64;

/// A message for a running session.
#[derive(Debug)]
pub enum SessionInput {
    Candidate(IceCandidate),
    EndOfCandidates,
    HangUp(String),
}

/// A message the session wants delivered to the viewer's gateway.
#[derive(Debug)]
pub struct Outbound {
    pub topic: String,
    pub envelope: Envelope,
}

/// Everything a session needs from the device.
#[derive(Clone)]
pub struct SessionContext {
    pub device: DeviceId,
    pub media: Arc<MediaEngine>,
    pub rtc: Arc<RtcSettings>,
    pub out: mpsc::UnboundedSender<Outbound>,
    pub connect_timeout: Duration,
}

/// Runs one session to its end.
pub async fn run(
    ctx: SessionContext,
    session: SessionId,
    reply_to: String,
    offer_sdp: String,
    mut inbox: mpsc::Receiver<SessionInput>,
) {
    let say = |body: Signal| {
        let _ = ctx.out.send(Outbound {
            topic: reply_to.clone(),
            envelope: Envelope::new(ctx.device.clone(), session.clone(), body),
        });
    };

    if !offer_has_h264(&offer_sdp) {
        say(Signal::Error {
            code: ErrorCode::NoCommonCodec,
            message: "the offer has no H.264 video; this camera sends H.264 only".into(),
        });
        return;
    }
    let (peer, answer, mut events) = match Peer::answer(&ctx.rtc, offer_sdp).await {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(%session, error = format!("{e:#}"), "could not answer offer");
            say(Signal::Error {
                code: ErrorCode::BadRequest,
                message: format!("could not answer the offer: {e:#}"),
            });
            return;
        }
    };
    say(Signal::Answer { sdp: answer });
    tracing::info!(%session, "answered offer");

    let mut remote_candidates = 0usize;
    let mut streaming: Option<tokio::task::JoinHandle<()>> = None;
    let deadline = tokio::time::sleep(ctx.connect_timeout);
    tokio::pin!(deadline);

    let reason = loop {
        tokio::select! {
            input = inbox.recv() => match input {
                Some(SessionInput::Candidate(candidate)) => {
                    remote_candidates += 1;
                    if remote_candidates > MAX_REMOTE_CANDIDATES {
                        tracing::warn!(%session, "candidate limit reached; ignoring the rest");
                        continue;
                    }
                    if let Err(e) = peer.add_remote_candidate(candidate).await {
                        tracing::debug!(%session, error = %e, "bad remote candidate");
                    }
                }
                Some(SessionInput::EndOfCandidates) => {}
                Some(SessionInput::HangUp(reason)) => break format!("viewer hung up: {reason}"),
                None => break "device shutting down".to_owned(),
            },
            event = events.recv() => match event {
                Some(PeerEvent::LocalCandidate(candidate)) => say(Signal::Candidate { candidate }),
                Some(PeerEvent::GatheringComplete) => say(Signal::EndOfCandidates),
                Some(PeerEvent::Connected) if streaming.is_none() => {
                    tracing::info!(%session, "viewer connected");
                    match peer.video_sender().await {
                        Ok(sender) => streaming = Some(tokio::spawn(stream(ctx.media.clone(), sender))),
                        Err(e) => break format!("no video sender: {e:#}"),
                    }
                }
                Some(PeerEvent::Connected) => {}
                Some(PeerEvent::Ended(state)) => {
                    say(Signal::HangUp { reason: format!("connection {state}") });
                    break format!("connection {state}");
                }
                None => break "peer events ended".to_owned(),
            },
            _ = &mut deadline, if streaming.is_none() => {
                say(Signal::Error { code: ErrorCode::Timeout, message: "the viewer did not connect in time".into() });
                break "connect timeout".to_owned();
            }
        }
    };

    if let Some(task) = streaming {
        task.abort();
    }
    peer.close().await;
    tracing::info!(%session, %reason, "session ended");
}

/// Forwards the shared encoder's access units to one viewer, starting at a keyframe.
async fn stream(media: Arc<MediaEngine>, sender: VideoSender) {
    let mut units = media.subscribe();
    media.request_keyframe();
    let mut need_keyframe = true;
    loop {
        match units.recv().await {
            Ok(unit) => {
                if need_keyframe && !unit.keyframe {
                    continue;
                }
                need_keyframe = false;
                if let Err(e) = sender.send(&unit).await {
                    tracing::debug!(error = %e, "video write failed");
                }
            }
            // This viewer fell behind the fan-out buffer: the frames it missed are gone, so its
            // decoder needs a fresh keyframe rather than a stream with holes.
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "viewer lagged; waiting for a keyframe");
                need_keyframe = true;
                media.request_keyframe();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
