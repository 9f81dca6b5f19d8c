//! The outbound side of a link: a bounded queue, and what happens when it is full.
//!
//! Everything either side publishes goes through rumqttc's request queue, which only the link's
//! I/O loop drains. While the broker is unreachable nothing drains it, so it must be bounded, and
//! a sender must never wait on it: a session task or the relay that awaited a full queue would
//! stall for the whole outage (and the I/O loop, if it ever awaited its own queue, would
//! deadlock).
//!
//! **Overflow policy: refuse the newest.** When the queue is full, [`Outbox::publish`] returns
//! [`Refused`] at once and counts it; what was queued during an outage stays and goes out, in
//! order, once the broker is back. (What was queued when a connection broke is lost with it:
//! a clean session starts empty, like a message lost in transit.) Signaling is request/response with deadlines on both ends, so a refused
//! message costs one failed session (the viewer retries), never a wrong state: the gateway turns
//! a refused request into an immediate error for the viewer instead of a timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};

/// How often `publish_within` looks for room in a full queue.
const RETRY_EVERY: Duration = Duration::from_millis(5);

/// One MQTT publish: QoS 0, not retained (signaling; presence is the link's own business).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// The queue was full (the broker is unreachable or slow); the message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the broker queue is full; message dropped")]
pub struct Refused;

/// Somewhere to publish to. [`Publisher`] is the real one; an unbounded channel stands in for
/// it where a test wants to read what would have been published.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync {
    /// Queues `message`, or refuses it at once (see the module docs).
    fn publish(&self, message: Message) -> Result<(), Refused>;

    /// Queues `message`, waiting up to `limit` for room. For a burst that belongs together and
    /// is larger than the queue (the chunks of one snapshot), sent from a task of its own.
    async fn publish_within(&self, message: Message, limit: Duration) -> Result<(), Refused> {
        let _ = limit;
        self.publish(message)
    }
}

/// Turns a message for a topic into the payload that goes on the wire: how each side signs
/// everything it publishes (`ferrocam_protocol::signed`), without this crate knowing keys.
pub type Seal = Arc<dyn Fn(&str, &[u8]) -> Vec<u8> + Send + Sync>;

/// The publishing handle of a [`crate::Link`]. Cheap to clone; every clone feeds the same
/// bounded queue.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    seal: Option<Seal>,
    refused: Arc<AtomicU64>,
}

impl Publisher {
    pub(crate) fn new(client: AsyncClient, seal: Option<Seal>) -> Self {
        Self {
            client,
            seal,
            refused: Arc::default(),
        }
    }

    /// The payload as it goes on the wire.
    fn sealed(&self, message: Message) -> (String, Vec<u8>) {
        let payload = match &self.seal {
            Some(seal) => seal(&message.topic, &message.payload),
            None => message.payload,
        };
        (message.topic, payload)
    }

    /// Messages refused because the queue was full, since the link started (for metrics).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl Outbox for Publisher {
    /// QoS 0: a signal lost in a broker disconnect fails one session, and the viewer retries,
    /// whereas QoS 1 could deliver an answer twice.
    fn publish(&self, message: Message) -> Result<(), Refused> {
        let (topic, payload) = self.sealed(message);
        self.client
            .try_publish(topic, QoS::AtMostOnce, false, payload)
            .map_err(|e| {
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                // The first and then every 100th: an outage must not flood the log.
                if refused == 1 || refused.is_multiple_of(100) {
                    tracing::warn!(error = %e, refused, "broker queue full; dropping messages");
                }
                Refused
            })
    }

    /// Tries again every few milliseconds rather than queueing as a waiter: a waiting sender
    /// would be handed each slot the I/O loop frees before any `publish`, and a snapshot's
    /// chunks would then shut out signaling for as long as they wait.
    async fn publish_within(&self, message: Message, limit: Duration) -> Result<(), Refused> {
        let deadline = tokio::time::Instant::now() + limit;
        let (topic, payload) = self.sealed(message);
        loop {
            let attempt =
                self.client
                    .try_publish(topic.clone(), QoS::AtMostOnce, false, payload.clone());
            if attempt.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Refused);
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }
}

/// An in-process outbox: what is "published" arrives on the channel's receiver. Never full.
#[async_trait::async_trait]
impl Outbox for tokio::sync::mpsc::UnboundedSender<Message> {
    fn publish(&self, message: Message) -> Result<(), Refused> {
        self.send(message).map_err(|_| Refused)
    }
}

/// A [`Seal`] that signs every payload with `signer` (see `ferrocam_protocol::signed`), stamped
/// with the wall clock.
pub fn signing_seal(signer: Arc<ferrocam_protocol::signed::Signer>) -> Seal {
    Arc::new(move |topic, msg| signer.seal(topic, msg, now_ms()))
}

/// Unix time in milliseconds (0 for a clock before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
