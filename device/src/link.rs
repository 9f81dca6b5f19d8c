//! The device's link to the MQTT broker: presence, the signaling subscription, and publishing
//! what sessions say. It is the only part of the device that knows MQTT exists.
//!
//! rumqttc splits a connection into a command handle (`AsyncClient`) and an I/O loop
//! (`EventLoop`); the loop must be polled for anything to happen, including reconnects.
//! A clean session forgets subscriptions, so every ConnAck re-subscribes and re-announces.
//!
//! Every connection gets its own number (`seq` in presence) and a last will naming it, so the
//! will of a dropped connection can never outrank the "online" of the next one (see
//! `ferrocam_protocol::presence`). The device also listens to its own status topic: a broker
//! that hands out an old will after the device is back (late keep-alive expiry, a restart)
//! leaves that will as the retained status, and the device then announces itself once more.

use std::sync::Arc;
use std::time::Duration;

use ferrocam_mqtt::BrokerSettings;
use ferrocam_protocol::{Backoff, Capabilities, DeviceStatus, topics};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Packet, QoS};
use tokio::sync::{mpsc, watch};

use crate::agent::Agent;
use crate::session::Outbound;

/// Who the device is on the broker.
pub struct Identity {
    pub broker: BrokerSettings,
    pub client_id: String,
    /// The "online" presence document (its camera state is kept current by the link).
    pub online: DeviceStatus,
}

/// What the link exchanges with the rest of the device.
pub struct Wiring {
    pub agent: Arc<Agent>,
    /// What sessions say, to publish.
    pub outbound: mpsc::UnboundedReceiver<Outbound>,
    /// Flips to `true` to stop.
    pub shutdown: watch::Receiver<bool>,
    /// Set while connected and announced.
    pub connected: watch::Sender<bool>,
    /// What the device can do right now (camera health, the stream as `video.set` left it),
    /// announced in presence whenever it changes.
    pub capabilities: watch::Receiver<Capabilities>,
    /// Counts lost connections.
    pub reconnects: prometheus_client::metrics::counter::Counter,
}

