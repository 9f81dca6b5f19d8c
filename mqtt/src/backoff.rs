//! Reconnect backoff shared by every broker client (device and gateway).

use std::time::Duration;

/// The first wait; each failure in a row doubles it.
const FIRST: Duration = Duration::from_millis(250);
/// No wait is longer, jitter included: it bounds "back online after a broker restart".
const CAP: Duration = Duration::from_secs(2);

/// Exponential reconnect backoff with jitter: 250 ms doubling, never more than 2 s. Each wait
/// is drawn from a window whose top is 1.5 × the doubled base, clipped at the cap, and whose
/// bottom is two thirds of its top: 250–375 ms, 500–750 ms, 1–1.5 s, then 1.33–2 s. The jitter
/// spreads thousands of devices over that window instead of one instant, also at the cap.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        delay(attempt, f64::from(nanos % 1000) / 1000.0)
    }

    /// Call after a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The wait after `attempt` failures in a row, for a `jitter` in `[0, 1)`.
fn delay(attempt: u32, jitter: f64) -> Duration {
    let base = FIRST * 2u32.pow(attempt.min(3));
    let top = base.mul_f64(1.5).min(CAP);
    let bottom = top.mul_f64(2.0 / 3.0);
    bottom + (top - bottom).mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_250_ms_and_never_exceeds_2_s_with_jitter() {
        let ms = |d: Duration| d.as_millis();
        for jitter in [0.0, 0.5, 0.999, 1.0] {
            for attempt in 0..20 {
                assert!(delay(attempt, jitter) <= CAP, "{attempt} {jitter}");
            }
        }
        assert_eq!((ms(delay(0, 0.0)), ms(delay(0, 1.0))), (250, 375));
        assert_eq!((ms(delay(1, 0.0)), ms(delay(1, 1.0))), (500, 750));
        assert_eq!((ms(delay(2, 0.0)), ms(delay(2, 1.0))), (1000, 1500));
        // At the cap the jitter still spreads clients, below 2 s.
        assert_eq!((ms(delay(3, 0.0)), ms(delay(3, 1.0))), (1333, 2000));
        assert_eq!(delay(100, 0.3), delay(3, 0.3));

        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= FIRST && first <= FIRST.mul_f64(1.5));
        for _ in 0..10 {
            assert!(b.next_delay() <= CAP);
        }
        b.reset();
        assert!(b.next_delay() <= FIRST.mul_f64(1.5));
    }
}
