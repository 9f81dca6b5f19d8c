//! A plain MQTT client for tests that talk to brokers and devices directly.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// A connected client and the publishes it receives.
pub struct TestMqtt {
    pub client: AsyncClient,
    pub received: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    /// Subscriptions the broker refused (SUBACK failure), e.g. by ACL.
    pub refused_subscriptions: usize,
    task: tokio::task::JoinHandle<()>,
}

impl TestMqtt {
    /// Connects to `127.0.0.1:port` and subscribes to `filters`; returns once subscribed.
    pub async fn connect(port: u16, client_id: &str, filters: &[&str]) -> anyhow::Result<Self> {
        Self::connect_as(port, client_id, None, filters).await
    }

    /// [`Self::connect`] with a broker username and password.
    pub async fn connect_as(
        port: u16,
        client_id: &str,
        login: Option<(&str, &str)>,
        filters: &[&str],
    ) -> anyhow::Result<Self> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, pass)) = login {
            options.set_credentials(user, pass);
        }
        let (client, mut events) = AsyncClient::new(options, 64);
        for filter in filters {
            client.subscribe(*filter, QoS::AtMostOnce).await?;
        }
        let (tx, received) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let mut pending_acks = filters.len();
        let mut refused = 0;
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        refused += ack
                            .return_codes
                            .iter()
                            .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                            .count();
                        pending_acks = pending_acks.saturating_sub(1);
                        if pending_acks == 0
                            && let Some(ready) = ready_tx.take()
                        {
                            let _ = ready.send(refused);
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) if pending_acks == 0 => {
                        if let Some(ready) = ready_tx.take() {
                            let _ = ready.send(0);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let ready = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
        let refused_subscriptions = match ready {
            Ok(Ok(refused)) => refused,
            // The polling task would go on reconnecting under this client id and take over
            // the session of the caller's next attempt.
            Ok(Err(_)) | Err(_) => {
                task.abort();
                anyhow::bail!("{client_id}: not subscribed on port {port} within 10 s");
            }
        };
        Ok(Self {
            client,
            received,
            refused_subscriptions,
            task,
        })
    }

    /// Connects as enrolled device `device` (its client id and broker login).
    pub async fn as_device(
        port: u16,
        device: &crate::creds::Enrollment,
        filters: &[&str],
    ) -> anyhow::Result<Self> {
        let id = ferrocam_protocol::DeviceId::parse(&device.id)?;
        let client_id = ferrocam_protocol::topics::device_client_id(&id);
        Self::connect_as(port, &client_id, Some(device.login()), filters).await
    }

    /// Whether the broker accepts one CONNECT with these client id and login (a CONNACK
    /// with success) rather than refusing it or closing the connection, within 5 s.
    pub async fn admitted(
        port: u16,
        client_id: &str,
        login: Option<(&str, &str)>,
    ) -> anyhow::Result<bool> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        if let Some((user, pass)) = login {
            options.set_credentials(user, pass);
        }
        let (_client, mut events) = AsyncClient::new(options, 4);
        let first = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        return ack.code == rumqttc::ConnectReturnCode::Success;
                    }
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
        .await?;
        Ok(first)
    }

    /// Publishes at QoS 0.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtMostOnce, false, payload.into())
            .await?;
        Ok(())
    }

    /// The next publish received within `timeout`, if any.
    pub async fn next(&mut self, timeout: Duration) -> Option<(String, Vec<u8>)> {
        tokio::time::timeout(timeout, self.received.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for TestMqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}
