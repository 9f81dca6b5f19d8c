//! The link's I/O task: polls rumqttc's event loop, and never lets anything interrupt a poll.
//!
//! Work that has to happen later (a subscription asked again after a refusal, the second
//! greeting of `settle_after`) is done by small timer tasks through rumqttc's request queue,
//! which wakes the poll; they may wait for room in that queue, which this task drains. This
//! task itself only ever *tries* to queue (its greeting): awaiting its own queue would
//! deadlock, so what does not fit waits for its next turn.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;

use super::{LinkEvent, Shared, Step, last_will};
use crate::{Backoff, Failover};

/// How long a refused subscription waits before it is asked again.
const RESUBSCRIBE_AFTER_REFUSAL: Duration = Duration::from_secs(1);

pub(super) struct Io {
    pub(super) client: AsyncClient,
    pub(super) events: EventLoop,
    pub(super) nodes: Failover,
    pub(super) greeting: Vec<Step>,
    pub(super) settle_after: Option<Duration>,
    pub(super) shared: Arc<Shared>,
    pub(super) out: mpsc::Sender<LinkEvent>,
    pub(super) backoff: Backoff,
    /// Greeting steps not yet queued because rumqttc's queue was full.
    pub(super) unqueued: VecDeque<Step>,
    /// `Up` is reported once the greeting is queued.
    pub(super) owe_up: bool,
}

impl Io {
    pub(super) async fn run(mut self) {
        loop {
            self.queue_greeting();
            if self.owe_up && self.unqueued.is_empty() {
                self.owe_up = false;
                let connection = self.shared.connection.load(Ordering::Relaxed);
                if self.out.send(LinkEvent::Up { connection }).await.is_err() {
                    return; // the link was dropped
                }
            }
            let event = match self.events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    self.on_connected();
                    continue;
                }
                Ok(Event::Incoming(Packet::SubAck(ack)))
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
                {
                    // Each filter is its own SUBSCRIBE and SUBACK: one re-subscription covers
                    // every refusal until it has run.
                    if !self.shared.resubscribing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(broker = %self.broker(), "the broker refused a subscription; asking again in 1 s");
                        self.later(RESUBSCRIBE_AFTER_REFUSAL, self.subscriptions());
                    }
                    continue;
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => LinkEvent::Message {
                    topic: publish.topic,
                    payload: publish.payload,
                },
                Ok(_) => continue,
                Err(e) => {
                    if self.shared.stopping.load(Ordering::Relaxed) {
                        return; // the broker closed the connection after our DISCONNECT
                    }
                    let (down, wait) = self.on_lost(e.to_string());
                    if self.out.send(down).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            if self.out.send(event).await.is_err() {
                return;
            }
        }
    }

    fn on_connected(&mut self) {
        self.backoff.reset();
        self.shared.connected.store(true, Ordering::Relaxed);
        self.unqueued = self.greeting.iter().cloned().collect();
        self.owe_up = true;
        if let Some(after) = self.settle_after {
            self.later(after, self.greeting.clone());
        }
        let connection = self.shared.connection.load(Ordering::Relaxed);
        tracing::info!(broker = %self.broker(), connection, "connected to the broker");
    }

    /// The `Down` event for a lost connection (or failed attempt), and how long to wait.
    fn on_lost(&mut self, error: String) -> (LinkEvent, Duration) {
        let retry_in = self.backoff.next_delay();
        self.shared.connected.store(false, Ordering::Relaxed);
        self.shared.resubscribing.store(false, Ordering::Relaxed);
        self.unqueued.clear();
        self.owe_up = false;
        // Another node of a clustered broker may be up while this one is not.
        if self.nodes.len() > 1 {
            self.events.mqtt_options = self.nodes.next_node();
        }
        // The next connection is a new one: its will says so.
        let connection = self.shared.connection.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(will) = self.shared.will(connection) {
            self.events.mqtt_options.set_last_will(last_will(will));
        }
        tracing::warn!(%error, ?retry_in, next = %self.broker(), "broker connection lost");
        (LinkEvent::Down { error, retry_in }, retry_in)
    }

    /// Queues greeting steps in order until rumqttc's queue is full.
    fn queue_greeting(&mut self) {
        while let Some(step) = self.unqueued.front() {
            let queued = match step {
                Step::Subscribe(filter) => self
                    .client
                    .try_subscribe(filter.clone(), QoS::AtMostOnce)
                    .map_err(|_| ()),
                Step::Birth => {
                    if self.shared.queue_birth(&self.client) {
                        Ok(())
                    } else {
                        Err(())
                    }
                }
            };
            if queued.is_err() {
                return; // full: the next poll drains it, and the next turn tries again
            }
            self.unqueued.pop_front();
        }
    }

    /// Makes `steps` after `delay` from a timer task, if the same connection is still up then
    /// and the link is not stopping (a later connection greets by itself).
    fn later(&self, delay: Duration, steps: Vec<Step>) {
        let client = self.client.clone();
        let shared = Arc::clone(&self.shared);
        let connection = shared.connection.load(Ordering::Relaxed);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            shared.resubscribing.store(false, Ordering::Relaxed);
            let current = || {
                shared.connected.load(Ordering::Relaxed)
                    && !shared.stopping.load(Ordering::Relaxed)
                    && shared.connection.load(Ordering::Relaxed) == connection
            };
            for step in steps {
                if !current() {
                    return;
                }
                match step {
                    Step::Subscribe(filter) => {
                        let _ = client.subscribe(filter, QoS::AtMostOnce).await;
                    }
                    Step::Birth => {
                        shared.queue_birth(&client);
                    }
                }
            }
        });
    }

    /// The greeting's subscriptions alone.
    fn subscriptions(&self) -> Vec<Step> {
        self.greeting
            .iter()
            .filter(|step| matches!(step, Step::Subscribe(_)))
            .cloned()
            .collect()
    }

    /// The broker node in use (or being tried), for logs.
    fn broker(&self) -> String {
        crate::node_name(&self.events.mqtt_options)
    }
}
