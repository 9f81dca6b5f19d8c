//! The estimator on a simulated narrow uplink: a token-bucket bottleneck like `tc tbf` (rate,
//! 150 ms of queue, drops beyond it), 10 ms each way, TWCC feedback every 50 ms, and a sender
//! whose encoder follows the estimate the way the device's does. The link steps 3000 → 1000 →
//! 500 → 3000 kbit/s, 20 s each, as in the field test.
//!
//! Everything runs on simulated time, so each run is exact and takes milliseconds.

use std::time::{Duration, Instant};

use rtc::interceptor::{BandwidthEstimator, Gcc, PacketReport};
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

use super::*;

const STEP: Duration = Duration::from_secs(20);
const STEPS_KBPS: [f64; 4] = [3000.0, 1000.0, 500.0, 3000.0];
const PROPAGATION: Duration = Duration::from_millis(10);
const MAX_QUEUE: Duration = Duration::from_millis(150);
const FEEDBACK_EVERY: Duration = Duration::from_millis(50);
/// The largest packet; a frame is split into equal packets no larger.
const PACKET_BYTES: usize = 1200;
const FPS: f64 = 30.0;
/// The share of the estimate the encoder is given (room for audio and retransmissions).
const ENCODER_SHARE: f64 = 0.85;
const BOUNDS: RateBounds = RateBounds {
    start: 2_000_000.0,
    min: 150_000.0,
    max: 2_500_000.0,
};

struct Sent {
    id: u64,
    size: usize,
    departure: Instant,
    /// `None`: the bottleneck's queue was full.
    arrival: Option<Instant>,
    reported: bool,
}

/// What happened in one second of the run.
#[derive(Debug, Clone, Copy)]
struct Second {
    link_kbps: f64,
    /// What the encoder was asked for at the end of the second.
    encoder_kbps: f64,
    /// What arrived at the viewer during the second.
    received_kbps: f64,
    /// The worst queueing delay of a packet sent during the second.
    worst_queue_ms: f64,
}

/// Runs the four steps with `estimator`, whose estimate `estimate` reads.
fn run<E: BandwidthEstimator>(mut estimator: E, estimate: impl Fn(&E) -> f64) -> Vec<Second> {
    let epoch = Instant::now();
    let link_at = |t: Instant| {
        let step = ((t - epoch).as_secs_f64() / STEP.as_secs_f64()) as usize;
        STEPS_KBPS[step.min(STEPS_KBPS.len() - 1)] * 1000.0
    };
    let end = epoch + STEP * STEPS_KBPS.len() as u32;
    let frame_interval = Duration::from_secs_f64(1.0 / FPS);

    let mut sent: Vec<Sent> = Vec::new();
    let mut busy_until = epoch;
    let mut next_frame = epoch;
    let mut next_feedback = epoch + FEEDBACK_EVERY;
    let mut seconds = Vec::new();
    let mut second = (0.0f64, 0.0f64);
    let mut next_second = epoch + Duration::from_secs(1);
    let mut encoder_bps = BOUNDS.start * ENCODER_SHARE;

    while next_feedback <= end + FEEDBACK_EVERY {
        if next_frame <= next_feedback && next_frame < end {
            // A frame: its packets leave together, as the device sends them (unpaced).
            let now = next_frame;
            let frame_bytes = encoder_bps / FPS / 8.0;
            let packets = (frame_bytes / PACKET_BYTES as f64).ceil().max(1.0);
            let size = (frame_bytes / packets).ceil() as usize;
            let rate = link_at(now);
            for i in 0..packets as usize {
                let departure = now + Duration::from_micros(20 * i as u64);
                let start = busy_until.max(departure);
                let queued = start - departure;
                second.1 = second.1.max(queued.as_secs_f64() * 1000.0);
                let arrival = (queued <= MAX_QUEUE).then(|| {
                    busy_until = start + Duration::from_secs_f64((size * 8) as f64 / rate);
                    busy_until + PROPAGATION
                });
                sent.push(Sent {
                    id: sent.len() as u64,
                    size,
                    departure,
                    arrival,
                    reported: false,
                });
            }
            next_frame += frame_interval;
        } else {
            // Feedback: every packet whose fate the viewer knows, in send order.
            let now = next_feedback;
            let seen_by = now - PROPAGATION;
            let mut reports = Vec::new();
            for packet in sent.iter_mut().filter(|p| !p.reported) {
                let known = match packet.arrival {
                    Some(at) => at <= seen_by,
                    None => packet.departure + MAX_QUEUE <= seen_by,
                };
                if !known {
                    break;
                }
                packet.reported = true;
                if packet.arrival.is_some() {
                    second.0 += (packet.size * 8) as f64;
                }
                reports.push(report(packet, epoch));
            }
            estimator.on_reports(now, &reports);
            encoder_bps = estimate(&estimator) * ENCODER_SHARE;
            if now >= next_second {
                seconds.push(Second {
                    link_kbps: link_at(now - Duration::from_millis(1)) / 1000.0,
                    encoder_kbps: encoder_bps / 1000.0,
                    received_kbps: second.0 / 1000.0,
                    worst_queue_ms: second.1,
                });
                second = (0.0, 0.0);
                next_second += Duration::from_secs(1);
            }
            next_feedback += FEEDBACK_EVERY;
        }
    }
    seconds
}

