//! One reconnecting MQTT connection, shared in shape by the device and the gateway.
//!
//! rumqttc splits a connection into a command handle (`AsyncClient`) and an I/O loop
//! (`EventLoop`) that must be polled for anything to happen, reconnects included. [`Link`] keeps
//! that split and adds what both sides of ferrocam need from a broker that comes and goes:
//!
//! - **Reconnection with backoff and failover.** A lost connection waits ([`Backoff`]: 250 ms
//!   doubling to 2 s, jittered) and moves on to the next node of a clustered broker.
//! - **A greeting on every connection.** Clean sessions forget subscriptions, so after every
//!   ConnAck the link makes the configured [`Step`]s again, in order: subscriptions, and the
//!   birth message saying "I am here".
//! - **A last will per connection.** Each connection is numbered from 1, and its will (from the
//!   [`Presence`]) can name that number, so the will of a dropped connection never outranks the
//!   birth of the next one.
//! - **Clustered brokers that forget.** A broker re-electing after a node loss can refuse a
//!   subscription (asked again after 1 s) or accept one it then does not serve, or a retained
//!   message it does not store (`settle_after`: greet once more a while after connecting).
//! - **A clean shutdown that flushes.** [`Link::shutdown`] publishes the will itself (a broker
//!   only sends it on an unclean drop) and a DISCONNECT behind everything already queued, then
//!   waits until the broker, having read that DISCONNECT, closes the connection: rumqttc's queue
//!   is first in, first out, so every hang-up queued before shutdown was read first.
//!
//! The event loop is polled by a task of its own ([`io`]) that nothing ever interrupts: rumqttc
//! takes a request off its queue before writing it, so a `poll` cancelled at the wrong moment
//! (by a timer in a `select!`) would lose that request. Everything else reaches the connection
//! through rumqttc's request queue, and [`Link::next`] only reads a channel, so it is
//! cancel-safe. The publishing side is a [`Publisher`] (see [`crate::outbox`]).

mod io;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, LastWill, QoS};
use tokio::sync::mpsc;

use crate::{BrokerSettings, Publisher, Seal};

/// How long a shutdown may take to flush the queue and say goodbye.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);
/// Events waiting for the owner of the link; a slow owner slows the link down, never drops.
const EVENT_QUEUE: usize = 256;

/// One thing the link does after every connect, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Subscribe to a topic filter (QoS 0: retained messages arrive at any QoS, and on NATS a
    /// QoS 1 subscription needs a JetStream consumer, which a re-electing cluster cannot make).
    Subscribe(String),
    /// Publish the [`Presence`]'s birth message: a plain copy for whoever listens now, then the
    /// retained one for whoever subscribes later (both QoS 0; see [`Shared::queue_birth`]).
    Birth,
}

/// A retained message: a birth or a will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What a client says about itself on the broker, per connection.
pub trait Presence: Send {
    /// Says connection `connection` is up (published by [`Step::Birth`] and [`Link::rebirth`]).
    fn birth(&mut self, connection: u64) -> Retained;
    /// Says connection `connection` is gone: its last will, and what a clean shutdown publishes.
    fn will(&mut self, connection: u64) -> Retained;
}

/// How one link behaves.
pub struct LinkOptions {
    /// Must be unique on the broker.
    pub client_id: String,
    /// What to do after every connect, in order.
    pub greeting: Vec<Step>,
    /// Birth and will, if this client announces itself.
    pub presence: Option<Box<dyn Presence>>,
    /// Bound of the outbound queue (requests waiting for the I/O loop).
    pub queue: usize,
    /// Greet once more this long after every connect (see the module docs), or never.
    pub settle_after: Option<Duration>,
    /// Applied to every payload this link publishes, births and wills included (signing).
    pub seal: Option<Seal>,
}

/// What [`Link::next`] reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// Connection number `connection` is up and its greeting is queued.
    Up { connection: u64 },
    /// The connection was lost (or an attempt failed); the next attempt comes in `retry_in`.
    Down { error: String, retry_in: Duration },
    /// A message on one of the subscriptions.
    Message { topic: String, payload: Bytes },
}

/// What the link's owner and its I/O task share.
struct Shared {
    presence: Mutex<Option<Box<dyn Presence>>>,
    seal: Option<Seal>,
    /// The number of the current connection (or the one being attempted), from 1.
    connection: AtomicU64,
    connected: AtomicBool,
    /// Set by [`Link::shutdown`] (under the presence lock): no birth is queued after it, and
    /// the next loss ends the I/O task instead of reconnecting.
    stopping: AtomicBool,
    /// A re-subscription after a refused SUBACK is scheduled (one at a time, however many
    /// filters were refused).
    resubscribing: AtomicBool,
    /// The connection whose plain copy of the birth is queued: one per connection, however
    /// often the retained birth is tried again (a full queue, a settle, a repair).
    announced: AtomicU64,
}