/// Runs the link until `shutdown` flips; then marks the device offline and disconnects.
pub async fn run(identity: Identity, wiring: Wiring) -> anyhow::Result<()> {
    let Identity {
        broker,
        client_id,
        mut online,
    } = identity;
    let Wiring {
        agent,
        outbound,
        mut shutdown,
        connected,
        mut capabilities,
        reconnects,
    } = wiring;
    let connected = Arc::new(connected);
    let status_topic = topics::device_status(&online.device);
    let signal_topic = topics::device_signal(&online.device);
    online.seq = 1;
    let mut nodes = broker.connect(&client_id, |options| {
        options.set_last_will(last_will(&status_topic, &online));
    })?;
    let (client, mut events) = ferrocam_mqtt::client(nodes.first(), 64);
    // When the device last answered a stale retained status, and when it will answer the next
    // one: at most one repair a second, so a broker replaying old wills (or a forger) cannot
    // make it publish in a loop, yet a stale will seen within that second is still answered.
    let mut last_repair: Option<tokio::time::Instant> = None;
    let mut repair_at: Option<tokio::time::Instant> = None;

    let publisher = tokio::spawn(publish_outbound(client.clone(), outbound));
    let mut backoff = Backoff::default();
    // When to subscribe and announce presence once more after a connect (see REANNOUNCE_AFTER).
    let mut reannounce_at: Option<tokio::time::Instant> = None;
    while !*shutdown.borrow() {
        tokio::select! {
            _ = shutdown.changed() => {}
            () = sleep_until(repair_at) => {
                repair_at = None;
                last_repair = Some(tokio::time::Instant::now());
                tracing::info!("the broker holds an old will as this device's status; announcing again");
                if let Err(e) = client.try_publish(&status_topic, QoS::AtLeastOnce, true, serde_json::to_vec(&online)?) {
                    tracing::warn!(error = %e, "could not queue the presence repair");
                }
            }
            () = sleep_until(reannounce_at) => {
                reannounce_at = None;
                // Subscribe again too: a clustered broker re-electing after a node loss can
                // acknowledge a subscription it then does not serve (NATS, seen in CI), and a
                // device that shows online but never hears an offer is the worst failure.
                // Subscribing to the same filter again replaces the subscription; it is harmless.
                if let Err(e) = client.try_subscribe(&signal_topic, QoS::AtMostOnce) {
                    tracing::warn!(error = %e, "could not queue the re-subscription");
                }
                if let Err(e) = client.try_publish(&status_topic, QoS::AtLeastOnce, true, serde_json::to_vec(&online)?) {
                    tracing::warn!(error = %e, "could not queue the presence re-announce");
                }
            }
            Ok(()) = capabilities.changed() => {
                // Presence carries the camera's health and the stream's shape: re-announce on
                // every change, so pages and the REST API never show a stale size or rate.
                let caps = capabilities.borrow_and_update().clone();
                tracing::info!(camera = ?caps.camera, video = ?caps.video, "capabilities changed");
                online.capabilities = Some(caps);
                if let Err(e) = client.try_publish(&status_topic, QoS::AtLeastOnce, true, serde_json::to_vec(&online)?) {
                    tracing::warn!(error = %e, "could not queue the new capabilities");
                }
            }
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    reannounce_at = Some(tokio::time::Instant::now() + REANNOUNCE_AFTER);
                    tracing::info!(topic = %signal_topic, broker = %ferrocam_mqtt::node_name(&events.mqtt_options), "connected to broker");
                    // Queued from a task: awaiting here could deadlock, since only this loop's
                    // `poll` drains rumqttc's request queue, which may be full after an outage.
                    // Subscribe first: the broker handles both in order, so no offer can arrive
                    // for a device that has announced itself but not yet subscribed.
                    // The own status topic comes last, so the retained message it brings is this
                    // announcement unless an older will overtook it.
                    let (c, topic, status) = (client.clone(), status_topic.clone(), serde_json::to_vec(&online)?);
                    let signal = signal_topic.clone();
                    let connected = connected.clone();
                    tokio::spawn(async move {
                        let subscribed = c.subscribe(signal, QoS::AtMostOnce).await;
                        let announced = c.publish(&topic, QoS::AtLeastOnce, true, status).await;
                        let watching = c.subscribe(topic, QoS::AtMostOnce).await;
                        if subscribed.is_ok() && announced.is_ok() && watching.is_ok() {
                            connected.send_replace(true);
                        }
                    });
                }
                Ok(Event::Incoming(Packet::SubAck(ack)))
                    if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) =>
                {
                    // A broker busy re-electing after a node loss may refuse; without the
                    // subscription no offer would ever arrive, so ask again.
                    tracing::warn!("the broker refused the signal subscription; retrying in 1 s");
                    let (c, signal) = (client.clone(), signal_topic.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = c.subscribe(signal, QoS::AtMostOnce).await;
                    });
                }
                Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic == signal_topic => {
                    agent.handle_payload(&publish.payload);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic == status_topic => {
                    if repair_at.is_none() && outdated_by_stale_will(&publish.payload, &online) {
                        let now = tokio::time::Instant::now();
                        repair_at = Some(last_repair.map_or(now, |at| (at + MIN_REPAIR_INTERVAL).max(now)));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    reconnects.inc();
                    connected.send_replace(false);
                    let wait = backoff.next_delay();
                    // Another node of a clustered broker may be up while this one is not.
                    if nodes.len() > 1 {
                        events.mqtt_options = nodes.next_node();
                    }
                    // The next connection is a new one: its presence and its will say so.
                    online.seq += 1;
                    events.mqtt_options.set_last_will(last_will(&status_topic, &online));
                    tracing::warn!(error = %e, retry_in = ?wait, next = %ferrocam_mqtt::node_name(&events.mqtt_options), "broker connection lost");
                    sleep_or_shutdown(wait, &mut shutdown).await;
                }
            }
        }
    }

    // A clean exit says "offline" itself: the broker only sends the will on an unclean drop.
    publisher.abort();
    let _ = client
        .publish(
            &status_topic,
            QoS::AtLeastOnce,
            true,
            offline_payload(&online),
        )
        .await;
    let _ = client.disconnect().await;
    drain(&mut events).await;
    Ok(())
}

