//! How long packets stand in the path's queue: the one-way delay of recent packets above the
//! least delay seen lately.
//!
//! The delay detector ([`super::trendline`]) sees a queue only while it grows. A queue that is
//! full and stays full (a token bucket's, right after the link narrowed under a running
//! stream) grows no more, so the detector calls the path normal and the rate climbs again,
//! into a queue that never drained: on a 3 → 1 Mbit/s drop, loss went on for three seconds
//! and the viewer froze. This measures the standing queue itself, so the rate holds until the
//! queue is gone, and comes down while it stands high.
//!
//! The sender's and the viewer's clocks differ by an unknown offset, so one-way delay is only
//! known up to a constant: departure on our clock against arrival on theirs. The least such
//! delay over the last [`BASE_WINDOW`] stands for an empty queue; what recent packets spend
//! above it is queueing. "Recent" is the least over [`STANDING_WINDOW`], not the latest: a
//! packet delayed by a moment's jitter (a radio retry) is not a queue, but when every packet
//! for a fifth of a second waited, one stands.
//!
//! Nothing here reads a clock: every instant is a parameter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

/// How long the least delay is remembered: long enough to have seen the path empty at least
/// once, short enough to follow a route that changed.
const BASE_WINDOW: Duration = Duration::from_secs(10);
/// A queue stands when every packet over this long waited in it.
const STANDING_WINDOW: Duration = Duration::from_millis(200);

/// The standing queue of one path.
#[derive(Debug, Default)]
pub struct QueueDelay {
    /// Our clock's zero for one-way delays.
    origin: Option<Instant>,
    /// The least one-way delay of each 1 s of departures, oldest first (seconds, offset
    /// included).
    base: VecDeque<(Instant, f64)>,
    /// Recent packets' one-way delays, by departure.
    recent: VecDeque<(Instant, f64)>,
}

impl QueueDelay {
    /// Takes in the packets the viewer reported on (lost ones say nothing about delay).
    pub fn on_reports(&mut self, reports: &[PacketReport]) {
        for report in reports {
            let Some(arrival) = report.arrival.filter(|_| report.arrived) else {
                continue;
            };
            let origin = *self.origin.get_or_insert(report.departure);
            let sent = match report.departure.checked_duration_since(origin) {
                Some(after) => after.as_secs_f64(),
                None => -origin.duration_since(report.departure).as_secs_f64(),
            };
            self.add(report.departure, arrival.as_secs_f64() - sent);
        }
    }

    fn add(&mut self, departure: Instant, delay: f64) {
        match self.base.back_mut() {
            Some((start, least))
                if departure.saturating_duration_since(*start) < Duration::from_secs(1) =>
            {
                *least = least.min(delay);
            }
            _ => self.base.push_back((departure, delay)),
        }
        while self
            .base
            .front()
            .is_some_and(|(start, _)| departure.saturating_duration_since(*start) > BASE_WINDOW)
        {
            self.base.pop_front();
        }
        self.recent.push_back((departure, delay));
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| departure.saturating_duration_since(*at) > STANDING_WINDOW)
        {
            self.recent.pop_front();
        }
    }

    /// Forgets the least delay seen: from the next packet on, the path as it is now counts as
    /// empty (the caller decided a delay that does not drain is a longer path, not a queue).
    pub fn rebase(&mut self) {
        self.base.clear();
        self.recent.clear();
    }

    /// The queue every recent packet stood in; zero before there is anything to compare.
    pub fn standing(&self) -> Duration {
        let least =
            |delays: &VecDeque<(Instant, f64)>| delays.iter().map(|(_, d)| *d).reduce(f64::min);
        match (least(&self.recent), least(&self.base)) {
            (Some(recent), Some(base)) => Duration::from_secs_f64((recent - base).max(0.0)),
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delay tracker fed one packet every 10 ms from `t0`, each with the one-way delay
    /// `delay_ms(i)` (clock offset included).
    fn fed(t0: Instant, packets: usize, delay_ms: impl Fn(usize) -> f64) -> QueueDelay {
        let mut queue = QueueDelay::default();
        for i in 0..packets {
            queue.add(
                t0 + Duration::from_millis(10 * i as u64),
                1000.0 + delay_ms(i) / 1000.0,
            );
        }
        queue
    }

    /// A report of a packet sent at `departure` that arrived `delay_ms` later on a receiver
    /// clock `offset_s` ahead of ours.
    fn report(t0: Instant, departure: Instant, delay_ms: f64, offset_s: f64) -> PacketReport {
        let arrival = (departure - t0).as_secs_f64() + offset_s + delay_ms / 1000.0;
        PacketReport {
            ssrc: 1,
            id: 0,
            rtp_sequence_number: 0,
            is_twcc: true,
            twcc_sequence_number: 0,
            size: 1200,
            arrived: true,
            departure,
            arrival: Some(Duration::from_secs_f64(arrival)),
            ecn: Default::default(),
        }
    }

    #[test]
    fn a_queue_that_stands_is_measured_whatever_the_clock_offset() {
        let t0 = Instant::now();
        for offset_s in [0.0, 3600.0] {
            let mut queue = QueueDelay::default();
            let reports: Vec<_> = (0..300)
                .map(|i| {
                    let delay = if i < 200 { 20.0 } else { 170.0 };
                    report(t0, t0 + Duration::from_millis(10 * i), delay, offset_s)
                })
                .collect();
            queue.on_reports(&reports);
            assert_eq!(queue.standing().as_millis(), 150, "offset {offset_s} s");
            // Lost packets say nothing about delay.
            let mut lost = report(t0, t0 + Duration::from_secs(3), 900.0, offset_s);
            lost.arrived = false;
            queue.on_reports(&[lost]);
            assert_eq!(queue.standing().as_millis(), 150);
        }
        // Two seconds at 20 ms, then the link narrows and packets wait 150 ms more.
        // Draining: the last 200 ms of packets waited 40 to 44 ms above the base.
        let draining = fed(t0, 300, |i| {
            if i < 200 {
                20.0
            } else {
                80.0 - (i - 200) as f64 / 5.0
            }
        });
        assert_eq!(draining.standing().as_millis(), 40);
    }

    #[test]
    fn after_a_rebase_the_path_as_it_is_counts_as_empty() {
        let t0 = Instant::now();
        let mut longer = fed(t0, 300, |i| if i < 100 { 20.0 } else { 150.0 });
        assert_eq!(longer.standing().as_millis(), 130);
        longer.rebase();
        assert_eq!(longer.standing(), Duration::ZERO);
        for i in 300..320 {
            longer.add(t0 + Duration::from_millis(10 * i), 1000.150);
        }
        assert_eq!(longer.standing(), Duration::ZERO);
    }

    #[test]
    fn jitter_is_not_a_queue() {
        let t0 = Instant::now();
        // Every fifth packet is held 100 ms by a radio retry.
        let jittery = fed(t0, 300, |i| if i % 5 == 0 { 120.0 } else { 20.0 });
        assert_eq!(jittery.standing(), Duration::ZERO);
    }

    #[test]
    fn an_old_queue_becomes_the_base_once_it_is_all_there_is() {
        let t0 = Instant::now();
        // A route 50 ms longer from the second second on: after ten seconds it is the norm.
        let rerouted = fed(t0, 1300, |i| if i < 100 { 20.0 } else { 70.0 });
        assert_eq!(rerouted.standing(), Duration::ZERO);
        assert!(fed(t0, 500, |i| if i < 100 { 20.0 } else { 70.0 }).standing() > Duration::ZERO);
    }
}
