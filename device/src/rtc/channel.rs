//! A data channel, as the rest of the device sees it: text messages in and out.

use std::sync::Arc;

use webrtc::data_channel::{DataChannel, DataChannelEvent};

/// What arrives on a channel.
#[derive(Debug)]
pub enum ChannelEvent {
    /// A text message.
    Text(String),
    /// A binary message (not part of the control protocol), with its size.
    Binary(usize),
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
                    return Some(ChannelEvent::Binary(msg.data.len()));
                }
                DataChannelEvent::OnClose => return None,
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
}
