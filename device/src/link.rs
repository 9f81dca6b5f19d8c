//! The device's link to the MQTT broker: presence, the signaling subscription, and publishing
//! what sessions say. It is the only part of the device that knows MQTT exists.
//!
//! rumqttc splits a connection into a command handle (`AsyncClient`) and an I/O loop
//! (`EventLoop`); the loop must be polled for anything to happen, including reconnects.
//! A clean session forgets subscriptions, so every ConnAck re-subscribes and re-announces.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ferrocam_protocol::{DeviceStatus, MAX_SIGNAL_PAYLOAD, topics};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};

use crate::agent::Agent;
use crate::session::Outbound;

/// Where the broker is and who we are.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
}

impl LinkSettings {
    /// Parses `mqtt://host:port` (port defaults to 1883).
    pub fn from_url(url: &str, client_id: String) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix("mqtt://") else {
            bail!("broker URL {url:?} must start with mqtt://");
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().context("broker port")?),
            None => (rest, 1883),
        };
        if host.is_empty() {
            bail!("broker URL {url:?} has no host");
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            client_id,
        })
    }
}

/// Runs the link until `shutdown` flips; then marks the device offline and disconnects.
pub async fn run(
    settings: LinkSettings,
    online: DeviceStatus,
    agent: Arc<Agent>,
    outbound: mpsc::UnboundedReceiver<Outbound>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let status_topic = topics::device_status(&online.device);
    let signal_topic = topics::device_signal(&online.device);
    let offline = DeviceStatus {
        online: false,
        capabilities: None,
        ..online.clone()
    };
    let offline_payload = serde_json::to_vec(&offline)?;

    let mut options = MqttOptions::new(settings.client_id, settings.host, settings.port);
    options
        .set_keep_alive(Duration::from_secs(10))
        .set_clean_session(true)
        // Room for any legal signal plus slack; bigger packets are refused by the broker link
        // itself, smaller-but-over-limit ones by the envelope decoder.
        .set_max_packet_size(MAX_SIGNAL_PAYLOAD * 4, MAX_SIGNAL_PAYLOAD * 4)
        .set_last_will(LastWill::new(
            &status_topic,
            offline_payload.clone(),
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut events) = AsyncClient::new(options, 64);

    let publisher = tokio::spawn(publish_outbound(client.clone(), outbound));
    let mut backoff = Backoff::default();
    while !*shutdown.borrow() {
        tokio::select! {
            _ = shutdown.changed() => {}
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    tracing::info!(topic = %signal_topic, "connected to broker");
                    client.subscribe(&signal_topic, QoS::AtMostOnce).await?;
                    client
                        .publish(&status_topic, QoS::AtLeastOnce, true, serde_json::to_vec(&online)?)
                        .await?;
                }
                Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic == signal_topic => {
                    agent.handle_payload(&publish.payload);
                }
                Ok(_) => {}
                Err(e) => {
                    let wait = backoff.next();
                    tracing::warn!(error = %e, retry_in = ?wait, "broker connection lost");
                    sleep_or_shutdown(wait, &mut shutdown).await;
                }
            }
        }
    }

    // A clean exit says "offline" itself: the broker only sends the will on an unclean drop.
    publisher.abort();
    let _ = client
        .publish(&status_topic, QoS::AtLeastOnce, true, offline_payload)
        .await;
    let _ = client.disconnect().await;
    drain(&mut events).await;
    Ok(())
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

async fn sleep_or_shutdown(wait: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.changed() => {}
    }
}

/// Exponential reconnect backoff with jitter: 250 ms doubling to 8 s, so a restarted broker is
/// not hit by every device at the same instant.
#[derive(Debug, Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let base = Duration::from_millis(250) * 2u32.saturating_pow(self.attempt.min(5));
        self.attempt += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Up to +50 % jitter.
        base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        let s = LinkSettings::from_url("mqtt://broker.lan:1884", "c".into()).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("broker.lan", 1884));
        let s = LinkSettings::from_url("mqtt://10.0.0.1", "c".into()).unwrap();
        assert_eq!(s.port, 1883);
        assert!(LinkSettings::from_url("http://x", "c".into()).is_err());
        assert!(LinkSettings::from_url("mqtt://:1", "c".into()).is_err());
    }

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::default();
        let first = b.next();
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(375));
        for _ in 0..10 {
            b.next();
        }
        let capped = b.next();
        assert!(capped >= Duration::from_secs(8) && capped <= Duration::from_secs(12));
        b.reset();
        assert!(b.next() <= Duration::from_millis(375));
    }
}
