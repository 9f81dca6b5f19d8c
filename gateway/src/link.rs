//! The gateway's link to the MQTT broker: device presence in, signaling replies in, requests
//! out. The connection itself (reconnects, backoff, failover, re-subscription, the bounded
//! queue, a flushing shutdown) is [`ferrocam_mqtt::Link`]; this file only says what the gateway
//! subscribes to and where incoming messages go.

use std::sync::Arc;

use ferrocam_mqtt::{BrokerSettings, Link, LinkEvent, LinkOptions, Publisher, Step};
use ferrocam_protocol::{DeviceStatus, Reply, topics};
use tokio::sync::watch;

use crate::relay::Relay;

/// Requests that may wait for the broker: a burst of viewers' offers, candidates and hang-ups.
/// A longer outage fills it, and further requests are refused at once (see
/// [`ferrocam_mqtt::outbox`]).
pub const QUEUE: usize = 256;

/// Creates the link for this instance (client id `ferrocam-gw-<instance>`) and the publisher
/// the relay sends through. `instance` is the relay's.
pub fn open(
    broker: &BrokerSettings,
    instance: &ferrocam_protocol::InstanceId,
) -> anyhow::Result<(Publisher, Link)> {
    Link::new(
        broker,
        LinkOptions {
            client_id: format!("ferrocam-gw-{instance}"),
            greeting: vec![
                Step::Subscribe(topics::all_device_status()),
                Step::Subscribe(topics::replies_to(instance)),
            ],
            presence: None,
            queue: QUEUE,
            settle_after: None,
        },
    )
}

/// Runs the link until `stop` flips, then flushes what the relay queued (the hang-ups of
/// sessions that were being set up when the gateway stopped) and disconnects.
pub async fn run(
    mut link: Link,
    relay: Arc<Relay>,
    connected: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        tokio::select! {
            _ = stop.changed() => {}
            event = link.next() => match event {
                LinkEvent::Up { .. } => {
                    connected.send_replace(true);
                    relay.on_link_up();
                }
                LinkEvent::Down { .. } => {
                    relay.on_link_down();
                    connected.send_replace(false);
                }
                LinkEvent::Message { topic, payload } => on_message(&relay, &topic, &payload),
            }
        }
    }
    link.shutdown().await;
}

fn on_message(relay: &Relay, topic: &str, payload: &[u8]) {
    if let Some((device, instance)) = topics::parse_device_reply(topic) {
        if &instance != relay.instance() {
            return;
        }
        match Reply::decode(payload) {
            Ok(envelope) => relay.on_reply(&device, envelope),
            Err(e) => tracing::warn!(%device, error = %e, "dropping malformed reply"),
        }
    } else if let Some(device) = topics::parse_device_status(topic) {
        on_status(relay, device, payload);
    }
}

fn on_status(relay: &Relay, device: ferrocam_protocol::DeviceId, payload: &[u8]) {
    if payload.is_empty() {
        // An empty retained message deletes the status: the device was decommissioned.
        relay.forget_device(&device);
        return;
    }
    match serde_json::from_slice::<DeviceStatus>(payload) {
        Ok(status) if status.device == device => relay.on_status(status),
        Ok(_) => tracing::warn!(%device, "status names a different device than its topic"),
        Err(e) => tracing::warn!(%device, error = %e, "dropping malformed status"),
    }
}
