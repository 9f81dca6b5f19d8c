//! A plain MQTT client for tests that talk to brokers and devices directly.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// A connected client and the publishes it receives.
pub struct TestMqtt {
    pub client: AsyncClient,
    pub received: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl TestMqtt {
    /// Connects to `127.0.0.1:port` and subscribes to `filters`; returns once subscribed.
    pub async fn connect(port: u16, client_id: &str, filters: &[&str]) -> anyhow::Result<Self> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(options, 64);
        for filter in filters {
            client.subscribe(*filter, QoS::AtMostOnce).await?;
        }
        let (tx, received) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let mut pending_acks = filters.len();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        pending_acks = pending_acks.saturating_sub(1);
                        if pending_acks == 0
                            && let Some(ready) = ready_tx.take()
                        {
                            let _ = ready.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) if pending_acks == 0 => {
                        if let Some(ready) = ready_tx.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx).await??;
        Ok(Self {
            client,
            received,
            task,
        })
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