impl Shared {
    /// Queues the birth of the current connection unless the link is stopping. Under the
    /// presence lock, which `shutdown` also takes to set `stopping`: a birth is queued before
    /// the goodbye or not at all, so a clean exit never leaves "online" retained. `false` when
    /// the queue was full.
    fn queue_birth(&self, client: &AsyncClient) -> bool {
        let mut presence = self.presence.lock().expect("presence");
        let Some(presence) = presence.as_mut() else {
            return true;
        };
        if self.stopping.load(Ordering::Relaxed) {
            return true;
        }
        let connection = self.connection.load(Ordering::Relaxed);
        let birth = self.sealed(presence.birth(connection));
        // The plain copy first. A broker may store a retained message before it delivers it,
        // and read nothing more from the connection meanwhile: NATS writes it to a replicated
        // JetStream stream, which took 0.7 s now and then on a loaded three-node cluster, while
        // a plain message is passed on at once. Subscribers take the same status twice as one.
        // QoS 0 for both: NATS writes every QoS 1 publish to a second stream (for QoS 1
        // subscribers, which ferrocam never makes), another wait before the device's answers
        // get through; and a clean session resends nothing, so QoS 1 would buy nothing.
        if self.announced.load(Ordering::Relaxed) != connection {
            let plain =
                client.try_publish(&birth.topic, QoS::AtMostOnce, false, birth.payload.clone());
            if plain.is_err() {
                return false;
            }
            self.announced.store(connection, Ordering::Relaxed);
        }
        client
            .try_publish(birth.topic, QoS::AtMostOnce, true, birth.payload)
            .is_ok()
    }

    fn will(&self, connection: u64) -> Option<Retained> {
        let mut presence = self.presence.lock().expect("presence");
        presence.as_mut().map(|p| self.sealed(p.will(connection)))
    }

    fn sealed(&self, retained: Retained) -> Retained {
        match &self.seal {
            Some(seal) => Retained {
                payload: seal(&retained.topic, &retained.payload),
                topic: retained.topic,
            },
            None => retained,
        }
    }
}

/// The owner's side of a link: events from [`Link::next`], and the presence controls.
pub struct Link {
    events: mpsc::Receiver<LinkEvent>,
    client: AsyncClient,
    shared: Arc<Shared>,
    /// The I/O task; taken by `shutdown`, aborted when the link is dropped.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Link {
    /// Creates the link and its publishing handle, and starts connecting.
    pub fn new(
        settings: &BrokerSettings,
        options: LinkOptions,
    ) -> anyhow::Result<(Publisher, Self)> {
        let LinkOptions {
            client_id,
            greeting,
            presence,
            queue,
            settle_after,
            seal,
        } = options;
        let nodes = settings.connect(&client_id, |_| {})?;
        let shared = Arc::new(Shared {
            presence: Mutex::new(presence),
            seal: seal.clone(),
            connection: AtomicU64::new(1),
            connected: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            resubscribing: AtomicBool::new(false),
            announced: AtomicU64::new(0),
        });
        let mut first = nodes.first();
        if let Some(will) = shared.will(1) {
            first.set_last_will(last_will(will));
        }
        let (client, events) = crate::client(first, queue);
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let task = tokio::spawn(
            io::Io {
                client: client.clone(),
                events,
                nodes,
                greeting,
                settle_after,
                shared: Arc::clone(&shared),
                out: tx,
                backoff: crate::Backoff::default(),
                unqueued: Default::default(),
                owe_up: false,
            }
            .run(),
        );
        let link = Self {
            events: rx,
            client: client.clone(),
            shared,
            task: Some(task),
        };
        Ok((Publisher::new(client, seal), link))
    }

    /// The next event. Cancel-safe: it only reads a channel.
    pub async fn next(&mut self) -> LinkEvent {
        match self.events.recv().await {
            Some(event) => event,
            // The I/O task ended (shutdown, or a panic): nothing more will ever happen.
            None => std::future::pending().await,
        }
    }

    /// The number of the current connection (or of the next one, while down), from 1.
    pub fn connection(&self) -> u64 {
        self.shared.connection.load(Ordering::Relaxed)
    }

    /// Publishes the birth of the current connection again (the client's state changed, or the
    /// broker holds something older). Without a connection it waits for the next greeting.
    pub fn rebirth(&self) {
        if self.shared.connected.load(Ordering::Relaxed) && !self.shared.queue_birth(&self.client) {
            tracing::warn!("the broker queue is full; presence not refreshed");
        }
    }

    /// Says goodbye: the will of the current connection (retained), then a DISCONNECT behind
    /// everything queued, and waits (at most [`FLUSH_LIMIT`]) until the broker has read it.
    /// Without a connection there is nobody to flush to, and what is queued is dropped.
    pub async fn shutdown(mut self) {
        let will = {
            let mut presence = self.shared.presence.lock().expect("presence");
            self.shared.stopping.store(true, Ordering::Relaxed);
            let connection = self.connection();
            presence
                .as_mut()
                .map(|p| self.shared.sealed(p.will(connection)))
        };
        let Some(mut task) = self.task.take() else {
            return;
        };
        if !self.shared.connected.load(Ordering::Relaxed) {
            tracing::info!("no broker connection at shutdown; queued messages are dropped");
            task.abort();
            return;
        }
        let client = self.client.clone();
        let goodbye = async move {
            if let Some(will) = will {
                let _ = client
                    .publish(will.topic, QoS::AtLeastOnce, true, will.payload)
                    .await;
            }
            let _ = client.disconnect().await;
        };
        // The I/O task ends once the broker closes the connection after the DISCONNECT. Its
        // events are drained meanwhile: a task waiting to hand one over would stop polling.
        let events = &mut self.events;
        let finished = tokio::time::timeout(FLUSH_LIMIT, async {
            let flushed = async {
                goodbye.await;
                let _ = (&mut task).await;
            };
            let drained = async { while events.recv().await.is_some() {} };
            tokio::join!(flushed, drained);
        })
        .await;
        if finished.is_err() {
            tracing::warn!("the broker did not take the queue within 2 s; closing anyway");
            task.abort();
        }
    }
}

fn last_will(will: Retained) -> LastWill {
    LastWill::new(will.topic, will.payload, QoS::AtLeastOnce, true)
}
