//! The broker link both sides share (`ferrocam_mqtt::Link`), against a real Mosquitto: it
//! greets every connection (subscriptions and a birth naming the connection), comes back by
//! itself after the broker goes away, refuses at once when its bounded queue is full while
//! keeping what it holds, and flushes everything queued before it says goodbye at shutdown.

use std::path::PathBuf;
use std::time::Duration;

use ferrocam_mqtt::{
    BrokerAddr, BrokerSettings, Link, LinkEvent, LinkOptions, Message, Outbox, Presence, Publisher,
    Refused, Retained, Step,
};
use ferrocam_tests::mqtt::TestMqtt;
use ferrocam_tests::process::{Process, free_port, workspace_root};
use ferrocam_tests::proxy::FrontDoor;
use ferrocam_tests::stack::start_mosquitto;

/// Long enough for anything on loopback; only reached when something is broken.
const WAIT: Duration = Duration::from_secs(10);

/// Birth `up <n>` and will `down <n>` on `t/status`.
struct Numbered;

impl Presence for Numbered {
    fn birth(&mut self, connection: u64) -> Retained {
        Retained {
            topic: "t/status".into(),
            payload: format!("up {connection}").into_bytes(),
        }
    }
    fn will(&mut self, connection: u64) -> Retained {
        Retained {
            topic: "t/status".into(),
            payload: format!("down {connection}").into_bytes(),
        }
    }
}

fn log_dir(test: &str) -> PathBuf {
    let dir = workspace_root().join("target/e2e-logs").join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn link(port: u16, queue: usize) -> (Publisher, Link) {
    let settings = BrokerSettings {
        urls: BrokerAddr::parse_list(&format!("mqtt://127.0.0.1:{port}")).unwrap(),
        ca_file: None,
        password_file: None,
        password: None,
    };
    Link::new(
        &settings,
        LinkOptions {
            client_id: format!("link-test-{port}"),
            greeting: vec![Step::Subscribe("t/in".into()), Step::Birth],
            presence: Some(Box::new(Numbered)),
            queue,
            settle_after: None,
            seal: None,
        },
    )
    .unwrap()
}

/// Polls the link until `pick` accepts an event.
async fn until<T>(link: &mut Link, what: &str, mut pick: impl FnMut(LinkEvent) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(found) = pick(link.next().await) {
                return found;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn up(link: &mut Link) -> u64 {
    until(link, "the link to come up", |e| match e {
        LinkEvent::Up { connection } => Some(connection),
        _ => None,
    })
    .await
}

/// Drives the link in the background, forwarding its messages' payloads.
fn drive(mut link: Link) -> tokio::sync::mpsc::UnboundedReceiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            if let LinkEvent::Message { payload, .. } = link.next().await {
                let _ = tx.send(payload.to_vec());
            }
        }
    });
    rx
}

fn message(topic: &str, payload: impl Into<Vec<u8>>) -> Message {
    Message {
        topic: topic.into(),
        payload: payload.into(),
    }
}

async fn expect(observer: &mut TestMqtt, want: &str) {
    let (_, got) = observer
        .next(WAIT)
        .await
        .unwrap_or_else(|| panic!("nothing arrived; wanted {want:?}"));
    assert_eq!(String::from_utf8_lossy(&got), want);
}

#[tokio::test]
async fn every_connection_is_greeted_and_a_broker_restart_is_ridden_out() {
    let dir = log_dir("mqtt_link_restart");
    let port = free_port();
    let mut broker: Process = start_mosquitto(port, None, &dir).await.unwrap();
    let (_publisher, mut link) = link(port, 16);
    assert_eq!(up(&mut link).await, 1);
    let mut observer = TestMqtt::connect(port, "observer-1", &["t/status"])
        .await
        .unwrap();
    expect(&mut observer, "up 1").await;
    observer.publish("t/in", "hello").await.unwrap();
    let got = until(&mut link, "the first message", |e| match e {
        LinkEvent::Message { topic, payload } => Some((topic, payload)),
        _ => None,
    })
    .await;
    assert_eq!((got.0.as_str(), &got.1[..]), ("t/in", &b"hello"[..]));

    // The broker goes away and comes back on the same port; the link notices, waits its
    // backoff, reconnects as connection 2, and subscribes and announces again by itself.
    broker.kill();
    until(&mut link, "the loss to be noticed", |e| {
        matches!(e, LinkEvent::Down { .. }).then_some(())
    })
    .await;
    let _broker = start_mosquitto(port, None, &dir).await.unwrap();
    assert_eq!(up(&mut link).await, 2);
    let mut observer = TestMqtt::connect(port, "observer-2", &["t/status"])
        .await
        .unwrap();
    expect(&mut observer, "up 2").await;
    observer.publish("t/in", "again").await.unwrap();
    let got = until(&mut link, "a message after the restart", |e| match e {
        LinkEvent::Message { payload, .. } => Some(payload),
        _ => None,
    })
    .await;
    assert_eq!(&got[..], b"again");
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_what_it_holds_goes_out_in_order() {
    let dir = log_dir("mqtt_link_queue");
    let port = free_port();
    let _broker = start_mosquitto(port, None, &dir).await.unwrap();
    let mut observer = TestMqtt::connect(port, "observer", &["t/out"])
        .await
        .unwrap();
    // The link reaches the broker through a door that turns it away (an outage), so nothing
    // drains its queue.
    let door = FrontDoor::start(free_port()).await.unwrap();
    let (publisher, link) = link(door.port(), 4);
    let _received_by_link = drive(link);
    for i in 0..4 {
        publisher
            .publish(message("t/out", format!("m{i}")))
            .unwrap();
    }
    assert_eq!(publisher.publish(message("t/out", "m4")), Err(Refused));
    assert_eq!(publisher.refused(), 1);

    // The broker is reachable again: what the queue held goes out, in order.
    door.switch_to(port);
    for i in 0..4 {
        expect(&mut observer, &format!("m{i}")).await;
    }
    // And nothing more: the refused message is gone. The probe is published through the link
    // after the queued ones, so its arrival proves everything before it was delivered.
    eventually_publish(&publisher, "probe").await;
    expect(&mut observer, "probe").await;
}

/// Publishes `payload` once the queue has room again (the link drains it once connected).
async fn eventually_publish(publisher: &Publisher, payload: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while publisher.publish(message("t/out", payload)).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue never drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_flushes_everything_queued_then_says_goodbye() {
    let dir = log_dir("mqtt_link_shutdown");
    let port = free_port();
    let _broker = start_mosquitto(port, None, &dir).await.unwrap();
    let mut observer = TestMqtt::connect(port, "observer", &["t/out", "t/status"])
        .await
        .unwrap();
    let (publisher, mut link) = link(port, 64);
    assert_eq!(up(&mut link).await, 1);
    // A subscriber already listening gets the birth twice: the plain copy, then the retained.
    expect(&mut observer, "up 1").await;
    expect(&mut observer, "up 1").await;

    // Queued back to back, then shut down at once: the flush must deliver all of them
    // before the goodbye.
    for i in 0..50 {
        publisher
            .publish(message("t/out", format!("hang-up {i}")))
            .unwrap();
    }
    link.shutdown().await;
    for i in 0..50 {
        expect(&mut observer, &format!("hang-up {i}")).await;
    }
    expect(&mut observer, "down 1").await;
}
