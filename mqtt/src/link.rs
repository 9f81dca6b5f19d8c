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
//!   subscription (retried after 1 s) or accept one it then does not serve, or a retained
//!   message it does not store (`settle_after`: greet once more a while after connecting).
//! - **A clean shutdown that flushes.** [`Link::shutdown`] publishes the will itself (a broker
//!   only sends it on an unclean drop) and a DISCONNECT behind everything already queued, then
//!   polls until the broker, having read that DISCONNECT, closes the connection: rumqttc's queue
//!   is first in, first out, so every hang-up queued before shutdown was read first.
//!
//! The publishing side is a [`Publisher`] (see [`crate::outbox`] for its bounded queue). Nothing
//! here ever awaits that queue: only `next()` drains it, so the link queues with `try_*` calls
//! and keeps whatever did not fit for its next turn.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Packet, QoS, SubscribeReasonCode};
use tokio::time::Instant;

use crate::{Backoff, BrokerSettings, Failover, Publisher};

/// How long a refused subscription waits before it is asked again.
const RESUBSCRIBE_AFTER_REFUSAL: Duration = Duration::from_secs(1);
/// How long a shutdown may take to flush the queue and say goodbye.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// One thing the link does after every connect, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Subscribe to a topic filter (QoS 0: retained messages arrive at any QoS, and on NATS a
    /// QoS 1 subscription needs a JetStream consumer, which a re-electing cluster cannot make).
    Subscribe(String),
    /// Publish the [`Presence`]'s birth message (retained, QoS 1).
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

/// The I/O side of a link: poll [`Link::next`] for anything to happen.
pub struct Link {
    client: AsyncClient,
    events: EventLoop,
    nodes: Failover,
    greeting: Vec<Step>,
    presence: Option<Box<dyn Presence>>,
    settle_after: Option<Duration>,
    backoff: Backoff,
    /// The number of the current connection (or the one being attempted), from 1.
    connection: u64,
    connected: bool,
    /// Steps not yet queued because rumqttc's queue was full; tried again on every turn.
    unqueued: VecDeque<Step>,
    /// `Up` is reported once the greeting is queued.
    owe_up: bool,
    retry_at: Option<Instant>,
    settle_at: Option<Instant>,
    resubscribe_at: Option<Instant>,
}

impl Link {
    /// Creates the link (no I/O until the first `next()`) and its publishing handle.
    pub fn new(
        settings: &BrokerSettings,
        options: LinkOptions,
    ) -> anyhow::Result<(Publisher, Self)> {
        let LinkOptions {
            client_id,
            greeting,
            mut presence,
            queue,
            settle_after,
        } = options;
        let nodes = settings.connect(&client_id, |_| {})?;
        let mut first = nodes.first();
        if let Some(presence) = presence.as_mut() {
            first.set_last_will(last_will(presence.will(1)));
        }
        let (client, events) = crate::client(first, queue);
        let link = Self {
            client: client.clone(),
            events,
            nodes,
            greeting,
            presence,
            settle_after,
            backoff: Backoff::default(),
            connection: 1,
            connected: false,
            unqueued: VecDeque::new(),
            owe_up: false,
            retry_at: None,
            settle_at: None,
            resubscribe_at: None,
        };
        Ok((Publisher::new(client), link))
    }

    /// The broker node in use (or being tried), for logs.
    pub fn broker(&self) -> String {
        crate::node_name(&self.events.mqtt_options)
    }

    /// The number of the current connection (or of the next one, while down), from 1.
    pub fn connection(&self) -> u64 {
        self.connection
    }

