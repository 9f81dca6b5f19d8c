//! A viewer's microphone: played through the speaker when the session's grant lets it talk,
//! read and thrown away otherwise.
//!
//! The device's offer only asks for a viewer's audio when the grant allows talking, and its
//! answer refuses it otherwise; a page modified to send anyway still reaches this point, so the
//! rule is enforced here too: a session's own say-so never turns its audio on.

use std::sync::Arc;

use ferrocam_protocol::SessionId;

use crate::rtc::IncomingAudio;
use crate::speaker::Speaker;

/// What a session may do with its viewer's microphone.
pub struct Listening {
    pub session: SessionId,
    /// Who the grant names, as talkers are shown.
    pub user: String,
    /// `None`: the viewer may not talk, or the device has no speaker.
    pub speaker: Option<Arc<Speaker>>,
}

impl Listening {
    /// Reads `audio` until it ends, playing it when allowed. The viewer joins the speaker with
    /// its first packet, not with its track: a page that may talk but does not costs the
    /// device no speaker pipeline.
    pub async fn run(self, mut audio: IncomingAudio) {
        let Some(speaker) = self.speaker else {
            return discard(self.session, audio).await;
        };
        let Some(first) = audio.next_packet().await else {
            return;
        };
        let talker = match speaker.join(self.session.clone(), self.user).await {
            Ok(talker) => talker,
            Err(e) => {
                tracing::warn!(session = %self.session, error = format!("{e:#}"), "the speaker will not play this viewer");
                return discard(self.session, audio).await;
            }
        };
        talker.play(&first);
        while let Some(packet) = audio.next_packet().await {
            talker.play(&packet);
        }
    }
}

/// Drains audio nobody may hear (the crate queues what is not read).
async fn discard(session: SessionId, mut audio: IncomingAudio) {
    let mut dropped: u64 = 0;
    while audio.next_packet().await.is_some() {
        if dropped == 0 {
            tracing::warn!(%session, "audio from a viewer who may not talk is dropped");
        }
        dropped += 1;
    }
    if dropped > 0 {
        tracing::info!(%session, dropped, "unplayed audio packets");
    }
}
