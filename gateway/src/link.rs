//! The gateway's link to the MQTT broker: device presence in, signaling replies in, requests out.

use std::sync::Arc;
use std::time::Duration;

use ferrocam_mqtt::BrokerSettings;
use ferrocam_protocol::{Backoff, DeviceStatus, Reply, topics};
use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;

use crate::relay::{Publish, Relay};

/// Builds the connection settings for this instance (client id `ferrocam-gw-<instance>`).
pub fn nodes(broker: &BrokerSettings, relay: &Relay) -> anyhow::Result<ferrocam_mqtt::Failover> {
    broker.connect(&format!("ferrocam-gw-{}", relay.instance()), |_| {})
}

/// Runs the link forever, reconnecting with backoff; `outbound` carries the relay's requests.
pub async fn run(
    mut nodes: ferrocam_mqtt::Failover,
    relay: Arc<Relay>,
    mut outbound: mpsc::UnboundedReceiver<Publish>,
    connected: tokio::sync::watch::Sender<bool>,
) {
    let reply_filter = relay.reply_filter().to_owned();
    let (client, mut events) = ferrocam_mqtt::client(nodes.first(), 256);

    let publisher = client.clone();
    tokio::spawn(async move {
        while let Some(Publish { topic, payload }) = outbound.recv().await {
            if let Err(e) = publisher
                .publish(topic, QoS::AtMostOnce, false, payload)
                .await
            {
                tracing::warn!(error = %e, "could not queue a request for the broker");
            }
        }
    });

    let mut backoff = Backoff::default();
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                connected.send_replace(true);
                tracing::info!(topic = %reply_filter, broker = %ferrocam_mqtt::node_name(&events.mqtt_options), "gateway connected to broker");
                // Clean sessions drop subscriptions: subscribe again after every ConnAck.
                relay.on_link_up();
                subscribe(client.clone(), reply_filter.clone(), Duration::ZERO);
            }
            Ok(Event::Incoming(Packet::SubAck(ack)))
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
            {
                // A clustered broker refuses subscriptions while it re-elects leaders after a
                // node died (NATS: "unable to add JetStream consumer"). Without them the
                // gateway would show every device offline for good: try again.
                tracing::warn!("the broker refused a subscription; retrying in 1 s");
                subscribe(client.clone(), reply_filter.clone(), Duration::from_secs(1));
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some((device, instance)) = topics::parse_device_reply(&p.topic) {
                    if &instance != relay.instance() {
                        continue;
                    }
                    match Reply::decode(&p.payload) {
                        Ok(envelope) => relay.on_reply(&device, envelope),
                        Err(e) => tracing::warn!(%device, error = %e, "dropping malformed reply"),
                    }
                } else if let Some(device) = topics::parse_device_status(&p.topic) {
                    on_status(&relay, device, &p.payload);
                }
            }
            Ok(_) => {}
            Err(e) => {
                relay.on_link_down();
                connected.send_replace(false);
                let wait = backoff.next_delay();
                // Another node of a clustered broker may be up while this one is not.
                if nodes.len() > 1 {
                    events.mqtt_options = nodes.next_node();
                }
                tracing::warn!(error = %e, retry_in = ?wait, next = %ferrocam_mqtt::node_name(&events.mqtt_options), "broker connection lost");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Subscribes to device presence and this instance's replies, after `delay`. Both at QoS 0:
/// retained presence is delivered at any QoS, and on NATS a QoS 1 subscription needs a
/// JetStream consumer, which cannot be made while the cluster re-elects after losing a node.
/// From a task: awaiting in the event loop could deadlock, since only the loop's `poll` drains
/// rumqttc's request queue, which may be full after an outage.
fn subscribe(client: AsyncClient, reply_filter: String, delay: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = client
            .subscribe(topics::all_device_status(), QoS::AtMostOnce)
            .await;
        let _ = client.subscribe(reply_filter, QoS::AtMostOnce).await;
    });
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