fn report(packet: &Sent, epoch: Instant) -> PacketReport {
    PacketReport {
        ssrc: 1,
        id: packet.id,
        rtp_sequence_number: packet.id as u16,
        is_twcc: true,
        twcc_sequence_number: packet.id as u16,
        size: packet.size,
        arrived: packet.arrival.is_some(),
        departure: packet.departure,
        arrival: packet.arrival.map(|at| at - epoch),
        ecn: Ecn::default(),
    }
}

/// Seconds from the start of step `step` until `ok` holds for a second of the run.
fn seconds_until(run: &[Second], step: usize, ok: impl Fn(&Second) -> bool) -> Option<usize> {
    let first = step * STEP.as_secs() as usize;
    run[first..(first + STEP.as_secs() as usize).min(run.len())]
        .iter()
        .position(ok)
        .map(|s| s + 1)
}

fn summary(name: &str, run: &[Second]) -> String {
    let down1 = seconds_until(run, 1, |s| s.encoder_kbps < 1000.0);
    let down2 = seconds_until(run, 2, |s| s.encoder_kbps < 500.0);
    let up = seconds_until(run, 3, |s| s.received_kbps >= 2100.0);
    format!(
        "{name}: below 1000 after {down1:?} s, below 500 after {down2:?} s, ≥ 70 % of 3000 after {up:?} s"
    )
}

#[test]
fn follows_a_link_down_and_back_up_within_seconds() {
    let ours = run(LinkEstimator::new(BOUNDS).0, |e| e.estimate());
    let stock = run(Gcc::new(BOUNDS.start, BOUNDS.min, BOUNDS.max), |e| {
        e.target_bitrate()
    });
    eprintln!("{}", summary("LinkEstimator", &ours));
    eprintln!("{}", summary("rtc::interceptor::Gcc", &stock));
    for (i, (s, g)) in ours.iter().zip(&stock).enumerate() {
        eprintln!(
            "{i:3} s link {:5.0}  ours: encoder {:5.0} received {:5.0} queue {:4.0} ms | Gcc: encoder {:5.0} received {:5.0} queue {:4.0} ms",
            s.link_kbps,
            s.encoder_kbps,
            s.received_kbps,
            s.worst_queue_ms,
            g.encoder_kbps,
            g.received_kbps,
            g.worst_queue_ms
        );
    }

    // Below the link within 3 s of each drop.
    assert!(seconds_until(&ours, 1, |s| s.encoder_kbps < 1000.0).is_some_and(|s| s <= 3));
    assert!(seconds_until(&ours, 2, |s| s.encoder_kbps < 500.0).is_some_and(|s| s <= 3));
    // No standing queue once adapted: after the first 3 s of each constrained step, no packet
    // waits anywhere near the bottleneck's 150 ms.
    for step in 1..=2 {
        let first = step * STEP.as_secs() as usize + 3;
        for s in &ours[first..(step + 1) * STEP.as_secs() as usize] {
            assert!(s.worst_queue_ms < 100.0, "step {step}: {s:?}");
        }
    }
    // Back to 70 % of the widened link within 15 s.
    assert!(
        seconds_until(&ours, 3, |s| s.received_kbps >= 2100.0).is_some_and(|s| s <= 15),
        "{}",
        summary("LinkEstimator", &ours)
    );
}

#[test]
fn the_estimate_is_published() {
    let (mut estimator, published) = LinkEstimator::new(BOUNDS);
    assert_eq!(published.bits_per_second(), None, "nothing before feedback");
    estimator.on_reports(Instant::now(), &[]);
    assert_eq!(
        published.bits_per_second(),
        None,
        "empty feedback says nothing"
    );
    let epoch = Instant::now();
    let packet = Sent {
        id: 0,
        size: PACKET_BYTES,
        departure: epoch,
        arrival: Some(epoch + PROPAGATION),
        reported: false,
    };
    estimator.on_reports(epoch + FEEDBACK_EVERY, &[report(&packet, epoch)]);
    assert_eq!(published.bits_per_second(), Some(estimator.estimate()));
    assert_eq!(estimator.target_bitrate(), estimator.estimate());
}

