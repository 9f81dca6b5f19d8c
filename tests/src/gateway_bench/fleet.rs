//! The simulated devices of the gateway benchmark: one rumqttc client each, with a retained
//! `online` status, an `offline` last will, and a canned answer to every offer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferrocam_protocol::{
    DeviceId, DeviceStatus, FromDevice, MAX_SIGNAL_PAYLOAD, PROTOCOL_VERSION, Party, Reply,
    Request, ToDevice, topics,
};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};

/// The simulated device's answer, candidates included (a `trickle: false` answer).
pub(super) const ANSWER_SDP: &str = "v=0\r\n\
o=- 1790000000000000000 1 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:simd\r\n\
a=ice-pwd:simulatedsimulatedsimu\r\n\
a=fingerprint:sha-256 1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08:6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64\r\n\
a=setup:active\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=rtcp-mux\r\n\
a=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n\
a=end-of-candidates\r\n";

/// Counters shared by every simulated device.
#[derive(Default)]
pub(super) struct SimStats {
    /// Connection errors (each is followed by a reconnect).
    pub(super) errors: AtomicU64,
    pub(super) answered: AtomicU64,
    /// Answers the client's request queue had no room for.
    pub(super) dropped: AtomicU64,
}

/// The simulated devices; dropping it disconnects them all (without goodbyes: last wills).
pub(super) struct Fleet {
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(super) stats: Arc<SimStats>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What every simulated device signs and logs in with. They share one enrollment's secrets
/// (the bench lists each id with that enrollment's public key and password digest): the
/// gateway's work per message, a signature check against the device's listed key, is the same.
#[derive(Clone)]
pub(super) struct SimKeys {
    pub(super) signer: Arc<ferrocam_protocol::signed::Signer>,
    pub(super) password: String,
}

/// The answer to `payload` if it is an offer for `me` whose reply topic is `me`'s own. The
/// gateway's signature is not checked here (the device's gate is tested elsewhere); the
/// request is read from inside it.
pub(super) fn answer(me: &DeviceId, payload: &[u8]) -> Option<(String, Vec<u8>)> {
    let wrapper: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let request = serde_json::to_vec(wrapper.get("msg")?).ok()?;
    let envelope = Request::decode(&request).ok()?;
    if envelope.device != *me || !matches!(envelope.body, ToDevice::Offer { .. }) {
        return None;
    }
    let reply_to = envelope.reply_to?;
    let (device, _instance) = topics::parse_device_reply(&reply_to)?;
    if device != *me {
        return None;
    }
    let reply = Reply::new(
        Party::Device(me.clone()),
        me.clone(),
        envelope.session,
        FromDevice::Answer {
            sdp: ANSWER_SDP.to_owned(),
        },
    );
    Some((reply_to, reply.encode()))
}

/// One simulated device: connect, announce, answer offers, reconnect after errors.
pub(super) fn spawn_device(
    id: DeviceId,
    port: u16,
    epoch: u64,
    stats: Arc<SimStats>,
    keys: SimKeys,
) -> tokio::task::JoinHandle<()> {
    let status_topic = topics::device_status(&id);
    let signal_topic = topics::device_signal(&id);
    let now = ferrocam_mqtt::now_ms;
    let status = |online: bool| {
        let msg = serde_json::to_vec(&DeviceStatus {
            v: PROTOCOL_VERSION,
            device: id.clone(),
            online,
            epoch,
            seq: 0,
            version: "bench-sim".to_owned(),
            capabilities: None,
        })
        .expect("status serializes");
        keys.signer.seal(&status_topic, &msg, now())
    };
    let online = status(true);
    let mut options = MqttOptions::new(topics::device_client_id(&id), "127.0.0.1", port);
    options
        .set_credentials(id.to_string(), keys.password.clone())
        .set_keep_alive(Duration::from_secs(45))
        .set_clean_session(true)
        .set_max_packet_size(MAX_SIGNAL_PAYLOAD * 2, MAX_SIGNAL_PAYLOAD * 2)
        .set_last_will(LastWill::new(
            &status_topic,
            status(false),
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut events) = AsyncClient::new(options, 8);
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // Subscribe before announcing, so no offer can come before the
                    // subscription. `try_`: only this loop drains the request queue.
                    let _ = client.try_subscribe(&signal_topic, QoS::AtMostOnce);
                    let _ =
                        client.try_publish(&status_topic, QoS::AtLeastOnce, true, online.clone());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some((topic, payload)) = answer(&id, &p.payload) {
                        let payload = keys.signer.seal(&topic, &payload, now());
                        match client.try_publish(topic, QoS::AtMostOnce, false, payload) {
                            Ok(()) => stats.answered.fetch_add(1, Ordering::Relaxed),
                            Err(_) => stats.dropped.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::{INSTANCE, OFFER_SDP};
    use super::*;

    fn signed(request: Vec<u8>) -> Vec<u8> {
        let seed = ferrocam_protocol::signed::generate_seed();
        let gateway = ferrocam_protocol::signed::Signer::from_seed_base64(&seed).unwrap();
        gateway.seal("ferrocam/v1/devices/sim-00001/signal", &request, 1)
    }

    #[test]
    fn simulated_devices_answer_only_their_own_offers() {
        let me = DeviceId::parse("sim-00001").unwrap();
        let session = ferrocam_protocol::SessionId::from_random([3; 16]);
        let offer = |device: &str, reply_to: &str| {
            let request = Request::new(
                Party::Gateway(ferrocam_protocol::InstanceId::parse(INSTANCE).unwrap()),
                DeviceId::parse(device).unwrap(),
                session.clone(),
                ToDevice::Offer {
                    sdp: OFFER_SDP.to_owned(),
                    trickle: false,
                    role: Default::default(),
                    grant: None,
                },
            )
            .reply_to(reply_to.to_owned())
            .encode();
            signed(request)
        };
        let own = "ferrocam/v1/devices/sim-00001/reply/gw-bench";
        let (topic, payload) = answer(&me, &offer("sim-00001", own)).unwrap();
        assert_eq!(topic, own);
        let reply = Reply::decode(&payload).unwrap();
        assert_eq!(reply.from, Party::Device(me.clone()));
        assert_eq!(reply.session, session);
        assert!(matches!(reply.body, FromDevice::Answer { .. }));
        assert!(answer(&me, &offer("sim-00002", own)).is_none());
        assert!(
            answer(
                &me,
                &offer("sim-00001", "ferrocam/v1/devices/sim-00002/reply/gw")
            )
            .is_none()
        );
    }
}