    /// Drives the connection until something happens. Cancel-safe: every wait keeps its
    /// deadline in `self`, so `next()` can sit in a `select!` with other work.
    pub async fn next(&mut self) -> LinkEvent {
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            self.queue_unqueued();
            if self.owe_up && self.unqueued.is_empty() {
                self.owe_up = false;
                return LinkEvent::Up {
                    connection: self.connection,
                };
            }
            let polled = tokio::select! {
                () = sleep_until(self.settle_at) => {
                    self.settle_at = None;
                    self.unqueued.extend(self.greeting.iter().cloned());
                    continue;
                }
                () = sleep_until(self.resubscribe_at) => {
                    self.resubscribe_at = None;
                    self.unqueued.extend(self.subscriptions());
                    continue;
                }
                polled = self.events.poll() => polled,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => self.on_connected(),
                Ok(Event::Incoming(Packet::SubAck(ack)))
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
                {
                    tracing::warn!(broker = %self.broker(), "the broker refused a subscription; asking again in 1 s");
                    self.resubscribe_at
                        .get_or_insert(Instant::now() + RESUBSCRIBE_AFTER_REFUSAL);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    return LinkEvent::Message {
                        topic: publish.topic,
                        payload: publish.payload,
                    };
                }
                Ok(_) => {}
                Err(e) => return self.on_lost(e.to_string()),
            }
        }
    }

    /// Publishes the birth of the current connection again (the client's state changed, or the
    /// broker holds something older). Without a connection it waits for the next greeting.
    pub fn rebirth(&mut self) {
        if self.connected && self.presence.is_some() {
            self.unqueued.push_back(Step::Birth);
            self.queue_unqueued();
        }
    }

    /// Says goodbye: the will of the current connection (retained), then a DISCONNECT behind
    /// everything queued, and waits (at most [`FLUSH_LIMIT`]) until the broker has read it.
    /// Without a connection there is nobody to flush to, and what is queued is dropped.
    pub async fn shutdown(mut self) {
        if !self.connected {
            tracing::info!("no broker connection at shutdown; queued messages are dropped");
            return;
        }
        let will = self.presence.as_mut().map(|p| p.will(self.connection));
        let client = self.client.clone();
        let goodbye = async move {
            if let Some(will) = will {
                let _ = client
                    .publish(will.topic, QoS::AtLeastOnce, true, will.payload)
                    .await;
            }
            let _ = client.disconnect().await;
        };
        // Poll until the broker closes the connection, which it does once it has read the
        // DISCONNECT, so everything before it. Closing first instead could lose the tail: a
        // socket closed with unread input (a PUBACK, a message) sends a reset, and a reset makes
        // the broker's kernel discard what the broker had not yet read (seen in tests: the last
        // 37 of 50 queued messages, and the DISCONNECT, so the broker sent the will).
        let events = &mut self.events;
        let flush = async move { while events.poll().await.is_ok() {} };
        if tokio::time::timeout(FLUSH_LIMIT, async { tokio::join!(goodbye, flush) })
            .await
            .is_err()
        {
            tracing::warn!("the broker did not take the queue within 2 s; closing anyway");
        }
    }

    fn on_connected(&mut self) {
        self.backoff.reset();
        self.connected = true;
        self.unqueued = self.greeting.iter().cloned().collect();
        self.owe_up = true;
        self.resubscribe_at = None;
        self.settle_at = self.settle_after.map(|after| Instant::now() + after);
        tracing::info!(broker = %self.broker(), connection = self.connection, "connected to the broker");
    }

    fn on_lost(&mut self, error: String) -> LinkEvent {
        let retry_in = self.backoff.next_delay();
        self.connected = false;
        self.unqueued.clear();
        self.owe_up = false;
        self.settle_at = None;
        self.resubscribe_at = None;
        self.retry_at = Some(Instant::now() + retry_in);
        // Another node of a clustered broker may be up while this one is not.
        if self.nodes.len() > 1 {
            self.events.mqtt_options = self.nodes.next_node();
        }
        // The next connection is a new one: its will says so.
        self.connection += 1;
        if let Some(presence) = self.presence.as_mut() {
            let will = last_will(presence.will(self.connection));
            self.events.mqtt_options.set_last_will(will);
        }
        tracing::warn!(%error, ?retry_in, next = %self.broker(), "broker connection lost");
        LinkEvent::Down { error, retry_in }
    }

    /// The greeting's subscriptions alone.
    fn subscriptions(&self) -> Vec<Step> {
        self.greeting
            .iter()
            .filter(|step| matches!(step, Step::Subscribe(_)))
            .cloned()
            .collect()
    }

    /// Queues waiting steps in order until rumqttc's queue is full.
    fn queue_unqueued(&mut self) {
        while let Some(step) = self.unqueued.front() {
            let queued = match step {
                Step::Subscribe(filter) => {
                    self.client.try_subscribe(filter.clone(), QoS::AtMostOnce)
                }
                Step::Birth => match self.presence.as_mut() {
                    Some(presence) => {
                        let birth = presence.birth(self.connection);
                        self.client
                            .try_publish(birth.topic, QoS::AtLeastOnce, true, birth.payload)
                    }
                    None => Ok(()),
                },
            };
            if queued.is_err() {
                return; // full: the next poll drains it, and the next turn tries again
            }
            self.unqueued.pop_front();
        }
    }
}

fn last_will(will: Retained) -> LastWill {
    LastWill::new(will.topic, will.payload, QoS::AtLeastOnce, true)
}

/// Sleeps until `at`, or forever without it.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
