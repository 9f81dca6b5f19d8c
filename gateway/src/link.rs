//! The gateway's link to the MQTT broker: device presence in, signaling replies in, requests out.

use std::sync::Arc;
use std::time::Duration;

use ferrocam_protocol::{Backoff, BrokerAddr, DeviceStatus, Envelope, MAX_SIGNAL_PAYLOAD, topics};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use crate::relay::{Publish, Relay};

/// Runs the link forever, reconnecting with backoff; `outbound` carries the relay's requests.
pub async fn run(
    broker: BrokerAddr,
    relay: Arc<Relay>,
    mut outbound: mpsc::UnboundedReceiver<Publish>,
    connected: tokio::sync::watch::Sender<bool>,
) {
    let reply_topic = relay.reply_topic().to_owned();
    let mut options = MqttOptions::new(
        format!("ferrocam-gw-{}", relay.instance()),
        broker.host,
        broker.port,
    );
    options
        .set_keep_alive(Duration::from_secs(10))
        .set_clean_session(true)
        .set_max_packet_size(MAX_SIGNAL_PAYLOAD * 4, MAX_SIGNAL_PAYLOAD * 4);
    let (client, mut events) = AsyncClient::new(options, 256);

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
                tracing::info!(topic = %reply_topic, "gateway connected to broker");
                // Clean sessions drop subscriptions: subscribe again after every ConnAck. From a
                // task: awaiting here could deadlock, since only this loop's `poll` drains
                // rumqttc's request queue, which may be full after an outage.
                let (c, reply) = (client.clone(), reply_topic.clone());
                tokio::spawn(async move {
                    let _ = c
                        .subscribe(topics::all_device_status(), QoS::AtLeastOnce)
                        .await;
                    let _ = c.subscribe(reply, QoS::AtMostOnce).await;
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if p.topic == reply_topic {
                    match Envelope::decode(&p.payload) {
                        Ok(envelope) => relay.on_reply(envelope),
                        Err(e) => tracing::warn!(error = %e, "dropping malformed reply"),
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
                tracing::warn!(error = %e, retry_in = ?wait, "broker connection lost");
                tokio::time::sleep(wait).await;
            }
        }
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