/// The delay-based rate just after the path queued while `received` bit/s arrived.
fn queued_at(received: f64) -> (DelayRate, Instant) {
    let bounds = RateBounds {
        start: 500e3,
        min: 100e3,
        max: 8e6,
    };
    let t0 = Instant::now();
    let mut rate = DelayRate::new(bounds.start, bounds);
    rate.update(t0, Usage::Over, Some(received), true);
    (rate, t0)
}

#[test]
fn loss_right_after_a_queue_does_not_lower_the_ceiling() {
    // The path queued while 517 kbit/s arrived: that is where it fills.
    let (mut rate, t0) = queued_at(517e3);
    assert_eq!(rate.ceiling, Some(517e3));
    // Loss a moment later, while what arrives is still falling from the decrease.
    rate.cut(t0 + Duration::from_millis(800), 330e3, Some(390e3));
    assert_eq!(
        rate.ceiling,
        Some(517e3),
        "the dip is not the path's ceiling"
    );
    // The path's ordinary rate (480 kbit/s, above 1.2 × the dip) for seconds proves nothing
    // new: the ceiling holds, so growth stays gentle near it.
    let mut now = t0 + Duration::from_millis(800);
    for _ in 0..3 {
        now += Duration::from_secs(1);
        rate.update(now, Usage::Normal, Some(480e3), true);
        rate.update(now, Usage::Normal, Some(480e3), true);
    }
    assert_eq!(rate.ceiling, Some(517e3));
}

#[test]
fn the_ceiling_is_the_median_of_one_episode_of_queueing() {
    // One episode on a 500 kbit/s link, decreases 440 ms apart: the first reading still counts
    // the rate from before the link narrowed, the last is our own cut draining the queue.
    let (mut rate, t0) = queued_at(655e3);
    let mut now = t0;
    for received in [534e3, 512e3, 420e3] {
        now += Duration::from_millis(440);
        rate.update(now, Usage::Over, Some(received), true);
    }
    assert_eq!(rate.ceiling, Some(523e3), "between 512 and 534");
    // A fall far below the episode's median is a path that narrowed (3.3 → 1.7 → 1.0 Mbit/s
    // when a 3 Mbit/s link became 1 Mbit/s): the episode starts again from it.
    let (mut rate, t0) = queued_at(3_300e3);
    let mut now = t0;
    for received in [1_700e3, 1_000e3, 900e3] {
        now += Duration::from_millis(440);
        rate.update(now, Usage::Over, Some(received), true);
    }
    assert_eq!(rate.ceiling, Some(950e3));
    // Once an episode is over, the next starts wherever the path filled.
    let (mut rate, t0) = queued_at(467e3);
    rate.update(t0 + Duration::from_secs(3), Usage::Over, Some(420e3), true);
    assert_eq!(rate.ceiling, Some(420e3));
}

#[test]
fn a_burst_above_the_ceiling_is_not_a_wider_link_but_a_sustained_rise_is() {
    let (mut rate, t0) = queued_at(500e3);
    let step = Duration::from_millis(250);
    let mut now = t0;
    let mut deliver = |rate: &mut DelayRate, received: f64, steps: u32| {
        for _ in 0..steps {
            now += step;
            rate.update(now, Usage::Normal, Some(received), true);
        }
    };
    // A token bucket's burst: 0.75 s at 620 kbit/s, then the link's rate again.
    deliver(&mut rate, 620e3, 3);
    deliver(&mut rate, 500e3, 4);
    assert_eq!(rate.ceiling, Some(500e3), "a burst is not a wider link");
    // The link widened: deliveries stay above 1.2× the ceiling.
    deliver(&mut rate, 700e3, 8);
    assert_eq!(rate.ceiling, None, "two seconds above it is");
}

#[test]
fn far_below_the_ceiling_the_rate_climbs_fast_and_slows_near_it() {
    let (mut rate, t0) = queued_at(500e3);
    // A deep cut for loss, to 60 % of where the path filled.
    rate.cut(t0, 300e3, Some(300e3));
    let mut now = t0;
    let mut climb = |rate: &mut DelayRate, secs: u64| {
        for _ in 0..secs * 5 {
            now += Duration::from_millis(200);
            rate.update(now, Usage::Normal, Some(rate.target * 0.9), true);
        }
        rate.target
    };
    // 50 %/s until 90 % of the ceiling: past 450 kbit/s within two seconds.
    let after_two = climb(&mut rate, 2);
    assert!(after_two >= 450e3, "{after_two}");
    // Then 7 %/s: the next second adds at most 7 %.
    let after_three = climb(&mut rate, 1);
    assert!(
        after_three <= after_two * 1.071,
        "{after_three} after {after_two}"
    );
}

