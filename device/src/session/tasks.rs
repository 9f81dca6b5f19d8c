//! What a session runs beside its negotiation: a task per data channel the viewer opens (the
//! control protocol) and one for the viewer's microphone track. Dropping [`SessionTasks`] ends
//! them all, so a session that ends leaves nothing behind.

use std::sync::Arc;

use ferrocam_protocol::SessionId;
use ferrocam_protocol::control::{ControlError, ControlErrorCode, ControlResponse, Role};
use ferrocam_protocol::files::{FILES_CHANNEL, FilesRequest};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::SessionContext;
use super::listening::Listening;
use crate::control::{Caller, ControlHandler};
use crate::files::FileService;
use crate::rtc::{ChannelEvent, ControlChannel, IncomingAudio};
use crate::speaker::Speaker;

pub struct SessionTasks {
    tasks: Vec<JoinHandle<()>>,
    handler: Arc<ControlHandler>,
    /// For a `files` channel (`None`: the device keeps no files).
    files: Option<Arc<FileService>>,
    caller: Caller,
    user: String,
    /// Where the viewer is heard (`None`: it may not talk, or there is no speaker).
    speaker: Option<Arc<Speaker>>,
    /// Told when the viewer closes its control channel.
    control_closed: mpsc::UnboundedSender<()>,
    /// The viewer's microphone track is being read (a session has one; more are ignored).
    listening: bool,
}

impl SessionTasks {
    /// The tasks of `session`, and the receiver that hears when the viewer closes its control
    /// channel: a hang-up too (a closing tab often does only that before its connection times
    /// out).
    pub fn new(
        ctx: &SessionContext,
        session: &SessionId,
        role: Role,
        user: String,
        speaker: Option<Arc<Speaker>>,
    ) -> (Self, mpsc::UnboundedReceiver<()>) {
        let (control_closed, closed) = mpsc::unbounded_channel();
        let tasks = Self {
            tasks: Vec::new(),
            handler: Arc::clone(&ctx.control),
            files: ctx.files.clone(),
            caller: Caller {
                role,
                session: Some(session.clone()),
            },
            user,
            speaker,
            control_closed,
            listening: false,
        };
        (tasks, closed)
    }

    /// Serves a data channel in its own task: `control` (the control protocol) or `files`
    /// (file transfer); any other is left alone.
    pub fn serve_control(&mut self, channel: ControlChannel) {
        let closed = self.control_closed.clone();
        let handler = Arc::clone(&self.handler);
        let caller = self.caller.clone();
        let files = self.files.clone();
        self.tasks.push(tokio::spawn(async move {
            let label = channel.label().await;
            match (label.as_str(), files) {
                ("control", _) => {
                    serve_control(channel, caller, handler).await;
                    let _ = closed.send(());
                }
                (FILES_CHANNEL, Some(files)) => {
                    crate::files::serve(channel, caller.role, files).await
                }
                (FILES_CHANNEL, None) => refuse_files(channel).await,
                _ => tracing::debug!(%label, "ignoring a data channel ferrocam does not speak"),
            }
        }));
    }

    /// Reads the viewer's microphone in its own task (played only if it may talk). Only the
    /// first track is: a session is one talker, however many audio tracks it brings (further
    /// ones are left unread; the crate drops what nobody reads).
    pub fn listen(&mut self, audio: IncomingAudio) {
        if std::mem::replace(&mut self.listening, true) {
            tracing::debug!("ignoring a second incoming audio track");
            return;
        }
        let listening = Listening {
            session: self
                .caller
                .session
                .clone()
                .expect("a session's caller has one"),
            user: self.user.clone(),
            speaker: self.speaker.clone(),
        };
        self.tasks.push(tokio::spawn(listening.run(audio)));
    }
}

impl Drop for SessionTasks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Answers every request on a `files` channel of a device that keeps no files.
async fn refuse_files(channel: ControlChannel) {
    while let Some(event) = channel.next().await {
        if let ChannelEvent::Text(text) = event {
            let id = FilesRequest::decode(&text).map_or_else(|(id, _)| id, |r| r.id);
            let error = ControlError::new(
                ControlErrorCode::Unavailable,
                "this device keeps no files (--record-dir none)",
            );
            let reply = serde_json::to_string(&ControlResponse::error(id, error))
                .expect("replies serialize");
            if channel.send_text(&reply).await.is_err() {
                return;
            }
        }
    }
}

/// Answers control requests on a viewer's `control` data channel, one at a time and in order,
/// until the viewer closes it.
async fn serve_control(channel: ControlChannel, caller: Caller, handler: Arc<ControlHandler>) {
    while let Some(event) = channel.next().await {
        let replies = match event {
            ChannelEvent::Text(text) => handler.handle(&caller, &text).await,
            ChannelEvent::Binary(bytes) => vec![ControlHandler::binary_refusal(bytes.len())],
        };
        for reply in replies {
            if let Err(e) = channel.send_text(&reply).await {
                tracing::debug!(error = %e, "control reply not sent");
                return;
            }
        }
    }
}
