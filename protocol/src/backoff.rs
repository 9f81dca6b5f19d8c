//! Reconnect backoff shared by every broker client (device and gateway).

use std::time::Duration;

/// Exponential reconnect backoff with jitter: 250 ms doubling to 2 s, plus up to 50 %. The cap
/// is what bounds "back online after a broker restart" (at most ~3 s of waiting once the broker
/// is up); the jitter spreads thousands of devices over that window instead of one instant.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = Duration::from_millis(250) * 2u32.saturating_pow(self.attempt.min(3));
        self.attempt += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Up to +50 % jitter.
        base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
    }

    /// Call after a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(375));
        for _ in 0..10 {
            b.next_delay();
        }
        let capped = b.next_delay();
        assert!(capped >= Duration::from_secs(2) && capped <= Duration::from_secs(3));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(375));
    }
}