/// A sender that follows `estimator` (85 % of it, a packet every 10 ms) over a path with no
/// bottleneck whose one-way delay is `delay(t)`; feedback every 50 ms. The estimate at each
/// whole second.
fn on_a_wide_path(delay: impl Fn(Duration) -> Duration, seconds: u64) -> Vec<f64> {
    let (mut estimator, _) = LinkEstimator::new(BOUNDS);
    let epoch = Instant::now();
    let mut pending: Vec<Sent> = Vec::new();
    let mut estimates = Vec::new();
    for tick in 1..=seconds * 100 {
        let departure = epoch + Duration::from_millis(10 * tick);
        let size = (estimator.estimate() * ENCODER_SHARE * 0.01 / 8.0) as usize;
        pending.push(Sent {
            id: tick,
            size,
            departure,
            arrival: Some(departure + delay(departure - epoch)),
            reported: false,
        });
        if tick % 5 == 0 {
            let now = departure;
            let reports: Vec<_> = pending
                .iter_mut()
                .filter(|p| !p.reported && p.arrival.is_some_and(|a| a <= now))
                .map(|p| {
                    p.reported = true;
                    report(p, epoch)
                })
                .collect();
            estimator.on_reports(now, &reports);
            pending.retain(|p| !p.reported);
        }
        if tick % 100 == 0 {
            estimates.push(estimator.estimate());
        }
    }
    estimates
}

#[test]
fn a_longer_path_is_not_mistaken_for_a_queue_for_long() {
    // A handover 4 s in: every packet from then on takes 200 ms longer, with no queue at all.
    let longer =
        |t: Duration| Duration::from_millis(if t < Duration::from_secs(4) { 20 } else { 220 });
    let estimates = on_a_wide_path(longer, 14);
    let before = estimates[3];
    eprintln!("estimate each second: {estimates:.0?}");
    // Draining what looks like a 200 ms queue cuts the rate for a moment, but once the delay
    // has not come down for 2 s it is the new normal, and the rate comes back at the speed of
    // a path whose ceiling is unknown: within 10 s it is at least where it was (a queue that
    // never drained would have held it at the floor; the old path's ceiling, near which growth
    // is 5 %/s, would have left it near 1.7 Mbit/s).
    let last = *estimates.last().unwrap();
    assert!(
        last >= before,
        "{last:.0} against {before:.0} before the handover"
    );
    assert!(
        estimates[4..].iter().all(|&e| e > BOUNDS.min),
        "{estimates:.0?}"
    );
}

#[test]
fn a_queue_that_keeps_growing_is_not_taken_for_a_longer_path() {
    // A link narrower than the floor 4 s in: the queue grows 100 ms every second from then on
    // and never levels off. Its standing delay is always its highest yet, and it must go on
    // counting as a queue: the rate stays down rather than climbing into it again.
    let growing = |t: Duration| {
        let past = t.saturating_sub(Duration::from_secs(4)).as_secs_f64();
        Duration::from_secs_f64(0.02 + 0.1 * past)
    };
    let estimates = on_a_wide_path(growing, 14);
    eprintln!("estimate each second: {estimates:.0?}");
    let cut = estimates[6];
    assert!(cut < estimates[3] * 0.5, "{estimates:.0?}");
    assert!(
        estimates[6..].iter().all(|&e| e <= cut),
        "climbed while the queue grew: {estimates:.0?}"
    );
}

#[test]
fn a_deep_queue_is_drained_with_a_deeper_cut() {
    use super::super::delay_rate::decrease_factor;
    let ms = Duration::from_millis;
    // Shallow queues: GCC's 85 %, which drains 150 ms in a second.
    assert_eq!(decrease_factor(ms(0)), DECREASE_FACTOR);
    assert_eq!(decrease_factor(ms(150)), DECREASE_FACTOR);
    // 250 ms: 75 %, which drains it in a second rather than 1.7 s.
    assert!((decrease_factor(ms(250)) - 0.75).abs() < 1e-9);
    // Never more than 30 % off at once.
    assert_eq!(decrease_factor(ms(600)), 0.7);
    // And the rate's decrease uses it: 250 ms standing, 400 kbit/s arriving, down to 300.
    let bounds = RateBounds {
        start: 500e3,
        min: 100e3,
        max: 8e6,
    };
    let mut rate = DelayRate::new(bounds.start, bounds);
    rate.standing = ms(250);
    let target = rate.update(Instant::now(), Usage::Over, Some(400e3), true);
    assert!((target - 300e3).abs() < 1.0, "{target}");
}