/// A clustered broker that just lost a node can acknowledge a retained publish without storing
/// it, or a subscription without serving it, while it re-elects (measured on NATS: 4–8 s).
/// The device subscribes and announces presence once more this long after every connect, so
/// gateways that subscribe later still see it and its offers still arrive.
const REANNOUNCE_AFTER: Duration = Duration::from_secs(15);

/// At most one presence repair this often (see `outdated_by_stale_will`).
const MIN_REPAIR_INTERVAL: Duration = Duration::from_secs(1);

/// The "offline" document of the connection `online` describes.
fn offline_payload(online: &DeviceStatus) -> Vec<u8> {
    let offline = DeviceStatus {
        online: false,
        capabilities: None,
        ..online.clone()
    };
    serde_json::to_vec(&offline).expect("a status always serializes")
}

/// The last will of the connection `online` describes: retained, so a gateway that starts later
/// still learns the device is gone.
fn last_will(status_topic: &str, online: &DeviceStatus) -> LastWill {
    LastWill::new(
        status_topic,
        offline_payload(online),
        QoS::AtLeastOnce,
        true,
    )
}

/// Whether `payload`, seen on the device's own status topic while connected, is the will of an
/// earlier connection (or run) of this device: then the broker's retained status says offline
/// although the device is here, and gateways that subscribe from now on would believe it.
/// Anything else (its own announcement, garbage, another device's document) needs nothing.
fn outdated_by_stale_will(payload: &[u8], online: &DeviceStatus) -> bool {
    serde_json::from_slice::<DeviceStatus>(payload).is_ok_and(|seen| {
        !seen.online && seen.device == online.device && seen.connection() < online.connection()
    })
}

/// Publishes what sessions say. Signaling uses QoS 0: a lost message only matters across a
/// broker disconnect, and then the session fails and the viewer retries, whereas QoS 1 could
/// deliver an answer twice.
async fn publish_outbound(client: AsyncClient, mut outbound: mpsc::UnboundedReceiver<Outbound>) {
    while let Some(Outbound { topic, envelope }) = outbound.recv().await {
        if let Err(e) = client
            .publish(topic, QoS::AtMostOnce, false, envelope.encode())
            .await
        {
            tracing::warn!(error = %e, "could not queue a signal for the broker");
        }
    }
}

/// Lets the event loop flush the offline status and the DISCONNECT, for at most a second.
async fn drain(events: &mut EventLoop) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while events.poll().await.is_ok() {}
    })
    .await;
}

/// Sleeps until `at`, or forever without it.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn sleep_or_shutdown(wait: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocam_protocol::DeviceId;

    fn status(online: bool, epoch: u64, seq: u64) -> DeviceStatus {
        DeviceStatus {
            v: 1,
            device: DeviceId::parse("cam").unwrap(),
            online,
            epoch,
            seq,
            version: String::new(),
            capabilities: None,
        }
    }

    fn payload(status: &DeviceStatus) -> Vec<u8> {
        serde_json::to_vec(status).unwrap()
    }

    #[test]
    fn an_older_connections_will_is_repaired() {
        let me = status(true, 10, 3);
        assert!(outdated_by_stale_will(&payload(&status(false, 10, 2)), &me));
        assert!(outdated_by_stale_will(&payload(&status(false, 9, 7)), &me));
    }

    #[test]
    fn nothing_else_is() {
        let me = status(true, 10, 3);
        // Its own announcement coming back, and the current connection's own will.
        assert!(!outdated_by_stale_will(&payload(&me), &me));
        assert!(!outdated_by_stale_will(
            &payload(&status(false, 10, 3)),
            &me
        ));
        // A newer run of the same id (another process took over): not ours to fight.
        assert!(!outdated_by_stale_will(
            &payload(&status(false, 11, 1)),
            &me
        ));
        let mut other = status(false, 1, 1);
        other.device = DeviceId::parse("other").unwrap();
        assert!(!outdated_by_stale_will(&payload(&other), &me));
        assert!(!outdated_by_stale_will(b"{not json", &me));
    }

    #[test]
    fn the_will_names_its_connection() {
        let will = last_will("ferrocam/v1/devices/cam/status", &status(true, 10, 3));
        let said: DeviceStatus = serde_json::from_slice(&will.message).unwrap();
        assert_eq!((said.online, said.epoch, said.seq), (false, 10, 3));
        assert!(will.retain);
    }
}
