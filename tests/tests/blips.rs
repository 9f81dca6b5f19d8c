//! Surviving broker-connection blips: after its connection drops, a device is online again on
//! every gateway within a second and streams to a new viewer within two, however many times it
//! happens, on every broker the product supports.
//!
//! Each round checks the device's connection number (`seq` in presence) grew: the gateway
//! must be showing the *new* connection's "online", not a stale one it never let go of.

use std::time::{Duration, Instant};

use ferrocam_tests::blip::drop_connections;
use ferrocam_tests::{Stack, StackOptions, WhepPlayer, eventually};
use serde_json::Value;

/// What gateway `i` says about the device right now.
fn presence(stack: &Stack, i: usize) -> anyhow::Result<Value> {
    let url = stack.gateway_url(i, &format!("api/devices/{}", stack.device_id));
    Ok(ureq::get(&url)
        .header("authorization", &stack.bearer())
        .call()?
        .body_mut()
        .read_json()?)
}

fn seq_of(status: &Value) -> u64 {
    status["seq"].as_u64().unwrap_or(0)
}

/// Waits until every gateway lists the device online with a connection newer than `after`;
/// returns the connection number and how long that took from `since`.
async fn back_online(stack: &Stack, after: u64, since: Instant) -> anyhow::Result<(u64, Duration)> {
    let mut seq = 0;
    for i in 0..stack.gateways.len() {
        seq = eventually(
            &format!("gateway {i} to list the device online on a connection after #{after}"),
            Duration::from_secs(15),
            || async {
                let status = presence(stack, i)?;
                Ok((status["online"] == true && seq_of(&status) > after).then(|| seq_of(&status)))
            },
        )
        .await?;
    }
    Ok((seq, since.elapsed()))
}

/// A new WHEP viewer through gateway `i` decodes a frame; returns how long from the POST.
async fn new_viewer_streams(stack: &Stack, i: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let player =
        WhepPlayer::connect(&stack.gateway_url(i, &format!("whep/{}", stack.device_id))).await?;
    player.wait_frames(1, Duration::from_secs(10)).await?;
    let took = started.elapsed();
    player.delete().await?;
    Ok(took)
}

/// Prints the samples and checks the bounds on every one of them: back online within
/// `online_bound`, and a new viewer streaming within 2 s of asking.
fn report(what: &str, online: &[Duration], online_bound: Duration, streaming: &[Duration]) {
    let ms = |d: &[Duration]| d.iter().map(|d| d.as_millis()).collect::<Vec<_>>();
    eprintln!(
        "{what}: online again after {:?} ms; new viewer streaming after {:?} ms",
        ms(online),
        ms(streaming)
    );
    for (round, took) in online.iter().enumerate() {
        assert!(
            *took <= online_bound,
            "{what}, round {}: online again only after {took:?}",
            round + 1
        );
    }
    for (round, took) in streaming.iter().enumerate() {
        assert!(
            *took <= Duration::from_secs(2),
            "{what}, round {}: a new viewer streamed only after {took:?}",
            round + 1
        );
    }
}

/// Drops the device's connection to one of `ports` `rounds` times in a row; after each drop,
/// waits for every gateway to list it online on a newer connection and for a new viewer to
/// stream. Returns both times of every round.
async fn drop_rounds(
    stack: &Stack,
    ports: &[u16],
    rounds: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let pid = stack.device.as_ref().expect("device started").pid();
    let mut seq = seq_of(&presence(stack, 0)?);
    let (mut online, mut streaming) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let dropped_at = Instant::now();
        let dropped = drop_connections(pid, ports)?;
        assert_eq!(
            dropped, 1,
            "round {round}: the device's broker connection was not found"
        );
        let (now, took) = back_online(stack, seq, dropped_at).await?;
        seq = now;
        online.push(took);
        streaming.push(new_viewer_streams(stack, 0).await?);
    }
    Ok((online, streaming))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_dropped_connections_on_the_embedded_broker() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("blips_embedded")).await?;
    let (online, streaming) = drop_rounds(&stack, &[stack.mqtt_port], 20).await?;
    report(
        "embedded broker, 20 drops",
        &online,
        Duration::from_secs(1),
        &streaming,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_mosquitto_restarts_with_two_gateways() -> anyhow::Result<()> {
    let mut stack =
        Stack::start(StackOptions::new("blips_mosquitto").mosquitto().gateways(2)).await?;
    stack.wait_online_at(1, true).await?;
    let mut seq = seq_of(&presence(&stack, 0)?);
    let (mut online, mut streaming) = (Vec::new(), Vec::new());
    for _ in 1..=5 {
        // As `systemctl restart mosquitto` does it: SIGTERM, then start again.
        let mut broker = stack.mosquitto.take().expect("mosquitto running");
        broker.terminate(Duration::from_secs(5));
        stack.restart_broker().await?;
        let (now, took) = back_online(&stack, seq, Instant::now()).await?;
        seq = now;
        online.push(took);
        for i in 0..2 {
            streaming.push(new_viewer_streams(&stack, i).await?);
        }
    }
    // Measured from the broker accepting again: the device's next try comes within its current
    // backoff step (at most 2 s), so this bound is the backoff cap plus a reconnect.
    report(
        "Mosquitto, 5 restarts, 2 gateways",
        &online,
        Duration::from_millis(2500),
        &streaming,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_on_a_nats_cluster() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::new("blips_nats").nats_cluster()).await?;
    let nats = stack.nats.as_ref().expect("a NATS cluster");
    let ports: Vec<u16> = (0..nats.len()).map(|i| nats.mqtt_port(i)).collect();
    let (online, streaming) = drop_rounds(&stack, &ports, 5).await?;
    report(
        "NATS cluster, 5 drops",
        &online,
        Duration::from_secs(1),
        &streaming,
    );
    Ok(())
}
