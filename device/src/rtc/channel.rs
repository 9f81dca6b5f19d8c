//! A data channel, as the rest of the device sees it: text and binary messages in and out.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

/// Bytes one channel may have handed to SCTP and not yet had acknowledged; a sender past it
/// waits ([`ControlChannel::send_binary`]). Small, so that a file transfer keeps little data
/// queued ahead of the other channels' messages on the same association, and large enough to
/// keep a fast path busy (a few round trips' worth at tens of MB/s on a LAN).
pub const SEND_BUFFER: usize = 256 * 1024;

/// What arrives on a channel.
#[derive(Debug)]
pub enum ChannelEvent {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

/// One data channel opened by the viewer.
pub struct ControlChannel {
    dc: Arc<dyn DataChannel>,
}

impl ControlChannel {
    pub(super) fn new(dc: Arc<dyn DataChannel>) -> Self {
        Self { dc }
    }

    /// The label the viewer gave the channel (`control` for ferrocam's protocol).
    pub async fn label(&self) -> String {
        self.dc.label().await.unwrap_or_default()
    }

    /// The next message, or `None` once the channel closes.
    pub async fn next(&self) -> Option<ChannelEvent> {
        loop {
            match self.dc.poll().await? {
                DataChannelEvent::OnMessage(msg) if msg.is_string => {
                    return Some(ChannelEvent::Text(
                        String::from_utf8_lossy(&msg.data).into_owned(),
                    ));
                }
                DataChannelEvent::OnMessage(msg) => {
                    return Some(ChannelEvent::Binary(msg.data.freeze()));
                }
                DataChannelEvent::OnClose => return None,
                // Logged because a channel that never opens is otherwise invisible here: the
                // viewer's page just never shows its controls.
                DataChannelEvent::OnOpen => {
                    let label = self.dc.label().await.unwrap_or_default();
                    tracing::debug!(%label, "data channel open");
                }
                _ => continue,
            }
        }
    }

    /// Sends a text message, waiting for buffer space rather than piling data up.
    pub async fn send_text(&self, text: &str) -> anyhow::Result<()> {
        self.dc
            .writable()
            .await
            .map_err(|e| anyhow::anyhow!("data channel: {e}"))?;
        self.dc
            .send_text(text)
            .await
            .map_err(|e| anyhow::anyhow!("data channel: {e}"))
    }

    /// Sends a binary message, waiting while the channel has [`SEND_BUFFER`] bytes in flight
    /// (the receiver's pace, not ours, sets the rate).
    pub async fn send_binary(&self, data: BytesMut) -> anyhow::Result<()> {
        self.dc
            .send(data)
            .await
            .map_err(|e| anyhow::anyhow!("data channel: {e}"))
    }
}
