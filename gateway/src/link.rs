//! The gateway's link to the MQTT broker: device presence in, signaling replies in, requests
//! out. The connection itself (reconnects, backoff, failover, re-subscription, the bounded
//! queue, a flushing shutdown) is [`ferrocam_mqtt::Link`]; this file only says what the gateway
//! subscribes to and where incoming messages go.

use std::sync::Arc;

use ferrocam_mqtt::{BrokerSettings, Link, LinkEvent, LinkOptions, Publisher, Seal, Step};
use ferrocam_protocol::{DeviceId, DeviceStatus, Reply, topics};
use tokio::sync::watch;

use crate::devices::inbound::Gatekeeper;
use crate::relay::Relay;

/// Requests that may wait for the broker: a burst of viewers' offers, candidates and hang-ups.
/// A longer outage fills it, and further requests are refused at once (see
/// [`ferrocam_mqtt::outbox`]).
pub const QUEUE: usize = 256;

/// Creates the link for this instance (client id `ferrocam-gw-<instance>`) and the publisher
/// the relay sends through. `instance` is the relay's; `seal` signs every request with the
/// grant key, so devices can tell the gateway's requests from anyone else's.
pub fn open(
    broker: &BrokerSettings,
    instance: &ferrocam_protocol::InstanceId,
    seal: Seal,
) -> anyhow::Result<(Publisher, Link)> {
    Link::new(
        broker,
        LinkOptions {
            client_id: topics::gateway_client_id(instance),
            greeting: vec![
                Step::Subscribe(topics::all_device_status()),
                Step::Subscribe(topics::replies_to(instance)),
            ],
            presence: None,
            queue: QUEUE,
            settle_after: None,
            seal: Some(seal),
        },
    )
}

/// Runs the link until `stop` flips, then flushes what the relay queued (the hang-ups of
/// sessions that were being set up when the gateway stopped) and disconnects.
pub async fn run(
    mut link: Link,
    inbound: Inbound,
    connected: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let relay = &inbound.relay;
    let mut held = tokio::time::interval(crate::devices::inbound::HELD_STATUSES_EVERY);
    held.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        tokio::select! {
            _ = stop.changed() => {}
            _ = held.tick() => {
                for (device, status) in inbound.gate.take_held() {
                    inbound.apply_status(device, &status);
                }
            }
            event = link.next() => match event {
                LinkEvent::Up { .. } => {
                    connected.send_replace(true);
                    relay.on_link_up();
                }
                LinkEvent::Down { .. } => {
                    relay.on_link_down();
                    connected.send_replace(false);
                }
                LinkEvent::Message { topic, payload } => inbound.on_message(&topic, &payload),
            }
        }
    }
    link.shutdown().await;
}

/// Where messages from the broker go: through the gate (signatures, the status limit), then to
/// the relay.
pub struct Inbound {
    pub relay: Arc<Relay>,
    pub gate: Arc<Gatekeeper>,
}

impl Inbound {
    fn on_message(&self, topic: &str, payload: &[u8]) {
        if let Some((device, instance)) = topics::parse_device_reply(topic) {
            if &instance != self.relay.instance() {
                return;
            }
            let Some(msg) = self.gate.open(&device, topic, payload) else {
                return;
            };
            match Reply::decode(msg) {
                Ok(envelope) => self.relay.on_reply(&device, envelope),
                Err(e) => tracing::warn!(%device, error = %e, "dropping malformed reply"),
            }
        } else if let Some(device) = topics::parse_device_status(topic) {
            // An empty retained message (someone cleared the status) is unsigned like any
            // forgery: the gateway keeps what the device last said. A device leaves the list
            // when it is removed (`ferrocam-gateway device remove`).
            let Some(msg) = self.gate.open(&device, topic, payload) else {
                return;
            };
            if self.gate.admit_status(&device, msg) {
                self.apply_status(device, msg);
            }
        }
    }

    fn apply_status(&self, device: DeviceId, msg: &[u8]) {
        // Checked again here: a status held back by the limit, or verified just before the
        // device was removed, must not bring a removed device back onto the list.
        if !self.gate.is_enrolled(&device) {
            return self.gate.drop_message(&device, "not_enrolled");
        }
        match serde_json::from_slice::<DeviceStatus>(msg) {
            Ok(status) if status.device == device => self.relay.on_status(status),
            Ok(_) => self.gate.drop_message(&device, "malformed"),
            Err(_) => self.gate.drop_message(&device, "malformed"),
        }
    }
}
